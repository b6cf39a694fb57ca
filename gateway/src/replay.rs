//! Replay protection on the provider gateway: a signed request is accepted once, and only while
//! it is fresh.
//!
//! A request is refused when its signed creation time is more than the window away from the
//! provider's clock (too old, or from the future), or when the same client used the same message
//! id within the window. The ids seen are held in memory for one window; after a restart the
//! memory is empty, so requests created before the gateway started are refused too — a replay of
//! a message captured before a restart can never slip through the gap.

use std::collections::hash_map::RandomState;
use std::collections::{HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// The default window: five minutes either side, like X-Road's clock-skew allowance.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);

/// How many independently locked parts the ids are spread over.
///
/// A hash set that outgrows its table moves every entry to a table twice the size while its lock
/// is held, so one set would stop every exchange for a time that doubles with the set (a window
/// at thousands of requests a second holds millions of ids). Spread over 256 sets, each rehash
/// moves a 256th of the ids and holds up only the requests that fall in that part; the parts'
/// locks also keep concurrent requests from waiting on each other. `cargo bench -p
/// backbone-gateway --bench replay` measures the longest admit beside one set.
const SHARDS: usize = 256;

/// Why a request counts as a replay.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// Created longer ago than the window.
    #[error(
        "the request was created {age_ms} ms ago, longer than the replay window of {window_ms} ms"
    )]
    TooOld {
        /// Its age.
        age_ms: u64,
        /// The window.
        window_ms: u64,
    },
    /// Created further in the future than the window.
    #[error(
        "the request is dated {ahead_ms} ms in the future, more than the allowed {window_ms} ms"
    )]
    FromFuture {
        /// How far ahead.
        ahead_ms: u64,
        /// The window.
        window_ms: u64,
    },
    /// Created before this gateway started: its id may have been seen before the restart.
    #[error(
        "the request was created before this gateway started; send it again with a new message id"
    )]
    BeforeStart,
    /// The message id was seen within the window.
    #[error("message id {0:?} was already used by this client")]
    Seen(String),
}

/// The ids seen within the window.
#[derive(Debug)]
pub struct ReplayGuard {
    window_ms: u64,
    started_ms: u64,
    /// Which shard a `(client, message id)` belongs to (keys chosen at random per process, so a
    /// client cannot aim its ids at one shard).
    hasher: RandomState,
    shards: Box<[Mutex<Seen>]>,
}

/// One shard: the ids that hash to it, and when each may be forgotten.
#[derive(Debug, Default)]
struct Seen {
    ids: HashSet<(String, String)>,
    /// (forget at, key), in order of insertion; `forget at` grows with the clock.
    expiry: VecDeque<(u64, (String, String))>,
}

// === impl ReplayGuard ===

impl ReplayGuard {
    /// A guard that started at `now_ms`.
    pub fn new(window: Duration, now_ms: u64) -> Self {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let shards = (0..SHARDS).map(|_| Mutex::new(Seen::default())).collect();
        ReplayGuard {
            window_ms,
            started_ms: now_ms,
            hasher: RandomState::new(),
            shards,
        }
    }

    /// Admits `(client, message id)` created at `created_ms` if it is fresh and new.
    ///
    /// # Errors
    ///
    /// [`ReplayError`] saying why not.
    pub fn admit(
        &self,
        client: &str,
        message_id: &str,
        created_ms: u64,
        now_ms: u64,
    ) -> Result<(), ReplayError> {
        let window_ms = self.window_ms;
        if created_ms.saturating_add(window_ms) < now_ms {
            return Err(ReplayError::TooOld {
                age_ms: now_ms - created_ms,
                window_ms,
            });
        }
        if created_ms > now_ms.saturating_add(window_ms) {
            return Err(ReplayError::FromFuture {
                ahead_ms: created_ms - now_ms,
                window_ms,
            });
        }
        if created_ms < self.started_ms {
            return Err(ReplayError::BeforeStart);
        }
        let mut seen = self
            .shard(client, message_id)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while seen.expiry.front().is_some_and(|(at, _)| *at < now_ms) {
            if let Some((_, key)) = seen.expiry.pop_front() {
                seen.ids.remove(&key);
            }
        }
        let key = (client.to_owned(), message_id.to_owned());
        if !seen.ids.insert(key.clone()) {
            return Err(ReplayError::Seen(message_id.to_owned()));
        }
        // Forgotten only once a copy would be too old anyway: a window after the latest moment
        // the message could still be admitted.
        let forget_at = created_ms
            .max(now_ms)
            .saturating_add(window_ms.saturating_mul(2));
        seen.expiry.push_back((forget_at, key));
        Ok(())
    }

