//! Issue 13, "nothing can block a lane": an event too big for one uplink packet goes up
//! shortened and flagged, and every alarm behind it reaches the city, also across a
//! restart; `check-config` refuses size settings that cannot work together.
//!
//! Before the fix, such an event made the uplink client refuse the batch (`Cannot send
//! packet of size …`), the forwarder reconnected every 200 ms resending the same batch,
//! and nothing behind it in its lane ever reached the city, while `/healthz` said ok.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use estate_protocols::pb;
use serde_json::Value;

use common::{Broker, EventTap, Gateway, TestEnv};

const TOKEN: &str = "oversize-token-1c7e";

/// A native smoke alarm from the demo's `smoke-1-1-3`, its JSON padded to `pad` bytes.
fn smoke_alarm(device_seq: u64, pad: usize) -> String {
    format!(
        r#"{{"code":"SMOKE.ALARM","seq":{device_seq},"pad":"{}"}}"#,
        "p".repeat(pad)
    )
}

fn smoke_topic(env: &TestEnv) -> String {
    format!("estate/{}/smoke/smoke-1-1-3/event", env.estate_id)
}

/// The smoke alarms the city received, first copy of each seq, in arrival order.
fn alarms_received(tap: &EventTap) -> Vec<(String, pb::Event)> {
    tap.of("smoke-1-1-3", "SMOKE.ALARM")
}

/// An uplink that accepts no connection: events stay in the store.
fn dead_uplink() -> Broker {
    Broker {
        host: "127.0.0.1".into(),
        port: common::reserve_port(),
        kind: "closed port",
    }
}

fn assert_healthy(h: &Value) {
    assert_eq!(h["status"], "ok", "nothing is wedged or refused: {h}");
}

