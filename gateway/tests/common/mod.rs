//! A small backbone in one process: a registry, a timestamping service, and two agencies —
//! a hospital that provides services and a pharmacy that calls them — each with its own
//! SoftHSM2 token, its own gateway and message log, and a real HTTP service behind the hospital's
//! gateway. Everything talks over real sockets on 127.0.0.1, gateways over pinned TLS 1.3.
// Test fixture: failing loudly is the point.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../../../hsm/tests/common/softhsm.rs"]
pub mod softhsm;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backbone_gateway::access::{Grant, Grantee};
use backbone_gateway::conf::Trust;
use backbone_gateway::connect::GatewayClient;
use backbone_gateway::log::{LogConfig, MessageLog};
use backbone_gateway::service::{GatewayConfig, GatewayKeys, RunningGateway};
use backbone_hsm::batch::{BatchConfig, BatchSigner};
use backbone_hsm::cert::{Subject, csr_pem};
use backbone_hsm::config::Config;
use backbone_hsm::software::SoftwareKeyStore;
use backbone_hsm::tls::PinSet;
use backbone_hsm::{KeyStore, KeyType, Signer};
use backbone_registry::Registry;
use backbone_registry::anchor::Anchor;
use backbone_registry::client::{ClientConfig, ConfClient};
use backbone_registry::id::InstanceId;
use backbone_registry::store::memory::MemoryStore;
use backbone_timestamping::authority::{CalendarSigner, issue_certificates};
use backbone_timestamping::calendar::rocks::RocksStore;
use backbone_timestamping::calendar::{Calendar, CalendarStore};
use backbone_timestamping::http::{self as ts_http, PduAuth};
use backbone_timestamping::service as ts_service;

pub const HOSPITAL: &str = "EE/GOV/70000001";
pub const PHARMACY: &str = "EE/COM/10000001";
pub const EHR: &str = "EE/GOV/70000001/ehr";
pub const DISPENSING: &str = "EE/COM/10000001/dispensing";
/// A health-data service of the hospital.
pub const PATIENTS: &str = "EE/GOV/70000001/ehr/patients";
/// A service without health data.
pub const PING: &str = "EE/GOV/70000001/ehr/ping";
/// A valid Estonian personal code.
pub const PERSON: &str = "EE38001085718";
pub const OTHER_PERSON: &str = "EE49002124277";

/// One agency: its token, keys, configuration client, log and gateway.
pub struct Agency {
    pub gateway_id: String,
    pub keys: Arc<dyn KeyStore>,
    pub tls: Arc<dyn Signer>,
    pub signing: Arc<BatchSigner>,
    pub conf: Arc<ConfClient>,
    pub log: Arc<MessageLog>,
    pub gateway: Option<RunningGateway>,
    pub peer_port: u16,
    pub dir: PathBuf,
    /// The agency's information system ([`DISPENSING`] at the pharmacy, [`EHR`] at the
    /// hospital): its key in the agency's token and its self-signed certificate, registered on
    /// the agency's gateway when it starts.
    pub system: String,
    pub system_key: Arc<dyn Signer>,
    pub system_cert: Vec<u8>,
    /// The gateway's TLS certificate as registered when it started: what its information
    /// systems pin.
    pub gateway_cert: Vec<u8>,
}

/// The whole fixture.
pub struct Backbone {
    pub registry: Arc<Registry>,
    pub anchor: Anchor,
    pub hospital: Agency,
    pub pharmacy: Agency,
    pub timestamping: SocketAddr,
    pub service: SocketAddr,
    pub _ts: ts_service::Running,
    pub dir: tempfile::TempDir,
}

