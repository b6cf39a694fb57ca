//! The aggregator hierarchy in-process: a top aggregator over a RocksDB calendar, a child
//! aggregator under it and a grandchild under the child, each on 127.0.0.1:0. Signatures issued
//! by the lower aggregators verify under the internal and key-based policies, with the parent's
//! extender and against a publication; every layer's client id is in the chain; a parent that
//! is down or does not answer gives the child's clients a KSI upstream status, and the child
//! signs again once the parent is back.
// Test helpers outside #[test] functions: failing loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use backbone_hsm::software::SoftwareKeyStore;
use backbone_hsm::{KeyStore, KeyType, Signer};
use backbone_timestamping::authority::{CalendarSigner, issue_certificates};
use backbone_timestamping::calendar::rocks::RocksStore;
use backbone_timestamping::calendar::{Calendar, CalendarStore};
use backbone_timestamping::child::{self, Parent};
use backbone_timestamping::client;
use backbone_timestamping::http::{self, PduAuth, STATUS_UPSTREAM_ERROR, STATUS_UPSTREAM_TIMEOUT};
use backbone_timestamping::service::{self, Config, Running};
use backbone_timestamping_verify::imprint::{HashAlgorithm, Imprint};
use backbone_timestamping_verify::pdu::{
    AggregationRequest, AggregatorRequest, AggregatorResponse, Header,
};
use backbone_timestamping_verify::publication::PublicationData;
use backbone_timestamping_verify::publications_file::CertificateRecord;
use backbone_timestamping_verify::signature::{Sibling, Signature};
use backbone_timestamping_verify::verify::{self, Context, Outcome, Policy};
use tokio::task::JoinHandle;

/// The top aggregator's only login: the county aggregator below it.
const COUNTY: (&str, &[u8]) = ("county", b"county-secret");
/// The child's login for the grandchild below it.
const WARD: (&str, &[u8]) = ("ward", b"ward-secret");
/// The grandchild's login for its own KSI clients.
const DESK: (&str, &[u8]) = ("desk", b"desk-secret");

