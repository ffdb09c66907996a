//! The local HTTP API: health, metrics, the event-code list, alerts (list, get, acknowledge, close,
//! shelve, unshelve), devices,
//! gateway status, the city's roll calls (list, answer), a server-sent-event stream of
//! live changes, sign-in ([`session`]), and the web console.
//!
//! Bound to loopback by default (`api.listen`). `run` takes an already-bound listener so
//! tests and the demo can bind port 0. Who may do what (issue 16; [`guard`] checks it
//! before any handler runs, with [`crate::auth`]):
//!
//! | routes | need |
//! |---|---|
//! | `/healthz`, `/metrics`, the console's page and assets, `/api/codes`, `/api/session` | nothing |
//! | every other `GET` (`/api/status`, `/api/alerts…`, `/api/devices`, `/api/roll-calls`, `/api/stream`) | a viewer, or a client on loopback with `api.anonymous_read = "loopback"` (the default) |
//! | `POST` (acknowledge, close, shelve, unshelve, answer a roll call) | an operator |
//! | `GET /api/users` | an admin |
//!
//! A caller is a console session (cookie; its writes also need the session's CSRF token
//! in `X-CSRF-Token` and, when the browser sends one, an `Origin` of this gateway), a
//! named token, or the deprecated shared `api.token` (operator), both as `Authorization:
//! Bearer <token>` (the scheme in any case). A wrong token is 401, a missing sign-in 401,
//! a role too low or a missing CSRF token 403; with no credential that could write at all
//! the API is read-only (writes get 403). Every action records the caller's name; only
//! the shared token records the `by` its request names. The contract is documented in
//! docs/alerts-and-api.md ("HTTP API", "Sign-in").
//!
//! Limits (issue 13; docs/alerts-and-api.md, "HTTP limits"): [`server`] keeps the connection cap and the
//! header-read and idle timeouts; live streams have their own cap
//! (`api.max_sse_clients`); a write action's body is at most [`MAX_BODY_BYTES`] (413
//! beyond) and its free-text fields are capped ([`MAX_BY_CHARS`], [`MAX_NOTE_CHARS`],
//! [`MAX_DISPOSITION_CHARS`]; 400 naming the field beyond), so an operator's note always
//! fits in one stored record (`store.record_max_bytes`, 48 KiB by default) and one uplink
//! batch (`uplink.max_batch_bytes`, 256 KiB).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Extension;
use axum::{Json, Router};
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::{broadcast, Semaphore};
use tokio_util::sync::CancellationToken;

use estate_protocols::model::Lane;

use crate::alerts::model::Disposition;
use crate::alerts::state::Filter;
use crate::alerts::{AlertsHandle, OpError, Update};
use crate::auth::{Auth, Principal, Role, Via};
use crate::duty::{AnswerError, RollCallView};
use crate::store::StoreReader;
use crate::telemetry::Metrics;

pub mod console;
pub mod server;
pub mod session;
pub mod tls;

