//! Wrapping a data key with a secret key that never leaves its store.
//!
//! A service that encrypts data at rest (a gateway's message log) keeps a random data key, and
//! stores it only wrapped by an AES-256 key held in the HSM: whoever copies the service's disk gets
//! the wrapped data key and the ciphertexts, but not the key that unwraps them.
//!
//! Both stores write the same format, AES-256-GCM ([NIST SP 800-38D]) with a 96-bit random IV and
//! a 128-bit tag:
//!
//! ```text
//!  wrapped = version (1 byte, 0x01) ‖ IV (12 bytes) ‖ ciphertext (len(key) bytes) ‖ tag (16 bytes)
//!  associated data = "backbone-hsm wrap v1"
//! ```
//!
//! On PKCS#11 this is `CKM_AES_GCM` through `C_Encrypt` and `C_Decrypt` on a secret key of type
//! `CKK_AES` (SoftHSM2 2.6 has it; `CKM_AES_KEY_WRAP_PAD` would only wrap key objects, not bytes
//! the caller holds). In the software store it is ring's `AES_256_GCM`.
//!
//! [NIST SP 800-38D]: https://csrc.nist.gov/pubs/sp/800/38/d/final

use std::fmt;

use zeroize::Zeroizing;

use crate::Error;

/// The first byte of every wrapped key: the format above.
pub const FORMAT_VERSION: u8 = 0x01;

/// Length of the random GCM IV.
pub const IV_LEN: usize = 12;

/// Length of the GCM tag.
pub const TAG_LEN: usize = 16;

/// Length of a wrapping key: AES-256.
pub const WRAPPING_KEY_LEN: usize = 32;

/// Longest key this module wraps. Data keys are 32 bytes; the limit keeps a corrupt input from
/// reaching the token.
pub const MAX_KEY_LEN: usize = 1024;

/// The associated data bound into every wrapped key, so that a ciphertext made for another purpose
/// with the same key does not unwrap as a data key.
pub const ASSOCIATED_DATA: &[u8] = b"backbone-hsm wrap v1";

/// Wraps and unwraps data keys with one secret key that never leaves its store.
///
/// Implementations MUST be safe to call from many threads at once. [`Wrapper::wrap`] MUST use a
/// fresh random IV per call and write the format of this module, so that a key wrapped by one
/// store's implementation can be unwrapped by the same key in any other. [`Wrapper::unwrap`] MUST
/// refuse, with an error and without returning any bytes, input that was not produced by `wrap`
/// with this very key (authenticated encryption).
pub trait Wrapper: Send + Sync + fmt::Debug {
    /// The wrapping key's label in its store.
    fn label(&self) -> &str;

    /// Encrypts `key` (1 to [`MAX_KEY_LEN`] bytes) under the wrapping key.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an empty or oversized key; store failures as for signing.
    fn wrap(&self, key: &[u8]) -> Result<Vec<u8>, Error>;

    /// Decrypts what [`Wrapper::wrap`] returned. The result is wiped from memory when dropped.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] when the bytes are not in this format, [`Error::Unwrap`] when they do not
    /// authenticate under this key (tampered bytes, or wrapped by another key).
    fn unwrap(&self, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error>;
}

/// The parts of a wrapped key, borrowed from its bytes.
#[derive(Clone, Copy, Debug)]
pub struct WrappedParts<'a> {
    /// The GCM IV.
    pub iv: &'a [u8; IV_LEN],
    /// Ciphertext followed by the tag (the layout both ring and PKCS#11 take).
    pub sealed: &'a [u8],
}

/// Checks a key before wrapping it.
pub(crate) fn check_key(key: &[u8]) -> Result<(), Error> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(Error::Config {
            key: "key to wrap",
            value: format!("{} bytes", key.len()),
            reason: format!("must be 1 to {MAX_KEY_LEN} bytes"),
        });
    }
    Ok(())
}

/// Splits wrapped bytes into IV and sealed part, checking the version and the lengths.
///
/// # Errors
///
/// [`Error::Decode`] for another version or a length that cannot hold a tag.
pub fn parse(wrapped: &[u8]) -> Result<WrappedParts<'_>, Error> {
    let decode = |reason: String| Error::decode("wrapped key", reason);
    let Some((&version, rest)) = wrapped.split_first() else {
        return Err(decode("empty".to_owned()));
    };
    if version != FORMAT_VERSION {
        return Err(decode(format!(
            "format version {version:#04x}, expected {FORMAT_VERSION:#04x}"
        )));
    }
    let Some((iv, sealed)) = rest.split_first_chunk::<IV_LEN>() else {
        return Err(decode(format!(
            "{} bytes is too short for the IV",
            wrapped.len()
        )));
    };
    let max = MAX_KEY_LEN + TAG_LEN;
    if sealed.len() <= TAG_LEN || sealed.len() > max {
        return Err(decode(format!(
            "{} bytes of ciphertext and tag, expected {} to {max}",
            sealed.len(),
            TAG_LEN + 1
        )));
    }
    Ok(WrappedParts { iv, sealed })
}

/// Assembles the wrapped bytes from the IV and the sealed part (ciphertext ‖ tag).
pub(crate) fn assemble(iv: &[u8; IV_LEN], sealed: &[u8]) -> Vec<u8> {
    let mut wrapped = Vec::with_capacity(1 + IV_LEN + sealed.len());
    wrapped.push(FORMAT_VERSION);
    wrapped.extend_from_slice(iv);
    wrapped.extend_from_slice(sealed);
    wrapped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_refuses_short_long_and_other_versions() {
        let good = assemble(&[7; IV_LEN], &[1; 32 + TAG_LEN]);
        let parts = parse(&good).unwrap();
        assert_eq!(parts.iv, &[7; IV_LEN]);
        assert_eq!(parts.sealed.len(), 48);
        assert!(parse(&[]).is_err());
        assert!(parse(&[0x02; 60]).is_err());
        assert!(parse(&good[..1 + IV_LEN + TAG_LEN]).is_err());
        assert!(parse(&assemble(&[0; IV_LEN], &vec![0; MAX_KEY_LEN + TAG_LEN + 1])).is_err());
        assert!(check_key(&[]).is_err());
        assert!(check_key(&[0; MAX_KEY_LEN + 1]).is_err());
        check_key(&[0; 32]).unwrap();
    }
}
