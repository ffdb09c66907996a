//! Console sessions (in memory: a restart signs everyone out) and their CSRF tokens.
//!
//! A session is 256 random bits in an `HttpOnly; SameSite=Strict` cookie, with a second
//! random value, its CSRF token, that the page reads from `GET /api/session` and sends
//! back in the `X-CSRF-Token` header of every write: another site can make a browser
//! send the cookie, but cannot read the token (the same-origin policy), so it cannot
//! write. Each session has an absolute expiry (`api.session_ttl`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Role;

/// Most sessions at once; beyond, the one that expires first is dropped.
const MAX_SESSIONS: usize = 1000;

/// One signed-in console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The account.
    pub name: String,
    /// Its role when it signed in (the accounts file is checked again on every request).
    pub role: Role,
    /// What writes must send in `X-CSRF-Token`.
    pub csrf: String,
    /// When it ends.
    pub expires: Instant,
    /// A hash of the account's password hash when it signed in: a new password ends the
    /// session.
    pub password_mark: u64,
}

/// The open sessions, by session id.
#[derive(Debug, Default)]
pub struct Sessions {
    by_id: HashMap<String, Session>,
}

/// 256 random bits in hex.
pub fn random_id() -> String {
    let [a, b]: [u128; 2] = rand::random();
    format!("{a:032x}{b:032x}")
}

impl Sessions {
    /// Opens a session for `name`: `(session id, the session)`.
    pub fn open(
        &mut self,
        name: &str,
        role: Role,
        password_mark: u64,
        ttl: Duration,
        now: Instant,
    ) -> (String, Session) {
        self.by_id.retain(|_, s| s.expires > now);
        if self.by_id.len() >= MAX_SESSIONS {
            if let Some(first) = self
                .by_id
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(id, _)| id.clone())
            {
                self.by_id.remove(&first);
            }
        }
        let session = Session {
            name: name.to_owned(),
            role,
            csrf: random_id(),
            expires: now + ttl,
            password_mark,
        };
        let id = random_id();
        self.by_id.insert(id.clone(), session.clone());
        (id, session)
    }

    /// The session `id` while it has not expired (an expired one is dropped).
    pub fn get(&mut self, id: &str, now: Instant) -> Option<Session> {
        match self.by_id.get(id) {
            Some(s) if s.expires > now => Some(s.clone()),
            Some(_) => {
                self.by_id.remove(id);
                None
            }
            None => None,
        }
    }

    /// Ends the session `id`.
    pub fn close(&mut self, id: &str) -> bool {
        self.by_id.remove(id).is_some()
    }
}

/// Whether a write carries its session's CSRF token (`X-CSRF-Token`), and its `Origin`
/// (when the browser sends one, as browsers do on every cross-origin and same-origin
/// POST) is this gateway: `scheme://host` where `host` is the request's `Host`. `Err`
/// says why not.
pub fn check_csrf(
    session_csrf: &str,
    sent: Option<&str>,
    origin: Option<&str>,
    host: Option<&str>,
    https: bool,
) -> Result<(), &'static str> {
    check_origin(origin, host, https)?;
    match sent {
        Some(t) if super::constant_time_eq(t.as_bytes(), session_csrf.as_bytes()) => Ok(()),
        Some(_) => Err("the X-CSRF-Token header does not match this session"),
        None => Err("a write from a signed-in console needs the X-CSRF-Token header (from GET /api/session)"),
    }
}

/// `Origin`, when present, must be this gateway (see [`check_csrf`]).
pub fn check_origin(
    origin: Option<&str>,
    host: Option<&str>,
    https: bool,
) -> Result<(), &'static str> {
    let Some(origin) = origin else {
        return Ok(());
    };
    let scheme = if https { "https" } else { "http" };
    match host {
        Some(h) if origin.eq_ignore_ascii_case(&format!("{scheme}://{h}")) => Ok(()),
        _ => Err("the request's Origin is not this gateway"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_ends_at_its_expiry_and_on_sign_out() {
        let mut s = Sessions::default();
        let t0 = Instant::now();
        let ttl = Duration::from_secs(3600);
        let (id, opened) = s.open("wang", Role::Operator, 7, ttl, t0);
        assert_eq!(id.len(), 64);
        assert_ne!(opened.csrf, id);
        assert_eq!(s.get(&id, t0 + ttl - Duration::from_secs(1)), Some(opened));
        assert_eq!(s.get(&id, t0 + ttl), None, "expired");
        assert_eq!(s.get(&id, t0), None, "dropped once expired");
        let (id, _) = s.open("wang", Role::Operator, 7, ttl, t0);
        assert!(s.close(&id));
        assert_eq!(s.get(&id, t0), None);
        assert_eq!(s.get("made-up", t0), None);
    }

    #[test]
    fn csrf_needs_the_token_and_a_matching_origin() {
        let host = Some("gw.local:8080");
        assert_eq!(check_csrf("abc", Some("abc"), None, host, false), Ok(()));
        assert_eq!(
            check_csrf(
                "abc",
                Some("abc"),
                Some("http://gw.local:8080"),
                host,
                false
            ),
            Ok(())
        );
        assert!(check_csrf("abc", None, Some("http://gw.local:8080"), host, false).is_err());
        assert!(check_csrf("abc", Some("abd"), None, host, false).is_err());
        assert!(check_csrf("abc", Some("abc"), Some("http://evil.example"), host, false).is_err());
        // The scheme counts: a page over http may not write to the https console.
        assert!(check_csrf("abc", Some("abc"), Some("http://gw.local:8080"), host, true).is_err());
        assert!(check_csrf(
            "abc",
            Some("abc"),
            Some("http://gw.local:8080"),
            None,
            false
        )
        .is_err());
    }
}