/// Largest request body of a write action (acknowledge, close): a JSON object of `by`,
/// `note` and `disposition` at their caps takes at most about 12 KiB even with every
/// character escaped as `\uXXXX`. Beyond: 413.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// How much of an oversized body is read (and dropped) before answering 413, so that
/// the client sees the answer (see `read_body`).
const MAX_DISCARD_BYTES: usize = 1024 * 1024;
/// Longest `by` (who acts), in characters (at most 512 bytes of UTF-8).
pub const MAX_BY_CHARS: usize = 128;
/// Longest `note`, in characters (at most 4,000 bytes of UTF-8): an `ALERT.UPDATE`
/// carrying it stays far below a stored record (`store.record_max_bytes`, 48 KiB by
/// default) and an uplink batch (`uplink.max_batch_bytes`, 256 KiB).
pub const MAX_NOTE_CHARS: usize = 1000;
/// Longest `disposition` as sent (the valid ones are shorter; this only keeps a refusal
/// from echoing a large value).
pub const MAX_DISPOSITION_CHARS: usize = 32;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The gateway's metrics and health conditions: `/metrics`, `/healthz`.
    pub metrics: Arc<Metrics>,
    /// Read-only view of the store for `/api/status` and `/healthz` (cursors, backlog,
    /// epoch); the API never writes through it.
    pub reader: StoreReader,
    /// `gateway.id`, reported by `/healthz` and `/api/status`.
    pub gateway_id: String,
    /// `gateway.estate_id`, reported by `/healthz` and `/api/status`.
    pub estate_id: String,
    /// The alerts stage: lists, acknowledgements, closes and the live change stream.
    pub alerts: AlertsHandle,
    /// Roll calls from the city (issue 14).
    pub duty: crate::duty::DutyDesk,
    /// Accounts, sessions, tokens and lockout: who may read and write ([`guard`]).
    pub auth: Arc<Auth>,
    /// HTTPS (`api.tls_cert`, `api.tls_key`): every connection is TLS; `None`: HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Cancelled when the API stops: open event streams end then, so that graceful
    /// shutdown does not wait for a console that never disconnects.
    pub stop: CancellationToken,
    /// Timeouts and the connection cap (`[api]`).
    pub limits: server::Limits,
    /// One permit per open live stream (`api.max_sse_clients`); a stream holds its
    /// permit until it ends. None left: the next stream is answered 503.
    pub sse_clients: Arc<Semaphore>,
    /// `api.max_sse_clients`, for the refusal's message.
    pub max_sse_clients: usize,
}

/// Every route of the local API (`/healthz`, `/metrics`, `/api/...`, the console) over
/// `state`, without the connection limits (those are [`server::serve`]'s).
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/status", get(status))
        .route("/api/codes", get(console::codes))
        .route("/api/alerts", get(list_alerts))
        .route("/api/alerts/{id}", get(get_alert))
        .route("/api/alerts/{id}/ack", post(ack_alert))
        .route("/api/alerts/{id}/close", post(close_alert))
        .route("/api/alerts/{id}/shelve", post(shelve_alert))
        .route("/api/alerts/{id}/unshelve", post(unshelve_alert))
        .route("/api/devices", get(devices))
        .route("/api/roll-calls", get(roll_calls))
        .route("/api/roll-calls/{id}/answer", post(answer_roll_call))
        .route("/api/stream", get(stream))
        .route(
            "/api/session",
            get(session::get_session)
                .post(session::sign_in)
                .delete(session::sign_out),
        )
        .route("/api/users", get(session::users))
        .merge(console::routes())
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// What a route needs (the table in the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Nothing,
    Read,
    Role(Role),
}

fn need(method: &Method, path: &str) -> Need {
    let open = matches!(
        path,
        "/healthz"
            | "/metrics"
            | "/"
            | "/console.js"
            | "/console.css"
            | "/api/codes"
            | "/api/session"
    );
    if open {
        Need::Nothing
    } else if path == "/api/users" {
        Need::Role(Role::Admin)
    } else if method == Method::GET || method == Method::HEAD {
        Need::Read
    } else {
        Need::Role(Role::Operator)
    }
}

/// Who called, as [`guard`] found it (`None`: nobody signed in, reading anonymously).
#[derive(Debug, Clone)]
pub struct Caller(pub Option<Principal>);

