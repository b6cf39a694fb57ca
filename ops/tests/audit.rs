//! `backbone audit export|verify` on the logs of real gateways: a registry, a timestamping
//! service and two `backbone gateway serve` processes exchange a few messages and stop; two
//! consecutive time ranges are exported, verify, and chain; then each kind of tampering is caught
//! and names the record (or batch) it touched.
// Helpers outside #[test] functions: a test fixture that fails loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backbone_gateway::log::archive::Archive;
use backbone_gateway::log::record::Record;
use common::backbone::{
    self, Agency, DISPENSING, PATIENTS, echo_service, exchange, ok, wait_for_exchange,
};
use common::{Killed, command};

/// The calendar's signing certificate, for the key-based KSI policy.
const CALENDAR_CERT: &str = "ts/calendar-cert.der";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `backbone audit export --data-dir DATA ARGS` with `agency`'s keys: exit code, stdout, stderr.
fn export(agency: &Agency, dir: &Path, args: &[&str]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = command(dir)
        .env("BACKBONE_HSM__KEY_DIR", &agency.keys)
        .args(["audit", "export", "--data-dir"])
        .arg(&agency.data)
        .args(args)
        .output()
        .unwrap();
    (
        status.code().unwrap(),
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

/// Stops a gateway as an operator does (SIGTERM: it stamps what is left and exits).
fn stop(gateway: &mut Killed) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &gateway.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while gateway.0.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the gateway did not stop within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `backbone audit verify ARGS --json`: exit code and the result object.
fn verify(dir: &Path, args: &[&str]) -> (i32, serde_json::Value) {
    let Output {
        status,
        stdout,
        stderr,
    } = command(dir)
        .args(["audit", "verify", "--cert", CALENDAR_CERT, "--json"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8(stdout).unwrap();
    let value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{e}: {text} / {}", String::from_utf8_lossy(&stderr)));
    (status.code().unwrap(), value)
}

/// Verifies `archive` (written to `name`), expects failure, and returns every failure message.
fn failures(dir: &Path, name: &str, archive: &[u8], extra: &[&str]) -> Vec<String> {
    std::fs::write(dir.join(name), archive).unwrap();
    let (code, result) = verify(dir, &[&[name][..], extra].concat());
    assert_eq!(code, 1, "{name} verified: {result}");
    assert_eq!(result["result"], "FAIL");
    result["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["message"].as_str().unwrap().to_owned())
        .collect()
}

fn assert_named(failures: &[String], prefix: &str, reason: &str) {
    assert!(
        failures
            .iter()
            .any(|f| f.starts_with(prefix) && f.contains(reason)),
        "no failure {prefix:?} ... {reason:?} in {failures:#?}"
    );
}

#[test]
fn archives_of_real_gateways_verify_chain_and_name_every_tampered_record() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let network = backbone::start(dir);
    let (hospital, pharmacy, ts_addr) =
        (&network.hospital, &network.pharmacy, &network.timestamping);
    let service = echo_service();
    hospital.run(
        dir,
        &[
            "grant",
            PATIENTS,
            "--client",
            DISPENSING,
            "--method",
            "GET",
            "--path",
            "/Patient/*",
        ],
    );
    let mut hospital_gw = hospital
        .serve(
            dir,
            ts_addr,
            &[format!("{PATIENTS}=http://{service}/fhir")],
            200,
        )
        .0;
    let mut pharmacy_gw = pharmacy.serve(dir, ts_addr, &[], 200).0;
    let system = pharmacy.system(dir, DISPENSING);
    wait_for_exchange(&system);

    // Two stretches of exchanges, each stamped in its own batches, with a time between them
    // (a stamp waits for the timestamping service's one-second round).
    for n in 0..4 {
        assert_eq!(exchange(&system, &format!("first-{n}")), Some(200));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let between = now_ms();
    std::thread::sleep(Duration::from_millis(100));
    for n in 0..6 {
        assert_eq!(exchange(&system, &format!("second-{n}")), Some(200));
        if n == 2 {
            std::thread::sleep(Duration::from_millis(1500));
        }
    }

    // While a gateway runs, its log cannot be exported, and the operator is told why.
    let (code, _, stderr) = export(pharmacy, dir, &["--out", "busy.bbar"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("stop the gateway"), "{stderr}");
    stop(&mut pharmacy_gw);
    stop(&mut hospital_gw);

    // Two consecutive ranges: up to `between`, and from there on (chained with --after).
    let (code, out, stderr) = export(
        pharmacy,
        dir,
        &["--to", &between.to_string(), "--out", "first.bbar"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        out.contains("wrote first.bbar: gateway EE/COM/10000001/gw1, records 0.."),
        "{out}"
    );
    let (code, _, stderr) = export(
        pharmacy,
        dir,
        &["--after", "first.bbar", "--out", "second.bbar"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("not timestamped"), "{stderr}");
    let first = Archive::decode(&std::fs::read(dir.join("first.bbar")).unwrap()).unwrap();
    let second_bytes = std::fs::read(dir.join("second.bbar")).unwrap();
    let second = Archive::decode(&second_bytes).unwrap();
    assert_eq!(second.first_seq, first.end_seq);
    assert_eq!(second.prev_hash, first.last_hash);
    assert!(
        first.records.len() >= 10 && second.records.len() == 12,
        "{} and {}",
        first.records.len(),
        second.records.len()
    );
    assert!(
        second.batches.len() >= 2,
        "{} batches",
        second.batches.len()
    );
    // The same cut by time alone: --from the first range's end starts where --after does.
    let (code, _, stderr) = export(
        pharmacy,
        dir,
        &["--from", &between.to_string(), "--out", "by-time.bbar"],
    );
    assert_eq!(code, 0, "{stderr}");
    let by_time = Archive::decode(&std::fs::read(dir.join("by-time.bbar")).unwrap()).unwrap();
    assert_eq!(
        (by_time.first_seq, by_time.end_seq),
        (second.first_seq, second.end_seq)
    );

    let (code, result) = verify(dir, &["first.bbar"]);
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["result"], "OK");
    assert_eq!(result["ksi_policy"], "key-based");
    assert_eq!(result["stamped"], result["records"]);
    let (code, result) = verify(dir, &["second.bbar", "--previous", "first.bbar"]);
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["previous"]["linked"], true);
    assert_eq!(result["responses_bound"], 6);
    assert_eq!(result["signatures_verified"], 12);
    // The provider's side: requests signed by the pharmacy, responses by the hospital.
    let (code, _, stderr) = export(hospital, dir, &["--out", "hospital.bbar"]);
    assert_eq!(code, 0, "{stderr}");
    let (code, result) = verify(dir, &["hospital.bbar"]);
    assert_eq!(code, 0, "{result}");
    assert!(
        result["responses_bound"].as_u64().unwrap() >= 10,
        "{result}"
    );
    // Text output, for people.
    let text = ok(
        dir,
        &["audit", "verify", "second.bbar", "--previous", "first.bbar"],
    );
    assert!(
        text.contains("continues first.bbar") && text.trim_end().ends_with("OK"),
        "{text}"
    );

    let s = second.first_seq;
    let record_at =
        |archive: &Archive, i: usize| Record::decode(&archive.records[i].encoded).unwrap();

    // A byte flipped in a record, the archive resealed: the record's proof names it, and the
    // next record's link names it too.
    let mut flipped = second.clone();
    let last = flipped.records[1].encoded.len() - 1;
    flipped.records[1].encoded[last] ^= 1;
    let found = failures(dir, "flipped.bbar", &flipped.encode().unwrap(), &[]);
    let id = record_at(&second, 1).message_id;
    assert_named(
        &found,
        &format!("record {} (message id {id})", s + 1),
        "proof does not lead to the root",
    );
    assert_named(&found, &format!("record {}", s + 2), "prev_hash");
    // The same flip in the file, not resealed: the digest fails as well.
    let mut raw = second_bytes.clone();
    let at = raw
        .windows(second.records[1].encoded.len())
        .position(|w| w == second.records[1].encoded.as_slice())
        .unwrap()
        + last;
    raw[at] ^= 1;
    let found = failures(dir, "raw.bbar", &raw, &[]);
    assert_named(&found, "archive", "SHA-256 does not match");
    assert_named(&found, &format!("record {}", s + 1), "proof does not lead");

    // A record removed.
    let mut removed = second.clone();
    removed.records.remove(3);
    let found = failures(dir, "removed.bbar", &removed.encode().unwrap(), &[]);
    assert_named(&found, &format!("record {}", s + 3), "is missing");

    // KSI signatures swapped between two batches.
    let mut swapped = second.clone();
    let other = swapped.batches[1].ksi_signature.clone();
    swapped.batches[1].ksi_signature = swapped.batches[0].ksi_signature.clone();
    swapped.batches[0].ksi_signature = other;
    let found = failures(dir, "swapped.bbar", &swapped.encode().unwrap(), &[]);
    let batch = &second.batches[0];
    assert_named(
        &found,
        &format!("batch {} (records {}..", batch.first_seq, batch.first_seq),
        "KSI signature does not verify",
    );

    // A forged descriptor signature (its last byte, in the member's signature over the root).
    let mut forged = second.clone();
    let mut record = record_at(&second, 4);
    let last = record.signature.len() - 1;
    record.signature[last] ^= 1;
    forged.records[4].encoded = record.encode().unwrap();
    let found = failures(dir, "forged.bbar", &forged.encode().unwrap(), &[]);
    assert_named(
        &found,
        &format!("record {} (message id {})", s + 4, record.message_id),
        "descriptor signature: ",
    );

    // A signer certificate swapped for another one in the archive (the records name theirs by
    // SHA-256): every record it signed is named.
    let mut recertified = second.clone();
    let mut other = recertified.certificates[0].clone();
    let last = other.len() - 1;
    other[last] ^= 1;
    recertified.certificates[0] = other;
    let found = failures(dir, "recertified.bbar", &recertified.encode().unwrap(), &[]);
    assert_named(
        &found,
        "record ",
        "its signer certificate is not among the archive's certificates",
    );

    // Chained to the wrong previous archive: one that ends earlier, and one whose last record was
    // changed and resealed.
    let mut shorter = first.clone();
    shorter.records.pop();
    shorter.end_seq -= 1;
    std::fs::write(dir.join("shorter.bbar"), shorter.encode().unwrap()).unwrap();
    let found = failures(
        dir,
        "second-again.bbar",
        &second_bytes,
        &["--previous", "shorter.bbar"],
    );
    assert_named(
        &found,
        &format!("record {s}"),
        "the previous archive ends before record",
    );
    let mut other = first.clone();
    other.last_hash[0] ^= 1;
    std::fs::write(dir.join("other.bbar"), other.encode().unwrap()).unwrap();
    let found = failures(
        dir,
        "second-again.bbar",
        &second_bytes,
        &["--previous", "other.bbar"],
    );
    assert_named(
        &found,
        &format!("record {s}"),
        "does not link to the previous archive",
    );

    // Hostile bytes are refused with a reason, not a crash.
    let found = failures(
        dir,
        "garbage.bbar",
        &[&b"BBAR\x01\xff\xff\xff\xff"[..], &[0x55; 64]].concat(),
        &[],
    );
    assert_named(&found, "archive", "does not decode");
}
