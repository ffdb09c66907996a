//! The native sensor protocol (our own firmware): pure decoding from (topic, payload) to
//! an [`Event`] or a precise [`DecodeError`]. No I/O, no clock: the caller passes `now_ms`.
//!
//! Topics: `{prefix}/{estate_id}/{device_kind}/{device_id}/event` and `…/heartbeat`.
//! Event body: `{"code":"SMOKE.ALARM","state":"active","ts":"2026-11-26T20:00:00Z","value":12.5,"unit":"m","seq":17}`;
//! only `code` is required. `ts` is RFC 3339 or epoch milliseconds. Unknown fields are
//! ignored so newer firmware keeps working. Heartbeat body: empty, or `{"ts":…,"battery":97}`.

use std::collections::HashMap;

use serde_json::{Map, Value};

use estate_protocols::model::{DeviceKind, Event, EventState, Reading, Source};
use estate_protocols::{rfc3339, taxonomy};

use super::decoded::{DecodeError, DecodeReason, DeviceInfo, MAX_DEVICE_ID_BYTES, MAX_UNIT_BYTES};
use super::fields::{bounded_raw, cut, json_type};

/// Everything decoding needs besides the message itself.
#[derive(Debug)]
pub struct DecodeContext<'a> {
    /// This gateway's id, stamped on every event.
    pub gateway_id: &'a str,
    /// The estate the topics must name.
    pub estate_id: &'a str,
    /// `ingest.topic_prefix`.
    pub prefix: &'a str,
    /// `ingest.max_payload`, in bytes.
    pub max_payload: usize,
    /// `ingest.raw_limit`, in bytes.
    pub raw_limit: usize,
    /// Configured native devices, by id.
    pub devices: &'a HashMap<String, DeviceInfo>,
    /// The gateway's clock when the message arrived.
    pub now_ms: i64,
    /// The id the event gets.
    pub event_id: String,
}

fn err(reason: DecodeReason, detail: impl Into<String>) -> DecodeError {
    DecodeError::new(reason, detail)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Leaf {
    Event,
    Heartbeat,
}

/// What the topic names.
struct Topic<'t> {
    kind: &'t str,
    device_id: &'t str,
    leaf: Leaf,
}

/// The body's fields.
struct Body {
    code: String,
    state: EventState,
    device_time_ms: Option<i64>,
    value: Option<Reading>,
    device_seq: Option<u64>,
}

/// Decodes one native message.
pub fn decode(topic: &str, payload: &[u8], ctx: &DecodeContext<'_>) -> Result<Event, DecodeError> {
    if payload.len() > ctx.max_payload {
        return Err(err(
            DecodeReason::TooLarge,
            format!(
                "payload of {} bytes exceeds ingest.max_payload ({} bytes)",
                payload.len(),
                ctx.max_payload
            ),
        ));
    }
    let t = parse_topic(topic, ctx)?;
    let object = parse_object(payload, t.leaf)?;
    let body = read_body(&object, t.leaf)?;
    let info = taxonomy::lookup(&body.code).ok_or_else(|| {
        err(
            DecodeReason::UnknownCode,
            format!("event code {:?} is not in the taxonomy", body.code),
        )
    })?;

    let registered = ctx.devices.get(t.device_id);
    // The config is the authority on a registered device's kind; for an unregistered one
    // the topic says it (or nothing, when the topic's kind is unknown).
    let device_kind = registered
        .map(|d| d.kind)
        .or_else(|| t.kind.parse::<DeviceKind>().ok());
    let (raw, raw_truncated) = bounded_raw(payload, ctx.raw_limit);
    Ok(Event {
        seq: 0,
        event_id: ctx.event_id.clone(),
        gateway_id: ctx.gateway_id.to_owned(),
        estate_id: ctx.estate_id.to_owned(),
        device_id: t.device_id.to_owned(),
        device_kind,
        code: body.code,
        severity: taxonomy::default_severity(info, device_kind),
        state: body.state,
        location: registered.map(|d| d.location.clone()).unwrap_or_default(),
        device_time_ms: body.device_time_ms,
        gateway_time_ms: ctx.now_ms,
        value: body.value,
        source: Source {
            protocol: "mqtt".into(),
            reference: topic.to_owned(),
        },
        raw,
        raw_truncated,
        registered: registered.is_some(),
        device_seq: body.device_seq,
        alert: None,
    })
}

