//! Keyless timestamps in the KSI format. Client hashes are aggregated in one-second rounds; each
//! round root becomes one calendar leaf; the calendar root is published every hour, so that any
//! signature can be verified offline years later.
//!
//! This crate holds the pure half: the KSI wire format and offline verification, checked
//! against the public KSI conformance pack. It builds without tokio or storage so that auditors
//! can verify offline; the service that issues signatures is `backbone-timestamping`.
//!
//! ```text
//!  document hash ─▶ aggregation chains ─▶ calendar chain ─▶ calendar auth record (signed now)
//!                     (0x801, chain)        (0x802, chain)   └▶ publication record (published later)
//!                                                   │
//!  bytes ─▶ tlv ─▶ signature ─▶ verify ◀── publications_file (PKCS#7, trust anchors, time)
//!                                  ▲  ◀── publication strings, pdu (extender answers)
//! ```
//!
//! Start from [`Signature::decode`] and [`verify::verify`]; publications files come in through
//! [`PublicationsFile::parse_unverified`] and [`PublicationsFile::verify`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// Wire format: bytes in, values out, no I/O, no clock.
pub mod imprint;
pub mod pdu;
pub mod publication;
pub mod publications_file;
pub mod signature;
pub mod tlv;
// Hash chains.
pub mod chain;
// Offline verification for auditors.
pub mod verify;

mod error;
#[doc(hidden)]
pub mod fuzzing;

pub use crate::error::{DecodeError, Error};
pub use crate::imprint::{HashAlgorithm, Imprint};
pub use crate::publications_file::PublicationsFile;
pub use crate::signature::Signature;
