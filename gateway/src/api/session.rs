//! Sign-in for the console (issue 16): `POST /api/session` (name and password) opens a
//! session and sets its cookie, `GET /api/session` says who is signed in (and the CSRF
//! token the page sends with its writes), `DELETE /api/session` signs out. `GET
//! /api/users` lists the accounts and tokens for an admin.
//!
//! The cookie is `estate_session`, `HttpOnly` (no script reads it), `SameSite=Strict`
//! (no other site's page sends it), `Path=/`, `Max-Age` = `api.session_ttl`, and `Secure`
//! when the API is served over HTTPS. Failed sign-ins count towards the lockout
//! ([`crate::auth::lockout`]); a locked account or address gets 429 with `Retry-After`.

use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;

use super::{error, read_body, ApiState, Caller};
use crate::auth::session::check_origin;
use crate::auth::{Principal, SignInError, Via};

/// The session cookie's name.
pub const COOKIE: &str = "estate_session";

/// The session id in a request's `Cookie` headers, if any.
pub fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == COOKIE && !v.is_empty()).then_some(v)
        })
}

fn set_cookie(value: &str, max_age: Duration, secure: bool) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    ))
    .ok()
}

/// 403 for a session's write without its CSRF token (`X-CSRF-Token`) or from a foreign
/// `Origin`; `None` when the write may go on.
pub(super) fn csrf_refusal(s: &ApiState, p: &Principal, headers: &HeaderMap) -> Option<Response> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    crate::auth::session::check_csrf(
        p.csrf.as_deref().unwrap_or_default(),
        text("x-csrf-token"),
        text("origin"),
        text("host"),
        s.auth.https(),
    )
    .err()
    .map(|why| error(StatusCode::FORBIDDEN, format!("refused: {why}")))
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn who(p: &Principal) -> serde_json::Value {
    serde_json::json!({
        "signed_in": p.via == Via::Session,
        "name": p.name,
        "role": p.role.as_str(),
        "via": p.via,
        "csrf_token": p.csrf,
        "expires_ms": p.expires.map(ms),
    })
}

/// `GET /api/session`: `{signed_in, name, role, via, csrf_token, expires_ms}` of the
/// caller (`signed_in` false and no name when nobody is), plus `can_read` (signed in, a
/// token, or reading anonymously from loopback) and `read_only`.
pub(super) async fn get_session(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let p = super::caller(&s, &headers).ok().flatten();
    let mut v = match &p {
        Some(p) => who(p),
        None => serde_json::json!({ "signed_in": false }),
    };
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "can_read".into(),
            (p.is_some() || s.auth.anonymous_read(Some(peer.ip()))).into(),
        );
        o.insert("read_only".into(), (!s.auth.can_write()).into());
    }
    Json(v).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    name: String,
    password: String,
}

/// `POST /api/session` `{"name", "password"}`: 200 with the session (as `GET`) and its
/// cookie; 401 for a wrong name or password (which is not said); 429 while locked; 403
/// for a foreign `Origin`.
pub(super) async fn sign_in(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Err(why) = check_origin(text("origin"), text("host"), s.auth.https()) {
        return error(StatusCode::FORBIDDEN, format!("refused: {why}"));
    }
    let body = match read_body(body, &headers, s.limits.header_read_timeout).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let req: SignIn = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad request body: {e}")),
    };
    let name = req.name.trim();
    match s
        .auth
        .sign_in(name, &req.password, peer.ip(), &s.metrics)
        .await
    {
        Ok((id, session)) => {
            let ttl = s.auth.session_ttl();
            let p = Principal {
                name: session.name.clone(),
                role: session.role,
                via: Via::Session,
                csrf: Some(session.csrf.clone()),
                expires: Some(
                    SystemTime::now() + session.expires.saturating_duration_since(Instant::now()),
                ),
            };
            let mut r = Json(who(&p)).into_response();
            if let Some(c) = set_cookie(&id, ttl, s.auth.https()) {
                r.headers_mut().insert(header::SET_COOKIE, c);
            }
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(SignInError::Refused) => error(StatusCode::UNAUTHORIZED, "wrong name or password"),
        Err(SignInError::Locked(l)) => {
            let secs = l
                .until()
                .saturating_duration_since(Instant::now())
                .as_secs()
                + 1;
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many failed sign-ins: this {} is locked for {} more minute(s)",
                    l.scope(),
                    secs.div_ceil(60)
                ),
            );
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        Err(SignInError::Unavailable(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// `DELETE /api/session`: signs out (with the session's CSRF token, like every write)
/// and clears the cookie; 200 `{"signed_in": false}` also when nobody was signed in.
pub(super) async fn sign_out(State(s): State<ApiState>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers) {
        if let Some(p) = s.auth.session(id) {
            if let Some(refused) = csrf_refusal(&s, &p, &headers) {
                return refused;
            }
            s.auth.sign_out(id);
        }
    }
    let mut r = Json(serde_json::json!({ "signed_in": false })).into_response();
    if let Some(c) = set_cookie("", Duration::ZERO, s.auth.https()) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

/// `GET /api/users` (admins): `{users: [{name, role}], tokens: [{name, role}]}`, never a
/// hash.
pub(super) async fn users(
    State(s): State<ApiState>,
    Extension(_caller): Extension<Caller>,
) -> Response {
    let f = s.auth.users();
    let list = |v: Vec<(String, &'static str)>| {
        v.into_iter()
            .map(|(name, role)| serde_json::json!({"name": name, "role": role}))
            .collect::<Vec<_>>()
    };
    Json(serde_json::json!({
        "users": list(f.users.iter().map(|u| (u.name.clone(), u.role.as_str())).collect()),
        "tokens": list(f.tokens.iter().map(|t| (t.name.clone(), t.role.as_str())).collect()),
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; estate_session=abc; b=2"),
        );
        assert_eq!(cookie(&h), Some("abc"));
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("estate_session="));
        assert_eq!(cookie(&h), None);
        let c = set_cookie("x", Duration::from_secs(60), true).expect("header");
        let c = c.to_str().expect("ascii");
        for part in [
            "HttpOnly",
            "SameSite=Strict",
            "Max-Age=60",
            "Secure",
            "Path=/",
        ] {
            assert!(c.contains(part), "{c}");
        }
        let c = set_cookie("x", Duration::from_secs(60), false).expect("header");
        assert!(!c.to_str().expect("ascii").contains("Secure"));
    }
}
