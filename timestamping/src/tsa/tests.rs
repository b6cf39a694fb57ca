use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backbone_hsm::cert::{CertificateAuthority, Profile, Subject, Validity};
use backbone_hsm::software::SoftwareKeyStore;
use backbone_hsm::{KeyStore, KeyType, Signer};

use super::*;

fn authority(profile: Profile) -> Result<Authority, Error> {
    let dir = tempfile::tempdir().unwrap();
    let store = SoftwareKeyStore::open(dir.path()).unwrap();
    store.generate("ca", KeyType::EcP256).unwrap();
    store.generate("tsa", KeyType::EcP256).unwrap();
    let ca = store.signer("ca", None).unwrap();
    let key: Arc<dyn Signer> = store.signer("tsa", None).unwrap();
    let not_before = SystemTime::now() - Duration::from_secs(60);
    let validity = |n: u8| Validity {
        not_before,
        not_after: not_before + Duration::from_secs(3600),
        serial: vec![n],
    };
    let subject = |cn: &str| Subject {
        common_name: cn.into(),
        ..Subject::default()
    };
    let ca = CertificateAuthority::self_signed(ca.as_ref(), &subject("CA"), &validity(1)).unwrap();
    let certificate = ca
        .issue(key.public_key(), &subject("TSA"), profile, &validity(2))
        .unwrap();
    Authority::new(
        CmsSigner::new(key, &certificate, Vec::new()).unwrap(),
        Config::default(),
        Serials::new(1_790_000_000),
    )
}

fn request(nonce: u64) -> Vec<u8> {
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_u8(1);
            w.next().write_sequence(|w| {
                w.next().write_sequence(|w| {
                    w.next()
                        .write_oid(&ObjectIdentifier::from_slice(cms::OID_SHA256))
                });
                w.next().write_bytes(&[7; 32]);
            });
            w.next().write_u64(nonce);
            w.next().write_bool(true);
        });
    })
}

#[test]
fn a_tsa_certificate_needs_the_critical_time_stamping_usage() {
    assert!(matches!(
        authority(Profile::MemberSigning),
        Err(Error::Config { .. })
    ));
    authority(Profile::TimeStamping).unwrap();
}

#[test]
fn tokens_have_increasing_serials_that_read_back_and_openssl_parses_them() {
    let authority = authority(Profile::TimeStamping).unwrap();
    let first = authority.respond(&request(1), 1_790_000_001, 250).unwrap();
    let second = authority.respond(&request(2), 1_790_000_001, 250).unwrap();
    assert_eq!(first.serial, Serial(1_790_000_000u128 << 64));
    assert_eq!(second.serial, Serial((1_790_000_000u128 << 64) | 1));
    assert_eq!(serial_of_token(&first.der).unwrap(), first.serial);
    let reply = granted(&first.der);
    assert_eq!(token_of_reply(&reply).unwrap(), first.der);
    assert_eq!(token_of_reply(&first.der).unwrap(), first.der);
    assert!(token_of_reply(&rejection(FailureInfo::BadAlg, "no")).is_err());
    assert_eq!(
        Serial::from_hex(&format!("0x{}", first.serial)),
        Some(first.serial)
    );
    // OpenSSL reads the token as PKCS#7 with the certificate included (certReq was set).
    let pkcs7 = openssl::pkcs7::Pkcs7::from_der(&first.der).unwrap();
    let signed = pkcs7.signed().unwrap();
    assert_eq!(signed.certificates().map(|c| c.len()), Some(1));
}

#[test]
fn rejections_carry_status_two_and_one_failure_bit() {
    let authority = authority(Profile::TimeStamping).unwrap();
    let reply = authority
        .respond(b"\x30\x03\x02\x01\x02", 1, 0)
        .unwrap_err();
    let (status, bits) = yasna::parse_der(&reply, |r| {
        r.read_sequence(|r| {
            r.next().read_sequence(|r| {
                let status = r.next().read_u8()?;
                r.next().read_sequence(|r| r.next().read_utf8string())?;
                Ok((status, r.next().read_bitvec_bytes()?))
            })
        })
    })
    .unwrap();
    assert_eq!(status, 2);
    assert_eq!(bits, (vec![0x04], 6)); // badDataFormat (bit 5): the request has no imprint.
    assert_eq!(token_hash(b"").len(), 32);
}

#[test]
fn reading_near_misses_of_a_reply_never_panics() {
    let authority = authority(Profile::TimeStamping).unwrap();
    let reply = granted(
        &authority
            .respond(&request(3), 1_790_000_002, 0)
            .unwrap()
            .der,
    );
    fuzzing::timestamp_reply(&reply);
    for len in 0..reply.len() {
        fuzzing::timestamp_reply(&reply[..len]);
    }
    for i in 0..reply.len() {
        let mut flipped = reply.clone();
        flipped[i] ^= 0x80;
        fuzzing::timestamp_reply(&flipped);
        fuzzing::timestamp_req(&flipped);
    }
}
