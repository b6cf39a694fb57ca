//! The public KSI conformance pack (guardtime/libksi `test/resource/test_pack`), run as ordinary
//! tests: one test per folder, every CSV row checked, all mismatches reported together.
//!
//! The pack lives in `testdata/ksi-test-pack` in this crate; its README
//! explains the columns. Publications files are judged at their own creation time (the default
//! file's signing certificate has since expired), with `publications-file-trust-anchor.pem` and
//! the row's `cert_file` as trust anchors and partial chains allowed. Extender responses are
//! HMAC-checked with the pack's key, `anon`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use backbone_timestamping_verify::HashAlgorithm;
use backbone_timestamping_verify::chain;
use backbone_timestamping_verify::imprint::Imprint;
use backbone_timestamping_verify::pdu::ExtenderResponse;
use backbone_timestamping_verify::publication::PublicationData;
use backbone_timestamping_verify::publications_file::{
    PublicationsFile, TrustAnchors, TrustedPublicationsFile,
};
use backbone_timestamping_verify::signature::{CalendarChain, Signature};
use backbone_timestamping_verify::verify::{self, Code, Context, Outcome, Policy};

/// The conformance pack in this crate's `testdata/`. The manifest directory is read when the test runs,
/// not when it is compiled, so that a build cache shared between checkouts finds the right pack.
fn pack() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest.join("testdata/ksi-test-pack")
}
const DEFAULT_PUBLICATIONS_FILE: &str =
    "policy-verification-signatures/resources/publications-file.bin";
const TRUST_ANCHOR: &str =
    "policy-verification-signatures/resources/publications-file-trust-anchor.pem";
const EXTENDER_KEY: &[u8] = b"anon";

/// Rows written against Guardtime's live extender (calendar policy, or a policy that must
/// extend, with no `response_file`). Offline there is no calendar chain to compare with, so a
/// conforming verifier reports NA with GEN-02, and so does this one: the rows are checked for
/// exactly that, and counted as skipped.
const NEEDS_LIVE_EXTENDER: &[(&str, &str, &str)] = &[
    (
        "valid-signatures",
        "rfc3161-signature-only-rfc3161-and-aggregation-chains.ksig",
        "calendar policy extends to the calendar head",
    ),
    (
        "valid-signatures",
        "signature-one-aggregation-chain-and-chc.ksig",
        "calendar policy extends to the signature's publication time",
    ),
    (
        "valid-signatures",
        "signature-no-calendar-auth-and-publication-record.ksig",
        "calendar policy extends to the signature's publication time",
    ),
    (
        "valid-signatures",
        "signature-only-aggregation-chains.ksig",
        "calendar policy extends to the calendar head",
    ),
    (
        "policy-verification-signatures",
        "policy-verification-signature-other-core-signature-signature-extended.ksig",
        "expects CAL-01 from a live calendar",
    ),
    (
        "policy-verification-signatures",
        "policy-verification-signature-other-core-signature-with-no-calendar-CAL-02.ksig",
        "expects CAL-02 from a live calendar",
    ),
    (
        "policy-verification-signatures",
        "policy-verification-signature-other-core-signature.ksig",
        "expects CAL-02 from a live calendar (calendar policy row)",
    ),
    (
        "policy-verification-signatures",
        "policy-verification-signature-calendar-input-hashes-do-not-match-PUB-03.ksig",
        "expects PUB-03 after extending to the user publication",
    ),
];

#[test]
fn valid_signatures() {
    run_folder("valid-signatures");
}

#[test]
fn invalid_signatures() {
    run_folder("invalid-signatures");
}

#[test]
fn internal_policy_signatures() {
    run_folder("internal-policy-signatures");
}

#[test]
fn policy_verification_signatures() {
    run_folder("policy-verification-signatures");
}

/// One CSV row, by column.
struct Row {
    file: String,
    policy: String,
    code: String,
    level: u8,
    document_hash: String,
    calendar_input: String,
    calendar_output: String,
    aggregation_time: String,
    publication_time: String,
    publication_string: String,
    extending_permitted: bool,
    response_file: String,
    publications_file: String,
    cert_file: String,
}

#[derive(Default)]
struct Tally {
    passed: usize,
    skipped: Vec<String>,
    mismatches: Vec<String>,
}

