//! The one error type of this crate, grouped by who has to act.

use std::path::PathBuf;

/// Errors from key stores, signers and verification.
///
/// Messages name the token, key label, file or mechanism involved; they never contain a PIN or key
/// material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // --- The operator: a setting or a credential is wrong. ---
    /// The user PIN was refused by the token (CKR_PIN_INCORRECT).
    #[error("token '{token}' refused the user PIN (wrong PIN)")]
    WrongPin {
        /// Token label.
        token: String,
    },
    /// The token is locked after too many wrong PINs (CKR_PIN_LOCKED); the security officer must
    /// unblock it.
    #[error(
        "token '{token}' is locked (too many wrong PINs); the security officer must reset the user PIN"
    )]
    TokenLocked {
        /// Token label.
        token: String,
    },
    /// No initialised token with this label is present in the module.
    #[error("no token labelled '{label}' in PKCS#11 module {module} (tokens present: {present:?})")]
    NoSuchToken {
        /// The label asked for.
        label: String,
        /// The PKCS#11 module path.
        module: PathBuf,
        /// Labels of the tokens that are present.
        present: Vec<String>,
    },
    /// No key with this label exists in the key store.
    #[error("no {kind} key labelled '{label}' in {store}")]
    NoSuchKey {
        /// The key label asked for.
        label: String,
        /// Which half was missing: "private" or "public" (or "key" for software stores).
        kind: &'static str,
        /// The key store (token label or key directory).
        store: String,
    },
    /// A key with this label already exists; key generation never overwrites a key.
    #[error("a key labelled '{label}' already exists in {store}")]
    KeyExists {
        /// The key label.
        label: String,
        /// The key store.
        store: String,
    },
    /// The token does not offer the mechanism that the algorithm needs.
    #[error("token '{token}' does not support mechanism {mechanism}, needed for {algorithm}")]
    MechanismNotSupported {
        /// Token label.
        token: String,
        /// The PKCS#11 mechanism name.
        mechanism: String,
        /// The signature algorithm or key type that needed it.
        algorithm: String,
    },
    /// The key cannot be used with the requested algorithm (an Ed25519 key for RSA-PSS, say).
    #[error("key '{label}' is a {key_type} key and cannot sign with {algorithm}")]
    AlgorithmMismatch {
        /// The key label.
        label: String,
        /// The key's type.
        key_type: String,
        /// The algorithm asked for.
        algorithm: String,
    },
    /// The PIN could not be read from its file or environment variable.
    #[error("cannot read the user PIN from {source_name}: {reason}")]
    Pin {
        /// Where the PIN was to come from: "file /path" or "environment variable NAME".
        source_name: String,
        /// Why it failed (never the PIN itself).
        reason: String,
    },
    /// A setting is invalid.
    #[error("invalid setting {key} = {value:?}: {reason}")]
    Config {
        /// The configuration key.
        key: &'static str,
        /// The value given (never a secret).
        value: String,
        /// Why it is refused.
        reason: String,
    },

    // --- The environment: the module, the token or the disk failed. ---
    /// The PKCS#11 module could not be loaded or initialised.
    #[error("cannot load PKCS#11 module {module}: {reason}")]
    Module {
        /// The module path.
        module: PathBuf,
        /// Why.
        reason: String,
    },
    /// A PKCS#11 call failed for a reason not listed above.
    #[error("PKCS#11 {operation} on token '{token}' failed: {reason}")]
    Pkcs11 {
        /// Token label.
        token: String,
        /// What was being done ("sign", "open session", "find key"...).
        operation: &'static str,
        /// The PKCS#11 return value or cryptoki error.
        reason: String,
    },
    /// The token went away and could not be reached again within the retry budget.
    #[error("token '{token}' is unavailable after {attempts} attempts to reconnect: {reason}")]
    TokenUnavailable {
        /// Token label.
        token: String,
        /// How many times the signer tried to re-open and log in.
        attempts: u32,
        /// The last failure.
        reason: String,
    },
    /// A key file could not be read or written.
    #[error("key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Software key generation or signing failed inside the crypto library.
    #[error("software crypto failed during {operation}: {reason}")]
    Crypto {
        /// What was being done.
        operation: &'static str,
        /// Why.
        reason: String,
    },
    /// The batch signer has shut down; no more requests are taken.
    #[error("batch signer for key '{label}' has stopped")]
    BatchSignerStopped {
        /// The key label.
        label: String,
    },

    // --- The peer or file: bytes that did not decode or verify. ---
    /// A public key, key file, signature or batch proof did not decode.
    #[error("malformed {what}: {reason}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// A signature did not verify.
    #[error("signature does not verify ({algorithm}): {reason}")]
    BadSignature {
        /// The algorithm it was checked with.
        algorithm: String,
        /// What failed: the root signature, the hash chain, a key/algorithm mismatch.
        reason: &'static str,
    },

    /// A wrapped key did not authenticate under the wrapping key: the bytes were changed, or
    /// another key wrapped them.
    #[error(
        "wrapped key does not unwrap with key '{label}' in {store} (tampered, or wrapped by another key)"
    )]
    Unwrap {
        /// The wrapping key's label.
        label: String,
        /// The key store.
        store: String,
    },

    // --- Us. ---
    /// A bug in this crate.
    #[error("internal error: {0} (please report this)")]
    Unreachable(&'static str),
}

impl Error {
    pub(crate) fn decode(what: &'static str, reason: impl ToString) -> Self {
        Error::Decode {
            what,
            reason: reason.to_string(),
        }
    }

    pub(crate) fn crypto(operation: &'static str, reason: impl ToString) -> Self {
        Error::Crypto {
            operation,
            reason: reason.to_string(),
        }
    }
}
