//! `TimeStampReq` (RFC 3161 §2.4.1), parsed by hand with yasna in DER mode.
//!
//! ```text
//!  TimeStampReq ::= SEQUENCE {
//!     version         INTEGER { v1(1) },
//!     messageImprint  SEQUENCE { hashAlgorithm AlgorithmIdentifier, hashedMessage OCTET STRING },
//!     reqPolicy       OBJECT IDENTIFIER OPTIONAL,
//!     nonce           INTEGER OPTIONAL,
//!     certReq         BOOLEAN DEFAULT FALSE,
//!     extensions      [0] IMPLICIT Extensions OPTIONAL }
//! ```
//!
//! The structure is decoded first (any failure: `badDataFormat`), then judged: version
//! (`badRequest`), hash algorithm and its parameters (`badAlg`), digest length (`badDataFormat`),
//! policy (`unacceptedPolicy`), extensions (`unacceptedExtension`: none is supported), as
//! OpenSSL's own TSA judges them. Nothing here panics on any input; the size is checked before
//! decoding.

use yasna::models::ObjectIdentifier;
use yasna::tags::TAG_INTEGER;
use yasna::{ASN1Error, ASN1ErrorKind, BERReader, Tag};

/// The largest request decoded. A request with a SHA-512 imprint, a policy and a 64-byte nonce
/// is under 200 bytes; extensions, which are refused anyway, get some room to be recognised.
pub const MAX_REQUEST: usize = 4096;

/// A hash algorithm a request's imprint may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashAlgorithm {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

/// A decoded and accepted request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeStampReq {
    /// The imprint's hash algorithm.
    pub hash_algorithm: HashAlgorithm,
    /// The imprint's digest.
    pub digest: Vec<u8>,
    /// The messageImprint element as received, echoed into TSTInfo byte for byte.
    pub message_imprint_der: Vec<u8>,
    /// The requested policy, if any (it is then the TSA's policy).
    pub policy: Option<ObjectIdentifier>,
    /// The nonce INTEGER as received (tag, length, value), echoed into TSTInfo.
    pub nonce_der: Option<Vec<u8>>,
    /// Whether the TSA's certificate is to be included in the token.
    pub cert_req: bool,
}

/// Why a request is refused; each maps to the `PKIFailureInfo` bit of the rejection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The body is larger than [`MAX_REQUEST`].
    #[error("request of {len} bytes is over the limit of {max}")]
    TooLarge {
        /// The body's size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The body is not a DER TimeStampReq.
    #[error("not a DER TimeStampReq: {0}")]
    Malformed(String),
    /// The version is not 1.
    #[error("version {0} is not supported (only v1)")]
    Version(String),
    /// The imprint's hash algorithm is not one this TSA accepts.
    #[error("hash algorithm {0} is not accepted (sha256, sha384, sha512)")]
    UnknownHash(String),
    /// The hash algorithm has parameters other than NULL.
    #[error("hash algorithm parameters must be absent or NULL")]
    HashParameters,
    /// The digest's length does not match its algorithm.
    #[error("digest of {got} bytes for an algorithm of {expected}")]
    DigestLength {
        /// The algorithm's digest length.
        expected: usize,
        /// The digest's length.
        got: usize,
    },
    /// The request asks for another policy.
    #[error("policy {0} is not this TSA's")]
    Policy(String),
    /// The request has extensions; none is supported.
    #[error("extensions are not supported")]
    Extensions,
}

/// The `PKIFailureInfo` bits (RFC 3161 §2.4.2) this TSA sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureInfo {
    /// Unrecognized or unsupported algorithm.
    BadAlg = 0,
    /// Transaction not permitted or supported.
    BadRequest = 2,
    /// The data submitted has the wrong format.
    BadDataFormat = 5,
    /// The requested TSA policy is not supported.
    UnacceptedPolicy = 15,
    /// The requested extension is not supported.
    UnacceptedExtension = 16,
    /// The request cannot be handled due to system failure.
    SystemFailure = 25,
}

// === impl RequestError ===

impl RequestError {
    /// The failure bit a rejection carries.
    pub fn fail_info(&self) -> FailureInfo {
        match self {
            RequestError::TooLarge { .. }
            | RequestError::Malformed(_)
            | RequestError::DigestLength { .. } => FailureInfo::BadDataFormat,
            RequestError::Version(_) => FailureInfo::BadRequest,
            RequestError::UnknownHash(_) | RequestError::HashParameters => FailureInfo::BadAlg,
            RequestError::Policy(_) => FailureInfo::UnacceptedPolicy,
            RequestError::Extensions => FailureInfo::UnacceptedExtension,
        }
    }
}

// === impl HashAlgorithm ===

