//! Batch timestamping: every interval, the unstamped records' hashes become one Merkle tree whose
//! root the timestamping service signs; the batch is stored in one synced write, its record hashes
//! beside it, and a record's proof is rebuilt from them when it is read.
//!
//! ```text
//!  tick ─▶ hashes of records stamped_through .. committed (kept by the commit thread; read back
//!          from the store after a restart or a long outage) ─▶ leaf_hash(record_hash) ─▶ root
//!       ─▶ POST /sign (imprint 0x01 ‖ root, level 0) ─▶ KSI signature, checked to cover the root
//!       ─▶ record hashes (memtable only), then batch + stamped_through (one synced write)
//! ```
//!
//! A failure leaves the records unstamped for the next tick and starts (or continues) the
//! "failing since" clock that [`super::MessageLog::check_accepting`] reads.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, Weak};
use std::time::SystemTime;

use backbone_timestamping::client;
use backbone_timestamping_verify::imprint::{HashAlgorithm, Imprint};
use backbone_timestamping_verify::signature::Signature;
use backbone_timestamping_verify::verify::{self, Context, Outcome, Policy};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::batch::{self, Batch};
use super::commit::now_ms;
use super::record::{self, Record};
use super::{LogError, MAX_BATCH_RECORDS, Shared};

/// The background stamper task.
#[derive(Debug)]
pub(crate) struct Stamper {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

// === impl Stamper ===

impl Stamper {
    /// Starts the task. It holds the log weakly: dropping the log ends it.
    pub(crate) fn spawn(shared: &Arc<Shared>) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let weak: Weak<Shared> = Arc::downgrade(shared);
        let interval = shared.config.batch_interval;
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = stopped.changed() => break,
                }
                let Some(shared) = weak.upgrade() else { break };
                if let Err(error) = shared.stamp_all().await {
                    tracing::warn!(dir = %shared.config.dir.display(), %error, "message log batch not stamped");
                }
                shared.status();
            }
        });
        Stamper { stop, task }
    }

    /// Stops the task without waiting (a stamp in flight finishes on its blocking thread).
    pub(crate) fn abort(self) {
        let _ = self.stop.send(true);
        self.task.abort();
    }

    /// Stops the task and waits for a stamp in flight to finish.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

// === impl Shared ===

impl Shared {
    /// Stamps every unstamped record, in batches of at most [`MAX_BATCH_RECORDS`].
    pub(crate) async fn stamp_all(self: &Arc<Self>) -> Result<Vec<Batch>, LogError> {
        let Some(addr) = self.config.timestamping else {
            return Ok(Vec::new());
        };
        let _one = self.stamp_run.lock().await;
        let mut batches = Vec::new();
        loop {
            let from = self.stamped_through.load(Ordering::Acquire);
            let to = self.committed.load(Ordering::Acquire);
            if from >= to {
                self.stamp_succeeded(to);
                return Ok(batches);
            }
            let count = (to - from).min(MAX_BATCH_RECORDS);
            let shared = Arc::clone(self);
            let result = tokio::task::spawn_blocking(move || shared.stamp_batch(addr, from, count))
                .await
                .unwrap_or(Err(LogError::Unreachable("stamping task panicked")));
            match result {
                Ok(batch) => {
                    let through = batch.first_seq + batch.count;
                    self.stamped_through.store(through, Ordering::Release);
                    self.metrics.stamps.with_label_values(&["ok"]).inc();
                    self.stamp_succeeded(through);
                    tracing::debug!(
                        first = batch.first_seq,
                        count = batch.count,
                        "stamped message log batch"
                    );
                    batches.push(batch);
                }
                Err(error) => {
                    self.metrics.stamps.with_label_values(&["error"]).inc();
                    self.stamp_failed(&error);
                    return Err(error);
                }
            }
        }
    }

    /// Builds, signs and stores one batch (blocking: maybe RocksDB reads, the HTTP call, a synced
    /// write).
    fn stamp_batch(&self, addr: SocketAddr, first_seq: u64, count: u64) -> Result<Batch, LogError> {
        let hashes = match self
            .recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(first_seq, count)
        {
            Some(hashes) => hashes,
            None => self.store.record_hashes(first_seq, count)?,
        };
        let root = batch::root(&hashes);
        let imprint = batch::imprint(&root);
        let ksi_signature =
            client::sign(addr, &imprint, 0).map_err(|e| LogError::Timestamping {
                addr,
                reason: e.to_string(),
            })?;
        check_signature(&ksi_signature, &root)
            .map_err(|reason| LogError::Timestamping { addr, reason })?;
        let batch = Batch {
            first_seq,
            count,
            root,
            stamped_at_ms: now_ms(),
            ksi_signature,
        };
        self.store.put_batch(&batch, &hashes)?;
        self.recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .forget_below(first_seq + count);
        Ok(batch)
    }

    fn stamp_succeeded(&self, through: u64) {
        // When the next unstamped record began to wait (read before taking the lock).
        let next_wait = (self.committed.load(Ordering::Acquire) > through)
            .then(|| self.logged_at_or_now(through));
        let mut state = self.stamping.lock().unwrap_or_else(PoisonError::into_inner);
        // Read under the lock: the commit thread publishes `committed` before it takes the lock
        // to start the clock of a first unstamped record, so neither update is lost.
        let unstamped = self
            .committed
            .load(Ordering::Acquire)
            .saturating_sub(through);
        self.metrics
            .unstamped_records
            .set(i64::try_from(unstamped).unwrap_or(i64::MAX));
        if state.failing_since.is_some() {
            tracing::info!(dir = %self.config.dir.display(), "message log timestamping recovered");
        }
        state.failing_since = None;
        state.last_error = None;
        state.last_success = Some(SystemTime::now());
        state.oldest_unstamped = if unstamped == 0 {
            None
        } else {
            Some(next_wait.unwrap_or_else(SystemTime::now))
        };
    }

