//! Software keys for development and for the demo when no PKCS#11 module is configured.
//!
//! Each key pair is a PKCS#8 DER file `<label>.p8` in one directory, and each wrapping key (see
//! [`crate::wrap`]) the 32 raw bytes of an AES-256 key in `<label>.aes` beside them. Files are
//! created with mode 0600 (the directory with 0700), never overwritten, and synced before key
//! generation returns. Keys sign and wrap with ring; RSA keys are generated with OpenSSL because
//! ring cannot generate them.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openssl::pkey::PKey;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self as ring_sig, KeyPair};
use zeroize::Zeroizing;

use crate::signer::{KeyInfo, KeyStore, Signer, check_algorithm, check_label};
use crate::wrap::{self, IV_LEN, WRAPPING_KEY_LEN, Wrapper};
use crate::{Error, KeyType, PublicKey, SignatureAlgorithm};

/// Largest key file we read: an RSA-3072 PKCS#8 file is about 1,800 bytes.
pub const MAX_KEY_FILE_LEN: u64 = 16 * 1024;

const KEY_FILE_EXTENSION: &str = "p8";

const WRAPPING_KEY_FILE_EXTENSION: &str = "aes";

/// A directory of PKCS#8 key files.
#[derive(Debug, Clone)]
pub struct SoftwareKeyStore {
    dir: PathBuf,
}

/// A software key loaded in memory, signing with ring.
pub struct SoftwareSigner {
    label: String,
    algorithm: SignatureAlgorithm,
    public_key: PublicKey,
    key: SoftKey,
    rng: SystemRandom,
}

/// A software AES-256 wrapping key loaded in memory, wrapping with ring's AES-256-GCM.
pub struct SoftwareWrapper {
    label: String,
    store: String,
    key: LessSafeKey,
    rng: SystemRandom,
}

enum SoftKey {
    Ecdsa(ring_sig::EcdsaKeyPair),
    Ed25519(ring_sig::Ed25519KeyPair),
    Rsa(ring_sig::RsaKeyPair),
}

// === impl SoftwareKeyStore ===

impl SoftwareKeyStore {
    /// Opens (and creates, mode 0700, if missing) a key directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, Error> {
        let dir = dir.into();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| Error::KeyFile {
                path: dir.clone(),
                source,
            })?;
        Ok(SoftwareKeyStore { dir })
    }

    /// The key directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Loads the key with this label into a [`SoftwareSigner`].
    pub fn load(
        &self,
        label: &str,
        algorithm: Option<SignatureAlgorithm>,
    ) -> Result<SoftwareSigner, Error> {
        let pkcs8 = self.read(label)?;
        SoftwareSigner::from_pkcs8(label, &pkcs8, algorithm)
    }

    /// Loads the wrapping key with this label into a [`SoftwareWrapper`].
    pub fn load_wrapper(&self, label: &str) -> Result<SoftwareWrapper, Error> {
        let path = self.path_with(label, WRAPPING_KEY_FILE_EXTENSION)?;
        let bytes = Zeroizing::new(self.read_path(label, "secret", path)?);
        SoftwareWrapper::new(label, self.describe(), &bytes)
    }

    fn path(&self, label: &str) -> Result<PathBuf, Error> {
        self.path_with(label, KEY_FILE_EXTENSION)
    }

    fn path_with(&self, label: &str, extension: &str) -> Result<PathBuf, Error> {
        check_label(label)?;
        Ok(self.dir.join(format!("{label}.{extension}")))
    }

    fn read(&self, label: &str) -> Result<Vec<u8>, Error> {
        let path = self.path(label)?;
        self.read_path(label, "key", path)
    }

    fn read_path(&self, label: &str, kind: &'static str, path: PathBuf) -> Result<Vec<u8>, Error> {
        let meta = match fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NoSuchKey {
                    label: label.to_owned(),
                    kind,
                    store: self.describe(),
                });
            }
            Err(source) => return Err(Error::KeyFile { path, source }),
        };
        if meta.len() > MAX_KEY_FILE_LEN {
            return Err(Error::decode(
                "key file",
                format!(
                    "{} bytes is over the limit of {MAX_KEY_FILE_LEN}",
                    meta.len()
                ),
            ));
        }
        fs::read(&path).map_err(|source| Error::KeyFile { path, source })
    }

    fn write_new(&self, label: &str, pkcs8: &[u8]) -> Result<(), Error> {
        let path = self.path(label)?;
        self.write_new_path(label, path, pkcs8)
    }

    fn write_new_path(&self, label: &str, path: PathBuf, pkcs8: &[u8]) -> Result<(), Error> {
        let mut file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::KeyExists {
                    label: label.to_owned(),
                    store: self.describe(),
                });
            }
            Err(source) => return Err(Error::KeyFile { path, source }),
        };
        let result = file
            .write_all(pkcs8)
            .and_then(|()| file.sync_all())
            .and_then(|()| sync_dir(&self.dir));
        if let Err(source) = result {
            // A partial key file must not be mistaken for a key later.
            let _ = fs::remove_file(&path);
            return Err(Error::KeyFile { path, source });
        }
        Ok(())
    }
}

