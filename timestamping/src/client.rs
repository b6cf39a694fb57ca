//! A small blocking client for the JSON API, for the CLI and tests: plain HTTP/1.1 over one TCP
//! connection per call, bodies capped at [`MAX_RESPONSE`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use backbone_timestamping_verify::signature::CalendarChain;

use crate::http::{PublicationJson, SignRequest, SignResponse};

/// The largest response read: a signature is a few KiB, a publication list grows by a few dozen
/// bytes an hour.
pub const MAX_RESPONSE: u64 = 16 << 20;
/// How long a call may take: a round plus the commit, with room.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The connection failed.
    #[error("timestamping service at {addr}: {source}")]
    Io {
        /// The service.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The service answered with an error status.
    #[error("timestamping service at {addr} answered {status}: {body}")]
    Status {
        /// The service.
        addr: SocketAddr,
        /// The HTTP status code.
        status: u16,
        /// The body (the service's error message).
        body: String,
    },
    /// The answer is not what the API promises.
    #[error("timestamping service at {addr}: malformed answer: {why}")]
    Malformed {
        /// The service.
        addr: SocketAddr,
        /// What is wrong.
        why: String,
    },
}

/// Asks the service at `addr` to sign `imprint` (bytes: algorithm id, digest); returns the KSI
/// signature bytes.
///
/// # Errors
///
/// [`ClientError`] for connection, status or format problems.
pub fn sign(addr: SocketAddr, imprint: &[u8], level: u8) -> Result<Vec<u8>, ClientError> {
    let request = SignRequest { hash: crate::http::hex(imprint), level };
    let body = serde_json::to_vec(&request).map_err(|e| malformed(addr, e))?;
    let answer = call(addr, "POST", "/sign", &body)?;
    let answer: SignResponse = serde_json::from_slice(&answer).map_err(|e| malformed(addr, e))?;
    openssl::base64::decode_block(&answer.signature).map_err(|e| malformed(addr, e))
}

/// The latest publication, `None` before the first.
///
/// # Errors
///
/// [`ClientError`] for connection, status or format problems.
pub fn latest_publication(addr: SocketAddr) -> Result<Option<PublicationJson>, ClientError> {
    match call(addr, "GET", "/publications/latest", &[]) {
        Ok(body) => serde_json::from_slice(&body).map(Some).map_err(|e| malformed(addr, e)),
        Err(ClientError::Status { status: 404, .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The calendar chain from second `time` to the service's calendar head.
///
/// # Errors
///
/// [`ClientError`] for connection, status or format problems.
pub fn extend(addr: SocketAddr, time: u64) -> Result<CalendarChain, ClientError> {
    let body = call(addr, "GET", &format!("/extend/{time}"), &[])?;
    let answer: serde_json::Value = serde_json::from_slice(&body).map_err(|e| malformed(addr, e))?;
    let encoded = answer.get("calendar_chain").and_then(|v| v.as_str()).ok_or_else(|| malformed(addr, "no calendar_chain"))?;
    let bytes = openssl::base64::decode_block(encoded).map_err(|e| malformed(addr, e))?;
    let tlv = backbone_timestamping_verify::tlv::decode(&bytes).map_err(|e| malformed(addr, e))?;
    CalendarChain::decode(&tlv).map_err(|e| malformed(addr, e))
}

/// One HTTP/1.1 call; returns the body of a 2xx answer.
///
/// # Errors
///
/// [`ClientError`] for connection, status or format problems.
pub fn call(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Result<Vec<u8>, ClientError> {
    call_with_type(addr, method, path, "application/json", body)
}

/// One HTTP/1.1 call with a body of `content_type` (e.g. `application/timestamp-query`);
/// returns the body of a 2xx answer.
///
/// # Errors
///
/// [`ClientError`] for connection, status or format problems.
pub fn call_with_type(addr: SocketAddr, method: &str, path: &str, content_type: &str, body: &[u8]) -> Result<Vec<u8>, ClientError> {
    let io = |source| ClientError::Io { addr, source };
    let mut stream = TcpStream::connect_timeout(&addr, DEFAULT_TIMEOUT).map_err(io)?;
    stream.set_read_timeout(Some(DEFAULT_TIMEOUT)).map_err(io)?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).map_err(io)?;
    stream.write_all(body).map_err(io)?;
    let mut answer = Vec::new();
    stream.take(MAX_RESPONSE).read_to_end(&mut answer).map_err(io)?;
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| malformed(addr, "no header end"))?;
    let (head, rest) = answer.split_at(split);
    let body = rest.get(4..).unwrap_or_default().to_vec();
    let head = String::from_utf8_lossy(head);
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| malformed(addr, "no status line"))?;
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return Err(malformed(addr, "chunked answers are not supported"));
    }
    if !(200..300).contains(&status) {
        return Err(ClientError::Status { addr, status, body: String::from_utf8_lossy(&body).into_owned() });
    }
    Ok(body)
}

fn malformed(addr: SocketAddr, why: impl std::fmt::Display) -> ClientError {
    ClientError::Malformed { addr, why: why.to_string() }
}
