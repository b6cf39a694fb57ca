//! Hash algorithm identifiers and imprints (one algorithm byte followed by the digest).
//!
//! Spec: Guardtime, "KSI Data Formats", table "Hash functions" (as implemented by
//! guardtime/goksi `hash/hash.go` and guardtime/libksi `src/ksi/hash.c`). Ids 0x03 and 0x06
//! were SHA-224 and RIPEMD-256 in early drafts and are now invalid, so that a legacy client id
//! (first byte 0x03) can never be read as an imprint; 0x7E starts metadata for the same reason.
//!
//! A function is *deprecated* from the day collisions became affordable and *obsolete* from the
//! day second pre-images did; [`HashAlgorithm::status_at`] is judged at a time the caller passes
//! in. This module never reads the clock.

use std::fmt;

use openssl::hash::{Hasher, MessageDigest};

use crate::error::{DecodeError, Error};

/// SHA-1 is deprecated from 2016-07-01T00:00:00Z.
pub const SHA1_DEPRECATED_SINCE: i64 = 1_467_331_200;

/// A hash function KSI knows, by its one-byte id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum HashAlgorithm {
    /// SHA-1 (0x00), deprecated since 2016-07-01.
    Sha1,
    /// SHA-256 (0x01), the default.
    Sha256,
    /// RIPEMD-160 (0x02).
    Ripemd160,
    /// SHA-384 (0x04).
    Sha384,
    /// SHA-512 (0x05).
    Sha512,
    /// SHA3-224 (0x07).
    Sha3_224,
    /// SHA3-256 (0x08).
    Sha3_256,
    /// SHA3-384 (0x09).
    Sha3_384,
    /// SHA3-512 (0x0A).
    Sha3_512,
    /// SM3 (0x0B).
    Sm3,
}

/// Whether a hash function could be trusted at some moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlgorithmStatus {
    /// Trusted for every purpose.
    Normal,
    /// Collisions are affordable: trusted only where the time of use is proven otherwise.
    Deprecated,
    /// Second pre-images are affordable: not trusted at all.
    Obsolete,
}

// === impl HashAlgorithm ===

impl HashAlgorithm {
    /// Every algorithm, in id order.
    pub const ALL: [HashAlgorithm; 10] = [
        HashAlgorithm::Sha1,
        HashAlgorithm::Sha256,
        HashAlgorithm::Ripemd160,
        HashAlgorithm::Sha384,
        HashAlgorithm::Sha512,
        HashAlgorithm::Sha3_224,
        HashAlgorithm::Sha3_256,
        HashAlgorithm::Sha3_384,
        HashAlgorithm::Sha3_512,
        HashAlgorithm::Sm3,
    ];

    /// The algorithm with this id, if KSI defines one.
    pub fn from_id(id: u8) -> Option<HashAlgorithm> {
        HashAlgorithm::ALL.into_iter().find(|a| a.id() == id)
    }

    /// The one-byte id that starts an imprint.
    pub fn id(self) -> u8 {
        match self {
            HashAlgorithm::Sha1 => 0x00,
            HashAlgorithm::Sha256 => 0x01,
            HashAlgorithm::Ripemd160 => 0x02,
            HashAlgorithm::Sha384 => 0x04,
            HashAlgorithm::Sha512 => 0x05,
            HashAlgorithm::Sha3_224 => 0x07,
            HashAlgorithm::Sha3_256 => 0x08,
            HashAlgorithm::Sha3_384 => 0x09,
            HashAlgorithm::Sha3_512 => 0x0a,
            HashAlgorithm::Sm3 => 0x0b,
        }
    }

