//! The shared accept loop and layers, tried from outside over real sockets: a slow-loris
//! connection, an oversized body, a connection flood, a slow handler, a stalled TLS handshake.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::routing::{get, post};
use backbone_server::{Limits, Protocol, Server, Transport, layers, probe};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

fn limits() -> Limits {
    Limits {
        handshake_timeout: Duration::from_millis(700),
        head_timeout: Duration::from_millis(700),
        max_connections: 4,
        max_in_flight: 8,
        request_timeout: Duration::from_millis(1500),
        max_body: 1024,
        ..Limits::default()
    }
}

async fn spawn(limits: Limits, transport: Transport) -> Server {
    let router = Router::new()
        .route("/", get(|| async { "hello" }))
        .route("/echo", post(|body: Bytes| async move { body }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        );
    let router = layers::push_route_layers(router, &limits);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    Server::spawn(listener, transport, Protocol::Http1, limits, move |_| {
        Some(router.clone())
    })
    .unwrap()
}

#[tokio::test]
async fn a_slow_loris_connection_is_dropped_within_the_head_timeout() {
    let server = spawn(limits(), Transport::Plain).await;
    let head = b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let kept = probe::slow_loris(
        server.local_addr(),
        head,
        Duration::from_millis(100),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let kept = kept.expect("the server kept a slow-loris connection open for 10 s");
    assert!(
        kept < Duration::from_millis(700 + 1000),
        "dropped only after {kept:?}"
    );
    // An idle connection that sends nothing is dropped too.
    let kept = probe::slow_loris(
        server.local_addr(),
        b"",
        Duration::from_millis(100),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert!(
        kept.is_some_and(|k| k < Duration::from_millis(1700)),
        "idle connection kept {kept:?}"
    );
    // And the server still serves.
    assert_eq!(
        probe::get_status(server.local_addr(), "/", Duration::from_secs(5))
            .await
            .unwrap(),
        Some(200)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn an_oversized_body_is_refused() {
    let server = spawn(limits(), Transport::Plain).await;
    let addr = server.local_addr();
    // Declared too large: refused before a byte of the body is read.
    assert_eq!(
        probe::post_declaring(addr, "/echo", 1025, Duration::from_secs(5))
            .await
            .unwrap(),
        Some(413)
    );
    // Streamed (chunked) past the limit: refused when the limit is crossed.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").await.unwrap();
    for _ in 0..3 {
        stream.write_all(b"200\r\n").await.unwrap();
        stream.write_all(&[b'a'; 0x200]).await.unwrap();
        stream.write_all(b"\r\n").await.unwrap();
    }
    stream.write_all(b"0\r\n\r\n").await.unwrap();
    assert_eq!(
        probe::read_status(&mut stream, Duration::from_secs(5))
            .await
            .unwrap(),
        Some(413)
    );
    // Within the limit: served.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello").await.unwrap();
    assert_eq!(
        probe::read_status(&mut stream, Duration::from_secs(5))
            .await
            .unwrap(),
        Some(200)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_limit_wait_while_the_server_keeps_serving() {
    let limits = Limits {
        head_timeout: Duration::from_secs(5),
        ..limits()
    };
    let server = spawn(limits, Transport::Plain).await;
    let addr = server.local_addr();
    // Three idle connections and one keep-alive client take the four slots.
    let mut held = probe::hold_connections(addr, 3).await.unwrap();
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert_eq!(get_on(&mut client, "/").await, Some(200));
    // A fifth connection is not served while they hold them ...
    let waiting = tokio::spawn(probe::get_status(addr, "/", Duration::from_secs(4)));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        !waiting.is_finished(),
        "a connection over the limit was served"
    );
    // ... while the connections already in keep being served ...
    assert_eq!(get_on(&mut client, "/").await, Some(200));
    // ... and it is served as soon as one slot is free.
    drop(held.pop());
    assert_eq!(waiting.await.unwrap().unwrap(), Some(200));
    server.shutdown().await;
}

#[tokio::test]
async fn a_request_over_the_request_timeout_is_answered_503() {
    let server = spawn(limits(), Transport::Plain).await;
    let started = std::time::Instant::now();
    assert_eq!(
        probe::get_status(server.local_addr(), "/slow", Duration::from_secs(10))
            .await
            .unwrap(),
        Some(503)
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    server.shutdown().await;
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_dropped_within_the_handshake_timeout() {
    let key = rcgen::KeyPair::generate().unwrap();
    let certificate = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![certificate.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let server = spawn(limits(), Transport::Tls(Arc::new(config))).await;
    probe::check_handshake(server.local_addr(), &limits())
        .await
        .unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_returns() {
    let server = spawn(
        Limits {
            head_timeout: Duration::from_secs(30),
            ..limits()
        },
        Transport::Plain,
    )
    .await;
    let addr = server.local_addr();
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert_eq!(get_on(&mut client, "/").await, Some(200));
    tokio::time::timeout(Duration::from_secs(5), server.shutdown())
        .await
        .expect("shutdown waited for an idle connection");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

/// Sends `GET path` on an open keep-alive connection and returns the status.
async fn get_on(client: &mut tokio::net::TcpStream, path: &str) -> Option<u16> {
    client
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    probe::read_status(client, Duration::from_secs(5))
        .await
        .unwrap()
}

#[tokio::test]
async fn requests_over_the_in_flight_limit_wait_for_a_permit() {
    let server = spawn(
        Limits {
            max_in_flight: 1,
            ..limits()
        },
        Transport::Plain,
    )
    .await;
    let addr = server.local_addr();
    // A slow request holds the one permit until its request timeout (1.5 s) ends it.
    let slow = tokio::spawn(probe::get_status(addr, "/slow", Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert_eq!(get_on(&mut client, "/").await, Some(200));
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "served without waiting for the permit"
    );
    assert_eq!(slow.await.unwrap().unwrap(), Some(503));
    server.shutdown().await;
}

#[tokio::test]
async fn a_request_head_over_the_limit_is_refused() {
    let server = spawn(
        Limits {
            max_header_bytes: 16 * 1024,
            ..limits()
        },
        Transport::Plain,
    )
    .await;
    let mut client = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    let head = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    client.write_all(head.as_bytes()).await.unwrap();
    assert_eq!(
        probe::read_status(&mut client, Duration::from_secs(5))
            .await
            .unwrap(),
        Some(431)
    );
    assert_eq!(
        probe::get_status(server.local_addr(), "/", Duration::from_secs(5))
            .await
            .unwrap(),
        Some(200)
    );
    server.shutdown().await;
}
