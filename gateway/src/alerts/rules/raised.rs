//! The events the rules raise into the store (`ACS.HELD_OPEN`, `DEV.OFFLINE`,
//! `DEV.ONLINE`, `FIRE.CONFIRMED`): from the gateway, with the rule's detail as raw JSON.

use bytes::Bytes;

use estate_protocols::model::{DeviceKind, Event, EventState, Location, Severity, Source};
use estate_protocols::taxonomy;

use super::Engine;

impl Engine {
    /// An event about a device (raised by the rules), with the device's kind and place.
    pub(super) fn device_event(
        &self,
        device: &str,
        code: &'static str,
        state: EventState,
        detail: serde_json::Value,
        now_ms: i64,
    ) -> Event {
        let st = self.devices.state(device);
        let kind = st.and_then(|s| s.kind);
        let mut e = self.gateway_raised(code, state, detail, now_ms);
        e.device_id = device.to_owned();
        e.device_kind = kind;
        e.location = st.map(|s| s.location.clone()).unwrap_or_default();
        e.registered = st.is_some_and(|s| s.registered);
        if let Some(info) = taxonomy::lookup(code) {
            e.severity = taxonomy::default_severity(info, kind);
        }
        e
    }

    /// An event of the gateway itself (a correlation's finding).
    pub(super) fn gateway_raised(
        &self,
        code: &str,
        state: EventState,
        detail: serde_json::Value,
        now_ms: i64,
    ) -> Event {
        let severity = taxonomy::lookup(code).map_or(Severity::Major, |i| i.severity);
        Event {
            seq: 0,
            event_id: ulid::Ulid::new().to_string(),
            gateway_id: self.gateway_id.clone(),
            estate_id: self.estate_id.clone(),
            device_id: self.gateway_id.clone(),
            device_kind: Some(DeviceKind::Gateway),
            code: code.to_owned(),
            severity,
            state,
            location: Location::default(),
            device_time_ms: None,
            gateway_time_ms: now_ms,
            value: None,
            source: Source {
                protocol: "gateway".into(),
                reference: "alerts".into(),
            },
            raw: Bytes::from(detail.to_string()),
            raw_truncated: false,
            registered: true,
            device_seq: None,
            alert: None,
        }
    }
}
