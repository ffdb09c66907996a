//! Golden tests per format with payloads as the projects document them, the state
//! semantics (change-only, incidents, repeats, silence clears, last wills), and property
//! tests: no decoder panics on arbitrary input, and every error names its format.

use estate_config::Config;
use estate_protocols::model::{DeviceKind, Event, EventState, Severity};
use proptest::prelude::*;

use super::*;

const CONFIG: &str = r#"
[gateway]
id = "gw-1"
estate_id = "E1"

[[ingest.sources]]
format = "native"
[[ingest.sources]]
format = "zigbee2mqtt"
name = "zigbee"
[[ingest.sources]]
format = "frigate"
[[ingest.sources]]
format = "camera-isapi-json"
name = "hik"
clear_after = "5s"
[[ingest.sources]]
format = "access-control-json"
name = "acs"
[[ingest.sources]]
format = "nbiot-smoke-json"
name = "nbiot"
[[ingest.sources]]
format = "json-map"
name = "lora"
topics = ["lora/+/up", "lora/+/status"]
[ingest.sources.map]
device_id = "/deviceInfo/devEui"
code_field = "/object/alarm"
codes = { leak = "LEAK.ALARM", tamper = "DEV.TAMPER" }
state_field = "/object/active"
time_field = "/time"
value_field = "/object/distance"
seq_field = "/fCnt"
unit = "m"
availability_topic = "lora/+/status"

[[devices]]
id = "leak-b1-101"
kind = "water_leak"
location = { building = "1", room = "101" }
source = { name = "zigbee", id = "b1-101 kitchen leak" }

[[devices]]
id = "cam-gate"
kind = "camera"
location = { zone = "north gate" }
source = { name = "frigate", id = "north_gate" }

[[devices]]
id = "cam-b2"
kind = "camera"
location = { building = "2" }
source = { name = "hik", id = "44:19:b6:6d:24:85/1" }

[[devices]]
id = "door-b3-main"
kind = "access_control"
location = { building = "3", zone = "lobby" }
source = { name = "acs", id = "ctl-01/1" }

[[devices]]
id = "smoke-b4-1201"
kind = "smoke"
location = { building = "4", floor = "12", room = "1201" }
source = { name = "nbiot", id = "868120300000001" }
"#;

