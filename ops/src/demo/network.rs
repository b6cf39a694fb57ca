//! The backbone of the demo, in this process: the registry (its records in `DIR/registry`, its
//! signed global configuration served over HTTP), the timestamping service (`DIR/timestamping`),
//! and one gateway per agency (`DIR/<agency>/`: message log, access rights, configuration cache),
//! each fetching the configuration from the registry like a real one, with the agency's FHIR
//! service behind it; last, the citizen portal behind the portal member's gateway
//! ([`super::portal`]).
//!
//! ```text
//!  registry ── GET /globalconf ──▶ ConfClient ─▶ gateway (client port: /r1, /metrics)
//!     ▲ records, CA                                  │ peer port (TLS 1.3, pinned)
//!     │                                              ├─ message log ─▶ timestamping (/sign)
//!  first run: members, subsystems, services,         └─ FHIR service (/fhir)
//!  gateways, certificates from the agencies' keys
//! ```
//!
//! A second run on the same directory opens the same records, keys and logs; each gateway listens
//! on the peer address registered in the first run.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backbone_gateway::access::{Grant, Grantee};
use backbone_gateway::conf::Trust;
use backbone_gateway::connect::GatewayClient;
use backbone_gateway::log::{LogConfig, LogMetrics, MessageLog};
use backbone_gateway::service::{GatewayConfig, GatewayKeys, RunningGateway};
use backbone_hsm::batch::BatchSigner;
use backbone_hsm::cert::{Subject, csr_pem};
use backbone_hsm::tls::PinSet;
use backbone_hsm::{KeyStore, KeyType, Signer};
use backbone_registry::Registry;
use backbone_registry::anchor::Anchor;
use backbone_registry::client::fetch::{self, FetchConfig};
use backbone_registry::client::{ClientConfig, ConfClient};
use backbone_registry::id::InstanceId;
use backbone_registry::server::{ServeConfig, Server};
use backbone_registry::store::rocks::RocksStore as RegistryStore;
use backbone_timestamping::authority::{CalendarSigner, issue_certificates};
use backbone_timestamping::calendar::rocks::RocksStore as CalendarRocks;
use backbone_timestamping::calendar::{Calendar, CalendarStore};
use backbone_timestamping::http::{self as ts_http, PduAuth};
use backbone_timestamping::service as ts_service;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use backbone_portal::oidc::provider::TestPerson;

use super::data::Citizen;
use super::fhir::{self, FhirService};
use super::keys::Keys;
use super::portal::{self, DemoPortal};
use crate::Error;
use crate::gateway::{
    CONF_CACHE_FILE, LOG_KEY_LABEL, RIGHTS_FILE, SIGNING_KEY_LABEL, TLS_KEY_LABEL,
};

/// The instance.
pub const INSTANCE: &str = "EE";
/// Who the registry's audit log names for the demo's changes.
const ACTOR: &str = "backbone-demo";
/// The service code of every agency's FHIR service.
pub const FHIR_SERVICE: &str = "fhir";
/// Label of each agency's information-system key in its key store.
pub const SYSTEM_KEY_LABEL: &str = "information-system";
/// The calendar signing certificate, for `backbone ksi verify --cert`.
pub const CALENDAR_CERT_FILE: &str = "calendar-cert.der";

/// What an agency does in the scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Receives referrals; reads the family doctor's records in an emergency.
    Hospital,
    /// Refers, prescribes.
    FamilyDoctor,
    /// Dispenses, claims reimbursement.
    Pharmacy,
    /// Reimburses.
    Insurer,
    /// The citizen portal's member: calls findUsage everywhere, provides nothing.
    Portal,
}

/// One demo agency: fictional.
#[derive(Debug)]
pub struct Agency {
    /// Directory and key store name.
    pub slug: &'static str,
    /// The member's name.
    pub name: &'static str,
    /// `INSTANCE/CLASS/CODE`.
    pub member: &'static str,
    /// Its subsystem code.
    pub subsystem: &'static str,
    /// Its part in the scenario.
    pub role: Role,
}

