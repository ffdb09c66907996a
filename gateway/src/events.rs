//! Events the gateway raises about itself (`GW.*`).

use bytes::Bytes;

use estate_protocols::model::{DeviceKind, Event, EventState, Reading, Source};
use estate_protocols::taxonomy;

pub use estate_protocols::model::now_ms;

/// A gateway event with `code` from the taxonomy, `detail` kept as its raw JSON.
pub fn gateway_event(
    gateway_id: &str,
    estate_id: &str,
    code: &'static str,
    state: EventState,
    value: Option<Reading>,
    detail: serde_json::Value,
) -> Event {
    let severity = taxonomy::lookup(code)
        .map(|i| i.severity)
        .unwrap_or(estate_protocols::model::Severity::Major);
    Event {
        seq: 0,
        event_id: ulid::Ulid::new().to_string(),
        gateway_id: gateway_id.to_owned(),
        estate_id: estate_id.to_owned(),
        device_id: gateway_id.to_owned(),
        device_kind: Some(DeviceKind::Gateway),
        code: code.to_owned(),
        severity,
        state,
        location: Default::default(),
        device_time_ms: None,
        gateway_time_ms: now_ms(),
        value,
        source: Source {
            protocol: "gateway".into(),
            reference: code.to_ascii_lowercase(),
        },
        raw: Bytes::from(detail.to_string()),
        raw_truncated: false,
        registered: true,
        device_seq: None,
        alert: None,
    }
}
