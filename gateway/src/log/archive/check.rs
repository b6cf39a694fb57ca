//! Offline verification of an audit archive, for `backbone audit verify`: every record decodes,
//! follows the one before without a gap and links to its hash, leads through its proof to its
//! batch root; every batch's KSI signature covers its root under the caller's policy; every
//! descriptor is signed by the member its record names, with a certificate valid when it was
//! logged; every response is bound to its request; and the archive continues the one before.
//!
//! Pure code: an archive in, a [`Report`] out, listing every failure with the record (sequence
//! number and message id) or batch it concerns. Verification goes on after a failure, so that
//! one run names everything that is wrong.

use std::collections::{HashMap, HashSet};
use std::fmt;

use backbone_hsm::PublicKey;
use backbone_hsm::batch::BatchSignature;
use backbone_timestamping_verify::imprint::{HashAlgorithm, Imprint};
use backbone_timestamping_verify::signature::Signature;
use backbone_timestamping_verify::verify::{self, Context, Outcome, Policy};
use sha2::{Digest, Sha256};

use super::{Archive, Unverified};
use crate::log::batch::{Batch, RecordProof};
use crate::log::record::{self, GENESIS, Hash, Kind, Record, Side};
use crate::signed::{Digest512, RequestDescriptor, ResponseDescriptor};

/// Failures kept in a report; more are counted in [`Report::failures_omitted`].
pub const MAX_REPORTED_FAILURES: usize = 1000;

/// How to verify.
#[derive(Clone, Copy, Debug)]
pub struct Options<'a> {
    /// The archive before this one: this one must continue it (same gateway, next sequence
    /// number, `prev_hash` equal to its `last_hash`).
    pub previous: Option<&'a Archive>,
    /// The KSI policy for the batches' signatures.
    pub ksi_policy: Policy,
    /// What the KSI policy may use (publications file, trusted certificates); its document hash
    /// is set to each batch root here.
    pub ksi_context: Context<'a>,
}

/// What a failure concerns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// The archive as a whole: its digest, its header, its link to the archive before.
    Archive,
    /// One record.
    Record {
        /// Its sequence number (the one expected at its place when it does not decode).
        seq: u64,
        /// Its message id, when it decodes.
        message_id: Option<String>,
    },
    /// One batch.
    Batch {
        /// Its first sequence number.
        first_seq: u64,
        /// How many records it covers.
        count: u64,
    },
}

/// One check that failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// What it concerns.
    pub location: Location,
    /// Why it failed.
    pub reason: String,
}

/// What verification found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Records in the archive.
    pub records: u64,
    /// Records whose proof leads to their batch root.
    pub stamped: u64,
    /// Batches whose KSI signature verified.
    pub batches_verified: u64,
    /// Descriptor signatures that verified.
    pub signatures_verified: u64,
    /// Responses whose request hash matches their request's record in this archive.
    pub responses_bound: u64,
    /// Responses whose request record is not in this archive (an earlier one holds it).
    pub responses_unpaired: u64,
    /// Whether the archive was checked to continue the previous one.
    pub linked_to_previous: bool,
    /// Every failure, up to [`MAX_REPORTED_FAILURES`], in the order found.
    pub failures: Vec<Failure>,
    /// Failures found beyond those kept.
    pub failures_omitted: u64,
}

