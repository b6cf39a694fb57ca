//! Where the user PIN of a token is read from. The PIN itself is never in the configuration.

use std::fmt;
use std::io::Read;
use std::path::PathBuf;

use backbone_hsm::{Error, Pin};

use super::Env;

/// Longest PIN file we read; PINs are a few dozen bytes.
pub const MAX_PIN_FILE_LEN: u64 = 1024;

/// The place a PIN is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinSource {
    /// A file whose content is the PIN (one trailing newline is ignored).
    File(PathBuf),
    /// An environment variable holding the PIN.
    Env(String),
}

impl PinSource {
    /// Reads the PIN.
    ///
    /// # Errors
    ///
    /// [`Error::Pin`] when the file cannot be read or is too long, the variable is not set, or the
    /// PIN is empty. The message names the source, never the PIN.
    pub fn read(&self, env: &Env) -> Result<Pin, Error> {
        let fail = |reason: String| Error::Pin {
            source_name: self.to_string(),
            reason,
        };
        let secret = match self {
            PinSource::File(path) => {
                let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
                warn_if_readable_by_others(&file, path);
                let mut secret = String::new();
                file.take(MAX_PIN_FILE_LEN + 1)
                    .read_to_string(&mut secret)
                    .map_err(|e| fail(e.to_string()))?;
                if secret.len() as u64 > MAX_PIN_FILE_LEN {
                    return Err(fail(format!(
                        "the file is longer than {MAX_PIN_FILE_LEN} bytes"
                    )));
                }
                secret
            }
            PinSource::Env(name) => env
                .get(name)
                .ok_or_else(|| fail("the variable is not set".to_owned()))?
                .to_owned(),
        };
        let pin = Pin::new(secret);
        if pin.expose().is_empty() {
            return Err(fail("the PIN is empty".to_owned()));
        }
        Ok(pin)
    }
}

impl fmt::Display for PinSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinSource::File(path) => write!(f, "file {}", path.display()),
            PinSource::Env(name) => write!(f, "environment variable {name}"),
        }
    }
}

fn warn_if_readable_by_others(file: &std::fs::File, path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = file.metadata() {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format_args!("{:o}", mode & 0o777), "PIN file is readable by other users; chmod 600 it");
        }
    }
}
