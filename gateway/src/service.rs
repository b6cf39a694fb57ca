//! The running gateway: the client interface (X-Road REST r1 over HTTPS for the agency's
//! information systems, each authenticated as [`crate::systems`] says; optionally plain HTTP on a
//! loopback address for those allowed it), the peer interface (HTTP/2 over mutually authenticated
//! TLS 1.3 for other gateways), and what both share.
//!
//! ```text
//!  information system ──HTTP──▶ client port ─┐                 ┌─▶ peer port ◀══TLS══ other gateways
//!                               client::handle (sign, send, check, log)   provider::handle (check, call, sign, log)
//!                                    │  Peers (HTTP/2, pinned)                 │  local services (HTTP)
//!                                    └──────────── Trust (global conf) · MessageLog · BatchSigner ───┘
//! ```
//!
//! The client port's server certificate is the gateway's TLS certificate as registered in the
//! global configuration, on the gateway's TLS key in the key store: an information system pins
//! that certificate (`DATA_DIR/tls-cert.pem`, or the gateway's entry in the global
//! configuration); it changes when the gateway's TLS key is renewed and the registry issues the
//! new certificate, and the gateway serves it from its next start.
//!
//! Operations endpoints on the client port: `GET /live`, `GET /ready` (503 with the reason when
//! the configuration has expired or timestamping has failed too long), `GET /metrics`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backbone_hsm::Signer;
use backbone_hsm::batch::BatchSigner;
use backbone_registry::id::GatewayId;
use backbone_server::{Protocol, Server, Transport};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client as LocalClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::conf::{RegisteredGateways, Trust};
use crate::log::MessageLog;
use crate::peers::Peers;
use crate::replay::ReplayGuard;
use crate::rights::RightsStore;
use crate::systems::{Caller, SystemsStore};

/// The information systems file's name, beside the access rights file unless configured.
pub const SYSTEMS_FILE: &str = "information-systems.json";

/// The default body limit, each way: 10 MiB, X-Road's default for REST bodies is similar.
pub const DEFAULT_MAX_BODY: usize = 10 << 20;
/// The default time a peer gateway or a local service has to answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// What a gateway needs to start.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// This gateway's id in the global configuration.
    pub id: GatewayId,
    /// Where the information systems connect: HTTPS (TLS 1.3) with the gateway's TLS key and
    /// registered certificate.
    pub client_listen: SocketAddr,
    /// Where information systems allowed plain HTTP (connection type `http`) connect, if
    /// anywhere: a loopback address only, else the gateway refuses to start.
    pub client_plain_listen: Option<SocketAddr>,
    /// Where other gateways connect (TLS 1.3, pinned).
    pub peer_listen: SocketAddr,
    /// The local services this gateway provides: service id (`INSTANCE/CLASS/MEMBER/SUBSYSTEM/CODE`)
    /// → base URL (`http://host:port/prefix` or `https://host:port/prefix`).
    pub services: BTreeMap<String, String>,
    /// The CA certificates (PEM) that `https://` local services' certificates must chain to
    /// (PR-REST 4.7). The gateway connects with TLS 1.3 and presents its own TLS certificate
    /// when a service asks for a client certificate. Needed only for `https://` services.
    pub service_ca: Option<PathBuf>,
    /// The access rights file.
    pub rights_path: PathBuf,
    /// The information systems file: connection types and client certificates
    /// ([`crate::systems`]).
    pub systems_path: PathBuf,
    /// Largest request or response body.
    pub max_body: usize,
    /// How long a peer or a local service has to answer.
    pub timeout: Duration,
    /// The replay window.
    pub replay_window: Duration,
    /// What the client and peer ports bound: handshake and request-head timeouts, connections,
    /// requests in flight, header bytes (`backbone_server::limits`; the body limit is
    /// `max_body`, enforced by the gateway itself so that it can answer with a fault).
    pub limits: backbone_server::Limits,
}

/// How long the batch signer waits for company under load (see [`signer_config`]).
pub const SIGNER_LINGER: Duration = Duration::from_micros(500);

