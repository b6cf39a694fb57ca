//! The client side of an exchange: an information system's X-Road REST r1 request comes in, a
//! signed exchange goes to the provider's gateway, the checked and logged response goes back.
//!
//! ```text
//!  parse r1 ─▶ caller is the client it names? ─▶ configuration current? ─▶ client served here
//!   and registered? ─▶ service known? ─▶ health context (if the service carries health data)
//!   ─▶ log accepting? ─▶ read body (limit) ─▶ sign request descriptor (batch signer)
//!   ─▶ request logged durably ─▶ peer gateway (HTTP/2, pinned TLS)
//!   ─▶ response: a fault is passed on; an envelope is checked (message id, request hash, body
//!      digest, provider member's signature) ─▶ response logged durably ─▶ answer; a fault after
//!      the request was logged is logged as its outcome ([`crate::outcome`])
//! ```

use std::sync::Arc;
use std::time::Instant;

use backbone_hsm::batch::BatchSignature;
use backbone_registry::GlobalConf;
use backbone_registry::model::Gateway;
use base64::Engine as _;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::conf;
use crate::error::{Error, REQUEST_BODY};
use crate::fault::{Code, Fault, FaultBody, Origin, X_ROAD_ERROR};
use crate::log::Side;
use crate::meta::{self, Meta};
use crate::outcome::{Exchange, Signed};
use crate::r1::{self, ClientHeaders, Target};
use crate::service::{Inner, fault_response, json, now_ms, text};
use crate::signed::{RequestDescriptor, ResponseDescriptor, sha512};
use crate::systems::Caller;
use crate::wire;

/// Room for the envelope's descriptor and signature beside the body limit.
const ENVELOPE_OVERHEAD: usize = crate::signed::MAX_DESCRIPTOR_LEN + wire::MAX_SIGNATURE_LEN + 16;

/// Answers one request on the client port.
pub(crate) async fn handle(
    inner: Arc<Inner>,
    caller: &Caller,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if request.method() == Method::GET && !path.starts_with("/r1/") {
        return operations(&inner, path);
    }
    let started = Instant::now();
    let mut labels = Labels::default();
    let result = exchange(&inner, caller, request, &mut labels).await;
    finish(&inner, Side::Client, started, &labels, result)
}

/// Records an exchange's latency and outcome in the metrics and turns an error into its fault
/// response: the one ending both sides share.
pub(crate) fn finish(
    inner: &Inner,
    side: Side,
    started: Instant,
    labels: &Labels,
    result: Result<Response<Full<Bytes>>, Error>,
) -> Response<Full<Bytes>> {
    let side_label = match side {
        Side::Client => "client",
        Side::Provider => "provider",
    };
    inner
        .metrics
        .latency
        .with_label_values(&[side_label])
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(response) => {
            inner
                .metrics
                .exchanges
                .with_label_values(&[side_label, labels.service(), "ok"])
                .inc();
            response
        }
        Err(error) => {
            let fault = error.fault(side, &labels.message_id);
            tracing::info!(kind = %fault.kind(), message = %fault.message, id = %fault.detail, "exchange refused");
            inner
                .metrics
                .exchanges
                .with_label_values(&[side_label, labels.service(), &fault.kind()])
                .inc();
            fault_response(&fault)
        }
    }
}

fn operations(inner: &Inner, path: &str) -> Response<Full<Bytes>> {
    match path {
        "/live" => text(StatusCode::OK, "live\n"),
        "/ready" => match inner.readiness() {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        "/metrics" => {
            let mut out = String::new();
            let families = inner.registry.gather();
            if prometheus::TextEncoder::new()
                .encode_utf8(&families, &mut out)
                .is_err()
            {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "metrics cannot be encoded\n",
                );
            }
            let mut response = text(StatusCode::OK, out);
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            response
        }
        "/listClients" => match inner.trust.current() {
            Ok(conf) => json(StatusCode::OK, &meta::list_clients(&conf)),
            Err(e) => fault_response(&Error::OutdatedConf(e.to_string()).fault(Side::Client, "")),
        },
        _ => fault_response(
            &Error::BadRequest(
                "not an X-Road REST r1 request: the path must start with /r1/".into(),
            )
            .fault(Side::Client, ""),
        ),
    }
}

