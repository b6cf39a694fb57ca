//! The message log every gateway keeps, on the client side and the provider side: every request
//! and response with its signature and metadata, hash-linked, bodies encrypted at rest, batch
//! timestamped with keyless (KSI) signatures, and indexed by data subject for the usage service.
//! The record format is specified for auditors in `gateway/docs/message-log.md`.
//!
//! ```text
//!  append(records) ─▶ commit thread ─(group commit, one synced write)─▶ RocksDB ─▶ ack
//!                                                                          │
//!  stamper, every batch_interval: unstamped records ─▶ Merkle root ─▶ timestamping service
//!                     ◀── KSI signature ── batch + its record hashes (one synced write)
//!
//!  find_usage(person) ─▶ subjects index (newest first) ─▶ records + proofs
//!  export(range) ─▶ verify::verify (offline: hash links, proofs, KSI signatures)
//! ```
//!
//! What is durable at each stage, and what a crash loses:
//!
//! - **Appended**: `append` returns only after the records are in RocksDB's fsynced write-ahead
//!   log. An exchange is acknowledged to its caller only after that. A crash before the return
//!   loses the records, and the caller never saw an acknowledgement.
//! - **Stamped**: a batch's KSI signature and its records' hashes are written in one synced
//!   write; a record's proof is rebuilt from them when it is read. A crash before the write
//!   leaves the records unstamped; the next stamper run covers them.
//!
//! Fail closed: when stamping has failed for longer than
//! [`LogConfig::max_timestamping_failure`] (or the oldest unstamped record has waited that long),
//! [`MessageLog::check_accepting`] refuses, and the proxies refuse new exchanges, until a batch is
//! stamped again. [`MessageLog::status`] and [`LogMetrics`] say why.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use backbone_hsm::Wrapper;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::sync::oneshot;
use zeroize::Zeroizing;

pub mod archive;
pub mod batch;
pub mod body;
pub mod record;
pub mod store;
pub mod verify;

mod commit;
mod error;
mod metrics;
mod stamp;

pub use self::batch::{Batch, RecordProof};
pub use self::error::LogError;
pub use self::metrics::LogMetrics;
pub use self::record::{Hash, Kind, Record, Side, SignerCertificate};

use self::body::{BodyKey, DATA_KEY_LEN};
use self::commit::{Pending, Prepared};
use self::store::Store;

/// How often unstamped records are batched and timestamped: often enough that a record is
/// provable within seconds, rarely enough that one KSI signature covers many records.
pub const DEFAULT_BATCH_INTERVAL: Duration = Duration::from_secs(2);

/// How long timestamping may fail before new exchanges are refused: long enough to ride out a
/// restart of the timestamping service, short enough that little goes unproven.
pub const DEFAULT_MAX_TIMESTAMPING_FAILURE: Duration = Duration::from_secs(60);

/// Most records one batch covers; a larger backlog is stamped in several batches.
pub const MAX_BATCH_RECORDS: u64 = 100_000;

/// Most entries one usage query returns.
pub const MAX_USAGE_LIMIT: usize = 1000;

/// Longest body the log takes: 64 MiB, above the proxies' own limit.
pub const MAX_BODY_LEN: usize = 64 << 20;

/// The message log's settings.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// The RocksDB directory (created if missing).
    pub dir: PathBuf,
    /// How often unstamped records are timestamped ([`DEFAULT_BATCH_INTERVAL`]).
    pub batch_interval: Duration,
    /// How long stamping may fail before new exchanges are refused
    /// ([`DEFAULT_MAX_TIMESTAMPING_FAILURE`]).
    pub max_timestamping_failure: Duration,
    /// The timestamping service's HTTP address. `None` stamps nothing and never refuses (tests
    /// only).
    pub timestamping: Option<SocketAddr>,
}

