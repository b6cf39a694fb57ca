//! The security server every agency runs. Client side: an HTTP interface compatible with the X-Road REST message protocol r1. Between gateways: TLS 1.3 with mutual authentication pinned to the certificates in the signed global configuration, every request and response signed with the member's HSM key. Provider side: access rights, deny by default. Both sides keep a hash-linked, encrypted, batch-timestamped message log indexed by data subject.
//!
//! Not built yet: this crate holds only its purpose, so that the workspace has its final shape. See
//! `shared/DESIGN.md` for the target and the crate's README for the plan.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
