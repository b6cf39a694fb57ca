//! Batch signing.
