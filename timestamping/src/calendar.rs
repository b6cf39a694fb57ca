//! The calendar: one leaf per second since 1970, in the KSI (RFC 6962-shaped) calendar tree.
//!
//! Spec: Guardtime, "KSI Data Formats", "Calendar hash chain"; RFC 6962 §2.1 for the shape. The
//! tree arithmetic is pure ([`tree`]); durability is the [`CalendarStore`]'s job, under the
//! contract written on the trait.
//!
//! ```text
//!  append(t, round root | none) ─▶ Frontier (right edge, in memory) ─▶ LeafCommit ─▶ store (synced)
//!  chain(t, P) ─▶ tree::path over store.node(level, index) / E[level] ─▶ CalendarChain
//! ```
//!
//! Stage: a second is *committed* when [`Calendar::append`] returns; a crash after that keeps it
//! (the store syncs its WAL first), a crash before loses only that second's round, whose clients
//! have had no answer. The calendar never appends a second at or before its head, so history is
//! never rewritten and never forks across restarts.

pub mod rocks;
pub mod store;
pub mod tree;

use backbone_timestamping_verify::imprint::Imprint;
use backbone_timestamping_verify::publication::PublicationData;
use backbone_timestamping_verify::signature::CalendarChain;

pub use self::store::{CalendarStore, LeafCommit, MemoryStore};
use self::tree::{EmptyRoots, Frontier};
use crate::error::{Error, StoreError};

/// The calendar over a store.
#[derive(Debug)]
pub struct Calendar<S> {
    store: S,
    frontier: Frontier,
    empty: EmptyRoots,
    poisoned: bool,
}

impl<S: CalendarStore> Calendar<S> {
    /// Opens the calendar kept in `store`, rebuilding its right edge in `O(log n)` reads.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] if the store cannot be read.
    pub fn open(store: S) -> Result<Self, Error> {
        let empty = EmptyRoots::new()?;
        let size = store.size().map_err(|e| store_error(&store, e))?;
        let frontier = Frontier::rebuild(size, &empty, |level, index| {
            store.node(level, index).map_err(|e| store_error(&store, e))
        })?;
        Ok(Calendar {
            store,
            frontier,
            empty,
            poisoned: false,
        })
    }

    /// Seconds in the calendar: the head plus one.
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// The last second in the calendar, `None` when it is empty.
    pub fn head(&self) -> Option<u64> {
        self.size().checked_sub(1)
    }

    /// The store, for reads.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Appends second `time` with its round's root (`None` for a second without a round), every
    /// second since the head being empty, and returns the calendar root at `time`. Durable when
    /// it returns.
    ///
    /// # Errors
    ///
    /// [`Error::History`] if `time` is not after the head; [`Error::Store`] if the commit failed,
    /// after which the calendar is poisoned ([`Error::Poisoned`]) until reopened.
    pub fn append(&mut self, time: u64, leaf: Option<&Imprint>) -> Result<Imprint, Error> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let mut next = self.frontier.clone();
        let nodes = next.append(time, leaf, &self.empty)?;
        let commit = LeafCommit { time, nodes };
        if let Err(e) = self.store.append_leaf(&commit) {
            // The write may or may not have reached the disk: only reopening tells.
            self.poisoned = !matches!(e, StoreError::Rewrite { .. });
            return Err(store_error(&self.store, e));
        }
        self.frontier = next;
        self.frontier
            .root()?
            .ok_or(Error::Unreachable("calendar empty after an append"))
    }

    /// The calendar root at `publication_time` (over seconds `0..=publication_time`).
    ///
    /// # Errors
    ///
    /// [`Error::NotInCalendar`] past the head, [`Error::Store`] if a read fails.
    pub fn root_at(&self, publication_time: u64) -> Result<Imprint, Error> {
        if Some(publication_time) == self.head() {
            return self
                .frontier
                .root()?
                .ok_or(Error::Unreachable("head without root"));
        }
        let n = self.size_at(publication_time)?;
        tree::range_root(0, n, &mut |level, index| self.node(level, index))
    }

    /// The calendar hash chain from second `time`'s leaf to the root at `publication_time`.
    ///
    /// # Errors
    ///
    /// [`Error::NotInCalendar`] if either second is past the head or `time` is after
    /// `publication_time`, [`Error::Store`] if a read fails.
    pub fn chain(&self, time: u64, publication_time: u64) -> Result<CalendarChain, Error> {
        let n = self.size_at(publication_time)?;
        let links = tree::path(time, n, &mut |level, index| self.node(level, index))?;
        Ok(CalendarChain {
            publication_time,
            aggregation_time: Some(time),
            input_hash: self.node(0, time)?,
            links,
            unknown: Vec::new(),
        })
    }

    /// Records the calendar root at `time` as a publication and returns it.
    ///
    /// # Errors
    ///
    /// [`Error::NotInCalendar`] past the head, [`Error::Store`] if the store refuses.
    pub fn publish(&self, time: u64) -> Result<PublicationData, Error> {
        let root = self.root_at(time)?;
        self.store
            .put_publication(time, &root)
            .map_err(|e| store_error(&self.store, e))?;
        Ok(PublicationData::new(time, root))
    }

    /// Every publication, oldest first.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] if the store cannot be read.
    pub fn publications(&self) -> Result<Vec<PublicationData>, Error> {
        let list = self
            .store
            .publications()
            .map_err(|e| store_error(&self.store, e))?;
        Ok(list
            .into_iter()
            .map(|(time, hash)| PublicationData::new(time, hash))
            .collect())
    }

    /// The root of a complete perfect subtree: stored if it holds a round, else `E[level]`.
    fn node(&self, level: u8, index: u64) -> Result<Imprint, Error> {
        let stored = self
            .store
            .node(level, index)
            .map_err(|e| store_error(&self.store, e))?;
        Ok(stored.unwrap_or_else(|| self.empty.at(level).clone()))
    }

    fn size_at(&self, publication_time: u64) -> Result<u64, Error> {
        match self.head() {
            Some(head) if publication_time <= head => Ok(publication_time + 1),
            _ => Err(Error::NotInCalendar {
                time: publication_time,
                size: self.size(),
            }),
        }
    }
}

fn store_error<S: CalendarStore>(store: &S, source: StoreError) -> Error {
    Error::Store {
        path: store.location(),
        source,
    }
}

#[cfg(test)]
mod tests;
