//! The provider side of an exchange: a signed request arrives from a peer gateway over pinned
//! TLS, is checked, passed to the local service, and the service's answer goes back signed and
//! bound to the request.
//!
//! ```text
//!  configuration current? ─▶ peer certificate still registered? ─▶ envelope, descriptor, body
//!  digest ─▶ client's member owns the peer gateway? ─▶ client member's signature ─▶ not a replay?
//!  ─▶ service ours and served here? ─▶ health context ─▶ access right ─▶ log accepting?
//!  ─▶ request logged durably ─▶ call the local service ─▶ sign the response descriptor (request
//!  hash bound in) ─▶ response logged durably ─▶ answer the envelope
//! ```
//!
//! Every refusal before the request is logged answers the protocol's error
//! (`Server.ServerProxy.*`) and logs nothing; a fault after it (the service failing or late, the
//! HSM) is logged as the request's outcome ([`crate::outcome`]).

use std::sync::Arc;
use std::time::Instant;

use backbone_hsm::batch::BatchSignature;
use backbone_registry::GlobalConf;
use backbone_registry::id::{ClientId, GroupId, ServiceId};
use backbone_registry::model::Gateway;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response};

use crate::client::{Labels, own_signing_certificate, read_limited};
use crate::conf;
use crate::error::Error;
use crate::log::Side;
use crate::meta::{self, Meta};
use crate::outcome::{Exchange, Signed};
use crate::r1::{self, PurposeOfUse};
use crate::service::{Inner, now_ms};
use crate::signed::{RequestDescriptor, ResponseDescriptor, sha512};
use crate::wire;

/// An answer to pass back: the HTTP status, the end-to-end headers, the body.
type ServiceAnswer = (u16, Vec<(String, String)>, Bytes);

const ENVELOPE_OVERHEAD: usize = crate::signed::MAX_DESCRIPTOR_LEN + wire::MAX_SIGNATURE_LEN + 16;

/// Answers one request on the peer port, from the peer that presented `certificate`.
pub(crate) async fn handle(
    inner: Arc<Inner>,
    certificate: &[u8],
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let mut labels = Labels::default();
    let result = exchange(&inner, certificate, request, &mut labels).await;
    crate::client::finish(&inner, Side::Provider, started, &labels, result)
}

/// The steps of an exchange on the provider side. Everything the peer sent is untrusted input,
/// signed or not.
async fn exchange(
    inner: &Inner,
    certificate: &[u8],
    request: Request<Incoming>,
    labels: &mut Labels,
) -> Result<Response<Full<Bytes>>, Error> {
    let (conf, peer) = authenticate(inner, certificate, &request)?;
    let bytes = read_envelope(inner, request.into_body()).await?;
    let checked = check_request(inner, &conf, &peer, &bytes, labels)?;
    let authorized = authorize(inner, &conf, &checked, labels)?;
    // Logged before the service is called: whatever the service sees is in the log.
    let logged = Exchange {
        side: Side::Provider,
        request: &checked.descriptor,
        emergency: authorized.emergency,
    };
    let request_seq = logged
        .log_request(
            inner,
            Signed {
                descriptor: &checked.descriptor_bytes,
                signature: &checked.signature,
                signer_certificate: checked.client_certificate.clone(),
                body: &checked.body,
            },
        )
        .await?;
    let (signed, body) = match answer(inner, &conf, &checked, &authorized).await {
        Ok(answered) => answered,
        Err(error) => {
            let fault = error.fault(Side::Provider, &checked.descriptor.message_id);
            logged.log_fault(inner, &conf, request_seq, &fault).await;
            return Err(error);
        }
    };
    logged
        .log_response(
            inner,
            request_seq,
            Signed {
                descriptor: &signed.encoded,
                signature: &signed.signature,
                signer_certificate: own_signing_certificate(inner, &conf),
                body: &body,
            },
        )
        .await?;
    let envelope = wire::encode(&signed.encoded, &signed.signature, &body)
        .map_err(|e| Error::Internal(e.to_string()))?;
    let mut answer = Response::new(Full::new(Bytes::from(envelope)));
    answer.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static(wire::CONTENT_TYPE),
    );
    Ok(answer)
}

/// The local service's (or a metaservice's) answer, signed and bound to the request.
async fn answer(
    inner: &Inner,
    conf: &GlobalConf,
    checked: &CheckedRequest,
    authorized: &Authorized,
) -> Result<(SignedResponse, Bytes), Error> {
    let (status, headers, body) = act(inner, conf, checked, authorized).await?;
    let signed = sign_response(inner, checked, status, headers, &body).await?;
    Ok((signed, body))
}

