//! The local HTTP API: `/healthz` and `/metrics` (Prometheus text).
//!
//! Bound to loopback by default (`api.listen`). `run` takes an already-bound listener so
//! tests and the demo can bind port 0.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use tokio_util::sync::CancellationToken;

use estate_protocols::model::Lane;

use crate::store::StoreReader;
use crate::telemetry::Metrics;

pub mod console;

#[derive(Debug, Clone)]
pub struct ApiState {
    pub metrics: Arc<Metrics>,
    pub reader: StoreReader,
    pub gateway_id: String,
    pub estate_id: String,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
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
    Json(serde_json::json!({
        "status": "ok",
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
    }))
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
