//! The citizen portal in the demo: `backbone_portal` as the client subsystem
//! `EE/GOV/70000005/portal` behind the portal member's gateway, its reports and view log in
//! `DIR/portal` beside that gateway's files, proofs checked under the key-based policy with the
//! demo's calendar certificate. People sign in through the test OpenID provider, which offers the
//! demo's first scenario person (the one with the emergency access) before its usual test persons.
//!
//! ```text
//!  browser ─▶ portal (PORT+40) ─ findUsage ─▶ portal member's gateway ══▶ every agency's log
//!               └─ sign-in ─▶ test OpenID provider (PORT+41): scenario person, test persons
//! ```
//!
//! Both listen on 127.0.0.1 and are addressed as `localhost`, where browsers keep the portal's
//! `Secure` session cookie over plain HTTP.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use backbone_gateway::connect::GatewayClient;
use backbone_portal::history::{self, BackboneConfig};
use backbone_portal::oidc::client::OidcConfig;
use backbone_portal::oidc::provider::{self, Provider, RegisteredClient, TestPerson};
use backbone_portal::oidc::transport::DEFAULT_CA_FILE;
use backbone_portal::proof::Trust;
use backbone_portal::server::{self, Portal, PortalConfig};
use backbone_registry::client::ConfClient;
use backbone_timestamping_verify::publications_file::CertificateRecord;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::data::Citizen;
use crate::Error;

/// The portal's client id at the test provider.
pub const CLIENT_ID: &str = "portal";
/// How long the stop waits for open browser connections before closing them.
pub const SHUTDOWN_PATIENCE: Duration = Duration::from_secs(5);
/// Seconds each agency may take to answer the portal's findUsage, as `backbone portal serve`.
const FIND_USAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the portal is started with.
#[derive(Debug)]
pub struct Settings<'a> {
    /// The portal's port on 127.0.0.1; 0 for any.
    pub listen: u16,
    /// The test OpenID provider's port on 127.0.0.1; 0 for any.
    pub provider_listen: u16,
    /// Where reports and the view log are kept.
    pub dir: &'a Path,
    /// The portal's subsystem, sent as `X-Road-Client`.
    pub client: String,
    /// The client port of the portal member's gateway.
    pub gateway: GatewayClient,
    /// The calendar signing certificate, for key-based proof checks.
    pub certificate: CertificateRecord,
    /// Whom the test provider offers; empty for its usual test persons.
    pub persons: Vec<TestPerson>,
}

/// The running portal and its test provider.
#[derive(Debug)]
pub struct DemoPortal {
    /// Where a browser goes: `http://localhost:PORT`.
    pub url: String,
    /// The test provider's issuer URL.
    pub provider_url: String,
    /// Whom one may sign in as, the first preselected.
    pub persons: Vec<TestPerson>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

// === impl DemoPortal ===

impl DemoPortal {
    /// Starts the test provider and the portal, reading the global configuration from `conf`.
    ///
    /// # Errors
    ///
    /// [`Error::Check`] for a port that cannot be bound or a portal that cannot open its files.
    pub async fn start(settings: Settings<'_>, conf: Arc<ConfClient>) -> Result<DemoPortal, Error> {
        let (listener, port) = bind(settings.listen).await?;
        let (provider_listener, provider_port) = bind(settings.provider_listen).await?;
        let url = format!("http://localhost:{port}");
        let provider_url = format!("http://localhost:{provider_port}");
        let redirect_uri = format!("{url}/oidc/callback");
        let secret = backbone_portal::session::random_token();
        let registered = RegisteredClient {
            id: CLIENT_ID.into(),
            secret: secret.clone(),
            redirect_uris: vec![redirect_uri.clone()],
        };
        let mut provider = Provider::new(&provider_url, vec![registered])
            .map_err(|e| Error::Check(format!("test OpenID provider: {e}")))?;
        if !settings.persons.is_empty() {
            provider = provider.with_persons(settings.persons);
        }
        let persons = provider.persons().to_vec();
        let config = PortalConfig {
            backbone: BackboneConfig {
                gateway: settings.gateway.clone(),
                client: settings.client.clone(),
                limit: history::DEFAULT_LIMIT,
                timeout: FIND_USAGE_TIMEOUT,
            },
            oidc: OidcConfig {
                issuer: provider_url.clone(),
                client_id: CLIENT_ID.into(),
                client_secret: secret,
                redirect_uri,
                ca_file: DEFAULT_CA_FILE.into(),
            },
            data_dir: settings.dir.to_path_buf(),
            idle_timeout: server::DEFAULT_IDLE_TIMEOUT,
            history_cache: server::DEFAULT_HISTORY_CACHE,
        };
        let trust = Trust {
            certificates: vec![settings.certificate],
            publications: None,
        };
        let portal = Arc::new(Portal::new(config, conf, trust).map_err(|e| {
            Error::Check(format!("citizen portal in {}: {e}", settings.dir.display()))
        })?);

        let (stop, stopped) = watch::channel(false);
        let until = |mut stopped: watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        let app = provider::router(Arc::new(provider));
        let provider_stopped = until(stopped.clone());
        let provider_task = tokio::spawn(async move {
            if let Err(e) = backbone_server::serve_router(
                provider_listener,
                app,
                backbone_server::Limits::default(),
                provider_stopped,
            )
            .await
            {
                tracing::error!(error = %e, "test OpenID provider stopped");
            }
        });
        let portal_task = tokio::spawn(async move {
            if let Err(e) = server::serve(listener, portal, until(stopped)).await {
                tracing::error!(error = %e, "citizen portal stopped");
            }
        });
        tracing::info!(%url, provider = %provider_url, client = %settings.client, gateway = %settings.gateway.base(), "citizen portal started");
        Ok(DemoPortal {
            url,
            provider_url,
            persons,
            stop,
            tasks: vec![portal_task, provider_task],
        })
    }

    /// Stops the portal and the provider, waiting [`SHUTDOWN_PATIENCE`] at most for open
    /// connections.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout(SHUTDOWN_PATIENCE, task).await.is_err() {
                abort.abort();
            }
        }
    }
}

/// The test person for a synthetic citizen.
pub fn test_person(citizen: &Citizen) -> TestPerson {
    TestPerson {
        code: Cow::Owned(citizen.code().to_owned()),
        given_name: Cow::Borrowed(citizen.given),
        family_name: Cow::Borrowed(citizen.family),
        date_of_birth: Cow::Owned(citizen.birth_date.clone()),
    }
}

/// Whom the demo's provider offers: `first` (the scenario person), then the provider's usual
/// test persons.
pub fn persons(first: Option<&Citizen>) -> Vec<TestPerson> {
    let mut persons: Vec<TestPerson> = first.map(test_person).into_iter().collect();
    let code = persons.first().map(|p| p.code.clone());
    persons.extend(
        provider::TEST_PERSONS
            .into_iter()
            .filter(|p| code.as_ref() != Some(&p.code)),
    );
    persons
}

async fn bind(port: u16) -> Result<(tokio::net::TcpListener, u16), Error> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let refused =
        |e: std::io::Error| Error::Check(format!("citizen portal: cannot listen on {addr}: {e}"));
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(refused)?;
    let port = listener.local_addr().map_err(refused)?.port();
    Ok((listener, port))
}
