//! Audit archives: a time range of one gateway's message log, exported as one self-contained file
//! an auditor verifies offline, years later, without trusting the operator. The format is specified
//! in `gateway/docs/audit-bundle.md`; the checks are in [`check`].
//!
//! ```text
//!  archive = "BBAR" ‖ 0x01 ‖ str gateway ‖ from_ms ‖ to_ms ‖ first_seq ‖ end_seq
//!            ‖ prev_hash:[32] ‖ last_hash:[32] ‖ exported_at_ms
//!            ‖ n:u32 ‖ n × bytes certificate       (distinct member signing certificates, DER)
//!            ‖ n:u32 ‖ n × bytes batch             (batch.rs encoding, with its KSI signature)
//!            ‖ n:u32 ‖ n × (bytes record ‖ bytes proof)   (record.rs, batch.rs; empty = no proof)
//!            ‖ sha256:[32]                         (over every byte before it)
//!  str, bytes = len:u32 ‖ that many bytes;  integers big-endian u64
//! ```
//!
//! Consecutive archives chain: an archive's `prev_hash` is the hash of the record before its
//! first one, which is the `last_hash` of the archive before it. Bodies are never exported: the
//! record's `body_sha256` and the descriptor's body digest bind them.
//!
//! Encoding and decoding are pure code; [`export`] reads a [`MessageLog`].

use std::collections::HashSet;

use sha2::{Digest, Sha256};

use super::batch::{Batch, RecordProof};
use super::record::{self, DecodeError, GENESIS, Hash, Reader, Record};
use super::verify::AuditRecord;
use super::{LogError, MessageLog};

pub mod check;

/// The first bytes of every archive.
pub const MAGIC: &[u8; 4] = b"BBAR";

/// The archive format version this code writes and reads.
pub const VERSION: u8 = 0x01;

/// Largest archive file: 4 GiB. A verifier holds the file in memory; a busy gateway exports
/// shorter ranges.
pub const MAX_ARCHIVE_LEN: u64 = 1 << 32;

/// Most records in one archive: 16 Mi, a day of a busy gateway at about 200 records a second.
pub const MAX_RECORDS: usize = 1 << 24;

/// Most batches in one archive: one per record at worst.
pub const MAX_BATCHES: usize = MAX_RECORDS;

/// Most distinct signing certificates in one archive: every member of a national instance, with
/// room for key rotations.
pub const MAX_CERTIFICATES: usize = 1 << 16;

/// Longest gateway identifier: X-Road identifiers are a few hundred bytes at most.
pub const MAX_GATEWAY_LEN: usize = record::MAX_TEXT_LEN;

/// Longest encoded record: six texts and three blobs at their limits, and the fixed fields.
pub const MAX_RECORD_LEN: usize =
    6 * (record::MAX_TEXT_LEN + 5) + 3 * (record::MAX_BLOB_LEN + 4) + 256;

/// Longest encoded batch: its fixed fields and the longest KSI signature.
pub const MAX_BATCH_LEN: usize = super::batch::MAX_KSI_SIGNATURE_LEN + 64;

/// Longest encoded proof: its fixed fields and the longest audit path.
pub const MAX_PROOF_LEN: usize = 26 + 32 * backbone_hsm::batch::merkle::MAX_PATH_LEN;

/// Bytes of the header before the certificates, without the gateway id.
const HEADER_LEN: usize = 4 + 1 + 4 + 8 * 4 + 32 * 2 + 8;

/// One exported stretch of a gateway's log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Archive {
    /// The gateway whose log this is, `INSTANCE/CLASS/MEMBER/SERVERCODE`.
    pub gateway: String,
    /// The time range asked for: records logged from this time (ms since the Unix epoch)...
    pub from_ms: u64,
    /// ... up to, not including, this one.
    pub to_ms: u64,
    /// The sequence number of the first record.
    pub first_seq: u64,
    /// One past the sequence number of the last record (`first_seq` when empty).
    pub end_seq: u64,
    /// The hash of record `first_seq - 1` ([`GENESIS`] when `first_seq` is 0): the previous
    /// archive's `last_hash`.
    pub prev_hash: Hash,
    /// The hash of the last record (`prev_hash` when empty): the next archive's `prev_hash`.
    pub last_hash: Hash,
    /// When the archive was written, ms since the Unix epoch (the exporting machine's clock).
    pub exported_at_ms: u64,
    /// The distinct member signing certificates (DER) that verify the records' descriptor
    /// signatures, in order of first use.
    pub certificates: Vec<Vec<u8>>,
    /// The batches that cover the records, with their KSI signatures, in order.
    pub batches: Vec<Batch>,
    /// The records as stored (not re-encoded), in sequence order, each with its proof.
    pub records: Vec<AuditRecord>,
}

