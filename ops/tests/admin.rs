//! The admin listener over real HTTP: `/metrics`, `/live`, `/ready` and graceful shutdown.
// Helpers outside #[test] functions: a test fixture that fails loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;

use backbone_ops::admin::{self, Readiness};
use prometheus::{IntCounter, Registry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A raw HTTP/1.1 GET: (status, content type, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_owned)
        })
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[tokio::test]
async fn metrics_and_liveness() {
    let registry = Registry::new();
    let counter =
        IntCounter::new("backbone_test_requests_total", "Requests seen by the test").unwrap();
    registry.register(Box::new(counter.clone())).unwrap();
    counter.inc_by(7);
    let server = admin::serve(loopback(), registry, Readiness::new())
        .await
        .unwrap();
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);

    let (status, content_type, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert!(
        body.contains("# TYPE backbone_test_requests_total counter"),
        "{body}"
    );
    assert!(body.contains("backbone_test_requests_total 7"), "{body}");

    counter.inc();
    let (_, _, body) = get(addr, "/metrics").await;
    assert!(body.contains("backbone_test_requests_total 8"), "{body}");

    let (status, _, body) = get(addr, "/live").await;
    assert_eq!((status, body.as_str()), (200, "live\n"));
    let (status, _, _) = get(addr, "/nosuch").await;
    assert_eq!(status, 404);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn readiness_follows_gates_and_checks() {
    let readiness = Readiness::new();
    let conf = readiness.gate("global configuration");
    let token_up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let probe = token_up.clone();
    readiness.add_check("hsm", move || {
        if probe.load(std::sync::atomic::Ordering::SeqCst) {
            Ok(())
        } else {
            Err("token 'gw' unavailable".to_owned())
        }
    });
    let server = admin::serve(loopback(), Registry::new(), readiness.clone())
        .await
        .unwrap();
    let addr = server.local_addr();

    let (status, _, body) = get(addr, "/ready").await;
    assert_eq!(status, 503);
    assert_eq!(body, "not ready\nglobal configuration: starting\n");

    conf.open();
    let (status, _, body) = get(addr, "/ready").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));

    token_up.store(false, std::sync::atomic::Ordering::SeqCst);
    conf.close("configuration expired at 2026-01-01T00:00:00Z");
    let (status, _, body) = get(addr, "/ready").await;
    assert_eq!(status, 503);
    assert!(
        body.contains("global configuration: configuration expired at 2026-01-01T00:00:00Z\n"),
        "{body}"
    );
    assert!(body.contains("hsm: token 'gw' unavailable\n"), "{body}");
    // Liveness does not depend on readiness.
    assert_eq!(get(addr, "/live").await.0, 200);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_stops_the_listener_and_frees_the_port() {
    let server = admin::serve(loopback(), Registry::new(), Readiness::new())
        .await
        .unwrap();
    let addr = server.local_addr();
    assert_eq!(get(addr, "/live").await.0, 200);
    server.shutdown().await.unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
    // The same address can be bound again.
    let again = admin::serve(addr, Registry::new(), Readiness::new())
        .await
        .unwrap();
    assert_eq!(get(again.local_addr(), "/live").await.0, 200);
    again.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_taken_address_is_an_error_naming_it() {
    let first = admin::serve(loopback(), Registry::new(), Readiness::new())
        .await
        .unwrap();
    let err = admin::serve(first.local_addr(), Registry::new(), Readiness::new())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(&first.local_addr().to_string()),
        "{err}"
    );
    assert_eq!(err.exit_code(), backbone_ops::EXIT_FAILURE);
    first.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_drops_slow_loris_refuses_large_bodies_and_makes_floods_wait() {
    use backbone_server::{Limits, probe};
    let server = admin::serve(loopback(), Registry::new(), Readiness::new())
        .await
        .unwrap();
    let addr = server.local_addr();
    // The listener's limits are the defaults; nothing it serves takes a body, so the
    // declared-too-large one is refused before any route sees it.
    probe::check_plain(addr, "/live", "/metrics", 413, &Limits::default())
        .await
        .unwrap();
    assert_eq!(get(addr, "/live").await.0, 200, "still serving");
    server.shutdown().await.unwrap();
}
