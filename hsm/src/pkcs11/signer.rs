//! A [`Signer`] over one private key on a PKCS#11 token.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::Session;
use prometheus::{Histogram, IntCounter};
use sha2::{Digest, Sha256};

use super::keys::{self, Half};
use super::pool::{Failure, Lease, Token};
use crate::public_key::ecdsa_raw_to_der;
use crate::{Error, PublicKey, SignatureAlgorithm, Signer};

/// DER `DigestInfo` header for SHA-256 (RFC 8017 §9.2, note 1); the 32-byte digest follows it.
const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// Signs with one private key on a PKCS#11 token, borrowing a session from the store's pool for
/// each signature.
///
/// Messages are hashed in this process (SHA-256) and only the digest goes to the token, except for
/// Ed25519, where the token signs the whole message as RFC 8032 requires. The key handle is found
/// once per pool generation and cached.
///
/// The signer signs with a session copy of the private key (`C_CopyObject` with `CKA_TOKEN`
/// false), made once per pool generation on a pooled session and destroyed with the signer: the
/// copy never leaves the token, and it is as sensitive and non-extractable as the original. It is
/// there for speed: SoftHSM2 re-reads a token object's file from disk (open, lock, read) for every
/// attribute it looks up, which made `C_SignInit` cost more than the signature; a session object
/// lives in the token's memory. A token that refuses the copy (`CKA_COPYABLE` false, or no
/// `C_CopyObject`) is signed with through the token object itself.
pub struct Pkcs11Signer {
    token: Arc<Token>,
    label: String,
    algorithm: SignatureAlgorithm,
    public_key: PublicKey,
    /// The private key to sign with and the pool generation it was found in.
    key: Mutex<Option<CachedKey>>,
    metrics: Option<SignerMetrics>,
}

/// A signer's key handle in one pool generation.
#[derive(Clone, Copy)]
struct CachedKey {
    generation: u64,
    handle: ObjectHandle,
    /// Whether `handle` is the signer's session copy, destroyed with the signer.
    copy: bool,
}

/// The metric children of one signer, resolved once so that signing does no label lookups.
struct SignerMetrics {
    ok: IntCounter,
    error: IntCounter,
    duration: Histogram,
}

// === impl Pkcs11Signer ===

impl Pkcs11Signer {
    pub(crate) fn new(
        token: Arc<Token>,
        label: &str,
        algorithm: SignatureAlgorithm,
        public_key: PublicKey,
    ) -> Self {
        let metrics = token.metrics.get().map(|m| {
            let counter = |result| {
                m.signatures
                    .with_label_values(&["pkcs11", algorithm.name(), result])
            };
            SignerMetrics {
                ok: counter("ok"),
                error: counter("error"),
                duration: m.sign_duration.with_label_values(&["pkcs11"]),
            }
        });
        Pkcs11Signer {
            token,
            label: label.to_owned(),
            algorithm,
            public_key,
            key: Mutex::new(None),
            metrics,
        }
    }

    /// The mechanism the token signs with for `algorithm`.
    pub fn mechanism(algorithm: SignatureAlgorithm) -> MechanismType {
        match algorithm {
            SignatureAlgorithm::EcdsaP256Sha256 => MechanismType::ECDSA,
            SignatureAlgorithm::Ed25519 => MechanismType::EDDSA,
            SignatureAlgorithm::RsaPkcs1Sha256 => MechanismType::RSA_PKCS,
            SignatureAlgorithm::RsaPssSha256 => MechanismType::RSA_PKCS_PSS,
        }
    }