/// `{prefix}/{estate_id}/{device_kind}/{device_id}/event|heartbeat`.
fn parse_topic<'t>(topic: &'t str, ctx: &DecodeContext<'_>) -> Result<Topic<'t>, DecodeError> {
    let bad = |detail: String| err(DecodeReason::BadTopic, detail);
    let rest = topic
        .strip_prefix(ctx.prefix)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(|| bad(format!("topic {topic:?} is not under {:?}", ctx.prefix)))?;
    let parts: Vec<&str> = rest.split('/').collect();
    let [estate, kind, device_id, leaf] = parts[..] else {
        return Err(bad(format!(
            "topic {topic:?} is not {}/{{estate_id}}/{{device_kind}}/{{device_id}}/event|heartbeat",
            ctx.prefix
        )));
    };
    if estate != ctx.estate_id {
        return Err(bad(format!(
            "topic {topic:?} names estate {estate:?}, this gateway serves {:?}",
            ctx.estate_id
        )));
    }
    if device_id.is_empty() {
        return Err(bad(format!("topic {topic:?} has an empty device id")));
    }
    if device_id.len() > MAX_DEVICE_ID_BYTES {
        return Err(bad(format!(
            "topic {topic:?} has a device id of {} bytes, more than {MAX_DEVICE_ID_BYTES}",
            device_id.len()
        )));
    }
    let leaf = match leaf {
        "event" => Leaf::Event,
        "heartbeat" => Leaf::Heartbeat,
        other => {
            return Err(bad(format!(
                "topic {topic:?} ends in {other:?}, expected \"event\" or \"heartbeat\""
            )))
        }
    };
    Ok(Topic {
        kind,
        device_id,
        leaf,
    })
}

/// The payload as a JSON object; an empty heartbeat is an empty object.
fn parse_object(payload: &[u8], leaf: Leaf) -> Result<Map<String, Value>, DecodeError> {
    let text = std::str::from_utf8(payload).map_err(|e| {
        err(
            DecodeReason::InvalidUtf8,
            format!(
                "payload is not UTF-8 (first bad byte at offset {})",
                e.valid_up_to()
            ),
        )
    })?;
    if text.trim().is_empty() {
        if leaf == Leaf::Event {
            return Err(err(
                DecodeReason::BadJson,
                "event payload is empty; `code` is required",
            ));
        }
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(err(
            DecodeReason::BadJson,
            format!(
                "payload is JSON {} but must be an object",
                json_type(&other)
            ),
        )),
        Err(e) => Err(err(
            DecodeReason::BadJson,
            format!("payload is not JSON: {e}"),
        )),
    }
}

fn read_body(body: &Map<String, Value>, leaf: Leaf) -> Result<Body, DecodeError> {
    let code = match leaf {
        Leaf::Heartbeat => "DEV.HEARTBEAT".to_owned(),
        Leaf::Event => match body.get("code") {
            Some(Value::String(c)) => c.clone(),
            Some(other) => return Err(wrong_type("code", "a string", other)),
            None => return Err(err(DecodeReason::BadField, "field `code` is missing")),
        },
    };
    Ok(Body {
        code,
        state: read_state(body)?,
        device_time_ms: read_ts(body)?,
        value: read_value(body, leaf)?,
        device_seq: read_seq(body)?,
    })
}

