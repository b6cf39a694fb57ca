//! Public keys as X.509 SubjectPublicKeyInfo (RFC 5280 §4.1.2.7), and signature verification.
//!
//! A [`PublicKey`] is parsed once (with OpenSSL's DER decoder, which every PKI tool shares) and
//! verified many times (with ring, the fastest verifier we have).

use std::fmt;

use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey, PointConversionForm};
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Public};
use openssl::rsa::Rsa;
use ring::signature::{self as ring_sig, UnparsedPublicKey};
use sha2::{Digest, Sha256};

use crate::{Error, KeyType, SignatureAlgorithm};

/// Largest SubjectPublicKeyInfo we accept: an RSA-8192 key is about 1,100 bytes.
pub const MAX_SPKI_LEN: usize = 2048;

/// A public key: its DER SubjectPublicKeyInfo, its type, and the raw key bits ring verifies with.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    spki: Vec<u8>,
    key_type: KeyType,
    /// The subjectPublicKey BIT STRING contents: an uncompressed EC point, 32 Ed25519 bytes, or a
    /// PKCS#1 RSAPublicKey.
    raw: Vec<u8>,
}

// === impl PublicKey ===

impl PublicKey {
    /// Parses a DER SubjectPublicKeyInfo of a P-256, Ed25519 or RSA (2048 or 3072 bit) key.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] for bytes that are not such a key, including other curves, other RSA sizes,
    /// trailing bytes and input over [`MAX_SPKI_LEN`].
    pub fn from_spki_der(spki: &[u8]) -> Result<Self, Error> {
        if spki.len() > MAX_SPKI_LEN {
            return Err(Error::decode(
                "public key",
                format!("{} bytes is over the limit of {MAX_SPKI_LEN}", spki.len()),
            ));
        }
        let pkey = PKey::public_key_from_der(spki).map_err(|e| Error::decode("public key", e))?;
        let key = Self::from_openssl(&pkey)?;
        // OpenSSL ignores trailing bytes; a canonical re-encoding must give the input back.
        if key.spki != spki {
            return Err(Error::decode(
                "public key",
                "not in canonical DER (trailing or re-encoded bytes)",
            ));
        }
        Ok(key)
    }

    /// Parses a PEM `PUBLIC KEY` block.
    pub fn from_pem(pem: &[u8]) -> Result<Self, Error> {
        let pkey =
            PKey::public_key_from_pem(pem).map_err(|e| Error::decode("public key PEM", e))?;
        Self::from_openssl(&pkey)
    }

    /// Builds a P-256 key from an uncompressed SEC1 point (`04 || x || y`).
    pub fn from_ec_p256_point(point: &[u8]) -> Result<Self, Error> {
        let group = p256_group()?;
        let mut ctx =
            openssl::bn::BigNumContext::new().map_err(|e| Error::crypto("ec point", e))?;
        let point = openssl::ec::EcPoint::from_bytes(&group, point, &mut ctx)
            .map_err(|e| Error::decode("EC point", e))?;
        let ec =
            EcKey::from_public_key(&group, &point).map_err(|e| Error::decode("EC point", e))?;
        let pkey = PKey::from_ec_key(ec).map_err(|e| Error::crypto("ec key", e))?;
        Self::from_openssl(&pkey)
    }

    /// Builds an Ed25519 key from its 32 bytes.
    pub fn from_ed25519(bytes: &[u8]) -> Result<Self, Error> {
        let pkey = PKey::public_key_from_raw_bytes(bytes, Id::ED25519)
            .map_err(|e| Error::decode("Ed25519 public key", e))?;
        Self::from_openssl(&pkey)
    }

    /// Builds an RSA key from its big-endian modulus and public exponent.
    pub fn from_rsa_components(modulus: &[u8], exponent: &[u8]) -> Result<Self, Error> {
        let n = BigNum::from_slice(modulus).map_err(|e| Error::decode("RSA modulus", e))?;
        let e = BigNum::from_slice(exponent).map_err(|e| Error::decode("RSA exponent", e))?;
        let rsa =
            Rsa::from_public_components(n, e).map_err(|e| Error::decode("RSA public key", e))?;
        let pkey = PKey::from_rsa(rsa).map_err(|e| Error::crypto("rsa key", e))?;
        Self::from_openssl(&pkey)
    }

