//! The gateway's HTTPS admin API: access rights and status, for the agency's operators.
//!
//! ```text
//!  operator's client ══ TLS 1.3: the gateway's own TLS key and registered certificate;
//!                        the client's certificate must be one of DATA_DIR/admins/NAME.pem ══▶
//!  GET  /admin/v1/rights          every grant
//!  POST /admin/v1/rights/grant    {"service","grantee":{"client"|"group":…},"method","path"} → {"changed":bool}
//!  POST /admin/v1/rights/revoke   the same                                                    → {"changed":bool}
//!  GET  /admin/v1/clients                       information systems: connection type, certificates
//!  POST /admin/v1/clients/certificates/add       {"client","certificate":PEM}        → {"changed":bool}
//!  POST /admin/v1/clients/certificates/remove    {"client","sha256"}                 → {"changed":bool}
//!  POST /admin/v1/clients/connection             {"client","connection":"https"|"https-no-auth"|"http"} → {"changed":bool}
//!  GET  /admin/v1/status          configuration version, message-log state
//! ```
//!
//! An administrator is a certificate file in the admins directory (`backbone gateway
//! add-admin NAME CERT`); the directory is read at each handshake, so removing the file locks
//! the administrator out from their next connection. Every change is written durably before it
//! is answered, and logged with the administrator's name. Errors are `{"code","message"}`:
//! 400 `bad_request`, 404 `not_found`, 413 `too_large`, 500 `internal`.

pub mod client;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use backbone_hsm::Signer;
use backbone_hsm::tls::{self, Pins};
use backbone_server::{Limits, Protocol, Server, Transport};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::access::{Grant, Grantee};
use crate::log::MessageLog;
use crate::rights::RightsStore;
use crate::systems::{Connection, SystemsError, SystemsStore};

/// The rights listing.
pub const RIGHTS_PATH: &str = "/admin/v1/rights";
/// Where grants are posted.
pub const GRANT_PATH: &str = "/admin/v1/rights/grant";
/// Where revocations are posted.
pub const REVOKE_PATH: &str = "/admin/v1/rights/revoke";
/// The information systems listing.
pub const CLIENTS_PATH: &str = "/admin/v1/clients";
/// Where a client certificate is registered.
pub const ADD_CERTIFICATE_PATH: &str = "/admin/v1/clients/certificates/add";
/// Where a client certificate is removed.
pub const REMOVE_CERTIFICATE_PATH: &str = "/admin/v1/clients/certificates/remove";
/// Where a client's connection type is set.
pub const CONNECTION_PATH: &str = "/admin/v1/clients/connection";
/// The status.
pub const STATUS_PATH: &str = "/admin/v1/status";
/// Largest request body.
pub const MAX_REQUEST_LEN: usize = 16 * 1024;
/// Largest administrator certificate file read.
const MAX_CERT_FILE: u64 = 64 * 1024;

/// The error body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// `bad_request`, `not_found`, `too_large`, `internal`.
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
}

/// The answer to a grant or a revocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changed {
    /// Whether the rights changed (false: the grant was already there, or was not there).
    pub changed: bool,
}

/// The status answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The held configuration version.
    pub conf_version: Option<u64>,
    /// Whether the configuration is current (not expired).
    pub conf_current: bool,
    /// Records in the message log.
    pub log_records: u64,
    /// Records not yet timestamped.
    pub log_unstamped: u64,
    /// Whether new exchanges are accepted.
    pub accepting: bool,
    /// The last timestamping failure, while it fails.
    pub timestamping_error: Option<String>,
}

/// The administrators: the certificate files of a directory.
#[derive(Clone, Debug)]
pub struct Admins(PathBuf);

/// A running admin API.
#[derive(Debug)]
pub struct AdminServer {
    local_addr: SocketAddr,
    server: Server,
}

struct State {
    rights: Arc<RightsStore>,
    systems: Arc<SystemsStore>,
    log: Arc<MessageLog>,
    conf: Arc<backbone_registry::client::ConfClient>,
}

// === impl Admins ===

impl Admins {
    /// The administrators whose certificates (PEM or DER, one per file, named `NAME.pem`) are in
    /// `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Admins(dir.into())
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.0
    }

    /// The administrator whose certificate is exactly `der`.
    pub fn name_of(&self, der: &[u8]) -> Option<String> {
        let entries = std::fs::read_dir(&self.0).ok()?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "pem")
                || entry.metadata().map_or(true, |m| m.len() > MAX_CERT_FILE)
            {
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            if certificate_der(&bytes).is_some_and(|c| c == der) {
                return path.file_stem().map(|s| s.to_string_lossy().into_owned());
            }
        }
        None
    }
}

