//! Two agencies' gateways as real processes, with a registry and a timestamping service: the
//! set-up the gateway and audit process tests share.
#![allow(clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Killed, command};

pub const HOSPITAL_GW: &str = "EE/GOV/70000001/gw1";
pub const PHARMACY_GW: &str = "EE/COM/10000001/gw1";
pub const PATIENTS: &str = "EE/GOV/70000001/ehr/patients";
pub const DISPENSING: &str = "EE/COM/10000001/dispensing";
pub const PERSON: &str = "EE38001085718";

/// `backbone ARGS` in `dir`, which must succeed; its standard output.
pub fn ok(dir: &Path, args: &[&str]) -> String {
    let Output {
        status,
        stdout,
        stderr,
    } = command(dir).args(args).output().unwrap();
    assert!(
        status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&stderr)
    );
    String::from_utf8(stdout).unwrap()
}

/// A TCP port free now on 127.0.0.1, for a server started (and restarted after `kill -9`)
/// later: the demo's choice, below the kernel's ephemeral range.
pub fn free_port() -> u16 {
    backbone_ops::demo::network::free_port().unwrap()
}

/// A gateway's directory, key directory and ports.
pub struct Agency {
    pub id: &'static str,
    pub data: PathBuf,
    pub keys: PathBuf,
    pub client_port: u16,
    pub peer_port: u16,
}

/// Label of an information system's key in its agency's key directory.
pub const SYSTEM_KEY: &str = "information-system";

impl Agency {
    /// This agency's information system: its key made and its certificate registered on the
    /// gateway (`system-cert`, `add-client-cert`) at the first call.
    pub fn system(&self, dir: &Path, client: &str) -> System {
        let cert = self.data.join("system-cert.pem");
        if !cert.exists() {
            self.run(
                dir,
                &[
                    "system-cert",
                    "--name",
                    client,
                    "--key",
                    SYSTEM_KEY,
                    "--out",
                    cert.to_str().unwrap(),
                ],
            );
            let out = self.run(dir, &["add-client-cert", client, cert.to_str().unwrap()]);
            assert_eq!(out.trim(), "added");
        }
        System {
            port: self.client_port,
            key_dir: self.keys.clone(),
            cert,
            gateway_cert: self.data.join("tls-cert.pem"),
        }
    }

    fn new(dir: &Path, name: &str, id: &'static str) -> Agency {
        Agency {
            id,
            data: dir.join(name),
            keys: dir.join(format!("{name}-keys")),
            client_port: free_port(),
            peer_port: free_port(),
        }
    }

    /// `backbone gateway --data-dir DATA ARGS` with this agency's keys, which must succeed.
    pub fn run(&self, dir: &Path, args: &[&str]) -> String {
        let Output {
            status,
            stdout,
            stderr,
        } = command(dir)
            .env("BACKBONE_HSM__KEY_DIR", &self.keys)
            .args(["gateway", "--data-dir"])
            .arg(&self.data)
            .args(args)
            .output()
            .unwrap();
        assert!(
            status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&stderr)
        );
        String::from_utf8(stdout).unwrap()
    }

    /// Starts `backbone gateway serve` stamping every `batch_interval_ms`; the process and its
    /// admin API's address.
    pub fn serve(
        &self,
        dir: &Path,
        timestamping: &str,
        services: &[String],
        batch_interval_ms: u32,
    ) -> (Killed, String) {
        self.serve_with(dir, timestamping, services, batch_interval_ms, &[])
    }

    /// [`Agency::serve`] with more flags.
    pub fn serve_with(
        &self,
        dir: &Path,
        timestamping: &str,
        services: &[String],
        batch_interval_ms: u32,
        extra: &[&str],
    ) -> (Killed, String) {
        let mut cmd = command(dir);
        cmd.env("BACKBONE_HSM__KEY_DIR", &self.keys)
            .args(["gateway", "--data-dir"])
            .arg(&self.data)
            .args([
                "serve",
                "--id",
                self.id,
                "--anchor",
                "reg/anchor.json",
                "--timestamping",
                timestamping,
            ])
            .args(["--batch-interval-ms", &batch_interval_ms.to_string()])
            .args([
                "--client-listen",
                &format!("127.0.0.1:{}", self.client_port),
                "--peer-listen",
                &format!("127.0.0.1:{}", self.peer_port),
            ])
            .args(["--admin-listen", "127.0.0.1:0"]);
        for service in services {
            cmd.args(["--service", service]);
        }
        cmd.args(extra);
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut line = |expected: &str| {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("the gateway stopped before printing {expected:?}"))
                .unwrap();
            assert!(line.starts_with(expected), "{line}");
            line
        };
        line("client interface on");
        line("peer interface on");
        let third = line("admin API on");
        let admin = third
            .strip_prefix("admin API on ")
            .and_then(|rest| rest.split(' ').next())
            .expect(&third)
            .to_owned();
        // Keep reading what it prints, so that its later lines never meet a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        (Killed(child), admin)
    }
}

/// The running registry and timestamping service and the two registered agencies.
pub struct Network {
    pub timestamping: String,
    pub hospital: Agency,
    pub pharmacy: Agency,
    _timestamping: Killed,
    _registry: Killed,
}

