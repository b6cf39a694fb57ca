//! `backbone timestamping serve` as a real process: sign with `backbone ksi sign`, verify with
//! `backbone ksi verify`, `kill -9` the service, restart it on the same data directory, and check
//! that the calendar continues without a gap or a fork and earlier signatures still verify;
//! extend signatures to a publication with `backbone ksi extend` and verify them under the
//! publications-file and user-publication policies; `kill -9` under concurrent signing; a child
//! aggregator process (`--parent`) whose signatures verify against the parent's certificate,
//! which fails clearly while its parent is down and signs again once it is back.
// Helpers outside #[test] functions: a test fixture that fails loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::command;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backbone_timestamping::authority::certificate_id;
use backbone_timestamping::client;
use backbone_timestamping::http::PublicationJson;
use backbone_timestamping_verify::Signature;
use backbone_timestamping_verify::chain;
use backbone_timestamping_verify::imprint::{HashAlgorithm, Imprint};
use backbone_timestamping_verify::publications_file::CertificateRecord;
use backbone_timestamping_verify::verify::{self, Context, Outcome, Policy};

/// The e-mail address the service puts in the publications signer's certificate by default.
const SIGNER_EMAIL: &str = "publications@backbone.invalid";

/// Starts the service and returns it with the address it printed.
fn serve(dir: &Path) -> (Child, SocketAddr) {
    serve_with(dir, &[])
}

