//! CMS SignedData (RFC 5652) signed through an hsm [`Signer`]: the RFC 3161 time-stamp token
//! and the PKCS#7 signature of the publications file.
//!
//! ```text
//!  ContentInfo { id-signedData, [0] SignedData {
//!    version 1 (id-data) | 3 (other content), digestAlgorithms { sha256 },
//!    encapContentInfo { eContentType, [0] eContent? },          detached: no eContent
//!    [0] certificates?,
//!    signerInfos { { version 1, issuerAndSerialNumber, sha256,
//!                    [0] signedAttrs { content-type, message-digest, signing-time,
//!                                      signing-certificate-v2 (RFC 5035 ESSCertIDv2)? },
//!                    ecdsa-with-SHA256 | sha256WithRSAEncryption, signature } } } }
//! ```
//!
//! Why the DER is written here, with `yasna`: the key lives behind `Signer` (a PKCS#11 token in
//! production), and neither OpenSSL's `CMS_sign` (it wants the private key as an `EVP_PKEY`, which
//! for a token means an engine or provider we do not load) nor the maintained Rust CMS crates
//! (RustCrypto `cms`, which signs through its own `signature` traits and pulls in `der`, `spki`
//! and `x509-cert` beside the stack we already carry) sign through an external signer without new
//! dependencies. The structure is small and fixed: one signer, SHA-256, signed attributes.
//! OpenSSL verifies what is written here in this module's tests (`openssl::cms`,
//! `openssl::pkcs7`) and, in the crate's tests, with the `openssl` command.
//!
//! With content type id-data and an issuer-and-serial signer identifier, the output is also a
//! valid PKCS#7 (RFC 2315) SignedData, which is what the publications file needs.

use std::sync::Arc;

use backbone_hsm::{SignatureAlgorithm, Signer};
use openssl::sha::sha256;
use yasna::models::ObjectIdentifier;
use yasna::{DERWriter, Tag};

use crate::error::Error;

/// id-data (RFC 5652 §4).
pub const OID_DATA: &[u64] = &[1, 2, 840, 113549, 1, 7, 1];
/// id-signedData (RFC 5652 §5.1).
pub const OID_SIGNED_DATA: &[u64] = &[1, 2, 840, 113549, 1, 7, 2];
/// id-ct-TSTInfo (RFC 3161 §2.4.2).
pub const OID_TST_INFO: &[u64] = &[1, 2, 840, 113549, 1, 9, 16, 1, 4];
/// id-contentType (RFC 5652 §11.1).
pub const OID_CONTENT_TYPE: &[u64] = &[1, 2, 840, 113549, 1, 9, 3];
/// id-messageDigest (RFC 5652 §11.2).
pub const OID_MESSAGE_DIGEST: &[u64] = &[1, 2, 840, 113549, 1, 9, 4];
/// id-signingTime (RFC 5652 §11.3).
pub const OID_SIGNING_TIME: &[u64] = &[1, 2, 840, 113549, 1, 9, 5];
/// id-aa-signingCertificateV2 (RFC 5035 §3).
pub const OID_SIGNING_CERTIFICATE_V2: &[u64] = &[1, 2, 840, 113549, 1, 9, 16, 2, 47];
/// id-sha256 (RFC 5754 §2.2).
pub const OID_SHA256: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 2, 1];
/// ecdsa-with-SHA256 (RFC 5754 §3.3).
pub const OID_ECDSA_SHA256: &[u64] = &[1, 2, 840, 10045, 4, 3, 2];
/// sha256WithRSAEncryption (RFC 5754 §3.2).
pub const OID_RSA_SHA256: &[u64] = &[1, 2, 840, 113549, 1, 1, 11];

/// What to sign: the content type, and the content's bytes.
#[derive(Clone, Copy, Debug)]
pub struct Content<'a> {
    /// The eContentType, e.g. [`OID_DATA`] or [`OID_TST_INFO`].
    pub content_type: &'a [u64],
    /// The content (for a detached signature, what the verifier will be given).
    pub bytes: &'a [u8],
    /// Leave the content out of the SignedData (a detached signature).
    pub detached: bool,
}