struct Top {
    addr: SocketAddr,
    running: Running,
    certificate: CertificateRecord,
    app: Router,
    server: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn top(publication_interval: u64) -> Top {
    let dir = tempfile::tempdir().unwrap();
    let keys = SoftwareKeyStore::open(dir.path().join("keys")).unwrap();
    keys.generate("ca", KeyType::EcP256).unwrap();
    keys.generate("calendar", KeyType::EcP256).unwrap();
    let ca: Arc<dyn Signer> = keys.signer("ca", None).unwrap();
    let key: Arc<dyn Signer> = keys.signer("calendar", None).unwrap();
    let not_before = SystemTime::now() - Duration::from_secs(3600);
    let (_, certificate) = issue_certificates(ca.as_ref(), key.as_ref(), not_before, 365).unwrap();
    let signer = CalendarSigner::new(key, &certificate).unwrap();
    let certificate = signer.certificate().clone();
    let store: Box<dyn CalendarStore> =
        Box::new(RocksStore::open(dir.path().join("calendar")).unwrap());
    let config = Config {
        publication_interval,
        ..Config::default()
    };
    let running = service::spawn(Calendar::open(store).unwrap(), signer, config).unwrap();
    let app = http::router(running.handle.clone(), auth(COUNTY));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = serve(listener, app.clone());
    Top {
        addr,
        running,
        certificate,
        app,
        server,
        _dir: dir,
    }
}

/// A child aggregator under `parent`, logging in there as `login`, serving its own clients as
/// `own`.
async fn child_of(
    parent: SocketAddr,
    login: (&str, &[u8]),
    own: (&str, &[u8]),
    timeout: Duration,
) -> (SocketAddr, child::Running) {
    let mut parent =
        Parent::from_url(&format!("http://{parent}/"), login.0, login.1.to_vec()).unwrap();
    parent.timeout = timeout;
    let config = child::Config {
        round: Duration::from_secs(1),
        limits: Default::default(),
    };
    let running = child::spawn(parent, config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    serve(listener, http::router(running.handle.clone(), auth(own)));
    (addr, running)
}

fn auth((login_id, key): (&str, &[u8])) -> PduAuth {
    PduAuth {
        login_id: login_id.to_owned(),
        key: key.to_vec(),
    }
}

fn serve(listener: tokio::net::TcpListener, app: Router) -> JoinHandle<()> {
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

fn document_hash() -> Imprint {
    HashAlgorithm::Sha256
        .hash(&[b"dispensing record 2026-11-26 patient 4711"])
        .unwrap()
}

/// Signs over a KSI aggregator PDU; returns the signature or the payload's KSI status.
async fn sign_pdu(
    addr: SocketAddr,
    (login, key): (&str, &'static [u8]),
    hash: &Imprint,
) -> Result<Signature, u64> {
    let header = Header {
        login_id: login.into(),
        instance_id: Some(1),
        message_id: Some(1),
    };
    let request = AggregationRequest {
        request_id: 5,
        hash: hash.clone(),
        level: None,
    };
    let answered = tokio::task::spawn_blocking(move || {
        client::aggregate(addr, "/", header, key, request, Duration::from_secs(30))
    })
    .await
    .unwrap();
    match answered {
        Ok(payload) => {
            let anchor = backbone_timestamping_verify::signature::Anchor::CalendarAuth(
                payload.calendar_auth_record.unwrap(),
            );
            Ok(Signature::new(
                None,
                payload.aggregation_chains,
                Some((payload.calendar_chain.unwrap(), anchor)),
            )
            .unwrap())
        }
        Err(client::ClientError::Refused { status, .. }) => Err(status),
        Err(e) => panic!("{e}"),
    }
}

/// The client id in each aggregation chain's metadata, lowest chain first.
fn client_ids(signature: &Signature) -> Vec<String> {
    signature
        .aggregation_chains()
        .iter()
        .map(|c| match &c.links[0].sibling {
            Sibling::Metadata(m) => m.client_id.to_string(),
            other => panic!("first link is not metadata: {other:?}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_and_grandchild_signatures_verify_internally_by_key_and_extended() {
    let top = top(2).await;
    let (child, child_running) =
        child_of(top.addr, COUNTY, WARD, child::DEFAULT_PARENT_TIMEOUT).await;
    let (grandchild, grandchild_running) =
        child_of(child, WARD, DESK, child::DEFAULT_PARENT_TIMEOUT).await;
    let hash = document_hash();
    let certificates = [top.certificate.clone()];
    let context = Context {
        document_hash: Some(&hash),
        trusted_certificates: &certificates,
        ..Context::default()
    };

    // JSON at the child, a KSI PDU at the grandchild, both in flight at once.
    let imprint = hash.as_bytes().to_vec();
    let json = tokio::task::spawn_blocking(move || client::sign(child, &imprint, 0));
    let from_grandchild = sign_pdu(grandchild, DESK, &hash).await.unwrap();
    let from_child = Signature::decode(&json.await.unwrap().unwrap()).unwrap();

    for (signature, ids) in [
        (&from_child, vec!["json", "county"]),
        (&from_grandchild, vec!["desk", "ward", "county"]),
    ] {
        assert_eq!(client_ids(signature), ids);
        let lengths: Vec<usize> = signature
            .aggregation_chains()
            .iter()
            .map(|c| c.chain_index.len())
            .collect();
        assert_eq!(
            lengths,
            (1..=ids.len()).rev().collect::<Vec<_>>(),
            "one chain index entry per aggregator"
        );
        for policy in [Policy::Internal, Policy::KeyBased] {
            let verdict = verify::verify(signature, policy, &context);
            assert_eq!(
                verdict.outcome,
                Outcome::Ok,
                "{ids:?} {policy:?}: {verdict}"
            );
        }
        // The input level a client claims is checked against the lowest chain, not the parent's.
        let claimed = Context {
            input_level: 1,
            ..context
        };
        assert_eq!(
            verify::verify(signature, Policy::Internal, &claimed).outcome,
            Outcome::Fail
        );
    }

    // Extended at the top aggregator's extender: to its head (calendar policy), and to the
    // next publication (user-publication policy).
    let signed_at = from_grandchild.signing_time();
    let addr = top.addr;
    let (head_chain, _) = tokio::task::spawn_blocking(move || {
        client::extend_pdu(addr, COUNTY.0, COUNTY.1, signed_at, None)
    })
    .await
    .unwrap()
    .unwrap();
    let extended = Context {
        extending_permitted: true,
        extended_calendar: Some(&head_chain),
        ..context
    };
    let verdict = verify::verify(&from_grandchild, Policy::Calendar, &extended);
    assert_eq!(verdict.outcome, Outcome::Ok, "{verdict}");
    let latest_signed = from_child.signing_time().max(signed_at);
    let publication = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let latest = tokio::task::spawn_blocking(move || client::latest_publication(addr))
                .await
                .unwrap()
                .unwrap();
            if let Some(p) = latest.filter(|p| p.time >= latest_signed) {
                return PublicationData::from_publication_string(&p.publication_string).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .unwrap();
    let time = publication.time;
    for signature in [&from_child, &from_grandchild] {
        let at = signature.signing_time();
        let (chain, _) = tokio::task::spawn_blocking(move || {
            client::extend_pdu(addr, COUNTY.0, COUNTY.1, at, Some(time))
        })
        .await
        .unwrap()
        .unwrap();
        let published = Context {
            user_publication: Some(&publication),
            extending_permitted: true,
            extended_calendar: Some(&chain),
            ..context
        };
        let verdict = verify::verify(signature, Policy::UserPublication, &published);
        assert_eq!(verdict.outcome, Outcome::Ok, "{verdict}");
    }

    // A child has no calendar: its calendar routes say so.
    let refused = tokio::task::spawn_blocking(move || client::publications(child))
        .await
        .unwrap();
    assert!(
        matches!(
            refused,
            Err(client::ClientError::Status { status: 404, .. })
        ),
        "{refused:?}"
    );
    grandchild_running.shutdown().await;
    child_running.shutdown().await;
    top.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parent_down_or_silent_gives_upstream_statuses_and_the_child_recovers() {
    let top = top(3600).await;
    let (child, child_running) = child_of(top.addr, COUNTY, WARD, Duration::from_secs(2)).await;
    let hash = document_hash();
    let certificates = [top.certificate.clone()];
    let context = Context {
        document_hash: Some(&hash),
        trusted_certificates: &certificates,
        ..Context::default()
    };
    assert!(sign_pdu(child, WARD, &hash).await.is_ok());

    // The parent goes away: connection refused, KSI 0x300 over PDUs, 502 over JSON.
    top.server.abort();
    let _ = top.server.await;
    assert_eq!(
        sign_pdu(child, WARD, &hash).await.unwrap_err(),
        STATUS_UPSTREAM_ERROR
    );
    let imprint = hash.as_bytes().to_vec();
    let json = tokio::task::spawn_blocking(move || client::sign(child, &imprint, 0))
        .await
        .unwrap();
    match json {
        Err(client::ClientError::Status {
            status: 502, body, ..
        }) => assert!(body.contains("parent aggregator"), "{body}"),
        other => panic!("expected 502, got {other:?}"),
    }

    // Something on the parent's port that accepts and never answers: 0x301 after the timeout.
    let silent = std::net::TcpListener::bind(top.addr).unwrap();
    let holder = std::thread::spawn(move || {
        let held = silent.accept();
        std::thread::sleep(Duration::from_secs(3));
        drop((held, silent));
    });
    assert_eq!(
        sign_pdu(child, WARD, &hash).await.unwrap_err(),
        STATUS_UPSTREAM_TIMEOUT
    );
    tokio::task::spawn_blocking(move || holder.join())
        .await
        .unwrap()
        .unwrap();

    // The parent is back on the same address: the child signs again.
    let listener = loop {
        match tokio::net::TcpListener::bind(top.addr).await {
            Ok(listener) => break listener,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    serve(listener, top.app.clone());
    let signature = sign_pdu(child, WARD, &hash).await.unwrap();
    assert_eq!(client_ids(&signature), ["ward", "county"]);
    let verdict = verify::verify(&signature, Policy::KeyBased, &context);
    assert_eq!(verdict.outcome, Outcome::Ok, "{verdict}");
    child_running.shutdown().await;
    top.running.shutdown().await;
}

/// The response PDU the child answers with is sealed under the child's own key, and a PDU with
/// the parent's key is refused by the child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_answers_under_its_own_login() {
    let top = top(3600).await;
    let (child, child_running) =
        child_of(top.addr, COUNTY, WARD, child::DEFAULT_PARENT_TIMEOUT).await;
    let header = Header {
        login_id: COUNTY.0.into(),
        instance_id: None,
        message_id: None,
    };
    let request = AggregatorRequest::new(
        header,
        vec![AggregationRequest {
            request_id: 1,
            hash: document_hash(),
            level: None,
        }],
    );
    let body = request.encode(COUNTY.1, HashAlgorithm::Sha256).unwrap();
    let refused = tokio::task::spawn_blocking(move || client::call(child, "POST", "/", &body))
        .await
        .unwrap();
    assert!(
        matches!(
            refused,
            Err(client::ClientError::Status { status: 401, .. })
        ),
        "{refused:?}"
    );
    let header = Header {
        login_id: WARD.0.into(),
        instance_id: None,
        message_id: None,
    };
    let request = AggregatorRequest::new(
        header,
        vec![AggregationRequest {
            request_id: 1,
            hash: document_hash(),
            level: Some(3),
        }],
    );
    let body = request.encode(WARD.1, HashAlgorithm::Sha256).unwrap();
    let answer = tokio::task::spawn_blocking(move || client::call(child, "POST", "/", &body))
        .await
        .unwrap()
        .unwrap();
    let response = AggregatorResponse::decode(&answer).unwrap();
    response.check_mac(WARD.1, HashAlgorithm::Sha256).unwrap();
    let payload = response.payload(1).unwrap();
    assert_eq!(payload.status, 0);
    let anchor = backbone_timestamping_verify::signature::Anchor::CalendarAuth(
        payload.calendar_auth_record.clone().unwrap(),
    );
    let signature = Signature::new(
        None,
        payload.aggregation_chains.clone(),
        Some((payload.calendar_chain.clone().unwrap(), anchor)),
    )
    .unwrap();
    let hash = document_hash();
    let context = Context {
        document_hash: Some(&hash),
        input_level: 3,
        ..Context::default()
    };
    let verdict = verify::verify(&signature, Policy::Internal, &context);
    assert_eq!(verdict.outcome, Outcome::Ok, "{verdict}");
    child_running.shutdown().await;
    top.running.shutdown().await;
}