/// How a gateway's batch signer should gather messages: one worker, so that under load the
/// queue grows while the token signs and batches grow with it; and, under load only (after a
/// batch of more than one message), a linger of [`SIGNER_LINGER`]. A longer linger makes larger
/// batches — fewer token signatures here and fewer signature checks at the peer, so less CPU an
/// exchange — and makes each exchange wait longer for its two signatures; the trade-off is
/// measured by `backbone bench exchange` (BENCHMARKS.md). A lone request at low load is signed
/// at once.
pub fn signer_config() -> backbone_hsm::batch::BatchConfig {
    backbone_hsm::batch::BatchConfig {
        workers: 1,
        max_linger: SIGNER_LINGER,
        linger_under_load: true,
        ..backbone_hsm::batch::BatchConfig::default()
    }
}

/// The keys a gateway uses, all in the key store.
#[derive(Clone, Debug)]
pub struct GatewayKeys {
    /// Authenticates this gateway in TLS to its peers.
    pub tls: Arc<dyn Signer>,
    /// Signs messages for the owner member (batched).
    pub signing: Arc<BatchSigner>,
}

/// Why a gateway cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A listener cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The access rights or the information systems cannot be read.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The plain client listener is asked for on an address that is not loopback.
    #[error("plain HTTP for information systems is served only on a loopback address, not {0}")]
    PlainNotLoopback(SocketAddr),
    /// A configured local service is not a service id or not an `http://` URL.
    #[error("local service {service:?}: {why}")]
    Service {
        /// The configured service id.
        service: String,
        /// What is wrong.
        why: String,
    },
    /// The TLS key cannot be used.
    #[error("TLS key: {0}")]
    Tls(String),
    /// Metrics cannot be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// A started gateway; dropping it does not stop it, [`RunningGateway::shutdown`] does.
#[derive(Debug)]
pub struct RunningGateway {
    inner: Arc<Inner>,
    client_addr: SocketAddr,
    client_plain_addr: Option<SocketAddr>,
    peer_addr: SocketAddr,
    servers: Vec<backbone_server::Server>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// What the handlers share.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: GatewayConfig,
    pub(crate) trust: Trust,
    pub(crate) keys: GatewayKeys,
    pub(crate) log: Arc<MessageLog>,
    pub(crate) rights: Arc<RightsStore>,
    pub(crate) systems: Arc<SystemsStore>,
    pub(crate) peers: Peers,
    pub(crate) replay: ReplayGuard,
    pub(crate) services: BTreeMap<String, String>,
    /// Pooled HTTP/1.1 connections to the local services, over TLS for `https://` ones.
    pub(crate) http: LocalClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    pub(crate) metrics: GatewayMetrics,
    pub(crate) registry: Registry,
    pub(crate) verifier: crate::verifier::Verifier,
}

/// The gateway's Prometheus metrics.
#[derive(Clone, Debug)]
pub(crate) struct GatewayMetrics {
    /// Exchanges by side, service and outcome (`ok` or the fault type).
    pub(crate) exchanges: IntCounterVec,
    /// Exchange latency by side, seconds.
    pub(crate) latency: HistogramVec,
    /// On the client side, from sending a request to the provider gateway until its answer has
    /// been read, seconds: the provider's part of an exchange plus the network and HTTP/2
    /// between the two.
    pub(crate) peer_round_trip: Histogram,
}

// === impl GatewayConfig ===

impl GatewayConfig {
    /// A configuration with the defaults for everything but the id, addresses and rights file.
    pub fn new(
        id: GatewayId,
        client_listen: SocketAddr,
        peer_listen: SocketAddr,
        rights_path: PathBuf,
    ) -> Self {
        GatewayConfig {
            id,
            client_listen,
            client_plain_listen: None,
            peer_listen,
            services: BTreeMap::new(),
            service_ca: None,
            systems_path: rights_path.with_file_name(SYSTEMS_FILE),
            rights_path,
            max_body: DEFAULT_MAX_BODY,
            timeout: DEFAULT_TIMEOUT,
            replay_window: crate::replay::DEFAULT_WINDOW,
            limits: backbone_server::Limits::default(),
        }
    }
}

// === impl RunningGateway ===

