//! Compact JWS with ES256 (RFC 7515, RFC 7518 §3.4) and the P-256 public key as a JWK
//! (RFC 7517): what an OpenID Connect ID token is signed with.

use base64::Engine as _;
use ring::rand::SecureRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};

/// Longest compact JWS accepted, in bytes: ID tokens are a few hundred bytes.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// A P-256 public key as a JWK.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// `EC`.
    pub kty: String,
    /// `P-256`.
    pub crv: String,
    /// The x coordinate, base64url.
    pub x: String,
    /// The y coordinate, base64url.
    pub y: String,
    /// The key id.
    #[serde(default)]
    pub kid: Option<String>,
    /// `sig`.
    #[serde(default, rename = "use")]
    pub usage: Option<String>,
    /// `ES256`.
    #[serde(default)]
    pub alg: Option<String>,
}

/// A JWK set.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct JwkSet {
    /// The keys.
    pub keys: Vec<Jwk>,
}

/// A P-256 signing key held in memory (the development OpenID provider's).
pub struct SigningKey {
    pair: EcdsaKeyPair,
    kid: String,
    rng: ring::rand::SystemRandom,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// base64url without padding.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding.
///
/// # Errors
///
/// A message when `s` is not base64url.
pub fn unb64(s: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|e| format!("not base64url: {e}"))
}

// === impl SigningKey ===

impl SigningKey {
    /// A fresh key.
    ///
    /// # Errors
    ///
    /// A message when the system random generator fails.
    pub fn generate() -> Result<SigningKey, String> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| "key generation failed".to_owned())?;
        let pair = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.as_ref(),
            &rng,
        )
        .map_err(|_| "key decoding failed".to_owned())?;
        let mut id = [0u8; 8];
        rng.fill(&mut id).map_err(|_| "no randomness".to_owned())?;
        Ok(SigningKey {
            pair,
            kid: b64(&id),
            rng,
        })
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Jwk {
        // An uncompressed P-256 point: 0x04, x (32 bytes), y (32 bytes).
        let point = self.pair.public_key().as_ref();
        let coordinate =
            |range: std::ops::Range<usize>| point.get(range).map(b64).unwrap_or_default();
        Jwk {
            kty: "EC".into(),
            crv: "P-256".into(),
            x: coordinate(1..33),
            y: coordinate(33..65),
            kid: Some(self.kid.clone()),
            usage: Some("sig".into()),
            alg: Some("ES256".into()),
        }
    }

    /// `claims` signed as a compact JWS.
    ///
    /// # Errors
    ///
    /// A message when signing fails.
    pub fn sign(&self, claims: &serde_json::Value) -> Result<String, String> {
        let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": self.kid});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = self
            .pair
            .sign(&self.rng, input.as_bytes())
            .map_err(|_| "signing failed".to_owned())?;
        Ok(format!("{input}.{}", b64(signature.as_ref())))
    }
}

/// The claims of a compact JWS whose ES256 signature verifies under one of `keys` (the one its
/// `kid` names, or any when it names none).
///
/// # Errors
///
/// A message saying which check failed.
pub fn verify(token: &str, keys: &JwkSet) -> Result<serde_json::Value, String> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(format!(
            "token is {} bytes, more than {MAX_TOKEN_LEN}",
            token.len()
        ));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a compact JWS of three parts".into());
    };
    let header: serde_json::Value =
        serde_json::from_slice(&unb64(header)?).map_err(|e| format!("header: {e}"))?;
    if header["alg"] != "ES256" {
        return Err(format!("algorithm {} is not ES256", header["alg"]));
    }
    let kid = header["kid"].as_str();
    let signature = unb64(sig)?;
    let input = token
        .get(..token.len() - sig.len() - 1)
        .ok_or("malformed token")?;
    let candidates = keys.keys.iter().filter(|k| {
        k.kty == "EC" && k.crv == "P-256" && (kid.is_none() || k.kid.as_deref() == kid)
    });
    for key in candidates {
        let mut point = vec![4u8];
        point.extend(unb64(&key.x)?);
        point.extend(unb64(&key.y)?);
        if signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &point)
            .verify(input.as_bytes(), &signature)
            .is_ok()
        {
            return serde_json::from_slice(&unb64(payload)?).map_err(|e| format!("claims: {e}"));
        }
    }
    Err("the signature does not verify under the provider's keys".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_tokens_verify_and_every_change_is_refused() {
        let key = SigningKey::generate().unwrap();
        let keys = JwkSet {
            keys: vec![key.jwk()],
        };
        let token = key
            .sign(&serde_json::json!({"sub": "EE38001085718"}))
            .unwrap();
        assert_eq!(verify(&token, &keys).unwrap()["sub"], "EE38001085718");

        let other = SigningKey::generate().unwrap();
        assert!(
            verify(
                &token,
                &JwkSet {
                    keys: vec![other.jwk()]
                }
            )
            .is_err()
        );
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64(br#"{"sub":"EE49002124277"}"#),
            parts[2]
        );
        assert!(verify(&forged, &keys).is_err());
        let none = format!("{}.{}.", b64(br#"{"alg":"none"}"#), parts[1]);
        assert!(verify(&none, &keys).is_err());
        for garbage in ["", "a.b", "a.b.c.d", "...", &"x".repeat(MAX_TOKEN_LEN + 1)] {
            assert!(verify(garbage, &keys).is_err(), "{garbage}");
        }
    }
}
