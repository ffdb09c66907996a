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
    // As a string: JavaScript and jq round a 64-bit number.
    assert_eq!(h["store_epoch"], gw.store_epoch.to_string().as_str(), "{h}");
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

    // stderr is a file here, not a terminal: the log is plain text, no colour codes.
    let log = std::fs::read_to_string(env.log_path()).expect("gateway log");
    assert!(!log.is_empty(), "the gateway logged something");
    assert!(
        !log.contains("\x1b["),
        "ANSI escape codes in a log written to a file:\n{log}"
    );
}

/// Every metric on `/metrics` says what it counts, the way `promtool check metrics` reads
/// the classic text format: each sample's metric (a histogram's parts belong to their
/// histogram) has a non-empty HELP and a TYPE of its own name and of its kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_has_help_and_type() {
    let broker = Broker::shared();
    let env = TestEnv::new(broker.clone(), broker);
    let mut gw = env.start_gateway();
    gw.wait_connected().await;
    let (status, headers, text) = http_get_full(gw.api, "/metrics")
        .await
        .expect("GET /metrics");
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("text/plain; version=0.0.4")),
        "/metrics without Accept is the classic text format: {headers:?}"
    );
    assert!(!text.contains("# EOF"), "no OpenMetrics trailer:\n{text}");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("/metrics parses as Prometheus text");
    assert!(!scrape.samples.is_empty(), "/metrics has samples:\n{text}");
    let types: std::collections::HashMap<&str, &str> = text
        .lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("# TYPE ")?.split_whitespace();
            Some((w.next()?, w.next()?))
        })
        .collect();
    let mut wrong = Vec::new();
    for sample in &scrape.samples {
        let name = sample.metric.as_str();
        let kind = match sample.value {
            prometheus_parse::Value::Counter(_) => "counter",
            prometheus_parse::Value::Gauge(_) => "gauge",
            prometheus_parse::Value::Histogram(_) => "histogram",
            prometheus_parse::Value::Summary(_) => "summary",
            prometheus_parse::Value::Untyped(_) => "untyped",
        };
        // A histogram's `_sum` and `_count` are its parts, typed and helped under its name.
        let (name, kind) = match ["_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)) {
            Some(base) if types.get(base) == Some(&"histogram") => (base, "histogram"),
            _ => (name, kind),
        };
        let helped = scrape.docs.get(name).is_some_and(|h| !h.trim().is_empty());
        let typed = types.get(name) == Some(&kind) && kind != "untyped";
        if (!helped || !typed) && !wrong.contains(&name) {
            wrong.push(name);
        }
    }
    assert_eq!(
        wrong,
        Vec::<&str>::new(),
        "metrics without HELP or a TYPE of their own:\n{text}"
    );

    // OpenMetrics stays one Accept header away.
    let (status, headers, om) = common::http_request_full(
        gw.api,
        "GET",
        "/metrics",
        &[("accept", "application/openmetrics-text; version=1.0.0")],
        "",
    )
    .await
    .expect("GET /metrics (OpenMetrics)");
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("application/openmetrics-text")),
        "{headers:?}"
    );
    assert!(om.trim_end().ends_with("# EOF"), "{om}");
}
