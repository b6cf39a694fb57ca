//! Sessions: random ids in an `HttpOnly; Secure; SameSite=Lax` cookie, held in memory, ended
//! after an idle time; each with its CSRF token. The id changes when a person signs in.
//!
//! `SameSite=Lax` rather than `Strict`: the provider sends the browser back with a top-level GET
//! from another site, and the pending sign-in must be found then. Every state change is a POST
//! that also needs the session's CSRF token.
//!
//! Sessions do not survive a restart of the portal: the citizen signs in again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ring::rand::SecureRandom;

use crate::history::History;
use crate::oidc::client::{PendingLogin, Person};

/// The session cookie's name.
pub const COOKIE: &str = "portal_session";
/// The language cookie's name.
pub const LANG_COOKIE: &str = "portal_lang";
/// The longest a session lasts however busy it is: a working day.
pub const MAX_LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Most signed-in sessions held; past it, expired ones are dropped and then the least recently
/// used signed-in one.
pub const MAX_SESSIONS: usize = 100_000;
/// Most anonymous sessions (a visit, a pending sign-in) held; past it, expired ones are dropped
/// and then the least recently used anonymous one. Kept apart from signed-in sessions, so that
/// a flood of anonymous visits can never end a person's session.
pub const MAX_ANONYMOUS: usize = 20_000;

/// One browser's session.
#[derive(Clone, Debug)]
pub struct Session {
    /// The id in the cookie.
    pub id: String,
    /// The token every form must carry.
    pub csrf: String,
    /// The person signed in.
    pub person: Option<Person>,
    /// A sign-in waiting for the provider.
    pub login: Option<PendingLogin>,
    /// The access history last gathered, and when.
    pub history: Option<(Instant, Arc<History>)>,
    created: Instant,
    last_seen: Instant,
}

/// What a cookie's session id finds.
#[derive(Clone, Debug)]
pub enum Lookup {
    /// A live session, now touched.
    Active(Session),
    /// A session that was idle too long, now removed.
    Expired,
    /// No such session.
    Missing,
}

/// Every session.
#[derive(Debug)]
pub struct Sessions {
    idle: Duration,
    held: Mutex<Held>,
}

/// Anonymous and signed-in sessions, each bounded on its own.
#[derive(Debug, Default)]
struct Held {
    anonymous: HashMap<String, Session>,
    signed_in: HashMap<String, Session>,
}

// === impl Sessions ===

impl Sessions {
    /// Sessions ending after `idle` without a request, or after [`MAX_LIFETIME`].
    pub fn new(idle: Duration) -> Sessions {
        Sessions {
            idle,
            held: Mutex::new(Held::default()),
        }
    }

    /// A new anonymous session.
    pub fn create(&self) -> Session {
        let session = new_session(None);
        let mut held = self.held();
        make_room(&mut held.anonymous, MAX_ANONYMOUS, self.idle);
        held.anonymous.insert(session.id.clone(), session.clone());
        session
    }

    /// The session `id` names, touched.
    pub fn lookup(&self, id: &str) -> Lookup {
        let mut held = self.held();
        let held = &mut *held;
        let pool = if held.signed_in.contains_key(id) {
            &mut held.signed_in
        } else {
            &mut held.anonymous
        };
        match pool.get_mut(id) {
            Some(session)
                if session.last_seen.elapsed() < self.idle
                    && session.created.elapsed() < MAX_LIFETIME =>
            {
                session.last_seen = Instant::now();
                Lookup::Active(session.clone())
            }
            Some(_) => {
                pool.remove(id);
                Lookup::Expired
            }
            None => Lookup::Missing,
        }
    }

    /// Changes the session `id` names, if it is still there (who is signed in is changed only by
    /// [`Sessions::sign_in`]).
    pub fn update(&self, id: &str, change: impl FnOnce(&mut Session)) {
        let mut held = self.held();
        let held = &mut *held;
        if let Some(session) = held
            .signed_in
            .get_mut(id)
            .or_else(|| held.anonymous.get_mut(id))
        {
            let person = session.person.clone();
            change(session);
            session.person = person;
        }
    }

    /// Signs `person` in: the old session ends and a new one, with new id and CSRF token, starts.
    pub fn sign_in(&self, old_id: &str, person: Person) -> Session {
        let session = new_session(Some(person));
        let mut held = self.held();
        held.anonymous.remove(old_id);
        held.signed_in.remove(old_id);
        make_room(&mut held.signed_in, MAX_SESSIONS, self.idle);
        held.signed_in.insert(session.id.clone(), session.clone());
        session
    }