/// The agencies, in port order (the portal's gateway is fifth).
pub const AGENCIES: [Agency; 5] = [
    Agency {
        slug: "hospital",
        name: "Demo Central Hospital",
        member: "EE/GOV/70000001",
        subsystem: "ehr",
        role: Role::Hospital,
    },
    Agency {
        slug: "family-doctor",
        name: "Demo Family Practice",
        member: "EE/COM/10000002",
        subsystem: "practice",
        role: Role::FamilyDoctor,
    },
    Agency {
        slug: "pharmacy",
        name: "Demo Pharmacy",
        member: "EE/COM/10000003",
        subsystem: "pharmacy",
        role: Role::Pharmacy,
    },
    Agency {
        slug: "health-insurance-fund",
        name: "Demo Health Insurance Fund",
        member: "EE/GOV/70000004",
        subsystem: "claims",
        role: Role::Insurer,
    },
    Agency {
        slug: "portal",
        name: "Demo Citizen Portal",
        member: "EE/GOV/70000005",
        subsystem: "portal",
        role: Role::Portal,
    },
];

/// Who may call what: (client role, provider role, method, path).
pub const GRANTS: [(Role, Role, &str, &str); 5] = [
    (
        Role::FamilyDoctor,
        Role::Hospital,
        "POST",
        "/DocumentReference",
    ),
    (
        Role::FamilyDoctor,
        Role::Pharmacy,
        "POST",
        "/MedicationRequest",
    ),
    (
        Role::Pharmacy,
        Role::FamilyDoctor,
        "GET",
        "/MedicationRequest",
    ),
    (Role::Pharmacy, Role::Insurer, "POST", "/Claim"),
    (Role::Hospital, Role::FamilyDoctor, "GET", "/Observation"),
];

/// Listening addresses; port 0 is any free port.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    /// The first port: registry; +1 timestamping; +10.. gateways' client ports; +20.. peer
    /// ports; +30.. FHIR services; +40 the citizen portal, +41 its test OpenID provider. 0 for
    /// any free ports.
    pub base: u16,
}

/// Settings of one run.
#[derive(Debug)]
pub struct Settings<'a> {
    /// The data directory.
    pub dir: &'a Path,
    /// Ports.
    pub ports: Ports,
    /// Seconds between publications.
    pub publication_interval: u64,
    /// How often each message log is stamped.
    pub batch_interval: Duration,
    /// Whom the portal's test OpenID provider lets sign in, the first preselected.
    pub portal_persons: Vec<TestPerson>,
}

/// A running agency.
#[derive(Debug)]
pub struct Node {
    /// Which.
    pub agency: &'static Agency,
    /// Its directory.
    pub dir: PathBuf,
    /// The running gateway.
    pub gateway: RunningGateway,
    /// Its message log.
    pub log: Arc<MessageLog>,
    /// Its FHIR service (none for the portal).
    pub service: Option<FhirService>,
    /// Its global configuration, refreshed from the registry.
    pub conf: Arc<ConfClient>,
    /// Its information system on the gateway's client port: HTTPS, the system's certificate
    /// registered on the gateway, the gateway's registered TLS certificate pinned.
    pub system: GatewayClient,
    signing: Arc<BatchSigner>,
}

/// The whole backbone.
#[derive(Debug)]
pub struct Network {
    /// The agencies, as in [`AGENCIES`].
    pub nodes: Vec<Node>,
    /// The registry's configuration URL.
    pub conf_url: String,
    /// The timestamping service.
    pub timestamping: SocketAddr,
    /// Its handle (publications).
    pub ts_handle: ts_service::Handle,
    /// The calendar certificate file.
    pub calendar_cert: PathBuf,
    /// Whether the registry was created in this run.
    pub fresh: bool,
    /// The citizen portal and its test OpenID provider.
    pub portal: DemoPortal,
    conf_server: Server,
    ts: ts_service::Running,
    ts_stop: watch::Sender<bool>,
    ts_task: JoinHandle<()>,
    refresh_stop: watch::Sender<bool>,
    refreshers: Vec<JoinHandle<()>>,
}

impl Agency {
    /// The subsystem, `MEMBER/SUBSYSTEM`.
    pub fn client(&self) -> String {
        format!("{}/{}", self.member, self.subsystem)
    }

