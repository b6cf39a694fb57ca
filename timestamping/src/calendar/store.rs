//! The storage the calendar needs, as a narrow trait the calendar owns, and the in-memory store
//! used in tests. The RocksDB store is in [`crate::calendar::rocks`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};

use backbone_timestamping_verify::imprint::Imprint;

use crate::calendar::tree::Node;
use crate::error::StoreError;

/// What one append commits: the second, and the roots of the subtrees it completed that hold a
/// round (the leaf itself among them when the second had a round).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafCommit {
    /// The second appended; every second between the old size and it is empty.
    pub time: u64,
    /// Completed subtrees holding a round, level 0 being the leaf.
    pub nodes: Vec<Node>,
}

/// Durable storage for the calendar.
///
/// Contract:
///
/// - [`CalendarStore::append_leaf`] MUST refuse a `time` below the stored size with
///   [`StoreError::Rewrite`]: a committed second is never written again.
/// - When `append_leaf` returns `Ok`, the nodes and the new size (`time + 1`) MUST be durable
///   (the RocksDB write-ahead log synced) and MUST become visible together, or not at all.
/// - A stored node or publication MUST NOT be overwritten; `put_publication` with the same hash
///   again SHOULD succeed, with another hash MUST fail with [`StoreError::PublicationConflict`].
/// - Reads MUST see every append that returned `Ok` before them, across reopening.
/// - Calls MAY come from several threads; implementations MUST be `Send + Sync`.
pub trait CalendarStore: Send + Sync + fmt::Debug {
    /// Commits second `commit.time` and its completed nodes, as one durable write.
    ///
    /// # Errors
    ///
    /// [`StoreError::Rewrite`] if `commit.time` is below the size, or the store's failure.
    fn append_leaf(&self, commit: &LeafCommit) -> Result<(), StoreError>;

    /// The leaf of second `time` if that second had a round; `None` for an empty second.
    ///
    /// # Errors
    ///
    /// The store's failure.
    fn leaf(&self, time: u64) -> Result<Option<Imprint>, StoreError>;

    /// The root of the perfect subtree `(level, index)` if it holds a round.
    ///
    /// # Errors
    ///
    /// The store's failure.
    fn node(&self, level: u8, index: u64) -> Result<Option<Imprint>, StoreError>;

    /// Seconds in the calendar: the last committed second plus one, 0 when empty.
    ///
    /// # Errors
    ///
    /// The store's failure.
    fn size(&self) -> Result<u64, StoreError>;

    /// Keeps the publication of the calendar root at `time`.
    ///
    /// # Errors
    ///
    /// [`StoreError::PublicationConflict`], or the store's failure.
    fn put_publication(&self, time: u64, hash: &Imprint) -> Result<(), StoreError>;

    /// Every publication, oldest first.
    ///
    /// # Errors
    ///
    /// The store's failure.
    fn publications(&self) -> Result<Vec<(u64, Imprint)>, StoreError>;

    /// Where the store lives, for error messages.
    fn location(&self) -> std::path::PathBuf;
}

/// A calendar store in memory, for tests: nothing survives the process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    size: u64,
    nodes: BTreeMap<(u8, u64), Imprint>,
    publications: BTreeMap<u64, Imprint>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }
}

impl CalendarStore for MemoryStore {
    fn append_leaf(&self, commit: &LeafCommit) -> Result<(), StoreError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if commit.time < state.size {
            return Err(StoreError::Rewrite {
                time: commit.time,
                size: state.size,
            });
        }
        for node in &commit.nodes {
            state
                .nodes
                .entry((node.level, node.index))
                .or_insert_with(|| node.hash.clone());
        }
        state.size = commit.time.saturating_add(1);
        Ok(())
    }

    fn leaf(&self, time: u64) -> Result<Option<Imprint>, StoreError> {
        self.node(0, time)
    }

    fn node(&self, level: u8, index: u64) -> Result<Option<Imprint>, StoreError> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(state.nodes.get(&(level, index)).cloned())
    }

    fn size(&self) -> Result<u64, StoreError> {
        Ok(self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .size)
    }

    fn put_publication(&self, time: u64, hash: &Imprint) -> Result<(), StoreError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match state.publications.get(&time) {
            Some(existing) if existing != hash => Err(StoreError::PublicationConflict { time }),
            Some(_) => Ok(()),
            None => {
                state.publications.insert(time, hash.clone());
                Ok(())
            }
        }
    }

    fn publications(&self) -> Result<Vec<(u64, Imprint)>, StoreError> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(state
            .publications
            .iter()
            .map(|(t, h)| (*t, h.clone()))
            .collect())
    }

    fn location(&self) -> std::path::PathBuf {
        "memory".into()
    }
}

impl<T: CalendarStore + ?Sized> CalendarStore for Box<T> {
    fn append_leaf(&self, commit: &LeafCommit) -> Result<(), StoreError> {
        (**self).append_leaf(commit)
    }

    fn leaf(&self, time: u64) -> Result<Option<Imprint>, StoreError> {
        (**self).leaf(time)
    }

    fn node(&self, level: u8, index: u64) -> Result<Option<Imprint>, StoreError> {
        (**self).node(level, index)
    }

    fn size(&self) -> Result<u64, StoreError> {
        (**self).size()
    }

    fn put_publication(&self, time: u64, hash: &Imprint) -> Result<(), StoreError> {
        (**self).put_publication(time, hash)
    }

    fn publications(&self) -> Result<Vec<(u64, Imprint)>, StoreError> {
        (**self).publications()
    }

    fn location(&self) -> std::path::PathBuf {
        (**self).location()
    }
}