fn sources() -> Sources {
    let cfg = Config::from_toml_str(CONFIG, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    Sources::new(&cfg)
}

fn decode(s: &mut Sources, topic: &str, payload: &str, now: i64) -> Vec<Event> {
    s.decode(topic, payload.as_bytes(), now)
        .unwrap_or_else(|e| panic!("{topic} {payload}: {e}"))
        .events
}

/// (device_id, code, state) of each event.
fn summary(events: &[Event]) -> Vec<(String, String, EventState)> {
    events
        .iter()
        .map(|e| (e.device_id.clone(), e.code.clone(), e.state))
        .collect()
}

fn one(device: &str, code: &str, state: EventState) -> Vec<(String, String, EventState)> {
    vec![(device.to_owned(), code.to_owned(), state)]
}

use EventState::{Active, Cleared};

// ---- zigbee2mqtt ---------------------------------------------------------------------

/// Aqara SJCGQ11LM as zigbee2mqtt's device page exposes it.
const AQARA_DRY: &str = r#"{"battery":100,"battery_low":false,"device_temperature":25,"linkquality":120,"power_outage_count":3,"tamper":false,"voltage":3005,"water_leak":false}"#;
const AQARA_WET: &str = r#"{"battery":100,"battery_low":false,"device_temperature":25,"linkquality":117,"power_outage_count":3,"tamper":false,"voltage":3005,"water_leak":true}"#;

#[test]
fn zigbee_full_state_reports_become_events_on_change_only() {
    let mut s = sources();
    let t = "zigbee2mqtt/b1-101 kitchen leak";
    // Baseline: all inactive → only a heartbeat (with the battery).
    let e = decode(&mut s, t, AQARA_DRY, 1);
    assert_eq!(summary(&e), one("leak-b1-101", "DEV.HEARTBEAT", Active));
    assert_eq!(e[0].value.as_ref().map(|v| v.value), Some(100.0));
    // Same state again (linkquality differs): heartbeat, no alarm.
    assert_eq!(decode(&mut s, t, AQARA_DRY, 2)[0].code, "DEV.HEARTBEAT");
    // false → true: LEAK.ALARM active, registered, located.
    let e = decode(&mut s, t, AQARA_WET, 3);
    assert_eq!(summary(&e), one("leak-b1-101", "LEAK.ALARM", Active));
    assert_eq!(e[0].severity, Severity::Major);
    assert_eq!(e[0].location.building, "1");
    assert_eq!(e[0].device_kind, Some(DeviceKind::WaterLeak));
    assert!(e[0].registered);
    assert_eq!(e[0].source.reference, format!("zigbee:{t}"));
    // Repeated full state while wet: no duplicate alarm.
    assert_eq!(decode(&mut s, t, AQARA_WET, 4)[0].code, "DEV.HEARTBEAT");
    // true → false: cleared.
    assert_eq!(
        summary(&decode(&mut s, t, AQARA_DRY, 5)),
        one("leak-b1-101", "LEAK.ALARM", Cleared)
    );
}

#[test]
fn zigbee_two_changes_in_one_report_are_two_events_and_kind_picks_codes() {
    let mut s = sources();
    let t = "zigbee2mqtt/b2 hall smoke";
    decode(
        &mut s,
        t,
        r#"{"smoke":false,"battery_low":false,"tamper":false,"battery":80}"#,
        1,
    );
    let e = decode(
        &mut s,
        t,
        r#"{"smoke":true,"battery_low":true,"tamper":false,"battery":9}"#,
        2,
    );
    assert_eq!(
        summary(&e),
        vec![
            (
                "zigbee.b2_hall_smoke".to_owned(),
                "SMOKE.ALARM".to_owned(),
                Active
            ),
            (
                "zigbee.b2_hall_smoke".to_owned(),
                "SMOKE.LOW_BATT".to_owned(),
                Active
            ),
        ]
    );
    assert!(e
        .iter()
        .all(|e| !e.registered && e.device_kind == Some(DeviceKind::Smoke)));
    assert_eq!(e[0].severity, Severity::Critical);
    assert_eq!(e[1].value.as_ref().map(|v| v.value), Some(9.0));
    // A leak sensor's tamper and battery are DEV.* codes.
    let t = "zigbee2mqtt/b1-101 kitchen leak";
    decode(&mut s, t, AQARA_DRY, 3);
    let e = decode(
        &mut s,
        t,
        &AQARA_DRY.replace(r#""tamper":false"#, r#""tamper":true"#),
        4,
    );
    assert_eq!(summary(&e), one("leak-b1-101", "DEV.TAMPER", Active));
}

#[test]
fn zigbee_first_report_after_restart_raises_what_is_active() {
    let mut s = sources();
    let e = decode(&mut s, "zigbee2mqtt/b1-101 kitchen leak", AQARA_WET, 1);
    assert_eq!(summary(&e), one("leak-b1-101", "LEAK.ALARM", Active));
}

#[test]
fn zigbee_availability_and_bridge_last_will() {
    let mut s = sources();
    let t = "zigbee2mqtt/b1-101 kitchen leak/availability";
    // Retained "online" on subscribe: baseline, nothing to say.
    assert!(decode(&mut s, t, r#"{"state":"online"}"#, 1).is_empty());
    assert_eq!(
        summary(&decode(&mut s, t, r#"{"state":"offline"}"#, 2)),
        one("leak-b1-101", "DEV.OFFLINE", Active)
    );
    assert!(decode(&mut s, t, r#"{"state":"offline"}"#, 3).is_empty());
    // Legacy plain-text availability.
    assert_eq!(
        summary(&decode(&mut s, t, "online", 4)),
        one("leak-b1-101", "DEV.ONLINE", Active)
    );
    let e = decode(
        &mut s,
        "zigbee2mqtt/bridge/state",
        r#"{"state":"offline"}"#,
        5,
    );
    assert_eq!(summary(&e), one("zigbee.bridge", "DEV.OFFLINE", Active));
    // Bridge chatter and other clients' commands are not device reports.
    assert!(decode(&mut s, "zigbee2mqtt/bridge/devices", "[]", 6).is_empty());
    assert!(decode(&mut s, "zigbee2mqtt/b1-101 kitchen leak/set", "{}", 7).is_empty());
}

// ---- Frigate -------------------------------------------------------------------------

/// Frigate's MQTT documentation, `frigate/events` (trimmed of snapshot details).
fn frigate_event(kind: &str, id: &str, label: &str) -> String {
    format!(
        r#"{{"type":"{kind}","before":{{"id":"{id}","camera":"north_gate","frame_time":1607123961.837752,"label":"{label}","sub_label":null,"top_score":0.958984375,"false_positive":false,"start_time":1607123955.475377,"end_time":null,"score":0.7890625,"box":[424,500,536,712],"area":23744,"region":[264,450,667,853],"current_zones":["driveway"],"entered_zones":["yard","driveway"],"has_snapshot":false,"has_clip":false,"active":true,"stationary":false}},"after":{{"id":"{id}","camera":"north_gate","frame_time":1607123962.082975,"label":"{label}","sub_label":null,"top_score":0.958984375,"false_positive":false,"start_time":1607123955.475377,"end_time":{end},"score":0.87890625,"box":[432,496,544,854],"area":40176,"region":[218,440,693,915],"current_zones":["yard","driveway"],"entered_zones":["yard","driveway"],"has_snapshot":false,"has_clip":false,"active":true,"stationary":false}}}}"#,
        end = if kind == "end" {
            "1607123967.5"
        } else {
            "null"
        }
    )
}

#[test]
fn frigate_one_incident_per_event_id_with_zones() {
    let mut s = sources();
    let id = "1607123955.475377-mxklsc";
    let e = decode(
        &mut s,
        "frigate/events",
        &frigate_event("new", id, "person"),
        1,
    );
    assert_eq!(summary(&e), one("cam-gate", "VID.INTRUSION", Active));
    assert_eq!(e[0].location.zone, "north gate / yard, driveway");
    assert_eq!(e[0].device_time_ms, Some(1_607_123_955_475));
    assert_eq!(e[0].severity, Severity::Major);
    for now in 2..5 {
        assert!(decode(
            &mut s,
            "frigate/events",
            &frigate_event("update", id, "person"),
            now
        )
        .is_empty());
    }
    let e = decode(
        &mut s,
        "frigate/events",
        &frigate_event("end", id, "person"),
        6,
    );
    assert_eq!(summary(&e), one("cam-gate", "VID.INTRUSION", Cleared));
    assert_eq!(e[0].device_time_ms, Some(1_607_123_967_500));
    // A car is motion (information), not an intrusion.
    let e = decode(
        &mut s,
        "frigate/events",
        &frigate_event("new", "x-2", "car"),
        7,
    );
    assert_eq!(
        (e[0].code.as_str(), e[0].severity),
        ("VID.MOTION", Severity::Info)
    );
    // The NVR's last will.
    let e = decode(&mut s, "frigate/available", "offline", 8);
    assert_eq!(summary(&e), one("frigate.nvr", "DEV.OFFLINE", Active));
    // Other Frigate topics are not incidents.
    assert!(s.decode("frigate/events", b"", 9).is_err());
}

#[test]
fn frigate_update_for_an_unseen_id_raises_it_once() {
    let mut s = sources();
    let e = decode(
        &mut s,
        "frigate/events",
        &frigate_event("update", "r-1", "person"),
        1,
    );
    assert_eq!(summary(&e), one("cam-gate", "VID.INTRUSION", Active));
    assert!(decode(
        &mut s,
        "frigate/events",
        &frigate_event("update", "r-1", "person"),
        2
    )
    .is_empty());
}

// ---- camera ISAPI JSON ---------------------------------------------------------------

/// Hikvision ISAPI event notification, JSON form (as in the ISAPI developer guide).
fn isapi(event_type: &str, state: &str) -> String {
    format!(
        r#"{{"ipAddress":"172.6.64.7","portNo":80,"protocol":"HTTP","macAddress":"44:19:b6:6d:24:85","channelID":1,"dateTime":"2026-11-26T20:00:08+08:00","activePostCount":1,"eventType":"{event_type}","eventState":"{state}","eventDescription":"{event_type} alarm","channelName":"Camera 01"}}"#
    )
}

#[test]
fn isapi_repeats_fold_and_silence_clears() {
    let mut s = sources();
    let t = "isapi/cam-b2";
    let e = decode(&mut s, t, &isapi("fielddetection", "active"), 0);
    assert_eq!(summary(&e), one("cam-b2", "VID.INTRUSION", Active));
    assert_eq!(e[0].device_time_ms, Some(1_795_694_408_000));
    // The camera repeats about once a second: folded, no events.
    for now in [1_000, 2_000, 3_000] {
        assert!(decode(&mut s, t, &isapi("fielddetection", "active"), now).is_empty());
        assert!(s.tick(now + 500).events.is_empty());
    }
    // 5 s after the last repeat: cleared.
    assert!(s.tick(7_999).events.is_empty());
    let e = s.tick(8_000).events;
    assert_eq!(summary(&e), one("cam-b2", "VID.INTRUSION", Cleared));
    assert_eq!(e[0].source.reference, "hik:silence");
    assert!(s.tick(20_000).events.is_empty(), "cleared once");
    // A new burst is a new incident.
    assert_eq!(
        decode(&mut s, t, &isapi("fielddetection", "active"), 30_000).len(),
        1
    );
}

#[test]
fn isapi_inactive_clears_or_is_a_keepalive_and_momentary_codes_end_silently() {
    let mut s = sources();
    let t = "isapi/cam-b2";
    assert_eq!(
        summary(&decode(&mut s, t, &isapi("videoloss", "inactive"), 0)),
        one("cam-b2", "DEV.HEARTBEAT", Active)
    );
    decode(&mut s, t, &isapi("tamperdetection", "active"), 0);
    assert_eq!(
        summary(&decode(&mut s, t, &isapi("tamperdetection", "inactive"), 1)),
        one("cam-b2", "VID.TAMPER", Cleared)
    );
    let e = decode(&mut s, t, &isapi("linedetection", "active"), 2);
    assert_eq!(summary(&e), one("cam-b2", "VID.LINE_CROSS", Active));
    assert!(
        s.tick(10_000).events.is_empty(),
        "a line crossing has no end to report"
    );
    assert_eq!(
        decode(&mut s, t, &isapi("VMD", "active"), 11_000)[0].code,
        "VID.MOTION"
    );
}

// ---- access control ------------------------------------------------------------------

#[test]
fn access_control_sdk_codes_map_to_the_taxonomy() {
    let mut s = sources();
    let cases = [
        (
            "0x1b",
            "ACS.FORCED_OPEN",
            Severity::Critical,
            "door-b3-main",
        ),
        ("0x1c", "ACS.HELD_OPEN", Severity::Minor, "door-b3-main"),
        ("0x09", "ACS.INVALID_CRED", Severity::Info, "door-b3-main"),
        ("0x06", "ACS.INVALID_CRED", Severity::Info, "door-b3-main"),
        ("0x0a", "ACS.INVALID_CRED", Severity::Info, "door-b3-main"),
        ("0x85", "ACS.TAILGATE", Severity::Minor, "door-b3-main"),
        ("0x40a", "ACS.DURESS", Severity::Critical, "door-b3-main"),
        ("0x406", "ACS.TAMPER", Severity::Major, "door-b3-main"),
        ("0x404", "ACS.TAMPER", Severity::Major, "acs.ctl-01"),
        ("0x01", "DEV.HEARTBEAT", Severity::Info, "door-b3-main"),
    ];
    for (sdk, code, severity, device) in cases {
        let payload = format!(
            r#"{{"controller":"ctl-01","door":1,"code":"{sdk}","card":"3081234567","time":"2026-11-26T20:00:00+08:00"}}"#
        );
        let e = decode(&mut s, "acs/ctl-01/event", &payload, 1);
        assert_eq!(
            (e[0].code.as_str(), e[0].severity, e[0].device_id.as_str()),
            (code, severity, device),
            "{sdk}"
        );
    }
    // Decimal codes too.
    let e = decode(
        &mut s,
        "acs/ctl-01/event",
        r#"{"controller":"ctl-01","door":1,"code":27}"#,
        1,
    );
    assert_eq!(e[0].code, "ACS.FORCED_OPEN");
    assert_eq!(e[0].location.zone, "lobby");
    let e = decode(&mut s, "acs/ctl-01/status", "offline", 2);
    assert_eq!(summary(&e), one("acs.ctl-01", "DEV.OFFLINE", Active));
}

// ---- NB-IoT smoke --------------------------------------------------------------------

#[test]
fn nbiot_state_codes_with_folding_and_normal_clearing() {
    let mut s = sources();
    let t = "nbiot/868120300000001";
    let msg = |state: u32| {
        format!(r#"{{"imei":"868120300000001","state":{state},"battery":87,"ts":1764187200000}}"#)
    };
    assert_eq!(
        summary(&decode(&mut s, t, &msg(7), 1)),
        one("smoke-b4-1201", "DEV.HEARTBEAT", Active)
    );
    let e = decode(&mut s, t, &msg(1), 2);
    assert_eq!(summary(&e), one("smoke-b4-1201", "SMOKE.ALARM", Active));
    assert_eq!(
        (e[0].severity, e[0].location.room.as_str()),
        (Severity::Critical, "1201")
    );
    assert_eq!(e[0].device_time_ms, Some(1_764_187_200_000));
    assert!(
        decode(&mut s, t, &msg(1), 3).is_empty(),
        "a repeated alarm folds"
    );
    assert_eq!(decode(&mut s, t, &msg(2), 4)[0].code, "SMOKE.SILENCED");
    assert_eq!(
        summary(&decode(&mut s, t, &msg(7), 5)),
        one("smoke-b4-1201", "SMOKE.ALARM", Cleared)
    );
    for (state, code, st) in [
        (4, "SMOKE.LOW_BATT", Active),
        (5, "SMOKE.FAULT", Active),
        (10, "SMOKE.TAMPER", Active),
        (11, "SMOKE.TAMPER", Cleared),
        (12, "DEV.ONLINE", Active),
        (14, "SMOKE.TEST", Active),
    ] {
        assert_eq!(
            summary(&decode(&mut s, t, &msg(state), 6)),
            one("smoke-b4-1201", code, st),
            "{state}"
        );
    }
    let e = decode(&mut s, t, &msg(7), 7);
    assert_eq!(
        summary(&e),
        vec![
            (
                "smoke-b4-1201".to_owned(),
                "SMOKE.FAULT".to_owned(),
                Cleared
            ),
            (
                "smoke-b4-1201".to_owned(),
                "SMOKE.LOW_BATT".to_owned(),
                Cleared
            ),
        ]
    );
}

// ---- json-map ------------------------------------------------------------------------

#[test]
fn json_map_reads_the_configured_fields() {
    let mut s = sources();
    let up = r#"{"deviceInfo":{"devEui":"a84041000181c4e1"},"fCnt":41,"time":"2026-11-26T20:00:00Z","object":{"alarm":"leak","active":1,"distance":3.5}}"#;
    let e = decode(&mut s, "lora/a84041000181c4e1/up", up, 1);
    assert_eq!(
        summary(&e),
        one("lora.a84041000181c4e1", "LEAK.ALARM", Active)
    );
    assert_eq!(
        e[0].value.as_ref().map(|v| (v.value, v.unit.as_str())),
        Some((3.5, "m"))
    );
    assert_eq!(e[0].device_time_ms, Some(1_795_723_200_000));
    assert_eq!(e[0].device_kind, Some(DeviceKind::WaterLeak));
    assert_eq!(e[0].device_seq, Some(41), "the device's counter is kept");
    let e = decode(
        &mut s,
        "lora/a84041000181c4e1/up",
        &up.replace(r#""active":1"#, r#""active":"normal""#),
        2,
    );
    assert_eq!(e[0].state, Cleared);
    let e = decode(
        &mut s,
        "lora/a84041000181c4e1/up",
        r#"{"deviceInfo":{"devEui":"a84041000181c4e1"},"object":{}}"#,
        3,
    );
    assert_eq!(e[0].code, "DEV.HEARTBEAT");
    assert_eq!(
        e[0].device_seq, None,
        "a message without a counter has none"
    );
    let e = decode(&mut s, "lora/a84041000181c4e1/status", "offline", 4);
    assert_eq!(
        summary(&e),
        one("lora.a84041000181c4e1", "DEV.OFFLINE", Active)
    );
}

// ---- errors name the format and the field --------------------------------------------

#[test]
fn malformed_payloads_name_format_and_field() {
    let mut s = sources();
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "zigbee2mqtt/x",
            r#"{"water_leak":"yes"}"#,
            "bad_field",
            r#"zigbee2mqtt: field "water_leak": expected a boolean, found "yes""#,
        ),
        (
            "zigbee2mqtt/x",
            "{",
            "bad_json",
            "zigbee2mqtt: payload is not JSON",
        ),
        (
            "zigbee2mqtt/x/availability",
            r#"{"state":"maybe"}"#,
            "bad_field",
            r#"zigbee2mqtt: field "state""#,
        ),
        (
            "frigate/events",
            r#"{"type":"new","after":{"camera":"c","label":"person"}}"#,
            "bad_field",
            r#"frigate: field "after.id" is missing"#,
        ),
        (
            "frigate/events",
            r#"{"type":"begin","after":{"id":"1","camera":"c","label":"person"}}"#,
            "bad_field",
            r#"frigate: field "type""#,
        ),
        (
            "isapi/c",
            r#"{"macAddress":"m","eventType":"linedetection","eventState":"on"}"#,
            "bad_field",
            r#"camera-isapi-json: field "eventState""#,
        ),
        (
            "isapi/c",
            r#"{"macAddress":"m","eventType":"facedetection","eventState":"active"}"#,
            "bad_field",
            r#"camera-isapi-json: field "eventType""#,
        ),
        (
            "acs/c/event",
            r#"{"controller":"c","door":1,"code":"0xzz"}"#,
            "bad_field",
            r#"access-control-json: field "code""#,
        ),
        (
            "acs/c/event",
            r#"{"door":1,"code":"0x1b"}"#,
            "bad_field",
            r#"access-control-json: field "controller" is missing"#,
        ),
        (
            "nbiot/1",
            r#"{"imei":"1","state":3}"#,
            "bad_field",
            r#"nbiot-smoke-json: field "state": unknown state code 3"#,
        ),
        (
            "nbiot/1",
            r#"{"imei":"1","state":"alarm"}"#,
            "bad_field",
            r#"nbiot-smoke-json: field "state""#,
        ),
        (
            "lora/x/up",
            r#"{"deviceInfo":{"devEui":"x"},"object":{"alarm":"fire"}}"#,
            "bad_field",
            r#"json-map: field "/object/alarm": value "fire" is not in the code table"#,
        ),
        (
            "lora/x/up",
            r#"{"object":{"alarm":"leak"}}"#,
            "bad_field",
            r#"json-map: field "/deviceInfo/devEui" is missing"#,
        ),
        (
            "lora/x/up",
            r#"{"deviceInfo":{"devEui":"x"},"fCnt":-1,"object":{"alarm":"leak"}}"#,
            "bad_field",
            r#"json-map: field "/fCnt": expected a non-negative integer, found a number -1"#,
        ),
        (
            "lora/x/up",
            r#"{"deviceInfo":{"devEui":"x"},"fCnt":"7","object":{"alarm":"leak"}}"#,
            "bad_field",
            r#"json-map: field "/fCnt": expected a non-negative integer"#,
        ),
        (
            "lora/x/up",
            "\u{1}",
            "bad_json",
            "json-map: payload is not JSON",
        ),
    ];
    for (topic, payload, reason, needle) in cases {
        let e = s.decode(topic, payload.as_bytes(), 1).expect_err(payload);
        assert_eq!(e.reason.as_str(), *reason, "{topic} {payload}: {e}");
        assert!(e.detail.contains(needle), "{e}\nshould contain\n{needle}");
    }
    let e = s.decode("zigbee2mqtt/x", b"\xff{}", 1).expect_err("utf8");
    assert_eq!(
        (e.reason.as_str(), e.detail.starts_with("zigbee2mqtt: ")),
        ("invalid_utf8", true)
    );
}

#[test]
fn without_sources_the_native_format_is_read_as_before() {
    let cfg = Config::from_toml_str(
        "[gateway]\nid = \"gw\"\nestate_id = \"E1\"\n[[devices]]\nid = \"s1\"\nkind = \"smoke\"\n",
        "t.toml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut s = Sources::new(&cfg);
    assert_eq!(
        s.filters(),
        vec!["estate/E1/+/+/event", "estate/E1/+/+/heartbeat"]
    );
    let e = decode(
        &mut s,
        "estate/E1/smoke/s1/event",
        r#"{"code":"SMOKE.ALARM"}"#,
        1,
    );
    assert_eq!((e[0].device_id.as_str(), e[0].registered), ("s1", true));
    assert_eq!(s.tick_every_ms(), None);
    assert!(s.decode("zigbee2mqtt/x", b"{}", 1).is_err());
}

#[test]
fn unregistered_ids_are_sanitised_and_stable() {
    assert_eq!(
        unregistered_device_id("zigbee", "b2 hall/smoke#1"),
        "zigbee.b2_hall_smoke_1"
    );
    assert_eq!(
        unregistered_device_id("hik", "44:19:b6:6d:24:85/1"),
        "hik.44_19_b6_6d_24_85_1"
    );
    assert_eq!(unregistered_device_id("z", &"x".repeat(300)).len(), 128);
}

// ---- properties ----------------------------------------------------------------------

const TOPICS: &[&str] = &[
    "zigbee2mqtt/dev",
    "zigbee2mqtt/dev/availability",
    "zigbee2mqtt/bridge/state",
    "frigate/events",
    "frigate/available",
    "isapi/cam",
    "acs/ctl/event",
    "acs/ctl/status",
    "nbiot/1",
    "lora/x/up",
    "lora/x/status",
];

// ---- limits (regressions from the fuzz targets in fuzz/) ----------------------------

/// Fuzz target `native`: a 700-byte topic made a 1.5 KiB event with no raw bytes (device
/// id and reference both carry the topic), above the 1 KiB that `ingest.raw_limit` leaves
/// for an event's other fields in a stored record and an uplink batch. Now the longest
/// topic, device id and unit accepted still fit, and one byte more is dead-lettered.
#[test]
fn events_fit_the_room_beside_their_raw_bytes() {
    use estate_protocols::pb;
    use prost::Message;
    let mut s = sources();
    let raw_limit = 2048; // the default `ingest.raw_limit`
    let device = "d".repeat(MAX_DEVICE_ID_BYTES);
    let kind = "k".repeat(MAX_TOPIC_BYTES - "estate/E1///event".len() - device.len());
    let topic = format!("estate/E1/{kind}/{device}/event");
    assert_eq!(topic.len(), MAX_TOPIC_BYTES);
    let payload = format!(
        r#"{{"code":"SMOKE.ALARM","value":1.5,"unit":"{}","seq":1,"pad":"{}"}}"#,
        "µ".repeat(2000),
        "x".repeat(4000)
    );
    let events = decode(&mut s, &topic, &payload, 0);
    let e = &events[0];
    assert_eq!(e.device_id, device);
    let unit = &e.value.as_ref().expect("value").unit;
    assert!(
        unit.len() <= MAX_UNIT_BYTES && unit.ends_with('…'),
        "{unit}"
    );
    assert!(e.raw_truncated && e.raw.len() == raw_limit);
    let len = pb::Event::from(e).encoded_len();
    assert!(len <= raw_limit + 1024, "{len} bytes");

    let longer = format!("estate/E1/{kind}k/{device}/event");
    let err = s
        .decode(&longer, payload.as_bytes(), 0)
        .expect_err("too long");
    assert_eq!(err.reason, DecodeReason::BadTopic);
    assert!(err.detail.contains("longer than 256 bytes"), "{err}");
    let long_id = format!("estate/E1/smoke/{device}d/event");
    let err = s
        .decode(&long_id, payload.as_bytes(), 0)
        .expect_err("id too long");
    assert_eq!(err.reason, DecodeReason::BadTopic);
    assert!(err.detail.contains("more than 128"), "{err}");

    // Frigate zone names come from the payload: cut, like the camera's id.
    let zones: Vec<String> = (0..40)
        .map(|i| format!("zone-{i}-{}", "z".repeat(60)))
        .collect();
    let body = serde_json::json!({"type": "new", "after": {
        "id": "e1", "camera": "c".repeat(2000), "label": "person", "entered_zones": zones}});
    let events = decode(&mut s, "frigate/events", &body.to_string(), 0);
    let e = &events[0];
    assert!(
        e.location.zone.len() <= MAX_ZONE_BYTES,
        "{}",
        e.location.zone.len()
    );
    assert!(e.device_id.len() <= MAX_DEVICE_ID_BYTES);
    assert!(pb::Event::from(e).encoded_len() <= raw_limit + 1024);
}

/// Fuzz targets `frigate` and `native`: a reason quotes the topic or the payload, escaped
/// (6 bytes per control character), so a dead letter of a hostile message reached
/// megabytes, far above `store.record_max_bytes` and sled's blob threshold. Its topic
/// and reason are now cut to `DEAD_LETTER_TEXT_MAX`.
#[test]
fn dead_letters_keep_topic_and_reason_short() {
    use crate::ingest::{dead_letter, DEAD_LETTER_TEXT_MAX};
    let mut s = sources();
    let payload = "\u{10}".repeat(4000);
    let e = s
        .decode("frigate/available", payload.as_bytes(), 0)
        .expect_err("neither online nor offline");
    assert!(
        e.to_string().len() > 20_000,
        "the detail quotes the payload"
    );
    let letter = dead_letter("frigate/available", payload.as_bytes(), &e, 2048, 7);
    assert!(letter.reason.starts_with("bad_field: frigate: "));
    assert!(letter.reason.len() <= DEAD_LETTER_TEXT_MAX && letter.reason.ends_with('…'));
    assert_eq!((letter.raw.len(), letter.original_len), (2048, 4000));
    assert_eq!(letter.source, "frigate/available");

    let topic = format!("zigbee2mqtt/{}", "\u{1}é".repeat(20_000));
    let e = s.decode(&topic, b"{}", 0).expect_err("topic too long");
    assert_eq!(e.reason, DecodeReason::BadTopic);
    let letter = dead_letter(&topic, b"{}", &e, 2048, 7);
    assert!(letter.source.len() <= DEAD_LETTER_TEXT_MAX && letter.source.ends_with('…'));
    assert!(letter.reason.len() <= DEAD_LETTER_TEXT_MAX);
}

const FORMATS: &[&str] = &[
    "zigbee2mqtt: ",
    "frigate: ",
    "camera-isapi-json: ",
    "access-control-json: ",
    "nbiot-smoke-json: ",
    "json-map: ",
];

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        "[a-z0-9x:._/ -]{0,12}".prop_map(serde_json::Value::from),
        prop_oneof![
            Just("active"),
            Just("inactive"),
            Just("new"),
            Just("end"),
            Just("update"),
            Just("online"),
            Just("offline"),
            Just("0x1b"),
            Just("person"),
            Just("leak"),
        ]
        .prop_map(serde_json::Value::from),
    ];
    let keys = prop_oneof![
        Just("water_leak"),
        Just("smoke"),
        Just("battery"),
        Just("battery_low"),
        Just("tamper"),
        Just("state"),
        Just("type"),
        Just("after"),
        Just("id"),
        Just("camera"),
        Just("label"),
        Just("entered_zones"),
        Just("start_time"),
        Just("eventType"),
        Just("eventState"),
        Just("macAddress"),
        Just("channelID"),
        Just("dateTime"),
        Just("controller"),
        Just("door"),
        Just("code"),
        Just("imei"),
        Just("ts"),
        Just("deviceInfo"),
        Just("devEui"),
        Just("object"),
        Just("alarm"),
        Just("active"),
        Just("distance"),
        Just("time"),
    ];
    leaf.prop_recursive(4, 48, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(keys.clone(), inner, 0..8).prop_map(|m| {
                serde_json::Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    })
}

fn check_error(e: &DecodeError) {
    assert!(
        FORMATS.iter().any(|f| e.detail.starts_with(f)),
        "error does not name its format: {e}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_decoder_panics_on_arbitrary_bytes(topic in prop::sample::select(TOPICS), bytes in prop::collection::vec(any::<u8>(), 0..256), now in 0i64..1_000_000) {
        let mut s = sources();
        if let Err(e) = s.decode(topic, &bytes, now) { check_error(&e); }
        let _ = s.tick(now + 10_000);
    }

    #[test]
    fn no_decoder_panics_on_arbitrary_json(topic in prop::sample::select(TOPICS), values in prop::collection::vec(arb_json(), 1..6)) {
        let mut s = sources();
        for (i, v) in values.iter().enumerate() {
            match s.decode(topic, v.to_string().as_bytes(), i as i64 * 1000) {
                Ok(d) => for e in d.events {
                    prop_assert!(estate_protocols::taxonomy::lookup(&e.code).is_some(), "{}", e.code);
                    prop_assert!(!e.device_id.is_empty());
                },
                Err(e) => check_error(&e),
            }
        }
        let _ = s.tick(1_000_000);
    }

    /// What the fuzz targets check, on CI: whatever the topic (of any length) and the
    /// payload's text fields, an event fits the room beside its raw bytes and a dead
    /// letter keeps its topic and reason short.
    #[test]
    fn events_and_dead_letters_stay_small(
        topic in prop::sample::select(TOPICS),
        level in "[a-z0-9/ \u{1}é]{0,300}",
        text in "[a-z\u{1}é\\\"]{0,600}",
        v in arb_json(),
    ) {
        use estate_protocols::pb;
        use prost::Message;
        let mut s = sources();
        let topics = [topic.to_owned(), format!("{topic}{level}"), format!("estate/E1/smoke/{level}/event")];
        let bodies = [
            serde_json::json!({"code": "SMOKE.ALARM", "value": 1, "unit": text, "seq": 1}).to_string(),
            serde_json::json!({"type": "new", "after": {"id": text, "camera": text, "label": "person", "zones": [text, text]}}).to_string(),
            serde_json::json!({"eventType": text, "eventState": "active", "macAddress": text}).to_string(),
            text.clone(),
            v.to_string(),
        ];
        for topic in &topics {
            for body in &bodies {
                match s.decode(topic, body.as_bytes(), 0) {
                    Ok(d) => for e in d.events {
                        let len = pb::Event::from(&e).encoded_len();
                        prop_assert!(len <= 2048 + 1024, "{len} bytes: {e:?}");
                    },
                    Err(e) => {
                        let l = crate::ingest::dead_letter(topic, body.as_bytes(), &e, 2048, 0);
                        prop_assert!(l.source.len() <= crate::ingest::DEAD_LETTER_TEXT_MAX);
                        prop_assert!(l.reason.len() <= crate::ingest::DEAD_LETTER_TEXT_MAX);
                    }
                }
            }
        }
    }
}
