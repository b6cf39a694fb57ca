//! The root of trust of a Backbone instance: members, subsystems, gateways and their certificates, issued by the registry's HSM-held CA, and the versioned, signed, expiring global configuration that every gateway verifies against its configuration anchor.
//!
//! Not built yet: this crate holds only its purpose, so that the workspace has its final shape. See
//! `shared/DESIGN.md` for the target and the crate's README for the plan.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