/// One record to append: what the proxy saw and signed, with the body in plaintext.
#[derive(Clone, Debug)]
pub struct NewRecord {
    /// Which gateway logs it.
    pub side: Side,
    /// Request or response.
    pub kind: Kind,
    /// The X-Road message id.
    pub message_id: String,
    /// The client subsystem identifier.
    pub client: String,
    /// The service identifier.
    pub service: String,
    /// The end user at the client.
    pub user_id: Option<String>,
    /// The person whose data the exchange is about.
    pub data_subject: Option<String>,
    /// The declared purpose of use.
    pub purpose_of_use: Option<String>,
    /// Whether an emergency access was declared.
    pub emergency: bool,
    /// The encoded signed descriptor (`gateway::signed`).
    pub descriptor: Vec<u8>,
    /// `backbone_hsm::batch::BatchSignature::to_bytes()` over the descriptor.
    pub signature: Vec<u8>,
    /// DER of the member signing certificate that verifies the signature.
    pub signer_certificate: Vec<u8>,
    /// The body in plaintext; only its encryption is stored.
    pub body: Vec<u8>,
    /// When the gateway logged it, milliseconds since the Unix epoch.
    pub logged_at_ms: u64,
    /// For the outcome record of an exchange (a response record: the answer, or the fault that
    /// ended it), the sequence number of the request record it answers. Kept in the log's index,
    /// not in the record.
    pub answers: Option<u64>,
}

/// How a logged request ended, as its outcome record says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered by the service with this HTTP status (the service's own errors included).
    Answered {
        /// The service's status.
        status: u16,
    },
    /// Ended by a fault, raised by a gateway: the X-Road error type.
    Refused {
        /// `Server.ServerProxy.ServiceFailed`, …
        fault: String,
    },
    /// No outcome logged (yet): in flight, or the gateway stopped before it could log one.
    Unanswered,
}

/// A record read back: decrypted, with its hash and, once stamped, its proof.
#[derive(Clone, Debug)]
pub struct LoggedRecord {
    /// The stored record.
    pub record: Record,
    /// Its hash (the next record's `prev_hash`).
    pub hash: Hash,
    /// The body in plaintext, checked against `record.body_sha256`.
    pub body: Vec<u8>,
    /// DER of the signer certificate the record names, checked against its SHA-256.
    pub signer_certificate: Vec<u8>,
    /// The timestamp proof, once the record's batch is stamped.
    pub stamp: Option<Stamp>,
}

/// A record's timestamp proof: its batch (root and KSI signature) and its place in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The batch.
    pub batch: Batch,
    /// The record's audit path to the batch root.
    pub proof: RecordProof,
}

/// One access to a person's data, as the usage service (`findUsage`) reports it.
#[derive(Clone, Debug)]
pub struct UsageEntry {
    /// The record's sequence number in this gateway's log.
    pub seq: u64,
    /// When it was logged, milliseconds since the Unix epoch.
    pub logged_at_ms: u64,
    /// Which gateway logged it.
    pub side: Side,
    /// The requesting client subsystem (the member is its first three parts).
    pub client: String,
    /// The end user at the client.
    pub user_id: Option<String>,
    /// The service.
    pub service: String,
    /// The declared purpose of use.
    pub purpose_of_use: Option<String>,
    /// Whether an emergency access was declared.
    pub emergency: bool,
    /// The X-Road message id.
    pub message_id: String,
    /// The record's hash.
    pub record_hash: Hash,
    /// The timestamp proof, once stamped.
    pub stamp: Option<Stamp>,
    /// How the request ended.
    pub outcome: Outcome,
}

/// The log's state, for `/ready`, the admin API and the metrics.
#[derive(Clone, Debug)]
pub struct LogStatus {
    /// Records appended since the log was created.
    pub records: u64,
    /// The last record's sequence number.
    pub last_seq: Option<u64>,
    /// Records not yet covered by a stamped batch.
    pub unstamped: u64,
    /// The last successful stamp.
    pub last_stamp: Option<SystemTime>,
    /// When stamping began failing, while it fails.
    pub failing_since: Option<SystemTime>,
    /// The last stamping failure, while stamping fails.
    pub last_error: Option<String>,
    /// How long the oldest unstamped record has waited.
    pub lag: Option<Duration>,
    /// Whether new exchanges are accepted (see [`MessageLog::check_accepting`]).
    pub accepting: bool,
}