fn run_folder(folder: &str) {
    let dir = pack().join(folder);
    let csv = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("conformance pack not found at {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "csv"))
        .expect("a CSV in the folder");
    let mut files = Files::default();
    let mut tally = Tally::default();
    for (line, text) in fs::read_to_string(&csv).unwrap().lines().enumerate() {
        if text.starts_with('#') || text.trim().is_empty() {
            continue;
        }
        let row = parse_row(text);
        let name = format!("{folder}/{} [{}] line {}", row.file, row.policy, line + 1);
        match check_row(&dir, folder, &row, &mut files) {
            Ok(RowResult::Passed) => tally.passed += 1,
            Ok(RowResult::Skipped(why)) => tally.skipped.push(format!("{name}: {why}")),
            Err(why) => tally.mismatches.push(format!("{name}: {why}")),
        }
    }
    println!(
        "{folder}: {} rows passed, {} skipped, {} failed",
        tally.passed,
        tally.skipped.len(),
        tally.mismatches.len()
    );
    for s in &tally.skipped {
        println!("  skipped: {s}");
    }
    for m in &tally.mismatches {
        println!("  MISMATCH: {m}");
    }
    assert!(
        tally.mismatches.is_empty(),
        "{} of the {folder} rows do not conform:\n{}",
        tally.mismatches.len(),
        tally.mismatches.join("\n")
    );
}

enum RowResult {
    Passed,
    Skipped(String),
}

fn parse_row(text: &str) -> Row {
    let c: Vec<&str> = text.split(';').map(str::trim).collect();
    let col = |i: usize| c.get(i).copied().unwrap_or_default().to_owned();
    Row {
        file: col(0),
        policy: col(1),
        code: col(2),
        level: col(4).parse().unwrap_or(0),
        document_hash: col(5),
        calendar_input: col(6),
        calendar_output: col(7),
        aggregation_time: col(8),
        publication_time: col(9),
        publication_string: col(10),
        extending_permitted: col(11) == "true",
        response_file: col(12),
        publications_file: col(13),
        cert_file: col(14),
    }
}

fn check_row(dir: &Path, folder: &str, row: &Row, files: &mut Files) -> Result<RowResult, String> {
    let bytes = fs::read(dir.join(&row.file)).map_err(|e| format!("cannot read: {e}"))?;
    match row.policy.as_str() {
        "not-implemented" => {
            return Ok(RowResult::Skipped(
                "marked not-implemented in the pack".into(),
            ));
        }
        "parsing" => {
            return match Signature::decode(&bytes) {
                Err(_) => Ok(RowResult::Passed),
                Ok(_) => Err("decoded, but must fail to parse".into()),
            };
        }
        _ => {}
    }
    let signature = Signature::decode(&bytes).map_err(|e| format!("does not decode: {e}"))?;
    let policy = match row.policy.as_str() {
        "internal" => Policy::Internal,
        "calendar" => Policy::Calendar,
        "key" => Policy::KeyBased,
        "publicationsFile" => Policy::PublicationsFile,
        "userPublication" => Policy::UserPublication,
        other => return Err(format!("unknown policy {other}")),
    };
    let document_hash = (!row.document_hash.is_empty())
        .then(|| imprint(&row.document_hash))
        .transpose()?;
    let user_publication = (policy == Policy::UserPublication
        && !row.publication_string.is_empty())
    .then(|| {
        PublicationData::from_publication_string(&row.publication_string).map_err(|e| e.to_string())
    })
    .transpose()?;
    let extended = (!row.response_file.is_empty())
        .then(|| extender_chain(&dir.join(&row.response_file)))
        .transpose()?;
    let publications_file = files.get(dir, row)?;
    let context = Context {
        document_hash: document_hash.as_ref(),
        input_level: row.level,
        publications_file: Some(publications_file),
        user_publication: user_publication.as_ref(),
        extending_permitted: row.extending_permitted,
        extended_calendar: extended.as_ref(),
        trusted_certificates: &[],
    };
    let verdict = verify::verify(&signature, policy, &context);

    let live = NEEDS_LIVE_EXTENDER.iter().find(|(f, file, _)| {
        *f == folder
            && *file == row.file
            && row.response_file.is_empty()
            && needs_extender(policy, row)
    });
    let expected = match (live, row.code.as_str()) {
        (Some(_), _) => (Outcome::Na, Some(Code::Gen02)),
        (None, "") => (Outcome::Ok, None),
        (None, "GEN-02") => (Outcome::Na, Some(Code::Gen02)),
        (None, code) => (
            Outcome::Fail,
            Some(Code::parse(code).ok_or(format!("unknown code {code}"))?),
        ),
    };
    if (verdict.outcome, verdict.code) != expected {
        return Err(format!(
            "expected {:?} {:?}, got {verdict}",
            expected.0,
            expected.1.map(Code::as_str)
        ));
    }
    if let Some((_, _, why)) = live {
        return Ok(RowResult::Skipped(format!(
            "needs the live KSI extender ({why}); NA GEN-02 as required"
        )));
    }
    if expected.0 == Outcome::Ok {
        check_expected_values(&signature, row)?;
    }
    Ok(RowResult::Passed)
}

fn needs_extender(policy: Policy, row: &Row) -> bool {
    policy == Policy::Calendar || row.code == "PUB-03"
}

/// The CSV's expected calendar input and output, times and publication string.
fn check_expected_values(signature: &Signature, row: &Row) -> Result<(), String> {
    let calendar = signature.calendar_chain();
    let chains = signature.aggregation_chains();
    let first_input = &chains.first().ok_or("no chains")?.input_hash;
    let (output, _) = chain::aggregate_all(chains, first_input).map_err(|e| e.to_string())?;
    if !row.calendar_input.is_empty() && output != imprint(&row.calendar_input)? {
        return Err(format!(
            "aggregation output {output} is not the expected calendar input {}",
            row.calendar_input
        ));
    }
    if !row.aggregation_time.is_empty()
        && signature.signing_time().to_string() != row.aggregation_time
    {
        return Err(format!(
            "aggregation time {} is not {}",
            signature.signing_time(),
            row.aggregation_time
        ));
    }
    let Some(calendar) = calendar else {
        return Ok(());
    };
    let root = chain::calendar_root(calendar).map_err(|e| e.to_string())?;
    if !row.calendar_output.is_empty() && root != imprint(&row.calendar_output)? {
        return Err(format!(
            "calendar root {root} is not {}",
            row.calendar_output
        ));
    }
    if !row.publication_time.is_empty()
        && calendar.publication_time.to_string() != row.publication_time
    {
        return Err(format!(
            "publication time {} is not {}",
            calendar.publication_time, row.publication_time
        ));
    }
    let published = PublicationData::new(calendar.publication_time, root).to_publication_string();
    if !row.publication_string.is_empty()
        && !row.calendar_output.is_empty()
        && published != row.publication_string
    {
        return Err(format!(
            "publication string {published} is not {}",
            row.publication_string
        ));
    }
    Ok(())
}

fn imprint(hex: &str) -> Result<Imprint, String> {
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or(format!("bad hex {hex}"))?;
    Imprint::from_bytes(&bytes).map_err(|e| e.to_string())
}

fn extender_chain(path: &Path) -> Result<CalendarChain, String> {
    let bytes = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let response = ExtenderResponse::decode(&bytes).map_err(|e| e.to_string())?;
    response
        .check_mac(EXTENDER_KEY, HashAlgorithm::Sha256)
        .map_err(|e| e.to_string())?;
    let payload = response.payload(1).ok_or("no response to request 1")?;
    payload.chain().cloned().map_err(|e| e.to_string())
}

/// Publications files, verified once per (file, extra anchor).
#[derive(Default)]
struct Files {
    verified: HashMap<(PathBuf, Option<PathBuf>), TrustedPublicationsFile>,
}

impl Files {
    fn get(&mut self, dir: &Path, row: &Row) -> Result<&TrustedPublicationsFile, String> {
        let file = match row.publications_file.as_str() {
            "" => pack().join(DEFAULT_PUBLICATIONS_FILE),
            relative => dir.join(relative),
        };
        let cert = (!row.cert_file.is_empty()).then(|| dir.join(&row.cert_file));
        let key = (file.clone(), cert.clone());
        if !self.verified.contains_key(&key) {
            let mut anchors = TrustAnchors::from_pem(
                &fs::read(pack().join(TRUST_ANCHOR)).map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?;
            if let Some(cert) = &cert {
                anchors
                    .add_pem(&fs::read(cert).map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
            }
            let parsed =
                PublicationsFile::parse_unverified(&fs::read(&file).map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
            // Judge the file's signature at the file's own creation time (see the pack README).
            let at = i64::try_from(parsed.created).map_err(|e| e.to_string())?;
            let trusted = parsed
                .verify(&anchors, at)
                .map_err(|e| format!("{}: {e}", file.display()))?;
            self.verified.insert(key.clone(), trusted);
        }
        self.verified.get(&key).ok_or_else(|| "cache".to_owned())
    }
}