impl HashAlgorithm {
    /// The digest length in bytes.
    // A digest length, never zero: an `is_empty` would always say false.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(self) -> usize {
        match self {
            HashAlgorithm::Sha256 => 32,
            HashAlgorithm::Sha384 => 48,
            HashAlgorithm::Sha512 => 64,
        }
    }

    fn from_oid(oid: &ObjectIdentifier) -> Option<Self> {
        match oid.components().as_slice() {
            [2, 16, 840, 1, 101, 3, 4, 2, 1] => Some(HashAlgorithm::Sha256),
            [2, 16, 840, 1, 101, 3, 4, 2, 2] => Some(HashAlgorithm::Sha384),
            [2, 16, 840, 1, 101, 3, 4, 2, 3] => Some(HashAlgorithm::Sha512),
            _ => None,
        }
    }
}

/// Decodes and judges a request against the TSA's `policy`.
///
/// # Errors
///
/// [`RequestError`], whose [`RequestError::fail_info`] is the rejection's failure bit.
pub fn parse(bytes: &[u8], policy: &ObjectIdentifier) -> Result<TimeStampReq, RequestError> {
    if bytes.len() > MAX_REQUEST {
        return Err(RequestError::TooLarge {
            len: bytes.len(),
            max: MAX_REQUEST,
        });
    }
    let raw =
        yasna::parse_der(bytes, decode).map_err(|e| RequestError::Malformed(e.to_string()))?;
    if raw.version != [1] {
        return Err(RequestError::Version(version_text(&raw.version)));
    }
    let hash_algorithm = HashAlgorithm::from_oid(&raw.hash_oid)
        .ok_or_else(|| RequestError::UnknownHash(raw.hash_oid.to_string()))?;
    if raw
        .hash_parameters
        .as_ref()
        .is_some_and(|p| p.as_slice() != [0x05, 0x00])
    {
        return Err(RequestError::HashParameters);
    }
    if raw.digest.len() != hash_algorithm.len() {
        return Err(RequestError::DigestLength {
            expected: hash_algorithm.len(),
            got: raw.digest.len(),
        });
    }
    if let Some(requested) = &raw.policy
        && requested != policy
    {
        return Err(RequestError::Policy(requested.to_string()));
    }
    if raw.extensions {
        return Err(RequestError::Extensions);
    }
    Ok(TimeStampReq {
        hash_algorithm,
        digest: raw.digest,
        message_imprint_der: raw.message_imprint_der,
        policy: raw.policy,
        nonce_der: raw.nonce_der,
        cert_req: raw.cert_req,
    })
}

/// The request's fields before they are judged.
struct Raw {
    version: Vec<u8>,
    message_imprint_der: Vec<u8>,
    hash_oid: ObjectIdentifier,
    hash_parameters: Option<Vec<u8>>,
    digest: Vec<u8>,
    policy: Option<ObjectIdentifier>,
    nonce_der: Option<Vec<u8>>,
    cert_req: bool,
    extensions: bool,
}

fn decode(reader: BERReader<'_, '_>) -> Result<Raw, ASN1Error> {
    reader.read_sequence(|r| {
        let (version, _) = r.next().read_bigint_bytes()?;
        let message_imprint_der = r.next().read_der()?;
        let (hash_oid, hash_parameters, digest) = yasna::parse_der(&message_imprint_der, |r| {
            r.read_sequence(|r| {
                let (oid, parameters) = r.next().read_sequence(|r| {
                    let oid = r.next().read_oid()?;
                    let parameters = r.read_optional(|r| r.read_der())?;
                    Ok((oid, parameters))
                })?;
                Ok((oid, parameters, r.next().read_bytes()?))
            })
        })?;
        let policy = r.read_optional(|r| r.read_oid())?;
        let nonce_der = r.read_optional(|r| tagged(r, TAG_INTEGER))?;
        if let Some(nonce) = &nonce_der {
            // A well-formed INTEGER (minimal, non-empty); echoed as received.
            yasna::parse_der(nonce, |r| r.read_bigint_bytes())?;
        }
        let cert_req = r.read_optional(|r| r.read_bool())?.unwrap_or(false);
        let extensions = r.read_optional(|r| tagged(r, Tag::context(0)))?.is_some();
        Ok(Raw {
            version,
            message_imprint_der,
            hash_oid,
            hash_parameters,
            digest,
            policy,
            nonce_der,
            cert_req,
            extensions,
        })
    })
}

/// The next element, raw, if its tag is `tag`; otherwise an error before anything is consumed
/// (so that `read_optional` sees it as absent).
fn tagged(reader: BERReader<'_, '_>, tag: Tag) -> Result<Vec<u8>, ASN1Error> {
    if reader.lookahead_tag()? != tag {
        return Err(ASN1Error::new(ASN1ErrorKind::Invalid));
    }
    reader.read_der()
}

