//! The provider side of an exchange: a signed request arrives from a peer gateway over pinned
//! TLS, is checked, passed to the local service, and the service's answer goes back signed and
//! bound to the request.
//!
//! ```text
//!  configuration current? ─▶ peer certificate still registered? ─▶ envelope, descriptor, body
//!  digest ─▶ client's member owns the peer gateway? ─▶ client member's signature ─▶ not a replay?
//!  ─▶ service ours and served here? ─▶ health context ─▶ access right ─▶ log accepting?
//!  ─▶ call the local service ─▶ sign the response descriptor (request hash bound in)
//!  ─▶ request and response logged durably ─▶ answer the envelope
//! ```
//!
//! Every refusal answers the protocol's error (`Server.ServerProxy.*`) and logs nothing.

use std::sync::Arc;
use std::time::Instant;

use backbone_hsm::batch::BatchSignature;
use backbone_registry::GlobalConf;
use backbone_registry::id::{ClientId, GroupId, ServiceId};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response};

use crate::client::{own_signing_certificate, read_limited};
use crate::conf;
use crate::fault::{Code, Fault};
use crate::log::{Kind, NewRecord, Side};
use crate::meta::{self, Meta};
use crate::r1::{self, PurposeOfUse};
use crate::service::{Inner, fault_response, now_ms};
use crate::signed::{RequestDescriptor, ResponseDescriptor, sha512};
use crate::wire;

const ENVELOPE_OVERHEAD: usize = crate::signed::MAX_DESCRIPTOR_LEN + wire::MAX_SIGNATURE_LEN + 16;

/// Answers one request on the peer port, from the peer that presented `certificate`.
pub(crate) async fn handle(inner: Arc<Inner>, certificate: &[u8], request: Request<Incoming>) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let (service, response) = match exchange(&inner, certificate, request).await {
        Ok(answer) => answer,
        Err((service, fault)) => {
            tracing::info!(kind = %fault.kind(), message = %fault.message, id = %fault.detail, "exchange refused");
            inner.metrics.exchanges.with_label_values(&["provider", &service, &fault.kind()]).inc();
            inner.metrics.latency.with_label_values(&["provider"]).observe(started.elapsed().as_secs_f64());
            return fault_response(&fault);
        }
    };
    inner.metrics.exchanges.with_label_values(&["provider", &service, "ok"]).inc();
    inner.metrics.latency.with_label_values(&["provider"]).observe(started.elapsed().as_secs_f64());
    response
}

type Refusal = (String, Fault);

fn refusal(code: Code, message: impl Into<String>, message_id: &str) -> Fault {
    Fault::server_proxy(code, message, message_id)
}

