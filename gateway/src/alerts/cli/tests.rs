//! The CLI's pure parts: the table, SSE parsing, what the follower prints, the delays.

use std::time::Duration;

use super::follow::{seconds, Backoff, Follow, FORGET_CLOSED_MS};
use super::http::api_error;
use super::sse::{SseEvent, SseParser, SSE_MAX_LINE};
use super::*;
use estate_protocols::model::{AlertStatus, Location};

fn alert() -> Alert {
    Alert {
        id: "01JDXW0000000000000000000A".into(),
        code: "SMOKE.ALARM".into(),
        title: "Smoke detected".into(),
        severity: 1,
        status: AlertStatus::Active,
        cleared: true,
        escalated: false,
        device_id: "smoke-1-1-3".into(),
        device_kind: Some("smoke".into()),
        device_name: "3F corridor".into(),
        location: Location {
            building: "1".into(),
            unit: "1".into(),
            floor: "3".into(),
            room: "301".into(),
            zone: String::new(),
        },
        count: 12,
        first_seen_ms: 1_000_000,
        last_seen_ms: 1_100_000,
        cleared_ms: Some(1_100_000),
        acknowledged: None,
        closed: None,
        actions: Vec::new(),
        opened_by_seq: 1,
        stored: true,
        city: None,
        activations: 1,
        chattering: false,
        unaudited: None,
        shelved: None,
    }
}

#[test]
fn the_table_spells_out_severity_age_status_and_location() {
    let t = table(&[alert()], 1_000_000 + 125_000);
    let lines: Vec<&str> = t.lines().collect();
    assert!(lines[0].starts_with("SEVERITY"), "{t}");
    assert!(lines[1].starts_with("1 critical"), "{t}");
    assert!(lines[1].contains("  2m  "), "{t}");
    assert!(lines[1].contains("active, cleared"), "{t}");
    assert!(
        lines[1].contains("building 1 / unit 1 / floor 3 / room 301"),
        "{t}"
    );
    assert!(lines[1].contains("3F corridor (smoke-1-1-3)"), "{t}");
    assert!(lines[1].ends_with("01JDXW0000000000000000000A"), "{t}");
    assert_eq!(table(&[], 0), "No alerts.\n");
}

