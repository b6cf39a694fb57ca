//! A token's pool of logged-in sessions, and recovery when the sessions are lost.
//!
//! ```text
//!  run(op) ─▶ checkout ─▶ op(session) ─ok─▶ checkin ─▶ idle
//!                              │
//!                            lost (CKR_SESSION_HANDLE_INVALID, CKR_USER_NOT_LOGGED_IN, ...)
//!                              ▼
//!              reconnect: generation + 1, drop the pool, find the slot by label,
//!              open sessions, log in ─▶ run op again (up to reconnect_attempts)
//! ```
//!
//! A cryptoki `Session` may be used by one thread at a time, so each call borrows one session from
//! the pool. Sessions carry the generation they were opened in: a session returned after a
//! reconnect is stale and is closed, not pooled.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use super::module::Module;
use super::rv;
use crate::{Error, Metrics, Pin};

/// Pause before the second and later reconnection attempts, doubled each time up to
/// [`MAX_RECONNECT_BACKOFF`]: the first attempt is immediate because a lost session on a healthy
/// token is the common case; a restarting token needs a moment.
pub(crate) const RECONNECT_BACKOFF: Duration = Duration::from_millis(50);

/// Longest pause between reconnection attempts.
pub(crate) const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(1);

/// One token: where it is, how to log in, and its sessions.
pub(crate) struct Token {
    pub(crate) module: Arc<Module>,
    pub(crate) label: String,
    pin: Pin,
    sessions: usize,
    reconnect_attempts: u32,
    state: Mutex<PoolState>,
    /// A copy of `PoolState::generation`, readable while a call holds the module guard (taking
    /// `state` then could deadlock against a reconnect that holds `state` and waits for the
    /// module).
    generation: AtomicU64,
    returned: Condvar,
    pub(crate) metrics: OnceLock<Metrics>,
}

/// Why a call on the token did not succeed.
pub(crate) enum Failure {
    /// The session, login or library state is gone; re-opening may cure it.
    Lost {
        /// The generation of the session that failed.
        generation: u64,
        /// What failed, for the log and for [`Error::TokenUnavailable`].
        error: Error,
    },
    /// A failure that re-opening does not cure.
    Fatal(Error),
}

/// A session borrowed from the pool.
pub(crate) struct Lease {
    session: Session,
    pub(crate) generation: u64,
    pub(crate) slot: Slot,
    module_epoch: u64,
}

struct PoolState {
    /// Bumped on every reconnect; sessions and cached key handles of older generations are stale.
    generation: u64,
    /// The token's slot, or `None` after a failed reconnect.
    slot: Option<Slot>,
    /// The module epoch the sessions were opened in.
    module_epoch: u64,
    idle: Vec<Session>,
}

// === impl Token ===

impl Token {
    /// Finds the token, opens `sessions` sessions and logs in.
    pub(crate) fn open(
        module: Arc<Module>,
        label: String,
        pin: Pin,
        sessions: usize,
        reconnect_attempts: u32,
    ) -> Result<Token, Error> {
        let token = Token {
            module,
            label,
            pin,
            sessions,
            reconnect_attempts,
            state: Mutex::new(PoolState {
                generation: 0,
                slot: None,
                module_epoch: 0,
                idle: Vec::new(),
            }),
            generation: AtomicU64::new(0),
            returned: Condvar::new(),
            metrics: OnceLock::new(),
        };
        {
            let mut state = token.lock_state();
            token.connect(&mut state).map_err(|failure| match failure {
                Failure::Lost { error, .. } | Failure::Fatal(error) => error,
            })?;
        }
        Ok(token)
    }

    /// Runs `op` on a logged-in session. When `op` fails because the session or login is lost,
    /// re-opens the pool and runs `op` again, up to `reconnect_attempts` times.
    pub(crate) fn run<T>(
        &self,
        mut op: impl FnMut(&Session, &Lease) -> Result<T, Failure>,
    ) -> Result<T, Error> {
        let mut attempts = 0;
        loop {
            let outcome = self.checkout().and_then(|lease| self.call(lease, &mut op));
            let (generation, error) = match outcome {
                Ok(value) => return Ok(value),
                Err(Failure::Fatal(error)) => return Err(error),
                Err(Failure::Lost { generation, error }) => (generation, error),
            };
            if attempts >= self.reconnect_attempts {
                return Err(Error::TokenUnavailable {
                    token: self.label.clone(),
                    attempts,
                    reason: error.to_string(),
                });
            }
            attempts += 1;
            if attempts > 1 {
                let backoff = RECONNECT_BACKOFF.saturating_mul(1 << (attempts - 2).min(16));
                std::thread::sleep(backoff.min(MAX_RECONNECT_BACKOFF));
            }
            if let Err(Failure::Fatal(error)) = self.reconnect(generation, &error, attempts) {
                return Err(error);
            }
        }
    }