/// Starts the service with extra flags.
fn serve_with(dir: &Path, extra: &[&str]) -> (Child, SocketAddr) {
    let mut args = vec!["--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    serve_on(dir, &args)
}

/// Starts `backbone timestamping serve --data-dir data` with `args` (which name `--listen`).
fn serve_on(dir: &Path, args: &[&str]) -> (Child, SocketAddr) {
    let mut child = command(dir)
        .args(["timestamping", "serve", "--data-dir", "data"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    (child, addr.parse().unwrap())
}

fn run(dir: &Path, args: &[&str]) -> (i32, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = command(dir).args(args).output().unwrap();
    eprintln!("{}", String::from_utf8_lossy(&stderr));
    (status.code().unwrap(), String::from_utf8(stdout).unwrap())
}

#[test]
fn sign_verify_kill_restart_no_gap_no_fork() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    std::fs::write(dir.join("referral.txt"), b"referral for patient 4711").unwrap();
    let (mut first, addr) = serve(dir);

    let (code, _) = run(
        dir,
        &[
            "ksi",
            "sign",
            "referral.txt",
            "--service",
            &addr.to_string(),
        ],
    );
    assert_eq!(code, 0);
    let cert = "data/calendar-cert.der";
    for policy in ["internal", "key"] {
        let (code, out) = run(
            dir,
            &[
                "ksi",
                "verify",
                "referral.txt.ksig",
                "--document",
                "referral.txt",
                "--policy",
                policy,
                "--cert",
                cert,
                "--json",
            ],
        );
        assert_eq!(code, 0, "{policy}: {out}");
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json["result"], "OK");
        assert!(json["aggregation_time"].as_u64().unwrap() > 1_700_000_000);
    }
    std::fs::write(dir.join("other.txt"), b"another document").unwrap();
    let (code, out) = run(
        dir,
        &[
            "ksi",
            "verify",
            "referral.txt.ksig",
            "--document",
            "other.txt",
            "--policy",
            "internal",
            "--json",
        ],
    );
    assert_eq!(code, 1);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (json["result"].as_str(), json["code"].as_str()),
        (Some("FAIL"), Some("GEN-01"))
    );

    // kill -9 while it runs; restart on the same data directory.
    first.kill().unwrap();
    first.wait().unwrap();
    let before = Signature::decode(&std::fs::read(dir.join("referral.txt.ksig")).unwrap()).unwrap();
    let (mut second, addr) = serve(dir);
    let (code, _) = run(
        dir,
        &[
            "ksi",
            "sign",
            "referral.txt",
            "--service",
            &addr.to_string(),
            "--out",
            "again.ksig",
        ],
    );
    assert_eq!(code, 0);
    let after = Signature::decode(&std::fs::read(dir.join("again.ksig")).unwrap()).unwrap();
    assert!(
        after.signing_time() > before.signing_time(),
        "the calendar moves forward"
    );

    // No fork: the first leaf, extended to the new head, reaches the root the new signature's
    // record signs, and shares the left siblings of the old chain.
    let extended = client::extend(addr, before.signing_time()).unwrap();
    assert_eq!(
        extended.input_hash,
        before.calendar_chain().unwrap().input_hash
    );
    assert!(chain::right_links_match(
        before.calendar_chain().unwrap(),
        &extended
    ));
    let head_root = chain::calendar_root(&extended).unwrap();
    if extended.publication_time == after.signing_time() {
        assert_eq!(
            head_root,
            after.calendar_auth_record().unwrap().publication.hash
        );
    }
    assert_eq!(
        chain::calendar_aggregation_time(extended.publication_time, &extended.links),
        Some(before.signing_time())
    );

    // The earlier signature still verifies, internally and by key.
    for policy in ["internal", "key"] {
        let (code, out) = run(
            dir,
            &[
                "ksi",
                "verify",
                "referral.txt.ksig",
                "--document",
                "referral.txt",
                "--policy",
                policy,
                "--cert",
                cert,
            ],
        );
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
        let output = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .unwrap();
        eprintln!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        output.status.success()
    };
    assert!(openssl(&[
        "ts",
        "-query",
        "-data",
        "document.txt",
        "-sha256",
        "-cert",
        "-out",
        "req.tsq"
    ]));
    let query = std::fs::read(dir.join("req.tsq")).unwrap();
    let reply = client::call_with_type(addr, "POST", "/tsa", "application/timestamp-query", &query)
        .unwrap();
    std::fs::write(dir.join("reply.tsr"), &reply).unwrap();
    assert!(openssl(&[
        "ts",
        "-verify",
        "-in",
        "reply.tsr",
        "-queryfile",
        "req.tsq",
        "-CAfile",
        "data/calendar-ca-cert.pem"
    ]));
    assert!(dir.join("data/tsa-cert.pem").exists());

    let (code, out) = run(
        dir,
        &[
            "ksi",
            "tsa-proof",
            "reply.tsr",
            "--service",
            &addr.to_string(),
        ],
    );
    assert_eq!(code, 0, "{out}");
    let args = [
        "ksi",
        "verify",
        "reply.tsr.ksig",
        "--document",
        "reply.tsr.token",
        "--policy",
        "key",
        "--cert",
        "data/calendar-cert.der",
    ];
    let (code, out) = run(dir, &args);
    assert_eq!(code, 0, "{out}");
    // The proof is of the token, not of another file.
    let (code, _) = run(
        dir,
        &[
            "ksi",
            "verify",
            "reply.tsr.ksig",
            "--document",
            "document.txt",
            "--policy",
            "internal",
        ],
    );
    assert_eq!(code, 1);

    // The publications file, signed with the publications key under the same CA.
    let file = std::fs::read(dir.join("data/ksi-publications.bin")).unwrap();
    assert!(file.starts_with(b"KSIPUBLF"));
    assert_eq!(
        client::call(addr, "GET", "/publications.bin", &[]).unwrap(),
        file
    );
    service.kill().unwrap();
    service.wait().unwrap();
}

/// A service process that is killed (SIGKILL) and reaped when dropped, also when a test panics.
struct Service {
    child: Option<Child>,
    addr: SocketAddr,
}

impl Service {
    /// Starts `backbone timestamping serve` publishing every `interval` seconds.
    fn start(dir: &Path, interval: u64) -> Service {
        let (child, addr) = serve_with(dir, &["--publication-interval", &interval.to_string()]);
        Service {
            child: Some(child),
            addr,
        }
    }