/// An archive decoded without judging it: whether its SHA-256 matches is reported, not refused, so
/// that a verifier can still name the records that were changed.
#[derive(Clone, Debug)]
pub struct Unverified {
    /// The decoded content.
    pub archive: Archive,
    /// Whether the trailing SHA-256 is the hash of the content.
    pub digest_matches: bool,
}

/// Why bytes are not an archive.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// Not an archive, or a version this code does not read.
    #[error("not an audit archive of version {VERSION}: {0}")]
    NotArchive(String),
    /// A part of the archive is over its limit.
    #[error("{what} is {len}, over the limit of {max}")]
    TooLarge {
        /// The part.
        what: &'static str,
        /// Its size or count.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A part did not decode.
    #[error("{what}: {source}")]
    Decode {
        /// The part, with its position: `batch 3`, `record 17 proof`.
        what: String,
        /// Why.
        source: DecodeError,
    },
    /// Bytes follow the digest.
    #[error("{0} bytes after the digest")]
    Trailing(usize),
    /// The trailing SHA-256 is not the hash of the content: the file was changed after export.
    #[error("the archive's SHA-256 does not match its content (changed after export)")]
    Digest,
}

/// What [`export`] takes: a range of records, chosen by when they were logged.
#[derive(Clone, Copy, Debug)]
pub struct Selection {
    /// Records logged from this time (ms since the Unix epoch)...
    pub from_ms: u64,
    /// ... up to, not including, this one.
    pub to_ms: u64,
    /// Continue the archive before: start at its `end_seq`, and check that the log still holds
    /// the record its `last_hash` names. `from_ms` is then ignored.
    pub after: Option<Continuation>,
}

/// Where the archive before ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Continuation {
    /// Its `end_seq`.
    pub end_seq: u64,
    /// Its `last_hash`.
    pub last_hash: Hash,
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The log could not be read.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The range holds more than one archive may.
    #[error("the range holds more than {max} {what}; export a shorter time range")]
    TooLarge {
        /// Records, certificates or bytes.
        what: &'static str,
        /// The limit.
        max: u64,
    },
    /// The log does not continue the archive given as the one before.
    #[error("the log does not continue the previous archive: {0}")]
    DoesNotContinue(String),
}

/// What [`export`] produced.
#[derive(Clone, Debug)]
pub struct Export {
    /// The archive.
    pub archive: Archive,
    /// The first record of the range left out because it is not stamped yet (the range ends
    /// before it); `None` when every record of the range is stamped.
    pub unstamped_from: Option<u64>,
}

// === impl Archive ===

impl Archive {
    /// The encoding, ending with the SHA-256 of everything before it.
    ///
    /// # Errors
    ///
    /// [`ArchiveError::TooLarge`] when a part is over its limit.
    pub fn encode(&self) -> Result<Vec<u8>, ArchiveError> {
        check_count("records", self.records.len(), MAX_RECORDS)?;
        check_count("batches", self.batches.len(), MAX_BATCHES)?;
        check_count("certificates", self.certificates.len(), MAX_CERTIFICATES)?;
        let mut out = Vec::with_capacity(HEADER_LEN + self.gateway.len() + 64);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        put_bytes(
            &mut out,
            "gateway",
            self.gateway.as_bytes(),
            MAX_GATEWAY_LEN,
        )?;
        for value in [self.from_ms, self.to_ms, self.first_seq, self.end_seq] {
            out.extend_from_slice(&value.to_be_bytes());
        }
        out.extend_from_slice(&self.prev_hash);
        out.extend_from_slice(&self.last_hash);
        out.extend_from_slice(&self.exported_at_ms.to_be_bytes());
        put_count(&mut out, self.certificates.len());
        for certificate in &self.certificates {
            put_bytes(&mut out, "certificate", certificate, record::MAX_BLOB_LEN)?;
        }
        put_count(&mut out, self.batches.len());
        for batch in &self.batches {
            put_bytes(&mut out, "batch", &batch.encode(), MAX_BATCH_LEN)?;
        }
        put_count(&mut out, self.records.len());
        for audit in &self.records {
            put_bytes(&mut out, "record", &audit.encoded, MAX_RECORD_LEN)?;
            let proof = audit
                .proof
                .as_ref()
                .map(RecordProof::encode)
                .unwrap_or_default();
            put_bytes(&mut out, "proof", &proof, MAX_PROOF_LEN)?;
            if out.len() as u64 > MAX_ARCHIVE_LEN - 32 {
                return Err(ArchiveError::TooLarge {
                    what: "archive",
                    len: out.len() as u64,
                    max: MAX_ARCHIVE_LEN,
                });
            }
        }
        let digest: Hash = Sha256::digest(&out).into();
        out.extend_from_slice(&digest);
        Ok(out)
    }

