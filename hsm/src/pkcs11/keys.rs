//! Key objects on the token: generation templates, lookup by label, and public key export.

use cryptoki::context::Function;
use cryptoki::error::RvError;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType as CkKeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState};

use crate::{Error, KeyType, PublicKey};

/// DER of the named curve P-256 (`prime256v1`, OID 1.2.840.10045.3.1.7) for `CKA_EC_PARAMS`.
pub(crate) const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// DER of the Ed25519 OID (1.3.101.112, RFC 8410) for `CKA_EC_PARAMS`. PKCS#11 3.0 also allows the
/// printable string "edwards25519"; SoftHSM2 2.6.1 accepts both, and we write the OID, which more
/// tokens know.
pub(crate) const ED25519_PARAMS: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

/// DER of the printable string "edwards25519", the other `CKA_EC_PARAMS` of an Ed25519 key.
pub(crate) const ED25519_PARAMS_NAME: &[u8] = b"\x13\x0cedwards25519";

/// The RSA public exponent, 65537.
const RSA_EXPONENT: &[u8] = &[0x01, 0x00, 0x01];

/// Length of the random `CKA_ID` shared by the two halves of a generated key pair.
const KEY_ID_LEN: u32 = 16;

/// Which half of a key pair, or a secret (wrapping) key, which is found the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Half {
    Private,
    Public,
    Secret,
}

impl Half {
    fn class(self) -> ObjectClass {
        match self {
            Half::Private => ObjectClass::PRIVATE_KEY,
            Half::Public => ObjectClass::PUBLIC_KEY,
            Half::Secret => ObjectClass::SECRET_KEY,
        }
    }

    /// The name in [`Error::NoSuchKey`].
    pub(crate) fn kind(self) -> &'static str {
        match self {
            Half::Private => "private",
            Half::Public => "public",
            Half::Secret => "secret",
        }
    }
}

/// The key-generation mechanism of a key type.
pub(crate) fn generation_mechanism(key_type: KeyType) -> MechanismType {
    match key_type {
        KeyType::EcP256 => MechanismType::ECC_KEY_PAIR_GEN,
        KeyType::Ed25519 => MechanismType::ECC_EDWARDS_KEY_PAIR_GEN,
        KeyType::Rsa2048 | KeyType::Rsa3072 => MechanismType::RSA_PKCS_KEY_PAIR_GEN,
    }
}

/// Finds the token object of `half` labelled `label`: `Ok(None)` when there is none. Session
/// objects (the signers' working copies of private keys) are not matched.
///
/// Private objects are invisible, not refused, when the login was lost: a private key that is not
/// found on a session that is no longer logged in is reported as `CKR_USER_NOT_LOGGED_IN`, so that
/// the caller logs in again rather than report the key missing.
pub(crate) fn find(
    session: &Session,
    label: &str,
    half: Half,
) -> cryptoki::error::Result<Option<ObjectHandle>> {
    let template = [
        Attribute::Token(true),
        Attribute::Class(half.class()),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    let found = session.find_objects(&template)?.into_iter().next();
    if found.is_none() && half != Half::Public {
        let state = session.get_session_info()?.session_state();
        if !matches!(state, SessionState::RoUser | SessionState::RwUser) {
            return Err(cryptoki::error::Error::Pkcs11(
                RvError::UserNotLoggedIn,
                Function::FindObjects,
            ));
        }
    }
    Ok(found)
}

/// Generates a key pair of `key_type` on the token; returns the public key's handle.
pub(crate) fn generate(
    session: &Session,
    label: &str,
    key_type: KeyType,
) -> cryptoki::error::Result<ObjectHandle> {
    let id = session.generate_random_vec(KEY_ID_LEN)?;
    let label = label.as_bytes().to_vec();
    let mut public = vec![
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Label(label.clone()),
        Attribute::Id(id.clone()),
    ];
    let mechanism = match key_type {
        KeyType::EcP256 => {
            public.push(Attribute::EcParams(P256_PARAMS.to_vec()));
            Mechanism::EccKeyPairGen
        }
        KeyType::Ed25519 => {
            public.push(Attribute::EcParams(ED25519_PARAMS.to_vec()));
            Mechanism::EccEdwardsKeyPairGen
        }
        KeyType::Rsa2048 | KeyType::Rsa3072 => {
            let bits: u64 = if key_type == KeyType::Rsa2048 {
                2048
            } else {
                3072
            };
            public.push(Attribute::ModulusBits(bits.into()));
            public.push(Attribute::PublicExponent(RSA_EXPONENT.to_vec()));
            Mechanism::RsaPkcsKeyPairGen
        }
    };
    // The private half never leaves the token: sensitive, not extractable, usable only to sign.
    let private = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Label(label),
        Attribute::Id(id),
    ];
    let (public, _private) = session.generate_key_pair(&mechanism, &public, &private)?;
    Ok(public)
}

/// Generates an AES-256 secret key for wrapping on the token; returns its handle.
pub(crate) fn generate_wrapping_key(
    session: &Session,
    label: &str,
) -> cryptoki::error::Result<ObjectHandle> {
    let id = session.generate_random_vec(KEY_ID_LEN)?;
    let len = u64::try_from(crate::wrap::WRAPPING_KEY_LEN).unwrap_or(32);
    // Like a private key: kept on the token, sensitive, never extractable, and usable only to
    // encrypt and decrypt the caller's bytes (not to wrap other key objects out of the token).
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(CkKeyType::AES),
        Attribute::ValueLen(len.into()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id),
    ];
    session.generate_key(&Mechanism::AesKeyGen, &template)
}

