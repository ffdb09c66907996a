//! The rules of `[alerts]`: codes of the taxonomy, known devices, bounded delays.

use std::time::Duration;

use estate_protocols::model::DeviceKind;
use estate_protocols::{rfc3339, taxonomy};

use super::findings::{Findings, Parts};
use crate::alerts::*;

/// The rules of `[alerts]`, against the configured devices.
pub(super) fn check(parts: &Parts, f: &mut Findings) {
    let Some(alerts) = &parts.alerts else {
        return;
    };
    let devices: Vec<_> = parts
        .devices
        .iter()
        .map(|(_, d)| {
            (
                d.id.clone(),
                d.kind,
                d.location.building.clone(),
                d.modbus.is_some(),
            )
        })
        .collect();
    for (path, message) in rules(alerts, &devices) {
        f.at(path, message);
    }
}

/// One rule violation in `[alerts]`: key path (below `alerts`) and message.
type AlertFinding = (String, String);

/// A configured device as these rules see it: (id, kind, building, has modbus).
type DeviceRow = (String, DeviceKind, String, bool);

/// The semantic rules of `[alerts]`. `devices` are the configured devices as (id, kind,
/// building, has modbus).
fn rules(a: &AlertsConfig, devices: &[DeviceRow]) -> Vec<AlertFinding> {
    let mut f: Vec<AlertFinding> = Vec::new();
    check_general(a, &mut f);
    check_severities(a, devices, &mut f);
    check_delays(a, &mut f);
    check_offline(&a.offline, &mut f);
    if let Some(e) = &a.escalation {
        check_escalation(e, &mut f);
    }
    check_correlation(a, &mut f);
    check_linkage(a, devices, &mut f);
    check_silence(a, devices, &mut f);
    check_alarm_management(a, &mut f);
    f
}

/// A code of the taxonomy (`protocols/src/taxonomy.rs`).
fn known(code: &str) -> bool {
    taxonomy::lookup(code).is_some()
}

/// The message for a code that is not in the taxonomy.
fn unknown_code(code: &str) -> String {
    format!("unknown event code {code:?}; expected a code of the taxonomy (e.g. \"SMOKE.ALARM\")")
}

/// A severity level: 1 (critical) to 4 (info).
fn level_ok(l: u8) -> bool {
    (1..=4).contains(&l)
}

/// `min_severity`, `history_max`, and `auto_close` (known codes, none of life safety).
fn check_general(a: &AlertsConfig, f: &mut Vec<AlertFinding>) {
    if !level_ok(a.min_severity) {
        f.push((
            "alerts.min_severity".into(),
            format!("must be 1–4, found {}", a.min_severity),
        ));
    }
    if a.history_max == 0 {
        f.push(("alerts.history_max".into(), "must be at least 1".into()));
    }
    for (i, code) in a.auto_close.iter().enumerate() {
        let key = format!("alerts.auto_close[{i}]");
        if !known(code) {
            f.push((key, unknown_code(code)));
        } else if is_life_safety_code(code) {
            f.push((
                key,
                format!("{code} is a life-safety code: its alerts must be closed by an operator, never automatically"),
            ));
        }
    }
}

/// `[alerts.severity]` and `[alerts.device_severity]`: known codes and devices, levels 1–4.
fn check_severities(a: &AlertsConfig, devices: &[DeviceRow], f: &mut Vec<AlertFinding>) {
    for (code, level) in &a.severity {
        let key = format!("alerts.severity.{code:?}");
        if !known(code) {
            f.push((key, unknown_code(code)));
        } else if !level_ok(*level) {
            f.push((key, format!("severity must be 1–4, found {level}")));
        }
    }
    for (device, codes) in &a.device_severity {
        if !devices.iter().any(|d| &d.0 == device) {
            f.push((
                format!("alerts.device_severity.{device:?}"),
                format!("no device {device:?} is configured in [[devices]]"),
            ));
        }
        for (code, level) in codes {
            let key = format!("alerts.device_severity.{device:?}.{code:?}");
            if !known(code) {
                f.push((key, unknown_code(code)));
            } else if !level_ok(*level) {
                f.push((key, format!("severity must be 1–4, found {level}")));
            }
        }
    }
}

