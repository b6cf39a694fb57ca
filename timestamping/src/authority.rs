//! Calendar authentication records: each second's calendar root signed through the HSM, with
//! the certificate that lets a verifier check the signature under the key-based policy.
//!
//! Spec: Guardtime, "KSI Data Formats", "Calendar authentication record" (0x805): the signed
//! bytes are the published data element (0x10, header included); the signature data names the
//! signature algorithm by dotted OID and the certificate by an id.
//!
//! Stage: a root is *signed* when [`CalendarSigner::sign`] returns. Nothing here is stored: a
//! crash after signing loses only the answers not yet sent, whose leaf is already committed.

use std::sync::Arc;
use std::time::SystemTime;

use backbone_hsm::cert::{CertificateAuthority, Profile, Subject, Validity};
use backbone_hsm::{SignatureAlgorithm, Signer};
use backbone_timestamping_verify::imprint::HashAlgorithm;
use backbone_timestamping_verify::publication::PublicationData;
use backbone_timestamping_verify::publications_file::CertificateRecord;
use backbone_timestamping_verify::signature::{CalendarAuthRecord, SignatureData};

use crate::error::Error;

/// Signs calendar roots with one key and names its certificate.
#[derive(Debug, Clone)]
pub struct CalendarSigner {
    signer: Arc<dyn Signer>,
    certificate: CertificateRecord,
    signature_type: &'static str,
}

impl CalendarSigner {
    /// A signer whose certificate is `certificate_der`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if the key's algorithm has no KSI signature type the verifier checks
    /// (ECDSA P-256 and RSA PKCS#1 with SHA-256 do), or the certificate is for another key.
    pub fn new(signer: Arc<dyn Signer>, certificate_der: &[u8]) -> Result<Self, Error> {
        let signature_type = signature_type(signer.algorithm()).ok_or_else(|| Error::Config {
            key: "timestamping key algorithm",
            value: signer.algorithm().to_string(),
            reason: "calendar authentication records need ecdsa-p256-sha256 or rsa-pkcs1-sha256"
                .to_owned(),
        })?;
        let certified = openssl::x509::X509::from_der(certificate_der)
            .and_then(|c| c.public_key())
            .and_then(|k| k.public_key_to_der())
            .map_err(|e| Error::Config {
                key: "timestamping certificate",
                value: format!("{} bytes", certificate_der.len()),
                reason: format!("does not parse: {e}"),
            })?;
        if certified != signer.public_key().spki_der() {
            return Err(Error::Config {
                key: "timestamping certificate",
                value: signer.label().to_owned(),
                reason: "certifies another key than the timestamping key".to_owned(),
            });
        }
        let certificate = CertificateRecord {
            id: certificate_id(certificate_der)?,
            certificate: certificate_der.to_vec(),
        };
        Ok(CalendarSigner {
            signer,
            certificate,
            signature_type,
        })
    }

    /// The certificate, with the id the records carry: what a verifier needs to trust.
    pub fn certificate(&self) -> &CertificateRecord {
        &self.certificate
    }

    /// Signs the calendar root in `publication`.
    ///
    /// # Errors
    ///
    /// [`Error::Hsm`] if the key store cannot sign, [`Error::Ksi`] if encoding fails.
    pub fn sign(&self, publication: PublicationData) -> Result<CalendarAuthRecord, Error> {
        let mut data = SignatureData {
            signature_type: self.signature_type.into(),
            signature_value: Vec::new(),
            certificate_id: self.certificate.id.clone(),
            certificate_repository_uri: None,
            unknown: Vec::new(),
        };
        let unsigned = CalendarAuthRecord::new(publication.clone(), data.clone())?;
        data.signature_value = self
            .signer
            .sign(unsigned.signed_bytes())
            .map_err(|source| Error::Hsm {
                action: "cannot sign the calendar root",
                source,
            })?;
        Ok(CalendarAuthRecord::new(publication, data)?)
    }
}

