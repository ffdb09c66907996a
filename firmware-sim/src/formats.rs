//! Third-party MQTT payload formats, as real devices and bridges send them: zigbee2mqtt
//! (full state every report, availability), Frigate (`new` / `update` / `end`,
//! `available`), Hikvision ISAPI-style camera alarms (repeated about once a second while
//! active, never a clear), access-control SDK event codes, NB-IoT smoke state codes.
//!
//! Pure rendering ([`Msg`]) plus [`mixed_estate`], a scripted estate that mixes them the
//! way a real one does, and [`mixed_estate_config`], the gateway config that reads it.
//! Every topic starts with `base` (empty for the real topics, e.g. `zigbee2mqtt/…`; tests
//! use a unique base so they can share one broker).

use std::time::Duration;

use serde_json::json;

/// One MQTT message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    /// The full topic (its format's prefix included).
    pub topic: String,
    /// The payload bytes, as the device's format writes them.
    pub payload: Vec<u8>,
    /// Published retained (availability topics are).
    pub retain: bool,
}

fn msg(topic: String, payload: impl Into<Vec<u8>>) -> Msg {
    Msg {
        topic,
        payload: payload.into(),
        retain: false,
    }
}

fn topic(base: &str, rest: &str) -> String {
    if base.is_empty() {
        rest.to_owned()
    } else {
        format!("{base}/{rest}")
    }
}

/// A zigbee2mqtt sensor's full state (the exposes of an Aqara leak or Heiman smoke sensor).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ZigbeeState {
    /// `Some(true)` while water is detected; `None` leaves the key out (a smoke sensor).
    pub water_leak: Option<bool>,
    /// `Some(true)` while smoke is detected; `None` leaves the key out (a leak sensor).
    pub smoke: Option<bool>,
    /// Battery charge, percent (0–100).
    pub battery: u8,
    /// The sensor's own low-battery flag.
    pub battery_low: bool,
    /// True while the case is open.
    pub tamper: bool,
    /// Zigbee link quality, 0–255.
    pub linkquality: u8,
}

/// `zigbee2mqtt/<name>` with the full state.
pub fn zigbee_state(base: &str, name: &str, s: &ZigbeeState) -> Msg {
    let mut body = json!({
        "battery": s.battery,
        "battery_low": s.battery_low,
        "linkquality": s.linkquality,
        "tamper": s.tamper,
        "voltage": 3005,
    });
    if let Some(w) = s.water_leak {
        body["water_leak"] = json!(w);
    }
    if let Some(w) = s.smoke {
        body["smoke"] = json!(w);
    }
    msg(
        topic(base, &format!("zigbee2mqtt/{name}")),
        body.to_string(),
    )
}

/// `zigbee2mqtt/<name>/availability`, retained, as zigbee2mqtt ≥ 1.30 sends it.
pub fn zigbee_availability(base: &str, name: &str, online: bool) -> Msg {
    let state = if online { "online" } else { "offline" };
    Msg {
        retain: true,
        ..msg(
            topic(base, &format!("zigbee2mqtt/{name}/availability")),
            json!({ "state": state }).to_string(),
        )
    }
}

/// `frigate/events`: `kind` is `new`, `update` or `end`.
pub fn frigate_event(
    base: &str,
    kind: &str,
    id: &str,
    camera: &str,
    label: &str,
    zones: &[&str],
    start_s: f64,
) -> Msg {
    let after = json!({
        "id": id,
        "camera": camera,
        "frame_time": start_s + 1.0,
        "label": label,
        "sub_label": null,
        "top_score": 0.91,
        "false_positive": false,
        "start_time": start_s,
        "end_time": if kind == "end" { json!(start_s + 8.0) } else { json!(null) },
        "score": 0.87,
        "box": [424, 500, 536, 712],
        "current_zones": zones,
        "entered_zones": zones,
        "has_snapshot": true,
        "has_clip": true,
        "active": kind != "end",
        "stationary": false,
    });
    let body = json!({ "type": kind, "before": after, "after": after });
    msg(topic(base, "frigate/events"), body.to_string())
}

