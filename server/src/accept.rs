//! The accept loop every server shares.
//!
//! Written here rather than taken from `axum::serve`, which installs no timer (so hyper's header
//! timeout does nothing), has no TLS and no connection limit; hyper-util's `auto` builder is not
//! used either, because it reads the HTTP version from the first bytes without a deadline. Each
//! server says which protocol it speaks.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::trace::TraceLayer;

use crate::limits::Limits;

/// Errors a served service may return; hyper closes the connection on one.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How connections are carried.
#[derive(Clone, Debug)]
pub enum Transport {
    /// Plain TCP: bind it to an address only trusted systems reach.
    Plain,
    /// TLS with this configuration (client authentication and pinning are its verifier's).
    Tls(Arc<rustls::ServerConfig>),
}

/// Which HTTP a server speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1, with the request-head timeout.
    Http1,
    /// HTTP/2 only (a peer gateway's link; over TLS with ALPN `h2`), with keep-alive pings.
    Http2,
}

/// The connection a request came on, handed to the server's `make` function and put in every
/// request's extensions.
#[derive(Clone, Debug)]
pub struct Connection {
    /// The client's address.
    pub remote: SocketAddr,
    /// The address it connected to.
    pub local: SocketAddr,
    /// The certificates the client presented in the TLS handshake (end entity first), if any;
    /// the TLS configuration's verifier has already accepted them.
    pub peer_certificates: Option<Arc<Vec<CertificateDer<'static>>>>,
}

/// A running server; [`Server::shutdown`] stops it. Dropping it leaves it running.
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Serves an axum router over plain HTTP/1.1 — the accept loop with `limits`, and the route
/// layers ([`crate::layers::push_route_layers`]) — until `until` resolves, then stops as
/// [`Server::shutdown`] does.
///
/// # Errors
///
/// The listener's address cannot be read.
pub async fn serve_router(
    listener: TcpListener,
    router: axum::Router,
    limits: Limits,
    until: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let router = crate::layers::push_route_layers(router, &limits);
    let server = Server::spawn(
        listener,
        Transport::Plain,
        Protocol::Http1,
        limits,
        move |_| Some(router.clone()),
    )?;
    until.await;
    server.shutdown().await;
    Ok(())
}

// === impl Connection ===

impl Connection {
    /// The DER of the client's end-entity certificate, if it presented one.
    pub fn peer_certificate(&self) -> Option<&[u8]> {
        self.peer_certificates
            .as_ref()
            .and_then(|c| c.first())
            .map(AsRef::as_ref)
    }
}

// === impl Server ===

impl Server {
    /// Serves `listener`: for each connection (up to `limits.max_connections` at once), the TLS
    /// handshake if any, then `make` is asked for the connection's service; `None` closes the
    /// connection (say, a certificate the verifier let through that names nobody). Every request
    /// runs in a tracing span, waits for one of `limits.max_in_flight` permits shared by all
    /// connections, and carries the [`Connection`] in its extensions.
    ///
    /// # Errors
    ///
    /// The listener's address cannot be read.
    pub fn spawn<M, S, B>(
        listener: TcpListener,
        transport: Transport,
        protocol: Protocol,
        limits: Limits,
        make: M,
    ) -> std::io::Result<Server>
    where
        M: Fn(&Connection) -> Option<S> + Send + Sync + 'static,
        S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let local_addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let accept = Accept {
            transport,
            protocol,
            connections: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
            limits,
            make: Arc::new(make),
        };
        let task = tokio::spawn(accept.run(listener, stopped));
        Ok(Server {
            local_addr,
            stop,
            task,
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets connections finish what they are serving (idle ones close at once)
    /// for up to the drain timeout, then returns.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

// === impl Accept ===

struct Accept<M> {
    transport: Transport,
    protocol: Protocol,
    limits: Limits,
    connections: Arc<Semaphore>,
    in_flight: Arc<Semaphore>,
    make: Arc<M>,
}

/// How long to wait after a failed `accept` (out of file descriptors, say) before trying again.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

impl<M, S, B> Accept<M>
where
    M: Fn(&Connection) -> Option<S> + Send + Sync + 'static,
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    async fn run(self, listener: TcpListener, mut stopped: watch::Receiver<bool>) {
        let graceful = GracefulShutdown::new();
        let drain = self.limits.drain_timeout;
        let this = Arc::new(self);
        loop {
            // A permit first: over the limit, connections wait in the kernel's backlog.
            let permit = tokio::select! {
                () = stop_requested(&mut stopped) => break,
                permit = Arc::clone(&this.connections).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let (tcp, remote) = tokio::select! {
                () = stop_requested(&mut stopped) => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(ACCEPT_RETRY).await;
                        continue;
                    }
                },
            };
            let watcher = graceful.watcher();
            tokio::spawn(Self::serve(Arc::clone(&this), tcp, remote, watcher, permit));
        }
        let local = listener.local_addr().ok();
        drop(listener);
        drop(this);
        if tokio::time::timeout(drain, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                ?local,
                "connections still open after the drain timeout; dropped"
            );
        }
    }

