//! One signature per call: `Signer::sign` on software keys beside the raw ring call it wraps, on one
//! thread and on two (the machine's cores), so that the cost of the abstraction shows.
//!
//! `cargo bench -p backbone-hsm --bench sign`; under `cargo test` each case runs once.
// A benchmark: failing loudly is fine.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::{Arc, LazyLock};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ring::rand::SystemRandom;
use ring::signature::{self as ring_sig};

use backbone_hsm::batch::{TO_BE_SIGNED_LEN, to_be_signed};
use backbone_hsm::software::{SoftwareSigner, generate_pkcs8};
use backbone_hsm::{KeyType, SignatureAlgorithm, Signer};

/// What a batch signer has the key sign: context, tree size and root.
static TBS: LazyLock<[u8; TO_BE_SIGNED_LEN]> = LazyLock::new(|| to_be_signed(4096, &[0x5a; 32]));

/// The same key as a `Signer` and as the ring object it wraps.
struct Case {
    algorithm: SignatureAlgorithm,
    signer: Arc<dyn Signer>,
    raw: Arc<dyn Fn() + Send + Sync>,
}

fn cases() -> Vec<Case> {
    let rng = SystemRandom::new();
    SignatureAlgorithm::ALL
        .into_iter()
        .map(|algorithm| {
            let key_type = match algorithm {
                SignatureAlgorithm::EcdsaP256Sha256 => KeyType::EcP256,
                SignatureAlgorithm::Ed25519 => KeyType::Ed25519,
                SignatureAlgorithm::RsaPkcs1Sha256 | SignatureAlgorithm::RsaPssSha256 => {
                    KeyType::Rsa2048
                }
            };
            let pkcs8 = generate_pkcs8(key_type).unwrap();
            let signer =
                Arc::new(SoftwareSigner::from_pkcs8("bench", &pkcs8, Some(algorithm)).unwrap());
            let raw: Arc<dyn Fn() + Send + Sync> = match algorithm {
                SignatureAlgorithm::EcdsaP256Sha256 => {
                    let key = ring_sig::EcdsaKeyPair::from_pkcs8(
                        &ring_sig::ECDSA_P256_SHA256_ASN1_SIGNING,
                        &pkcs8,
                        &rng,
                    )
                    .unwrap();
                    let rng = rng.clone();
                    Arc::new(move || {
                        black_box(key.sign(&rng, &*TBS).unwrap());
                    })
                }
                SignatureAlgorithm::Ed25519 => {
                    let key = ring_sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8).unwrap();
                    Arc::new(move || {
                        black_box(key.sign(&*TBS));
                    })
                }
                SignatureAlgorithm::RsaPkcs1Sha256 | SignatureAlgorithm::RsaPssSha256 => {
                    let key = ring_sig::RsaKeyPair::from_pkcs8(&pkcs8).unwrap();
                    let padding: &'static dyn ring_sig::RsaEncoding =
                        if algorithm == SignatureAlgorithm::RsaPssSha256 {
                            &ring_sig::RSA_PSS_SHA256
                        } else {
                            &ring_sig::RSA_PKCS1_SHA256
                        };
                    let rng = rng.clone();
                    Arc::new(move || {
                        let mut signature = vec![0; key.public().modulus_len()];
                        key.sign(padding, &rng, &*TBS, &mut signature).unwrap();
                        black_box(signature);
                    })
                }
            };
            Case {
                algorithm,
                signer,
                raw,
            }
        })
        .collect()
}

fn sign(c: &mut Criterion) {
    for case in cases() {
        let mut group = c.benchmark_group(format!("sign/{}", case.algorithm));
        group.throughput(Throughput::Elements(1));
        group.measurement_time(Duration::from_secs(3));
        for threads in [1, 2] {
            group.bench_function(
                BenchmarkId::new("signer", format!("{threads} threads")),
                |b| {
                    b.iter_custom(|iters| {
                        let signer = Arc::clone(&case.signer);
                        on_threads(threads, iters, move || {
                            drop(black_box(signer.sign(&*TBS).unwrap()))
                        })
                    })
                },
            );
            group.bench_function(
                BenchmarkId::new("ring", format!("{threads} threads")),
                |b| {
                    b.iter_custom(|iters| {
                        let raw = Arc::clone(&case.raw);
                        on_threads(threads, iters, move || raw())
                    })
                },
            );
        }
        group.finish();
    }
}

/// Runs `iters` calls of `f` split over `threads` threads and returns the wall time, so that
/// criterion's per-element figure is the cost of one signature with that many threads busy.
fn on_threads(threads: u64, iters: u64, f: impl Fn() + Send + Sync + Clone + 'static) -> Duration {
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let f = f.clone();
            let n = iters / threads + u64::from(t < iters % threads);
            thread::spawn(move || (0..n).for_each(|_| f()))
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    start.elapsed()
}

criterion_group!(benches, sign);
criterion_main!(benches);
