//! Checking a peer member's batch signatures fast.
//!
//! A batch signature is one token signature over a Merkle root plus a hash chain per message
//! (`backbone_hsm::batch`). Under load a peer's batches hold many messages, so the expensive part
//! — the ECDSA verification of the root signature, and parsing the signing certificate — is the
//! same for all of them. The verifier remembers, per signing certificate, its public key and
//! validity, and the `(key, tree size, root, signature)` tuples it has verified; every message
//! still has its own hash chain checked against the root.
//!
//! Both memories are bounded and cleared when full. A certificate's validity is checked against
//! the clock on every use, and which certificates count is decided by the configuration current
//! at the call, so a revoked certificate stops verifying with the next configuration.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use backbone_hsm::PublicKey;
use backbone_hsm::batch::{BatchSignature, to_be_signed};
use backbone_registry::GlobalConf;
use backbone_registry::id::MemberId;
use sha2::{Digest, Sha256};

/// Certificates remembered.
const MAX_CERTIFICATES: usize = 4096;
/// Verified roots remembered: a few seconds of batches from every peer.
const MAX_ROOTS: usize = 16_384;

/// The verifier; share one per gateway.
#[derive(Debug, Default)]
pub struct Verifier {
    certificates: Mutex<HashMap<[u8; 32], Option<CertificateKey>>>,
    roots: Mutex<HashMap<[u8; 32], Arc<OnceLock<bool>>>>,
}

#[derive(Clone, Debug)]
struct CertificateKey {
    key: PublicKey,
    not_before: i64,
    not_after: i64,
}

// === impl Verifier ===

impl Verifier {
    /// An empty verifier.
    pub fn new() -> Self {
        Verifier::default()
    }

    /// The DER of the first of `member`'s signing certificates in `conf` that is valid now and
    /// whose key signed `signature`'s root, if `message` is in the batch.
    pub fn verify_by_member(&self, conf: &GlobalConf, member: &MemberId, message: &[u8], signature: &BatchSignature) -> Option<Vec<u8>> {
        signature.verify_chain(message).ok()?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok().and_then(|d| i64::try_from(d.as_secs()).ok())?;
        conf.signing_certificates.iter().filter(|c| &c.member == member).find_map(|c| {
            let der = c.certificate.der();
            let key = self.certificate_key(der)?;
            if now < key.not_before || now > key.not_after {
                return None;
            }
            self.root_verified(&key.key, signature).then(|| der.to_vec())
        })
    }

    /// The DER of `member`'s signing certificate in `conf` that certifies `key` (this gateway's
    /// own, for its log records).
    pub fn certificate_of(&self, conf: &GlobalConf, member: &MemberId, key: &PublicKey) -> Option<Vec<u8>> {
        conf.signing_certificates
            .iter()
            .filter(|c| &c.member == member)
            .find(|c| self.certificate_key(c.certificate.der()).is_some_and(|k| k.key.spki_der() == key.spki_der()))
            .map(|c| c.certificate.der().to_vec())
    }

    fn certificate_key(&self, der: &[u8]) -> Option<CertificateKey> {
        let id: [u8; 32] = Sha256::digest(der).into();
        if let Some(known) = self.certificates.lock().ok()?.get(&id) {
            return known.clone();
        }
        let parsed = parse(der);
        let mut certificates = self.certificates.lock().ok()?;
        if certificates.len() >= MAX_CERTIFICATES {
            certificates.clear();
        }
        certificates.insert(id, parsed.clone());
        parsed
    }

    fn root_verified(&self, key: &PublicKey, signature: &BatchSignature) -> bool {
        let mut hasher = Sha256::new();
        hasher.update(key.spki_der());
        hasher.update(to_be_signed(signature.tree_size(), signature.root()));
        hasher.update(signature.signature());
        let id: [u8; 32] = hasher.finalize().into();
        // The messages of one batch arrive together, so several tasks may ask for the same root
        // at once: they share one verification (the first computes it, the others wait for it).
        let Ok(mut roots) = self.roots.lock() else { return signature.verify_root(key).is_ok() };
        let cell = match roots.get(&id) {
            Some(cell) => Arc::clone(cell),
            None => {
                if roots.len() >= MAX_ROOTS {
                    roots.clear();
                }
                let cell = Arc::new(OnceLock::new());
                roots.insert(id, Arc::clone(&cell));
                cell
            }
        };
        drop(roots);
        let verified = *cell.get_or_init(|| signature.verify_root(key).is_ok());
        if !verified {
            // Only verified roots are remembered: a forgery cannot fill the memory for long.
            if let Ok(mut roots) = self.roots.lock() {
                roots.remove(&id);
            }
        }
        verified
    }
}

fn parse(der: &[u8]) -> Option<CertificateKey> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let key = PublicKey::from_spki_der(cert.public_key().raw).ok()?;
    let validity = cert.validity();
    Some(CertificateKey { key, not_before: validity.not_before.timestamp(), not_after: validity.not_after.timestamp() })
}