/// `frigate/available`: `online` / `offline` (Frigate's last will).
pub fn frigate_available(base: &str, online: bool) -> Msg {
    Msg {
        retain: true,
        ..msg(
            topic(base, "frigate/available"),
            if online { "online" } else { "offline" },
        )
    }
}

/// An ISAPI event notification relayed as JSON to `isapi/<camera>`.
pub fn isapi_alarm(
    base: &str,
    mac: &str,
    channel: u32,
    event_type: &str,
    active: bool,
    date_time: &str,
) -> Msg {
    let body = json!({
        "ipAddress": "192.168.10.64",
        "portNo": 80,
        "protocol": "HTTP",
        "macAddress": mac,
        "channelID": channel,
        "dateTime": date_time,
        "activePostCount": 1,
        "eventType": event_type,
        "eventState": if active { "active" } else { "inactive" },
        "eventDescription": format!("{event_type} alarm"),
        "channelName": format!("Camera {channel:02}"),
    });
    msg(
        topic(base, &format!("isapi/{}", mac.replace(':', ""))),
        body.to_string(),
    )
}

/// An access controller's event with its SDK code, on `acs/<controller>/event`.
pub fn acs_event(base: &str, controller: &str, door: u32, code: u32, card: &str) -> Msg {
    let body = json!({
        "controller": controller,
        "door": door,
        "code": format!("{code:#x}"),
        "card": card,
        "time": "2026-11-26T20:00:00+08:00",
    });
    msg(
        topic(base, &format!("acs/{controller}/event")),
        body.to_string(),
    )
}

/// `acs/<controller>/status`: `online` / `offline` (the controller's last will).
pub fn acs_status(base: &str, controller: &str, online: bool) -> Msg {
    Msg {
        retain: true,
        ..msg(
            topic(base, &format!("acs/{controller}/status")),
            if online { "online" } else { "offline" },
        )
    }
}

/// An NB-IoT smoke detector's state report on `nbiot/<imei>`.
pub fn nbiot_state(base: &str, imei: &str, state: u32, battery: u8, ts_ms: i64) -> Msg {
    let body = json!({ "imei": imei, "state": state, "battery": battery, "ts": ts_ms });
    msg(topic(base, &format!("nbiot/{imei}")), body.to_string())
}

/// One step of a script: wait `after`, then publish `msg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// How long to wait after the previous step.
    pub after: Duration,
    /// What to publish then.
    pub msg: Msg,
}

/// The mixed estate's zigbee2mqtt leak sensor, by its friendly name. These constants are
/// the mixed estate's devices in their sources' own names.
pub const ZIGBEE_LEAK: &str = "b1-101 kitchen leak";
/// The zigbee2mqtt friendly name of the smoke sensor.
pub const ZIGBEE_SMOKE: &str = "b1-102 hall smoke";
/// The Frigate camera name.
pub const FRIGATE_CAMERA: &str = "north_gate";
/// The ISAPI camera's MAC address (its identity in the alarm payload).
pub const ISAPI_MAC: &str = "44:19:b6:6d:24:85";
/// The access controller's id in its SDK events.
pub const ACS_CONTROLLER: &str = "ctl-01";
/// The NB-IoT smoke detector's IMEI.
pub const NBIOT_IMEI: &str = "868120300000001";

/// A mixed estate over about 15 s: a zigbee leak (with full-state repeats), a person at
/// the north gate (Frigate), an intrusion on an ISAPI camera (repeats once a second, no
/// clear), a forced door and a bad card, an NB-IoT smoke alarm and its end, and a zigbee
/// sensor going offline (its last will).
pub fn mixed_estate(base: &str) -> Vec<Step> {
    let mut steps = vec![
        step(0, zigbee_availability(base, ZIGBEE_LEAK, true)),
        step(0, frigate_available(base, true)),
        step(0, acs_status(base, ACS_CONTROLLER, true)),
    ];
    steps.extend(leak_starts(base));
    steps.extend([
        step(200, person_at_the_gate(base, "new")),
        step(500, person_at_the_gate(base, "update")),
        step(500, person_at_the_gate(base, "update")),
    ]);
    steps.extend(intrusion_repeats(base));
    steps.push(step(200, person_at_the_gate(base, "end")));
    steps.extend(door_and_smoke(base));
    steps.extend(sensors_settle(base));
    steps
}