/// The peer's IP address, which [`server`] puts in every request's extensions.
fn peer_ip(req: &Request) -> Option<std::net::IpAddr> {
    req.extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Finds the caller (bearer token first, then the session cookie) and lets the request
/// through only with what its route needs (module doc); the caller goes into the
/// request's extensions as [`Caller`].
async fn guard(
    State(s): State<ApiState>,
    mut req: Request,
    next: axum::middleware::Next,
) -> Response {
    let need = need(req.method(), req.uri().path());
    if need == Need::Nothing {
        return next.run(req).await;
    }
    if matches!(need, Need::Role(r) if r <= Role::Operator) && !s.auth.can_write() {
        return error(
            StatusCode::FORBIDDEN,
            "read-only: no operator account, named token or api.token is configured (estate-gateway users add NAME --role operator)",
        );
    }
    let caller = match caller(&s, req.headers()) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match (need, &caller) {
        (Need::Read, None) if s.auth.anonymous_read(peer_ip(&req)) => {}
        (_, None) => {
            return error(
                StatusCode::UNAUTHORIZED,
                "sign in first (POST /api/session, or the console's sign-in), or send Authorization: Bearer <token>",
            )
        }
        (Need::Role(r), Some(p)) if p.role < r => {
            return error(
                StatusCode::FORBIDDEN,
                format!(
                    "{} is a {}: this needs the {} role",
                    p.name,
                    p.role.as_str(),
                    r.as_str()
                ),
            )
        }
        (Need::Role(_), Some(p)) if p.via == Via::Session => {
            if let Some(refused) = session::csrf_refusal(&s, p, req.headers()) {
                return refused;
            }
        }
        _ => {}
    }
    req.extensions_mut().insert(Caller(caller));
    next.run(req).await
}

/// The caller: a bearer token (the shared `api.token` or a named one; wrong: 401) or a
/// live session cookie; `None` when neither.
#[allow(clippy::result_large_err)]
fn caller(s: &ApiState, headers: &HeaderMap) -> Result<Option<Principal>, Response> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let token = value.to_str().ok().and_then(bearer_token);
        return match token.map(|t| s.auth.bearer(t)) {
            Some(Some(p)) => Ok(Some(p)),
            Some(None) => Err(error(StatusCode::UNAUTHORIZED, "wrong bearer token")),
            None => Err(error(
                StatusCode::UNAUTHORIZED,
                "the Authorization header must be Bearer <token>",
            )),
        };
    }
    Ok(session::cookie(headers).and_then(|id| s.auth.session(id)))
}

/// Serves until `shutdown`, within the limits of `state.limits` (see [`server`]).
pub async fn run(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let limits = state.limits;
    let metrics = state.metrics.clone();
    let tls = state.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    server::serve(listener, router(state), limits, metrics, tls, shutdown).await
}

async fn healthz(State(s): State<ApiState>) -> impl IntoResponse {
    let m = &s.metrics;
    let worst = m.health.worst();
    let problems: Vec<serde_json::Value> = m
        .health
        .conditions()
        .into_iter()
        .map(|(key, c)| {
            serde_json::json!({
                "key": key,
                "status": c.level.as_str(),
                "reason": c.reason,
                "since_ms": c
                    .since
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
            })
        })
        .collect();
    let code = match worst {
        Some(crate::health::Level::Failed) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    };
    let body = Json(serde_json::json!({
        "status": worst.map_or("ok", crate::health::Level::as_str),
        "problems": problems,
        "gateway_id": s.gateway_id,
        "estate_id": s.estate_id,
        // A string: a 64-bit id as a JSON number is rounded by JavaScript and jq.
        "store_epoch": s.reader.epoch().to_string(),
        "ingest_connected": m.ingest_connected.get() == 1,
        "uplink_connected": m.uplink_connected.get() == 1,
        // An alarm flood is the estate's state, not the gateway's: a field, not a problem.
        "flood": s.alerts.flood(),
        "backlog": {
            "alarms": s.reader.backlog(Lane::Alarms),
            "events": s.reader.backlog(Lane::Events),
        },
        "cursor": {
            "alarms": s.reader.cursor(Lane::Alarms),
            "events": s.reader.cursor(Lane::Events),
        },
    }));
    (code, body)
}

/// `/metrics`: OpenMetrics when the request's `Accept` asks for it, else the classic
/// Prometheus text format (what `promtool check metrics` and older scrapers read).
async fn metrics(State(s): State<ApiState>, headers: HeaderMap) -> impl IntoResponse {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let (content_type, body) = if openmetrics {
        (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            s.metrics.encode(),
        )
    } else {
        (
            "text/plain; version=0.0.4; charset=utf-8",
            s.metrics.encode_classic(),
        )
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body)
}