/// The message log. Cheap to clone; every clone is the same log. Thread-safe.
#[derive(Clone, Debug)]
pub struct MessageLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    queue: Option<Sender<Pending>>,
    writer: Option<JoinHandle<()>>,
    stamper: Mutex<Option<stamp::Stamper>>,
    certificate_hashes: Mutex<CertificateHashes>,
}

/// The SHA-256 of the signer certificates the latest records named, by their DER.
///
/// A gateway's records name few certificates (its own signing certificate and its peers'), and
/// every exchange names two of them in its records; comparing a certificate's bytes with one
/// remembered costs a fraction of hashing it again.
#[derive(Default)]
struct CertificateHashes {
    /// Most recently used last; at most [`CertificateHashes::MAX`].
    known: Vec<(Vec<u8>, record::Hash)>,
}

impl std::fmt::Debug for CertificateHashes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateHashes")
            .field("known", &self.known.len())
            .finish()
    }
}

impl CertificateHashes {
    const MAX: usize = 16;

    fn hash(&mut self, der: &[u8]) -> record::Hash {
        if let Some(at) = self
            .known
            .iter()
            .rposition(|(known, _)| known.as_slice() == der)
        {
            let entry = self.known.remove(at);
            let hash = entry.1;
            self.known.push(entry);
            return hash;
        }
        let hash = record::certificate_hash(der);
        if self.known.len() >= Self::MAX {
            self.known.remove(0);
        }
        self.known.push((der.to_vec(), hash));
        hash
    }
}

/// What the commit thread, the stamper and readers share.
pub(crate) struct Shared {
    pub(crate) store: Store,
    pub(crate) key: BodyKey,
    pub(crate) config: LogConfig,
    pub(crate) metrics: LogMetrics,
    /// The next sequence number: records below it are durable.
    pub(crate) committed: AtomicU64,
    /// Records below it are covered by a stamped batch.
    pub(crate) stamped_through: AtomicU64,
    pub(crate) stamping: Mutex<StampState>,
    /// One stamping run at a time (the stamper's and `stamp_now`'s).
    pub(crate) stamp_run: tokio::sync::Mutex<()>,
    /// The latest committed records' hashes, for the stamper.
    pub(crate) recent: Mutex<stamp::RecentHashes>,
    pub(crate) opened: SystemTime,
}

/// How stamping is going.
#[derive(Debug, Default)]
pub(crate) struct StampState {
    pub(crate) failing_since: Option<SystemTime>,
    pub(crate) last_error: Option<String>,
    pub(crate) last_success: Option<SystemTime>,
    /// When the oldest unstamped record was committed (for records left from before the log
    /// opened: when it opened).
    pub(crate) oldest_unstamped: Option<SystemTime>,
}

// === impl LogConfig ===

impl LogConfig {
    /// A configuration with the defaults, for the log in `dir`.
    pub fn new(dir: impl Into<PathBuf>, timestamping: Option<SocketAddr>) -> Self {
        LogConfig {
            dir: dir.into(),
            batch_interval: DEFAULT_BATCH_INTERVAL,
            max_timestamping_failure: DEFAULT_MAX_TIMESTAMPING_FAILURE,
            timestamping,
        }
    }

    fn check(&self) -> Result<(), LogError> {
        let bad = |key, value: Duration, reason: &str| LogError::Config {
            key,
            value: format!("{value:?}"),
            reason: reason.to_owned(),
        };
        if self.batch_interval.is_zero() {
            return Err(bad(
                "batch_interval",
                self.batch_interval,
                "must be above zero",
            ));
        }
        if self.max_timestamping_failure < self.batch_interval {
            return Err(bad(
                "max_timestamping_failure",
                self.max_timestamping_failure,
                "must be at least batch_interval, or every exchange would be refused between stamps",
            ));
        }
        Ok(())
    }
}

// === impl MessageLog ===