    /// `kill -9`, then reap.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls GET /publications/latest until there is a publication at or after `time`.
fn publication_at_or_after(addr: SocketAddr, time: u64) -> PublicationJson {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(p) = client::latest_publication(addr)
            .unwrap()
            .filter(|p| p.time >= time)
        {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "no publication at or after {time} within 20 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Fetches GET /publications.bin into `file` once it holds the publication at `time` (the
/// service rewrites the file just after it commits a publication).
fn fetch_publications_file(dir: &Path, addr: SocketAddr, time: u64, file: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let bytes = client::call(addr, "GET", "/publications.bin", &[]).unwrap();
        let parsed =
            backbone_timestamping_verify::PublicationsFile::parse_unverified(&bytes).unwrap();
        if parsed
            .publications
            .iter()
            .any(|p| p.publication.time == time)
        {
            std::fs::write(dir.join(file), &bytes).unwrap();
            return;
        }
        assert!(
            Instant::now() < deadline,
            "publication {time} not in the publications file within 10 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn verify_json(dir: &Path, args: &[&str]) -> (i32, serde_json::Value) {
    let mut all = vec!["ksi", "verify"];
    all.extend_from_slice(args);
    all.push("--json");
    let (code, out) = run(dir, &all);
    (
        code,
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out:?}")),
    )
}

/// Issue 3, done when: a signature from `backbone ksi sign` is extended by `backbone ksi extend`
/// to the next publication (2 s interval here) and verifies under the publications-file policy
/// (the file fetched from the service, the CA as trust anchor) and the user-publication policy
/// (the string from GET /publications/latest); the calendar policy with the extender's response;
/// a tampered extended signature fails.
#[test]
fn sign_extend_to_publication_and_verify_by_file_and_string() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    std::fs::write(dir.join("referral.txt"), b"referral for patient 4711").unwrap();
    let service = Service::start(dir, 2);
    let addr = service.addr.to_string();

    let (code, _) = run(dir, &["ksi", "sign", "referral.txt", "--service", &addr]);
    assert_eq!(code, 0);
    let signed = Signature::decode(&std::fs::read(dir.join("referral.txt.ksig")).unwrap()).unwrap();
    let published = publication_at_or_after(service.addr, signed.signing_time());
    let time = published.time.to_string();

    let (code, out) = run(
        dir,
        &[
            "ksi",
            "extend",
            "referral.txt.ksig",
            "--service",
            &addr,
            "--to-publication",
            &time,
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&published.publication_string), "{out}");
    let extended =
        Signature::decode(&std::fs::read(dir.join("referral.txt-extended.ksig")).unwrap()).unwrap();
    assert_eq!(
        extended.publication_record().unwrap().publication.time,
        published.time
    );
    assert!(extended.calendar_auth_record().is_none());

    fetch_publications_file(dir, service.addr, published.time, "publications.bin");
    let by_file = [
        "referral.txt-extended.ksig",
        "--document",
        "referral.txt",
        "--policy",
        "publications-file",
        "--publications-file",
        "publications.bin",
        "--trust-anchor",
        "data/calendar-ca-cert.pem",
        "--signer-email",
        SIGNER_EMAIL,
    ];
    let (code, json) = verify_json(dir, &by_file);
    assert_eq!((code, json["result"].as_str()), (0, Some("OK")), "{json}");
    assert_eq!(json["publication_time"].as_u64(), Some(published.time));
    let by_string = [
        "referral.txt-extended.ksig",
        "--document",
        "referral.txt",
        "--policy",
        "user-publication",
        "--publication-string",
        &published.publication_string,
    ];
    let (code, json) = verify_json(dir, &by_string);
    assert_eq!((code, json["result"].as_str()), (0, Some("OK")), "{json}");
    // The default policy takes the publications file too.
    let (code, json) = verify_json(
        dir,
        &[
            "referral.txt-extended.ksig",
            "--publications-file",
            "publications.bin",
            "--trust-anchor",
            "data/calendar-ca-cert.pem",
            "--signer-email",
            SIGNER_EMAIL,
        ],
    );
    assert_eq!((code, json["result"].as_str()), (0, Some("OK")), "{json}");

    // The calendar policy: the unextended signature against the extender's chain to the head.
    let (code, out) = run(
        dir,
        &[
            "ksi",
            "extend",
            "referral.txt.ksig",
            "--service",
            &addr,
            "--to",
            "head",
            "--out",
            "head.ksig",
            "--save-response",
            "head.pdu",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let (code, json) = verify_json(
        dir,
        &[
            "referral.txt.ksig",
            "--policy",
            "calendar",
            "--extender-response",
            "head.pdu",
        ],
    );
    assert_eq!((code, json["result"].as_str()), (0, Some("OK")), "{json}");
    // An extender response sealed with another key is refused.
    std::fs::write(dir.join("other.key"), b"not anon").unwrap();
    let (code, _) = run(
        dir,
        &[
            "ksi",
            "verify",
            "referral.txt.ksig",
            "--policy",
            "calendar",
            "--extender-response",
            "head.pdu",
            "--extender-key-file",
            "other.key",
        ],
    );
    assert_ne!(code, 0);
    // Without a suitable publication or with a wrong HMAC key, extending fails.
    let (code, _) = run(
        dir,
        &[
            "ksi",
            "extend",
            "referral.txt.ksig",
            "--service",
            &addr,
            "--to-publication",
            "1000",
            "--out",
            "x.ksig",
        ],
    );
    assert_ne!(code, 0);
    let (code, _) = run(
        dir,
        &[
            "ksi",
            "extend",
            "referral.txt.ksig",
            "--service",
            &addr,
            "--hmac-key-file",
            "other.key",
            "--out",
            "x.ksig",
        ],
    );
    assert_ne!(code, 0);
    assert!(!dir.join("x.ksig").exists());

    // Tampering: the published hash (the last byte of the file), then a byte in the chains.
    let good = std::fs::read(dir.join("referral.txt-extended.ksig")).unwrap();
    let mut last = good.clone();
    *last.last_mut().unwrap() ^= 1;
    let mut middle = good.clone();
    middle[good.len() / 2] ^= 0x01;
    for (name, bytes) in [
        ("tampered-last.ksig", last),
        ("tampered-middle.ksig", middle),
    ] {
        std::fs::write(dir.join(name), bytes).unwrap();
        let mut args = by_file;
        args[0] = name;
        let (code, json) = verify_json(dir, &args);
        assert_eq!(code, 1, "{name}: {json}");
        assert_ne!(json["result"], "OK", "{name}");
        let mut args = by_string;
        args[0] = name;
        let (code, _) = verify_json(dir, &args);
        assert_eq!(code, 1, "{name}");
    }
}

/// Issue 3 item 6: clients sign concurrently while the service is killed with SIGKILL; after a
/// restart on the same data directory, every signature handed out before the kill verifies
/// (internal and key-based), the calendar continues without a gap or a fork, and each signature
/// extends to the first publication after the restart and verifies under the publications-file
/// policy.
#[test]
fn kill_9_under_concurrent_signing_then_restart_extend_and_verify() {
    const CLIENTS: usize = 12;
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let mut service = Service::start(dir, 2);
    let addr = service.addr;

    let stop = Arc::new(AtomicBool::new(false));
    let handed_out: Arc<Mutex<Vec<(Imprint, Vec<u8>)>>> = Arc::default();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client_no| {
            let (stop, handed_out) = (Arc::clone(&stop), Arc::clone(&handed_out));
            std::thread::spawn(move || {
                for n in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let hash = HashAlgorithm::Sha256
                        .hash(&[format!("log record {client_no}/{n}").as_bytes()])
                        .unwrap();
                    match client::sign(addr, hash.as_bytes(), 0) {
                        Ok(signature) => handed_out.lock().unwrap().push((hash, signature)),
                        // The service is gone: this request had no answer.
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(3300));
    service.kill();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let handed_out = std::mem::take(&mut *handed_out.lock().unwrap());
    assert!(
        handed_out.len() >= CLIENTS,
        "only {} signatures before the kill",
        handed_out.len()
    );
    let signatures: Vec<(Imprint, Signature)> = handed_out
        .iter()
        .map(|(hash, bytes)| (hash.clone(), Signature::decode(bytes).unwrap()))
        .collect();
    let last_before = signatures
        .iter()
        .map(|(_, s)| s.signing_time())
        .max()
        .unwrap();

    // Restart on the same data directory.
    let service = Service::start(dir, 2);
    let addr = service.addr;
    let after = Signature::decode(
        &client::sign(
            addr,
            HashAlgorithm::Sha256.hash(&[b"after"]).unwrap().as_bytes(),
            0,
        )
        .unwrap(),
    )
    .unwrap();
    assert!(
        after.signing_time() > last_before,
        "the calendar moves forward"
    );

    // Internal and key-based, each signature against its own hash.
    let der = std::fs::read(dir.join("data/calendar-cert.der")).unwrap();
    let certificates = [CertificateRecord {
        id: certificate_id(&der).unwrap(),
        certificate: der,
    }];
    for (hash, signature) in &signatures {
        for policy in [Policy::Internal, Policy::KeyBased] {
            let context = Context {
                document_hash: Some(hash),
                trusted_certificates: &certificates,
                ..Context::default()
            };
            let verdict = verify::verify(signature, policy, &context);
            assert_eq!(
                verdict.outcome,
                Outcome::Ok,
                "{policy:?} at {}: {verdict}",
                signature.signing_time()
            );
        }
    }

    // No gap, no fork: every second that answered before the kill, extended to the second of
    // the first signature after the restart, reaches the root that signature's record signs,
    // keeps its old right siblings, and its path encodes its second.
    let head_root = &after.calendar_auth_record().unwrap().publication.hash;
    let mut seconds: Vec<u64> = signatures.iter().map(|(_, s)| s.signing_time()).collect();
    seconds.sort_unstable();
    seconds.dedup();
    for (_, signature) in &signatures {
        let t = signature.signing_time();
        let (extended, _) =
            client::extend_pdu(addr, "anon", b"anon", t, Some(after.signing_time())).unwrap();
        assert_eq!(
            &chain::calendar_root(&extended).unwrap(),
            head_root,
            "second {t}"
        );
        assert_eq!(
            extended.input_hash,
            signature.calendar_chain().unwrap().input_hash
        );
        assert!(
            chain::right_links_match(signature.calendar_chain().unwrap(), &extended),
            "second {t}: fork"
        );
        assert_eq!(
            chain::calendar_aggregation_time(extended.publication_time, &extended.links),
            Some(t)
        );
    }

    // Extended to the first publication after the restart, each verifies by the publications
    // file (one `ksi extend` and one `ksi verify` per distinct second; every signature by library).
    let published = publication_at_or_after(addr, after.signing_time());
    fetch_publications_file(dir, addr, published.time, "publications.bin");
    let time = published.time.to_string();
    let service_addr = addr.to_string();
    let mut checked = Vec::new();
    for (n, (hash, bytes)) in handed_out.iter().enumerate() {
        let t = signatures[n].1.signing_time();
        if checked.contains(&t) {
            continue;
        }
        checked.push(t);
        let name = format!("s{n}.ksig");
        std::fs::write(dir.join(&name), bytes).unwrap();
        let (code, out) = run(
            dir,
            &[
                "ksi",
                "extend",
                &name,
                "--service",
                &service_addr,
                "--to-publication",
                &time,
                "--out",
                "extended.ksig",
            ],
        );
        assert_eq!(code, 0, "{out}");
        let hex = backbone_timestamping::http::hex(hash.as_bytes());
        let (code, json) = verify_json(
            dir,
            &[
                "extended.ksig",
                "--hash",
                &hex,
                "--policy",
                "publications-file",
                "--publications-file",
                "publications.bin",
                "--trust-anchor",
                "data/calendar-ca-cert.pem",
                "--signer-email",
                SIGNER_EMAIL,
            ],
        );
        assert_eq!(
            (code, json["result"].as_str()),
            (0, Some("OK")),
            "second {t}: {json}"
        );
    }
    assert_eq!(checked.len(), seconds.len());
    eprintln!(
        "{} signatures from {} clients over {} seconds before the kill; checked in {:?}",
        signatures.len(),
        CLIENTS,
        seconds.len(),
        started.elapsed()
    );
}

/// A child aggregator process under a parent process: `backbone ksi sign` at the child gives a
/// signature that verifies by key against the parent's calendar certificate, with the child's
/// and the parent's client ids in its chains; with the parent killed, signing at the child fails
/// with the parent named and the child keeps running; with the parent restarted on its address
/// and data directory, the child signs again.
#[test]
fn child_aggregator_process_signs_through_its_parent_and_survives_its_restart() {
    let parent_dir = tempfile::tempdir().unwrap();
    let child_dir = tempfile::tempdir().unwrap();
    let (parent, parent_addr) = serve_on(
        parent_dir.path(),
        &["--listen", "127.0.0.1:0", "--login-id", "county"],
    );
    let mut parent = common::Killed(parent);
    let url = format!("http://{parent_addr}/");
    let child_args = [
        "--listen",
        "127.0.0.1:0",
        "--parent",
        &url,
        "--parent-login",
        "county",
        "--parent-key",
        "county",
        "--parent-timeout-seconds",
        "3",
    ];
    let (child, child_addr) = serve_on(child_dir.path(), &child_args);
    let _child = common::Killed(child);
    let dir = child_dir.path();
    std::fs::write(dir.join("prescription.txt"), b"e-prescription 2026-11-26").unwrap();
    let cert = parent_dir.path().join("data/calendar-cert.der");
    let cert = cert.to_str().unwrap();
    let sign = |out: &str| {
        command(dir)
            .args([
                "ksi",
                "sign",
                "prescription.txt",
                "--service",
                &child_addr.to_string(),
                "--out",
                out,
            ])
            .output()
            .unwrap()
    };

    let signed = sign("first.ksig");
    assert!(
        signed.status.success(),
        "{}",
        String::from_utf8_lossy(&signed.stderr)
    );
    let (code, out) = run(
        dir,
        &[
            "ksi",
            "verify",
            "first.ksig",
            "--document",
            "prescription.txt",
            "--policy",
            "key",
            "--cert",
            cert,
        ],
    );
    assert_eq!(code, 0, "{out}");
    let signature = Signature::decode(&std::fs::read(dir.join("first.ksig")).unwrap()).unwrap();
    let ids: Vec<String> = signature
        .aggregation_chains()
        .iter()
        .map(|c| match &c.links[0].sibling {
            backbone_timestamping_verify::signature::Sibling::Metadata(m) => {
                m.client_id.to_string()
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids, ["json", "county"]);

    // The parent is killed: the child answers with an error naming its parent, and keeps running.
    let _ = parent.0.kill();
    let _ = parent.0.wait();
    let refused = sign("refused.ksig");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("parent aggregator") && stderr.contains(&parent_addr.to_string()),
        "{stderr}"
    );

    // The parent restarts on the same address and data directory: the child signs again.
    let listen = parent_addr.to_string();
    let (restarted, _) = serve_on(
        parent_dir.path(),
        &["--listen", &listen, "--login-id", "county"],
    );
    let _parent = common::Killed(restarted);
    let signed = sign("again.ksig");
    assert!(
        signed.status.success(),
        "{}",
        String::from_utf8_lossy(&signed.stderr)
    );
    let (code, out) = run(
        dir,
        &[
            "ksi",
            "verify",
            "again.ksig",
            "--document",
            "prescription.txt",
            "--policy",
            "key",
            "--cert",
            cert,
        ],
    );
    assert_eq!(code, 0, "{out}");
}

/// The service's listener tried as an attacker would, against the real process with its default
/// limits: a slow-loris connection is dropped within the head timeout, a body declared over the
/// limit is refused before it is sent, and with every connection slot held a client waits and is
/// served once they are released.
#[test]
fn the_listener_drops_slow_loris_refuses_large_bodies_and_makes_floods_wait() {
    use backbone_server::{Limits, probe};
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = serve(dir.path());
    let limits = Limits::default().with_max_body(backbone_timestamping::http::MAX_BODY);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(probe::check_plain(
            addr,
            "/certificate",
            "/sign",
            413,
            &limits,
        ))
        .unwrap();
    assert_eq!(
        runtime
            .block_on(probe::get_status(
                addr,
                "/certificate",
                Duration::from_secs(10)
            ))
            .unwrap(),
        Some(200),
        "still serving"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}
