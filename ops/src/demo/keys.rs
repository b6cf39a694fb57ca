//! Where the demo's components keep their keys: one SoftHSM2 token per component when SoftHSM2
//! is installed and `SOFTHSM2_CONF` names its configuration (`ops/demo.sh` writes one under the
//! data directory and exports it), software keys under `DIR/keys/` otherwise. The choice is
//! recorded in `DIR/key-store`, so that a later run opens the same keys.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use backbone_hsm::config::{Config as StoreConfig, Pkcs11Config};
use backbone_hsm::{KeyStore, Pin};
use clap::ValueEnum;

use crate::Error;
use crate::config::Env;

/// The SoftHSM2 module on Debian and Ubuntu.
pub const SOFTHSM2_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// The file recording the choice.
pub const CHOICE_FILE: &str = "key-store";

/// Token labels start with this, then the data directory's token id, then the component.
pub const TOKEN_PREFIX: &str = "demo-";

/// The demo tokens' user PIN, stored in the data directory: these tokens hold demo keys only.
const USER_PIN_FILE: &str = "softhsm-user.pin";
/// The demo tokens' security officer PIN.
const SO_PIN_FILE: &str = "softhsm-so.pin";
/// Eight hex digits in every token label of this data directory, so that several demo
/// directories can share one SoftHSM2 token directory.
const TOKEN_ID_FILE: &str = "softhsm-token-id";

/// Which key store `--keys` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KeyChoice {
    /// SoftHSM2 when available (and already chosen by an earlier run), software keys otherwise.
    Auto,
    /// Software keys in DIR/keys.
    Software,
    /// SoftHSM2 tokens (needs SOFTHSM2_CONF; ops/demo.sh sets it).
    Softhsm,
}

/// The key stores of one run.
#[derive(Debug)]
pub struct Keys {
    kind: Kind,
    dir: PathBuf,
    /// Why this store was chosen, for the operator.
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Software,
    Softhsm {
        user_pin: String,
        so_pin: String,
        id: String,
    },
}

