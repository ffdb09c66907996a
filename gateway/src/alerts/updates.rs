//! What the alerts stage tells the world about a change, built from the alert: the
//! live stream's items ([`Update`], for SSE and the console), the `ALERT.UPDATE` event
//! that carries a transition upstream, and the two documents on the alert topic (one
//! change on `…/alerts/changes`, the retained active set on `…/alerts`).

use bytes::Bytes;
use serde::Serialize;

use estate_protocols::model::{AlertChange, Event, EventState, Severity, Source};

use super::model::{Alert, DeviceView};
use crate::events::now_ms;

/// A change pushed to live subscribers (SSE, console).
#[derive(Debug, Clone)]
pub enum Update {
    /// An alert's new state.
    Alert(Box<Alert>),
    /// A device's new status.
    Device(Box<DeviceView>),
}

/// Whose gateway, in which estate: stamped on every update that leaves the gateway.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    pub(crate) gateway_id: String,
    pub(crate) estate_id: String,
}

/// A transition as an `ALERT.UPDATE` event, for the store to commit and forward upstream.
pub(crate) fn upstream_event(
    origin: &Origin,
    alert: &Alert,
    change: AlertChange,
    by: &str,
    note: &str,
) -> Event {
    Event {
        seq: 0,
        event_id: ulid::Ulid::new().to_string(),
        gateway_id: origin.gateway_id.clone(),
        estate_id: origin.estate_id.clone(),
        device_id: alert.device_id.clone(),
        device_kind: alert.device_kind.as_deref().and_then(|k| k.parse().ok()),
        code: "ALERT.UPDATE".into(),
        // Critical alerts stay critical; every other update is major, so that the
        // event's lane follows from its severity as for every other event (receivers
        // check that). The alert's own severity is in `alert.severity`.
        severity: alert.severity().min(Severity::Major),
        state: if alert.is_open() && !alert.cleared {
            EventState::Active
        } else {
            EventState::Cleared
        },
        location: alert.location.clone(),
        device_time_ms: None,
        gateway_time_ms: now_ms(),
        value: None,
        source: Source {
            protocol: "gateway".into(),
            reference: format!("alerts/{}", alert.id),
        },
        raw: Bytes::new(),
        raw_truncated: false,
        registered: true,
        device_seq: None,
        alert: Some(Box::new(alert.update(change, by, note))),
    }
}

/// One transition as published on `…/alerts/changes` (JSON).
pub(crate) fn change_message(alert: &Alert, change: AlertChange, by: &str, note: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct ChangeMsg<'a> {
        change: &'a str,
        by: &'a str,
        note: &'a str,
        alert: &'a Alert,
    }
    let change = match change {
        AlertChange::Opened => "opened",
        AlertChange::Acknowledged => "acknowledged",
        AlertChange::Escalated => "escalated",
        AlertChange::Cleared => "cleared",
        AlertChange::Closed => "closed",
        AlertChange::Action => "action",
    };
    serde_json::to_vec(&ChangeMsg {
        change,
        by,
        note,
        alert,
    })
    .unwrap_or_default()
}

/// The open alerts as the retained document on `…/alerts` (JSON), most severe first,
/// then oldest first.
pub(crate) fn active_set<'a>(origin: &Origin, open: impl Iterator<Item = &'a Alert>) -> Vec<u8> {
    let mut alerts: Vec<&Alert> = open.collect();
    alerts.sort_by(|a, b| {
        (a.severity, a.first_seen_ms, &a.id).cmp(&(b.severity, b.first_seen_ms, &b.id))
    });
    serde_json::to_vec(&serde_json::json!({
        "estate_id": origin.estate_id,
        "gateway_id": origin.gateway_id,
        "updated_ms": now_ms(),
        "alerts": alerts,
    }))
    .unwrap_or_default()
}
