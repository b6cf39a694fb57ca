//! Two `backbone gateway serve` processes, a registry and a timestamping service as real
//! processes, a real HTTP service: exchanges under load from several clients while each gateway
//! in turn is killed with SIGKILL and restarted. Every exchange a client saw acknowledged is in
//! both gateways' message logs afterwards.
// Helpers outside #[test] functions: a test fixture that fails loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backbone_gateway::log::{Kind, LogConfig, MessageLog};
use backbone_hsm::KeyStore;
use backbone_hsm::software::SoftwareKeyStore;
use common::{Killed, command};

const HOSPITAL_GW: &str = "EE/GOV/70000001/gw1";
const PHARMACY_GW: &str = "EE/COM/10000001/gw1";
const PATIENTS: &str = "EE/GOV/70000001/ehr/patients";
const DISPENSING: &str = "EE/COM/10000001/dispensing";
const PERSON: &str = "EE38001085718";

fn ok(dir: &Path, args: &[&str]) -> String {
    let Output { status, stdout, stderr } = command(dir).args(args).output().unwrap();
    assert!(status.success(), "{args:?}: {}", String::from_utf8_lossy(&stderr));
    String::from_utf8(stdout).unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A gateway's directory and key directory.
struct Agency {
    id: &'static str,
    data: PathBuf,
    keys: PathBuf,
    client_port: u16,
    peer_port: u16,
}

impl Agency {
    fn new(dir: &Path, name: &str, id: &'static str) -> Agency {
        Agency { id, data: dir.join(name), keys: dir.join(format!("{name}-keys")), client_port: free_port(), peer_port: free_port() }
    }

    fn run(&self, dir: &Path, args: &[&str]) -> String {
        let Output { status, stdout, stderr } =
            command(dir).env("BACKBONE_HSM__KEY_DIR", &self.keys).args(["gateway", "--data-dir"]).arg(&self.data).args(args).output().unwrap();
        assert!(status.success(), "{args:?}: {}", String::from_utf8_lossy(&stderr));
        String::from_utf8(stdout).unwrap()
    }

    fn serve(&self, dir: &Path, timestamping: &str, services: &[String]) -> (Killed, String) {
        let mut cmd = command(dir);
        cmd.env("BACKBONE_HSM__KEY_DIR", &self.keys)
            .args(["gateway", "--data-dir"])
            .arg(&self.data)
            .args(["serve", "--id", self.id, "--anchor", "reg/anchor.json", "--timestamping", timestamping, "--batch-interval-ms", "300"])
            .args(["--client-listen", &format!("127.0.0.1:{}", self.client_port), "--peer-listen", &format!("127.0.0.1:{}", self.peer_port)])
            .args(["--admin-listen", "127.0.0.1:0"]);
        for service in services {
            cmd.args(["--service", service]);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("the gateway printed nothing").unwrap();
        assert!(first.starts_with("client interface on"), "{first}");
        let second = lines.next().expect("the gateway printed one line").unwrap();
        assert!(second.starts_with("peer interface on"), "{second}");
        let third = lines.next().expect("the gateway printed two lines").unwrap();
        let admin = third.strip_prefix("admin API on ").and_then(|rest| rest.split(' ').next()).expect(&third).to_owned();
        (Killed(child), admin)
    }

    /// Opens the log of a stopped gateway, as an auditor with the key store would.
    fn log(&self) -> MessageLog {
        let keys = SoftwareKeyStore::open(&self.keys).unwrap();
        let wrapper = keys.wrapper("gateway-log-key").unwrap();
        MessageLog::open(LogConfig::new(self.data.join("log"), None), wrapper).unwrap()
    }

    /// Message ids of the request records that have their response record.
    fn logged_exchanges(&self) -> BTreeSet<String> {
        let log = self.log();
        let status = log.status();
        let (mut requests, mut responses) = (BTreeSet::new(), BTreeSet::new());
        for seq in 0..status.records {
            let record = log.record(seq).unwrap().unwrap_or_else(|| panic!("record {seq} of {} is missing", status.records));
            match record.record.kind {
                Kind::Request => requests.insert(record.record.message_id.clone()),
                Kind::Response => responses.insert(record.record.message_id.clone()),
            };
        }
        assert_eq!(requests, responses, "every logged request has its response");
        requests
    }
}

/// The hospital's service: a FHIR-ish JSON answer to everything.
fn echo_service() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    let mut length = 0usize;
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).unwrap_or(0) == 0 {
                            return;
                        }
                        if header == "\r\n" {
                            break;
                        }
                        if let Some(value) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = value.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let answer = b"{\"resourceType\":\"Patient\",\"id\":\"4711\"}";
                    let head = format!("HTTP/1.1 200 OK\r\ncontent-type: application/fhir+json\r\ncontent-length: {}\r\n\r\n", answer.len());
                    if stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(answer)).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// One exchange through the pharmacy's gateway; the status, or `None` when the connection failed.
