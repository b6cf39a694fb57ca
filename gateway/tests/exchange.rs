//! Two gateways, a registry and a timestamping service in one process, SoftHSM2 tokens, real
//! TLS, a real HTTP service: the X-Road REST r1 exchange, the health extension, and the attacks
//! — each refused with its error type and nothing of it logged as a success.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backbone_gateway::connect::GatewayClient;
use backbone_gateway::log::Kind;
use backbone_gateway::log::Outcome;
use backbone_gateway::peers::Peers;
use backbone_gateway::signed::{RequestDescriptor, ResponseDescriptor, sha512};
use backbone_gateway::usage::OutcomeJson;
use backbone_gateway::wire;
use common::{Backbone, DISPENSING, OTHER_PERSON, PATIENTS, PERSON, PING};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;

async fn call(
    backbone: &Backbone,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, http::HeaderMap, serde_json::Value) {
    call_as(&backbone.pharmacy_client(), path, headers, body).await
}

/// [`call`] through `client`.
async fn call_as(
    client: &GatewayClient,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, http::HeaderMap, serde_json::Value) {
    let mut request = if body.is_some() {
        client.post(path)
    } else {
        client.get(path)
    };
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.body(body.to_owned());
    }
    let answer = request.send().await.unwrap();
    let json = serde_json::from_slice(&answer.body)
        .unwrap_or_else(|_| serde_json::Value::String(answer.text()));
    (answer.status.as_u16(), answer.headers, json)
}

fn error_type(headers: &http::HeaderMap, body: &serde_json::Value) -> String {
    let header = headers
        .get("x-road-error")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert_eq!(
        body["type"].as_str().unwrap_or_default(),
        header,
        "the X-Road-Error header and the body's type agree"
    );
    header
}

