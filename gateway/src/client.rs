//! The client side of an exchange: an information system's X-Road REST r1 request comes in, a
//! signed exchange goes to the provider's gateway, the checked and logged response goes back.
//!
//! ```text
//!  parse r1 ─▶ configuration current? ─▶ client served here and registered? ─▶ service known?
//!   ─▶ health context (if the service carries health data) ─▶ log accepting? ─▶ read body (limit)
//!   ─▶ sign request descriptor (batch signer) ─▶ peer gateway (HTTP/2, pinned TLS)
//!   ─▶ response: a fault is passed on; an envelope is checked (message id, request hash, body
//!      digest, provider member's signature) ─▶ request and response logged durably ─▶ answer
//! ```

use std::sync::Arc;
use std::time::Instant;

use backbone_hsm::batch::BatchSignature;
use base64::Engine as _;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::conf;
use crate::fault::{Code, Fault, FaultBody, X_ROAD_ERROR};
use crate::log::{Kind, NewRecord, Side};
use crate::meta::{self, Meta};
use crate::r1::{self, ClientHeaders, Target};
use crate::service::{Inner, fault_response, json, now_ms, text};
use crate::signed::{RequestDescriptor, ResponseDescriptor, sha512};
use crate::wire;

/// Room for the envelope's descriptor and signature beside the body limit.
const ENVELOPE_OVERHEAD: usize = crate::signed::MAX_DESCRIPTOR_LEN + wire::MAX_SIGNATURE_LEN + 16;

/// Answers one request on the client port.
pub(crate) async fn handle(inner: Arc<Inner>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if request.method() == Method::GET && !path.starts_with("/r1/") {
        return operations(&inner, path);
    }
    let started = Instant::now();
    let (service, response) = match exchange(&inner, request).await {
        Ok((service, response)) => (service, response),
        Err((service, fault)) => {
            tracing::info!(kind = %fault.kind(), message = %fault.message, id = %fault.detail, "exchange refused");
            let outcome = fault.kind();
            inner.metrics.exchanges.with_label_values(&["client", &service, &outcome]).inc();
            inner.metrics.latency.with_label_values(&["client"]).observe(started.elapsed().as_secs_f64());
            return fault_response(&fault);
        }
    };
    inner.metrics.exchanges.with_label_values(&["client", &service, "ok"]).inc();
    inner.metrics.latency.with_label_values(&["client"]).observe(started.elapsed().as_secs_f64());
    response
}