/// The exchange path, a current configuration, and a peer whose TLS certificate is still
/// registered for a gateway.
fn authenticate(
    inner: &Inner,
    certificate: &[u8],
    request: &Request<Incoming>,
) -> Result<(Arc<GlobalConf>, Gateway), Error> {
    if request.method() != Method::POST || request.uri().path() != wire::EXCHANGE_PATH {
        return Err(Error::BadRequest(format!(
            "gateways exchange messages only with POST {}",
            wire::EXCHANGE_PATH
        )));
    }
    let conf = inner
        .trust
        .current()
        .map_err(|e| Error::OutdatedConf(e.to_string()))?;
    let peer = conf::gateway_by_certificate(&conf, certificate)
        .cloned()
        .ok_or_else(|| {
            Error::PeerIdentity(
                "the client gateway's TLS certificate is no longer registered".to_owned(),
            )
        })?;
    Ok((conf, peer))
}

async fn read_envelope(inner: &Inner, body: Incoming) -> Result<Bytes, Error> {
    let timeout = inner.config.timeout;
    tokio::time::timeout(
        timeout,
        read_limited(body, inner.config.max_body + ENVELOPE_OVERHEAD),
    )
    .await
    .map_err(|_| Error::Timeout {
        what: "the request".to_owned(),
        after: timeout,
    })?
    .map_err(|too_large| crate::client::body_error(too_large, inner.config.max_body))
}

/// A request whose envelope decodes, whose body matches its signed digest, whose client's member
/// runs the peer gateway and signed it, and which is not a replay.
struct CheckedRequest {
    descriptor: RequestDescriptor,
    client: ClientId,
    service: ServiceId,
    descriptor_bytes: Bytes,
    signature: Bytes,
    body: Bytes,
    client_certificate: Vec<u8>,
}

fn check_request(
    inner: &Inner,
    conf: &GlobalConf,
    peer: &Gateway,
    bytes: &Bytes,
    labels: &mut Labels,
) -> Result<CheckedRequest, Error> {
    let envelope = wire::decode(bytes).map_err(|e| Error::BadRequest(e.to_string()))?;
    let descriptor = RequestDescriptor::decode(envelope.descriptor)
        .map_err(|e| Error::BadRequest(format!("request descriptor: {e}")))?;
    labels.message_id.clone_from(&descriptor.message_id);

    if envelope.body.len() > inner.config.max_body {
        return Err(Error::TooLarge {
            limit: inner.config.max_body,
        });
    }
    if descriptor.body_digest != sha512(envelope.body) {
        return Err(Error::Signature(
            "the body does not match its signed digest".into(),
        ));
    }
    let client: ClientId = descriptor
        .client
        .parse()
        .map_err(|e| Error::BadRequest(format!("client: {e}")))?;
    let service: ServiceId = descriptor
        .service
        .parse()
        .map_err(|e| Error::BadRequest(format!("service: {e}")))?;
    if client.member() != peer.id.owner() {
        return Err(Error::PeerIdentity(format!(
            "client {client} is not served by gateway {}, which authenticated this connection",
            peer.id
        )));
    }
    let signature = BatchSignature::from_bytes(envelope.signature)
        .map_err(|e| Error::Signature(format!("signature: {e}")))?;
    let client_certificate = inner
        .verifier
        .verify_by_member(conf, client.member(), envelope.descriptor, &signature)
        .ok_or_else(|| {
            Error::Signature(format!(
                "the request is not signed by a valid signing key of {}",
                client.member()
            ))
        })?;
    inner.replay.admit(
        &descriptor.client,
        &descriptor.message_id,
        descriptor.created_at_ms,
        now_ms(),
    )?;
    Ok(CheckedRequest {
        client,
        service,
        descriptor_bytes: bytes.slice_ref(envelope.descriptor),
        signature: bytes.slice_ref(envelope.signature),
        body: bytes.slice_ref(envelope.body),
        descriptor,
        client_certificate,
    })
}

/// What serves an authorised request: a metaservice, or the local service at a base URL.
struct Authorized {
    target: Answerer,
    groups: Vec<GroupId>,
    emergency: bool,
}

enum Answerer {
    Meta(Meta),
    Service(String),
}

