//! A client of the gateway's admin API, for the CLI and tests: TLS 1.3 with the administrator's
//! key in the key store, the gateway's certificate pinned, one HTTP/1.1 request per connection.

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

use super::{
    ADD_CERTIFICATE_PATH, ApiError, CLIENTS_PATH, CONNECTION_PATH, Changed, GRANT_PATH,
    REMOVE_CERTIFICATE_PATH, REVOKE_PATH, RIGHTS_PATH, STATUS_PATH, Status,
};
use crate::access::{Grant, Grantee};
use crate::systems::{Connection, Listed};

/// Largest answer read.
pub const MAX_RESPONSE_LEN: usize = 64 << 20;
/// Connect, handshake and answer must finish within this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Talks to one gateway's admin API.
#[derive(Clone)]
pub struct AdminClient {
    address: SocketAddr,
    connector: tokio_rustls::TlsConnector,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The gateway refused the request with its reason.
    #[error("the gateway refused it ({status}, {}): {}", .error.code, .error.message)]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The error body.
        error: ApiError,
    },
    /// The connection, the handshake or the answer failed.
    #[error("{0}")]
    Failed(String),
}

impl AdminClient {
    /// A client authenticating with `key` and `certificate`, accepting only `gateway_certificate`.
    ///
    /// # Errors
    ///
    /// [`ClientError::Failed`] when the key cannot be used for TLS.
    pub fn new(
        address: SocketAddr,
        key: Arc<dyn Signer>,
        certificate: Vec<u8>,
        gateway_certificate: Vec<u8>,
    ) -> Result<Self, ClientError> {
        let mut config = tls::client_config(
            key,
            vec![certificate],
            Arc::new(PinSet::new([gateway_certificate])),
        )
        .map_err(|e| ClientError::Failed(format!("TLS: {e}")))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(AdminClient {
            address,
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// Every grant.
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    pub async fn rights(&self) -> Result<Vec<Grant>, ClientError> {
        self.call(Method::GET, RIGHTS_PATH, Vec::new()).await
    }

    /// Grants; whether it changed anything.
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    pub async fn grant(&self, grant: &Grant) -> Result<bool, ClientError> {
        let changed: Changed = self.call(Method::POST, GRANT_PATH, body(grant)?).await?;
        Ok(changed.changed)
    }

    /// Revokes; whether it changed anything.
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    pub async fn revoke(&self, grant: &Grant) -> Result<bool, ClientError> {
        let changed: Changed = self.call(Method::POST, REVOKE_PATH, body(grant)?).await?;
        Ok(changed.changed)
    }

    /// The information systems with settings.
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    pub async fn clients(&self) -> Result<Vec<Listed>, ClientError> {
        self.call(Method::GET, CLIENTS_PATH, Vec::new()).await
    }

    /// Registers `certificate` (DER) for `client`; whether it changed anything.
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    pub async fn add_client_certificate(
        &self,
        client: &str,
        certificate: &[u8],
    ) -> Result<bool, ClientError> {
        let pem = backbone_hsm::cert::pem("CERTIFICATE", certificate);
        let body = json_body(&serde_json::json!({ "client": client, "certificate": pem }))?;
        let changed: Changed = self.call(Method::POST, ADD_CERTIFICATE_PATH, body).await?;
        Ok(changed.changed)
    }

    /// Removes `client`'s certificate whose SHA-256 is `sha256`; whether it changed anything.
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    pub async fn remove_client_certificate(
        &self,
        client: &str,
        sha256: &str,
    ) -> Result<bool, ClientError> {
        let body = json_body(&serde_json::json!({ "client": client, "sha256": sha256 }))?;
        let changed: Changed = self
            .call(Method::POST, REMOVE_CERTIFICATE_PATH, body)
            .await?;
        Ok(changed.changed)
    }

    /// Sets how `client` must connect; whether it changed anything.
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    pub async fn set_connection(
        &self,
        client: &str,
        connection: Connection,
    ) -> Result<bool, ClientError> {
        let body =
            json_body(&serde_json::json!({ "client": client, "connection": connection.as_str() }))?;
        let changed: Changed = self.call(Method::POST, CONNECTION_PATH, body).await?;
        Ok(changed.changed)
    }

    /// The gateway's status.
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    pub async fn status(&self) -> Result<Status, ClientError> {
        self.call(Method::GET, STATUS_PATH, Vec::new()).await
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
            Ok(error) => Err(ClientError::Refused {
                status: status.as_u16(),
                error,
            }),
            Err(_) => Err(ClientError::Failed(format!(
                "the gateway answered {status}"
            ))),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let failed =
            |what: &str, e: &dyn std::fmt::Display| ClientError::Failed(format!("{what}: {e}"));
        let tcp = tokio::net::TcpStream::connect(self.address)
            .await
            .map_err(|e| failed(&format!("connect to {}", self.address), &e))?;
        // The pin identifies the gateway; the name is only carried in the handshake.
        let stream = self
            .connector
            .connect(ServerName::IpAddress(self.address.ip().into()), tcp)
            .await
            .map_err(|e| failed("TLS handshake with the gateway", &e))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| failed("HTTP handshake", &e))?;
        let driver = tokio::spawn(connection);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.address.to_string())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| failed("request", &e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| failed("request", &e))?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_RESPONSE_LEN)
            .collect()
            .await
            .map_err(|e| failed("answer", &*e))?
            .to_bytes();
        driver.abort();
        Ok((status, bytes))
    }
}

fn body(grant: &Grant) -> Result<Vec<u8>, ClientError> {
    let grantee = match &grant.grantee {
        Grantee::Client(c) => serde_json::json!({ "client": c.to_string() }),
        Grantee::Group(g) => serde_json::json!({ "group": g.to_string() }),
    };
    let value = serde_json::json!({ "service": grant.service.to_string(), "grantee": grantee, "method": grant.method, "path": grant.path });
    json_body(&value)
}

fn json_body(value: &serde_json::Value) -> Result<Vec<u8>, ClientError> {
    serde_json::to_vec(value).map_err(|e| ClientError::Failed(e.to_string()))
}
