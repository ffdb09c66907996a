//! Uplink benchmark (issue 14): `cargo bench -p estate-gateway --bench uplink`.
//!
//! In one run, a gateway in this process, its ingest and uplink on embedded brokers:
//! 1. **batching** — telemetry at 50 ev/s (`BENCH_SECS`, default 10 s) with
//!    `uplink.linger = "0s"` and then `"1s"`: events per MQTT message on the events lane;
//! 2. **alarm latency** — alarms among that telemetry, publish → city subscriber, p50/p99,
//!    beside a bare subscriber on the same broker taking the same alarms published
//!    straight to it (the baseline), with linger off and on: the ratio must not move;
//! 3. **failover** (when `nats-server` is installed) — a 3-node NATS cluster
//!    (`tests/common/nats.rs`), the gateway on all three nodes; the node it uses is
//!    killed with SIGKILL, `BENCH_FAILOVERS` times (default 3): time from the kill to
//!    the first batch acknowledged by another node.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message as _;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;

use estate_config::Config;
use estate_gateway::Running;
use estate_protocols::model::Lane;

#[path = "../../tests/common/mod.rs"]
mod common;
use common::{percentile, rand_id};

use common::nats;

const ESTATE: &str = "benchuplink000000001";
const RATE: f64 = 50.0;

