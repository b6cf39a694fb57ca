//! Where the keyless signature of each RFC 3161 token is kept, by serial number, so that
//! `GET /tsa/{serial}.ksig` (and `backbone ksi tsa-proof`) can hand it out later.
//!
//! ```text
//!  RocksDB directory DATA_DIR/tsa    key: serial (16 bytes BE)   value: KSI signature (0x800)
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use rocksdb::{DB, Options, WriteOptions};

use crate::error::StoreError;
use crate::tsa::Serial;

/// The keyless signatures of issued tokens.
///
/// Implementations MUST make a signature durable before [`TokenStore::put`] returns (the token
/// is answered right after), and MUST NOT overwrite a stored signature: serial numbers are
/// unique, so a second `put` for a serial is a bug and SHOULD be refused.
pub trait TokenStore: Send + Sync + std::fmt::Debug {
    /// Stores the keyless signature of token `serial`.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if it is not durable.
    fn put(&self, serial: Serial, signature: &[u8]) -> Result<(), StoreError>;

    /// The keyless signature of token `serial`, if stored.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the store cannot be read.
    fn get(&self, serial: Serial) -> Result<Option<Vec<u8>>, StoreError>;

    /// Where the store is, for error messages.
    fn location(&self) -> PathBuf;
}

/// A store in memory, for tests and benchmarks.
#[derive(Debug, Default)]
pub struct MemoryTokenStore {
    signatures: Mutex<HashMap<Serial, Vec<u8>>>,
}

/// The store in a RocksDB directory of its own; every put is a synced write (RocksDB groups
/// concurrent ones into one WAL sync).
#[derive(Debug)]
pub struct RocksTokenStore {
    db: DB,
    path: PathBuf,
}

// === impl MemoryTokenStore ===

impl TokenStore for MemoryTokenStore {
    fn put(&self, serial: Serial, signature: &[u8]) -> Result<(), StoreError> {
        let mut signatures = self
            .signatures
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if signatures.contains_key(&serial) {
            return Err(StoreError::Corrupt {
                what: "token serial stored twice",
            });
        }
        signatures.insert(serial, signature.to_vec());
        Ok(())
    }

    fn get(&self, serial: Serial) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .signatures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&serial)
            .cloned())
    }

    fn location(&self) -> PathBuf {
        PathBuf::from("memory")
    }
}

// === impl RocksTokenStore ===

impl RocksTokenStore {
    /// Opens (creating if missing) the store at `path`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Rocks`] if RocksDB cannot open the directory.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_owned();
        let mut options = Options::default();
        options.create_if_missing(true);
        Ok(RocksTokenStore {
            db: DB::open(&options, &path)?,
            path,
        })
    }
}

impl TokenStore for RocksTokenStore {
    fn put(&self, serial: Serial, signature: &[u8]) -> Result<(), StoreError> {
        let key = serial.0.to_be_bytes();
        // Serials are unique, so no two writers race on one key; the check guards against bugs.
        if self.db.get_pinned(key)?.is_some() {
            return Err(StoreError::Corrupt {
                what: "token serial stored twice",
            });
        }
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        Ok(self.db.put_opt(key, signature, &sync)?)
    }

    fn get(&self, serial: Serial) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get(serial.0.to_be_bytes())?)
    }

    fn location(&self) -> PathBuf {
        self.path.clone()
    }
}