fn status_json(s: &ApiState) -> serde_json::Value {
    let m = &s.metrics;
    serde_json::json!({
        "gateway_id": s.gateway_id,
        "estate_id": s.estate_id,
        "ingest_connected": m.ingest_connected.get() == 1,
        "uplink_connected": m.uplink_connected.get() == 1,
        "backlog": {
            "alarms": s.reader.backlog(Lane::Alarms),
            "events": s.reader.backlog(Lane::Events),
        },
        "events_per_sec": s.alerts.events_per_sec(),
        "flood": s.alerts.flood(),
        "read_only": !s.auth.can_write(),
    })
}

async fn status(State(s): State<ApiState>) -> impl IntoResponse {
    Json(status_json(&s))
}

/// A JSON error body: `{"error": "..."}`.
fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (code, Json(serde_json::json!({"error": message.into()}))).into_response()
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    status: Option<String>,
    device: Option<String>,
    severity: Option<String>,
    limit: Option<String>,
}

async fn list_alerts(State(s): State<ApiState>, Query(q): Query<ListQuery>) -> Response {
    let status = q.status.unwrap_or_else(|| "open".into());
    if !["open", "active", "acknowledged", "closed", "all"].contains(&status.as_str()) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("status must be open, active, acknowledged, closed or all, not {status:?}"),
        );
    }
    let severity = match q.severity.as_deref().map(str::parse::<u8>) {
        None => None,
        Some(Ok(n)) if (1..=4).contains(&n) => Some(n),
        Some(_) => return error(StatusCode::BAD_REQUEST, "severity must be 1, 2, 3 or 4"),
    };
    let limit = match q.limit.as_deref().map(str::parse::<usize>) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "limit must be a number"),
    };
    let filter = Filter {
        status,
        device: q.device.filter(|d| !d.is_empty()),
        severity,
        limit,
    };
    let store = s.alerts.store().clone();
    match tokio::task::spawn_blocking(move || store.list(&filter)).await {
        Ok(Ok(alerts)) => Json(serde_json::json!({ "alerts": alerts })).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn get_alert(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    let store = s.alerts.store().clone();
    let found = tokio::task::spawn_blocking(move || {
        let alert = store.get(&id)?;
        let audit = match &alert {
            Some(_) => store.audit(&id)?,
            None => Vec::new(),
        };
        Ok::<_, crate::store::StoreError>((id, alert, audit))
    })
    .await;
    match found {
        Ok(Ok((_, Some(alert), audit))) => {
            let mut v = serde_json::to_value(&alert).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert(
                    "audit".into(),
                    serde_json::to_value(audit).unwrap_or_default(),
                );
            }
            Json(v).into_response()
        }
        Ok(Ok((id, None, _))) => error(StatusCode::NOT_FOUND, format!("no alert {id}")),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The token of an `Authorization` value with the `Bearer` scheme, which is
/// case-insensitive (RFC 9110, 11.1): `Bearer x`, `bearer x` and `BEARER  x` give `x`.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once([' ', '\t'])?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    #[serde(default)]
    by: String,
    #[serde(default)]
    note: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseBody {
    #[serde(default)]
    by: String,
    disposition: String,
    #[serde(default)]
    note: String,
}

/// `POST /api/alerts/{id}/shelve`: for how long (minutes, may be fractional), why, who.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShelveBody {
    #[serde(default)]
    by: String,
    minutes: f64,
    reason: String,
}

/// `POST /api/alerts/{id}/unshelve`: who.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnshelveBody {
    #[serde(default)]
    by: String,
}

/// `POST /api/roll-calls/{id}/answer`: who answers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerBody {
    #[serde(default)]
    by: String,
}

