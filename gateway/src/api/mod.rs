//! The local HTTP API: health, metrics, alerts (list, get, acknowledge, close), devices,
//! gateway status, a server-sent-event stream of live changes, and the web console.
//!
//! Bound to loopback by default (`api.listen`). `run` takes an already-bound listener so
//! tests and the demo can bind port 0. Reading needs no authentication; write actions
//! need `Authorization: Bearer <api.token>`, and without a configured token the API is
//! read-only (writes get 403). The contract is documented in the README ("HTTP API").

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use estate_config::Secret;
use estate_protocols::model::Lane;

use crate::alerts::model::Disposition;
use crate::alerts::state::Filter;
use crate::alerts::{AlertsHandle, OpError, Update};
use crate::store::StoreReader;
use crate::telemetry::Metrics;

pub mod console;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub metrics: Arc<Metrics>,
    pub reader: StoreReader,
    pub gateway_id: String,
    pub estate_id: String,
    pub alerts: AlertsHandle,
    /// `api.token`: required for write actions; `None` makes the API read-only.
    pub token: Option<Secret>,
    /// Cancelled when the API stops: open event streams end then, so that graceful
    /// shutdown does not wait for a console that never disconnects.
    pub stop: CancellationToken,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/status", get(status))
        .route("/api/alerts", get(list_alerts))
        .route("/api/alerts/{id}", get(get_alert))
        .route("/api/alerts/{id}/ack", post(ack_alert))
        .route("/api/alerts/{id}/close", post(close_alert))
        .route("/api/devices", get(devices))
        .route("/api/stream", get(stream))
        .merge(console::routes())
        .with_state(state)
}

/// Serves until `shutdown`.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
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
        "store_epoch": s.reader.epoch(),
        "ingest_connected": m.ingest_connected.get() == 1,
        "uplink_connected": m.uplink_connected.get() == 1,
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

async fn metrics(State(s): State<ApiState>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
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
        "read_only": s.token.is_none(),
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

/// Checks `Authorization: Bearer <token>` for a write action.
#[allow(clippy::result_large_err)]
fn authorize(s: &ApiState, headers: &HeaderMap) -> Result<(), Response> {
    let Some(token) = &s.token else {
        return Err(error(
            StatusCode::FORBIDDEN,
            "read-only: no api.token is configured",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), token.expose().as_bytes()) => Ok(()),
        Some(_) => Err(error(StatusCode::UNAUTHORIZED, "wrong bearer token")),
        None => Err(error(
            StatusCode::UNAUTHORIZED,
            "write actions need the header Authorization: Bearer <api.token>",
        )),
    }
}

/// Compares without stopping at the first difference, so the time taken does not tell
/// how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= x ^ y;
    }
    diff == 0
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    by: String,
    #[serde(default)]
    note: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseBody {
    by: String,
    disposition: String,
    #[serde(default)]
    note: String,
}

/// An operator's write request: authorized by the bearer token, with a JSON body (parsed
/// by hand so that a bad body is a 400 with our error shape) whose `by` names who acts
/// (1 to 128 characters).
#[allow(clippy::result_large_err)]
fn operator_request<T: serde::de::DeserializeOwned>(
    s: &ApiState,
    headers: &HeaderMap,
    body: &[u8],
    by: impl Fn(&T) -> &str,
) -> Result<T, Response> {
    authorize(s, headers)?;
    let request: T = serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("bad request body: {e}")))?;
    let who = by(&request).trim();
    if who.is_empty() || who.len() > 128 {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "`by` must name who acts (1 to 128 characters)",
        ));
    }
    Ok(request)
}

fn op_response(r: Result<crate::alerts::model::Alert, OpError>) -> Response {
    match r {
        Ok(alert) => Json(alert).into_response(),
        Err(OpError::NotFound(id)) => error(StatusCode::NOT_FOUND, format!("no alert {id}")),
        Err(e @ OpError::Conflict(_)) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn ack_alert(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let b = match operator_request(&s, &headers, &body, |b: &AckBody| &b.by) {
        Ok(b) => b,
        Err(r) => return r,
    };
    op_response(s.alerts.acknowledge(&id, b.by.trim(), &b.note).await)
}

async fn close_alert(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let b = match operator_request(&s, &headers, &body, |b: &CloseBody| &b.by) {
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
    op_response(s.alerts.close(&id, b.by.trim(), disposition, &b.note).await)
}

async fn devices(State(s): State<ApiState>) -> impl IntoResponse {
    Json(serde_json::json!({ "devices": s.alerts.devices() }))
}

/// What the SSE stream yields next.
enum Next {
    Update(Result<Update, broadcast::error::RecvError>),
    Status,
    Stop,
}

/// `GET /api/stream`: `alert` events (an alert's JSON on every change), `device` events
/// (a device's JSON when its status changes), `status` every second (the /api/status
/// JSON), and keep-alive comments. A client that falls behind gets a `resync` event and
/// should re-read the lists. The stream ends when the gateway stops (the client
/// reconnects to the next one).
async fn stream(
    State(s): State<ApiState>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let rx = s.alerts.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stream = futures_util::stream::unfold((s, rx, tick), |(s, mut rx, mut tick)| async move {
        let stop = s.stop.clone();
        let next = tokio::select! {
            biased;
            _ = stop.cancelled() => Next::Stop,
            u = rx.recv() => Next::Update(u),
            _ = tick.tick() => Next::Status,
        };
        let ev = match next {
            Next::Update(Ok(Update::Alert(a))) => SseEvent::default()
                .event("alert")
                .data(serde_json::to_string(&a).unwrap_or_default()),
            Next::Update(Ok(Update::Device(d))) => SseEvent::default()
                .event("device")
                .data(serde_json::to_string(&d).unwrap_or_default()),
            Next::Update(Err(broadcast::error::RecvError::Lagged(n))) => SseEvent::default()
                .event("resync")
                .data(format!("{{\"missed\":{n}}}")),
            Next::Update(Err(broadcast::error::RecvError::Closed)) | Next::Stop => return None,
            Next::Status => SseEvent::default()
                .event("status")
                .data(status_json(&s).to_string()),
        };
        Some((Ok(ev), (s, rx, tick)))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_compare_is_exact() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }
}
