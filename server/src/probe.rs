//! Probes that try a server's limits from outside, over real sockets, for each server's tests:
//! a slow-loris connection, a connection flood. They speak raw TCP and HTTP/1.1 so that they test
//! the server, not a client library's behaviour.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connects and sends `head` one byte every `every` without ever finishing it (or nothing, when
/// `head` is empty, as against a TLS port before its handshake), until the server closes the
/// connection. Returns how long the server kept it, or `None` if it was still open after
/// `give_up`.
///
/// # Errors
///
/// The connection cannot be made.
pub async fn slow_loris(
    addr: SocketAddr,
    head: &[u8],
    every: Duration,
    give_up: Duration,
) -> std::io::Result<Option<Duration>> {
    let mut stream = TcpStream::connect(addr).await?;
    let started = Instant::now();
    let mut sent = 0;
    let mut buf = [0u8; 1024];
    while started.elapsed() < give_up {
        // Keep one byte back so that the head is never complete.
        if sent + 1 < head.len() {
            let byte = head.get(sent..=sent).unwrap_or_default();
            if stream.write_all(byte).await.is_err() {
                return Ok(Some(started.elapsed()));
            }
            sent += 1;
        }
        // Closed, or reset, by the server; an answer (a 408, say) or nothing yet: keep reading
        // until it closes.
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(every, stream.read(&mut buf)).await {
            return Ok(Some(started.elapsed()));
        }
    }
    Ok(None)
}

/// Opens `count` TCP connections and keeps them open, sending nothing; they hold the server's
/// connection slots until dropped (or until the server's timeouts close them).
///
/// # Errors
///
/// A connection cannot be made.
pub async fn hold_connections(addr: SocketAddr, count: usize) -> std::io::Result<Vec<TcpStream>> {
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        held.push(TcpStream::connect(addr).await?);
    }
    // Let the server accept them (each takes a slot when accepted).
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(held)
}

/// Sends one `GET path` over a new plain HTTP/1.1 connection and returns the status code, or
/// `None` if no status line arrived within `within`.
///
/// # Errors
///
/// The connection cannot be made or breaks.
pub async fn get_status(
    addr: SocketAddr,
    path: &str,
    within: Duration,
) -> std::io::Result<Option<u16>> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    read_status(&mut stream, within).await
}

/// Sends a request with `Content-Length: length` (no body follows) over a new plain HTTP/1.1
/// connection and returns the status code, or `None` if none arrived within `within`.
///
/// # Errors
///
/// The connection cannot be made or breaks.
pub async fn post_declaring(
    addr: SocketAddr,
    path: &str,
    length: usize,
    within: Duration,
) -> std::io::Result<Option<u16>> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    read_status(&mut stream, within).await
}

/// Reads an HTTP/1.1 status line from `stream`.
///
/// # Errors
///
/// The stream breaks.
pub async fn read_status<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    within: Duration,
) -> std::io::Result<Option<u16>> {
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = status_of(&answer) {
            return Ok(Some(status));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => return Ok(status_of(&answer)),
            Ok(Ok(n)) => answer.extend_from_slice(buf.get(..n).unwrap_or_default()),
            Ok(Err(error)) => return Err(error),
        }
    }
}

fn status_of(answer: &[u8]) -> Option<u16> {
    let line = answer.split(|b| *b == b'\n').next()?;
    if answer.len() == line.len() {
        return None;
    }
    std::str::from_utf8(line)
        .ok()?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

/// Tries a plain HTTP/1.1 server's limits from outside: a slow-loris connection is dropped
/// within `limits.head_timeout` (plus a second); a `POST post_path` declaring a body one byte
/// over `limits.max_body` is refused with 413 (or `too_large_status`, for a server that answers
/// its own way) before the body is sent; with `limits.max_connections` connections held, a
/// `GET get_path` waits, and is answered once they are released.
///
/// # Errors
///
/// What did not hold, for the test to report.
pub async fn check_plain(
    addr: SocketAddr,
    get_path: &str,
    post_path: &str,
    too_large_status: u16,
    limits: &crate::Limits,
) -> Result<(), String> {
    check_slow_loris(addr, get_path, limits).await?;
    let status = post_declaring(addr, post_path, limits.max_body + 1, Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())?;
    if status != Some(too_large_status) {
        return Err(format!(
            "a body declared over the limit of {} bytes was answered {status:?}",
            limits.max_body
        ));
    }
    let get_path = get_path.to_owned();
    check_flood(addr, limits, || async move {
        matches!(
            get_status(addr, &get_path, Duration::from_secs(30)).await,
            Ok(Some(_))
        )
    })
    .await
}

/// Tries a plain HTTP/1.1 server's head timeout: a `GET get_path` whose head arrives a byte every
/// 100 ms is dropped within `limits.head_timeout` (plus a second).
///
/// # Errors
///
/// What did not hold.
pub async fn check_slow_loris(
    addr: SocketAddr,
    get_path: &str,
    limits: &crate::Limits,
) -> Result<(), String> {
    let head = format!(
        "GET {get_path} HTTP/1.1\r\nHost: {addr}\r\nX-Slow: {}\r\n\r\n",
        "a".repeat(64)
    );
    let give_up = limits.head_timeout + Duration::from_secs(5);
    match slow_loris(addr, head.as_bytes(), Duration::from_millis(100), give_up)
        .await
        .map_err(|e| e.to_string())?
    {
        Some(kept) if kept <= limits.head_timeout + Duration::from_secs(1) => Ok(()),
        other => Err(format!(
            "a slow-loris connection was kept {other:?}, over the head timeout of {:?}",
            limits.head_timeout
        )),
    }
}

/// Tries a TLS server's handshake timeout: a connection that never sends its ClientHello is
/// dropped within `limits.handshake_timeout` (plus a second).
///
/// # Errors
///
/// What did not hold.
pub async fn check_handshake(addr: SocketAddr, limits: &crate::Limits) -> Result<(), String> {
    let give_up = limits.handshake_timeout + Duration::from_secs(5);
    match slow_loris(addr, b"", Duration::from_millis(100), give_up)
        .await
        .map_err(|e| e.to_string())?
    {
        Some(kept) if kept <= limits.handshake_timeout + Duration::from_secs(1) => Ok(()),
        other => Err(format!(
            "a stalled handshake was kept {other:?}, over the handshake timeout of {:?}",
            limits.handshake_timeout
        )),
    }
}

/// Holds `limits.max_connections` idle connections, then checks that `request` (a real client's
/// request, true when answered) does not finish for a while (a third of the shorter timeout, at
/// most a second), and does once they are released: connections over the limit wait while those
/// in keep their slots.
///
/// # Errors
///
/// What did not hold.
pub async fn check_flood<F, Fut>(
    addr: SocketAddr,
    limits: &crate::Limits,
    request: F,
) -> Result<(), String>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let held = hold_connections(addr, limits.max_connections)
        .await
        .map_err(|e| format!("holding {} connections: {e}", limits.max_connections))?;
    let waiting = tokio::spawn(request());
    // Well within the timeouts that would free the held slots by themselves.
    tokio::time::sleep(
        (limits.head_timeout.min(limits.handshake_timeout) / 3).min(Duration::from_secs(1)),
    )
    .await;
    if waiting.is_finished() {
        return Err(format!(
            "a request was served while {} connections held every slot",
            held.len()
        ));
    }
    drop(held);
    match tokio::time::timeout(Duration::from_secs(30), waiting).await {
        Ok(Ok(true)) => Ok(()),
        other => Err(format!(
            "the waiting request was not served once the connections were released: {other:?}"
        )),
    }
}
