//! The global configuration format: canonical encoding, envelope, signature checks.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::time::Duration;

use backbone_hsm::Signer;
use backbone_registry::conf::{self, MAX_CONF_LEN, SignedConf};
use backbone_registry::id::InstanceId;
use backbone_registry::{Error, GlobalConf};

fn ee() -> InstanceId {
    InstanceId::new("EE").unwrap()
}

#[test]
fn signed_conf_round_trips_and_verifies() {
    let ca = common::signer("ca");
    let conf = common::sample_conf(&ca, 3);
    let bytes = SignedConf::sign(&conf, &ca).unwrap().encode();
    let decoded = SignedConf::decode(&bytes).unwrap();
    assert_eq!(decoded.encode(), bytes);
    let verified = decoded.verify(ca.public_key(), &ee()).unwrap();
    assert_eq!(verified, conf);
    assert!(verified.services[0].personal_health_data);
}

#[test]
fn encoding_is_canonical_json_with_sorted_keys() {
    let ca = common::signer("ca");
    let doc = common::sample_conf(&ca, 1).encode().unwrap();
    let text = String::from_utf8(doc.clone()).unwrap();
    assert!(
        text.starts_with("{\"ca_certificate\":\""),
        "{}",
        &text[..40]
    );
    assert!(!text.contains('\n') && !text.contains(": "));
    // Keys of the top-level object, in the order written, are sorted.
    let keys = [
        "ca_certificate",
        "expires_at",
        "format",
        "gateways",
        "generated_at",
        "global_groups",
        "instance",
        "member_classes",
        "members",
        "revoked",
        "services",
        "signing_certificates",
        "subsystems",
        "timestamping_services",
        "version",
    ];
    let positions: Vec<usize> = keys
        .iter()
        .map(|k| text.find(&format!("\"{k}\":")).unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    // Non-ASCII stays raw UTF-8, as the format says.
    assert!(text.contains("Põhja hospital \\\"PERH\\\""));
    assert_eq!(conf::parse_unverified(&doc).unwrap().encode().unwrap(), doc);
}

#[test]
fn non_canonical_documents_are_refused_even_when_signed() {
    let ca = common::signer("ca");
    let doc = common::sample_conf(&ca, 1).encode().unwrap();
    let pretty =
        serde_json::to_vec_pretty(&serde_json::from_slice::<serde_json::Value>(&doc).unwrap())
            .unwrap();
    let err = conf::parse_unverified(&pretty).unwrap_err();
    assert!(err.to_string().contains("canonical"), "{err}");
    let mut trailing = doc.clone();
    trailing.push(b' ');
    assert!(matches!(
        conf::parse_unverified(&trailing),
        Err(Error::Decode { .. })
    ));
    // An unsorted list.
    let mut conf = common::sample_conf(&ca, 1);
    let mut second = conf.members[0].clone();
    second.id = "EE/GOV/10000000".parse().unwrap();
    conf.members.push(second);
    let err = conf::parse_unverified(&conf.encode().unwrap()).unwrap_err();
    assert!(err.to_string().contains("members are not sorted"), "{err}");
    // An unknown field.
    let text = String::from_utf8(doc)
        .unwrap()
        .replacen("{", "{\"aaa\":1,", 1);
    assert!(
        conf::parse_unverified(text.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("unknown field")
    );
}

#[test]
fn invalid_identifiers_in_a_document_are_refused() {
    let ca = common::signer("ca");
    let text = String::from_utf8(common::sample_conf(&ca, 1).encode().unwrap()).unwrap();
    let bad = text.replace("EE/GOV/70000001/ehr\"", "EE/GOV/70000001/e:hr\"");
    let err = conf::parse_unverified(bad.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(err.contains("must not contain ':'"), "{err}");
}

#[test]
fn every_flipped_byte_is_refused() {
    let ca = common::signer("ca");
    let bytes = SignedConf::sign(&common::sample_conf(&ca, 1), &ca)
        .unwrap()
        .encode();
    // Every byte of the header and signature, and a stride through the document.
    let positions = (0..10)
        .chain((10..bytes.len() - 80).step_by(53))
        .chain(bytes.len() - 80..bytes.len());
    for i in positions {
        let mut flipped = bytes.clone();
        flipped[i] ^= 0x01;
        let result = SignedConf::decode(&flipped).and_then(|s| s.verify(ca.public_key(), &ee()));
        assert!(result.is_err(), "byte {i} flipped was accepted");
    }
    // A flipped document byte with a well-formed envelope is a bad signature, not a decode error.
    let mut flipped = bytes.clone();
    flipped[200] ^= 0x01;
    let err = SignedConf::decode(&flipped)
        .unwrap()
        .verify(ca.public_key(), &ee())
        .unwrap_err();
    assert!(matches!(err, Error::BadSignature { .. }), "{err}");
}

#[test]
fn another_key_or_instance_is_refused() {
    let ca = common::signer("ca");
    let other = common::signer("other");
    let signed = SignedConf::sign(&common::sample_conf(&ca, 1), &other).unwrap();
    let err = signed.verify(ca.public_key(), &ee()).unwrap_err();
    assert!(matches!(err, Error::BadSignature { .. }), "{err}");
    assert!(err.to_string().contains(&ca.public_key().fingerprint()));
    let signed = SignedConf::sign(&common::sample_conf(&ca, 1), &ca).unwrap();
    let err = signed
        .verify(ca.public_key(), &InstanceId::new("LV").unwrap())
        .unwrap_err();
    assert!(matches!(err, Error::WrongInstance { .. }), "{err}");
}

#[test]
fn envelope_limits_and_truncation() {
    let ca = common::signer("ca");
    let bytes = SignedConf::sign(&common::sample_conf(&ca, 1), &ca)
        .unwrap()
        .encode();
    for cut in [0, 3, 5, 6, 9, 100, bytes.len() - 1] {
        assert!(
            matches!(SignedConf::decode(&bytes[..cut]), Err(Error::Decode { .. })),
            "cut at {cut}"
        );
    }
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(
        SignedConf::decode(&trailing)
            .unwrap_err()
            .to_string()
            .contains("1 trailing bytes")
    );
    let mut huge = bytes[..6].to_vec();
    huge.extend_from_slice(&u32::try_from(MAX_CONF_LEN + 1).unwrap().to_be_bytes());
    assert!(
        SignedConf::decode(&huge)
            .unwrap_err()
            .to_string()
            .contains("over the limit")
    );
    let mut bad_alg = bytes.clone();
    bad_alg[5] = 0xee;
    assert!(
        SignedConf::decode(&bad_alg)
            .unwrap_err()
            .to_string()
            .contains("algorithm code 238")
    );
}

#[test]
fn expiry_and_clock_skew() {
    let ca = common::signer("ca");
    let conf: GlobalConf = common::sample_conf(&ca, 1);
    let skew = Duration::from_secs(30);
    conf.check_time(common::now(), skew).unwrap();
    let err = conf
        .check_time(common::now() + Duration::from_secs(600), skew)
        .unwrap_err();
    assert!(
        matches!(err, Error::ConfExpired { version: 1, .. }) && err.is_conf_expired(),
        "{err}"
    );
    let err = conf
        .check_time(common::now() - Duration::from_secs(31), skew)
        .unwrap_err();
    assert!(matches!(err, Error::ConfFromFuture { .. }), "{err}");
}
