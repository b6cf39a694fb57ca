//! The service end to end: started in-process on 127.0.0.1:0 with a software key and a RocksDB
//! calendar, signing over HTTP (JSON and KSI PDU), signatures checked with the verify crate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backbone_hsm::software::SoftwareKeyStore;
use backbone_hsm::{KeyStore, KeyType, Signer};
use backbone_timestamping::authority::{CalendarSigner, issue_certificates};
use backbone_timestamping::calendar::rocks::RocksStore;
use backbone_timestamping::calendar::{Calendar, CalendarStore};
use backbone_timestamping::http::{self, PduAuth};
use backbone_timestamping::service::{self, Config, Running};
use backbone_timestamping::{client, extender, round};
use backbone_timestamping_verify::imprint::{HashAlgorithm, Imprint};
use backbone_timestamping_verify::pdu::{
    AggregationRequest, AggregatorRequest, AggregatorResponse, ExtendRequest, ExtenderRequest,
    ExtenderResponse, Header,
};
use backbone_timestamping_verify::publication::PublicationData;
use backbone_timestamping_verify::publications_file::CertificateRecord;
use backbone_timestamping_verify::signature::{Anchor, Signature};
use backbone_timestamping_verify::verify::{self, Code, Context, Outcome, Policy};

const PDU_KEY: &[u8] = b"pdu-secret";

struct Fixture {
    addr: SocketAddr,
    running: Running,
    certificate: CertificateRecord,
    _dir: tempfile::TempDir,
}

