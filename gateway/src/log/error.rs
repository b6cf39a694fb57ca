//! The message log's error, grouped by who has to act.

use std::path::PathBuf;
use std::time::SystemTime;

/// Errors from the message log.
///
/// Messages name the log directory, the record's sequence number or the timestamping service's
/// address; they never contain message bodies, keys or personal identification codes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    // --- The caller. ---
    /// A field of a record is over its limit.
    #[error("record field {what} is {len} bytes, over the limit of {max}")]
    TooLarge {
        /// The field.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },

    // --- The operator. ---
    /// A setting is invalid.
    #[error("invalid message log setting {key} = {value}: {reason}")]
    Config {
        /// The configuration key.
        key: &'static str,
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// The data key could not be created or unwrapped by the HSM key.
    #[error("message log data key in {dir}: {source}")]
    DataKey {
        /// The log directory.
        dir: PathBuf,
        /// The HSM's error (another wrapping key, a token that is gone, ...).
        source: backbone_hsm::Error,
    },

    // --- The environment. ---
    /// Timestamping has failed for longer than the configured limit; new exchanges are refused
    /// until a batch is stamped again.
    #[error("message log refuses new exchanges: timestamping failing since {} s ago: {why}", elapsed_secs(*.since))]
    TimestampingFailed {
        /// When the failure began (the first failed attempt, or the oldest record still waiting).
        since: SystemTime,
        /// The last failure, as text.
        why: String,
    },
    /// The timestamping service did not sign a batch root.
    #[error("timestamping service at {addr}: {reason}")]
    Timestamping {
        /// The service's address.
        addr: std::net::SocketAddr,
        /// What failed.
        reason: String,
    },
    /// RocksDB failed; the write was not made durable.
    #[error("message log store at {dir}: {reason}")]
    Storage {
        /// The log directory.
        dir: PathBuf,
        /// RocksDB's message.
        reason: String,
    },
    /// Stored bytes do not decode, or a body does not decrypt.
    #[error("message log record {seq}: {reason}")]
    Corrupt {
        /// The record's sequence number (or the batch's first one).
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// The log has shut down; nothing more is appended.
    #[error("message log at {dir} has shut down")]
    Closed {
        /// The log directory.
        dir: PathBuf,
    },

    // --- Us. ---
    /// A bug in this module.
    #[error("internal error: {0} (please report this)")]
    Unreachable(&'static str),
}

fn elapsed_secs(since: SystemTime) -> u64 {
    SystemTime::now()
        .duration_since(since)
        .map_or(0, |d| d.as_secs())
}
