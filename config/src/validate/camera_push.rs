//! The rules of `[ingest.camera_push]`: its name beside the sources', the users that its
//! `auth` needs, the realm, the silence and body bounds, and a port of its own.

use std::collections::HashMap;

use super::core::check_id;
use super::findings::{Finding, Findings, Parts};
use super::sources::check_clear_after;
use crate::camera_push::{CameraIdFrom, CameraPushConfig, PushAuth};
use crate::units::ByteSize;

/// Smallest `max_body`: an `EventNotificationAlert` alone is 0.5–2 KiB.
const MIN_BODY: ByteSize = ByteSize::kib(4);
/// Largest `max_body` (16 connections at once: 256 MiB, the whole of a small board).
const MAX_BODY: ByteSize = ByteSize::mib(16);

/// The rules for `[ingest.camera_push]`.
pub(super) fn check(parts: &Parts, f: &mut Findings) {
    let Some(push) = parts.ingest.as_ref().and_then(|i| i.camera_push.as_ref()) else {
        return;
    };
    let key = |k: &str| format!("ingest.camera_push.{k}");
    check_id(&key("name"), &push.name, &['-', '_'], 64, f);
    if let Some((i, _)) = parts.source_names.iter().find(|(_, n)| *n == push.name) {
        f.0.push(Finding {
            path: key("name"),
            involves: Vec::new(),
            related: Some(format!("ingest.sources[{i}]")),
            message: format!(
                "{:?} is also the name of ingest.sources[{i}]; devices name their source by it, so give the camera push another `name`",
                push.name
            ),
        });
    }
    check_auth(push, f);
    if push.realm.is_empty()
        || push
            .realm
            .chars()
            .any(|c| !c.is_ascii() || c.is_ascii_control() || c == '"' || c == '\\')
    {
        f.at(
            key("realm"),
            format!(
                "{:?} must be printable ASCII without '\"' or '\\' (it is quoted in the WWW-Authenticate challenge)",
                push.realm
            ),
        );
    }
    check_clear_after(key("clear_after"), push.clear_after, f);
    if push.max_body < MIN_BODY || push.max_body > MAX_BODY {
        f.at(
            key("max_body"),
            format!(
                "must be between {MIN_BODY} and {MAX_BODY}, found {}",
                push.max_body
            ),
        );
    }
    if let Some(api) = &parts.api {
        let (a, p) = (api.listen, push.listen);
        let same_ip = a.ip() == p.ip() || a.ip().is_unspecified() || p.ip().is_unspecified();
        if a.port() != 0 && a.port() == p.port() && same_ip {
            f.across(
                key("listen"),
                &["api.listen".to_owned()],
                format!("{p} is the API's address too (api.listen = {a}); the camera push needs a port of its own"),
            );
        }
    }
}

/// `auth`, `camera_id` and `users` together: an account for every mode but `none`, and
/// each account usable.
fn check_auth(push: &CameraPushConfig, f: &mut Findings) {
    let key = |k: &str| format!("ingest.camera_push.{k}");
    match push.auth {
        PushAuth::None if push.camera_id == CameraIdFrom::User => f.across(
            key("camera_id"),
            &[key("auth")],
            "\"user\" names cameras by the user they sign in as, but auth = \"none\" asks for no user",
        ),
        PushAuth::None => {}
        mode if push.users.is_empty() => f.across(
            key("users"),
            &[key("auth")],
            format!(
                "auth = {:?} needs at least one account: users = [{{ name = \"…\", password_file = \"…\" }}] (or auth = \"none\")",
                mode.as_str()
            ),
        ),
        _ => {}
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (k, user) in push.users.iter().enumerate() {
        let at = |field: &str| format!("ingest.camera_push.users[{k}].{field}");
        if user.name.is_empty() {
            f.at(at("name"), "must not be empty");
        } else if let Some(c) = user
            .name
            .chars()
            .find(|c| *c == ':' || *c == '"' || *c == '\\' || c.is_control())
        {
            f.at(
                at("name"),
                format!(
                    "{:?} contains {c:?}; basic auth splits user and password at ':' and digest quotes the name",
                    user.name
                ),
            );
        } else if let Some(&first) = seen.get(user.name.as_str()) {
            f.0.push(Finding {
                path: at("name"),
                involves: Vec::new(),
                related: Some(format!("ingest.camera_push.users[{first}]")),
                message: format!(
                    "duplicate user {:?}, already ingest.camera_push.users[{first}]",
                    user.name
                ),
            });
        } else {
            seen.insert(&user.name, k);
        }
        if user.password.is_none() && user.password_file.is_none() && user.password_env.is_none() {
            f.at(
                at("name"),
                format!(
                    "user {:?} has no password: set `password_file`, `password_env` or `password`",
                    user.name
                ),
            );
        }
    }
}