    /// The digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            HashAlgorithm::Sha1 | HashAlgorithm::Ripemd160 => 20,
            HashAlgorithm::Sha3_224 => 28,
            HashAlgorithm::Sha256 | HashAlgorithm::Sha3_256 | HashAlgorithm::Sm3 => 32,
            HashAlgorithm::Sha384 | HashAlgorithm::Sha3_384 => 48,
            HashAlgorithm::Sha512 | HashAlgorithm::Sha3_512 => 64,
        }
    }

    /// The name KSI tools print.
    pub fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Sha1 => "SHA-1",
            HashAlgorithm::Sha256 => "SHA-256",
            HashAlgorithm::Ripemd160 => "RIPEMD-160",
            HashAlgorithm::Sha384 => "SHA-384",
            HashAlgorithm::Sha512 => "SHA-512",
            HashAlgorithm::Sha3_224 => "SHA3-224",
            HashAlgorithm::Sha3_256 => "SHA3-256",
            HashAlgorithm::Sha3_384 => "SHA3-384",
            HashAlgorithm::Sha3_512 => "SHA3-512",
            HashAlgorithm::Sm3 => "SM3",
        }
    }

    /// Seconds since 1970 from which the function is deprecated, if it is.
    pub fn deprecated_since(self) -> Option<i64> {
        match self {
            HashAlgorithm::Sha1 => Some(SHA1_DEPRECATED_SINCE),
            _ => None,
        }
    }

    /// Seconds since 1970 from which the function is obsolete, if it is. None is yet.
    pub fn obsolete_since(self) -> Option<i64> {
        None
    }

    /// The function's status at `at` (seconds since 1970).
    pub fn status_at(self, at: i64) -> AlgorithmStatus {
        if self.obsolete_since().is_some_and(|t| t <= at) {
            AlgorithmStatus::Obsolete
        } else if self.deprecated_since().is_some_and(|t| t <= at) {
            AlgorithmStatus::Deprecated
        } else {
            AlgorithmStatus::Normal
        }
    }

    /// Hashes the concatenation of `parts`.
    ///
    /// # Errors
    ///
    /// [`Error::HashUnavailable`] if the linked OpenSSL lacks the function.
    pub fn hash(self, parts: &[&[u8]]) -> Result<Imprint, Error> {
        if self == HashAlgorithm::Sha256 {
            // Every calendar and aggregation step hashes a few dozen bytes with SHA-256; OpenSSL's
            // per-call context setup costs about five times the hash itself there, so the
            // common algorithm goes through `sha2` (the same function, checked against OpenSSL
            // in the tests below).
            use sha2::Digest;
            let mut hasher = sha2::Sha256::new();
            for part in parts {
                hasher.update(part);
            }
            return Imprint::new(self, &hasher.finalize())
                .map_err(|_| Error::Unreachable("digest length differs from the algorithm's"));
        }
        let mut hasher =
            Hasher::new(self.message_digest()?).map_err(|_| Error::HashUnavailable(self))?;
        for part in parts {
            hasher.update(part).map_err(Error::crypto("hashing"))?;
        }
        let digest = hasher.finish().map_err(Error::crypto("hashing"))?;
        Imprint::new(self, &digest)
            .map_err(|_| Error::Unreachable("digest length differs from the algorithm's"))
    }

    /// The OpenSSL digest behind the algorithm.
    pub(crate) fn message_digest(self) -> Result<MessageDigest, Error> {
        Ok(match self {
            HashAlgorithm::Sha1 => MessageDigest::sha1(),
            HashAlgorithm::Sha256 => MessageDigest::sha256(),
            HashAlgorithm::Ripemd160 => MessageDigest::ripemd160(),
            HashAlgorithm::Sha384 => MessageDigest::sha384(),
            HashAlgorithm::Sha512 => MessageDigest::sha512(),
            HashAlgorithm::Sha3_224 => MessageDigest::sha3_224(),
            HashAlgorithm::Sha3_256 => MessageDigest::sha3_256(),
            HashAlgorithm::Sha3_384 => MessageDigest::sha3_384(),
            HashAlgorithm::Sha3_512 => MessageDigest::sha3_512(),
            HashAlgorithm::Sm3 => MessageDigest::sm3(),
        })
    }
}

impl fmt::Display for HashAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// === impl Imprint ===

/// A hash value tagged with its algorithm: `id || digest`, with the length checked.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Imprint {
    algorithm: HashAlgorithm,
    bytes: Vec<u8>,
}

impl Imprint {
    /// Builds an imprint from an algorithm and a digest of the right length.
    ///
    /// # Errors
    ///
    /// [`DecodeError::ImprintLength`] if the digest length does not match.
    pub fn new(algorithm: HashAlgorithm, digest: &[u8]) -> Result<Imprint, DecodeError> {
        if digest.len() != algorithm.digest_len() {
            return Err(DecodeError::ImprintLength {
                algorithm,
                len: digest.len(),
                expected: algorithm.digest_len(),
            });
        }
        let mut bytes = Vec::with_capacity(1 + digest.len());
        bytes.push(algorithm.id());
        bytes.extend_from_slice(digest);
        Ok(Imprint { algorithm, bytes })
    }