fn exchange(client_port: u16, message_id: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", client_port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    let request = format!(
        "GET /r1/{PATIENTS}/Patient/4711 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nX-Road-Client: {DISPENSING}\r\nX-Road-Id: {message_id}\r\n\
         X-Backbone-Data-Subject: {PERSON}\r\nX-Backbone-Purpose-Of-Use: TREAT\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let status = std::str::from_utf8(response.get(9..12)?).ok()?.parse().ok()?;
    Some(status)
}

#[test]
fn no_acknowledged_exchange_is_lost_when_either_gateway_is_killed_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let mut timestamping = Killed(
        command(dir).args(["timestamping", "serve", "--listen", "127.0.0.1:0", "--data-dir", "ts"]).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap(),
    );
    let mut line = String::new();
    BufReader::new(timestamping.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let ts_addr = line.trim().strip_prefix("listening on ").unwrap().to_owned();
    let service = echo_service();

    let hospital = Agency::new(dir, "hospital", HOSPITAL_GW);
    let pharmacy = Agency::new(dir, "pharmacy", PHARMACY_GW);
    let conf_port = free_port();
    ok(dir, &["registry", "--data-dir", "reg", "init", "--instance", "EE", "--url", &format!("http://127.0.0.1:{conf_port}/globalconf")]);
    for args in [
        &["add-member-class", "GOV", "government agencies"][..],
        &["add-member-class", "COM", "companies"],
        &["add-member", "EE/GOV/70000001", "North Estonia Medical Centre"],
        &["add-member", "EE/COM/10000001", "Town Pharmacy"],
        &["add-subsystem", "EE/GOV/70000001/ehr"],
        &["add-subsystem", DISPENSING],
        &["add-service", PATIENTS, "patient records", "--personal-health-data"],
    ] {
        ok(dir, &[&["registry", "--data-dir", "reg"][..], args].concat());
    }
    for agency in [&hospital, &pharmacy] {
        ok(dir, &["registry", "--data-dir", "reg", "add-gateway", agency.id, &format!("127.0.0.1:{}", agency.peer_port)]);
        agency.run(dir, &["init", "--id", agency.id]);
        ok(dir, &["registry", "--data-dir", "reg", "issue-tls-cert", agency.id, agency.data.join("tls-csr.pem").to_str().unwrap()]);
        let member = agency.id.rsplit_once('/').unwrap().0;
        ok(dir, &["registry", "--data-dir", "reg", "issue-signing-cert", member, agency.data.join("signing-csr.pem").to_str().unwrap()]);
    }
    let _registry = Killed(
        command(dir)
            .args(["registry", "--data-dir", "reg", "serve", "--regenerate-every", "1"])
            .args(["--listen", &format!("127.0.0.1:{conf_port}"), "--admin-listen", &format!("127.0.0.1:{}", free_port())])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    // Wait for the first configuration.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", conf_port)).is_err() {
        assert!(Instant::now() < deadline, "the registry did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let hospital_services = [format!("{PATIENTS}=http://{service}/fhir")];
    // An administrator of the hospital's gateway grants the pharmacy access over the admin API.
    let admin_cert = dir.join("mari.pem");
    hospital.run(dir, &["admin-cert", "--name", "mari", "--key", "admin-mari", "--out", admin_cert.to_str().unwrap()]);
    hospital.run(dir, &["add-admin", "mari", admin_cert.to_str().unwrap()]);
    let (mut hospital_gw, admin_addr) = hospital.serve(dir, &ts_addr, &hospital_services);
    let gateway_cert = hospital.data.join("admin-api-cert.pem");
    let remote = ["--admin", &admin_addr, "--admin-key", "admin-mari", "--admin-cert", admin_cert.to_str().unwrap(), "--gateway-cert", gateway_cert.to_str().unwrap()];
    let out = hospital.run(dir, &[&remote[..], &["grant", PATIENTS, "--client", DISPENSING, "--method", "GET", "--path", "/Patient/*"]].concat());
    assert_eq!(out.trim(), "granted");
    let out = hospital.run(dir, &[&remote[..], &["rights"]].concat());
    assert!(out.contains(PATIENTS) && out.contains("/Patient/*"), "{out}");
    let (mut pharmacy_gw, _) = pharmacy.serve(dir, &ts_addr, &[]);
    // The hospital's gateway takes the grant made before it started; the first exchange may
    // race the pharmacy's first configuration download.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut attempt = 0;
    while exchange(pharmacy.client_port, &format!("warm-up-{attempt}")) != Some(200) {
        attempt += 1;
        assert!(Instant::now() < deadline, "no exchange succeeded within 10 s");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Load: six clients, each exchange with its own message id; remember what was acknowledged.
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let (acknowledged, stop, counter) = (Arc::clone(&acknowledged), Arc::clone(&stop), Arc::clone(&counter));
            let port = pharmacy.client_port;
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("load-{}", counter.fetch_add(1, Ordering::Relaxed));
                    if exchange(port, &id) == Some(200) {
                        acknowledged.lock().unwrap().insert(id);
                    }
                }
            })
        })
        .collect();
    let wait_for_more = |n: usize| {
        let start = acknowledged.lock().unwrap().len();
        let deadline = Instant::now() + Duration::from_secs(30);
        while acknowledged.lock().unwrap().len() < start + n {
            assert!(Instant::now() < deadline, "no progress: {} acknowledged", acknowledged.lock().unwrap().len());
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    // Kill the provider's gateway mid-load, restart it; then the client's.
    wait_for_more(100);
    hospital_gw.0.kill().unwrap();
    hospital_gw.0.wait().unwrap();
    hospital_gw = hospital.serve(dir, &ts_addr, &hospital_services).0;
    wait_for_more(100);
    pharmacy_gw.0.kill().unwrap();
    pharmacy_gw.0.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    hospital_gw.0.kill().unwrap();
    hospital_gw.0.wait().unwrap();
    drop(pharmacy_gw);

    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= 200, "{}", acknowledged.len());
    eprintln!("{} exchanges acknowledged across two SIGKILLs", acknowledged.len());
    for agency in [&pharmacy, &hospital] {
        let logged = agency.logged_exchanges();
        let missing: Vec<_> = acknowledged.difference(&logged).collect();
        assert!(missing.is_empty(), "{} lost {} acknowledged exchanges, e.g. {:?}", agency.id, missing.len(), missing.first());
        // The hash chain and every stamped batch verify after the crashes.
        let log = agency.log();
        let status = log.status();
        let bundle = log.export(0, status.records).unwrap();
        let report = backbone_gateway::log::verify::verify(&bundle, None).unwrap_or_else(|e| panic!("{}: {e}", agency.id));
        assert_eq!(report.records, status.records);
    }
}