const HEALTH: [(&str, &str); 3] = [
    ("X-Road-Client", DISPENSING),
    ("X-Backbone-Data-Subject", PERSON),
    ("X-Backbone-Purpose-Of-Use", "TREAT"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_health_request_crosses_both_gateways_signed_checked_and_logged_on_both_sides() {
    let mut backbone = Backbone::start(Duration::from_secs(600)).await;
    backbone.start_gateways().await;
    backbone.grant(PATIENTS, DISPENSING, "GET", "/Patient/*");
    backbone.grant(PATIENTS, DISPENSING, "POST", "/Patient/*/$everything");
    backbone.grant(PING, DISPENSING, "*", "/**");

    // The PR-REST shape: /r1/{serviceId}/{path}?{query}, X-Road-Client, an X-Road-Id of our own.
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut headers = HEALTH.to_vec();
    headers.extend([
        ("X-Road-Id", "7a1f2c1e-6b8e-4a57-9f51-0d2b1c3e4f50"),
        ("X-Road-UserId", "EE47101010033"),
        ("traceparent", trace),
    ]);
    let (status, response_headers, seen) = call(
        &backbone,
        &format!("/r1/{PATIENTS}/Patient/4711?_format=json"),
        &headers,
        None,
    )
    .await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["path"], "/fhir/Patient/4711");
    assert_eq!(seen["query"], "_format=json");
    assert_eq!(seen["client"], DISPENSING);
    assert_eq!(seen["id"], "7a1f2c1e-6b8e-4a57-9f51-0d2b1c3e4f50");
    assert_eq!(seen["user"], "EE47101010033");
    assert_eq!(seen["subject"], PERSON);
    assert_eq!(seen["purpose"], "TREAT");
    assert_eq!(
        seen["traceparent"], trace,
        "W3C trace context reaches the service"
    );
    assert_eq!(
        response_headers["x-road-id"],
        "7a1f2c1e-6b8e-4a57-9f51-0d2b1c3e4f50"
    );
    assert_eq!(
        response_headers["x-road-request-id"],
        "7a1f2c1e-6b8e-4a57-9f51-0d2b1c3e4f50"
    );
    assert_eq!(response_headers["x-road-client"], DISPENSING);
    assert_eq!(response_headers["x-road-service"], PATIENTS);
    assert_eq!(response_headers["content-type"], "application/fhir+json");
    assert!(
        response_headers["x-road-request-hash"].len() >= 86,
        "a base64 SHA-512"
    );

    // A body travels, and an X-Road-Id is generated when the client sends none.
    let (status, response_headers, seen) = call(
        &backbone,
        &format!("/r1/{PATIENTS}/Patient/4711/$everything"),
        &HEALTH,
        Some("{\"resourceType\":\"Parameters\"}"),
    )
    .await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["body"], "{\"resourceType\":\"Parameters\"}");
    assert_eq!(seen["method"], "POST");
    assert_eq!(response_headers["x-road-id"].len(), 36);

    // Without health data, no health headers are needed.
    let (status, _, seen) = call(
        &backbone,
        &format!("/r1/{PING}"),
        &[("X-Road-Client", DISPENSING)],
        None,
    )
    .await;
    assert_eq!(status, 200, "{seen}");

    // Both sides logged each exchange (request and response), durably, before answering.
    for agency in [&backbone.hospital, &backbone.pharmacy] {
        assert_eq!(
            agency.log.status().records,
            6,
            "three exchanges, two records each"
        );
        let usage = agency.log.find_usage(PERSON, 0, 10).unwrap();
        assert_eq!(usage.len(), 2, "two health exchanges about this person");
        assert!(
            agency
                .log
                .find_usage(OTHER_PERSON, 0, 10)
                .unwrap()
                .is_empty()
        );
        // Each record keeps its own body: the one its signed descriptor digests.
        let mut bodies = Vec::new();
        for seq in 0..6 {
            let logged = agency.log.record(seq).unwrap().unwrap();
            let digest = match logged.record.kind {
                Kind::Request => {
                    RequestDescriptor::decode(&logged.record.descriptor)
                        .unwrap()
                        .body_digest
                }
                Kind::Response => {
                    ResponseDescriptor::decode(&logged.record.descriptor)
                        .unwrap()
                        .body_digest
                }
            };
            assert_eq!(
                digest,
                sha512(&logged.body),
                "record {seq} ({:?}) holds the body its descriptor signs",
                logged.record.kind
            );
            bodies.push((logged.record.kind, logged.body));
        }
        assert!(
            bodies.contains(&(Kind::Request, b"{\"resourceType\":\"Parameters\"}".to_vec())),
            "the request body is logged as the client sent it"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_and_missing_rights_are_refused_with_their_error_types_and_not_logged() {
    let mut backbone = Backbone::start(Duration::from_secs(600)).await;
    backbone.start_gateways().await;
    backbone.grant(PATIENTS, DISPENSING, "GET", "/Patient/*");

    let cases: Vec<(String, Vec<(&str, &str)>, &str)> = vec![
        // Not the protocol.
        (
            format!("/r2/{PATIENTS}/Patient/1"),
            HEALTH.to_vec(),
            "Client.BadRequest",
        ),
        // No client header.
        (
            format!("/r1/{PATIENTS}/Patient/1"),
            vec![
                ("X-Backbone-Data-Subject", PERSON),
                ("X-Backbone-Purpose-Of-Use", "TREAT"),
            ],
            "Client.InvalidClientIdentifier",
        ),
        // A client this gateway does not serve: the connection is authenticated only for
        // DISPENSING, so nothing else is looked at (tests/clients.rs tries the rest).
        (
            format!("/r1/{PATIENTS}/Patient/1"),
            vec![
                ("X-Road-Client", "EE/GOV/70000001/ehr"),
                ("X-Backbone-Data-Subject", PERSON),
                ("X-Backbone-Purpose-Of-Use", "TREAT"),
            ],
            "Client.SslAuthenticationFailed",
        ),
        // An unknown service.
        (
            "/r1/EE/GOV/70000001/ehr/unknown/x".to_owned(),
            HEALTH.to_vec(),
            "Client.UnknownService",
        ),
        // Health data without the health context.
        (
            format!("/r1/{PATIENTS}/Patient/1"),
            vec![("X-Road-Client", DISPENSING)],
            "Client.MissingHealthContext",
        ),
        (
            format!("/r1/{PATIENTS}/Patient/1"),
            vec![
                ("X-Road-Client", DISPENSING),
                ("X-Backbone-Data-Subject", PERSON),
            ],
            "Client.MissingHealthContext",
        ),
        // A personal code with a wrong check digit, an unknown purpose.
        (
            format!("/r1/{PATIENTS}/Patient/1"),
            vec![
                ("X-Road-Client", DISPENSING),
                ("X-Backbone-Data-Subject", "EE38001085719"),
                ("X-Backbone-Purpose-Of-Use", "TREAT"),
            ],
            "Client.BadRequest",
        ),
        (
            format!("/r1/{PATIENTS}/Patient/1"),
            vec![
                ("X-Road-Client", DISPENSING),
                ("X-Backbone-Data-Subject", PERSON),
                ("X-Backbone-Purpose-Of-Use", "CURIOSITY"),
            ],
            "Client.BadRequest",
        ),
        // No access right for this path, nor for this service.
        (
            format!("/r1/{PATIENTS}/Observation/1"),
            HEALTH.to_vec(),
            "Server.ServerProxy.AccessDenied",
        ),
        (
            format!("/r1/{PING}"),
            vec![("X-Road-Client", DISPENSING)],
            "Server.ServerProxy.AccessDenied",
        ),
    ];
    for (path, headers, expected) in cases {
        let (status, response_headers, body) = call(&backbone, &path, &headers, None).await;
        assert_eq!(
            error_type(&response_headers, &body),
            expected,
            "{path} {headers:?}: {body}"
        );
        assert!(status == 400 || status == 500, "{status}");
    }
    // A body over the limit.
    let huge = "x".repeat(11 << 20);
    let (status, headers, body) = call(
        &backbone,
        &format!("/r1/{PATIENTS}/Patient/1"),
        &HEALTH,
        Some(&huge),
    )
    .await;
    assert_eq!(
        (status, error_type(&headers, &body).as_str()),
        (413, "Client.RequestTooLarge")
    );

    // Nothing the hospital refused is in its log. The pharmacy's gateway logged each request
    // before it left, the two refused for want of an access right, each with the refusal as
    // its outcome; everything refused before leaving is in neither log.
    assert_eq!(
        backbone.hospital.log.status().records,
        0,
        "nothing refused is logged"
    );
    assert_eq!(backbone.pharmacy.log.status().records, 4);
    let usage = backbone.pharmacy.log.find_usage(PERSON, 0, 10).unwrap();
    assert_eq!(usage.len(), 1, "{usage:?}");
    assert_eq!(
        usage[0].outcome,
        Outcome::Refused {
            fault: "Server.ServerProxy.AccessDenied".into()
        }
    );
    // And the gateways keep serving.
    let (status, _, body) = call(
        &backbone,
        &format!("/r1/{PATIENTS}/Patient/1"),
        &HEALTH,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// Sends a hand-made envelope to the hospital's gateway as the pharmacy's gateway would.
async fn send_envelope(
    backbone: &Backbone,
    peers: &Peers,
    own_certificate: &[u8],
    envelope: Vec<u8>,
) -> (u16, serde_json::Value) {
    let conf = backbone.hospital.conf.current(SystemTime::now()).unwrap();
    let hospital = conf
        .gateways
        .iter()
        .find(|g| g.id.to_string() == backbone.hospital.gateway_id)
        .unwrap();
    let request = hyper::Request::post(format!(
        "https://{}{}",
        hospital.address,
        wire::EXCHANGE_PATH
    ))
    .body(Full::new(Bytes::from(envelope)))
    .unwrap();
    let response = peers
        .send(
            &hospital.address,
            hospital.tls_certificate.as_ref().unwrap().der(),
            own_certificate,
            request,
        )
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

fn descriptor(message_id: &str, body: &[u8]) -> RequestDescriptor {
    RequestDescriptor {
        message_id: message_id.to_owned(),
        client: DISPENSING.to_owned(),
        service: PATIENTS.to_owned(),
        method: "GET".to_owned(),
        path: "/Patient/4711".to_owned(),
        query: None,
        user_id: None,
        issue: None,
        represented_party: None,
        data_subject: Some(PERSON.to_owned()),
        purpose_of_use: Some("TREAT".to_owned()),
        created_at_ms: u64::try_from(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap(),
        body_digest: sha512(body),
        headers: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replays_tampering_and_foreign_certificates_are_refused_by_the_provider_gateway() {
    let mut backbone = Backbone::start(Duration::from_secs(600)).await;
    backbone.start_gateways().await;
    backbone.grant(PATIENTS, DISPENSING, "GET", "/Patient/*");
    let own_certificate = pharmacy_tls_certificate(&backbone);
    let peers = Peers::new(Arc::clone(&backbone.pharmacy.tls));

    // A correctly signed request is served once; the same bytes again are a replay.
    let envelope = signed_by_the_pharmacy(&backbone, &descriptor("replay-1", b"")).await;
    let (status, body) =
        send_envelope(&backbone, &peers, own_certificate.der(), envelope.clone()).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = send_envelope(&backbone, &peers, own_certificate.der(), envelope).await;
    assert_eq!(
        (status, body["type"].as_str().unwrap()),
        (500, "Server.ServerProxy.Replay")
    );

    // A tampered body, descriptor or signature.
    let encoded = descriptor("tamper-1", b"").encode().unwrap();
    let signature = backbone
        .pharmacy
        .signing
        .sign(&encoded)
        .await
        .unwrap()
        .to_bytes();
    let (_, body) = send_envelope(
        &backbone,
        &peers,
        own_certificate.der(),
        wire::encode(&encoded, &signature, b"x").unwrap(),
    )
    .await;
    assert_eq!(
        body["type"], "Server.ServerProxy.InvalidSignatureValue",
        "{body}"
    );
    let mut tampered = encoded.clone();
    let at = tampered.windows(4).position(|w| w == b"4711").unwrap();
    tampered[at] = b'5';
    let (_, body) = send_envelope(
        &backbone,
        &peers,
        own_certificate.der(),
        wire::encode(&tampered, &signature, b"").unwrap(),
    )
    .await;
    assert_eq!(
        body["type"], "Server.ServerProxy.InvalidSignatureValue",
        "{body}"
    );
    let mut bad_signature = signature.clone();
    let last = bad_signature.len() - 1;
    bad_signature[last] ^= 1;
    let (_, body) = send_envelope(
        &backbone,
        &peers,
        own_certificate.der(),
        wire::encode(&encoded, &bad_signature, b"").unwrap(),
    )
    .await;
    assert_eq!(
        body["type"], "Server.ServerProxy.InvalidSignatureValue",
        "{body}"
    );
    // Signed with the right member's TLS key instead of its signing key: not a certified key.
    let other = backbone_hsm::batch::BatchSigner::new(
        Arc::clone(&backbone.pharmacy.tls),
        Default::default(),
    )
    .unwrap();
    let encoded = descriptor("wrong-key-1", b"").encode().unwrap();
    let signature = other.sign(&encoded).await.unwrap().to_bytes();
    let (_, body) = send_envelope(
        &backbone,
        &peers,
        own_certificate.der(),
        wire::encode(&encoded, &signature, b"").unwrap(),
    )
    .await;
    assert_eq!(
        body["type"], "Server.ServerProxy.InvalidSignatureValue",
        "{body}"
    );
    // Garbage is a bad request, and the gateway keeps serving.
    let (status, body) = send_envelope(
        &backbone,
        &peers,
        own_certificate.der(),
        b"BBX1\xff\xff\xff\xff".to_vec(),
    )
    .await;
    assert_eq!(
        (status, body["type"].as_str().unwrap()),
        (500, "Server.ServerProxy.BadRequest")
    );

    // An unregistered certificate (a fresh key, a certificate the registry never issued for a
    // gateway) fails the TLS handshake.
    let stranger = backbone.pharmacy.keys.clone();
    stranger
        .generate("stranger-tls", backbone_hsm::KeyType::EcP256)
        .unwrap();
    let stranger_key = stranger.signer("stranger-tls", None).unwrap();
    let subject = backbone_hsm::cert::Subject {
        common_name: "EE/COM/10000001/gw1".into(),
        ..Default::default()
    };
    let validity = backbone_hsm::cert::Validity {
        not_before: SystemTime::now() - Duration::from_secs(60),
        not_after: SystemTime::now() + Duration::from_secs(3600),
        serial: vec![9],
    };
    let self_signed = backbone_hsm::cert::CertificateAuthority::self_signed(
        stranger_key.as_ref(),
        &subject,
        &validity,
    )
    .unwrap()
    .certificate_der()
    .to_vec();
    let stranger_peers = Peers::new(stranger_key);
    let conf = backbone.pharmacy.conf.current(SystemTime::now()).unwrap();
    let hospital = conf
        .gateways
        .iter()
        .find(|g| g.id.to_string() == backbone.hospital.gateway_id)
        .unwrap();
    let request = hyper::Request::post(format!(
        "https://{}{}",
        hospital.address,
        wire::EXCHANGE_PATH
    ))
    .body(Full::new(Bytes::new()))
    .unwrap();
    let refused = stranger_peers
        .send(
            &hospital.address,
            hospital.tls_certificate.as_ref().unwrap().der(),
            &self_signed,
            request,
        )
        .await;
    assert!(
        refused.is_err(),
        "an unregistered certificate is refused at the handshake"
    );
    // The pharmacy's own key presenting the hospital's certificate fails too.
    let peers = Peers::new(Arc::clone(&backbone.pharmacy.tls));
    let request = hyper::Request::post(format!(
        "https://{}{}",
        hospital.address,
        wire::EXCHANGE_PATH
    ))
    .body(Full::new(Bytes::new()))
    .unwrap();
    let refused = peers
        .send(
            &hospital.address,
            hospital.tls_certificate.as_ref().unwrap().der(),
            hospital.tls_certificate.as_ref().unwrap().der(),
            request,
        )
        .await;
    assert!(
        refused.is_err(),
        "a registered certificate without its key is refused"
    );

    assert_eq!(
        backbone.hospital.log.status().records,
        2,
        "only the one genuine exchange is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_configuration_or_a_revoked_certificate_stops_every_exchange() {
    let mut backbone = Backbone::start(Duration::from_secs(600)).await;
    backbone.start_gateways().await;
    backbone.grant(PING, DISPENSING, "*", "/**");
    let (status, _, _) = call(
        &backbone,
        &format!("/r1/{PING}"),
        &[("X-Road-Client", DISPENSING)],
        None,
    )
    .await;
    assert_eq!(status, 200);

    // The pharmacy revokes... the registry revokes the hospital gateway's TLS certificate; the
    // next configuration no longer pins it and the pharmacy's gateway refuses to connect.
    let conf = backbone.pharmacy.conf.current(SystemTime::now()).unwrap();
    let hospital = conf
        .gateways
        .iter()
        .find(|g| g.id.to_string() == backbone.hospital.gateway_id)
        .unwrap();
    let serial = hospital.tls_certificate.as_ref().unwrap().serial();
    backbone
        .registry
        .revoke(
            "init",
            SystemTime::now(),
            &serial,
            backbone_registry::model::RevocationReason::KeyCompromise,
        )
        .unwrap();
    backbone.publish(Duration::from_secs(600));
    let (_, headers, body) = call(
        &backbone,
        &format!("/r1/{PING}"),
        &[("X-Road-Client", DISPENSING)],
        None,
    )
    .await;
    assert_eq!(
        error_type(&headers, &body),
        "Server.ClientProxy.NetworkError",
        "{body}"
    );

    // A configuration that expires: the client gateway fails closed, and says so on /ready.
    let mut backbone = Backbone::start(Duration::from_secs(2)).await;
    backbone.start_gateways().await;
    backbone.grant(PING, DISPENSING, "*", "/**");
    let client = backbone.pharmacy_client();
    let ready = client.get("/ready").send().await.unwrap();
    assert_eq!(ready.status.as_u16(), 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, headers, body) = call(
        &backbone,
        &format!("/r1/{PING}"),
        &[("X-Road-Client", DISPENSING)],
        None,
    )
    .await;
    assert_eq!(
        (status, error_type(&headers, &body).as_str()),
        (500, "Server.ClientProxy.OutdatedGlobalConf")
    );
    let ready = client.get("/ready").send().await.unwrap();
    assert_eq!(ready.status.as_u16(), 503);
    assert!(ready.text().contains("global configuration"));
    assert_eq!(backbone.pharmacy.log.status().records, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn find_usage_answers_one_persons_accesses_newest_first_with_proofs_and_metadata_services_answer()
 {
    use backbone_gateway::usage::UsageAnswer;
    use backbone_timestamping_verify::imprint::Imprint;
    use backbone_timestamping_verify::signature::Signature;
    use backbone_timestamping_verify::verify::{self, Context, Outcome, Policy};
    use base64::Engine as _;

    let mut backbone = Backbone::start(Duration::from_secs(600)).await;
    backbone.start_gateways().await;
    backbone.grant(PATIENTS, DISPENSING, "GET", "/**");
    let find_usage = "EE/GOV/70000001/ehr/findUsage";

    // Two accesses to one person (one an emergency), one to another person.
    call(
        &backbone,
        &format!("/r1/{PATIENTS}/Patient/1"),
        &HEALTH,
        None,
    )
    .await;
    let emergency = [
        ("X-Road-Client", DISPENSING),
        ("X-Backbone-Data-Subject", PERSON),
        ("X-Backbone-Purpose-Of-Use", "ETREAT"),
        ("X-Road-UserId", "EE47101010033"),
    ];
    call(
        &backbone,
        &format!("/r1/{PATIENTS}/Patient/2"),
        &emergency,
        None,
    )
    .await;
    let other = [
        ("X-Road-Client", DISPENSING),
        ("X-Backbone-Data-Subject", OTHER_PERSON),
        ("X-Backbone-Purpose-Of-Use", "TREAT"),
    ];
    call(
        &backbone,
        &format!("/r1/{PATIENTS}/Patient/3"),
        &other,
        None,
    )
    .await;

    // findUsage needs an access right, like any service, and the health context.
    let asking = [
        ("X-Road-Client", DISPENSING),
        ("X-Backbone-Data-Subject", PERSON),
        ("X-Backbone-Purpose-Of-Use", "PATRQT"),
        ("X-Road-UserId", PERSON),
    ];
    let (_, headers, body) = call(&backbone, &format!("/r1/{find_usage}"), &asking, None).await;
    assert_eq!(
        error_type(&headers, &body),
        "Server.ServerProxy.AccessDenied"
    );
    // It names the person it is for as both the user and the data subject.
    let someone_else = [
        ("X-Road-Client", DISPENSING),
        ("X-Backbone-Data-Subject", PERSON),
        ("X-Backbone-Purpose-Of-Use", "PATRQT"),
        ("X-Road-UserId", OTHER_PERSON),
    ];
    let (_, headers, body) =
        call(&backbone, &format!("/r1/{find_usage}"), &someone_else, None).await;
    assert_eq!(error_type(&headers, &body), "Client.MissingHealthContext");
    let (_, headers, body) =
        call(&backbone, &format!("/r1/{find_usage}"), &asking[..3], None).await;
    assert_eq!(error_type(&headers, &body), "Client.MissingHealthContext");
    let (_, headers, body) = call(
        &backbone,
        &format!("/r1/{find_usage}"),
        &[("X-Road-Client", DISPENSING)],
        None,
    )
    .await;
    assert_eq!(error_type(&headers, &body), "Client.MissingHealthContext");
    backbone.grant(find_usage, DISPENSING, "GET", "/");
    backbone.hospital.log.stamp_now().await.unwrap();

    let (status, _, body) = call(
        &backbone,
        &format!("/r1/{find_usage}?offset=0&limit=10"),
        &asking,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer: UsageAnswer = serde_json::from_value(body).unwrap();
    assert_eq!(answer.data_subject, PERSON);
    // The look-up itself is logged before it is answered, so it is the newest entry, with no
    // outcome yet (it is in flight); the two accesses were answered.
    assert_eq!(answer.entries.len(), 3, "{answer:?}");
    assert_eq!(
        (
            answer.entries[0].service.as_str(),
            &answer.entries[0].outcome
        ),
        (find_usage, &OutcomeJson::Unanswered)
    );
    let (newest, oldest) = (&answer.entries[1], &answer.entries[2]);
    assert_eq!(
        (&newest.outcome, &oldest.outcome),
        (&OutcomeJson::Answered(200), &OutcomeJson::Answered(200))
    );
    assert!(newest.time_ms >= oldest.time_ms);
    assert!(newest.emergency && !oldest.emergency);
    assert_eq!(newest.purpose_of_use.as_deref(), Some("ETREAT"));
    assert_eq!(newest.user_id.as_deref(), Some("EE47101010033"));
    assert_eq!(
        (
            newest.client.as_str(),
            newest.member.as_str(),
            newest.service.as_str()
        ),
        (DISPENSING, "EE/COM/10000001", PATIENTS)
    );
    assert_eq!(newest.side, "provider");

    // Each stamped entry's proof checks offline: record hash → audit path → batch root → KSI
    // signature (the look-up's own record is not stamped yet).
    assert!(answer.entries[0].proof.is_none());
    for entry in &answer.entries[1..] {
        let proof = entry.proof.as_ref().expect("stamped");
        let hex = |s: &str| {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect::<Vec<u8>>()
        };
        let mut node: [u8; 32] = hex(&entry.record.hash).try_into().unwrap();
        let path: Vec<[u8; 32]> = proof
            .path
            .iter()
            .map(|p| hex(p).try_into().unwrap())
            .collect();
        node = backbone_hsm::batch::merkle::root_from_path(
            &backbone_hsm::batch::merkle::leaf_hash(&node),
            proof.leaf_index,
            proof.batch_count,
            &path,
        )
        .unwrap();
        assert_eq!(backbone_gateway::usage::hex(&node), proof.root);
        let signature = Signature::decode(
            &base64::engine::general_purpose::STANDARD
                .decode(&proof.ksi_signature)
                .unwrap(),
        )
        .unwrap();
        let mut imprint = vec![1u8];
        imprint.extend_from_slice(&node);
        let imprint = Imprint::from_bytes(&imprint).unwrap();
        let context = Context {
            document_hash: Some(&imprint),
            ..Context::default()
        };
        assert_eq!(
            verify::verify(&signature, Policy::Internal, &context).outcome,
            Outcome::Ok
        );
    }

    // The question itself is an access to the person's data and is logged as one: it is now the
    // newest entry, so the page after it starts with the emergency access.
    let (_, _, body) = call(
        &backbone,
        &format!("/r1/{find_usage}?offset=0&limit=1"),
        &asking,
        None,
    )
    .await;
    let page: UsageAnswer = serde_json::from_value(body).unwrap();
    assert_eq!(
        (
            page.entries.len(),
            page.entries[0].service.as_str(),
            page.entries[0].purpose_of_use.as_deref()
        ),
        (1, find_usage, Some("PATRQT"))
    );
    let (_, _, body) = call(
        &backbone,
        // This look-up, the one before and the first are the three newest entries.
        &format!("/r1/{find_usage}?offset=3&limit=1"),
        &asking,
        None,
    )
    .await;
    let page: UsageAnswer = serde_json::from_value(body).unwrap();
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].message_id, newest.message_id);
    let asking_other = [
        ("X-Road-Client", DISPENSING),
        ("X-Backbone-Data-Subject", OTHER_PERSON),
        ("X-Backbone-Purpose-Of-Use", "PATRQT"),
        ("X-Road-UserId", OTHER_PERSON),
    ];
    let (_, _, body) = call(&backbone, &format!("/r1/{find_usage}"), &asking_other, None).await;
    let theirs: UsageAnswer = serde_json::from_value(body).unwrap();
    assert!(
        theirs
            .entries
            .iter()
            .all(|e| e.message_id != newest.message_id && e.message_id != oldest.message_id)
    );
    assert_eq!(
        theirs
            .entries
            .iter()
            .filter(|e| e.service == PATIENTS)
            .count(),
        1
    );

    // The metadata services.
    let (status, _, body) = call(&backbone, "/listClients", &[], None).await;
    assert_eq!(status, 200);
    let clients = body["member"].as_array().unwrap();
    assert!(clients.iter().any(
        |c| c["id"]["subsystem_code"] == "dispensing" && c["id"]["object_type"] == "SUBSYSTEM"
    ));
    let (status, _, body) = call(
        &backbone,
        "/r1/EE/GOV/70000001/ehr/listMethods",
        &[("X-Road-Client", DISPENSING)],
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let codes: Vec<&str> = body["service"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service_code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["patients", "ping"]);
    let (_, _, body) = call(
        &backbone,
        "/r1/EE/GOV/70000001/ehr/allowedMethods",
        &[("X-Road-Client", DISPENSING)],
        None,
    )
    .await;
    let codes: Vec<&str> = body["service"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service_code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["patients"], "ping is not granted");
}

/// A dishonest member: its gateway signs with its registered key, so every signature checks,
/// but the signed request breaks the path rule or carries headers only gateways set. Each is
/// refused by the provider gateway, the service is never called and nothing is logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dishonest_peers_signed_request_is_held_to_the_path_and_header_rules() {
    let mut backbone = Backbone::start(Duration::from_secs(600)).await;
    backbone.start_gateways().await;
    backbone.grant(PATIENTS, DISPENSING, "GET", "/Patient/*");
    backbone.grant(PATIENTS, DISPENSING, "GET", "/allowed/**");
    let own_certificate = pharmacy_tls_certificate(&backbone);
    let peers = Peers::new(Arc::clone(&backbone.pharmacy.tls));
    let logged_before = backbone.hospital.log.status().records;

    let mut attacks: Vec<(&str, RequestDescriptor)> = Vec::new();
    // Glued onto the base path's last segment: /fhir + -admin/... = /fhir-admin/...
    let mut glued = descriptor("dishonest-glued", b"");
    glued.path = "-admin/Patient/4711".to_owned();
    attacks.push(("glued", glued));
    for (n, path) in [
        "/allowed/..%2Fsecret",
        "/allowed/%2e%2E%5Csecret",
        "/Patient/./4711",
        "/Patient//4711",
        "/Patient/%50atient",
    ]
    .into_iter()
    .enumerate()
    {
        let mut tricked = descriptor(&format!("dishonest-path-{n}"), b"");
        tricked.path = path.to_owned();
        attacks.push(("path", tricked));
    }
    // Headers the provider gateway sets itself: another client, another person, a forged hash.
    for (n, (name, value)) in [
        ("x-road-client", "EE/GOV/70000001/ehr"),
        ("x-backbone-data-subject", OTHER_PERSON),
        ("x-road-request-hash", "forged"),
        ("host", "fhir-admin.internal"),
        ("transfer-encoding", "chunked"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut injected = descriptor(&format!("dishonest-header-{n}"), b"");
        injected.headers = vec![(name.to_owned(), value.to_owned())];
        attacks.push(("header", injected));
    }
    for (what, attack) in attacks {
        let envelope = signed_by_the_pharmacy(&backbone, &attack).await;
        let (status, body) =
            send_envelope(&backbone, &peers, own_certificate.der(), envelope).await;
        assert_eq!(
            (status, body["type"].as_str().unwrap_or_default()),
            (500, "Server.ServerProxy.BadRequest"),
            "{what} {:?} {:?}: {body}",
            attack.path,
            attack.headers
        );
    }
    assert_eq!(
        backbone.hospital.log.status().records,
        logged_before,
        "a refused request was logged"
    );

    // The same peer, by the rules: served (the normal form of an encoded slash passes).
    let mut honest = descriptor("honest-1", b"");
    honest.path = "/allowed/c%2Fd".to_owned();
    let envelope = signed_by_the_pharmacy(&backbone, &honest).await;
    let (status, body) = send_envelope(&backbone, &peers, own_certificate.der(), envelope).await;
    assert_eq!(status, 200, "{body}");
}

/// The envelope of `descriptor`, without a body, signed with the pharmacy's registered key.
async fn signed_by_the_pharmacy(backbone: &Backbone, descriptor: &RequestDescriptor) -> Vec<u8> {
    let encoded = descriptor.encode().unwrap();
    let signature = backbone
        .pharmacy
        .signing
        .sign(&encoded)
        .await
        .unwrap()
        .to_bytes();
    wire::encode(&encoded, &signature, b"").unwrap()
}

/// The pharmacy gateway's TLS certificate as the global configuration registers it.
fn pharmacy_tls_certificate(backbone: &Backbone) -> backbone_registry::model::Certificate {
    let conf = backbone.pharmacy.conf.current(SystemTime::now()).unwrap();
    conf.gateways
        .iter()
        .find(|g| g.id.to_string() == backbone.pharmacy.gateway_id)
        .unwrap()
        .tls_certificate
        .clone()
        .unwrap()
}