fn operations(inner: &Inner, path: &str) -> Response<Full<Bytes>> {
    match path {
        "/live" => text(StatusCode::OK, "live\n"),
        "/ready" => match inner.readiness() {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
        },
        "/metrics" => {
            let mut out = String::new();
            let families = inner.registry.gather();
            if prometheus::TextEncoder::new().encode_utf8(&families, &mut out).is_err() {
                return text(StatusCode::INTERNAL_SERVER_ERROR, "metrics cannot be encoded\n");
            }
            let mut response = text(StatusCode::OK, out);
            response.headers_mut().insert(hyper::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
            response
        }
        "/listClients" => match inner.trust.current() {
            Ok(conf) => json(StatusCode::OK, &meta::list_clients(&conf)),
            Err(e) => fault_response(&Fault::client_proxy(Code::OutdatedGlobalConf, format!("the gateway fails closed: {e}"), "")),
        },
        _ => fault_response(&Fault::client(Code::BadRequest, "not an X-Road REST r1 request: the path must start with /r1/", "")),
    }
}

type Refusal = (String, Fault);

async fn exchange(inner: &Inner, request: Request<Incoming>) -> Result<(String, Response<Full<Bytes>>), Refusal> {
    let target_text = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let early = |fault: Fault| (String::from("-"), fault);
    let headers = r1::parse_headers(request.headers()).map_err(|e| early(e.fault("")))?;
    let message_id = headers.id.clone().unwrap_or_else(r1::new_message_id);
    let target = r1::parse_target(&target_text).map_err(|e| early(e.fault(&message_id)))?;
    let service_name = target.service.to_string();
    let refuse = |fault: Fault| (service_name.clone(), fault);

    let conf = inner
        .trust
        .current()
        .map_err(|e| refuse(Fault::client_proxy(Code::OutdatedGlobalConf, format!("the gateway fails closed: {e}"), &message_id)))?;
    if headers.client.member() != inner.trust.own().owner() || !conf::is_registered(&conf, &headers.client) {
        return Err(refuse(Fault::client(
            Code::UnknownMember,
            format!("client {} is not a registered member or subsystem served by this gateway", headers.client),
            &message_id,
        )));
    }
    let meta = Meta::of(target.service.code());
    let personal_health_data = match (conf::service(&conf, &target.service), meta) {
        (Some(entry), _) => entry.personal_health_data,
        (None, Some(meta)) => meta.personal_health_data(),
        (None, None) => {
            return Err(refuse(Fault::client(Code::UnknownService, format!("service {} is not in the global configuration", target.service), &message_id)));
        }
    };
    let health = if personal_health_data {
        let (subject, purpose) = headers.health_context().map_err(|e| refuse(e.fault(&message_id)))?;
        Some((subject.to_string(), purpose))
    } else {
        None
    };
    inner
        .log
        .check_accepting()
        .map_err(|e| refuse(Fault::client_proxy(Code::TimestampingFailed, format!("new exchanges are refused: {e}"), &message_id)))?;
    let peer = conf::provider_gateways(&conf, &target.service).next().cloned().ok_or_else(|| {
        refuse(Fault::client_proxy(Code::NetworkError, format!("no gateway with a TLS certificate serves {}", target.service.provider().member()), &message_id))
    })?;
    let own_certificate = inner.own_tls_certificate().map_err(|e| refuse(Fault::client_proxy(Code::InternalError, e, &message_id)))?;

    let method = request.method().as_str().to_owned();
    let end_to_end = descriptor_headers(request.headers());
    let request_body = tokio::time::timeout(inner.config.timeout, read_limited(request.into_body(), inner.config.max_body))
        .await
        .map_err(|_| refuse(Fault::client(Code::Timeout, format!("the request body did not arrive within {:?}", inner.config.timeout), &message_id)))?
        .map_err(|too_large| refuse(body_fault(too_large, inner.config.max_body, &message_id)))?;

    let descriptor = request_descriptor(&message_id, &headers, &target, method, health.as_ref(), &request_body, end_to_end);
    let encoded = descriptor.encode().map_err(|e| refuse(Fault::client(Code::BadRequest, e.to_string(), &message_id)))?;
    let request_hash = descriptor.request_hash().map_err(|e| refuse(Fault::client(Code::BadRequest, e.to_string(), &message_id)))?;
    let signature = inner
        .keys
        .signing
        .sign(&encoded)
        .await
        .map_err(|e| refuse(Fault::client_proxy(Code::InternalError, format!("signing failed: {e}"), &message_id)))?;
    let signature_bytes = signature.to_bytes();
    let envelope =
        wire::encode(&encoded, &signature_bytes, &request_body).map_err(|e| refuse(Fault::client_proxy(Code::InternalError, e.to_string(), &message_id)))?;

    let mut outgoing = Request::builder()
        .method(Method::POST)
        .uri(format!("https://{}{}", peer.address, wire::EXCHANGE_PATH))
        .header(hyper::header::CONTENT_TYPE, wire::CONTENT_TYPE);
    for name in ["traceparent", "tracestate"] {
        if let Some((_, value)) = descriptor.headers.iter().find(|(n, _)| n == name) {
            outgoing = outgoing.header(name, value.as_str());
        }
    }
    let outgoing = outgoing
        .body(Full::new(Bytes::from(envelope)))
        .map_err(|e| refuse(Fault::client_proxy(Code::InternalError, e.to_string(), &message_id)))?;
    let peer_certificate = peer.tls_certificate.as_ref().map(|c| c.der().to_vec()).unwrap_or_default();
    let sent = std::time::Instant::now();
    let answer = tokio::time::timeout(inner.config.timeout, async {
        let response = inner.peers.send(&peer.address, &peer_certificate, &own_certificate, outgoing).await?;
        let (parts, body) = response.into_parts();
        let body = read_limited(body, inner.config.max_body + ENVELOPE_OVERHEAD).await;
        Ok::<_, crate::peers::PeerError>((parts, body))
    })
    .await
    .map_err(|_| refuse(Fault::client_proxy(Code::Timeout, format!("gateway {} did not answer within {:?}", peer.id, inner.config.timeout), &message_id)))?
    .map_err(|e| refuse(Fault::client_proxy(Code::NetworkError, format!("gateway {}: {e}", peer.id), &message_id)))?;
    inner.metrics.peer_round_trip.observe(sent.elapsed().as_secs_f64());
    let (parts, body) = answer;
    let body = body.map_err(|too_large| {
        refuse(Fault::client_proxy(if too_large { Code::RequestTooLarge } else { Code::NetworkError }, "the provider gateway's answer could not be read", &message_id))
    })?;

    if parts.headers.contains_key(X_ROAD_ERROR) {
        return Err(refuse(passed_on(parts.status, &body, &message_id)));
    }
    let checked = check_response(inner, &conf, &target, &message_id, &request_hash, &body)
        .map_err(|why| refuse(Fault::client_proxy(Code::InvalidSignatureValue, why, &message_id)))?;

    let now = now_ms();
    let own_signing_certificate = own_signing_certificate(inner, &conf);
    let records = vec![
        NewRecord {
            side: Side::Client,
            kind: Kind::Request,
            message_id: message_id.clone(),
            client: descriptor.client.clone(),
            service: descriptor.service.clone(),
            user_id: descriptor.user_id.clone(),
            data_subject: descriptor.data_subject.clone(),
            purpose_of_use: descriptor.purpose_of_use.clone(),
            emergency: health.as_ref().is_some_and(|(_, p)| p.is_emergency()),
            descriptor: encoded,
            signature: signature_bytes,
            signer_certificate: own_signing_certificate,
            body: request_body.to_vec(),
            logged_at_ms: now,
        },
        NewRecord {
            side: Side::Client,
            kind: Kind::Response,
            message_id: message_id.clone(),
            client: descriptor.client.clone(),
            service: descriptor.service.clone(),
            user_id: descriptor.user_id.clone(),
            data_subject: descriptor.data_subject.clone(),
            purpose_of_use: descriptor.purpose_of_use.clone(),
            emergency: health.as_ref().is_some_and(|(_, p)| p.is_emergency()),
            descriptor: checked.descriptor_bytes.clone(),
            signature: checked.signature_bytes.clone(),
            signer_certificate: checked.certificate.clone(),
            body: checked.body.to_vec(),
            logged_at_ms: now,
        },
    ];
    inner
        .log
        .append(records)
        .await
        .map_err(|e| refuse(Fault::client_proxy(Code::DatabaseError, format!("the exchange could not be logged: {e}"), &message_id)))?;

    let mut response = Response::new(Full::new(checked.body.clone()));
    *response.status_mut() = StatusCode::from_u16(checked.descriptor.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let out = response.headers_mut();
    for (name, value) in &checked.descriptor.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            out.append(name, value);
        }
    }
    let protocol = [
        (r1::X_ROAD_ID, message_id.clone()),
        (r1::X_ROAD_CLIENT, descriptor.client.clone()),
        (r1::X_ROAD_SERVICE, descriptor.service.clone()),
        (r1::X_ROAD_REQUEST_ID, message_id.clone()),
        (r1::X_ROAD_REQUEST_HASH, base64::engine::general_purpose::STANDARD.encode(request_hash)),
    ];
    for (name, value) in protocol {
        if let Ok(value) = HeaderValue::from_str(&value) {
            out.insert(HeaderName::from_static(name), value);
        }
    }
    Ok((service_name, response))
}