/// Which optional parts a SignedData carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Include the signer's certificate (and the chain given to [`CmsSigner::new`]).
    pub include_certificates: bool,
    /// The signing-time attribute, seconds since 1970; none when `None`.
    pub signing_time: Option<u64>,
    /// The signing-certificate-v2 attribute (ESSCertIDv2 with SHA-256), which RFC 3161 (as
    /// updated by RFC 5816) requires of time-stamp tokens.
    pub signing_certificate_v2: bool,
}

/// Signs CMS SignedData with one key and its certificate.
#[derive(Clone, Debug)]
pub struct CmsSigner {
    signer: Arc<dyn Signer>,
    certificate: Vec<u8>,
    chain: Vec<Vec<u8>>,
    /// DER of the certificate's issuer Name.
    issuer: Vec<u8>,
    /// DER of the certificate's serialNumber INTEGER.
    serial: Vec<u8>,
    /// SHA-256 of the certificate: the ESSCertIDv2 certHash.
    certificate_hash: [u8; 32],
    signature_algorithm: &'static [u64],
}

// === impl CmsSigner ===

impl CmsSigner {
    /// A signer for `signer`'s key, certified by `certificate_der`; `chain` are further
    /// certificates (DER) to include when certificates are asked for.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if the certificate does not parse or certifies another key, or the key
    /// signs with neither ECDSA P-256 nor RSA PKCS#1 v1.5 (both with SHA-256).
    pub fn new(
        signer: Arc<dyn Signer>,
        certificate_der: &[u8],
        chain: Vec<Vec<u8>>,
    ) -> Result<Self, Error> {
        let config = |reason: String| Error::Config {
            key: "CMS signing certificate",
            value: signer.label().to_owned(),
            reason,
        };
        let signature_algorithm = match signer.algorithm() {
            SignatureAlgorithm::EcdsaP256Sha256 => OID_ECDSA_SHA256,
            SignatureAlgorithm::RsaPkcs1Sha256 => OID_RSA_SHA256,
            other => {
                return Err(config(format!(
                    "key signs with {other}; CMS here needs ecdsa-p256-sha256 or rsa-pkcs1-sha256"
                )));
            }
        };
        let (rest, parsed) = x509_parser::parse_x509_certificate(certificate_der)
            .map_err(|e| config(format!("does not parse: {e}")))?;
        if !rest.is_empty() {
            return Err(config(format!(
                "{} bytes after the certificate",
                rest.len()
            )));
        }
        if parsed.public_key().raw != signer.public_key().spki_der() {
            return Err(config(
                "certifies another key than the signing key".to_owned(),
            ));
        }
        let issuer = parsed.tbs_certificate.issuer.as_raw().to_vec();
        let serial = yasna::construct_der(|w| {
            w.write_bigint_bytes(parsed.tbs_certificate.raw_serial(), true)
        });
        Ok(CmsSigner {
            certificate_hash: sha256(certificate_der),
            certificate: certificate_der.to_vec(),
            chain,
            issuer,
            serial,
            signature_algorithm,
            signer,
        })
    }

    /// The signer's certificate, DER.
    pub fn certificate(&self) -> &[u8] {
        &self.certificate
    }

    /// The key's signer.
    pub fn signer(&self) -> &Arc<dyn Signer> {
        &self.signer
    }

