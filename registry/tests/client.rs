//! The configuration client: each refusal has its own error; the cache survives restarts.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::time::Duration;

use backbone_hsm::Signer;
use backbone_registry::anchor::Anchor;
use backbone_registry::client::{Accepted, ClientConfig, ConfClient};
use backbone_registry::id::InstanceId;
use backbone_registry::{Error, SignedConf};

fn anchor(key: &dyn Signer) -> Anchor {
    Anchor::new(
        InstanceId::new("EE").unwrap(),
        key.algorithm(),
        key.public_key().clone(),
        vec!["http://127.0.0.1:1/globalconf".into()],
    )
    .unwrap()
}

fn signed(key: &dyn Signer, ca: &dyn Signer, version: u64) -> Vec<u8> {
    SignedConf::sign(&common::sample_conf(ca, version), key)
        .unwrap()
        .encode()
}

#[test]
fn accepts_newer_versions_and_reports_them() {
    let key = common::signer("conf");
    let client = ConfClient::new(anchor(&key), ClientConfig::default());
    assert!(matches!(
        client.current(common::now()),
        Err(Error::NoConf { .. })
    ));
    let v1 = signed(&key, &key, 1);
    assert_eq!(
        client.accept(&v1, common::now()).unwrap(),
        Accepted::Updated {
            previous: None,
            version: 1
        }
    );
    assert_eq!(
        client.accept(&v1, common::now()).unwrap(),
        Accepted::Unchanged(1)
    );
    let v2 = signed(&key, &key, 2);
    assert_eq!(
        client.accept(&v2, common::now()).unwrap(),
        Accepted::Updated {
            previous: Some(1),
            version: 2
        }
    );
    let conf = client.current(common::now()).unwrap();
    assert_eq!(conf.version, 2);
    assert_eq!(conf.gateways[0].address, "127.0.0.1:8443");
}

#[test]
fn each_bad_configuration_gets_its_own_error() {
    let key = common::signer("conf");
    let other = common::signer("other");
    let client = ConfClient::new(anchor(&key), ClientConfig::default());
    client
        .accept(&signed(&key, &key, 5), common::now())
        .unwrap();

    // A byte flipped inside the document.
    let mut flipped = signed(&key, &key, 6);
    flipped[300] ^= 0x20;
    assert!(matches!(
        client.accept(&flipped, common::now()),
        Err(Error::BadSignature { .. })
    ));
    // Signed by another key.
    assert!(matches!(
        client.accept(&signed(&other, &key, 6), common::now()),
        Err(Error::BadSignature { .. })
    ));
    // Expired.
    let later = common::now() + Duration::from_secs(601);
    let err = client.accept(&signed(&key, &key, 6), later).unwrap_err();
    assert!(
        matches!(err, Error::ConfExpired { version: 6, .. }) && err.is_conf_expired(),
        "{err}"
    );
    // A replayed older version, and another document under the held version number.
    assert!(matches!(
        client.accept(&signed(&key, &key, 4), common::now()),
        Err(Error::Rollback { held: 5, got: 4 })
    ));
    assert!(matches!(
        client.accept(&signed(&key, &key, 5), common::now()),
        Err(Error::Rollback { held: 5, got: 5 })
    ));
    // Nothing refused changed what is held.
    assert_eq!(client.version(), Some(5));
}

#[test]
fn expiry_is_reported_distinctly_so_callers_fail_closed() {
    let key = common::signer("conf");
    let client = ConfClient::new(anchor(&key), ClientConfig::default());
    client
        .accept(&signed(&key, &key, 1), common::now())
        .unwrap();
    assert!(
        client
            .current(common::now() + Duration::from_secs(599))
            .is_ok()
    );
    let err = client
        .current(common::now() + Duration::from_secs(600))
        .unwrap_err();
    assert!(err.is_conf_expired());
    assert!(err.to_string().contains("version 1 expired"), "{err}");
}

#[test]
fn cache_survives_a_restart_and_keeps_rollback_protection() {
    let dir = tempfile::tempdir().unwrap();
    let config = ClientConfig {
        cache_path: Some(dir.path().join("globalconf.bin")),
        ..ClientConfig::default()
    };
    let key = common::signer("conf");
    let client = ConfClient::open(anchor(&key), config.clone()).unwrap();
    assert_eq!(client.version(), None);
    client
        .accept(&signed(&key, &key, 7), common::now())
        .unwrap();
    drop(client);

    let restarted = ConfClient::open(anchor(&key), config.clone()).unwrap();
    assert_eq!(restarted.version(), Some(7));
    assert_eq!(restarted.current(common::now()).unwrap().version, 7);
    assert!(matches!(
        restarted.accept(&signed(&key, &key, 6), common::now()),
        Err(Error::Rollback { held: 7, got: 6 })
    ));
    assert!(!dir.path().join("globalconf.tmp").exists());

    // A cache from another registry key is refused, not trusted.
    let other = common::signer("other");
    assert!(matches!(
        ConfClient::open(anchor(&other), config),
        Err(Error::BadSignature { .. })
    ));
}

#[test]
fn anchor_file_round_trips_and_refuses_garbage() {
    let key = common::signer("conf");
    let a = anchor(&key);
    assert_eq!(Anchor::decode(&a.encode()).unwrap(), a);
    assert!(matches!(Anchor::decode(b"{}"), Err(Error::Decode { .. })));
    let text = String::from_utf8(a.encode()).unwrap();
    assert!(Anchor::decode(text.replace("ecdsa-p256-sha256", "ed25519").as_bytes()).is_err());
    assert!(
        Anchor::decode(
            text.replace(
                "\"urls\":[\"http://127.0.0.1:1/globalconf\"]",
                "\"urls\":[]"
            )
            .as_bytes()
        )
        .is_err()
    );
}
