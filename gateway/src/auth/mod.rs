//! Who is asking (issue 16): local accounts with roles, console sessions, named API
//! tokens, lockout after failed sign-ins.
//!
//! - [`users`]: the accounts file `<data_dir>/users.json` (Argon2id password hashes,
//!   hashed named tokens), written by the `users` CLI, re-read by the gateway when it
//!   changes.
//! - [`session`]: console sessions (cookie + CSRF token), in memory.
//! - [`lockout`]: failures per account and per source address.
//!
//! [`Auth`] puts them together for the API (`api/mod.rs` decides which routes need
//! which [`Role`]). Password checks run one at a time on a blocking thread (each takes
//! 19 MiB: [`users::PASSWORD_M_KIB`]), so a burst of sign-ins cannot take the board's
//! memory or its async threads.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};

use estate_config::{AnonymousRead, ApiConfig, Secret};

pub mod cli;
pub mod lockout;
pub mod session;
pub mod users;

use lockout::{Locked, Lockout, Policy};
use session::{Session, Sessions};
use users::UsersFile;

/// What an account or token may do; each role may do what the ones before it may.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads alerts, devices, status, roll calls and the live stream.
    Viewer,
    /// Also acts: acknowledge, close, shelve, unshelve, answer roll calls.
    Operator,
    /// Also manages accounts (`GET /api/users`; the `users` CLI needs the data folder).
    Admin,
}

impl Role {
    /// `viewer`, `operator`, `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// How a request proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// A console session (cookie); its writes need the CSRF token.
    Session,
    /// A named API token.
    Token,
    /// The deprecated shared `api.token`: the request's `by` names who acts.
    SharedToken,
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The account or token name the audit records (for [`Via::SharedToken`],
    /// `api.token`).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// How it proved it.
    pub via: Via,
    /// The session's CSRF token (sessions only).
    pub csrf: Option<String>,
    /// When the session ends (sessions only).
    pub expires: Option<SystemTime>,
}

/// Why a sign-in was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignInError {
    /// Wrong name or password (which one is not said).
    Refused,
    /// Locked after repeated failures, until then.
    Locked(Locked),
    /// The accounts file cannot be read.
    Unavailable(String),
}

/// Accounts, sessions and lockout for the API.
#[derive(Debug)]
pub struct Auth {
    data_dir: PathBuf,
    shared_token: Option<Secret>,
    anonymous_read: AnonymousRead,
    session_ttl: std::time::Duration,
    https: bool,
    file: Mutex<Cached>,
    sessions: Mutex<Sessions>,
    lockout: Mutex<Lockout>,
    /// One password check at a time (see the module doc).
    hashing: tokio::sync::Semaphore,
}

