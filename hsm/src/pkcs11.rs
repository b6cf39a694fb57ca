//! Keys on a PKCS#11 token (a hardware HSM, or SoftHSM2 in tests), through the safe API of
//! `cryptoki`.
//!
//! Implements the parts of PKCS#11 that signing needs: [v2.40 base specification] and
//! [v2.40 current mechanisms] for `CKM_ECDSA`, `CKM_RSA_PKCS` and `CKM_RSA_PKCS_PSS`, and
//! [v3.0 current mechanisms] for `CKM_EC_EDWARDS_KEY_PAIR_GEN` and `CKM_EDDSA`.
//!
//! ```text
//!  Pkcs11KeyStore ── Token (by label) ── pool of logged-in sessions ── Module (one per library
//!        │                                        ▲                    path per process)
//!        ▼                                        │ one session per signature
//!  Pkcs11Signer ── cached key handle ─────────────┘
//! ```
//!
//! - The token is found by its label on every (re)connect: slot ids are not stable (SoftHSM2
//!   derives them from a random serial number).
//! - The store logs in once; PKCS#11 logins hold for every session of the process on the token.
//! - When a session, the login or the library state is lost (`CKR_SESSION_HANDLE_INVALID`,
//!   `CKR_USER_NOT_LOGGED_IN`, `CKR_DEVICE_REMOVED`, `CKR_CRYPTOKI_NOT_INITIALIZED`, ...), the
//!   store re-opens its sessions, logs in again and retries, up to
//!   [`Pkcs11Config::reconnect_attempts`] times, then reports [`Error::TokenUnavailable`].
//! - Private keys are generated on the token as sensitive and non-extractable, and so are the
//!   AES-256 wrapping keys of [`crate::wrap`] (`CKM_AES_KEY_GEN`, used with `CKM_AES_GCM`).
//!
//! [v2.40 base specification]: https://docs.oasis-open.org/pkcs11/pkcs11-base/v2.40/os/pkcs11-base-v2.40-os.html
//! [v2.40 current mechanisms]: https://docs.oasis-open.org/pkcs11/pkcs11-curr/v2.40/os/pkcs11-curr-v2.40-os.html
//! [v3.0 current mechanisms]: https://docs.oasis-open.org/pkcs11/pkcs11-curr/v3.0/os/pkcs11-curr-v3.0-os.html

use std::path::Path;
use std::sync::{Arc, Mutex};

use cryptoki::error::Error as CkError;
use cryptoki::mechanism::MechanismType;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;

use crate::config::Pkcs11Config;
use crate::signer::{KeyInfo, KeyStore, Signer, check_algorithm, check_label};
use crate::wrap::Wrapper;
use crate::{Error, KeyType, Metrics, Pin, PublicKey, SignatureAlgorithm};

mod keys;
mod module;
mod pool;
mod rv;
mod signer;
mod wrap;

use self::keys::{ExportError, Half};
use self::module::Module;
use self::pool::{Failure, FindError, Lease, Token};
pub use self::signer::Pkcs11Signer;
pub use self::wrap::Pkcs11Wrapper;

/// Longest token label PKCS#11 can store (`CK_TOKEN_INFO.label` is 32 bytes).
pub const MAX_TOKEN_LABEL_LEN: usize = 32;

/// A PKCS#11 token, found by label, holding key pairs found by label.
///
/// Cheap to share: signers keep the token's session pool alive after the store is dropped.
#[derive(Debug)]
pub struct Pkcs11KeyStore {
    token: Arc<Token>,
    /// Serialises key generation, so that two generations of one label cannot both pass the
    /// "label is free" check (within this process; PKCS#11 offers nothing across processes).
    generating: Mutex<()>,
}

// === impl Pkcs11KeyStore ===

