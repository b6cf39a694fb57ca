//! A request's hash as a round takes it in: the imprint (KSI Data Formats, "Imprint": algorithm
//! id, then digest) in a fixed inline buffer sized for the longest imprint KSI defines, so that
//! a request carries its hash by value and accepting it neither follows a pointer nor frees one.
//!
//! A round keeps its requests' hashes apart from them, in one flat array of imprint bytes (33
//! per SHA-256 request); the [`Imprint`] of the verifier crate, a heap vector, is built again
//! only when a request's chain is built as a value.
//!
//! ```text
//!  Imprint { algorithm, bytes: Vec<u8> }  ─▶ InputHash { algorithm, bytes: [id, digest…, 0…] }
//!        (one heap block per request)              (66 bytes inline, no heap, no drop)
//! ```

use std::fmt;

use backbone_timestamping_verify::DecodeError;
use backbone_timestamping_verify::imprint::{HashAlgorithm, Imprint};

/// The longest imprint KSI defines: the id byte and a 64-byte digest (SHA-512, SHA3-512).
pub const MAX_LEN: usize = 1 + 64;

/// A request's hash: an imprint, inline. Two are equal when their imprints are.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct InputHash {
    algorithm: HashAlgorithm,
    /// The imprint: `bytes[0]` is the algorithm's id, then its digest; the rest is zero.
    bytes: [u8; MAX_LEN],
}

// === impl InputHash ===

impl InputHash {
    /// A hash from an algorithm and a digest of its length.
    ///
    /// # Errors
    ///
    /// [`DecodeError::ImprintLength`] if the digest length is not the algorithm's.
    pub fn new(algorithm: HashAlgorithm, digest: &[u8]) -> Result<InputHash, DecodeError> {
        let mismatch = || DecodeError::ImprintLength {
            algorithm,
            len: digest.len(),
            expected: algorithm.digest_len(),
        };
        if digest.len() != algorithm.digest_len() {
            return Err(mismatch());
        }
        let mut bytes = [0u8; MAX_LEN];
        let (id, rest) = bytes.split_first_mut().ok_or_else(mismatch)?;
        *id = algorithm.id();
        rest.get_mut(..digest.len())
            .ok_or_else(mismatch)?
            .copy_from_slice(digest);
        Ok(InputHash { algorithm, bytes })
    }

    /// Reads an imprint: a known algorithm id followed by exactly its digest length.
    ///
    /// # Errors
    ///
    /// As [`Imprint::from_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<InputHash, DecodeError> {
        let (id, digest) = bytes
            .split_first()
            .ok_or(DecodeError::Truncated { needed: 1, left: 0 })?;
        let algorithm =
            HashAlgorithm::from_id(*id).ok_or(DecodeError::UnknownAlgorithm { id: *id })?;
        InputHash::new(algorithm, digest)
    }

    /// The algorithm.
    pub fn algorithm(&self) -> HashAlgorithm {
        self.algorithm
    }

    /// The imprint bytes: algorithm id, then digest.
    pub fn as_bytes(&self) -> &[u8] {
        // `new` checked that the digest fits; the whole buffer is the harmless answer if not.
        self.bytes
            .get(..1 + self.algorithm.digest_len())
            .unwrap_or(&self.bytes)
    }

    /// The digest, without the algorithm byte.
    pub fn digest(&self) -> &[u8] {
        self.as_bytes().get(1..).unwrap_or_default()
    }

    /// The same hash as a verifier [`Imprint`] (one heap allocation).
    ///
    /// # Errors
    ///
    /// None in practice: the algorithm and digest were checked when the hash was made.
    pub fn to_imprint(&self) -> Result<Imprint, DecodeError> {
        Imprint::new(self.algorithm, self.digest())
    }
}

impl From<&Imprint> for InputHash {
    fn from(imprint: &Imprint) -> Self {
        // An `Imprint` always holds its algorithm's digest length, at most 64 bytes.
        InputHash::new(imprint.algorithm(), imprint.digest()).unwrap_or(InputHash {
            algorithm: imprint.algorithm(),
            bytes: [0; MAX_LEN],
        })
    }
}

impl From<Imprint> for InputHash {
    fn from(imprint: Imprint) -> Self {
        InputHash::from(&imprint)
    }
}

impl fmt::Debug for InputHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InputHash({}:", self.algorithm)?;
        self.as_bytes()
            .iter()
            .try_for_each(|b| write!(f, "{b:02x}"))?;
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_fits_and_reads_back() {
        for algorithm in HashAlgorithm::ALL {
            let digest: Vec<u8> = (0..algorithm.digest_len())
                .map(|i| i as u8 ^ 0xa5)
                .collect();
            let imprint = Imprint::new(algorithm, &digest).unwrap();
            let hash = InputHash::from(&imprint);
            assert_eq!(
                (hash.algorithm(), hash.as_bytes(), hash.digest()),
                (algorithm, imprint.as_bytes(), imprint.digest())
            );
            assert_eq!(hash.to_imprint().unwrap(), imprint);
            assert_eq!(InputHash::from_bytes(imprint.as_bytes()).unwrap(), hash);
        }
        assert!(InputHash::new(HashAlgorithm::Sha256, &[0; 31]).is_err());
        assert!(InputHash::from_bytes(&[0x03; 33]).is_err());
        assert!(InputHash::from_bytes(&[]).is_err());
    }
}
