//! PKCS#11 key store: placeholder replaced below.
use crate::config::Pkcs11Config;
use crate::{Error, Pin};

/// A PKCS#11 token.
#[derive(Debug)]
pub struct Pkcs11KeyStore;

impl Pkcs11KeyStore {
    /// Opens the token.
    pub fn open(_config: &Pkcs11Config, _pin: Pin) -> Result<Self, Error> {
        Err(Error::Unreachable("not yet"))
    }
}

impl crate::KeyStore for Pkcs11KeyStore {
    fn describe(&self) -> String { String::new() }
    fn generate(&self, _: &str, _: crate::KeyType) -> Result<crate::PublicKey, Error> { Err(Error::Unreachable("x")) }
    fn keys(&self) -> Result<Vec<crate::signer::KeyInfo>, Error> { Err(Error::Unreachable("x")) }
    fn public_key(&self, _: &str) -> Result<crate::PublicKey, Error> { Err(Error::Unreachable("x")) }
    fn signer(&self, _: &str, _: Option<crate::SignatureAlgorithm>) -> Result<std::sync::Arc<dyn crate::Signer>, Error> { Err(Error::Unreachable("x")) }
}
