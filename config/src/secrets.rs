//! Secrets from files and environment variables, resolved when the config is loaded.
//!
//! `password_file` / `password_env` (broker connections, camera push users) and `token_file` / `token_env`
//! (the API) are read here, after the semantic rules, into the [`Secret`] field they
//! stand for, so the rest of the gateway only ever sees `password` / `token`. At most one
//! source per secret. A source that cannot be read is a located config problem; its
//! message names the file or variable, never the value.

use std::path::Path;

use crate::schema::BrokerConfig;
use crate::units::Secret;
use crate::validate::{Finding, Parts};

fn finding(path: String, message: String) -> Finding {
    Finding {
        path,
        involves: Vec::new(),
        related: None,
        message,
    }
}

/// Reads every `*_file` / `*_env` secret into its `Secret` field; problems as findings.
pub(crate) fn resolve(parts: &mut Parts) -> Vec<Finding> {
    let mut findings = Vec::new();
    if let Some(ingest) = &mut parts.ingest {
        resolve_broker("ingest.mqtt", &mut ingest.mqtt, &mut findings);
    }
    if let Some(uplink) = &mut parts.uplink {
        resolve_broker("uplink.mqtt", &mut uplink.mqtt, &mut findings);
    }
    if let Some(push) = parts.ingest.as_mut().and_then(|i| i.camera_push.as_mut()) {
        for (k, user) in push.users.iter_mut().enumerate() {
            let (file, env) = (user.password_file.clone(), user.password_env.clone());
            if let Some(password) = resolve_one(
                &format!("ingest.camera_push.users[{k}]"),
                "password",
                user.password.is_some(),
                file.as_deref(),
                env.as_deref(),
                &mut findings,
            ) {
                user.password = Some(password);
            }
        }
    }
    if let Some(api) = &mut parts.api {
        let (file, env) = (api.token_file.clone(), api.token_env.clone());
        if let Some(token) = resolve_one(
            "api",
            "token",
            api.token.is_some(),
            file.as_deref(),
            env.as_deref(),
            &mut findings,
        ) {
            api.token = Some(token);
        }
    }
    findings
}

fn resolve_broker(prefix: &str, b: &mut BrokerConfig, findings: &mut Vec<Finding>) {
    let from_elsewhere = b.password_file.is_some() || b.password_env.is_some();
    if from_elsewhere && b.username.is_none() {
        let key = if b.password_file.is_some() {
            "password_file"
        } else {
            "password_env"
        };
        findings.push(finding(
            format!("{prefix}.{key}"),
            "is set but `username` is not; MQTT does not allow a password without a user name"
                .to_owned(),
        ));
    }
    let (file, env) = (b.password_file.clone(), b.password_env.clone());
    if let Some(password) = resolve_one(
        prefix,
        "password",
        b.password.is_some(),
        file.as_deref(),
        env.as_deref(),
        findings,
    ) {
        b.password = Some(password);
    }
}

/// The secret named `name` under `prefix` from its file or variable, if one is given
/// and readable.
fn resolve_one(
    prefix: &str,
    name: &str,
    inline: bool,
    file: Option<&Path>,
    env: Option<&str>,
    findings: &mut Vec<Finding>,
) -> Option<Secret> {
    let sources = usize::from(inline) + usize::from(file.is_some()) + usize::from(env.is_some());
    if sources > 1 {
        findings.push(finding(
            format!("{prefix}.{name}"),
            format!("set at most one of `{name}`, `{name}_file` and `{name}_env`"),
        ));
        return None;
    }
    if let Some(path) = file {
        let key = format!("{prefix}.{name}_file");
        return match std::fs::read_to_string(path) {
            Ok(text) => {
                let value = text.strip_suffix('\n').unwrap_or(&text);
                let value = value.strip_suffix('\r').unwrap_or(value);
                if value.is_empty() {
                    findings.push(finding(key, format!("{} is empty", path.display())));
                    None
                } else {
                    Some(Secret::new(value))
                }
            }
            Err(err) => {
                findings.push(finding(
                    key,
                    format!("cannot read {}: {err}", path.display()),
                ));
                None
            }
        };
    }
    if let Some(var) = env {
        let key = format!("{prefix}.{name}_env");
        return match std::env::var(var) {
            Ok(value) if !value.is_empty() => Some(Secret::new(value)),
            Ok(_) => {
                findings.push(finding(key, format!("environment variable {var} is empty")));
                None
            }
            Err(std::env::VarError::NotPresent) => {
                findings.push(finding(
                    key,
                    format!("environment variable {var} is not set"),
                ));
                None
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                findings.push(finding(
                    key,
                    format!("environment variable {var} is not valid UTF-8"),
                ));
                None
            }
        };
    }
    None
}