/// A free TCP port on 127.0.0.1 (the configuration must name each gateway's address before
/// the gateway starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the timestamping service with software keys (its keys are not under test here).
pub async fn timestamping(dir: &std::path::Path) -> (SocketAddr, ts_service::Running) {
    let keys = SoftwareKeyStore::open(dir.join("ts-keys")).unwrap();
    keys.generate("timestamping-ca", KeyType::EcP256).unwrap();
    keys.generate("timestamping", KeyType::EcP256).unwrap();
    let ca = keys.signer("timestamping-ca", None).unwrap();
    let key = keys.signer("timestamping", None).unwrap();
    let (_, certificate) = issue_certificates(
        ca.as_ref(),
        key.as_ref(),
        SystemTime::now() - Duration::from_secs(3600),
        365,
    )
    .unwrap();
    let signer = CalendarSigner::new(key, &certificate).unwrap();
    let store: Box<dyn CalendarStore> = Box::new(RocksStore::open(dir.join("calendar")).unwrap());
    let calendar = Calendar::open(store).unwrap();
    let config = ts_service::Config {
        publication_interval: 3600,
        ..ts_service::Config::default()
    };
    let running = ts_service::spawn(calendar, signer, config).unwrap();
    let app = ts_http::router(
        running.handle.clone(),
        PduAuth {
            login_id: "anon".into(),
            key: b"k".to_vec(),
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, running)
}

/// The hospital's service: answers every request with what it received, so tests can see what
/// the provider gateway passed on.
pub async fn echo_service() -> SocketAddr {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, Method, Uri};
    async fn echo(
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> ([(String, String); 2], String) {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let seen = serde_json::json!({
            "method": method.as_str(),
            "path": uri.path(),
            "query": uri.query(),
            "client": header("x-road-client"),
            "id": header("x-road-id"),
            "user": header("x-road-userid"),
            "subject": header("x-backbone-data-subject"),
            "purpose": header("x-backbone-purpose-of-use"),
            "traceparent": header("traceparent"),
            "body": String::from_utf8_lossy(&body),
        });
        let status = if uri.path().ends_with("/missing") {
            "404"
        } else {
            "200"
        };
        (
            [
                (
                    "content-type".to_owned(),
                    "application/fhir+json".to_owned(),
                ),
                ("x-echo-status".to_owned(), status.to_owned()),
            ],
            seen.to_string(),
        )
    }
    let app = axum::Router::new().fallback(echo);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn agency_keys(name: &str) -> Arc<dyn KeyStore> {
    let token = softhsm::token(name);
    let keys = backbone_hsm::config::open(&Config::Pkcs11(token.config.clone()), Some(token.pin()))
        .unwrap();
    keys.generate("gateway-tls", KeyType::EcP256).unwrap();
    keys.generate("member-signing", KeyType::EcP256).unwrap();
    keys.generate_wrapping_key("log-data-key").unwrap();
    keys.generate("information-system", KeyType::EcP256)
        .unwrap();
    keys
}

impl Backbone {
    /// Registry, timestamping, both agencies; the configuration valid for `validity`.
    pub async fn start(validity: Duration) -> Backbone {
        let dir = tempfile::tempdir().unwrap();
        let (timestamping, ts) = timestamping(dir.path()).await;
        let service = echo_service().await;

        let registry_keys = SoftwareKeyStore::open(dir.path().join("registry-keys")).unwrap();
        registry_keys.generate("ca", KeyType::EcP256).unwrap();
        registry_keys.generate("conf", KeyType::EcP256).unwrap();
        let conf_signer = registry_keys.signer("conf", None).unwrap();
        let instance = InstanceId::new("EE").unwrap();
        let now = SystemTime::now();
        let registry = Arc::new(
            Registry::create(
                Arc::new(MemoryStore::new()),
                instance.clone(),
                registry_keys.signer("ca", None).unwrap(),
                conf_signer.clone(),
                "init",
                now,
            )
            .unwrap(),
        );
        let anchor = Anchor::new(
            instance,
            conf_signer.algorithm(),
            conf_signer.public_key().clone(),
            vec!["http://127.0.0.1:1/globalconf".into()],
        )
        .unwrap();

        registry
            .add_member_class("init", now, "GOV".parse().unwrap(), "government agencies")
            .unwrap();
        registry
            .add_member_class("init", now, "COM".parse().unwrap(), "companies")
            .unwrap();
        registry
            .add_member(
                "init",
                now,
                HOSPITAL.parse().unwrap(),
                "North Estonia Medical Centre",
            )
            .unwrap();
        registry
            .add_member("init", now, PHARMACY.parse().unwrap(), "Town Pharmacy")
            .unwrap();
        registry
            .add_subsystem("init", now, EHR.parse().unwrap())
            .unwrap();
        registry
            .add_subsystem("init", now, DISPENSING.parse().unwrap())
            .unwrap();
        registry
            .add_service(
                "init",
                now,
                PATIENTS.parse().unwrap(),
                "patient records",
                true,
            )
            .unwrap();
        registry
            .add_service("init", now, PING.parse().unwrap(), "liveness", false)
            .unwrap();

        let mut agencies = Vec::new();
        for (member, name, system) in [
            (HOSPITAL, "hospital", EHR),
            (PHARMACY, "pharmacy", DISPENSING),
        ] {
            let keys = agency_keys(name);
            let system_key = keys.signer("information-system", None).unwrap();
            let system_cert = backbone_hsm::cert::self_signed_certificate(
                system_key.as_ref(),
                system,
                Duration::from_secs(86_400),
            )
            .unwrap();
            let tls = keys.signer("gateway-tls", None).unwrap();
            let signing_key = keys.signer("member-signing", None).unwrap();
            let peer_port = free_port();
            let gateway_id = format!("{member}/gw1");
            registry
                .add_gateway(
                    "init",
                    now,
                    gateway_id.parse().unwrap(),
                    &format!("127.0.0.1:{peer_port}"),
                )
                .unwrap();
            let subject = Subject {
                common_name: gateway_id.clone(),
                ..Subject::default()
            };
            registry
                .issue_tls_certificate(
                    "init",
                    now,
                    &gateway_id.parse().unwrap(),
                    csr_pem(tls.as_ref(), &subject).unwrap().as_bytes(),
                )
                .unwrap();
            let subject = Subject {
                common_name: member.into(),
                ..Subject::default()
            };
            registry
                .issue_signing_certificate(
                    "init",
                    now,
                    &member.parse().unwrap(),
                    csr_pem(signing_key.as_ref(), &subject).unwrap().as_bytes(),
                )
                .unwrap();
            let signing = Arc::new(BatchSigner::new(signing_key, BatchConfig::default()).unwrap());
            let agency_dir = dir.path().join(name);
            std::fs::create_dir_all(&agency_dir).unwrap();
            let conf = Arc::new(ConfClient::new(anchor.clone(), ClientConfig::default()));
            let wrapper = keys.wrapper("log-data-key").unwrap();
            let log_config = LogConfig {
                dir: agency_dir.join("log"),
                batch_interval: Duration::from_millis(500),
                max_timestamping_failure: Duration::from_secs(60),
                timestamping: Some(timestamping),
            };
            let log = Arc::new(MessageLog::open(log_config, wrapper).unwrap());
            log.spawn_stamper();
            agencies.push(Agency {
                gateway_id,
                keys,
                tls,
                signing,
                conf,
                log,
                gateway: None,
                peer_port,
                dir: agency_dir,
                system: system.to_owned(),
                system_key,
                system_cert,
                gateway_cert: Vec::new(),
            });
        }
        let pharmacy = agencies.pop().unwrap();
        let hospital = agencies.pop().unwrap();
        let backbone = Backbone {
            registry,
            anchor,
            hospital,
            pharmacy,
            timestamping,
            service,
            _ts: ts,
            dir,
        };
        backbone.publish(validity);
        backbone
    }

    /// Generates the next configuration version and hands it to both gateways.
    pub fn publish(&self, validity: Duration) {
        let now = SystemTime::now();
        let signed = self.registry.generate(now, validity).unwrap();
        let bytes = signed.encode();
        for agency in [&self.hospital, &self.pharmacy] {
            agency.conf.accept(&bytes, now).unwrap();
        }
    }

    /// Starts both gateways; the hospital serves [`PATIENTS`] and [`PING`] from the echo service.
    pub async fn start_gateways(&mut self) {
        self.start_gateways_tuned(|_, _| {}).await;
    }

    /// [`Backbone::start_gateways`], with each gateway's configuration changed by `tune` (given
    /// `"hospital"` or `"pharmacy"`) before it starts.
    pub async fn start_gateways_tuned(&mut self, tune: impl Fn(&str, &mut GatewayConfig)) {
        let service = self.service;
        for (agency, services) in [
            (
                &mut self.hospital,
                BTreeMap::from([
                    (PATIENTS.to_owned(), format!("http://{service}/fhir")),
                    (PING.to_owned(), format!("http://{service}/ping")),
                ]),
            ),
            (&mut self.pharmacy, BTreeMap::new()),
        ] {
            let mut config = GatewayConfig::new(
                agency.gateway_id.parse().unwrap(),
                "127.0.0.1:0".parse().unwrap(),
                format!("127.0.0.1:{}", agency.peer_port).parse().unwrap(),
                agency.dir.join("access-rights.json"),
            );
            config.services = services;
            config.timeout = Duration::from_secs(10);
            tune(
                if agency.dir.ends_with("hospital") {
                    "hospital"
                } else {
                    "pharmacy"
                },
                &mut config,
            );
            let trust = Trust::new(Arc::clone(&agency.conf), agency.gateway_id.parse().unwrap());
            let keys = GatewayKeys {
                tls: Arc::clone(&agency.tls),
                signing: Arc::clone(&agency.signing),
            };
            let running = RunningGateway::start(
                config,
                trust,
                keys,
                Arc::clone(&agency.log),
                prometheus::Registry::new(),
            )
            .await
            .unwrap();
            running
                .systems()
                .add_certificate(&agency.system.parse().unwrap(), &agency.system_cert)
                .unwrap();
            agency.gateway = Some(running);
            agency.gateway_cert = agency.tls_certificate();
        }
    }

    /// Grants `client` `method path` on `service` at the hospital.
    pub fn grant(&self, service: &str, client: &str, method: &str, path: &str) {
        let grant = Grant::new(
            service.parse().unwrap(),
            Grantee::Client(client.parse().unwrap()),
            method,
            path,
        )
        .unwrap();
        self.hospital
            .gateway
            .as_ref()
            .unwrap()
            .rights()
            .grant(grant)
            .unwrap();
    }

    /// The pharmacy's information system ([`DISPENSING`]) on its gateway's client port: HTTPS,
    /// its registered certificate, the gateway's registered TLS certificate pinned.
    pub fn pharmacy_client(&self) -> GatewayClient {
        self.pharmacy.client()
    }

    /// The hospital's information system ([`EHR`]) on its gateway's client port.
    pub fn hospital_client(&self) -> GatewayClient {
        self.hospital.client()
    }
}

impl Agency {
    /// This agency's information system on its gateway's client port, pinning the gateway's
    /// TLS certificate as registered now (as an information system pins `tls-cert.pem`).
    pub fn client(&self) -> GatewayClient {
        let gateway = self.gateway.as_ref().unwrap();
        GatewayClient::https(
            &gateway.client_addr().to_string(),
            Arc::clone(&self.system_key),
            self.system_cert.clone(),
            Arc::new(PinSet::new([self.gateway_cert.clone()])),
        )
        .unwrap()
    }

    /// The gateway's TLS certificate in the current configuration.
    pub fn tls_certificate(&self) -> Vec<u8> {
        let conf = self.conf.current(SystemTime::now()).unwrap();
        let gateway = conf.gateway(&self.gateway_id.parse().unwrap()).unwrap();
        gateway.tls_certificate.as_ref().unwrap().der().to_vec()
    }
}

/// One exchange through `client` to [`PING`] at the hospital, as the pharmacy's [`DISPENSING`],
/// with a body of `body` bytes: status, error type, body.
pub async fn ping(client: &GatewayClient, body: usize) -> (u16, String, String) {
    let answer = client
        .post(format!("/r1/{PING}/x"))
        .header("X-Road-Client", DISPENSING)
        .body("a".repeat(body))
        .send()
        .await
        .unwrap();
    (
        answer.status.as_u16(),
        answer.fault_type().unwrap_or_default().to_owned(),
        answer.text(),
    )
}
