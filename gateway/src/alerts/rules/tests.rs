//! Rule engine tests. Time is driven explicitly: every call takes "now" in ms, so
//! debounce, hold-open, heartbeat, escalation and correlation windows are tested to the
//! millisecond without a clock or sleeps.

use super::*;
use bytes::Bytes;
use estate_config::Config;
use estate_protocols::model::{AlertStatus, EventState, Severity, Source};
use estate_protocols::taxonomy;

use crate::alerts::model::{ActionRecord, DeviceStatus, Disposition};

const T0: i64 = 1_800_000_000_000;

fn config(extra: &str) -> Config {
    let text = format!(
        r#"
[gateway]
id = "gw-1"
estate_id = "e1"

{extra}

[[devices]]
id = "smoke-1a"
kind = "smoke"
name = "1F lobby smoke"
location = {{ building = "1", floor = "1" }}
heartbeat_interval = "10s"

[[devices]]
id = "smoke-1b"
kind = "smoke"
location = {{ building = "1", floor = "5" }}

[[devices]]
id = "smoke-2a"
kind = "smoke"
location = {{ building = "2" }}

[[devices]]
id = "door-1"
kind = "access_control"
location = {{ building = "1", zone = "lobby" }}

[[devices]]
id = "leak-1"
kind = "water_leak"
location = {{ building = "1", floor = "B1" }}

[[devices]]
id = "cam-1"
kind = "camera"
location = {{ zone = "gate" }}
heartbeat_interval = "10s"
"#
    );
    Config::from_toml_str(&text, "t.toml").unwrap_or_else(|e| panic!("{e}"))
}

fn engine(extra: &str) -> Engine {
    Engine::new(&config(extra), T0)
}

fn event(device: &str, code: &str, state: EventState, at: i64, seq: u64) -> Event {
    let cfg = config("");
    let d = cfg.device(device);
    let info = taxonomy::lookup(code).expect("known code");
    Event {
        seq,
        event_id: format!("ev-{seq}"),
        gateway_id: "gw-1".into(),
        estate_id: "e1".into(),
        device_id: device.into(),
        device_kind: d.map(|d| d.kind),
        code: code.into(),
        severity: taxonomy::default_severity(info, d.map(|d| d.kind)),
        state,
        location: d.map(|d| d.location.clone()).unwrap_or_default(),
        device_time_ms: None,
        gateway_time_ms: at,
        value: None,
        source: Source::default(),
        raw: Bytes::new(),
        raw_truncated: false,
        registered: d.is_some(),
        device_seq: None,
        alert: None,
    }
}

fn active(device: &str, code: &str, at: i64, seq: u64) -> Event {
    event(device, code, EventState::Active, at, seq)
}

fn cleared(device: &str, code: &str, at: i64, seq: u64) -> Event {
    event(device, code, EventState::Cleared, at, seq)
}

/// Alert changes among the effects, with the upstream change.
fn alerts(effects: &[Effect]) -> Vec<(Alert, Option<AlertChange>)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Alert {
                alert, upstream, ..
            } => Some((alert.clone(), *upstream)),
            _ => None,
        })
        .collect()
}

fn raised(effects: &[Effect]) -> Vec<Event> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Raise(e) => Some((**e).clone()),
            _ => None,
        })
        .collect()
}

/// Raised events other than heartbeat supervision (`DEV.OFFLINE` of the test devices
/// that have a heartbeat interval).
fn raised_not_offline(effects: &[Effect]) -> Vec<Event> {
    raised(effects)
        .into_iter()
        .filter(|e| e.code != "DEV.OFFLINE")
        .collect()
}

/// Feeds a raised event back as the store would (committed with `seq`).
fn commit(mut e: Event, seq: u64) -> Event {
    e.seq = seq;
    e
}

#[test]
fn repeats_fold_into_one_alert_and_only_the_opening_goes_upstream() {
    let mut en = engine("");
    let mut upstream = Vec::new();
    let mut ids = std::collections::BTreeSet::new();
    for i in 0..100 {
        let fx = en.on_event(
            &active("smoke-2a", "SMOKE.ALARM", T0 + i * 100, i as u64 + 1),
            T0,
        );
        for (a, up) in alerts(&fx) {
            ids.insert(a.id.clone());
            upstream.extend(up);
        }
    }
    assert_eq!(ids.len(), 1, "one alert, not a hundred");
    let a = en.open_alerts().next().expect("open alert").clone();
    assert_eq!(a.count, 100);
    assert_eq!(a.first_seen_ms, T0);
    assert_eq!(a.last_seen_ms, T0 + 99 * 100);
    assert_eq!(a.severity, 1);
    assert_eq!(a.title, "Smoke detected");
    assert_eq!(
        upstream,
        vec![AlertChange::Opened],
        "folds are not forwarded one by one"
    );
}