/// A gateway in this process: ingest on `ingest`, uplink on `uplink_toml` (the
/// `[uplink.mqtt]` body), `linger` for the events lane.
async fn gateway(
    id: &str,
    ingest: (String, u16),
    uplink_toml: &str,
    linger: &str,
) -> common::InProcess {
    let cfg = Config::from_toml_str(
        &format!(
            "[gateway]\nid = \"{id}\"\nestate_id = \"{ESTATE}\"\n\
             [ingest.mqtt]\nhost = \"{}\"\nport = {}\n\
             [uplink]\nlinger = \"{linger}\"\ndown_alert_after = \"1h\"\n\
             [uplink.mqtt]\nreconnect_min = \"50ms\"\nreconnect_max = \"1s\"\n{uplink_toml}\n",
            ingest.0, ingest.1,
        ),
        "bench.toml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    common::run_in_process(cfg).await
}

/// What a city subscriber counted on `city/v1/{ESTATE}/#` (and the bare topic).
#[derive(Default)]
struct City {
    event_msgs: AtomicU64,
    events: AtomicU64,
    /// Arrival instants of alarms, by the alarm's payload seq (gateway) ...
    alarms: Mutex<Vec<(u64, Instant)>>,
    /// ... and of bare messages, by their number.
    bare: Mutex<Vec<(u64, Instant)>>,
}

async fn city(host: &str, port: u16) -> Arc<City> {
    let mut o = MqttOptions::new(format!("bench-city-{:x}", rand_id()), host, port);
    o.set_max_packet_size(4 << 20, 64 << 10);
    let (client, mut el) = AsyncClient::new(o, 16);
    let c = Arc::new(City::default());
    let sink = c.clone();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        while let Ok(ev) = el.poll().await {
            match ev {
                Event::Incoming(Packet::ConnAck(_)) => {
                    let _ = client.try_subscribe(format!("city/v1/{ESTATE}/#"), QoS::AtLeastOnce);
                    let _ = client.try_subscribe("bench/bare", QoS::AtLeastOnce);
                }
                Event::Incoming(Packet::SubAck(_)) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Event::Incoming(Packet::Publish(p)) => {
                    let now = Instant::now();
                    if p.topic == "bench/bare" {
                        let n = String::from_utf8_lossy(&p.payload).parse().unwrap_or(0);
                        sink.bare.lock().expect("lock").push((n, now));
                        continue;
                    }
                    let Ok(b) = estate_protocols::pb::EventBatch::decode(p.payload.as_ref()) else {
                        continue;
                    };
                    if p.topic.ends_with("/events") {
                        sink.event_msgs.fetch_add(1, Ordering::Relaxed);
                        sink.events
                            .fetch_add(b.events.len() as u64, Ordering::Relaxed);
                    } else {
                        let mut a = sink.alarms.lock().expect("lock");
                        for e in b.events.iter().filter(|e| e.code == "SMOKE.ALARM") {
                            if let Some(v) = &e.value {
                                a.push((v.value as u64, now));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    });
    let _ = tokio::time::timeout(Duration::from_secs(10), ready_rx).await;
    c
}

/// Publishes telemetry at 50/s for `secs`, an alarm every 25th message (its `value` is
/// its number), and the same alarm's number bare to the city broker; returns the send
/// instants of the alarms and of the bare messages.
async fn load(
    ingest: (String, u16),
    uplink: (String, u16),
    secs: u64,
) -> (Vec<(u64, Instant)>, Vec<(u64, Instant)>) {
    let mut o = MqttOptions::new(format!("bench-pub-{:x}", rand_id()), &ingest.0, ingest.1);
    o.set_inflight(100);
    let (client, mut el) = AsyncClient::new(o, 1000);
    tokio::spawn(async move { while el.poll().await.is_ok() {} });
    let mut o = MqttOptions::new(format!("bench-bare-{:x}", rand_id()), &uplink.0, uplink.1);
    o.set_inflight(100);
    let (bare, mut el) = AsyncClient::new(o, 1000);
    tokio::spawn(async move { while el.poll().await.is_ok() {} });
    tokio::time::sleep(Duration::from_millis(300)).await; // both connect (setup, not timing)
    let (mut alarms, mut bares) = (Vec::new(), Vec::new());
    let start = Instant::now();
    let n = (RATE * secs as f64) as u64;
    for i in 1..=n {
        tokio::time::sleep_until((start + Duration::from_secs_f64(i as f64 / RATE)).into()).await;
        if i % 25 == 0 {
            let payload = format!(r#"{{"code":"SMOKE.ALARM","value":{i},"seq":{i}}}"#);
            alarms.push((i, Instant::now()));
            let _ = client
                .publish(
                    format!("estate/{ESTATE}/smoke/smoke-1/event"),
                    QoS::AtLeastOnce,
                    false,
                    payload,
                )
                .await;
            bares.push((i, Instant::now()));
            let _ = bare
                .publish("bench/bare", QoS::AtLeastOnce, false, i.to_string())
                .await;
        } else {
            let payload = format!(
                r#"{{"code":"DEV.HEARTBEAT","value":{},"unit":"%","seq":{i}}}"#,
                i % 100
            );
            let _ = client
                .publish(
                    format!("estate/{ESTATE}/smoke/smoke-{}/event", i % 32),
                    QoS::AtLeastOnce,
                    false,
                    payload,
                )
                .await;
        }
    }
    (alarms, bares)
}

/// p50 and p99 in ms of arrival − send, matched by number.
fn latency(sent: &[(u64, Instant)], arrived: &[(u64, Instant)]) -> (f64, f64, usize) {
    let mut ms: Vec<f64> = sent
        .iter()
        .filter_map(|(n, t)| {
            arrived
                .iter()
                .find(|(m, _)| m == n)
                .map(|(_, a)| a.duration_since(*t).as_secs_f64() * 1e3)
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    (percentile(&ms, 0.5), percentile(&ms, 0.99), ms.len())
}

async fn batching(secs: u64) {
    println!("batching and alarm latency: 50 ev/s for {secs} s, an alarm every 25th event");
    println!("linger  events/msg  alarm p50  alarm p99  bare p50  bare p99  p99 ratio");
    for linger in ["0s", "1s"] {
        let b = estate_gateway::broker::start(0).expect("embedded broker");
        let addr = (b.addr.ip().to_string(), b.addr.port());
        let city = city(&addr.0, addr.1).await;
        let (_running, shutdown, task, _dir) = gateway(
            &format!("bench-gw-{:x}", rand_id()),
            addr.clone(),
            &format!("host = \"{}\"\nport = {}", addr.0, addr.1),
            linger,
        )
        .await;
        let (alarms, bares) = load(addr.clone(), addr.clone(), secs).await;
        tokio::time::sleep(Duration::from_millis(1500)).await; // the last linger drains
        shutdown.cancel();
        let _ = task.await;
        let msgs = city.event_msgs.load(Ordering::Relaxed).max(1);
        let events = city.events.load(Ordering::Relaxed);
        let (a50, a99, an) = latency(&alarms, &city.alarms.lock().expect("lock"));
        let (b50, b99, bn) = latency(&bares, &city.bare.lock().expect("lock"));
        println!(
            "{linger:>6}  {:>10.1}  {a50:>7.2}ms  {a99:>7.2}ms  {b50:>6.2}ms  {b99:>6.2}ms  {:>8.1}   ({events} events in {msgs} messages; {an}/{} alarms, {bn} bare)",
            events as f64 / msgs as f64,
            a99 / b99,
            alarms.len()
        );
    }
}

async fn failover(reps: usize) {
    let Some(mut cluster) = nats::NatsCluster::start().await else {
        println!("failover: skipped (nats-server not installed)");
        return;
    };
    let b = estate_gateway::broker::start(0).expect("embedded broker");
    let ingest = (b.addr.ip().to_string(), b.addr.port());
    let hosts: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("\"127.0.0.1:{}\"", n.mqtt_port))
        .collect();
    let id = format!("bench-gw-{:x}", rand_id());
    let (running, shutdown, task, _dir) = gateway(
        &id,
        ingest.clone(),
        &format!("hosts = [{}]", hosts.join(", ")),
        "1s",
    )
    .await;
    // Telemetry at 50/s all along, so there is always a batch to acknowledge.
    let stop = CancellationToken::new();
    {
        let (ingest, stop) = (ingest.clone(), stop.clone());
        tokio::spawn(async move {
            let mut o = MqttOptions::new(format!("bench-pub-{:x}", rand_id()), &ingest.0, ingest.1);
            o.set_inflight(100);
            let (client, mut el) = AsyncClient::new(o, 1000);
            tokio::spawn(async move { while el.poll().await.is_ok() {} });
            let mut i = 0u64;
            while !stop.is_cancelled() {
                i += 1;
                let payload = format!(r#"{{"code":"DEV.HEARTBEAT","value":1,"seq":{i}}}"#);
                let _ = client
                    .publish(
                        format!("estate/{ESTATE}/smoke/smoke-1/event"),
                        QoS::AtLeastOnce,
                        false,
                        payload,
                    )
                    .await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
    let uplink_id = format!("estate-gw-{id}-uplink");
    let acked = |r: &Running| {
        Lane::ALL
            .iter()
            .map(|l| r.metrics.forward_batches.get_or_create(&(*l).into()).get())
            .sum::<u64>()
    };
    let mut times = Vec::new();
    for rep in 0..reps {
        let on = cluster
            .wait_node_of(&uplink_id, None, Duration::from_secs(60))
            .await;
        // Wait for an acknowledgement on this node, so the next one is another node's.
        let a0 = acked(&running);
        while acked(&running) == a0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let before = acked(&running);
        let killed = Instant::now();
        cluster.kill(on);
        while acked(&running) == before {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let t = killed.elapsed().as_secs_f64();
        let now_on = cluster.connections_of(&uplink_id).await;
        println!(
            "failover {}: node {} killed, first batch acknowledged by node {:?} after {t:.2} s",
            rep + 1,
            on + 1,
            now_on.iter().map(|i| i + 1).collect::<Vec<_>>()
        );
        times.push(t);
        if rep + 1 < reps {
            cluster.restart(on);
            cluster.wait_healthy(Duration::from_secs(90)).await;
        }
    }
    stop.cancel();
    shutdown.cancel();
    let _ = task.await;
    times.sort_by(f64::total_cmp);
    println!(
        "failover (kill -9 → first batch acknowledged elsewhere), {reps} runs: min {:.2} s, median {:.2} s, max {:.2} s",
        times[0],
        percentile(&times, 0.5),
        times[times.len() - 1]
    );
}

fn main() {
    let secs = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let reps = std::env::var("BENCH_FAILOVERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        batching(secs).await;
        failover(reps).await;
    });
}
