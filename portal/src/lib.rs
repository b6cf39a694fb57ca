//! The citizen portal: sign-in through OpenID Connect, the access history of a person's health
//! data gathered over the backbone from every agency's gateway, and a proof per entry that
//! verifies offline.
//!
//! ```text
//!  browser ─▶ portal ─(OIDC code + PKCE)─▶ provider (TARA, or the test provider)
//!               │
//!               └─ findUsage, through its own gateway ══▶ every agency's gateway ─▶ its log
//!                    merged newest first · proofs checked · reports stored · views logged
//! ```
//!
//! Start at [`server::router`] and [`server::Portal`]; [`history::Agencies`] asks the agencies;
//! [`oidc::provider`] is the test provider.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// Pure code: markup, languages, time, exports, proofs.
pub mod export;
pub mod html;
pub mod i18n;
pub mod local_time;
pub mod pages;
pub mod proof;
// Sign-in and sessions.
pub mod oidc;
pub mod session;
// The backbone, storage, and the server.
pub mod history;
pub mod reports;
pub mod server;
pub mod viewlog;

mod error;

pub use crate::error::Error;