#[test]
fn heartbeats_readings_and_info_events_open_no_alert() {
    let mut en = engine("");
    for (i, code) in [
        "DEV.HEARTBEAT",
        "DEV.READING",
        "ACS.INVALID_CRED",
        "ACS.OPEN",
    ]
    .iter()
    .enumerate()
    {
        let dev = if code.starts_with("ACS") {
            "door-1"
        } else {
            "smoke-1a"
        };
        assert!(
            alerts(&en.on_event(&active(dev, code, T0, i as u64 + 1), T0)).is_empty(),
            "{code}"
        );
    }
    assert_eq!(en.open_alerts().count(), 0);
}

#[test]
fn severity_overrides_per_code_then_per_device_and_min_severity_filters() {
    let mut en = engine(
        r#"
[alerts]
min_severity = 2
[alerts.severity]
"LEAK.CABLE_BREAK" = 2
"LEAK.ALARM" = 3
[alerts.device_severity."leak-1"]
"LEAK.ALARM" = 1
"#,
    );
    // Per device wins over per code.
    let fx = en.on_event(&active("leak-1", "LEAK.ALARM", T0, 1), T0);
    assert_eq!(alerts(&fx)[0].0.severity, 1);
    // Per code raises a minor code into the alert range.
    let fx = en.on_event(&active("leak-1", "LEAK.CABLE_BREAK", T0, 2), T0);
    assert_eq!(alerts(&fx)[0].0.severity, 2);
    // Minor (3) is below min_severity 2: no alert.
    assert!(alerts(&en.on_event(&active("smoke-1a", "SMOKE.LOW_BATT", T0, 3), T0)).is_empty());
}

#[test]
fn debounce_drops_a_flap_and_alerts_a_lasting_condition() {
    let mut en = engine("[alerts.debounce]\n\"LEAK.ALARM\" = \"2s\"\n");
    // A flap: active, cleared 1 s later.
    assert!(alerts(&en.on_event(&active("leak-1", "LEAK.ALARM", T0, 1), T0)).is_empty());
    en.on_event(&cleared("leak-1", "LEAK.ALARM", T0 + 1000, 2), T0 + 1000);
    assert!(
        alerts(&en.on_tick(T0 + 5000)).is_empty(),
        "a flap raises nothing"
    );
    // Lasting: active and still active 2 s later.
    let t = T0 + 10_000;
    en.on_event(&active("leak-1", "LEAK.ALARM", t, 3), t);
    en.on_event(&active("leak-1", "LEAK.ALARM", t + 500, 4), t + 500);
    assert!(
        alerts(&en.on_tick(t + 1999)).is_empty(),
        "not before the debounce"
    );
    let fx = alerts(&en.on_tick(t + 2000));
    assert_eq!(fx.len(), 1);
    assert_eq!(fx[0].0.count, 2, "repeats during the debounce are counted");
    assert_eq!(fx[0].0.first_seen_ms, t);
}

#[test]
fn a_door_held_open_raises_held_open_and_closing_clears_and_auto_closes_it() {
    let mut en = engine("[alerts]\nheld_open_after = \"60s\"\n");
    en.on_event(&active("door-1", "ACS.OPEN", T0, 1), T0);
    assert!(raised_not_offline(&en.on_tick(T0 + 59_999)).is_empty());
    let r = raised_not_offline(&en.on_tick(T0 + 60_000));
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0].code.as_str(), r[0].device_id.as_str(), r[0].state),
        ("ACS.HELD_OPEN", "door-1", EventState::Active)
    );
    assert_eq!(r[0].location.zone, "lobby", "the door's location");
    assert!(
        raised_not_offline(&en.on_tick(T0 + 120_000)).is_empty(),
        "raised once"
    );
    // The raised event comes back committed and opens the alert.
    let fx = alerts(&en.on_event(&commit(r[0].clone(), 2), T0 + 60_001));
    assert_eq!(fx[0].0.code, "ACS.HELD_OPEN");
    // The door closes: ACS.HELD_OPEN cleared is raised; committed, it auto-closes the alert.
    let r = raised(&en.on_event(&cleared("door-1", "ACS.OPEN", T0 + 90_000, 3), T0 + 90_000));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].state, EventState::Cleared);
    let fx = alerts(&en.on_event(&commit(r[0].clone(), 4), T0 + 90_001));
    let closed = &fx[0].0;
    assert_eq!(closed.status, AlertStatus::Closed);
    assert_eq!(
        closed.closed.as_ref().map(|c| c.disposition),
        Some(Disposition::AutoCleared)
    );
    // A door closed in time raises nothing.
    en.on_event(&active("door-1", "ACS.OPEN", T0 + 200_000, 5), T0 + 200_000);
    assert!(raised(&en.on_event(
        &cleared("door-1", "ACS.OPEN", T0 + 230_000, 6),
        T0 + 230_000
    ))
    .is_empty());
    assert!(raised_not_offline(&en.on_tick(T0 + 300_000)).is_empty());
}