    /// A DER ContentInfo holding SignedData over `content`, signed with one signature.
    ///
    /// # Errors
    ///
    /// [`Error::Hsm`] if the key store cannot sign; [`Error::Unreachable`] for a signing time
    /// past year 9999.
    pub fn sign(&self, content: Content<'_>, options: &Options) -> Result<Vec<u8>, Error> {
        let signed_attributes = self.signed_attributes(&content, options)?;
        let signature = self
            .signer
            .sign(&signed_attributes)
            .map_err(|source| Error::Hsm {
                action: "cannot sign CMS signed attributes",
                source,
            })?;
        // In the SignerInfo the SET OF is [0] IMPLICIT: same length and contents, another tag.
        let implicit: Vec<u8> = std::iter::once(0xa0)
            .chain(signed_attributes.iter().skip(1).copied())
            .collect();
        let version = if content.content_type == OID_DATA {
            1
        } else {
            3
        };
        Ok(yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_oid(&oid(OID_SIGNED_DATA));
                w.next().write_tagged(Tag::context(0), |w| {
                    w.write_sequence(|w| {
                        w.next().write_u8(version);
                        w.next().write_set(|w| sha256_algorithm(w.next()));
                        w.next().write_sequence(|w| {
                            w.next().write_oid(&oid(content.content_type));
                            if !content.detached {
                                w.next().write_tagged(Tag::context(0), |w| {
                                    w.write_bytes(content.bytes)
                                });
                            }
                        });
                        if options.include_certificates {
                            w.next().write_tagged_implicit(Tag::context(0), |w| {
                                w.write_set_of(|w| {
                                    w.next().write_der(&self.certificate);
                                    for certificate in &self.chain {
                                        w.next().write_der(certificate);
                                    }
                                });
                            });
                        }
                        w.next().write_set(|w| {
                            w.next().write_sequence(|w| {
                                w.next().write_u8(1);
                                self.issuer_and_serial(w.next());
                                sha256_algorithm(w.next());
                                w.next().write_der(&implicit);
                                w.next().write_sequence(|w| {
                                    w.next().write_oid(&oid(self.signature_algorithm));
                                    if self.signature_algorithm == OID_RSA_SHA256 {
                                        w.next().write_null();
                                    }
                                });
                                w.next().write_bytes(&signature);
                            });
                        });
                    });
                });
            });
        }))
    }

    /// The DER `SET OF Attribute` that is signed (RFC 5652 §5.4: with the SET tag).
    fn signed_attributes(
        &self,
        content: &Content<'_>,
        options: &Options,
    ) -> Result<Vec<u8>, Error> {
        let signing_time = match options.signing_time {
            Some(secs) => Some(time_der(secs)?),
            None => None,
        };
        let digest = sha256(content.bytes);
        Ok(yasna::construct_der(|w| {
            w.write_set_of(|w| {
                attribute(w.next(), OID_CONTENT_TYPE, |w| {
                    w.write_oid(&oid(content.content_type))
                });
                attribute(w.next(), OID_MESSAGE_DIGEST, |w| w.write_bytes(&digest));
                if let Some(time) = &signing_time {
                    attribute(w.next(), OID_SIGNING_TIME, |w| w.write_der(time));
                }
                if options.signing_certificate_v2 {
                    attribute(w.next(), OID_SIGNING_CERTIFICATE_V2, |w| {
                        self.signing_certificate_v2(w)
                    });
                }
            });
        }))
    }

    /// `IssuerAndSerialNumber ::= SEQUENCE { issuer Name, serialNumber INTEGER }`.
    fn issuer_and_serial(&self, w: DERWriter<'_>) {
        w.write_sequence(|w| {
            w.next().write_der(&self.issuer);
            w.next().write_der(&self.serial);
        });
    }

    /// `SigningCertificateV2 ::= SEQUENCE { certs SEQUENCE OF ESSCertIDv2 }`, where
    /// `ESSCertIDv2 ::= SEQUENCE { certHash, issuerSerial }` (hashAlgorithm is the DEFAULT
    /// SHA-256, so DER leaves it out) and `IssuerSerial ::= SEQUENCE { issuer GeneralNames,
    /// serialNumber }` with the issuer as a directoryName ([4], explicit: Name is a CHOICE).
    fn signing_certificate_v2(&self, w: DERWriter<'_>) {
        w.write_sequence(|w| {
            w.next().write_sequence(|w| {
                w.next().write_sequence(|w| {
                    w.next().write_bytes(&self.certificate_hash);
                    w.next().write_sequence(|w| {
                        w.next().write_sequence(|w| {
                            w.next()
                                .write_tagged(Tag::context(4), |w| w.write_der(&self.issuer));
                        });
                        w.next().write_der(&self.serial);
                    });
                });
            });
        });
    }
}

/// An OID from its arcs.
pub(crate) fn oid(arcs: &[u64]) -> ObjectIdentifier {
    ObjectIdentifier::from_slice(arcs)
}

/// `AlgorithmIdentifier { id-sha256 }` with absent parameters (RFC 5754 §2).
pub(crate) fn sha256_algorithm(w: DERWriter<'_>) {
    w.write_sequence(|w| w.next().write_oid(&oid(OID_SHA256)));
}

/// `Attribute ::= SEQUENCE { attrType OID, attrValues SET OF value }` with one value.
fn attribute(w: DERWriter<'_>, attribute_type: &[u64], value: impl FnOnce(DERWriter<'_>)) {
    w.write_sequence(|w| {
        w.next().write_oid(&oid(attribute_type));
        w.next().write_set(|w| value(w.next()));
    });
}

