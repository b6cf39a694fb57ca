//! The batch signer's public API, over software keys.
// Helpers outside #[test] functions too: failing loudly is the point.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backbone_hsm::batch::{
    BatchConfig, BatchSignature, BatchSigner, CHAIN_MISMATCH, FORMAT_VERSION,
    ROOT_SIGNATURE_MISMATCH,
};
use backbone_hsm::software::SoftwareKeyStore;
use backbone_hsm::{Error, KeyStore, KeyType, Metrics, PublicKey, SignatureAlgorithm, Signer};

/// A key store in a temporary directory, with one key of `key_type` labelled "batch".
fn signer(key_type: KeyType) -> (tempfile::TempDir, Arc<dyn Signer>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SoftwareKeyStore::open(dir.path()).unwrap();
    store.generate("batch", key_type).unwrap();
    let signer = store.signer("batch", None).unwrap();
    (dir, signer)
}

/// The public key of a new key of `key_type`.
fn fresh_key(key_type: KeyType) -> PublicKey {
    signer(key_type).1.public_key().clone()
}

/// Signs like `inner`, taking at least `delay` per signature, as a token does.
#[derive(Debug)]
struct SlowSigner {
    inner: Arc<dyn Signer>,
    delay: Duration,
}

impl Signer for SlowSigner {
    fn label(&self) -> &str {
        self.inner.label()
    }
    fn algorithm(&self) -> SignatureAlgorithm {
        self.inner.algorithm()
    }
    fn public_key(&self) -> &PublicKey {
        self.inner.public_key()
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        std::thread::sleep(self.delay);
        self.inner.sign(message)
    }
}

/// A token that is gone for good.
#[derive(Debug)]
struct LostToken {
    public_key: PublicKey,
}

impl Signer for LostToken {
    fn label(&self) -> &str {
        "lost"
    }
    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::EcdsaP256Sha256
    }
    fn public_key(&self) -> &PublicKey {
        &self.public_key
    }
    fn sign(&self, _: &[u8]) -> Result<Vec<u8>, Error> {
        std::thread::sleep(Duration::from_millis(5));
        Err(Error::TokenUnavailable {
            token: "lost".to_owned(),
            attempts: 3,
            reason: "CKR_DEVICE_REMOVED".to_owned(),
        })
    }
}

#[tokio::test]
async fn single_message_in_every_algorithm() {
    for key_type in KeyType::ALL {
        let (_dir, signer) = signer(key_type);
        let batch = BatchSigner::new(signer.clone(), BatchConfig::default()).unwrap();
        let proof = batch.sign(b"referral 42").await.unwrap();
        assert_eq!((proof.leaf_index(), proof.tree_size()), (0, 1));
        assert!(proof.path().is_empty());
        assert_eq!(proof.algorithm(), signer.algorithm());
        proof.verify(b"referral 42", signer.public_key()).unwrap();
        assert!(proof.verify(b"referral 43", signer.public_key()).is_err());
    }
}