#[test]
fn missed_heartbeats_take_a_device_offline_and_a_report_brings_it_back() {
    let mut en = engine("[alerts.offline]\nmissed_heartbeats = 3\nclasses = { camera = 5 }\n");
    en.on_event(
        &active("smoke-1a", "DEV.HEARTBEAT", T0 + 1000, 1),
        T0 + 1000,
    );
    en.on_event(&active("cam-1", "DEV.HEARTBEAT", T0 + 1000, 2), T0 + 1000);
    // Smoke: 3 × 10 s after its last heartbeat.
    assert!(raised(&en.on_tick(T0 + 30_999)).is_empty());
    let fx = en.on_tick(T0 + 31_000);
    let r = raised(&fx);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(
        (r[0].code.as_str(), r[0].device_id.as_str()),
        ("DEV.OFFLINE", "smoke-1a")
    );
    assert_eq!(
        r[0].severity,
        Severity::Major,
        "a smoke detector is life-safety"
    );
    assert!(fx.iter().any(|e| matches!(e, Effect::Device(d) if d.id == "smoke-1a" && d.status == DeviceStatus::Offline)));
    assert!(
        raised(&en.on_tick(T0 + 45_000)).is_empty(),
        "offline is raised once"
    );
    // Camera: its class allows 5 missed heartbeats.
    let r = raised(&en.on_tick(T0 + 51_000));
    assert_eq!(
        r.iter().map(|e| e.device_id.as_str()).collect::<Vec<_>>(),
        ["cam-1"]
    );
    // The offline event, committed, opens an alert.
    let off = commit(
        en.device_event(
            "smoke-1a",
            "DEV.OFFLINE",
            EventState::Active,
            serde_json::json!({}),
            T0 + 31_000,
        ),
        3,
    );
    let fx = alerts(&en.on_event(&off, T0 + 31_001));
    assert_eq!(fx[0].0.code, "DEV.OFFLINE");
    // The device reports again: online, and DEV.ONLINE raised; committed, it auto-closes
    // the offline alert.
    let fx = en.on_event(
        &active("smoke-1a", "DEV.HEARTBEAT", T0 + 60_000, 4),
        T0 + 60_000,
    );
    assert!(fx
        .iter()
        .any(|e| matches!(e, Effect::Device(d) if d.status == DeviceStatus::Online)));
    let r = raised(&fx);
    assert_eq!(r[0].code, "DEV.ONLINE");
    let fx = alerts(&en.on_event(&commit(r[0].clone(), 5), T0 + 60_001));
    assert_eq!(fx[0].0.status, AlertStatus::Closed);
    assert!(fx[0].0.cleared);
}

#[test]
fn devices_without_heartbeat_interval_are_never_timed_out_and_start_unknown() {
    let mut en = engine("");
    assert!(en
        .devices()
        .iter()
        .all(|d| d.status == DeviceStatus::Unknown && d.registered));
    let r = raised(&en.on_tick(T0 + 3_600_000));
    assert!(
        r.iter()
            .all(|e| e.device_id == "smoke-1a" || e.device_id == "cam-1"),
        "only devices with a heartbeat interval: {r:?}"
    );
    // An unregistered device is listed once heard from.
    en.on_event(&active("stranger", "DEV.HEARTBEAT", T0, 1), T0);
    let d = en.devices();
    let s = d.iter().find(|d| d.id == "stranger").expect("listed");
    assert!(!s.registered);
    assert_eq!(s.status, DeviceStatus::Online);
    assert_eq!(d[0].status, DeviceStatus::Offline, "offline first");
}

#[test]
fn an_unacknowledged_alert_escalates_once_and_an_acknowledged_one_does_not() {
    let mut en = engine("[alerts.escalation]\nafter = \"5m\"\n");
    let a = alerts(&en.on_event(&active("leak-1", "LEAK.ALARM", T0, 1), T0))[0]
        .0
        .clone();
    let b = alerts(&en.on_event(&active("smoke-1b", "SMOKE.LOW_BATT", T0, 2), T0))[0]
        .0
        .clone();
    en.acknowledge(&b.id, "li", "replacing", T0 + 1000)
        .expect("ack");
    assert!(alerts(&en.on_tick(T0 + 299_999)).is_empty());
    let fx = alerts(&en.on_tick(T0 + 300_000));
    assert_eq!(fx.len(), 1, "only the unacknowledged one");
    let (e, up) = &fx[0];
    assert_eq!(e.id, a.id);
    assert!(e.escalated);
    assert_eq!(
        (a.severity, e.severity),
        (2, 1),
        "severity raised one level"
    );
    assert_eq!(*up, Some(AlertChange::Escalated));
    assert!(
        alerts(&en.on_tick(T0 + 900_000)).is_empty(),
        "escalated once"
    );
}

