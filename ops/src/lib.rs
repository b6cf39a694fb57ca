//! The `backbone` binary and what every Backbone service shares at its edge: the command line,
//! layered configuration (a TOML file, then `BACKBONE_*` environment variables), the admin listener
//! with Prometheus metrics and health checks, and logs and traces with optional OTLP export. Only
//! this crate reads configuration and the environment, and only it turns errors into text and exit
//! codes.
//!
//! ```text
//!  argv ─▶ cli ─▶ config::load(file, env) ─▶ telemetry::init ─▶ command
//!                      │ (exit 64 on any problem)                 │
//!                      ▼                                          ├─ hsm keygen|list|pubkey|csr|selftest
//!                config::keys (every key)                         ├─ config check|keys
//!                                                                 ├─ registry · timestamping · ksi · gateway · audit · portal · bench
//!                                                                 └─ demo ─▶ a whole backbone in one process
//! ```
//!
//! Start at [`cli::run`]; services reuse [`admin::serve`] and [`config::load`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// Settings and the edge every service shares.
pub mod admin;
pub mod config;
pub mod telemetry;
// The command line and its commands.
pub mod audit;
pub mod bench;
pub mod cli;
pub mod demo;
pub mod gateway;
pub mod hsm;
pub mod ksi;
pub mod portal;
pub mod registry;
pub mod timestamping;

mod error;

pub use crate::error::{EXIT_FAILURE, EXIT_USAGE, Error, report};
