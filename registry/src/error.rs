//! The one error type of this crate, grouped by who has to act.

use std::path::PathBuf;

/// Errors from the registry, its global configuration and the configuration client.
///
/// Messages name the identifiers, versions, times and sizes involved; they never hold key
/// material or certificate bodies.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // --- The peer: bytes or requests that are not acceptable. ---
    /// An identifier broke the X-Road character rules or had the wrong shape.
    #[error("invalid {kind} {value:?}: {reason}")]
    InvalidId {
        /// Which kind of identifier ("member id", "subsystem code", ...).
        kind: &'static str,
        /// The value, escaped and shortened.
        value: String,
        /// The rule broken.
        reason: String,
    },
    /// Bytes did not decode (a global configuration, an anchor, a stored record).
    #[error("malformed {what}: {reason}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// Why it was refused, with the sizes involved.
        reason: String,
    },
    /// A certificate signing request was refused.
    #[error("certificate request refused: {0}")]
    Csr(#[source] backbone_hsm::Error),

    // --- The global configuration does not verify (the registry or the network is at fault). ---
    /// The signature over the configuration does not verify under the anchor's key.
    #[error(
        "global configuration signature does not verify under the anchor key {anchor_key} (instance {instance})"
    )]
    BadSignature {
        /// The anchor's instance.
        instance: String,
        /// Fingerprint of the anchor key.
        anchor_key: String,
    },
    /// The configuration is for another instance than the anchor's.
    #[error("global configuration is for instance {got}, the anchor is for {expected}")]
    WrongInstance {
        /// The anchor's instance.
        expected: String,
        /// The instance in the configuration.
        got: String,
    },
    /// The configuration is older than the one already held: a replay or a rollback.
    #[error(
        "global configuration version {got} is older than version {held} already held (rollback refused)"
    )]
    Rollback {
        /// The version held.
        held: u64,
        /// The version offered.
        got: u64,
    },
    /// The configuration's validity ended. Callers MUST fail closed: no exchange may rely on it.
    #[error(
        "global configuration version {version} expired at {expired_at} (unix seconds), now is {now}"
    )]
    ConfExpired {
        /// The version.
        version: u64,
        /// Its expires-at time, unix seconds.
        expired_at: u64,
        /// The time it was checked at, unix seconds.
        now: u64,
    },
    /// The configuration was generated in the future by more than the allowed clock skew.
    #[error(
        "global configuration version {version} was generated at {generated_at}, after now ({now}) plus the allowed skew"
    )]
    ConfFromFuture {
        /// The version.
        version: u64,
        /// Its generated-at time, unix seconds.
        generated_at: u64,
        /// The time it was checked at, unix seconds.
        now: u64,
    },
    /// No verified configuration is held yet (none downloaded and none cached).
    #[error("no global configuration is held yet for instance {instance}")]
    NoConf {
        /// The anchor's instance.
        instance: String,
    },

    // --- The caller: an administrative request that does not fit the current state. ---
    /// The thing exists already.
    #[error("{kind} {id} already exists")]
    Duplicate {
        /// What kind of thing.
        kind: &'static str,
        /// Its identifier.
        id: String,
    },
    /// The thing does not exist.
    #[error("no {kind} {id}")]
    NotFound {
        /// What kind of thing.
        kind: &'static str,
        /// Its identifier.
        id: String,
    },
    /// A request that is well formed but not allowed, e.g. a member of another instance.
    #[error("refused: {0}")]
    Refused(String),

    // --- The environment: storage, the HSM, the network, files. ---
    /// The registry's storage failed; the change was not committed.
    #[error("registry store: {0}")]
    Store(String),
    /// The key store or signer failed.
    #[error("key store: {0}")]
    Hsm(#[source] backbone_hsm::Error),
    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("write cache", "read anchor").
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// No download URL gave a usable configuration.
    #[error("could not fetch the global configuration: {0}")]
    Fetch(String),

    // --- Us. ---
    /// A bug in this crate.
    #[error("internal error: {0} (please report this)")]
    Unreachable(&'static str),
}

// === impl Error ===

impl Error {
    pub(crate) fn decode(what: &'static str, reason: impl ToString) -> Self {
        Error::Decode {
            what,
            reason: reason.to_string(),
        }
    }

    /// True when the error means the held configuration can no longer be relied on, so callers
    /// must fail closed.
    pub fn is_conf_expired(&self) -> bool {
        matches!(self, Error::ConfExpired { .. } | Error::NoConf { .. })
    }
}

impl From<backbone_hsm::Error> for Error {
    fn from(e: backbone_hsm::Error) -> Self {
        Error::Hsm(e)
    }
}