    /// Its FHIR service id.
    pub fn fhir_service(&self) -> String {
        format!("{}/{}/{FHIR_SERVICE}", self.member, self.subsystem)
    }

    /// Its gateway id.
    pub fn gateway_id(&self) -> String {
        format!("{}/gw1", self.member)
    }

    /// The agency with `role`.
    pub fn of(role: Role) -> &'static Agency {
        AGENCIES
            .iter()
            .find(|a| a.role == role)
            .unwrap_or(&AGENCIES[0])
    }
}

impl Network {
    /// Starts everything.
    ///
    /// # Errors
    ///
    /// Key store, storage and listener failures.
    pub async fn start(
        settings: &Settings<'_>,
        keys: &Keys,
        people: &[Citizen],
    ) -> Result<Network, Error> {
        let dir = settings.dir;
        let port = |offset: u16| {
            if settings.ports.base == 0 {
                0
            } else {
                settings.ports.base.saturating_add(offset)
            }
        };

        // Timestamping: calendar in DIR/timestamping, its keys in their own store.
        let ts_dir = dir.join("timestamping");
        mkdir(&ts_dir)?;
        let ts_keys = keys.open("timestamping")?;
        let calendar_key = key(ts_keys.as_ref(), "timestamping")?;
        let calendar_cert = ts_dir.join(CALENDAR_CERT_FILE);
        let certificate = if calendar_cert.exists() {
            std::fs::read(&calendar_cert).map_err(Error::io("read", &calendar_cert))?
        } else {
            let ca = key(ts_keys.as_ref(), "timestamping-ca")?;
            let (ca_der, der) = issue_certificates(
                ca.as_ref(),
                calendar_key.as_ref(),
                SystemTime::now() - Duration::from_secs(60),
                3650,
            )
            .map_err(|e| Error::Check(format!("cannot issue the calendar certificate: {e}")))?;
            write(&ts_dir.join("calendar-ca-cert.der"), &ca_der)?;
            write(&calendar_cert, &der)?;
            der
        };
        let calendar_signer = CalendarSigner::new(calendar_key, &certificate)
            .map_err(|e| Error::Check(format!("calendar certificate: {e}")))?;
        let calendar_dir = ts_dir.join("calendar");
        let store: Box<dyn CalendarStore> =
            Box::new(CalendarRocks::open(&calendar_dir).map_err(|e| {
                Error::Check(format!("calendar at {}: {e}", calendar_dir.display()))
            })?);
        let calendar = Calendar::open(store).map_err(|e| Error::Check(format!("calendar: {e}")))?;
        let ts_config = ts_service::Config {
            publication_interval: settings.publication_interval.max(1),
            ..ts_service::Config::default()
        };
        let ts = ts_service::spawn(calendar, calendar_signer, ts_config)
            .map_err(|e| Error::Check(format!("timestamping service: {e}")))?;
        let app = ts_http::router(
            ts.handle.clone(),
            PduAuth {
                login_id: "anon".into(),
                key: b"anon".to_vec(),
            },
        );
        let ts_listener = bind(port(1)).await?;
        let timestamping = local(&ts_listener)?;
        let (ts_stop, ts_task) = serve(ts_listener, app);

        // Registry: records in DIR/registry; what the demo needs, added on the first run.
        let registry_keys = keys.open("registry")?;
        let ca = key(registry_keys.as_ref(), "registry-ca")?;
        let conf_key = key(registry_keys.as_ref(), "registry-conf")?;
        let registry_dir = dir.join("registry");
        let store = Arc::new(RegistryStore::open(&registry_dir).map_err(|e| {
            Error::Check(format!("registry store at {}: {e}", registry_dir.display()))
        })?);
        let instance = InstanceId::new(INSTANCE).map_err(|e| bug(e))?;
        let (registry, fresh) = match Registry::open(store.clone(), ca.clone(), conf_key.clone()) {
            Ok(registry) => (registry, false),
            Err(backbone_registry::Error::NotFound { .. }) => (
                Registry::create(
                    store,
                    instance.clone(),
                    ca,
                    conf_key.clone(),
                    ACTOR,
                    SystemTime::now(),
                )
                .map_err(check("create the registry"))?,
                true,
            ),
            Err(e) => return Err(check("open the registry")(e)),
        };
        let registry = Arc::new(registry);
        let agency_keys: Vec<Arc<dyn KeyStore>> = AGENCIES
            .iter()
            .map(|a| keys.open(a.slug))
            .collect::<Result<_, _>>()?;
        for (n, (agency, store)) in AGENCIES.iter().zip(&agency_keys).enumerate() {
            let offset = u16::try_from(n).unwrap_or(0);
            register(
                &registry,
                agency,
                store.as_ref(),
                &dir.join(agency.slug),
                port(20 + offset),
            )?;
        }
        let conf_listener = bind(port(0)).await?;
        let conf_url = format!(
            "http://{}{}",
            local(&conf_listener)?,
            backbone_registry::server::CONF_PATH
        );
        let serve_config = ServeConfig {
            timestamping_url: Some(format!("http://{timestamping}/sign")),
            ..ServeConfig::default()
        };
        let conf_server = Server::spawn(Arc::clone(&registry), serve_config, conf_listener)
            .await
            .map_err(check("serve the global configuration"))?;
        let anchor = Anchor::new(
            instance,
            conf_key.algorithm(),
            conf_key.public_key().clone(),
            vec![conf_url.clone()],
        )
        .map_err(check("make the anchor"))?;
        write(&dir.join("anchor.json"), &anchor.encode())?;

        // Agencies: FHIR service, configuration client, message log, gateway, grants.
        let (refresh_stop, _) = watch::channel(false);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Check(e.to_string()))?;
        let mut nodes = Vec::new();
        let mut refreshers = Vec::new();
        for (n, (agency, store)) in AGENCIES.iter().zip(agency_keys).enumerate() {
            let offset = u16::try_from(n).unwrap_or(0);
            let agency_dir = dir.join(agency.slug);
            let service = match agency.role {
                Role::Portal => None,
                role => {
                    let records = fhir::preload(role, people, agency.member, agency.name);
                    let listen = SocketAddr::from(([127, 0, 0, 1], port(30 + offset)));
                    Some(
                        FhirService::spawn(listen, records)
                            .await
                            .map_err(|source| Error::Admin {
                                addr: listen,
                                source,
                            })?,
                    )
                }
            };
            let conf = Arc::new(
                ConfClient::open(
                    anchor.clone(),
                    ClientConfig {
                        cache_path: Some(agency_dir.join(CONF_CACHE_FILE)),
                        ..ClientConfig::default()
                    },
                )
                .map_err(check("open the configuration cache"))?,
            );
            fetch::refresh_once(&conf, &http, SystemTime::now())
                .await
                .map_err(check("fetch the global configuration"))?;
            refreshers.push(tokio::spawn(fetch::run(
                Arc::clone(&conf),
                FetchConfig::default(),
                SystemTime::now,
                refresh_stop.subscribe(),
            )));
            let current = conf
                .current(SystemTime::now())
                .map_err(check("read the global configuration"))?;
            let gateway_id: backbone_registry::id::GatewayId =
                agency.gateway_id().parse().map_err(|e| bug(e))?;
            let peer_listen: SocketAddr = current
                .gateway(&gateway_id)
                .and_then(|g| g.address.parse().ok())
                .ok_or_else(|| {
                    Error::Check(format!(
                        "gateway {gateway_id} has no usable address in the global configuration"
                    ))
                })?;
            let client_listen = SocketAddr::from(([127, 0, 0, 1], port(10 + offset)));
            let mut config = GatewayConfig::new(
                gateway_id.clone(),
                client_listen,
                peer_listen,
                agency_dir.join(RIGHTS_FILE),
            );
            if let Some(service) = &service {
                config
                    .services
                    .insert(agency.fhir_service(), service.base_url());
            }
            config.timeout = Duration::from_secs(10);
            let metrics = prometheus::Registry::new();
            let log_metrics = LogMetrics::register(&metrics)
                .map_err(|e| Error::Check(format!("metrics: {e}")))?;
            let hsm_metrics = backbone_hsm::Metrics::register(&metrics)
                .map_err(|e| Error::Check(format!("metrics: {e}")))?;
            let log_config = LogConfig {
                dir: agency_dir.join("log"),
                batch_interval: settings.batch_interval,
                max_timestamping_failure: Duration::from_secs(60),
                timestamping: Some(timestamping),
            };
            let wrapper = store.wrapper(LOG_KEY_LABEL).map_err(Error::hsm(format!(
                "cannot open the log key of {}",
                agency.name
            )))?;
            let log = Arc::new(
                MessageLog::open_with_metrics(log_config, wrapper, log_metrics)
                    .map_err(|e| Error::Check(format!("message log of {}: {e}", agency.name)))?,
            );
            log.spawn_stamper();
            let signing_key =
                store
                    .signer(SIGNING_KEY_LABEL, None)
                    .map_err(Error::hsm(format!(
                        "cannot open the signing key of {}",
                        agency.name
                    )))?;
            let signing = Arc::new(
                BatchSigner::with_metrics(
                    signing_key,
                    backbone_gateway::service::signer_config(),
                    &hsm_metrics,
                )
                .map_err(Error::hsm("batch signer".to_owned()))?,
            );
            let tls = store
                .signer(TLS_KEY_LABEL, None)
                .map_err(Error::hsm(format!(
                    "cannot open the TLS key of {}",
                    agency.name
                )))?;
            let keys = GatewayKeys {
                tls,
                signing: Arc::clone(&signing),
            };
            let gateway_cert = current
                .gateway(&gateway_id)
                .and_then(|g| g.tls_certificate.as_ref())
                .map(|c| c.der().to_vec())
                .ok_or_else(|| {
                    Error::Check(format!("gateway {gateway_id} has no TLS certificate"))
                })?;
            let trust = Trust::new(Arc::clone(&conf), gateway_id);
            let gateway = RunningGateway::start(config, trust, keys, Arc::clone(&log), metrics)
                .await
                .map_err(|e| Error::Check(format!("gateway of {}: {e}", agency.name)))?;
            // The agency's information system, registered on its gateway as an operator
            // would with `backbone gateway system-cert` and `add-client-cert`.
            let client = agency.client();
            let (system_key, system_cert) = crate::hsm::system_identity(
                store.as_ref(),
                SYSTEM_KEY_LABEL,
                &client,
                &agency_dir.join("system-cert.pem"),
            )?;
            gateway
                .systems()
                .add_certificate(&client.parse().map_err(|e| bug(e))?, &system_cert)
                .map_err(|e| Error::Check(format!("information system of {}: {e}", agency.name)))?;
            let system = GatewayClient::https(
                &gateway.client_addr().to_string(),
                system_key,
                system_cert,
                Arc::new(PinSet::new([gateway_cert])),
            )
            .map_err(|e| Error::Check(format!("information system of {}: {e}", agency.name)))?;
            nodes.push(Node {
                agency,
                dir: agency_dir,
                gateway,
                log,
                service,
                conf,
                system,
                signing,
            });
        }
        grant_all(&nodes)?;

