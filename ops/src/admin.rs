//! The admin listener every service runs: `/metrics` (Prometheus text format), `/live` and
//! `/ready`.
//!
//! ```text
//!  Prometheus ─GET /metrics─▶ ┐
//!  kubelet    ─GET /live────▶ ├─ AdminServer (axum, its own task) ─▶ Registry, Readiness
//!  balancer   ─GET /ready───▶ ┘
//! ```
//!
//! `/live` answers 200 while the process runs. `/ready` answers 200 when every readiness check
//! passes, and 503 with one `name: reason` line per failing check otherwise. Services add checks
//! with [`Readiness::add_check`], or hold a [`Gate`] they open once ready.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::Error;

/// A running admin listener. Dropping it without [`AdminServer::shutdown`] stops it too.
#[derive(Debug)]
pub struct AdminServer {
    local_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// The readiness checks of a process; cheap to clone, all clones share the checks.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Arc<Mutex<Vec<(String, Check)>>>,
}

/// A readiness check that a component opens when it is ready and closes with a reason when it is
/// not. A new gate is closed with the reason "starting".
#[derive(Clone, Debug)]
pub struct Gate {
    state: Arc<Mutex<Result<(), String>>>,
}

type Check = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Binds `addr` and serves the admin endpoints on a task of the current tokio runtime.
///
/// # Errors
///
/// [`Error::Admin`] when the address cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    registry: Registry,
    readiness: Readiness,
) -> Result<AdminServer, Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Admin { addr, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| Error::Admin { addr, source })?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/live", get(live))
        .route("/ready", get(ready))
        .with_state(Arc::new(AdminState {
            registry,
            readiness,
        }));
    let (shutdown, stop) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        backbone_server::serve_router(listener, app, backbone_server::Limits::default(), async {
            let _ = stop.await;
        })
        .await
    });
    tracing::info!(listen = %local_addr, "admin listener serving /metrics, /live and /ready");
    Ok(AdminServer {
        local_addr,
        shutdown: Some(shutdown),
        task: Some(task),
    })
}

// === impl AdminServer ===

impl AdminServer {
    /// The bound address (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections, lets requests in flight finish, and waits for the listener.
    ///
    /// # Errors
    ///
    /// [`Error::Admin`] when the server failed while running.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let addr = self.local_addr;
        match self.task.take() {
            Some(task) => match task.await {
                Ok(result) => result.map_err(|source| Error::Admin { addr, source }),
                Err(_) => Err(Error::Unreachable(
                    "admin listener task panicked or was cancelled",
                )),
            },
            None => Ok(()),
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

// === impl Readiness ===

impl Readiness {
    /// No checks: ready.
    pub fn new() -> Self {
        Readiness::default()
    }

    /// Adds a check run on every `/ready` request. It MUST be cheap and MUST NOT block; it returns
    /// the reason when the component is not ready.
    pub fn add_check(
        &self,
        name: impl Into<String>,
        check: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) {
        self.lock().push((name.into(), Arc::new(check)));
    }

    /// Adds a gate, closed until the component calls [`Gate::open`].
    pub fn gate(&self, name: impl Into<String>) -> Gate {
        let gate = Gate {
            state: Arc::new(Mutex::new(Err("starting".to_owned()))),
        };
        let state = gate.clone();
        self.add_check(name, move || state.lock().clone());
        gate
    }

    /// Runs every check; the failing ones with their reasons, or `Ok` when all pass.
    pub fn check(&self) -> Result<(), Vec<(String, String)>> {
        let checks: Vec<_> = self.lock().clone();
        let failing: Vec<_> = checks
            .iter()
            .filter_map(|(name, check)| check().err().map(|reason| (name.clone(), reason)))
            .collect();
        if failing.is_empty() {
            Ok(())
        } else {
            Err(failing)
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, Check)>> {
        // A check that panicked while the list was locked left it intact: keep serving.
        self.checks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.lock().iter().map(|(name, _)| name.clone()).collect();
        f.debug_struct("Readiness").field("checks", &names).finish()
    }
}

// === impl Gate ===

impl Gate {
    /// Marks the component ready.
    pub fn open(&self) {
        *self.lock() = Ok(());
    }

    /// Marks the component not ready, with the reason `/ready` reports.
    pub fn close(&self, reason: impl Into<String>) {
        *self.lock() = Err(reason.into());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Result<(), String>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// === Handlers ===

struct AdminState {
    registry: Registry,
    readiness: Readiness,
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    match encoder.encode(&state.registry.gather(), &mut body) {
        Ok(()) => (
            [(header::CONTENT_TYPE, encoder.format_type().to_owned())],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot encode metrics");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode metrics: {e}\n"),
            )
                .into_response()
        }
    }
}

async fn live() -> &'static str {
    "live\n"
}

async fn ready(State(state): State<Arc<AdminState>>) -> Response {
    match state.readiness.check() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(failing) => {
            let mut body = String::from("not ready\n");
            for (name, reason) in failing {
                body.push_str(&format!("{name}: {reason}\n"));
            }
            (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
        }
    }
}
