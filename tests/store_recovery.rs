//! A store that comes back behind itself never reuses a seq, and a store that cannot be
//! opened is quarantined instead of crash-looping (issue 13, docs/never-lost.md,
//! "What never lost means here").
//!
//! - Rollback: the store folder is put back to an older copy (as a restored backup, or a
//!   disk that lost flushed writes, would); the next start must begin a new epoch, raise
//!   `GW.STORE_ROLLBACK` locally and upstream with the lost range, and never send a
//!   `(store_epoch, seq)` the city already holds for another event.
//! - Quarantine: the store's metadata is garbled so that it cannot be opened; the gateway
//!   must start anyway on a fresh epoch, keep the old folder, raise `GW.STORE_QUARANTINED`
//!   locally and upstream, forward again what it could read of the old store, and not
//!   quarantine again on the next start.
//! - `store verify` tells a sound store from one that does not open.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use estate_sim::publish;
use serde_json::Value;

use common::{Broker, EventTap, Gateway, TestEnv};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the folder");
    for e in std::fs::read_dir(from).expect("read the folder") {
        let e = e.expect("folder entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("file type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).expect("copy a file");
        }
    }
}

/// Publishes `count` native events (with `alarms` alarms) and waits until the gateway
/// has forwarded all of them.
async fn publish_and_forward(env: &TestEnv, gw: &mut Gateway, count: u64, alarms: u64) {
    let before = gw
        .metrics()
        .await
        .map(|m| m.n("estate_forward_events_total", &[]))
        .unwrap_or_default();
    let report = publish::run(env.publish_options(count, alarms))
        .await
        .expect("publisher runs");
    assert_eq!(report.acked, count, "{report}");
    gw.wait_metrics(
        &format!("{count} more events forwarded"),
        Duration::from_secs(60),
        |m| m.n("estate_forward_events_total", &[]) >= before + count,
    )
    .await;
}

