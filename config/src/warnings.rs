//! Deployment warnings: things a config may do that work but expose the gateway.
//!
//! Not errors — a lab set-up may do all of them on purpose — so `check-config` prints
//! them and still exits 0, and `run` logs them at start. Checked here:
//!
//! - a TLS private key or a secret file (`password_file`, `token_file`) that the
//!   file's group or other users can access;
//! - an uplink (or a non-loopback ingest broker) without TLS;
//! - an API listening beyond loopback without `api.token`;
//! - a camera push beyond loopback with `auth = "none"` or basic auth.
//!
//! Reads file metadata only, never file contents; messages never contain a secret.

use std::fmt;
use std::path::Path;

use crate::schema::{BrokerConfig, Config};

/// One warning, named by the key it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// Key path, e.g. `uplink.mqtt.tls.key_file`.
    pub path: String,
    /// What is insecure about the setting and how to fix it.
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl Config {
    /// Everything about this config that is insecure for a field deployment.
    pub fn warnings(&self) -> Vec<ConfigWarning> {
        let mut w = Vec::new();
        broker_warnings("ingest.mqtt", &self.ingest.mqtt, false, &mut w);
        broker_warnings("uplink.mqtt", &self.uplink.mqtt, true, &mut w);
        if let Some(file) = &self.api.token_file {
            private_file("api.token_file", file, &mut w);
        }
        let ip = self.api.listen.ip();
        // Beyond loopback reading and writing need a sign-in or a token (docs/alerts-and-api.md,
        // "Sign-in"); over plain HTTP those cross the network readable.
        if !ip.is_loopback() && self.api.tls_cert.is_none() {
            w.push(ConfigWarning {
                path: "api.listen".to_owned(),
                message: format!(
                    "{} is reachable beyond loopback over plain HTTP: passwords, session \
                     cookies and tokens (named ones and `api.token`) cross that network in \
                     clear text; set `api.tls_cert` and `api.tls_key`, or listen on 127.0.0.1",
                    self.api.listen
                ),
            });
        }
        if let Some(push) = &self.ingest.camera_push {
            camera_push_warnings(push, &mut w);
        }
        w
    }
}

/// A camera push beyond loopback without credentials, or with basic auth (passwords in
/// clear); its users' password files.
fn camera_push_warnings(push: &crate::CameraPushConfig, w: &mut Vec<ConfigWarning>) {
    for (k, user) in push.users.iter().enumerate() {
        if let Some(file) = &user.password_file {
            private_file(
                &format!("ingest.camera_push.users[{k}].password_file"),
                file,
                w,
            );
        }
    }
    if push.listen.ip().is_loopback() {
        return;
    }
    let message = match push.auth {
        crate::PushAuth::None => format!(
            "{} is reachable beyond loopback and `auth = \"none\"`: anyone on that network can raise camera alarms; set `auth = \"digest\"` and `users`",
            push.listen
        ),
        crate::PushAuth::Basic | crate::PushAuth::BasicOrDigest => format!(
            "basic auth on {} sends the cameras' passwords in clear; prefer `auth = \"digest\"` unless the cameras are on their own VLAN",
            push.listen
        ),
        crate::PushAuth::Digest => return,
    };
    w.push(ConfigWarning {
        path: "ingest.camera_push.auth".to_owned(),
        message,
    });
}

fn broker_warnings(prefix: &str, b: &BrokerConfig, uplink: bool, w: &mut Vec<ConfigWarning>) {
    match &b.tls {
        None => {
            let nodes = b.endpoints();
            let loopback = nodes.iter().all(|(host, _)| {
                host.parse::<std::net::IpAddr>()
                    .map(|ip| ip.is_loopback())
                    .unwrap_or(host == "localhost")
            });
            let named = nodes
                .iter()
                .map(|(h, p)| {
                    if h.contains(':') {
                        format!("[{h}]:{p}")
                    } else {
                        format!("{h}:{p}")
                    }
                })
                .collect::<Vec<_>>()
                .join(", ");
            if uplink {
                w.push(ConfigWarning {
                    path: format!("{prefix}.tls"),
                    message: format!(
                        "the uplink to {named} is not TLS: events{} travel in clear text and \
                         the broker is not authenticated; set [uplink.mqtt.tls]",
                        if b.username.is_some() {
                            " and the password"
                        } else {
                            ""
                        }
                    ),
                });
            } else if !loopback {
                w.push(ConfigWarning {
                    path: format!("{prefix}.tls"),
                    message: format!(
                        "the ingest broker {named} is not on loopback and not TLS; use TLS \
                         unless it is on a trusted LAN"
                    ),
                });
            }
        }
        Some(tls) => {
            if let Some(key) = &tls.key_file {
                private_file(&format!("{prefix}.tls.key_file"), key, w);
            }
        }
    }
    if let Some(file) = &b.password_file {
        private_file(&format!("{prefix}.password_file"), file, w);
    }
}

/// Warns when `file` is accessible by its group or by others.
fn private_file(path: &str, file: &Path, w: &mut Vec<ConfigWarning>) {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(file) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                w.push(ConfigWarning {
                    path: path.to_owned(),
                    message: format!(
                        "{} is accessible by {} (mode {mode:04o}); `chmod 600` it and make \
                         the gateway's user its owner",
                        file.display(),
                        match (mode & 0o070 != 0, mode & 0o007 != 0) {
                            (true, true) => "its group and other users",
                            (true, false) => "its group",
                            _ => "other users",
                        }
                    ),
                });
            }
        }
        Err(err) => w.push(ConfigWarning {
            path: path.to_owned(),
            message: format!("cannot check {}: {err}", file.display()),
        }),
    }
}
