//! What the registry knows and publishes: member classes, members, subsystems, gateways and their
//! TLS authentication certificates, member signing certificates, the service catalogue, global
//! groups, approved timestamping services and revocations.
//!
//! These are plain values. Struct fields are declared in ascending byte order of their names,
//! because the global configuration's canonical encoding writes them in declaration order (see
//! `docs/global-conf.md`).

use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;
use crate::id::{ClientId, GatewayId, GroupId, MemberClass, MemberId, ServiceId, SubsystemId};

/// Longest free-text field (names, descriptions), in bytes.
pub const MAX_TEXT_LEN: usize = 1024;
/// Longest address or URL, in bytes.
pub const MAX_ADDRESS_LEN: usize = 512;

/// A member class and what it means.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberClassEntry {
    /// The class code.
    pub code: MemberClass,
    /// What the class is for, e.g. "government agencies".
    pub description: String,
}

/// A member: an agency, a hospital, a pharmacy chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Its identifier.
    pub id: MemberId,
    /// Its legal name.
    pub name: String,
}

/// A subsystem of a member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subsystem {
    /// Its identifier.
    pub id: SubsystemId,
}

/// A gateway (security server) with the address peers connect to and the certificate that
/// authenticates it in mutual TLS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    /// `host:port` peers connect to.
    pub address: String,
    /// Its identifier.
    pub id: GatewayId,
    /// Its TLS authentication certificate, issued by the registry CA; absent until issued or
    /// after revocation.
    pub tls_certificate: Option<Certificate>,
}

/// A member's signing certificate, issued by the registry CA.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningCertificate {
    /// The certificate.
    pub certificate: Certificate,
    /// The member whose key it certifies.
    pub member: MemberId,
}

/// An entry of the service catalogue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// What the service does.
    pub description: String,
    /// The provider subsystem, service code and version.
    pub id: ServiceId,
    /// Whether requests and responses carry personal health data: such calls need a data subject
    /// and a purpose of use, and are indexed for the citizen portal.
    pub personal_health_data: bool,
}

/// A global group of members and subsystems, used in access rights.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalGroup {
    /// What the group is for.
    pub description: String,
    /// Its identifier.
    pub id: GroupId,
    /// Its members, sorted.
    pub members: Vec<ClientId>,
}

/// An approved timestamping service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampingService {
    /// Where aggregation requests go.
    pub aggregator_url: String,
    /// Where extension requests go.
    pub extender_url: String,
    /// Its name, unique in the instance.
    pub name: String,
    /// The certificate whose key signs the publications file.
    pub publication_certificate: Certificate,
    /// Where the publications file is.
    pub publications_url: String,
}

/// A certificate the registry revoked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    /// Why.
    pub reason: RevocationReason,
    /// When, unix seconds.
    pub revoked_at: u64,
    /// The certificate's serial number, lower-case hex.
    pub serial: String,
}

/// Why a certificate was revoked (the RFC 5280 §5.3.1 reasons a registry uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RevocationReason {
    /// No reason given.
    Unspecified,
    /// The private key is, or may be, known to someone else.
    KeyCompromise,
    /// The holder changed name or left the member.
    AffiliationChanged,
    /// A new certificate replaces it.
    Superseded,
    /// The gateway or member stopped operating.
    CessationOfOperation,
}

/// A registry administrator: a name for the audit log and the client certificate the HTTPS admin
/// API accepts from them. Kept in the registry's store only; never in the global configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// The administrator's certificate.
    pub certificate: Certificate,
    /// Who, as the audit log names them.
    pub name: String,
}

/// A DER certificate, base64 (standard alphabet, padded) in the configuration.
///
/// Its SHA-256 is computed once, when it is read: gateways name certificates by that hash for
/// every message they check and log.
#[derive(Clone, PartialEq, Eq)]
pub struct Certificate {
    der: Vec<u8>,
    sha256: [u8; 32],
}

// === impl Certificate ===

impl Certificate {
    /// Wraps DER bytes, checking that they parse as an X.509 certificate.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] for bytes over [`backbone_hsm::cert::MAX_CERT_LEN`] or not a certificate.
    pub fn from_der(der: Vec<u8>) -> Result<Self, Error> {
        Self::check(&der)?;
        use sha2::Digest;
        let sha256 = sha2::Sha256::digest(&der).into();
        Ok(Certificate { der, sha256 })
    }

    /// The DER bytes.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// SHA-256 of the DER.
    pub fn sha256(&self) -> &[u8; 32] {
        &self.sha256
    }

