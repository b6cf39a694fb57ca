//! A client of the admin API, for the CLI and tests: TLS 1.3 with the administrator's key in the
//! key store, the registry's admin certificate pinned, one HTTP/1.1 request per connection
//! (administration is rare; simplicity wins over reuse).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use backbone_hsm::Signer;
use backbone_hsm::tls::{self, PinSet};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::de::DeserializeOwned;

use super::{AUDIT_PATH, ApiError, CONF_PREVIEW_PATH, OPERATIONS_PATH};
use crate::operation::{Operation, Outcome};
use crate::store::AuditEntry;
use crate::{Error, GlobalConf};

/// Largest answer read: the configuration preview of a large instance, with margin.
pub const MAX_RESPONSE_LEN: usize = 64 << 20;
/// Connect, handshake and answer must all finish within this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Talks to one registry's admin API.
#[derive(Clone)]
pub struct AdminClient {
    address: SocketAddr,
    connector: tokio_rustls::TlsConnector,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The registry refused the operation (4xx) with its reason.
    #[error("the registry refused it ({status}, {}): {}", .error.code, .error.message)]
    Refused {
        /// HTTP status.
        status: u16,
        /// The registry's answer.
        error: ApiError,
    },
    /// Connection, TLS or server failure.
    #[error("{0}")]
    Failed(String),
}

// === impl AdminClient ===

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl AdminClient {
    /// A client authenticating with `certificate` (DER) and its key `signer`, accepting only the
    /// server certificate `server_certificate` (DER).
    ///
    /// # Errors
    ///
    /// A key TLS 1.3 cannot use.
    pub fn new(
        address: SocketAddr,
        signer: Arc<dyn Signer>,
        certificate: Vec<u8>,
        server_certificate: Vec<u8>,
    ) -> Result<Self, Error> {
        let config = tls::client_config(
            signer,
            vec![certificate],
            Arc::new(PinSet::new([server_certificate])),
        )
        .map_err(|e| Error::Refused(format!("admin client TLS: {e}")))?;
        let mut config = config;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(AdminClient {
            address,
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// Applies an operation.
    ///
    /// # Errors
    ///
    /// [`ClientError::Refused`] with the registry's reason, or [`ClientError::Failed`].
    pub async fn apply(&self, operation: &Operation) -> Result<Outcome, ClientError> {
        let body = serde_json::to_vec(operation).map_err(|e| ClientError::Failed(e.to_string()))?;
        self.call(Method::POST, OPERATIONS_PATH, body).await
    }

    /// The audit log from `from`, at most `limit` entries.
    ///
    /// # Errors
    ///
    /// As [`AdminClient::apply`].
    pub async fn audit(&self, from: u64, limit: usize) -> Result<Vec<AuditEntry>, ClientError> {
        self.call(
            Method::GET,
            &format!("{AUDIT_PATH}?from={from}&limit={limit}"),
            Vec::new(),
        )
        .await
    }

    /// The configuration as the registry would publish it now.
    ///
    /// # Errors
    ///
    /// As [`AdminClient::apply`].
    pub async fn conf_preview(&self) -> Result<GlobalConf, ClientError> {
        self.call(Method::GET, CONF_PREVIEW_PATH, Vec::new()).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<T, ClientError> {
        let (status, bytes) = tokio::time::timeout(REQUEST_TIMEOUT, self.send(method, path, body))
            .await
            .map_err(|_| {
                ClientError::Failed(format!(
                    "no answer from {} within {REQUEST_TIMEOUT:?}",
                    self.address
                ))
            })??;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| ClientError::Failed(format!("unexpected answer: {e}")));
        }
        match serde_json::from_slice::<ApiError>(&bytes) {
            Ok(error) if status.is_client_error() => Err(ClientError::Refused {
                status: status.as_u16(),
                error,
            }),
            Ok(error) => Err(ClientError::Failed(format!(
                "registry error {status}: {}",
                error.message
            ))),
            Err(_) => Err(ClientError::Failed(format!("registry answered {status}"))),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let failed = |what: &str| {
            let what = what.to_owned();
            move |e: &dyn std::fmt::Display| ClientError::Failed(format!("{what}: {e}"))
        };
        let tcp = tokio::net::TcpStream::connect(self.address)
            .await
            .map_err(|e| failed(&format!("connect to {}", self.address))(&e))?;
        // The pin identifies the server; the name is only carried in the handshake.
        let name = ServerName::IpAddress(self.address.ip().into());
        let stream = self
            .connector
            .connect(name, tcp)
            .await
            .map_err(|e| failed("TLS handshake with the registry")(&e))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| failed("HTTP handshake")(&e))?;
        let driver = tokio::spawn(connection);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.address.to_string())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| failed("request")(&e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| failed("request")(&e))?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_RESPONSE_LEN)
            .collect()
            .await
            .map_err(|e| failed("answer")(&*e))?
            .to_bytes();
        driver.abort();
        Ok((status, bytes))
    }
}
