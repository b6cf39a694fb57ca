//! OTLP export: off by default, and when `telemetry.otlp_endpoint` is set, the command's spans reach
//! an OTLP/HTTP collector (a fake one here that records the request).
// Helpers outside #[test] functions: a test fixture that fails loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

/// Accepts one request, answers 200, and sends back (request line, headers, body).
fn fake_collector() -> (String, mpsc::Receiver<(String, String, Vec<u8>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request_line = String::new();
        reader.read_line(&mut request_line).unwrap();
        let mut headers = String::new();
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
            headers.push_str(&line);
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let mut stream = stream;
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .unwrap();
        tx.send((request_line, headers, body)).unwrap();
    });
    (format!("http://{addr}/v1/traces"), rx)
}

fn backbone(dir: &std::path::Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_backbone"));
    command.current_dir(dir).args(["hsm", "list"]).env_clear();
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

#[test]
fn spans_are_exported_when_an_endpoint_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let (endpoint, requests) = fake_collector();
    let output = backbone(
        dir.path(),
        &[
            ("BACKBONE_TELEMETRY__OTLP_ENDPOINT", &endpoint),
            ("BACKBONE_TELEMETRY__SERVICE_NAME", "backbone-otlp-test"),
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (request_line, headers, body) = requests
        .recv_timeout(Duration::from_secs(10))
        .expect("no export arrived");
    assert!(
        request_line.starts_with("POST /v1/traces "),
        "{request_line}"
    );
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("content-type: application/x-protobuf"),
        "{headers}"
    );
    let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    assert!(
        has(b"backbone-otlp-test"),
        "service name missing from the export"
    );
    assert!(
        has(b"hsm list"),
        "the command's span is missing from the export"
    );
}

#[test]
fn an_unreachable_collector_does_not_fail_the_command() {
    let dir = tempfile::tempdir().unwrap();
    // A port that was free a moment ago: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}/v1/traces");
    let started = std::time::Instant::now();
    let output = backbone(
        dir.path(),
        &[("BACKBONE_TELEMETRY__OTLP_ENDPOINT", &endpoint)],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("0 key(s)"));
    assert!(started.elapsed() < Duration::from_secs(30));
}