/// An alarm and a telemetry event whose raw bytes (12 KiB, kept whole under the
/// `raw_limit` of the time) are three times the batch size the gateway is restarted
/// with. After the restart both go up with their raw bytes cut to fit and flagged, the
/// alarms before and after them arrive in seq order, nothing is refused, and `/healthz`
/// stays ok.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_bigger_than_a_batch_goes_up_cut_and_the_alarms_behind_it_arrive() {
    let broker = Broker::shared();
    let mut env = TestEnv::new(broker.clone(), dead_uplink());
    env.down_alert_after = "1h".into();

    // Phase 1: stored with raw bytes kept whole, uplink down.
    let mut gw = common::start_gateway_with(&env, "[ingest]\nraw_limit = \"16 KiB\"\n");
    gw.wait_subscribed().await;
    let big_alarm = smoke_alarm(2, 12 * 1024);
    let big_telemetry = format!(
        r#"{{"code":"DEV.LOW_BATT","pad":"{}"}}"#,
        "t".repeat(12 * 1024)
    );
    let mut publisher = env.raw_client().await;
    publisher
        .publish(&smoke_topic(&env), smoke_alarm(1, 10))
        .await;
    publisher
        .publish(&smoke_topic(&env), big_alarm.clone())
        .await;
    publisher
        .publish(
            &format!("estate/{}/smoke/smoke-1-1-3/event", env.estate_id),
            big_telemetry.clone(),
        )
        .await;
    publisher
        .publish(&smoke_topic(&env), smoke_alarm(3, 10))
        .await;
    gw.wait_metrics("the four events stored", Duration::from_secs(30), |m| {
        m.n("estate_ingest_acked_total", &[]) == 4
    })
    .await;
    gw.terminate();
    assert!(
        gw.wait_exit(Duration::from_secs(30)).is_some(),
        "the gateway stops on SIGTERM"
    );

    // Phase 2: restarted with batches of 4 KiB in packets of 6 KiB, uplink up.
    env.uplink = broker.clone();
    env.uplink_extra = "max_batch_bytes = \"4 KiB\"\nmax_packet_size = \"6 KiB\"".into();
    let tap = EventTap::start(&broker, &env.estate_id).await;
    let mut gw = common::start_gateway_with(&env, "[ingest]\nraw_limit = \"2 KiB\"\n");
    gw.wait_connected().await;
    for s in [4, 5] {
        publisher
            .publish(&smoke_topic(&env), smoke_alarm(s, 10))
            .await;
    }
    tap.wait_for(
        "all five smoke alarms and the big telemetry event",
        Duration::from_secs(30),
        |_| alarms_received(&tap).len() == 5 && !tap.of("smoke-1-1-3", "DEV.LOW_BATT").is_empty(),
    )
    .await;

    let alarms = alarms_received(&tap);
    let device_seqs: Vec<_> = alarms.iter().map(|(_, e)| e.device_seq).collect();
    assert_eq!(
        device_seqs,
        [1, 2, 3, 4, 5].map(Some).to_vec(),
        "alarms arrive in the order they happened"
    );
    let seqs: Vec<u64> = alarms.iter().map(|(_, e)| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seq order: {seqs:?}");
    for (topic, e) in &alarms {
        assert!(topic.ends_with("/alarms"), "{topic}");
        let big = e.device_seq == Some(2);
        assert_eq!(
            e.raw_truncated, big,
            "only the big alarm is cut: seq {}",
            e.seq
        );
        assert!(!e.text_truncated, "raw bytes were enough: seq {}", e.seq);
        if big {
            assert!(
                !e.raw.is_empty() && e.raw.len() < 4 * 1024,
                "cut to fit a 4 KiB batch: {} bytes",
                e.raw.len()
            );
            assert!(
                big_alarm.as_bytes().starts_with(&e.raw),
                "the raw bytes kept are the payload's beginning"
            );
        } else {
            assert!(e.raw.len() < 100, "small alarms go whole");
        }
    }
    let (topic, tele) = &tap.of("smoke-1-1-3", "DEV.LOW_BATT")[0];
    assert!(topic.ends_with("/events"), "{topic}");
    assert!(tele.raw_truncated && big_telemetry.as_bytes().starts_with(&tele.raw));

    let m = gw.metrics().await.expect("/metrics");
    assert_eq!(
        m.n("estate_forward_truncated_total", &[("lane", "alarms")]),
        1,
        "{}",
        m.summary()
    );
    assert_eq!(
        m.n("estate_forward_truncated_total", &[("lane", "events")]),
        1,
        "{}",
        m.summary()
    );
    assert_eq!(
        m.n("estate_uplink_refused_total", &[]),
        0,
        "{}",
        m.summary()
    );
    assert_healthy(&gw.healthz().await.expect("/healthz"));
    let log = std::fs::read_to_string(env.log_path()).unwrap_or_default();
    assert!(
        !log.contains("Cannot send packet"),
        "no publish was refused:\n{}",
        gw.log_tail(40)
    );
}

