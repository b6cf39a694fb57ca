//! Batch signing: many concurrent requests to sign with one key become one token signature over
//! the root of a Merkle tree, and each caller gets that signature plus the hash chain from its own
//! message to the root.
//!
//! ```text
//!  sign(m₀) ─┐                      ┌─ worker thread ────────────────────────────────┐
//!  sign(m₁) ─┼─ SHA-256 ─▶ queue ──▶│ take ≤ max_batch ─▶ masked leaves ─▶ tree      │
//!  sign(m₂) ─┘   (caller)           │  ─▶ Signer::sign(context ‖ size ‖ root)        │
//!                                   └─▶ each caller: BatchSignature (root sig, path) ┘
//! ```
//!
//! The tree is the Merkle tree of [RFC 9162 §2.1](https://www.rfc-editor.org/rfc/rfc9162#section-2.1)
//! (identical to RFC 6962's) over SHA-256, and each proof carries the RFC's audit path. Leaf `i`
//! is `mask_i || SHA-256(message_i)`, where `mask_i` is a fresh 32-byte blinding mask, so that the
//! sibling hashes a caller receives reveal nothing about the other messages in its batch. The
//! encoding of [`BatchSignature`] appears in message logs that auditors check for years; it is
//! specified in `hsm/docs/batch-format.md`.
//!
//! Start with [`BatchSigner::new`]; auditors need only [`BatchSignature::from_bytes`] and
//! [`BatchSignature::verify`].
//!
//! # Batching
//!
//! Callers hash their messages themselves and queue the 32-byte digests. Each of
//! [`BatchConfig::workers`] threads (one per token session) takes every request queued when it
//! becomes free, up to [`BatchConfig::max_batch`], optionally waiting [`BatchConfig::max_linger`]
//! for more. At low load a batch holds one message and costs one token signature; under load the
//! queue grows while the workers sign, so batches grow with the load and the wait stays near the
//! time of two token signatures.
//!
//! # What is durable
//!
//! Nothing: a batch signer keeps no state. A request whose caller has not been answered when the
//! process dies is lost, and its caller never held a proof.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use prometheus::Histogram;
use ring::rand::SystemRandom;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use crate::{Error, Metrics, PublicKey, SignatureAlgorithm, Signer};

pub mod merkle;
mod signature;
mod worker;

pub use self::signature::{
    BatchSignature, CHAIN_MISMATCH, FORMAT_VERSION, MAX_ENCODED_LEN, MAX_SIGNATURE_LEN,
    ROOT_SIGNATURE_MISMATCH, SIGNING_CONTEXT, TO_BE_SIGNED_LEN, message_leaf, to_be_signed,
};
use self::worker::{Answer, Job, Request, Worker, duplicate};

/// Largest batch by default: hashing 4096 leaves (mask, leaf and node, about 0.5 µs a message)
/// takes about 2 ms, well inside the 5 ms p99 wait Backbone aims for, and keeps audit paths at 12
/// hashes (384 bytes). A longer backlog is better split between the workers.
pub const DEFAULT_MAX_BATCH: usize = 4096;

/// No lingering by default: a free worker signs whatever is queued at once. Waiting would only
/// add latency at low load, and under load the queue fills while the workers sign anyway.
pub const DEFAULT_MAX_LINGER: Duration = Duration::ZERO;

/// Two workers by default: one per token session (see `config::DEFAULT_SESSIONS`), so one
/// worker gathers and hashes while the other waits for the token. (SoftHSM2 signs on the worker's
/// own core: on a two-core host one worker measured about a quarter more throughput than two,
/// see `benches/batch.rs`.)
pub const DEFAULT_WORKERS: usize = 2;

/// How a [`BatchSigner`] gathers requests into batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchConfig {
    /// Most messages under one signature; at least 1.
    pub max_batch: usize,
    /// How long a worker that has a request waits for more before it signs; zero signs at once.
    pub max_linger: Duration,
    /// Linger only under load: when the worker's previous batch held more than one request. A
    /// lone caller at low load is then never delayed, while under load batches grow, and with
    /// them the messages per token signature (and per verification at the other end).
    pub linger_under_load: bool,
    /// Worker threads, each making one token signature at a time; at least 1.
    pub workers: usize,
}

/// A handle to a running batch signer for one key. Clones share the same workers.
///
/// Dropping the last handle lets the workers answer every queued request and exit.
#[derive(Clone, Debug)]
pub struct BatchSigner {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    jobs: Sender<Job>,
    signer: Arc<dyn Signer>,
    workers: usize,
    stopped: AtomicBool,
    wait: Option<Histogram>,
    /// Joined when the last handle goes: each worker holds the signer, and a token signer must be
    /// closed before the process exits. A worker still closing its token sessions while the main
    /// thread runs the PKCS#11 module's exit handlers crashes the process (seen with SoftHSM2).
    threads: Vec<thread::JoinHandle<()>>,
}

// === impl BatchConfig ===

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_batch: DEFAULT_MAX_BATCH,
            max_linger: DEFAULT_MAX_LINGER,
            linger_under_load: false,
            workers: DEFAULT_WORKERS,
        }
    }
}

impl BatchConfig {
    fn check(&self) -> Result<(), Error> {
        let (key, value) = if self.max_batch == 0 {
            ("batch max_batch", self.max_batch)
        } else if self.workers == 0 {
            ("batch workers", self.workers)
        } else {
            return Ok(());
        };
        Err(Error::Config {
            key,
            value: value.to_string(),
            reason: "must be at least 1".to_owned(),
        })
    }
}

// === impl Shared ===

