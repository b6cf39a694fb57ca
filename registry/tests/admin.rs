//! The HTTPS admin API: a registered administrator's operations are applied under their name; an
//! unregistered or revoked certificate is refused at the handshake; bad, oversized and duplicate
//! requests get their own error codes; concurrent requests stay consistent.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::SystemTime;

use backbone_hsm::Signer;
use backbone_hsm::cert::{Subject, csr_pem};
use backbone_registry::Registry;
use backbone_registry::admin::AdminServer;
use backbone_registry::admin::client::{AdminClient, ClientError};
use backbone_registry::id::InstanceId;
use backbone_registry::model::RevocationReason;
use backbone_registry::operation::{MAX_OPERATION_LEN, Operation, Outcome};
use backbone_registry::store::rocks::RocksStore;

struct Admin {
    signer: Arc<dyn Signer>,
    certificate: Vec<u8>,
    serial: String,
}

fn registry(dir: &std::path::Path) -> Arc<Registry> {
    let store = Arc::new(RocksStore::open(dir).unwrap());
    let ca: Arc<dyn Signer> = Arc::new(common::signer("ca"));
    let conf: Arc<dyn Signer> = Arc::new(common::signer("conf"));
    Arc::new(
        Registry::create(
            store,
            InstanceId::new("EE").unwrap(),
            ca,
            conf,
            "init",
            SystemTime::now(),
        )
        .unwrap(),
    )
}

fn add_admin(registry: &Registry, name: &str) -> Admin {
    let signer: Arc<dyn Signer> = Arc::new(common::signer(name));
    let csr = csr_pem(
        signer.as_ref(),
        &Subject {
            common_name: name.into(),
            ..Subject::default()
        },
    )
    .unwrap();
    let certificate = registry
        .add_admin("init", SystemTime::now(), name, csr.as_bytes())
        .unwrap();
    Admin {
        signer,
        serial: certificate.serial(),
        certificate: certificate.der().to_vec(),
    }
}

fn client(server: &AdminServer, admin: &Admin) -> AdminClient {
    AdminClient::new(
        server.local_addr(),
        admin.signer.clone(),
        admin.certificate.clone(),
        server.certificate().der().to_vec(),
    )
    .unwrap()
}

