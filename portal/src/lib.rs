//! The citizen portal: sign-in through OpenID Connect, the access history of a person's health data gathered over the backbone from every agency's gateway, and a proof per entry that verifies offline.
//!
//! Not built yet: this crate holds only its purpose, so that the workspace has its final shape. See
//! `shared/DESIGN.md` for the target and the crate's README for the plan.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