    /// Reads an imprint: a known algorithm id followed by exactly its digest length.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Truncated`] if empty, [`DecodeError::UnknownAlgorithm`] or
    /// [`DecodeError::ImprintLength`] otherwise.
    pub fn from_bytes(bytes: &[u8]) -> Result<Imprint, DecodeError> {
        let (id, digest) = bytes
            .split_first()
            .ok_or(DecodeError::Truncated { needed: 1, left: 0 })?;
        let algorithm =
            HashAlgorithm::from_id(*id).ok_or(DecodeError::UnknownAlgorithm { id: *id })?;
        Imprint::new(algorithm, digest)
    }

    /// Whether `bytes` would read as an imprint (used to tell metadata from sibling hashes).
    pub fn looks_like_imprint(bytes: &[u8]) -> bool {
        Imprint::from_bytes(bytes).is_ok()
    }

    /// The algorithm.
    pub fn algorithm(&self) -> HashAlgorithm {
        self.algorithm
    }

    /// The digest, without the algorithm byte.
    pub fn digest(&self) -> &[u8] {
        self.bytes.get(1..).unwrap_or_default()
    }

    /// The imprint bytes: algorithm id, then digest.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Lower-case hex of the imprint bytes.
    pub fn to_hex(&self) -> String {
        self.bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for Imprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Imprint({}:{})", self.algorithm(), self.to_hex())
    }
}

impl fmt::Display for Imprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_fast_path_equals_openssl() {
        let parts: [&[u8]; 3] = [b"left", b"", &[0xff; 70]];
        let fast = HashAlgorithm::Sha256.hash(&parts).unwrap();
        let mut whole = Vec::new();
        for part in parts {
            whole.extend_from_slice(part);
        }
        let reference = openssl::hash::hash(MessageDigest::sha256(), &whole).unwrap();
        assert_eq!(fast.digest(), &reference[..]);
        assert_eq!(fast.algorithm(), HashAlgorithm::Sha256);
    }

    #[test]
    fn ids_and_lengths() {
        for a in HashAlgorithm::ALL {
            assert_eq!(HashAlgorithm::from_id(a.id()), Some(a));
        }
        assert_eq!(HashAlgorithm::from_id(0x03), None);
        assert_eq!(HashAlgorithm::from_id(0x06), None);
        assert_eq!(HashAlgorithm::from_id(0x7e), None);
    }

    #[test]
    fn imprint_checks_length_and_algorithm() {
        assert!(Imprint::from_bytes(&[0x01; 33]).is_ok());
        assert!(matches!(
            Imprint::from_bytes(&[0x01; 32]),
            Err(DecodeError::ImprintLength { .. })
        ));
        assert!(matches!(
            Imprint::from_bytes(&[0x03; 33]),
            Err(DecodeError::UnknownAlgorithm { id: 3 })
        ));
        assert!(Imprint::from_bytes(&[]).is_err());
    }

    #[test]
    fn sha1_is_deprecated_from_mid_2016() {
        assert_eq!(
            HashAlgorithm::Sha1.status_at(SHA1_DEPRECATED_SINCE - 1),
            AlgorithmStatus::Normal
        );
        assert_eq!(
            HashAlgorithm::Sha1.status_at(SHA1_DEPRECATED_SINCE),
            AlgorithmStatus::Deprecated
        );
        assert_eq!(
            HashAlgorithm::Sha256.status_at(i64::MAX),
            AlgorithmStatus::Normal
        );
    }

    #[test]
    fn hashes_match_known_answers() {
        let h = HashAlgorithm::Sha256.hash(&[b"a", b"bc"]).unwrap();
        assert_eq!(
            h.to_hex(),
            "01ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        for a in [
            HashAlgorithm::Sha1,
            HashAlgorithm::Sha384,
            HashAlgorithm::Sha512,
            HashAlgorithm::Sha3_256,
        ] {
            assert_eq!(a.hash(&[b"x"]).unwrap().digest().len(), a.digest_len());
        }
    }
}
