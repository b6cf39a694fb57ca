//! `backbone registry` as real processes: init, an administrator, `serve` with its HTTPS admin
//! API, remote verbs (some concurrent), the configuration a gateway's client accepts, `kill -9`
//! right after an acknowledged change, restart, and nothing lost.
// Helpers outside #[test] functions: a test fixture that fails loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, SystemTime};

use backbone_registry::anchor::Anchor;
use backbone_registry::client::{ClientConfig, ConfClient};
use common::{Killed, command};

fn run(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = command(dir).args(args).output().unwrap();
    (
        status.code().unwrap(),
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let (code, out, err) = run(dir, args);
    assert_eq!(code, 0, "{args:?}: {err}");
    out
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn serve(dir: &Path, conf_port: u16, admin_port: u16) -> Killed {
    let mut child = command(dir)
        .args([
            "registry",
            "--data-dir",
            "reg",
            "serve",
            "--regenerate-every",
            "1",
        ])
        .args([
            "--listen",
            &format!("127.0.0.1:{conf_port}"),
            "--admin-listen",
            &format!("127.0.0.1:{admin_port}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(
        first.starts_with("serving the global configuration at"),
        "{first}"
    );
    let second = lines.next().unwrap().unwrap();
    assert!(second.starts_with("admin API at"), "{second}");
    Killed(child)
}

/// GET /globalconf over plain HTTP/1.1.
fn download(port: u16) -> Vec<u8> {
    get(port, "/globalconf").unwrap()
}

/// GET `path` over plain HTTP/1.1: the body of a 200, else `None`.
fn get(port: u16, path: &str) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    response
        .starts_with(b"HTTP/1.1 200")
        .then(|| response[split + 4..].to_vec())
}

#[test]
fn lifecycle_over_the_admin_api_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (conf_port, admin_port) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{conf_port}/globalconf");
    ok(
        dir,
        &[
            "registry",
            "--data-dir",
            "reg",
            "init",
            "--instance",
            "EE",
            "--url",
            &url,
        ],
    );
    ok(
        dir,
        &[
            "registry",
            "--data-dir",
            "reg",
            "add-member-class",
            "GOV",
            "government agencies",
        ],
    );
    ok(
        dir,
        &[
            "registry",
            "--data-dir",
            "reg",
            "add-member-class",
            "COM",
            "companies",
        ],
    );

    // The first administrator: her key in the key store, her certificate from the registry.
    ok(dir, &["hsm", "keygen", "--label", "alice"]);
    ok(
        dir,
        &[
            "hsm",
            "csr",
            "--label",
            "alice",
            "--common-name",
            "alice",
            "--out",
            "alice.csr",
        ],
    );
    let alice_pem = ok(
        dir,
        &[
            "registry",
            "--data-dir",
            "reg",
            "add-admin",
            "alice",
            "alice.csr",
        ],
    );
    std::fs::write(dir.join("alice.pem"), &alice_pem).unwrap();

    let mut server = serve(dir, conf_port, admin_port);
    let admin = format!("127.0.0.1:{admin_port}");
    let remote = |args: &[&str]| -> (i32, String, String) {
        let mut full = vec![
            "registry",
            "--admin",
            &admin,
            "--admin-key",
            "alice",
            "--admin-cert",
            "alice.pem",
            "--registry-cert",
            "reg/admin-api-cert.pem",
        ];
        full.extend_from_slice(args);
        run(dir, &full)
    };
    for args in [
        &["add-member", "EE/GOV/70000001", "North hospital"][..],
        &["add-subsystem", "EE/GOV/70000001/ehr"],
        &["add-gateway", "EE/GOV/70000001/gw1", "127.0.0.1:9443"],
        &[
            "add-service",
            "EE/GOV/70000001/ehr/referrals",
            "referral letters",
            "--personal-health-data",
        ],
    ] {
        let (code, _, err) = remote(args);
        assert_eq!(code, 0, "{args:?}: {err}");
    }
    ok(dir, &["hsm", "keygen", "--label", "gw1-tls"]);
    ok(
        dir,
        &[
            "hsm",
            "csr",
            "--label",
            "gw1-tls",
            "--common-name",
            "gw1",
            "--out",
            "gw1.csr",
        ],
    );
    let (code, gw_pem, err) = remote(&["issue-tls-cert", "EE/GOV/70000001/gw1", "gw1.csr"]);
    assert_eq!(code, 0, "{err}");
    let serial = err
        .lines()
        .find_map(|l| l.strip_prefix("issued certificate serial "))
        .unwrap()
        .to_owned();
    let gw_cert = openssl::x509::X509::from_pem(gw_pem.as_bytes()).unwrap();

    // Concurrent administrators' processes: four members at once, and two racing for one id.
    let children: Vec<_> = (0..6)
        .map(|n| {
            let code = if n >= 4 {
                "10000099".to_owned()
            } else {
                format!("1000000{n}")
            };
            command(dir)
                .args([
                    "registry",
                    "--admin",
                    &admin,
                    "--admin-key",
                    "alice",
                    "--admin-cert",
                    "alice.pem",
                    "--registry-cert",
                    "reg/admin-api-cert.pem",
                ])
                .args([
                    "add-member",
                    &format!("EE/COM/{code}"),
                    &format!("pharmacy {n}"),
                ])
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let codes: Vec<i32> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap().status.code().unwrap())
        .collect();
    assert_eq!(codes.iter().filter(|&&c| c == 0).count(), 5, "{codes:?}");
    assert_eq!(codes.iter().filter(|&&c| c == 64).count(), 1, "{codes:?}");

    // Refusals: a duplicate and an invalid id exit 64 with the registry's reason.
    let (code, _, err) = remote(&["add-member", "EE/GOV/70000001", "again"]);
    assert_eq!(code, 64);
    assert!(err.contains("duplicate"), "{err}");
    let (code, _, err) = remote(&["add-member", "EE/GOV/has space", "x"]);
    assert_eq!(code, 64, "{err}");
    // The store is the server's while it runs: a local verb is refused, clearly.
    let (code, _, err) = run(
        dir,
        &[
            "registry",
            "--data-dir",
            "reg",
            "add-member",
            "EE/GOV/70000002",
            "x",
        ],
    );
    assert_eq!(code, 1);
    assert!(err.to_lowercase().contains("lock"), "{err}");
    // A key that does not match the administrator's certificate: no handshake.
    ok(dir, &["hsm", "keygen", "--label", "mallory"]);
    let (code, _, err) = run(
        dir,
        &[
            "registry",
            "--admin",
            &admin,
            "--admin-key",
            "mallory",
            "--admin-cert",
            "alice.pem",
            "--registry-cert",
            "reg/admin-api-cert.pem",
            "audit",
        ],
    );
    assert_eq!(code, 1, "{err}");

    // What a gateway sees: the configuration, verified against the anchor.
    let anchor = Anchor::decode(&std::fs::read(dir.join("reg/anchor.json")).unwrap()).unwrap();
    let client = ConfClient::new(anchor.clone(), ClientConfig::default());
    std::thread::sleep(Duration::from_millis(1500));
    client
        .accept(&download(conf_port), SystemTime::now())
        .unwrap();
    let conf = client.current(SystemTime::now()).unwrap();
    assert_eq!(conf.members.len(), 6);
    assert!(conf.services[0].personal_health_data);
    assert_eq!(
        conf.gateways[0].tls_certificate.as_ref().unwrap().der(),
        gw_cert.to_der().unwrap().as_slice()
    );

    // Acknowledged, then kill -9 at once: the change must be there after the restart.
    let (code, _, err) = remote(&["add-member", "EE/GOV/70000003", "South clinic"]);
    assert_eq!(code, 0, "{err}");
    let pinned = std::fs::read(dir.join("reg/admin-api-cert.pem")).unwrap();
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    let _server = serve(dir, conf_port, admin_port);
    // Administrators pin the admin API's certificate: a restart with the same key keeps it.
    assert_eq!(
        std::fs::read(dir.join("reg/admin-api-cert.pem")).unwrap(),
        pinned
    );
    let (code, shown, err) = remote(&["show"]);
    assert_eq!(code, 0, "{err}");
    assert!(shown.contains("EE/GOV/70000003"), "{shown}");
    let (_, audit, _) = remote(&["audit"]);
    let by_alice = audit
        .lines()
        .filter(|l| l.split('\t').nth(2) == Some("alice"))
        .count();
    assert_eq!(by_alice, 11, "{audit}");

    // Revoking the gateway certificate reaches the gateway with the next configuration.
    let (code, _, err) = remote(&["revoke", &serial, "--reason", "key-compromise"]);
    assert_eq!(code, 0, "{err}");
    std::thread::sleep(Duration::from_millis(1500));
    client
        .accept(&download(conf_port), SystemTime::now())
        .unwrap();
    let conf = client.current(SystemTime::now()).unwrap();
    assert!(conf.gateways[0].tls_certificate.is_none());
    assert_eq!(conf.revoked.len(), 1);
}

#[test]
fn each_configuration_version_is_covered_by_a_keyless_signature() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let mut timestamping = Killed(
        command(dir)
            .args([
                "timestamping",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                "ts",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(timestamping.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ts_addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();

    let (conf_port, admin_port) = (free_port(), free_port());
    ok(
        dir,
        &[
            "registry",
            "--data-dir",
            "reg",
            "init",
            "--instance",
            "EE",
            "--url",
            &format!("http://127.0.0.1:{conf_port}/globalconf"),
        ],
    );
    let _registry = Killed(
        command(dir)
            .args([
                "registry",
                "--data-dir",
                "reg",
                "serve",
                "--regenerate-every",
                "1",
                "--timestamping-url",
                &format!("http://{ts_addr}/sign"),
            ])
            .args([
                "--listen",
                &format!("127.0.0.1:{conf_port}"),
                "--admin-listen",
                &format!("127.0.0.1:{admin_port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );

    // Version 1 is generated at start; its keyless signature follows within a round or two.
    let mut signature = None;
    for _ in 0..100 {
        if let Some(found) = get(conf_port, "/globalconf/1/keyless-signature") {
            signature = Some(found);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let envelope = get(conf_port, "/globalconf/1").unwrap();
    std::fs::write(dir.join("conf-1.bin"), &envelope).unwrap();
    std::fs::write(
        dir.join("conf-1.ksig"),
        signature.expect("no keyless signature for version 1 within 10 s"),
    )
    .unwrap();
    // The auditor's check: this envelope, this signature, the calendar key's certificate.
    let out = ok(
        dir,
        &[
            "ksi",
            "verify",
            "conf-1.ksig",
            "--document",
            "conf-1.bin",
            "--policy",
            "key",
            "--cert",
            "ts/calendar-cert.der",
            "--json",
        ],
    );
    assert!(out.contains("\"result\":\"OK\""), "{out}");
    // Another version's envelope does not match it.
    let mut later = None;
    for _ in 0..50 {
        later = get(conf_port, "/globalconf/2");
        if later.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let later = later.expect("no version 2 within 5 s");
    std::fs::write(dir.join("conf-2.bin"), later).unwrap();
    let (code, out, _) = run(
        dir,
        &[
            "ksi",
            "verify",
            "conf-1.ksig",
            "--document",
            "conf-2.bin",
            "--policy",
            "internal",
            "--json",
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(get(conf_port, "/globalconf/999999").is_none());
}