    /// Decodes an archive and checks its trailing SHA-256.
    ///
    /// # Errors
    ///
    /// As [`Archive::decode_unverified`], and [`ArchiveError::Digest`] when the digest does not
    /// match.
    pub fn decode(bytes: &[u8]) -> Result<Self, ArchiveError> {
        let unverified = Self::decode_unverified(bytes)?;
        if !unverified.digest_matches {
            return Err(ArchiveError::Digest);
        }
        Ok(unverified.archive)
    }

    /// Decodes an archive without refusing a digest that does not match; for verifiers, which
    /// report the mismatch beside whatever else they find. Records are not decoded here (a
    /// verifier decodes each and names the one that fails); batches and proofs are.
    ///
    /// # Errors
    ///
    /// [`ArchiveError`] naming the part that does not decode or is over its limit.
    pub fn decode_unverified(bytes: &[u8]) -> Result<Unverified, ArchiveError> {
        if bytes.len() as u64 > MAX_ARCHIVE_LEN {
            return Err(ArchiveError::TooLarge {
                what: "archive",
                len: bytes.len() as u64,
                max: MAX_ARCHIVE_LEN,
            });
        }
        let Some((content, digest)) = bytes.split_last_chunk::<32>() else {
            return Err(ArchiveError::NotArchive(format!(
                "{} bytes is shorter than a digest",
                bytes.len()
            )));
        };
        let mut r = Reader { bytes: content };
        let magic = r
            .take("magic", MAGIC.len())
            .map_err(|_| ArchiveError::NotArchive("too short".into()))?;
        if magic != MAGIC {
            return Err(ArchiveError::NotArchive("wrong magic".into()));
        }
        let version = r
            .u8("version")
            .map_err(|_| ArchiveError::NotArchive("too short".into()))?;
        if version != VERSION {
            return Err(ArchiveError::NotArchive(format!("version {version:#04x}")));
        }
        let header = |e| ArchiveError::Decode {
            what: "header".into(),
            source: e,
        };
        let gateway = r.blob_max("gateway", MAX_GATEWAY_LEN).map_err(header)?;
        let gateway = String::from_utf8(gateway).map_err(|_| {
            header(DecodeError::Invalid {
                field: "gateway",
                reason: "not UTF-8".into(),
            })
        })?;
        let from_ms = r.u64("from_ms").map_err(header)?;
        let to_ms = r.u64("to_ms").map_err(header)?;
        let first_seq = r.u64("first_seq").map_err(header)?;
        let end_seq = r.u64("end_seq").map_err(header)?;
        let prev_hash = r.hash("prev_hash").map_err(header)?;
        let last_hash = r.hash("last_hash").map_err(header)?;
        let exported_at_ms = r.u64("exported_at_ms").map_err(header)?;

        // Each entry takes at least its 4-byte length: a count is checked against the bytes left
        // before anything is allocated for it.
        let n = count(&mut r, "certificates", MAX_CERTIFICATES, 4)?;
        let mut certificates = Vec::with_capacity(n);
        for i in 0..n {
            certificates.push(
                r.blob_max("certificate", record::MAX_BLOB_LEN)
                    .map_err(at("certificate", i))?,
            );
        }
        let n = count(&mut r, "batches", MAX_BATCHES, 4)?;
        let mut batches = Vec::with_capacity(n);
        for i in 0..n {
            let bytes = r.blob_max("batch", MAX_BATCH_LEN).map_err(at("batch", i))?;
            batches.push(Batch::decode(&bytes).map_err(at("batch", i))?);
        }
        let n = count(&mut r, "records", MAX_RECORDS, 8)?;
        let mut records = Vec::with_capacity(n);
        for i in 0..n {
            let encoded = r
                .blob_max("record", MAX_RECORD_LEN)
                .map_err(at("record", i))?;
            let proof = r
                .blob_max("proof", MAX_PROOF_LEN)
                .map_err(at("record", i))?;
            let proof = if proof.is_empty() {
                None
            } else {
                Some(
                    RecordProof::decode(&proof).map_err(|source| ArchiveError::Decode {
                        what: format!("record {i} proof"),
                        source,
                    })?,
                )
            };
            records.push(AuditRecord { encoded, proof });
        }
        if !r.bytes.is_empty() {
            return Err(ArchiveError::Trailing(r.bytes.len()));
        }
        let archive = Archive {
            gateway,
            from_ms,
            to_ms,
            first_seq,
            end_seq,
            prev_hash,
            last_hash,
            exported_at_ms,
            certificates,
            batches,
            records,
        };
        let computed: Hash = Sha256::digest(content).into();
        Ok(Unverified {
            archive,
            digest_matches: &computed == digest,
        })
    }

