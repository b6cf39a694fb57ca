//! A small blocking client for the JSON API and the aggregator and extender PDUs, for the CLI, a
//! child aggregator, a gateway's message log and tests: HTTP through reqwest's blocking client
//! (chunked answers), a new connection for each call (a call a second at most, and a service
//! that went away is found at once rather than through a stale pooled connection), bodies capped
//! at [`MAX_RESPONSE`]. Call it from a thread that may block (`spawn_blocking` inside a runtime).

use std::io::Read;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use backbone_timestamping_verify::imprint::HashAlgorithm;
use backbone_timestamping_verify::pdu::{
    AggregationRequest, AggregationResponse, AggregatorRequest, AggregatorResponse, ExtendRequest,
    ExtenderRequest, ExtenderResponse, Header,
};
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
    /// The connection failed, or the answer could not be read.
    #[error("timestamping service at {addr}: {source}")]
    Io {
        /// The service.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The HTTP call failed (connection, timeout, protocol).
    #[error("timestamping service at {addr}: {source}")]
    Http {
        /// The service.
        addr: SocketAddr,
        /// The HTTP client's error.
        source: reqwest::Error,
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
    /// The service answered with a KSI status code (an extender PDU's error).
    #[error("timestamping service at {addr} refused: KSI status 0x{status:x}: {message}")]
    Refused {
        /// The service.
        addr: SocketAddr,
        /// The KSI status code (e.g. 0x106: the time is not in the calendar yet).
        status: u64,
        /// The service's error message.
        message: String,
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
    let request = SignRequest {
        hash: crate::http::hex(imprint),
        level,
    };
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
        Ok(body) => serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| malformed(addr, e)),
        Err(ClientError::Status { status: 404, .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every publication, oldest first.
///
/// # Errors
///
/// [`ClientError`] for connection, status or format problems.
pub fn publications(addr: SocketAddr) -> Result<Vec<PublicationJson>, ClientError> {
    let body = call(addr, "GET", "/publications", &[])?;
    serde_json::from_slice(&body).map_err(|e| malformed(addr, e))
}

/// The calendar chain from second `time` to the service's calendar head.
///
/// # Errors
///
/// [`ClientError`] for connection, status or format problems.
pub fn extend(addr: SocketAddr, time: u64) -> Result<CalendarChain, ClientError> {
    let body = call(addr, "GET", &format!("/extend/{time}"), &[])?;
    let answer: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| malformed(addr, e))?;
    let encoded = answer
        .get("calendar_chain")
        .and_then(|v| v.as_str())
        .ok_or_else(|| malformed(addr, "no calendar_chain"))?;
    let bytes = openssl::base64::decode_block(encoded).map_err(|e| malformed(addr, e))?;
    let tlv = backbone_timestamping_verify::tlv::decode(&bytes).map_err(|e| malformed(addr, e))?;
    CalendarChain::decode(&tlv).map_err(|e| malformed(addr, e))
}

/// The request id of [`extend_pdu`]'s one request.
pub const EXTEND_REQUEST_ID: u64 = 1;

/// Asks the extender (`POST /extend`, an extender request PDU sealed with `key` under
/// `login_id`) for the calendar chain from second `aggregation_time` to `publication_time`, or
/// to the calendar head when `None`. Returns the chain and the response PDU's bytes, whose MAC
/// was checked.
///
/// # Errors
///
/// [`ClientError::Refused`] with the KSI status; other [`ClientError`]s for connection, MAC or
/// format problems.
pub fn extend_pdu(
    addr: SocketAddr,
    login_id: &str,
    key: &[u8],
    aggregation_time: u64,
    publication_time: Option<u64>,
) -> Result<(CalendarChain, Vec<u8>), ClientError> {
    let header = Header {
        login_id: login_id.into(),
        instance_id: None,
        message_id: None,
    };
    let payload = ExtendRequest {
        request_id: EXTEND_REQUEST_ID,
        aggregation_time,
        publication_time,
    };
    let request = ExtenderRequest::new(header, vec![payload])
        .encode(key, HashAlgorithm::Sha256)
        .map_err(|e| malformed(addr, e))?;
    let (_, body) = exchange(
        addr,
        "POST",
        "/extend",
        "application/ksi-request",
        &request,
        DEFAULT_TIMEOUT,
    )?;
    let response = ExtenderResponse::decode(&body).map_err(|e| malformed(addr, e))?;
    let refused = |e: backbone_timestamping_verify::Error| match e {
        backbone_timestamping_verify::Error::Service {
            status, message, ..
        } => ClientError::Refused {
            addr,
            status,
            message,
        },
        e => malformed(addr, e),
    };
    response
        .check_mac(key, HashAlgorithm::Sha256)
        .map_err(refused)?;
    let payload = response
        .payload(EXTEND_REQUEST_ID)
        .ok_or_else(|| malformed(addr, "no answer to the extend request"))?;
    let chain = payload.chain().map_err(refused)?.clone();
    Ok((chain, body))
}

/// Sends one aggregation request in an aggregator PDU sealed with `key` under `header`'s login
/// id to `path` at `addr`, and returns the answer to it, the response's MAC checked: what a
/// child aggregator does with each round root. Waits at most `timeout` to connect and between
/// reads.
///
/// # Errors
///
/// [`ClientError::Refused`] with the KSI status of an error PDU or of the payload;
/// [`ClientError::Http`] (connection refused, timed out), [`ClientError::Status`] for an HTTP error without a PDU, [`ClientError::Malformed`] for a
/// wrong MAC or an answer without the request's id.
pub fn aggregate(
    addr: SocketAddr,
    path: &str,
    header: Header,
    key: &[u8],
    request: AggregationRequest,
    timeout: Duration,
) -> Result<AggregationResponse, ClientError> {
    let id = request.request_id;
    let pdu = AggregatorRequest::new(header, vec![request])
        .encode(key, HashAlgorithm::Sha256)
        .map_err(|e| malformed(addr, e))?;
    let (status, body) = exchange(addr, "POST", path, "application/ksi-request", &pdu, timeout)?;
    let response = match AggregatorResponse::decode(&body) {
        Ok(response) => response,
        Err(_) if !(200..300).contains(&status) => {
            return Err(ClientError::Status {
                addr,
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        Err(e) => return Err(malformed(addr, e)),
    };
    response
        .check_mac(key, HashAlgorithm::Sha256)
        .map_err(|e| match e {
            backbone_timestamping_verify::Error::Service {
                status, message, ..
            } => ClientError::Refused {
                addr,
                status,
                message,
            },
            e => malformed(addr, e),
        })?;
    let payload = response
        .payload(id)
        .ok_or_else(|| malformed(addr, format!("no answer to request {id}")))?;
    if payload.status != 0 {
        let message = payload
            .error_message
            .clone()
            .unwrap_or_default()
            .to_string();
        return Err(ClientError::Refused {
            addr,
            status: payload.status,
            message,
        });
    }
    Ok(payload.clone())
}

/// One HTTP/1.1 call; returns the body of a 2xx answer.
///
/// # Errors
///
/// [`ClientError`] for connection, status or format problems.
pub fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<Vec<u8>, ClientError> {
    call_with_type(addr, method, path, "application/json", body)
}

/// One HTTP/1.1 call with a body of `content_type` (e.g. `application/timestamp-query`);
/// returns the body of a 2xx answer.
///
/// # Errors
///
/// [`ClientError`] for connection, status or format problems.
pub fn call_with_type(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> Result<Vec<u8>, ClientError> {
    let (status, body) = exchange(addr, method, path, content_type, body, DEFAULT_TIMEOUT)?;
    if !(200..300).contains(&status) {
        return Err(ClientError::Status {
            addr,
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    Ok(body)
}

/// One HTTP call; returns the status and the body (at most [`MAX_RESPONSE`] bytes), whatever the
/// status.
fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<(u16, Vec<u8>), ClientError> {
    let http = |source| ClientError::Http { addr, source };
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| malformed(addr, e))?;
    let response = shared()
        .map_err(http)?
        .request(method, format!("http://{addr}{path}"))
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .body(body.to_vec())
        .timeout(timeout)
        .send()
        .map_err(http)?;
    let status = response.status().as_u16();
    let mut answer = Vec::new();
    response
        .take(MAX_RESPONSE)
        .read_to_end(&mut answer)
        .map_err(|source| ClientError::Io { addr, source })?;
    Ok((status, answer))
}

/// The one client every call shares (its runtime thread), without idle connections.
fn shared() -> Result<&'static reqwest::blocking::Client, reqwest::Error> {
    static CLIENT: OnceLock<reqwest::blocking::Client> = OnceLock::new();
    if let Some(client) = CLIENT.get() {
        return Ok(client);
    }
    // Services are named by address; no proxy from the environment stands between.
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(DEFAULT_TIMEOUT)
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()?;
    Ok(CLIENT.get_or_init(|| client))
}

fn malformed(addr: SocketAddr, why: impl std::fmt::Display) -> ClientError {
    ClientError::Malformed {
        addr,
        why: why.to_string(),
    }
}