/// Verifies `unverified`, calling `progress(records done, records in total)` after each record.
pub fn check(
    unverified: &Unverified,
    options: &Options<'_>,
    progress: &mut dyn FnMut(u64, u64),
) -> Report {
    let archive = &unverified.archive;
    let mut run = Run {
        report: Report {
            records: archive.records.len() as u64,
            ..Report::default()
        },
    };
    if !unverified.digest_matches {
        run.fail(
            Location::Archive,
            "the archive's SHA-256 does not match its content: it was changed after export",
        );
    }
    if let Some(previous) = options.previous {
        run.check_previous(archive, previous);
    }
    let batches = run.check_batches(archive, options);
    // Records name their signer certificate by SHA-256 (version 1 records carry the DER, which
    // must be among the archive's certificates too).
    let certificates: HashMap<Hash, &[u8]> = archive
        .certificates
        .iter()
        .map(|der| (record::certificate_hash(der), der.as_slice()))
        .collect();
    let mut signers = Signers::default();
    let mut requests: HashMap<(String, String), Digest512> = HashMap::new();
    let mut expected = archive.first_seq;
    let mut link = archive.prev_hash;
    if archive.first_seq == 0 && archive.prev_hash != GENESIS {
        run.fail(
            Location::Archive,
            "the archive starts at record 0 but its prev_hash is not 32 zero bytes",
        );
    }
    let total = archive.records.len() as u64;
    for (done, audit) in (1..).zip(&archive.records) {
        let hash = record::record_hash(&audit.encoded);
        match Record::decode(&audit.encoded) {
            Err(e) => run.fail(
                Location::Record {
                    seq: expected,
                    message_id: None,
                },
                format!("does not decode: {e}"),
            ),
            Ok(record) => {
                let at = Location::Record {
                    seq: record.seq,
                    message_id: Some(record.message_id.clone()),
                };
                if record.seq > expected {
                    let reason = match record.seq - expected {
                        1 => format!(
                            "is missing (the archive goes on with record {})",
                            record.seq
                        ),
                        n => format!(
                            "is missing, and the {} records after it (the archive goes on with record {})",
                            n - 1,
                            record.seq
                        ),
                    };
                    run.fail(
                        Location::Record {
                            seq: expected,
                            message_id: None,
                        },
                        reason,
                    );
                } else if record.seq < expected {
                    run.fail(
                        at.clone(),
                        format!("out of order or repeated (record {expected} was expected here)"),
                    );
                }
                if record.prev_hash != link {
                    run.fail(at.clone(), format!(
                        "prev_hash {} is not the hash of the record before it ({}); one of the two was changed",
                        hex(&record.prev_hash),
                        hex(&link)
                    ));
                }
                run.check_proof(&at, &record, &hash, audit.proof.as_ref(), &batches);
                let certificate = certificates
                    .get(&record.signer_certificate.sha256())
                    .copied();
                if certificate.is_none() {
                    run.fail(
                        at.clone(),
                        "its signer certificate is not among the archive's certificates",
                    );
                }
                run.check_descriptor(&at, &record, certificate, &mut signers, &mut requests);
                expected = record.seq.saturating_add(1);
            }
        }
        link = hash;
        progress(done, total);
    }
    if expected < archive.end_seq {
        run.fail(
            Location::Record {
                seq: expected,
                message_id: None,
            },
            format!(
                "records {expected}..{} are missing at the end of the archive",
                archive.end_seq
            ),
        );
    } else if expected > archive.end_seq {
        run.fail(
            Location::Archive,
            format!(
                "the header says the records end before {}, but they go on to {expected}",
                archive.end_seq
            ),
        );
    }
    if link != archive.last_hash {
        run.fail(
            Location::Archive,
            "the header's last_hash is not the hash of the last record",
        );
    }
    run.report
}

// === impl Failure ===

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Location::Archive => write!(f, "archive: {}", self.reason),
            Location::Record {
                seq,
                message_id: Some(id),
            } => write!(f, "record {seq} (message id {id}): {}", self.reason),
            Location::Record {
                seq,
                message_id: None,
            } => write!(f, "record {seq}: {}", self.reason),
            Location::Batch { first_seq, count } => {
                write!(
                    f,
                    "batch {first_seq} (records {first_seq}..{}): {}",
                    first_seq.saturating_add(*count),
                    self.reason
                )
            }
        }
    }
}

// === impl Report ===

impl Report {
    /// Whether everything verified.
    pub fn is_ok(&self) -> bool {
        self.failures.is_empty() && self.failures_omitted == 0
    }
}