    /// How many ids are held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().map_or(0, |s| s.ids.len()))
            .sum()
    }

    /// Whether no id is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, client: &str, message_id: &str) -> &Mutex<Seen> {
        let hash = self.hasher.hash_one((client, message_id));
        let index = usize::try_from(hash % SHARDS as u64).unwrap_or(0);
        // `shards` has SHARDS elements and the index is below SHARDS.
        #[allow(clippy::indexing_slicing)]
        &self.shards[index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_id_once_within_the_window_and_stale_or_early_requests_refused() {
        let guard = ReplayGuard::new(Duration::from_secs(300), 1_000_000);
        let now = 1_000_500;
        guard.admit("EE/GOV/1/a", "id-1", now - 100, now).unwrap();
        assert_eq!(
            guard.admit("EE/GOV/1/a", "id-1", now - 100, now),
            Err(ReplayError::Seen("id-1".into()))
        );
        // Another client may use the same id.
        guard.admit("EE/GOV/2/b", "id-1", now, now).unwrap();
        assert_eq!(
            guard.admit("EE/GOV/1/a", "id-2", 999_000, now),
            Err(ReplayError::BeforeStart)
        );
        let later = now + 400_000;
        assert!(matches!(
            guard.admit("EE/GOV/1/a", "id-3", now, later),
            Err(ReplayError::TooOld { .. })
        ));
        assert!(matches!(
            guard.admit("EE/GOV/1/a", "id-4", later + 300_001, later),
            Err(ReplayError::FromFuture { .. })
        ));
        // Ids are forgotten only after a copy could no longer be fresh.
        guard.admit("EE/GOV/1/a", "id-5", later, later).unwrap();
        assert!(
            guard
                .admit("EE/GOV/1/a", "id-1", now - 100, later + 1)
                .is_err()
        );
        assert_eq!(guard.len(), 3);
        guard
            .admit("EE/GOV/1/a", "id-6", later + 700_000, later + 700_000)
            .unwrap();
        // Each shard forgets its own ids when it is next used: use every shard once more.
        let mut touched = vec![false; SHARDS];
        let mut admitted = 0;
        for n in 0.. {
            if touched.iter().all(|t| *t) {
                break;
            }
            let id = format!("touch-{n}");
            let shard = guard.shard("EE/GOV/3/c", &id);
            let index = guard
                .shards
                .iter()
                .position(|s| std::ptr::eq(s, shard))
                .unwrap();
            if !touched[index] {
                touched[index] = true;
                guard
                    .admit("EE/GOV/3/c", &id, later + 700_000, later + 700_000)
                    .unwrap();
                admitted += 1;
            }
        }
        assert_eq!(
            guard.len(),
            1 + admitted,
            "ids older than two windows are forgotten"
        );
    }

    #[test]
    fn ids_spread_over_the_shards_and_each_is_refused_the_second_time() {
        let guard = ReplayGuard::new(Duration::from_secs(300), 1_000_000);
        let now = 1_000_500;
        let count = 200 * SHARDS;
        for n in 0..count {
            guard
                .admit("EE/GOV/70000001/ehr", &format!("{n:032x}"), now, now)
                .unwrap();
        }
        assert_eq!(guard.len(), count);
        let sizes: Vec<usize> = guard
            .shards
            .iter()
            .map(|s| s.lock().unwrap().ids.len())
            .collect();
        let largest = sizes.iter().copied().max().unwrap();
        assert!(
            largest < 2 * count / SHARDS,
            "one shard holds {largest} of {count} ids: {sizes:?}"
        );
        for n in (0..count).step_by(97) {
            let id = format!("{n:032x}");
            assert_eq!(
                guard.admit("EE/GOV/70000001/ehr", &id, now, now),
                Err(ReplayError::Seen(id))
            );
        }
        // The same id from another client is another request.
        guard
            .admit("EE/COM/10000001/pharmacy", &format!("{:032x}", 5), now, now)
            .unwrap();
    }
}