impl MessageLog {
    /// Opens the log in `config.dir`, creating it and its data key on first use (32 random bytes,
    /// stored only wrapped by `data_key_wrapper`), and unwrapping the data key later.
    ///
    /// # Errors
    ///
    /// [`LogError::Config`], [`LogError::Storage`], [`LogError::DataKey`] (another HSM key, or
    /// the token is gone), [`LogError::Corrupt`].
    pub fn open(config: LogConfig, data_key_wrapper: Arc<dyn Wrapper>) -> Result<Self, LogError> {
        Self::open_with_metrics(config, data_key_wrapper, LogMetrics::unregistered())
    }

    /// As [`MessageLog::open`], counting in `metrics` (see [`LogMetrics::register`]).
    ///
    /// # Errors
    ///
    /// As [`MessageLog::open`].
    pub fn open_with_metrics(
        config: LogConfig,
        data_key_wrapper: Arc<dyn Wrapper>,
        metrics: LogMetrics,
    ) -> Result<Self, LogError> {
        config.check()?;
        let store = Store::open(&config.dir)?;
        let key = data_key(&store, &config, data_key_wrapper.as_ref())?;
        let (next_seq, last_hash) = store.head()?;
        let stamped_through = store.stamped_through()?.min(next_seq);
        let mut state = StampState::default();
        if stamped_through < next_seq {
            // Records left unstamped by the last run. Their wait is counted from now: they could
            // not be stamped while the gateway was down, and the first stamp covers them within
            // one interval; counting from when they were logged would refuse every exchange
            // after a long stop until then.
            state.oldest_unstamped = Some(SystemTime::now());
        }
        metrics
            .unstamped_records
            .set(i64::try_from(next_seq - stamped_through).unwrap_or(i64::MAX));
        let shared = Arc::new(Shared {
            store,
            key,
            config,
            metrics,
            committed: AtomicU64::new(next_seq),
            stamped_through: AtomicU64::new(stamped_through),
            stamping: Mutex::new(state),
            stamp_run: tokio::sync::Mutex::new(()),
            recent: Mutex::new(stamp::RecentHashes::starting_at(next_seq)),
            opened: SystemTime::now(),
        });
        let (queue, receiver) = mpsc::channel();
        let for_writer = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("message-log-commit".to_owned())
            .spawn(move || commit::run(for_writer, next_seq, last_hash, receiver))
            .map_err(|e| LogError::Storage {
                dir: shared.config.dir.clone(),
                reason: format!("commit thread: {e}"),
            })?;
        tracing::info!(
            dir = %shared.config.dir.display(),
            records = next_seq,
            unstamped = next_seq - stamped_through,
            timestamping = ?shared.config.timestamping,
            "opened message log",
        );
        let inner = Inner {
            shared,
            queue: Some(queue),
            writer: Some(writer),
            stamper: Mutex::new(None),
            certificate_hashes: Mutex::default(),
        };
        Ok(MessageLog {
            inner: Arc::new(inner),
        })
    }

