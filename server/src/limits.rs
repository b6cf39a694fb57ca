//! What every server bounds, with the defaults and the reason for each.

use std::time::Duration;

/// A client that has not finished its TLS handshake by then is dropped. A TLS 1.3 handshake is
/// one round trip and a signature; ten seconds allows a slow link and an HSM under load, and
/// bounds how long an unauthenticated connection holds one of [`DEFAULT_MAX_CONNECTIONS`].
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP/1.1 client must send a whole request head within this, counted from when the server
/// starts waiting for it: a slow-loris connection is dropped after it, and so is a keep-alive
/// connection that stays idle this long (clients reconnect).
pub const DEFAULT_HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once; over it, new connections wait in the listener's backlog until one
/// closes. 512 leaves room within the 1,024 file descriptors a service gets by default for the
/// stores' files and outgoing connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// Requests handled at once, over all connections; over it, requests wait for a permit. The wait
/// is bounded by the requests holding the permits: an axum router's request timeout ends each of
/// them, the gateway bounds each call it makes. Two cores handle about this many exchanges in a
/// few milliseconds.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;

/// Most bytes of a request head (request line and headers). X-Road's headers and a few cookies
/// take a few KiB; 64 KiB refuses only what no client of ours sends.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;

/// An axum router answers 503 when a request, queueing included, takes longer: a minute is far
/// above any handler's work here and still frees a stuck request's resources.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest request body an axum router reads unless its server sets its own: the APIs served this
/// way take small JSON documents, hashes and forms.
pub const DEFAULT_MAX_BODY: usize = 2 * 1024 * 1024;

/// On shutdown, connections get this long to finish the requests they are serving; idle ones
/// close at once.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What a server bounds. [`Limits::default`] gives the `DEFAULT_*` values; tests shorten the
/// timeouts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// See [`DEFAULT_HANDSHAKE_TIMEOUT`].
    pub handshake_timeout: Duration,
    /// See [`DEFAULT_HEAD_TIMEOUT`].
    pub head_timeout: Duration,
    /// See [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// See [`DEFAULT_MAX_IN_FLIGHT`].
    pub max_in_flight: usize,
    /// See [`DEFAULT_MAX_HEADER_BYTES`].
    pub max_header_bytes: usize,
    /// See [`DEFAULT_REQUEST_TIMEOUT`]; applied by [`crate::layers::push_route_layers`].
    pub request_timeout: Duration,
    /// See [`DEFAULT_MAX_BODY`]; applied by [`crate::layers::push_route_layers`].
    pub max_body: usize,
    /// See [`DEFAULT_DRAIN_TIMEOUT`].
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            head_timeout: DEFAULT_HEAD_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_body: DEFAULT_MAX_BODY,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

impl Limits {
    /// These limits with another body limit.
    #[must_use]
    pub fn with_max_body(mut self, max_body: usize) -> Self {
        self.max_body = max_body;
        self
    }
}