        // The citizen portal, behind the portal member's gateway.
        let portal_node = nodes
            .iter()
            .find(|n| n.agency.role == Role::Portal)
            .ok_or(Error::Unreachable("no portal gateway"))?;
        let portal_settings = portal::Settings {
            listen: port(40),
            provider_listen: port(41),
            dir: &portal_node.dir,
            client: portal_node.agency.client(),
            gateway: portal_node.system.clone(),
            certificate: ts.handle.certificate().clone(),
            persons: settings.portal_persons.clone(),
        };
        let portal = DemoPortal::start(portal_settings, Arc::clone(&portal_node.conf)).await?;
        Ok(Network {
            nodes,
            portal,
            conf_url,
            timestamping,
            ts_handle: ts.handle.clone(),
            calendar_cert,
            fresh,
            conf_server,
            ts,
            ts_stop,
            ts_task,
            refresh_stop,
            refreshers,
        })
    }

    /// The running agency with `role`.
    pub fn node(&self, role: Role) -> Option<&Node> {
        self.nodes.iter().find(|n| n.agency.role == role)
    }

    /// Stops every component: the portal first (it calls the gateways), then the gateways
    /// (their logs stamp what is left), the services, the registry's server and the
    /// timestamping service.
    pub async fn shutdown(self) {
        self.portal.shutdown().await;
        for node in self.nodes {
            node.gateway.shutdown().await;
            if let Err(e) = node.log.shutdown().await {
                tracing::warn!(agency = node.agency.slug, error = %e, "the last records stay unstamped until the next start");
            }
            node.signing.shutdown();
            if let Some(service) = node.service {
                service.shutdown().await;
            }
        }
        let _ = self.refresh_stop.send(true);
        for task in self.refreshers {
            let _ = task.await;
        }
        self.conf_server.shutdown().await;
        let _ = self.ts_stop.send(true);
        let _ = self.ts_task.await;
        self.ts.shutdown().await;
    }
}