    /// Appends `records` in order, and returns their sequence numbers once they are durable (in
    /// the fsynced write-ahead log). Concurrent appends share synced writes (group commit).
    ///
    /// Appending does not check [`MessageLog::check_accepting`]: a proxy checks before it starts
    /// an exchange, and then logs the exchange's response even if stamping fails meanwhile.
    ///
    /// # Errors
    ///
    /// [`LogError::TooLarge`] for a field over its limit (nothing is written), and
    /// [`LogError::Storage`] when the write failed (nothing of this call is durable).
    pub async fn append(&self, records: Vec<NewRecord>) -> Result<Vec<u64>, LogError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let queued = Instant::now();
        let mut prepared = Vec::with_capacity(records.len());
        for new in records {
            check_lengths(&new)?;
            let body_sha256 = record::body_hash(&new.body);
            let certificate_sha256 = self
                .inner
                .certificate_hashes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .hash(&new.signer_certificate);
            prepared.push(Prepared {
                new,
                body_sha256,
                certificate_sha256,
            });
        }
        let (reply, answer) = oneshot::channel();
        let queue = self.inner.queue.as_ref().ok_or_else(|| self.closed())?;
        queue
            .send(Pending {
                records: prepared,
                reply,
                queued,
            })
            .map_err(|_| self.closed())?;
        answer.await.map_err(|_| self.closed())?
    }

    /// Whether new exchanges may start: `Err` when timestamping has failed for longer than
    /// [`LogConfig::max_timestamping_failure`], or the oldest unstamped record has waited that
    /// long.
    ///
    /// # Errors
    ///
    /// [`LogError::TimestampingFailed`] with when the failure began and the last error.
    pub fn check_accepting(&self) -> Result<(), LogError> {
        self.inner.shared.check_accepting()
    }

    /// Request records about `data_subject`, newest first: `offset` skipped, at most `limit`
    /// (capped at [`MAX_USAGE_LIMIT`]) returned. The semantics of Estonia's Data Tracker
    /// `findUsage`.
    ///
    /// # Errors
    ///
    /// [`LogError::Storage`] or [`LogError::Corrupt`].
    pub fn find_usage(
        &self,
        data_subject: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<UsageEntry>, LogError> {
        let shared = &self.inner.shared;
        let seqs = shared
            .store
            .by_subject(data_subject, offset, limit.min(MAX_USAGE_LIMIT))?;
        let mut out = Vec::with_capacity(seqs.len());
        let mut proofs = store::ProofCache::default();
        for seq in seqs {
            let bytes = shared
                .store
                .record(seq)?
                .ok_or_else(|| corrupt(seq, "indexed but missing"))?;
            let record = Record::decode(&bytes).map_err(|e| corrupt(seq, e))?;
            if record.seq != seq || record.data_subject.as_deref() != Some(data_subject) {
                return Err(corrupt(seq, "the subject index does not match the record"));
            }
            out.push(UsageEntry {
                seq,
                logged_at_ms: record.logged_at_ms,
                side: record.side,
                client: record.client,
                user_id: record.user_id,
                service: record.service,
                purpose_of_use: record.purpose_of_use,
                emergency: record.emergency,
                outcome: shared.outcome_of(seq, &record.message_id)?,
                message_id: record.message_id,
                record_hash: record::record_hash(&bytes),
                stamp: shared.stamp_of(seq, &mut proofs)?,
            });
        }
        Ok(out)
    }

    /// The record `seq`, decrypted, with its proof once stamped; `None` past the end.
    ///
    /// # Errors
    ///
    /// [`LogError::Corrupt`] when the stored bytes do not decode, the body does not decrypt, or
    /// its hash is not the recorded one; [`LogError::Storage`].
    pub fn record(&self, seq: u64) -> Result<Option<LoggedRecord>, LogError> {
        let shared = &self.inner.shared;
        let Some(bytes) = shared.store.record(seq)? else {
            return Ok(None);
        };
        let record = Record::decode(&bytes).map_err(|e| corrupt(seq, e))?;
        if record.seq != seq {
            return Err(corrupt(seq, format!("holds seq {}", record.seq)));
        }
        let sealed = shared
            .store
            .body(seq)?
            .ok_or_else(|| corrupt(seq, "body is missing"))?;
        let body = shared
            .key
            .open(seq, &sealed)
            .map_err(|_| corrupt(seq, "body does not decrypt"))?;
        if record::body_hash(&body) != record.body_sha256 {
            return Err(corrupt(seq, "body does not match body_sha256"));
        }
        let signer_certificate = shared.signer_certificate(seq, &record.signer_certificate)?;
        let stamp = shared.stamp_of(seq, &mut store::ProofCache::default())?;
        Ok(Some(LoggedRecord {
            hash: record::record_hash(&bytes),
            record,
            body,
            signer_certificate,
            stamp,
        }))
    }

    /// The encoded records `from .. to` with their proofs, and the batches that cover them: the
    /// input of [`verify::verify`]. Bodies stay encrypted and are not included.
    ///
    /// # Errors
    ///
    /// [`LogError::Storage`] or [`LogError::Corrupt`].
    pub fn export(&self, from: u64, to: u64) -> Result<verify::Bundle, LogError> {
        let store = &self.inner.shared.store;
        let mut records = Vec::new();
        let mut proofs = store::ProofCache::default();
        for (seq, encoded) in store.records(from, to)? {
            let proof = store.stamp(seq, &mut proofs)?.map(|(_, proof)| proof);
            records.push(verify::AuditRecord { encoded, proof });
        }
        Ok(verify::Bundle {
            records,
            batches: store.batches(from, to)?,
        })
    }

    /// The DER of the signer certificate that record `seq` names (`named`, from the record).
    ///
    /// # Errors
    ///
    /// [`LogError::Corrupt`] when it is not stored or does not match its hash;
    /// [`LogError::Storage`].
    pub fn signer_certificate(
        &self,
        seq: u64,
        named: &SignerCertificate,
    ) -> Result<Vec<u8>, LogError> {
        self.inner.shared.signer_certificate(seq, named)
    }

    /// The log's state.
    pub fn status(&self) -> LogStatus {
        self.inner.shared.status()
    }

    /// Stamps the unstamped records now, in as many batches as needed; returns the batches.
    /// With no timestamping service configured, does nothing.
    ///
    /// # Errors
    ///
    /// [`LogError::Timestamping`] or [`LogError::Storage`]; the records stay unstamped and the
    /// failure counts towards [`LogConfig::max_timestamping_failure`].
    pub async fn stamp_now(&self) -> Result<Vec<Batch>, LogError> {
        self.inner.shared.stamp_all().await
    }

    /// Starts the background stamper on the current tokio runtime: every
    /// [`LogConfig::batch_interval`], stamp whatever is unstamped. Idempotent.
    pub fn spawn_stamper(&self) {
        let mut stamper = self
            .inner
            .stamper
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if stamper.is_none() {
            *stamper = Some(stamp::Stamper::spawn(&self.inner.shared));
        }
    }

    /// Stops the stamper and stamps what is left (when a service is configured). Appends keep
    /// working until the last clone of the log is dropped.
    ///
    /// # Errors
    ///
    /// The final stamp's failure; the records stay unstamped for the next start.
    pub async fn shutdown(&self) -> Result<(), LogError> {
        let stamper = self
            .inner
            .stamper
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(stamper) = stamper {
            stamper.stop().await;
        }
        self.inner.shared.stamp_all().await.map(|_| ())
    }

    fn closed(&self) -> LogError {
        LogError::Closed {
            dir: self.inner.shared.config.dir.clone(),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The stamper holds the store only weakly, except during a stamp; stop it from starting
        // another. (Call `shutdown` first to wait for a stamp in flight.)
        if let Some(stamper) = self
            .stamper
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            stamper.abort();
        }
        // Closing the queue ends the commit thread after the appends already queued; joining it
        // releases its hold on the store, so the directory can be opened again at once.
        drop(self.queue.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

// === impl Shared ===

impl Shared {
    /// Called by the commit thread after a durable write.
    pub(crate) fn committed(&self, next_seq: u64) {
        self.committed.store(next_seq, Ordering::Release);
        let unstamped = next_seq.saturating_sub(self.stamped_through.load(Ordering::Acquire));
        self.metrics
            .unstamped_records
            .set(i64::try_from(unstamped).unwrap_or(i64::MAX));
        let mut state = self.stamping.lock().unwrap_or_else(PoisonError::into_inner);
        if state.oldest_unstamped.is_none() {
            state.oldest_unstamped = Some(SystemTime::now());
        }
    }

    fn check_accepting(&self) -> Result<(), LogError> {
        if self.config.timestamping.is_none() {
            return Ok(());
        }
        let state = self.stamping.lock().unwrap_or_else(PoisonError::into_inner);
        let limit = self.config.max_timestamping_failure;
        let too_long = |since: SystemTime| {
            SystemTime::now()
                .duration_since(since)
                .is_ok_and(|d| d > limit)
        };
        let refusal = if let Some(since) = state.failing_since.filter(|s| too_long(*s)) {
            let why = state
                .last_error
                .clone()
                .unwrap_or_else(|| "unknown failure".to_owned());
            Some(LogError::TimestampingFailed { since, why })
        } else if let Some(since) = state.oldest_unstamped.filter(|s| too_long(*s)) {
            let waiting = self.committed.load(Ordering::Acquire)
                - self.stamped_through.load(Ordering::Acquire);
            let why = match &state.last_error {
                Some(error) => format!("{waiting} records unstamped; last failure: {error}"),
                None => format!("{waiting} records unstamped and no stamp has completed"),
            };
            Some(LogError::TimestampingFailed { since, why })
        } else {
            None
        };
        self.metrics.refusing.set(i64::from(refusal.is_some()));
        refusal.map_or(Ok(()), Err)
    }

    fn status(&self) -> LogStatus {
        let committed = self.committed.load(Ordering::Acquire);
        let stamped = self.stamped_through.load(Ordering::Acquire).min(committed);
        let accepting = self.check_accepting().is_ok();
        let state = self.stamping.lock().unwrap_or_else(PoisonError::into_inner);
        let since_stamp =
            SystemTime::now().duration_since(state.last_success.unwrap_or(self.opened));
        self.metrics
            .seconds_since_last_stamp
            .set(since_stamp.map_or(0.0, |d| d.as_secs_f64()));
        LogStatus {
            records: committed,
            last_seq: committed.checked_sub(1),
            unstamped: committed - stamped,
            last_stamp: state.last_success,
            failing_since: state.failing_since,
            last_error: state.last_error.clone(),
            lag: state
                .oldest_unstamped
                .and_then(|t| SystemTime::now().duration_since(t).ok()),
            accepting,
        }
    }

    /// The DER of the certificate record `seq` names, checked against the name.
    pub(crate) fn signer_certificate(
        &self,
        seq: u64,
        named: &SignerCertificate,
    ) -> Result<Vec<u8>, LogError> {
        match named {
            SignerCertificate::Der(der) => Ok(der.clone()),
            SignerCertificate::Sha256(hash) => {
                let der = self
                    .store
                    .certificate(hash)?
                    .ok_or_else(|| corrupt(seq, "its signer certificate is not stored"))?;
                if record::certificate_hash(&der) != *hash {
                    return Err(corrupt(
                        seq,
                        "the stored signer certificate does not match the record's hash of it",
                    ));
                }
                Ok(der)
            }
        }
    }

    /// How request record `seq` ended: its linked outcome record; for a record logged before
    /// outcomes were linked, the response record right after it (both were appended together).
    fn outcome_of(&self, seq: u64, message_id: &str) -> Result<Outcome, LogError> {
        let linked = self.store.outcome_of(seq)?;
        let Some(outcome_seq) = linked.or_else(|| seq.checked_add(1)) else {
            return Ok(Outcome::Unanswered);
        };
        let Some(bytes) = self.store.record(outcome_seq)? else {
            return Ok(Outcome::Unanswered);
        };
        let record = Record::decode(&bytes).map_err(|e| corrupt(outcome_seq, e))?;
        if record.kind != Kind::Response || record.message_id != message_id {
            return match linked {
                Some(_) => Err(corrupt(
                    outcome_seq,
                    "the outcome index names another record",
                )),
                None => Ok(Outcome::Unanswered),
            };
        }
        let descriptor = match crate::signed::ResponseDescriptor::decode(&record.descriptor) {
            Ok(descriptor) => descriptor,
            Err(e) if linked.is_some() => return Err(corrupt(outcome_seq, e)),
            // Not an outcome this code could have linked: nothing to say about it.
            Err(_) => return Ok(Outcome::Unanswered),
        };
        Ok(
            match descriptor
                .headers
                .iter()
                .find(|(name, _)| name == crate::fault::X_ROAD_ERROR)
            {
                Some((_, fault)) => Outcome::Refused {
                    fault: fault.clone(),
                },
                None => Outcome::Answered {
                    status: descriptor.status,
                },
            },
        )
    }

    fn stamp_of(&self, seq: u64, cache: &mut store::ProofCache) -> Result<Option<Stamp>, LogError> {
        Ok(self
            .store
            .stamp(seq, cache)?
            .map(|(batch, proof)| Stamp { batch, proof }))
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("dir", &self.config.dir)
            .field("committed", &self.committed)
            .field("stamped_through", &self.stamped_through)
            .finish_non_exhaustive()
    }
}

/// Creates the data key on first open, unwraps it later.
fn data_key(store: &Store, config: &LogConfig, wrapper: &dyn Wrapper) -> Result<BodyKey, LogError> {
    let hsm = |source| LogError::DataKey {
        dir: config.dir.clone(),
        source,
    };
    let key = match store.data_key()? {
        Some(wrapped) => wrapper.unwrap(&wrapped).map_err(hsm)?,
        None => {
            if store.head()?.0 > 0 {
                return Err(corrupt(0, "the log holds records but no data key"));
            }
            let mut key = Zeroizing::new(vec![0; DATA_KEY_LEN]);
            SystemRandom::new()
                .fill(&mut key)
                .map_err(|_| LogError::Unreachable("system random source failed"))?;
            store.put_data_key(&wrapper.wrap(&key).map_err(hsm)?)?;
            tracing::info!(dir = %config.dir.display(), wrapping_key = wrapper.label(), "created message log data key");
            key
        }
    };
    BodyKey::new(&key).ok_or_else(|| {
        corrupt(
            0,
            format!("data key is {} bytes, expected {DATA_KEY_LEN}", key.len()),
        )
    })
}

fn check_lengths(new: &NewRecord) -> Result<(), LogError> {
    let texts = [
        ("message_id", Some(&new.message_id)),
        ("client", Some(&new.client)),
        ("service", Some(&new.service)),
        ("user_id", new.user_id.as_ref()),
        ("data_subject", new.data_subject.as_ref()),
        ("purpose_of_use", new.purpose_of_use.as_ref()),
    ];
    for (what, text) in texts {
        let len = text.map_or(0, String::len);
        if len > record::MAX_TEXT_LEN {
            return Err(LogError::TooLarge {
                what,
                len,
                max: record::MAX_TEXT_LEN,
            });
        }
    }
    let blobs = [
        ("descriptor", new.descriptor.len(), record::MAX_BLOB_LEN),
        ("signature", new.signature.len(), record::MAX_BLOB_LEN),
        (
            "signer_certificate",
            new.signer_certificate.len(),
            record::MAX_BLOB_LEN,
        ),
        ("body", new.body.len(), MAX_BODY_LEN),
    ];
    for (what, len, max) in blobs {
        if len > max {
            return Err(LogError::TooLarge { what, len, max });
        }
    }
    Ok(())
}

fn corrupt(seq: u64, reason: impl ToString) -> LogError {
    LogError::Corrupt {
        seq,
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_certificate_hashes_are_the_hashes_of_the_bytes_given() {
        let mut hashes = CertificateHashes::default();
        let der = |n: u8| -> Vec<u8> { (0..600u16).map(|i| (i as u8) ^ n).collect() };
        for round in 0..3 {
            // More certificates than it keeps, so that the later rounds find some and hash others.
            for n in 0..(CertificateHashes::MAX as u8 + 4) {
                assert_eq!(
                    hashes.hash(&der(n)),
                    record::certificate_hash(&der(n)),
                    "round {round}, certificate {n}"
                );
            }
        }
        assert_eq!(hashes.known.len(), CertificateHashes::MAX);
        // One byte changed is another certificate, even when its first bytes are the same.
        let mut changed = der(1);
        *changed.last_mut().unwrap() ^= 0xff;
        assert_ne!(hashes.hash(&changed), hashes.hash(&der(1)));
        assert_eq!(hashes.hash(&changed), record::certificate_hash(&changed));
    }
}