/// What an exchange's fault and metrics are tagged with, filled in as it becomes known.
#[derive(Debug, Default)]
pub(crate) struct Labels {
    /// The message id (`X-Road-Id`, or the one this gateway gave the message).
    pub(crate) message_id: String,
    /// The service called, once it is known to be in the global configuration (or a
    /// metaservice): metric labels never name what a caller made up, so their number stays
    /// bounded by the configuration.
    pub(crate) service: Option<String>,
}

impl Labels {
    /// The service's metric label: `unknown` until the service is known.
    pub(crate) fn service(&self) -> &str {
        self.service.as_deref().unwrap_or("unknown")
    }
}

/// The steps of an exchange on the client side; each step's errors are the caller's or this
/// gateway's, as [`Error::fault`] decides.
async fn exchange(
    inner: &Inner,
    caller: &Caller,
    request: Request<Incoming>,
    labels: &mut Labels,
) -> Result<Response<Full<Bytes>>, Error> {
    let (parts, body) = request.into_parts();
    let accepted = accept(inner, caller, &parts, labels)?;
    let body = read_body(inner, body).await?;
    let signed = sign_request(inner, &accepted, &parts, body).await?;
    // Logged before it leaves: whatever the provider's gateway receives is in the log.
    let logged = Exchange {
        side: Side::Client,
        request: &signed.descriptor,
        emergency: accepted
            .health
            .as_ref()
            .is_some_and(|(_, purpose)| purpose.is_emergency()),
    };
    let request_seq = logged
        .log_request(
            inner,
            Signed {
                descriptor: &signed.encoded,
                signature: &signed.signature,
                signer_certificate: own_signing_certificate(inner, &accepted.conf),
                body: &signed.body,
            },
        )
        .await?;
    let checked = match send_and_check(inner, &accepted, &signed).await {
        Ok(checked) => checked,
        Err(error) => {
            let fault = error.fault(Side::Client, &accepted.message_id);
            logged
                .log_fault(inner, &accepted.conf, request_seq, &fault)
                .await;
            return Err(error);
        }
    };
    logged
        .log_response(
            inner,
            request_seq,
            Signed {
                descriptor: &checked.descriptor_bytes,
                signature: &checked.signature_bytes,
                signer_certificate: checked.certificate.clone(),
                body: &checked.body,
            },
        )
        .await?;
    Ok(respond(&accepted, &signed, checked))
}

/// The provider gateway's answer, checked: the response, or the fault that ends the exchange.
async fn send_and_check(
    inner: &Inner,
    accepted: &Accepted,
    signed: &SignedRequest,
) -> Result<CheckedResponse, Error> {
    let answer = send(inner, accepted, signed).await?;
    check_response(inner, accepted, signed, &answer)
}

/// A request this gateway accepts to send: well formed, from a client it serves, to a known
/// service, with its health context, while the configuration is current and the log accepts.
struct Accepted {
    conf: Arc<GlobalConf>,
    headers: ClientHeaders,
    message_id: String,
    target: Target,
    health: Option<(String, r1::PurposeOfUse)>,
    peer: Gateway,
    own_certificate: Vec<u8>,
}