impl KeyStore for SoftwareKeyStore {
    fn describe(&self) -> String {
        format!("software key directory {}", self.dir.display())
    }

    fn generate(&self, label: &str, key_type: KeyType) -> Result<PublicKey, Error> {
        let path = self.path(label)?;
        if path.exists() {
            return Err(Error::KeyExists {
                label: label.to_owned(),
                store: self.describe(),
            });
        }
        let pkcs8 = generate_pkcs8(key_type)?;
        let signer = SoftwareSigner::from_pkcs8(label, &pkcs8, None)?;
        self.write_new(label, &pkcs8)?;
        tracing::info!(label, %key_type, fingerprint = %signer.public_key.fingerprint(), "generated software key");
        Ok(signer.public_key)
    }

    fn keys(&self) -> Result<Vec<KeyInfo>, Error> {
        let entries = fs::read_dir(&self.dir).map_err(|source| Error::KeyFile {
            path: self.dir.clone(),
            source,
        })?;
        let mut keys = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| Error::KeyFile {
                path: self.dir.clone(),
                source,
            })?;
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some(KEY_FILE_EXTENSION) {
                continue;
            }
            let Some(label) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            if check_label(label).is_err() {
                continue;
            }
            keys.push(KeyInfo {
                label: label.to_owned(),
                public_key: self.public_key(label)?,
            });
        }
        keys.sort_by(|a, b| a.label.cmp(&b.label));
        Ok(keys)
    }

    fn public_key(&self, label: &str) -> Result<PublicKey, Error> {
        Ok(self.load(label, None)?.public_key)
    }

    fn signer(
        &self,
        label: &str,
        algorithm: Option<SignatureAlgorithm>,
    ) -> Result<Arc<dyn Signer>, Error> {
        Ok(Arc::new(self.load(label, algorithm)?))
    }

    fn generate_wrapping_key(&self, label: &str) -> Result<(), Error> {
        let path = self.path_with(label, WRAPPING_KEY_FILE_EXTENSION)?;
        let mut key = Zeroizing::new([0; WRAPPING_KEY_LEN]);
        SystemRandom::new()
            .fill(key.as_mut())
            .map_err(|e| Error::crypto("aes-256 keygen", e))?;
        self.write_new_path(label, path, key.as_ref())?;
        tracing::info!(label, "generated software wrapping key");
        Ok(())
    }

    fn wrapper(&self, label: &str) -> Result<Arc<dyn Wrapper>, Error> {
        Ok(Arc::new(self.load_wrapper(label)?))
    }
}

// === impl SoftwareWrapper ===