/// `[alerts.debounce]` (known codes, at most 1 h) and `held_open_after` (at least 1 s).
fn check_delays(a: &AlertsConfig, f: &mut Vec<AlertFinding>) {
    for (code, d) in &a.debounce {
        let key = format!("alerts.debounce.{code:?}");
        if !known(code) {
            f.push((key, unknown_code(code)));
        } else if *d > Duration::from_secs(3600) {
            f.push((key, format!("must be at most 1h, found {}", fmt_d(*d))));
        }
    }
    if let Some(d) = a.held_open_after {
        if d < Duration::from_secs(1) {
            f.push((
                "alerts.held_open_after".into(),
                format!("must be at least 1s, found {}", fmt_d(d)),
            ));
        }
    }
}

/// `[alerts.offline]`: missed heartbeats 1–100, overall and per device class.
fn check_offline(o: &OfflineRules, f: &mut Vec<AlertFinding>) {
    if !(1..=100).contains(&o.missed_heartbeats) {
        f.push((
            "alerts.offline.missed_heartbeats".into(),
            format!("must be 1–100, found {}", o.missed_heartbeats),
        ));
    }
    for (kind, n) in &o.classes {
        if !(1..=100).contains(n) {
            f.push((
                format!("alerts.offline.classes.{kind}"),
                format!("must be 1–100, found {n}"),
            ));
        }
    }
}

/// `[alerts.escalation]`: `after` at least 1 s, `max_severity` 1–4.
fn check_escalation(e: &Escalation, f: &mut Vec<AlertFinding>) {
    if e.after < Duration::from_secs(1) {
        f.push((
            "alerts.escalation.after".into(),
            format!("must be at least 1s, found {}", fmt_d(e.after)),
        ));
    }
    if !level_ok(e.max_severity) {
        f.push((
            "alerts.escalation.max_severity".into(),
            format!("must be 1–4, found {}", e.max_severity),
        ));
    }
}

/// `[alerts.correlation.NAME]`: known codes, 2–1000 devices, a window of 1 s to 1 day, and
/// a raised code that does not feed the rule itself.
fn check_correlation(a: &AlertsConfig, f: &mut Vec<AlertFinding>) {
    for (name, c) in &a.correlation {
        let key = |k: &str| format!("alerts.correlation.{name}.{k}");
        if c.codes.is_empty() {
            f.push((key("codes"), "must name at least one code".into()));
        }
        for (i, code) in c.codes.iter().enumerate() {
            if !known(code) {
                f.push((format!("{}[{i}]", key("codes")), unknown_code(code)));
            }
        }
        if !(2..=1000).contains(&c.min_devices) {
            f.push((
                key("min_devices"),
                format!("must be 2–1000, found {}", c.min_devices),
            ));
        }
        if c.within < Duration::from_secs(1) || c.within > Duration::from_secs(86_400) {
            f.push((
                key("within"),
                format!("must be between 1s and 1day, found {}", fmt_d(c.within)),
            ));
        }
        if !known(&c.raise) {
            f.push((key("raise"), unknown_code(&c.raise)));
        } else if c.codes.contains(&c.raise) {
            f.push((
                key("raise"),
                format!(
                    "{} is also one of `codes`: the rule would feed itself",
                    c.raise
                ),
            ));
        }
    }
}

/// `[alerts.linkage.NAME]`: known alert codes and a Modbus write target that exists.
fn check_linkage(a: &AlertsConfig, devices: &[DeviceRow], f: &mut Vec<AlertFinding>) {
    for (name, l) in &a.linkage {
        let key = |k: &str| format!("alerts.linkage.{name}.{k}");
        if l.on.is_empty() {
            f.push((key("on"), "must name at least one alert code".into()));
        }
        for (i, code) in l.on.iter().enumerate() {
            if !known(code) {
                f.push((format!("{}[{i}]", key("on")), unknown_code(code)));
            }
        }
        let has_modbus = devices.iter().find(|d| d.0 == l.device).map(|d| d.3);
        let coil = super::check_write_target(
            f, &key, "linkage", &l.device, has_modbus, l.coil, l.register,
        );
        if coil && l.value > 1 {
            f.push((
                key("value"),
                format!("a coil takes 0 or 1, found {}", l.value),
            ));
        }
    }
}

