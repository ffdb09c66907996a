//! The native sensor protocol our own firmware speaks: topics and JSON payloads.
//!
//! Pure: no I/O, no clock. Callers supply timestamps.
//!
//! - Event: `{prefix}/{estate_id}/{device_kind}/{device_id}/event`, body
//!   `{"code":"SMOKE.ALARM","state":"active","ts":"2026-11-26T20:00:00.123Z","value":12.5,"unit":"m","seq":17}`;
//!   only `code` is required.
//! - Heartbeat: `{prefix}/{estate_id}/{device_kind}/{device_id}/heartbeat`, body
//!   `{"ts":…,"battery":97}` (or empty).

use estate_protocols::model::{DeviceKind, EventState};
use serde::Serialize;

/// Topic a device publishes its events to.
pub fn event_topic(prefix: &str, estate_id: &str, kind: DeviceKind, device_id: &str) -> String {
    format!("{prefix}/{estate_id}/{}/{device_id}/event", kind.as_str())
}

/// Topic a device publishes its heartbeats to.
pub fn heartbeat_topic(prefix: &str, estate_id: &str, kind: DeviceKind, device_id: &str) -> String {
    format!(
        "{prefix}/{estate_id}/{}/{device_id}/heartbeat",
        kind.as_str()
    )
}

/// How `ts` is written on the wire; the protocol accepts both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TsFormat {
    /// `"2026-11-26T20:00:00.123Z"` (UTC, millisecond precision).
    #[default]
    Rfc3339,
    /// `1795723200123` (an integer).
    EpochMillis,
}

/// One native event message.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NativeEvent {
    /// Taxonomy code, e.g. `SMOKE.ALARM`. The only required field.
    pub code: String,
    /// `active` or `cleared`; `None` leaves it out, which the gateway reads as active.
    pub state: Option<EventState>,
    /// Device time, Unix epoch milliseconds.
    pub ts_ms: Option<i64>,
    /// A reading (in `unit`); `None` sends none.
    pub value: Option<f64>,
    /// The reading's unit (`"%LEL"`, `"m"`, …); `None` sends none.
    pub unit: Option<String>,
    /// The device's own message counter.
    pub seq: Option<u64>,
}

/// Field order on the wire follows the protocol description: code, state, ts, value, unit, seq.
#[derive(Serialize)]
struct EventBody<'a> {
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ts: Option<Ts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Ts {
    Text(String),
    Millis(i64),
}

impl Ts {
    fn new(ms: i64, format: TsFormat) -> Ts {
        match format {
            TsFormat::Rfc3339 => rfc3339_millis(ms).map_or(Ts::Millis(ms), Ts::Text),
            TsFormat::EpochMillis => Ts::Millis(ms),
        }
    }
}

impl NativeEvent {
    /// A bare event: just a code, no optional fields.
    pub fn new(code: impl Into<String>) -> Self {
        NativeEvent {
            code: code.into(),
            ..NativeEvent::default()
        }
    }

    /// The JSON body with `ts` in RFC 3339.
    pub fn to_json(&self) -> Vec<u8> {
        self.to_json_with(TsFormat::Rfc3339)
    }

