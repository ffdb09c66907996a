//! Alert latency benchmark: `cargo bench -p estate-gateway --bench alerts`.
//!
//! Sensor publish → alert visible on the SSE stream (`GET /api/stream`), under a
//! background load of 1,000 events/s, through a real broker (`ESTATE_BENCH_MQTT=host:port`,
//! e.g. the local Mosquitto; the embedded broker otherwise).
//!
//! - **load** — a publisher sends `DEV.HEARTBEAT` telemetry at 1,000 msg/s, QoS 1;
//! - **probes** — every 100 ms another publisher sends a `SMOKE.ALARM` from a new device
//!   (so each probe opens a new alert) and notes the instant;
//! - **gateway** — an SSE client on the gateway's API notes when each probe's alert
//!   arrives: decode, durable group commit (flush + fdatasync), rule engine, alert state
//!   written, broadcast, HTTP chunk;
//! - **baseline** — in the same run, a bare rumqttc subscriber on the same broker notes
//!   when the very same probe messages arrive (the broker's own publish → subscribe
//!   latency under the same load).
//!
//! Prints p50/p99 of both and their ratios. `BENCH_SECS` sets the duration (default 30 s,
//! 300 probes). The target is p99 < 50 ms.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

#[path = "../../tests/common/mod.rs"]
mod common;
use common::{broker, percentile, rand_id};

const ESTATE: &str = "benchalerts000000001";
const LOAD_RATE: f64 = 1_000.0;
const PROBE_EVERY: Duration = Duration::from_millis(100);

type Stamps = Arc<Mutex<HashMap<u64, Instant>>>;

fn probe_device(i: u64) -> String {
    format!("probe-{i}")
}

fn probe_index(device: &str) -> Option<u64> {
    device.strip_prefix("probe-")?.parse().ok()
}

async fn client(host: &str, port: u16, name: &str) -> (AsyncClient, rumqttc::EventLoop) {
    let mut o = MqttOptions::new(format!("bench-{name}-{:x}", rand_id()), host, port);
    o.set_inflight(100).set_keep_alive(Duration::from_secs(30));
    AsyncClient::new(o, 1000)
}

/// Telemetry at `LOAD_RATE` until `stop`.
async fn load(host: String, port: u16, stop: CancellationToken) -> (u64, Duration) {
    let (c, mut el) = client(&host, port, "load").await;
    let poller = tokio::spawn(async move { while el.poll().await.is_ok() {} });
    let start = Instant::now();
    let mut i = 0u64;
    while !stop.is_cancelled() {
        i += 1;
        let due = start + Duration::from_secs_f64((i - 1) as f64 / LOAD_RATE);
        tokio::time::sleep_until(due.into()).await;
        let topic = format!("estate/{ESTATE}/smoke/load-{}/event", i % 200);
        let body = format!(
            r#"{{"code":"DEV.HEARTBEAT","value":{},"unit":"%"}}"#,
            i % 100
        );
        if c.publish(topic, QoS::AtLeastOnce, false, body)
            .await
            .is_err()
        {
            break;
        }
    }
    let elapsed = start.elapsed();
    let _ = c.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), poller).await;
    (i, elapsed)
}

/// One probe alarm every `PROBE_EVERY`, `n` in all; records each send instant.
async fn probes(host: String, port: u16, n: u64, sent: Stamps) {
    let (c, mut el) = client(&host, port, "probe").await;
    let poller = tokio::spawn(async move { while el.poll().await.is_ok() {} });
    let start = Instant::now();
    for i in 1..=n {
        tokio::time::sleep_until((start + PROBE_EVERY * i as u32).into()).await;
        let topic = format!("estate/{ESTATE}/smoke/{}/event", probe_device(i));
        if let Ok(mut s) = sent.lock() {
            s.insert(i, Instant::now());
        }
        c.publish(topic, QoS::AtLeastOnce, false, r#"{"code":"SMOKE.ALARM"}"#)
            .await
            .expect("probe queued");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = c.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), poller).await;
}

