//! Which key store to open, as a serde `Config` that `ops` fills from its layered configuration.
//!
//! The user PIN is never part of this structure: `ops` reads it from a file or an environment
//! variable and hands it to [`open`] as a [`Pin`].

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::pkcs11::Pkcs11KeyStore;
use crate::software::SoftwareKeyStore;
use crate::{Error, KeyStore, Pin};

/// Sessions per token: one per core of the 2-core machines Backbone is sized for, so both sign at
/// once; more only queue inside the token.
pub const DEFAULT_SESSIONS: usize = 2;

/// How many times a signer re-opens its sessions and logs in again before it reports the token
/// unavailable. Three covers a token restart without hiding a token that is really gone.
pub const DEFAULT_RECONNECT_ATTEMPTS: u32 = 3;

/// Where keys live.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Config {
    /// PKCS#8 key files in a directory (development and the demo's default).
    Software {
        /// The key directory, created with mode 0700.
        key_dir: PathBuf,
    },
    /// A PKCS#11 token.
    Pkcs11(Pkcs11Config),
}

/// A PKCS#11 token, chosen by label.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// Path of the PKCS#11 module (for SoftHSM2 on Debian, `/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// The token's label; slot numbers are not stable, labels are.
    pub token_label: String,
    /// Logged-in sessions kept open for signing.
    #[serde(default = "default_sessions")]
    pub sessions: usize,
    /// Reconnection attempts after the token or a session is lost.
    #[serde(default = "default_reconnect_attempts")]
    pub reconnect_attempts: u32,
}

/// Opens the key store that `config` names. `pin` is needed for PKCS#11 and ignored otherwise.
///
/// # Errors
///
/// [`Error::Pin`] when a PKCS#11 store is configured without a PIN, and every error of
/// [`Pkcs11KeyStore::open`] and [`SoftwareKeyStore::open`].
pub fn open(config: &Config, pin: Option<Pin>) -> Result<Arc<dyn KeyStore>, Error> {
    Ok(match config {
        Config::Software { key_dir } => Arc::new(SoftwareKeyStore::open(key_dir)?),
        Config::Pkcs11(pkcs11) => {
            let pin = pin.ok_or_else(|| Error::Pin {
                source_name: format!("the configuration of token '{}'", pkcs11.token_label),
                reason: "no user PIN was given (set a PIN file or PIN environment variable)"
                    .to_owned(),
            })?;
            Arc::new(Pkcs11KeyStore::open(pkcs11, pin)?)
        }
    })
}

fn default_sessions() -> usize {
    DEFAULT_SESSIONS
}

fn default_reconnect_attempts() -> u32 {
    DEFAULT_RECONNECT_ATTEMPTS
}
