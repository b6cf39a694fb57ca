//! The backbone `backbone bench exchange` loads, started in this process on 127.0.0.1: a
//! registry (memory store, software keys), a timestamping service (software keys, RocksDB
//! calendar), and two agencies — a hospital that provides a service and a pharmacy that calls it —
//! each with its keys in a SoftHSM2 token or a software key store, its message log (RocksDB,
//! stamped every [`Setup::batch_interval`]) and its gateway. The hospital's service is the
//! benchmark's echo service.
//!
//! ```text
//!  load ─▶ pharmacy gateway (client port) ══ TLS 1.3, pinned ══▶ hospital gateway ─▶ echo
//!               │ message log                                       │ message log
//!               └────────── batch roots ─▶ timestamping ◀───────────┘
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backbone_gateway::access::{Grant, Grantee};
use backbone_gateway::conf::Trust;
use backbone_gateway::log::{DEFAULT_MAX_TIMESTAMPING_FAILURE, LogConfig, LogMetrics, MessageLog};
use backbone_gateway::service::{GatewayConfig, GatewayKeys, RunningGateway};
use backbone_hsm::batch::{BatchConfig, BatchSigner};
use backbone_hsm::cert::{Subject, csr_pem};
use backbone_hsm::config::{
    Config as KeyStoreConfig, DEFAULT_RECONNECT_ATTEMPTS, DEFAULT_SESSIONS, Pkcs11Config,
};
use backbone_hsm::software::SoftwareKeyStore;
use backbone_hsm::{KeyStore, KeyType, Pin, Signer};
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

use crate::Error;

/// The SoftHSM2 module on Debian and Ubuntu.
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// The provider: a hospital.
const HOSPITAL: &str = "EE/GOV/70000001";
/// The caller: a pharmacy.
const PHARMACY: &str = "EE/COM/10000001";
const EHR: &str = "EE/GOV/70000001/ehr";
/// The calling subsystem, sent as `X-Road-Client`.
pub const CLIENT: &str = "EE/COM/10000001/dispensing";
/// A service the registry marks as carrying personal health data.
pub const PATIENTS: &str = "EE/GOV/70000001/ehr/patients";
/// A service without health data.
pub const PING: &str = "EE/GOV/70000001/ehr/ping";

/// Both tokens' user PIN; the tokens exist only for the run.
const USER_PIN: &str = "bench-user-1234";
const SO_PIN: &str = "bench-so-5678";

/// How long the benchmark's global configuration stays valid.
const CONF_VALIDITY: Duration = Duration::from_secs(6 * 3600);

/// Where the agencies' keys live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyBackend {
    /// A fresh SoftHSM2 token per agency (PKCS#11), deleted at the end.
    Softhsm,
    /// Software keys (ring) in the temporary directory.
    Software,
}

/// How the agencies' gateways are set up.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    /// Where their keys live.
    pub keys: KeyBackend,
    /// How their batch signers gather signatures.
    pub signing: BatchConfig,
    /// How often their message logs are stamped.
    pub batch_interval: Duration,
}

/// [`CLIENT`] as a client id.
///
/// # Errors
///
/// Never for the constant; the type says it could.
pub fn client_id() -> Result<backbone_registry::id::ClientId, Error> {
    parse(CLIENT)
}

/// One agency's keys, log and gateway.
pub struct Agency {
    /// Its gateway's TLS key.
    pub tls: Arc<dyn Signer>,
    /// Its gateway's TLS certificate as the registry issued it (DER).
    pub tls_certificate: Vec<u8>,
    /// Its message log.
    pub log: Arc<MessageLog>,
    /// Its running gateway.
    pub gateway: RunningGateway,
    /// The metrics of its gateway, message log and batch signer.
    pub metrics: prometheus::Registry,
}

/// The running backbone.
pub struct Backbone {
    /// The provider's agency.
    pub hospital: Agency,
    /// The caller's agency.
    pub pharmacy: Agency,
    /// How the pharmacy's information system connects to its gateway's client port: TLS 1.3,
    /// its certificate registered for [`CLIENT`], the gateway's certificate pinned.
    pub system_tls: tokio_rustls::TlsConnector,
    timestamping: ts_service::Running,
    timestamping_server: tokio::task::JoinHandle<()>,
    tokens: Vec<String>,
    dir: PathBuf,
}

