//! Group commit: one thread owns the head of the chain and writes every append.
//!
//! ```text
//!  append ─┐                   ┌─ takes every waiting append (up to MAX_GROUP_RECORDS records)
//!  append ─┼─▶ channel ─▶ commit thread ─▶ seq, prev hash, encode, seal body ─▶ one synced
//!  append ─┘                   │                                               write batch
//!                              └─ answers each append with its sequence numbers, after the sync
//! ```
//!
//! A synced write costs a fraction of a millisecond, so one append per sync would cap the log
//! at a few thousand records a second; every append that arrives while a sync runs rides on the
//! next one. The head (next sequence number, last hash) advances only after the write succeeds:
//! a failed write leaves no gap and no broken link, and every append in it gets the error.

use std::collections::HashSet;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, PoisonError};
use std::time::{Instant, SystemTime};

use tokio::sync::oneshot;

use super::record::{Hash, Record, SignerCertificate};
use super::store::Row;
use super::{Kind, LogError, NewRecord, Shared};

/// What a group's write leaves: the next sequence number, the last record's hash, each
/// pending append's sequence numbers, and the new records' hashes.
type Committed = (u64, Hash, Vec<Vec<u64>>, Vec<Hash>);

/// Most records one synced write takes. A group this large writes a few megabytes.
pub const MAX_GROUP_RECORDS: usize = 4096;

/// One append waiting for the commit thread.
pub(crate) struct Pending {
    pub(crate) records: Vec<Prepared>,
    pub(crate) reply: oneshot::Sender<Result<Vec<u64>, LogError>>,
    pub(crate) queued: Instant,
}

/// A record whose body and certificate hashes the caller's task already computed.
pub(crate) struct Prepared {
    pub(crate) new: NewRecord,
    pub(crate) body_sha256: Hash,
    pub(crate) certificate_sha256: Hash,
}

/// The commit thread's loop: runs until every sender is dropped.
pub(crate) fn run(
    shared: Arc<Shared>,
    mut next_seq: u64,
    mut last_hash: Hash,
    queue: Receiver<Pending>,
) {
    // Certificates written since the thread started: each is written with the first record that
    // names it (again after a restart, which rewrites the same value), never looked up.
    let mut stored = HashSet::new();
    while let Ok(first) = queue.recv() {
        let mut count = first.records.len();
        let mut group = vec![first];
        while count < MAX_GROUP_RECORDS {
            let Ok(more) = queue.try_recv() else { break };
            count += more.records.len();
            group.push(more);
        }
        match write_group(&shared, next_seq, last_hash, &mut group, &mut stored) {
            Ok((next, hash, seqs, hashes)) => {
                // The hashes first: the stamper takes records up to `committed` and finds
                // theirs here (or reads them back).
                shared
                    .recent
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(next_seq, &hashes);
                next_seq = next;
                last_hash = hash;
                shared.committed(next_seq);
                for (pending, seqs) in group.into_iter().zip(seqs) {
                    shared
                        .metrics
                        .append_duration
                        .observe(pending.queued.elapsed().as_secs_f64());
                    let _ = pending.reply.send(Ok(seqs));
                }
            }
            Err(reason) => {
                tracing::error!(dir = %shared.store.dir().display(), %reason, records = count, "message log write failed");
                for pending in group {
                    let error = LogError::Storage {
                        dir: shared.store.dir().to_owned(),
                        reason: reason.clone(),
                    };
                    let _ = pending.reply.send(Err(error));
                }
            }
        }
    }
}

/// Encodes, seals and writes one group; returns the new head, each append's numbers and the
/// records' hashes.
fn write_group(
    shared: &Shared,
    mut seq: u64,
    mut prev_hash: Hash,
    group: &mut [Pending],
    stored: &mut HashSet<Hash>,
) -> Result<Committed, String> {
    let mut encoded = Vec::new();
    let mut hashes = Vec::new();
    let mut new_certificates = HashSet::new();
    let mut seqs = Vec::with_capacity(group.len());
    for pending in group {
        let mut mine = Vec::with_capacity(pending.records.len());
        for prepared in std::mem::take(&mut pending.records) {
            let body = shared
                .key
                .seal(seq, &prepared.new.body)
                .ok_or("the system random source failed")?;
            let certificate = (!stored.contains(&prepared.certificate_sha256)
                && new_certificates.insert(prepared.certificate_sha256))
            .then(|| {
                (
                    prepared.certificate_sha256,
                    prepared.new.signer_certificate.clone(),
                )
            });
            let answers = prepared.new.answers;
            let record = into_record(seq, prev_hash, prepared);
            let bytes = record
                .encode()
                .map_err(|(what, len, max)| format!("{what} is {len} bytes, over {max}"))?;
            prev_hash = super::record::record_hash(&bytes);
            hashes.push(prev_hash);
            let subject = match record.kind {
                Kind::Request => record.data_subject,
                Kind::Response => None,
            };
            encoded.push((seq, bytes, body, subject, certificate, answers));
            mine.push(seq);
            seq = seq.checked_add(1).ok_or("sequence numbers exhausted")?;
        }
        seqs.push(mine);
    }
    let rows: Vec<Row<'_>> = encoded
        .iter()
        .map(|(seq, bytes, body, subject, certificate, answers)| Row {
            seq: *seq,
            encoded: bytes,
            sealed_body: body,
            subject: subject.as_deref(),
            answers: *answers,
            certificate: certificate
                .as_ref()
                .map(|(hash, der)| (hash, der.as_slice())),
        })
        .collect();
    shared.store.append(&rows).map_err(|e| e.to_string())?;
    stored.extend(new_certificates);
    shared
        .metrics
        .commit_batch_records
        .observe(rows.len() as f64);
    shared.metrics.records_appended.inc_by(rows.len() as u64);
    Ok((seq, prev_hash, seqs, hashes))
}

fn into_record(seq: u64, prev_hash: Hash, prepared: Prepared) -> Record {
    let new = prepared.new;
    Record {
        seq,
        prev_hash,
        side: new.side,
        kind: new.kind,
        emergency: new.emergency,
        logged_at_ms: new.logged_at_ms,
        message_id: new.message_id,
        client: new.client,
        service: new.service,
        user_id: new.user_id,
        data_subject: new.data_subject,
        purpose_of_use: new.purpose_of_use,
        descriptor: new.descriptor,
        signature: new.signature,
        signer_certificate: SignerCertificate::Sha256(prepared.certificate_sha256),
        body_len: new.body.len() as u64,
        body_sha256: prepared.body_sha256,
    }
}

/// Milliseconds since the Unix epoch, for records that carry no time of their own.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