async fn exchange(inner: &Inner, certificate: &[u8], request: Request<Incoming>) -> Result<(String, Response<Full<Bytes>>), Refusal> {
    let early = |fault: Fault| (String::from("-"), fault);
    if request.method() != Method::POST || request.uri().path() != wire::EXCHANGE_PATH {
        return Err(early(refusal(Code::BadRequest, format!("gateways exchange messages only with POST {}", wire::EXCHANGE_PATH), "")));
    }
    let conf = inner.trust.current().map_err(|e| early(refusal(Code::OutdatedGlobalConf, format!("the gateway fails closed: {e}"), "")))?;
    let peer = conf::gateway_by_certificate(&conf, certificate)
        .cloned()
        .ok_or_else(|| early(refusal(Code::SslAuthenticationFailed, "the client gateway's TLS certificate is no longer registered", "")))?;
    let reading = tokio::time::timeout(inner.config.timeout, read_limited(request.into_body(), inner.config.max_body + ENVELOPE_OVERHEAD));
    let bytes = reading.await.map_err(|_| early(refusal(Code::Timeout, "the request did not arrive in time", "")))?.map_err(|too_large| {
        early(if too_large {
            refusal(Code::RequestTooLarge, format!("the body is over the limit of {} bytes", inner.config.max_body), "")
        } else {
            refusal(Code::BadRequest, "the request could not be read", "")
        })
    })?;
    let envelope = wire::decode(&bytes).map_err(|e| early(refusal(Code::BadRequest, e.to_string(), "")))?;
    let descriptor = RequestDescriptor::decode(envelope.descriptor).map_err(|e| early(refusal(Code::BadRequest, format!("request descriptor: {e}"), "")))?;
    let message_id = descriptor.message_id.clone();
    let refuse = |code: Code, message: String| (descriptor.service.clone(), refusal(code, message, &message_id));

    if descriptor.body_digest != sha512(envelope.body) {
        return Err(refuse(Code::InvalidSignatureValue, "the body does not match its signed digest".into()));
    }
    let client: ClientId = descriptor.client.parse().map_err(|e| refuse(Code::BadRequest, format!("client: {e}")))?;
    let service: ServiceId = descriptor.service.parse().map_err(|e| refuse(Code::BadRequest, format!("service: {e}")))?;
    if client.member() != peer.id.owner() {
        return Err(refuse(
            Code::SslAuthenticationFailed,
            format!("client {client} is not served by gateway {}, which authenticated this connection", peer.id),
        ));
    }
    let signature = BatchSignature::from_bytes(envelope.signature).map_err(|e| refuse(Code::InvalidSignatureValue, format!("signature: {e}")))?;
    let client_certificate = inner
        .verifier
        .verify_by_member(&conf, client.member(), envelope.descriptor, &signature)
        .ok_or_else(|| refuse(Code::InvalidSignatureValue, format!("the request is not signed by a valid signing key of {}", client.member())))?;
    inner
        .replay
        .admit(&descriptor.client, &message_id, descriptor.created_at_ms, now_ms())
        .map_err(|e| refuse(Code::Replay, e.to_string()))?;

    let meta = Meta::of(service.code());
    let ours = service.provider().member() == inner.trust.own().owner();
    let entry = conf::service(&conf, &service).filter(|_| ours);
    let personal_health_data = match (entry, meta) {
        (Some(entry), _) => entry.personal_health_data,
        (None, Some(meta)) if ours && conf.subsystems.iter().any(|s| &s.id == service.provider()) => meta.personal_health_data(),
        _ => return Err(refuse(Code::UnknownService, format!("service {service} is not provided by this gateway's member"))),
    };
    let base = match meta {
        Some(_) => None,
        None => Some(
            inner.services.get(&descriptor.service).ok_or_else(|| refuse(Code::UnknownService, format!("service {service} is not served by this gateway")))?,
        ),
    };
    let emergency = if personal_health_data {
        let subject_ok = descriptor.data_subject.as_deref().is_some_and(|s| s.parse::<r1::DataSubject>().is_ok());
        let purpose = descriptor.purpose_of_use.as_deref().and_then(|p| p.parse::<PurposeOfUse>().ok());
        match (subject_ok, purpose) {
            (true, Some(purpose)) => purpose.is_emergency(),
            _ => return Err(refuse(Code::MissingHealthContext, "a personal health data service needs a valid data subject and purpose of use".into())),
        }
    } else {
        false
    };
    let groups = conf::groups_of(&conf, &client);
    let path = if descriptor.path.is_empty() { "/" } else { descriptor.path.as_str() };
    if meta.is_none_or(Meta::needs_access_right) && !inner.rights.snapshot().allows(&client, &groups, &service, &descriptor.method, path) {
        return Err(refuse(Code::AccessDenied, format!("{client} has no access right to {} {path} of {service}", descriptor.method)));
    }
    inner.log.check_accepting().map_err(|e| refuse(Code::TimestampingFailed, format!("new exchanges are refused: {e}")))?;

    let answered = match (meta, base) {
        (Some(meta), _) => answer_meta(inner, &conf, meta, &service, &client, &groups, &descriptor),
        (None, Some(base)) => call_service(inner, base, &descriptor, bytes.slice_ref(envelope.body)).await,
        (None, None) => Err((Code::UnknownService, format!("service {service} is not served by this gateway"))),
    };
    let (status, headers, body) = answered.map_err(|(code, why)| refuse(code, why))?;
    let request_hash = descriptor.request_hash().map_err(|e| refuse(Code::BadRequest, e.to_string()))?;
    let response = ResponseDescriptor { message_id: message_id.clone(), request_hash, status, created_at_ms: now_ms(), body_digest: sha512(&body), headers };
    let encoded = response.encode().map_err(|e| refuse(Code::ServiceFailed, format!("the service's response cannot be signed: {e}")))?;
    let response_signature = inner.keys.signing.sign(&encoded).await.map_err(|e| refuse(Code::InternalError, format!("signing failed: {e}")))?;
    let response_signature = response_signature.to_bytes();

    let now = now_ms();
    let record = |kind: Kind, descriptor_bytes: Vec<u8>, signature: Vec<u8>, signer_certificate: Vec<u8>, body: Vec<u8>| NewRecord {
        side: Side::Provider,
        kind,
        message_id: message_id.clone(),
        client: descriptor.client.clone(),
        service: descriptor.service.clone(),
        user_id: descriptor.user_id.clone(),
        data_subject: descriptor.data_subject.clone(),
        purpose_of_use: descriptor.purpose_of_use.clone(),
        emergency,
        descriptor: descriptor_bytes,
        signature,
        signer_certificate,
        body,
        logged_at_ms: now,
    };
    let records = vec![
        record(Kind::Request, envelope.descriptor.to_vec(), envelope.signature.to_vec(), client_certificate, envelope.body.to_vec()),
        record(Kind::Response, encoded.clone(), response_signature.clone(), own_signing_certificate(inner, &conf), body.to_vec()),
    ];
    inner.log.append(records).await.map_err(|e| refuse(Code::DatabaseError, format!("the exchange could not be logged: {e}")))?;

    let envelope = wire::encode(&encoded, &response_signature, &body).map_err(|e| refuse(Code::InternalError, e.to_string()))?;
    let mut answer = Response::new(Full::new(Bytes::from(envelope)));
    answer.headers_mut().insert(hyper::header::CONTENT_TYPE, HeaderValue::from_static(wire::CONTENT_TYPE));
    Ok((descriptor.service.clone(), answer))
}