/// The service is this member's and served here; a health service has its context; the client
/// holds an access right; the log accepts new exchanges.
fn authorize(
    inner: &Inner,
    conf: &GlobalConf,
    checked: &CheckedRequest,
    labels: &mut Labels,
) -> Result<Authorized, Error> {
    let (client, service, descriptor) = (&checked.client, &checked.service, &checked.descriptor);
    // The path rule, as if the request came from an information system: the client gateway
    // signs the normal form, so anything else is refused, never repaired.
    // The header rule: what the client gateway never signs is refused, never dropped.
    if let Some((name, _)) = descriptor
        .headers
        .iter()
        .find(|(name, _)| r1::is_reserved(name))
    {
        return Err(Error::BadRequest(format!(
            "the signed request carries the reserved header {:?}",
            name.chars().take(64).collect::<String>()
        )));
    }
    if r1::normalize_path(&descriptor.path)? != descriptor.path {
        return Err(Error::BadRequest(
            "the signed path is not in the normal form of the path rule".to_owned(),
        ));
    }
    let meta = Meta::of(service.code());
    let ours = service.provider().member() == inner.trust.own().owner();
    let entry = conf::service(conf, service).filter(|_| ours);
    let personal_health_data = match (entry, meta) {
        (Some(entry), _) => entry.personal_health_data,
        (None, Some(meta))
            if ours && conf.subsystems.iter().any(|s| &s.id == service.provider()) =>
        {
            meta.personal_health_data()
        }
        _ => {
            return Err(Error::UnknownService {
                service: service.to_string(),
                why: "is not provided by this gateway's member",
            });
        }
    };
    // Known now (this member's, in the configuration): a bounded metric label.
    labels.service = Some(service.to_string());
    let target = match meta {
        Some(meta) => Answerer::Meta(meta),
        None => Answerer::Service(
            inner
                .services
                .get(&descriptor.service)
                .cloned()
                .ok_or_else(|| Error::UnknownService {
                    service: service.to_string(),
                    why: "is not served by this gateway",
                })?,
        ),
    };
    let emergency =
        if personal_health_data {
            let subject_ok = descriptor
                .data_subject
                .as_deref()
                .is_some_and(|s| s.parse::<r1::DataSubject>().is_ok());
            let purpose = descriptor
                .purpose_of_use
                .as_deref()
                .and_then(|p| p.parse::<PurposeOfUse>().ok());
            match (subject_ok, purpose) {
                (true, Some(purpose)) => purpose.is_emergency(),
                _ => return Err(Error::HealthContext(
                    "a personal health data service needs a valid data subject and purpose of use"
                        .into(),
                )),
            }
        } else {
            false
        };
    if meta == Some(Meta::FindUsage) {
        crate::usage::check_names_the_person(
            descriptor.user_id.as_deref(),
            descriptor.data_subject.as_deref(),
        )?;
    }
    let groups = conf::groups_of(conf, client);
    let path = if descriptor.path.is_empty() {
        "/"
    } else {
        descriptor.path.as_str()
    };
    if meta.is_none_or(Meta::needs_access_right)
        && !inner
            .rights
            .snapshot()
            .allows(client, &groups, service, &descriptor.method, path)
    {
        return Err(Error::AccessDenied {
            client: client.to_string(),
            service: service.to_string(),
            method: descriptor.method.clone(),
            path: path.to_owned(),
        });
    }
    inner
        .log
        .check_accepting()
        .map_err(|e| Error::NotAccepting(e.to_string()))?;
    Ok(Authorized {
        target,
        groups,
        emergency,
    })
}

/// Answers the request: the metaservice, or a call to the local service.
async fn act(
    inner: &Inner,
    conf: &GlobalConf,
    checked: &CheckedRequest,
    authorized: &Authorized,
) -> Result<ServiceAnswer, Error> {
    match &authorized.target {
        Answerer::Meta(meta) => answer_meta(
            inner,
            conf,
            *meta,
            &checked.service,
            &checked.client,
            &authorized.groups,
            &checked.descriptor,
        ),
        Answerer::Service(base) => {
            call_service(inner, base, &checked.descriptor, checked.body.clone()).await
        }
    }
}

/// The response as signed, bound to its request by hash.
struct SignedResponse {
    encoded: Vec<u8>,
    signature: Vec<u8>,
}

