//! The publications file: the calendar's certificates and published roots, signed as a whole.
//!
//! Spec: Guardtime, "KSI Data Formats", section "Publications file" (as implemented by
//! guardtime/goksi `publications/publicationsfile.go`, guardtime/libksi
//! `src/ksi/publicationsfile.c`); the signature is PKCS#7 (RFC 2315) signed data.
//!
//! ```text
//!  "KSIPUBLF"                          8-byte magic
//!  0x701 header: 0x01 version, 0x02 creation time, 0x03 repository URI?       first
//!  0x702 certificate record*: 0x01 certificate id, 0x02 X.509 certificate (DER)
//!  0x703 publication record*: as 0x803 in a signature
//!  0x704 signature: detached PKCS#7 over every byte before this element        last
//! ```
//!
//! [`PublicationsFile::parse_unverified`] only decodes. [`PublicationsFile::verify`] checks the
//! PKCS#7 signature against the caller's trust anchors (partial chains allowed, so an
//! intermediate CA can be the anchor), judged at a time the caller gives, and the signer's
//! e-mail address. Only a [`TrustedPublicationsFile`] is accepted by the verifier.

use openssl::nid::Nid;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::{X509VerifyFlags, X509VerifyParam};
use openssl::x509::{X509, X509PurposeId};

use crate::error::{DecodeError, Error};
use crate::signature::PublicationRecord;
use crate::tlv::{self, Tlv};

/// The magic bytes that start a publications file.
pub const MAGIC: &[u8; 8] = b"KSIPUBLF";
/// The largest publications file accepted. Guardtime's file grows by about 35 KiB a year (one
/// publication a month plus certificates); 16 MiB is centuries of growth.
pub const MAX_FILE_LEN: usize = 16 << 20;
/// The signer e-mail address the KSI SDKs require by default.
pub const DEFAULT_SIGNER_EMAIL: &str = "publications@guardtime.com";

const TAG_HEADER: u16 = 0x701;
const TAG_CERTIFICATE: u16 = 0x702;
const TAG_PUBLICATION: u16 = 0x703;
const TAG_SIGNATURE: u16 = 0x704;

/// A decoded publications file whose signature has not been checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicationsFile {
    /// The file format version.
    pub version: u64,
    /// When the file was created, seconds since 1970.
    pub created: u64,
    /// The canonical place to download the file from.
    pub repository_uri: Option<crate::tlv::KsiString>,
    /// The certificates that sign calendar authentication records.
    pub certificates: Vec<CertificateRecord>,
    /// The publications, oldest first.
    pub publications: Vec<PublicationRecord>,
    signed_len: usize,
    raw: Vec<u8>,
    signature: Vec<u8>,
}

/// A certificate for calendar authentication records, with its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateRecord {
    /// The id the records refer to (a CRC-32 of the certificate, in practice).
    pub id: Vec<u8>,
    /// The DER-encoded X.509 certificate.
    pub certificate: Vec<u8>,
}

/// A publications file whose signature was verified.
#[derive(Clone, Debug)]
pub struct TrustedPublicationsFile {
    file: PublicationsFile,
}

/// Who may sign a publications file.
#[derive(Clone, Debug)]
pub struct TrustAnchors {
    certificates: Vec<X509>,
    signer_email: String,
}

impl TrustAnchors {
    /// Anchors from PEM text (one or more certificates), requiring [`DEFAULT_SIGNER_EMAIL`].
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] if the PEM does not hold certificates.
    pub fn from_pem(pem: &[u8]) -> Result<Self, Error> {
        let certificates =
            X509::stack_from_pem(pem).map_err(Error::crypto("reading trust anchors"))?;
        Ok(TrustAnchors {
            certificates,
            signer_email: DEFAULT_SIGNER_EMAIL.to_owned(),
        })
    }

    /// Adds the certificates in `pem` to the anchors.
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] if the PEM does not hold certificates.
    pub fn add_pem(&mut self, pem: &[u8]) -> Result<(), Error> {
        self.certificates
            .extend(X509::stack_from_pem(pem).map_err(Error::crypto("reading trust anchors"))?);
        Ok(())
    }

    /// Requires the signing certificate to carry this e-mail address instead of the default.
    pub fn with_signer_email(mut self, email: &str) -> Self {
        email.clone_into(&mut self.signer_email);
        self
    }
}