/// The broker's own limit is below `uplink.max_packet_size` (the embedded broker and
/// `config/mosquitto/estate-broker.conf` both take packets up to 1 MiB; 80 stored alarms
/// of 15 KiB make a 1.2 MB batch), so the broker drops the connection on every attempt. After three such drops the forwarder takes it as a
/// refusal: one ERROR, then the events go one per batch, whole, and all arrive in order;
/// `/healthz` is ok again once they have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_broker_drops_the_link_on_is_not_resent_forever() {
    let broker = Broker::shared();
    let mut env = TestEnv::new(broker.clone(), dead_uplink());
    env.down_alert_after = "1h".into();
    let extra = "[ingest]\nraw_limit = \"16 KiB\"\n";
    let mut gw = common::start_gateway_with(&env, extra);
    gw.wait_subscribed().await;
    let mut publisher = env.raw_client().await;
    let payloads: Vec<String> = (1..=80).map(|s| smoke_alarm(s, 15 * 1024)).collect();
    for p in &payloads {
        publisher.publish(&smoke_topic(&env), p.clone()).await;
    }
    gw.wait_metrics("the 80 alarms stored", Duration::from_secs(30), |m| {
        m.n("estate_ingest_acked_total", &[]) == 80
    })
    .await;
    gw.terminate();
    assert!(gw.wait_exit(Duration::from_secs(30)).is_some());

    env.uplink = broker.clone();
    env.uplink_extra = "max_batch_bytes = \"2 MiB\"\nmax_packet_size = \"4 MiB\"".into();
    let tap = EventTap::start(&broker, &env.estate_id).await;
    let t0 = std::time::Instant::now();
    let mut gw = common::start_gateway_with(&env, extra);
    gw.wait_connected().await;
    tap.wait_for("all 80 alarms", Duration::from_secs(60), |_| {
        alarms_received(&tap).len() == 80
    })
    .await;
    eprintln!(
        "80 alarms of 15 KiB delivered {:?} after the gateway was started ({} broker)",
        t0.elapsed(),
        broker.kind
    );
    let alarms = alarms_received(&tap);
    for (i, (_, e)) in alarms.iter().enumerate() {
        assert_eq!(e.device_seq, Some(i as u64 + 1), "in order");
        assert!(
            !e.raw_truncated && e.raw == payloads[i].as_bytes(),
            "whole: seq {}",
            e.seq
        );
    }
    let m = gw
        .wait_metrics("/healthz clear again", Duration::from_secs(10), |m| {
            m.n("estate_forward_events_total", &[("lane", "alarms")]) >= 80
        })
        .await;
    assert_eq!(
        m.n("estate_uplink_refused_total", &[]),
        1,
        "{}",
        m.summary()
    );
    assert_eq!(
        m.n("estate_forward_dead_lettered_total", &[("lane", "alarms")]),
        0
    );
    let log = std::fs::read_to_string(env.log_path()).unwrap_or_default();
    assert_eq!(
        log.matches("The uplink refused a publish").count(),
        1,
        "one ERROR:\n{}",
        gw.log_tail(40)
    );
    assert_healthy(&gw.healthz().await.expect("/healthz"));
}

async fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, Value) {
    common::post_json(addr, path, Some(TOKEN), body).await
}

