//! Serving the global configuration over HTTP: `GET /globalconf` returns the newest signed
//! envelope. A background task generates a new version every [`DEFAULT_REGENERATE_EVERY`].
//!
//! The configuration is signed, so it travels over plain HTTP like X-Road's; the listener binds
//! where the operator says (127.0.0.1 in tests and the demo).

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use backbone_server::{Limits, Protocol, Transport};
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
/// Every published version: `/globalconf/{version}`, and its keyless signature at
/// `/globalconf/{version}/keyless-signature`.
pub const ARCHIVE_PATH: &str = "/globalconf/{version}";
/// The keyless signature of an archived version.
pub const KEYLESS_PATH: &str = "/globalconf/{version}/keyless-signature";
/// Attempts at getting a version's keyless signature before giving up on that version.
pub const KEYLESS_ATTEMPTS: u32 = 5;

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
    /// The JSON signing endpoint of a Backbone timestamping service (`http://HOST:PORT/sign`).
    /// When set, each version's envelope is covered by a keyless signature kept beside it, so an
    /// auditor can prove which configuration was in force at a moment. Default: none.
    pub timestamping_url: Option<String>,
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
    http: reqwest::Client,
}

// === impl ServeConfig ===

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            regenerate_every: DEFAULT_REGENERATE_EVERY,
            conf_validity: DEFAULT_CONF_VALIDITY,
            timestamping_url: None,
        }
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
            return Err(Error::Refused(
                "registry.regenerate_every must be more than 0 s".into(),
            ));
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
    pub async fn spawn(
        registry: Arc<Registry>,
        config: ServeConfig,
        listener: TcpListener,
    ) -> Result<Server, Error> {
        Self::spawn_with_limits(registry, config, listener, Limits::default()).await
    }

    /// [`Server::spawn`] with other connection and request limits than the defaults.
    ///
    /// # Errors
    ///
    /// As [`Server::spawn`].
    pub async fn spawn_with_limits(
        registry: Arc<Registry>,
        config: ServeConfig,
        listener: TcpListener,
        limits: Limits,
    ) -> Result<Server, Error> {
        config.check()?;
        let local_addr = listener.local_addr().map_err(|source| Error::Io {
            action: "bind",
            path: "listener".into(),
            source,
        })?;
        let first = generate(&registry, &config).await?;
        let published = Arc::new(Published {
            registry,
            config,
            envelope: RwLock::new(Arc::new(first.clone())),
            http: reqwest::Client::new(),
        });
        if let Ok(version) = version_of(&first) {
            spawn_keyless(published.clone(), version, first);
        }
        let (shutdown, mut stop_serving) = watch::channel(false);
        let app = Router::new()
            .route(CONF_PATH, get(conf))
            .route(ARCHIVE_PATH, get(archived))
            .route(KEYLESS_PATH, get(keyless))
            .with_state(published.clone());
        let app = backbone_server::layers::push_route_layers(app, &limits);
        let server = backbone_server::Server::spawn(
            listener,
            Transport::Plain,
            Protocol::Http1,
            limits,
            move |_| Some(app.clone()),
        )
        .map_err(|source| Error::Io {
            action: "bind",
            path: "listener".into(),
            source,
        })?;
        let serving = tokio::spawn(async move {
            let _ = stop_serving.wait_for(|stop| *stop).await;
            server.shutdown().await;
        });
        let regenerating = tokio::spawn(regenerate_loop(published.clone(), shutdown.subscribe()));
        tracing::info!(%local_addr, path = CONF_PATH, "serving the global configuration");
        Ok(Server {
            local_addr,
            published,
            shutdown,
            tasks: vec![serving, regenerating],
        })
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
        Ok(bytes) => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            bytes.to_vec(),
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn archived(
    State(published): State<Arc<Published>>,
    Path(version): Path<String>,
) -> Response {
    let registry = published.registry.clone();
    archive_answer(version, move |v| registry.archived(v)).await
}

async fn keyless(State(published): State<Arc<Published>>, Path(version): Path<String>) -> Response {
    let registry = published.registry.clone();
    archive_answer(version, move |v| registry.keyless_signature(v)).await
}

async fn archive_answer(
    version: String,
    read: impl FnOnce(u64) -> Result<Option<Vec<u8>>, Error> + Send + 'static,
) -> Response {
    let Ok(version) = version.parse::<u64>() else {
        return (StatusCode::BAD_REQUEST, "the version is a decimal number").into_response();
    };
    match tokio::task::spawn_blocking(move || read(version)).await {
        Ok(Ok(Some(bytes))) => {
            ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
        }
        Ok(Ok(None)) => (
            StatusCode::NOT_FOUND,
            "no such version, or no keyless signature for it yet",
        )
            .into_response(),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot read the configuration archive");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Gets the keyless signature of a version's envelope, retrying with back-off, and keeps it in
/// the archive. A failure is logged; the configuration is published regardless (gateways need
/// it more than auditors need its proof the same second).
fn spawn_keyless(published: Arc<Published>, version: u64, envelope: Vec<u8>) {
    let Some(url) = published.config.timestamping_url.clone() else {
        return;
    };
    tokio::spawn(async move {
        use sha2::Digest;
        // A KSI imprint: the SHA-256 algorithm id, then the digest.
        let mut imprint = vec![0x01];
        imprint.extend_from_slice(&sha2::Sha256::digest(&envelope));
        let hash: String = imprint.iter().map(|b| format!("{b:02x}")).collect();
        let body = format!("{{\"hash\":\"{hash}\",\"level\":0}}");
        let mut delay = Duration::from_millis(200);
        for attempt in 1..=KEYLESS_ATTEMPTS {
            match keyless_once(&published.http, &url, body.clone()).await {
                Ok(signature) => {
                    let registry = published.registry.clone();
                    match tokio::task::spawn_blocking(move || {
                        registry.set_keyless_signature(version, &signature)
                    })
                    .await
                    {
                        Ok(Ok(())) => tracing::debug!(
                            version,
                            "kept the keyless signature of the configuration"
                        ),
                        Ok(Err(e)) => {
                            tracing::error!(version, error = %e, "cannot keep the keyless signature")
                        }
                        Err(_) => tracing::error!(version, "keyless signature task panicked"),
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(version, attempt, %url, error = %e, "no keyless signature for the configuration yet");
                    tokio::time::sleep(delay).await;
                    delay = delay.saturating_mul(2);
                }
            }
        }
        tracing::error!(version, %url, "gave up on the keyless signature of this configuration version");
    });
}

async fn keyless_once(http: &reqwest::Client, url: &str, body: String) -> Result<Vec<u8>, String> {
    #[derive(Deserialize)]
    struct Answer {
        signature: String,
    }
    let response = http
        .post(url)
        .header(header::CONTENT_TYPE, "application/json")
        .timeout(Duration::from_secs(10))
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
    }
    let answer: Answer =
        serde_json::from_slice(&bytes).map_err(|e| format!("unexpected answer: {e}"))?;
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(answer.signature.trim())
        .map_err(|e| format!("signature is not base64: {e}"))
}

fn version_of(envelope: &[u8]) -> Result<u64, Error> {
    crate::SignedConf::decode(envelope)
        .and_then(|s| crate::conf::parse_unverified(s.document()))
        .map(|c| c.version)
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

async fn publish(published: &Arc<Published>) -> Result<u64, Error> {
    let bytes = generate(&published.registry, &published.config).await?;
    let version = version_of(&bytes)?;
    *published
        .envelope
        .write()
        .map_err(|_| Error::Unreachable("envelope lock poisoned"))? = Arc::new(bytes.clone());
    spawn_keyless(published.clone(), version, bytes);
    tracing::debug!(version, "published the global configuration");
    Ok(version)
}

/// Signing may wait on an HSM: off the async threads.
async fn generate(registry: &Arc<Registry>, config: &ServeConfig) -> Result<Vec<u8>, Error> {
    let registry = registry.clone();
    let validity = config.conf_validity;
    tokio::task::spawn_blocking(move || {
        registry
            .generate(SystemTime::now(), validity)
            .map(|s| s.encode())
    })
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
