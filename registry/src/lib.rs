//! The root of trust of a Backbone instance: members, subsystems, gateways and their certificates,
//! issued by the registry's HSM-held CA, and the versioned, signed, expiring global configuration
//! that every gateway verifies against its configuration anchor.
//!
//! ```text
//!  admin ─▶ Registry ─(store: members, gateways, certs, audit)─▶ GlobalConf ─Signer─▶ SignedConf
//!                                                                                      │ HTTP
//!  gateway / portal ◀── ConfClient (anchor: key + instance + URLs; expiry, rollback) ◀─┘
//! ```
//!
//! Identifiers are in [`id`]; the document and its encoding in [`conf`]; gateways start from
//! [`anchor::Anchor`] and [`client::ConfClient`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// Pure code: identifiers, the model and the configuration format.
pub mod admin;
pub mod conf;
pub mod csr;
pub mod id;
pub mod model;
pub mod operation;
// The registry: admin operations, the CA, storage.
pub mod registry;
pub mod server;
pub mod store;
// Gateway side: trust the anchor, hold the newest configuration.
pub mod anchor;
pub mod client;

mod error;
#[doc(hidden)]
pub mod fuzzing;

pub use crate::conf::{GlobalConf, SignedConf};
pub use crate::error::Error;
pub use crate::registry::Registry;