fn step(after_ms: u64, msg: Msg) -> Step {
    Step {
        after: Duration::from_millis(after_ms),
        msg,
    }
}

/// The zigbee leak sensor's full state, dry or wet.
fn leak_sensor(wet: bool) -> ZigbeeState {
    ZigbeeState {
        water_leak: Some(wet),
        battery: 97,
        linkquality: if wet { 117 } else { 120 },
        ..Default::default()
    }
}

/// The zigbee leak sensor reports dry twice, then wet three times (repeats of one leak).
fn leak_starts(base: &str) -> [Step; 5] {
    let (dry, wet) = (leak_sensor(false), leak_sensor(true));
    [
        step(100, zigbee_state(base, ZIGBEE_LEAK, &dry)),
        step(500, zigbee_state(base, ZIGBEE_LEAK, &dry)),
        step(500, zigbee_state(base, ZIGBEE_LEAK, &wet)),
        step(500, zigbee_state(base, ZIGBEE_LEAK, &wet)),
        step(500, zigbee_state(base, ZIGBEE_LEAK, &wet)),
    ]
}

/// One Frigate event (`"new"`, `"update"`, `"end"`) of the person in the north gate's
/// `gate` zone.
fn person_at_the_gate(base: &str, kind: &str) -> Msg {
    let t0 = 1_764_187_200.0;
    frigate_event(
        base,
        kind,
        "1764187201.5-abc123",
        FRIGATE_CAMERA,
        "person",
        &["gate"],
        t0 + 1.5,
    )
}

/// The ISAPI camera's field detection on channel 1, repeated once a second, never cleared.
fn intrusion_repeats(base: &str) -> Vec<Step> {
    (0..4)
        .map(|_| {
            step(
                1000,
                isapi_alarm(
                    base,
                    ISAPI_MAC,
                    1,
                    "fielddetection",
                    true,
                    "2026-11-26T20:00:05+08:00",
                ),
            )
        })
        .collect()
}

/// A forced door (0x1b) and an invalid card (0x09) on door 1, then the NB-IoT smoke
/// detector: alarm (state 1) twice, then its end (state 7).
fn door_and_smoke(base: &str) -> [Step; 5] {
    [
        step(200, acs_event(base, ACS_CONTROLLER, 1, 0x1b, "")),
        step(200, acs_event(base, ACS_CONTROLLER, 1, 0x09, "3081234567")),
        step(200, nbiot_state(base, NBIOT_IMEI, 1, 87, 1_764_187_210_000)),
        step(
            1000,
            nbiot_state(base, NBIOT_IMEI, 1, 87, 1_764_187_211_000),
        ),
        step(
            1000,
            nbiot_state(base, NBIOT_IMEI, 7, 87, 1_764_187_212_000),
        ),
    ]
}

/// The leak sensor is dry again, the zigbee smoke sensor reports its quiet state, and the
/// leak sensor goes offline (its last will).
fn sensors_settle(base: &str) -> [Step; 3] {
    let smoke = ZigbeeState {
        smoke: Some(false),
        battery: 80,
        linkquality: 90,
        ..Default::default()
    };
    [
        step(200, zigbee_state(base, ZIGBEE_LEAK, &leak_sensor(false))),
        step(200, zigbee_state(base, ZIGBEE_SMOKE, &smoke)),
        step(200, zigbee_availability(base, ZIGBEE_LEAK, false)),
    ]
}

