//! The HTTPS admin API: TLS 1.3, the server key in the key store, and only registered
//! administrators' client certificates accepted (pinned by exact certificate; a revoked
//! administrator is refused from the next handshake on). Every accepted operation is applied as
//! the administrator named by the certificate, so the audit log says who did it.
//!
//! ```text
//!  TCP ─▶ TLS 1.3 (server key: hsm Signer; client cert: Registry::admin_for) ─▶ actor = admin name
//!      ─▶ POST /admin/v1/operations (Operation JSON) ─▶ Operation::apply (blocking pool) ─▶ Outcome JSON
//!      ─▶ GET  /admin/v1/audit?from=N&limit=M        ─▶ audit entries JSON
//!      ─▶ GET  /admin/v1/conf                         ─▶ the configuration as it would be published
//! ```
//!
//! Errors are JSON `{"code", "message"}` with the HTTP status of their kind (see
//! `docs/admin-api.md`). The change is durable (RocksDB WAL synced) before the answer is sent.

pub mod client;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Extension;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use backbone_hsm::Signer;
use backbone_hsm::tls::{self, Pins};
use backbone_server::{Limits, Protocol, Server, Transport};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::model::Certificate;
use crate::operation::{MAX_OPERATION_LEN, Operation};
use crate::server::DEFAULT_CONF_VALIDITY;
use crate::{Error, Registry, conf};

/// The path operations are posted to.
pub const OPERATIONS_PATH: &str = "/admin/v1/operations";
/// The path of the audit log.
pub const AUDIT_PATH: &str = "/admin/v1/audit";
/// The path of the configuration preview.
pub const CONF_PREVIEW_PATH: &str = "/admin/v1/conf";
/// Most audit entries one request returns.
pub const MAX_AUDIT_PAGE: usize = 10_000;

/// A running admin API.
#[derive(Debug)]
pub struct AdminServer {
    local_addr: SocketAddr,
    certificate: Certificate,
    server: Server,
}

/// The administrator a connection authenticated as.
#[derive(Clone, Debug)]
pub struct Actor(pub String);

/// The error body of the admin API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Machine-readable kind: `invalid_id`, `duplicate`, `not_found`, `refused`, `bad_request`,
    /// `bad_csr`, `too_large`, `forbidden`, `internal`.
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
}

#[derive(Debug)]
struct AdminPins(Arc<Registry>);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    from: Option<u64>,
    limit: Option<usize>,
}

// === impl AdminServer ===

