//! The configuration anchor: what a gateway trusts before it holds any configuration — the
//! registry's public key and signature algorithm, the instance, and where to download from.
//!
//! An anchor file is canonical JSON like the configuration itself (`docs/global-conf.md`):
//!
//! ```text
//! {"algorithm":"ecdsa-p256-sha256","format":1,"instance":"EE",
//!  "public_key":"<base64 DER SubjectPublicKeyInfo>","urls":["http://127.0.0.1:8080/globalconf"]}
//! ```
//!
//! It is handed out of band (X-Road distributes it the same way) and compared by the operator
//! against the fingerprint the registry printed at `backbone registry init`.

use std::str::FromStr;

use backbone_hsm::{PublicKey, SignatureAlgorithm};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::id::InstanceId;
use crate::model::check_address;

/// The anchor format this code writes and reads.
pub const FORMAT: u32 = 1;
/// Largest anchor file accepted.
pub const MAX_ANCHOR_LEN: usize = 64 * 1024;
/// Most download URLs in one anchor.
pub const MAX_URLS: usize = 16;

/// The root of trust of a configuration client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anchor {
    /// The instance whose configuration is trusted.
    pub instance: InstanceId,
    /// The algorithm the registry signs with; envelopes naming another are refused.
    pub algorithm: SignatureAlgorithm,
    /// The registry's configuration signing key.
    pub public_key: PublicKey,
    /// Download URLs, tried in order.
    pub urls: Vec<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnchorFile {
    algorithm: String,
    format: u32,
    instance: InstanceId,
    public_key: String,
    urls: Vec<String>,
}

// === impl Anchor ===

impl Anchor {
    /// Builds an anchor, checking the URLs.
    ///
    /// # Errors
    ///
    /// [`Error::Refused`] for no URL, too many, or a malformed one.
    pub fn new(
        instance: InstanceId,
        algorithm: SignatureAlgorithm,
        public_key: PublicKey,
        urls: Vec<String>,
    ) -> Result<Self, Error> {
        if urls.is_empty() || urls.len() > MAX_URLS {
            return Err(Error::Refused(format!(
                "an anchor needs 1 to {MAX_URLS} download URLs, got {}",
                urls.len()
            )));
        }
        for url in &urls {
            check_address("download URL", url)?;
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(Error::Refused(format!(
                    "download URL {url} must start with http:// or https://"
                )));
            }
        }
        Ok(Anchor {
            instance,
            algorithm,
            public_key,
            urls,
        })
    }

    /// The anchor file bytes.
    pub fn encode(&self) -> Vec<u8> {
        let file = AnchorFile {
            algorithm: self.algorithm.name().to_owned(),
            format: FORMAT,
            instance: self.instance.clone(),
            public_key: base64::engine::general_purpose::STANDARD
                .encode(self.public_key.spki_der()),
            urls: self.urls.clone(),
        };
        let mut out = serde_json::to_vec(&file).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Decodes an anchor file.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] for anything but a well-formed anchor of [`FORMAT`].
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_ANCHOR_LEN {
            return Err(Error::decode(
                "configuration anchor",
                format!(
                    "{} bytes is over the limit of {MAX_ANCHOR_LEN}",
                    bytes.len()
                ),
            ));
        }
        let file: AnchorFile =
            serde_json::from_slice(bytes).map_err(|e| Error::decode("configuration anchor", e))?;
        if file.format != FORMAT {
            return Err(Error::decode(
                "configuration anchor",
                format!("format {} is not {FORMAT}", file.format),
            ));
        }
        let algorithm = SignatureAlgorithm::from_str(&file.algorithm).map_err(|_| {
            Error::decode(
                "configuration anchor",
                format!("unknown algorithm {:?}", file.algorithm),
            )
        })?;
        let spki = base64::engine::general_purpose::STANDARD
            .decode(file.public_key.as_bytes())
            .map_err(|e| Error::decode("configuration anchor", e))?;
        let public_key = PublicKey::from_spki_der(&spki)
            .map_err(|e| Error::decode("configuration anchor", e))?;
        if !public_key.key_type().supports(algorithm) {
            return Err(Error::decode(
                "configuration anchor",
                format!(
                    "a {} key cannot sign with {algorithm}",
                    public_key.key_type()
                ),
            ));
        }
        Anchor::new(file.instance, algorithm, public_key, file.urls)
            .map_err(|e| Error::decode("configuration anchor", e))
    }
}