// === impl Backbone ===

impl Backbone {
    /// Starts everything set up as `setup` says, the service at `service` behind
    /// the hospital's gateway (as both [`PATIENTS`] and [`PING`]), and grants the pharmacy's
    /// [`CLIENT`] every method and path on both.
    ///
    /// # Errors
    ///
    /// Any part that cannot be created or started, named.
    pub async fn start(setup: Setup, service: SocketAddr) -> Result<Backbone, Error> {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "backbone-bench-exchange-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).map_err(Error::io("create directory", &dir))?;
        let mut tokens = Vec::new();
        match Self::start_in(&dir, setup, service, &mut tokens).await {
            Ok(backbone) => Ok(backbone),
            Err(e) => {
                cleanup(&dir, &tokens);
                Err(e)
            }
        }
    }

    async fn start_in(
        dir: &Path,
        setup: Setup,
        service: SocketAddr,
        tokens: &mut Vec<String>,
    ) -> Result<Backbone, Error> {
        let (timestamping_addr, timestamping, timestamping_server) =
            start_timestamping(dir).await?;
        let registry_keys = SoftwareKeyStore::open(dir.join("registry-keys"))
            .map_err(Error::hsm("cannot open the registry's key store"))?;
        let ca = generated(&registry_keys, "ca")?;
        let conf_signer = generated(&registry_keys, "conf")?;
        let instance = InstanceId::new("EE").map_err(registry_failed("instance id"))?;
        let now = SystemTime::now();
        let registry = Registry::create(
            Arc::new(MemoryStore::new()),
            instance.clone(),
            ca,
            Arc::clone(&conf_signer),
            "bench",
            now,
        )
        .map_err(registry_failed("cannot create the registry"))?;
        let anchor = Anchor::new(
            instance,
            conf_signer.algorithm(),
            conf_signer.public_key().clone(),
            vec!["http://127.0.0.1:1/globalconf".into()],
        )
        .map_err(registry_failed("anchor"))?;
        register_members(&registry, now)?;

        let mut prepared = Vec::new();
        for (member, name) in [(HOSPITAL, "hospital"), (PHARMACY, "pharmacy")] {
            let keys = agency_keys(setup.keys, dir, name, tokens)?;
            prepared.push(PreparedAgency::new(
                &registry,
                &anchor,
                keys,
                (member, name),
                dir,
                timestamping_addr,
                setup,
                now,
            )?);
        }
        let encoded = registry
            .generate(now, CONF_VALIDITY)
            .map_err(registry_failed("cannot generate the global configuration"))?
            .encode();
        for agency in &prepared {
            agency.conf.accept(&encoded, now).map_err(registry_failed(
                "the gateway refuses the global configuration",
            ))?;
        }
        let mut agencies = Vec::new();
        for (agency, services) in prepared.into_iter().zip([
            BTreeMap::from([
                (PATIENTS.to_owned(), format!("http://{service}/fhir")),
                (PING.to_owned(), format!("http://{service}/ping")),
            ]),
            BTreeMap::new(),
        ]) {
            agencies.push(agency.start(services).await?);
        }
        let pharmacy = agencies
            .pop()
            .ok_or(Error::Unreachable("two agencies were started"))?;
        let hospital = agencies
            .pop()
            .ok_or(Error::Unreachable("two agencies were started"))?;
        for service in [PATIENTS, PING] {
            let grant = Grant::new(parse(service)?, Grantee::Client(parse(CLIENT)?), "*", "/**")
                .map_err(|e| Error::Check(format!("grant on {service}: {e}")))?;
            hospital
                .gateway
                .rights()
                .grant(grant)
                .map_err(|e| Error::Check(format!("grant on {service}: {e}")))?;
        }
        // The pharmacy's information system: a software key of its own (an information system's
        // key is not the gateway's), its self-signed certificate registered for CLIENT.
        let system_keys = SoftwareKeyStore::open(dir.join("system-keys"))
            .map_err(Error::hsm("cannot open the information system's key store"))?;
        let system_key = generated(&system_keys, "system")?;
        let system_cert = backbone_hsm::cert::self_signed_certificate(
            system_key.as_ref(),
            CLIENT,
            Duration::from_secs(86_400),
        )
        .map_err(Error::hsm(
            "the information system's certificate".to_owned(),
        ))?;
        pharmacy
            .gateway
            .systems()
            .add_certificate(&parse(CLIENT)?, &system_cert)
            .map_err(|e| Error::Check(format!("information system: {e}")))?;
        let mut system_tls = backbone_hsm::tls::client_config(
            system_key,
            vec![system_cert],
            Arc::new(backbone_hsm::tls::PinSet::new([pharmacy
                .tls_certificate
                .clone()])),
        )
        .map_err(|e| Error::Check(format!("information system TLS: {e}")))?;
        system_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Backbone {
            hospital,
            pharmacy,
            system_tls: tokio_rustls::TlsConnector::from(Arc::new(system_tls)),
            timestamping,
            timestamping_server,
            tokens: std::mem::take(tokens),
            dir: dir.to_owned(),
        })
    }

    /// Stops the gateways, the logs (each stamping what is left) and the timestamping service,
    /// then removes the temporary directory and the SoftHSM2 tokens.
    pub async fn stop(self) {
        for agency in [self.hospital, self.pharmacy] {
            agency.gateway.shutdown().await;
            if let Err(error) = agency.log.shutdown().await {
                tracing::warn!(%error, "message log did not stamp its last records");
            }
            drop(agency.log);
        }
        self.timestamping_server.abort();
        let _ = self.timestamping_server.await;
        self.timestamping.shutdown().await;
        cleanup(&self.dir, &self.tokens);
    }
}

