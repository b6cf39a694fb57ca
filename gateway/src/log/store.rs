//! The message log's RocksDB layout: one directory, a column family per kind of entry.
//!
//! ```text
//!  column family  key                                      value
//!  records        seq:u64                                  canonical record (record.rs)
//!  bodies         seq:u64                                  nonce ‖ AES-256-GCM ciphertext ‖ tag (body.rs)
//!  subjects       len:u16 ‖ data subject ‖ !seq:u64        empty (request records only; !seq
//!                                                          = u64::MAX - seq, so newest first)
//!  outcomes       request seq:u64                          seq:u64 of the outcome record that
//!                                                          answers that request record
//!  proofs         seq:u64                                  record proof (batch.rs); written by
//!                                                          earlier versions, read when present
//!  batches        first_seq:u64                            batch with its KSI signature (batch.rs)
//!  batch_hashes   first_seq:u64                            the batch's record hashes, 32 bytes
//!                                                          each, in sequence order: a record's
//!                                                          proof is rebuilt from them (written
//!                                                          without the WAL: see put_batch)
//!  certificates   sha256:[32]                              a signer certificate's DER, which
//!                                                          records name by that hash
//!  meta           "data_key"                               the data key, wrapped by the HSM key
//!                 "stamped_through"                        u64: records below it are stamped
//! ```
//!
//! Integers are big-endian, so keys sort by number. Every write but the batch hashes is one synced
//! write batch: when a write returns, it is in the fsynced write-ahead log. Committed records are
//! never overwritten: only the commit thread writes `records`, `bodies`, `subjects` and `outcomes`, always at
//! new sequence numbers.

use std::path::{Path, PathBuf};

use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, Direction, IteratorMode, Options,
    WriteBatch, WriteOptions,
};

use super::LogError;
use backbone_hsm::batch::merkle;

use super::batch::{Batch, RecordProof};
use super::record::{self, Hash, Record};

/// Column family of the canonical records.
pub const CF_RECORDS: &str = "records";
/// Column family of the encrypted bodies.
pub const CF_BODIES: &str = "bodies";
/// Column family of the data-subject index.
pub const CF_SUBJECTS: &str = "subjects";
/// Column family linking a request record to its outcome record.
pub const CF_OUTCOMES: &str = "outcomes";
/// Column family of the records' proofs, one per record, as earlier versions wrote them.
pub const CF_PROOFS: &str = "proofs";
/// Column family of the timestamped batches.
pub const CF_BATCHES: &str = "batches";
/// Column family of each batch's record hashes (its Merkle tree's leaves, before leaf hashing).
pub const CF_BATCH_HASHES: &str = "batch_hashes";
/// Column family of the signer certificates records name by SHA-256.
pub const CF_CERTIFICATES: &str = "certificates";
/// Column family of the log's own settings.
pub const CF_META: &str = "meta";
/// Every column family, for tools that open the directory themselves.
pub const COLUMN_FAMILIES: [&str; 9] = [
    CF_RECORDS,
    CF_BODIES,
    CF_SUBJECTS,
    CF_OUTCOMES,
    CF_PROOFS,
    CF_BATCHES,
    CF_BATCH_HASHES,
    CF_CERTIFICATES,
    CF_META,
];

const KEY_DATA_KEY: &[u8] = b"data_key";
const KEY_STAMPED_THROUGH: &[u8] = b"stamped_through";

/// The open RocksDB directory.
pub(crate) struct Store {
    db: DB,
    dir: PathBuf,
}

/// One record ready to be written.
pub(crate) struct Row<'a> {
    pub(crate) seq: u64,
    pub(crate) encoded: &'a [u8],
    pub(crate) sealed_body: &'a [u8],
    /// Set for request records with a data subject.
    pub(crate) subject: Option<&'a str>,
    /// For an outcome record, the request record it answers.
    pub(crate) answers: Option<u64>,
    /// The signer certificate (SHA-256, DER), when this write must store it.
    pub(crate) certificate: Option<(&'a Hash, &'a [u8])>,
}

// === impl Store ===