async fn sign_response(
    inner: &Inner,
    checked: &CheckedRequest,
    status: u16,
    headers: Vec<(String, String)>,
    body: &Bytes,
) -> Result<SignedResponse, Error> {
    let request_hash = checked
        .descriptor
        .request_hash()
        .map_err(|e| Error::BadRequest(e.to_string()))?;
    let response = ResponseDescriptor {
        message_id: checked.descriptor.message_id.clone(),
        request_hash,
        status,
        created_at_ms: now_ms(),
        body_digest: sha512(body),
        headers,
    };
    let encoded = response
        .encode()
        .map_err(|e| Error::Service(format!("the service's response cannot be signed: {e}")))?;
    let signature = inner
        .keys
        .signing
        .sign(&encoded)
        .await
        .map_err(|e| Error::Signing(e.to_string()))?;
    Ok(SignedResponse {
        encoded,
        signature: signature.to_bytes(),
    })
}

/// Calls the local service with the request as the information system sent it, plus the
/// protocol headers a provider information system expects. The body is passed on without a copy.
async fn call_service(
    inner: &Inner,
    base: &str,
    descriptor: &RequestDescriptor,
    body: Bytes,
) -> Result<ServiceAnswer, Error> {
    let mut url = format!("{base}{}", descriptor.path);
    if let Some(query) = &descriptor.query {
        url.push('?');
        url.push_str(query);
    }
    let method = Method::from_bytes(descriptor.method.as_bytes())
        .map_err(|_| Error::BadRequest("not an HTTP method".to_owned()))?;
    let mut call = Request::builder().method(method).uri(url.as_str());
    for (name, value) in &descriptor.headers {
        call = call.header(name.as_str(), value.as_str());
    }
    let protocol = [
        (r1::X_ROAD_CLIENT, Some(descriptor.client.as_str())),
        (r1::X_ROAD_ID, Some(descriptor.message_id.as_str())),
        (r1::X_ROAD_USER_ID, descriptor.user_id.as_deref()),
        (r1::X_ROAD_ISSUE, descriptor.issue.as_deref()),
        (
            r1::X_ROAD_REPRESENTED_PARTY,
            descriptor.represented_party.as_deref(),
        ),
        (
            r1::X_BACKBONE_DATA_SUBJECT,
            descriptor.data_subject.as_deref(),
        ),
        (
            r1::X_BACKBONE_PURPOSE_OF_USE,
            descriptor.purpose_of_use.as_deref(),
        ),
    ];
    for (name, value) in protocol {
        if let Some(value) = value {
            call = call.header(name, value);
        }
    }
    let call = call
        .body(Full::new(body))
        .map_err(|e| Error::Service(format!("the service could not be called: {e}")))?;
    let timeout = inner.config.timeout;
    let answered = tokio::time::timeout(timeout, async {
        let response = inner.http.request(call).await.map_err(|e| {
            Error::Service(format!("the service could not be called: {}", causes(&e)))
        })?;
        let status = response.status().as_u16();
        let headers = crate::client::descriptor_headers(response.headers());
        let body = read_limited(response.into_body(), inner.config.max_body)
            .await
            .map_err(|too_large| {
                if too_large {
                    Error::Service(format!(
                        "the service's response is over the limit of {} bytes",
                        inner.config.max_body
                    ))
                } else {
                    Error::Service("the service's response could not be read".to_owned())
                }
            })?;
        Ok((status, headers, body))
    })
    .await;
    answered.map_err(|_| Error::Timeout {
        what: "the service's answer".to_owned(),
        after: timeout,
    })?
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
) -> Result<ServiceAnswer, Error> {
    let json_headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    let body = match meta {
        Meta::ListMethods => to_json(&meta::list_methods(conf, service.provider()))?,
        Meta::AllowedMethods => to_json(&meta::allowed_methods(
            conf,
            &inner.rights.snapshot(),
            service.provider(),
            client,
            groups,
        ))?,
        Meta::FindUsage => {
            let subject = descriptor.data_subject.as_deref().unwrap_or_default();
            let (offset, limit) =
                meta::usage_paging(descriptor.query.as_deref()).map_err(Error::BadRequest)?;
            let entries = inner
                .log
                .find_usage(subject, offset, limit)
                .map_err(|e| Error::LogRead(format!("the usage index cannot be read: {e}")))?;
            to_json(&crate::usage::answer(subject, offset, limit, &entries))?
        }
    };
    Ok((200, json_headers, Bytes::from(body)))
}

fn to_json(value: &impl serde::Serialize) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value).map_err(|e| Error::Internal(e.to_string()))
}

/// An error and its causes, `: `-separated (hyper's client error says only "Connect").
pub(crate) fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
