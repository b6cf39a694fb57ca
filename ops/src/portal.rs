//! `backbone portal serve`: the citizen portal, a client subsystem behind its own gateway.
//!
//! ```text
//!  anchor ─▶ ConfClient (DATA_DIR/globalconf.cache) ─▶ refreshed from the registry
//!  browser ─▶ portal (--listen) ─ findUsage ─▶ its gateway (--gateway) ══▶ every agency
//!            └─ sign-in ─▶ OpenID provider (--oidc-issuer, or --dev-oidc: the test provider)
//!  key store ─▶ the portal's client key (--client-key) ─▶ DATA_DIR/client-cert.pem, registered
//!               on its gateway: `backbone gateway add-client-cert CLIENT DATA_DIR/client-cert.pem`
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backbone_portal::history::{self, BackboneConfig};
use backbone_portal::oidc::client::OidcConfig;
use backbone_portal::oidc::provider::{self, Provider, RegisteredClient};
use backbone_portal::oidc::transport::{self, DEFAULT_CA_FILE};
use backbone_portal::proof::Trust;
use backbone_portal::server::{self, Portal, PortalConfig};
use backbone_registry::anchor::Anchor;
use backbone_registry::client::fetch::{self, FetchConfig};
use backbone_registry::client::{ClientConfig, ConfClient};
use clap::{Args, Subcommand};

use crate::Error;
use crate::config::{Env, Settings};
use crate::hsm::{open_store, pin_source, system_identity};
use backbone_gateway::conf::RegisteredGateway;
use backbone_gateway::connect::GatewayClient;
use backbone_registry::id::GatewayId;

/// The cached global configuration in the data directory.
pub const CONF_CACHE_FILE: &str = "globalconf.cache";

/// `backbone portal ...`
#[derive(Debug, Args)]
pub struct PortalArgs {
    /// The verb.
    #[command(subcommand)]
    pub command: PortalCommand,
}

/// The verbs of `backbone portal`.
#[derive(Debug, Subcommand)]
pub enum PortalCommand {
    /// Run the citizen portal.
    Serve(Box<ServeArgs>),
}

/// Flags of `backbone portal serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The portal's directory: reports, the view log, the configuration cache. Default:
    /// backbone-portal.
    #[arg(long, value_name = "DIR", default_value = "backbone-portal")]
    pub data_dir: PathBuf,
    /// The configuration anchor file from the registry.
    #[arg(long, value_name = "FILE")]
    pub anchor: PathBuf,
    /// The portal's subsystem, sent as X-Road-Client, e.g. EE/GOV/70000003/portal.
    #[arg(long, value_name = "ID")]
    pub client: String,
    /// The client interface of the portal's own gateway: https://HOST:PORT (with --gateway-id),
    /// or http://HOST:PORT for its plain loopback listener when the portal's subsystem is set to
    /// `http` there.
    #[arg(long, value_name = "URL")]
    pub gateway: String,
    /// The gateway's id, INSTANCE/CLASS/MEMBER/SERVERCODE: its TLS certificate as registered in
    /// the global configuration is the only one accepted (renewals are followed).
    #[arg(long, value_name = "ID")]
    pub gateway_id: Option<String>,
    /// Label of the portal's TLS client key in the key store (made if missing); its self-signed
    /// certificate is DATA_DIR/client-cert.pem.
    #[arg(long, value_name = "LABEL", default_value = "portal-client")]
    pub client_key: String,
    /// File holding the token's user PIN. Default: the configured hsm.pin_file or hsm.pin_env.
    #[arg(long, value_name = "FILE")]
    pub pin_file: Option<PathBuf>,
    /// Where browsers connect (plain HTTP: put a TLS-terminating proxy in front in production).
    #[arg(long, default_value = "127.0.0.1:8480")]
    pub listen: SocketAddr,
    /// The address citizens use, for the OpenID redirect URI. Default: http://localhost:PORT.
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// The OpenID provider's issuer URL, e.g. https://tara.ria.ee/oidc. Plain http:// only to a
    /// loopback host (127.0.0.1, ::1, localhost).
    #[arg(long, value_name = "URL", required_unless_present = "dev_oidc")]
    pub oidc_issuer: Option<String>,
    /// The CA certificates (PEM) trusted for an https OpenID provider. Default: the system bundle,
    /// /etc/ssl/certs/ca-certificates.crt.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CA_FILE)]
    pub oidc_ca_file: PathBuf,
    /// The portal's client id at the provider.
    #[arg(long, default_value = "portal")]
    pub oidc_client_id: String,
    /// File holding the portal's client secret at the provider.
    #[arg(long, value_name = "FILE", required_unless_present = "dev_oidc")]
    pub oidc_client_secret_file: Option<PathBuf>,
    /// Also run the test OpenID provider (test persons, anyone may pick any) on HOST:PORT and
    /// sign in through it. For demonstrations and tests only.
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "oidc_issuer")]
    pub dev_oidc: Option<SocketAddr>,
    /// A calendar signing certificate (DER or PEM) trusted to check proofs under the key-based
    /// policy. Default: the internal policy only.
    #[arg(long, value_name = "FILE")]
    pub calendar_cert: Option<PathBuf>,
    /// Minutes without a request after which a session ends.
    #[arg(long, default_value_t = 15)]
    pub idle_minutes: u64,
    /// Seconds each agency may take to answer findUsage.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
}