#[test]
fn two_smoke_detectors_in_one_building_confirm_a_fire_once() {
    let cfg = r#"
[alerts.correlation.confirmed-fire]
codes = ["SMOKE.ALARM", "FIRE.ALARM"]
min_devices = 2
within = "2m"
same = "building"
raise = "FIRE.CONFIRMED"
"#;
    let mut en = engine(cfg);
    // One detector, repeating: not confirmed.
    for i in 0..5 {
        assert!(
            raised(&en.on_event(&active("smoke-1a", "SMOKE.ALARM", T0 + i, i as u64 + 1), T0))
                .is_empty()
        );
    }
    // One in another building: not confirmed either.
    assert!(raised(&en.on_event(&active("smoke-2a", "SMOKE.ALARM", T0 + 10, 6), T0)).is_empty());
    // A second detector in building 1, 90 s later: confirmed.
    let r = raised(&en.on_event(
        &active("smoke-1b", "SMOKE.ALARM", T0 + 90_000, 7),
        T0 + 90_000,
    ));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].code, "FIRE.CONFIRMED");
    assert_eq!(r[0].severity, Severity::Critical);
    assert_eq!(r[0].location.building, "1");
    // More alarms in the building: raised only once.
    for i in 0..50 {
        let dev = if i % 2 == 0 { "smoke-1a" } else { "smoke-1b" };
        assert!(raised(&en.on_event(
            &active(dev, "SMOKE.ALARM", T0 + 91_000 + i, 8 + i as u64),
            T0
        ))
        .is_empty());
    }
    // The raised event opens one alert; closing it re-arms the rule.
    let fx = alerts(&en.on_event(&commit(r[0].clone(), 100), T0 + 91_000));
    let fire = fx[0].0.clone();
    assert_eq!((fire.code.as_str(), fire.severity), ("FIRE.CONFIRMED", 1));
    en.close(&fire.id, "wang", Disposition::Real, "brigade", T0 + 100_000)
        .expect("close");
    assert!(
        raised(&en.on_event(&active("smoke-1a", "SMOKE.ALARM", T0 + 101_000, 101), T0)).is_empty()
    );
    assert_eq!(
        raised(&en.on_event(&active("smoke-1b", "SMOKE.ALARM", T0 + 102_000, 102), T0)).len(),
        1
    );
}

#[test]
fn reports_outside_the_correlation_window_do_not_confirm() {
    let mut en = engine(
        "[alerts.correlation.f]\ncodes = [\"SMOKE.ALARM\"]\nwithin = \"2m\"\nraise = \"FIRE.CONFIRMED\"\n",
    );
    en.on_event(&active("smoke-1a", "SMOKE.ALARM", T0, 1), T0);
    en.on_tick(T0 + 200_000);
    assert!(
        raised(&en.on_event(&active("smoke-1b", "SMOKE.ALARM", T0 + 121_000, 2), T0)).is_empty()
    );
}

#[test]
fn silence_windows_suppress_alerts_only_inside_them_and_only_what_they_name() {
    let mut en = engine(
        r#"
[alerts.silence.pump-works]
devices = ["leak-1"]
from = "2027-01-15T08:00:00Z"
until = "2027-01-15T12:00:00Z"
"#,
    );
    let start = 1_800_000_000_000; // 2027-01-15T08:00:00Z
    assert_eq!(
        humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(start as u64)
        )
        .to_string(),
        "2027-01-15T08:00:00.000Z"
    );
    assert!(
        alerts(&en.on_event(&active("leak-1", "LEAK.ALARM", start + 1000, 1), start)).is_empty()
    );
    assert_eq!(
        alerts(&en.on_event(&active("smoke-1a", "SMOKE.ALARM", start + 1000, 2), start)).len(),
        1,
        "other devices still alert"
    );
    let after = start + 4 * 3_600_000;
    assert_eq!(
        alerts(&en.on_event(&active("leak-1", "LEAK.ALARM", after, 3), after)).len(),
        1
    );
}

#[test]
fn a_life_safety_alert_stays_open_when_cleared_and_reactivates_on_a_repeat() {
    let mut en = engine("");
    let a = alerts(&en.on_event(&active("smoke-1a", "SMOKE.ALARM", T0, 1), T0))[0]
        .0
        .clone();
    let fx = alerts(&en.on_event(&cleared("smoke-1a", "SMOKE.ALARM", T0 + 5000, 2), T0 + 5000));
    let c = &fx[0].0;
    assert_eq!(c.id, a.id);
    assert!(
        c.cleared && c.is_open(),
        "cleared but open until someone closes it"
    );
    assert_eq!(c.cleared_ms, Some(T0 + 5000));
    assert_eq!(fx[0].1, Some(AlertChange::Cleared));
    let fx = alerts(&en.on_event(&active("smoke-1a", "SMOKE.ALARM", T0 + 9000, 3), T0 + 9000));
    assert_eq!(fx[0].0.id, a.id);
    assert!(!fx[0].0.cleared);
    assert_eq!(fx[0].0.count, 2);
}

