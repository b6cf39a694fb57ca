//! Keyless timestamps in the KSI format. Client hashes are aggregated in one-second rounds; each round root becomes one calendar leaf; the calendar root is published every hour, so that any signature can be verified offline years later.
//!
//! Not built yet: this crate holds only its purpose, so that the workspace has its final shape. See
//! `shared/DESIGN.md` for the target and the crate's README for the plan.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
