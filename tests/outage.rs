//! An uplink outage loses nothing: events committed while the city broker is unreachable
//! are all delivered when it comes back, alarms ahead of the telemetry backlog, and the
//! outage itself is reported upstream as `GW.UPLINK_DOWN` (active, then cleared).

mod common;

use std::time::Duration;

use estate_protocols::model::Lane;
use estate_protocols::pb::EventState;
use estate_sim::publish;

use common::{reserve_port, start_proxy, Broker, EventTap, TestEnv};

const COUNT: u64 = 5_000;
const ALARMS: u64 = 25;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_committed_during_an_uplink_outage_are_delivered_alarms_first() {
    // Ingest on the shared broker; the uplink is a second, embedded broker that the
    // gateway can only reach through a proxy which starts listening late.
    let ingest = Broker::shared();
    let city_broker = Broker::embedded();
    let proxy_port = reserve_port();
    let uplink = Broker {
        host: "127.0.0.1".into(),
        port: proxy_port,
        kind: "proxied",
    };
    let env = TestEnv::new(ingest, uplink);
    assert_eq!(env.down_alert_after, "1s");
    let city = env.city_on(&city_broker).await;
    let tap = EventTap::start(&city_broker, &env.estate_id).await;
    let mut gw = env.start_gateway();
    gw.wait_subscribed().await;

    let report = publish::run(env.publish_options(COUNT, ALARMS))
        .await
        .expect("publisher runs");
    assert!(!report.incomplete && report.acked == COUNT, "{report}");

    // Everything committed, plus the gateway's own GW.UPLINK_DOWN (an alarm).
    let m = gw
        .wait_metrics(
            "5,000 events and GW.UPLINK_DOWN committed while the uplink is down",
            Duration::from_secs(90),
            |m| {
                m.n("estate_store_committed_total", &[("lane", "alarms")]) > ALARMS
                    && m.n("estate_store_committed_total", &[]) > COUNT
            },
        )
        .await;
    assert_eq!(m.n("estate_uplink_connected", &[]), 0, "{}", m.summary());
    assert_eq!(
        m.n("estate_forward_events_total", &[]),
        0,
        "{}",
        m.summary()
    );
    // Nothing was forwarded yet, so the outage's events are exactly seqs 1..=backlog.
    let h = gw.healthz().await.expect("/healthz");
    assert_eq!(h["uplink_connected"], false, "{h}");
    assert_eq!(
        h["ingest_connected"], true,
        "ingest does not stall on the outage: {h}"
    );
    let backlog_alarms = h["backlog"]["alarms"].as_u64().expect("backlog.alarms");
    let backlog_events = h["backlog"]["events"].as_u64().expect("backlog.events");
    assert_eq!(
        (backlog_alarms, backlog_events),
        (ALARMS + 1, COUNT - ALARMS),
        "{h}"
    );
    let outage_last_seq = backlog_alarms + backlog_events;

    // The uplink comes back.
    let _proxy = start_proxy(proxy_port, city_broker.addr()).await;

    // The 5,000 events, GW.UPLINK_DOWN active and its cleared twin.
    let want = COUNT + 2;
    let r = match city
        .wait_for(|r| r.unique >= want, Duration::from_secs(120))
        .await
    {
        Ok(r) => r,
        Err(e) => panic!("{e:#}\n{}", gw.diagnostics().await),
    };
    eprintln!("city: {r}");
    let missing = r.missing_device_seqs(&report.acked_seqs);
    assert!(
        missing.is_empty(),
        "acked events never delivered: {missing:?}"
    );
    assert!(r.gaps.is_empty(), "gaps {:?}", r.gaps);
    assert_eq!(r.unique, want, "{r}");
    assert_eq!(r.wrong_lane, 0, "{r}");
    assert_eq!((r.alarms, r.events), (ALARMS + 2, COUNT - ALARMS), "{r}");

    // Alarms first: every alarm committed during the outage arrived before any of the
    // backlog's telemetry.
    let outage = |lane: Lane| {
        r.received
            .iter()
            .filter(move |e| e.lane == lane && e.seq <= outage_last_seq)
            .map(|e| e.arrival)
    };
    let last_alarm = outage(Lane::Alarms).max().expect("outage alarms arrived");
    let first_event = outage(Lane::Events)
        .min()
        .expect("outage telemetry arrived");
    assert!(
        last_alarm < first_event,
        "the last outage alarm arrived at position {last_alarm}, after the first backlog telemetry at {first_event}"
    );

    // GW.UPLINK_DOWN: raised during the outage, cleared once the uplink is back.
    let tapped = tap
        .wait_for(
            "GW.UPLINK_DOWN active and cleared",
            Duration::from_secs(30),
            |t| t.iter().filter(|(_, e)| e.code == "GW.UPLINK_DOWN").count() >= 2,
        )
        .await;
    let down: Vec<_> = tapped
        .iter()
        .filter(|(_, e)| e.code == "GW.UPLINK_DOWN")
        .collect();
    let active: Vec<_> = down
        .iter()
        .filter(|(_, e)| e.state() == EventState::Active)
        .collect();
    let cleared: Vec<_> = down
        .iter()
        .filter(|(_, e)| e.state() == EventState::Cleared)
        .collect();
    assert_eq!(active.len(), 1, "one GW.UPLINK_DOWN active: {down:?}");
    assert_eq!(cleared.len(), 1, "one GW.UPLINK_DOWN cleared: {down:?}");
    assert!(
        active[0].1.seq <= outage_last_seq,
        "raised during the outage: {down:?}"
    );
    assert!(
        cleared[0].1.seq > active[0].1.seq,
        "cleared after it was raised: {down:?}"
    );
    assert!(
        down.iter().all(|(topic, _)| topic.ends_with("/alarms")),
        "GW.UPLINK_DOWN goes on the alarms topic: {down:?}"
    );
    city.shutdown().await;
}