#[test]
fn a_leak_alert_asks_for_its_linkage_write() {
    let mut cfg = config("");
    cfg.alerts.linkage.insert(
        "leak-closes-valve".into(),
        estate_config::Linkage {
            on: vec!["LEAK.ALARM".into()],
            device: "valve-main".into(),
            coil: Some(0),
            register: None,
            value: 1,
            same_building: false,
        },
    );
    let mut en = Engine::new(&cfg, T0);
    let fx = en.on_event(&active("leak-1", "LEAK.ALARM", T0, 1), T0);
    let a = alerts(&fx)[0].0.clone();
    let links: Vec<&Effect> = fx
        .iter()
        .filter(|e| matches!(e, Effect::Link { .. }))
        .collect();
    assert_eq!(
        links,
        [&Effect::Link {
            alert_id: a.id.clone(),
            action: LinkAction {
                rule: "leak-closes-valve".into(),
                device: "valve-main".into(),
                write: crate::output::Write::Coil {
                    address: 0,
                    value: true
                },
            },
        }]
    );
    // A fold does not repeat the write.
    let fx = en.on_event(&active("leak-1", "LEAK.ALARM", T0 + 1, 2), T0);
    assert!(!fx.iter().any(|e| matches!(e, Effect::Link { .. })));
    // The result is recorded on the alert and goes upstream.
    let e = en
        .record_action(
            &a.id,
            ActionRecord {
                action: "leak-closes-valve: coil 0 = 1".into(),
                target: "valve-main".into(),
                at_ms: T0 + 50,
                result: "ok".into(),
            },
        )
        .expect("open alert");
    let (alert, up) = alerts(&[e])[0].clone();
    assert_eq!(alert.actions.len(), 1);
    assert_eq!(up, Some(AlertChange::Action));
}

#[test]
fn operator_transitions_follow_the_lifecycle() {
    let mut en = engine("");
    let a = alerts(&en.on_event(&active("smoke-1a", "SMOKE.ALARM", T0, 1), T0))[0]
        .0
        .clone();
    let acked = alerts(&en.acknowledge(&a.id, "wang", "going", T0 + 1).expect("ack"))[0]
        .0
        .clone();
    assert_eq!(acked.status, AlertStatus::Acknowledged);
    assert_eq!(
        acked.acknowledged.as_ref().map(|x| x.by.as_str()),
        Some("wang")
    );
    assert!(matches!(
        en.acknowledge(&a.id, "wang", "", T0 + 2),
        Err(ActionError::Invalid(_))
    ));
    let closed = alerts(
        &en.close(&a.id, "wang", Disposition::FalseAlarm, "steam", T0 + 3)
            .expect("close"),
    )[0]
    .0
    .clone();
    assert_eq!(closed.status, AlertStatus::Closed);
    assert_eq!(
        closed.closed.as_ref().map(|c| c.disposition),
        Some(Disposition::FalseAlarm)
    );
    assert_eq!(
        en.close(&a.id, "wang", Disposition::Real, "", T0 + 4),
        Err(ActionError::NotOpen(a.id.clone()))
    );
    // A new alarm after closing opens a new alert.
    let b = alerts(&en.on_event(&active("smoke-1a", "SMOKE.ALARM", T0 + 10, 2), T0 + 10))[0]
        .0
        .clone();
    assert_ne!(b.id, a.id);
    // An active alert can be closed directly.
    assert!(en
        .close(&b.id, "li", Disposition::Test, "", T0 + 11)
        .is_ok());
}

#[test]
fn restored_alerts_keep_folding_after_a_restart() {
    let mut en = engine("");
    let a = alerts(&en.on_event(&active("smoke-2a", "SMOKE.ALARM", T0, 1), T0))[0]
        .0
        .clone();
    let mut en2 = engine("");
    en2.restore(vec![a.clone()]);
    let fx = alerts(&en2.on_event(&active("smoke-2a", "SMOKE.ALARM", T0 + 5, 2), T0 + 5));
    assert_eq!(fx[0].0.id, a.id);
    assert_eq!(fx[0].0.count, 2);
}

#[test]
fn alert_updates_and_their_own_events_are_ignored() {
    let mut en = engine("");
    let mut e = active("smoke-1a", "SMOKE.ALARM", T0, 1);
    e.code = "ALERT.UPDATE".into();
    assert!(en.on_event(&e, T0).is_empty());
}

