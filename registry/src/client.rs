//! The configuration client, used by gateways and the portal: holds the newest verified global
//! configuration of one instance and tells callers, distinctly, when it has expired.
//!
//! ```text
//!  bytes (download or cache) ─▶ verify (anchor key, instance) ─▶ check time ─▶ refuse rollback
//!        ─▶ write cache (tmp + fsync + rename + fsync dir) ─▶ swap (readers never see a half state)
//! ```
//!
//! What is durable: a configuration is written to the cache before it becomes current, so a
//! restarted client never holds an older version than one it acted on, and refuses a replay of
//! one. [`ConfClient::current`] fails with [`Error::ConfExpired`] once expires-at has passed:
//! callers MUST fail closed on it.

mod cache;
pub mod fetch;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use crate::anchor::Anchor;
use crate::conf::SignedConf;
use crate::{Error, GlobalConf};

/// How far a gateway clock may lag the registry's before a configuration counts as "from the
/// future": NTP keeps servers within milliseconds, so a minute only catches a broken clock.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Settings of a [`ConfClient`].
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Where the newest verified configuration is kept across restarts; `None` keeps it in memory
    /// only.
    pub cache_path: Option<PathBuf>,
    /// Allowed clock skew, [`DEFAULT_CLOCK_SKEW`].
    pub clock_skew: Duration,
}

/// What [`ConfClient::accept`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// The configuration became current.
    Updated {
        /// The version held before, if any.
        previous: Option<u64>,
        /// The version now held.
        version: u64,
    },
    /// The same bytes as the held version; nothing changed.
    Unchanged(u64),
}

/// Holds the newest verified configuration; cheap to share between tasks (`Arc<ConfClient>`).
#[derive(Debug)]
pub struct ConfClient {
    anchor: Anchor,
    config: ClientConfig,
    current: RwLock<Option<Held>>,
    /// Serialises accept: the rollback check, the cache write and the swap happen as one step.
    accepting: Mutex<()>,
}

#[derive(Clone, Debug)]
struct Held {
    conf: Arc<GlobalConf>,
    bytes: Arc<Vec<u8>>,
}

// === impl ClientConfig ===

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            cache_path: None,
            clock_skew: DEFAULT_CLOCK_SKEW,
        }
    }
}

// === impl ConfClient ===

impl ConfClient {
    /// A client that holds nothing yet.
    pub fn new(anchor: Anchor, config: ClientConfig) -> Self {
        ConfClient {
            anchor,
            config,
            current: RwLock::new(None),
            accepting: Mutex::new(()),
        }
    }

    /// A client that first loads its cache, if there is one. An expired cached configuration is
    /// still loaded: it is not usable ([`ConfClient::current`] says so), but its version keeps
    /// rollback protection across the restart.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the cache exists but cannot be read; verification errors when it does
    /// not verify under the anchor (a cache from another anchor, or tampered with).
    pub fn open(anchor: Anchor, config: ClientConfig) -> Result<Self, Error> {
        let client = ConfClient::new(anchor, config);
        if let Some(path) = &client.config.cache_path
            && let Some(bytes) = cache::read(path)?
        {
            let conf = client.verify(&bytes)?;
            client.swap(Held {
                conf: Arc::new(conf),
                bytes: Arc::new(bytes),
            })?;
        }
        Ok(client)
    }

    /// The anchor this client trusts.
    pub fn anchor(&self) -> &Anchor {
        &self.anchor
    }

    /// Verifies a downloaded envelope and makes it current if it is newer than the held one.
    ///
    /// # Errors
    ///
    /// Each refusal has its own variant: [`Error::Decode`], [`Error::BadSignature`],
    /// [`Error::WrongInstance`], [`Error::ConfExpired`], [`Error::ConfFromFuture`],
    /// [`Error::Rollback`]; [`Error::Io`] when the cache cannot be written (the held configuration
    /// then stays as it was).
    pub fn accept(&self, bytes: &[u8], now: SystemTime) -> Result<Accepted, Error> {
        let conf = self.verify(bytes)?;
        conf.check_time(now, self.config.clock_skew)?;
        let _guard = self
            .accepting
            .lock()
            .map_err(|_| Error::Unreachable("accept lock poisoned"))?;
        let previous = self.held()?;
        if let Some(held) = &previous {
            if held.conf.version == conf.version && held.bytes.as_slice() == bytes {
                return Ok(Accepted::Unchanged(conf.version));
            }
            if conf.version <= held.conf.version {
                return Err(Error::Rollback {
                    held: held.conf.version,
                    got: conf.version,
                });
            }
        }
        if let Some(path) = &self.config.cache_path {
            cache::write(path, bytes)?;
        }
        let version = conf.version;
        self.swap(Held {
            conf: Arc::new(conf),
            bytes: Arc::new(bytes.to_vec()),
        })?;
        Ok(Accepted::Updated {
            previous: previous.map(|h| h.conf.version),
            version,
        })
    }

    /// The current configuration, if it is still valid at `now`.
    ///
    /// # Errors
    ///
    /// [`Error::NoConf`] before any configuration was accepted, [`Error::ConfExpired`] after its
    /// expires-at: both answer true to [`Error::is_conf_expired`], and the caller MUST fail closed.
    pub fn current(&self, now: SystemTime) -> Result<Arc<GlobalConf>, Error> {
        let held = self.held()?.ok_or_else(|| Error::NoConf {
            instance: self.anchor.instance.to_string(),
        })?;
        let now_secs = crate::conf::unix_seconds(now);
        if now_secs >= held.conf.expires_at {
            return Err(Error::ConfExpired {
                version: held.conf.version,
                expired_at: held.conf.expires_at,
                now: now_secs,
            });
        }
        Ok(held.conf)
    }

    /// The version held, expired or not.
    pub fn version(&self) -> Option<u64> {
        self.held().ok().flatten().map(|h| h.conf.version)
    }

    fn verify(&self, bytes: &[u8]) -> Result<GlobalConf, Error> {
        let signed = SignedConf::decode(bytes)?;
        if signed.algorithm() != self.anchor.algorithm {
            return Err(Error::BadSignature {
                instance: self.anchor.instance.to_string(),
                anchor_key: self.anchor.public_key.fingerprint(),
            });
        }
        signed.verify(&self.anchor.public_key, &self.anchor.instance)
    }

    fn held(&self) -> Result<Option<Held>, Error> {
        Ok(self
            .current
            .read()
            .map_err(|_| Error::Unreachable("configuration lock poisoned"))?
            .clone())
    }

    fn swap(&self, held: Held) -> Result<(), Error> {
        *self
            .current
            .write()
            .map_err(|_| Error::Unreachable("configuration lock poisoned"))? = Some(held);
        Ok(())
    }
}