/// Adds an agency to the registry (first run), with its keys, certificates and services.
fn register(
    registry: &Registry,
    agency: &Agency,
    keys: &dyn KeyStore,
    dir: &Path,
    peer_port: u16,
) -> Result<(), Error> {
    mkdir(dir)?;
    let now = SystemTime::now();
    let tls = key(keys, TLS_KEY_LABEL)?;
    let signing = key(keys, SIGNING_KEY_LABEL)?;
    if keys.wrapper(LOG_KEY_LABEL).is_err() {
        keys.generate_wrapping_key(LOG_KEY_LABEL)
            .map_err(Error::hsm(format!(
                "cannot generate the log key of {}",
                agency.name
            )))?;
    }
    let parse = |e: backbone_registry::Error| bug(e);
    let member: backbone_registry::id::MemberId = agency.member.parse().map_err(parse)?;
    let class = member.class().clone();
    ensure(registry.add_member_class(
        ACTOR,
        now,
        class.clone(),
        if class.as_str() == "GOV" {
            "government agencies"
        } else {
            "companies"
        },
    ))?;
    ensure(registry.add_member(ACTOR, now, member.clone(), agency.name))?;
    ensure(registry.add_subsystem(ACTOR, now, agency.client().parse().map_err(parse)?))?;
    if agency.role != Role::Portal {
        ensure(registry.add_service(
            ACTOR,
            now,
            agency.fhir_service().parse().map_err(parse)?,
            "FHIR R4 JSON health records",
            true,
        ))?;
        // Catalogued so that the citizen portal finds every agency to ask.
        let find_usage = format!("{}/{}", agency.client(), backbone_gateway::meta::FIND_USAGE);
        ensure(registry.add_service(
            ACTOR,
            now,
            find_usage.parse().map_err(parse)?,
            "who used a person's data",
            true,
        ))?;
    }
    let gateway_id = agency.gateway_id().parse().map_err(parse)?;
    let peer_port = if peer_port == 0 {
        free_port().map_err(Error::io("bind", "127.0.0.1:0"))?
    } else {
        peer_port
    };
    let added = registry.add_gateway(ACTOR, now, gateway_id, &format!("127.0.0.1:{peer_port}"));
    let tls_csr = csr_pem(
        tls.as_ref(),
        &Subject {
            common_name: agency.gateway_id(),
            ..Subject::default()
        },
    )
    .map_err(Error::hsm("CSR".to_owned()))?;
    let signing_csr = csr_pem(
        signing.as_ref(),
        &Subject {
            common_name: agency.member.to_owned(),
            ..Subject::default()
        },
    )
    .map_err(Error::hsm("CSR".to_owned()))?;
    write(&dir.join("tls-csr.pem"), tls_csr.as_bytes())?;
    write(&dir.join("signing-csr.pem"), signing_csr.as_bytes())?;
    if ensure(added)? {
        let gateway_id = agency.gateway_id().parse().map_err(parse)?;
        registry
            .issue_tls_certificate(ACTOR, now, &gateway_id, tls_csr.as_bytes())
            .map_err(check("issue a TLS certificate"))?;
        registry
            .issue_signing_certificate(ACTOR, now, &member, signing_csr.as_bytes())
            .map_err(check("issue a signing certificate"))?;
    }
    Ok(())
}