/// The end-to-end request headers as the descriptor carries them: lower-case names, UTF-8 values
/// (a header whose value is not text cannot be signed canonically and is not passed on).
pub(crate) fn descriptor_headers(headers: &hyper::HeaderMap) -> Vec<(String, String)> {
    r1::end_to_end_headers(headers)
        .into_iter()
        .filter(|(name, _)| !matches!(name.as_str(), "host" | "content-length"))
        .filter_map(|(name, value)| value.to_str().ok().map(|v| (name.as_str().to_owned(), v.to_owned())))
        .take(crate::signed::MAX_HEADERS)
        .collect()
}

fn request_descriptor(
    message_id: &str,
    headers: &ClientHeaders,
    target: &Target,
    method: String,
    health: Option<&(String, r1::PurposeOfUse)>,
    body: &Bytes,
    end_to_end: Vec<(String, String)>,
) -> RequestDescriptor {
    RequestDescriptor {
        message_id: message_id.to_owned(),
        client: headers.client.to_string(),
        service: target.service.to_string(),
        method,
        path: target.path.clone(),
        query: target.query.clone(),
        user_id: headers.user_id.clone(),
        issue: headers.issue.clone(),
        represented_party: headers.represented_party.clone(),
        data_subject: health.map(|(s, _)| s.clone()).or_else(|| headers.data_subject.as_ref().map(ToString::to_string)),
        purpose_of_use: health.map(|(_, p)| p.to_string()).or_else(|| headers.purpose_of_use.map(|p| p.to_string())),
        created_at_ms: now_ms(),
        body_digest: sha512(body),
        headers: end_to_end,
    }
}

