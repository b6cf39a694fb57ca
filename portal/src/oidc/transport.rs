//! The relying party's HTTP client for the OpenID provider: one HTTP/1.1 request per
//! connection, over TLS 1.2 or 1.3 (rustls with the ring provider) to `https://` URLs, or in
//! plain HTTP to a loopback host only (the test provider, the demonstration).
//!
//! ```text
//!  URL ─▶ check (https, or http to 127.0.0.1 / ::1 / localhost)
//!      ─▶ TCP ─▶ TLS (roots from the CA file, name checked by webpki) ─▶ HTTP/1.1 ─▶ Reply
//!            everything within the timeout · at most MAX_RESPONSE bytes · no redirect followed
//! ```
//!
//! The server's certificate chain is checked by rustls' `WebPkiServerVerifier` against the CA
//! certificates of one PEM bundle, by default Debian's system bundle ([`DEFAULT_CA_FILE`]), and
//! must name the URL's host (RFC 6125 via webpki). Redirects are handed back to the caller as
//! they are: OpenID Connect endpoints have no reason to redirect the relying party.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::Error;

/// The system's CA bundle on Debian and Ubuntu (package `ca-certificates`): the roots that
/// public providers such as TARA chain to.
pub const DEFAULT_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Largest answer body read from the provider: discovery documents, key sets and token answers
/// are a few kilobytes.
pub const MAX_RESPONSE: usize = 64 * 1024;
/// Largest response head (status line and headers) read: generous for any real server, small
/// enough that a hostile one cannot make the portal buffer much.
pub const MAX_HEAD: usize = 16 * 1024;

/// An HTTP client for the provider's endpoints.
#[derive(Clone, Debug)]
pub struct Transport {
    tls: Option<(Arc<rustls::ClientConfig>, PathBuf)>,
    timeout: Duration,
}

/// An answer, read in full.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, at most [`MAX_RESPONSE`] bytes.
    pub body: Vec<u8>,
}

/// Why a request to the provider failed; [`Error::Provider`] names the URL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The URL does not parse or is not `http` or `https` with a host.
    #[error("not an absolute http or https URL")]
    BadUrl,
    /// Plain HTTP to a host other than a loopback address.
    #[error("plain http is allowed only to a loopback host (127.0.0.1, ::1, localhost); use https")]
    PlainHttp,
    /// An `https` URL but no trusted CA certificates were loaded (the issuer is plain HTTP).
    #[error("https needs trusted CA certificates, which are loaded only for an https issuer")]
    NoTrustRoots,
    /// The TCP connection failed.
    #[error("connecting: {0}")]
    Connect(std::io::Error),
    /// The TLS handshake failed, e.g. a certificate from an unknown CA or for another name.
    #[error("TLS handshake: {source} (trusting the CA certificates in {})", .ca_file.display())]
    Tls {
        /// What rustls refused.
        source: std::io::Error,
        /// The CA bundle trusted.
        ca_file: PathBuf,
    },
    /// The HTTP exchange failed.
    #[error("HTTP: {0}")]
    Http(hyper::Error),
    /// The answer did not come in time.
    #[error("no complete answer within {} s", .0.as_secs_f32())]
    Timeout(Duration),
    /// The answer body is larger than allowed.
    #[error("the answer is longer than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The endpoint redirected; OpenID Connect endpoints are not followed elsewhere.
    #[error("answered {status} redirecting to {location:?}; redirects are not followed")]
    Redirected {
        /// The status.
        status: StatusCode,
        /// The `Location` header.
        location: String,
    },
}

// === impl Transport ===

impl Transport {
    /// A client trusting the CA certificates in the PEM file `ca_file` for `https://` URLs, or
    /// reaching loopback `http://` URLs only when `ca_file` is `None`. Every request, from
    /// connecting to the last byte of the answer, must finish within `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] (key `portal.oidc.ca_file`) when the file cannot be read or holds no
    /// usable certificate.
    pub fn new(ca_file: Option<&Path>, timeout: Duration) -> Result<Transport, Error> {
        let tls = match ca_file {
            Some(path) => Some((Arc::new(client_config(path)?), path.to_owned())),
            None => None,
        };
        Ok(Transport { tls, timeout })
    }