/// The free-text fields of a write request, for their caps.
trait OperatorFields {
    /// `(field, value, most characters)` of every free-text field.
    fn fields(&self) -> Vec<(&'static str, &str, usize)>;
    fn by(&self) -> &str;
}

impl OperatorFields for AckBody {
    fn fields(&self) -> Vec<(&'static str, &str, usize)> {
        vec![
            ("by", &self.by, MAX_BY_CHARS),
            ("note", &self.note, MAX_NOTE_CHARS),
        ]
    }
    fn by(&self) -> &str {
        &self.by
    }
}

impl OperatorFields for AnswerBody {
    fn fields(&self) -> Vec<(&'static str, &str, usize)> {
        vec![("by", &self.by, MAX_BY_CHARS)]
    }
    fn by(&self) -> &str {
        &self.by
    }
}

impl OperatorFields for ShelveBody {
    fn fields(&self) -> Vec<(&'static str, &str, usize)> {
        vec![
            ("by", &self.by, MAX_BY_CHARS),
            ("reason", &self.reason, MAX_NOTE_CHARS),
        ]
    }
    fn by(&self) -> &str {
        &self.by
    }
}

impl OperatorFields for UnshelveBody {
    fn fields(&self) -> Vec<(&'static str, &str, usize)> {
        vec![("by", &self.by, MAX_BY_CHARS)]
    }
    fn by(&self) -> &str {
        &self.by
    }
}

impl OperatorFields for CloseBody {
    fn fields(&self) -> Vec<(&'static str, &str, usize)> {
        vec![
            ("by", &self.by, MAX_BY_CHARS),
            ("disposition", &self.disposition, MAX_DISPOSITION_CHARS),
            ("note", &self.note, MAX_NOTE_CHARS),
        ]
    }
    fn by(&self) -> &str {
        &self.by
    }
}

/// An operator's write request (already let through by [`guard`]): a JSON body of at
/// most [`MAX_BODY_BYTES`] that arrives within `api.header_read_timeout` (parsed by hand
/// so that a bad body is a 400 with our error shape), whose free-text fields are within
/// their caps; with who acts: the signed-in account or named token, or, for the shared
/// `api.token` only, the `by` the request names (then required).
async fn operator_request<T: serde::de::DeserializeOwned + OperatorFields>(
    s: &ApiState,
    caller: &Caller,
    headers: &HeaderMap,
    body: Body,
) -> Result<(T, String), Response> {
    let Some(p) = &caller.0 else {
        return Err(error(StatusCode::UNAUTHORIZED, "sign in first"));
    };
    let body = read_body(body, headers, s.limits.header_read_timeout).await?;
    let request: T = serde_json::from_slice(&body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("bad request body: {e}")))?;
    for (field, value, max) in request.fields() {
        let n = value.chars().count();
        if n > max {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("`{field}` is too long: at most {max} characters, found {n}"),
            ));
        }
    }
    let who = match p.via {
        Via::SharedToken => request.by().trim().to_owned(),
        Via::Session | Via::Token => p.name.clone(),
    };
    if who.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("`by` must name who acts (1 to {MAX_BY_CHARS} characters)"),
        ));
    }
    Ok((request, who))
}

/// The whole body, at most [`MAX_BODY_BYTES`] (413 beyond), within `within` (408
/// beyond). An oversized body is still read and discarded up to [`MAX_DISCARD_BYTES`]
/// before the 413 goes out: a server that answers and closes while the client is still
/// sending makes the client's kernel see a reset, and most clients then report a
/// broken connection instead of the 413.
async fn read_body(
    body: Body,
    headers: &HeaderMap,
    within: Duration,
) -> Result<bytes::Bytes, Response> {
    use futures_util::StreamExt;
    let too_big = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body too big: at most {MAX_BODY_BYTES} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_DISCARD_BYTES as u64) {
        return Err(too_big());
    }
    let collect = async {
        let mut stream = body.into_data_stream();
        let mut out = Vec::new();
        let mut seen = 0usize;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                error(
                    StatusCode::BAD_REQUEST,
                    format!("could not read the request body: {e}"),
                )
            })?;
            seen += chunk.len();
            if seen > MAX_DISCARD_BYTES {
                break;
            }
            if seen <= MAX_BODY_BYTES {
                out.extend_from_slice(&chunk);
            }
        }
        if seen > MAX_BODY_BYTES {
            return Err(too_big());
        }
        Ok(bytes::Bytes::from(out))
    };
    match tokio::time::timeout(within, collect).await {
        Ok(r) => r,
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            format!("request body not received within {within:?}"),
        )),
    }
}

