//! A [`Wrapper`] over one AES-256 secret key on a PKCS#11 token: `CKM_AES_GCM` through
//! `C_Encrypt` and `C_Decrypt`, in the format of [`crate::wrap`].

use std::sync::{Arc, Mutex};

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use super::keys::{self, Half};
use super::pool::{Failure, Lease, Token};
use crate::Error;
use crate::wrap::{self, IV_LEN, TAG_LEN, Wrapper};

/// Wraps and unwraps with one secret key on a PKCS#11 token, borrowing a session from the store's
/// pool for each call. The key handle is found once per pool generation and cached.
pub struct Pkcs11Wrapper {
    token: Arc<Token>,
    label: String,
    /// The secret key's handle and the pool generation it was found in.
    key: Mutex<Option<(u64, ObjectHandle)>>,
    rng: SystemRandom,
}

// === impl Pkcs11Wrapper ===

impl Pkcs11Wrapper {
    pub(crate) fn new(token: Arc<Token>, label: &str) -> Self {
        Pkcs11Wrapper {
            token,
            label: label.to_owned(),
            key: Mutex::new(None),
            rng: SystemRandom::new(),
        }
    }

    fn store(&self) -> String {
        format!("PKCS#11 token '{}'", self.token.label)
    }

    /// The secret key's handle in `lease`'s generation: cached, or found by label.
    fn key_handle(&self, session: &Session, lease: &Lease) -> Result<ObjectHandle, Failure> {
        let mut cached = self
            .key
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((generation, handle)) = *cached
            && generation == lease.generation
        {
            return Ok(handle);
        }
        let found = keys::find(session, &self.label, Half::Secret)
            .map_err(|e| self.token.failure(&e, "find wrapping key", session, lease))?;
        let handle = found.ok_or_else(|| {
            Failure::Fatal(Error::NoSuchKey {
                label: self.label.clone(),
                kind: Half::Secret.kind(),
                store: self.store(),
            })
        })?;
        *cached = Some((lease.generation, handle));
        Ok(handle)
    }

    fn tag_bits() -> cryptoki::types::Ulong {
        let bits = u64::try_from(TAG_LEN * 8).unwrap_or(128);
        bits.into()
    }
}

impl Wrapper for Pkcs11Wrapper {
    fn label(&self) -> &str {
        &self.label
    }

    fn wrap(&self, key: &[u8]) -> Result<Vec<u8>, Error> {
        wrap::check_key(key)?;
        let mut iv = [0; IV_LEN];
        self.rng
            .fill(&mut iv)
            .map_err(|e| Error::crypto("wrap", e))?;
        let sealed = self.token.run(|session, lease| {
            let handle = self.key_handle(session, lease)?;
            // The token may write into the IV buffer; it gets a copy.
            let mut iv_copy = iv;
            let params = GcmParams::new(&mut iv_copy, wrap::ASSOCIATED_DATA, Self::tag_bits())
                .map_err(|e| Failure::Fatal(Error::crypto("wrap", e)))?;
            session
                .encrypt(&Mechanism::AesGcm(params), handle, key)
                .map_err(|e| {
                    self.token
                        .failure(&e, "wrap (CKM_AES_GCM encrypt)", session, lease)
                })
        })?;
        Ok(wrap::assemble(&iv, &sealed))
    }

    fn unwrap(&self, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        let parts = wrap::parse(wrapped)?;
        let plain = self.token.run(|session, lease| {
            let handle = self.key_handle(session, lease)?;
            let mut iv = *parts.iv;
            let params = GcmParams::new(&mut iv, wrap::ASSOCIATED_DATA, Self::tag_bits())
                .map_err(|e| Failure::Fatal(Error::crypto("unwrap", e)))?;
            match session.decrypt(&Mechanism::AesGcm(params), handle, parts.sealed) {
                Ok(plain) => Ok(Zeroizing::new(plain)),
                // A tag that does not match. The specification says CKR_ENCRYPTED_DATA_INVALID (or
                // _LEN_RANGE for a bad length); SoftHSM2 2.6 answers CKR_GENERAL_ERROR. The input
                // was checked for format above, so a general error here is taken as the tag.
                Err(CkError::Pkcs11(
                    rv @ (RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange | RvError::GeneralError),
                    _,
                )) => {
                    let token = &self.token.label;
                    tracing::debug!(%token, label = %self.label, rv = %super::rv::ckr_name(rv), "unwrap refused");
                    Err(Failure::Fatal(Error::Unwrap { label: self.label.clone(), store: self.store() }))
                }
                Err(e) => Err(self.token.failure(&e, "unwrap (CKM_AES_GCM decrypt)", session, lease)),
            }
        })?;
        Ok(plain)
    }
}

impl std::fmt::Debug for Pkcs11Wrapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Wrapper")
            .field("token", &self.token.label)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}
