//! A small backbone in one process for the portal's tests: a registry, a timestamping service,
//! and four agencies with software keys — a hospital serving patient records, a pharmacy calling
//! it, the citizen portal's own member, and a Health Insurance Fund whose gateway is registered
//! but never started (so it cannot answer). Each running agency has its own gateway and message
//! log; gateways talk over pinned TLS 1.3 on 127.0.0.1. The test OpenID provider and the portal
//! run on their own ports.
// Test fixture: failing loudly is the point.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

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
use backbone_hsm::software::SoftwareKeyStore;
use backbone_hsm::tls::PinSet;
use backbone_hsm::{KeyStore, KeyType, Signer};
use backbone_portal::history::BackboneConfig;
use backbone_portal::oidc::client::OidcConfig;
use backbone_portal::oidc::provider::{self, Provider, RegisteredClient};
use backbone_portal::oidc::transport::DEFAULT_CA_FILE;
use backbone_portal::server::{self, Portal, PortalConfig};
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
pub const PORTAL_MEMBER: &str = "EE/GOV/70000003";
pub const FUND: &str = "EE/GOV/70000004";
pub const EHR: &str = "EE/GOV/70000001/ehr";
pub const DISPENSING: &str = "EE/COM/10000001/dispensing";
pub const PORTAL: &str = "EE/GOV/70000003/portal";
pub const CLAIMS: &str = "EE/GOV/70000004/claims";
pub const PATIENTS: &str = "EE/GOV/70000001/ehr/patients";
/// Jaan Tamm, the first test person.
pub const PERSON: &str = "EE38001085718";
/// Mari-Liis Männik, the second.
pub const OTHER_PERSON: &str = "EE49002124277";
/// The pharmacist who accessed.
pub const PHARMACIST: &str = "EE47101010033";

/// One agency.
pub struct Agency {
    pub member: &'static str,
    pub gateway_id: String,
    pub tls: Arc<dyn Signer>,
    pub signing: Arc<BatchSigner>,
    pub conf: Arc<ConfClient>,
    pub log: Arc<MessageLog>,
    pub gateway: Option<RunningGateway>,
    pub peer_port: u16,
    pub dir: PathBuf,
}

/// The whole fixture.
pub struct Backbone {
    pub registry: Arc<Registry>,
    pub agencies: Vec<Agency>,
    pub ts: ts_service::Running,
    pub service: SocketAddr,
    pub dir: tempfile::TempDir,
}