#[test]
fn a_replayed_event_opens_its_alert_under_the_same_id() {
    // After a crash between opening an alert and storing it, the event is replayed into
    // a fresh engine: the operator, who may have seen the alert already, sees the same id.
    let mut ev = active("smoke-1a", "SMOKE.ALARM", T0, 1);
    ev.event_id = ulid::Ulid::new().to_string();
    let before = alerts(&engine("").on_event(&ev, T0));
    let after = alerts(&engine("").on_event(&ev, T0 + 5_000));
    assert_eq!(before[0].0.id, after[0].0.id);
    assert!(ulid::Ulid::from_string(&before[0].0.id).is_ok());
    // Another event of the same device and code opens (after closing) another id.
    let mut en = engine("");
    let first = alerts(&en.on_event(&ev, T0))[0].0.clone();
    en.close(&first.id, "wang", Disposition::Test, "", T0 + 1)
        .expect("close");
    let mut again = active("smoke-1a", "SMOKE.ALARM", T0 + 2, 2);
    again.event_id = ulid::Ulid::new().to_string();
    let second = alerts(&en.on_event(&again, T0 + 2))[0].0.clone();
    assert_ne!(first.id, second.id);
}

#[test]
fn device_status_survives_a_restart_and_heartbeat_supervision_starts_afresh() {
    let mut en = engine("");
    // smoke-1a (heartbeat 10 s) is heard, then falls silent and goes offline; the
    // camera (heartbeat 10 s) and the door keep reporting.
    en.on_event(&active("smoke-1a", "DEV.HEARTBEAT", T0, 1), T0);
    en.on_event(
        &active("cam-1", "DEV.HEARTBEAT", T0 + 55_000, 2),
        T0 + 55_000,
    );
    en.on_event(&active("door-1", "ACS.OPEN", T0 + 56_000, 3), T0 + 56_000);
    let r = raised(&en.on_tick(T0 + 60_000));
    assert_eq!(
        r.iter()
            .map(|e| (e.code.as_str(), e.device_id.as_str()))
            .collect::<Vec<_>>(),
        [("DEV.OFFLINE", "smoke-1a")]
    );
    let saved = en.device_records();

    // A new engine (a restart), ten minutes later.
    let later = T0 + 600_000;
    let mut en = Engine::new(&config(""), later);
    en.restore_devices(saved);
    let view = |en: &Engine, id: &str| {
        en.devices()
            .into_iter()
            .find(|d| d.id == id)
            .expect("tracked")
    };
    assert_eq!(view(&en, "door-1").last_seen_ms, Some(T0 + 56_000));
    assert_eq!(view(&en, "door-1").status, DeviceStatus::Online);
    assert_eq!(view(&en, "cam-1").last_seen_ms, Some(T0 + 55_000));
    assert_eq!(view(&en, "smoke-1a").status, DeviceStatus::Offline);
    assert_eq!(view(&en, "leak-1").status, DeviceStatus::Unknown);
    // The camera was last heard long ago, but gets 3 × 10 s from the restart.
    assert!(raised(&en.on_tick(later + 29_999)).is_empty());
    let r = raised(&en.on_tick(later + 30_000));
    assert_eq!(
        r.iter().map(|e| e.device_id.as_str()).collect::<Vec<_>>(),
        ["cam-1"]
    );
    // The silent detector reports again: back online, and DEV.ONLINE is raised as it
    // would have been without the restart.
    let back = raised(&en.on_event(
        &active("smoke-1a", "DEV.HEARTBEAT", later + 31_000, 4),
        later + 31_000,
    ));
    assert!(back
        .iter()
        .any(|e| e.code == "DEV.ONLINE" && e.device_id == "smoke-1a"));
}

// ---------------------------------------------------------------------------------------
// Alarm management (issue 16): chattering, folded repeats, shelving
// ---------------------------------------------------------------------------------------

/// Audit entries among the effects.
fn audits(effects: &[Effect]) -> Vec<AuditEntry> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Alert { audit, .. } => audit.clone(),
            _ => None,
        })
        .collect()
}

/// Forces a door open and closed `cycles` times, 300 ms apart from `t`; every effect.
fn chatter_door(en: &mut Engine, t: i64, seq: &mut u64, cycles: u32) -> Vec<Effect> {
    let mut out = Vec::new();
    for i in 0..cycles {
        let at = t + i64::from(i) * 300;
        *seq += 1;
        out.extend(en.on_event(&active("door-1", "ACS.FORCED_OPEN", at, *seq), at));
        *seq += 1;
        out.extend(en.on_event(
            &cleared("door-1", "ACS.FORCED_OPEN", at + 150, *seq),
            at + 150,
        ));
    }
    out
}