fn op_response(r: Result<crate::alerts::model::Alert, OpError>) -> Response {
    match r {
        Ok(alert) => Json(alert).into_response(),
        Err(OpError::NotFound(id)) => error(StatusCode::NOT_FOUND, format!("no alert {id}")),
        Err(e @ OpError::Conflict(_)) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e @ OpError::Invalid(_)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn ack_alert(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (b, by): (AckBody, String) = match operator_request(&s, &caller, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    op_response(s.alerts.acknowledge(&id, &by, &b.note).await)
}

async fn close_alert(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (b, by): (CloseBody, String) = match operator_request(&s, &caller, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(disposition) = Disposition::from_operator(&b.disposition) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "disposition must be real, false_alarm, test or maintenance, not {:?}",
                b.disposition
            ),
        );
    };
    op_response(s.alerts.close(&id, &by, disposition, &b.note).await)
}

/// `POST /api/alerts/{id}/shelve` `{"by","minutes","reason"}` (issue 16): the token like
/// every write; 400 for a duration out of `[alerts.shelving]`'s bounds or no reason, 404
/// unknown, 409 closed.
async fn shelve_alert(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (b, by): (ShelveBody, String) = match operator_request(&s, &caller, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if !b.minutes.is_finite() || b.minutes <= 0.0 {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "`minutes` must be a number more than 0, found {}",
                b.minutes
            ),
        );
    }
    // Saturates for absurd values; the engine refuses anything over the maximum.
    let for_ms = (b.minutes * 60_000.0).round() as i64;
    op_response(s.alerts.shelve(&id, &by, for_ms, b.reason.trim()).await)
}

/// `POST /api/alerts/{id}/unshelve` `{"by"}`: 409 when it is not shelved.
async fn unshelve_alert(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (_, by): (UnshelveBody, String) = match operator_request(&s, &caller, &headers, body).await
    {
        Ok(b) => b,
        Err(r) => return r,
    };
    op_response(s.alerts.unshelve(&id, &by).await)
}

/// `GET /api/roll-calls`: the pending roll calls (oldest first), then the last finished
/// ones (newest first), each with its status (`pending`, `answered`, `missed`) and, while
/// pending, `remaining_ms`.
async fn roll_calls(State(s): State<ApiState>) -> impl IntoResponse {
    Json(serde_json::json!({ "roll_calls": s.duty.roll_calls() }))
}

/// `POST /api/roll-calls/{id}/answer` `{"by": "…"}`: the person on duty answers; needs
/// the token like every write. 404 for an unknown id, 409 once answered or missed.
async fn answer_roll_call(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (_, by): (AnswerBody, String) = match operator_request(&s, &caller, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match s.duty.answer(&id, &by) {
        Ok(view) => Json(view).into_response(),
        Err(e @ AnswerError::NotFound(_)) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ AnswerError::Finished { .. }) => error(StatusCode::CONFLICT, e.to_string()),
    }
}

async fn devices(State(s): State<ApiState>) -> impl IntoResponse {
    Json(serde_json::json!({ "devices": s.alerts.devices() }))
}

/// What the SSE stream yields next.
enum Next {
    Update(Result<Update, broadcast::error::RecvError>),
    RollCall(Result<RollCallView, broadcast::error::RecvError>),
    Status,
    Stop,
}

