//! The keyless timestamping service in the KSI format. Client hashes are aggregated in one-second
//! rounds; each round root becomes one calendar leaf; each second's calendar root is signed
//! through the HSM, and published every hour.
//!
//! ```text
//!  hash ─▶ aggregator round ─(root)─▶ calendar (one leaf per second) ─▶ signed root ─▶ signature
//!   hash ─▶ child round ─(root, level)─┘      │ RocksDB, synced
//!                                             └─▶ publications
//! ```
//!
//! Start at [`service::spawn`], which drives [`round::Round`] and [`calendar::Calendar`]; a
//! child aggregator ([`child::spawn`]) sends its round roots to a parent instead.
//! The wire format and the offline verifier live in the nested crate
//! `backbone-timestamping-verify`, which builds without tokio or storage.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// Pure state machines: a round's tree, one leaf per second (tree arithmetic, storage trait).
pub mod calendar;
pub mod round;
// Signing each second's root through the HSM; CMS SignedData through the same signers.
pub mod authority;
pub mod cms;
pub mod publications_file;
// RFC 3161 time-stamp tokens, each one anchored in the calendar.
pub mod tsa;
// The running service and its HTTP front end; a child aggregator, whose rounds go to a parent.
pub mod child;
pub mod client;
pub mod extender;
pub mod http;
pub mod service;

mod error;

pub use crate::error::{Error, ParentError, StoreError};