async fn start(publication_interval: u64) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let keys = SoftwareKeyStore::open(dir.path().join("keys")).unwrap();
    keys.generate("timestamping-ca", KeyType::EcP256).unwrap();
    keys.generate("timestamping", KeyType::EcP256).unwrap();
    let ca: Arc<dyn Signer> = keys.signer("timestamping-ca", None).unwrap();
    let key: Arc<dyn Signer> = keys.signer("timestamping", None).unwrap();
    let not_before = SystemTime::now() - Duration::from_secs(3600);
    let (_, certificate) = issue_certificates(ca.as_ref(), key.as_ref(), not_before, 365).unwrap();
    let signer = CalendarSigner::new(key, &certificate).unwrap();
    let certificate = signer.certificate().clone();
    let store: Box<dyn CalendarStore> =
        Box::new(RocksStore::open(dir.path().join("calendar")).unwrap());
    let calendar = Calendar::open(store).unwrap();
    let config = Config {
        publication_interval,
        ..Config::default()
    };
    let running = service::spawn(calendar, signer, config).unwrap();
    let app = http::router(
        running.handle.clone(),
        PduAuth {
            login_id: "anon".into(),
            key: PDU_KEY.to_vec(),
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Fixture {
        addr,
        running,
        certificate,
        _dir: dir,
    }
}

fn document_hash() -> Imprint {
    HashAlgorithm::Sha256
        .hash(&[b"referral 2026-11-26 patient 4711"])
        .unwrap()
}

async fn sign_over_json(addr: SocketAddr, hash: &Imprint) -> Vec<u8> {
    let imprint = hash.as_bytes().to_vec();
    tokio::task::spawn_blocking(move || client::sign(addr, &imprint, 0))
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_signature_verifies_internally_and_by_key_and_tampering_fails() {
    let fixture = start(3600).await;
    let hash = document_hash();
    let bytes = sign_over_json(fixture.addr, &hash).await;
    let signature = Signature::decode(&bytes).unwrap();
    let certificates = [fixture.certificate.clone()];
    let context = Context {
        document_hash: Some(&hash),
        trusted_certificates: &certificates,
        ..Context::default()
    };

    for policy in [Policy::Internal, Policy::KeyBased] {
        let verdict = verify::verify(&signature, policy, &context);
        assert_eq!(verdict.outcome, Outcome::Ok, "{policy:?}: {verdict}");
    }
    // Without the certificate, key-based verification cannot conclude.
    let bare = Context {
        document_hash: Some(&hash),
        ..Context::default()
    };
    assert_eq!(
        verify::verify(&signature, Policy::KeyBased, &bare).outcome,
        Outcome::Na
    );

    // Another document: GEN-01.
    let other = HashAlgorithm::Sha256.hash(&[b"another document"]).unwrap();
    let wrong = Context {
        document_hash: Some(&other),
        ..context
    };
    assert_eq!(
        verify::verify(&signature, Policy::Internal, &wrong).code,
        Some(Code::Gen01)
    );

    // One flipped byte of the HSM signature over the calendar root: KEY-02.
    let value = &signature
        .calendar_auth_record()
        .unwrap()
        .signature
        .signature_value;
    let at = bytes
        .windows(value.len())
        .position(|w| w == value.as_slice())
        .unwrap();
    let mut tampered = bytes.clone();
    tampered[at + value.len() / 2] ^= 0x01;
    let tampered = Signature::decode(&tampered).unwrap();
    let verdict = verify::verify(&tampered, Policy::KeyBased, &context);
    assert_eq!(
        (verdict.outcome, verdict.code),
        (Outcome::Fail, Some(Code::Key02)),
        "{verdict}"
    );

    // One flipped byte of the calendar chain's input (the round root): the chains disagree.
    let root = signature
        .calendar_chain()
        .unwrap()
        .input_hash
        .as_bytes()
        .to_vec();
    let at = bytes
        .windows(root.len())
        .rposition(|w| w == root.as_slice())
        .unwrap();
    let mut tampered = bytes.clone();
    tampered[at + 5] ^= 0x80;
    let verdict = verify::verify(
        &Signature::decode(&tampered).unwrap(),
        Policy::Internal,
        &context,
    );
    assert_eq!(verdict.outcome, Outcome::Fail, "{verdict}");
    fixture.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ksi_pdu_request_is_answered_with_a_signature_and_bad_mac_is_refused() {
    let fixture = start(3600).await;
    let hash = document_hash();
    let header = Header {
        login_id: "anon".into(),
        instance_id: Some(1),
        message_id: Some(1),
    };
    let request = AggregatorRequest::new(
        header,
        vec![
            AggregationRequest {
                request_id: 7,
                hash: hash.clone(),
                level: None,
            },
            AggregationRequest {
                request_id: 8,
                hash: hash.clone(),
                level: Some(2),
            },
        ],
    );
    let addr = fixture.addr;
    let body = request.encode(PDU_KEY, HashAlgorithm::Sha256).unwrap();
    let answer = tokio::task::spawn_blocking(move || client::call(addr, "POST", "/", &body))
        .await
        .unwrap()
        .unwrap();
    let response = AggregatorResponse::decode(&answer).unwrap();
    response.check_mac(PDU_KEY, HashAlgorithm::Sha256).unwrap();
    for (id, level) in [(7, 0u8), (8, 2)] {
        let payload = response.payload(id).unwrap();
        assert_eq!(payload.status, 0);
        let anchor = Anchor::CalendarAuth(payload.calendar_auth_record.clone().unwrap());
        let signature = Signature::new(
            None,
            payload.aggregation_chains.clone(),
            Some((payload.calendar_chain.clone().unwrap(), anchor)),
        )
        .unwrap();
        let context = Context {
            document_hash: Some(&hash),
            input_level: level,
            ..Context::default()
        };
        let verdict = verify::verify(&signature, Policy::Internal, &context);
        assert_eq!(verdict.outcome, Outcome::Ok, "{verdict}");
    }

    let bad = AggregatorRequest::new(
        Header {
            login_id: "anon".into(),
            instance_id: None,
            message_id: None,
        },
        vec![AggregationRequest {
            request_id: 1,
            hash,
            level: None,
        }],
    )
    .encode(b"wrong key", HashAlgorithm::Sha256)
    .unwrap();
    let refused = tokio::task::spawn_blocking(move || client::call(addr, "POST", "/", &bad))
        .await
        .unwrap();
    assert!(
        matches!(
            refused,
            Err(client::ClientError::Status { status: 401, .. })
        ),
        "{refused:?}"
    );
    let garbage =
        tokio::task::spawn_blocking(move || client::call(addr, "POST", "/", b"\x02\x20\xff"))
            .await
            .unwrap();
    assert!(
        matches!(
            garbage,
            Err(client::ClientError::Status { status: 400, .. })
        ),
        "{garbage:?}"
    );

    // The most requests one PDU may carry are all answered in one PDU; one more is refused up
    // front, before anything is signed.
    let full = |n: u64| {
        let header = Header {
            login_id: "anon".into(),
            instance_id: None,
            message_id: None,
        };
        let requests = (1..=n)
            .map(|id| AggregationRequest {
                request_id: id,
                hash: document_hash(),
                level: None,
            })
            .collect();
        AggregatorRequest::new(header, requests)
            .encode(PDU_KEY, HashAlgorithm::Sha256)
            .unwrap()
    };
    let limit = backbone_timestamping::http::MAX_REQUESTS_PER_PDU as u64;
    let body = full(limit);
    let answer = tokio::task::spawn_blocking(move || client::call(addr, "POST", "/", &body))
        .await
        .unwrap()
        .unwrap();
    let response = AggregatorResponse::decode(&answer).unwrap();
    assert!((1..=limit).all(|id| response.payload(id).is_some_and(|p| p.status == 0)));
    let body = full(limit + 1);
    let over = tokio::task::spawn_blocking(move || client::call(addr, "POST", "/", &body))
        .await
        .unwrap();
    assert!(
        matches!(over, Err(client::ClientError::Status { status: 400, .. })),
        "{over:?}"
    );
    fixture.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_come_at_each_interval_and_signatures_extend_to_them() {
    let fixture = start(2).await;
    let hash = document_hash();
    let bytes = sign_over_json(fixture.addr, &hash).await;
    let signature = Signature::decode(&bytes).unwrap();
    let signed_at = signature.signing_time();
    let handle = fixture.running.handle.clone();
    let addr = fixture.addr;
    let publication = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let latest = tokio::task::spawn_blocking(move || client::latest_publication(addr))
                .await
                .unwrap()
                .unwrap();
            if let Some(p) = latest.filter(|p| p.time >= signed_at) {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(publication.time % 2, 0);
    let published =
        PublicationData::from_publication_string(&publication.publication_string).unwrap();
    assert_eq!(published.time, publication.time);
    let extended = handle.extend(signed_at, Some(published.time)).unwrap();
    let context = Context {
        document_hash: Some(&hash),
        user_publication: Some(&published),
        extending_permitted: true,
        extended_calendar: Some(&extended),
        ..Context::default()
    };
    let verdict = verify::verify(&signature, Policy::UserPublication, &context);
    assert_eq!(verdict.outcome, Outcome::Ok, "{verdict}");
    assert!(round::DEFAULT_MAX_INPUT_LEVEL < 255);
    fixture.running.shutdown().await;
}

/// The extender PDU at POST /extend and POST /: a chain to the head and to a given second that
/// continue the signature's own; KSI statuses for a reversed range, a second not yet in the
/// calendar, one in the future; a wrong MAC refused (401), garbage refused (400).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extender_pdu_extends_and_answers_ksi_statuses() {
    let fixture = start(3600).await;
    let hash = document_hash();
    let signature = Signature::decode(&sign_over_json(fixture.addr, &hash).await).unwrap();
    let signed_at = signature.signing_time();
    let head = fixture.running.handle.head().unwrap();
    let far = service::now() + 100_000;
    let header = Header {
        login_id: "anon".into(),
        instance_id: Some(3),
        message_id: Some(9),
    };
    let payloads = vec![
        ExtendRequest {
            request_id: 1,
            aggregation_time: signed_at,
            publication_time: None,
        },
        ExtendRequest {
            request_id: 2,
            aggregation_time: signed_at,
            publication_time: Some(head),
        },
        ExtendRequest {
            request_id: 3,
            aggregation_time: signed_at,
            publication_time: Some(signed_at - 1),
        },
        ExtendRequest {
            request_id: 4,
            aggregation_time: far,
            publication_time: None,
        },
        ExtendRequest {
            request_id: 5,
            aggregation_time: signed_at,
            publication_time: Some(far),
        },
    ];
    let body = ExtenderRequest::new(header.clone(), payloads)
        .encode(PDU_KEY, HashAlgorithm::Sha256)
        .unwrap();
    let addr = fixture.addr;
    for path in ["/extend", "/"] {
        let body = body.clone();
        let answer = tokio::task::spawn_blocking(move || client::call(addr, "POST", path, &body))
            .await
            .unwrap()
            .unwrap();
        let response = ExtenderResponse::decode(&answer).unwrap();
        response.check_mac(PDU_KEY, HashAlgorithm::Sha256).unwrap();
        assert_eq!(response.header.as_ref().unwrap().message_id, Some(9));
        for id in [1, 2] {
            let payload = response.payload(id).unwrap();
            let chain = payload.chain().unwrap();
            assert!(chain.publication_time >= head);
            assert!(payload.calendar_last.unwrap() >= chain.publication_time);
            let context = Context {
                extending_permitted: true,
                extended_calendar: Some(chain),
                ..Context::default()
            };
            let verdict = verify::verify(&signature, Policy::Calendar, &context);
            assert_eq!(
                verdict.outcome,
                Outcome::Ok,
                "{path} request {id}: {verdict}"
            );
        }
        let status = |id| response.payload(id).unwrap().status;
        assert_eq!(status(3), extender::STATUS_INVALID_TIME_RANGE);
        assert_eq!(status(4), extender::STATUS_REQUEST_TIME_IN_FUTURE);
        assert_eq!(status(5), extender::STATUS_REQUEST_TIME_IN_FUTURE);
        assert!(response.payload(3).unwrap().chain().is_err());
    }
    // The client helper: the chain, or the KSI status as a typed error.
    let (chain, _) = tokio::task::spawn_blocking(move || {
        client::extend_pdu(addr, "anon", PDU_KEY, signed_at, Some(head))
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(chain.publication_time, head);
    let refused = tokio::task::spawn_blocking(move || {
        client::extend_pdu(addr, "anon", PDU_KEY, signed_at, Some(signed_at - 1))
    })
    .await
    .unwrap();
    assert!(
        matches!(
            refused,
            Err(client::ClientError::Refused { status: 0x104, .. })
        ),
        "{refused:?}"
    );
    let wrong_key = tokio::task::spawn_blocking(move || {
        client::extend_pdu(addr, "anon", b"wrong", signed_at, None)
    })
    .await
    .unwrap();
    assert!(
        matches!(
            wrong_key,
            Err(client::ClientError::Refused { status: 0x102, .. })
        ),
        "{wrong_key:?}"
    );

    let bad = ExtenderRequest::new(
        header,
        vec![ExtendRequest {
            request_id: 1,
            aggregation_time: signed_at,
            publication_time: None,
        }],
    )
    .encode(b"wrong key", HashAlgorithm::Sha256)
    .unwrap();
    let refused = tokio::task::spawn_blocking(move || client::call(addr, "POST", "/extend", &bad))
        .await
        .unwrap();
    assert!(
        matches!(
            refused,
            Err(client::ClientError::Status { status: 401, .. })
        ),
        "{refused:?}"
    );
    let garbage =
        tokio::task::spawn_blocking(move || client::call(addr, "POST", "/extend", b"\x03\x20\xff"))
            .await
            .unwrap();
    assert!(
        matches!(
            garbage,
            Err(client::ClientError::Status { status: 400, .. })
        ),
        "{garbage:?}"
    );
    // A configuration request: maximum requests, calendar first and last time.
    let mut config_request = ExtenderRequest::new(
        Header {
            login_id: "anon".into(),
            instance_id: None,
            message_id: None,
        },
        vec![],
    );
    config_request.config = Some(Vec::new());
    let body = config_request
        .encode(PDU_KEY, HashAlgorithm::Sha256)
        .unwrap();
    let answer = tokio::task::spawn_blocking(move || client::call(addr, "POST", "/extend", &body))
        .await
        .unwrap()
        .unwrap();
    let response = ExtenderResponse::decode(&answer).unwrap();
    response.check_mac(PDU_KEY, HashAlgorithm::Sha256).unwrap();
    let config = response.config.unwrap();
    let value = |tag| {
        config
            .iter()
            .find(|t| t.tag == tag)
            .map(|t| t.value.iter().fold(0u64, |n, b| n << 8 | u64::from(*b)))
    };
    assert_eq!(
        value(0x04),
        Some(backbone_timestamping::http::MAX_REQUESTS_PER_PDU as u64)
    );
    assert_eq!(value(0x11), Some(0));
    assert!(value(0x12).unwrap() >= head);
    // The service keeps serving.
    let (chain, _) = tokio::task::spawn_blocking(move || {
        client::extend_pdu(addr, "anon", PDU_KEY, signed_at, None)
    })
    .await
    .unwrap()
    .unwrap();
    assert!(chain.publication_time >= head);
    fixture.running.shutdown().await;
}