impl Drop for Shared {
    /// The last handle is gone: the workers sign what is queued, then stop, and are waited for, so
    /// that the signer they hold is dropped before this returns.
    fn drop(&mut self) {
        for _ in 0..self.workers {
            // Fails only when the workers have exited already.
            let _ = self.jobs.send(Job::Stop);
        }
        for handle in self.threads.drain(..) {
            if handle.join().is_err() {
                tracing::error!(
                    label = self.signer.label(),
                    "a batch signer thread panicked"
                );
            }
        }
    }
}

// === impl BatchSigner ===

impl BatchSigner {
    /// Starts the worker threads of a batch signer over `signer`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `max_batch` or `workers` is zero; [`Error::BatchSignerStopped`] when
    /// the operating system refuses a thread (the cause is logged).
    pub fn new(signer: Arc<dyn Signer>, config: BatchConfig) -> Result<Self, Error> {
        Self::start(signer, config, None)
    }

    /// Like [`Self::new`], and records batch sizes and each caller's wait in `metrics`, labelled
    /// with the key label.
    pub fn with_metrics(
        signer: Arc<dyn Signer>,
        config: BatchConfig,
        metrics: &Metrics,
    ) -> Result<Self, Error> {
        Self::start(signer, config, Some(metrics))
    }

    /// Signs `message` in the next batch and returns its proof.
    ///
    /// The message is hashed on the calling task; only its digest is queued.
    ///
    /// # Errors
    ///
    /// [`Error::BatchSignerStopped`] after [`Self::shutdown`]; otherwise the error of the key
    /// store's signature over the batch, which every caller of that batch receives.
    pub async fn sign(&self, message: &[u8]) -> Result<BatchSignature, Error> {
        let started = Instant::now();
        let answer = self.submit(message)?.await;
        self.answered(started, answer)
    }

    /// Like [`Self::sign`], blocking the calling thread, for callers outside tokio.
    ///
    /// # Panics
    ///
    /// When called from inside a tokio runtime, where it would block a runtime thread: use
    /// [`Self::sign`] there.
    pub fn sign_blocking(&self, message: &[u8]) -> Result<BatchSignature, Error> {
        let started = Instant::now();
        let answer = self.submit(message)?.blocking_recv();
        self.answered(started, answer)
    }

    /// Stops taking requests. Requests already queued are signed; later ones fail with
    /// [`Error::BatchSignerStopped`]. Every handle sees the stop.
    pub fn shutdown(&self) {
        if self.shared.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        for _ in 0..self.shared.workers {
            // Fails only when the workers have exited already.
            let _ = self.shared.jobs.send(Job::Stop);
        }
    }

    /// The label of the key that signs the batches.
    pub fn label(&self) -> &str {
        self.shared.signer.label()
    }

    /// The algorithm of the root signatures.
    pub fn algorithm(&self) -> SignatureAlgorithm {
        self.shared.signer.algorithm()
    }

    /// The key that verifies the root signatures.
    pub fn public_key(&self) -> &PublicKey {
        self.shared.signer.public_key()
    }

    fn start(
        signer: Arc<dyn Signer>,
        config: BatchConfig,
        metrics: Option<&Metrics>,
    ) -> Result<Self, Error> {
        config.check()?;
        let label = signer.label().to_owned();
        let (jobs, receiver) = mpsc::channel();
        let receiver = Arc::new(Mutex::new(receiver));
        let mut threads = Vec::with_capacity(config.workers);
        for n in 0..config.workers {
            let worker = Worker {
                signer: Arc::clone(&signer),
                jobs: Arc::clone(&receiver),
                max_batch: config.max_batch,
                max_linger: config.max_linger,
                linger_under_load: config.linger_under_load,
                batch_size: metrics.map(|m| m.batch_size.with_label_values(&[label.as_str()])),
                rng: SystemRandom::new(),
            };
            // Token calls block, so workers are threads of their own rather than tokio tasks.
            match thread::Builder::new()
                .name(format!("batch-sign-{n}"))
                .spawn(move || worker.run())
            {
                Ok(handle) => threads.push(handle),
                Err(error) => {
                    tracing::error!(label, %error, "cannot start a batch signer thread");
                    // Dropping `jobs` stops the workers already started; wait for them to go.
                    drop(jobs);
                    for handle in threads {
                        let _ = handle.join();
                    }
                    return Err(Error::BatchSignerStopped { label });
                }
            }
        }
        tracing::debug!(label, ?config, "batch signer started");
        let wait = metrics.map(|m| m.batch_wait.with_label_values(&[label.as_str()]));
        let stopped = AtomicBool::new(false);
        Ok(BatchSigner {
            shared: Arc::new(Shared {
                jobs,
                signer,
                workers: config.workers,
                stopped,
                wait,
                threads,
            }),
        })
    }

    fn submit(&self, message: &[u8]) -> Result<oneshot::Receiver<Answer>, Error> {
        if self.shared.stopped.load(Ordering::Relaxed) {
            return Err(self.stopped());
        }
        let digest = Sha256::digest(message).into();
        let (reply, answer) = oneshot::channel();
        self.shared
            .jobs
            .send(Job::Sign(Request { digest, reply }))
            .map_err(|_| self.stopped())?;
        Ok(answer)
    }

    fn answered(
        &self,
        started: Instant,
        answer: Result<Answer, oneshot::error::RecvError>,
    ) -> Result<BatchSignature, Error> {
        let result = match answer {
            Ok(Ok((batch, index))) => batch.proof(index),
            Ok(Err(error)) => Err(duplicate(&error)),
            // The workers drop queued requests unanswered only once they have all exited after a
            // stop.
            Err(_) => Err(self.stopped()),
        };
        if let Some(wait) = &self.shared.wait {
            wait.observe(started.elapsed().as_secs_f64());
        }
        result
    }

    fn stopped(&self) -> Error {
        Error::BatchSignerStopped {
            label: self.label().to_owned(),
        }
    }
}