    /// SHA-256 of the DER, lower-case hex: how the store finds an administrator by the
    /// certificate presented in a TLS handshake.
    pub fn fingerprint(&self) -> String {
        self.sha256.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The serial number, lower-case hex without leading zero bytes.
    pub fn serial(&self) -> String {
        match x509_parser::parse_x509_certificate(&self.der) {
            Ok((_, cert)) => serial_hex(cert.raw_serial()),
            Err(_) => String::new(), // checked in `from_der`, so never reached
        }
    }

    fn check(der: &[u8]) -> Result<(), Error> {
        let max = backbone_hsm::cert::MAX_CERT_LEN;
        if der.len() > max {
            return Err(Error::decode(
                "certificate",
                format!("{} bytes is over the limit of {max}", der.len()),
            ));
        }
        match x509_parser::parse_x509_certificate(der) {
            Ok(([], _)) => Ok(()),
            Ok((rest, _)) => Err(Error::decode(
                "certificate",
                format!("{} trailing bytes", rest.len()),
            )),
            Err(e) => Err(Error::decode("certificate", e)),
        }
    }
}

/// Lower-case hex of a serial number with its leading zero bytes removed.
pub fn serial_hex(raw: &[u8]) -> String {
    let start = raw
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(raw.len().saturating_sub(1));
    raw.get(start..)
        .unwrap_or_default()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Certificate(serial {}, {} bytes)",
            self.serial(),
            self.der.len()
        )
    }
}

impl Serialize for Certificate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.der))
    }
}

impl<'de> Deserialize<'de> for Certificate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let max_b64 = backbone_hsm::cert::MAX_CERT_LEN.div_ceil(3) * 4;
        if text.len() > max_b64 {
            return Err(serde::de::Error::custom(format!(
                "certificate of {} base64 characters is over the limit",
                text.len()
            )));
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)?;
        Certificate::from_der(der).map_err(serde::de::Error::custom)
    }
}

/// Checks a free-text field: at most [`MAX_TEXT_LEN`] bytes, no control characters.
pub fn check_text(what: &'static str, text: &str) -> Result<(), Error> {
    if text.len() > MAX_TEXT_LEN {
        return Err(Error::Refused(format!(
            "{what} is {} bytes, over the limit of {MAX_TEXT_LEN}",
            text.len()
        )));
    }
    if text.chars().any(char::is_control) {
        return Err(Error::Refused(format!(
            "{what} must not contain control characters"
        )));
    }
    Ok(())
}

/// Checks an address or URL: 1 to [`MAX_ADDRESS_LEN`] bytes, no whitespace or control characters.
pub fn check_address(what: &'static str, text: &str) -> Result<(), Error> {
    if text.is_empty() || text.len() > MAX_ADDRESS_LEN {
        return Err(Error::Refused(format!(
            "{what} must be 1 to {MAX_ADDRESS_LEN} bytes, got {}",
            text.len()
        )));
    }
    if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Error::Refused(format!(
            "{what} must not contain whitespace or control characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_hex_drops_leading_zeros() {
        assert_eq!(serial_hex(&[0, 0x81, 0x02]), "8102");
        assert_eq!(serial_hex(&[0]), "00");
        assert_eq!(serial_hex(&[]), "");
    }

    #[test]
    fn certificates_must_parse() {
        assert!(Certificate::from_der(vec![0x30, 0x03, 0x02, 0x01, 0x01]).is_err());
        assert!(Certificate::from_der(vec![0; backbone_hsm::cert::MAX_CERT_LEN + 1]).is_err());
    }

    #[test]
    fn a_certificate_carries_the_sha256_of_its_der_through_the_configuration() {
        use backbone_hsm::cert::{CertificateAuthority, Subject, Validity};
        use backbone_hsm::{KeyStore, KeyType};
        use sha2::Digest;

        let dir = tempfile::tempdir().unwrap();
        let store = backbone_hsm::software::SoftwareKeyStore::open(dir.path()).unwrap();
        store.generate("ca", KeyType::EcP256).unwrap();
        let signer = store.signer("ca", None).unwrap();
        let now = std::time::SystemTime::now();
        let validity = Validity {
            not_before: now,
            not_after: now + std::time::Duration::from_secs(3600),
            serial: vec![7],
        };
        let subject = Subject {
            common_name: "test CA".into(),
            ..Subject::default()
        };
        let der = CertificateAuthority::self_signed(signer.as_ref(), &subject, &validity)
            .unwrap()
            .certificate_der()
            .to_vec();

        let certificate = Certificate::from_der(der.clone()).unwrap();
        let expected: [u8; 32] = sha2::Sha256::digest(&der).into();
        assert_eq!(certificate.sha256(), &expected);
        assert_eq!(certificate.fingerprint(), fingerprint(&der));
        let read: Certificate =
            serde_json::from_str(&serde_json::to_string(&certificate).unwrap()).unwrap();
        assert_eq!(read.der(), der.as_slice());
        assert_eq!(read.sha256(), &expected);
    }
}

/// SHA-256 of `der`, lower-case hex.
pub fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