/// A running portal with its test provider.
pub struct RunningPortal {
    pub url: String,
    pub provider_url: String,
    pub portal: Arc<Portal>,
    pub data_dir: PathBuf,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn timestamping(dir: &std::path::Path) -> (SocketAddr, ts_service::Running) {
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

/// The hospital's patient service: a small FHIR-ish JSON answer.
async fn patient_service() -> SocketAddr {
    let app = axum::Router::new().fallback(|| async {
        (
            [("content-type", "application/fhir+json")],
            "{\"resourceType\":\"Patient\"}",
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

impl Backbone {
    /// Registry, timestamping, four agencies; gateways of all but the fund started; access
    /// rights for the pharmacy to patient records and for the portal to each findUsage.
    pub async fn start() -> Backbone {
        let dir = tempfile::tempdir().unwrap();
        let (ts_addr, ts) = timestamping(dir.path()).await;
        let service = patient_service().await;
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
        for (member, name, subsystem) in [
            (HOSPITAL, "North Estonia Medical Centre", EHR),
            (PHARMACY, "Town Pharmacy", DISPENSING),
            (PORTAL_MEMBER, "Health Data Portal", PORTAL),
            (FUND, "Health Insurance Fund", CLAIMS),
        ] {
            registry
                .add_member("init", now, member.parse().unwrap(), name)
                .unwrap();
            registry
                .add_subsystem("init", now, subsystem.parse().unwrap())
                .unwrap();
        }
        registry
            .add_service(
                "init",
                now,
                PATIENTS.parse().unwrap(),
                "patient records",
                true,
            )
            .unwrap();
        for subsystem in [EHR, DISPENSING, CLAIMS] {
            registry
                .add_service(
                    "init",
                    now,
                    format!("{subsystem}/findUsage").parse().unwrap(),
                    "who used a person's data",
                    true,
                )
                .unwrap();
        }

        let mut agencies = Vec::new();
        for member in [HOSPITAL, PHARMACY, PORTAL_MEMBER, FUND] {
            let agency_dir = dir.path().join(member.replace('/', "-"));
            let keys: Arc<dyn KeyStore> =
                Arc::new(SoftwareKeyStore::open(agency_dir.join("keys")).unwrap());
            keys.generate("gateway-tls", KeyType::EcP256).unwrap();
            keys.generate("member-signing", KeyType::EcP256).unwrap();
            keys.generate_wrapping_key("log-data-key").unwrap();
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
            let conf = Arc::new(ConfClient::new(anchor.clone(), ClientConfig::default()));
            let log_config = LogConfig {
                dir: agency_dir.join("log"),
                batch_interval: Duration::from_millis(300),
                max_timestamping_failure: Duration::from_secs(60),
                timestamping: Some(ts_addr),
            };
            let log = Arc::new(
                MessageLog::open(log_config, keys.wrapper("log-data-key").unwrap()).unwrap(),
            );
            log.spawn_stamper();
            agencies.push(Agency {
                member,
                gateway_id,
                tls,
                signing,
                conf,
                log,
                gateway: None,
                peer_port,
                dir: agency_dir,
            });
        }
        let signed = registry
            .generate(SystemTime::now(), Duration::from_secs(3600))
            .unwrap()
            .encode();
        for agency in &agencies {
            agency.conf.accept(&signed, SystemTime::now()).unwrap();
        }
        let mut backbone = Backbone {
            registry,
            agencies,
            ts,
            service,
            dir,
        };
        for i in 0..3 {
            backbone.start_gateway(i).await;
        }
        backbone.grant(HOSPITAL, PATIENTS, DISPENSING, "/**");
        backbone.grant(HOSPITAL, &format!("{EHR}/findUsage"), PORTAL, "/");
        backbone.grant(PHARMACY, &format!("{DISPENSING}/findUsage"), PORTAL, "/");
        backbone
    }

    async fn start_gateway(&mut self, i: usize) {
        let service = self.service;
        let agency = &mut self.agencies[i];
        let mut config = GatewayConfig::new(
            agency.gateway_id.parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
            format!("127.0.0.1:{}", agency.peer_port).parse().unwrap(),
            agency.dir.join("access-rights.json"),
        );
        if agency.member == HOSPITAL {
            config.services =
                BTreeMap::from([(PATIENTS.to_owned(), format!("http://{service}/fhir"))]);
        }
        config.timeout = Duration::from_secs(10);
        let trust = Trust::new(Arc::clone(&agency.conf), agency.gateway_id.parse().unwrap());
        let keys = GatewayKeys {
            tls: Arc::clone(&agency.tls),
            signing: Arc::clone(&agency.signing),
        };
        agency.gateway = Some(
            RunningGateway::start(
                config,
                trust,
                keys,
                Arc::clone(&agency.log),
                prometheus::Registry::new(),
            )
            .await
            .unwrap(),
        );
    }

    /// `client`'s information system on `member`'s gateway: a key of its own, its self-signed
    /// certificate registered on the gateway, the gateway's registered TLS certificate pinned.
    pub fn system(&self, member: &str, client: &str) -> GatewayClient {
        let agency = self.agency(member);
        let gateway = agency.gateway.as_ref().unwrap();
        let keys = SoftwareKeyStore::open(agency.dir.join("system-keys")).unwrap();
        let label = client.replace('/', "-");
        if keys.public_key(&label).is_err() {
            keys.generate(&label, KeyType::EcP256).unwrap();
        }
        let key = keys.signer(&label, None).unwrap();
        let cert = backbone_hsm::cert::self_signed_certificate(
            key.as_ref(),
            client,
            Duration::from_secs(86_400),
        )
        .unwrap();
        gateway
            .systems()
            .add_certificate(&client.parse().unwrap(), &cert)
            .unwrap();
        let conf = agency.conf.current(SystemTime::now()).unwrap();
        let registered = conf
            .gateway(&agency.gateway_id.parse().unwrap())
            .unwrap()
            .tls_certificate
            .as_ref()
            .unwrap()
            .der()
            .to_vec();
        GatewayClient::https(
            &gateway.client_addr().to_string(),
            key,
            cert,
            Arc::new(PinSet::new([registered])),
        )
        .unwrap()
    }

    pub fn agency(&self, member: &str) -> &Agency {
        self.agencies.iter().find(|a| a.member == member).unwrap()
    }

    fn grant(&self, at: &str, service: &str, client: &str, path: &str) {
        let grant = Grant::new(
            service.parse().unwrap(),
            Grantee::Client(client.parse().unwrap()),
            "GET",
            path,
        )
        .unwrap();
        self.agency(at)
            .gateway
            .as_ref()
            .unwrap()
            .rights()
            .grant(grant)
            .unwrap();
    }

    /// The pharmacy reads `person`'s record for `purpose`, as `user` if given.
    pub async fn access(&self, person: &str, purpose: &str, user: Option<&str>) {
        let system = self.system(PHARMACY, DISPENSING);
        let mut request = system
            .get(format!("/r1/{PATIENTS}/Patient/1"))
            .header("X-Road-Client", DISPENSING)
            .header("X-Backbone-Data-Subject", person)
            .header("X-Backbone-Purpose-Of-Use", purpose);
        if let Some(user) = user {
            request = request.header("X-Road-UserId", user);
        }
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.text());
    }

    /// Stamps every running agency's log now.
    pub async fn stamp(&self) {
        for agency in self.agencies.iter().filter(|a| a.gateway.is_some()) {
            agency.log.stamp_now().await.unwrap();
        }
    }

    /// Starts the test OpenID provider and a portal behind the portal agency's gateway, with
    /// its data in `data_dir` and sessions ending after `idle`.
    pub async fn portal(&self, data_dir: PathBuf, idle: Duration) -> RunningPortal {
        let agency = self.agency(PORTAL_MEMBER);
        let gateway = self.system(PORTAL_MEMBER, PORTAL);
        start_portal(
            Arc::clone(&agency.conf),
            gateway,
            data_dir,
            idle,
            vec![self.ts.handle.certificate().clone()],
        )
        .await
    }
}

/// Starts the test provider and a portal reading `conf` and calling through `gateway`.
pub async fn start_portal(
    conf: Arc<ConfClient>,
    gateway: GatewayClient,
    data_dir: PathBuf,
    idle: Duration,
    certificates: Vec<backbone_timestamping_verify::publications_file::CertificateRecord>,
) -> RunningPortal {
    let portal_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let provider_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    // "localhost": browsers keep Secure cookies for it over plain HTTP.
    let url = format!(
        "http://localhost:{}",
        portal_listener.local_addr().unwrap().port()
    );
    let provider_url = format!(
        "http://localhost:{}",
        provider_listener.local_addr().unwrap().port()
    );
    let redirect_uri = format!("{url}/oidc/callback");
    let client = RegisteredClient {
        id: "portal".into(),
        secret: "portal-secret".into(),
        redirect_uris: vec![redirect_uri.clone()],
    };
    let provider = Arc::new(Provider::new(&provider_url, vec![client]).unwrap());
    let app = provider::router(provider);
    tokio::spawn(async move { axum::serve(provider_listener, app).await });
    let config = PortalConfig {
        backbone: BackboneConfig {
            gateway,
            client: PORTAL.into(),
            limit: 500,
            timeout: Duration::from_secs(5),
        },
        oidc: OidcConfig {
            issuer: provider_url.clone(),
            client_id: "portal".into(),
            client_secret: "portal-secret".into(),
            redirect_uri,
            ca_file: DEFAULT_CA_FILE.into(),
        },
        data_dir: data_dir.clone(),
        idle_timeout: idle,
        history_cache: Duration::from_secs(2),
    };
    let trust = backbone_portal::proof::Trust {
        certificates,
        publications: None,
    };
    let portal = Arc::new(Portal::new(config, conf, trust).unwrap());
    // Served as `backbone portal serve` serves it: the shared accept loop and its limits.
    tokio::spawn(server::serve(
        portal_listener,
        Arc::clone(&portal),
        std::future::pending(),
    ));
    RunningPortal {
        url,
        provider_url,
        portal,
        data_dir,
    }
}

/// A plain HTTP client that keeps the portal's cookies and follows no redirect by itself.
pub struct Browser {
    http: reqwest::Client,
    pub cookies: BTreeMap<String, String>,
}

/// A response, read.
pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
    pub bytes: Vec<u8>,
}

impl Page {
    pub fn location(&self) -> String {
        self.headers["location"].to_str().unwrap().to_owned()
    }

    /// The value of the first `name="…" value="…"` hidden input.
    pub fn hidden(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no {name} in {}", self.body))
            + marker.len();
        self.body[start..].split('"').next().unwrap().to_owned()
    }
}

impl Browser {
    pub fn new() -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: BTreeMap::new(),
        }
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let cookie: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let request = if cookie.is_empty() {
            request
        } else {
            request.header("cookie", cookie.join("; "))
        };
        let response = request.send().await.unwrap();
        for set in response.headers().get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let (pair, _) = set.split_once(';').unwrap_or((set, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || set.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap().to_vec();
        Page {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
            bytes,
        }
    }

    pub async fn get(&mut self, url: &str) -> Page {
        let request = self.http.get(url);
        self.send(request).await
    }

    pub async fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Page {
        let request = self
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form).unwrap());
        self.send(request).await
    }

    /// Signs in as `person_code` (without `EE`) through the test provider; the history page.
    pub async fn sign_in(&mut self, portal: &RunningPortal, person_code: &str) -> Page {
        let login = self.get(&format!("{}/login", portal.url)).await;
        assert_eq!(login.status, 303, "{}", login.body);
        let picker = self.get(&login.location()).await;
        assert_eq!(picker.status, 200, "{}", picker.body);
        let request = picker.hidden("request");
        let back = self
            .post(
                &format!("{}/authorize", portal.provider_url),
                &[("request", &request), ("person", person_code)],
            )
            .await;
        assert_eq!(back.status, 303, "{}", back.body);
        let callback = self.get(&back.location()).await;
        assert_eq!(
            (callback.status, callback.location().as_str()),
            (303, "/history"),
            "{}",
            callback.body
        );
        self.get(&format!("{}/history", portal.url)).await
    }
}

/// The `backbone` binary built beside the test binaries, for checks with the real CLI.
pub fn backbone_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let binary = exe.parent().unwrap().parent().unwrap().join("backbone");
    assert!(
        binary.exists(),
        "{} is missing: build with `cargo build --workspace --all-targets`",
        binary.display()
    );
    binary
}