/// Waits for the open alert of `code` on the API and returns its id.
async fn open_alert(gw: &Gateway, code: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = common::http_get(gw.api, "/api/alerts")
            .await
            .expect("GET /api/alerts");
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("JSON");
        let found = v["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["code"] == code)
            .and_then(|a| a["id"].as_str().map(str::to_owned));
        if let Some(id) = found {
            return id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {code} alert on the API: {v}\n{}",
            gw.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An operator closes an alert with a note longer than a whole uplink batch (1,000
/// characters, 3,000 bytes, against batches of 2 KiB). The `ALERT.UPDATE` goes up with the
/// note cut on a character boundary and flagged, and alarms raised after it, across a
/// restart, still arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_closed_with_a_long_note_goes_up_cut_and_later_alarms_arrive() {
    let broker = Broker::shared();
    let mut env = TestEnv::new(broker.clone(), broker.clone());
    env.down_alert_after = "1h".into();
    env.alerts_forward = true;
    env.uplink_extra = "max_batch_bytes = 2048\nmax_packet_size = 3072".into();
    let extra = format!("[ingest]\nraw_limit = 512\n[api]\ntoken = {TOKEN:?}\n");
    let tap = EventTap::start(&broker, &env.estate_id).await;
    let mut gw = common::start_gateway_with(&env, &extra);
    gw.wait_connected().await;

    let mut publisher = env.raw_client().await;
    publisher
        .publish(
            &format!("estate/{}/emergency_button/sos-0307/event", env.estate_id),
            r#"{"code":"SOS.PRESSED"}"#,
        )
        .await;
    let id = open_alert(&gw, "SOS.PRESSED").await;
    let note = "误报，住户按错了紧急按钮。".repeat(1000 / 13 + 1);
    let note: String = note.chars().take(1000).collect();
    assert!(note.len() > 2048, "{} bytes", note.len());
    let body = serde_json::json!({"by": "li", "disposition": "false_alarm", "note": note});
    let (status, closed) = post(
        gw.api,
        &format!("/api/alerts/{id}/close"),
        &body.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{closed}");

    // A restart in between does not wedge anything.
    gw.terminate();
    assert!(gw.wait_exit(Duration::from_secs(30)).is_some());
    let mut gw = common::start_gateway_with(&env, &extra);
    gw.wait_connected().await;
    for s in [1, 2] {
        publisher
            .publish(&smoke_topic(&env), smoke_alarm(s, 10))
            .await;
    }
    let events = tap
        .wait_for(
            "the closing update and both smoke alarms",
            Duration::from_secs(30),
            |_| alarms_received(&tap).len() == 2,
        )
        .await;

    let closing = events
        .iter()
        .map(|(_, e)| e)
        .find(|e| {
            e.alert
                .as_ref()
                .is_some_and(|a| a.alert_id == id && a.change == pb::AlertChange::Closed as i32)
        })
        .unwrap_or_else(|| panic!("no CLOSED update for {id} upstream:\n{}", gw.log_tail(40)));
    let a = closing.alert.as_ref().expect("alert");
    assert!(closing.text_truncated, "flagged as cut");
    // The update's note is "{disposition}: {note}" (alerts/mod.rs), cut from the end.
    let kept = a
        .note
        .strip_prefix("false_alarm: ")
        .unwrap_or(a.note.as_str());
    assert!(
        !kept.is_empty() && a.note.len() < 2048 && note.starts_with(kept),
        "the note's beginning, cut on a character boundary: {} bytes, {:?}… of {:?}…",
        a.note.len(),
        a.note.chars().take(20).collect::<String>(),
        note.chars().take(20).collect::<String>()
    );
    assert_eq!(
        (a.by.as_str(), a.disposition.as_str(), a.status),
        ("li", "false_alarm", pb::AlertStatus::Closed as i32),
        "only the note was cut"
    );
    let alarms = alarms_received(&tap);
    assert!(
        alarms.iter().all(|(_, e)| e.seq > closing.seq),
        "the alarms came after the update"
    );
    // The local API keeps the whole note.
    let (_, body) = common::http_get(gw.api, &format!("/api/alerts/{id}"))
        .await
        .expect("GET the alert");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["closed"]["note"], note.as_str());
    let m = gw.metrics().await.expect("/metrics");
    assert_eq!(
        m.n("estate_uplink_refused_total", &[]),
        0,
        "{}",
        m.summary()
    );
    assert_healthy(&gw.healthz().await.expect("/healthz"));
}

/// `check-config` refuses size settings that cannot work together, naming each key where
/// the file sets it.
#[test]
fn check_config_refuses_sizes_that_do_not_fit_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sizes.toml");
    std::fs::write(
        &path,
        r#"[gateway]
id = "gw-1"
estate_id = "31011500000000000001"

[ingest]
raw_limit = "16 KiB"
max_payload = "16 MiB"

[uplink]
max_batch_bytes = "8 KiB"
max_packet_size = "8 KiB"
"#,
    )
    .expect("write config");
    let file = path.display().to_string();
    let (status, stdout, stderr) = common::run_gateway_cli(&["check-config", &file]);
    assert!(!status.success(), "refused\n{stdout}\n{stderr}");
    let out = format!("{stdout}{stderr}");
    for (loc, key, words) in [
        (
            "6:13",
            "ingest.raw_limit",
            "does not fit in one uplink batch",
        ),
        (
            "7:15",
            "ingest.max_payload",
            "ingest client's packet limit of 16 MiB",
        ),
        (
            "10:19",
            "uplink.max_batch_bytes",
            "does not fit in one uplink packet",
        ),
    ] {
        let prefix = format!("{file}:{loc}: {key}: ");
        let line = out
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{out}"));
        assert!(line.contains(words), "{line:?} should say {words:?}");
    }
}