    /// Builds an RSA key from a DER PKCS#1 `RSAPublicKey`.
    pub fn from_rsa_pkcs1_der(der: &[u8]) -> Result<Self, Error> {
        let rsa =
            Rsa::public_key_from_der_pkcs1(der).map_err(|e| Error::decode("RSA public key", e))?;
        let pkey = PKey::from_rsa(rsa).map_err(|e| Error::crypto("rsa key", e))?;
        Self::from_openssl(&pkey)
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// The subjectPublicKey bits: an uncompressed EC point, 32 Ed25519 bytes or a PKCS#1
    /// RSAPublicKey.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The key type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The PEM `PUBLIC KEY` block.
    pub fn to_pem(&self) -> String {
        let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
        let b64 = openssl::base64::encode_block(&self.spki);
        for line in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str("-----END PUBLIC KEY-----\n");
        out
    }

    /// SHA-256 of the SubjectPublicKeyInfo, in lower-case hex: how operators name a key.
    pub fn fingerprint(&self) -> String {
        Sha256::digest(&self.spki)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Checks `signature` over `message` with `algorithm`.
    ///
    /// # Errors
    ///
    /// [`Error::BadSignature`] when the key cannot be used with the algorithm or the signature does
    /// not verify.
    pub fn verify(
        &self,
        algorithm: SignatureAlgorithm,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), Error> {
        if !self.key_type.supports(algorithm) {
            return Err(Error::BadSignature {
                algorithm: algorithm.to_string(),
                reason: "the key type does not match the algorithm",
            });
        }
        let params: &dyn ring_sig::VerificationAlgorithm = match algorithm {
            SignatureAlgorithm::EcdsaP256Sha256 => &ring_sig::ECDSA_P256_SHA256_ASN1,
            SignatureAlgorithm::Ed25519 => &ring_sig::ED25519,
            SignatureAlgorithm::RsaPkcs1Sha256 => &ring_sig::RSA_PKCS1_2048_8192_SHA256,
            SignatureAlgorithm::RsaPssSha256 => &ring_sig::RSA_PSS_2048_8192_SHA256,
        };
        UnparsedPublicKey::new(params, &self.raw)
            .verify(message, signature)
            .map_err(|_| Error::BadSignature {
                algorithm: algorithm.to_string(),
                reason: "the signature does not match",
            })
    }

    fn from_openssl(pkey: &PKey<Public>) -> Result<Self, Error> {
        let (key_type, raw) = match pkey.id() {
            Id::EC => {
                let ec = pkey.ec_key().map_err(|e| Error::decode("public key", e))?;
                if ec.group().curve_name() != Some(Nid::X9_62_PRIME256V1) {
                    return Err(Error::decode("public key", "EC key is not on P-256"));
                }
                let mut ctx =
                    openssl::bn::BigNumContext::new().map_err(|e| Error::crypto("ec point", e))?;
                let raw = ec
                    .public_key()
                    .to_bytes(ec.group(), PointConversionForm::UNCOMPRESSED, &mut ctx)
                    .map_err(|e| Error::decode("public key", e))?;
                (KeyType::EcP256, raw)
            }
            Id::ED25519 => {
                let raw = pkey
                    .raw_public_key()
                    .map_err(|e| Error::decode("public key", e))?;
                (KeyType::Ed25519, raw)
            }
            Id::RSA => {
                let rsa = pkey.rsa().map_err(|e| Error::decode("public key", e))?;
                let key_type = match rsa.n().num_bits() {
                    2048 => KeyType::Rsa2048,
                    3072 => KeyType::Rsa3072,
                    bits => {
                        return Err(Error::decode(
                            "public key",
                            format!("RSA-{bits} is not supported (2048 or 3072)"),
                        ));
                    }
                };
                let raw = rsa
                    .public_key_to_der_pkcs1()
                    .map_err(|e| Error::decode("public key", e))?;
                (key_type, raw)
            }
            other => {
                return Err(Error::decode(
                    "public key",
                    format!("unsupported key type {other:?}"),
                ));
            }
        };
        let spki = pkey
            .public_key_to_der()
            .map_err(|e| Error::decode("public key", e))?;
        Ok(PublicKey {
            spki,
            key_type,
            raw,
        })
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("key_type", &self.key_type)
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

fn p256_group() -> Result<EcGroup, Error> {
    EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(|e| Error::crypto("ec group", e))
}

/// Encodes a raw PKCS#11 ECDSA signature (`r || s`, each as long as the curve order) as the DER
/// `ECDSA-Sig-Value` that X.509 and CMS carry.
pub(crate) fn ecdsa_raw_to_der(raw: &[u8]) -> Result<Vec<u8>, Error> {
    if raw.len() != 64 {
        return Err(Error::decode(
            "ECDSA signature from token",
            format!("{} bytes, expected 64", raw.len()),
        ));
    }
    let (r, s) = raw.split_at(32);
    let r = BigNum::from_slice(r).map_err(|e| Error::crypto("ecdsa signature", e))?;
    let s = BigNum::from_slice(s).map_err(|e| Error::crypto("ecdsa signature", e))?;
    let sig = openssl::ecdsa::EcdsaSig::from_private_components(r, s)
        .map_err(|e| Error::crypto("ecdsa signature", e))?;
    sig.to_der()
        .map_err(|e| Error::crypto("ecdsa signature", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_trailing_bytes_are_refused() {
        assert!(PublicKey::from_spki_der(b"").is_err());
        assert!(PublicKey::from_spki_der(&[0x30, 0x03, 0x02, 0x01]).is_err());
        let ec = EcKey::generate(&p256_group().unwrap()).unwrap();
        let spki = PKey::from_ec_key(ec).unwrap().public_key_to_der().unwrap();
        let key = PublicKey::from_spki_der(&spki).unwrap();
        assert_eq!(key.key_type(), KeyType::EcP256);
        assert_eq!(key.raw().len(), 65);
        let mut long = spki.clone();
        long.push(0);
        assert!(PublicKey::from_spki_der(&long).is_err());
        assert!(PublicKey::from_spki_der(&vec![0x30; MAX_SPKI_LEN + 1]).is_err());
        let pem = key.to_pem();
        assert_eq!(PublicKey::from_pem(pem.as_bytes()).unwrap(), key);
    }

    #[test]
    fn other_curves_are_refused() {
        let group = EcGroup::from_curve_name(Nid::SECP384R1).unwrap();
        let spki = PKey::from_ec_key(EcKey::generate(&group).unwrap())
            .unwrap()
            .public_key_to_der()
            .unwrap();
        assert!(PublicKey::from_spki_der(&spki).is_err());
    }

    #[test]
    fn raw_ecdsa_becomes_der() {
        assert!(ecdsa_raw_to_der(&[1; 63]).is_err());
        let der = ecdsa_raw_to_der(&[0x80; 64]).unwrap();
        // SEQUENCE, two INTEGERs of 33 bytes each (a leading zero keeps them positive).
        assert_eq!(der.len(), 2 + 2 * (2 + 33));
    }
}
