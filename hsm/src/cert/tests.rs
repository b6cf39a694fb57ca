use std::time::{Duration, SystemTime};

use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509, X509Req, X509StoreContext};

use super::*;
use crate::software::SoftwareKeyStore;
use crate::{KeyStore, KeyType};

fn validity(serial: u8) -> Validity {
    let now = SystemTime::now();
    Validity {
        not_before: now - Duration::from_secs(60),
        not_after: now + Duration::from_secs(3600),
        serial: vec![serial; 16],
    }
}

fn subject(cn: &str) -> Subject {
    Subject {
        common_name: cn.to_owned(),
        organization: Some("Tartu Ülikooli Kliinikum".to_owned()),
        country: Some("EE".to_owned()),
        serial_number: Some("EE/GOV/90001234".to_owned()),
        email: Some("it@kliinikum.example".to_owned()),
        ..Subject::default()
    }
}

#[test]
fn csr_of_every_key_type_verifies_with_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let store = SoftwareKeyStore::open(dir.path()).unwrap();
    for key_type in KeyType::ALL {
        store.generate(key_type.name(), key_type).unwrap();
        let signer = store.signer(key_type.name(), None).unwrap();
        let der = csr_der(signer.as_ref(), &subject("90001234")).unwrap();
        let req = X509Req::from_der(&der).unwrap();
        assert!(
            req.verify(&req.public_key().unwrap()).unwrap(),
            "{key_type}"
        );
        let verified = verify_csr(&der).unwrap();
        assert_eq!(&verified.public_key, signer.public_key());
        assert_eq!(verified.subject, subject("90001234"));
        assert!(
            csr_pem(signer.as_ref(), &subject("x"))
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE REQUEST-----\n")
        );
    }
}

#[test]
fn tampered_csr_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = SoftwareKeyStore::open(dir.path()).unwrap();
    store.generate("k", KeyType::EcP256).unwrap();
    let signer = store.signer("k", None).unwrap();
    let mut der = csr_der(signer.as_ref(), &subject("90001234")).unwrap();
    let i = der.len() / 2;
    der[i] ^= 1;
    assert!(verify_csr(&der).is_err());
    assert!(verify_csr(&[]).is_err());
    assert!(verify_csr(&vec![0x30; MAX_CERT_LEN + 1]).is_err());
}

#[test]
fn ca_issues_certificates_that_openssl_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let store = SoftwareKeyStore::open(dir.path()).unwrap();
    store.generate("ca", KeyType::EcP256).unwrap();
    store.generate("tsa", KeyType::Rsa2048).unwrap();
    let ca_signer = store.signer("ca", None).unwrap();
    let ca = CertificateAuthority::self_signed(
        ca_signer.as_ref(),
        &subject("Backbone CA"),
        &validity(1),
    )
    .unwrap();
    let tsa_signer = store.signer("tsa", None).unwrap();
    let csr = verify_csr(&csr_der(tsa_signer.as_ref(), &subject("tsa")).unwrap()).unwrap();

    let root = X509::from_der(ca.certificate_der()).unwrap();
    for (serial, profile) in [
        (2, Profile::TlsAuth),
        (3, Profile::MemberSigning),
        (4, Profile::TimeStamping),
    ] {
        let der = ca
            .issue(&csr.public_key, &csr.subject, profile, &validity(serial))
            .unwrap();
        let leaf = X509::from_der(&der).unwrap();
        let mut builder = X509StoreBuilder::new().unwrap();
        builder.add_cert(root.clone()).unwrap();
        let store = builder.build();
        let mut ctx = X509StoreContext::new().unwrap();
        let ok = ctx
            .init(&store, &leaf, &Stack::new().unwrap(), |c| c.verify_cert())
            .unwrap();
        assert!(ok, "{profile:?}: {}", ctx.error());
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        let eku = parsed.extended_key_usage().unwrap();
        match profile {
            Profile::TimeStamping => {
                let eku = eku.unwrap();
                assert!(eku.critical && eku.value.time_stamping && !eku.value.server_auth);
            }
            Profile::TlsAuth => assert!(eku.unwrap().value.server_auth),
            _ => assert!(eku.is_none()),
        }
        let ku = parsed.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && !ku.key_cert_sign());
        assert_eq!(profile == Profile::TlsAuth, !ku.non_repudiation());
    }
    // The CA can be re-opened from its certificate, but only with its own key.
    assert!(
        CertificateAuthority::from_certificate(ca_signer.as_ref(), ca.certificate_der()).is_ok()
    );
    assert!(
        CertificateAuthority::from_certificate(tsa_signer.as_ref(), ca.certificate_der()).is_err()
    );
}