/// Why a public key could not be read.
pub(crate) enum ExportError {
    /// A PKCS#11 call failed.
    Cryptoki(cryptoki::error::Error),
    /// The attributes are missing or describe a key we do not support.
    Decode(Error),
}

impl From<cryptoki::error::Error> for ExportError {
    fn from(error: cryptoki::error::Error) -> Self {
        ExportError::Cryptoki(error)
    }
}

/// Reads the public key object `handle` into a [`PublicKey`]. The key type comes from
/// `CKA_KEY_TYPE` and, for EC keys, `CKA_EC_PARAMS`; the size of RSA keys from the modulus.
pub(crate) fn export(session: &Session, handle: ObjectHandle) -> Result<PublicKey, ExportError> {
    let key_type = session
        .get_attributes(handle, &[AttributeType::KeyType])?
        .into_iter()
        .find_map(|a| match a {
            Attribute::KeyType(t) => Some(t),
            _ => None,
        });
    let decode = |reason: String| ExportError::Decode(Error::decode("public key on token", reason));
    match key_type {
        Some(t) if t == CkKeyType::EC => {
            let (params, point) = ec_attributes(session, handle)?;
            if params != P256_PARAMS {
                return Err(decode("EC key is not on P-256".to_owned()));
            }
            let point = unwrap_ec_point(&point, 65);
            PublicKey::from_ec_p256_point(point).map_err(ExportError::Decode)
        }
        Some(t) if t == CkKeyType::EC_EDWARDS => {
            let (params, point) = ec_attributes(session, handle)?;
            if params != ED25519_PARAMS && params != ED25519_PARAMS_NAME {
                return Err(decode("Edwards key is not on edwards25519".to_owned()));
            }
            PublicKey::from_ed25519(unwrap_ec_point(&point, 32)).map_err(ExportError::Decode)
        }
        Some(t) if t == CkKeyType::RSA => {
            let attributes = session.get_attributes(
                handle,
                &[AttributeType::Modulus, AttributeType::PublicExponent],
            )?;
            let (mut modulus, mut exponent) = (None, None);
            for attribute in attributes {
                match attribute {
                    Attribute::Modulus(m) => modulus = Some(m),
                    Attribute::PublicExponent(e) => exponent = Some(e),
                    _ => {}
                }
            }
            let (Some(modulus), Some(exponent)) = (modulus, exponent) else {
                return Err(decode(
                    "RSA key without CKA_MODULUS or CKA_PUBLIC_EXPONENT".to_owned(),
                ));
            };
            PublicKey::from_rsa_components(&modulus, &exponent).map_err(ExportError::Decode)
        }
        Some(other) => Err(decode(format!("unsupported key type {other}"))),
        None => Err(decode("no CKA_KEY_TYPE".to_owned())),
    }
}

fn ec_attributes(
    session: &Session,
    handle: ObjectHandle,
) -> Result<(Vec<u8>, Vec<u8>), ExportError> {
    let attributes =
        session.get_attributes(handle, &[AttributeType::EcParams, AttributeType::EcPoint])?;
    let (mut params, mut point) = (None, None);
    for attribute in attributes {
        match attribute {
            Attribute::EcParams(p) => params = Some(p),
            Attribute::EcPoint(p) => point = Some(p),
            _ => {}
        }
    }
    match (params, point) {
        (Some(params), Some(point)) => Ok((params, point)),
        _ => Err(ExportError::Decode(Error::decode(
            "public key on token",
            "EC key without CKA_EC_PARAMS or CKA_EC_POINT",
        ))),
    }
}

/// `CKA_EC_POINT` is a DER OCTET STRING around the point in PKCS#11 (SoftHSM2 writes it so), but
/// some tokens store the bare point. A value of the bare point's length is taken as bare;
/// anything else is unwrapped if it is exactly one OCTET STRING.
pub(crate) fn unwrap_ec_point(value: &[u8], bare_len: usize) -> &[u8] {
    if value.len() == bare_len {
        return value;
    }
    let inner = match value {
        [0x04, len, rest @ ..] if *len < 0x80 => Some((usize::from(*len), rest)),
        [0x04, 0x81, len, rest @ ..] => Some((usize::from(*len), rest)),
        _ => None,
    };
    match inner {
        Some((len, rest)) if rest.len() == len => rest,
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_points_are_unwrapped_once() {
        let point: Vec<u8> = std::iter::once(4).chain([7; 64]).collect();
        assert_eq!(unwrap_ec_point(&point, 65), &point[..]);
        let wrapped: Vec<u8> = [0x04, 65]
            .into_iter()
            .chain(point.iter().copied())
            .collect();
        assert_eq!(unwrap_ec_point(&wrapped, 65), &point[..]);
        let ed = [9; 32];
        let wrapped: Vec<u8> = [0x04, 32].into_iter().chain(ed).collect();
        assert_eq!(unwrap_ec_point(&wrapped, 32), &ed[..]);
        assert_eq!(unwrap_ec_point(&ed, 32), &ed[..]);
        // A wrong length is left as is, for the point parser to refuse.
        assert_eq!(
            unwrap_ec_point(&[0x04, 40, 1, 2], 32),
            &[0x04, 40, 1, 2][..]
        );
        let long: Vec<u8> = [0x04, 0x81, 0x85].into_iter().chain([1; 0x85]).collect();
        assert_eq!(unwrap_ec_point(&long, 65).len(), 0x85);
    }
}