#[test]
fn a_chattering_door_is_one_alert_with_a_bounded_audit_and_only_its_state_changes_upstream() {
    let mut en = engine("");
    let mut seq = 0;
    let fx = chatter_door(&mut en, T0, &mut seq, 50);
    let changes = alerts(&fx);
    let ids: std::collections::BTreeSet<_> = changes.iter().map(|(a, _)| a.id.clone()).collect();
    assert_eq!(ids.len(), 1, "one alert");
    let last = &changes.last().expect("changes").0;
    assert!(last.chattering && last.is_open());
    assert_eq!(last.activations, 50);
    // Life safety raised at once: the very first effect opens it and goes upstream.
    assert_eq!(changes[0].1, Some(AlertChange::Opened));
    // Upstream: the opening, the first cycles, and entering chattering (the 5th
    // activation) — nothing of the 45 cycles after.
    let up: Vec<_> = changes.iter().filter_map(|(_, u)| *u).collect();
    assert_eq!(up.len(), 9, "{up:?}");
    // Audit: opened, first clear, first reactivation, one folded run, chattering.
    let trail: Vec<String> = audits(&fx).iter().map(|e| e.action.clone()).collect();
    assert_eq!(
        trail,
        ["opened", "cleared", "reactivated", "repeated", "chattering"],
        "{trail:?}"
    );
    let run = last
        .unaudited
        .expect("the repeats since are counted on the alert");
    assert_eq!((run.reactivated, run.cleared), (45, 46));

    // Stable for stable_for (120 s) after the last activation: it leaves chattering,
    // the run is written as one entry with count, first and last, and upstream hears
    // where it stands (cleared) once.
    let end = T0 + 49 * 300;
    assert!(
        alerts(&en.on_tick(end + 119_000)).is_empty(),
        "not yet stable"
    );
    let fx = en.on_tick(end + 120_000);
    let trail = audits(&fx);
    assert_eq!(trail.len(), 2, "{trail:?}");
    assert_eq!(trail[0].action, "repeated");
    assert_eq!(trail[0].count, 91);
    assert!(trail[0].last_ms.is_some_and(|l| l > trail[0].at_ms));
    assert_eq!(trail[1].action, "chattering_ended");
    let ch = alerts(&fx);
    let (a, up) = ch.last().expect("change");
    assert!(!a.chattering && a.cleared && a.is_open() && a.unaudited.is_none());
    assert_eq!(*up, Some(AlertChange::Cleared));
    assert_eq!(ch.iter().filter(|(_, u)| u.is_some()).count(), 1);
}

#[test]
fn a_chattering_auto_close_code_stays_one_alert_and_closes_once_stable() {
    // VID.LOSS is in auto_close: without chattering each cycle is a new alert.
    let mut en = engine("");
    let mut opened = std::collections::BTreeSet::new();
    let mut t = T0;
    for i in 0..40u64 {
        let fx = en.on_event(&active("cam-1", "VID.LOSS", t, 2 * i + 1), t);
        let fx2 = en.on_event(&cleared("cam-1", "VID.LOSS", t + 500, 2 * i + 2), t + 500);
        for (a, _) in alerts(&fx).into_iter().chain(alerts(&fx2)) {
            opened.insert(a.id);
        }
        t += 1000;
    }
    assert_eq!(
        opened.len(),
        5,
        "4 auto-closed, the 5th chatters and stays open"
    );
    let open: Vec<_> = en.open_alerts().cloned().collect();
    assert_eq!(open.len(), 1);
    assert!(open[0].chattering && open[0].cleared);
    let fx = en.on_tick(t + 120_000);
    let closed = alerts(&fx).into_iter().last().expect("closed");
    assert_eq!(closed.0.status, AlertStatus::Closed);
    assert_eq!(closed.1, Some(AlertChange::Closed));
    assert_eq!(
        closed.0.closed.as_ref().map(|c| c.disposition),
        Some(Disposition::AutoCleared)
    );
    assert_eq!(en.open_alerts().count(), 0);
}

