//! The per-request layers of an axum router: a request timeout and a body limit. The accept loop
//! ([`crate::Server::spawn`]) adds the tracing span and the concurrency limit around every server,
//! axum or not.
//!
//! A gateway does not use these: it reads bodies against its own limit and bounds each call it
//! makes, so that it can answer with an X-Road fault and log the outcome of every request it has
//! logged (a timeout that dropped the exchange half-way would leave a request without one).

use axum::Router;
use axum::extract::DefaultBodyLimit;
use http::StatusCode;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::limits::Limits;

/// Adds, outermost first: the request timeout (503 when the handling of a request, once it holds
/// an in-flight permit, takes longer than `limits.request_timeout`), then the body limit (413
/// when a `Content-Length` or the bytes read exceed `limits.max_body`).
pub fn push_route_layers<S>(router: Router<S>, limits: &Limits) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    // A later `layer` wraps the earlier ones: the body limit is inside the timeout.
    // axum's extractors keep their own limit (2 MB); it is set to the same.
    router
        .layer(DefaultBodyLimit::max(limits.max_body))
        .layer(RequestBodyLimitLayer::new(limits.max_body))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            limits.request_timeout,
        ))
}
