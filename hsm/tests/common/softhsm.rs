//! SoftHSM2 tokens for tests and benches: a fresh, uniquely labelled token per test.
//!
//! SoftHSM2 reads the file named by `SOFTHSM2_CONF` when the module is first initialised in a
//! process. `.cargo/config.toml` points it at `target/softhsm/softhsm2.conf`, and `ops/test.sh` at a
//! fresh temporary directory. [`token`] creates that file and its token directory when they are
//! missing, then initialises a new token through [`pkcs11::init_token`].
// Test fixture: failing loudly is the point.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime};

use backbone_hsm::Pin;
use backbone_hsm::config::Pkcs11Config;
use backbone_hsm::pkcs11::{self, MAX_TOKEN_LABEL_LEN};

/// The SoftHSM2 module on Debian and Ubuntu.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// The user PIN of every test token.
pub const USER_PIN: &str = "test-user-1234";

/// The security officer PIN of every test token.
pub const SO_PIN: &str = "test-so-5678";

/// Every test token's label starts with this, so that old ones can be told apart and pruned.
pub const LABEL_PREFIX: &str = "bbt-";

/// Test tokens older than this are removed when a test process starts; the default token
/// directory is shared by every `cargo test` run.
const PRUNE_AFTER: Duration = Duration::from_secs(3600);

/// A freshly initialised token.
pub struct TestToken {
    /// The token label.
    pub label: String,
    /// A configuration that opens it.
    pub config: Pkcs11Config,
}

impl TestToken {
    /// The user PIN.
    pub fn pin(&self) -> Pin {
        Pin::new(USER_PIN)
    }
}

/// Creates a new token for the test `name`. The label is unique in this process and across
/// processes (it holds the process id).
pub fn token(name: &str) -> TestToken {
    static CREATING: Mutex<()> = Mutex::new(());
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let _creating = CREATING.lock().unwrap_or_else(|p| p.into_inner());
    prepare_config();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut label = format!("{LABEL_PREFIX}{}-{n}-{name}", std::process::id());
    label.truncate(MAX_TOKEN_LABEL_LEN);
    pkcs11::init_token(
        Path::new(MODULE),
        &label,
        &Pin::new(SO_PIN),
        &Pin::new(USER_PIN),
    )
    .unwrap_or_else(|e| panic!("cannot create SoftHSM2 token {label}: {e}"));
    let config = Pkcs11Config {
        module: PathBuf::from(MODULE),
        token_label: label.clone(),
        sessions: 2,
        reconnect_attempts: 3,
    };
    TestToken { label, config }
}

/// Held (for reading) by tests that touch the module; held for writing by a test that finalises
/// it, which would break every other test's raw sessions.
static MODULE_USE: RwLock<()> = RwLock::new(());

/// Taken by every test that uses the module.
pub fn shared() -> RwLockReadGuard<'static, ()> {
    MODULE_USE.read().unwrap_or_else(|p| p.into_inner())
}

/// Taken by a test that finalises the module.
pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    MODULE_USE.write().unwrap_or_else(|p| p.into_inner())
}

/// Writes the SoftHSM2 configuration and token directory named by `SOFTHSM2_CONF` if missing.
fn prepare_config() {
    static PREPARED: Once = Once::new();
    PREPARED.call_once(|| {
        let conf = PathBuf::from(std::env::var_os("SOFTHSM2_CONF").expect(
            "SOFTHSM2_CONF is not set: run through cargo (see .cargo/config.toml) or ops/test.sh",
        ));
        let dir = conf
            .parent()
            .expect("SOFTHSM2_CONF has a parent directory")
            .to_owned();
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        if !conf.exists() {
            let content = format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            );
            // Another test process may be writing it too: write aside, then rename.
            let aside = dir.join(format!(".softhsm2.conf.{}", std::process::id()));
            std::fs::write(&aside, content).unwrap();
            std::fs::rename(&aside, &conf).unwrap();
        }
        prune_old_tokens(&tokens);
    });
}

/// Removes test tokens (label prefix [`LABEL_PREFIX`]) untouched for [`PRUNE_AFTER`]. Runs before
/// the module is initialised in this process.
fn prune_old_tokens(tokens: &Path) {
    let Ok(entries) = std::fs::read_dir(tokens) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let object = entry.path().join("token.object");
        let Ok(modified) = object.metadata().and_then(|m| m.modified()) else {
            continue;
        };
        if now.duration_since(modified).unwrap_or_default() < PRUNE_AFTER {
            continue;
        }
        let Ok(bytes) = std::fs::read(&object) else {
            continue;
        };
        if bytes
            .windows(LABEL_PREFIX.len())
            .any(|w| w == LABEL_PREFIX.as_bytes())
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