/// A version INTEGER for an error message: its value when it fits, else its size.
fn version_text(bytes: &[u8]) -> String {
    if bytes.len() <= 8 {
        let mut value: i64 = if bytes.first().is_some_and(|b| b & 0x80 != 0) {
            -1
        } else {
            0
        };
        for b in bytes {
            value = (value << 8) | i64::from(*b);
        }
        value.to_string()
    } else {
        format!("of {} bytes", bytes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA256: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 2, 1];

    fn policy() -> ObjectIdentifier {
        ObjectIdentifier::from_slice(&[1, 2, 3, 4, 1])
    }

    /// A request built field by field.
    fn request(
        version: i64,
        hash: &[u64],
        parameters: Option<&[u8]>,
        digest_len: usize,
        tail: impl FnOnce(&mut yasna::DERWriterSeq<'_>),
    ) -> Vec<u8> {
        yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_i64(version);
                w.next().write_sequence(|w| {
                    w.next().write_sequence(|w| {
                        w.next().write_oid(&ObjectIdentifier::from_slice(hash));
                        if let Some(p) = parameters {
                            w.next().write_der(p);
                        }
                    });
                    w.next().write_bytes(&vec![0xab; digest_len]);
                });
                tail(w);
            });
        })
    }

    #[test]
    fn a_full_request_is_accepted_and_its_fields_kept() {
        let bytes = request(1, SHA256, Some(&[5, 0]), 32, |w| {
            w.next().write_oid(&policy());
            w.next().write_u64(0x0102_0304_0506_0708);
            w.next().write_bool(true);
        });
        let parsed = parse(&bytes, &policy()).unwrap();
        assert_eq!(parsed.hash_algorithm, HashAlgorithm::Sha256);
        assert_eq!(parsed.digest, vec![0xab; 32]);
        assert!(parsed.cert_req);
        assert_eq!(parsed.nonce_der.unwrap(), [2, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(parsed.policy, Some(policy()));
    }

    #[test]
    fn each_refusal_has_its_failure_bit() {
        let cases: Vec<(Vec<u8>, FailureInfo)> = vec![
            (
                request(2, SHA256, None, 32, |_| ()),
                FailureInfo::BadRequest,
            ),
            (
                request(1, &[1, 3, 14, 3, 2, 26], None, 20, |_| ()),
                FailureInfo::BadAlg,
            ),
            (
                request(1, SHA256, Some(&[4, 0]), 32, |_| ()),
                FailureInfo::BadAlg,
            ),
            (
                request(1, SHA256, None, 31, |_| ()),
                FailureInfo::BadDataFormat,
            ),
            (
                request(1, SHA256, None, 32, |w| {
                    w.next()
                        .write_oid(&ObjectIdentifier::from_slice(&[1, 2, 3]))
                }),
                FailureInfo::UnacceptedPolicy,
            ),
            (
                request(1, SHA256, None, 32, |w| {
                    w.next().write_tagged_implicit(Tag::context(0), |w| {
                        w.write_sequence(|w| w.next().write_null())
                    })
                }),
                FailureInfo::UnacceptedExtension,
            ),
            (b"garbage".to_vec(), FailureInfo::BadDataFormat),
            (Vec::new(), FailureInfo::BadDataFormat),
            (vec![0x30; MAX_REQUEST + 1], FailureInfo::BadDataFormat),
            // Fields out of order, and a trailing element.
            (
                request(1, SHA256, None, 32, |w| {
                    w.next().write_bool(true);
                    w.next().write_u64(7);
                }),
                FailureInfo::BadDataFormat,
            ),
            (
                request(1, SHA256, None, 32, |w| w.next().write_null()),
                FailureInfo::BadDataFormat,
            ),
        ];
        for (bytes, expected) in cases {
            let error = parse(&bytes, &policy()).unwrap_err();
            assert_eq!(error.fail_info(), expected, "{error}");
        }
        let mut trailing = request(1, SHA256, None, 32, |_| ());
        trailing.push(0);
        assert_eq!(
            parse(&trailing, &policy()).unwrap_err().fail_info(),
            FailureInfo::BadDataFormat
        );
    }

    #[test]
    fn near_misses_never_panic() {
        let good = request(1, SHA256, None, 32, |w| {
            w.next().write_u64(42);
            w.next().write_bool(true);
        });
        parse(&good, &policy()).unwrap();
        for len in 0..good.len() {
            assert!(parse(&good[..len], &policy()).is_err());
        }
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut flipped = good.clone();
                flipped[i] ^= 1 << bit;
                let _ = parse(&flipped, &policy());
            }
        }
        // Deep nesting stops at yasna's depth limit.
        let mut deep = Vec::new();
        for _ in 0..1000 {
            deep.extend_from_slice(&[0x30, 0x80]);
        }
        assert!(parse(&deep, &policy()).is_err());
    }
}
