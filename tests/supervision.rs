//! Supervised stages (issue 13: the alerts stage could die and the gateway ran on without
//! local alerts, `/healthz` ok). The real gateway binary (a debug build, which has the
//! test-only fault hook `ESTATE_GATEWAY_TEST_ALERTS_PANIC`), a real broker:
//!
//! - an alerts stage that fails once is restarted in place: `/healthz` says so, the alarm
//!   it failed on and a later one both open alerts, the process keeps running;
//! - an alerts stage that fails every time makes `/healthz` answer 503 while alarms
//!   still reach the city, and then the gateway gives up and exits non-zero (for systemd
//!   to restart it).

mod common;

use std::time::{Duration, Instant};

use serde_json::Value;

use common::{Broker, EventTap, Gateway, TestEnv};

const HOOK: &str = "ESTATE_GATEWAY_TEST_ALERTS_PANIC";

fn env() -> TestEnv {
    let broker = Broker::shared();
    let mut env = TestEnv::new(broker.clone(), broker);
    env.down_alert_after = "1h".into();
    env
}

fn start(env: &TestEnv, hook: &str) -> Gateway {
    let config = env.write_config();
    Gateway::start_with_env(&config, &env.data_dir(), &env.log_path(), &[(HOOK, hook)])
        .unwrap_or_else(|e| panic!("{e:#}\n{}", common::log_tail(&env.log_path(), 60)))
}

async fn publish(env: &TestEnv, kind: &str, device: &str, code: &str) {
    let mut p = env.raw_client().await;
    p.publish(
        &format!("estate/{}/{kind}/{device}/event", env.estate_id),
        format!(r#"{{"code":"{code}"}}"#),
    )
    .await;
}

fn has_alert(v: &Value, device: &str, code: &str) -> bool {
    v["alerts"].as_array().is_some_and(|a| {
        a.iter()
            .any(|a| a["device_id"] == device && a["code"] == code)
    })
}

/// Polls until `pred` holds on `GET /api/alerts`; panics after 30 s.
async fn wait_alerts(gw: &mut Gateway, what: &str, pred: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = common::http_get(gw.api, "/api/alerts").await.expect("GET");
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if status == 200 && pred(&v) {
            return;
        }
        if let Some(s) = gw.try_exit_status() {
            panic!(
                "gateway exited ({s}) waiting for {what}\n{}",
                gw.log_tail(60)
            );
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {v:#}\n{}",
            gw.log_tail(60)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn problem<'a>(health: &'a Value, key: &str) -> Option<&'a Value> {
    health["problems"]
        .as_array()?
        .iter()
        .find(|p| p["key"] == key)
}

/// Issue 13: the alerts stage fails once (the fault hook panics it on the smoke alarm);
/// it is restarted from the store, the alarm it failed on opens its alert (replayed), a
/// later alarm opens one too, and `/healthz` reports the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_alerts_stage_is_restarted_and_alerts_keep_opening() {
    let env = env();
    let mut gw = start(&env, "smoke-1-1-3");
    gw.wait_subscribed().await;
    publish(&env, "smoke", "smoke-1-1-3", "SMOKE.ALARM").await;
    wait_alerts(&mut gw, "the alarm the stage failed on", |v| {
        has_alert(v, "smoke-1-1-3", "SMOKE.ALARM")
    })
    .await;

    let health = gw.healthz().await.expect("healthz");
    assert_ne!(health["status"], "ok", "{health:#}");
    let p = problem(&health, "stage.alerts").unwrap_or_else(|| panic!("{health:#}"));
    let reason = p["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("restarted after a failure") && reason.contains("test fault hook"),
        "{health:#}"
    );
    let m = gw.metrics().await.expect("metrics");
    assert_eq!(
        m.n("estate_stage_restarts_total", &[("stage", "alerts")]),
        1,
        "{}",
        m.summary()
    );
    assert!(gw.log_tail(400).contains("Alerts stage failed"));

    // A later alarm, handled by the restarted stage.
    publish(&env, "emergency_button", "sos-0307", "SOS.PRESSED").await;
    wait_alerts(&mut gw, "the later alarm", |v| {
        has_alert(v, "sos-0307", "SOS.PRESSED") && has_alert(v, "smoke-1-1-3", "SMOKE.ALARM")
    })
    .await;
    assert!(gw.try_exit_status().is_none(), "the gateway keeps running");
    gw.terminate();
    assert_eq!(
        gw.wait_exit(Duration::from_secs(20)).map(|s| s.success()),
        Some(true)
    );
}

/// Issue 13: an alerts stage that fails on every attempt: `/healthz` answers 503 naming
/// it, alarms are still forwarded, and the gateway then stops with a non-zero exit so
/// that systemd restarts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alerts_stage_that_keeps_failing_stops_the_gateway_non_zero() {
    let env = env();
    let tap = EventTap::start(&env.uplink, &env.estate_id).await;
    let mut gw = start(&env, "smoke-1-1-3:always");
    gw.wait_subscribed().await;
    publish(&env, "smoke", "smoke-1-1-3", "SMOKE.ALARM").await;

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = common::http_get(gw.api, "/healthz").await.expect("healthz");
        if status == 503 {
            let v: Value = serde_json::from_str(&body).expect("json");
            assert_eq!(v["status"], "failed");
            let p = problem(&v, "stage.alerts").unwrap_or_else(|| panic!("{v:#}"));
            assert_eq!(p["status"], "failed");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no 503 from /healthz: {body}\n{}",
            gw.log_tail(60)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Ingest and the uplink do not depend on the alerts stage.
    tap.wait_for("the alarm upstream", Duration::from_secs(30), |_| {
        !tap.of("smoke-1-1-3", "SMOKE.ALARM").is_empty()
    })
    .await;

    // Restarts at 0.25 + 0.5 + 1 + 2 + 4 s, then it gives up.
    let status = gw
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("still running\n{}", gw.log_tail(60)));
    assert_eq!(status.code(), Some(1), "{}", gw.log_tail(60));
    let log = gw.log_tail(400);
    assert!(log.contains("Alerts stage keeps failing"), "{log}");
}