// === impl PublicationsFile ===

impl PublicationsFile {
    /// Decodes a publications file without checking its signature.
    ///
    /// Callers other than [`PublicationsFile::verify`]'s may use the result only to show its
    /// contents, never to verify signatures.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] for a bad magic, a bad element order or a malformed record.
    pub fn parse_unverified(bytes: &[u8]) -> Result<Self, Error> {
        parse(bytes).map_err(Error::decode("publications file"))
    }

    /// Checks the file's PKCS#7 signature against `anchors` as of `at` (seconds since 1970).
    ///
    /// # Errors
    ///
    /// [`Error::PublicationsFile`] if the signature does not verify, the chain does not reach
    /// an anchor valid at `at`, or the signer lacks the required e-mail address.
    pub fn verify(self, anchors: &TrustAnchors, at: i64) -> Result<TrustedPublicationsFile, Error> {
        let untrusted = |why: String| Error::PublicationsFile { at, why };
        let pkcs7 = Pkcs7::from_der(&self.signature)
            .map_err(|e| untrusted(format!("signature is not PKCS#7: {e}")))?;
        let mut param = X509VerifyParam::new().map_err(Error::crypto("verify parameters"))?;
        param
            .set_flags(X509VerifyFlags::PARTIAL_CHAIN)
            .map_err(Error::crypto("verify parameters"))?;
        param
            .set_purpose(X509PurposeId::ANY)
            .map_err(Error::crypto("verify parameters"))?;
        #[allow(clippy::useless_conversion)] // time_t is i64 on most targets, not all.
        let time = at
            .try_into()
            .map_err(|_| untrusted("time out of range".into()))?;
        param.set_time(time);
        let mut store = X509StoreBuilder::new().map_err(Error::crypto("trust store"))?;
        for certificate in &anchors.certificates {
            store
                .add_cert(certificate.clone())
                .map_err(Error::crypto("trust store"))?;
        }
        store
            .set_param(&param)
            .map_err(Error::crypto("trust store"))?;
        let store = store.build();
        let none = Stack::new().map_err(Error::crypto("certificate stack"))?;
        let signed = self
            .raw
            .get(..self.signed_len)
            .ok_or(Error::Unreachable("signed length past the file"))?;
        pkcs7
            .verify(&none, &store, Some(signed), None, Pkcs7Flags::BINARY)
            .map_err(|e| untrusted(format!("PKCS#7 signature does not verify: {e}")))?;
        let signers = pkcs7
            .signers(&none, Pkcs7Flags::empty())
            .map_err(|e| untrusted(format!("no signer: {e}")))?;
        for signer in &signers {
            let emails: Vec<String> = signer
                .subject_name()
                .entries_by_nid(Nid::PKCS9_EMAILADDRESS)
                .filter_map(|e| e.data().to_string().ok())
                .collect();
            if !emails.contains(&anchors.signer_email) {
                return Err(untrusted(format!(
                    "signer e-mail {emails:?} is not {}",
                    anchors.signer_email
                )));
            }
        }
        Ok(TrustedPublicationsFile { file: self })
    }

    /// The first publication strictly after `time`: the one a signature from then extends to.
    pub fn publication_after(&self, time: u64) -> Option<&PublicationRecord> {
        self.publications.iter().find(|p| p.publication.time > time)
    }

    /// The publication at exactly `time`.
    pub fn publication_at(&self, time: u64) -> Option<&PublicationRecord> {
        self.publications
            .iter()
            .find(|p| p.publication.time == time)
    }

    /// The certificate with `id`.
    pub fn certificate(&self, id: &[u8]) -> Option<&CertificateRecord> {
        self.certificates.iter().find(|c| c.id == id)
    }
}

impl TrustedPublicationsFile {
    /// The verified file.
    pub fn file(&self) -> &PublicationsFile {
        &self.file
    }
}