/// Grants every scenario step, and findUsage to the portal on every agency.
fn grant_all(nodes: &[Node]) -> Result<(), Error> {
    let portal = Agency::of(Role::Portal).client();
    for node in nodes {
        let mut grants = Vec::new();
        for (client, provider, method, path) in GRANTS {
            if provider == node.agency.role {
                grants.push((
                    node.agency.fhir_service(),
                    Agency::of(client).client(),
                    method,
                    path,
                ));
            }
        }
        if node.agency.role != Role::Portal {
            grants.push((
                format!(
                    "{}/{}",
                    node.agency.client(),
                    backbone_gateway::meta::FIND_USAGE
                ),
                portal.clone(),
                "GET",
                "/",
            ));
        }
        for (service, client, method, path) in grants {
            let grant = Grant::new(
                service.parse().map_err(|e| bug(e))?,
                Grantee::Client(client.parse().map_err(|e| bug(e))?),
                method,
                path,
            )
            .map_err(|e| {
                Error::Check(format!(
                    "grant {method} {path} on {service} to {client}: {e}"
                ))
            })?;
            node.gateway
                .rights()
                .grant(grant)
                .map_err(|e| Error::Check(format!("grant on {service}: {e}")))?;
        }
    }
    Ok(())
}

/// `Ok(true)` when added, `Ok(false)` when an earlier run added it.
fn ensure(result: Result<(), backbone_registry::Error>) -> Result<bool, Error> {
    match result {
        Ok(()) => Ok(true),
        Err(backbone_registry::Error::Duplicate { .. }) => Ok(false),
        Err(e) => Err(check("register")(e)),
    }
}

