//! The refusal path against a real (embedded) broker and a real store: what happens when
//! the uplink client refuses a publish that [`super::batch`] believed would fit. Only a
//! test can make the two disagree, by lowering the client's limit behind the packer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;

use estate_config::Config;
use estate_protocols::model::{DeviceKind, Event, EventState, Severity, Source};
use estate_protocols::pb;

use super::{Forwarder, HEALTH_KEY};
use crate::store::{self, StoreOptions};
use crate::telemetry::Metrics;

fn alarm(device: &str, raw_len: usize) -> Event {
    Event {
        seq: 0,
        event_id: ulid::Ulid::new().to_string(),
        gateway_id: "gw-r".into(),
        estate_id: "E-refuse".into(),
        device_id: device.into(),
        device_kind: Some(DeviceKind::Smoke),
        code: "SMOKE.ALARM".into(),
        severity: Severity::Critical,
        state: EventState::Active,
        location: Default::default(),
        device_time_ms: None,
        gateway_time_ms: 1,
        value: None,
        source: Source {
            protocol: "mqtt".into(),
            reference: "estate/E-refuse/smoke/d/event".into(),
        },
        raw: Bytes::from(vec![b'r'; raw_len]),
        raw_truncated: false,
        registered: true,
        device_seq: None,
        alert: None,
    }
}

