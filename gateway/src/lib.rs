//! The security server every agency runs. Client side: an HTTP interface compatible with the
//! X-Road REST message protocol r1. Between gateways: TLS 1.3 with mutual authentication pinned to
//! the certificates in the signed global configuration, every request and response signed with the
//! member's HSM key. Provider side: access rights, deny by default. Both sides keep a hash-linked,
//! encrypted, batch-timestamped message log indexed by data subject.
//!
//! Built so far (pure code, no I/O): [`r1`], the client interface (request target, X-Road and
//! health headers, header filtering); [`access`], access rights (deny by default); [`fault`], the protocol's errors; [`signed`], the signed
//! request and response descriptors exchanged between gateways. The service itself (the proxies,
//! the stored access rights and their admin API, the message log) is not built yet; see the crate's README.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access;
pub mod conf;
pub mod fault;
pub mod log;
pub mod peers;
pub mod r1;
pub mod replay;
pub mod rights;
pub mod signed;
pub mod wire;

#[doc(hidden)]
pub mod fuzzing;
