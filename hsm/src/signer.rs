//! The signing abstraction: a [`KeyStore`] holds keys by label, a [`Signer`] signs with one of them.

use std::fmt;
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::wrap::Wrapper;
use crate::{Error, KeyType, PublicKey, SignatureAlgorithm};

/// Longest key label we accept; PKCS#11 tokens commonly allow 32 to 64 bytes.
pub const MAX_LABEL_LEN: usize = 64;

/// Signs messages with one private key that never leaves its store.
///
/// Implementations MUST be safe to call from many threads at once and SHOULD sign on several
/// threads in parallel where the store allows it. A signature returned by [`Signer::sign`] MUST
/// verify with [`PublicKey::verify`] under [`Signer::algorithm`].
pub trait Signer: Send + Sync + fmt::Debug {
    /// The key's label in its store.
    fn label(&self) -> &str;

    /// The algorithm every signature from this signer uses.
    fn algorithm(&self) -> SignatureAlgorithm;

    /// The public half of the key.
    fn public_key(&self) -> &PublicKey;

    /// Signs `message` (the whole message: the signer hashes it as the algorithm requires).
    ///
    /// # Errors
    ///
    /// Store failures: the token is gone and cannot be reached again, the login was lost and the
    /// PIN is now refused, and so on. A signer SHOULD recover from a lost session by itself.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error>;
}

/// A place that generates and holds private keys, found by label.
///
/// Key generation MUST NOT overwrite an existing key. Private keys MUST NOT be exportable through
/// this interface.
pub trait KeyStore: Send + Sync + fmt::Debug {
    /// A human description for logs and CLI output, e.g. `PKCS#11 token 'gw-signing'`.
    fn describe(&self) -> String;

    /// Generates a key pair in the store and returns its public key.
    ///
    /// # Errors
    ///
    /// [`Error::KeyExists`] when the label is taken.
    fn generate(&self, label: &str, key_type: KeyType) -> Result<PublicKey, Error>;

    /// Every key pair in the store.
    fn keys(&self) -> Result<Vec<KeyInfo>, Error>;

    /// The public key of the key pair with this label.
    fn public_key(&self, label: &str) -> Result<PublicKey, Error>;

    /// A signer for the key with this label, using `algorithm` or the key type's default.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchKey`], [`Error::AlgorithmMismatch`] or [`Error::MechanismNotSupported`].
    fn signer(
        &self,
        label: &str,
        algorithm: Option<SignatureAlgorithm>,
    ) -> Result<Arc<dyn Signer>, Error>;

    /// Generates an AES-256 wrapping key labelled `label` (see [`crate::wrap`]). On a token it is
    /// a persistent secret key, sensitive and not extractable, usable only to encrypt and decrypt.
    ///
    /// Wrapping keys and key pairs are told apart by kind: a wrapping key and a key pair MAY share
    /// a label.
    ///
    /// # Errors
    ///
    /// [`Error::KeyExists`] when a wrapping key with this label exists.
    fn generate_wrapping_key(&self, label: &str) -> Result<(), Error>;

    /// A wrapper over the wrapping key labelled `label`.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchKey`] (kind "secret") or [`Error::MechanismNotSupported`].
    fn wrapper(&self, label: &str) -> Result<Arc<dyn Wrapper>, Error>;
}

/// What a store knows about one of its key pairs.
#[derive(Clone, Debug)]
pub struct KeyInfo {
    /// The label.
    pub label: String,
    /// The public key (and through it, the key type).
    pub public_key: PublicKey,
}

/// A PIN or passphrase. Its `Debug` output is redacted and its memory is wiped on drop.
#[derive(Clone)]
pub struct Pin(Zeroizing<String>);

// === impl Pin ===

impl Pin {
    /// Wraps a secret. Trailing newline characters (from a PIN file) are removed.
    pub fn new(secret: impl Into<String>) -> Self {
        let mut s: String = secret.into();
        while s.ends_with('\n') || s.ends_with('\r') {
            s.pop();
        }
        Pin(Zeroizing::new(s))
    }

    /// The secret itself, to hand to the token. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(<redacted>)")
    }
}

/// Checks that a key label is 1 to [`MAX_LABEL_LEN`] characters of `A-Z a-z 0-9 . _ -`, not starting
/// with a dot: labels name files in the software store and objects on tokens.
pub fn check_label(label: &str) -> Result<(), Error> {
    let ok_chars = label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    let reason = if label.is_empty() || label.len() > MAX_LABEL_LEN {
        format!(
            "must be 1 to {MAX_LABEL_LEN} characters long, got {}",
            label.len()
        )
    } else if !ok_chars {
        "may hold only letters, digits, '.', '_' and '-'".to_owned()
    } else if label.starts_with('.') {
        "must not start with '.'".to_owned()
    } else {
        return Ok(());
    };
    Err(Error::Config {
        key: "key label",
        value: label.to_owned(),
        reason,
    })
}

pub(crate) fn check_algorithm(
    label: &str,
    key_type: KeyType,
    algorithm: SignatureAlgorithm,
) -> Result<(), Error> {
    if key_type.supports(algorithm) {
        return Ok(());
    }
    Err(Error::AlgorithmMismatch {
        label: label.to_owned(),
        key_type: key_type.to_string(),
        algorithm: algorithm.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        for good in ["a", "gw-sign.2026_01", &"x".repeat(MAX_LABEL_LEN)] {
            check_label(good).unwrap();
        }
        for bad in [
            "",
            ".hidden",
            "a/b",
            "../x",
            "ä",
            &"x".repeat(MAX_LABEL_LEN + 1),
        ] {
            assert!(check_label(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pin_is_redacted_and_trimmed() {
        let pin = Pin::new("1234\n");
        assert_eq!(pin.expose(), "1234");
        assert_eq!(format!("{pin:?}"), "Pin(<redacted>)");
    }
}
