//! An agency's information system on its gateway's client port, through real processes and the
//! real counterpart an agency would use: `openssl` makes the system's key and certificate,
//! `backbone gateway add-client-cert` registers it, `curl` calls the client port pinned to the
//! gateway's `tls-cert.pem` (the README's commands). Then the attacks on that boundary (PR-REST
//! 4.7; X-Road's connection types): no certificate, a foreign certificate, the registered
//! certificate naming another client, plain HTTP on the HTTPS port and on the plain listener —
//! each refused with `Client.SslAuthenticationFailed` (or no HTTP answer), none of them logged on
//! either side; `set-connection` and `remove-client-cert` take effect on the running gateway; a
//! plain listener off loopback refuses the start.
// Helpers outside #[test] functions: a test fixture that fails loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use backbone_gateway::log::Kind;
use common::backbone::{
    self, Agency, DISPENSING, PATIENTS, PERSON, echo_service, free_port, open_log,
};

/// `openssl req -x509`: a P-256 key and a self-signed certificate, as an agency's system makes
/// them; (key, certificate).
fn openssl_identity(dir: &Path, name: &str) -> (String, String) {
    let key = dir.join(format!("{name}.key"));
    let cert = dir.join(format!("{name}.pem"));
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "30"])
        .args(["-subj", &format!("/CN={name}"), "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    (
        key.to_str().unwrap().to_owned(),
        cert.to_str().unwrap().to_owned(),
    )
}

/// The README's pin: base64 of SHA-256 over the gateway certificate's public key.
fn pin(tls_cert: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64",
            tls_cert.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    format!("sha256//{}", String::from_utf8(out.stdout).unwrap().trim())
}

/// How curl calls the client port: `url`, the `X-Road-Client`, a certificate and key if any.
struct Call<'a> {
    url: String,
    client: &'a str,
    identity: Option<&'a (String, String)>,
    pin: &'a str,
}

/// curl's answer: the HTTP status (0 when there was none) and the X-Road-Error header.
fn curl(call: &Call<'_>) -> (u16, String) {
    let mut command = Command::new("curl");
    command
        .args(["-s", "-k", "--max-time", "20", "-o", "/dev/null"])
        .args(["-w", "%{http_code} %header{x-road-error}"])
        .args(["--pinnedpubkey", call.pin])
        .args(["-H", &format!("X-Road-Client: {}", call.client)])
        .args(["-H", &format!("X-Backbone-Data-Subject: {PERSON}")])
        .args(["-H", "X-Backbone-Purpose-Of-Use: TREAT"]);
    if let Some((key, cert)) = call.identity {
        command.args(["--cert", cert, "--key", key]);
    }
    let out = command.arg(&call.url).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (status, error) = text.split_once(' ').unwrap_or((&text, ""));
    (status.parse().unwrap_or(0), error.trim().to_owned())
}

/// Retries `check` for up to ten seconds.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Request records in a stopped gateway's log.
fn requests_logged(agency: &Agency) -> usize {
    let log = open_log(agency);
    (0..log.status().records)
        .filter(|&seq| log.record(seq).unwrap().unwrap().record.kind == Kind::Request)
        .count()
}