impl Pkcs11KeyStore {
    /// Loads the module (once per process), finds the token labelled `config.token_label`, opens
    /// `config.sessions` sessions and logs in with `pin`.
    ///
    /// # Errors
    ///
    /// [`Error::Module`] when the library does not load, [`Error::NoSuchToken`] (listing the labels
    /// present), [`Error::WrongPin`], [`Error::TokenLocked`], and [`Error::Config`] for a label
    /// over [`MAX_TOKEN_LABEL_LEN`] bytes or zero sessions.
    pub fn open(config: &Pkcs11Config, pin: Pin) -> Result<Self, Error> {
        check_token_label(&config.token_label)?;
        if config.sessions == 0 {
            return Err(Error::Config {
                key: "sessions",
                value: "0".to_owned(),
                reason: "at least one session is needed to sign".to_owned(),
            });
        }
        let module = Module::get(&config.module)?;
        let token = Token::open(
            module,
            config.token_label.clone(),
            pin,
            config.sessions,
            config.reconnect_attempts,
        )?;
        tracing::info!(
            token = %config.token_label,
            module = %config.module.display(),
            sessions = config.sessions,
            "opened PKCS#11 token",
        );
        Ok(Pkcs11KeyStore {
            token: Arc::new(token),
            generating: Mutex::new(()),
        })
    }

    /// Counts this store's signatures, signing time and reconnects in `metrics`. Signers made
    /// before this call are not counted. A store's metrics are set once; later calls are ignored.
    pub fn with_metrics(self, metrics: Metrics) -> Self {
        let _ = self.token.metrics.set(metrics);
        self
    }

    /// The token's label.
    pub fn token_label(&self) -> &str {
        &self.token.label
    }

    /// A signer for the key labelled `label`, as the concrete type (for callers that want to keep
    /// it without a `dyn`).
    ///
    /// # Errors
    ///
    /// As [`KeyStore::signer`].
    pub fn pkcs11_signer(
        &self,
        label: &str,
        algorithm: Option<SignatureAlgorithm>,
    ) -> Result<Pkcs11Signer, Error> {
        let public_key = self.public_key(label)?;
        let key_type = public_key.key_type();
        let algorithm = algorithm.unwrap_or(key_type.default_algorithm());
        check_algorithm(label, key_type, algorithm)?;
        let mechanism = Pkcs11Signer::mechanism(algorithm);
        self.token.run(|session, lease| {
            self.require_mechanism(session, lease, mechanism, algorithm.name())?;
            match keys::find(session, label, Half::Private) {
                Ok(Some(_)) => Ok(()),
                Ok(None) => Err(Failure::Fatal(self.no_such_key(label, Half::Private))),
                Err(e) => Err(self.token.failure(&e, "find key", session, lease)),
            }
        })?;
        Ok(Pkcs11Signer::new(
            Arc::clone(&self.token),
            label,
            algorithm,
            public_key,
        ))
    }

    /// Finalises the PKCS#11 module and initialises it again, invalidating every session of
    /// every store in this process on that module, as a token restart would. Waits for calls in
    /// flight. Stores recover on their next call.
    ///
    /// Only for tests of recovery: nothing in production needs it.
    #[doc(hidden)]
    pub fn danger_reinitialize_module(&self) -> Result<(), Error> {
        let module = self.token.module.path().display();
        tracing::warn!(%module, "finalising and initialising the PKCS#11 module on request");
        self.token.module.reinitialize().map_err(|e| Error::Module {
            module: self.token.module.path().to_owned(),
            reason: format!("finalise and initialise again: {}", rv::describe(&e)),
        })
    }

    fn require_mechanism(
        &self,
        session: &Session,
        lease: &Lease,
        mechanism: MechanismType,
        needed_for: &str,
    ) -> Result<(), Failure> {
        let mechanisms = self.token.module.context().get_mechanism_list(lease.slot);
        let mechanisms =
            mechanisms.map_err(|e| self.token.failure(&e, "list mechanisms", session, lease))?;
        if mechanisms.contains(&mechanism) {
            return Ok(());
        }
        Err(Failure::Fatal(Error::MechanismNotSupported {
            token: self.token.label.clone(),
            mechanism: mechanism.to_string(),
            algorithm: needed_for.to_owned(),
        }))
    }

    fn no_such_key(&self, label: &str, half: Half) -> Error {
        Error::NoSuchKey {
            label: label.to_owned(),
            kind: half.kind(),
            store: self.describe(),
        }
    }