impl Pins for Admins {
    fn is_pinned(&self, certificate: &[u8]) -> bool {
        self.name_of(certificate).is_some()
    }
}

/// The DER of a PEM (or DER) certificate file's content.
pub fn certificate_der(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.starts_with(b"-----BEGIN") {
        let (_, pem) = x509_parser::pem::parse_x509_pem(bytes).ok()?;
        return (pem.label == "CERTIFICATE").then_some(pem.contents);
    }
    x509_parser::parse_x509_certificate(bytes)
        .ok()
        .map(|_| bytes.to_vec())
}

// === impl AdminServer ===

impl AdminServer {
    /// Starts the admin API on `listener`, identified by `key` and its `certificate` (the
    /// gateway's TLS key and registered certificate), admitting `admins`, over `gateway`'s
    /// stores.
    ///
    /// # Errors
    ///
    /// When the key cannot be used for TLS.
    pub fn spawn(
        listener: TcpListener,
        key: Arc<dyn Signer>,
        certificate: Vec<u8>,
        admins: Admins,
        gateway: &crate::service::RunningGateway,
        log: Arc<MessageLog>,
        conf: Arc<backbone_registry::client::ConfClient>,
    ) -> Result<AdminServer, String> {
        let local_addr = listener.local_addr().map_err(|e| e.to_string())?;
        let config = tls::server_config(key, vec![certificate], Arc::new(admins.clone()))
            .map_err(|e| e.to_string())?;
        let state = Arc::new(State {
            rights: Arc::clone(gateway.rights()),
            systems: Arc::clone(gateway.systems()),
            log,
            conf,
        });
        let server = Server::spawn(listener, Transport::Tls(Arc::new(config)), Protocol::Http1, Limits::default(), move |connection| {
            // The verifier admitted only an administrator's certificate; look up whose it is
            // again (the file may have gone since).
            let Some(actor) = connection.peer_certificate().and_then(|der| admins.name_of(der)) else {
                tracing::warn!(remote = %connection.remote, "admin API connection without a registered administrator");
                return None;
            };
            let (state, actor) = (Arc::clone(&state), Arc::new(actor));
            Some(tower::service_fn(move |request: Request<Incoming>| {
                let (state, actor) = (Arc::clone(&state), Arc::clone(&actor));
                async move { Ok::<_, Infallible>(handle(&state, &actor, request).await) }
            }))
        })
        .map_err(|e| e.to_string())?;
        Ok(AdminServer { local_addr, server })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections; requests in flight finish.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

async fn handle(state: &State, actor: &str, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    match (method, path.as_str()) {
        (Method::GET, RIGHTS_PATH) => {
            let grants: Vec<Grant> = state.rights.snapshot().grants().cloned().collect();
            json(StatusCode::OK, &grants)
        }
        (Method::GET, STATUS_PATH) => {
            let log = state.log.status();
            let status = Status {
                conf_version: state.conf.version(),
                conf_current: state.conf.current(std::time::SystemTime::now()).is_ok(),
                log_records: log.records,
                log_unstamped: log.unstamped,
                accepting: log.accepting,
                timestamping_error: log.last_error,
            };
            json(StatusCode::OK, &status)
        }
        (Method::POST, GRANT_PATH | REVOKE_PATH) => {
            let grant = match read_grant(request.into_body()).await {
                Ok(grant) => grant,
                Err(response) => return response,
            };
            let granting = path == GRANT_PATH;
            let result = if granting {
                state.rights.grant(grant.clone())
            } else {
                state.rights.revoke(&grant)
            };
            match result {
                Ok(changed) => {
                    let who = match &grant.grantee {
                        Grantee::Client(c) => format!("client {c}"),
                        Grantee::Group(g) => format!("group {g}"),
                    };
                    let verb = if granting { "grant" } else { "revoke" };
                    tracing::info!(admin = %actor, changed, "{verb} {} {} on {} to {who}", grant.method, grant.path, grant.service);
                    json(StatusCode::OK, &Changed { changed })
                }
                Err(e) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    &e.to_string(),
                ),
            }
        }
        (Method::GET, CLIENTS_PATH) => json(StatusCode::OK, &state.systems.snapshot().list()),
        (Method::POST, ADD_CERTIFICATE_PATH | REMOVE_CERTIFICATE_PATH | CONNECTION_PATH) => {
            let bytes = match read_body(request.into_body()).await {
                Ok(bytes) => bytes,
                Err(response) => return response,
            };
            match change_clients(&state.systems, &path, &bytes) {
                Ok((changed, what)) => {
                    tracing::info!(admin = %actor, changed, "{what}");
                    json(StatusCode::OK, &Changed { changed })
                }
                Err(response) => response,
            }
        }
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such admin API path"),
    }
}

/// The body of a change to the information systems.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientChange {
    client: String,
    #[serde(default)]
    certificate: Option<String>,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    connection: Option<String>,
}

