//! The service crate's one error type.
//!
//! Variants are grouped by who has to act: the client that sent a bad request
//! ([`Error::Request`], [`Error::Pushback`]), the operator ([`Error::Config`]), the environment
//! ([`Error::Store`], [`Error::Hsm`], [`Error::Parent`]), the caller of the calendar ([`Error::History`],
//! [`Error::NotInCalendar`]) and us ([`Error::Unreachable`]).

use std::path::PathBuf;
use std::time::Duration;

/// Errors from the timestamping service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // --- The client. ---
    /// A request was refused: bad level, hash algorithm, size.
    #[error("request refused: {0}")]
    Request(String),
    /// The round is full; the client should retry after the next round closes.
    #[error("round {round} is full ({pending} hashes waiting)")]
    Pushback {
        /// The round time (seconds since 1970).
        round: u64,
        /// Requests waiting.
        pending: usize,
    },

    // --- The operator. ---
    /// A setting is out of range.
    #[error("timestamping setting {key} = {value}: {reason}")]
    Config {
        /// The setting.
        key: &'static str,
        /// Its value.
        value: String,
        /// Why it was refused.
        reason: String,
    },

    // --- The environment. ---
    /// The calendar store failed; the operation was not committed.
    #[error("calendar store at {path}: {source}")]
    Store {
        /// The store's location (`memory` for the in-memory store).
        path: PathBuf,
        /// The store's error.
        source: StoreError,
    },
    /// The key store failed to sign or to issue a certificate.
    #[error("{action}: {source}")]
    Hsm {
        /// What was being done.
        action: &'static str,
        /// The hsm crate's error.
        source: backbone_hsm::Error,
    },
    /// A file the service writes (the publications file) or reads failed.
    #[error("file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A child aggregator's parent did not answer a round root, or its answer was unusable; every
    /// request of the round gets this error, and the next round tries again.
    #[error("round {round}: parent aggregator at {parent}: {source}")]
    Parent {
        /// The child's round time (its own clock, seconds since 1970).
        round: u64,
        /// The parent's URL.
        parent: String,
        /// What went wrong.
        source: ParentError,
    },
    /// KSI encoding or hashing failed.
    #[error(transparent)]
    Ksi(#[from] backbone_timestamping_verify::Error),

    // --- The caller. ---
    /// Appending would rewrite or fork the calendar: the second is not after the head.
    #[error("calendar second {time} is not after the calendar's last second (size {size})")]
    History {
        /// The second asked for.
        time: u64,
        /// Seconds in the calendar (the head is `size - 1`).
        size: u64,
    },
    /// The second is not in the calendar yet.
    #[error("second {time} is not in the calendar (size {size})")]
    NotInCalendar {
        /// The second asked for.
        time: u64,
        /// Seconds in the calendar.
        size: u64,
    },
    /// The calendar refused to continue after a failed commit; reopen it.
    #[error("calendar is poisoned by an earlier failed commit; reopen it")]
    Poisoned,
    /// The service is shutting down.
    #[error("the timestamping service is shutting down")]
    ShuttingDown,

    // --- Us. ---
    /// A bug in this crate.
    #[error("internal error: {0} (please report this)")]
    Unreachable(&'static str),
}

/// Why a parent aggregator's answer to a round root is missing or unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParentError {
    /// No answer within the child's timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The call failed: no connection, an HTTP error, a KSI status, a wrong MAC.
    #[error(transparent)]
    Call(crate::client::ClientError),
    /// The answer does not make the round's requests into valid signatures.
    #[error("unusable answer: {0}")]
    Answer(String),
}

/// Why a calendar store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The append would rewrite a committed second.
    #[error("second {time} is not after the stored size {size}")]
    Rewrite {
        /// The second asked for.
        time: u64,
        /// The stored size.
        size: u64,
    },
    /// A publication for this second exists with another hash.
    #[error("publication at {time} exists with another hash")]
    PublicationConflict {
        /// The publication time.
        time: u64,
    },
    /// Stored bytes do not decode: the store is damaged.
    #[error("stored {what} does not decode")]
    Corrupt {
        /// What was read.
        what: &'static str,
    },
    /// RocksDB failed.
    #[error(transparent)]
    Rocks(#[from] rocksdb::Error),
}