    /// The JSON body with `ts` in the given format.
    pub fn to_json_with(&self, ts_format: TsFormat) -> Vec<u8> {
        let body = EventBody {
            code: &self.code,
            state: self.state.map(|s| match s {
                EventState::Active => "active",
                EventState::Cleared => "cleared",
            }),
            ts: self.ts_ms.map(|ms| Ts::new(ms, ts_format)),
            // JSON has no NaN or infinity; a reading that is not a number is left out.
            value: self.value.filter(|v| v.is_finite()),
            unit: self.unit.as_deref(),
            seq: self.seq,
        };
        // Serializing a struct of strings and numbers into a Vec cannot fail.
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

/// One native heartbeat message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NativeHeartbeat {
    /// Device time, Unix epoch milliseconds; `None` sends none.
    pub ts_ms: Option<i64>,
    /// Battery charge, percent.
    pub battery: Option<u8>,
}

impl NativeHeartbeat {
    /// The JSON body (`ts` in RFC 3339), or an empty body when no field is set.
    pub fn to_json(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Body {
            #[serde(skip_serializing_if = "Option::is_none")]
            ts: Option<Ts>,
            #[serde(skip_serializing_if = "Option::is_none")]
            battery: Option<u8>,
        }
        if self.ts_ms.is_none() && self.battery.is_none() {
            return Vec::new();
        }
        let body = Body {
            ts: self.ts_ms.map(|ms| Ts::new(ms, TsFormat::Rfc3339)),
            battery: self.battery,
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

/// `2026-11-26T20:00:00.123Z`; `None` when `ms` is outside what `time` can represent.
pub fn rfc3339_millis(ms: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    Some(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    ))
}

pub use estate_protocols::model::now_ms;

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-26T20:00:00.123Z
    const TS: i64 = 1_795_723_200_123;

    fn text(b: Vec<u8>) -> String {
        String::from_utf8(b).expect("utf-8")
    }

    #[test]
    fn topics_use_the_snake_case_kind() {
        assert_eq!(
            event_topic("estate", "e1", DeviceKind::WaterLeak, "leak-b2-pump"),
            "estate/e1/water_leak/leak-b2-pump/event"
        );
        assert_eq!(
            heartbeat_topic("estate", "e1", DeviceKind::Smoke, "smoke-1-1-3"),
            "estate/e1/smoke/smoke-1-1-3/heartbeat"
        );
        assert_eq!(
            event_topic(
                "x/y",
                "31011500000000000001",
                DeviceKind::AccessControl,
                "door-1"
            ),
            "x/y/31011500000000000001/access_control/door-1/event"
        );
    }

    #[test]
    fn full_event_matches_the_protocol_example_exactly() {
        let e = NativeEvent {
            code: "SMOKE.ALARM".into(),
            state: Some(EventState::Active),
            ts_ms: Some(TS),
            value: Some(12.5),
            unit: Some("m".into()),
            seq: Some(17),
        };
        assert_eq!(
            text(e.to_json()),
            r#"{"code":"SMOKE.ALARM","state":"active","ts":"2026-11-26T20:00:00.123Z","value":12.5,"unit":"m","seq":17}"#
        );
        assert_eq!(
            text(e.to_json_with(TsFormat::EpochMillis)),
            r#"{"code":"SMOKE.ALARM","state":"active","ts":1795723200123,"value":12.5,"unit":"m","seq":17}"#
        );
    }

    #[test]
    fn optional_fields_are_left_out() {
        assert_eq!(
            text(NativeEvent::new("ACS.OPEN").to_json()),
            r#"{"code":"ACS.OPEN"}"#
        );
        let e = NativeEvent {
            state: Some(EventState::Cleared),
            seq: Some(1),
            value: Some(f64::NAN),
            ..NativeEvent::new("LEAK.ALARM")
        };
        assert_eq!(
            text(e.to_json()),
            r#"{"code":"LEAK.ALARM","state":"cleared","seq":1}"#
        );
    }

    #[test]
    fn heartbeat_body() {
        let hb = NativeHeartbeat {
            ts_ms: Some(TS),
            battery: Some(97),
        };
        assert_eq!(
            text(hb.to_json()),
            r#"{"ts":"2026-11-26T20:00:00.123Z","battery":97}"#
        );
        assert!(NativeHeartbeat::default().to_json().is_empty());
    }

    #[test]
    fn timestamps_keep_millisecond_zeros() {
        assert_eq!(
            rfc3339_millis(0).as_deref(),
            Some("1970-01-01T00:00:00.000Z")
        );
        assert_eq!(
            rfc3339_millis(1_005).as_deref(),
            Some("1970-01-01T00:00:01.005Z")
        );
    }
}
