//! The blocking client against servers that answer the way HTTP allows: a chunked answer, an
//! answer larger than the cap, a server that never answers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use backbone_timestamping::client::{self, ClientError};

/// A server that reads one request head and answers with `answer`, once.
fn answer_once(answer: Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
            head.push(byte[0]);
        }
        let _ = stream.write_all(&answer);
    });
    addr
}

#[test]
fn a_chunked_answer_is_read() {
    let json = br#"[{"time":1796656692,"root":"00","publication_string":"AAAAAA"}]"#;
    let mut answer =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for chunk in json.chunks(7) {
        answer.extend(format!("{:x}\r\n", chunk.len()).as_bytes());
        answer.extend(chunk);
        answer.extend(b"\r\n");
    }
    answer.extend(b"0\r\n\r\n");
    let addr = answer_once(answer);
    let body = client::call(addr, "GET", "/publications", &[]).unwrap();
    assert_eq!(body, json);
}

#[test]
fn an_error_status_carries_the_services_message() {
    let addr = answer_once(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 9\r\n\r\nno leader".to_vec(),
    );
    match client::call(addr, "GET", "/publications", &[]) {
        Err(ClientError::Status {
            status: 503, body, ..
        }) => assert_eq!(body, "no leader"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_answer_over_the_cap_is_cut_at_the_cap() {
    let length = client::MAX_RESPONSE + 1000;
    let mut answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n").into_bytes();
    answer.resize(answer.len() + usize::try_from(length).unwrap(), b'x');
    let addr = answer_once(answer);
    let result = client::call(addr, "GET", "/publications.bin", &[]);
    assert!(
        result.map_or(true, |body| body.len() as u64 <= client::MAX_RESPONSE),
        "read past the cap"
    );
}

#[test]
fn a_dead_service_fails_with_the_address() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let started = Instant::now();
    let error = client::sign(addr, &[1; 33], 0).unwrap_err();
    assert!(error.to_string().contains(&addr.to_string()), "{error}");
    assert!(started.elapsed() < Duration::from_secs(10));
}