async fn open_alert_codes(gw: &Gateway) -> Vec<String> {
    let (status, body) = common::http_get(gw.api, "/api/alerts")
        .await
        .expect("GET /api/alerts");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    v["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|a| a["code"].as_str().map(str::to_owned))
        .collect()
}

async fn wait_alert(gw: &Gateway, code: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let codes = open_alert_codes(gw).await;
        if codes.iter().any(|c| c == code) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no open {code} alert on the console; open: {codes:?}\n{}",
            gw.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn store_recovery_condition(gw: &Gateway) -> String {
    let h = gw.healthz().await.expect("healthz");
    assert_eq!(h["status"], "degraded", "{h}");
    h["problems"]
        .as_array()
        .and_then(|p| p.iter().find(|c| c["key"] == "store.recovery"))
        .map(|c| c["reason"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_else(|| panic!("/healthz names store.recovery: {h}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_rolled_back_starts_a_new_epoch_and_never_reuses_a_seq() {
    let broker = Broker::shared();
    let mut env = TestEnv::new(broker.clone(), broker.clone());
    env.down_alert_after = "1h".into();
    let tap = EventTap::start(&broker, &env.estate_id).await;
    let store = env.data_dir().join("store");
    let backup = env.dir().join("store-backup");

    let mut gw = env.start_gateway();
    let epoch = gw.store_epoch;
    gw.wait_connected().await;
    publish_and_forward(&env, &mut gw, 40, 10).await;
    gw.terminate();
    gw.wait_exit(Duration::from_secs(20)).expect("clean stop");
    copy_dir(&store, &backup);

    let mut gw = env.start_gateway();
    assert_eq!(gw.store_epoch, epoch, "a clean restart keeps the epoch");
    gw.wait_connected().await;
    publish_and_forward(&env, &mut gw, 40, 10).await;
    gw.terminate();
    gw.wait_exit(Duration::from_secs(20)).expect("clean stop");
    let sent_before: Vec<u64> = tap
        .events_with_epoch()
        .iter()
        .filter(|(ep, _)| *ep == epoch)
        .map(|(_, e)| e.seq)
        .collect();
    let highest = *sent_before.iter().max().expect("events went upstream");

    // The folder goes back to the first copy: seqs 41..=80 of this epoch are gone from it
    // although the city holds them.
    std::fs::remove_dir_all(&store).expect("remove the folder");
    copy_dir(&backup, &store);

    let mut gw = env.start_gateway();
    assert_ne!(
        gw.store_epoch, epoch,
        "behind its high-water mark: a new epoch"
    );
    let new_epoch = gw.store_epoch;
    gw.wait_connected().await;
    let events = tap
        .wait_for(
            "GW.STORE_ROLLBACK upstream",
            Duration::from_secs(30),
            |ev| ev.iter().any(|(_, e)| e.code == "GW.STORE_ROLLBACK"),
        )
        .await;
    let (topic, rollback) = events
        .iter()
        .find(|(_, e)| e.code == "GW.STORE_ROLLBACK")
        .expect("the rollback event");
    assert!(topic.ends_with("/alarms"), "on the alarms lane: {topic}");
    let epoch_of = |id: &str| {
        tap.events_with_epoch()
            .into_iter()
            .find(|(_, e)| e.event_id == id)
            .map(|(ep, _)| ep)
    };
    assert_eq!(epoch_of(&rollback.event_id), Some(new_epoch));
    let detail: Value = serde_json::from_slice(&rollback.raw).expect("JSON detail");
    assert_eq!(detail["old_epoch"], epoch.to_string(), "{detail}");
    let (first, last) = (
        detail["first_lost_seq"].as_u64().expect("a number"),
        detail["last_lost_seq"].as_u64().expect("a number"),
    );
    assert_eq!(
        last, highest,
        "the range ends at the highest seq sent: {detail}"
    );
    assert!(
        first <= last && sent_before.iter().filter(|s| **s >= first).count() >= 40,
        "the range covers the 40 events the old copy lacks: {detail}"
    );
    wait_alert(&gw, "GW.STORE_ROLLBACK").await;
    assert!(store_recovery_condition(&gw).await.contains("behind"));

    // New events go up under the new epoch; no (epoch, seq) names two events.
    publish_and_forward(&env, &mut gw, 20, 5).await;
    let mut ids: HashMap<(u64, u64), String> = HashMap::new();
    for (ep, e) in tap.events_with_epoch() {
        if let Some(other) = ids.insert((ep, e.seq), e.event_id.clone()) {
            assert_eq!(
                other, e.event_id,
                "(epoch {ep}, seq {}) was sent for two events",
                e.seq
            );
        }
    }
    assert!(
        ids.keys().filter(|(ep, _)| *ep == new_epoch).count() >= 21,
        "the rollback alarm and the new events arrived under the new epoch"
    );

    // `store verify` on the live copy's backup (behind the mark) and on the running
    // store after a clean stop (at it).
    gw.terminate();
    gw.wait_exit(Duration::from_secs(20)).expect("clean stop");
    let (status, out, err) = common::run_gateway_cli(&[
        "store",
        "verify",
        env.data_dir().to_str().expect("UTF-8 path"),
    ]);
    assert!(status.success(), "{out}{err}");
    assert!(
        out.contains("opens: yes") && out.contains("verdict: ok"),
        "{out}"
    );
    assert!(out.contains(&format!("store_epoch: {new_epoch}")), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_be_opened_is_quarantined_and_what_it_held_is_forwarded() {
    let broker = Broker::shared();
    let mut env = TestEnv::new(broker.clone(), broker.clone());
    env.down_alert_after = "1h".into();
    let store = env.data_dir().join("store");

    // Build a backlog the city has not seen: the same gateway, its uplink unreachable.
    let tap = EventTap::start(&broker, &env.estate_id).await;
    let mut offline = TestEnv::new(
        broker.clone(),
        Broker {
            host: "127.0.0.1".into(),
            port: common::reserve_port(),
            kind: "unreachable",
        },
    );
    offline.gateway_id = env.gateway_id.clone();
    offline.estate_id = env.estate_id.clone();
    offline.down_alert_after = "1h".into();
    let cfg = offline.write_config();
    let mut gw =
        Gateway::start(&cfg, &env.data_dir(), &offline.log_path()).expect("gateway starts");
    let epoch = gw.store_epoch;
    gw.wait_subscribed().await;
    let report = publish::run(env.publish_options(30, 10))
        .await
        .expect("publisher runs");
    assert_eq!(report.acked, 30, "{report}");
    gw.wait_metrics("30 events committed", Duration::from_secs(30), |m| {
        m.n("estate_store_committed_total", &[]) >= 30
    })
    .await;
    gw.terminate();
    gw.wait_exit(Duration::from_secs(20)).expect("clean stop");
    let held: Vec<String> = {
        // What the store holds, read the way the gateway reads it.
        let (status, out, err) =
            common::run_gateway_cli(&["store", "verify", store.to_str().expect("UTF-8 path")]);
        assert!(status.success(), "{out}{err}");
        assert!(out.contains("opens: yes"), "{out}");
        let db = sled::open(&store).expect("open");
        let mut ids = Vec::new();
        for item in db.iter() {
            let (k, v) = item.expect("sled reads");
            if k.first() == Some(&b'r') {
                let rec = <estate_protocols::pb::EventBatch as prost::Message>::decode(&*v)
                    .expect("record decodes");
                ids.extend(rec.events.into_iter().map(|e| e.event_id));
            }
        }
        // Garble the store's counters: the gateway can no longer open it as a store.
        db.insert(b"m/state", &b"garbled"[..]).expect("sled insert");
        db.flush().expect("sled flush");
        ids
    };
    assert!(
        held.len() >= 30,
        "the backlog is in the store: {}",
        held.len()
    );

    let mut gw = env.start_gateway();
    assert_ne!(gw.store_epoch, epoch, "a fresh store, a new epoch");
    let new_epoch = gw.store_epoch;
    let quarantined: Vec<_> = std::fs::read_dir(env.data_dir().join("quarantine"))
        .expect("a quarantine folder")
        .map(|e| e.expect("folder entry").path())
        .collect();
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert!(quarantined[0].join("db").is_file(), "the old store is kept");
    gw.wait_connected().await;

    let events = tap
        .wait_for(
            "GW.STORE_QUARANTINED and every held event upstream",
            Duration::from_secs(60),
            |ev| {
                ev.iter().any(|(_, e)| e.code == "GW.STORE_QUARANTINED")
                    && held
                        .iter()
                        .all(|id| ev.iter().any(|(_, e)| &e.event_id == id))
            },
        )
        .await;
    let q = &events
        .iter()
        .find(|(_, e)| e.code == "GW.STORE_QUARANTINED")
        .expect("the quarantine event")
        .1;
    let with_epoch = tap.events_with_epoch();
    let epoch_of = |id: &str| {
        with_epoch
            .iter()
            .find(|(_, e)| e.event_id == id)
            .map(|(ep, _)| *ep)
    };
    assert_eq!(epoch_of(&q.event_id), Some(new_epoch));
    let detail: Value = serde_json::from_slice(&q.raw).expect("JSON detail");
    assert!(
        detail["error"]
            .as_str()
            .expect("a string")
            .contains("m/state"),
        "names what is wrong: {detail}"
    );
    assert_eq!(detail["salvaged_events"].as_u64(), Some(held.len() as u64));
    assert!(
        with_epoch
            .iter()
            .filter(|(_, e)| held.contains(&e.event_id))
            .all(|(ep, _)| *ep == new_epoch),
        "the salvaged events went up under the new epoch"
    );
    wait_alert(&gw, "GW.STORE_QUARANTINED").await;
    assert!(store_recovery_condition(&gw).await.contains("quarantine"));

    // The next start opens the fresh store as it is: no second quarantine.
    gw.terminate();
    gw.wait_exit(Duration::from_secs(20)).expect("clean stop");
    let gw = env.start_gateway();
    assert_eq!(gw.store_epoch, new_epoch);
    assert_eq!(
        std::fs::read_dir(env.data_dir().join("quarantine"))
            .expect("the quarantine folder")
            .count(),
        1
    );
    let h = gw.healthz().await.expect("healthz");
    assert_eq!(h["status"], "ok", "{h}");
}

#[test]
fn store_verify_says_when_a_store_does_not_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");
    {
        let db = sled::open(&store).expect("open");
        db.insert(b"m/epoch", &7u64.to_be_bytes())
            .expect("sled insert");
        db.flush().expect("sled flush");
    }
    // sled's settings file, overwritten: it no longer says the segment size sled used.
    std::fs::write(store.join("conf"), b"this is not sled's settings file").expect("write");
    let (status, out, err) = common::run_gateway_cli(&[
        "store",
        "verify",
        "--copy",
        store.to_str().expect("UTF-8 path"),
    ]);
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(out.contains("opens: no"), "{out}");
    assert_eq!(
        std::fs::read(store.join("conf")).expect("read"),
        b"this is not sled's settings file",
        "--copy leaves the store as it was"
    );

    // Junk where the store should be: sled may open it as an empty database.
    let junk = dir.path().join("junk");
    std::fs::create_dir_all(&junk).expect("create the folder");
    std::fs::write(junk.join("db"), vec![0x5a; 4096]).expect("write");
    let (status, out, err) = common::run_gateway_cli(&[
        "store",
        "verify",
        "--copy",
        junk.to_str().expect("UTF-8 path"),
    ]);
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(
        out.contains("opens: no") || out.contains("store_epoch: none"),
        "{out}"
    );

    let (status, out, err) = common::run_gateway_cli(&[
        "store",
        "verify",
        dir.path().join("nothing").to_str().expect("UTF-8 path"),
    ]);
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(err.contains("no store here"), "{err}");
}