impl RunningGateway {
    /// Binds both listeners and starts serving. The message log and the configuration client are
    /// the caller's: it opens them, keeps the configuration fresh and stamps the log.
    ///
    /// # Errors
    ///
    /// [`StartError`] when a listener cannot be bound or the configuration is unusable.
    pub async fn start(
        config: GatewayConfig,
        trust: Trust,
        keys: GatewayKeys,
        log: Arc<MessageLog>,
        metrics_registry: Registry,
    ) -> Result<Self, StartError> {
        let rights = Arc::new(RightsStore::open(&config.rights_path)?);
        let systems = Arc::new(SystemsStore::open(&config.systems_path)?);
        if let Some(plain) = config.client_plain_listen
            && !plain.ip().is_loopback()
        {
            return Err(StartError::PlainNotLoopback(plain));
        }
        let mut services = BTreeMap::new();
        for (service, url) in &config.services {
            let id: backbone_registry::id::ServiceId =
                service
                    .parse()
                    .map_err(|e: backbone_registry::Error| StartError::Service {
                        service: service.clone(),
                        why: e.to_string(),
                    })?;
            if !url.starts_with("http://") && !url.starts_with("https://") {
                return Err(StartError::Service {
                    service: service.clone(),
                    why: format!("{url:?} is not an http:// or https:// URL"),
                });
            }
            if url.starts_with("https://") && config.service_ca.is_none() {
                return Err(StartError::Service {
                    service: service.clone(),
                    why: "an https:// service needs the CA file its certificate chains to (service_ca)".to_owned(),
                });
            }
            services.insert(id.to_string(), url.trim_end_matches('/').to_owned());
        }
        let metrics = GatewayMetrics::register(&metrics_registry)?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        // The TLS layer above it takes https:// URLs.
        connector.enforce_http(false);
        connector.set_connect_timeout(Some(config.timeout));
        let tls = local_tls_config(&config, &trust, &keys)?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let http = LocalClient::builder(TokioExecutor::new())
            .pool_max_idle_per_host(64)
            .build(connector);
        let client_listener = TcpListener::bind(config.client_listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: config.client_listen,
                source,
            })?;
        let peer_listener = TcpListener::bind(config.peer_listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: config.peer_listen,
                source,
            })?;
        let client_addr = client_listener
            .local_addr()
            .map_err(|source| StartError::Listen {
                addr: config.client_listen,
                source,
            })?;
        let peer_addr = peer_listener
            .local_addr()
            .map_err(|source| StartError::Listen {
                addr: config.peer_listen,
                source,
            })?;
        let inner = Arc::new(Inner {
            replay: ReplayGuard::new(config.replay_window, now_ms()),
            peers: Peers::new(Arc::clone(&keys.tls)),
            config,
            trust,
            keys,
            log,
            rights,
            systems,
            services,
            http,
            metrics,
            registry: metrics_registry,
            verifier: crate::verifier::Verifier::new(),
        });
        let (stop, stopped) = watch::channel(false);
        let pins = Arc::new(RegisteredGateways::new(Arc::clone(inner.trust.client())));
        let tls = inner.peer_tls_config(pins)?;
        let limits = inner.config.limits.clone();
        let listen = |addr: SocketAddr| move |source| StartError::Listen { addr, source };
        let client_tls = inner.client_tls_config()?;
        let client_service = |inner: &Arc<Inner>, caller: Caller| {
            let (inner, caller) = (Arc::clone(inner), Arc::new(caller));
            tower::service_fn(move |request: Request<Incoming>| {
                let (inner, caller) = (Arc::clone(&inner), Arc::clone(&caller));
                async move { Ok::<_, Infallible>(crate::client::handle(inner, &caller, request).await) }
            })
        };
        let clients = {
            let inner = Arc::clone(&inner);
            Server::spawn(
                client_listener,
                Transport::Tls(client_tls),
                Protocol::Http1,
                limits.clone(),
                move |connection| {
                    let caller = Caller {
                        remote: connection.remote,
                        tls: true,
                        certificate: connection.peer_certificate().map(|c| Arc::new(c.to_vec())),
                    };
                    Some(client_service(&inner, caller))
                },
            )
            .map_err(listen(client_addr))?
        };
        let mut servers = vec![clients];
        let mut client_plain_addr = None;
        if let Some(plain) = inner.config.client_plain_listen {
            let listener = TcpListener::bind(plain).await.map_err(listen(plain))?;
            let addr = listener.local_addr().map_err(listen(plain))?;
            let inner = Arc::clone(&inner);
            servers.push(
                Server::spawn(
                    listener,
                    Transport::Plain,
                    Protocol::Http1,
                    limits.clone(),
                    move |connection| {
                        let caller = Caller {
                            remote: connection.remote,
                            tls: false,
                            certificate: None,
                        };
                        Some(client_service(&inner, caller))
                    },
                )
                .map_err(listen(addr))?,
            );
            client_plain_addr = Some(addr);
        }
        let peers = {
            let inner = Arc::clone(&inner);
            Server::spawn(
                peer_listener,
                Transport::Tls(tls),
                Protocol::Http2,
                limits,
                move |connection| {
                    // The verifier admitted only a certificate registered for a gateway.
                    let certificate = Arc::new(connection.peer_certificate()?.to_vec());
                    let inner = Arc::clone(&inner);
                    Some(tower::service_fn(move |request: Request<Incoming>| {
                        let inner = Arc::clone(&inner);
                        let certificate = Arc::clone(&certificate);
                        async move {
                            Ok::<_, Infallible>(
                                crate::provider::handle(inner, &certificate, request).await,
                            )
                        }
                    }))
                },
            )
            .map_err(listen(peer_addr))?
        };
        let tasks = vec![tokio::spawn(reload_stores(
            Arc::clone(&inner.rights),
            Arc::clone(&inner.systems),
            stopped,
        ))];
        servers.push(peers);
        tracing::info!(gateway = %inner.config.id, %client_addr, ?client_plain_addr, %peer_addr, "gateway serving");
        Ok(RunningGateway {
            inner,
            client_addr,
            client_plain_addr,
            peer_addr,
            servers,
            stop,
            tasks,
        })
    }

    /// This gateway's id.
    pub fn id(&self) -> &GatewayId {
        self.inner.trust.own()
    }

    /// Where information systems connect (HTTPS).
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// Where information systems allowed plain HTTP connect, if configured.
    pub fn client_plain_addr(&self) -> Option<SocketAddr> {
        self.client_plain_addr
    }

    /// The stored information systems (for the admin API and tests).
    pub fn systems(&self) -> &Arc<SystemsStore> {
        &self.inner.systems
    }

    /// Where peers connect.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// The stored access rights (for the admin API and tests).
    pub fn rights(&self) -> &Arc<RightsStore> {
        &self.inner.rights
    }

    /// Stops accepting connections, lets the ones open finish what they serve, and returns.
    pub async fn shutdown(mut self) {
        for server in self.servers.drain(..) {
            server.shutdown().await;
        }
        let _ = self.stop.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        self.inner.peers.clear().await;
    }
}