struct CheckedResponse {
    descriptor: ResponseDescriptor,
    descriptor_bytes: Vec<u8>,
    signature_bytes: Vec<u8>,
    certificate: Vec<u8>,
    body: Bytes,
}

fn check_response(
    inner: &Inner,
    conf: &backbone_registry::GlobalConf,
    target: &Target,
    message_id: &str,
    request_hash: &crate::signed::Digest512,
    bytes: &Bytes,
) -> Result<CheckedResponse, String> {
    let envelope = wire::decode(bytes).map_err(|e| format!("the provider gateway's answer: {e}"))?;
    let descriptor = ResponseDescriptor::decode(envelope.descriptor).map_err(|e| format!("the response descriptor: {e}"))?;
    if descriptor.message_id != message_id {
        return Err(format!("the response names message {:?}, not {message_id:?}", descriptor.message_id));
    }
    if &descriptor.request_hash != request_hash {
        return Err("the response is not bound to this request (request hash differs)".into());
    }
    if descriptor.body_digest != sha512(envelope.body) {
        return Err("the response body does not match its signed digest".into());
    }
    let signature = BatchSignature::from_bytes(envelope.signature).map_err(|e| format!("the response signature: {e}"))?;
    let provider = target.service.provider().member();
    let certificate = inner
        .verifier
        .verify_by_member(conf, provider, envelope.descriptor, &signature)
        .ok_or_else(|| format!("the response is not signed by a valid signing key of {provider}"))?;
    let body_start = bytes.len() - envelope.body.len();
    Ok(CheckedResponse {
        descriptor,
        descriptor_bytes: envelope.descriptor.to_vec(),
        signature_bytes: envelope.signature.to_vec(),
        certificate,
        body: bytes.slice(body_start..),
    })
}

/// This gateway's member's signing certificate for the key it signs with.
pub(crate) fn own_signing_certificate(inner: &Inner, conf: &backbone_registry::GlobalConf) -> Vec<u8> {
    inner.verifier.certificate_of(conf, inner.trust.own().owner(), inner.keys.signing.public_key()).unwrap_or_default()
}

/// A provider gateway's fault, passed on with its type; anything unreadable becomes a
/// `NetworkError` of our own.
fn passed_on(status: StatusCode, body: &[u8], message_id: &str) -> Fault {
    match serde_json::from_slice::<FaultBody>(body) {
        Ok(body) if body.kind.starts_with("Server.ServerProxy.") || body.kind.starts_with("Client.") => {
            let code = Code::from_name(body.kind.rsplit('.').next().unwrap_or_default()).unwrap_or(Code::InternalError);
            let origin = if body.kind.starts_with("Client.") { crate::fault::Origin::Client } else { crate::fault::Origin::ServerProxy };
            Fault { origin, code, message: body.message, detail: message_id.to_owned() }
        }
        _ => Fault::client_proxy(Code::NetworkError, format!("the provider gateway answered {status} without a valid error"), message_id),
    }
}

fn body_fault(too_large: bool, limit: usize, message_id: &str) -> Fault {
    if too_large {
        Fault::client(Code::RequestTooLarge, format!("the body is over the limit of {limit} bytes"), message_id)
    } else {
        Fault::client(Code::BadRequest, "the request body could not be read", message_id)
    }
}

/// Reads a body up to `limit` bytes; `Err(true)` when it is longer, `Err(false)` when it breaks.
pub(crate) async fn read_limited<B>(body: B, limit: usize) -> Result<Bytes, bool>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) => Err(error.downcast_ref::<http_body_util::LengthLimitError>().is_some()),
    }
}
