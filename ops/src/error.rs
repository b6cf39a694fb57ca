//! The one error type of `backbone`, its exit codes, and the report printed for it.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::ConfigError;

/// Exit code for bad usage or a bad configuration (`EX_USAGE` in sysexits.h).
pub const EXIT_USAGE: u8 = 64;

/// Exit code for a failure at run time.
pub const EXIT_FAILURE: u8 = 1;

/// Errors of the `backbone` commands, grouped by who has to act.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // --- The operator: a setting, flag or credential is wrong. ---
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A flag or argument combination is wrong.
    #[error("{0}")]
    Usage(String),

    // --- The environment: the key store, the disk or the network failed. ---
    /// A key store operation failed.
    #[error("{action}")]
    Hsm {
        /// What was being done, with the key label and store.
        action: String,
        /// The hsm crate's error.
        source: backbone_hsm::Error,
    },
    /// A file or directory could not be read or written.
    #[error("cannot {action} {path}")]
    Io {
        /// "write", "create directory"...
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The admin listener could not be started.
    #[error("cannot start the admin listener on {addr}")]
    Admin {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Logging or the trace exporter could not be set up.
    #[error("cannot set up telemetry: {0}")]
    Telemetry(String),
    /// A check of `hsm selftest` or `demo` failed.
    #[error("check failed: {0}")]
    Check(String),

    // --- Us. ---
    /// A bug in `backbone`.
    #[error("internal error: {0} (please report this)")]
    Unreachable(&'static str),
}

impl Error {
    /// Wraps a key store error with what was being done.
    pub fn hsm(action: impl Into<String>) -> impl FnOnce(backbone_hsm::Error) -> Self {
        let action = action.into();
        move |source| Error::Hsm { action, source }
    }

    /// Wraps an I/O error with the action and path.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }

    /// The process exit code: [`EXIT_USAGE`] when the operator must change a flag, a setting or a
    /// credential, [`EXIT_FAILURE`] otherwise.
    pub fn exit_code(&self) -> u8 {
        use backbone_hsm::Error as H;
        match self {
            Error::Config(_) | Error::Usage(_) => EXIT_USAGE,
            Error::Hsm {
                source:
                    H::Config { .. }
                    | H::Pin { .. }
                    | H::WrongPin { .. }
                    | H::NoSuchToken { .. }
                    | H::NoSuchKey { .. }
                    | H::KeyExists { .. }
                    | H::AlgorithmMismatch { .. },
                ..
            } => EXIT_USAGE,
            _ => EXIT_FAILURE,
        }
    }
}

/// The error and its causes, one per line: `error: ...` then `  caused by: ...`.
///
/// A cause whose text already ends the line above (errors that print their source inline) is not
/// repeated.
pub fn report(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = format!("error: {error}");
    let mut previous = error.to_string();
    let mut cause = error.source();
    while let Some(err) = cause {
        let text = err.to_string();
        if !previous.ends_with(&text) {
            let _ = write!(out, "\n  caused by: {text}");
        }
        previous = text;
        cause = err.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_prints_one_cause_per_line_without_repeats() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err = Error::Hsm {
            action: "cannot list keys".to_owned(),
            source: backbone_hsm::Error::KeyFile {
                path: "/k/a.p8".into(),
                source: io,
            },
        };
        assert_eq!(
            report(&err),
            "error: cannot list keys\n  caused by: key file /k/a.p8: no such file"
        );
        assert_eq!(err.exit_code(), EXIT_FAILURE);
        assert_eq!(Error::Usage("x".into()).exit_code(), EXIT_USAGE);
    }
}