impl PortalCommand {
    /// `noun verb`, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            PortalCommand::Serve(_) => "portal serve",
        }
    }
}

/// Runs `backbone portal ...`.
///
/// # Errors
///
/// Bad flags or files ([`Error::Usage`]), or a portal that cannot start.
pub fn run(args: PortalArgs, settings: &Settings, env: &Env) -> Result<(), Error> {
    match args.command {
        PortalCommand::Serve(serve_args) => serve(&serve_args, settings, env),
    }
}

/// The file the portal's client certificate is kept in, in its data directory.
pub const CLIENT_CERT_FILE: &str = "client-cert.pem";

/// How the portal connects to its gateway, from `--gateway`: HTTPS with its client certificate
/// and the gateway's registered certificate pinned, or plain HTTP.
fn gateway_client(
    args: &ServeArgs,
    settings: &Settings,
    env: &Env,
    conf: &Arc<ConfClient>,
) -> Result<GatewayClient, Error> {
    if let Some(address) = args.gateway.strip_prefix("http://") {
        return GatewayClient::plain(address.trim_end_matches('/'))
            .map_err(|e| Error::Check(format!("--gateway: {e}")));
    }
    let address = args
        .gateway
        .strip_prefix("https://")
        .unwrap_or(&args.gateway)
        .trim_end_matches('/');
    let id: GatewayId = args
        .gateway_id
        .as_deref()
        .ok_or_else(|| Error::Usage("--gateway https://… needs --gateway-id".into()))?
        .parse()
        .map_err(|e: backbone_registry::Error| Error::Usage(format!("--gateway-id: {e}")))?;
    let keys = open_store(
        &settings.hsm.store,
        &pin_source(args.pin_file.as_deref(), settings),
        env,
    )?;
    let cert_file = args.data_dir.join(CLIENT_CERT_FILE);
    let (key, certificate) =
        system_identity(keys.as_ref(), &args.client_key, &args.client, &cert_file)?;
    GatewayClient::https(
        address,
        key,
        certificate,
        Arc::new(RegisteredGateway::new(Arc::clone(conf), id)),
    )
    .map_err(|e| Error::Check(format!("--client-key: {e}")))
}