    /// Reads the public key of the pair labelled `label` with `session`.
    fn export(&self, session: &Session, lease: &Lease, label: &str) -> Result<PublicKey, Failure> {
        let handle = match keys::find(session, label, Half::Public) {
            Ok(Some(handle)) => handle,
            Ok(None) => return Err(Failure::Fatal(self.no_such_key(label, Half::Public))),
            Err(e) => return Err(self.token.failure(&e, "find key", session, lease)),
        };
        keys::export(session, handle).map_err(|e| match e {
            ExportError::Cryptoki(e) => self.token.failure(&e, "read public key", session, lease),
            ExportError::Decode(e) => Failure::Fatal(e),
        })
    }
}

impl KeyStore for Pkcs11KeyStore {
    fn describe(&self) -> String {
        format!("PKCS#11 token '{}'", self.token.label)
    }

    fn generate(&self, label: &str, key_type: KeyType) -> Result<PublicKey, Error> {
        check_label(label)?;
        let _generating = self
            .generating
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mechanism = keys::generation_mechanism(key_type);
        let public_key = self.token.run(|session, lease| {
            self.require_mechanism(session, lease, mechanism, key_type.name())?;
            for half in [Half::Private, Half::Public] {
                match keys::find(session, label, half) {
                    Ok(None) => {}
                    Ok(Some(_)) => {
                        return Err(Failure::Fatal(Error::KeyExists {
                            label: label.to_owned(),
                            store: self.describe(),
                        }));
                    }
                    Err(e) => return Err(self.token.failure(&e, "find key", session, lease)),
                }
            }
            let public = keys::generate(session, label, key_type)
                .map_err(|e| self.token.failure(&e, "generate key pair", session, lease))?;
            keys::export(session, public).map_err(|e| match e {
                ExportError::Cryptoki(e) => {
                    self.token.failure(&e, "read public key", session, lease)
                }
                ExportError::Decode(e) => Failure::Fatal(e),
            })
        })?;
        tracing::info!(
            token = %self.token.label,
            label,
            %key_type,
            fingerprint = %public_key.fingerprint(),
            "generated key pair on PKCS#11 token",
        );
        Ok(public_key)
    }

    fn keys(&self) -> Result<Vec<KeyInfo>, Error> {
        let mut keys = self.token.run(|session, lease| {
            let template = [Attribute::Token(true), Attribute::Class(ObjectClass::PRIVATE_KEY)];
            let handles = session.find_objects(&template);
            let handles = handles.map_err(|e| self.token.failure(&e, "list keys", session, lease))?;
            let mut keys = Vec::with_capacity(handles.len());
            for handle in handles {
                let attributes = session
                    .get_attributes(handle, &[AttributeType::Label])
                    .map_err(|e| self.token.failure(&e, "read key label", session, lease))?;
                let Some(label) = attributes.into_iter().find_map(|a| match a {
                    Attribute::Label(l) => String::from_utf8(l).ok(),
                    _ => None,
                }) else {
                    continue;
                };
                match self.export(session, lease, &label) {
                    Ok(public_key) => keys.push(KeyInfo { label, public_key }),
                    Err(Failure::Fatal(error)) => {
                        let token = &self.token.label;
                        tracing::warn!(%token, label, %error, "skipping a key that cannot be listed");
                    }
                    Err(lost) => return Err(lost),
                }
            }
            Ok(keys)
        })?;
        keys.sort_by(|a, b| a.label.cmp(&b.label));
        Ok(keys)
    }

    fn public_key(&self, label: &str) -> Result<PublicKey, Error> {
        check_label(label)?;
        self.token
            .run(|session, lease| self.export(session, lease, label))
    }

    fn signer(
        &self,
        label: &str,
        algorithm: Option<SignatureAlgorithm>,
    ) -> Result<Arc<dyn Signer>, Error> {
        Ok(Arc::new(self.pkcs11_signer(label, algorithm)?))
    }

    fn generate_wrapping_key(&self, label: &str) -> Result<(), Error> {
        check_label(label)?;
        let _generating = self
            .generating
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.token.run(|session, lease| {
            self.require_mechanism(session, lease, MechanismType::AES_KEY_GEN, "wrapping key")?;
            self.require_mechanism(session, lease, MechanismType::AES_GCM, "wrapping key")?;
            match keys::find(session, label, Half::Secret) {
                Ok(None) => {}
                Ok(Some(_)) => {
                    return Err(Failure::Fatal(Error::KeyExists {
                        label: label.to_owned(),
                        store: self.describe(),
                    }));
                }
                Err(e) => return Err(self.token.failure(&e, "find key", session, lease)),
            }
            keys::generate_wrapping_key(session, label).map_err(|e| {
                self.token
                    .failure(&e, "generate wrapping key", session, lease)
            })
        })?;
        tracing::info!(token = %self.token.label, label, "generated AES-256 wrapping key on PKCS#11 token");
        Ok(())
    }