impl Keys {
    /// Decides where keys live for the demo in `dir`.
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] when SoftHSM2 is asked for (or was used before) but is not usable.
    pub fn choose(choice: KeyChoice, dir: &Path, env: &Env) -> Result<Keys, Error> {
        let recorded = std::fs::read_to_string(dir.join(CHOICE_FILE))
            .ok()
            .map(|s| s.trim().to_owned());
        let module = Path::new(SOFTHSM2_MODULE).exists();
        let conf = env.get("SOFTHSM2_CONF").map(str::to_owned);
        let softhsm_ready = module && conf.as_deref().is_some_and(|c| Path::new(c).exists());
        let want_softhsm = match (choice, recorded.as_deref()) {
            (KeyChoice::Software, Some("softhsm2")) | (KeyChoice::Softhsm, Some("software")) => {
                return Err(Error::Usage(format!(
                    "{} was set up with {} keys; use another --data-dir to change the key store",
                    dir.display(),
                    recorded.unwrap_or_default()
                )));
            }
            (KeyChoice::Software, _) => false,
            (KeyChoice::Softhsm, _) => true,
            (KeyChoice::Auto, Some("softhsm2")) => true,
            (KeyChoice::Auto, Some(_)) => false,
            (KeyChoice::Auto, None) => softhsm_ready,
        };
        if !want_softhsm {
            let reason = match (choice, recorded.as_deref(), module, conf.is_some()) {
                (KeyChoice::Software, _, _, _) => "asked for with --keys software".to_owned(),
                (_, Some(_), _, _) => format!("as in the first run on {}", dir.display()),
                (_, _, false, _) => {
                    format!("SoftHSM2 is not installed ({SOFTHSM2_MODULE} is missing)")
                }
                (_, _, true, false) => {
                    "SoftHSM2 is installed but SOFTHSM2_CONF is not set (ops/demo.sh sets it)"
                        .to_owned()
                }
                (_, _, true, true) => "SOFTHSM2_CONF names a file that does not exist".to_owned(),
            };
            record(dir, "software")?;
            return Ok(Keys {
                kind: Kind::Software,
                dir: dir.to_owned(),
                reason,
            });
        }
        if !softhsm_ready {
            return Err(Error::Usage(format!(
                "SoftHSM2 keys need {SOFTHSM2_MODULE} and SOFTHSM2_CONF naming its configuration file (ops/demo.sh writes one under the data directory)"
            )));
        }
        let user_pin = secret_file(&dir.join(USER_PIN_FILE), 8)?;
        let so_pin = secret_file(&dir.join(SO_PIN_FILE), 8)?;
        let id = secret_file(&dir.join(TOKEN_ID_FILE), 4)?;
        record(dir, "softhsm2")?;
        let reason = format!("SOFTHSM2_CONF={}", conf.unwrap_or_default());
        Ok(Keys {
            kind: Kind::Softhsm {
                user_pin,
                so_pin,
                id,
            },
            dir: dir.to_owned(),
            reason,
        })
    }

    /// Whether the keys are in SoftHSM2 tokens.
    pub fn is_softhsm(&self) -> bool {
        matches!(self.kind, Kind::Softhsm { .. })
    }

    /// The key store of `component` (created on first use).
    ///
    /// # Errors
    ///
    /// The store cannot be created or opened.
    pub fn open(&self, component: &str) -> Result<Arc<dyn KeyStore>, Error> {
        let config = self.config(component);
        let pin = match &self.kind {
            Kind::Software => None,
            Kind::Softhsm {
                user_pin, so_pin, ..
            } => {
                let label = self.token_label(component);
                match backbone_hsm::pkcs11::init_token(
                    Path::new(SOFTHSM2_MODULE),
                    &label,
                    &Pin::new(so_pin.as_str()),
                    &Pin::new(user_pin.as_str()),
                ) {
                    Ok(()) => tracing::info!(token = %label, "initialised a SoftHSM2 token"),
                    // Made by an earlier run.
                    Err(backbone_hsm::Error::Config { .. }) => {}
                    Err(e) => {
                        return Err(Error::hsm(format!(
                            "cannot initialise SoftHSM2 token {label}"
                        ))(e));
                    }
                }
                Some(Pin::new(user_pin.as_str()))
            }
        };
        backbone_hsm::config::open(&config, pin).map_err(Error::hsm(format!(
            "cannot open the key store of {component}"
        )))
    }

    /// The key store configuration of `component`, for `backbone … --config` files.
    pub fn config(&self, component: &str) -> StoreConfig {
        match &self.kind {
            Kind::Software => StoreConfig::Software {
                key_dir: self.dir.join("keys").join(component),
            },
            Kind::Softhsm { .. } => StoreConfig::Pkcs11(Pkcs11Config {
                module: PathBuf::from(SOFTHSM2_MODULE),
                token_label: self.token_label(component),
                sessions: 4,
                reconnect_attempts: 3,
            }),
        }
    }

    /// One line for the operator.
    pub fn describe(&self) -> String {
        match self.kind {
            Kind::Software => format!(
                "software keys in {} ({})",
                self.dir.join("keys").display(),
                self.reason
            ),
            Kind::Softhsm { .. } => format!(
                "SoftHSM2 tokens {}* ({})",
                self.token_label(""),
                self.reason
            ),
        }
    }

    /// The token label of `component` (at most 32 characters, PKCS#11's limit).
    fn token_label(&self, component: &str) -> String {
        let id = match &self.kind {
            Kind::Softhsm { id, .. } => id.as_str(),
            Kind::Software => "",
        };
        let mut label = format!("{TOKEN_PREFIX}{id}-{component}");
        label.truncate(backbone_hsm::pkcs11::MAX_TOKEN_LABEL_LEN);
        label
    }

    /// The user PIN file of the tokens, when there are tokens.
    pub fn pin_file(&self) -> Option<PathBuf> {
        self.is_softhsm().then(|| self.dir.join(USER_PIN_FILE))
    }
}

fn record(dir: &Path, what: &str) -> Result<(), Error> {
    let path = dir.join(CHOICE_FILE);
    std::fs::write(&path, format!("{what}\n")).map_err(Error::io("write", &path))
}

/// The secret in `path`, made (`len` random bytes in hex) on first use.
fn secret_file(path: &Path, len: usize) -> Result<String, Error> {
    if let Ok(text) = std::fs::read_to_string(path) {
        let pin = text.trim().to_owned();
        if !pin.is_empty() {
            return Ok(pin);
        }
    }
    use ring::rand::SecureRandom as _;
    let mut bytes = vec![0u8; len];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Check("no system randomness for the demo tokens".into()))?;
    let pin: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    backbone_hsm::private::write(path, format!("{pin}\n").as_bytes())
        .map_err(Error::io("write", path))?;
    Ok(pin)
}