#[test]
fn api_errors_carry_the_apis_message() {
    assert_eq!(
        api_error(403, r#"{"error":"read-only: no operator account, named token or api.token is configured (estate-gateway users add NAME --role operator)"}"#),
        "the API refused (403): read-only: no operator account, named token or api.token is configured (estate-gateway users add NAME --role operator)"
    );
    assert_eq!(
        api_error(502, "bad gateway\n"),
        "the API refused (502): bad gateway"
    );
}

fn ev(event: &str, data: &str) -> SseEvent {
    SseEvent {
        event: event.into(),
        data: data.into(),
    }
}

#[test]
fn sse_events_parse_across_chunks() {
    let mut p = SseParser::default();
    // A keep-alive comment, then an event cut mid-line and inside "é" (0xC3 0xA9).
    assert_eq!(p.push(b": keep-alive\n\nevent: alert\r\nda"), vec![]);
    assert_eq!(p.push(b"ta: {\"t\":\"caf\xc3"), vec![]);
    assert_eq!(
        p.push(b"\xa9\"}\r\n\r\nevent: resync\ndata:{\"missed\":3}\n\n"),
        vec![
            ev("alert", "{\"t\":\"café\"}"),
            ev("resync", "{\"missed\":3}")
        ]
    );
    // Several data lines join with '\n'; no type is `message`; `id:` is ignored.
    assert_eq!(
        p.push(b"id: 7\ndata: a\ndata:\ndata: b\n\n"),
        vec![ev("message", "a\n\nb")]
    );
    // An event without data is dropped, and its type does not leak into the next.
    assert_eq!(
        p.push(b"event: status\n\ndata: x\n\n"),
        vec![ev("message", "x")]
    );
    // An overlong line is dropped up to its end; the parser carries on.
    let mut long = b"data: ".to_vec();
    long.resize(SSE_MAX_LINE + 10, b'x');
    assert_eq!(p.push(&long), vec![]);
    assert_eq!(
        p.push(b"\nevent: alert\ndata: ok\n\n"),
        vec![ev("alert", "ok")]
    );
}

#[test]
fn reconnect_delays_double_from_half_a_second_to_ten() {
    let mut b = Backoff::default();
    let ms: Vec<u128> = (0..7).map(|_| b.next_delay().as_millis()).collect();
    assert_eq!(ms, [500, 1000, 2000, 4000, 8000, 10_000, 10_000]);
    b.reset();
    assert_eq!(b.next_delay(), Duration::from_millis(500));
    assert_eq!(seconds(Duration::from_millis(500)), "0.5 s");
    assert_eq!(seconds(Duration::from_secs(10)), "10 s");
}

fn open(id: &str, count: u64) -> Alert {
    Alert {
        id: id.into(),
        count,
        cleared: false,
        cleared_ms: None,
        last_seen_ms: 1_000_000 + count as i64,
        ..alert()
    }
}

fn acked(id: &str, count: u64) -> Alert {
    Alert {
        status: AlertStatus::Acknowledged,
        acknowledged: Some(crate::alerts::model::Acknowledged {
            by: "wang".into(),
            at_ms: 1_200_000,
            note: String::new(),
        }),
        ..open(id, count)
    }
}

fn closed(id: &str, count: u64) -> Alert {
    Alert {
        status: AlertStatus::Closed,
        closed: Some(crate::alerts::model::Closed {
            by: "li".into(),
            at_ms: 1_300_000,
            disposition: crate::alerts::model::Disposition::FalseAlarm,
            note: String::new(),
        }),
        ..acked(id, count)
    }
}

#[test]
fn repeats_fold_and_shown_changes_print() {
    let now = 2_000_000;
    let mut f = Follow::new(false, vec![], 0);
    let first = f.change(open("A", 1), now).expect("a new alert prints");
    assert!(
        first.contains("active: SMOKE.ALARM") && first.contains("×1"),
        "{first}"
    );
    // Repeats only raise the count (and last seen): nothing.
    for n in 2..=20 {
        assert_eq!(f.change(open("A", n), now), None, "repeat {n}");
    }
    // Cleared, escalated, acknowledged, severity: each is a line, with the count.
    let cleared = Alert {
        cleared: true,
        ..open("A", 20)
    };
    let line = f.change(cleared.clone(), now).expect("cleared prints");
    assert!(
        line.contains("active, cleared") && line.contains("×20"),
        "{line}"
    );
    assert_eq!(f.change(cleared.clone(), now), None, "the same again");
    let escalated = Alert {
        escalated: true,
        ..cleared
    };
    assert!(f
        .change(escalated, now)
        .expect("escalated")
        .contains("escalated"));
    let line = f.change(acked("A", 21), now).expect("acknowledged prints");
    assert!(line.contains("acknowledged by wang"), "{line}");
    let major = Alert {
        severity: 2,
        ..acked("A", 22)
    };
    assert!(f
        .change(major, now)
        .expect("severity")
        .starts_with("[2 major]"));
    // A copy from before (fewer repeats, an earlier status) is not news.
    assert_eq!(f.change(open("A", 5), now), None);
    let line = f.change(closed("A", 22), now).expect("closed prints");
    assert!(line.contains("closed (false_alarm) by li"), "{line}");
    assert_eq!(f.change(acked("A", 22), now), None, "closed stays closed");
}

#[test]
fn a_resync_prints_what_changed_meanwhile() {
    let now = 2_000_000;
    // Shown: A active, B acknowledged, C active, D active.
    let mut f = Follow::new(
        false,
        vec![open("A", 3), acked("B", 1), open("C", 1), open("D", 1)],
        now,
    );
    // Meanwhile A repeated, B unchanged, C closed, D went, E opened.
    let (lines, missing) = f.resync(vec![open("A", 9), acked("B", 1), open("E", 1)], now);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("id E"), "{lines:?}");
    assert_eq!(missing, ["C", "D"]);
    let c = f
        .looked_up("C", Some(closed("C", 1)), now)
        .expect("closed prints");
    assert!(
        c.contains("closed (false_alarm)") && c.contains("id C"),
        "{c}"
    );
    let d = f.looked_up("D", None, now).expect("gone prints");
    assert!(
        d.starts_with("[1 critical] gone from the gateway: SMOKE.ALARM"),
        "{d}"
    );
    assert!(d.ends_with("id D"), "{d}");
    // The stream's own copy of C's close, queued behind the resync: not twice.
    assert_eq!(f.change(closed("C", 1), now + 1), None);
    // A second resync with nothing new prints nothing and asks for nothing.
    let (lines, missing) = f.resync(vec![open("A", 9), acked("B", 1), open("E", 1)], now);
    assert!(
        lines.is_empty() && missing.is_empty(),
        "{lines:?} {missing:?}"
    );
    // Without --all a closed alert is forgotten a minute later.
    assert!(f.knows("C"));
    f.change(open("A", 10), now + FORGET_CLOSED_MS);
    assert!(!f.knows("C") && f.knows("A"));
}

#[test]
fn with_all_closed_alerts_stay_known() {
    let now = 2_000_000;
    let mut f = Follow::new(true, vec![closed("OLD", 1), open("A", 1)], now);
    // The history again, and an alert that opened and closed while away.
    let (lines, missing) = f.resync(
        vec![closed("OLD", 1), open("A", 1), closed("NEW", 2)],
        now + 10 * FORGET_CLOSED_MS,
    );
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("id NEW") && lines[0].contains("closed"),
        "{lines:?}"
    );
    assert!(missing.is_empty());
    // A closed alert pruned from the history is dropped without a line.
    let (lines, missing) = f.resync(vec![open("A", 1), closed("NEW", 2)], now);
    assert!(
        lines.is_empty() && missing.is_empty(),
        "{lines:?} {missing:?}"
    );
    assert!(!f.knows("OLD"));
}

#[test]
fn the_api_address_comes_from_the_flag() {
    let a = ApiArgs {
        api: Some("http://127.0.0.1:18080/".into()),
        config: None,
        token: None,
    };
    assert_eq!(api_addr(&a).expect("addr").port(), 18080);
    let bad = ApiArgs {
        api: Some("https://x".into()),
        ..a
    };
    assert!(api_addr(&bad).is_err());
}