/// Removes the directory and deletes the tokens (`softhsm2-util --delete-token`).
fn cleanup(dir: &Path, tokens: &[String]) {
    let _ = std::fs::remove_dir_all(dir);
    for label in tokens {
        let deleted = std::process::Command::new("softhsm2-util")
            .args(["--delete-token", "--token", label])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        if !deleted.is_ok_and(|s| s.success()) {
            tracing::warn!(token = %label, "cannot delete the benchmark's SoftHSM2 token; remove it with softhsm2-util --delete-token");
        }
    }
}

/// An agency whose keys, certificates, configuration client and log are ready.
struct PreparedAgency {
    gateway_id: String,
    tls: Arc<dyn Signer>,
    tls_certificate: Vec<u8>,
    signing: Arc<BatchSigner>,
    conf: Arc<ConfClient>,
    log: Arc<MessageLog>,
    metrics: prometheus::Registry,
    peer_port: u16,
    dir: PathBuf,
}

impl PreparedAgency {
    #[allow(clippy::too_many_arguments)]
    fn new(
        registry: &Registry,
        anchor: &Anchor,
        keys: Arc<dyn KeyStore>,
        (member, name): (&str, &str),
        dir: &Path,
        timestamping: SocketAddr,
        setup: Setup,
        now: SystemTime,
    ) -> Result<Self, Error> {
        let tls = generated(keys.as_ref(), "gateway-tls")?;
        let signing_key = generated(keys.as_ref(), "member-signing")?;
        keys.generate_wrapping_key("gateway-log-key")
            .map_err(Error::hsm(format!("cannot generate {name}'s log key")))?;
        let wrapper = keys
            .wrapper("gateway-log-key")
            .map_err(Error::hsm(format!("cannot open {name}'s log key")))?;
        let peer_port = free_port()?;
        let gateway_id = format!("{member}/gw1");
        registry
            .add_gateway(
                "bench",
                now,
                parse(&gateway_id)?,
                &format!("127.0.0.1:{peer_port}"),
            )
            .map_err(registry_failed("cannot register a gateway"))?;
        let subject = Subject {
            common_name: gateway_id.clone(),
            ..Subject::default()
        };
        let csr = csr_pem(tls.as_ref(), &subject)
            .map_err(Error::hsm(format!("cannot write {name}'s TLS CSR")))?;
        let tls_certificate = registry
            .issue_tls_certificate("bench", now, &parse(&gateway_id)?, csr.as_bytes())
            .map_err(registry_failed("cannot issue a TLS certificate"))?
            .der()
            .to_vec();
        let subject = Subject {
            common_name: member.into(),
            ..Subject::default()
        };
        let csr = csr_pem(signing_key.as_ref(), &subject)
            .map_err(Error::hsm(format!("cannot write {name}'s signing CSR")))?;
        registry
            .issue_signing_certificate("bench", now, &parse(member)?, csr.as_bytes())
            .map_err(registry_failed("cannot issue a signing certificate"))?;
        let metrics = prometheus::Registry::new();
        let metrics_failed = |e: prometheus::Error| Error::Check(format!("{name}'s metrics: {e}"));
        let hsm_metrics = backbone_hsm::Metrics::register(&metrics).map_err(metrics_failed)?;
        let log_metrics = LogMetrics::register(&metrics).map_err(metrics_failed)?;
        let signing = Arc::new(
            BatchSigner::with_metrics(signing_key, setup.signing, &hsm_metrics)
                .map_err(Error::hsm("batch signer"))?,
        );
        let dir = dir.join(name);
        let log_config = LogConfig {
            dir: dir.join("log"),
            batch_interval: setup.batch_interval,
            max_timestamping_failure: DEFAULT_MAX_TIMESTAMPING_FAILURE.max(setup.batch_interval),
            timestamping: Some(timestamping),
        };
        let log = Arc::new(
            MessageLog::open_with_metrics(log_config, wrapper, log_metrics)
                .map_err(|e| Error::Check(format!("{name}'s message log: {e}")))?,
        );
        log.spawn_stamper();
        let conf = Arc::new(ConfClient::new(anchor.clone(), ClientConfig::default()));
        Ok(PreparedAgency {
            gateway_id,
            tls,
            tls_certificate,
            signing,
            conf,
            log,
            metrics,
            peer_port,
            dir,
        })
    }

