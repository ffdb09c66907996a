//! The accounts file: `<data_dir>/users.json`, the operators' accounts (name, role,
//! Argon2id password hash) and the named API tokens (name, role, a hash of the token).
//!
//! A small JSON file rather than a sled tree: the `users` CLI must work while the gateway
//! runs, and the store's sled database is locked by the running gateway. The CLI writes
//! the file whole (a temporary file, fsync, rename, fsync of the folder: never half a
//! file), mode `0600`, owned like the data folder; the gateway re-reads it when its modification time or length
//! changes, so a new account, a new password or a removed one counts on the next
//! request without a restart.

use std::path::{Path, PathBuf};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};

use super::Role;
use crate::events::now_ms;

/// The file's name in the data folder.
pub const FILE_NAME: &str = "users.json";

/// Argon2id memory for a password, in KiB: 19 MiB, OWASP's minimum for Argon2id, sized
/// for a 256 MB ARM board (one hash at a time, see `super::Auth`).
pub const PASSWORD_M_KIB: u32 = 19 * 1024;
/// Argon2id passes over that memory for a password.
pub const PASSWORD_T: u32 = 2;
/// Argon2id lanes (one: the board has few cores and they are busy with ingest).
pub const PASSWORD_P: u32 = 1;

/// Longest account or token name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Shortest password the CLI takes.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// Prefix of the named API tokens, so a leaked one is recognisable.
pub const TOKEN_PREFIX: &str = "egw_";

/// What `users.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersFile {
    /// Operators who sign in to the console.
    #[serde(default)]
    pub users: Vec<User>,
    /// Named tokens for integrations (`Authorization: Bearer`).
    #[serde(default)]
    pub tokens: Vec<ApiToken>,
}

/// One account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// The name that signs in and that the audit records.
    pub name: String,
    /// What the account may do.
    pub role: Role,
    /// The password's Argon2id hash, as a PHC string (`$argon2id$v=19$m=…`).
    pub password_hash: String,
    /// When the account was created (ms since the epoch).
    pub created_ms: i64,
}

/// One named API token. The token itself is shown once (`users token add`) and only its
/// hash is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// The name the audit records for its actions.
    pub name: String,
    /// What the token may do.
    pub role: Role,
    /// The token's public part (`egw_<id>_…`), to find the entry without trying every
    /// hash.
    pub id: String,
    /// The secret part's Argon2id hash (light parameters: the secret is 128 random bits,
    /// so it cannot be guessed whatever the hash's cost, and each request checks it).
    pub secret_hash: String,
    /// When the token was created (ms since the epoch).
    pub created_ms: i64,
}

/// Why the accounts file could not be read, written or changed.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file is not what this gateway writes.
    #[error("{path} is not a valid accounts file: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A request the file cannot take (a duplicate name, an unknown one, a bad password).
    #[error("{0}")]
    Refused(String),
}

/// The accounts file of `data_dir`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