// === impl Inner ===

impl Inner {
    /// The client port's TLS: the gateway's TLS key and registered certificate; a client may
    /// present any certificate or none, and each request is judged by [`crate::systems`].
    fn client_tls_config(&self) -> Result<Arc<rustls::ServerConfig>, StartError> {
        let own = self.own_tls_certificate().map_err(StartError::Tls)?;
        let mut config =
            backbone_hsm::tls::server_config_any_client(Arc::clone(&self.keys.tls), vec![own])
                .map_err(|e| StartError::Tls(e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    fn peer_tls_config(
        &self,
        pins: Arc<RegisteredGateways>,
    ) -> Result<Arc<rustls::ServerConfig>, StartError> {
        let own = self.own_tls_certificate().map_err(StartError::Tls)?;
        let mut config =
            backbone_hsm::tls::server_config(Arc::clone(&self.keys.tls), vec![own], pins)
                .map_err(|e| StartError::Tls(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// This gateway's TLS certificate as registered in the current configuration.
    pub(crate) fn own_tls_certificate(&self) -> Result<Vec<u8>, String> {
        let conf = self.trust.current().map_err(|e| e.to_string())?;
        let gateway = conf.gateway(self.trust.own()).ok_or_else(|| {
            format!(
                "gateway {} is not in the global configuration",
                self.trust.own()
            )
        })?;
        let cert = gateway.tls_certificate.as_ref().ok_or_else(|| {
            format!(
                "gateway {} has no TLS certificate in the global configuration",
                self.trust.own()
            )
        })?;
        Ok(cert.der().to_vec())
    }

    /// Whether new exchanges can be served, and if not why.
    pub(crate) fn readiness(&self) -> Result<(), String> {
        self.trust
            .current()
            .map_err(|e| format!("global configuration: {e}"))?;
        self.log
            .check_accepting()
            .map_err(|e| format!("message log: {e}"))?;
        Ok(())
    }
}

// === impl GatewayMetrics ===

/// Histogram buckets of the gateway's latencies, seconds: half a millisecond to 30 seconds.
const SECONDS_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
];

impl GatewayMetrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let exchanges = IntCounterVec::new(
            Opts::new(
                "backbone_gateway_exchanges_total",
                "Exchanges by side (client or provider), service and outcome (ok or the error type)",
            ),
            &["side", "service", "outcome"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "backbone_gateway_exchange_seconds",
                "Time from request received to response sent, by side",
            )
            .buckets(SECONDS_BUCKETS.to_vec()),
            &["side"],
        )?;
        let peer_round_trip = Histogram::with_opts(
            HistogramOpts::new(
                "backbone_gateway_peer_round_trip_seconds",
                "Client side: time from sending a request to the provider gateway until its answer has been read",
            )
            .buckets(SECONDS_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(exchanges.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(peer_round_trip.clone()))?;
        Ok(GatewayMetrics {
            exchanges,
            latency,
            peer_round_trip,
        })
    }
}

/// Unix milliseconds now.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How often the access rights file is checked for changes made by `backbone gateway grant`.
pub const RIGHTS_RELOAD_EVERY: Duration = Duration::from_secs(1);

async fn reload_stores(
    rights: Arc<RightsStore>,
    systems: Arc<SystemsStore>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
            () = tokio::time::sleep(RIGHTS_RELOAD_EVERY) => {}
        }
        for (what, result) in [
            ("access rights", rights.reload_if_changed()),
            ("information systems", systems.reload_if_changed()),
        ] {
            match result {
                Ok(true) => tracing::info!("{what} reloaded"),
                Ok(false) => {}
                Err(error) => {
                    tracing::error!(%error, "{what} file changed but cannot be read; what is in force stays")
                }
            }
        }
    }
}

/// The TLS client configuration for `https://` local services: the operator's CA file as roots,
/// the gateway's TLS key and registered certificate as its client certificate. Without a CA file
/// the roots are empty, and only `http://` services are configured (checked above).
fn local_tls_config(
    config: &GatewayConfig,
    trust: &Trust,
    keys: &GatewayKeys,
) -> Result<rustls::ClientConfig, StartError> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = &config.service_ca {
        use rustls_pki_types::pem::PemObject as _;
        let certificates = rustls_pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|e| StartError::Tls(format!("service_ca {}: {e}", path.display())))?;
        for certificate in certificates {
            let certificate = certificate
                .map_err(|e| StartError::Tls(format!("service_ca {}: {e}", path.display())))?;
            roots
                .add(certificate)
                .map_err(|e| StartError::Tls(format!("service_ca {}: {e}", path.display())))?;
        }
        if roots.is_empty() {
            return Err(StartError::Tls(format!(
                "service_ca {}: no certificate",
                path.display()
            )));
        }
    }
    let own = trust
        .current()
        .ok()
        .and_then(|conf| {
            conf.gateway(trust.own())
                .and_then(|g| g.tls_certificate.as_ref().map(|c| c.der().to_vec()))
        })
        .map(|der| vec![der])
        .unwrap_or_default();
    backbone_hsm::tls::ca_client_config(Arc::clone(&keys.tls), own, roots)
        .map_err(|e| StartError::Tls(e.to_string()))
}

/// A plain response.
pub(crate) fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.into())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A fault as a response.
pub(crate) fn fault_response(fault: &crate::fault::Fault) -> Response<Full<Bytes>> {
    fault.to_response().map(|b| Full::new(Bytes::from(b)))
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            *response.status_mut() = status;
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the answer cannot be encoded\n",
        ),
    }
}
