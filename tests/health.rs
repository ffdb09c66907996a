//! `/healthz` and `/metrics`: what an operator (or a supervisor) sees of a running gateway.

mod common;

use std::time::Duration;

use common::{http_get_full, Broker, TestEnv};

/// Once both brokers are reachable, `/healthz` says so in JSON, with the backlog numbers,
/// and `/metrics` exports every family dashboards and alerts are built on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_report_a_connected_gateway() {
    let broker = Broker::shared();
    let env = TestEnv::new(broker.clone(), broker);
    let mut gw = env.start_gateway();
    gw.wait_connected().await;

    let (status, headers, body) = http_get_full(gw.api, "/healthz")
        .await
        .expect("GET /healthz");
    assert_eq!(status, 200, "/healthz: {body}");
    let content_type = headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.as_str());
    assert_eq!(
        content_type,
        Some("application/json"),
        "/healthz headers: {headers:?}"
    );
    let h: serde_json::Value = serde_json::from_str(&body).expect("/healthz is JSON");
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(
        h["problems"],
        serde_json::json!([]),
        "nothing is wrong: {h}"
    );
    assert_eq!(h["ingest_connected"], true, "{h}");
    assert_eq!(h["uplink_connected"], true, "{h}");
    assert_eq!(h["gateway_id"], env.gateway_id.as_str(), "{h}");
    assert_eq!(h["estate_id"], env.estate_id.as_str(), "{h}");
    assert_eq!(h["store_epoch"], gw.store_epoch, "{h}");
    for lane in ["alarms", "events"] {
        assert!(
            h["backlog"][lane].is_u64(),
            "backlog.{lane} is a number: {h}"
        );
        assert!(h["cursor"][lane].is_u64(), "cursor.{lane} is a number: {h}");
    }

    // One event through, so every labelled family has a sample.
    let mut raw = env.raw_client().await;
    raw.publish(
        &format!("estate/{}/smoke/smoke-1-1-3/event", env.estate_id),
        r#"{"code":"SMOKE.ALARM","seq":1}"#,
    )
    .await;
    raw.publish(
        &format!("estate/{}/smoke/smoke-1-1-3/event", env.estate_id),
        "{",
    )
    .await;
    let m = gw
        .wait_metrics(
            "both inputs acknowledged, the alarm forwarded, the bad one dead-lettered",
            Duration::from_secs(30),
            |m| {
                m.n("estate_forward_events_total", &[("lane", "alarms")]) == 1
                    && m.n("estate_dead_lettered_total", &[]) == 1
                    && m.n("estate_ingest_acked_total", &[]) == 2
            },
        )
        .await;
    let h = gw.healthz().await.expect("/healthz");
    assert_eq!(h["backlog"]["alarms"], 0, "{h}");
    assert_eq!(h["cursor"]["alarms"], 1, "{h}");

    let (status, headers, text) = http_get_full(gw.api, "/metrics")
        .await
        .expect("GET /metrics");
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.contains("text")),
        "/metrics content type: {headers:?}"
    );
    for family in [
        "estate_ingest_received",
        "estate_ingest_acked",
        "estate_ingest_connected",
        "estate_dead_lettered",
        "estate_store_committed",
        "estate_forward_events",
        "estate_forward_backlog",
        "estate_uplink_connected",
    ] {
        assert!(
            m.has_family(family),
            "/metrics lacks the {family} family:\n{text}"
        );
    }
    assert_eq!(
        m.n("estate_ingest_received_total", &[]),
        2,
        "{}",
        m.summary()
    );
    assert_eq!(m.n("estate_ingest_acked_total", &[]), 2, "{}", m.summary());
    assert_eq!(
        m.n("estate_dead_lettered_total", &[("reason", "bad_json")]),
        1,
        "{}",
        m.summary()
    );
    assert_eq!(
        m.n("estate_store_committed_total", &[("lane", "alarms")]),
        1,
        "{}",
        m.summary()
    );
    assert_eq!(
        m.n("estate_forward_backlog", &[("lane", "alarms")]),
        0,
        "{}",
        m.summary()
    );
}

/// Samples `promtool check metrics` finds without HELP: the unlabelled counters, whose
/// HELP is written for the family (`# HELP estate_ingest_acked`) and not for the sample
/// (`estate_ingest_acked_total`), which the classic text format reads as another metric.
/// src/telemetry.rs fixes that on another branch; then this list goes and the test
/// asserts there are none.
const KNOWN_MISSING_HELP: &[&str] = &[
    "estate_alerts_opened_total",
    "estate_ingest_acked_total",
    "estate_ingest_acked_unstored_total",
    "estate_ingest_received_total",
    "estate_ingest_unregistered_total",
    "estate_store_errors_total",
    "estate_store_not_stored_total",
    "estate_uplink_refused_total",
];

/// Every metric on `/metrics` says what it counts: a non-empty HELP, read by a maintained
/// Prometheus text parser the way `promtool check metrics` reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_has_help() {
    let broker = Broker::shared();
    let env = TestEnv::new(broker.clone(), broker);
    let mut gw = env.start_gateway();
    gw.wait_connected().await;
    let (status, _, text) = http_get_full(gw.api, "/metrics")
        .await
        .expect("GET /metrics");
    assert_eq!(status, 200);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("/metrics parses as Prometheus text");
    assert!(!scrape.samples.is_empty(), "/metrics has samples:\n{text}");
    let help = |name: &str| {
        scrape
            .docs
            .get(name)
            .map(|h| h.trim())
            .is_some_and(|h| !h.is_empty())
    };
    // Each family has a HELP of its own (OpenMetrics: `x_total` belongs to `x`), and each
    // sample one under its own name (the classic text format; histogram parts belong to
    // their histogram).
    let mut no_family_help = Vec::new();
    let mut missing = Vec::new();
    for sample in &scrape.samples {
        let name = sample.metric.as_str();
        let base = |suffixes: &[&str]| {
            suffixes
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name)
        };
        let histogram_part = base(&["_count", "_sum", "_bucket"]);
        let of_family = base(&["_total", "_created", "_info", "_count", "_sum", "_bucket"]);
        if !help(of_family) && !help(name) && !no_family_help.contains(&of_family) {
            no_family_help.push(of_family);
        }
        if !help(name) && !help(histogram_part) && !missing.contains(&name) {
            missing.push(name);
        }
    }
    assert_eq!(
        no_family_help,
        Vec::<&str>::new(),
        "metric families without HELP:\n{text}"
    );
    missing.sort_unstable();
    println!("metrics without HELP of their own: {missing:?}");
    assert_eq!(
        missing, KNOWN_MISSING_HELP,
        "metrics without HELP (or no longer missing one; then shorten KNOWN_MISSING_HELP):\n{text}"
    );
}
