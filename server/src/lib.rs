//! The one way Backbone serves HTTP. Every server — a gateway's client, peer and admin ports, the
//! registry's configuration and admin APIs, the timestamping service, the citizen portal and the
//! admin listener — accepts connections through [`Server::spawn`]: a TLS handshake timeout, a
//! request-head timeout (which also closes idle keep-alive connections), a connection limit, a
//! header size limit and, above the connection, a concurrency limit and one tracing span per
//! request. axum routers add a request timeout and a body limit with [`layers::push_route_layers`].
//!
//! ```text
//!  TcpListener ─▶ permit (max_connections; over it, connections wait in the backlog)
//!       └─▶ TLS handshake (handshake_timeout) ─▶ HTTP/1.1 (head_timeout, max_header_bytes)
//!                                                or HTTP/2 (ALPN h2, keep-alive pings)
//!             └─▶ trace span ─▶ in-flight limit (max_in_flight; over it, requests wait)
//!                   └─▶ the server's service (axum: request timeout ─▶ body limit ─▶ router)
//! ```
//!
//! Start at [`Server::spawn`] and [`Limits`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// Accepting connections.
pub mod accept;
// What every server bounds, and the layers that bound it.
pub mod layers;
pub mod limits;
// Trying those limits from outside, for every server's tests.
pub mod probe;

pub use crate::accept::{Connection, Protocol, Server, Transport, serve_router};
pub use crate::limits::Limits;