/// A CMS `Time` (RFC 5652 §11.3): UTCTime for 1950 to 2049, GeneralizedTime otherwise; whole
/// seconds.
///
/// # Errors
///
/// [`Error::Unreachable`] for seconds past year 9999.
fn time_der(secs: u64) -> Result<Vec<u8>, Error> {
    let (year, rest) = calendar_date(secs)?;
    let text = if (1950..2050).contains(&year) {
        format!("{:02}{rest}Z", year % 100)
    } else {
        format!("{year:04}{rest}Z")
    };
    let tag = if text.len() == 13 { 0x17 } else { 0x18 };
    Ok(short_string(tag, &text))
}

/// A GeneralizedTime (RFC 3161 §2.4.2: `YYYYMMDDhhmmss[.s...]Z`, no trailing zeros in the
/// fraction) with milliseconds.
///
/// # Errors
///
/// [`Error::Unreachable`] for seconds past year 9999.
pub(crate) fn generalized_time_der(secs: u64, millis: u32) -> Result<Vec<u8>, Error> {
    let (year, rest) = calendar_date(secs)?;
    let mut text = format!("{year:04}{rest}");
    if millis > 0 && millis < 1000 {
        let fraction = format!("{millis:03}");
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text.push('Z');
    Ok(short_string(0x18, &text))
}

/// The year, and `MMDDhhmmss` of a second since 1970 (UTC).
fn calendar_date(secs: u64) -> Result<(i32, String), Error> {
    let at = i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .filter(|t| t.year() <= 9999)
        .ok_or(Error::Unreachable("time past year 9999"))?;
    let rest = format!(
        "{:02}{:02}{:02}{:02}{:02}",
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    );
    Ok((at.year(), rest))
}

/// A primitive element with a one-byte length (the times here are under 128 bytes).
fn short_string(tag: u8, text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 2);
    out.push(tag);
    out.push(u8::try_from(text.len()).unwrap_or(0x7f) & 0x7f);
    out.extend_from_slice(text.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::{Duration, SystemTime};

    use backbone_hsm::KeyStore;
    use backbone_hsm::KeyType;
    use backbone_hsm::cert::{CertificateAuthority, Profile, Subject, Validity};
    use backbone_hsm::software::SoftwareKeyStore;
    use openssl::cms::{CMSOptions, CmsContentInfo};
    use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
    use openssl::stack::Stack;
    use openssl::x509::X509;
    use openssl::x509::store::X509StoreBuilder;

    struct Keys {
        ca: Vec<u8>,
        cms: CmsSigner,
        _dir: tempfile::TempDir,
    }

    fn keys(key_type: KeyType, profile: Profile) -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let store = SoftwareKeyStore::open(dir.path()).unwrap();
        store.generate("ca", KeyType::EcP256).unwrap();
        store.generate("key", key_type).unwrap();
        let ca = store.signer("ca", None).unwrap();
        let key = store.signer("key", None).unwrap();
        let not_before = SystemTime::now() - Duration::from_secs(60);
        let validity = |serial: u8| Validity {
            not_before,
            not_after: not_before + Duration::from_secs(86_400),
            serial: vec![0x80, serial],
        };
        let subject = |cn: &str| Subject {
            common_name: cn.into(),
            ..Subject::default()
        };
        let authority =
            CertificateAuthority::self_signed(ca.as_ref(), &subject("CMS test CA"), &validity(1))
                .unwrap();
        let certificate = authority
            .issue(
                key.public_key(),
                &subject("CMS test signer"),
                profile,
                &validity(2),
            )
            .unwrap();
        Keys {
            ca: authority.certificate_der().to_vec(),
            cms: CmsSigner::new(key, &certificate, Vec::new()).unwrap(),
            _dir: dir,
        }
    }

    fn store(ca: &[u8]) -> openssl::x509::store::X509Store {
        let mut builder = X509StoreBuilder::new().unwrap();
        builder.add_cert(X509::from_der(ca).unwrap()).unwrap();
        builder.build()
    }

    const ALL: Options = Options {
        include_certificates: true,
        signing_time: Some(1_790_000_000),
        signing_certificate_v2: true,
    };

    #[test]
    fn detached_ecdsa_and_rsa_verify_with_openssl_cms_and_pkcs7() {
        for key_type in [KeyType::EcP256, KeyType::Rsa2048] {
            let keys = keys(key_type, Profile::MemberSigning);
            let body = b"KSIPUBLF and everything before the signature";
            let der = keys
                .cms
                .sign(
                    Content {
                        content_type: OID_DATA,
                        bytes: body,
                        detached: true,
                    },
                    &ALL,
                )
                .unwrap();

            let mut cms = CmsContentInfo::from_der(&der).unwrap();
            let store = store(&keys.ca);
            cms.verify(None, Some(&store), Some(body), None, CMSOptions::BINARY)
                .unwrap();
            let mut tampered = body.to_vec();
            tampered[0] ^= 1;
            let mut cms = CmsContentInfo::from_der(&der).unwrap();
            assert!(
                cms.verify(
                    None,
                    Some(&store),
                    Some(&tampered),
                    None,
                    CMSOptions::BINARY
                )
                .is_err()
            );

            let pkcs7 = Pkcs7::from_der(&der).unwrap();
            let none = Stack::new().unwrap();
            pkcs7
                .verify(&none, &store, Some(body), None, Pkcs7Flags::BINARY)
                .unwrap();
            assert!(
                pkcs7
                    .verify(&none, &store, Some(&tampered), None, Pkcs7Flags::BINARY)
                    .is_err()
            );
        }
    }

    #[test]
    fn encapsulated_content_verifies_and_a_flipped_signature_byte_fails() {
        let keys = keys(KeyType::EcP256, Profile::TimeStamping);
        let content = b"\x30\x03\x02\x01\x01";
        let der = keys
            .cms
            .sign(
                Content {
                    content_type: OID_TST_INFO,
                    bytes: content,
                    detached: false,
                },
                &ALL,
            )
            .unwrap();
        let mut cms = CmsContentInfo::from_der(&der).unwrap();
        let mut out = Vec::new();
        cms.verify(
            None,
            Some(&store(&keys.ca)),
            None,
            Some(&mut out),
            CMSOptions::BINARY | CMSOptions::NO_SIGNER_CERT_VERIFY,
        )
        .unwrap();
        assert_eq!(out, content);
        // The signature is the last element: flipping its last byte must break it.
        let mut bad = der.clone();
        *bad.last_mut().unwrap() ^= 1;
        if let Ok(mut cms) = CmsContentInfo::from_der(&bad) {
            assert!(
                cms.verify(None, Some(&store(&keys.ca)), None, None, CMSOptions::BINARY)
                    .is_err()
            );
        }
    }

    #[test]
    fn without_certificates_the_verifier_needs_them_given() {
        let keys = keys(KeyType::EcP256, Profile::MemberSigning);
        let options = Options {
            include_certificates: false,
            signing_time: None,
            signing_certificate_v2: false,
        };
        let der = keys
            .cms
            .sign(
                Content {
                    content_type: OID_DATA,
                    bytes: b"x",
                    detached: true,
                },
                &options,
            )
            .unwrap();
        let mut cms = CmsContentInfo::from_der(&der).unwrap();
        assert!(
            cms.verify(
                None,
                Some(&store(&keys.ca)),
                Some(b"x"),
                None,
                CMSOptions::BINARY
            )
            .is_err()
        );
        let mut certs = Stack::new().unwrap();
        certs
            .push(X509::from_der(keys.cms.certificate()).unwrap())
            .unwrap();
        let mut cms = CmsContentInfo::from_der(&der).unwrap();
        cms.verify(
            Some(&certs),
            Some(&store(&keys.ca)),
            Some(b"x"),
            None,
            CMSOptions::BINARY,
        )
        .unwrap();
    }

    #[test]
    fn times_are_der() {
        assert_eq!(time_der(0).unwrap(), short_string(0x17, "700101000000Z"));
        assert_eq!(
            time_der(2_524_608_000).unwrap(),
            short_string(0x18, "20500101000000Z")
        );
        assert_eq!(
            generalized_time_der(1_790_000_000, 120).unwrap(),
            short_string(0x18, "20260921141320.12Z")
        );
        assert_eq!(
            generalized_time_der(1_790_000_000, 0).unwrap(),
            short_string(0x18, "20260921141320Z")
        );
        assert!(time_der(u64::MAX).is_err());
    }
}
