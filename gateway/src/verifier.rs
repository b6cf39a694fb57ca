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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use backbone_hsm::PublicKey;
use backbone_hsm::batch::{BatchSignature, to_be_signed};
use backbone_registry::GlobalConf;
use backbone_registry::id::MemberId;
use backbone_registry::model::Certificate;
use sha2::{Digest, Sha256};

/// Certificates remembered.
const MAX_CERTIFICATES: usize = 4096;
/// Verified roots remembered: a few seconds of batches from every peer.
const MAX_ROOTS: usize = 16_384;

/// The verifier; share one per gateway.
#[derive(Debug)]
pub struct Verifier {
    certificates: Mutex<HashMap<[u8; 32], Option<Arc<CertificateKey>>>>,
    roots: Mutex<HashMap<[u8; 32], Arc<OnceLock<bool>>>>,
    /// Root signatures verified with the public key (not answered from memory).
    root_verifications: AtomicU64,
}

#[derive(Clone, Debug)]
struct CertificateKey {
    key: PublicKey,
    not_before: i64,
    not_after: i64,
}

// === impl Verifier ===

impl Default for Verifier {
    fn default() -> Self {
        Verifier::new()
    }
}

impl Verifier {
    /// An empty verifier.
    pub fn new() -> Self {
        Verifier {
            certificates: Mutex::default(),
            roots: Mutex::new(HashMap::with_capacity(MAX_ROOTS)),
            root_verifications: AtomicU64::new(0),
        }
    }

    /// How many root signatures this verifier has checked with a public key; the other messages
    /// of their batches were answered from memory.
    pub fn root_verifications(&self) -> u64 {
        self.root_verifications.load(Ordering::Relaxed)
    }