/// Calls the local service with the request as the information system sent it, plus the
/// protocol headers a provider information system expects. The body is passed on without a copy.
async fn call_service(
    inner: &Inner,
    base: &str,
    descriptor: &RequestDescriptor,
    body: Bytes,
) -> Result<(u16, Vec<(String, String)>, Bytes), (Code, String)> {
    let mut url = format!("{base}{}", descriptor.path);
    if let Some(query) = &descriptor.query {
        url.push('?');
        url.push_str(query);
    }
    let method = Method::from_bytes(descriptor.method.as_bytes()).map_err(|_| (Code::BadRequest, "not an HTTP method".to_owned()))?;
    let mut call = Request::builder().method(method).uri(url.as_str());
    for (name, value) in &descriptor.headers {
        call = call.header(name.as_str(), value.as_str());
    }
    let protocol = [
        (r1::X_ROAD_CLIENT, Some(descriptor.client.as_str())),
        (r1::X_ROAD_ID, Some(descriptor.message_id.as_str())),
        (r1::X_ROAD_USER_ID, descriptor.user_id.as_deref()),
        (r1::X_ROAD_ISSUE, descriptor.issue.as_deref()),
        (r1::X_ROAD_REPRESENTED_PARTY, descriptor.represented_party.as_deref()),
        (r1::X_BACKBONE_DATA_SUBJECT, descriptor.data_subject.as_deref()),
        (r1::X_BACKBONE_PURPOSE_OF_USE, descriptor.purpose_of_use.as_deref()),
    ];
    for (name, value) in protocol {
        if let Some(value) = value {
            call = call.header(name, value);
        }
    }
    let call = call.body(Full::new(body)).map_err(|e| (Code::ServiceFailed, format!("the service could not be called: {e}")))?;
    let timeout = inner.config.timeout;
    let answered = tokio::time::timeout(timeout, async {
        let response = inner.http.request(call).await.map_err(|e| (Code::ServiceFailed, format!("the service could not be called: {e}")))?;
        let status = response.status().as_u16();
        let headers = crate::client::descriptor_headers(response.headers());
        let body = read_limited(response.into_body(), inner.config.max_body).await.map_err(|too_large| {
            if too_large {
                (Code::ServiceFailed, format!("the service's response is over the limit of {} bytes", inner.config.max_body))
            } else {
                (Code::ServiceFailed, "the service's response could not be read".to_owned())
            }
        })?;
        Ok((status, headers, body))
    })
    .await;
    answered.map_err(|_| (Code::Timeout, format!("the service did not answer within {timeout:?}")))?
}

/// Answers a metaservice: status, headers, body.
fn answer_meta(
    inner: &Inner,
    conf: &GlobalConf,
    meta: Meta,
    service: &ServiceId,
    client: &ClientId,
    groups: &[GroupId],
    descriptor: &RequestDescriptor,
) -> Result<(u16, Vec<(String, String)>, Bytes), (Code, String)> {
    let json_headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    let body = match meta {
        Meta::ListMethods => to_json(&meta::list_methods(conf, service.provider()))?,
        Meta::AllowedMethods => to_json(&meta::allowed_methods(conf, &inner.rights.snapshot(), service.provider(), client, groups))?,
        Meta::FindUsage => {
            let subject = descriptor.data_subject.as_deref().unwrap_or_default();
            let (offset, limit) = meta::usage_paging(descriptor.query.as_deref()).map_err(|e| (Code::BadRequest, e))?;
            let entries = inner.log.find_usage(subject, offset, limit).map_err(|e| (Code::DatabaseError, format!("the usage index cannot be read: {e}")))?;
            to_json(&crate::usage::answer(subject, offset, limit, &entries))?
        }
    };
    Ok((200, json_headers, Bytes::from(body)))
}

fn to_json(value: &impl serde::Serialize) -> Result<Vec<u8>, (Code, String)> {
    serde_json::to_vec(value).map_err(|e| (Code::InternalError, e.to_string()))
}