fn read_state(body: &Map<String, Value>) -> Result<EventState, DecodeError> {
    match body.get("state") {
        None | Some(Value::Null) => Ok(EventState::Active),
        Some(Value::String(s)) => s.parse().map_err(|_| {
            err(
                DecodeReason::BadField,
                format!("field `state` is {s:?}, expected \"active\" or \"cleared\""),
            )
        }),
        Some(other) => Err(wrong_type("state", "a string", other)),
    }
}

fn read_ts(body: &Map<String, Value>) -> Result<Option<i64>, DecodeError> {
    match body.get("ts") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| {
            err(
                DecodeReason::BadField,
                format!("field `ts` is {n}, expected epoch milliseconds as an integer"),
            )
        }),
        Some(Value::String(s)) => rfc3339::parse_ms(s).map(Some).ok_or_else(|| {
            err(
                DecodeReason::BadField,
                format!("field `ts` is {s:?}, expected RFC 3339 or epoch milliseconds"),
            )
        }),
        Some(other) => Err(wrong_type("ts", "a string or an integer", other)),
    }
}

/// `value` of an event, `battery` of a heartbeat, with `unit` (a heartbeat's default `%`).
fn read_value(body: &Map<String, Value>, leaf: Leaf) -> Result<Option<Reading>, DecodeError> {
    let unit = match body.get("unit") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(cut(s, MAX_UNIT_BYTES)),
        Some(other) => return Err(wrong_type("unit", "a string", other)),
    };
    let (field, default_unit) = match leaf {
        Leaf::Heartbeat => ("battery", "%"),
        Leaf::Event => ("value", ""),
    };
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(Some(Reading {
            value: n.as_f64().unwrap_or_default(),
            unit: unit.unwrap_or_else(|| default_unit.into()),
        })),
        Some(other) => Err(wrong_type(field, "a number", other)),
    }
}

fn read_seq(body: &Map<String, Value>) -> Result<Option<u64>, DecodeError> {
    match body.get("seq") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
            err(
                DecodeReason::BadField,
                format!("field `seq` is {n}, expected a non-negative integer"),
            )
        }),
        Some(other) => Err(wrong_type("seq", "an integer", other)),
    }
}

