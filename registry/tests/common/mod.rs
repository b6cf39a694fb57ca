//! Fixtures shared by the API tests: real software keys, real certificates from a real CA.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime};

use backbone_hsm::cert::{self, CertificateAuthority, Profile, Subject, Validity};
use backbone_hsm::software::{SoftwareSigner, generate_pkcs8};
use backbone_hsm::{KeyType, Signer};
use backbone_registry::GlobalConf;
use backbone_registry::conf::{FORMAT, unix_seconds};
use backbone_registry::id::{InstanceId, MemberClass};
use backbone_registry::model::{
    Certificate, Gateway, Member, MemberClassEntry, Service, Subsystem,
};

/// A fresh EC P-256 software signer.
pub fn signer(label: &str) -> SoftwareSigner {
    SoftwareSigner::from_pkcs8(label, &generate_pkcs8(KeyType::EcP256).unwrap(), None).unwrap()
}

/// A fixed "now" for pure-code tests: 2026-11-26T12:00:00Z.
pub fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_694_400)
}

/// A CA certificate for `ca`.
pub fn ca_certificate(ca: &dyn Signer) -> Vec<u8> {
    let subject = Subject {
        common_name: "EE registry CA".into(),
        ..Subject::default()
    };
    let validity = Validity {
        not_before: now() - Duration::from_secs(3600),
        not_after: now() + Duration::from_secs(365 * 86400),
        serial: vec![1],
    };
    CertificateAuthority::self_signed(ca, &subject, &validity)
        .unwrap()
        .certificate_der()
        .to_vec()
}

/// A TLS authentication certificate issued by `ca` from a real CSR.
pub fn tls_certificate(ca: &dyn Signer, ca_cert: &[u8], serial: u8) -> Vec<u8> {
    let gateway_key = signer("gw");
    let csr = cert::csr_der(
        &gateway_key,
        &Subject {
            common_name: "gw1".into(),
            ..Subject::default()
        },
    )
    .unwrap();
    let verified = cert::verify_csr(&csr).unwrap();
    let authority = CertificateAuthority::from_certificate(ca, ca_cert).unwrap();
    let validity = Validity {
        not_before: now() - Duration::from_secs(60),
        not_after: now() + Duration::from_secs(86400),
        serial: vec![serial],
    };
    authority
        .issue(
            &verified.public_key,
            &verified.subject,
            Profile::TlsAuth,
            &validity,
        )
        .unwrap()
}

/// A small configuration of instance EE: one class, one member, a subsystem, a gateway with a
/// certificate, a health-data service.
pub fn sample_conf(ca: &dyn Signer, version: u64) -> GlobalConf {
    let ca_cert = ca_certificate(ca);
    let mut conf = GlobalConf {
        ca_certificate: Certificate::from_der(ca_cert.clone()).unwrap(),
        expires_at: unix_seconds(now()) + 600,
        format: FORMAT,
        gateways: vec![Gateway {
            address: "127.0.0.1:8443".into(),
            id: "EE/GOV/70000001/gw1".parse().unwrap(),
            tls_certificate: Some(Certificate::from_der(tls_certificate(ca, &ca_cert, 7)).unwrap()),
        }],
        generated_at: unix_seconds(now()),
        global_groups: vec![],
        instance: InstanceId::new("EE").unwrap(),
        member_classes: vec![MemberClassEntry {
            code: MemberClass::new("GOV").unwrap(),
            description: "government".into(),
        }],
        members: vec![Member {
            id: "EE/GOV/70000001".parse().unwrap(),
            name: "Põhja hospital \"PERH\"".into(),
        }],
        revoked: vec![],
        services: vec![Service {
            description: "patient summary".into(),
            id: "EE/GOV/70000001/ehr/getPatient/v1".parse().unwrap(),
            personal_health_data: true,
        }],
        signing_certificates: vec![],
        subsystems: vec![Subsystem {
            id: "EE/GOV/70000001/ehr".parse().unwrap(),
        }],
        timestamping_services: vec![],
        version,
    };
    conf.canonicalize();
    conf
}