/// `[alerts.silence.NAME]`: an RFC 3339 window that ends after it starts, known codes and
/// configured devices.
fn check_silence(a: &AlertsConfig, devices: &[DeviceRow], f: &mut Vec<AlertFinding>) {
    for (name, s) in &a.silence {
        let key = |k: &str| format!("alerts.silence.{name}.{k}");
        let from = rfc3339::parse_ms(&s.from);
        let until = rfc3339::parse_ms(&s.until);
        if from.is_none() {
            f.push((
                key("from"),
                format!(
                    "{:?} is not an RFC 3339 time like \"2026-12-01T08:00:00Z\"",
                    s.from
                ),
            ));
        }
        if until.is_none() {
            f.push((
                key("until"),
                format!(
                    "{:?} is not an RFC 3339 time like \"2026-12-01T12:00:00Z\"",
                    s.until
                ),
            ));
        }
        if let (Some(a), Some(b)) = (from, until) {
            if b <= a {
                f.push((key("until"), format!("must be after `from` ({})", s.from)));
            }
        }
        for (i, code) in s.codes.iter().enumerate() {
            if !known(code) {
                f.push((format!("{}[{i}]", key("codes")), unknown_code(code)));
            }
        }
        for (i, dev) in s.devices.iter().enumerate() {
            if !devices.iter().any(|d| &d.0 == dev) {
                f.push((
                    format!("{}[{i}]", key("devices")),
                    format!("no device {dev:?} is configured in [[devices]]"),
                ));
            }
        }
    }
}

/// `audit_retention` (at least 1 h), `[alerts.chattering]`, `[alerts.shelving]` and
/// `[alerts.flood]`: counts
/// and durations within their bounds.
fn check_alarm_management(a: &AlertsConfig, f: &mut Vec<AlertFinding>) {
    let s = |n: u64| Duration::from_secs(n);
    let mut within = |key: &str, d: Duration, lo: Duration, hi: Duration| {
        if d < lo || d > hi {
            f.push((
                format!("alerts.{key}"),
                format!(
                    "must be between {} and {}, found {}",
                    fmt_d(lo),
                    fmt_d(hi),
                    fmt_d(d)
                ),
            ));
        }
    };
    within(
        "audit_retention",
        a.audit_retention,
        s(3600),
        // Ten years as humantime counts them (365.25 days each), so it prints "10years".
        s(10 * 31_557_600),
    );
    let c = &a.chattering;
    within("chattering.window", c.window, s(1), s(3600));
    within("chattering.stable_for", c.stable_for, s(1), s(86_400));
    let sh = &a.shelving;
    within("shelving.max", sh.max, s(60), s(7 * 86_400));
    within(
        "shelving.life_safety_max",
        sh.life_safety_max,
        s(60),
        s(3600),
    );
    within("flood.window", a.flood.window, s(60), s(86_400));
    if !(2..=1000).contains(&c.activations) {
        f.push((
            "alerts.chattering.activations".into(),
            format!("must be 2–1000, found {}", c.activations),
        ));
    }
    if !(1..=10_000).contains(&a.flood.new_alerts) {
        f.push((
            "alerts.flood.new_alerts".into(),
            format!("must be 1–10000, found {}", a.flood.new_alerts),
        ));
    }
    if sh.life_safety_max > sh.max {
        f.push((
            "alerts.shelving.life_safety_max".into(),
            format!(
                "must be at most `max` ({}), found {}",
                fmt_d(sh.max),
                fmt_d(sh.life_safety_max)
            ),
        ));
    }
}

fn fmt_d(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}