    /// Where the next archive continues from.
    pub fn continuation(&self) -> Continuation {
        Continuation {
            end_seq: self.end_seq,
            last_hash: self.last_hash,
        }
    }
}

/// Exports the records of `log` that `selection` names, as an archive of `gateway`'s log.
///
/// The range is cut in sequence order, so that consecutive ranges chain without a gap: it starts
/// at the first record logged at or after `from_ms` (or where the archive before ended) and ends
/// before the first record after that logged at or after `to_ms`. A record whose gateway clock
/// stepped back a little stays with its neighbours. The range also ends before the first record
/// not yet stamped ([`Export::unstamped_from`]): start the gateway to stamp it, then export again.
///
/// # Errors
///
/// [`ExportError`].
pub fn export(
    log: &MessageLog,
    gateway: &str,
    selection: Selection,
    exported_at_ms: u64,
) -> Result<Export, ExportError> {
    /// Records read from the store at a time.
    const CHUNK: u64 = 4096;
    let total = log.status().records;
    let start = match selection.after {
        Some(after) => after.end_seq,
        None => first_at_or_after(log, 0, total, selection.from_ms)?,
    };
    let prev_hash = match start.checked_sub(1) {
        None => GENESIS,
        Some(before) => {
            let bundle = log.export(before, start)?;
            let encoded = bundle
                .records
                .first()
                .map(|r| r.encoded.as_slice())
                .ok_or_else(|| {
                    ExportError::DoesNotContinue(format!(
                        "record {before} is not in the log, which holds {total} records"
                    ))
                })?;
            record::record_hash(encoded)
        }
    };
    if let Some(after) = selection.after
        && after.last_hash != prev_hash
    {
        return Err(ExportError::DoesNotContinue(format!(
            "record {} of the log is not the last record of the previous archive",
            after.end_seq.saturating_sub(1)
        )));
    }
    let mut archive = Archive {
        gateway: gateway.to_owned(),
        from_ms: selection.from_ms,
        to_ms: selection.to_ms,
        first_seq: start,
        end_seq: start,
        prev_hash,
        last_hash: prev_hash,
        exported_at_ms,
        ..Archive::default()
    };
    let mut certificates = HashSet::new();
    let mut batches = HashSet::new();
    let mut size = HEADER_LEN as u64 + gateway.len() as u64 + 64;
    let mut unstamped_from = None;
    let mut seq = start;
    'scan: while seq < total {
        let chunk = log.export(seq, seq.saturating_add(CHUNK).min(total))?;
        if chunk.records.is_empty() {
            break;
        }
        for audit in chunk.records {
            let record = Record::decode(&audit.encoded).map_err(|e| LogError::Corrupt {
                seq,
                reason: e.to_string(),
            })?;
            if record.logged_at_ms >= selection.to_ms {
                break 'scan;
            }
            let Some(proof) = &audit.proof else {
                unstamped_from = Some(record.seq);
                break 'scan;
            };
            if batches.insert(proof.batch) {
                let batch = chunk
                    .batches
                    .iter()
                    .find(|b| b.first_seq == proof.batch)
                    .ok_or_else(|| LogError::Corrupt {
                        seq,
                        reason: format!(
                            "its proof names batch {}, which is not stored",
                            proof.batch
                        ),
                    })?;
                size += batch.ksi_signature.len() as u64 + 68;
                archive.batches.push(batch.clone());
            }
            if certificates.insert(record.signer_certificate.sha256()) {
                let der = log.signer_certificate(record.seq, &record.signer_certificate)?;
                size += der.len() as u64 + 4;
                archive.certificates.push(der);
            }
            size += audit.encoded.len() as u64 + 8 + 32 * proof.path.len() as u64 + 26;
            if archive.records.len() >= MAX_RECORDS || size > MAX_ARCHIVE_LEN {
                return Err(ExportError::TooLarge {
                    what: "records or bytes",
                    max: MAX_RECORDS as u64,
                });
            }
            if archive.certificates.len() > MAX_CERTIFICATES {
                return Err(ExportError::TooLarge {
                    what: "signing certificates",
                    max: MAX_CERTIFICATES as u64,
                });
            }
            archive.last_hash = record::record_hash(&audit.encoded);
            archive.records.push(audit);
            seq = record.seq.saturating_add(1);
            archive.end_seq = seq;
        }
    }
    Ok(Export {
        archive,
        unstamped_from,
    })
}

