//! A full disk (issue 13, item 4): the real gateway binary on a small tmpfs the test
//! mounts (root needed; with `CI=1` set a failed mount fails the test instead of skipping
//! it).
//!
//! - the disk is filled while the gateway runs: N alarms sent then open N local alerts
//!   marked not stored, `/healthz` says degraded with the reason, GW.DISK_LOW is raised;
//!   space is freed: without a restart the alarms are stored (the broker redelivered
//!   them) and forwarded, the alerts turn stored; SIGTERM while full ends the gateway
//!   within its grace period;
//! - a backlog beyond `store.disk_budget` (uplink down) keeps the data folder's real size
//!   within the stated tolerance of the budget, evicting telemetry, never alarms.

mod common;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{Broker, EventTap, Gateway, TestEnv};

/// A tmpfs mounted for one test; unmounted on drop.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `mib` MiB at `path`; `None` (skip) when that is impossible and
    /// `CI` is not set.
    fn mount(path: &Path, mib: u64) -> Option<SmallDisk> {
        std::fs::create_dir_all(path).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m")])
            .arg("tmpfs")
            .arg(path)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(SmallDisk {
                path: path.to_path_buf(),
            }),
            other => {
                let why = format!("cannot mount a tmpfs (root needed): {other:?}");
                common::cannot_run("a disk-full test", &why);
                None
            }
        }
    }

    /// Writes a file until the filesystem is full.
    fn fill(&self) -> PathBuf {
        let p = self.path.join("filler");
        let mut f = std::fs::File::create(&p).expect("filler");
        let chunk = vec![0xa5u8; 256 * 1024];
        loop {
            if f.write_all(&chunk).is_err() {
                break;
            }
        }
        // What a partial write left: the last few KiB too.
        let small = vec![0xa5u8; 4096];
        while f.write_all(&small).is_ok() {}
        p
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Real bytes of the files under `dir` (allocated blocks), the reserve file excluded.
fn disk_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_name() == "gateway-reserve" {
                continue;
            }
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.blocks() * 512;
            }
        }
    }
    total
}

async fn alerts(api: std::net::SocketAddr) -> Vec<Value> {
    let (status, body) = common::http_get(api, "/api/alerts")
        .await
        .expect("GET /api/alerts");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("alerts JSON");
    v["alerts"].as_array().cloned().unwrap_or_default()
}

/// The open SMOKE.ALARM alerts of the test's devices.
async fn smoke_alerts(api: std::net::SocketAddr, prefix: &str) -> Vec<Value> {
    alerts(api)
        .await
        .into_iter()
        .filter(|a| {
            a["code"] == "SMOKE.ALARM"
                && a["device_id"]
                    .as_str()
                    .is_some_and(|d| d.starts_with(prefix))
        })
        .collect()
}

async fn wait_until<F, Fut>(gw: &mut Gateway, what: &str, timeout: Duration, mut pred: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match pred().await {
            Ok(()) => return,
            Err(e) => e,
        };
        if let Some(status) = gw.try_exit_status() {
            panic!(
                "gateway exited ({status}) waiting for {what}\n{}",
                gw.log_tail(60)
            );
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}: {last}\n{}",
                gw.log_tail(60)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The latest document on the local alert topic `estate/{estate}/alerts`.
fn watch_alert_topic(broker: &Broker, estate_id: &str) -> std::sync::Arc<std::sync::Mutex<Value>> {
    use rumqttc::{Event, Incoming, QoS};
    let latest = std::sync::Arc::new(std::sync::Mutex::new(Value::Null));
    let sink = latest.clone();
    let topic = format!("estate/{estate_id}/alerts");
    let mut o = rumqttc::MqttOptions::new(
        estate_sim::publish::random_client_id("e2e-df-alerts"),
        &broker.host,
        broker.port,
    );
    // The document lists every open alert: 20 of them are over rumqttc's default 10 KiB.
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut el) = rumqttc::AsyncClient::new(o, 16);
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    let _ = client.try_subscribe(topic.as_str(), QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Incoming::Publish(p))) if p.topic == topic => {
                    if let Ok(v) = serde_json::from_slice::<Value>(&p.payload) {
                        *sink.lock().unwrap_or_else(|e| e.into_inner()) = v;
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    latest
}

/// Alerts of the test's devices in the latest alert-topic document: (count, not stored).
fn topic_counts(doc: &std::sync::Mutex<Value>, prefix: &str) -> (usize, usize) {
    let v = doc.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mine: Vec<Value> = v["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| {
            a["device_id"]
                .as_str()
                .is_some_and(|d| d.starts_with(prefix))
        })
        .cloned()
        .collect();
    let unstored = mine.iter().filter(|a| a["stored"] == false).count();
    (mine.len(), unstored)
}

fn problems(h: &Value) -> String {
    h["problems"].to_string()
}