fn accept(
    inner: &Inner,
    caller: &Caller,
    parts: &http::request::Parts,
    labels: &mut Labels,
) -> Result<Accepted, Error> {
    let target_text = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let headers = r1::parse_headers(&parts.headers)?;
    let message_id = headers.id.clone().unwrap_or_else(r1::new_message_id);
    labels.message_id.clone_from(&message_id);
    // Who is asking comes first: nothing else is done for a caller that is not the client it
    // names (X-Road's information system authentication, PR-REST 4.7).
    inner
        .systems
        .snapshot()
        .authenticate(&headers.client, caller)
        .map_err(Error::ClientAuthentication)?;
    let target = r1::parse_target(target_text)?;

    let conf = inner
        .trust
        .current()
        .map_err(|e| Error::OutdatedConf(e.to_string()))?;
    if headers.client.member() != inner.trust.own().owner()
        || !conf::is_registered(&conf, &headers.client)
    {
        return Err(Error::UnknownClient(headers.client.to_string()));
    }
    let personal_health_data = match (
        conf::service(&conf, &target.service),
        Meta::of(target.service.code()),
    ) {
        (Some(entry), _) => entry.personal_health_data,
        (None, Some(meta)) => meta.personal_health_data(),
        (None, None) => {
            return Err(Error::UnknownService {
                service: target.service.to_string(),
                why: "is not in the global configuration",
            });
        }
    };
    labels.service = Some(target.service.to_string());
    let health = if personal_health_data {
        let (subject, purpose) = headers.health_context()?;
        Some((subject.to_string(), purpose))
    } else {
        None
    };
    if Meta::of(target.service.code()) == Some(Meta::FindUsage) {
        crate::usage::check_names_the_person(
            headers.user_id.as_deref(),
            health.as_ref().map(|(subject, _)| subject.as_str()),
        )?;
    }
    inner
        .log
        .check_accepting()
        .map_err(|e| Error::NotAccepting(e.to_string()))?;
    let peer = conf::provider_gateways(&conf, &target.service)
        .next()
        .cloned()
        .ok_or_else(|| {
            Error::Network(format!(
                "no gateway with a TLS certificate serves {}",
                target.service.provider().member()
            ))
        })?;
    let own_certificate = inner.own_tls_certificate().map_err(Error::Internal)?;
    Ok(Accepted {
        conf,
        headers,
        message_id,
        target,
        health,
        peer,
        own_certificate,
    })
}

async fn read_body(inner: &Inner, body: Incoming) -> Result<Bytes, Error> {
    let limit = inner.config.max_body;
    if declared_over(&body, limit) {
        linger(body, limit);
        return Err(Error::TooLarge { limit });
    }
    let timeout = inner.config.timeout;
    tokio::time::timeout(timeout, read_limited(body, inner.config.max_body))
        .await
        .map_err(|_| Error::Timeout {
            what: REQUEST_BODY.to_owned(),
            after: timeout,
        })?
        .map_err(|too_large| body_error(too_large, inner.config.max_body))
}

/// The request as signed and sent.
struct SignedRequest {
    descriptor: RequestDescriptor,
    encoded: Vec<u8>,
    request_hash: crate::signed::Digest512,
    signature: Vec<u8>,
    body: Bytes,
}

async fn sign_request(
    inner: &Inner,
    accepted: &Accepted,
    parts: &http::request::Parts,
    body: Bytes,
) -> Result<SignedRequest, Error> {
    let end_to_end = descriptor_headers(&parts.headers);
    let method = parts.method.as_str().to_owned();
    let descriptor = request_descriptor(
        &accepted.message_id,
        &accepted.headers,
        &accepted.target,
        method,
        accepted.health.as_ref(),
        &body,
        end_to_end,
    );
    let encoded = descriptor
        .encode()
        .map_err(|e| Error::BadRequest(e.to_string()))?;
    let request_hash = descriptor
        .request_hash()
        .map_err(|e| Error::BadRequest(e.to_string()))?;
    let signature = inner
        .keys
        .signing
        .sign(&encoded)
        .await
        .map_err(|e| Error::Signing(e.to_string()))?;
    Ok(SignedRequest {
        descriptor,
        encoded,
        request_hash,
        signature: signature.to_bytes(),
        body,
    })
}

/// The provider gateway's answer (not a fault): its body, read within the limit.
struct Answer {
    body: Bytes,
}

