//! Cross-crate end-to-end tests of Backbone live beside the code they drive, because they need
//! the built `backbone` binary (`CARGO_BIN_EXE_backbone` exists only in the binary's own package):
//!
//! - `ops/tests/demo.rs`: `backbone demo` end to end — registry, timestamping, five gateways, FHIR
//!   services, the citizen portal; every exchange in both gateways' logs, stamped, visible in the
//!   portal to the right person only, and every command the summary prints run as printed.
//! - `ops/tests/gateway.rs`: two `backbone gateway serve` processes killed with SIGKILL under load;
//!   no acknowledged exchange lost.
//! - `ops/tests/audit.rs`: audit archives of real gateways, and each kind of tampering named.
//! - `gateway/tests/exchange.rs`, `portal/tests/`: the same services in one process, with the attacks.
//!
//! This crate keeps the workspace's shape for tests that need no binary.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
