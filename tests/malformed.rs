//! Malformed sensor input is dead-lettered with the right reason, acknowledged once (no
//! redelivery loop), and never blocks the valid events behind it.

mod common;

use std::time::Duration;

use estate_protocols::model::Lane;

use common::{Broker, TestEnv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_is_dead_lettered_and_valid_events_still_flow() {
    let broker = Broker::shared();
    let env = TestEnv::new(broker.clone(), broker);
    let city = env.city().await;
    let mut gw = env.start_gateway();
    gw.wait_connected().await;

    let topic = format!("estate/{}/smoke/smoke-1-1-3/event", env.estate_id);
    // 100 KiB: over the default ingest.max_payload (64 KiB), under the embedded broker's
    // 1 MiB limit. Valid JSON, so only its size is wrong.
    let oversized = format!(
        r#"{{"code":"SMOKE.ALARM","pad":"{}"}}"#,
        "x".repeat(100 * 1024)
    );
    let bad: Vec<(&str, Vec<u8>, &str)> = vec![
        ("bad JSON", br#"{"code":"SMOKE.ALARM""#.to_vec(), "bad_json"),
        (
            "invalid UTF-8",
            b"{\"code\":\"SMOKE.\xff\xfeALARM\"}".to_vec(),
            "invalid_utf8",
        ),
        (
            "unknown code",
            br#"{"code":"SMOKE.NO_SUCH_THING"}"#.to_vec(),
            "unknown_code",
        ),
        (
            "wrong-typed field",
            br#"{"code":"SMOKE.ALARM","seq":"seventeen"}"#.to_vec(),
            "bad_field",
        ),
        (
            "JSON array",
            br#"[{"code":"SMOKE.ALARM"}]"#.to_vec(),
            "bad_json",
        ),
        ("empty event payload", Vec::new(), "bad_json"),
        ("oversized payload", oversized.into_bytes(), "too_large"),
    ];
    let mut raw = env.raw_client().await;
    for (_, payload, _) in &bad {
        raw.publish(&topic, payload.clone()).await;
    }
    raw.publish(
        &topic,
        br#"{"code":"SMOKE.ALARM","state":"active","seq":1}"#.to_vec(),
    )
    .await;
    let published = bad.len() as u64 + 1;

    let r = match city
        .wait_for(|r| r.unique >= 1, Duration::from_secs(30))
        .await
    {
        Ok(r) => r,
        Err(e) => panic!(
            "the valid alarm never arrived: {e:#}\n{}",
            gw.diagnostics().await
        ),
    };
    let alarm = &r.received[0];
    assert_eq!(
        (alarm.code.as_str(), alarm.lane, alarm.device_seq),
        ("SMOKE.ALARM", Lane::Alarms, Some(1)),
        "{alarm:?}"
    );

    let m = gw
        .wait_metrics("every input acknowledged", Duration::from_secs(30), |m| {
            m.n("estate_ingest_acked_total", &[]) >= published
        })
        .await;
    let check = |m: &common::Metrics, published: u64| {
        assert_eq!(
            m.n("estate_ingest_received_total", &[]),
            published,
            "each input received exactly once (no redelivery loop):\n{}",
            m.summary()
        );
        assert_eq!(
            m.n("estate_ingest_acked_total", &[]),
            published,
            "{}",
            m.summary()
        );
        assert_eq!(
            m.n("estate_dead_lettered_total", &[]),
            bad.len() as u64,
            "every bad input dead-lettered, nothing else:\n{}",
            m.summary()
        );
        for reason in [
            "bad_json",
            "invalid_utf8",
            "unknown_code",
            "bad_field",
            "too_large",
        ] {
            let want = bad.iter().filter(|(_, _, r)| *r == reason).count() as u64;
            let got = m.n("estate_dead_lettered_total", &[("reason", reason)]);
            let inputs: Vec<&str> = bad
                .iter()
                .filter(|(_, _, r)| *r == reason)
                .map(|(what, _, _)| *what)
                .collect();
            assert_eq!(
                got,
                want,
                "reason {reason:?} (for {inputs:?}):\n{}",
                m.summary()
            );
        }
        assert_eq!(
            m.n("estate_ingest_connected", &[]),
            1,
            "ingest stays connected"
        );
        assert_eq!(
            m.n("estate_store_committed_total", &[]),
            published - bad.len() as u64
        );
    };
    check(&m, published);

    // A round trip later, still nothing redelivered: a marker event goes through, and the
    // counts moved by exactly that one message.
    raw.publish(
        &format!("estate/{}/smoke/smoke-1-1-3/heartbeat", env.estate_id),
        br#"{"battery":88}"#.to_vec(),
    )
    .await;
    let r = match city
        .wait_for(|r| r.unique >= 2, Duration::from_secs(30))
        .await
    {
        Ok(r) => r,
        Err(e) => panic!(
            "the marker never arrived: {e:#}\n{}",
            gw.diagnostics().await
        ),
    };
    assert_eq!(r.received[1].code, "DEV.HEARTBEAT");
    let m = gw
        .wait_metrics("the marker acknowledged", Duration::from_secs(30), |m| {
            m.n("estate_ingest_acked_total", &[]) > published
        })
        .await;
    check(&m, published + 1);
    let h = gw.healthz().await.expect("/healthz");
    assert_eq!(h["ingest_connected"], true, "{h}");
    assert_eq!(r.unique, 2, "only the two valid events went upstream: {r}");
    city.shutdown().await;
}

/// Issue 13: hostile input must not flood the log. 300 bad messages of one reason leave
/// the first five in full and then a summary, while the counter stays exact and a valid
/// alarm behind them still goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_input_logs_a_few_lines_and_counts_every_one() {
    let broker = Broker::shared();
    let env = TestEnv::new(broker.clone(), broker);
    let city = env.city().await;
    let mut gw = env.start_gateway();
    gw.wait_connected().await;

    let topic = format!("estate/{}/smoke/smoke-1-1-3/event", env.estate_id);
    let flood = 300u64;
    let mut raw = env.raw_client().await;
    for i in 0..flood {
        raw.publish(
            &topic,
            format!("{{\"code\":\"SMOKE.ALARM\",{i}").into_bytes(),
        )
        .await;
    }
    raw.publish(
        &topic,
        br#"{"code":"SMOKE.ALARM","state":"active","seq":1}"#.to_vec(),
    )
    .await;
    if let Err(e) = city
        .wait_for(|r| r.unique >= 1, Duration::from_secs(30))
        .await
    {
        panic!(
            "the valid alarm never arrived: {e:#}\n{}",
            gw.diagnostics().await
        );
    }
    let m = gw
        .wait_metrics("every input acknowledged", Duration::from_secs(30), |m| {
            m.n("estate_ingest_acked_total", &[]) > flood
        })
        .await;
    assert_eq!(
        m.n("estate_dead_lettered_total", &[("reason", "bad_json")]),
        flood,
        "every bad input counted:\n{}",
        m.summary()
    );
    let log = std::fs::read_to_string(env.log_path()).expect("gateway log");
    let lines = log
        .lines()
        .filter(|l| l.contains("dead-lettered"))
        .collect::<Vec<_>>();
    assert!(
        (5..=7).contains(&lines.len()),
        "5 full lines then at most a summary or two, not one per message: {} lines\n{}",
        lines.len(),
        lines.join("\n")
    );
    assert!(
        lines.iter().any(|l| l.contains("not_logged")),
        "the summary says how many were not logged:\n{}",
        lines.join("\n")
    );
    city.shutdown().await;
}