/// One verification run.
struct Run {
    report: Report,
}

/// A batch and whether its KSI signature verified.
type Batches<'a> = HashMap<u64, (&'a Batch, bool)>;

/// Signing certificates seen, and batch root signatures already verified.
#[derive(Default)]
struct Signers {
    certificates: HashMap<Hash, Result<Signer, String>>,
    verified_roots: HashSet<Hash>,
}

/// What a signing certificate says.
struct Signer {
    key: PublicKey,
    member: String,
    not_before: i64,
    not_after: i64,
}

impl Run {
    fn fail(&mut self, location: Location, reason: impl Into<String>) {
        if self.report.failures.len() < MAX_REPORTED_FAILURES {
            self.report.failures.push(Failure {
                location,
                reason: reason.into(),
            });
        } else {
            self.report.failures_omitted += 1;
        }
    }

    fn check_previous(&mut self, archive: &Archive, previous: &Archive) {
        let at = Location::Record {
            seq: archive.first_seq,
            message_id: None,
        };
        if previous.gateway != archive.gateway {
            self.fail(
                Location::Archive,
                format!(
                    "the previous archive is of gateway {}, this one of {}",
                    previous.gateway, archive.gateway
                ),
            );
        } else if previous.end_seq != archive.first_seq {
            self.fail(
                at,
                format!(
                    "the previous archive ends before record {}, this one starts at record {}",
                    previous.end_seq, archive.first_seq
                ),
            );
        } else if previous.last_hash != archive.prev_hash {
            self.fail(at, format!(
                "does not link to the previous archive: it follows a record with hash {}, the previous archive's last record has hash {}",
                hex(&archive.prev_hash),
                hex(&previous.last_hash)
            ));
        } else {
            self.report.linked_to_previous = true;
        }
    }

    /// Verifies every batch's KSI signature once.
    fn check_batches<'a>(&mut self, archive: &'a Archive, options: &Options<'_>) -> Batches<'a> {
        let mut batches = HashMap::new();
        for batch in &archive.batches {
            let at = Location::Batch {
                first_seq: batch.first_seq,
                count: batch.count,
            };
            if batches.contains_key(&batch.first_seq) {
                self.fail(at, "the archive holds this batch twice");
                continue;
            }
            let verified = match ksi_check(batch, options) {
                Ok(()) => {
                    self.report.batches_verified += 1;
                    true
                }
                Err(reason) => {
                    self.fail(at, reason);
                    false
                }
            };
            batches.insert(batch.first_seq, (batch, verified));
        }
        batches
    }

    fn check_proof(
        &mut self,
        at: &Location,
        record: &Record,
        hash: &Hash,
        proof: Option<&RecordProof>,
        batches: &Batches<'_>,
    ) {
        let Some(proof) = proof else {
            self.fail(
                at.clone(),
                "has no timestamp proof (it was not stamped when exported)",
            );
            return;
        };
        let Some((batch, _)) = batches.get(&proof.batch) else {
            self.fail(
                at.clone(),
                format!(
                    "its proof names batch {}, which is not in the archive",
                    proof.batch
                ),
            );
            return;
        };
        let seq = record.seq;
        let reason = if !batch.covers(seq) {
            "the batch does not cover this record"
        } else if proof.leaf_index != seq - batch.first_seq || proof.batch_count != batch.count {
            "leaf index or batch size does not match the batch"
        } else {
            match proof.root(hash) {
                Some(root) if root == batch.root => {
                    self.report.stamped += 1;
                    return;
                }
                Some(_) => "the recomputed root differs (the record or its proof was changed)",
                None => "the audit path has the wrong length",
            }
        };
        self.fail(
            at.clone(),
            format!(
                "proof does not lead to the root of batch {}: {reason}",
                batch.first_seq
            ),
        );
    }

