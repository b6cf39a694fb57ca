//! Offline verification of an exported stretch of the log, for `backbone audit verify`: every
//! hash link, every record's Merkle proof, and every batch's KSI signature (internal policy: the
//! signature is consistent and covers the batch root). Needs no keys and no service; the
//! signatures' calendar roots can then be checked against the publications with `backbone ksi`.
//!
//! Pure code: bytes in, a report or the first failure out, naming the record or batch.

use std::collections::{HashMap, HashSet};

use super::batch::{Batch, RecordProof};
use super::record::{self, DecodeError, GENESIS, Hash, Record};
use super::stamp::check_signature;

/// An exported stretch of the log: records in order, each with its proof, and their batches.
#[derive(Clone, Debug, Default)]
pub struct Bundle {
    /// The records, in sequence order.
    pub records: Vec<AuditRecord>,
    /// The batches that cover them, any order.
    pub batches: Vec<Batch>,
}

/// One record as stored: its canonical bytes (not re-encoded) and its proof.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    /// The canonical encoding, as stored and hashed.
    pub encoded: Vec<u8>,
    /// The record's proof, once stamped.
    pub proof: Option<RecordProof>,
}

/// What verification established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The first record's sequence number.
    pub first_seq: Option<u64>,
    /// Records checked.
    pub records: u64,
    /// Records whose proof leads to a batch with a valid KSI signature.
    pub stamped: u64,
    /// Records without a proof (not stamped yet when exported).
    pub unstamped: Vec<u64>,
    /// Batches whose KSI signature was checked.
    pub batches: u64,
    /// The last record's hash: the `prev_hash` the next export must start from.
    pub last_hash: Option<Hash>,
}

/// The first check that failed, naming the record (by sequence number) or batch (by its first
/// record) and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The record's bytes do not decode.
    #[error("record at position {position} (after seq {after:?}) does not decode: {source}")]
    Malformed {
        /// Its position in the bundle.
        position: usize,
        /// The sequence number of the record before it.
        after: Option<u64>,
        /// Why.
        source: DecodeError,
    },
    /// A record is missing, repeated or out of order.
    #[error("record {seq}: expected seq {expected} here (records missing, repeated or reordered)")]
    OutOfSequence {
        /// The sequence number found.
        seq: u64,
        /// The one expected.
        expected: u64,
    },
    /// The record's `prev_hash` is not the hash of the record before it: it or its predecessor
    /// was changed.
    #[error(
        "record {seq}: prev_hash {found} is not the hash of the record before it ({expected}); one of the two was changed"
    )]
    BrokenLink {
        /// The record.
        seq: u64,
        /// The hash of the record before (hex).
        expected: String,
        /// The record's `prev_hash` (hex).
        found: String,
    },
    /// The record's proof names a batch the bundle does not hold.
    #[error("record {seq}: its proof names batch {batch}, which is not in the bundle")]
    MissingBatch {
        /// The record.
        seq: u64,
        /// The batch's first sequence number.
        batch: u64,
    },
    /// The record's proof does not lead from its hash to its batch's root: the record was changed
    /// after it was stamped, or the proof was.
    #[error("record {seq}: proof does not lead to the root of batch {batch}: {reason}")]
    BadProof {
        /// The record.
        seq: u64,
        /// The batch's first sequence number.
        batch: u64,
        /// Which check failed.
        reason: &'static str,
    },
    /// The batch's KSI signature is malformed, inconsistent, or signs another root.
    #[error("batch {batch} (records {batch}..{end}): {reason}")]
    BadTimestamp {
        /// The batch's first sequence number.
        batch: u64,
        /// One past its last.
        end: u64,
        /// Why.
        reason: String,
    },
}

/// Verifies `bundle`. `expected_prev` is the hash the first record must link to: [`GENESIS`] is
/// assumed when the first record is seq 0; otherwise pass the `last_hash` of the export before,
/// or `None` to start from whatever the first record says.
///
/// # Errors
///
/// The first failure, as [`VerifyError`].
pub fn verify(bundle: &Bundle, expected_prev: Option<Hash>) -> Result<Report, VerifyError> {
    let batches: HashMap<u64, &Batch> = bundle.batches.iter().map(|b| (b.first_seq, b)).collect();
    let mut checked_batches: HashSet<u64> = HashSet::new();
    let mut report = Report {
        first_seq: None,
        records: 0,
        stamped: 0,
        unstamped: Vec::new(),
        batches: 0,
        last_hash: None,
    };
    let mut previous: Option<(u64, Hash)> = None;
    for (position, audit) in bundle.records.iter().enumerate() {
        let record = Record::decode(&audit.encoded).map_err(|source| VerifyError::Malformed {
            position,
            after: previous.map(|(seq, _)| seq),
            source,
        })?;
        let seq = record.seq;
        let link = match previous {
            Some((prev_seq, prev_hash)) => {
                let expected = prev_seq.saturating_add(1);
                if seq != expected {
                    return Err(VerifyError::OutOfSequence { seq, expected });
                }
                Some(prev_hash)
            }
            None if seq == 0 => Some(expected_prev.unwrap_or(GENESIS)),
            None => expected_prev,
        };
        if let Some(expected) = link
            && record.prev_hash != expected
        {
            return Err(VerifyError::BrokenLink {
                seq,
                expected: hex(&expected),
                found: hex(&record.prev_hash),
            });
        }
        let hash = record::record_hash(&audit.encoded);
        match &audit.proof {
            None => report.unstamped.push(seq),
            Some(proof) => {
                let batch = *batches.get(&proof.batch).ok_or(VerifyError::MissingBatch {
                    seq,
                    batch: proof.batch,
                })?;
                check_proof(seq, &hash, proof, batch)?;
                if checked_batches.insert(batch.first_seq) {
                    let end = batch.first_seq.saturating_add(batch.count);
                    check_signature(&batch.ksi_signature, &batch.root).map_err(|reason| {
                        VerifyError::BadTimestamp {
                            batch: batch.first_seq,
                            end,
                            reason,
                        }
                    })?;
                    report.batches += 1;
                }
                report.stamped += 1;
            }
        }
        report.first_seq.get_or_insert(seq);
        report.records += 1;
        report.last_hash = Some(hash);
        previous = Some((seq, hash));
    }
    Ok(report)
}

fn check_proof(
    seq: u64,
    hash: &Hash,
    proof: &RecordProof,
    batch: &Batch,
) -> Result<(), VerifyError> {
    let bad = |reason| VerifyError::BadProof {
        seq,
        batch: batch.first_seq,
        reason,
    };
    if !batch.covers(seq) {
        return Err(bad("the batch does not cover this record"));
    }
    if proof.leaf_index != seq - batch.first_seq || proof.batch_count != batch.count {
        return Err(bad("leaf index or batch size does not match the batch"));
    }
    match proof.root(hash) {
        Some(root) if root == batch.root => Ok(()),
        Some(_) => Err(bad(
            "the recomputed root differs (the record or its proof was changed)",
        )),
        None => Err(bad("the audit path has the wrong length")),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