fn serve(args: &ServeArgs, settings: &Settings, env: &Env) -> Result<(), Error> {
    // The provider settings are checked before anything is fetched or bound.
    if let Some(issuer) = &args.oidc_issuer {
        transport::check_url(issuer).map_err(|e| Error::Usage(format!("--oidc-issuer: {e}")))?;
        if transport::is_https(issuer) {
            transport::Transport::new(
                Some(&args.oidc_ca_file),
                Duration::from_secs(args.timeout.max(1)),
            )
            .map_err(|e| Error::Usage(format!("--oidc-ca-file: {e}")))?;
        }
    }
    let anchor_bytes = std::fs::read(&args.anchor).map_err(Error::io("read", &args.anchor))?;
    let anchor = Anchor::decode(&anchor_bytes)
        .map_err(|e| Error::Usage(format!("{}: {e}", args.anchor.display())))?;
    let client: backbone_registry::id::SubsystemId = args
        .client
        .parse()
        .map_err(|e: backbone_registry::Error| Error::Usage(format!("--client: {e}")))?;
    let public_url = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://localhost:{}", args.listen.port()))
        .trim_end_matches('/')
        .to_owned();
    let trust = match &args.calendar_cert {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(Error::io("read", path))?;
            Trust {
                certificates: vec![crate::ksi::certificate_record(&bytes).map_err(|why| {
                    Error::Usage(format!("--calendar-cert {}: {why}", path.display()))
                })?],
                publications: None,
            }
        }
        None => Trust::default(),
    };
    backbone_hsm::private::create_dir(&args.data_dir)
        .map_err(Error::io("create", &args.data_dir))?;
    let redirect_uri = format!("{public_url}/oidc/callback");
    let (oidc, dev_provider) = match args.dev_oidc {
        Some(addr) => {
            // Bound now, so that port 0 gives the issuer URL its real port.
            let listener = std::net::TcpListener::bind(addr)
                .map_err(|e| Error::Check(format!("--dev-oidc {addr}: {e}")))?;
            listener
                .set_nonblocking(true)
                .map_err(|e| Error::Check(format!("--dev-oidc {addr}: {e}")))?;
            let port = listener
                .local_addr()
                .map_err(|e| Error::Check(format!("--dev-oidc {addr}: {e}")))?
                .port();
            let issuer = format!("http://localhost:{port}");
            let secret = backbone_portal::session::random_token();
            let registered = RegisteredClient {
                id: args.oidc_client_id.clone(),
                secret: secret.clone(),
                redirect_uris: vec![redirect_uri.clone()],
            };
            let provider = Provider::new(&issuer, vec![registered]).map_err(Error::Check)?;
            let oidc = OidcConfig {
                issuer,
                client_id: args.oidc_client_id.clone(),
                client_secret: secret,
                redirect_uri,
                ca_file: args.oidc_ca_file.clone(),
            };
            (oidc, Some((listener, port, provider)))
        }
        None => {
            let issuer = args
                .oidc_issuer
                .clone()
                .ok_or_else(|| Error::Usage("--oidc-issuer or --dev-oidc is needed".into()))?;
            let path = args
                .oidc_client_secret_file
                .clone()
                .ok_or_else(|| Error::Usage("--oidc-client-secret-file is needed".into()))?;
            let secret = std::fs::read_to_string(&path)
                .map_err(Error::io("read", &path))?
                .trim()
                .to_owned();
            (
                OidcConfig {
                    issuer,
                    client_id: args.oidc_client_id.clone(),
                    client_secret: secret,
                    redirect_uri,
                    ca_file: args.oidc_ca_file.clone(),
                },
                None,
            )
        }
    };
    let runtime = tokio::runtime::Runtime::new()
        .map_err(Error::io("start the runtime for", "portal serve"))?;
    runtime.block_on(async move {
        let conf = Arc::new(
            ConfClient::open(anchor, ClientConfig { cache_path: Some(args.data_dir.join(CONF_CACHE_FILE)), ..ClientConfig::default() })
                .map_err(|e| Error::Check(format!("configuration cache: {e}")))?,
        );
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().map_err(|e| Error::Check(e.to_string()))?;
        if let Err(e) = fetch::refresh_once(&conf, &http, SystemTime::now()).await {
            if conf.current(SystemTime::now()).is_err() {
                return Err(Error::Check(format!("no usable global configuration: {e}")));
            }
            tracing::warn!(error = %e, "registry unreachable; serving from the cached configuration");
        }
        let config = PortalConfig {
            backbone: BackboneConfig {
                gateway: gateway_client(args, settings, env, &conf)?,
                client: client.to_string(),
                limit: history::DEFAULT_LIMIT,
                timeout: Duration::from_secs(args.timeout.max(1)),
            },
            oidc,
            data_dir: args.data_dir.clone(),
            idle_timeout: Duration::from_secs(args.idle_minutes.max(1) * 60),
            history_cache: server::DEFAULT_HISTORY_CACHE,
        };
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let refresher = tokio::spawn(fetch::run(Arc::clone(&conf), FetchConfig::default(), SystemTime::now, stopped));
        if let Some((listener, port, provider)) = dev_provider {
            let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| Error::Check(format!("--dev-oidc: {e}")))?;
            println!("test OpenID provider on http://localhost:{port} (test persons only)");
            let app = provider::router(Arc::new(provider));
            tokio::spawn(backbone_server::serve_router(listener, app, backbone_server::Limits::default(), std::future::pending()));
        }
        let portal = Arc::new(Portal::new(config, conf, trust).map_err(|e| Error::Check(e.to_string()))?);
        let listener = tokio::net::TcpListener::bind(args.listen).await.map_err(|e| Error::Check(format!("--listen {}: {e}", args.listen)))?;
        println!("citizen portal on {public_url} as {client}, through the gateway at {}", args.gateway);
        if !args.gateway.starts_with("http://") {
            println!("its client certificate: {} (register it on the gateway: backbone gateway add-client-cert {client} FILE)", args.data_dir.join(CLIENT_CERT_FILE).display());
        }
        tracing::info!(listen = %args.listen, client = %client, gateway = %args.gateway, "portal started");
        let served = server::serve(listener, portal, crate::registry::shutdown_signal()).await.map_err(|e| Error::Check(e.to_string()));
        let _ = stop.send(true);
        let _ = refresher.await;
        served
    })
}
