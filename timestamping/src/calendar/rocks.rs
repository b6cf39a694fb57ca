//! The calendar store on RocksDB: one directory, a column family per kind of record, every
//! append one synced write batch.
//!
//! ```text
//!  column family   key                         value
//!  nodes           level (1 byte) || index BE  imprint (level 0: a second's round root)
//!  meta            "size"                      u64 BE: seconds committed
//!  publications    time BE                     imprint of the calendar root at that second
//! ```
//!
//! A single mutex serialises appends so that the size check and the write are one step; RocksDB
//! groups concurrent synced writes into one WAL sync by itself.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use backbone_timestamping_verify::imprint::Imprint;
use rocksdb::{ColumnFamilyDescriptor, DB, IteratorMode, Options, WriteBatch, WriteOptions};

use crate::calendar::store::{CalendarStore, LeafCommit};
use crate::error::StoreError;

const CF_NODES: &str = "nodes";
const CF_META: &str = "meta";
const CF_PUBLICATIONS: &str = "publications";
const KEY_SIZE: &[u8] = b"size";

/// The calendar in a RocksDB directory.
#[derive(Debug)]
pub struct RocksStore {
    db: DB,
    path: PathBuf,
    append: Mutex<()>,
}

impl RocksStore {
    /// Opens (creating if missing) the calendar at `path`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Rocks`] if RocksDB cannot open the directory.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_owned();
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let families = [CF_NODES, CF_META, CF_PUBLICATIONS]
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = DB::open_cf_descriptors(&options, &path, families)?;
        Ok(RocksStore {
            db,
            path,
            append: Mutex::new(()),
        })
    }

    fn cf(&self, name: &'static str) -> Result<&rocksdb::ColumnFamily, StoreError> {
        self.db.cf_handle(name).ok_or(StoreError::Corrupt {
            what: "column family",
        })
    }

    fn get_imprint(&self, cf: &'static str, key: &[u8]) -> Result<Option<Imprint>, StoreError> {
        match self.db.get_cf(self.cf(cf)?, key)? {
            Some(bytes) => Imprint::from_bytes(&bytes)
                .map(Some)
                .map_err(|_| StoreError::Corrupt { what: "imprint" }),
            None => Ok(None),
        }
    }
}

fn node_key(level: u8, index: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(level);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

impl CalendarStore for RocksStore {
    fn append_leaf(&self, commit: &LeafCommit) -> Result<(), StoreError> {
        let _serial = self.append.lock().unwrap_or_else(PoisonError::into_inner);
        let size = self.size()?;
        if commit.time < size {
            return Err(StoreError::Rewrite {
                time: commit.time,
                size,
            });
        }
        let nodes = self.cf(CF_NODES)?;
        let mut batch = WriteBatch::default();
        for node in &commit.nodes {
            batch.put_cf(
                nodes,
                node_key(node.level, node.index),
                node.hash.as_bytes(),
            );
        }
        batch.put_cf(
            self.cf(CF_META)?,
            KEY_SIZE,
            commit.time.saturating_add(1).to_be_bytes(),
        );
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(batch, &options)?;
        Ok(())
    }

    fn leaf(&self, time: u64) -> Result<Option<Imprint>, StoreError> {
        self.node(0, time)
    }

    fn node(&self, level: u8, index: u64) -> Result<Option<Imprint>, StoreError> {
        self.get_imprint(CF_NODES, &node_key(level, index))
    }

    fn size(&self) -> Result<u64, StoreError> {
        match self.db.get_cf(self.cf(CF_META)?, KEY_SIZE)? {
            Some(bytes) => {
                let bytes: [u8; 8] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt { what: "size" })?;
                Ok(u64::from_be_bytes(bytes))
            }
            None => Ok(0),
        }
    }

    fn put_publication(&self, time: u64, hash: &Imprint) -> Result<(), StoreError> {
        let _serial = self.append.lock().unwrap_or_else(PoisonError::into_inner);
        let key = time.to_be_bytes();
        if let Some(existing) = self.get_imprint(CF_PUBLICATIONS, &key)? {
            return if existing == *hash {
                Ok(())
            } else {
                Err(StoreError::PublicationConflict { time })
            };
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_PUBLICATIONS)?, key, hash.as_bytes());
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(batch, &options)?;
        Ok(())
    }

    fn publications(&self) -> Result<Vec<(u64, Imprint)>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_PUBLICATIONS)?, IteratorMode::Start)
        {
            let (key, value) = item?;
            let key: [u8; 8] = (*key).try_into().map_err(|_| StoreError::Corrupt {
                what: "publication time",
            })?;
            let hash = Imprint::from_bytes(&value).map_err(|_| StoreError::Corrupt {
                what: "publication",
            })?;
            out.push((u64::from_be_bytes(key), hash));
        }
        Ok(out)
    }

    fn location(&self) -> PathBuf {
        self.path.clone()
    }
}