impl std::ops::Deref for TrustedPublicationsFile {
    type Target = PublicationsFile;

    fn deref(&self) -> &PublicationsFile {
        &self.file
    }
}

fn parse(bytes: &[u8]) -> Result<PublicationsFile, DecodeError> {
    if bytes.len() > MAX_FILE_LEN {
        return Err(DecodeError::TooLarge {
            what: "publications file",
            len: bytes.len(),
            max: MAX_FILE_LEN,
        });
    }
    let body = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or(if bytes.len() < MAGIC.len() {
            DecodeError::Truncated {
                needed: MAGIC.len(),
                left: bytes.len(),
            }
        } else {
            DecodeError::BadMagic
        })?;
    const P: u16 = 0x700;
    let (mut header, mut signature, mut signed_len) = (None, None, 0);
    let (mut certificates, mut publications, mut unknown) =
        (Vec::new(), Vec::new(), Vec::<Tlv>::new());
    let mut offset = MAGIC.len();
    for (position, element) in tlv::Reader::new(body).enumerate() {
        let element = element?;
        let tag = element.tag();
        if signature.is_some() {
            return Err(DecodeError::Misplaced {
                parent: P,
                tag: TAG_SIGNATURE,
                place: "last",
            });
        }
        match tag {
            TAG_HEADER if position == 0 => header = Some(decode_header(&element)?),
            _ if position == 0 => {
                return Err(DecodeError::Misplaced {
                    parent: P,
                    tag: TAG_HEADER,
                    place: "first",
                });
            }
            TAG_HEADER => return Err(DecodeError::Duplicate { parent: P, tag }),
            TAG_CERTIFICATE => certificates.push(decode_certificate(&element)?),
            TAG_PUBLICATION => publications.push(PublicationRecord::decode(&element)?),
            TAG_SIGNATURE => {
                signature = Some(element.value().to_vec());
                signed_len = offset;
            }
            _ => tlv::unknown(P, &element, &mut unknown)?,
        }
        offset += element.raw().len();
    }
    let (version, created, repository_uri) = tlv::required(header, P, TAG_HEADER)?;
    Ok(PublicationsFile {
        version,
        created,
        repository_uri,
        certificates,
        publications,
        signed_len,
        raw: bytes.to_vec(),
        signature: tlv::required(signature, P, TAG_SIGNATURE)?,
    })
}

fn decode_header(
    tlv: &tlv::TlvRef<'_>,
) -> Result<(u64, u64, Option<crate::tlv::KsiString>), DecodeError> {
    let (mut version, mut created, mut uri, mut unknown) = (None, None, None, Vec::new());
    for child in tlv.children() {
        let child = child?;
        match child.tag() {
            0x01 => tlv::once(&mut version, TAG_HEADER, 0x01, child.as_u64()?)?,
            0x02 => tlv::once(&mut created, TAG_HEADER, 0x02, child.as_u64()?)?,
            0x03 => tlv::once(&mut uri, TAG_HEADER, 0x03, child.as_string()?)?,
            _ => tlv::unknown(TAG_HEADER, &child, &mut unknown)?,
        }
    }
    Ok((
        tlv::required(version, TAG_HEADER, 0x01)?,
        tlv::required(created, TAG_HEADER, 0x02)?,
        uri,
    ))
}

fn decode_certificate(tlv: &tlv::TlvRef<'_>) -> Result<CertificateRecord, DecodeError> {
    let (mut id, mut certificate, mut unknown) = (None, None, Vec::new());
    for child in tlv.children() {
        let child = child?;
        match child.tag() {
            0x01 => tlv::once(&mut id, TAG_CERTIFICATE, 0x01, child.value().to_vec())?,
            0x02 => tlv::once(
                &mut certificate,
                TAG_CERTIFICATE,
                0x02,
                child.value().to_vec(),
            )?,
            _ => tlv::unknown(TAG_CERTIFICATE, &child, &mut unknown)?,
        }
    }
    Ok(CertificateRecord {
        id: tlv::required(id, TAG_CERTIFICATE, 0x01)?,
        certificate: tlv::required(certificate, TAG_CERTIFICATE, 0x02)?,
    })
}