    fn sign_once(
        &self,
        session: &Session,
        lease: &Lease,
        message: &[u8],
    ) -> Result<Vec<u8>, Failure> {
        let key = self.key_handle(session, lease)?;
        let signed = match self.algorithm {
            SignatureAlgorithm::EcdsaP256Sha256 => {
                let digest = Sha256::digest(message);
                let raw = session.sign(&Mechanism::Ecdsa, key, &digest);
                raw.map(|raw| ecdsa_raw_to_der(&raw).map_err(Failure::Fatal))
            }
            SignatureAlgorithm::Ed25519 => {
                let mechanism = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
                session.sign(&mechanism, key, message).map(Ok)
            }
            SignatureAlgorithm::RsaPkcs1Sha256 => {
                let mut digest_info = [0; SHA256_DIGEST_INFO.len() + 32];
                let (header, digest) = digest_info.split_at_mut(SHA256_DIGEST_INFO.len());
                header.copy_from_slice(&SHA256_DIGEST_INFO);
                digest.copy_from_slice(&Sha256::digest(message));
                session.sign(&Mechanism::RsaPkcs, key, &digest_info).map(Ok)
            }
            SignatureAlgorithm::RsaPssSha256 => {
                let digest = Sha256::digest(message);
                let params = PkcsPssParams {
                    hash_alg: MechanismType::SHA256,
                    mgf: PkcsMgfType::MGF1_SHA256,
                    s_len: 32.into(),
                };
                session
                    .sign(&Mechanism::RsaPkcsPss(params), key, &digest)
                    .map(Ok)
            }
        };
        signed.map_err(|e| self.token.failure(&e, "sign", session, lease))?
    }

    /// The private key's handle in `lease`'s generation: cached, or found by label and copied
    /// into a session object.
    fn key_handle(&self, session: &Session, lease: &Lease) -> Result<ObjectHandle, Failure> {
        let mut cached = self
            .key
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(key) = *cached
            && key.generation == lease.generation
        {
            return Ok(key.handle);
        }
        let found = keys::find(session, &self.label, Half::Private)
            .map_err(|e| self.token.failure(&e, "find key", session, lease))?;
        let original = found.ok_or_else(|| {
            Failure::Fatal(Error::NoSuchKey {
                label: self.label.clone(),
                kind: Half::Private.kind(),
                store: format!("PKCS#11 token '{}'", self.token.label),
            })
        })?;
        let key = match session.copy_object(original, &[Attribute::Token(false)]) {
            Ok(handle) => CachedKey {
                generation: lease.generation,
                handle,
                copy: true,
            },
            Err(e) => {
                tracing::info!(
                    token = %self.token.label,
                    label = %self.label,
                    reason = %super::rv::describe(&e),
                    "the token keeps no session copy of the key; signing with the token object",
                );
                CachedKey {
                    generation: lease.generation,
                    handle: original,
                    copy: false,
                }
            }
        };
        *cached = Some(key);
        Ok(key.handle)
    }
}

impl Drop for Pkcs11Signer {
    /// Destroys the session copy of the key, if it is of the pool's current generation (older
    /// copies went with their sessions).
    fn drop(&mut self) {
        let cached = self
            .key
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let Some(CachedKey {
            generation,
            handle,
            copy: true,
        }) = cached
        else {
            return;
        };
        let destroyed = self.token.run(|session, lease| {
            if lease.generation == generation
                && let Err(e) = session.destroy_object(handle)
            {
                tracing::debug!(label = %self.label, reason = %super::rv::describe(&e), "destroying the session copy of a key");
            }
            Ok(())
        });
        if let Err(error) = destroyed {
            tracing::debug!(label = %self.label, %error, "the session copy of a key was left to its session");
        }
    }
}

impl Signer for Pkcs11Signer {
    fn label(&self) -> &str {
        &self.label
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }

    fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        let Some(metrics) = &self.metrics else {
            return self
                .token
                .run(|session, lease| self.sign_once(session, lease, message));
        };
        let start = Instant::now();
        let result = self
            .token
            .run(|session, lease| self.sign_once(session, lease, message));
        metrics.duration.observe(start.elapsed().as_secs_f64());
        match &result {
            Ok(_) => metrics.ok.inc(),
            Err(_) => metrics.error.inc(),
        }
        result
    }
}

impl std::fmt::Debug for Pkcs11Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Signer")
            .field("token", &self.token.label)
            .field("label", &self.label)
            .field("algorithm", &self.algorithm)
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}