#[test]
fn sign_blocking_outside_tokio() {
    let (_dir, signer) = signer(KeyType::Ed25519);
    let batch = BatchSigner::new(signer.clone(), BatchConfig::default()).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let batch = batch.clone();
            std::thread::spawn(move || {
                (
                    i,
                    batch
                        .sign_blocking(format!("message {i}").as_bytes())
                        .unwrap(),
                )
            })
        })
        .collect();
    for thread in threads {
        let (i, proof) = thread.join().unwrap();
        proof
            .verify(format!("message {i}").as_bytes(), signer.public_key())
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_callers_share_few_roots() {
    let (_dir, inner) = signer(KeyType::EcP256);
    let slow: Arc<dyn Signer> = Arc::new(SlowSigner {
        inner: inner.clone(),
        delay: Duration::from_millis(5),
    });
    let batch = BatchSigner::new(slow, BatchConfig::default()).unwrap();
    let tasks: Vec<_> = (0..500)
        .map(|i| {
            let batch = batch.clone();
            tokio::spawn(async move {
                let message = format!("message {i}");
                let proof = batch.sign(message.as_bytes()).await.unwrap();
                (message, proof)
            })
        })
        .collect();
    let mut batches: HashMap<[u8; 32], Vec<BatchSignature>> = HashMap::new();
    for task in tasks {
        let (message, proof) = task.await.unwrap();
        proof
            .verify(message.as_bytes(), inner.public_key())
            .unwrap();
        batches.entry(*proof.root()).or_default().push(proof);
    }
    // Two workers at 5 ms a signature: the first batches are small, the rest gather the queue.
    assert!(
        batches.len() <= 40,
        "{} batches for 500 messages",
        batches.len()
    );
    for proofs in batches.values() {
        // Every leaf of every batch went to exactly one caller.
        let size = proofs[0].tree_size();
        let indexes: BTreeSet<u64> = proofs.iter().map(|p| p.leaf_index()).collect();
        assert_eq!(indexes, (0..size).collect::<BTreeSet<u64>>());
        // Masks differ, so equal messages would still get different leaves.
        let masks: BTreeSet<[u8; 32]> = proofs.iter().map(|p| *p.mask()).collect();
        assert_eq!(masks.len() as u64, size);
    }
}

#[tokio::test]
async fn linger_gathers_one_batch() {
    let (_dir, signer) = signer(KeyType::EcP256);
    let config = BatchConfig {
        max_batch: 10,
        max_linger: Duration::from_millis(200),
        workers: 1,
        ..BatchConfig::default()
    };
    let batch = BatchSigner::new(signer, config).unwrap();
    let tasks: Vec<_> = (0..10u8)
        .map(|i| {
            let batch = batch.clone();
            tokio::spawn(async move { batch.sign(&[i]).await.unwrap() })
        })
        .collect();
    let mut roots = BTreeSet::new();
    for task in tasks {
        let proof = task.await.unwrap();
        assert_eq!(proof.tree_size(), 10);
        roots.insert(*proof.root());
    }
    assert_eq!(roots.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lingering_under_load_only_never_delays_a_lone_caller() {
    let (_dir, signer) = signer(KeyType::EcP256);
    let config = BatchConfig {
        max_batch: 32,
        max_linger: Duration::from_secs(1),
        linger_under_load: true,
        workers: 1,
    };
    let batch = BatchSigner::new(signer, config).unwrap();
    // Alone: signed at once, not after the linger.
    for i in 0..3u8 {
        let started = std::time::Instant::now();
        let proof = batch.sign(&[i]).await.unwrap();
        assert_eq!(proof.tree_size(), 1);
        assert!(
            started.elapsed() < Duration::from_millis(700),
            "a lone caller waited {:?}",
            started.elapsed()
        );
    }
    // In company: once a batch held more than one request, the worker lingers and the batches grow.
    let mut largest = 0;
    for round in 0..5u8 {
        let tasks: Vec<_> = (0..32u8)
            .map(|i| {
                let batch = batch.clone();
                tokio::spawn(async move { batch.sign(&[round, i]).await.unwrap().tree_size() })
            })
            .collect();
        for task in tasks {
            largest = largest.max(task.await.unwrap());
        }
    }
    assert!(largest >= 16, "batches under load stayed at {largest}");
}

#[tokio::test]
async fn every_tampering_is_refused() {
    let (_dir, signer) = signer(KeyType::EcP256);
    let config = BatchConfig {
        max_batch: 13,
        max_linger: Duration::from_millis(200),
        workers: 1,
        ..BatchConfig::default()
    };
    let batch = BatchSigner::new(signer.clone(), config).unwrap();
    let tasks: Vec<_> = (0..13u8)
        .map(|i| {
            let batch = batch.clone();
            tokio::spawn(async move { batch.sign(&[i]).await.unwrap() })
        })
        .collect();
    let mut proofs = Vec::new();
    for task in tasks {
        proofs.push(task.await.unwrap());
    }
    let key = signer.public_key();
    // Leaf 5 of 13: a path of 4 hashes, with siblings on both sides.
    let proof = proofs.iter().find(|p| p.leaf_index() == 5).unwrap();
    let message = [proofs.iter().position(|p| p.leaf_index() == 5).unwrap() as u8];
    proof.verify(&message, key).unwrap();
    let bytes = proof.to_bytes();
    assert_eq!(bytes[0], FORMAT_VERSION);

    let reason = |result: Result<(), Error>| match result {
        Err(Error::BadSignature { reason, .. }) => reason,
        other => panic!("expected BadSignature, got {other:?}"),
    };
    let tampered = |at: usize, value: &[u8]| {
        let mut b = bytes.clone();
        b[at..at + value.len()].copy_from_slice(value);
        BatchSignature::from_bytes(&b).unwrap()
    };
    let path_at = 83;
    let signature_at = path_at + 4 * 32 + 2;
    assert_eq!(
        reason(proof.verify(b"another message", key)),
        CHAIN_MISMATCH,
        "message"
    );
    for at in [2 + 7, 18, 50, path_at, path_at + 3 * 32 + 31] {
        let mut flipped = bytes[at];
        flipped ^= 0x01;
        let what = format!("byte {at} (index, mask, root or path)");
        assert_eq!(
            reason(tampered(at, &[flipped]).verify(&message, key)),
            CHAIN_MISMATCH,
            "{what}"
        );
    }
    // Leaf 6 and leaf 4 of 13 have paths of the same length, so these decode and then fail.
    for index in [4u64, 6] {
        let wrong = tampered(2, &index.to_be_bytes());
        assert_eq!(
            reason(wrong.verify(&message, key)),
            CHAIN_MISMATCH,
            "index {index}"
        );
    }
    // A size with the same path shape leads to the same root, whose signature covers the size.
    for size in [14u64, 15] {
        let wrong = tampered(10, &size.to_be_bytes());
        assert!(matches!(
            reason(wrong.verify(&message, key)),
            CHAIN_MISMATCH | ROOT_SIGNATURE_MISMATCH
        ));
    }
    let wrong_size = tampered(10, &16u64.to_be_bytes());
    assert_eq!(
        reason(wrong_size.verify(&message, key)),
        ROOT_SIGNATURE_MISMATCH,
        "size 16"
    );
    let last = bytes.len() - 1;
    assert_eq!(
        reason(tampered(last, &[bytes[last] ^ 0x01]).verify(&message, key)),
        ROOT_SIGNATURE_MISMATCH
    );
    let inside = signature_at + 10;
    assert_eq!(
        reason(tampered(inside, &[!bytes[inside]]).verify(&message, key)),
        ROOT_SIGNATURE_MISMATCH
    );
    assert_eq!(
        reason(proof.verify(&message, &fresh_key(KeyType::EcP256))),
        ROOT_SIGNATURE_MISMATCH,
        "wrong key"
    );
    let ed25519 = fresh_key(KeyType::Ed25519);
    assert!(
        proof.verify(&message, &ed25519).is_err(),
        "key of another type"
    );
    // The claimed algorithm changes the check, not the outcome.
    let as_ed25519 = tampered(1, &[SignatureAlgorithm::Ed25519.code()]);
    assert!(as_ed25519.verify(&message, key).is_err());
}

#[tokio::test]
async fn encoding_round_trips_and_refuses_partial_input() {
    let (_dir, signer) = signer(KeyType::Rsa2048);
    let batch = BatchSigner::new(signer.clone(), BatchConfig::default()).unwrap();
    let proof = batch.sign(b"referral 42").await.unwrap();
    let bytes = proof.to_bytes();
    let decoded = BatchSignature::from_bytes(&bytes).unwrap();
    assert_eq!(decoded, proof);
    decoded.verify(b"referral 42", signer.public_key()).unwrap();
    for len in 0..bytes.len() {
        assert!(
            matches!(
                BatchSignature::from_bytes(&bytes[..len]),
                Err(Error::Decode { .. })
            ),
            "{len} bytes"
        );
    }
    let mut longer = bytes.clone();
    longer.extend_from_slice(b"x");
    assert!(matches!(
        BatchSignature::from_bytes(&longer),
        Err(Error::Decode { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_error_reaches_every_caller_of_the_batch() {
    let public_key = fresh_key(KeyType::EcP256);
    let batch =
        BatchSigner::new(Arc::new(LostToken { public_key }), BatchConfig::default()).unwrap();
    let tasks: Vec<_> = (0..50u8)
        .map(|i| {
            let batch = batch.clone();
            tokio::spawn(async move { batch.sign(&[i]).await })
        })
        .collect();
    for task in tasks {
        let result = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(result, Err(Error::TokenUnavailable { attempts: 3, .. })),
            "{result:?}"
        );
    }
    // The workers are still there for the next batch.
    assert!(matches!(
        batch.sign(b"again").await,
        Err(Error::TokenUnavailable { .. })
    ));
}

#[tokio::test]
async fn sign_after_shutdown_is_refused() {
    let (_dir, signer) = signer(KeyType::EcP256);
    let batch = BatchSigner::new(signer.clone(), BatchConfig::default()).unwrap();
    let clone = batch.clone();
    batch.sign(b"before").await.unwrap();
    batch.shutdown();
    batch.shutdown();
    assert!(
        matches!(batch.sign(b"after").await, Err(Error::BatchSignerStopped { label }) if label == "batch")
    );
    assert!(matches!(
        clone.sign(b"after").await,
        Err(Error::BatchSignerStopped { .. })
    ));
    // The workers exit and let go of the key before the last handle's drop returns: a token
    // signer is closed before the process can exit.
    drop((batch, clone));
    assert_eq!(Arc::strong_count(&signer), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_answers_the_queue_and_stops() {
    let (_dir, inner) = signer(KeyType::EcP256);
    let slow: Arc<dyn Signer> = Arc::new(SlowSigner {
        inner: inner.clone(),
        delay: Duration::from_millis(20),
    });
    let batch = BatchSigner::new(
        slow.clone(),
        BatchConfig {
            workers: 1,
            ..BatchConfig::default()
        },
    )
    .unwrap();
    let first = tokio::spawn({
        let batch = batch.clone();
        async move { batch.sign(b"first").await }
    });
    tokio::time::sleep(Duration::from_millis(5)).await;
    // Queued while the worker waits for the token; the last handle goes with this task.
    let second = tokio::spawn(async move { batch.sign(b"second").await });
    first
        .await
        .unwrap()
        .unwrap()
        .verify(b"first", inner.public_key())
        .unwrap();
    second
        .await
        .unwrap()
        .unwrap()
        .verify(b"second", inner.public_key())
        .unwrap();
    patience(|| Arc::strong_count(&slow) == 1);
}

#[test]
fn zero_workers_or_batch_is_a_config_error() {
    let (_dir, signer) = signer(KeyType::EcP256);
    for config in [
        BatchConfig {
            workers: 0,
            ..BatchConfig::default()
        },
        BatchConfig {
            max_batch: 0,
            ..BatchConfig::default()
        },
    ] {
        assert!(matches!(
            BatchSigner::new(signer.clone(), config),
            Err(Error::Config { .. })
        ));
    }
}

#[tokio::test]
async fn metrics_count_batches_and_waits() {
    let (_dir, signer) = signer(KeyType::EcP256);
    let registry = prometheus::Registry::new();
    let metrics = Metrics::register(&registry).unwrap();
    let batch = BatchSigner::with_metrics(signer, BatchConfig::default(), &metrics).unwrap();
    for i in 0..3u8 {
        batch.sign(&[i]).await.unwrap();
    }
    assert_eq!(
        metrics
            .batch_wait
            .with_label_values(&["batch"])
            .get_sample_count(),
        3
    );
    assert_eq!(
        metrics
            .batch_size
            .with_label_values(&["batch"])
            .get_sample_count(),
        3
    );
}

/// A proof written by the first version of this code still verifies: message logs keep them for
/// years.
#[test]
fn archived_v1_proof_verifies() {
    let bytes = include_bytes!("../src/testdata/batch-signature-v1.bin");
    let key =
        PublicKey::from_pem(include_bytes!("../src/testdata/batch-signature-v1.pem")).unwrap();
    let proof = BatchSignature::from_bytes(bytes).unwrap();
    assert_eq!(proof.algorithm(), SignatureAlgorithm::EcdsaP256Sha256);
    assert_eq!(
        (proof.leaf_index(), proof.tree_size(), proof.path().len()),
        (3, 5, 3)
    );
    proof.verify(b"backbone batch fixture 3", &key).unwrap();
    assert!(proof.verify(b"backbone batch fixture 2", &key).is_err());
    assert_eq!(proof.to_bytes(), bytes);
}

/// Waits up to five seconds for `done`.
fn patience(done: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < until, "gave up waiting");
        std::thread::sleep(Duration::from_millis(5));
    }
}