    /// `GET url`.
    ///
    /// # Errors
    ///
    /// [`Error::Provider`] naming the URL and the [`TransportError`].
    pub async fn get(&self, url: &str) -> Result<Reply, Error> {
        self.send(Method::GET, url, &[], None).await
    }

    /// `POST url` with a form body and extra headers such as `authorization`.
    ///
    /// # Errors
    ///
    /// [`Error::Provider`] naming the URL and the [`TransportError`].
    pub async fn post_form(
        &self,
        url: &str,
        headers: &[(header::HeaderName, String)],
        form: String,
    ) -> Result<Reply, Error> {
        self.send(Method::POST, url, headers, Some(form)).await
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(header::HeaderName, String)],
        form: Option<String>,
    ) -> Result<Reply, Error> {
        let failed = |source| Error::Provider {
            url: url.to_owned(),
            source,
        };
        let target = Target::parse(url).map_err(failed)?;
        let mut request = Request::builder()
            .method(method)
            .uri(target.path.clone())
            .header(header::HOST, target.authority.clone())
            .header(
                header::USER_AGENT,
                concat!("backbone-portal/", env!("CARGO_PKG_VERSION")),
            )
            .header(header::ACCEPT, "application/json")
            .header(header::CONNECTION, "close");
        if form.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        for (name, value) in headers {
            let value = HeaderValue::from_str(value).map_err(|_| {
                Error::Unreachable("a request header to the provider does not encode")
            })?;
            request = request.header(name, value);
        }
        // The path and host come from a parsed URL, the headers were checked above.
        let request = request
            .body(Full::new(Bytes::from(form.unwrap_or_default())))
            .map_err(|_| Error::Unreachable("a request to the provider does not build"))?;
        match tokio::time::timeout(self.timeout, self.exchange(&target, request)).await {
            Ok(reply) => reply.map_err(failed),
            Err(_) => Err(failed(TransportError::Timeout(self.timeout))),
        }
    }

    async fn exchange(
        &self,
        target: &Target,
        request: Request<Full<Bytes>>,
    ) -> Result<Reply, TransportError> {
        let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(TransportError::Connect)?;
        if !target.tls {
            return exchange(tcp, request).await;
        }
        let Some((config, ca_file)) = &self.tls else {
            return Err(TransportError::NoTrustRoots);
        };
        let name = ServerName::try_from(target.host.clone()).map_err(|_| TransportError::BadUrl)?;
        let stream = tokio_rustls::TlsConnector::from(Arc::clone(config))
            .connect(name, tcp)
            .await
            .map_err(|source| TransportError::Tls {
                source,
                ca_file: ca_file.clone(),
            })?;
        exchange(stream, request).await
    }
}

/// Checks that `url` may be used for the provider: `https`, or `http` to a loopback host.
///
/// # Errors
///
/// [`Error::Provider`] naming the URL: [`TransportError::BadUrl`] or
/// [`TransportError::PlainHttp`].
pub fn check_url(url: &str) -> Result<(), Error> {
    Target::parse(url)
        .map(|_| ())
        .map_err(|source| Error::Provider {
            url: url.to_owned(),
            source,
        })
}

/// Whether `url` is an `https` URL (else it is plain HTTP, or not a URL at all).
pub fn is_https(url: &str) -> bool {
    url.parse::<Uri>()
        .is_ok_and(|uri| uri.scheme_str() == Some("https"))
}