/// Starts the timestamping service; registers a hospital (provider of [`PATIENTS`], health
/// data) and a pharmacy (client [`DISPENSING`]) with their gateways, keys and certificates;
/// starts the registry serving the configuration and waits for it.
pub fn start(dir: &Path) -> Network {
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

    let hospital = Agency::new(dir, "hospital", HOSPITAL_GW);
    let pharmacy = Agency::new(dir, "pharmacy", PHARMACY_GW);
    let conf_port = free_port();
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
    for args in [
        &["add-member-class", "GOV", "government agencies"][..],
        &["add-member-class", "COM", "companies"],
        &[
            "add-member",
            "EE/GOV/70000001",
            "North Estonia Medical Centre",
        ],
        &["add-member", "EE/COM/10000001", "Town Pharmacy"],
        &["add-subsystem", "EE/GOV/70000001/ehr"],
        &["add-subsystem", DISPENSING],
        &[
            "add-service",
            PATIENTS,
            "patient records",
            "--personal-health-data",
        ],
    ] {
        ok(
            dir,
            &[&["registry", "--data-dir", "reg"][..], args].concat(),
        );
    }
    for agency in [&hospital, &pharmacy] {
        ok(
            dir,
            &[
                "registry",
                "--data-dir",
                "reg",
                "add-gateway",
                agency.id,
                &format!("127.0.0.1:{}", agency.peer_port),
            ],
        );
        agency.run(dir, &["init", "--id", agency.id]);
        ok(
            dir,
            &[
                "registry",
                "--data-dir",
                "reg",
                "issue-tls-cert",
                agency.id,
                agency.data.join("tls-csr.pem").to_str().unwrap(),
            ],
        );
        let member = agency.id.rsplit_once('/').unwrap().0;
        ok(
            dir,
            &[
                "registry",
                "--data-dir",
                "reg",
                "issue-signing-cert",
                member,
                agency.data.join("signing-csr.pem").to_str().unwrap(),
            ],
        );
    }
    let registry = Killed(
        command(dir)
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
                &format!("127.0.0.1:{}", free_port()),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", conf_port)).is_err() {
        assert!(Instant::now() < deadline, "the registry did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Network {
        timestamping: ts_addr,
        hospital,
        pharmacy,
        _timestamping: timestamping,
        _registry: registry,
    }
}

/// The pharmacy's information system ([`DISPENSING`]) as a separate party: its key in the
/// pharmacy's key directory, its certificate registered on the gateway with
/// `backbone gateway add-client-cert`, the gateway's `tls-cert.pem` pinned.
#[derive(Clone, Debug)]
pub struct System {
    port: u16,
    key_dir: PathBuf,
    cert: PathBuf,
    gateway_cert: PathBuf,
}

/// One exchange through the pharmacy's gateway about [`PERSON`], over HTTPS as `system`; the
/// status, or `None` when the connection failed.
pub fn exchange(system: &System, message_id: &str) -> Option<u16> {
    let read = |path: &Path| backbone_gateway::admin::certificate_der(&std::fs::read(path).ok()?);
    let keys = backbone_hsm::software::SoftwareKeyStore::open(&system.key_dir).ok()?;
    let key = backbone_hsm::KeyStore::signer(&keys, SYSTEM_KEY, None).ok()?;
    let client = backbone_gateway::connect::GatewayClient::https(
        &format!("127.0.0.1:{}", system.port),
        key,
        read(&system.cert)?,
        Arc::new(backbone_hsm::tls::PinSet::new([read(
            &system.gateway_cert,
        )?])),
    )
    .ok()?
    .with_timeout(Duration::from_secs(20));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let answer = runtime
        .block_on(
            client
                .get(format!("/r1/{PATIENTS}/Patient/4711"))
                .header("X-Road-Client", DISPENSING)
                .header("X-Road-Id", message_id)
                .header("X-Backbone-Data-Subject", PERSON)
                .header("X-Backbone-Purpose-Of-Use", "TREAT")
                .send(),
        )
        .ok()?;
    Some(answer.status.as_u16())
}

/// Waits until an exchange succeeds (the pharmacy's gateway may not have its first
/// configuration yet).
pub fn wait_for_exchange(system: &System) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut attempt = 0;
    while exchange(system, &format!("warm-up-{attempt}")) != Some(200) {
        attempt += 1;
        assert!(
            Instant::now() < deadline,
            "no exchange succeeded within 10 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The hospital's service: a FHIR-ish JSON answer to everything.
pub fn echo_service() -> SocketAddr {
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
                        if let Some(value) =
                            header.to_ascii_lowercase().strip_prefix("content-length:")
                        {
                            length = value.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let answer = b"{\"resourceType\":\"Patient\",\"id\":\"4711\"}";
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/fhir+json\r\ncontent-length: {}\r\n\r\n",
                        answer.len()
                    );
                    if stream
                        .write_all(head.as_bytes())
                        .and_then(|()| stream.write_all(answer))
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Opens the message log of `agency`'s stopped gateway, as an auditor with its key store would.
pub fn open_log(agency: &Agency) -> backbone_gateway::log::MessageLog {
    use backbone_hsm::KeyStore as _;
    let keys = backbone_hsm::software::SoftwareKeyStore::open(&agency.keys).unwrap();
    let wrapper = keys.wrapper("gateway-log-key").unwrap();
    backbone_gateway::log::MessageLog::open(
        backbone_gateway::log::LogConfig::new(agency.data.join("log"), None),
        wrapper,
    )
    .unwrap()
}
