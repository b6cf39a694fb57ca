//! Replay protection on the provider gateway: a signed request is accepted once, and only while
//! it is fresh.
//!
//! A request is refused when its signed creation time is more than the window away from the
//! provider's clock (too old, or from the future), or when the same client used the same message
//! id within the window. The ids seen are held in memory for one window; after a restart the
//! memory is empty, so requests created before the gateway started are refused too — a replay of
//! a message captured before a restart can never slip through the gap.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// The default window: five minutes either side, like X-Road's clock-skew allowance.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);

/// Why a request counts as a replay.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// Created longer ago than the window.
    #[error("the request was created {age_ms} ms ago, longer than the replay window of {window_ms} ms")]
    TooOld {
        /// Its age.
        age_ms: u64,
        /// The window.
        window_ms: u64,
    },
    /// Created further in the future than the window.
    #[error("the request is dated {ahead_ms} ms in the future, more than the allowed {window_ms} ms")]
    FromFuture {
        /// How far ahead.
        ahead_ms: u64,
        /// The window.
        window_ms: u64,
    },
    /// Created before this gateway started: its id may have been seen before the restart.
    #[error("the request was created before this gateway started; send it again with a new message id")]
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
    seen: Mutex<Seen>,
}

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
        ReplayGuard { window_ms, started_ms: now_ms, seen: Mutex::new(Seen::default()) }
    }

    /// Admits `(client, message id)` created at `created_ms` if it is fresh and new.
    ///
    /// # Errors
    ///
    /// [`ReplayError`] saying why not.
    pub fn admit(&self, client: &str, message_id: &str, created_ms: u64, now_ms: u64) -> Result<(), ReplayError> {
        let window_ms = self.window_ms;
        if created_ms.saturating_add(window_ms) < now_ms {
            return Err(ReplayError::TooOld { age_ms: now_ms - created_ms, window_ms });
        }
        if created_ms > now_ms.saturating_add(window_ms) {
            return Err(ReplayError::FromFuture { ahead_ms: created_ms - now_ms, window_ms });
        }
        if created_ms < self.started_ms {
            return Err(ReplayError::BeforeStart);
        }
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
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
        let forget_at = created_ms.max(now_ms).saturating_add(window_ms.saturating_mul(2));
        seen.expiry.push_back((forget_at, key));
        Ok(())
    }

    /// How many ids are held.
    pub fn len(&self) -> usize {
        self.seen.lock().map_or(0, |s| s.ids.len())
    }

    /// Whether no id is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        assert_eq!(guard.admit("EE/GOV/1/a", "id-1", now - 100, now), Err(ReplayError::Seen("id-1".into())));
        // Another client may use the same id.
        guard.admit("EE/GOV/2/b", "id-1", now, now).unwrap();
        assert_eq!(guard.admit("EE/GOV/1/a", "id-2", 999_000, now), Err(ReplayError::BeforeStart));
        let later = now + 400_000;
        assert!(matches!(guard.admit("EE/GOV/1/a", "id-3", now, later), Err(ReplayError::TooOld { .. })));
        assert!(matches!(guard.admit("EE/GOV/1/a", "id-4", later + 300_001, later), Err(ReplayError::FromFuture { .. })));
        // Ids are forgotten only after a copy could no longer be fresh.
        guard.admit("EE/GOV/1/a", "id-5", later, later).unwrap();
        assert!(guard.admit("EE/GOV/1/a", "id-1", now - 100, later + 1).is_err());
        assert_eq!(guard.len(), 3);
        guard.admit("EE/GOV/1/a", "id-6", later + 700_000, later + 700_000).unwrap();
        assert_eq!(guard.len(), 1, "ids older than two windows are forgotten");
    }
}