impl Store {
    /// Opens (creating if missing) the log directory.
    pub(crate) fn open(dir: &Path) -> Result<Self, LogError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        // Flushes and compactions run below the proxies' priority: on a busy gateway they would
        // otherwise take a core from the exchanges waiting on the log for a quarter second at a
        // time. (The setting holds for every database in the process that uses the default
        // environment.)
        let mut env = rocksdb::Env::new().map_err(|e| storage(dir, e))?;
        env.lower_thread_pool_cpu_priority();
        env.lower_high_priority_thread_pool_cpu_priority();
        options.set_env(&env);
        // A flush writes a 64 MiB table, which, written at full speed and synced only at its
        // end, would sit in the disk's queue in front of the appends' WAL syncs. Flushes and
        // compactions write at most 64 MiB/s (several times what a busy gateway logs), synced a
        // megabyte at a time, and in 64 KiB every millisecond rather than RocksDB's default of
        // 6.4 MiB every 100 ms: each such burst held the disk long enough to stall every append's
        // WAL sync behind it for 5-15 ms, ten times a second while a flush ran.
        options.set_bytes_per_sync(1 << 20);
        options.set_ratelimiter(64 << 20, 1_000, 10);
        // The small column families (batches, meta, certificates) fill their memtables slowly and
        // would keep every write-ahead log file alive until 4 GiB of them, all replayed at the
        // next start; past 512 MiB they are flushed and the old files go.
        options.set_max_total_wal_size(512 << 20);
        // Obsolete files are deleted by a background thread, not by the write that finds them.
        options.set_avoid_unnecessary_blocking_io(true);
        let families = COLUMN_FAMILIES.into_iter().map(|name| {
            let mut family = Options::default();
            // Sealed bodies and hashes do not compress: compressing them only costs the flush
            // thread time.
            if name == CF_BODIES || name == CF_PROOFS || name == CF_BATCH_HASHES {
                family.set_compression_type(DBCompressionType::None);
            } else {
                // Records and indexes compress, but only when compacted below level 0: a flush
                // then writes its table as it is (compressing it took the flush thread's time
                // when the exchanges need the cores), and the compaction that merges it down
                // has nothing to decompress. Level 0 holds a few memtables' worth.
                family
                    .set_compression_per_level(&[DBCompressionType::None, DBCompressionType::Lz4]);
            }
            ColumnFamilyDescriptor::new(name, family)
        });
        let db = DB::open_cf_descriptors(&options, dir, families).map_err(|e| storage(dir, e))?;
        Ok(Store {
            db,
            dir: dir.to_owned(),
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The next sequence number and the last record's hash ([`record::GENESIS`] when empty).
    pub(crate) fn head(&self) -> Result<(u64, Hash), LogError> {
        let mut last = self.db.iterator_cf(self.cf(CF_RECORDS)?, IteratorMode::End);
        let Some(item) = last.next() else {
            return Ok((0, record::GENESIS));
        };
        let (key, value) = item.map_err(|e| self.storage(e))?;
        let seq = seq_key(&key).ok_or_else(|| self.corrupt(0, "record key is not 8 bytes"))?;
        let decoded = Record::decode(&value).map_err(|e| self.corrupt(seq, e))?;
        if decoded.seq != seq {
            return Err(self.corrupt(
                seq,
                format!("stored under key {seq} but holds seq {}", decoded.seq),
            ));
        }
        Ok((seq.saturating_add(1), record::record_hash(&value)))
    }

    pub(crate) fn data_key(&self) -> Result<Option<Vec<u8>>, LogError> {
        self.db
            .get_cf(self.cf(CF_META)?, KEY_DATA_KEY)
            .map_err(|e| self.storage(e))
    }

    pub(crate) fn put_data_key(&self, wrapped: &[u8]) -> Result<(), LogError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META)?, KEY_DATA_KEY, wrapped);
        self.write(batch)
    }

    /// Writes `rows` in one synced write.
    pub(crate) fn append(&self, rows: &[Row<'_>]) -> Result<(), LogError> {
        let (records, bodies, subjects) = (
            self.cf(CF_RECORDS)?,
            self.cf(CF_BODIES)?,
            self.cf(CF_SUBJECTS)?,
        );
        let certificates = self.cf(CF_CERTIFICATES)?;
        let outcomes = self.cf(CF_OUTCOMES)?;
        let mut batch = WriteBatch::default();
        for row in rows {
            if let Some(request) = row.answers {
                batch.put_cf(outcomes, request.to_be_bytes(), row.seq.to_be_bytes());
            }
            if let Some((hash, der)) = row.certificate {
                batch.put_cf(certificates, hash, der);
            }
            let key = row.seq.to_be_bytes();
            batch.put_cf(records, key, row.encoded);
            batch.put_cf(bodies, key, row.sealed_body);
            if let Some(subject) = row.subject {
                batch.put_cf(subjects, subject_key(subject, row.seq), []);
            }
        }
        self.write(batch)
    }

    /// The outcome record of request record `request`, if one was logged with its link.
    pub(crate) fn outcome_of(&self, request: u64) -> Result<Option<u64>, LogError> {
        let Some(value) = self
            .db
            .get_cf(self.cf(CF_OUTCOMES)?, request.to_be_bytes())
            .map_err(|e| self.storage(e))?
        else {
            return Ok(None);
        };
        seq_key(&value)
            .map(Some)
            .ok_or_else(|| self.corrupt(request, "outcome index value"))
    }

    pub(crate) fn record(&self, seq: u64) -> Result<Option<Vec<u8>>, LogError> {
        self.db
            .get_cf(self.cf(CF_RECORDS)?, seq.to_be_bytes())
            .map_err(|e| self.storage(e))
    }

    /// The DER of the signer certificate whose SHA-256 is `hash`.
    pub(crate) fn certificate(&self, hash: &Hash) -> Result<Option<Vec<u8>>, LogError> {
        self.db
            .get_cf(self.cf(CF_CERTIFICATES)?, hash)
            .map_err(|e| self.storage(e))
    }

    pub(crate) fn body(&self, seq: u64) -> Result<Option<Vec<u8>>, LogError> {
        self.db
            .get_cf(self.cf(CF_BODIES)?, seq.to_be_bytes())
            .map_err(|e| self.storage(e))
    }

    /// The encoded records `from .. to`, in order.
    pub(crate) fn records(&self, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>, LogError> {
        let start = from.to_be_bytes();
        let mode = IteratorMode::From(&start, Direction::Forward);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_RECORDS)?, mode) {
            let (key, value) = item.map_err(|e| self.storage(e))?;
            let seq =
                seq_key(&key).ok_or_else(|| self.corrupt(from, "record key is not 8 bytes"))?;
            if seq >= to {
                break;
            }
            out.push((seq, value.into_vec()));
        }
        Ok(out)
    }

    /// The record's proof and its batch, once stamped; `cache` keeps the last batch's tree, so
    /// that consecutive records of one batch build it once.
    pub(crate) fn stamp(
        &self,
        seq: u64,
        cache: &mut ProofCache,
    ) -> Result<Option<(Batch, RecordProof)>, LogError> {
        if let Some((batch, tree)) = &cache.last
            && batch.covers(seq)
        {
            return Ok(Some((batch.clone(), proof_from(batch, tree, seq))));
        }
        if let Some(bytes) = self
            .db
            .get_cf(self.cf(CF_PROOFS)?, seq.to_be_bytes())
            .map_err(|e| self.storage(e))?
        {
            let proof = RecordProof::decode(&bytes)
                .map_err(|e| self.corrupt(seq, format!("proof: {e}")))?;
            let batch = self
                .batch(proof.batch)?
                .ok_or_else(|| self.corrupt(seq, "proof names a missing batch"))?;
            return Ok(Some((batch, proof)));
        }
        let Some(batch) = self
            .batches(seq, seq.saturating_add(1))?
            .into_iter()
            .find(|b| b.covers(seq))
        else {
            return Ok(None);
        };
        let key = batch.first_seq.to_be_bytes();
        let hashes = match self
            .db
            .get_cf(self.cf(CF_BATCH_HASHES)?, key)
            .map_err(|e| self.storage(e))?
        {
            Some(bytes) => decode_hashes(&bytes).ok_or_else(|| {
                self.corrupt(seq, format!("batch {} record hashes", batch.first_seq))
            })?,
            // Lost with the memtable in a crash (see `put_batch`): the records hold them.
            None => {
                let hashes = self.record_hashes(batch.first_seq, batch.count)?;
                self.put_batch_hashes(batch.first_seq, &hashes)?;
                hashes
            }
        };
        if hashes.len() as u64 != batch.count {
            return Err(self.corrupt(
                seq,
                format!(
                    "batch {} holds {} record hashes for {} records",
                    batch.first_seq,
                    hashes.len(),
                    batch.count
                ),
            ));
        }
        let tree = merkle::Tree::new(hashes.iter().map(|h| merkle::leaf_hash(h)).collect());
        if tree.root() != batch.root {
            return Err(self.corrupt(
                seq,
                format!(
                    "batch {}: its record hashes do not lead to its root",
                    batch.first_seq
                ),
            ));
        }
        let proof = proof_from(&batch, &tree, seq);
        cache.last = Some((batch.clone(), tree));
        Ok(Some((batch, proof)))
    }

    pub(crate) fn batch(&self, first_seq: u64) -> Result<Option<Batch>, LogError> {
        let key = first_seq.to_be_bytes();
        let Some(bytes) = self
            .db
            .get_cf(self.cf(CF_BATCHES)?, key)
            .map_err(|e| self.storage(e))?
        else {
            return Ok(None);
        };
        Batch::decode(&bytes)
            .map(Some)
            .map_err(|e| self.corrupt(first_seq, format!("batch: {e}")))
    }

    /// The batches that cover any record in `from .. to`, in order.
    pub(crate) fn batches(&self, from: u64, to: u64) -> Result<Vec<Batch>, LogError> {
        let mut out = Vec::new();
        // The batch covering `from` starts at or before it: step back to the last one that does.
        let start = from.to_be_bytes();
        let back = self.db.iterator_cf(
            self.cf(CF_BATCHES)?,
            IteratorMode::From(&start, Direction::Reverse),
        );
        let forward = self.db.iterator_cf(
            self.cf(CF_BATCHES)?,
            IteratorMode::From(&start, Direction::Forward),
        );
        for item in back.take(1).chain(forward) {
            let (key, value) = item.map_err(|e| self.storage(e))?;
            let first =
                seq_key(&key).ok_or_else(|| self.corrupt(from, "batch key is not 8 bytes"))?;
            if first >= to {
                break;
            }
            let batch =
                Batch::decode(&value).map_err(|e| self.corrupt(first, format!("batch: {e}")))?;
            let end = batch.first_seq.saturating_add(batch.count);
            if end > from
                && out
                    .last()
                    .is_none_or(|b: &Batch| b.first_seq != batch.first_seq)
            {
                out.push(batch);
            }
        }
        Ok(out)
    }

    pub(crate) fn stamped_through(&self) -> Result<u64, LogError> {
        match self
            .db
            .get_cf(self.cf(CF_META)?, KEY_STAMPED_THROUGH)
            .map_err(|e| self.storage(e))?
        {
            None => Ok(0),
            Some(bytes) => {
                seq_key(&bytes).ok_or_else(|| self.corrupt(0, "stamped_through is not 8 bytes"))
            }
        }
    }

    /// Stores a stamped batch and the new stamped-through mark in one synced write, and the
    /// batch's record hashes.
    ///
    /// The record hashes go in first, without the write-ahead log. They are what the batch's
    /// records already hold (each one's `record_hash`), kept so that a proof is built without
    /// reading the whole batch back, and they are large: 32 bytes a record, a few hundred
    /// kilobytes a batch on a busy gateway: written and synced through the WAL, they would hold up
    /// the appends' synced writes queued behind them at every stamp. They reach disk with
    /// their memtable's flush (or when the log closes); hashes a crash loses are recomputed from
    /// the records the first time a proof needs them (`stamp`).
    pub(crate) fn put_batch(&self, batch: &Batch, record_hashes: &[Hash]) -> Result<(), LogError> {
        self.put_batch_hashes(batch.first_seq, record_hashes)?;
        let mut write = WriteBatch::default();
        write.put_cf(
            self.cf(CF_BATCHES)?,
            batch.first_seq.to_be_bytes(),
            batch.encode(),
        );
        let through = batch.first_seq.saturating_add(batch.count);
        write.put_cf(
            self.cf(CF_META)?,
            KEY_STAMPED_THROUGH,
            through.to_be_bytes(),
        );
        self.write(write)
    }

    /// Sequence numbers of request records about `subject`, newest first, after skipping
    /// `offset`, at most `limit`.
    pub(crate) fn by_subject(
        &self,
        subject: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<u64>, LogError> {
        let prefix = subject_prefix(subject);
        let mode = IteratorMode::From(&prefix, Direction::Forward);
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_SUBJECTS)?, mode)
            .skip(offset)
        {
            let (key, _) = item.map_err(|e| self.storage(e))?;
            let Some(inverted) = key.strip_prefix(prefix.as_slice()) else {
                break;
            };
            let inverted = seq_key(inverted).ok_or_else(|| self.corrupt(0, "subject index key"))?;
            if out.len() >= limit {
                break;
            }
            out.push(u64::MAX - inverted);
        }
        Ok(out)
    }

    fn put_batch_hashes(&self, first_seq: u64, record_hashes: &[Hash]) -> Result<(), LogError> {
        let mut options = WriteOptions::default();
        options.disable_wal(true);
        let cf = self.cf(CF_BATCH_HASHES)?;
        self.db
            .put_cf_opt(
                cf,
                first_seq.to_be_bytes(),
                record_hashes.as_flattened(),
                &options,
            )
            .map_err(|e| self.storage(e))
    }

    /// The hashes of records `first_seq .. first_seq + count`, read back from the records.
    pub(crate) fn record_hashes(&self, first_seq: u64, count: u64) -> Result<Vec<Hash>, LogError> {
        let stored = self.records(first_seq, first_seq.saturating_add(count))?;
        let mut hashes = Vec::with_capacity(stored.len());
        for (expected, (seq, encoded)) in (first_seq..).zip(&stored) {
            if *seq != expected {
                return Err(self.corrupt(expected, "missing from the store"));
            }
            hashes.push(record::record_hash(encoded));
        }
        if hashes.len() as u64 != count {
            return Err(self.corrupt(first_seq.saturating_add(hashes.len() as u64), "missing"));
        }
        Ok(hashes)
    }

    fn write(&self, batch: WriteBatch) -> Result<(), LogError> {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db
            .write_opt(batch, &options)
            .map_err(|e| self.storage(e))
    }

    fn cf(&self, name: &'static str) -> Result<&ColumnFamily, LogError> {
        self.db.cf_handle(name).ok_or_else(|| LogError::Storage {
            dir: self.dir.clone(),
            reason: format!("column family {name} is missing"),
        })
    }

    fn storage(&self, error: rocksdb::Error) -> LogError {
        storage(&self.dir, error)
    }

    fn corrupt(&self, seq: u64, reason: impl ToString) -> LogError {
        LogError::Corrupt {
            seq,
            reason: reason.to_string(),
        }
    }
}