    fn stamp_failed(&self, error: &LogError) {
        let mut state = self.stamping.lock().unwrap_or_else(PoisonError::into_inner);
        state.failing_since.get_or_insert_with(SystemTime::now);
        state.last_error = Some(error.to_string());
    }

    fn logged_at_or_now(&self, seq: u64) -> SystemTime {
        let logged = self
            .store
            .record(seq)
            .ok()
            .flatten()
            .and_then(|bytes| Record::decode(&bytes).ok());
        logged
            .and_then(|r| {
                SystemTime::UNIX_EPOCH.checked_add(std::time::Duration::from_millis(r.logged_at_ms))
            })
            .unwrap_or_else(SystemTime::now)
    }
}

/// Checks that a KSI signature is internally consistent and covers `root`.
pub(crate) fn check_signature(bytes: &[u8], root: &record::Hash) -> Result<(), String> {
    let signature =
        Signature::decode(bytes).map_err(|e| format!("KSI signature does not decode: {e}"))?;
    let hash = Imprint::new(HashAlgorithm::Sha256, root).map_err(|e| format!("imprint: {e}"))?;
    let context = Context {
        document_hash: Some(&hash),
        ..Context::default()
    };
    let verdict = verify::verify(&signature, Policy::Internal, &context);
    if verdict.outcome != Outcome::Ok {
        return Err(format!(
            "KSI signature does not verify for the batch root: {verdict}"
        ));
    }
    Ok(())
}

/// The hashes of the latest committed records, which the commit thread computes anyway, kept for
/// the stamper so that it need not read the records back. Holds one contiguous run of at most
/// [`RecentHashes::CAPACITY`]; when full, it starts over at the newest records, and the stamper
/// reads older ones from the store.
#[derive(Debug)]
pub(crate) struct RecentHashes {
    first_seq: u64,
    hashes: std::collections::VecDeque<record::Hash>,
}

impl RecentHashes {
    /// Most hashes kept: 12.8 MB, four full batches.
    pub(crate) const CAPACITY: usize = 4 * MAX_BATCH_RECORDS as usize;

    /// Empty, to be continued at `next_seq` (records before it are read from the store).
    pub(crate) fn starting_at(next_seq: u64) -> Self {
        RecentHashes {
            first_seq: next_seq,
            hashes: std::collections::VecDeque::new(),
        }
    }

    /// Adds the hashes of the committed records `first_seq ..`.
    pub(crate) fn push(&mut self, first_seq: u64, hashes: &[record::Hash]) {
        let end = self.first_seq + self.hashes.len() as u64;
        if first_seq != end || self.hashes.len() + hashes.len() > Self::CAPACITY {
            self.hashes.clear();
            self.first_seq = first_seq;
        }
        self.hashes.extend(hashes.iter().copied());
    }

    /// The hashes of `first_seq .. first_seq + count`, when all are held.
    fn get(&self, first_seq: u64, count: u64) -> Option<Vec<record::Hash>> {
        let start = usize::try_from(first_seq.checked_sub(self.first_seq)?).ok()?;
        let end = start.checked_add(usize::try_from(count).ok()?)?;
        (end <= self.hashes.len()).then(|| self.hashes.range(start..end).copied().collect())
    }

    /// Drops the hashes of records below `seq` (stamped).
    fn forget_below(&mut self, seq: u64) {
        let drop = seq
            .saturating_sub(self.first_seq)
            .min(self.hashes.len() as u64);
        self.hashes.drain(..drop as usize);
        self.first_seq += drop;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_hashes_serve_only_a_run_they_hold_whole() {
        let hash = |i: u64| [i as u8; 32];
        let mut recent = RecentHashes::starting_at(10);
        assert_eq!(
            recent.get(0, 1),
            None,
            "records from before the start are read from the store"
        );
        recent.push(10, &[hash(10), hash(11), hash(12)]);
        assert_eq!(recent.get(10, 3), Some(vec![hash(10), hash(11), hash(12)]));
        assert_eq!(recent.get(11, 2), Some(vec![hash(11), hash(12)]));
        assert_eq!(recent.get(11, 3), None, "13 is not committed");
        recent.forget_below(12);
        assert_eq!(recent.get(11, 1), None);
        assert_eq!(recent.get(12, 1), Some(vec![hash(12)]));
        // A gap (which the commit thread never makes) starts the run over rather than misplace hashes.
        recent.push(20, &[hash(20)]);
        assert_eq!(recent.get(12, 1), None);
        assert_eq!(recent.get(20, 1), Some(vec![hash(20)]));
    }

    #[test]
    fn recent_hashes_start_over_when_full() {
        let mut recent = RecentHashes::starting_at(0);
        let full = vec![[1; 32]; RecentHashes::CAPACITY];
        recent.push(0, &full);
        assert!(recent.get(0, 1).is_some());
        let seq = RecentHashes::CAPACITY as u64;
        recent.push(seq, &[[2; 32]]);
        assert_eq!(
            recent.get(0, 1),
            None,
            "the oldest run is dropped, to be read from the store"
        );
        assert_eq!(recent.get(seq, 1), Some(vec![[2; 32]]));
    }
}
