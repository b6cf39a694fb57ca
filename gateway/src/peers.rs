//! The client gateway's connections to provider gateways: HTTP/2 over TLS 1.3, each pinned to
//! exactly the certificate the configuration registers for that peer, pooled and reused.
//!
//! A connection is keyed by the peer's address and certificate and our own certificate, so a certificate that the
//! registry replaces or revokes is never used again: the next request looks up the new one and
//! opens a new connection. HTTP/2 multiplexes every concurrent exchange to one peer over
//! [`CONNECTIONS_PER_PEER`] connections.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use backbone_hsm::Signer;
use backbone_hsm::tls::{self, PinSet};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http2::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::sync::Mutex;

/// Connections kept to one peer; HTTP/2 streams spread over them.
pub const CONNECTIONS_PER_PEER: usize = 2;
/// TCP connect plus TLS handshake must finish within this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a peer could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The address is not `host:port`, or resolves to nothing.
    #[error("peer address {0:?} is not a reachable host:port")]
    Address(String),
    /// TCP connect failed.
    #[error("cannot connect to {address}: {source}")]
    Connect {
        /// The peer.
        address: String,
        /// The error.
        source: std::io::Error,
    },
    /// The TLS handshake failed: most often the peer did not present its registered certificate.
    #[error("TLS handshake with {address} failed: {source}")]
    Handshake {
        /// The peer.
        address: String,
        /// The error.
        source: std::io::Error,
    },
    /// Connect and handshake took longer than [`CONNECT_TIMEOUT`].
    #[error("no TLS connection to {0} within {CONNECT_TIMEOUT:?}")]
    Timeout(String),
    /// Our own TLS key or certificate cannot be used.
    #[error("own TLS credentials: {0}")]
    Credentials(String),
    /// HTTP/2 failed on an established connection.
    #[error("HTTP/2 with {address}: {source}")]
    Http {
        /// The peer.
        address: String,
        /// The error.
        source: hyper::Error,
    },
}

/// Peer address, peer certificate, own certificate: a change of any opens new connections.
type PoolKey = (String, Vec<u8>, Vec<u8>);

/// The pool.
#[derive(Debug)]
pub struct Peers {
    signer: Arc<dyn Signer>,
    pool: Mutex<HashMap<PoolKey, Vec<SendRequest<Full<Bytes>>>>>,
    /// One connect at a time per peer: a burst of requests to a peer with no connection yet
    /// opens [`CONNECTIONS_PER_PEER`] connections, not one per request.
    connecting: Mutex<HashMap<PoolKey, Arc<Mutex<()>>>>,
    next: AtomicUsize,
}

// === impl Peers ===

impl Peers {
    /// A pool that authenticates with the TLS key `signer`.
    pub fn new(signer: Arc<dyn Signer>) -> Self {
        Peers {
            signer,
            pool: Mutex::new(HashMap::new()),
            connecting: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(0),
        }
    }

    /// Sends `request` to the peer at `address` that must present exactly `peer_certificate`,
    /// authenticating with `own_certificate`.
    ///
    /// # Errors
    ///
    /// [`PeerError`] when no connection can be made or the request fails on it.
    pub async fn send(
        &self,
        address: &str,
        peer_certificate: &[u8],
        own_certificate: &[u8],
        request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, PeerError> {
        let mut sender = self
            .sender(address, peer_certificate, own_certificate)
            .await?;
        sender
            .send_request(request)
            .await
            .map_err(|source| PeerError::Http {
                address: address.to_owned(),
                source,
            })
    }

    /// Drops every pooled connection.
    pub async fn clear(&self) {
        self.pool.lock().await.clear();
        self.connecting.lock().await.clear();
    }

    async fn sender(
        &self,
        address: &str,
        peer_certificate: &[u8],
        own_certificate: &[u8],
    ) -> Result<SendRequest<Full<Bytes>>, PeerError> {
        let key = (
            address.to_owned(),
            peer_certificate.to_vec(),
            own_certificate.to_vec(),
        );
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        if let Some(sender) = self.pooled(&key, turn, CONNECTIONS_PER_PEER).await {
            return Ok(sender);
        }
        // Connect outside the pool's lock (a slow peer must not stall exchanges with the others),
        // one connect at a time per peer; whoever waited takes what the connect before it pooled.
        let gate = Arc::clone(self.connecting.lock().await.entry(key.clone()).or_default());
        let _connecting = gate.lock().await;
        if let Some(sender) = self.pooled(&key, turn, CONNECTIONS_PER_PEER).await {
            return Ok(sender);
        }
        let connected = tokio::time::timeout(
            CONNECT_TIMEOUT,
            self.connect(address, peer_certificate, own_certificate),
        )
        .await
        .map_err(|_| PeerError::Timeout(address.to_owned()))?;
        let sender = match connected {
            Ok(sender) => sender,
            // A pooled connection, if one is still open, serves while the new one fails.
            Err(error) => return self.pooled(&key, turn, 1).await.ok_or(error),
        };
        let mut pool = self.pool.lock().await;
        let senders = pool.entry(key).or_default();
        if senders.len() < CONNECTIONS_PER_PEER {
            senders.push(sender.clone());
        }
        Ok(sender)
    }

    /// A pooled open connection, if at least `enough` are open.
    async fn pooled(
        &self,
        key: &PoolKey,
        turn: usize,
        enough: usize,
    ) -> Option<SendRequest<Full<Bytes>>> {
        let mut pool = self.pool.lock().await;
        let senders = pool.get_mut(key)?;
        senders.retain(|s| !s.is_closed());
        if senders.len() < enough {
            return None;
        }
        senders.get(turn % senders.len()).cloned()
    }

    async fn connect(
        &self,
        address: &str,
        peer_certificate: &[u8],
        own_certificate: &[u8],
    ) -> Result<SendRequest<Full<Bytes>>, PeerError> {
        let pins = Arc::new(PinSet::new([peer_certificate.to_vec()]));
        let mut config = tls::client_config(
            Arc::clone(&self.signer),
            vec![own_certificate.to_vec()],
            pins,
        )
        .map_err(|e| PeerError::Credentials(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|source| PeerError::Connect {
                address: address.to_owned(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        // The pin identifies the peer; the name is only carried in the handshake.
        let name = match tcp.peer_addr() {
            Ok(peer) => ServerName::IpAddress(peer.ip().into()),
            Err(_) => return Err(PeerError::Address(address.to_owned())),
        };
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(|source| PeerError::Handshake {
                address: address.to_owned(),
                source,
            })?;
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(4 << 20)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| PeerError::Http {
                address: address.to_owned(),
                source,
            })?;
        let peer = address.to_owned();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "peer connection closed");
            }
        });
        Ok(sender)
    }
}