fn refused_code(result: Result<Outcome, ClientError>) -> (u16, String) {
    match result {
        Err(ClientError::Refused { status, error }) => (status, error.code),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_audit_refusals_and_revoked_administrators() {
    let dir = tempfile::tempdir().unwrap();
    let registry = registry(dir.path());
    let alice = add_admin(&registry, "alice");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_key: Arc<dyn Signer> = Arc::new(common::signer("admin-tls"));
    let server = AdminServer::spawn(registry.clone(), server_key, listener)
        .await
        .unwrap();
    let api = client(&server, &alice);

    for op in [
        Operation::AddMemberClass {
            code: "GOV".into(),
            description: "government agencies".into(),
        },
        Operation::AddMember {
            id: "EE/GOV/70000001".into(),
            name: "North hospital".into(),
        },
        Operation::AddSubsystem {
            id: "EE/GOV/70000001/ehr".into(),
        },
        Operation::AddGateway {
            id: "EE/GOV/70000001/gw1".into(),
            address: "127.0.0.1:8443".into(),
        },
        Operation::AddService {
            id: "EE/GOV/70000001/ehr/referrals".into(),
            description: "referrals".into(),
            personal_health_data: true,
        },
        Operation::AddGroup {
            id: "EE/hospitals".into(),
            description: "hospitals".into(),
        },
        Operation::AddGroupMember {
            group: "EE/hospitals".into(),
            client: "EE/GOV/70000001/ehr".into(),
        },
    ] {
        assert_eq!(api.apply(&op).await.unwrap(), Outcome::Done, "{op:?}");
    }
    let gateway_key = common::signer("gw1");
    let csr = csr_pem(
        &gateway_key,
        &Subject {
            common_name: "gw1".into(),
            ..Subject::default()
        },
    )
    .unwrap();
    let Outcome::Certificate {
        serial,
        certificate_pem,
    } = api
        .apply(&Operation::IssueTlsCertificate {
            gateway: "EE/GOV/70000001/gw1".into(),
            csr_pem: csr,
        })
        .await
        .unwrap()
    else {
        panic!("no certificate")
    };
    assert!(certificate_pem.starts_with("-----BEGIN CERTIFICATE-----"));

    let conf = api.conf_preview().await.unwrap();
    assert_eq!(conf.services.len(), 1);
    assert!(conf.services[0].personal_health_data);
    assert_eq!(
        conf.gateways[0].tls_certificate.as_ref().unwrap().serial(),
        serial
    );
    assert_eq!(conf.global_groups[0].members.len(), 1);

    // The audit log names the administrator of every change made over the API.
    let audit = api.audit(1, 100).await.unwrap();
    let by_alice: Vec<_> = audit
        .iter()
        .filter(|e| e.actor == "alice")
        .map(|e| e.action.as_str())
        .collect();
    assert_eq!(by_alice.len(), 8, "{audit:?}");
    assert!(by_alice.contains(&"add member EE/GOV/70000001"));

    // Refusals, each with its own code; the server keeps answering.
    let dup = api
        .apply(&Operation::AddMember {
            id: "EE/GOV/70000001".into(),
            name: "again".into(),
        })
        .await;
    assert_eq!(refused_code(dup), (409, "duplicate".into()));
    let invalid = api
        .apply(&Operation::AddMember {
            id: "EE/GOV/70 000".into(),
            name: "x".into(),
        })
        .await;
    assert_eq!(refused_code(invalid), (400, "invalid_id".into()));
    let missing = api
        .apply(&Operation::AddSubsystem {
            id: "EE/GOV/99999999/x".into(),
        })
        .await;
    assert_eq!(refused_code(missing), (404, "not_found".into()));
    let bad_csr = api
        .apply(&Operation::IssueSigningCertificate {
            member: "EE/GOV/70000001".into(),
            csr_pem:
                "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
                    .into(),
        })
        .await;
    let (status, code) = refused_code(bad_csr);
    assert_eq!(status, 400, "{code}");
    let huge = api
        .apply(&Operation::AddMemberClass {
            code: "BIG".into(),
            description: "x".repeat(MAX_OPERATION_LEN),
        })
        .await;
    assert_eq!(refused_code(huge), (413, "too_large".into()));

    // A registered administrator's certificate, but another key: the handshake fails.
    let mallory = Admin {
        signer: Arc::new(common::signer("mallory")),
        certificate: alice.certificate.clone(),
        serial: String::new(),
    };
    assert!(matches!(
        client(&server, &mallory).audit(1, 1).await,
        Err(ClientError::Failed(_))
    ));
    // A certificate from the same CA that is not an administrator's (the gateway's): refused.
    let gateway_cert = x509_parser::pem::parse_x509_pem(certificate_pem.as_bytes())
        .unwrap()
        .1
        .contents;
    let gateway = Admin {
        signer: Arc::new(gateway_key),
        certificate: gateway_cert,
        serial: serial.clone(),
    };
    assert!(matches!(
        client(&server, &gateway).audit(1, 1).await,
        Err(ClientError::Failed(_))
    ));

    // Bob revokes Alice; her next connection is refused.
    let bob = add_admin(&registry, "bob");
    let bob_api = client(&server, &bob);
    bob_api
        .apply(&Operation::Revoke {
            serial: alice.serial.clone(),
            reason: RevocationReason::KeyCompromise,
        })
        .await
        .unwrap();
    assert!(matches!(api.audit(1, 1).await, Err(ClientError::Failed(_))));
    let last = bob_api.audit(1, 1000).await.unwrap().pop().unwrap();
    assert_eq!(
        (
            last.actor.as_str(),
            last.action
                .starts_with(&format!("revoke certificate {}", alice.serial))
        ),
        ("bob", true)
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_one_winner_per_record() {
    let dir = tempfile::tempdir().unwrap();
    let registry = registry(dir.path());
    let admin = add_admin(&registry, "carol");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = AdminServer::spawn(
        registry.clone(),
        Arc::new(common::signer("admin-tls")),
        listener,
    )
    .await
    .unwrap();
    let api = client(&server, &admin);
    api.apply(&Operation::AddMemberClass {
        code: "COM".into(),
        description: "companies".into(),
    })
    .await
    .unwrap();

    let mut tasks = Vec::new();
    for n in 0..24 {
        let api = api.clone();
        // Every fourth request adds the same member: exactly one of those may win.
        let code = if n % 4 == 0 {
            "10000000".to_owned()
        } else {
            format!("2{n:07}")
        };
        tasks.push(tokio::spawn(async move {
            api.apply(&Operation::AddMember {
                id: format!("EE/COM/{code}"),
                name: format!("pharmacy {n}"),
            })
            .await
        }));
    }
    let mut ok = 0;
    let mut duplicates = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(Outcome::Done) => ok += 1,
            Err(ClientError::Refused { status: 409, .. }) => duplicates += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((ok, duplicates), (19, 5));
    assert_eq!(api.conf_preview().await.unwrap().members.len(), 19);
    server.shutdown().await;
}

#[test]
fn near_miss_operations_never_panic_when_decoded_or_applied() {
    let dir = tempfile::tempdir().unwrap();
    let registry = registry(dir.path());
    let seeds = [
        r#"{"op":"add_member_class","code":"GOV","description":"government"}"#,
        r#"{"op":"add_member","id":"EE/GOV/70000001","name":"North hospital"}"#,
        r#"{"op":"add_service","id":"EE/GOV/70000001/ehr/referrals/v1","description":"d","personal_health_data":true}"#,
        r#"{"op":"add_group_member","group":"EE/hospitals","client":"EE/GOV/70000001/ehr"}"#,
        r#"{"op":"revoke","serial":"0a","reason":"key-compromise"}"#,
        r#"{"op":"add_timestamping_service","name":"ts","aggregator_url":"http://a","extender_url":"http://e","publications_url":"http://p","publication_certificate_pem":"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"}"#,
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut applied = 0;
    for seed in seeds {
        let seed = seed.as_bytes();
        let mut variants: Vec<Vec<u8>> = (0..seed.len()).map(|n| seed[..n].to_vec()).collect();
        for _ in 0..300 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut v = seed.to_vec();
            let at = (state as usize) % v.len();
            v[at] = (state >> 32) as u8;
            variants.push(v);
        }
        for bytes in variants {
            backbone_registry::fuzzing::operation(&bytes);
            if let Ok(op) = serde_json::from_slice::<Operation>(&bytes) {
                let _ = op.apply(&registry, "fuzz", SystemTime::now());
                applied += 1;
            }
        }
    }
    assert!(
        applied > 0,
        "some near misses still decode and are applied (or refused) without a panic"
    );
}

#[test]
fn garbage_bodies_are_answered_with_bad_request() {
    // The JSON form refuses unknown operations and fields before anything is applied.
    for body in [
        &b"{}"[..],
        b"not json",
        br#"{"op":"drop_everything"}"#,
        br#"{"op":"add_subsystem","id":"EE/GOV/1/x","extra":1}"#,
    ] {
        assert!(
            serde_json::from_slice::<Operation>(body).is_err(),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_drops_stalled_handshakes_and_makes_floods_wait() {
    use backbone_server::{Limits, probe};
    let dir = tempfile::tempdir().unwrap();
    let registry = registry(dir.path());
    let alice = add_admin(&registry, "alice");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = AdminServer::spawn(
        registry.clone(),
        Arc::new(common::signer("admin-tls")),
        listener,
    )
    .await
    .unwrap();
    // The API's limits are the defaults: 10 s for a handshake, 512 connections.
    let limits = Limits::default();
    probe::check_handshake(server.local_addr(), &limits)
        .await
        .unwrap();
    let api = client(&server, &alice);
    let op = Operation::AddMemberClass {
        code: "GOV".into(),
        description: "government agencies".into(),
    };
    probe::check_flood(server.local_addr(), &limits, || async move {
        api.apply(&op).await.is_ok()
    })
    .await
    .unwrap();
    server.shutdown().await;
}