impl SoftwareWrapper {
    fn new(label: &str, store: String, key: &[u8]) -> Result<Self, Error> {
        if key.len() != WRAPPING_KEY_LEN {
            let reason = format!("{} bytes, expected {WRAPPING_KEY_LEN}", key.len());
            return Err(Error::decode("wrapping key file", reason));
        }
        let key = UnboundKey::new(&aead::AES_256_GCM, key)
            .map_err(|e| Error::crypto("load wrapping key", e))?;
        Ok(SoftwareWrapper {
            label: label.to_owned(),
            store,
            key: LessSafeKey::new(key),
            rng: SystemRandom::new(),
        })
    }
}

impl Wrapper for SoftwareWrapper {
    fn label(&self) -> &str {
        &self.label
    }

    fn wrap(&self, key: &[u8]) -> Result<Vec<u8>, Error> {
        wrap::check_key(key)?;
        let mut iv = [0; IV_LEN];
        self.rng
            .fill(&mut iv)
            .map_err(|e| Error::crypto("wrap", e))?;
        let mut sealed = key.to_vec();
        let nonce = Nonce::assume_unique_for_key(iv);
        let sealing =
            self.key
                .seal_in_place_append_tag(nonce, Aad::from(wrap::ASSOCIATED_DATA), &mut sealed);
        sealing.map_err(|e| Error::crypto("wrap", e))?;
        Ok(wrap::assemble(&iv, &sealed))
    }

    fn unwrap(&self, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        let parts = wrap::parse(wrapped)?;
        let mut buffer = Zeroizing::new(parts.sealed.to_vec());
        let nonce = Nonce::assume_unique_for_key(*parts.iv);
        let opened = self
            .key
            .open_in_place(nonce, Aad::from(wrap::ASSOCIATED_DATA), &mut buffer);
        let len = opened
            .map_err(|_| Error::Unwrap {
                label: self.label.clone(),
                store: self.store.clone(),
            })?
            .len();
        buffer.truncate(len);
        Ok(buffer)
    }
}

impl std::fmt::Debug for SoftwareWrapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwareWrapper")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

// === impl SoftwareSigner ===

impl SoftwareSigner {
    /// Loads a PKCS#8 DER private key (P-256, Ed25519 or RSA 2048/3072).
    pub fn from_pkcs8(
        label: &str,
        pkcs8: &[u8],
        algorithm: Option<SignatureAlgorithm>,
    ) -> Result<Self, Error> {
        let rng = SystemRandom::new();
        // ring's parsers tell the key type apart; each refuses the others' keys.
        let (key, public_key) = if let Ok(key) = ring_sig::EcdsaKeyPair::from_pkcs8(
            &ring_sig::ECDSA_P256_SHA256_ASN1_SIGNING,
            pkcs8,
            &rng,
        ) {
            let public = PublicKey::from_ec_p256_point(key.public_key().as_ref())?;
            (SoftKey::Ecdsa(key), public)
        } else if let Ok(key) = ring_sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8) {
            let public = PublicKey::from_ed25519(key.public_key().as_ref())?;
            (SoftKey::Ed25519(key), public)
        } else {
            let key = ring_sig::RsaKeyPair::from_pkcs8(pkcs8).map_err(|e| {
                Error::decode(
                    "PKCS#8 key",
                    format!("not a P-256, Ed25519 or RSA key ({e})"),
                )
            })?;
            let public = PublicKey::from_rsa_pkcs1_der(key.public().as_ref())?;
            (SoftKey::Rsa(key), public)
        };
        let key_type = public_key.key_type();
        let algorithm = algorithm.unwrap_or(key_type.default_algorithm());
        check_algorithm(label, key_type, algorithm)?;
        Ok(SoftwareSigner {
            label: label.to_owned(),
            algorithm,
            public_key,
            key,
            rng,
        })
    }
}

impl Signer for SoftwareSigner {
    fn label(&self) -> &str {
        &self.label
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }

    fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        match &self.key {
            SoftKey::Ecdsa(key) => key
                .sign(&self.rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|e| Error::crypto("ecdsa sign", e)),
            SoftKey::Ed25519(key) => Ok(key.sign(message).as_ref().to_vec()),
            SoftKey::Rsa(key) => {
                let padding: &dyn ring_sig::RsaEncoding = match self.algorithm {
                    SignatureAlgorithm::RsaPssSha256 => &ring_sig::RSA_PSS_SHA256,
                    _ => &ring_sig::RSA_PKCS1_SHA256,
                };
                let mut signature = vec![0; key.public().modulus_len()];
                key.sign(padding, &self.rng, message, &mut signature)
                    .map_err(|e| Error::crypto("rsa sign", e))?;
                Ok(signature)
            }
        }
    }
}

impl std::fmt::Debug for SoftwareSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwareSigner")
            .field("label", &self.label)
            .field("algorithm", &self.algorithm)
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

/// Generates a PKCS#8 DER private key of `key_type`.
pub fn generate_pkcs8(key_type: KeyType) -> Result<Vec<u8>, Error> {
    let rng = SystemRandom::new();
    match key_type {
        KeyType::EcP256 => {
            ring_sig::EcdsaKeyPair::generate_pkcs8(&ring_sig::ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
                .map(|d| d.as_ref().to_vec())
                .map_err(|e| Error::crypto("ec-p256 keygen", e))
        }
        KeyType::Ed25519 => ring_sig::Ed25519KeyPair::generate_pkcs8(&rng)
            .map(|d| d.as_ref().to_vec())
            .map_err(|e| Error::crypto("ed25519 keygen", e)),
        KeyType::Rsa2048 | KeyType::Rsa3072 => {
            let bits = if key_type == KeyType::Rsa2048 {
                2048
            } else {
                3072
            };
            let rsa =
                openssl::rsa::Rsa::generate(bits).map_err(|e| Error::crypto("rsa keygen", e))?;
            let pkey = PKey::from_rsa(rsa).map_err(|e| Error::crypto("rsa keygen", e))?;
            pkey.private_key_to_pkcs8()
                .map_err(|e| Error::crypto("rsa keygen", e))
        }
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn every_algorithm_signs_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let store = SoftwareKeyStore::open(dir.path().join("keys")).unwrap();
        for key_type in KeyType::ALL {
            let label = key_type.name();
            let public = store.generate(label, key_type).unwrap();
            assert_eq!(public.key_type(), key_type);
            let mode = fs::metadata(store.path(label).unwrap())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{label}");
            for algorithm in SignatureAlgorithm::ALL
                .into_iter()
                .filter(|a| key_type.supports(*a))
            {
                let signer = store.signer(label, Some(algorithm)).unwrap();
                let signature = signer.sign(b"referral 42").unwrap();
                public
                    .verify(algorithm, b"referral 42", &signature)
                    .unwrap();
                assert!(
                    public
                        .verify(algorithm, b"referral 43", &signature)
                        .is_err()
                );
            }
        }
        let dir_mode = fs::metadata(store.dir()).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let labels: Vec<_> = store.keys().unwrap().into_iter().map(|k| k.label).collect();
        assert_eq!(labels, ["ec-p256", "ed25519", "rsa2048", "rsa3072"]);
    }

    #[test]
    fn no_overwrite_no_missing_no_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let store = SoftwareKeyStore::open(dir.path()).unwrap();
        let first = store.generate("k", KeyType::EcP256).unwrap();
        assert!(matches!(
            store.generate("k", KeyType::EcP256),
            Err(Error::KeyExists { .. })
        ));
        assert_eq!(store.public_key("k").unwrap(), first);
        assert!(matches!(
            store.signer("nope", None),
            Err(Error::NoSuchKey { .. })
        ));
        assert!(matches!(
            store.signer("k", Some(SignatureAlgorithm::RsaPssSha256)),
            Err(Error::AlgorithmMismatch { .. })
        ));
        assert!(store.generate("../escape", KeyType::EcP256).is_err());
    }

    #[test]
    fn corrupt_key_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = SoftwareKeyStore::open(dir.path()).unwrap();
        fs::write(dir.path().join("bad.p8"), b"not a key").unwrap();
        assert!(matches!(
            store.signer("bad", None),
            Err(Error::Decode { .. })
        ));
    }
}