/// The client configuration: TLS 1.3 and 1.2 with the ring provider, the chain checked by webpki
/// against the roots in `ca_file`, HTTP/1.1 offered by ALPN.
fn client_config(ca_file: &Path) -> Result<rustls::ClientConfig, Error> {
    let refuse = |reason: String| Error::Config {
        key: "portal.oidc.ca_file",
        reason: format!("{}: {reason}", ca_file.display()),
    };
    let pem = std::fs::read(ca_file).map_err(|e| refuse(e.to_string()))?;
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| refuse(format!("not a PEM certificate bundle: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _unusable) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(refuse("holds no usable CA certificate".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(&provider),
    )
    .build()
    .map_err(|e| refuse(format!("certificate verifier: {e}")))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| refuse(format!("TLS versions: {e}")))?
        .with_webpki_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// One request on a fresh connection; the connection is dropped afterwards.
async fn exchange<S>(stream: S, request: Request<Full<Bytes>>) -> Result<Reply, TransportError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(MAX_HEAD)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(TransportError::Http)?;
    let driver = AbortOnDrop(tokio::spawn(connection));
    let response = sender
        .send_request(request)
        .await
        .map_err(TransportError::Http)?;
    let (head, body) = response.into_parts();
    let body = match Limited::new(body, MAX_RESPONSE).collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        // Limited fails with the connection's own error or with LengthLimitError.
        Err(e) => match e.downcast::<hyper::Error>() {
            Ok(e) => return Err(TransportError::Http(*e)),
            Err(_) => {
                return Err(TransportError::TooLarge {
                    limit: MAX_RESPONSE,
                });
            }
        },
    };
    drop(driver);
    Ok(Reply {
        status: head.status,
        headers: head.headers,
        body,
    })
}

/// Stops the connection task when the exchange ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<Result<(), hyper::Error>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Where a URL points.
#[derive(Debug)]
struct Target {
    tls: bool,
    host: String,
    port: u16,
    authority: String,
    path: String,
}

// === impl Target ===

impl Target {
    fn parse(url: &str) -> Result<Target, TransportError> {
        let uri: Uri = url.parse().map_err(|_| TransportError::BadUrl)?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(TransportError::BadUrl),
        };
        let authority = uri.authority().ok_or(TransportError::BadUrl)?;
        if authority.as_str().contains('@') {
            return Err(TransportError::BadUrl);
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(TransportError::BadUrl);
        }
        if !tls && !is_loopback(&host) {
            return Err(TransportError::PlainHttp);
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let path = uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        Ok(Target {
            tls,
            host,
            port,
            authority: authority.as_str().to_owned(),
            path,
        })
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback() {
        for url in [
            "http://127.0.0.1:8490/x",
            "http://localhost:1",
            "http://[::1]:80/",
            "http://127.1.2.3",
            "https://tara.ria.ee/oidc",
        ] {
            assert!(check_url(url).is_ok(), "{url}");
        }
        for url in [
            "http://tara.ria.ee",
            "http://10.0.0.1:80/",
            "http://localhost.example",
            "http://[::2]/",
        ] {
            assert!(
                matches!(
                    check_url(url),
                    Err(Error::Provider {
                        source: TransportError::PlainHttp,
                        ..
                    })
                ),
                "{url}"
            );
        }
        for url in ["ftp://x", "/relative", "https://user@host/", "", "https://"] {
            assert!(
                matches!(
                    check_url(url),
                    Err(Error::Provider {
                        source: TransportError::BadUrl,
                        ..
                    })
                ),
                "{url}"
            );
        }
    }

    #[test]
    fn targets_have_host_port_and_path() {
        let target = Target::parse("https://tara.ria.ee/oidc/token?x=1").unwrap();
        assert_eq!(
            (
                target.tls,
                target.host.as_str(),
                target.port,
                target.path.as_str()
            ),
            (true, "tara.ria.ee", 443, "/oidc/token?x=1")
        );
        let target = Target::parse("http://[::1]:8490").unwrap();
        assert_eq!(
            (
                target.tls,
                target.host.as_str(),
                target.port,
                target.path.as_str(),
                target.authority.as_str()
            ),
            (false, "::1", 8490, "/", "[::1]:8490")
        );
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificates here\n").unwrap();
        let error = Transport::new(Some(&empty), Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("portal.oidc.ca_file") && error.contains("no usable CA certificate"),
            "{error}"
        );
        let error = Transport::new(
            Some(&dir.path().join("missing.pem")),
            Duration::from_secs(1),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("missing.pem"), "{error}");
    }
}