/// The `[[ingest.sources]]` and `[[devices]]` that read [`mixed_estate`] published under
/// `base` (`clear_after` for the ISAPI camera given). The zigbee smoke sensor is left
/// unregistered on purpose: it shows up as `zigbee.b1-102_hall_smoke`.
pub fn mixed_estate_config(base: &str, clear_after: &str) -> String {
    let t = |rest: &str| format!("{:?}", topic(base, rest));
    format!(
        r#"
[[ingest.sources]]
format = "native"

[[ingest.sources]]
format = "zigbee2mqtt"
name = "zigbee"
topics = [{zigbee}]

[[ingest.sources]]
format = "frigate"
topics = [{frigate_events}, {frigate_available}]

[[ingest.sources]]
format = "camera-isapi-json"
name = "hik"
topics = [{isapi}]
clear_after = "{clear_after}"

[[ingest.sources]]
format = "access-control-json"
name = "acs"
topics = [{acs}]

[[ingest.sources]]
format = "nbiot-smoke-json"
name = "nbiot"
topics = [{nbiot}]

[[devices]]
id = "leak-b1-101"
kind = "water_leak"
name = "Kitchen leak sensor, 1-101"
location = {{ building = "1", unit = "1", floor = "1", room = "101" }}
source = {{ name = "zigbee", id = "{ZIGBEE_LEAK}" }}

[[devices]]
id = "cam-north-gate"
kind = "camera"
location = {{ zone = "north gate" }}
source = {{ name = "frigate", id = "{FRIGATE_CAMERA}" }}

[[devices]]
id = "cam-b2-perimeter"
kind = "camera"
location = {{ building = "2", zone = "perimeter" }}
source = {{ name = "hik", id = "{ISAPI_MAC}/1" }}

[[devices]]
id = "door-b3-main"
kind = "access_control"
location = {{ building = "3", zone = "lobby" }}
source = {{ name = "acs", id = "{ACS_CONTROLLER}/1" }}

[[devices]]
id = "smoke-b4-1201"
kind = "smoke"
location = {{ building = "4", floor = "12", room = "1201" }}
source = {{ name = "nbiot", id = "{NBIOT_IMEI}" }}
"#,
        zigbee = t("zigbee2mqtt/#"),
        frigate_events = t("frigate/events"),
        frigate_available = t("frigate/available"),
        isapi = t("isapi/#"),
        acs = t("acs/#"),
        nbiot = t("nbiot/#"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped demo config reads exactly what the mixed estate publishes.
    #[test]
    fn shipped_gateway_config_has_the_mixed_estate_sources_and_devices() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/gateway.toml");
        let text = std::fs::read_to_string(path).expect("config/gateway.toml is readable");
        let shipped: toml::Value = text.parse().expect("parses");
        let ours: toml::Value = mixed_estate_config("", "5s").parse().expect("parses");
        assert_eq!(shipped["ingest"]["sources"], ours["ingest"]["sources"]);
        let with_source = |v: &toml::Value| -> Vec<toml::Value> {
            v["devices"]
                .as_array()
                .expect("devices")
                .iter()
                .filter(|d| d.get("source").is_some())
                .cloned()
                .collect()
        };
        assert_eq!(with_source(&shipped), with_source(&ours));
    }

    #[test]
    fn renders_the_formats_topics_and_payloads() {
        let m = zigbee_state(
            "",
            "a b",
            &ZigbeeState {
                water_leak: Some(true),
                battery: 9,
                ..Default::default()
            },
        );
        assert_eq!(m.topic, "zigbee2mqtt/a b");
        let v: serde_json::Value = serde_json::from_slice(&m.payload).expect("json");
        assert_eq!(
            (v["water_leak"].as_bool(), v["battery"].as_u64()),
            (Some(true), Some(9))
        );
        assert!(zigbee_availability("t1", "a", false).retain);
        assert_eq!(acs_event("", "c", 1, 0x1b, "").payload, br#"{"card":"","code":"0x1b","controller":"c","door":1,"time":"2026-11-26T20:00:00+08:00"}"#);
        assert_eq!(
            frigate_event("x", "end", "i", "c", "person", &["z"], 1.0).topic,
            "x/frigate/events"
        );
        let steps = mixed_estate("");
        let isapi = steps
            .iter()
            .filter(|s| s.msg.topic.starts_with("isapi/"))
            .count();
        assert_eq!(isapi, 4, "repeats, never a clear");
        assert!(steps.iter().all(|s| !s.msg.topic.starts_with('/')));
    }
}