impl UsersFile {
    /// Reads `<data_dir>/users.json`; an absent file is no accounts.
    pub fn load(data_dir: &Path) -> Result<UsersFile, UsersError> {
        let path = path(data_dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| UsersError::Invalid {
                path,
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(UsersFile::default()),
            Err(source) => Err(UsersError::Io { path, source }),
        }
    }

    /// Writes the whole file: a temporary file in the same folder, fsync, rename over the
    /// old one, fsync of the folder. Mode 0600 (it holds hashes).
    pub fn save(&self, data_dir: &Path) -> Result<(), UsersError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = path(data_dir);
        let io = |source| UsersError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(data_dir).map_err(io)?;
        let tmp = data_dir.join(format!(".{FILE_NAME}.tmp"));
        let mut body = serde_json::to_vec_pretty(self).map_err(|e| UsersError::Invalid {
            path: path.clone(),
            message: e.to_string(),
        })?;
        body.push(b'\n');
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(&body).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        // Owned like the data folder: `users add` run as root must leave a file the
        // gateway's own user (who owns /var/lib/estate-gateway) can read.
        {
            use std::os::unix::fs::MetadataExt as _;
            let dir = std::fs::metadata(data_dir).map_err(io)?;
            let file = std::fs::metadata(&tmp).map_err(io)?;
            if (dir.uid(), dir.gid()) != (file.uid(), file.gid()) {
                if let Err(e) = std::os::unix::fs::chown(&tmp, Some(dir.uid()), Some(dir.gid())) {
                    tracing::warn!(error = %e, "Cannot give the accounts file the data folder's owner; the gateway may not read it.");
                }
            }
        }
        std::fs::rename(&tmp, &path).map_err(io)?;
        std::fs::File::open(data_dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Ok(())
    }

    /// The account `name`.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    /// Adds an account; refused when the name is taken or not a valid name.
    pub fn add_user(&mut self, name: &str, role: Role, password: &str) -> Result<(), UsersError> {
        check_name(name)?;
        if self.user(name).is_some() {
            return Err(UsersError::Refused(format!(
                "an account {name:?} exists already (change its password with `users passwd {name}`)"
            )));
        }
        self.users.push(User {
            name: name.to_owned(),
            role,
            password_hash: hash_password(password)?,
            created_ms: now_ms(),
        });
        Ok(())
    }

    /// Sets a new password for `name`; its console sessions end.
    pub fn set_password(&mut self, name: &str, password: &str) -> Result<(), UsersError> {
        let hash = hash_password(password)?;
        let user = self
            .users
            .iter_mut()
            .find(|u| u.name == name)
            .ok_or_else(|| UsersError::Refused(format!("no account {name:?}")))?;
        user.password_hash = hash;
        Ok(())
    }

    /// Removes the account `name`; its sessions end at their next request.
    pub fn remove_user(&mut self, name: &str) -> Result<(), UsersError> {
        let before = self.users.len();
        self.users.retain(|u| u.name != name);
        if self.users.len() == before {
            return Err(UsersError::Refused(format!("no account {name:?}")));
        }
        Ok(())
    }

    /// Adds a named token and returns it (the only time it is shown).
    pub fn add_token(&mut self, name: &str, role: Role) -> Result<String, UsersError> {
        check_name(name)?;
        if self.tokens.iter().any(|t| t.name == name) {
            return Err(UsersError::Refused(format!(
                "a token {name:?} exists already (remove it first with `users token remove {name}`)"
            )));
        }
        let id = format!("{:016x}", rand::random::<u64>());
        let secret = format!("{:032x}", rand::random::<u128>());
        self.tokens.push(ApiToken {
            name: name.to_owned(),
            role,
            id: id.clone(),
            secret_hash: hash_with(&token_hasher(), &secret)?,
            created_ms: now_ms(),
        });
        Ok(format!("{TOKEN_PREFIX}{id}_{secret}"))
    }

    /// Removes the named token `name`.
    pub fn remove_token(&mut self, name: &str) -> Result<(), UsersError> {
        let before = self.tokens.len();
        self.tokens.retain(|t| t.name != name);
        if self.tokens.len() == before {
            return Err(UsersError::Refused(format!("no token {name:?}")));
        }
        Ok(())
    }

    /// The named token a bearer value is, if any: `(name, role)`.
    pub fn check_token(&self, bearer: &str) -> Option<(&str, Role)> {
        let (id, secret) = bearer.strip_prefix(TOKEN_PREFIX)?.split_once('_')?;
        let t = self.tokens.iter().find(|t| t.id == id)?;
        verify(&t.secret_hash, secret).then_some((t.name.as_str(), t.role))
    }

    /// Whether anyone could write: an operator or admin account or token.
    pub fn can_write(&self) -> bool {
        self.users.iter().any(|u| u.role >= Role::Operator)
            || self.tokens.iter().any(|t| t.role >= Role::Operator)
    }
}

fn check_name(name: &str) -> Result<(), UsersError> {
    let ok = !name.is_empty()
        && name.trim() == name
        && name.chars().count() <= MAX_NAME_CHARS
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | ' '));
    if ok {
        Ok(())
    } else {
        Err(UsersError::Refused(format!(
            "{name:?} is not a valid name: 1 to {MAX_NAME_CHARS} letters, digits, spaces (not at either end), `-`, `_`, `.` or `@`"
        )))
    }
}