/// The broker's own latency: a bare subscriber to the probe topics.
async fn bare_subscriber(
    host: String,
    port: u16,
    got: Stamps,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let (c, mut el) = client(&host, port, "bare").await;
    c.subscribe(format!("estate/{ESTATE}/smoke/+/event"), QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let mut ready = Some(ready);
    loop {
        match el.poll().await {
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let device = p.topic.rsplit('/').nth(1).unwrap_or("");
                if let Some(i) = probe_index(device) {
                    if let Ok(mut g) = got.lock() {
                        g.entry(i).or_insert_with(Instant::now);
                    }
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// The gateway's SSE stream: the first `alert` event of each probe device.
async fn sse(api: std::net::SocketAddr, got: Stamps, ready: tokio::sync::oneshot::Sender<()>) {
    let mut s = tokio::net::TcpStream::connect(api)
        .await
        .expect("connect API");
    s.write_all(format!("GET /api/stream HTTP/1.1\r\nHost: {api}\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut lines = BufReader::new(s).lines();
    let mut ready = Some(ready);
    let mut event = String::new();
    while let Ok(Some(l)) = lines.next_line().await {
        if l.is_empty() {
            if let Some(r) = ready.take() {
                let _ = r.send(());
            }
        } else if let Some(e) = l.strip_prefix("event: ") {
            event = e.to_owned();
        } else if let Some(d) = l.strip_prefix("data: ") {
            if event != "alert" {
                continue;
            }
            let at = Instant::now();
            let Ok(v) = serde_json::from_str::<serde_json::Value>(d) else {
                continue;
            };
            if let Some(i) = v["device_id"].as_str().and_then(probe_index) {
                if let Ok(mut g) = got.lock() {
                    g.entry(i).or_insert(at);
                }
            }
        }
    }
}

fn latencies(sent: &Stamps, got: &Stamps) -> (Vec<f64>, usize) {
    let sent = sent.lock().map(|s| s.clone()).unwrap_or_default();
    let got = got.lock().map(|g| g.clone()).unwrap_or_default();
    let mut v: Vec<f64> = sent
        .iter()
        .filter_map(|(i, t)| {
            got.get(i)
                .map(|g| g.saturating_duration_since(*t).as_secs_f64() * 1000.0)
        })
        .collect();
    v.sort_by(f64::total_cmp);
    let missing = sent.len() - v.len();
    (v, missing)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let n_probes = secs * 1000 / PROBE_EVERY.as_millis() as u64;
    let (host, port) = broker();
    println!(
        "alerts bench: {n_probes} probe alarms over {secs} s under {LOAD_RATE:.0} events/s through {host}:{port}"
    );

    let (running, shutdown, gateway, _dir) = common::start_gateway(ESTATE, &host, port).await;

    let sent: Stamps = Arc::default();
    let via_sse: Stamps = Arc::default();
    let via_broker: Stamps = Arc::default();
    let (r1, w1) = tokio::sync::oneshot::channel();
    let (r2, w2) = tokio::sync::oneshot::channel();
    let sse_task = tokio::spawn(sse(running.api_addr, via_sse.clone(), r1));
    let bare_task = tokio::spawn(bare_subscriber(host.clone(), port, via_broker.clone(), r2));
    let _ = w1.await;
    let _ = w2.await;

    let stop_load = CancellationToken::new();
    let load_task = tokio::spawn(load(host.clone(), port, stop_load.clone()));
    // Let the load settle before probing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    probes(host.clone(), port, n_probes, sent.clone()).await;
    // Late arrivals: give the last probes a moment.
    let settle = Instant::now() + Duration::from_secs(5);
    while via_sse.lock().map(|g| g.len()).unwrap_or(0) < n_probes as usize
        && Instant::now() < settle
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_load.cancel();
    let (loaded, load_time) = load_task.await.unwrap_or_default();

    let (gw, gw_missing) = latencies(&sent, &via_sse);
    let (br, br_missing) = latencies(&sent, &via_broker);
    let committed: u64 = *running.reader.committed().borrow();
    println!(
        "load      {loaded} telemetry events published ({:.0}/s); {committed} events committed",
        loaded as f64 / load_time.as_secs_f64().max(0.001)
    );
    println!(
        "baseline  broker publish → subscriber     : p50 {:>6.2} ms  p99 {:>6.2} ms  ({} samples, {br_missing} missing)",
        percentile(&br, 0.5),
        percentile(&br, 0.99),
        br.len()
    );
    println!(
        "gateway   publish → alert on SSE stream   : p50 {:>6.2} ms  p99 {:>6.2} ms  ({} samples, {gw_missing} missing)",
        percentile(&gw, 0.5),
        percentile(&gw, 0.99),
        gw.len()
    );
    println!(
        "ratio     gateway / baseline              : p50 {:>6.1}×      p99 {:>6.1}×",
        percentile(&gw, 0.5) / percentile(&br, 0.5),
        percentile(&gw, 0.99) / percentile(&br, 0.99)
    );
    println!(
        "target    p99 < 50 ms                     : {}",
        if percentile(&gw, 0.99) < 50.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    sse_task.abort();
    bare_task.abort();
    shutdown.cancel();
    let _ = gateway.await;
}