const N: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue13_full_disk_alarms_open_unstored_alerts_and_recover_without_restart() {
    let broker = Broker::shared();
    let mut env = TestEnv::new(broker.clone(), broker.clone());
    env.down_alert_after = "1h".into();
    let Some(disk) = SmallDisk::mount(&env.dir().join("disk"), 40) else {
        return;
    };
    let data = disk.path.join("data");
    let config = common::write_config_with(
        &env,
        "\n[store]\ndisk_budget = \"16 MiB\"\ndisk_low_free = \"8 MiB\"\n",
    );
    let mut gw = Gateway::start(&config, &data, &env.log_path())
        .unwrap_or_else(|e| panic!("{e:#}\n{}", common::log_tail(&env.log_path(), 60)));
    gw.wait_connected().await;
    let tap = EventTap::start(&broker, &env.estate_id).await;
    let topic_doc = watch_alert_topic(&broker, &env.estate_id);

    let filler = disk.fill();
    let api = gw.api;
    wait_until(
        &mut gw,
        "/healthz degraded: disk full",
        Duration::from_secs(30),
        || async move {
            let (_, body) = common::http_get(api, "/healthz")
                .await
                .map_err(|e| e.to_string())?;
            let h: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
            let p = problems(&h);
            if h["status"] == "degraded" && p.contains("disk space low") {
                Ok(())
            } else {
                Err(body)
            }
        },
    )
    .await;

    // N alarms while full: each opens its local alert, marked not stored.
    let prefix = format!("df{:04x}-", rand::random::<u16>());
    let mut publisher = env.raw_client().await;
    for i in 0..N {
        let topic = format!("estate/{}/smoke/{prefix}{i}/event", env.estate_id);
        publisher.publish(&topic, r#"{"code":"SMOKE.ALARM"}"#).await;
    }
    let p = prefix.clone();
    wait_until(
        &mut gw,
        "N alerts, not stored",
        Duration::from_secs(60),
        || {
            let p = p.clone();
            async move {
                let a = smoke_alerts(api, &p).await;
                let unstored = a.iter().filter(|a| a["stored"] == false).count();
                if a.len() == N && unstored == N {
                    Ok(())
                } else {
                    Err(format!("{} alerts, {unstored} not stored", a.len()))
                }
            }
        },
    )
    .await;
    let h = gw.healthz().await.expect("healthz");
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(
        problems(&h).contains("disk full"),
        "the reason names the full disk: {h}"
    );
    let m = gw.metrics().await.expect("metrics");
    assert!(
        m.n("estate_store_not_stored_total", &[]) >= N as u64,
        "{}",
        m.summary()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while topic_counts(&topic_doc, &prefix) != (N, N) {
        assert!(
            Instant::now() < deadline,
            "the alert topic shows the {N} alerts as not stored: {:?}",
            topic_counts(&topic_doc, &prefix)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "disk full: {N} of {N} alarms opened local alerts marked not stored (API and alert topic)"
    );

    // Space comes back: no restart, the broker redelivers, everything is stored and sent.
    std::fs::remove_file(&filler).expect("free the disk");
    let freed = Instant::now();
    wait_until(
        &mut gw,
        "alerts stored after space came back",
        Duration::from_secs(60),
        || {
            let p = prefix.clone();
            async move {
                let stored = smoke_alerts(api, &p)
                    .await
                    .iter()
                    .filter(|a| a["stored"] == true)
                    .count();
                if stored == N {
                    Ok(())
                } else {
                    Err(format!("{stored} of {N} stored"))
                }
            }
        },
    )
    .await;
    let stored_after = freed.elapsed();
    let deadline = Instant::now() + Duration::from_secs(30);
    while topic_counts(&topic_doc, &prefix) != (N, 0) {
        assert!(
            Instant::now() < deadline,
            "the alert topic shows the {N} alerts stored: {:?}",
            topic_counts(&topic_doc, &prefix)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let sent = (0..N)
            .filter(|i| !tap.of(&format!("{prefix}{i}"), "SMOKE.ALARM").is_empty())
            .count();
        if sent == N {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{sent} of {N} alarms forwarded\n{}",
            gw.diagnostics().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "recovered without restart: all {N} stored {stored_after:?} and forwarded {:?} after space came back",
        freed.elapsed()
    );
    assert_eq!(
        smoke_alerts(gw.api, &prefix).await.len(),
        N,
        "one alert per alarm, none doubled"
    );
    let low_cleared = Instant::now() + Duration::from_secs(30);
    loop {
        let h = gw.healthz().await.expect("healthz");
        // Cursor moves of failed groups were kept: once everything is forwarded the
        // backlog counts come back to zero.
        if h["status"] == "ok" && h["backlog"]["alarms"] == 0 && h["backlog"]["events"] == 0 {
            break;
        }
        assert!(
            Instant::now() < low_cleared,
            "/healthz not ok, or the backlog not zero, after recovery: {h}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Full again, then SIGTERM: it stops within its grace period (5 s) all the same.
    let _filler = disk.fill();
    wait_until(
        &mut gw,
        "disk full again",
        Duration::from_secs(30),
        || async move {
            let (_, body) = common::http_get(api, "/healthz")
                .await
                .map_err(|e| e.to_string())?;
            if body.contains("disk full") {
                Ok(())
            } else {
                Err(body)
            }
        },
    )
    .await;
    let mut publisher = env.raw_client().await;
    publisher
        .publish(
            &format!("estate/{}/smoke/{prefix}late/event", env.estate_id),
            r#"{"code":"SMOKE.ALARM"}"#,
        )
        .await;
    let t = Instant::now();
    gw.terminate();
    let status = gw.wait_exit(Duration::from_secs(20));
    println!(
        "SIGTERM while full: exited {status:?} after {:?}",
        t.elapsed()
    );
    assert!(
        status.is_some(),
        "SIGTERM while the disk is full ends the gateway\n{}",
        gw.log_tail(40)
    );
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "within the 5 s grace period (and the drain's own 5 s)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue13_backlog_beyond_the_budget_keeps_the_folder_near_its_budget_and_every_alarm() {
    // Its own broker: the flood does not slow the other test down.
    let broker = Broker::embedded();
    // The uplink points at a port nobody listens on: the backlog only grows.
    let dead = common::reserve_port();
    let mut uplink = broker.clone();
    uplink.port = dead;
    let mut env = TestEnv::new(broker.clone(), uplink);
    env.down_alert_after = "1h".into();
    let Some(disk) = SmallDisk::mount(&env.dir().join("disk"), 96) else {
        return;
    };
    let data = disk.path.join("data");
    const BUDGET: u64 = 8 << 20;
    let config = common::write_config_with(
        &env,
        "\n[store]\ndisk_budget = \"8 MiB\"\ndisk_low_free = \"8 MiB\"\n",
    );
    let mut gw = Gateway::start(&config, &data, &env.log_path())
        .unwrap_or_else(|e| panic!("{e:#}\n{}", common::log_tail(&env.log_path(), 60)));
    gw.wait_subscribed().await;

    const COUNT: u64 = 60_000;
    const ALARMS: u64 = 300;
    let mut opts = env.publish_options(COUNT, ALARMS);
    // Flat out by default (the worst case for sled's dead space); `DISK_FULL_RATE` paces
    // it (messages/s) to measure a steady flow.
    opts.rate = std::env::var("DISK_FULL_RATE")
        .ok()
        .and_then(|r| r.parse().ok());
    let publish = tokio::spawn(estate_sim::publish::run(opts));
    let mut peak = 0u64;
    while !publish.is_finished() {
        peak = peak.max(disk_bytes(&data));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = publish.await.expect("publisher").expect("publish report");
    assert_eq!(report.acked, COUNT, "{report:?}");
    // Everything the broker delivered is committed and acknowledged. (The embedded broker
    // keeps 4 MiB per subscriber and drops older messages when the gateway falls behind
    // on a loaded machine: not this test's subject, see common::broker_drop_hint.)
    let mut last = 0;
    let m = loop {
        let m = gw
            .wait_metrics(
                "every delivered message acknowledged",
                Duration::from_secs(60),
                |m| {
                    m.n("estate_ingest_acked_total", &[])
                        == m.n("estate_ingest_received_total", &[])
                },
            )
            .await;
        let received = m.n("estate_ingest_received_total", &[]);
        if received == last || received >= COUNT {
            break m;
        }
        last = received;
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let received = m.n("estate_ingest_received_total", &[]);
    println!("{}", common::broker_drop_hint(received, report.acked));
    assert!(
        received > COUNT / 2,
        "{}",
        common::broker_drop_hint(received, report.acked)
    );
    let live = m.n("estate_store_stored_bytes", &[]);
    // The folder after the burst, while sled cleans its segments.
    for _ in 0..20 {
        peak = peak.max(disk_bytes(&data));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let committed = m.n("estate_store_committed_total", &[]);
    let evicted_telemetry = m.n(
        "estate_store_evicted_total",
        &[("lane", "events"), ("kind", "unforwarded")],
    );
    let evicted_alarms = m.n(
        "estate_store_evicted_total",
        &[("lane", "alarms"), ("kind", "unforwarded")],
    );
    let ratio = peak as f64 / BUDGET as f64;
    println!(
        "backlog of {committed} events against an {BUDGET}-byte budget: peak on disk {peak} bytes ({ratio:.2}x the budget), live {live}, evicted telemetry {evicted_telemetry}, alarms {evicted_alarms}"
    );
    assert!(
        evicted_telemetry > 0,
        "the backlog went beyond the budget: {}",
        m.summary()
    );
    assert_eq!(
        evicted_alarms, 0,
        "telemetry goes first: no alarm evicted while telemetry remains"
    );
    assert!(
        ratio <= TOLERANCE,
        "the data folder peaked at {ratio:.2}x disk_budget, above the stated {TOLERANCE}x"
    );
}

/// The stated tolerance for this burst (60,000 messages as fast as the broker takes
/// them): the folder's real size peaked at 1.19-1.25x `store.disk_budget` on an idle
/// machine (sled cleaning its segments every 10 ms, `SLED_FLUSH_EVERY_MS` in
/// src/store/mod.rs); a loaded machine gives sled's segment cleaning less time (2.08x in
/// a CI run on 2 cores with the earlier 50 ms and larger records). 2.5x is the bound
/// docs/never-lost.md states.
const TOLERANCE: f64 = 2.5;
