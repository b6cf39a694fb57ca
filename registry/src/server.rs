//! Serving the global configuration over HTTP: `GET /globalconf` returns the newest signed
//! envelope. A background task generates a new version every [`DEFAULT_REGENERATE_EVERY`].
//!
//! The configuration is signed, so it travels over plain HTTP like X-Road's; the listener binds
//! where the operator says (127.0.0.1 in tests and the demo).

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{Error, Registry};

/// How often a new version is generated: X-Road's central server default, short enough that a
/// revocation reaches every gateway within about a minute plus one client refresh.
pub const DEFAULT_REGENERATE_EVERY: Duration = Duration::from_secs(60);
/// How long a version stays valid: ten regeneration periods, so gateways ride out a registry
/// outage of several minutes, yet fail closed within ten minutes of losing it for good.
pub const DEFAULT_CONF_VALIDITY: Duration = Duration::from_secs(600);
/// The path the configuration is served at.
pub const CONF_PATH: &str = "/globalconf";

/// Settings of the configuration server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// How often to generate a new version, [`DEFAULT_REGENERATE_EVERY`].
    #[serde(with = "secs")]
    pub regenerate_every: Duration,
    /// Validity of each version, [`DEFAULT_CONF_VALIDITY`].
    #[serde(with = "secs")]
    pub conf_validity: Duration,
}

/// A running configuration server.
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    published: Arc<Published>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

#[derive(Debug)]
struct Published {
    registry: Arc<Registry>,
    config: ServeConfig,
    envelope: RwLock<Arc<Vec<u8>>>,
}

// === impl ServeConfig ===

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig { regenerate_every: DEFAULT_REGENERATE_EVERY, conf_validity: DEFAULT_CONF_VALIDITY }
    }
}

impl ServeConfig {
    /// Checks the settings before anything is bound.
    ///
    /// # Errors
    ///
    /// [`Error::Refused`] when a version would expire before the next is generated.
    pub fn check(&self) -> Result<(), Error> {
        if self.regenerate_every.is_zero() {
            return Err(Error::Refused("registry.regenerate_every must be more than 0 s".into()));
        }
        if self.conf_validity <= self.regenerate_every {
            return Err(Error::Refused(format!(
                "registry.conf_validity ({} s) must be longer than registry.regenerate_every ({} s), or gateways fail closed between versions",
                self.conf_validity.as_secs(),
                self.regenerate_every.as_secs()
            )));
        }
        Ok(())
    }
}

// === impl Server ===

impl Server {
    /// Generates the first version, then serves on `listener` and regenerates periodically.
    ///
    /// # Errors
    ///
    /// A bad setting, or the first generation failing (store or HSM).
    pub async fn spawn(registry: Arc<Registry>, config: ServeConfig, listener: TcpListener) -> Result<Server, Error> {
        config.check()?;
        let local_addr = listener.local_addr().map_err(|source| Error::Io { action: "bind", path: "listener".into(), source })?;
        let first = generate(&registry, &config).await?;
        let published = Arc::new(Published { registry, config, envelope: RwLock::new(Arc::new(first)) });
        let (shutdown, mut stop_serving) = watch::channel(false);
        let app = Router::new().route(CONF_PATH, get(conf)).with_state(published.clone());
        let serving = tokio::spawn(async move {
            let stop = async move {
                let _ = stop_serving.wait_for(|stop| *stop).await;
            };
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
                tracing::error!(error = %e, "configuration server stopped");
            }
        });
        let regenerating = tokio::spawn(regenerate_loop(published.clone(), shutdown.subscribe()));
        tracing::info!(%local_addr, path = CONF_PATH, "serving the global configuration");
        Ok(Server { local_addr, published, shutdown, tasks: vec![serving, regenerating] })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The download URL for anchors.
    pub fn url(&self) -> String {
        format!("http://{}{CONF_PATH}", self.local_addr)
    }

    /// Generates and publishes a new version now (after an admin change), without waiting for the
    /// period.
    pub async fn regenerate_now(&self) -> Result<u64, Error> {
        publish(&self.published).await
    }

    /// Stops serving and regenerating, and waits for both to end.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

async fn conf(State(published): State<Arc<Published>>) -> Response {
    match published.envelope.read() {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/octet-stream")], bytes.to_vec()).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn regenerate_loop(published: Arc<Published>, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(published.config.regenerate_every);
    ticker.tick().await; // the first tick is immediate; the first version already exists
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if let Err(e) = publish(&published).await {
                    tracing::error!(error = %e, "could not generate the global configuration");
                }
            }
            _ = stop.changed() => return,
        }
    }
}

async fn publish(published: &Published) -> Result<u64, Error> {
    let bytes = generate(&published.registry, &published.config).await?;
    let version = crate::SignedConf::decode(&bytes)
        .and_then(|s| crate::conf::parse_unverified(s.document()))
        .map(|c| c.version)?;
    *published.envelope.write().map_err(|_| Error::Unreachable("envelope lock poisoned"))? = Arc::new(bytes);
    tracing::debug!(version, "published the global configuration");
    Ok(version)
}

/// Signing may wait on an HSM: off the async threads.
async fn generate(registry: &Arc<Registry>, config: &ServeConfig) -> Result<Vec<u8>, Error> {
    let registry = registry.clone();
    let validity = config.conf_validity;
    tokio::task::spawn_blocking(move || registry.generate(SystemTime::now(), validity).map(|s| s.encode()))
        .await
        .map_err(|_| Error::Unreachable("generation task panicked"))?
}

mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}