#[derive(Debug, Default)]
struct Cached {
    /// (modified, length) of the file as last read.
    stamp: Option<(SystemTime, u64)>,
    users: Arc<UsersFile>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Auth {
    /// For a gateway with data folder `data_dir` and `[api]` `api`.
    pub fn new(data_dir: PathBuf, api: &ApiConfig) -> Auth {
        Auth {
            data_dir,
            shared_token: api.token.clone(),
            anonymous_read: api.anonymous_read,
            session_ttl: api.session_ttl,
            https: api.tls_cert.is_some(),
            file: Mutex::new(Cached::default()),
            sessions: Mutex::new(Sessions::default()),
            lockout: Mutex::new(Lockout::new(Policy {
                after: api.lockout_after.max(1),
                window: api.lockout_window,
                lock_for: api.lockout_for,
            })),
            hashing: tokio::sync::Semaphore::new(1),
        }
    }

    /// Whether the API is served over HTTPS (the cookie is then `Secure`).
    pub fn https(&self) -> bool {
        self.https
    }

    /// How long a session lasts.
    pub fn session_ttl(&self) -> std::time::Duration {
        self.session_ttl
    }

    /// Whether a client at `peer` may read without signing in.
    pub fn anonymous_read(&self, peer: Option<IpAddr>) -> bool {
        match self.anonymous_read {
            AnonymousRead::Loopback => peer.is_some_and(|ip| ip.to_canonical().is_loopback()),
            AnonymousRead::None => false,
        }
    }

    /// The accounts file as it is now (re-read when it changed; the last good copy, with
    /// an error logged once per change, when it cannot be read). Shared, not copied:
    /// every request looks at it.
    pub fn users(&self) -> Arc<UsersFile> {
        let path = users::path(&self.data_dir);
        let stamp = std::fs::metadata(&path)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        let mut c = lock(&self.file);
        if c.stamp != stamp {
            match UsersFile::load(&self.data_dir) {
                Ok(u) => c.users = Arc::new(u),
                Err(e) => {
                    tracing::error!(error = %e, "Cannot read the accounts file; keeping the last one read.");
                }
            }
            c.stamp = stamp;
        }
        Arc::clone(&c.users)
    }

    /// Whether any credential could write: the shared token, or an operator or admin
    /// account or token. Without one the API is read-only.
    pub fn can_write(&self) -> bool {
        self.shared_token.is_some() || self.users().can_write()
    }

    /// The principal of a bearer token: the shared `api.token` or a named token.
    pub fn bearer(&self, token: &str) -> Option<Principal> {
        if let Some(shared) = &self.shared_token {
            if constant_time_eq(token.as_bytes(), shared.expose().as_bytes()) {
                return Some(Principal {
                    name: "api.token".to_owned(),
                    role: Role::Operator,
                    via: Via::SharedToken,
                    csrf: None,
                    expires: None,
                });
            }
        }
        let users = self.users();
        let (name, role) = users.check_token(token)?;
        Some(Principal {
            name: name.to_owned(),
            role,
            via: Via::Token,
            csrf: None,
            expires: None,
        })
    }

    /// The principal of a session cookie, while the session lasts and its account still
    /// exists with the same password (the role is the account's current one).
    pub fn session(&self, id: &str) -> Option<Principal> {
        let now = Instant::now();
        let s = lock(&self.sessions).get(id, now)?;
        let users = self.users();
        let Some(user) = users
            .user(&s.name)
            .filter(|u| crate::hash::fnv1a(u.password_hash.as_bytes()) == s.password_mark)
        else {
            lock(&self.sessions).close(id);
            return None;
        };
        Some(Principal {
            name: s.name.clone(),
            role: user.role,
            via: Via::Session,
            csrf: Some(s.csrf.clone()),
            expires: Some(SystemTime::now() + s.expires.saturating_duration_since(now)),
        })
    }

    /// Checks a name and password from `peer` (lockout first), one check at a time on a
    /// blocking thread; opens a session: `(session id, session)`.
    pub async fn sign_in(
        &self,
        name: &str,
        password: &str,
        peer: IpAddr,
        metrics: &crate::telemetry::Metrics,
    ) -> Result<(String, Session), SignInError> {
        use crate::telemetry::ReasonLabel;
        let count = |reason: &'static str| {
            metrics
                .api_sign_ins
                .get_or_create(&ReasonLabel { reason })
                .inc();
        };
        if let Err(locked) = lock(&self.lockout).check(name, peer, Instant::now()) {
            count("locked");
            tracing::warn!(user = name, addr = %peer, scope = locked.scope(), "Sign-in refused: locked after repeated failures.");
            return Err(SignInError::Locked(locked));
        }
        let users = self.users();
        let user = users.user(name).cloned();
        let permit = self
            .hashing
            .acquire()
            .await
            .map_err(|e| SignInError::Unavailable(e.to_string()))?;
        let hash = user.as_ref().map(|u| u.password_hash.clone());
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || match hash {
            Some(h) => users::verify(&h, &password),
            None => {
                // The same work for an unknown name, so timing does not tell names.
                let _ = users::hash_password("unknown-account-padding");
                false
            }
        })
        .await
        .map_err(|e| SignInError::Unavailable(e.to_string()))?;
        drop(permit);
        let now = Instant::now();
        match user {
            Some(u) if ok => {
                lock(&self.lockout).success(name);
                count("ok");
                tracing::info!(user = name, addr = %peer, role = u.role.as_str(), "Signed in.");
                let mark = crate::hash::fnv1a(u.password_hash.as_bytes());
                Ok(lock(&self.sessions).open(name, u.role, mark, self.session_ttl, now))
            }
            _ => {
                count("refused");
                let begun = lock(&self.lockout).failure(name, peer, now);
                tracing::warn!(user = name, addr = %peer, "Sign-in refused: wrong name or password.");
                for l in &begun {
                    metrics
                        .api_lockouts
                        .get_or_create(&ReasonLabel { reason: l.scope() })
                        .inc();
                    tracing::warn!(
                        user = name,
                        addr = %peer,
                        scope = l.scope(),
                        for_s = l.until().saturating_duration_since(now).as_secs(),
                        "Sign-in locked after repeated failures."
                    );
                }
                Err(SignInError::Refused)
            }
        }
    }

    /// Ends a session (sign out).
    pub fn sign_out(&self, id: &str) {
        if let Some(s) = lock(&self.sessions).get(id, Instant::now()) {
            tracing::info!(user = %s.name, "Signed out.");
        }
        lock(&self.sessions).close(id);
    }
}

/// Compares without stopping at the first difference, so the time taken does not tell
/// how much of a guessed token was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= x ^ y;
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_compare_is_exact() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
    }

    #[test]
    fn anonymous_read_is_loopback_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut api = ApiConfig::default();
        let auth = Auth::new(dir.path().to_path_buf(), &api);
        assert!(auth.anonymous_read(Some("127.0.0.1".parse().expect("ip"))));
        assert!(auth.anonymous_read(Some("::ffff:127.0.0.1".parse().expect("ip"))));
        assert!(!auth.anonymous_read(Some("192.168.1.20".parse().expect("ip"))));
        assert!(!auth.anonymous_read(None));
        api.anonymous_read = AnonymousRead::None;
        let auth = Auth::new(dir.path().to_path_buf(), &api);
        assert!(!auth.anonymous_read(Some("127.0.0.1".parse().expect("ip"))));
    }
}