/// Applies a change posted to `path`: whether it changed anything, and what it was (for the
/// log), or the error answer.
// The error is the answer itself, built once on a path that ends the request.
#[allow(clippy::result_large_err)]
fn change_clients(
    systems: &SystemsStore,
    path: &str,
    bytes: &[u8],
) -> Result<(bool, String), Response<Full<Bytes>>> {
    let bad = |message: String| error(StatusCode::BAD_REQUEST, "bad_request", &message);
    let body: ClientChange =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not a client change: {e}")))?;
    let client: backbone_registry::id::ClientId = body
        .client
        .parse()
        .map_err(|e: backbone_registry::Error| bad(e.to_string()))?;
    let result = match path {
        ADD_CERTIFICATE_PATH => {
            let pem = body
                .certificate
                .ok_or_else(|| bad("certificate (PEM) is missing".into()))?;
            let der = certificate_der(pem.as_bytes())
                .ok_or_else(|| bad("certificate is not a PEM certificate".into()))?;
            let fingerprint = crate::systems::info(&der).sha256;
            systems.add_certificate(&client, &der).map(|c| {
                (
                    c,
                    format!("client certificate {fingerprint} added for {client}"),
                )
            })
        }
        REMOVE_CERTIFICATE_PATH => {
            let sha256 = body.sha256.ok_or_else(|| bad("sha256 is missing".into()))?;
            systems.remove_certificate(&client, &sha256).map(|c| {
                (
                    c,
                    format!("client certificate {sha256} removed for {client}"),
                )
            })
        }
        _ => {
            let connection: Connection = body
                .connection
                .ok_or_else(|| bad("connection is missing".into()))?
                .parse()
                .map_err(bad)?;
            systems.set_connection(&client, connection).map(|c| {
                (
                    c,
                    format!("connection type of {client} set to {connection}"),
                )
            })
        }
    };
    result.map_err(|e| match e {
        SystemsError::Invalid(message) => bad(message),
        SystemsError::Store(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &e.to_string(),
        ),
    })
}

async fn read_body(body: Incoming) -> Result<Bytes, Response<Full<Bytes>>> {
    match Limited::new(body, MAX_REQUEST_LEN).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(_) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            &format!("requests are at most {MAX_REQUEST_LEN} bytes"),
        )),
    }
}

/// The wire form of a grant, checked through [`Grant::new`] (deserialising [`Grant`] directly
/// would skip its checks).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    service: String,
    grantee: GranteeBody,
    method: String,
    path: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum GranteeBody {
    Client(String),
    Group(String),
}

async fn read_grant(body: Incoming) -> Result<Grant, Response<Full<Bytes>>> {
    let bytes = read_body(body).await?;
    let bad = |message: String| error(StatusCode::BAD_REQUEST, "bad_request", &message);
    let body: GrantBody =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("not a grant: {e}")))?;
    let service = body
        .service
        .parse()
        .map_err(|e: backbone_registry::Error| bad(e.to_string()))?;
    let grantee = match body.grantee {
        GranteeBody::Client(c) => Grantee::Client(
            c.parse()
                .map_err(|e: backbone_registry::Error| bad(e.to_string()))?,
        ),
        GranteeBody::Group(g) => Grantee::Group(
            g.parse()
                .map_err(|e: backbone_registry::Error| bad(e.to_string()))?,
        ),
    };
    Grant::new(service, grantee, &body.method, &body.path).map_err(|e| bad(e.to_string()))
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Full<Bytes>> {
    crate::service::json(status, value)
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    json(
        status,
        &ApiError {
            code: code.to_owned(),
            message: message.to_owned(),
        },
    )
}
