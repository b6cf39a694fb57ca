//! An in-memory [`Store`] for tests and tools: nothing survives the process.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{AuditEntry, Change, Store, StoreError, Table};

/// Records and the audit log in memory, behind one lock so that commits are atomic.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    records: BTreeMap<(Table, String), Vec<u8>>,
    audit: Vec<AuditEntry>,
}

// === impl MemoryStore ===

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, StoreError> {
        self.inner
            .lock()
            .map_err(|_| StoreError("memory store lock poisoned".into()))
    }
}

impl Store for MemoryStore {
    fn commit(&self, change: Change) -> Result<Option<u64>, StoreError> {
        let mut inner = self.lock()?;
        for (table, key, value) in change.puts {
            inner.records.insert((table, key), value);
        }
        for (table, key) in change.deletes {
            inner.records.remove(&(table, key));
        }
        Ok(change.audit.map(|mut entry| {
            entry.seq = inner.audit.len() as u64 + 1;
            let seq = entry.seq;
            inner.audit.push(entry);
            seq
        }))
    }

    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock()?.records.get(&(table, key.to_owned())).cloned())
    }

    fn list(&self, table: Table) -> Result<Vec<Vec<u8>>, StoreError> {
        let inner = self.lock()?;
        Ok(inner
            .records
            .range((table, String::new())..)
            .take_while(|((t, _), _)| *t == table)
            .map(|(_, v)| v.clone())
            .collect())
    }

    fn audit(&self, from: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        Ok(self
            .lock()?
            .audit
            .iter()
            .filter(|e| e.seq >= from)
            .take(limit)
            .cloned()
            .collect())
    }
}