    /// Classifies a cryptoki failure of `operation` on `lease`'s session.
    ///
    /// Besides the return values that always mean "lost", a failure counts as lost when the
    /// session is no longer logged in or the pool was re-opened meanwhile: tokens report a login
    /// that vanished during a call in many ways (SoftHSM2 says CKR_GENERAL_ERROR from C_SignInit).
    pub(crate) fn failure(
        &self,
        error: &CkError,
        operation: &'static str,
        session: &Session,
        lease: &Lease,
    ) -> Failure {
        let mapped = rv::to_error(error, &self.label, operation);
        let lost = rv::is_lost(error)
            || self.generation.load(Ordering::Acquire) != lease.generation
            || session.get_session_info().map_or(true, |info| {
                !matches!(
                    info.session_state(),
                    SessionState::RoUser | SessionState::RwUser
                )
            });
        if lost {
            Failure::Lost {
                generation: lease.generation,
                error: mapped,
            }
        } else {
            Failure::Fatal(mapped)
        }
    }

    fn checkout(&self) -> Result<Lease, Failure> {
        let mut state = self.lock_state();
        loop {
            let Some(slot) = state.slot else {
                let error = Error::Pkcs11 {
                    token: self.label.clone(),
                    operation: "reconnect",
                    reason: "the token was not found again after it was lost".to_owned(),
                };
                return Err(Failure::Lost {
                    generation: state.generation,
                    error,
                });
            };
            if let Some(session) = state.idle.pop() {
                return Ok(Lease {
                    session,
                    generation: state.generation,
                    slot,
                    module_epoch: state.module_epoch,
                });
            }
            state = self
                .returned
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    fn call<T>(
        &self,
        lease: Lease,
        op: &mut impl FnMut(&Session, &Lease) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let calls = self.module.calls();
        let result = if calls.epoch == lease.module_epoch {
            op(&lease.session, &lease)
        } else {
            // The library was initialised again since this session was opened: its handle number
            // may now belong to somebody else's session. Never touch it.
            let error = Error::Pkcs11 {
                token: self.label.clone(),
                operation: "use session",
                reason: "the PKCS#11 module was finalised and initialised again".to_owned(),
            };
            Err(Failure::Lost {
                generation: lease.generation,
                error,
            })
        };
        drop(calls);
        match &result {
            Err(Failure::Lost { .. }) => self.dispose(lease.session, lease.module_epoch),
            Ok(_) | Err(Failure::Fatal(_)) => self.checkin(lease),
        }
        result
    }

    fn checkin(&self, lease: Lease) {
        let mut state = self.lock_state();
        if lease.generation == state.generation {
            state.idle.push(lease.session);
            drop(state);
            self.returned.notify_one();
        } else {
            drop(state);
            self.dispose(lease.session, lease.module_epoch);
        }
    }

    /// Discards the pool of generation `seen` and connects again, unless another thread already
    /// did.
    fn reconnect(&self, seen: u64, cause: &Error, attempt: u32) -> Result<(), Failure> {
        let mut state = self.lock_state();
        if state.generation != seen {
            return Ok(());
        }
        let stale = std::mem::take(&mut state.idle);
        let stale_epoch = state.module_epoch;
        state.slot = None;
        state.generation += 1;
        self.generation.store(state.generation, Ordering::Release);
        tracing::warn!(
            token = %self.label,
            module = %self.module.path().display(),
            generation = state.generation,
            attempt,
            cause = %cause,
            "PKCS#11 sessions lost; re-opening them and logging in again",
        );
        if let Some(metrics) = self.metrics.get() {
            metrics
                .reconnects
                .with_label_values(&[self.label.as_str()])
                .inc();
        }
        for session in stale {
            self.dispose(session, stale_epoch);
        }
        let result = self.connect(&mut state);
        drop(state);
        // Waiters must see the new sessions, or the failure.
        self.returned.notify_all();
        match result {
            // A token that is missing may come back (a restarting HSM): try again.
            Err(Failure::Fatal(error @ Error::NoSuchToken { .. })) => Err(Failure::Lost {
                generation: seen + 1,
                error,
            }),
            other => other,
        }
    }

    /// Finds the slot, opens the sessions and logs in, filling `state`.
    fn connect(&self, state: &mut PoolState) -> Result<(), Failure> {
        let generation = state.generation;
        let lost_or_fatal = |error: CkError, operation: &'static str| {
            let mapped = rv::to_error(&error, &self.label, operation);
            if rv::is_lost(&error) {
                Failure::Lost {
                    generation,
                    error: mapped,
                }
            } else {
                Failure::Fatal(mapped)
            }
        };
        let slot = match find_slot(&self.module, &self.label) {
            Err(FindError::Cryptoki(CkError::Pkcs11(RvError::CryptokiNotInitialized, _))) => {
                self.module
                    .ensure_initialized()
                    .map_err(|e| lost_or_fatal(e, "initialize module"))?;
                find_slot(&self.module, &self.label)
            }
            other => other,
        };
        let slot = slot.map_err(|e| match e {
            FindError::Cryptoki(e) => lost_or_fatal(e, "find token"),
            FindError::Missing(error) => Failure::Fatal(error),
        })?;
        let calls = self.module.calls();
        let mut sessions = Vec::with_capacity(self.sessions);
        for _ in 0..self.sessions {
            let session = self
                .module
                .context()
                .open_rw_session_no_drop(slot)
                .map_err(|e| lost_or_fatal(e, "open session"))?;
            if sessions.is_empty() {
                // The login holds for every session of this process on the token.
                if let Err(e) = login(&session, &self.pin) {
                    close(session);
                    return Err(lost_or_fatal(e, "log in"));
                }
            }
            sessions.push(session);
        }
        state.slot = Some(slot);
        state.module_epoch = calls.epoch;
        state.idle = sessions;
        tracing::debug!(token = %self.label, slot = slot.id(), generation, "PKCS#11 sessions open and logged in");
        Ok(())
    }

    /// Closes a session that left the pool, unless its handle may have been reused.
    fn dispose(&self, session: Session, epoch: u64) {
        let calls = self.module.calls();
        if calls.epoch != epoch {
            // Opened with `no_drop`: dropping it does not call C_CloseSession.
            return;
        }
        // A handle the token no longer knows is left alone; one it knows is ours: close it.
        if session.get_session_info().is_ok() {
            close(session);
        }
    }

    fn lock_state(&self) -> MutexGuard<'_, PoolState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Closes every pooled session; called when the store and its signers are gone.
    fn close_all(&self) {
        let (idle, epoch) = {
            let mut state = self.lock_state();
            (std::mem::take(&mut state.idle), state.module_epoch)
        };
        for session in idle {
            self.dispose(session, epoch);
        }
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        self.close_all();
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("label", &self.label)
            .field("module", &self.module.path())
            .field("sessions", &self.sessions)
            .finish_non_exhaustive()
    }
}

/// Why [`find_slot`] found nothing.
pub(crate) enum FindError {
    /// The slot list or a token's information could not be read.
    Cryptoki(CkError),
    /// No token has the label ([`Error::NoSuchToken`]).
    Missing(Error),
}

/// The slot holding the initialised token labelled `label`.
pub(crate) fn find_slot(module: &Module, label: &str) -> Result<Slot, FindError> {
    let _calls = module.calls();
    let context = module.context();
    let mut present = Vec::new();
    for slot in context
        .get_slots_with_token()
        .map_err(FindError::Cryptoki)?
    {
        let info = match context.get_token_info(slot) {
            Ok(info) => info,
            // The token went away between the two calls.
            Err(CkError::Pkcs11(RvError::TokenNotPresent | RvError::SlotIdInvalid, _)) => continue,
            Err(e) => return Err(FindError::Cryptoki(e)),
        };
        if !info.token_initialized() {
            continue;
        }
        if info.label() == label {
            return Ok(slot);
        }
        present.push(info.label().to_owned());
    }
    Err(FindError::Missing(Error::NoSuchToken {
        label: label.to_owned(),
        module: module.path().to_owned(),
        present,
    }))
}

/// Logs in as the user; a login that another store of this process already made counts.
pub(crate) fn login(session: &Session, pin: &Pin) -> Result<(), CkError> {
    let pin = AuthPin::from(pin.expose().to_owned());
    match session.login(UserType::User, Some(&pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(e) => Err(e),
    }
}

fn close(session: Session) {
    if let Err(e) = session.close() {
        tracing::debug!(error = %rv::describe(&e), "closing a PKCS#11 session failed");
    }
}
