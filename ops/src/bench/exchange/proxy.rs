//! The echo service and the plain proxy chain `backbone bench exchange` measures the gateways
//! against. The chain moves bytes the way the gateways do, and does nothing else:
//!
//! ```text
//!  load ─HTTP/1.1─▶ proxy 1 ══ HTTP/2, TLS 1.3 (mutual, pinned, the gateways' keys and
//!                              certificates), 2 pooled connections ══▶ proxy 2 ─HTTP/1.1 (hyper, pooled)─▶ echo
//! ```
//!
//! Each proxy reads the whole request body before forwarding it and the whole answer before
//! returning it, as a gateway must to sign and log them. No signing, checking or logging.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use backbone_hsm::Signer;
use backbone_hsm::tls::{self, PinSet};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http2::SendRequest;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::Error;

/// Pooled HTTP/1.1 connections to the echo service.
type LocalClient = Client<HttpConnector, Full<Bytes>>;

/// HTTP/2 connections proxy 1 keeps to proxy 2, as a gateway keeps to a peer
/// (`backbone_gateway::peers::CONNECTIONS_PER_PEER`).
const CONNECTIONS: usize = backbone_gateway::peers::CONNECTIONS_PER_PEER;

/// The pause after a failed accept.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

/// A server task; aborted on drop.
#[derive(Debug)]
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An HTTP/1.1 and HTTP/2 service that reads each request whole and answers 200 with `answer`.
///
/// # Errors
///
/// When it cannot listen.
pub async fn echo(answer: Bytes) -> Result<Server, Error> {
    let listener = listen().await?;
    let addr = local(&listener)?;
    let task = tokio::spawn(accept_plain(listener, move |request| {
        let answer = answer.clone();
        async move {
            let _ = request.into_body().collect().await;
            let mut response = Response::new(Full::new(answer));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            response
        }
    }));
    Ok(Server { addr, task })
}

/// The two proxies, started in front of `echo`; the returned pair is (proxy 1, proxy 2).
/// `server` and `client` are the TLS keys and certificates of proxy 2 and proxy 1.
///
/// # Errors
///
/// When a listener, the TLS configuration or a connection between the proxies fails.
pub async fn chain(
    echo: SocketAddr,
    server: (Arc<dyn Signer>, Vec<u8>),
    client: (Arc<dyn Signer>, Vec<u8>),
) -> Result<(Server, Server), Error> {
    let tls_failed = |e: tls::TlsError| Error::Check(format!("proxy TLS: {e}"));
    let mut server_config = tls::server_config(
        server.0,
        vec![server.1.clone()],
        Arc::new(PinSet::new([client.1.clone()])),
    )
    .map_err(tls_failed)?;
    server_config.alpn_protocols = vec![b"h2".to_vec()];
    let mut client_config =
        tls::client_config(client.0, vec![client.1], Arc::new(PinSet::new([server.1])))
            .map_err(tls_failed)?;
    client_config.alpn_protocols = vec![b"h2".to_vec()];

    let second = second_proxy(
        echo,
        tokio_rustls::TlsAcceptor::from(Arc::new(server_config)),
    )
    .await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let mut senders = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        senders.push(connect_h2(&connector, second.addr).await?);
    }
    let senders = Arc::new(senders);
    let next = Arc::new(AtomicUsize::new(0));
    let upstream = second.addr;
    let listener = listen().await?;
    let addr = local(&listener)?;
    let task = tokio::spawn(accept_plain(listener, move |request: Request<Incoming>| {
        let senders = Arc::clone(&senders);
        let turn = next.fetch_add(1, Ordering::Relaxed);
        async move {
            let Some(sender) = senders.get(turn % senders.len().max(1)) else {
                return status(StatusCode::BAD_GATEWAY);
            };
            let (parts, body) = request.into_parts();
            let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
                return status(StatusCode::BAD_REQUEST);
            };
            let uri = format!(
                "https://{upstream}{}",
                parts.uri.path_and_query().map_or("/", |p| p.as_str())
            );
            let mut forward = Request::builder().method(parts.method).uri(uri);
            for (name, value) in &parts.headers {
                if name != hyper::header::HOST && name != hyper::header::CONNECTION {
                    forward = forward.header(name, value);
                }
            }
            let Ok(forward) = forward.body(Full::new(body)) else {
                return status(StatusCode::BAD_REQUEST);
            };
            let mut sender = sender.clone();
            let Ok(answer) = sender.send_request(forward).await else {
                return status(StatusCode::BAD_GATEWAY);
            };
            let (parts, body) = answer.into_parts();
            let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
                return status(StatusCode::BAD_GATEWAY);
            };
            Response::from_parts(parts, Full::new(body))
        }
    }));
    Ok((Server { addr, task }, second))
}

/// Proxy 2: HTTP/2 over TLS in, HTTP/1.1 to `echo` out through pooled hyper connections (the
/// client the gateways call their local services with).
async fn second_proxy(
    echo: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
) -> Result<Server, Error> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let http: LocalClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build(connector);
    let listener = listen().await?;
    let addr = local(&listener)?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                // Out of file descriptors, most often: let connections close.
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let http = http.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let http = http.clone();
                    async move { Ok::<_, Infallible>(forward_to_service(&http, echo, request).await) }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(Server { addr, task })
}

async fn forward_to_service(
    http: &LocalClient,
    echo: SocketAddr,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return status(StatusCode::BAD_REQUEST);
    };
    let url = format!(
        "http://{echo}{}",
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut forward = Request::builder().method(parts.method).uri(url);
    for (name, value) in &parts.headers {
        forward = forward.header(name, value);
    }
    let Ok(forward) = forward.body(Full::new(body)) else {
        return status(StatusCode::BAD_REQUEST);
    };
    let Ok(answer) = http.request(forward).await else {
        return status(StatusCode::BAD_GATEWAY);
    };
    let (parts, body) = answer.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return status(StatusCode::BAD_GATEWAY);
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = parts.status;
    if let Some(kind) = parts.headers.get(hyper::header::CONTENT_TYPE) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, kind.clone());
    }
    response
}

async fn connect_h2(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
) -> Result<SendRequest<Full<Bytes>>, Error> {
    let failed = |e: std::io::Error| Error::Check(format!("proxy 1 to proxy 2 at {addr}: {e}"));
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(failed)?;
    let _ = tcp.set_nodelay(true);
    let stream = connector
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .map_err(failed)?;
    // The window sizes the gateways use between them.
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Error::Check(format!("proxy 1 to proxy 2 at {addr}: HTTP/2: {e}")))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// Serves plain HTTP (1.1 or 2) on `listener` with `handle`.
async fn accept_plain<F, Fut>(listener: TcpListener, handle: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(ACCEPT_BACKOFF).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handle = handle.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let answer = handle(request);
                async move { Ok::<_, Infallible>(answer.await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = code;
    response
}

async fn listen() -> Result<TcpListener, Error> {
    TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Error::Check(format!("cannot listen on 127.0.0.1: {e}")))
}

fn local(listener: &TcpListener) -> Result<SocketAddr, Error> {
    listener
        .local_addr()
        .map_err(|e| Error::Check(format!("cannot listen on 127.0.0.1: {e}")))
}