    async fn serve(
        self: Arc<Self>,
        tcp: TcpStream,
        remote: SocketAddr,
        watcher: Watcher,
        permit: OwnedSemaphorePermit,
    ) {
        // The connection's slot, given back when it ends.
        let _permit = permit;
        let _ = tcp.set_nodelay(true);
        let local = tcp.local_addr().unwrap_or(remote);
        match &self.transport {
            Transport::Plain => {
                let connection = Connection {
                    remote,
                    local,
                    peer_certificates: None,
                };
                self.serve_http(TokioIo::new(tcp), connection, watcher)
                    .await;
            }
            Transport::Tls(config) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(config));
                let stream = match tokio::time::timeout(
                    self.limits.handshake_timeout,
                    acceptor.accept(tcp),
                )
                .await
                {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::info!(%remote, %local, %error, "TLS handshake refused");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(%remote, %local, timeout = ?self.limits.handshake_timeout, "TLS handshake timed out");
                        return;
                    }
                };
                let peer_certificates = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .map(|c| Arc::new(c.iter().map(|c| c.clone().into_owned()).collect()));
                let connection = Connection {
                    remote,
                    local,
                    peer_certificates,
                };
                self.serve_http(TokioIo::new(stream), connection, watcher)
                    .await;
            }
        }
    }

    async fn serve_http<I>(&self, io: TokioIo<I>, connection: Connection, watcher: Watcher)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let Some(service) = (self.make)(&connection) else {
            tracing::info!(remote = %connection.remote, local = %connection.local, "connection refused by the server");
            return;
        };
        let remote = connection.remote;
        let extension = connection.clone();
        let service = ServiceBuilder::new()
            // The span covers the wait for a permit as well as the handling.
            .layer(TraceLayer::new_for_http())
            .layer(GlobalConcurrencyLimitLayer::with_semaphore(Arc::clone(
                &self.in_flight,
            )))
            .map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(extension.clone());
                request
            })
            // Errors boxed, so that the trace layer can print them.
            .map_err(box_error::<S::Error>)
            .map_response(box_body_errors::<B>)
            .service(service);
        let service = TowerToHyperService::new(service);
        let served = match self.protocol {
            Protocol::Http1 => {
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(self.limits.head_timeout)
                    .max_header_size(self.limits.max_header_bytes)
                    // hyper's read buffer must hold a whole head and is at least 8 KiB.
                    .max_buf_size(self.limits.max_header_bytes.max(8192).saturating_mul(2));
                watcher.watch(builder.serve_connection(io, service)).await
            }
            Protocol::Http2 => {
                let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                builder
                    .timer(TokioTimer::new())
                    // A peer that stops answering pings for this long is dropped.
                    .keep_alive_interval(self.limits.head_timeout)
                    .keep_alive_timeout(self.limits.head_timeout)
                    .max_header_list_size(
                        u32::try_from(self.limits.max_header_bytes).unwrap_or(u32::MAX),
                    );
                watcher.watch(builder.serve_connection(io, service)).await
            }
        };
        if let Err(error) = served {
            tracing::debug!(%remote, %error, "connection ended");
        }
    }
}

fn box_error<E: Into<BoxError>>(error: E) -> BoxError {
    error.into()
}

/// A response whose body's errors are boxed.
type BoxedErrors<B> =
    http_body_util::combinators::MapErr<B, fn(<B as http_body::Body>::Error) -> BoxError>;

fn box_body_errors<B>(response: Response<B>) -> Response<BoxedErrors<B>>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    response.map(|body| body.map_err(box_error::<B::Error> as fn(B::Error) -> BoxError))
}

/// Resolves once a stop is requested (or the server's handle is gone).
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}
