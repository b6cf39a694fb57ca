//! The registry's [`Store`] in RocksDB: one column family per [`Table`] plus `audit`, keyed by
//! big-endian sequence number. Every commit is one `WriteBatch` written with the WAL synced.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rocksdb::{ColumnFamilyDescriptor, DB, IteratorMode, Options, WriteBatch, WriteOptions};

use super::{AuditEntry, Change, Store, StoreError, Table};

const AUDIT: &str = "audit";

/// Records and the audit log in a RocksDB directory.
#[derive(Debug)]
pub struct RocksStore {
    db: DB,
    path: PathBuf,
    /// The last audit sequence number; held while a commit builds and writes its batch.
    last_seq: Mutex<u64>,
}

// === impl RocksStore ===

impl RocksStore {
    /// Opens (or creates) the store at `path`.
    ///
    /// # Errors
    ///
    /// When RocksDB cannot open the directory (in use by another process, corrupt, no space).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_owned();
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let families = Table::ALL
            .iter()
            .map(|t| t.name())
            .chain([AUDIT])
            .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = DB::open_cf_descriptors(&options, &path, families)
            .map_err(|e| rocks("open", &path, e))?;
        let last_seq = {
            let cf = db
                .cf_handle(AUDIT)
                .ok_or_else(|| StoreError("audit column family missing".into()))?;
            match db.iterator_cf(cf, IteratorMode::End).next() {
                Some(item) => seq_of(&item.map_err(|e| rocks("read audit log", &path, e))?.0)?,
                None => 0,
            }
        };
        Ok(RocksStore {
            db,
            path,
            last_seq: Mutex::new(last_seq),
        })
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, StoreError> {
        self.db.cf_handle(name).ok_or_else(|| {
            StoreError(format!(
                "column family {name} missing in {}",
                self.path.display()
            ))
        })
    }
}

impl Store for RocksStore {
    fn commit(&self, change: Change) -> Result<Option<u64>, StoreError> {
        let mut last_seq = self
            .last_seq
            .lock()
            .map_err(|_| StoreError("audit sequence lock poisoned".into()))?;
        let mut batch = WriteBatch::default();
        for (table, key, value) in &change.puts {
            batch.put_cf(self.cf(table.name())?, key.as_bytes(), value);
        }
        for (table, key) in &change.deletes {
            batch.delete_cf(self.cf(table.name())?, key.as_bytes());
        }
        let seq = match change.audit {
            Some(mut entry) => {
                entry.seq = *last_seq + 1;
                let bytes = serde_json::to_vec(&entry).map_err(|e| StoreError(e.to_string()))?;
                batch.put_cf(self.cf(AUDIT)?, entry.seq.to_be_bytes(), bytes);
                Some(entry.seq)
            }
            None => None,
        };
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        self.db
            .write_opt(batch, &sync)
            .map_err(|e| rocks("commit", &self.path, e))?;
        if let Some(seq) = seq {
            *last_seq = seq;
        }
        Ok(seq)
    }

    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.db
            .get_cf(self.cf(table.name())?, key.as_bytes())
            .map_err(|e| rocks("read", &self.path, e))
    }

    fn list(&self, table: Table) -> Result<Vec<Vec<u8>>, StoreError> {
        self.db
            .iterator_cf(self.cf(table.name())?, IteratorMode::Start)
            .map(|item| {
                item.map(|(_, v)| v.into_vec())
                    .map_err(|e| rocks("read", &self.path, e))
            })
            .collect()
    }

    fn audit(&self, from: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let start = from.to_be_bytes();
        self.db
            .iterator_cf(
                self.cf(AUDIT)?,
                IteratorMode::From(&start, rocksdb::Direction::Forward),
            )
            .take(limit)
            .map(|item| {
                let (_, v) = item.map_err(|e| rocks("read audit log", &self.path, e))?;
                serde_json::from_slice(&v)
                    .map_err(|e| StoreError(format!("audit entry in {}: {e}", self.path.display())))
            })
            .collect()
    }
}

fn seq_of(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| StoreError(format!("audit key of {} bytes, expected 8", key.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

fn rocks(action: &str, path: &Path, e: rocksdb::Error) -> StoreError {
    StoreError(format!("{action} {}: {e}", path.display()))
}