fn storage(dir: &Path, error: rocksdb::Error) -> LogError {
    LogError::Storage {
        dir: dir.to_owned(),
        reason: error.into_string(),
    }
}

/// The last batch whose tree [`Store::stamp`] built.
#[derive(Default)]
pub(crate) struct ProofCache {
    last: Option<(Batch, merkle::Tree)>,
}

/// `seq`'s proof in `batch`, whose tree is `tree` (`batch` covers `seq`).
fn proof_from(batch: &Batch, tree: &merkle::Tree, seq: u64) -> RecordProof {
    let leaf_index = seq - batch.first_seq;
    let path = usize::try_from(leaf_index)
        .ok()
        .and_then(|i| tree.audit_path(i))
        .unwrap_or_default();
    RecordProof {
        batch: batch.first_seq,
        leaf_index,
        batch_count: batch.count,
        path,
    }
}

fn decode_hashes(bytes: &[u8]) -> Option<Vec<Hash>> {
    let (chunks, rest) = bytes.as_chunks::<32>();
    rest.is_empty().then(|| chunks.to_vec())
}

fn seq_key(bytes: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = bytes.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// `len:u16 ‖ subject`: the length keeps one subject's keys from running into a longer one's.
fn subject_prefix(subject: &str) -> Vec<u8> {
    // Subjects are at most record::MAX_TEXT_LEN (4096) bytes, which fits in a u16.
    let len = u16::try_from(subject.len()).unwrap_or(u16::MAX);
    let mut key = Vec::with_capacity(2 + subject.len() + 8);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(subject.as_bytes());
    key
}

fn subject_key(subject: &str, seq: u64) -> Vec<u8> {
    let mut key = subject_prefix(subject);
    key.extend_from_slice(&(u64::MAX - seq).to_be_bytes());
    key
}