async fn send(inner: &Inner, accepted: &Accepted, signed: &SignedRequest) -> Result<Answer, Error> {
    let envelope = wire::encode(&signed.encoded, &signed.signature, &signed.body)
        .map_err(|e| Error::Internal(e.to_string()))?;
    let peer = &accepted.peer;
    let mut outgoing = Request::builder()
        .method(Method::POST)
        .uri(format!("https://{}{}", peer.address, wire::EXCHANGE_PATH))
        .header(hyper::header::CONTENT_TYPE, wire::CONTENT_TYPE);
    for name in ["traceparent", "tracestate"] {
        if let Some((_, value)) = signed.descriptor.headers.iter().find(|(n, _)| n == name) {
            outgoing = outgoing.header(name, value.as_str());
        }
    }
    let outgoing = outgoing
        .body(Full::new(Bytes::from(envelope)))
        .map_err(|e| Error::Internal(e.to_string()))?;
    let peer_certificate = peer
        .tls_certificate
        .as_ref()
        .map(|c| c.der().to_vec())
        .unwrap_or_default();
    let sent = Instant::now();
    let timeout = inner.config.timeout;
    let answer = tokio::time::timeout(timeout, async {
        let response = inner
            .peers
            .send(
                &peer.address,
                &peer_certificate,
                &accepted.own_certificate,
                outgoing,
            )
            .await?;
        let (parts, body) = response.into_parts();
        let body = read_limited(body, inner.config.max_body + ENVELOPE_OVERHEAD).await;
        Ok::<_, crate::peers::PeerError>((parts, body))
    })
    .await
    .map_err(|_| Error::Timeout {
        what: format!("the answer of gateway {}", peer.id),
        after: timeout,
    })?
    .map_err(|e| Error::Network(format!("gateway {}: {e}", peer.id)))?;
    inner
        .metrics
        .peer_round_trip
        .observe(sent.elapsed().as_secs_f64());
    let (parts, body) = answer;
    let body = body.map_err(|too_large| {
        if too_large {
            Error::AnswerTooLarge
        } else {
            Error::Network("the provider gateway's answer could not be read".to_owned())
        }
    })?;
    if parts.headers.contains_key(X_ROAD_ERROR) {
        return Err(passed_on(parts.status, &body));
    }
    Ok(Answer { body })
}

/// The answer to the information system: the provider's status, headers and body, and the
/// protocol's headers set by this gateway.
fn respond(
    accepted: &Accepted,
    signed: &SignedRequest,
    checked: CheckedResponse,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(checked.body));
    *response.status_mut() =
        StatusCode::from_u16(checked.descriptor.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let out = response.headers_mut();
    // The provider's signed headers pass, but for the reserved ones this gateway sets itself.
    for (name, value) in checked
        .descriptor
        .headers
        .iter()
        .filter(|(name, _)| !r1::is_reserved(name))
    {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            out.append(name, value);
        }
    }
    let protocol = [
        (r1::X_ROAD_ID, accepted.message_id.clone()),
        (r1::X_ROAD_CLIENT, signed.descriptor.client.clone()),
        (r1::X_ROAD_SERVICE, signed.descriptor.service.clone()),
        (r1::X_ROAD_REQUEST_ID, accepted.message_id.clone()),
        (
            r1::X_ROAD_REQUEST_HASH,
            base64::engine::general_purpose::STANDARD.encode(signed.request_hash),
        ),
    ];
    for (name, value) in protocol {
        if let Ok(value) = HeaderValue::from_str(&value) {
            out.insert(HeaderName::from_static(name), value);
        }
    }
    response
}

/// The end-to-end request headers as the descriptor carries them: lower-case names, UTF-8 values
/// (a header whose value is not text cannot be signed canonically and is not passed on).
pub(crate) fn descriptor_headers(headers: &hyper::HeaderMap) -> Vec<(String, String)> {
    r1::end_to_end_headers(headers)
        .into_iter()
        .filter(|(name, _)| !matches!(name.as_str(), "host" | "content-length"))
        .filter_map(|(name, value)| {
            value
                .to_str()
                .ok()
                .map(|v| (name.as_str().to_owned(), v.to_owned()))
        })
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
        data_subject: health
            .map(|(s, _)| s.clone())
            .or_else(|| headers.data_subject.as_ref().map(ToString::to_string)),
        purpose_of_use: health
            .map(|(_, p)| p.to_string())
            .or_else(|| headers.purpose_of_use.map(|p| p.to_string())),
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
    accepted: &Accepted,
    signed: &SignedRequest,
    answer: &Answer,
) -> Result<CheckedResponse, Error> {
    let bytes = &answer.body;
    let envelope = wire::decode(bytes)
        .map_err(|e| Error::Signature(format!("the provider gateway's answer: {e}")))?;
    let descriptor = ResponseDescriptor::decode(envelope.descriptor)
        .map_err(|e| Error::Signature(format!("the response descriptor: {e}")))?;
    if descriptor.message_id != accepted.message_id {
        return Err(Error::Signature(format!(
            "the response names message {:?}, not {:?}",
            descriptor.message_id, accepted.message_id
        )));
    }
    if descriptor.request_hash != signed.request_hash {
        return Err(Error::Signature(
            "the response is not bound to this request (request hash differs)".into(),
        ));
    }
    if descriptor.body_digest != sha512(envelope.body) {
        return Err(Error::Signature(
            "the response body does not match its signed digest".into(),
        ));
    }
    let signature = BatchSignature::from_bytes(envelope.signature)
        .map_err(|e| Error::Signature(format!("the response signature: {e}")))?;
    let provider = accepted.target.service.provider().member();
    let certificate = inner
        .verifier
        .verify_by_member(&accepted.conf, provider, envelope.descriptor, &signature)
        .ok_or_else(|| {
            Error::Signature(format!(
                "the response is not signed by a valid signing key of {provider}"
            ))
        })?;
    let body = bytes.slice_ref(envelope.body);
    Ok(CheckedResponse {
        descriptor,
        descriptor_bytes: envelope.descriptor.to_vec(),
        signature_bytes: envelope.signature.to_vec(),
        certificate,
        body,
    })
}

