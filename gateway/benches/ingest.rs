//! Ingest benchmark: `cargo bench -p estate-gateway --bench ingest`.
//!
//! In one run, through the same broker (`ESTATE_BENCH_MQTT=host:port`, e.g. a local
//! Mosquitto; the embedded broker otherwise):
//! 1. **baseline** — a bare rumqttc QoS 1 subscriber (acks as it receives) takes N messages;
//! 2. **gateway** — the gateway's durable ingest takes the same N messages: decode, group
//!    commit to sled (flush + fdatasync), then PUBACK;
//! 3. **latency** — at a steady 1,000 msg/s, publish → committed p50/p99.
//!
//! It prints both rates and their ratio (gateway / baseline). Ratios, not absolute
//! numbers, are what to compare across machines. `BENCH_N` sets N (default 50,000; 20,000
//! through the embedded broker, which keeps 4 MiB for a subscriber that lags).

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use estate_gateway::Running;

#[path = "../../tests/common/mod.rs"]
mod common;
use common::{broker, percentile, rand_id, start_gateway};

const ESTATE: &str = "bench0000000000000001";

fn topic(i: u64) -> String {
    format!("estate/{ESTATE}/smoke/smoke-{}/event", i % 64)
}

fn payload(i: u64) -> Vec<u8> {
    format!(
        r#"{{"code":"DEV.HEARTBEAT","value":{},"unit":"%","seq":{i}}}"#,
        i % 100
    )
    .into_bytes()
}

/// Publishes `n` QoS 1 messages, optionally at `rate` per second; returns send instants.
async fn publish(host: &str, port: u16, n: u64, rate: Option<f64>) -> Vec<Instant> {
    let mut o = MqttOptions::new(format!("bench-pub-{:x}", rand_id()), host, port);
    o.set_inflight(100).set_keep_alive(Duration::from_secs(30));
    let (client, mut el) = AsyncClient::new(o, 1000);
    let poller = tokio::spawn(async move { while el.poll().await.is_ok() {} });
    let mut sent = Vec::with_capacity(n as usize);
    let start = Instant::now();
    for i in 1..=n {
        if let Some(r) = rate {
            let due = start + Duration::from_secs_f64((i - 1) as f64 / r);
            tokio::time::sleep_until(due.into()).await;
        }
        sent.push(Instant::now());
        client
            .publish(topic(i), QoS::AtLeastOnce, false, payload(i))
            .await
            .expect("publish queued");
    }
    // Keep the connection until the broker has taken everything.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(60), poller).await;
    sent
}

async fn baseline(host: &str, port: u16, n: u64) -> f64 {
    let mut o = MqttOptions::new(format!("bench-sub-{:x}", rand_id()), host, port);
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut el) = AsyncClient::new(o, 1000);
    client
        .subscribe(format!("estate/{ESTATE}/+/+/event"), QoS::AtLeastOnce)
        .await
        .expect("subscribe queued");
    loop {
        if let Ok(Event::Incoming(Packet::SubAck(_))) = el.poll().await {
            break;
        }
    }
    let (h, p) = (host.to_owned(), port);
    let publisher = tokio::spawn(async move { publish(&h, p, n, None).await });
    let mut got = 0u64;
    let mut first = None;
    while got < n {
        match el.poll().await {
            Ok(Event::Incoming(Packet::Publish(_))) => {
                first.get_or_insert_with(Instant::now);
                got += 1;
            }
            Ok(_) => {}
            Err(e) => panic!("baseline subscriber failed: {e}"),
        }
    }
    let elapsed = first.map_or(Duration::ZERO, |f| f.elapsed());
    publisher.await.expect("publisher");
    let _ = client.disconnect().await;
    n as f64 / elapsed.as_secs_f64()
}

/// Watches the committed seq; returns (seq, when) for every change until `n`.
async fn watch_commits(running: &Running, n: u64) -> Vec<(u64, Instant)> {
    let mut rx = running.reader.committed();
    let mut out = Vec::new();
    loop {
        let s = *rx.borrow_and_update();
        if out.last().is_none_or(|(l, _)| *l != s) {
            out.push((s, Instant::now()));
        }
        if s >= n {
            return out;
        }
        if tokio::time::timeout(Duration::from_secs(30), rx.changed())
            .await
            .is_err()
        {
            panic!(
                "gateway stalled at seq {s} of {n}: the broker took every message (PUBACK) but \
                 never delivered the rest. Mosquitto drops QoS 1 messages queued for a client \
                 beyond max_queued_messages (default 1000; use \
                 config/mosquitto/estate-broker.conf), the embedded broker beyond 4 MiB (lower \
                 BENCH_N)"
            );
        }
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    // The embedded broker keeps 4 MiB of messages for a subscriber that lags
    // (`broker.rs`) and drops older ones; 50,000 of these overflow it while the gateway
    // is behind the publisher.
    let default_n = if std::env::var_os("ESTATE_BENCH_MQTT").is_some() {
        50_000
    } else {
        20_000
    };
    let n: u64 = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_n);
    let (host, port) = broker();
    println!("ingest bench: {n} QoS1 messages through {host}:{port}");

    let bare = baseline(&host, port, n).await;
    println!("baseline  bare rumqttc QoS1 subscriber : {bare:>9.0} msg/s");

    let (running, shutdown, task, _dir) = start_gateway(ESTATE, &host, port).await;
    let (h, p) = (host.clone(), port);
    let publisher = tokio::spawn(async move { publish(&h, p, n, None).await });
    let commits = watch_commits(&running, n).await;
    publisher.await.expect("publisher");
    let first = commits
        .iter()
        .find(|(s, _)| *s >= 1)
        .map(|(_, t)| *t)
        .expect("commits");
    let last = commits.last().map(|(_, t)| *t).expect("commits");
    let gw = (n - 1) as f64 / last.duration_since(first).as_secs_f64();
    let acked_deadline = Instant::now() + Duration::from_secs(30);
    while running.metrics.ingest_acked.get() < n && Instant::now() < acked_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "gateway   durable acked ingest          : {gw:>9.0} msg/s  (acked {})",
        running.metrics.ingest_acked.get()
    );
    println!(
        "ratio     gateway / baseline            : {:>9.2}",
        gw / bare
    );

    // Latency at a steady rate, on top of what is already committed.
    let m = 3_000u64;
    let base = n;
    let (h, p) = (host.clone(), port);
    let publisher = tokio::spawn(async move { publish(&h, p, m, Some(1_000.0)).await });
    let commits = watch_commits(&running, base + m).await;
    let sent = publisher.await.expect("publisher");
    let mut lat: Vec<f64> = sent
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            let seq = base + i as u64 + 1;
            commits
                .iter()
                .find(|(s, _)| *s >= seq)
                .map(|(_, c)| c.saturating_duration_since(*t).as_secs_f64() * 1000.0)
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    println!(
        "latency   publish → committed @1000/s   : p50 {:.2} ms  p99 {:.2} ms  ({} samples)",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.len()
    );
    shutdown.cancel();
    let _ = task.await;
}