    /// The DER of the first of `member`'s signing certificates in `conf` that is valid now and
    /// whose key signed `signature`'s root, if `message` is in the batch.
    pub fn verify_by_member(
        &self,
        conf: &GlobalConf,
        member: &MemberId,
        message: &[u8],
        signature: &BatchSignature,
    ) -> Option<Vec<u8>> {
        signature.verify_chain(message).ok()?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_secs()).ok())?;
        conf.signing_certificates
            .iter()
            .filter(|c| &c.member == member)
            .find_map(|c| {
                let key = self.certificate_key(&c.certificate)?;
                if now < key.not_before || now > key.not_after {
                    return None;
                }
                self.root_verified(&key.key, signature)
                    .then(|| c.certificate.der().to_vec())
            })
    }

    /// The DER of `member`'s signing certificate in `conf` that certifies `key` (this gateway's
    /// own, for its log records).
    pub fn certificate_of(
        &self,
        conf: &GlobalConf,
        member: &MemberId,
        key: &PublicKey,
    ) -> Option<Vec<u8>> {
        conf.signing_certificates
            .iter()
            .filter(|c| &c.member == member)
            .find(|c| {
                self.certificate_key(&c.certificate)
                    .is_some_and(|k| k.key.spki_der() == key.spki_der())
            })
            .map(|c| c.certificate.der().to_vec())
    }

    fn certificate_key(&self, certificate: &Certificate) -> Option<Arc<CertificateKey>> {
        let id = *certificate.sha256();
        if let Some(known) = self.certificates.lock().ok()?.get(&id) {
            return known.clone();
        }
        let parsed = parse(certificate.der()).map(Arc::new);
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
        let Ok(mut roots) = self.roots.lock() else {
            return signature.verify_root(key).is_ok();
        };
        let mut forgotten = None;
        let cell = match roots.get(&id) {
            Some(cell) => Arc::clone(cell),
            None => {
                if roots.len() >= MAX_ROOTS {
                    // A full memory starts again in a table already sized for MAX_ROOTS, so that
                    // it never rehashes under the lock, and the old one is freed after the lock
                    // is released: rehashing or freeing 16,384 entries under it would hold up
                    // every message check meanwhile (the replay guard's rehash did the same at a
                    // larger size, see `replay::SHARDS`).
                    forgotten = Some(std::mem::replace(
                        &mut *roots,
                        HashMap::with_capacity(MAX_ROOTS),
                    ));
                }
                let cell = Arc::new(OnceLock::new());
                roots.insert(id, Arc::clone(&cell));
                cell
            }
        };
        drop(roots);
        drop(forgotten);
        let verified = *cell.get_or_init(|| {
            self.root_verifications.fetch_add(1, Ordering::Relaxed);
            signature.verify_root(key).is_ok()
        });
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
    Some(CertificateKey {
        key,
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    use backbone_hsm::batch::{BatchConfig, BatchSigner};
    use backbone_hsm::software::SoftwareKeyStore;
    use backbone_hsm::{KeyStore, KeyType};

    use super::*;

    /// Eight messages signed together: the worker lingers long enough to take them in one batch.
    fn one_batch() -> (PublicKey, Vec<(Vec<u8>, BatchSignature)>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = SoftwareKeyStore::open(dir.path().join("keys")).unwrap();
        store.generate("member-signing", KeyType::EcP256).unwrap();
        let signer = store.signer("member-signing", None).unwrap();
        let config = BatchConfig {
            max_linger: Duration::from_millis(300),
            linger_under_load: false,
            workers: 1,
            ..BatchConfig::default()
        };
        let batch = BatchSigner::new(signer, config).unwrap();
        let start = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8u8)
            .map(|n| {
                let (batch, start) = (batch.clone(), Arc::clone(&start));
                std::thread::spawn(move || {
                    let message = vec![n; 100];
                    start.wait();
                    let signature = batch.sign_blocking(&message).unwrap();
                    (message, signature)
                })
            })
            .collect();
        let signed: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        (batch.public_key().clone(), signed, dir)
    }

    #[test]
    fn a_batch_root_is_verified_once_when_its_messages_arrive_together() {
        let (key, signed, _dir) = one_batch();
        let roots: HashMap<[u8; 32], usize> =
            signed.iter().fold(HashMap::new(), |mut roots, (_, s)| {
                *roots.entry(*s.root()).or_default() += 1;
                roots
            });
        assert!(
            roots.values().any(|&n| n > 1),
            "the messages were signed in batches of one: {roots:?}"
        );

        let verifier = Arc::new(Verifier::new());
        let start = Arc::new(Barrier::new(signed.len()));
        let threads: Vec<_> = signed
            .iter()
            .cloned()
            .map(|(message, signature)| {
                let (verifier, start, key) =
                    (Arc::clone(&verifier), Arc::clone(&start), key.clone());
                std::thread::spawn(move || {
                    start.wait();
                    signature.verify_chain(&message).is_ok()
                        && verifier.root_verified(&key, &signature)
                })
            })
            .collect();
        assert!(
            threads.into_iter().all(|t| t.join().unwrap()),
            "every message verifies"
        );
        assert_eq!(
            verifier.root_verifications(),
            roots.len() as u64,
            "one ECDSA verification per root"
        );

        // A forged root signature fails, and is not remembered as if it had been checked.
        let (message, genuine) = &signed[0];
        let mut bytes = genuine.to_bytes();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let forged = BatchSignature::from_bytes(&bytes).unwrap();
        assert!(
            forged.verify_chain(message).is_ok(),
            "the chain is untouched: only the root signature is"
        );
        let before = verifier.root_verifications();
        assert!(!verifier.root_verified(&key, &forged));
        assert!(!verifier.root_verified(&key, &forged));
        assert_eq!(
            verifier.root_verifications(),
            before + 2,
            "a failed root is checked again every time"
        );
        assert!(verifier.root_verified(&key, genuine));
        assert_eq!(
            verifier.root_verifications(),
            before + 2,
            "the genuine root is still remembered"
        );
    }
}
