//! `[alerts]`: defaults, a full valid section, and a broken one whose every problem is
//! reported with its line.

use std::time::Duration;

use estate_protocols::model::DeviceKind;

use super::*;

const BASE: &str = r#"
[gateway]
id = "gw-1"
estate_id = "31011500000000000001"

[[devices]]
id = "smoke-1"
kind = "smoke"
location = { building = "1" }
"#;

#[test]
fn alerts_default_to_minor_and_above_with_safe_auto_close() {
    let c = Config::from_toml_str(BASE, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    let a = &c.alerts;
    assert_eq!(a.min_severity, 3);
    assert_eq!(a.history_max, 10_000);
    assert!(a.auto_close.contains(&"DEV.OFFLINE".to_owned()));
    assert!(a.auto_close.iter().all(|code| !is_life_safety_code(code)));
    assert_eq!(a.offline.missed_for(DeviceKind::Smoke), 3);
    assert!(a.escalation.is_none() && a.correlation.is_empty() && a.linkage.is_empty());
}

#[test]
fn a_full_alerts_section_loads() {
    let text = format!(
        r#"{BASE}
[alerts]
min_severity = 2
held_open_after = "90s"
auto_close = ["DEV.OFFLINE"]

[alerts.severity]
"VID.LOITER" = 4

[alerts.device_severity."smoke-1"]
"SMOKE.LOW_BATT" = 2

[alerts.debounce]
"LEAK.ALARM" = "2s"

[alerts.offline]
missed_heartbeats = 4
classes = {{ smoke = 2 }}

[alerts.escalation]
after = "5m"

[alerts.correlation.confirmed-fire]
codes = ["SMOKE.ALARM", "FIRE.ALARM"]
within = "2m"
raise = "FIRE.CONFIRMED"

[alerts.silence.works]
codes = ["LEAK.ALARM"]
from = "2026-12-01T08:00:00Z"
until = "2026-12-01T12:00:00Z"
"#
    );
    let c = Config::from_toml_str(&text, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    let a = &c.alerts;
    assert_eq!(a.held_open_after, Some(Duration::from_secs(90)));
    assert_eq!(a.severity.get("VID.LOITER"), Some(&4));
    assert_eq!(a.debounce.get("LEAK.ALARM"), Some(&Duration::from_secs(2)));
    assert_eq!(a.offline.missed_for(DeviceKind::Smoke), 2);
    assert_eq!(a.offline.missed_for(DeviceKind::Camera), 4);
    assert_eq!(
        a.escalation.as_ref().map(|e| e.after),
        Some(Duration::from_secs(300))
    );
    let fire = &a.correlation["confirmed-fire"];
    assert_eq!((fire.min_devices, fire.same), (2, Scope::Building));
    assert!(a.silence["works"].window_ms().is_some());
}

#[test]
fn every_alerts_problem_is_reported_with_its_line() {
    let text = format!(
        r#"{BASE}
[alerts]
min_severity = 7
auto_close = ["SMOKE.ALARM", "NOPE.X"]

[alerts.severity]
"VID.LOITER" = 9

[alerts.debounce]
"LEAK.ALARM" = "soon"

[alerts.correlation.fire]
codes = ["SMOKE.ALARM"]
min_devices = 1
within = "2m"
raise = "FIRE.CONFIRMD"

[alerts.linkage.valve]
on = ["LEAK.ALARM"]
device = "smoke-1"
coil = 0

[alerts.silence.w]
from = "tomorrow"
until = "2026-12-01T12:00:00Z"
"#
    );
    let errs = Config::from_toml_str(&text, "t.toml").expect_err("rejected");
    let at = |path: &str| -> (usize, String) {
        let p = errs
            .iter()
            .find(|p| p.path == path)
            .unwrap_or_else(|| panic!("no problem at {path}:\n{errs}"));
        (p.line.unwrap_or(0), p.message.clone())
    };
    let line_of = |needle: &str| {
        text.lines()
            .position(|l| l.contains(needle))
            .map_or(0, |i| i + 1)
    };
    // A type error (a duration that does not parse) is reported at its key; the rules
    // still check everything else.
    assert_eq!(
        at(r#"alerts.debounce.LEAK.ALARM"#).0,
        line_of(r#""LEAK.ALARM" = "soon""#)
    );
    assert!(at("alerts.min_severity").1.contains("1–4"));
    assert_eq!(at("alerts.min_severity").0, line_of("min_severity = 7"));
    assert!(at("alerts.auto_close[0]").1.contains("life-safety"));
    assert!(at("alerts.auto_close[1]").1.contains("unknown event code"));
    let (line, msg) = at(r#"alerts.severity."VID.LOITER""#);
    assert_eq!(
        line,
        line_of(r#""VID.LOITER" = 9"#),
        "located at the key itself"
    );
    assert!(msg.contains("1–4"));
    assert!(at("alerts.correlation.fire.min_devices")
        .1
        .contains("2–1000"));
    assert_eq!(
        at("alerts.correlation.fire.raise").0,
        line_of("FIRE.CONFIRMD")
    );
    assert!(at("alerts.linkage.valve.device")
        .1
        .contains("no `modbus` table"));
    assert!(at("alerts.silence.w.from").1.contains("RFC 3339"));
    assert!(errs.len() >= 9, "{errs}");
}

#[test]
fn silence_windows_read_rfc3339_like_the_decoders() {
    let window = |from: &str, until: &str| {
        crate::alerts::Silence {
            from: from.into(),
            until: until.into(),
            devices: vec![],
            codes: vec![],
            building: None,
        }
        .window_ms()
    };
    // The same instant written in UTC and at +08:00.
    assert_eq!(
        window("2026-12-01T08:00:00Z", "2026-12-01T20:00:00+08:00"),
        Some((1_796_112_000_000, 1_796_112_000_000 + 4 * 3_600_000))
    );
    assert_eq!(window("tomorrow", "2026-12-01T12:00:00Z"), None);
}

/// Issue 16: chattering, shelving and the audit retention have sensible defaults, and
/// every bound is checked at its key.
#[test]
fn alarm_management_defaults_and_bounds() {
    let c = Config::from_toml_str(BASE, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    let a = &c.alerts;
    assert_eq!(a.chattering.activations, 5);
    assert_eq!(a.chattering.window, Duration::from_secs(60));
    assert_eq!(a.chattering.stable_for, Duration::from_secs(120));
    assert_eq!(a.audit_retention, Duration::from_secs(90 * 86_400));
    assert_eq!(
        a.shelving.max_for("ACS.FORCED_OPEN"),
        Duration::from_secs(900)
    );
    assert_eq!(
        a.shelving.max_for("VID.LOSS"),
        Duration::from_secs(8 * 3600)
    );

    let text = format!(
        r#"{BASE}
[alerts]
audit_retention = "1m"

[alerts.chattering]
activations = 1
window = "2h"
stable_for = "0s"

[alerts.shelving]
max = "10m"
life_safety_max = "30m"

[alerts.flood]
new_alerts = 0
window = "10s"
"#
    );
    let errs = Config::from_toml_str(&text, "t.toml").expect_err("rejected");
    for (path, needle) in [
        ("alerts.audit_retention", "between 1h and"),
        ("alerts.chattering.activations", "2–1000, found 1"),
        ("alerts.chattering.window", "found 2h"),
        ("alerts.chattering.stable_for", "between 1s and 1day"),
        ("alerts.shelving.life_safety_max", "at most `max` (10m)"),
        ("alerts.flood.new_alerts", "1–10000, found 0"),
        ("alerts.flood.window", "between 1m and 1day"),
    ] {
        let p = errs
            .iter()
            .find(|p| p.path == path)
            .unwrap_or_else(|| panic!("no problem at {path}:\n{errs}"));
        assert!(p.message.contains(needle), "{path}: {}", p.message);
        assert!(p.line.is_some(), "{path} has its line");
    }
}