impl AdminServer {
    /// Starts the admin API on `listener`, with `key` (its certificate issued by the registry CA
    /// on first use) as the server identity.
    ///
    /// # Errors
    ///
    /// Certificate issuance or TLS configuration failures.
    pub async fn spawn(
        registry: Arc<Registry>,
        key: Arc<dyn Signer>,
        listener: TcpListener,
    ) -> Result<AdminServer, Error> {
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::Refused(format!("admin listener: {e}")))?;
        let certificate = {
            let registry = registry.clone();
            let public_key = key.public_key().clone();
            blocking(move || registry.admin_tls_certificate(&public_key, SystemTime::now())).await?
        };
        let chain = vec![
            certificate.der().to_vec(),
            registry.ca_certificate().der().to_vec(),
        ];
        let config = tls::server_config(key, chain, Arc::new(AdminPins(registry.clone())))
            .map_err(|e| Error::Refused(format!("admin API TLS: {e}")))?;
        // The router's own body limit (MAX_OPERATION_LEN) answers in the API's error form.
        let router = backbone_server::layers::push_route_layers(
            router(registry.clone()),
            &Limits::default(),
        );
        let server = Server::spawn(listener, Transport::Tls(Arc::new(config)), Protocol::Http1, Limits::default(), move |connection| {
            // The verifier admitted only a registered certificate; look up whose it is.
            let admin = match connection.peer_certificate().map(|der| registry.admin_for(der)) {
                Some(Ok(Some(admin))) => admin,
                other => {
                    tracing::warn!(remote = %connection.remote, found = ?other.map(|r| r.map(|a| a.map(|a| a.name))), "admin API connection without a registered administrator");
                    return None;
                }
            };
            tracing::info!(remote = %connection.remote, admin = %admin.name, "admin API connection");
            let actor = Actor(admin.name);
            Some(router.clone().map_request(move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(actor.clone());
                request
            }))
        })
        .map_err(|e| Error::Refused(format!("admin listener: {e}")))?;
        Ok(AdminServer {
            local_addr,
            certificate,
            server,
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's TLS certificate, which administrators' clients pin.
    pub fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    /// Stops accepting connections; requests in flight finish.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route(OPERATIONS_PATH, post(operation))
        .route(AUDIT_PATH, get(audit))
        .route(CONF_PREVIEW_PATH, get(conf_preview))
        .layer(DefaultBodyLimit::max(MAX_OPERATION_LEN))
        .with_state(registry)
}

async fn operation(
    State(registry): State<Arc<Registry>>,
    Extension(actor): Extension<Actor>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("an operation is at most {MAX_OPERATION_LEN} bytes"),
            );
        }
        Err(rejection) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                rejection.body_text(),
            );
        }
    };
    let operation: Operation = match serde_json::from_slice(&body) {
        Ok(op) => op,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("not an operation: {e}"),
            );
        }
    };
    let name = operation.name();
    let who = actor.0.clone();
    match blocking(move || operation.apply(&registry, &actor.0, SystemTime::now())).await {
        Ok(outcome) => {
            tracing::info!(admin = %who, op = name, "admin operation applied");
            json(StatusCode::OK, &outcome)
        }
        Err(e) => {
            tracing::info!(admin = %who, op = name, error = %e, "admin operation refused");
            from_error(&e)
        }
    }
}

async fn audit(
    State(registry): State<Arc<Registry>>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "query: from=N&limit=M".to_owned(),
        );
    };
    let from = query.from.unwrap_or(1);
    let limit = query.limit.unwrap_or(MAX_AUDIT_PAGE).min(MAX_AUDIT_PAGE);
    match blocking(move || registry.audit_log(from, limit)).await {
        Ok(entries) => json(StatusCode::OK, &entries),
        Err(e) => from_error(&e),
    }
}

async fn conf_preview(State(registry): State<Arc<Registry>>) -> Response {
    let result = blocking(move || {
        let signed = registry.generate(SystemTime::now(), DEFAULT_CONF_VALIDITY)?;
        conf::parse_unverified(signed.document())
    })
    .await;
    match result {
        Ok(conf) => json(StatusCode::OK, &conf),
        Err(e) => from_error(&e),
    }
}

/// Runs registry work (RocksDB synced writes, HSM signatures) off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| Error::Unreachable("registry task panicked"))?
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    json(
        status,
        &ApiError {
            code: code.to_owned(),
            message,
        },
    )
}

/// The status and code of each registry error kind.
fn from_error(e: &Error) -> Response {
    let (status, code) = match e {
        Error::InvalidId { .. } => (StatusCode::BAD_REQUEST, "invalid_id"),
        Error::Decode { .. } => (StatusCode::BAD_REQUEST, "bad_request"),
        Error::Csr(_) => (StatusCode::BAD_REQUEST, "bad_csr"),
        Error::Duplicate { .. } => (StatusCode::CONFLICT, "duplicate"),
        Error::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
        Error::Refused(_) | Error::WrongInstance { .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, "refused")
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    error(status, code, e.to_string())
}

// === impl AdminPins ===

impl Pins for AdminPins {
    fn is_pinned(&self, certificate: &[u8]) -> bool {
        match self.0.admin_for(certificate) {
            Ok(found) => found.is_some(),
            Err(error) => {
                tracing::error!(%error, "cannot look up an administrator certificate; refusing");
                false
            }
        }
    }
}
