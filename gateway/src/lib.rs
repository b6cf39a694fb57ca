//! The security server every agency runs. Client side: an HTTP interface compatible with the
//! X-Road REST message protocol r1. Between gateways: TLS 1.3 with mutual authentication pinned to
//! the certificates in the signed global configuration, every request and response signed with the
//! member's HSM key. Provider side: access rights, deny by default. Both sides keep a hash-linked,
//! encrypted, batch-timestamped message log indexed by data subject.
//!
//! ```text
//!  information system ─r1─▶ client ─▶ peers ══ TLS 1.3, pinned ══▶ provider ─▶ local service
//!                           (sign, check, log)                    (check, rights, sign, log)
//! ```
//!
//! Start at [`service::RunningGateway::start`]. The pieces: [`r1`] (the client interface:
//! request target, X-Road and health headers, header filtering), [`fault`] (the protocol's
//! errors), [`signed`] and [`wire`] (what gateways sign and exchange), [`conf`] (what the signed
//! global configuration says about peers, keys, services and groups), [`peers`] (pinned, pooled
//! HTTP/2 connections), [`access`] and [`rights`] (access rights, deny by default, stored),
//! [`replay`] (the replay window), [`verifier`] (peer signatures, each batch root verified once), [`meta`] and [`usage`] (the services the gateway answers
//! itself: `listClients`, `listMethods`, `allowedMethods`, `findUsage`), [`log`] (the message
//! log: hash-linked, encrypted, batch-timestamped, indexed by data subject), [`admin`] (the
//! HTTPS admin API for access rights, information systems and status), [`systems`] (how each
//! information system must connect to the client port, and its registered certificates),
//! [`store`] (the small JSON documents both are kept in).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access;
pub mod admin;
pub mod conf;
pub mod connect;
pub mod error;
pub mod fault;
pub mod log;
pub mod meta;
pub mod peers;
pub mod r1;
pub mod replay;
pub mod rights;
pub mod service;
pub mod signed;
pub mod store;
pub mod systems;
pub mod usage;
pub mod verifier;
pub mod wire;

mod client;
mod outcome;
mod provider;

#[doc(hidden)]
pub mod fuzzing;

pub use crate::error::Error;
