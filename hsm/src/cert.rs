//! PKCS#10 certificate requests (RFC 2986) and X.509 certificates (RFC 5280) signed by a key in any
//! [`KeyStore`](crate::KeyStore), so that a CA key can stay on the token.
//!
//! rcgen writes the DER; it asks our [`Signer`] for the signature through its `SigningKey` trait.
//! rcgen has no RSA-PSS writer, so RSA keys sign certificates and requests with PKCS#1 v1.5: open
//! them with [`SignatureAlgorithm::RsaPkcs1Sha256`] for this.

use std::time::SystemTime;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, CustomExtension,
    DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyUsagePurpose,
    SerialNumber,
};
use rcgen::{PublicKeyData, SigningKey};
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};

use crate::{Error, PublicKey, SignatureAlgorithm, Signer};

/// Largest certificate or request we parse.
pub const MAX_CERT_LEN: usize = 16 * 1024;

/// The subject of a certificate or request. X-Road uses `C`, `O` (member name) and `CN`
/// (member code or server code), with `serialNumber` for the instance and member class.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subject {
    /// `CN`.
    pub common_name: String,
    /// `O`.
    pub organization: Option<String>,
    /// `OU`.
    pub organizational_unit: Option<String>,
    /// `C`, two letters.
    pub country: Option<String>,
    /// `serialNumber` (OID 2.5.4.5).
    pub serial_number: Option<String>,
    /// `emailAddress` (PKCS#9, OID 1.2.840.113549.1.9.1): KSI verifiers require the signer of
    /// a publications file to carry one.
    pub email: Option<String>,
}

/// What a certificate is for; sets its key usage, extended key usage and basic constraints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// A certificate authority that issues end-entity certificates only (path length 0).
    Ca,
    /// A gateway's TLS authentication certificate: digitalSignature; serverAuth and clientAuth.
    TlsAuth,
    /// A member's signing certificate: digitalSignature and nonRepudiation.
    MemberSigning,
    /// A time-stamping authority: digitalSignature and nonRepudiation; a critical extended key
    /// usage of id-kp-timeStamping only, as RFC 3161 §2.3 requires.
    TimeStamping,
}

/// A certificate request whose self-signature has been checked.
#[derive(Clone, Debug)]
pub struct VerifiedCsr {
    /// The key the certificate will certify.
    pub public_key: PublicKey,
    /// The subject the requester asked for (the CA decides what to issue).
    pub subject: Subject,
}

/// A CA: its signer and its own certificate.
#[derive(Debug)]
pub struct CertificateAuthority<'a> {
    signer: &'a dyn Signer,
    certificate: CertificateDer<'static>,
}

/// Validity and serial number of a certificate to issue. Time is passed in: this module never reads
/// the clock.
#[derive(Clone, Debug)]
pub struct Validity {
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// Serial number, unique per issuer: at most 20 bytes, positive (RFC 5280 §4.1.2.2).
    pub serial: Vec<u8>,
}

/// A self-signed certificate (DER) for the key behind `signer`, named `common_name`, valid from
/// five minutes ago for `valid_for`, with a random serial: what an administrator or an
/// information system presents to a gateway that registers certificates by their exact bytes.
pub fn self_signed_certificate(
    signer: &dyn Signer,
    common_name: &str,
    valid_for: std::time::Duration,
) -> Result<Vec<u8>, Error> {
    use ring::rand::SecureRandom as _;
    let mut serial = vec![0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| Error::crypto("a certificate serial", "no randomness"))?;
    if let Some(first) = serial.first_mut() {
        // Positive and of full length (RFC 5280 4.1.2.2).
        *first &= 0x7f;
        *first |= 0x01;
    }
    let now = SystemTime::now();
    let validity = Validity {
        not_before: now - std::time::Duration::from_secs(300),
        not_after: now + valid_for,
        serial,
    };
    let subject = Subject {
        common_name: common_name.to_owned(),
        ..Subject::default()
    };
    Ok(
        CertificateAuthority::self_signed(signer, &subject, &validity)?
            .certificate_der()
            .to_vec(),
    )
}

/// Creates a DER PKCS#10 request for the key behind `signer`.
pub fn csr_der(signer: &dyn Signer, subject: &Subject) -> Result<Vec<u8>, Error> {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(subject);
    let csr = params
        .serialize_request(&RcgenKey::new(signer)?)
        .map_err(|e| rcgen_error("certificate request", e))?;
    Ok(csr.der().to_vec())
}

/// Creates a PEM PKCS#10 request for the key behind `signer`.
pub fn csr_pem(signer: &dyn Signer, subject: &Subject) -> Result<String, Error> {
    Ok(pem("CERTIFICATE REQUEST", &csr_der(signer, subject)?))
}