    /// The descriptor matches the record, is signed by the member the record names, and a
    /// response is bound to its request.
    fn check_descriptor(
        &mut self,
        at: &Location,
        record: &Record,
        certificate: Option<&[u8]>,
        signers: &mut Signers,
        requests: &mut HashMap<(String, String), Digest512>,
    ) {
        let key = (record.client.clone(), record.message_id.clone());
        let (signing_member, mismatch) = match record.kind {
            Kind::Request => match RequestDescriptor::decode(&record.descriptor) {
                Err(e) => {
                    return self.fail(
                        at.clone(),
                        format!("request descriptor does not decode: {e}"),
                    );
                }
                Ok(d) => {
                    let mismatch = request_mismatch(record, &d);
                    if let Ok(hash) = d.request_hash() {
                        requests.insert(key, hash);
                    }
                    (member_of(&record.client), mismatch)
                }
            },
            Kind::Response => {
                match ResponseDescriptor::decode(&record.descriptor) {
                    Err(e) => {
                        return self.fail(
                            at.clone(),
                            format!("response descriptor does not decode: {e}"),
                        );
                    }
                    Ok(d) => {
                        match requests.get(&key) {
                        Some(hash) if *hash == d.request_hash => self.report.responses_bound += 1,
                        Some(_) => self.fail(at.clone(), "the response's request hash is not the hash of its request's record"),
                        None => self.report.responses_unpaired += 1,
                    }
                        let mismatch = (d.message_id != record.message_id).then_some("message id");
                        // A fault that ended the exchange is noted by the gateway that logged
                        // it, signed by its own member (`gateway::outcome`): on the client side,
                        // the client's member; a response, and any provider-side outcome, by
                        // the provider's.
                        let fault = d
                            .headers
                            .iter()
                            .any(|(name, _)| name == crate::fault::X_ROAD_ERROR);
                        let signer = if fault && record.side == Side::Client {
                            &record.client
                        } else {
                            &record.service
                        };
                        (member_of(signer), mismatch)
                    }
                }
            }
        };
        if let Some(field) = mismatch {
            self.fail(
                at.clone(),
                format!("the record's {field} is not the signed descriptor's"),
            );
        }
        // A certificate missing from the archive was reported above.
        let Some(certificate) = certificate else {
            return;
        };
        match signers.check(record, certificate, signing_member) {
            Ok(()) => self.report.signatures_verified += 1,
            Err(reason) => self.fail(at.clone(), format!("descriptor signature: {reason}")),
        }
    }
}

// === impl Signers ===

impl Signers {
    /// Checks the record's batch signature over its descriptor with its signer certificate, which
    /// must name `member` and be valid when the record was logged.
    fn check(&mut self, record: &Record, certificate: &[u8], member: &str) -> Result<(), String> {
        let certificate_sha256 = record.signer_certificate.sha256();
        let signer = self
            .certificates
            .entry(certificate_sha256)
            .or_insert_with(|| Signer::parse(certificate))
            .as_ref()
            .map_err(Clone::clone)?;
        if signer.member != member {
            return Err(format!(
                "signed with the certificate of member {}, not of {member}",
                signer.member
            ));
        }
        let logged = i64::try_from(record.logged_at_ms / 1000).unwrap_or(i64::MAX);
        if logged < signer.not_before || logged > signer.not_after {
            return Err(format!(
                "the signer certificate was not valid when the record was logged ({} ms since the Unix epoch)",
                record.logged_at_ms
            ));
        }
        let signature = BatchSignature::from_bytes(&record.signature).map_err(|e| e.to_string())?;
        signature
            .verify_chain(&record.descriptor)
            .map_err(|e| e.to_string())?;
        let mut root_id = Sha256::new();
        root_id.update(backbone_hsm::batch::to_be_signed(
            signature.tree_size(),
            signature.root(),
        ));
        root_id.update([signature.algorithm().code()]);
        root_id.update(signature.signature());
        root_id.update(certificate_sha256);
        let root_id: Hash = root_id.finalize().into();
        if !self.verified_roots.contains(&root_id) {
            signature
                .verify_root(&signer.key)
                .map_err(|e| e.to_string())?;
            self.verified_roots.insert(root_id);
        }
        Ok(())
    }
}