fn wrong_type(field: &str, expected: &str, got: &Value) -> DecodeError {
    err(
        DecodeReason::BadField,
        format!("field `{field}` is {}, expected {expected}", json_type(got)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use estate_protocols::model::{Location, Severity};

    fn devices() -> HashMap<String, DeviceInfo> {
        HashMap::from([(
            "smoke-1".to_owned(),
            DeviceInfo {
                kind: DeviceKind::Smoke,
                location: Location {
                    building: "1".into(),
                    ..Default::default()
                },
            },
        )])
    }

    fn run(topic: &str, payload: &[u8]) -> Result<Event, DecodeError> {
        let d = devices();
        let ctx = DecodeContext {
            gateway_id: "gw",
            estate_id: "E1",
            prefix: "estate",
            max_payload: 1024,
            raw_limit: 16,
            devices: &d,
            now_ms: 1_000,
            event_id: "id".into(),
        };
        decode(topic, payload, &ctx)
    }

    #[test]
    fn full_event_decodes_with_registry_location_and_severity() {
        let e = run(
            "estate/E1/smoke/smoke-1/event",
            br#"{"code":"SMOKE.ALARM","state":"active","ts":"2026-11-26T20:00:00.123Z","value":3.5,"unit":"dB/m","seq":17}"#,
        )
        .expect("decodes");
        assert_eq!(e.code, "SMOKE.ALARM");
        assert_eq!(e.severity, Severity::Critical);
        assert_eq!(e.state, EventState::Active);
        assert_eq!(e.device_time_ms, Some(1_795_723_200_123));
        assert_eq!(
            e.value,
            Some(Reading {
                value: 3.5,
                unit: "dB/m".into()
            })
        );
        assert_eq!(e.device_seq, Some(17));
        assert!(e.registered);
        assert_eq!(e.location.building, "1");
        assert!(e.raw_truncated, "raw is bounded to raw_limit");
        assert_eq!(e.raw.len(), 16);
    }

    #[test]
    fn only_code_is_required_and_epoch_ms_is_accepted() {
        let e = run(
            "estate/E1/gas/g-9/event",
            br#"{"code":"GAS.AL1","ts":1700000000000}"#,
        )
        .expect("decodes");
        assert_eq!(e.state, EventState::Active);
        assert_eq!(e.device_time_ms, Some(1_700_000_000_000));
        assert!(!e.registered, "unregistered devices are accepted");
        assert_eq!(e.device_kind, Some(DeviceKind::Gas));
        assert_eq!(e.severity, Severity::Major);
    }

    #[test]
    fn heartbeat_becomes_dev_heartbeat_with_battery() {
        let e = run("estate/E1/smoke/smoke-1/heartbeat", br#"{"battery":97}"#).expect("decodes");
        assert_eq!(e.code, "DEV.HEARTBEAT");
        assert_eq!(
            e.value,
            Some(Reading {
                value: 97.0,
                unit: "%".into()
            })
        );
        let e = run("estate/E1/smoke/smoke-1/heartbeat", b"").expect("empty heartbeat");
        assert_eq!(e.severity, Severity::Info);
    }

    #[test]
    fn malformed_inputs_name_the_problem() {
        let cases: &[(&str, &[u8], &str, &str)] = &[
            (
                "estate/E1/smoke/s/event",
                b"{not json",
                "bad_json",
                "not JSON",
            ),
            ("estate/E1/smoke/s/event", b"[1]", "bad_json", "an array"),
            (
                "estate/E1/smoke/s/event",
                b"{}",
                "bad_field",
                "`code` is missing",
            ),
            (
                "estate/E1/smoke/s/event",
                br#"{"code":5}"#,
                "bad_field",
                "`code` is a number",
            ),
            (
                "estate/E1/smoke/s/event",
                br#"{"code":"SMOKE.ALARMED"}"#,
                "unknown_code",
                "SMOKE.ALARMED",
            ),
            (
                "estate/E1/smoke/s/event",
                br#"{"code":"SMOKE.ALARM","state":"on"}"#,
                "bad_field",
                "`state`",
            ),
            (
                "estate/E1/smoke/s/event",
                br#"{"code":"SMOKE.ALARM","ts":"yesterday"}"#,
                "bad_field",
                "`ts`",
            ),
            (
                "estate/E1/smoke/s/event",
                br#"{"code":"SMOKE.ALARM","seq":-1}"#,
                "bad_field",
                "`seq`",
            ),
            (
                "estate/E1/smoke/s/event",
                br#"{"code":"SMOKE.ALARM","value":"high"}"#,
                "bad_field",
                "`value`",
            ),
            (
                "estate/E1/smoke/s/event",
                b"\xff\xfe{}",
                "invalid_utf8",
                "offset 0",
            ),
            ("estate/E1/smoke/s/status", b"{}", "bad_topic", "\"status\""),
            (
                "estate/E2/smoke/s/event",
                br#"{"code":"SMOKE.ALARM"}"#,
                "bad_topic",
                "\"E2\"",
            ),
            (
                "estate/E1/smoke/event",
                br#"{"code":"SMOKE.ALARM"}"#,
                "bad_topic",
                "is not",
            ),
        ];
        for (topic, payload, reason, needle) in cases {
            let e = run(topic, payload).expect_err("must fail");
            assert_eq!(e.reason.as_str(), *reason, "{topic} {payload:?}: {e}");
            assert!(e.detail.contains(needle), "{e} should mention {needle}");
        }
        let big = vec![b' '; 2000];
        assert_eq!(
            run("estate/E1/smoke/s/event", &big)
                .expect_err("too big")
                .reason,
            DecodeReason::TooLarge
        );
    }
}
