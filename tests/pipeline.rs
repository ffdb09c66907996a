//! The whole pipeline under load: 10,000 native events published QoS 1 arrive at the
//! city platform, decoded from protobuf, each exactly where it belongs.
//!
//! Issue text: "10,000 native events … The same against an external Mosquitto when
//! ESTATE_TEST_MQTT=host:port is set".

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use estate_protocols::model::Lane;
use estate_sim::publish;

use common::{Broker, TestEnv};

const COUNT: u64 = 10_000;
const ALARMS: u64 = 50;

async fn ten_thousand_events_arrive_upstream(broker: Broker) {
    let t0 = Instant::now();
    let mut env = TestEnv::new(broker.clone(), broker.clone());
    // Only the published events may arrive: no GW.UPLINK_DOWN from a slow first connect.
    env.down_alert_after = "1h".into();
    let city = env.city().await;
    let mut gw = env.start_gateway();
    gw.wait_connected().await;

    let report = publish::run(env.publish_options(COUNT, ALARMS))
        .await
        .expect("publisher runs");
    assert!(
        !report.incomplete && report.acked == COUNT,
        "the {} broker acknowledged every message: {report}",
        broker.kind
    );

    if let Err(e) = city
        .wait_for(|r| r.unique >= COUNT, Duration::from_secs(120))
        .await
    {
        let received = gw
            .metrics()
            .await
            .map(|m| m.n("estate_ingest_received_total", &[]))
            .unwrap_or_default();
        panic!(
            "{e:#}\n{}\n{}",
            common::broker_drop_hint(received, report.acked),
            gw.diagnostics().await
        )
    }
    // Anything still in flight lands within a moment; nothing more may arrive.
    let m = gw
        .wait_metrics(
            "every event acknowledged upstream",
            Duration::from_secs(30),
            |m| {
                m.n("estate_forward_events_total", &[]) >= COUNT
                    && m.n("estate_ingest_acked_total", &[]) >= COUNT
                    && m.n("estate_forward_backlog", &[]) == 0
            },
        )
        .await;
    let r = city.report();

    eprintln!(
        "{} broker: published {report}; city: {r}; {:.1}s in all",
        broker.kind,
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(r.decode_errors, 0, "{r}");
    assert_eq!(r.inconsistent_batches, 0, "{r}");
    assert_eq!(r.unknown_topics, 0, "{r}");
    assert_eq!(
        r.streams.len(),
        1,
        "one gateway, one store epoch: {:?}",
        r.streams
    );
    assert_eq!(r.streams[0].gateway_id, env.gateway_id);
    assert_eq!(r.streams[0].store_epoch, gw.store_epoch);
    assert_eq!(r.unique, COUNT, "{r}");
    assert_eq!(r.streams[0].max_seq, COUNT, "seq runs 1..={COUNT}: {r}");
    assert!(r.gaps.is_empty(), "seq has no gaps: {:?}", r.gaps);
    assert_eq!(r.wrong_lane, 0, "{r}");
    assert_eq!((r.alarms, r.events), (ALARMS, COUNT - ALARMS), "{r}");
    let alarm_codes: BTreeSet<&str> = r
        .received
        .iter()
        .filter(|e| e.lane == Lane::Alarms)
        .map(|e| e.code.as_str())
        .collect();
    assert_eq!(
        alarm_codes,
        BTreeSet::from(["SMOKE.ALARM"]),
        "only the smoke alarms on the alarms topic"
    );
    let smoke_alarms = r
        .received
        .iter()
        .filter(|e| e.code == "SMOKE.ALARM")
        .count();
    assert_eq!(smoke_alarms as u64, ALARMS, "every SMOKE.ALARM once");
    let all: Vec<u64> = (1..=COUNT).collect();
    let missing = r.missing_device_seqs(&all);
    assert!(
        missing.is_empty(),
        "device seqs missing upstream: {missing:?}"
    );
    assert_eq!(
        r.received.iter().filter(|e| e.device_seq.is_some()).count() as u64,
        COUNT,
        "every forwarded event carries its device seq"
    );

    assert_eq!(
        m.n("estate_ingest_acked_total", &[]),
        COUNT,
        "{}",
        m.summary()
    );
    assert_eq!(m.n("estate_dead_lettered_total", &[]), 0, "{}", m.summary());
    assert_eq!(
        m.n("estate_store_committed_total", &[("lane", "alarms")]),
        ALARMS
    );
    assert_eq!(
        m.n("estate_store_committed_total", &[("lane", "events")]),
        COUNT - ALARMS
    );
    city.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_embedded_broker() {
    ten_thousand_events_arrive_upstream(Broker::embedded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_external_broker() {
    let Some(broker) = Broker::external() else {
        common::cannot_run("pipeline_external_broker", "ESTATE_TEST_MQTT is not set");
        return;
    };
    ten_thousand_events_arrive_upstream(broker).await;
}
