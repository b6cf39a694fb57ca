//! How an information system reaches its gateway's client port: HTTPS (TLS 1.3) pinned to the
//! gateway's registered TLS certificate, authenticating with the system's own certificate on a
//! key in its key store — or, for a system whose connection type allows it, without a
//! certificate or over plain HTTP on a loopback address ([`crate::systems`]).
//!
//! Backbone's own information systems (the portal, the demo's, the benchmark's) and the tests
//! call gateways through this; an agency's system in another language does the same with its own
//! HTTP client (the README shows `curl`).
//!
//! Built on hyper-util's client and hyper-rustls, as the gateway's own calls to local services
//! are: reqwest's rustls support would make every other reqwest client in the process need a
//! process-wide crypto provider.

use std::sync::Arc;
use std::time::Duration;

use backbone_hsm::Signer;
use backbone_hsm::tls::{PinnedServerVerifier, Pins};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::fault::X_ROAD_ERROR;

/// Largest answer read by default: the gateway's own body limit.
pub const DEFAULT_MAX_ANSWER: usize = crate::service::DEFAULT_MAX_BODY;
/// How long a call may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A client of one gateway's client port.
#[derive(Clone, Debug)]
pub struct GatewayClient {
    http: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: String,
    timeout: Duration,
    max_answer: usize,
}

/// One call being built: [`GatewayClient::call`], then headers and a body, then
/// [`Call::send`].
#[derive(Debug)]
pub struct Call<'c> {
    client: &'c GatewayClient,
    method: Method,
    target: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

/// The gateway's answer, read whole.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

/// Why a call did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TLS configuration cannot be built from the key.
    #[error("TLS: {0}")]
    Tls(String),
    /// The request cannot be built (a header or target that is not HTTP).
    #[error("bad request: {0}")]
    Request(String),
    /// The gateway cannot be reached, the TLS handshake failed, or the answer broke off.
    #[error("{0}")]
    Network(String),
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The answer is over the limit.
    #[error("the answer is over {0} bytes")]
    TooLarge(usize),
}

// === impl GatewayClient ===

impl GatewayClient {
    /// HTTPS to `address` (`host:port`), authenticating with `certificate` (DER) on `key`,
    /// accepting only a server certificate in `gateway` (the gateway's registered TLS
    /// certificate): the `https` connection type.
    ///
    /// # Errors
    ///
    /// [`ConnectError::Tls`] for a key TLS 1.3 cannot use.
    pub fn https(
        address: &str,
        key: Arc<dyn Signer>,
        certificate: Vec<u8>,
        gateway: Arc<dyn Pins>,
    ) -> Result<Self, ConnectError> {
        let mut config = backbone_hsm::tls::client_config(key, vec![certificate], gateway)
            .map_err(|e| ConnectError::Tls(e.to_string()))?;
        // hyper-rustls sets ALPN from the protocols it enables (HTTP/1.1).
        config.alpn_protocols.clear();
        Ok(Self::over_tls(address, config))
    }

    /// HTTPS to `address` without a client certificate, accepting only a server certificate in
    /// `gateway`: the `https-no-auth` connection type.
    ///
    /// # Errors
    ///
    /// [`ConnectError::Tls`] when rustls refuses the configuration.
    pub fn https_no_auth(address: &str, gateway: Arc<dyn Pins>) -> Result<Self, ConnectError> {
        let provider = backbone_hsm::tls::provider();
        let verifier = Arc::new(PinnedServerVerifier::new(gateway, &provider));
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| ConnectError::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Self::over_tls(address, config))
    }

    /// Plain HTTP to `address`: the `http` connection type, on the gateway's plain listener.
    ///
    /// # Errors
    ///
    /// [`ConnectError::Tls`] when rustls refuses the (unused) TLS configuration.
    pub fn plain(address: &str) -> Result<Self, ConnectError> {
        // No roots and never used: only http:// URLs are built from this client.
        let config = rustls::ClientConfig::builder_with_provider(backbone_hsm::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| ConnectError::Tls(e.to_string()))?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let mut client = Self::over_tls(address, config);
        client.base = format!("http://{address}");
        Ok(client)
    }

    fn over_tls(address: &str, config: rustls::ClientConfig) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        GatewayClient {
            http: Client::builder(TokioExecutor::new()).build(connector),
            base: format!("https://{address}"),
            timeout: DEFAULT_TIMEOUT,
            max_answer: DEFAULT_MAX_ANSWER,
        }
    }

    /// The same client with another timeout per call.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The same client reading answers of at most `max` bytes.
    #[must_use]
    pub fn with_max_answer(mut self, max: usize) -> Self {
        self.max_answer = max;
        self
    }

    /// The client port's URL, e.g. `https://127.0.0.1:8280`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A call of `method` on `target` (path and query, e.g. `/r1/EE/GOV/…/patients/Patient`).
    pub fn call(&self, method: Method, target: impl Into<String>) -> Call<'_> {
        Call {
            client: self,
            method,
            target: target.into(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// A `GET` of `target`.
    pub fn get(&self, target: impl Into<String>) -> Call<'_> {
        self.call(Method::GET, target)
    }

    /// A `POST` to `target`.
    pub fn post(&self, target: impl Into<String>) -> Call<'_> {
        self.call(Method::POST, target)
    }
}

// === impl Call ===

impl Call<'_> {
    /// Adds a header.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    #[must_use]
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Sends it and reads the whole answer.
    ///
    /// # Errors
    ///
    /// [`ConnectError`] when there is no complete answer.
    pub async fn send(self) -> Result<Answer, ConnectError> {
        let client = self.client;
        let mut request = Request::builder()
            .method(self.method)
            .uri(format!("{}{}", client.base, self.target));
        for (name, value) in &self.headers {
            let name = HeaderName::try_from(name.as_str())
                .map_err(|e| ConnectError::Request(format!("header {name:?}: {e}")))?;
            let value = HeaderValue::try_from(value.as_str())
                .map_err(|e| ConnectError::Request(format!("header {name}: {e}")))?;
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(self.body))
            .map_err(|e| ConnectError::Request(e.to_string()))?;
        let call = async {
            let response = client
                .http
                .request(request)
                .await
                .map_err(|e| ConnectError::Network(crate::provider::causes(&e)))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, client.max_answer)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        ConnectError::TooLarge(client.max_answer)
                    } else {
                        ConnectError::Network(e.to_string())
                    }
                })?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(client.timeout, call)
            .await
            .map_err(|_| ConnectError::Timeout(client.timeout))?
    }
}

// === impl Answer ===

impl Answer {
    /// The X-Road fault type (`X-Road-Error`), if the answer is a fault.
    pub fn fault_type(&self) -> Option<&str> {
        self.headers.get(X_ROAD_ERROR).and_then(|v| v.to_str().ok())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}
