//! The portal's one error type, grouped by who has to act.

use std::path::PathBuf;

/// Errors from the portal and its OpenID provider.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is missing or wrong; the portal refuses to start.
    #[error("configuration {key}: {reason}")]
    Config {
        /// The setting.
        key: &'static str,
        /// Why it is refused.
        reason: String,
    },
    /// The OpenID provider answered something the portal cannot accept.
    #[error("openid provider {issuer}: {reason}")]
    Oidc {
        /// The provider's issuer URL.
        issuer: String,
        /// What was wrong.
        reason: String,
    },
    /// The OpenID provider could not be reached at `url`, or its answer could not be read.
    #[error("openid provider at {url}: {source}")]
    Provider {
        /// The URL asked.
        url: String,
        /// What failed.
        source: crate::oidc::transport::TransportError,
    },
    /// An ID token failed a check (signature, issuer, audience, expiry, nonce, claims).
    #[error("id token refused: {0}")]
    IdToken(String),
    /// Reading or writing the portal's own files failed.
    #[error("{action} {path}: {source}")]
    Storage {
        /// What was being done.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A stored file did not decode.
    #[error("stored file {path} is damaged: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The listener could not be bound or the server failed.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A bug in this crate.
    #[error("internal error: {0} (please report this)")]
    Unreachable(&'static str),
}

impl Error {
    /// A closure for `map_err` on file operations.
    pub(crate) fn storage(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Storage {
            action,
            path,
            source,
        }
    }
}
