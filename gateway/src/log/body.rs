//! Bodies encrypted at rest: AES-256-GCM with the log's data key, a random 96-bit nonce per
//! record, and the record's sequence number (8 bytes, big-endian) as associated data, so that a
//! body moved to another record does not decrypt.
//!
//! ```text
//!  stored body = nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes)
//! ```
//!
//! The data key is 32 random bytes made when the log is first opened, stored only wrapped by an
//! HSM key (`backbone_hsm::wrap`), and unwrapped into memory when the log opens.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// Length of the data key.
pub const DATA_KEY_LEN: usize = 32;

/// Length of the GCM tag.
pub const TAG_LEN: usize = 16;

/// The data key in memory, ready to seal and open bodies.
pub struct BodyKey {
    key: LessSafeKey,
    rng: SystemRandom,
}

/// A body did not decrypt: changed bytes, the wrong record, or another data key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenError;

// === impl BodyKey ===

impl BodyKey {
    /// Loads a 32-byte data key; `None` for another length.
    pub fn new(key: &[u8]) -> Option<Self> {
        let key = UnboundKey::new(&AES_256_GCM, key).ok()?;
        Some(BodyKey {
            key: LessSafeKey::new(key),
            rng: SystemRandom::new(),
        })
    }

    /// Encrypts `body` for record `seq`; `None` only if the system's random source fails.
    pub fn seal(&self, seq: u64, body: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + body.len() + TAG_LEN);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(body);
        let (_, in_out) = sealed.split_at_mut(NONCE_LEN);
        let aad = seq.to_be_bytes();
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad),
                in_out,
            )
            .ok()?;
        sealed.extend_from_slice(tag.as_ref());
        Some(sealed)
    }

    /// Decrypts what [`BodyKey::seal`] returned for record `seq`.
    ///
    /// # Errors
    ///
    /// [`OpenError`] when the bytes are short, changed, or sealed for another record or key.
    pub fn open(&self, seq: u64, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        let Some((nonce, rest)) = sealed.split_first_chunk::<NONCE_LEN>() else {
            return Err(OpenError);
        };
        if rest.len() < TAG_LEN {
            return Err(OpenError);
        }
        let mut buffer = rest.to_vec();
        let aad = seq.to_be_bytes();
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(&aad),
                &mut buffer,
            )
            .map_err(|_| OpenError)?;
        let len = plain.len();
        buffer.truncate(len);
        Ok(buffer)
    }
}

impl std::fmt::Debug for BodyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BodyKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_refusals() {
        let key = BodyKey::new(&[3; DATA_KEY_LEN]).unwrap();
        let sealed = key.seal(9, b"patient record").unwrap();
        assert_eq!(key.open(9, &sealed).unwrap(), b"patient record");
        assert_ne!(
            key.seal(9, b"patient record").unwrap(),
            sealed,
            "fresh nonce"
        );
        assert_eq!(key.open(10, &sealed), Err(OpenError), "another record");
        let other = BodyKey::new(&[4; DATA_KEY_LEN]).unwrap();
        assert_eq!(other.open(9, &sealed), Err(OpenError), "another key");
        for at in 0..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[at] ^= 1;
            assert_eq!(key.open(9, &tampered), Err(OpenError), "byte {at}");
        }
        assert_eq!(key.open(9, &sealed[..20]), Err(OpenError));
        assert!(BodyKey::new(&[0; 16]).is_none());
        assert_eq!(key.open(0, &key.seal(0, b"").unwrap()).unwrap(), b"");
    }
}
