//! `backbone timestamping serve` as a real process: sign with `backbone ksi sign`, verify with
//! `backbone ksi verify`, `kill -9` the service, restart it on the same data directory, and check
//! that the calendar continues without a gap or a fork and earlier signatures still verify.
// Helpers outside #[test] functions: a test fixture that fails loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use backbone_timestamping::client;
use backbone_timestamping_verify::Signature;
use backbone_timestamping_verify::chain;

fn command(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_backbone"));
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("BACKBONE_HSM__KEY_DIR", dir.join("keys"))
        .env("BACKBONE_TELEMETRY__LOG_FILTER", "warn");
    command
}

/// Starts the service and returns it with the address it printed.
fn serve(dir: &Path) -> (Child, SocketAddr) {
    let mut child = command(dir)
        .args(["timestamping", "serve", "--listen", "127.0.0.1:0", "--data-dir", "data"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    (child, addr.parse().unwrap())
}

fn run(dir: &Path, args: &[&str]) -> (i32, String) {
    let Output { status, stdout, stderr } = command(dir).args(args).output().unwrap();
    eprintln!("{}", String::from_utf8_lossy(&stderr));
    (status.code().unwrap(), String::from_utf8(stdout).unwrap())
}

#[test]
fn sign_verify_kill_restart_no_gap_no_fork() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    std::fs::write(dir.join("referral.txt"), b"referral for patient 4711").unwrap();
    let (mut first, addr) = serve(dir);

    let (code, _) = run(dir, &["ksi", "sign", "referral.txt", "--service", &addr.to_string()]);
    assert_eq!(code, 0);
    let cert = "data/calendar-cert.der";
    for policy in ["internal", "key"] {
        let (code, out) = run(dir, &["ksi", "verify", "referral.txt.ksig", "--document", "referral.txt", "--policy", policy, "--cert", cert, "--json"]);
        assert_eq!(code, 0, "{policy}: {out}");
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json["result"], "OK");
        assert!(json["aggregation_time"].as_u64().unwrap() > 1_700_000_000);
    }
    std::fs::write(dir.join("other.txt"), b"another document").unwrap();
    let (code, out) = run(dir, &["ksi", "verify", "referral.txt.ksig", "--document", "other.txt", "--policy", "internal", "--json"]);
    assert_eq!(code, 1);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((json["result"].as_str(), json["code"].as_str()), (Some("FAIL"), Some("GEN-01")));

    // kill -9 while it runs; restart on the same data directory.
    first.kill().unwrap();
    first.wait().unwrap();
    let before = Signature::decode(&std::fs::read(dir.join("referral.txt.ksig")).unwrap()).unwrap();
    let (mut second, addr) = serve(dir);
    let (code, _) = run(dir, &["ksi", "sign", "referral.txt", "--service", &addr.to_string(), "--out", "again.ksig"]);
    assert_eq!(code, 0);
    let after = Signature::decode(&std::fs::read(dir.join("again.ksig")).unwrap()).unwrap();
    assert!(after.signing_time() > before.signing_time(), "the calendar moves forward");

    // No fork: the first leaf, extended to the new head, reaches the root the new signature's
    // record signs, and shares the left siblings of the old chain.
    let extended = client::extend(addr, before.signing_time()).unwrap();
    assert_eq!(extended.input_hash, before.calendar_chain().unwrap().input_hash);
    assert!(chain::right_links_match(before.calendar_chain().unwrap(), &extended));
    let head_root = chain::calendar_root(&extended).unwrap();
    if extended.publication_time == after.signing_time() {
        assert_eq!(head_root, after.calendar_auth_record().unwrap().publication.hash);
    }
    assert_eq!(chain::calendar_aggregation_time(extended.publication_time, &extended.links), Some(before.signing_time()));

    // The earlier signature still verifies, internally and by key.
    for policy in ["internal", "key"] {
        let (code, out) = run(dir, &["ksi", "verify", "referral.txt.ksig", "--document", "referral.txt", "--policy", policy, "--cert", cert]);
        assert_eq!(code, 0, "{policy}: {out}");
    }
    second.kill().unwrap();
    second.wait().unwrap();
}

/// The RFC 3161 front end of the real process: `openssl ts` makes the request and verifies the
/// reply against the CA the service wrote; `backbone ksi tsa-proof` fetches the keyless signature
/// that covers the token, which `backbone ksi verify` accepts by key; the publications file the
/// service keeps is the one it serves (its signature is checked in timestamping/tests).
#[test]
fn rfc3161_token_its_keyless_proof_and_the_publications_file() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    std::fs::write(dir.join("document.txt"), b"dispensing record 2026-11-26").unwrap();
    let (mut service, addr) = serve(dir);
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl").current_dir(dir).args(args).output().unwrap();
        eprintln!("openssl {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr));
        output.status.success()
    };
    assert!(openssl(&["ts", "-query", "-data", "document.txt", "-sha256", "-cert", "-out", "req.tsq"]));
    let query = std::fs::read(dir.join("req.tsq")).unwrap();
    let reply = client::call_with_type(addr, "POST", "/tsa", "application/timestamp-query", &query).unwrap();
    std::fs::write(dir.join("reply.tsr"), &reply).unwrap();
    assert!(openssl(&["ts", "-verify", "-in", "reply.tsr", "-queryfile", "req.tsq", "-CAfile", "data/calendar-ca-cert.pem"]));
    assert!(dir.join("data/tsa-cert.pem").exists());

    let (code, out) = run(dir, &["ksi", "tsa-proof", "reply.tsr", "--service", &addr.to_string()]);
    assert_eq!(code, 0, "{out}");
    let args = ["ksi", "verify", "reply.tsr.ksig", "--document", "reply.tsr.token", "--policy", "key", "--cert", "data/calendar-cert.der"];
    let (code, out) = run(dir, &args);
    assert_eq!(code, 0, "{out}");
    // The proof is of the token, not of another file.
    let (code, _) = run(dir, &["ksi", "verify", "reply.tsr.ksig", "--document", "document.txt", "--policy", "internal"]);
    assert_eq!(code, 1);

    // The publications file, signed with the publications key under the same CA.
    let file = std::fs::read(dir.join("data/ksi-publications.bin")).unwrap();
    assert!(file.starts_with(b"KSIPUBLF"));
    assert_eq!(client::call(addr, "GET", "/publications.bin", &[]).unwrap(), file);
    service.kill().unwrap();
    service.wait().unwrap();
}