/// `GET /api/stream`: `alert` events (an alert's JSON on every change), `device` events
/// (a device's JSON when its status changes), `roll_call` events (a roll call's JSON
/// when it arrives, is answered or is missed), `status` every second (the /api/status
/// JSON), and keep-alive comments. A client that falls behind gets a `resync` event and
/// should re-read the lists. The stream ends when the gateway stops (the client
/// reconnects to the next one), and when the console session it was opened with ends
/// (sign-out, expiry, the account removed; checked every second). At most
/// `api.max_sse_clients` streams at once: beyond, 503.
async fn stream(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Response {
    let Ok(permit) = s.sse_clients.clone().try_acquire_owned() else {
        s.metrics
            .api_closed
            .get_or_create(&crate::telemetry::ReasonLabel { reason: "streams" })
            .inc();
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "too many live streams open (api.max_sse_clients = {}); retry later",
                s.max_sse_clients
            ),
        );
    };
    let session = match &caller.0 {
        Some(p) if p.via == Via::Session => session::cookie(&headers).map(str::to_owned),
        _ => None,
    };
    live_stream(s, permit, session).into_response()
}

fn live_stream(
    s: ApiState,
    permit: tokio::sync::OwnedSemaphorePermit,
    session: Option<String>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let rx = (s.alerts.subscribe(), s.duty.subscribe());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The permit lives in the stream's state: released when the stream is dropped.
    let state = (s, rx, tick, (permit, session));
    let stream = futures_util::stream::unfold(state, |(s, mut rx, mut tick, held)| async move {
        let stop = s.stop.clone();
        let next = tokio::select! {
            biased;
            _ = stop.cancelled() => Next::Stop,
            r = rx.1.recv() => Next::RollCall(r),
            u = rx.0.recv() => Next::Update(u),
            _ = tick.tick() => Next::Status,
        };
        let ev = match next {
            Next::Update(Ok(Update::Alert(a))) => SseEvent::default()
                .event("alert")
                .data(serde_json::to_string(&a).unwrap_or_default()),
            Next::Update(Ok(Update::Device(d))) => SseEvent::default()
                .event("device")
                .data(serde_json::to_string(&d).unwrap_or_default()),
            Next::RollCall(Ok(r)) => SseEvent::default()
                .event("roll_call")
                .data(serde_json::to_string(&r).unwrap_or_default()),
            Next::Update(Err(broadcast::error::RecvError::Lagged(n)))
            | Next::RollCall(Err(broadcast::error::RecvError::Lagged(n))) => SseEvent::default()
                .event("resync")
                .data(format!("{{\"missed\":{n}}}")),
            Next::Update(Err(broadcast::error::RecvError::Closed))
            | Next::RollCall(Err(broadcast::error::RecvError::Closed))
            | Next::Stop => return None,
            Next::Status => {
                if held
                    .1
                    .as_deref()
                    .is_some_and(|id| s.auth.session(id).is_none())
                {
                    return None;
                }
                SseEvent::default()
                    .event("status")
                    .data(status_json(&s).to_string())
            }
        };
        Some((Ok(ev), (s, rx, tick, held)))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[cfg(test)]
mod tests {
    use super::{bearer_token, need, Need, Role};
    use axum::http::Method;

    #[test]
    fn routes_need_what_the_table_says() {
        assert_eq!(need(&Method::GET, "/healthz"), Need::Nothing);
        assert_eq!(need(&Method::GET, "/metrics"), Need::Nothing);
        assert_eq!(need(&Method::GET, "/"), Need::Nothing);
        assert_eq!(need(&Method::POST, "/api/session"), Need::Nothing);
        assert_eq!(need(&Method::DELETE, "/api/session"), Need::Nothing);
        assert_eq!(need(&Method::GET, "/api/alerts"), Need::Read);
        assert_eq!(need(&Method::GET, "/api/stream"), Need::Read);
        assert_eq!(
            need(&Method::POST, "/api/alerts/x/ack"),
            Need::Role(Role::Operator)
        );
        assert_eq!(
            need(&Method::POST, "/api/roll-calls/x/answer"),
            Need::Role(Role::Operator)
        );
        assert_eq!(need(&Method::GET, "/api/users"), Need::Role(Role::Admin));
    }

    /// Issue 13: the scheme is case-insensitive.
    #[test]
    fn bearer_scheme_in_any_case() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER   abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearerabc"), None);
    }
}