/// This gateway's member's signing certificate for the key it signs with.
pub(crate) fn own_signing_certificate(
    inner: &Inner,
    conf: &backbone_registry::GlobalConf,
) -> Vec<u8> {
    inner
        .verifier
        .certificate_of(
            conf,
            inner.trust.own().owner(),
            inner.keys.signing.public_key(),
        )
        .unwrap_or_default()
}

/// A provider gateway's fault, passed on with its type; anything unreadable becomes a
/// `NetworkError` of our own.
fn passed_on(status: StatusCode, body: &[u8]) -> Error {
    match serde_json::from_slice::<FaultBody>(body) {
        Ok(body)
            if body.kind.starts_with("Server.ServerProxy.") || body.kind.starts_with("Client.") =>
        {
            let code = Code::from_name(body.kind.rsplit('.').next().unwrap_or_default())
                .unwrap_or(Code::InternalError);
            let origin = if body.kind.starts_with("Client.") {
                Origin::Client
            } else {
                Origin::ServerProxy
            };
            Error::Remote(Fault {
                origin,
                code,
                message: body.message,
                detail: String::new(),
            })
        }
        _ => Error::Network(format!(
            "the provider gateway answered {status} without a valid error"
        )),
    }
}

/// The error for a body that could not be read within `limit`.
pub(crate) fn body_error(too_large: bool, limit: usize) -> Error {
    if too_large {
        Error::TooLarge { limit }
    } else {
        Error::BadRequest("the request body could not be read".to_owned())
    }
}

/// Whether a body is declared (`Content-Length`) longer than `limit`.
fn declared_over(body: &impl hyper::body::Body, limit: usize) -> bool {
    body.size_hint().lower() > u64::try_from(limit).unwrap_or(u64::MAX)
}

/// How long a refused request body is read and thrown away (see [`linger`]).
const LINGER: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads and throws away a refused body — at most twice `limit` bytes, for at most [`LINGER`] —
/// while the refusal is sent, so that an HTTP/1.1 client still writing it reads the fault instead
/// of a broken connection (hyper closes a connection whose request body was left unread).
fn linger(body: Incoming, limit: usize) {
    tokio::spawn(async move {
        let mut body = body;
        let mut seen = 0usize;
        let drain = async {
            while let Some(Ok(frame)) = body.frame().await {
                seen = seen.saturating_add(frame.data_ref().map_or(0, Bytes::len));
                if seen > limit.saturating_mul(2) {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
    });
}

/// Reads a body up to `limit` bytes; `Err(true)` when it is (or is declared) longer, `Err(false)`
/// when it breaks.
pub(crate) async fn read_limited<B>(body: B, limit: usize) -> Result<Bytes, bool>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // A body declared longer than the limit is refused before a byte of it is read.
    if declared_over(&body, limit) {
        return Err(true);
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) => Err(error
            .downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()),
    }
}
