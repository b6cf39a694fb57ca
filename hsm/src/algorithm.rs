//! Key types and signature algorithms, with their names in configuration, X.509 and PKCS#11.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// The kind of key pair a store generates and holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyType {
    /// NIST P-256 (secp256r1) elliptic-curve key, the default.
    EcP256,
    /// Ed25519 Edwards-curve key.
    Ed25519,
    /// RSA with a 2048-bit modulus.
    Rsa2048,
    /// RSA with a 3072-bit modulus.
    Rsa3072,
}

/// A signature algorithm: a key type, a hash and a padding or encoding.
///
/// Signatures are returned in the encoding that X.509, CMS and RFC 3161 use: ECDSA as a DER
/// `ECDSA-Sig-Value` (SEQUENCE of r and s), Ed25519 as 64 raw bytes, RSA as the big-endian integer of the
/// modulus length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureAlgorithm {
    /// ECDSA over P-256 with SHA-256 (`ecdsa-with-SHA256`), the default.
    EcdsaP256Sha256,
    /// Pure Ed25519 (RFC 8032).
    Ed25519,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (`sha256WithRSAEncryption`).
    RsaPkcs1Sha256,
    /// RSASSA-PSS with SHA-256, MGF1 with SHA-256 and a 32-byte salt (RFC 4055).
    RsaPssSha256,
}

/// The default key type: P-256 is what SoftHSM2 and hardware HSMs sign fastest.
pub const DEFAULT_KEY_TYPE: KeyType = KeyType::EcP256;

// === impl KeyType ===

impl KeyType {
    /// Every key type, in the order the CLI lists them.
    pub const ALL: [KeyType; 4] = [
        KeyType::EcP256,
        KeyType::Ed25519,
        KeyType::Rsa2048,
        KeyType::Rsa3072,
    ];

    /// The name used in configuration and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::EcP256 => "ec-p256",
            KeyType::Ed25519 => "ed25519",
            KeyType::Rsa2048 => "rsa2048",
            KeyType::Rsa3072 => "rsa3072",
        }
    }

    /// The algorithm a key of this type signs with unless told otherwise.
    pub fn default_algorithm(self) -> SignatureAlgorithm {
        match self {
            KeyType::EcP256 => SignatureAlgorithm::EcdsaP256Sha256,
            KeyType::Ed25519 => SignatureAlgorithm::Ed25519,
            KeyType::Rsa2048 | KeyType::Rsa3072 => SignatureAlgorithm::RsaPkcs1Sha256,
        }
    }

    /// Whether a key of this type can sign with `algorithm`.
    pub fn supports(self, algorithm: SignatureAlgorithm) -> bool {
        matches!(
            (self, algorithm),
            (KeyType::EcP256, SignatureAlgorithm::EcdsaP256Sha256)
                | (KeyType::Ed25519, SignatureAlgorithm::Ed25519)
                | (
                    KeyType::Rsa2048 | KeyType::Rsa3072,
                    SignatureAlgorithm::RsaPkcs1Sha256 | SignatureAlgorithm::RsaPssSha256
                )
        )
    }

    /// The RSA modulus length in bits, for RSA key types.
    pub fn rsa_bits(self) -> Option<usize> {
        match self {
            KeyType::Rsa2048 => Some(2048),
            KeyType::Rsa3072 => Some(3072),
            KeyType::EcP256 | KeyType::Ed25519 => None,
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeyType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        KeyType::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| Error::Config {
                key: "key type",
                value: s.to_owned(),
                reason: "expected one of ec-p256, ed25519, rsa2048, rsa3072".to_owned(),
            })
    }
}

// === impl SignatureAlgorithm ===

impl SignatureAlgorithm {
    /// Every algorithm.
    pub const ALL: [SignatureAlgorithm; 4] = [
        SignatureAlgorithm::EcdsaP256Sha256,
        SignatureAlgorithm::Ed25519,
        SignatureAlgorithm::RsaPkcs1Sha256,
        SignatureAlgorithm::RsaPssSha256,
    ];

    /// The name used in configuration, on the command line and in the batch signature format.
    pub fn name(self) -> &'static str {
        match self {
            SignatureAlgorithm::EcdsaP256Sha256 => "ecdsa-p256-sha256",
            SignatureAlgorithm::Ed25519 => "ed25519",
            SignatureAlgorithm::RsaPkcs1Sha256 => "rsa-pkcs1-sha256",
            SignatureAlgorithm::RsaPssSha256 => "rsa-pss-sha256",
        }
    }

    /// The one-byte code of this algorithm in binary formats (the batch signature format). These
    /// codes are part of archived records and never change meaning.
    pub fn code(self) -> u8 {
        match self {
            SignatureAlgorithm::EcdsaP256Sha256 => 1,
            SignatureAlgorithm::Ed25519 => 2,
            SignatureAlgorithm::RsaPkcs1Sha256 => 3,
            SignatureAlgorithm::RsaPssSha256 => 4,
        }
    }

    /// The algorithm with this binary code.
    pub fn from_code(code: u8) -> Option<Self> {
        SignatureAlgorithm::ALL
            .into_iter()
            .find(|a| a.code() == code)
    }

    /// The algorithm rcgen uses to write certificates and CSRs signed with this algorithm.
    ///
    /// rcgen has no RSA-PSS writer, so certificates and CSRs of RSA keys are always signed with
    /// PKCS#1 v1.5, whichever algorithm the key otherwise signs with.
    pub(crate) fn rcgen(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            SignatureAlgorithm::EcdsaP256Sha256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            SignatureAlgorithm::Ed25519 => &rcgen::PKCS_ED25519,
            SignatureAlgorithm::RsaPkcs1Sha256 | SignatureAlgorithm::RsaPssSha256 => {
                &rcgen::PKCS_RSA_SHA256
            }
        }
    }
}

impl fmt::Display for SignatureAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SignatureAlgorithm {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        SignatureAlgorithm::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| Error::Config {
                key: "signature algorithm",
                value: s.to_owned(),
                reason:
                    "expected one of ecdsa-p256-sha256, ed25519, rsa-pkcs1-sha256, rsa-pss-sha256"
                        .to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_codes_round_trip() {
        for t in KeyType::ALL {
            assert_eq!(t.name().parse::<KeyType>().unwrap(), t);
            assert!(t.supports(t.default_algorithm()));
        }
        for a in SignatureAlgorithm::ALL {
            assert_eq!(a.name().parse::<SignatureAlgorithm>().unwrap(), a);
            assert_eq!(SignatureAlgorithm::from_code(a.code()), Some(a));
        }
        assert!(SignatureAlgorithm::from_code(0).is_none());
        assert!("rsa1024".parse::<KeyType>().is_err());
    }
}