/// The certificate id: the first four bytes of the certificate's SHA-256, as long as the CRC-32
/// ids of Guardtime's publications file.
///
/// # Errors
///
/// [`Error::Ksi`] if hashing fails.
pub fn certificate_id(certificate_der: &[u8]) -> Result<Vec<u8>, Error> {
    let digest = HashAlgorithm::Sha256.hash(&[certificate_der])?;
    Ok(digest.digest().iter().take(4).copied().collect())
}

/// The dotted OID a calendar authentication record names for `algorithm`, if the KSI verifier
/// knows it.
pub fn signature_type(algorithm: SignatureAlgorithm) -> Option<&'static str> {
    match algorithm {
        SignatureAlgorithm::EcdsaP256Sha256 => Some("1.2.840.10045.4.3.2"),
        SignatureAlgorithm::RsaPkcs1Sha256 => Some("1.2.840.113549.1.1.11"),
        _ => None,
    }
}

/// A self-signed CA certificate for `ca` and a time-stamping certificate it issues for `key`,
/// both DER, valid from `not_before` for `days`.
///
/// # Errors
///
/// [`Error::Hsm`] if either key cannot sign or the validity is refused.
pub fn issue_certificates(
    ca: &dyn Signer,
    key: &dyn Signer,
    not_before: SystemTime,
    days: u64,
) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let hsm = |action| move |source| Error::Hsm { action, source };
    let not_after = not_before + std::time::Duration::from_secs(days.saturating_mul(86_400));
    let serial = |n: u8| -> Vec<u8> {
        let secs = not_before
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut s = secs.to_be_bytes().to_vec();
        s.push(n);
        s
    };
    let ca_validity = Validity {
        not_before,
        not_after,
        serial: serial(1),
    };
    let subject = |cn: &str| Subject {
        common_name: cn.to_owned(),
        organization: Some("Backbone".to_owned()),
        ..Subject::default()
    };
    let authority =
        CertificateAuthority::self_signed(ca, &subject("Backbone timestamping CA"), &ca_validity)
            .map_err(hsm("cannot issue the timestamping CA certificate"))?;
    let validity = Validity {
        not_before,
        not_after,
        serial: serial(2),
    };
    let certificate = authority
        .issue(
            key.public_key(),
            &subject("Backbone calendar"),
            Profile::TimeStamping,
            &validity,
        )
        .map_err(hsm("cannot issue the calendar certificate"))?;
    Ok((authority.certificate_der().to_vec(), certificate))
}

/// A certificate that the CA `ca` (certificate `ca_der`) issues for `key`: the publications
/// file's signer ([`Profile::MemberSigning`] with an e-mail address) or the RFC 3161 TSA
/// ([`Profile::TimeStamping`]). Valid from `not_before` for `days`; the serial number is the
/// start second followed by `serial_tag` (1 and 2 are the CA's and the calendar's).
///
/// # Errors
///
/// [`Error::Hsm`] if the CA certificate is not the CA key's, the CA cannot sign, or the validity
/// is refused.
#[allow(clippy::too_many_arguments)] // Each is one field of the certificate.
pub fn issue_certificate(
    ca: &dyn Signer,
    ca_der: &[u8],
    key: &backbone_hsm::PublicKey,
    subject: &Subject,
    profile: Profile,
    not_before: SystemTime,
    days: u64,
    serial_tag: u8,
) -> Result<Vec<u8>, Error> {
    let hsm = |action| move |source| Error::Hsm { action, source };
    let authority = CertificateAuthority::from_certificate(ca, ca_der)
        .map_err(hsm("cannot use the timestamping CA"))?;
    let secs = not_before
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut serial = secs.to_be_bytes().to_vec();
    serial.push(serial_tag);
    let not_after = not_before + std::time::Duration::from_secs(days.saturating_mul(86_400));
    authority
        .issue(
            key,
            subject,
            profile,
            &Validity {
                not_before,
                not_after,
                serial,
            },
        )
        .map_err(hsm("cannot issue a certificate with the timestamping CA"))
}
