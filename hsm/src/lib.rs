//! One signing abstraction over the places private keys live: PKCS#11 tokens (hardware HSMs, and
//! SoftHSM2 in tests) and software key files for development. Private keys never leave their store.
//! A batch signer turns many concurrent signing requests into one token signature over a Merkle
//! root, and gives each caller its hash chain.
//!
//! ```text
//!  caller ─▶ Signer ──────────────────────────▶ Pkcs11KeyStore ─▶ token (C_Sign)
//!   many ─▶ BatchSigner ─(Merkle root, 1 sig)─▶        or SoftwareKeyStore ─▶ ring
//!                 │
//!                 ▼
//!       BatchSignature = root signature + the caller's hash chain
//! ```
//!
//! Open a store with [`config::open`], get a [`Signer`] from [`KeyStore::signer`], check signatures
//! with [`PublicKey::verify`] and batch proofs with [`batch::BatchSignature::verify`]. Data keys
//! are wrapped by a secret key in the store through [`KeyStore::wrapper`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// Names and encodings: pure code.
pub mod algorithm;
pub mod public_key;
// The abstraction and its backends.
pub mod config;
pub mod pkcs11;
pub mod signer;
pub mod software;
pub mod wrap;
// Built on any signer.
pub mod batch;
pub mod cert;
pub mod tls;
// Files that hold keys or personal data.
pub mod private;

#[doc(hidden)]
pub mod fuzzing;

mod error;
mod metrics;

pub use crate::algorithm::{KeyType, SignatureAlgorithm};
pub use crate::error::Error;
pub use crate::metrics::Metrics;
pub use crate::public_key::PublicKey;
pub use crate::signer::{KeyStore, Pin, Signer};
pub use crate::wrap::Wrapper;