/// Every event published on the estate's alarms topic, in arrival order.
async fn subscribe(port: u16) -> (Arc<Mutex<Vec<pb::Event>>>, tokio::task::JoinHandle<()>) {
    let mut o = MqttOptions::new(format!("city-{}", ulid::Ulid::new()), "127.0.0.1", port);
    o.set_max_packet_size(1 << 20, 1 << 16);
    let (client, mut eventloop) = AsyncClient::new(o, 16);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        loop {
            match eventloop.poll().await {
                Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.try_subscribe("city/v1/E-refuse/alarms", QoS::AtLeastOnce);
                }
                Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                    if let Ok(b) = pb::EventBatch::decode(p.payload.as_ref()) {
                        sink.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .extend(b.events);
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    let _ = tokio::time::timeout(Duration::from_secs(10), ready_rx).await;
    (seen, task)
}

/// Issue 13: the client refuses a batch of ten alarms. One ERROR, counted, `/healthz`
/// degraded; the ten go up again one by one, whole. An eleventh alarm refused alone, and
/// again as its envelope (a device id longer than the client's packet), is given up on:
/// dead-lettered and announced by `GW.UPLINK_REFUSED` naming its seq, and the alarm
/// after it arrives. Three reconnects, not a loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_publish_is_resent_as_envelopes_and_an_unsendable_event_is_given_up_on() {
    let broker = crate::broker::start(0).expect("embedded broker");
    let port = broker.addr.port();
    let cfg = Config::from_toml_str(
        &format!(
            "[gateway]\nid = \"gw-r\"\nestate_id = \"E-refuse\"\n\
             [uplink]\nmax_batch_bytes = \"32 KiB\"\nmax_packet_size = \"64 KiB\"\n\
             [uplink.mqtt]\nport = {port}\nreconnect_min = \"50ms\"\nreconnect_max = \"1s\"\n"
        ),
        "t.toml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut fwd = Forwarder::new(&cfg, "boot-r").expect("forwarder");
    // The client now refuses what the packer builds for 64 KiB packets.
    fwd.endpoints.configure(|o| {
        o.set_max_packet_size(64 * 1024, 3000);
    });

    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = Arc::new(Metrics::new());
    let (handle, reader, writer) =
        store::open(dir.path(), StoreOptions::from_config(&cfg), metrics.clone()).expect("opens");
    let writer = tokio::task::spawn_blocking(move || writer.run());
    let (seen, sub) = subscribe(port).await;

    let mut pending = Vec::new();
    for _ in 0..10 {
        pending.push(handle.append(alarm("smoke-1", 1000)).await.expect("queued"));
    }
    pending.push(
        handle
            .append(alarm(&"x".repeat(4000), 10))
            .await
            .expect("queued"),
    );
    pending.push(handle.append(alarm("smoke-2", 10)).await.expect("queued"));
    let mut seqs = Vec::new();
    for p in pending {
        seqs.push(p.await.expect("answered").expect("committed"));
    }
    let (unsendable, last) = (seqs[10], seqs[11]);

    let stop = CancellationToken::new();
    let run = tokio::spawn(fwd.run(
        reader.clone(),
        handle.clone(),
        metrics.clone(),
        stop.clone(),
        Duration::from_secs(1),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let received = loop {
        let got: Vec<pb::Event> = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let has_all = seqs
            .iter()
            .filter(|s| **s != unsendable)
            .all(|s| got.iter().any(|e| e.seq == *s));
        if has_all && got.iter().any(|e| e.code == "GW.UPLINK_REFUSED") {
            break got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not everything arrived: {:?}",
            got.iter().map(|e| (e.seq, &e.code)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    assert!(
        received.iter().all(|e| e.seq != unsendable),
        "the unsendable alarm never went up"
    );
    for e in received.iter().filter(|e| seqs[..10].contains(&e.seq)) {
        assert!(
            e.raw.len() == 1000 && !e.raw_truncated && !e.text_truncated,
            "resent whole: seq {}",
            e.seq
        );
        assert_eq!(
            (e.code.as_str(), e.device_id.as_str()),
            ("SMOKE.ALARM", "smoke-1")
        );
    }
    let refused = received
        .iter()
        .find(|e| e.code == "GW.UPLINK_REFUSED")
        .expect("announced");
    let detail: serde_json::Value = serde_json::from_slice(&refused.raw).expect("JSON detail");
    assert_eq!(detail["seq"], unsendable, "{detail}");
    assert_eq!(detail["code"], "SMOKE.ALARM", "{detail}");
    assert!(
        received.iter().any(|e| e.seq == last),
        "the alarm behind it arrived"
    );

    assert_eq!(
        metrics
            .forward_dead_lettered
            .get_or_create(&estate_protocols::model::Lane::Alarms.into())
            .get(),
        1
    );
    let refusals = metrics.uplink_refused.get();
    assert_eq!(
        refusals, 3,
        "the batch, the unsendable alarm alone, and its envelope"
    );
    assert!(metrics.health.is_set(HEALTH_KEY), "/healthz says degraded");
    let letters = reader.dead_letters(10).expect("dead letters");
    assert!(
        letters
            .iter()
            .any(|d| d.reason.starts_with("uplink refused") && d.source.ends_with("/alarms")),
        "{letters:?}"
    );
    // The lane's cursor passed the unsendable alarm.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while reader.cursor(estate_protocols::model::Lane::Alarms) < last {
        assert!(tokio::time::Instant::now() < deadline, "cursor stuck");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), run).await;
    sub.abort();
    drop(handle);
    drop(writer);
}

/// Every batch published under `filter`, with its topic, in arrival order.
async fn batches(
    port: u16,
    filter: &str,
) -> (
    Arc<Mutex<Vec<(String, pb::EventBatch)>>>,
    tokio::task::JoinHandle<()>,
) {
    let mut o = MqttOptions::new(format!("city-{}", ulid::Ulid::new()), "127.0.0.1", port);
    o.set_max_packet_size(1 << 20, 1 << 16);
    let (client, mut eventloop) = AsyncClient::new(o, 16);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let filter = filter.to_owned();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        loop {
            match eventloop.poll().await {
                Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.try_subscribe(filter.as_str(), QoS::AtLeastOnce);
                }
                Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                    if let Ok(b) = pb::EventBatch::decode(p.payload.as_ref()) {
                        sink.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((p.topic.clone(), b));
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    let _ = tokio::time::timeout(Duration::from_secs(10), ready_rx).await;
    (seen, task)
}

/// Issue 14: with `uplink.linger`, telemetry committed one event at a time goes up in a
/// batch, not one message per event (with `"0s"`: 39 events in 29 messages), while an
/// alarm committed in the middle does not wait: it arrives before the batch that holds
/// the telemetry committed before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_lane_lingers_for_a_full_batch_and_alarms_never_wait() {
    let broker = crate::broker::start(0).expect("embedded broker");
    let port = broker.addr.port();
    let cfg = Config::from_toml_str(
        &format!(
            "[gateway]\nid = \"gw-l\"\nestate_id = \"E-linger\"\n\
             [uplink]\nlinger = \"2s\"\n[uplink.mqtt]\nport = {port}\n"
        ),
        "t.toml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let fwd = Forwarder::new(&cfg, "boot-l").expect("forwarder");
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = Arc::new(Metrics::new());
    let (handle, reader, writer) =
        store::open(dir.path(), StoreOptions::from_config(&cfg), metrics.clone()).expect("opens");
    let writer = tokio::task::spawn_blocking(move || writer.run());
    let (seen, sub) = batches(port, "city/v1/E-linger/#").await;
    let stop = CancellationToken::new();
    let run = tokio::spawn(fwd.run(
        reader.clone(),
        handle.clone(),
        metrics.clone(),
        stop.clone(),
        Duration::from_secs(1),
    ));

    let telemetry = |n: u64| Event {
        code: "DEV.HEARTBEAT".into(),
        severity: Severity::Info,
        device_kind: Some(DeviceKind::WaterLeak),
        device_id: format!("leak-{n}"),
        ..alarm("x", 10)
    };
    // One commit at a time, each awaited: without linger, one message each.
    let mut seqs = Vec::new();
    for n in 0..40 {
        let ev = if n == 20 {
            alarm("smoke-1", 10)
        } else {
            telemetry(n)
        };
        let p = handle.append(ev).await.expect("queued");
        seqs.push(p.await.expect("answered").expect("committed"));
    }
    let alarm_seq = seqs[20];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let got = loop {
        let got = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let n: usize = got.iter().map(|(_, b)| b.events.len()).sum();
        if n >= 40 {
            break got;
        }
        assert!(tokio::time::Instant::now() < deadline, "{n} of 40 arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let events_msgs: Vec<&pb::EventBatch> = got
        .iter()
        .filter(|(t, _)| t.ends_with("/events"))
        .map(|(_, b)| b)
        .collect();
    assert!(
        events_msgs.len() <= 2,
        "39 telemetry events in {} messages (sizes {:?})",
        events_msgs.len(),
        events_msgs
            .iter()
            .map(|b| b.events.len())
            .collect::<Vec<_>>()
    );
    let alarm_at = got
        .iter()
        .position(|(_, b)| b.events.iter().any(|e| e.seq == alarm_seq))
        .expect("the alarm arrived");
    let first_telemetry_at = got
        .iter()
        .position(|(_, b)| b.events.iter().any(|e| e.seq == seqs[0]))
        .expect("the first telemetry arrived");
    assert!(
        alarm_at < first_telemetry_at,
        "the alarm went ahead of the telemetry lingering before it"
    );

    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), run).await;
    sub.abort();
    drop(handle);
    drop(writer);
}
