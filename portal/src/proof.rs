//! Each access's proof, checked by the portal and handed to the citizen to check offline.
//!
//! A record's proof (see `backbone_gateway::usage`): the record hash and its audit path give the
//! batch root (RFC 6962 tree, `backbone_hsm::batch::merkle`); the batch root's imprint
//! `01 ‖ root` is covered by a KSI signature. The portal checks both, the signature under the
//! internal policy and, when it is given the calendar's certificates or a publications file, the
//! key-based or publications-file policy. The download is the KSI signature itself: with the
//! imprint shown beside it, `backbone ksi verify access.ksig --hash 01<root>` checks it offline.

use backbone_gateway::usage::{ProofJson, RecordRef};
use backbone_hsm::batch::merkle;
use backbone_timestamping_verify::imprint::Imprint;
use backbone_timestamping_verify::publications_file::{CertificateRecord, TrustedPublicationsFile};
use backbone_timestamping_verify::signature::Signature;
use backbone_timestamping_verify::verify::{self, Context, Outcome, Policy};
use base64::Engine as _;

/// What the portal trusts besides the signature itself.
#[derive(Clone, Debug, Default)]
pub struct Trust {
    /// Calendar signing certificates trusted directly (key-based policy).
    pub certificates: Vec<CertificateRecord>,
    /// A publications file whose signature was checked (publications-file policy, falling back
    /// to key-based).
    pub publications: Option<TrustedPublicationsFile>,
}

/// A record's integrity as the portal found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Integrity {
    /// The path gives the root and the KSI signature verifies under the named policy.
    Verified {
        /// The policy that decided.
        policy: &'static str,
    },
    /// Not timestamped yet.
    NotStamped,
    /// A check failed.
    Failed(String),
}

/// Checks one record's proof.
pub fn check(record: &RecordRef, proof: Option<&ProofJson>, trust: &Trust) -> Integrity {
    let Some(proof) = proof else {
        return Integrity::NotStamped;
    };
    match check_proof(record, proof, trust) {
        Ok(policy) => Integrity::Verified { policy },
        Err(reason) => Integrity::Failed(reason),
    }
}

/// The overall integrity of several records of one access: failed if any failed, verified if
/// any verified, else not stamped.
pub fn overall(each: &[Integrity]) -> Integrity {
    if let Some(failed) = each.iter().find(|i| matches!(i, Integrity::Failed(_))) {
        return failed.clone();
    }
    each.iter()
        .find(|i| matches!(i, Integrity::Verified { .. }))
        .cloned()
        .unwrap_or(Integrity::NotStamped)
}

/// The KSI signature's bytes.
///
/// # Errors
///
/// A message when the base64 does not decode.
pub fn signature_bytes(proof: &ProofJson) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(&proof.ksi_signature)
        .map_err(|e| format!("signature is not base64: {e}"))
}

/// The imprint the signature covers, hex: `01` and the batch root.
pub fn imprint_hex(proof: &ProofJson) -> String {
    format!("01{}", proof.root)
}

fn check_proof(
    record: &RecordRef,
    proof: &ProofJson,
    trust: &Trust,
) -> Result<&'static str, String> {
    let hash = hash32(&record.hash)?;
    let path = proof
        .path
        .iter()
        .map(|p| hash32(p))
        .collect::<Result<Vec<_>, _>>()?;
    let root = merkle::root_from_path(
        &merkle::leaf_hash(&hash),
        proof.leaf_index,
        proof.batch_count,
        &path,
    )
    .ok_or_else(|| {
        format!(
            "the audit path does not fit leaf {} of {}",
            proof.leaf_index, proof.batch_count
        )
    })?;
    if backbone_gateway::usage::hex(&root) != proof.root.to_ascii_lowercase() {
        return Err("the record and its audit path do not give the batch root".into());
    }
    let signature = Signature::decode(&signature_bytes(proof)?)
        .map_err(|e| format!("KSI signature does not decode: {e}"))?;
    let mut imprint = vec![1u8];
    imprint.extend_from_slice(&root);
    let imprint = Imprint::from_bytes(&imprint).map_err(|e| format!("imprint: {e}"))?;
    let context = Context {
        document_hash: Some(&imprint),
        publications_file: trust.publications.as_ref(),
        trusted_certificates: &trust.certificates,
        ..Context::default()
    };
    let (policy, name) = match (&trust.publications, trust.certificates.is_empty()) {
        (Some(_), _) => (Policy::Default, "publications file or key-based"),
        (None, false) => (Policy::KeyBased, "key-based"),
        (None, true) => (Policy::Internal, "internal"),
    };
    let verdict = verify::verify(&signature, policy, &context);
    if verdict.outcome == Outcome::Ok {
        return Ok(name);
    }
    let code = verdict.code.map(|c| c.as_str()).unwrap_or("?");
    Err(format!(
        "KSI signature {} under the {name} policy: {code} ({})",
        match verdict.outcome {
            Outcome::Ok => "verifies",
            Outcome::Fail => "fails",
            Outcome::Na => "is inconclusive",
        },
        verdict.rule
    ))
}

fn hash32(hex: &str) -> Result<[u8; 32], String> {
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(format!(
            "{:?} is not a SHA-256 hash in hex",
            hex.chars().take(70).collect::<String>()
        ));
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        let pair = hex.get(2 * i..2 * i + 2).ok_or("short hash")?;
        *byte = u8::from_str_radix(pair, 16).map_err(|_| format!("{pair:?} is not hex"))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unstamped_and_malformed_proofs_are_named() {
        let record = RecordRef {
            seq: 1,
            hash: "00".repeat(32),
        };
        assert_eq!(
            check(&record, None, &Trust::default()),
            Integrity::NotStamped
        );
        let proof = ProofJson {
            batch: 1,
            leaf_index: 0,
            batch_count: 1,
            path: vec![],
            root: "11".repeat(32),
            ksi_signature: "AAAA".into(),
        };
        assert!(matches!(
            check(&record, Some(&proof), &Trust::default()),
            Integrity::Failed(_)
        ));
        let bad = RecordRef {
            seq: 1,
            hash: "zz".repeat(32),
        };
        assert!(matches!(
            check(&bad, Some(&proof), &Trust::default()),
            Integrity::Failed(_)
        ));
        assert_eq!(imprint_hex(&proof), format!("01{}", "11".repeat(32)));
        assert_eq!(
            overall(&[
                Integrity::NotStamped,
                Integrity::Verified { policy: "internal" }
            ]),
            Integrity::Verified { policy: "internal" }
        );
        assert!(matches!(
            overall(&[
                Integrity::Verified { policy: "internal" },
                Integrity::Failed("x".into())
            ]),
            Integrity::Failed(_)
        ));
    }
}