    /// Ends the session `id` names.
    pub fn remove(&self, id: &str) {
        let mut held = self.held();
        held.anonymous.remove(id);
        held.signed_in.remove(id);
    }

    /// How many anonymous and signed-in sessions are held.
    pub fn counts(&self) -> (usize, usize) {
        let held = self.held();
        (held.anonymous.len(), held.signed_in.len())
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn new_session(person: Option<Person>) -> Session {
    Session {
        id: random_token(),
        csrf: random_token(),
        person,
        login: None,
        history: None,
        created: Instant::now(),
        last_seen: Instant::now(),
    }
}

/// Below `max` sessions in `pool`: the idle ones dropped first, then the least recently used.
fn make_room(pool: &mut HashMap<String, Session>, max: usize, idle: Duration) {
    if pool.len() < max {
        return;
    }
    pool.retain(|_, s| s.last_seen.elapsed() < idle);
    while pool.len() >= max {
        let Some(oldest) = pool
            .values()
            .min_by_key(|s| s.last_seen)
            .map(|s| s.id.clone())
        else {
            break;
        };
        pool.remove(&oldest);
    }
}

/// 32 random bytes, base64url: session ids, CSRF tokens, states, nonces, codes.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // The system generator does not fail on the platforms we run on; if it ever did, an
    // all-zero token would be guessable, so stop rather than go on.
    #[allow(clippy::expect_used)]
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random generator failed");
    crate::oidc::jws::b64(&bytes)
}

/// Compares secrets in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: `HttpOnly`, `Secure`, `SameSite=Lax`, whole site; `max_age` `None`
/// for a cookie that ends with the browser, `Some(0)` to delete it.
pub fn set_cookie(name: &str, value: &str, max_age: Option<u64>) -> String {
    let age = max_age
        .map(|a| format!("; Max-Age={a}"))
        .unwrap_or_default();
    format!("{name}={value}; Path=/; HttpOnly; Secure; SameSite=Lax{age}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person() -> Person {
        Person {
            subject: "EE38001085718".into(),
            given_name: "Jaan".into(),
            family_name: "Tamm".into(),
        }
    }

    #[test]
    fn sessions_expire_when_idle_and_sign_in_rotates_the_id() {
        let sessions = Sessions::new(Duration::from_millis(200));
        let anonymous = sessions.create();
        assert!(matches!(sessions.lookup(&anonymous.id), Lookup::Active(_)));
        let signed = sessions.sign_in(&anonymous.id, person());
        assert_ne!(signed.id, anonymous.id);
        assert_ne!(signed.csrf, anonymous.csrf);
        assert!(
            matches!(sessions.lookup(&anonymous.id), Lookup::Missing),
            "the pre-sign-in id is dead"
        );
        match sessions.lookup(&signed.id) {
            Lookup::Active(s) => assert_eq!(s.person, Some(person())),
            other => panic!("{other:?}"),
        }
        std::thread::sleep(Duration::from_millis(250));
        assert!(matches!(sessions.lookup(&signed.id), Lookup::Expired));
        assert!(matches!(sessions.lookup(&signed.id), Lookup::Missing));
    }

    #[test]
    fn a_flood_of_anonymous_visits_never_ends_a_signed_in_session() {
        let sessions = Sessions::new(Duration::from_secs(600));
        let first = sessions.create();
        let signed = sessions.sign_in(&first.id, person());
        for _ in 0..MAX_ANONYMOUS + 100 {
            sessions.create();
        }
        assert_eq!(
            sessions.counts(),
            (MAX_ANONYMOUS, 1),
            "anonymous sessions are bounded on their own"
        );
        match sessions.lookup(&signed.id) {
            Lookup::Active(s) => assert_eq!(s.person, Some(person())),
            other => panic!("the signed-in session was evicted: {other:?}"),
        }
        // An update cannot sign anybody in.
        let anonymous = sessions.create();
        sessions.update(&anonymous.id, |s| s.person = Some(person()));
        assert!(matches!(sessions.lookup(&anonymous.id), Lookup::Active(s) if s.person.is_none()));
    }

    #[test]
    fn cookies_and_tokens() {
        assert_eq!(cookie("a=1; portal_session=xyz; b=2", COOKIE), Some("xyz"));
        assert_eq!(cookie("portal_sessionx=1", COOKIE), None);
        assert_eq!(
            set_cookie(COOKIE, "v", None),
            "portal_session=v; Path=/; HttpOnly; Secure; SameSite=Lax"
        );
        assert_eq!(random_token().len(), 43);
        assert_ne!(random_token(), random_token());
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
