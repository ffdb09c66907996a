//! What the CLI prints for alerts: the table and the one-line change.

use std::fmt::Write as _;

use crate::alerts::model::Alert;

pub(super) fn severity_name(level: u8) -> &'static str {
    match level {
        1 => "1 critical",
        2 => "2 major",
        3 => "3 minor",
        _ => "4 info",
    }
}

pub(super) fn status_text(a: &Alert) -> String {
    let mut s = match &a.closed {
        Some(c) => format!("closed ({})", c.disposition.as_str()),
        None => a.status.as_str().to_owned(),
    };
    if a.cleared && a.is_open() {
        s.push_str(", cleared");
    }
    if a.escalated {
        s.push_str(", escalated");
    }
    s
}

/// "3m", "2h", "1d": how long ago.
pub(super) fn age(now_ms: i64, then_ms: i64) -> String {
    let s = (now_ms - then_ms).max(0) / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

pub(super) fn place(a: &Alert) -> String {
    let l = a.location.to_string();
    if l.is_empty() {
        "-".into()
    } else {
        l
    }
}

/// The alert table: severity, age, status, code, location spelled out, device, count, id.
pub fn table(alerts: &[Alert], now_ms: i64) -> String {
    if alerts.is_empty() {
        return "No alerts.\n".into();
    }
    let rows: Vec<[String; 8]> = alerts
        .iter()
        .map(|a| {
            let device = if a.device_name.is_empty() {
                a.device_id.clone()
            } else {
                format!("{} ({})", a.device_name, a.device_id)
            };
            [
                severity_name(a.severity).into(),
                age(now_ms, a.first_seen_ms),
                status_text(a),
                a.code.clone(),
                place(a),
                device,
                a.count.to_string(),
                a.id.clone(),
            ]
        })
        .collect();
    let header = [
        "SEVERITY", "AGE", "STATUS", "CODE", "LOCATION", "DEVICE", "COUNT", "ID",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ", w = *w);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

/// Who closed the alert, else who acknowledged it.
pub(super) fn by_whom(a: &Alert) -> Option<&str> {
    match (&a.closed, &a.acknowledged) {
        (Some(c), _) => Some(&c.by),
        (None, Some(k)) => Some(&k.by),
        _ => None,
    }
}

/// One line for a change: `[severity] status code at location (device) ×count id`.
pub fn change_line(a: &Alert, now_ms: i64) -> String {
    let who = by_whom(a).map(|b| format!(" by {b}")).unwrap_or_default();
    format!(
        "[{}] {}{who}: {} ({}) at {} — {} ×{} {} ago  id {}",
        severity_name(a.severity),
        status_text(a),
        a.code,
        a.title,
        place(a),
        a.device_id,
        a.count,
        age(now_ms, a.last_seen_ms),
        a.id
    )
}

/// The line for an alert shown open that the gateway no longer has (its store was
/// replaced, or the alert closed and was pruned while this client was away).
pub(super) fn gone_line(a: &Alert) -> String {
    format!(
        "[{}] gone from the gateway: {} ({}) at {} — {}  id {}",
        severity_name(a.severity),
        a.code,
        a.title,
        place(a),
        a.device_id,
        a.id
    )
}