    fn wrapper(&self, label: &str) -> Result<Arc<dyn Wrapper>, Error> {
        check_label(label)?;
        self.token.run(|session, lease| {
            self.require_mechanism(session, lease, MechanismType::AES_GCM, "wrapping key")?;
            match keys::find(session, label, Half::Secret) {
                Ok(Some(_)) => Ok(()),
                Ok(None) => Err(Failure::Fatal(self.no_such_key(label, Half::Secret))),
                Err(e) => Err(self.token.failure(&e, "find key", session, lease)),
            }
        })?;
        Ok(Arc::new(Pkcs11Wrapper::new(Arc::clone(&self.token), label)))
    }
}

/// Initialises a new token labelled `label` in a free slot of `module` (one whose token is not
/// initialised yet; SoftHSM2 always keeps one), sets its security officer PIN and user PIN.
/// The token can then be opened with [`Pkcs11KeyStore::open`] in this process and others.
///
/// For operators provisioning a token, and for tests.
///
/// # Errors
///
/// [`Error::Config`] when the label is too long or already taken, [`Error::Pkcs11`] when there is
/// no free slot or a call fails.
pub fn init_token(module: &Path, label: &str, so_pin: &Pin, user_pin: &Pin) -> Result<(), Error> {
    check_token_label(label)?;
    let module = Module::get(module)?;
    let failed = |operation: &'static str| move |e: CkError| rv::to_error(&e, label, operation);
    let calls = module.calls();
    let context = module.context();
    let mut free = None;
    for slot in context
        .get_slots_with_token()
        .map_err(failed("list slots"))?
    {
        let info = context
            .get_token_info(slot)
            .map_err(failed("read token information"))?;
        if !info.token_initialized() {
            free = free.or(Some(slot));
        } else if info.label() == label {
            return Err(Error::Config {
                key: "token label",
                value: label.to_owned(),
                reason: format!(
                    "a token with this label already exists in {}",
                    module.path().display()
                ),
            });
        }
    }
    let slot = free.ok_or_else(|| Error::Pkcs11 {
        token: label.to_owned(),
        operation: "initialise token",
        reason: format!(
            "no slot with an uninitialised token in {}",
            module.path().display()
        ),
    })?;
    let so = AuthPin::from(so_pin.expose().to_owned());
    context
        .init_token(slot, &so, label)
        .map_err(failed("initialise token"))?;
    // C_InitToken may move the token to another slot id (SoftHSM2 does, when it re-reads its
    // token directory), so look it up again by label.
    drop(calls);
    let slot = match pool::find_slot(&module, label) {
        Ok(slot) => slot,
        Err(FindError::Missing(error)) => return Err(error),
        Err(FindError::Cryptoki(e)) => return Err(failed("find token")(e)),
    };
    let _calls = module.calls();
    let session = context
        .open_rw_session(slot)
        .map_err(failed("open session"))?;
    session
        .login(UserType::So, Some(&so))
        .map_err(failed("log in as security officer"))?;
    session
        .init_pin(&AuthPin::from(user_pin.expose().to_owned()))
        .map_err(failed("set user PIN"))?;
    session.logout().map_err(failed("log out"))?;
    tracing::info!(token = label, module = %module.path().display(), "initialised PKCS#11 token");
    Ok(())
}

fn check_token_label(label: &str) -> Result<(), Error> {
    if label.is_empty() || label.len() > MAX_TOKEN_LABEL_LEN || label.trim() != label {
        return Err(Error::Config {
            key: "token label",
            value: label.to_owned(),
            reason: format!(
                "must be 1 to {MAX_TOKEN_LABEL_LEN} bytes without leading or trailing spaces, got {} bytes",
                label.len()
            ),
        });
    }
    Ok(())
}