    async fn start(self, services: BTreeMap<String, String>) -> Result<Agency, Error> {
        let id = parse(&self.gateway_id)?;
        let client_listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let peer_listen = SocketAddr::from(([127, 0, 0, 1], self.peer_port));
        let mut config = GatewayConfig::new(
            id,
            client_listen,
            peer_listen,
            self.dir.join("access-rights.json"),
        );
        config.services = services;
        // For `--compare-plain-client`: the plain listener for information systems.
        config.client_plain_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        let trust = Trust::new(Arc::clone(&self.conf), parse(&self.gateway_id)?);
        let keys = GatewayKeys {
            tls: Arc::clone(&self.tls),
            signing: self.signing,
        };
        let gateway = RunningGateway::start(
            config,
            trust,
            keys,
            Arc::clone(&self.log),
            self.metrics.clone(),
        )
        .await
        .map_err(|e| Error::Check(format!("gateway {}: {e}", self.gateway_id)))?;
        Ok(Agency {
            tls: self.tls,
            tls_certificate: self.tls_certificate,
            log: self.log,
            gateway,
            metrics: self.metrics,
        })
    }
}

fn register_members(registry: &Registry, now: SystemTime) -> Result<(), Error> {
    let failed = registry_failed("cannot register the benchmark's members");
    registry
        .add_member_class("bench", now, parse("GOV")?, "government agencies")
        .map_err(&failed)?;
    registry
        .add_member_class("bench", now, parse("COM")?, "companies")
        .map_err(&failed)?;
    registry
        .add_member(
            "bench",
            now,
            parse(HOSPITAL)?,
            "North Estonia Medical Centre",
        )
        .map_err(&failed)?;
    registry
        .add_member("bench", now, parse(PHARMACY)?, "Town Pharmacy")
        .map_err(&failed)?;
    registry
        .add_subsystem("bench", now, parse(EHR)?)
        .map_err(&failed)?;
    registry
        .add_subsystem("bench", now, parse(CLIENT)?)
        .map_err(&failed)?;
    registry
        .add_service("bench", now, parse(PATIENTS)?, "patient records", true)
        .map_err(&failed)?;
    registry
        .add_service("bench", now, parse(PING)?, "liveness", false)
        .map_err(&failed)?;
    Ok(())
}