// === impl Signer ===

impl Signer {
    /// The key, member and validity of a member signing certificate: the member is
    /// `serialNumber/CN` of the subject (`INSTANCE/CLASS` and the member code), as the registry
    /// issues them.
    fn parse(der: &[u8]) -> Result<Signer, String> {
        use x509_parser::oid_registry::OID_X509_SERIALNUMBER;
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("the signer certificate does not parse: {e}"))?;
        let subject = cert.subject();
        let text = |attr: Option<&x509_parser::x509::AttributeTypeAndValue<'_>>| {
            attr.and_then(|a| a.as_str().ok()).map(str::to_owned)
        };
        let code = text(subject.iter_common_name().next());
        let class = text(subject.iter_by_oid(&OID_X509_SERIALNUMBER).next());
        let member = match (class, code) {
            (Some(class), Some(code)) => format!("{class}/{code}"),
            _ => {
                return Err(format!(
                    "the signer certificate ({subject}) does not name a member"
                ));
            }
        };
        let key = PublicKey::from_spki_der(cert.public_key().raw)
            .map_err(|e| format!("the signer certificate's key: {e}"))?;
        let validity = cert.validity();
        Ok(Signer {
            key,
            member,
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
        })
    }
}

/// Fields the record keeps in the clear that must equal the signed request's.
fn request_mismatch(record: &Record, d: &RequestDescriptor) -> Option<&'static str> {
    if d.message_id != record.message_id {
        Some("message id")
    } else if d.client != record.client {
        Some("client")
    } else if d.service != record.service {
        Some("service")
    } else if d.user_id != record.user_id {
        Some("user id")
    } else if d.data_subject != record.data_subject {
        Some("data subject")
    } else if d.purpose_of_use != record.purpose_of_use {
        Some("purpose of use")
    } else {
        None
    }
}

/// `INSTANCE/CLASS/MEMBER` of a subsystem or service identifier.
fn member_of(id: &str) -> &str {
    let mut ends = id.match_indices('/').map(|(i, _)| i);
    match ends.nth(2) {
        Some(end) => id.get(..end).unwrap_or(id),
        None => id,
    }
}

/// The batch's KSI signature under the caller's policy, with the batch root as document hash.
fn ksi_check(batch: &Batch, options: &Options<'_>) -> Result<(), String> {
    let signature = Signature::decode(&batch.ksi_signature)
        .map_err(|e| format!("KSI signature does not decode: {e}"))?;
    let hash =
        Imprint::new(HashAlgorithm::Sha256, &batch.root).map_err(|e| format!("imprint: {e}"))?;
    let context = Context {
        document_hash: Some(&hash),
        ..options.ksi_context
    };
    let verdict = verify::verify(&signature, options.ksi_policy, &context);
    if verdict.outcome != Outcome::Ok {
        return Err(format!(
            "KSI signature does not verify for the batch root: {verdict}"
        ));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_of_identifiers() {
        assert_eq!(member_of("EE/GOV/70000001/ehr"), "EE/GOV/70000001");
        assert_eq!(member_of("EE/GOV/70000001/ehr/patients"), "EE/GOV/70000001");
        assert_eq!(member_of("EE/GOV/70000001"), "EE/GOV/70000001");
        assert_eq!(member_of("x"), "x");
    }

    #[test]
    fn failures_name_their_place() {
        let record = Failure {
            location: Location::Record {
                seq: 7,
                message_id: Some("m-1".into()),
            },
            reason: "why".into(),
        };
        assert_eq!(record.to_string(), "record 7 (message id m-1): why");
        let batch = Failure {
            location: Location::Batch {
                first_seq: 10,
                count: 5,
            },
            reason: "bad".into(),
        };
        assert_eq!(batch.to_string(), "batch 10 (records 10..15): bad");
    }
}
