//! Administration: members, gateways, the CA, revocation, the audit log, concurrency, restart.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use backbone_hsm::Signer;
use backbone_hsm::cert::{Subject, csr_der};
use backbone_registry::anchor::Anchor;
use backbone_registry::client::{ClientConfig, ConfClient};
use backbone_registry::id::{GatewayId, InstanceId, MemberClass, MemberId};
use backbone_registry::model::RevocationReason;
use backbone_registry::store::Store;
use backbone_registry::store::memory::MemoryStore;
use backbone_registry::{Error, Registry};

const VALID: Duration = Duration::from_secs(600);

struct Fixture {
    store: Arc<dyn Store>,
    ca: Arc<dyn Signer>,
    conf_key: Arc<dyn Signer>,
    registry: Registry,
}

fn fixture() -> Fixture {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let ca: Arc<dyn Signer> = Arc::new(common::signer("ca"));
    let conf_key: Arc<dyn Signer> = Arc::new(common::signer("conf"));
    let registry = Registry::create(
        store.clone(),
        InstanceId::new("EE").unwrap(),
        ca.clone(),
        conf_key.clone(),
        "admin",
        common::now(),
    )
    .unwrap();
    let now = common::now();
    registry
        .add_member_class(
            "admin",
            now,
            MemberClass::new("GOV").unwrap(),
            "government agencies",
        )
        .unwrap();
    registry
        .add_member(
            "admin",
            now,
            "EE/GOV/70000001".parse().unwrap(),
            "North hospital",
        )
        .unwrap();
    registry
        .add_subsystem("admin", now, "EE/GOV/70000001/ehr".parse().unwrap())
        .unwrap();
    registry
        .add_gateway(
            "admin",
            now,
            "EE/GOV/70000001/gw1".parse().unwrap(),
            "127.0.0.1:8443",
        )
        .unwrap();
    Fixture {
        store,
        ca,
        conf_key,
        registry,
    }
}

fn csr() -> Vec<u8> {
    csr_der(
        &common::signer("gw"),
        &Subject {
            common_name: "whatever the requester asks".into(),
            ..Subject::default()
        },
    )
    .unwrap()
}

#[test]
fn issued_certificates_have_the_right_profile_and_subject() {
    let f = fixture();
    let gw: GatewayId = "EE/GOV/70000001/gw1".parse().unwrap();
    let tls = f
        .registry
        .issue_tls_certificate("admin", common::now(), &gw, &csr())
        .unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(tls.der()).unwrap();
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(cert.key_usage().unwrap().unwrap().value.digital_signature());
    assert_eq!(
        cert.subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        "gw1"
    );
    assert_eq!(
        cert.issuer(),
        x509_parser::parse_x509_certificate(f.registry.ca_certificate().der())
            .unwrap()
            .1
            .subject()
    );

    let member: MemberId = "EE/GOV/70000001".parse().unwrap();
    let signing = f
        .registry
        .issue_signing_certificate("admin", common::now(), &member, &csr())
        .unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(signing.der()).unwrap();
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && ku.non_repudiation());
    assert_ne!(tls.serial(), signing.serial());
}