/// The timestamping service with software keys, a RocksDB calendar in `dir`, one-second rounds.
async fn start_timestamping(
    dir: &Path,
) -> Result<(SocketAddr, ts_service::Running, tokio::task::JoinHandle<()>), Error> {
    let keys = SoftwareKeyStore::open(dir.join("timestamping-keys"))
        .map_err(Error::hsm("cannot open the timestamping key store"))?;
    let ca = generated(&keys, "timestamping-ca")?;
    let key = generated(&keys, "timestamping")?;
    let failed = |what: &'static str| {
        move |e: backbone_timestamping::Error| Error::Check(format!("{what}: {e}"))
    };
    let not_before = SystemTime::now() - Duration::from_secs(3600);
    let (_, certificate) = issue_certificates(ca.as_ref(), key.as_ref(), not_before, 1)
        .map_err(failed("cannot issue the calendar certificate"))?;
    let signer = CalendarSigner::new(key, &certificate)
        .map_err(failed("cannot use the calendar certificate"))?;
    let calendar_dir = dir.join("calendar");
    let rocks = RocksStore::open(&calendar_dir).map_err(|e| {
        Error::Check(format!(
            "cannot open the calendar at {}: {e}",
            calendar_dir.display()
        ))
    })?;
    let store: Box<dyn CalendarStore> = Box::new(rocks);
    let calendar = Calendar::open(store).map_err(failed("cannot open the calendar"))?;
    let config = ts_service::Config {
        publication_interval: 3600,
        ..ts_service::Config::default()
    };
    let running = ts_service::spawn(calendar, signer, config)
        .map_err(failed("cannot start the timestamping service"))?;
    let app = ts_http::router(
        running.handle.clone(),
        PduAuth {
            login_id: "anon".into(),
            key: b"anon".to_vec(),
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Error::Check(format!("cannot listen: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Check(format!("cannot listen: {e}")))?;
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, running, server))
}

/// The agency's key store: a fresh SoftHSM2 token (its label pushed to `tokens`) or software
/// keys in `dir`.
fn agency_keys(
    backend: KeyBackend,
    dir: &Path,
    name: &str,
    tokens: &mut Vec<String>,
) -> Result<Arc<dyn KeyStore>, Error> {
    match backend {
        KeyBackend::Software => {
            let keys = SoftwareKeyStore::open(dir.join(format!("{name}-keys")))
                .map_err(Error::hsm(format!("cannot open {name}'s key store")))?;
            Ok(Arc::new(keys))
        }
        KeyBackend::Softhsm => {
            let mut label = format!("bench-{}-{name}", std::process::id());
            label.truncate(backbone_hsm::pkcs11::MAX_TOKEN_LABEL_LEN);
            let module = PathBuf::from(SOFTHSM_MODULE);
            backbone_hsm::pkcs11::init_token(
                &module,
                &label,
                &Pin::new(SO_PIN),
                &Pin::new(USER_PIN),
            )
            .map_err(Error::hsm(format!(
                "cannot create SoftHSM2 token {label} (SOFTHSM2_CONF names the token directory)"
            )))?;
            tokens.push(label.clone());
            let config = Pkcs11Config {
                module,
                token_label: label.clone(),
                sessions: DEFAULT_SESSIONS,
                reconnect_attempts: DEFAULT_RECONNECT_ATTEMPTS,
            };
            backbone_hsm::config::open(&KeyStoreConfig::Pkcs11(config), Some(Pin::new(USER_PIN)))
                .map_err(Error::hsm(format!("cannot open token {label}")))
        }
    }
}

/// A new EC P-256 key `label` in `keys`.
fn generated(keys: &dyn KeyStore, label: &str) -> Result<Arc<dyn Signer>, Error> {
    keys.generate(label, KeyType::EcP256)
        .map_err(Error::hsm(format!("cannot generate key '{label}'")))?;
    keys.signer(label, None)
        .map_err(Error::hsm(format!("cannot open key '{label}'")))
}

fn parse<T: std::str::FromStr<Err = backbone_registry::Error>>(text: &str) -> Result<T, Error> {
    text.parse()
        .map_err(|e| Error::Check(format!("identifier {text:?}: {e}")))
}

fn registry_failed(what: &'static str) -> impl Fn(backbone_registry::Error) -> Error {
    move |e| Error::Check(format!("{what}: {e}"))
}

/// A free TCP port on 127.0.0.1: the configuration names each gateway's peer address before the
/// gateway binds it.
fn free_port() -> Result<u16, Error> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::Check(format!("cannot find a free port: {e}")))?;
    Ok(listener
        .local_addr()
        .map_err(|e| Error::Check(format!("cannot find a free port: {e}")))?
        .port())
}