/// Parses a DER PKCS#10 request and checks its self-signature.
///
/// # Errors
///
/// [`Error::Decode`] for bytes that are not a request, a request whose signature does not verify,
/// or a key type this crate does not handle.
pub fn verify_csr(der: &[u8]) -> Result<VerifiedCsr, Error> {
    if der.len() > MAX_CERT_LEN {
        return Err(Error::decode(
            "certificate request",
            format!("{} bytes is over the limit of {MAX_CERT_LEN}", der.len()),
        ));
    }
    let csr = CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(der))
        .map_err(|e| Error::decode("certificate request", e))?;
    let public_key = PublicKey::from_spki_der(&csr.public_key.subject_public_key_info())?;
    let dn = &csr.params.distinguished_name;
    let text = |ty: DnType| dn.get(&ty).and_then(dn_text);
    let subject = Subject {
        common_name: text(DnType::CommonName).unwrap_or_default(),
        organization: text(DnType::OrganizationName),
        organizational_unit: text(DnType::OrganizationalUnitName),
        country: text(DnType::CountryName),
        serial_number: text(DnType::CustomDnType(SERIAL_NUMBER_OID.to_vec())),
        email: text(DnType::CustomDnType(EMAIL_ADDRESS_OID.to_vec())),
    };
    Ok(VerifiedCsr {
        public_key,
        subject,
    })
}

/// Turns DER into PEM with the given label.
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = openssl::base64::encode_block(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

// === impl CertificateAuthority ===

impl<'a> CertificateAuthority<'a> {
    /// Creates a self-signed root CA certificate for the key behind `signer`.
    pub fn self_signed(
        signer: &'a dyn Signer,
        subject: &Subject,
        validity: &Validity,
    ) -> Result<Self, Error> {
        let params = params(subject, Profile::Ca, validity)?;
        let certificate = params
            .self_signed(&RcgenKey::new(signer)?)
            .map_err(|e| rcgen_error("CA certificate", e))?;
        Ok(CertificateAuthority {
            signer,
            certificate: certificate.der().clone(),
        })
    }

    /// A CA whose certificate already exists (issued earlier, or by another CA).
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] when the certificate does not parse, or its key is not the signer's.
    pub fn from_certificate(signer: &'a dyn Signer, certificate_der: &[u8]) -> Result<Self, Error> {
        let (_, cert) = x509_parser::parse_x509_certificate(certificate_der)
            .map_err(|e| Error::decode("CA certificate", e))?;
        if cert.public_key().raw != signer.public_key().spki_der() {
            return Err(Error::decode(
                "CA certificate",
                "its public key is not the signer's key",
            ));
        }
        Ok(CertificateAuthority {
            signer,
            certificate: CertificateDer::from(certificate_der.to_vec()),
        })
    }

    /// The CA's own certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate
    }

    /// Issues a certificate for `public_key` with `subject` and `profile`, signed by this CA.
    pub fn issue(
        &self,
        public_key: &PublicKey,
        subject: &Subject,
        profile: Profile,
        validity: &Validity,
    ) -> Result<Vec<u8>, Error> {
        let key = RcgenKey::new(self.signer)?;
        let issuer = Issuer::from_ca_cert_der(&self.certificate, key)
            .map_err(|e| rcgen_error("CA certificate", e))?;
        let subject_key = SubjectKey {
            public_key,
            algorithm: public_key.key_type().default_algorithm().rcgen(),
        };
        let params = params(subject, profile, validity)?;
        let certificate = params
            .signed_by(&subject_key, &issuer)
            .map_err(|e| rcgen_error("certificate", e))?;
        Ok(certificate.der().to_vec())
    }
}

/// id-at-serialNumber.
const SERIAL_NUMBER_OID: [u64; 4] = [2, 5, 4, 5];
/// PKCS#9 emailAddress.
const EMAIL_ADDRESS_OID: [u64; 7] = [1, 2, 840, 113549, 1, 9, 1];
/// id-ce-extKeyUsage.
const EXT_KEY_USAGE_OID: [u64; 4] = [2, 5, 29, 37];
/// `SEQUENCE { id-kp-timeStamping (1.3.6.1.5.5.7.3.8) }`: the whole extension value, written by hand
/// because rcgen always marks its extended key usage extension non-critical.
const TIME_STAMPING_EKU: [u8; 12] = [
    0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x08,
];
/// Longest serial number RFC 5280 allows.
const MAX_SERIAL_LEN: usize = 20;