#[test]
fn only_a_registered_certificate_speaks_for_a_subsystem_through_real_processes() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let network = backbone::start(dir);
    let (hospital, pharmacy, ts_addr) =
        (&network.hospital, &network.pharmacy, &network.timestamping);
    let service = echo_service();
    hospital.run(dir, &["grant", PATIENTS, "--client", DISPENSING]);
    let mut hospital_gw = hospital
        .serve(
            dir,
            ts_addr,
            &[format!("{PATIENTS}=http://{service}/fhir")],
            300,
        )
        .0;

    // The agency's system: openssl's key and certificate, registered before the gateway starts.
    let system = openssl_identity(dir, "dispensing");
    let out = pharmacy.run(dir, &["add-client-cert", DISPENSING, &system.1]);
    assert_eq!(out.trim(), "added");
    let plain_port = free_port();
    let plain_listen = format!("127.0.0.1:{plain_port}");
    let mut pharmacy_gw = pharmacy
        .serve_with(
            dir,
            ts_addr,
            &[],
            300,
            &["--client-plain-listen", &plain_listen],
        )
        .0;
    let pin = pin(&pharmacy.data.join("tls-cert.pem"));
    let https = format!(
        "https://127.0.0.1:{}/r1/{PATIENTS}/Patient/4711",
        pharmacy.client_port
    );
    let call = |client, identity| Call {
        url: https.clone(),
        client,
        identity,
        pin: &pin,
    };
    // Every call answered 200 is one exchange both gateways must have logged.
    let answered = std::cell::Cell::new(0);
    let counted = |got: (u16, String)| {
        if got.0 == 200 {
            answered.set(answered.get() + 1);
        }
        got
    };
    // The first call may race the gateway's first configuration download.
    eventually(
        "an exchange over HTTPS with the registered certificate",
        || counted(curl(&call(DISPENSING, Some(&system)))) == (200, String::new()),
    );
    let refused = (400, "Client.SslAuthenticationFailed".to_owned());

    // No certificate; a certificate nobody registered; the registered one naming the member.
    assert_eq!(curl(&call(DISPENSING, None)), refused);
    let stranger = openssl_identity(dir, "stranger");
    assert_eq!(curl(&call(DISPENSING, Some(&stranger))), refused);
    assert_eq!(curl(&call("EE/COM/10000001", Some(&system))), refused);
    // A wrong pin: curl refuses the gateway itself.
    let wrong_pin = Call {
        pin: "sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ..call(DISPENSING, Some(&system))
    };
    assert_eq!(curl(&wrong_pin).0, 0);
    // Plain HTTP on the HTTPS port gets no HTTP answer; on the plain listener, a subsystem that
    // must use HTTPS is refused.
    let plain_on_tls = Call {
        url: https.replace("https://", "http://"),
        ..call(DISPENSING, None)
    };
    assert_eq!(curl(&plain_on_tls).0, 0);
    let plain = Call {
        url: format!("http://{plain_listen}/r1/{PATIENTS}/Patient/4711"),
        ..call(DISPENSING, None)
    };
    assert_eq!(curl(&plain), refused);

    // The operator allows plain HTTP for it on the running gateway, then takes it back and
    // removes the certificate: each takes effect without a restart.
    pharmacy.run(dir, &["set-connection", DISPENSING, "http"]);
    eventually("plain HTTP once allowed", || counted(curl(&plain)).0 == 200);
    pharmacy.run(dir, &["set-connection", DISPENSING, "https"]);
    eventually("plain HTTP refused again", || {
        counted(curl(&plain)) == refused
    });
    let listed = pharmacy.run(dir, &["clients"]);
    let fingerprint = listed
        .lines()
        .find_map(|l| l.trim().split('\t').next().filter(|f| f.len() == 64))
        .unwrap_or_else(|| panic!("no certificate listed: {listed}"));
    assert!(
        listed.contains(DISPENSING) && listed.contains("CN=dispensing"),
        "{listed}"
    );
    assert_eq!(
        counted(curl(&call(DISPENSING, Some(&system)))),
        (200, String::new())
    );
    let out = pharmacy.run(dir, &["remove-client-cert", DISPENSING, fingerprint]);
    assert_eq!(out.trim(), "removed");
    eventually("the removed certificate refused", || {
        counted(curl(&call(DISPENSING, Some(&system)))) == refused
    });

    // Only the answered exchanges are in either log: nothing refused was logged or reached the
    // provider.
    for gateway in [&mut pharmacy_gw, &mut hospital_gw] {
        gateway.0.kill().unwrap();
        gateway.0.wait().unwrap();
    }
    assert_eq!(requests_logged(pharmacy), answered.get());
    assert_eq!(requests_logged(hospital), answered.get());

    // A plain listener anywhere but on loopback is refused before the gateway starts.
    let out = common::command(dir)
        .env("BACKBONE_HSM__KEY_DIR", &pharmacy.keys)
        .args(["gateway", "--data-dir"])
        .arg(&pharmacy.data)
        .args(["serve", "--id", pharmacy.id, "--anchor", "reg/anchor.json"])
        .args(["--client-plain-listen", "192.0.2.1:8281"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("only on a loopback address"),
        "{out:?}"
    );
}