/// The password hasher: Argon2id with [`PASSWORD_M_KIB`], [`PASSWORD_T`], [`PASSWORD_P`].
pub fn password_hasher() -> Argon2<'static> {
    let params = Params::new(PASSWORD_M_KIB, PASSWORD_T, PASSWORD_P, None)
        .unwrap_or_else(|_| Params::default());
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The token hasher: Argon2id at its lightest (64 KiB, one pass), see [`ApiToken`].
fn token_hasher() -> Argon2<'static> {
    let params = Params::new(64, 1, 1, None).unwrap_or_else(|_| Params::default());
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A password's PHC string; refused when it is shorter than [`MIN_PASSWORD_CHARS`].
pub fn hash_password(password: &str) -> Result<String, UsersError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(UsersError::Refused(format!(
            "the password is too short: at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    hash_with(&password_hasher(), password)
}

fn hash_with(hasher: &Argon2<'_>, secret: &str) -> Result<String, UsersError> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| UsersError::Refused(format!("salt: {e}")))?;
    hasher
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UsersError::Refused(format!("hashing failed: {e}")))
}

/// Whether `secret` matches the PHC string `hash` (with the parameters the string names).
pub fn verify(hash: &str, secret: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(secret.as_bytes(), &h)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hashed_with_the_board_parameters_and_verify() {
        let h = hash_password("correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(!h.contains("correct horse"));
        assert!(verify(&h, "correct horse"));
        assert!(!verify(&h, "correct hors"));
        assert!(!verify("not a hash", "correct horse"));
        // Two hashes of one password differ (their salts do).
        assert_ne!(h, hash_password("correct horse").expect("hash"));
        assert!(matches!(
            hash_password("short"),
            Err(UsersError::Refused(_))
        ));
    }

    #[test]
    fn accounts_and_tokens_survive_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            UsersFile::load(dir.path()).expect("absent"),
            UsersFile::default()
        );
        let mut f = UsersFile::default();
        f.add_user("wang", Role::Operator, "password-1")
            .expect("add");
        assert!(f.add_user("wang", Role::Admin, "password-2").is_err());
        assert!(f.add_user(" padded", Role::Viewer, "password-2").is_err());
        assert!(f.add_user("a/b", Role::Viewer, "password-2").is_err());
        f.add_user("值班员 Li Wei", Role::Viewer, "password-2")
            .expect("a Chinese name");
        let token = f.add_token("bms", Role::Viewer).expect("token");
        f.save(dir.path()).expect("save");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path(dir.path()))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(path(dir.path())).expect("read");
        assert!(
            !text.contains("password-1") && !text.contains(&token[20..]),
            "{text}"
        );

        let mut back = UsersFile::load(dir.path()).expect("load");
        assert_eq!(back, f);
        assert_eq!(back.check_token(&token), Some(("bms", Role::Viewer)));
        assert_eq!(back.check_token(&format!("{token}x")), None);
        assert!(back.can_write(), "wang, an operator, can write");
        back.set_password("wang", "password-3").expect("passwd");
        assert!(verify(
            &back.user("wang").expect("wang").password_hash,
            "password-3"
        ));
        back.remove_user("wang").expect("remove");
        assert!(back.remove_user("wang").is_err());
        back.remove_token("bms").expect("remove token");
        assert_eq!(back.check_token(&token), None);
    }
}