fn key(keys: &dyn KeyStore, label: &str) -> Result<Arc<dyn Signer>, Error> {
    if keys.public_key(label).is_err() {
        keys.generate(label, KeyType::EcP256)
            .map_err(Error::hsm(format!(
                "cannot generate key '{label}' in {}",
                keys.describe()
            )))?;
    }
    keys.signer(label, None).map_err(Error::hsm(format!(
        "cannot open key '{label}' in {}",
        keys.describe()
    )))
}

fn check(action: &'static str) -> impl FnOnce(backbone_registry::Error) -> Error {
    move |e| Error::Check(format!("cannot {action}: {e}"))
}

/// A fixed identifier failed to parse: a bug, reported with its text.
fn bug(e: impl std::fmt::Display) -> Error {
    Error::Check(format!(
        "a demo identifier does not parse: {e} (please report this)"
    ))
}

async fn bind(port: u16) -> Result<tokio::net::TcpListener, Error> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Admin { addr, source })
}

fn local(listener: &tokio::net::TcpListener) -> Result<SocketAddr, Error> {
    listener
        .local_addr()
        .map_err(Error::io("read the address of", "a listener"))
}

/// A TCP port free now on 127.0.0.1, below Linux's default range of ephemeral ports
/// (32768–60999), for a server started (or restarted) on it later: a gateway's registered peer
/// address, which later runs over the same directory listen on again, or a test's server
/// restarted after `kill -9`. A port from the ephemeral range (what binding port 0 gives) may
/// meanwhile be handed by the kernel to any other program's outgoing connection.
///
/// # Errors
///
/// When not even port 0 can be bound.
pub fn free_port() -> std::io::Result<u16> {
    const FIRST: u32 = 20_000;
    const PORTS: u32 = 12_000;
    /// Calls of one process start 997 ports apart, so that they do not return the same port.
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    // Where to start looking differs between processes and runs, so that programs started at
    // once rarely try the same ports.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id();
    let start =
        seed.wrapping_add(CALLS.fetch_add(997, std::sync::atomic::Ordering::Relaxed)) % PORTS;
    let mut below = (0..PORTS).filter_map(|i| u16::try_from(FIRST + (start + i) % PORTS).ok());
    if let Some(port) = below.find(|port| StdListener::bind(("127.0.0.1", *port)).is_ok()) {
        return Ok(port);
    }
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
) -> (watch::Sender<bool>, JoinHandle<()>) {
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let until = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        if let Err(e) =
            backbone_server::serve_router(listener, app, backbone_server::Limits::default(), until)
                .await
        {
            tracing::error!(error = %e, "demo listener stopped");
        }
    });
    (stop, task)
}

fn mkdir(path: &Path) -> Result<(), Error> {
    backbone_hsm::private::create_dir(path).map_err(Error::io("create directory", path))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    std::fs::write(path, bytes).map_err(Error::io("write", path))
}