#[test]
fn repeats_below_the_chattering_rate_fold_in_the_audit_but_still_go_upstream() {
    let mut en = engine("[alerts.chattering]\nactivations = 5\nwindow = \"10s\"\n");
    let mut all = Vec::new();
    // One cycle every 20 s: never 5 within 10 s.
    for i in 0..10u64 {
        let t = T0 + i as i64 * 20_000;
        all.extend(en.on_event(&active("door-1", "ACS.FORCED_OPEN", t, 2 * i + 1), t));
        all.extend(en.on_event(
            &cleared("door-1", "ACS.FORCED_OPEN", t + 1000, 2 * i + 2),
            t + 1000,
        ));
    }
    let ch = alerts(&all);
    assert!(ch.iter().all(|(a, _)| !a.chattering));
    assert_eq!(
        ch.iter().filter(|(_, u)| u.is_some()).count(),
        20,
        "every transition forwarded"
    );
    let trail: Vec<String> = audits(&all).iter().map(|e| e.action.clone()).collect();
    assert_eq!(trail, ["opened", "cleared", "reactivated"]);
    // The operator acknowledges: the run is written first, so the trail reads in order.
    let id = ch[0].0.id.clone();
    let fx = en.acknowledge(&id, "wang", "", T0 + 300_000).expect("acks");
    let trail = audits(&fx);
    assert_eq!(trail[0].action, "repeated");
    assert_eq!(trail[0].count, 17);
    assert_eq!(trail[1].action, "acknowledged");
    // A run that goes on is written after an hour at the latest.
    let mut fx = Vec::new();
    for i in 0..3u64 {
        let t = T0 + 400_000 + i as i64 * 20_000;
        fx.extend(en.on_event(&active("door-1", "ACS.FORCED_OPEN", t, 100 + 2 * i), t));
        fx.extend(en.on_event(
            &cleared("door-1", "ACS.FORCED_OPEN", t + 1000, 101 + 2 * i),
            t + 1000,
        ));
    }
    assert!(audits(&fx).is_empty());
    let flushed = audits(&en.on_tick(T0 + 400_000 + 3_600_000));
    assert_eq!(flushed.len(), 1);
    assert_eq!(
        (flushed[0].action.as_str(), flushed[0].count),
        ("repeated", 6)
    );
}

#[test]
fn a_shelved_alert_is_quiet_until_its_time_is_up() {
    let mut en = engine("");
    let a = alerts(&en.on_event(&active("cam-1", "VID.TAMPER", T0, 1), T0))[0]
        .0
        .clone();
    let fx = en
        .shelve(&a.id, "wang", 600_000, "camera being serviced", T0 + 1000)
        .expect("shelves");
    let (s, up) = alerts(&fx).into_iter().last().expect("change");
    assert_eq!(up, None);
    let shelf = s.shelved.as_ref().expect("shelved");
    assert_eq!(
        (shelf.by.as_str(), shelf.until_ms),
        ("wang", T0 + 1000 + 600_000)
    );
    assert_eq!(audits(&fx)[0].action, "shelved");
    // While shelved: transitions are not forwarded, only counted.
    let fx = en.on_event(&cleared("cam-1", "VID.TAMPER", T0 + 5000, 2), T0 + 5000);
    assert_eq!(alerts(&fx)[0].1, None);
    let fx = en.on_event(&active("cam-1", "VID.TAMPER", T0 + 9000, 3), T0 + 9000);
    assert_eq!(alerts(&fx)[0].1, None);
    assert!(alerts(&en.on_tick(T0 + 600_000)).is_empty(), "not yet");
    // Time is up: the gateway unshelves it and says where it stands upstream.
    let fx = en.on_tick(T0 + 601_000);
    let (u, up) = alerts(&fx).into_iter().last().expect("unshelved");
    assert!(u.shelved.is_none());
    assert_eq!(up, Some(AlertChange::Opened));
    let e = audits(&fx).into_iter().last().expect("entry");
    assert_eq!(
        (e.action.as_str(), e.by.as_str()),
        ("unshelved", BY_GATEWAY)
    );
    assert!(e.note.contains("2 changes held back"), "{}", e.note);
}

#[test]
fn life_safety_alerts_shelve_only_briefly_and_keep_going_upstream() {
    let mut en = engine("");
    let a = alerts(&en.on_event(&active("door-1", "ACS.FORCED_OPEN", T0, 1), T0))[0]
        .0
        .clone();
    let err = en
        .shelve(&a.id, "wang", 3_600_000, "door fault", T0)
        .expect_err("too long");
    assert!(
        matches!(&err, ActionError::Refused(m) if m.contains("at most 15 ") && m.contains("life-safety")),
        "{err}"
    );
    assert!(matches!(
        en.shelve(&a.id, "wang", 300_000, " ", T0),
        Err(ActionError::Refused(_))
    ));
    en.shelve(&a.id, "wang", 900_000, "door fault", T0)
        .expect("15 min is fine");
    let fx = en.on_event(
        &cleared("door-1", "ACS.FORCED_OPEN", T0 + 5000, 2),
        T0 + 5000,
    );
    assert_eq!(
        alerts(&fx)[0].1,
        Some(AlertChange::Cleared),
        "still forwarded"
    );
    let fx = en.unshelve(&a.id, "li", T0 + 6000).expect("unshelves");
    assert!(alerts(&fx)[0].0.shelved.is_none());
    assert!(matches!(
        en.unshelve(&a.id, "li", T0 + 7000),
        Err(ActionError::Invalid(_))
    ));
}