/// The first record from `start` logged at or after `time_ms`, in sequence order; `total` when
/// there is none.
fn first_at_or_after(
    log: &MessageLog,
    start: u64,
    total: u64,
    time_ms: u64,
) -> Result<u64, LogError> {
    const CHUNK: u64 = 4096;
    let mut seq = start;
    while seq < total {
        let chunk = log.export(seq, seq.saturating_add(CHUNK).min(total))?;
        if chunk.records.is_empty() {
            break;
        }
        for audit in &chunk.records {
            let record = Record::decode(&audit.encoded).map_err(|e| LogError::Corrupt {
                seq,
                reason: e.to_string(),
            })?;
            if record.logged_at_ms >= time_ms {
                return Ok(record.seq);
            }
            seq = record.seq.saturating_add(1);
        }
    }
    Ok(total)
}

fn check_count(what: &'static str, len: usize, max: usize) -> Result<(), ArchiveError> {
    if len > max {
        return Err(ArchiveError::TooLarge {
            what,
            len: len as u64,
            max: max as u64,
        });
    }
    Ok(())
}

fn put_count(out: &mut Vec<u8>, n: usize) {
    // Counts were checked against limits below u32::MAX.
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
}

fn put_bytes(
    out: &mut Vec<u8>,
    what: &'static str,
    bytes: &[u8],
    max: usize,
) -> Result<(), ArchiveError> {
    if bytes.len() > max {
        return Err(ArchiveError::TooLarge {
            what,
            len: bytes.len() as u64,
            max: max as u64,
        });
    }
    put_count(out, bytes.len());
    out.extend_from_slice(bytes);
    Ok(())
}

/// Reads an entry count, refusing one over `max` or more than the bytes left could hold at
/// `min_entry` bytes each.
fn count(
    r: &mut Reader<'_>,
    what: &'static str,
    max: usize,
    min_entry: usize,
) -> Result<usize, ArchiveError> {
    let n = u32::from_be_bytes(r.array(what).map_err(|source| ArchiveError::Decode {
        what: format!("{what} count"),
        source,
    })?);
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    if n > max {
        return Err(ArchiveError::TooLarge {
            what,
            len: n as u64,
            max: max as u64,
        });
    }
    let fits = r.bytes.len() / min_entry;
    if n > fits {
        return Err(ArchiveError::Decode {
            what: format!("{what} count"),
            source: DecodeError::Truncated {
                field: what,
                needed: n.saturating_mul(min_entry),
                left: r.bytes.len(),
            },
        });
    }
    Ok(n)
}

fn at(what: &'static str, index: usize) -> impl Fn(DecodeError) -> ArchiveError {
    move |source| ArchiveError::Decode {
        what: format!("{what} {index}"),
        source,
    }
}

#[cfg(test)]
mod tests;