fn params(
    subject: &Subject,
    profile: Profile,
    validity: &Validity,
) -> Result<CertificateParams, Error> {
    if validity.serial.is_empty() || validity.serial.len() > MAX_SERIAL_LEN {
        return Err(Error::Config {
            key: "certificate serial",
            value: format!("{} bytes", validity.serial.len()),
            reason: format!("must be 1 to {MAX_SERIAL_LEN} bytes"),
        });
    }
    if validity.not_after <= validity.not_before {
        return Err(Error::Config {
            key: "certificate validity",
            value: String::new(),
            reason: "not_after must be later than not_before".to_owned(),
        });
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(subject);
    params.not_before = validity.not_before.into();
    params.not_after = validity.not_after.into();
    // A leading zero bit keeps the DER INTEGER positive.
    let mut serial = validity.serial.clone();
    if let Some(first) = serial.first_mut() {
        *first &= 0x7f;
    }
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.use_authority_key_identifier_extension = true;
    match profile {
        Profile::Ca => {
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
        }
        Profile::TlsAuth => {
            params.is_ca = IsCa::ExplicitNoCa;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
        }
        Profile::MemberSigning => {
            params.is_ca = IsCa::ExplicitNoCa;
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::ContentCommitment,
            ];
        }
        Profile::TimeStamping => {
            params.is_ca = IsCa::ExplicitNoCa;
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::ContentCommitment,
            ];
            let mut eku =
                CustomExtension::from_oid_content(&EXT_KEY_USAGE_OID, TIME_STAMPING_EKU.to_vec());
            eku.set_criticality(true);
            params.custom_extensions.push(eku);
        }
    }
    Ok(params)
}

fn distinguished_name(subject: &Subject) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    if let Some(c) = &subject.country {
        dn.push(DnType::CountryName, printable_or_utf8(c));
    }
    if let Some(o) = &subject.organization {
        dn.push(DnType::OrganizationName, o.as_str());
    }
    if let Some(ou) = &subject.organizational_unit {
        dn.push(DnType::OrganizationalUnitName, ou.as_str());
    }
    if let Some(sn) = &subject.serial_number {
        dn.push(
            DnType::CustomDnType(SERIAL_NUMBER_OID.to_vec()),
            printable_or_utf8(sn),
        );
    }
    dn.push(DnType::CommonName, subject.common_name.as_str());
    if let Some(email) = &subject.email {
        // PKCS#9 makes emailAddress an IA5String; anything else is kept as UTF8String.
        let value = match rcgen::string::Ia5String::try_from(email.as_str()) {
            Ok(ia5) => DnValue::Ia5String(ia5),
            Err(_) => DnValue::Utf8String(email.clone()),
        };
        dn.push(DnType::CustomDnType(EMAIL_ADDRESS_OID.to_vec()), value);
    }
    dn
}

/// Country codes and X-Road serial numbers are PrintableString in X.509 practice; a value outside
/// that character set is kept as UTF8String rather than altered.
fn printable_or_utf8(s: &str) -> DnValue {
    match rcgen::string::PrintableString::try_from(s) {
        Ok(p) => DnValue::PrintableString(p),
        Err(_) => DnValue::Utf8String(s.to_owned()),
    }
}

fn dn_text(value: &DnValue) -> Option<String> {
    match value {
        DnValue::Utf8String(s) => Some(s.clone()),
        DnValue::PrintableString(s) => Some(s.as_str().to_owned()),
        DnValue::Ia5String(s) => Some(s.as_str().to_owned()),
        DnValue::TeletexString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn rcgen_error(what: &'static str, e: rcgen::Error) -> Error {
    Error::crypto(what, e)
}

/// Our signer as rcgen's signing key.
struct RcgenKey<'a> {
    signer: &'a dyn Signer,
}

impl<'a> RcgenKey<'a> {
    fn new(signer: &'a dyn Signer) -> Result<Self, Error> {
        if signer.algorithm() == SignatureAlgorithm::RsaPssSha256 {
            return Err(Error::AlgorithmMismatch {
                label: signer.label().to_owned(),
                key_type: signer.public_key().key_type().to_string(),
                algorithm: "rsa-pss-sha256 for certificates (open the key with rsa-pkcs1-sha256)"
                    .to_owned(),
            });
        }
        Ok(RcgenKey { signer })
    }
}

impl PublicKeyData for RcgenKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.signer.public_key().raw()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.signer.algorithm().rcgen()
    }
}

impl SigningKey for RcgenKey<'_> {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.signer.sign(message).map_err(|e| {
            tracing::warn!(label = self.signer.label(), error = %e, "signing a certificate failed");
            rcgen::Error::RemoteKeyError
        })
    }
}

/// A subject's public key as rcgen wants it.
struct SubjectKey<'a> {
    public_key: &'a PublicKey,
    algorithm: &'static rcgen::SignatureAlgorithm,
}

impl PublicKeyData for SubjectKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.public_key.raw()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.algorithm
    }
}

#[cfg(test)]
mod tests;
