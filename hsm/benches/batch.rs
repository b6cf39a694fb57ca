//! The batch signer under load: callers on a two-thread tokio runtime sign in a loop for a fixed
//! time; the bench prints signed messages per second, wait percentiles and the mean batch size.
//! Then criterion measures the Merkle tree alone: the root (and every audit path) of a
//! 10,000-leaf batch.
//!
//! `cargo bench -p backbone-hsm --bench batch` runs each load for 3 s; under `cargo test` each
//! runs for 0.2 s, as a smoke test.
// A benchmark: failing loudly is fine.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, missing_docs)]

#[path = "../tests/common/softhsm.rs"]
mod softhsm;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};

use backbone_hsm::batch::merkle::{self, Tree};
use backbone_hsm::batch::{BatchConfig, BatchSigner};
use backbone_hsm::pkcs11::Pkcs11KeyStore;
use backbone_hsm::software::{SoftwareSigner, generate_pkcs8};
use backbone_hsm::{KeyStore, KeyType, Metrics, Signer};

/// The target's concurrency: 64 callers, each waiting for its proof before its next message.
const CALLERS: [usize; 2] = [1, 64];

/// One worker (SoftHSM2 signs on the caller's thread, so one worker leaves a core to the callers)
/// and the default of two.
const WORKERS: [usize; 2] = [1, 2];

/// A message-log record of typical size.
const MESSAGE_LEN: usize = 512;

fn main() {
    let bench = std::env::args().any(|arg| arg == "--bench");
    let duration = if bench {
        Duration::from_secs(3)
    } else {
        Duration::from_millis(200)
    };
    for (name, signer) in signers() {
        for callers in CALLERS {
            for workers in WORKERS {
                let config = BatchConfig {
                    workers,
                    ..BatchConfig::default()
                };
                let report = load(Arc::clone(&signer), config, callers, duration, bench);
                println!("batch/{name}/{workers} workers/{callers} callers: {report}");
            }
        }
    }
    let mut criterion = Criterion::default().configure_from_args();
    merkle_tree(&mut criterion);
    criterion.final_summary();
}

/// The signers to load: a software key, and a key on a fresh SoftHSM2 token (the target: at least
/// 200,000 messages a second with a p99 wait under 5 ms, for 64 callers on two cores).
fn signers() -> Vec<(&'static str, Arc<dyn Signer>)> {
    let pkcs8 = generate_pkcs8(KeyType::EcP256).unwrap();
    let software: Arc<dyn Signer> =
        Arc::new(SoftwareSigner::from_pkcs8("bench", &pkcs8, None).unwrap());
    let token = softhsm::token("batch-bench");
    let store = Pkcs11KeyStore::open(&token.config, token.pin()).unwrap();
    store.generate("bench", KeyType::EcP256).unwrap();
    let softhsm = store.signer("bench", None).unwrap();
    vec![
        ("software-ecdsa-p256", software),
        ("softhsm2-ecdsa-p256", softhsm),
    ]
}

/// What one load run measured.
struct Report {
    signed: usize,
    elapsed: Duration,
    waits: Vec<Duration>,
    batches: u64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = |q: f64| {
            let i =
                ((self.waits.len() as f64 * q) as usize).min(self.waits.len().saturating_sub(1));
            self.waits.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        write!(
            f,
            "{:.0} signed messages/s, wait p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms, \
             {} batches of {:.1} on average ({} messages in {:.2} s)",
            self.signed as f64 / self.elapsed.as_secs_f64(),
            at(0.50),
            at(0.99),
            at(0.999),
            at(1.0),
            self.batches,
            self.signed as f64 / self.batches.max(1) as f64,
            self.signed,
            self.elapsed.as_secs_f64(),
        )
    }
}

/// Runs `callers` tasks against a batch signer with `config` that each sign, await and sign again for `duration`, on a runtime with
/// two worker threads, after a warm-up when `warm_up` is set.
fn load(
    signer: Arc<dyn Signer>,
    config: BatchConfig,
    callers: usize,
    duration: Duration,
    warm_up: bool,
) -> Report {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let registry = prometheus::Registry::new();
    let metrics = Metrics::register(&registry).unwrap();
    let label = signer.label().to_owned();
    let batch = BatchSigner::with_metrics(signer, config, &metrics).unwrap();
    if warm_up {
        runtime.block_on(run(&batch, callers, Duration::from_millis(300)));
    }
    let batches_before = metrics
        .batch_size
        .with_label_values(&[label.as_str()])
        .get_sample_count();
    let start = Instant::now();
    let mut waits = runtime.block_on(run(&batch, callers, duration));
    let elapsed = start.elapsed();
    let batches = metrics
        .batch_size
        .with_label_values(&[label.as_str()])
        .get_sample_count()
        - batches_before;
    waits.sort_unstable();
    Report {
        signed: waits.len(),
        elapsed,
        waits,
        batches,
    }
}

async fn run(batch: &BatchSigner, callers: usize, duration: Duration) -> Vec<Duration> {
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = (0..callers)
        .map(|caller| {
            let batch = batch.clone();
            tokio::spawn(async move {
                let mut waits = Vec::new();
                let mut message = [0x42; MESSAGE_LEN];
                message[..8].copy_from_slice(&(caller as u64).to_be_bytes());
                for n in 0u64.. {
                    if Instant::now() >= deadline {
                        break;
                    }
                    message[8..16].copy_from_slice(&n.to_be_bytes());
                    let start = Instant::now();
                    black_box(batch.sign(&message).await.unwrap());
                    waits.push(start.elapsed());
                }
                waits
            })
        })
        .collect();
    let mut waits = Vec::new();
    for task in tasks {
        waits.extend(task.await.unwrap());
    }
    waits
}

/// The tree alone, at the size the style guide fixes for tree benchmarks.
fn merkle_tree(c: &mut Criterion) {
    const LEAVES: usize = 10_000;
    let leaves: Vec<merkle::Hash> = (0..LEAVES as u64)
        .map(|i| merkle::leaf_hash(&i.to_be_bytes()))
        .collect();
    let mut group = c.benchmark_group("merkle");
    group.throughput(Throughput::Elements(LEAVES as u64));
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("root of 10000 leaves", |b| {
        b.iter(|| Tree::new(black_box(leaves.clone())).root())
    });
    group.bench_function("root and every audit path of 10000 leaves", |b| {
        b.iter(|| {
            let tree = Tree::new(black_box(leaves.clone()));
            (0..LEAVES)
                .map(|i| tree.audit_path(i).map_or(0, |p| p.len()))
                .sum::<usize>()
        })
    });
    group.finish();
}