#[test]
fn lifecycle_to_a_client_holding_the_configuration_and_a_revocation() {
    let f = fixture();
    let now = common::now();
    let gw: GatewayId = "EE/GOV/70000001/gw1".parse().unwrap();
    let tls = f
        .registry
        .issue_tls_certificate("admin", now, &gw, &csr())
        .unwrap();
    f.registry
        .add_service(
            "admin",
            now,
            "EE/GOV/70000001/ehr/getPatient".parse().unwrap(),
            "patient summary",
            true,
        )
        .unwrap();

    let anchor = Anchor::new(
        f.registry.instance().clone(),
        f.conf_key.algorithm(),
        f.conf_key.public_key().clone(),
        vec!["http://127.0.0.1:1/".into()],
    )
    .unwrap();
    let client = ConfClient::new(anchor, ClientConfig::default());
    client
        .accept(&f.registry.generate(now, VALID).unwrap().encode(), now)
        .unwrap();
    let conf = client.current(now).unwrap();
    assert_eq!(
        conf.gateway(&gw).unwrap().tls_certificate.as_ref(),
        Some(&tls)
    );
    assert!(conf.services[0].personal_health_data);

    f.registry
        .revoke("admin", now, &tls.serial(), RevocationReason::KeyCompromise)
        .unwrap();
    client
        .accept(
            &f.registry
                .generate(now + Duration::from_secs(60), VALID)
                .unwrap()
                .encode(),
            now + Duration::from_secs(60),
        )
        .unwrap();
    let conf = client.current(now + Duration::from_secs(60)).unwrap();
    assert_eq!(conf.version, 2);
    assert!(conf.gateway(&gw).unwrap().tls_certificate.is_none());
    assert!(conf.is_revoked(&tls.serial()));
    assert_eq!(conf.revoked[0].reason, RevocationReason::KeyCompromise);
    // Revoking twice, or an unknown serial, is refused.
    assert!(matches!(
        f.registry
            .revoke("admin", now, &tls.serial(), RevocationReason::Unspecified),
        Err(Error::Duplicate { .. })
    ));
    assert!(matches!(
        f.registry
            .revoke("admin", now, "ffff", RevocationReason::Unspecified),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn reissuing_a_tls_certificate_supersedes_the_old_one() {
    let f = fixture();
    let gw: GatewayId = "EE/GOV/70000001/gw1".parse().unwrap();
    let first = f
        .registry
        .issue_tls_certificate("admin", common::now(), &gw, &csr())
        .unwrap();
    let second = f
        .registry
        .issue_tls_certificate("admin", common::now(), &gw, &csr())
        .unwrap();
    let conf = f
        .registry
        .generate(common::now(), VALID)
        .unwrap()
        .verify(f.conf_key.public_key(), f.registry.instance())
        .unwrap();
    assert_eq!(
        conf.gateway(&gw).unwrap().tls_certificate.as_ref(),
        Some(&second)
    );
    assert!(conf.is_revoked(&first.serial()));
}

#[test]
fn clear_errors_for_duplicates_unknowns_and_bad_input() {
    let f = fixture();
    let now = common::now();
    let err = f
        .registry
        .add_member("admin", now, "EE/GOV/70000001".parse().unwrap(), "again")
        .unwrap_err();
    assert_eq!(err.to_string(), "member EE/GOV/70000001 already exists");
    let err = f
        .registry
        .add_member("admin", now, "EE/COM/1".parse().unwrap(), "x")
        .unwrap_err();
    assert_eq!(err.to_string(), "no member class COM");
    let err = f
        .registry
        .add_member("admin", now, "LV/GOV/1".parse().unwrap(), "x")
        .unwrap_err();
    assert!(err.to_string().contains("not in instance EE"), "{err}");
    let err = f
        .registry
        .add_subsystem("admin", now, "EE/GOV/404/s".parse().unwrap())
        .unwrap_err();
    assert_eq!(err.to_string(), "no member EE/GOV/404");
    let err = f
        .registry
        .add_gateway(
            "admin",
            now,
            "EE/GOV/70000001/gw2".parse().unwrap(),
            "bad address",
        )
        .unwrap_err();
    assert!(err.to_string().contains("whitespace"), "{err}");
    let gw: GatewayId = "EE/GOV/70000001/gw1".parse().unwrap();
    let err = f
        .registry
        .issue_tls_certificate("admin", now, &gw, b"\x30\x03garbage")
        .unwrap_err();
    assert!(matches!(err, Error::Csr(_)), "{err}");
    let mut tampered = csr();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(matches!(
        f.registry
            .issue_tls_certificate("admin", now, &gw, &tampered),
        Err(Error::Csr(_))
    ));
    let err = f
        .registry
        .add_member("admin", now, "EE/GOV/2".parse().unwrap(), &"x".repeat(5000))
        .unwrap_err();
    assert!(err.to_string().contains("over the limit of 1024"), "{err}");
}

#[test]
fn every_admin_action_is_audited() {
    let f = fixture();
    let log = f.registry.audit_log(1, 100).unwrap();
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "create instance EE",
            "add member class GOV",
            "add member EE/GOV/70000001",
            "add subsystem EE/GOV/70000001/ehr",
            "add gateway EE/GOV/70000001/gw1 at 127.0.0.1:8443",
        ]
    );
    assert!(
        log.iter()
            .enumerate()
            .all(|(i, e)| e.seq == i as u64 + 1 && e.actor == "admin")
    );
    // Refused requests leave no entry; generating a configuration is not an admin action.
    let _ = f.registry.add_member(
        "admin",
        common::now(),
        "EE/GOV/70000001".parse().unwrap(),
        "again",
    );
    f.registry.generate(common::now(), VALID).unwrap();
    assert_eq!(f.registry.audit_log(1, 100).unwrap().len(), 5);
}

#[test]
fn concurrent_requests_for_the_same_member_admit_exactly_one() {
    let f = Arc::new(fixture());
    let results: Vec<Result<(), Error>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let f = f.clone();
                s.spawn(move || {
                    f.registry.add_member(
                        &format!("admin{i}"),
                        common::now(),
                        "EE/GOV/555".parse().unwrap(),
                        "Pharmacy",
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(e, Error::Duplicate { .. }))
    );
}

#[test]
fn reopening_keeps_records_and_versions_keep_increasing() {
    let f = fixture();
    let v1 = f
        .registry
        .generate(common::now(), VALID)
        .unwrap()
        .verify(f.conf_key.public_key(), f.registry.instance())
        .unwrap();
    let Fixture {
        store,
        ca,
        conf_key,
        registry,
    } = f;
    drop(registry);
    let reopened = Registry::open(store.clone(), ca.clone(), conf_key.clone()).unwrap();
    let v2 = reopened
        .generate(common::now(), VALID)
        .unwrap()
        .verify(conf_key.public_key(), reopened.instance())
        .unwrap();
    assert_eq!(v2.version, v1.version + 1);
    assert_eq!(v2.members, v1.members);
    assert!(matches!(
        Registry::create(
            store.clone(),
            InstanceId::new("EE").unwrap(),
            ca,
            conf_key.clone(),
            "a",
            common::now()
        ),
        Err(Error::Duplicate { .. })
    ));
    // Another CA key is refused.
    let other: Arc<dyn Signer> = Arc::new(common::signer("other"));
    assert!(matches!(
        Registry::open(store, other, conf_key),
        Err(Error::Refused(_))
    ));
}
