//! The alerts stage against a real store: replay after a crash between commit and
//! alerting, and forwarded records kept until the engine has handled them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use estate_config::Config;
use estate_protocols::model::{DeviceKind, Event, EventState, Lane, Severity};

use super::linkage::Unwired;
use super::state::Filter;
use super::*;
use crate::store::{self, StoreOptions};
use crate::telemetry::Metrics;

pub(super) fn config() -> Config {
    Config::from_toml_str(
        r#"
[gateway]
id = "gw-1"
estate_id = "e1"

[[devices]]
id = "smoke-1"
kind = "smoke"
location = { building = "1" }
"#,
        "t.toml",
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

pub(super) fn smoke_alarm() -> Event {
    let mut e = crate::events::gateway_event(
        "gw-1",
        "e1",
        "SMOKE.ALARM",
        EventState::Active,
        None,
        serde_json::json!({}),
    );
    e.device_id = "smoke-1".into();
    e.device_kind = Some(DeviceKind::Smoke);
    e.severity = Severity::Critical;
    e
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_committed_before_the_engine_saw_it_is_alerted_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config();
    let metrics = Arc::new(Metrics::new());

    // First life: an engine is attached, the alarm is committed and forwarded, and the
    // process dies before the engine handled it. The record must survive forwarding
    // (keep_forwarded = false deletes forwarded records) for the replay.
    {
        let (h, reader, w) =
            store::open(dir.path(), StoreOptions::from_config(&cfg), metrics.clone())
                .expect("store opens");
        let (_alerts, _handle) = Alerts::new(&cfg, &reader).expect("alerts open");
        let writer = tokio::task::spawn_blocking(move || w.run());
        h.append(smoke_alarm())
            .await
            .expect("queued")
            .await
            .expect("answered")
            .expect("committed");
        h.forwarded(Lane::Alarms, 1, 1).await.expect("queued");
        h.ping().await.expect("the cursor move committed");
        assert_eq!(reader.cursor(Lane::Alarms), 1);
        let kept = reader
            .read_lane(Lane::Alarms, 0, 10, 1 << 20)
            .expect("reads");
        assert_eq!(
            kept.len(),
            1,
            "forwarded but not yet alerted: kept for the replay"
        );
        // The engine never ran (crash): drop everything.
        drop(h);
        writer.await.expect("writer joins").expect("writer ok");
    }

    // Second life: the engine replays the committed alarm and opens its alert.
    {
        let (h, reader, w) =
            store::open(dir.path(), StoreOptions::from_config(&cfg), metrics.clone())
                .expect("store reopens");
        let (alerts, handle) = Alerts::new(&cfg, &reader).expect("alerts open");
        let replay = alerts.replay_page(alerts.last_seq).expect("reads");
        assert_eq!(replay.len(), 1, "the unhandled alarm is replayed");
        assert_eq!(replay[0].seq, 1);
        let writer = tokio::task::spawn_blocking(move || w.run());
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (h, metrics, stop) = (h.clone(), metrics.clone(), stop.clone());
            let mut alerts = alerts;
            async move { alerts.run(h, Arc::new(Unwired), metrics, stop).await }
        });
        let open = Filter {
            status: "open".into(),
            ..Filter::default()
        };
        wait_for("the replayed alarm's alert", || {
            handle
                .store()
                .list(&open)
                .is_ok_and(|a| a.len() == 1 && a[0].code == "SMOKE.ALARM")
        })
        .await;
        let a = handle.store().list(&open).expect("lists").remove(0);
        assert_eq!(a.opened_by_seq, 1);
        // Its ALERT.UPDATE is committed too (seq 2): wait until the engine handled it.
        wait_for("the engine's progress past its own update", || {
            handle.store().last_seq().is_ok_and(|s| s >= 2)
        })
        .await;
        stop.cancel();
        task.await.expect("alerts stop");
        drop(h);
        writer.await.expect("writer joins").expect("writer ok");
    }

    // Third life: restored from the state, not replayed again (still one alert, count 1).
    {
        let (h, reader, w) =
            store::open(dir.path(), StoreOptions::from_config(&cfg), metrics.clone())
                .expect("store reopens");
        let (alerts, handle) = Alerts::new(&cfg, &reader).expect("alerts open");
        assert_eq!(
            alerts.last_seq, alerts.replay_until,
            "nothing left to replay"
        );
        let open = handle
            .store()
            .list(&Filter {
                status: "open".into(),
                ..Filter::default()
            })
            .expect("lists");
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].count, 1, "the alarm was not counted twice");
        drop(alerts);
        drop(h);
        let writer = tokio::task::spawn_blocking(move || w.run());
        writer.await.expect("writer joins").expect("writer ok");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_older_than_alerts_is_not_alerted_again_but_nothing_after_is_missed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config();
    let metrics = Arc::new(Metrics::new());
    // Before alerts existed: 1,200 committed events (more than a replay page per lane).
    {
        let (h, _reader, w) =
            store::open(dir.path(), StoreOptions::from_config(&cfg), metrics.clone())
                .expect("store opens");
        let writer = tokio::task::spawn_blocking(move || w.run());
        for _ in 0..1200 {
            h.append_nowait(smoke_alarm()).await.expect("queued");
        }
        h.ping().await.expect("committed");
        drop(h);
        writer.await.expect("writer joins").expect("writer ok");
    }
    let (h, reader, w) = store::open(dir.path(), StoreOptions::from_config(&cfg), metrics.clone())
        .expect("store reopens");
    let (alerts, handle) = Alerts::new(&cfg, &reader).expect("alerts open");
    assert_eq!(alerts.last_seq, 1200, "history is not replayed");
    assert_eq!(handle.store().progress().expect("reads"), Some(1200));
    drop(alerts);
    drop(h);
    let writer = tokio::task::spawn_blocking(move || w.run());
    writer.await.expect("writer joins").expect("writer ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replay_pages_through_both_lanes_in_seq_order_without_a_gap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config();
    let metrics = Arc::new(Metrics::new());
    {
        let (h, reader, w) =
            store::open(dir.path(), StoreOptions::from_config(&cfg), metrics.clone())
                .expect("store opens");
        let (_alerts, _handle) = Alerts::new(&cfg, &reader).expect("alerts open");
        let writer = tokio::task::spawn_blocking(move || w.run());
        // Uneven lanes: one alarm in three, so one lane's pages run ahead of the other's.
        for i in 0..1500 {
            let mut e = smoke_alarm();
            if i % 3 != 0 {
                e.code = "DEV.HEARTBEAT".into();
                e.severity = Severity::Info;
            }
            h.append_nowait(e).await.expect("queued");
        }
        h.ping().await.expect("committed");
        drop(h);
        writer.await.expect("writer joins").expect("writer ok");
    }
    let (h, reader, w) = store::open(dir.path(), StoreOptions::from_config(&cfg), metrics.clone())
        .expect("store reopens");
    let (alerts, _handle) = Alerts::new(&cfg, &reader).expect("alerts open");
    let mut seqs = Vec::new();
    let mut after = alerts.last_seq;
    loop {
        let page = alerts.replay_page(after).expect("reads");
        let Some(last) = page.last().map(|e| e.seq) else {
            break;
        };
        seqs.extend(page.iter().map(|e| e.seq));
        after = last;
    }
    assert_eq!(seqs, (1..=1500).collect::<Vec<u64>>());
    drop(alerts);
    drop(h);
    let writer = tokio::task::spawn_blocking(move || w.run());
    writer.await.expect("writer joins").expect("writer ok");
}

#[test]
fn history_is_bounded_open_alerts_are_never_pruned_and_stay_indexed() {
    use super::model::{AuditEntry, Closed, Disposition};
    use estate_protocols::model::AlertStatus;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config();
    let (_h, reader, _w) = store::open(
        dir.path(),
        StoreOptions::from_config(&cfg),
        Arc::new(Metrics::new()),
    )
    .expect("store opens");
    let st = state::AlertStore::open(&reader, 2, Duration::from_secs(3600)).expect("alert state");
    let mut en = rules::Engine::new(&cfg, 0);
    let mut ids = Vec::new();
    // Five alerts, created in order (ULIDs sort by time); the first stays open.
    for i in 0..5i64 {
        let mut e = smoke_alarm();
        e.device_id = format!("dev-{i}");
        e.gateway_time_ms = 1_000 + i;
        let fx = en.on_event(&e, 1_000 + i);
        let Some(alert) = fx.into_iter().find_map(|e| match e {
            rules::Effect::Alert { alert, .. } => Some(alert),
            _ => None,
        }) else {
            panic!("an alert opens");
        };
        ids.push(alert.id.clone());
        let mut a = alert;
        let audit = AuditEntry::new(1, "t", "opened", "");
        if i > 0 {
            a.status = AlertStatus::Closed;
            a.closed = Some(Closed {
                by: "t".into(),
                at_ms: 2,
                disposition: Disposition::Test,
                note: String::new(),
            });
        }
        st.write(&[(&a, Some(&audit))], None).expect("writes");
    }
    let all = st
        .list(&state::Filter {
            status: "all".into(),
            ..state::Filter::default()
        })
        .expect("lists");
    let kept: Vec<&str> = all.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(st.closed_count(), 2);
    assert!(kept.contains(&ids[0].as_str()), "the open alert stays");
    assert!(kept.contains(&ids[3].as_str()) && kept.contains(&ids[4].as_str()));
    assert_eq!(kept.len(), 3, "{kept:?}");
    assert!(
        st.audit(&ids[1]).expect("reads").is_empty(),
        "pruned with its audit"
    );
    assert_eq!(st.audit(&ids[4]).expect("reads").len(), 1);

    // A tree written before the open-alert index and the audit counter were kept: both
    // are built when it opens.
    let tree = reader.open_tree("alerts").expect("tree");
    for k in tree.scan_prefix(b"o/").keys() {
        tree.remove(k.expect("reads")).expect("removes");
    }
    tree.remove("m/indexed").expect("removes");
    tree.remove("m/next_audit").expect("removes");
    drop(st);
    let st = state::AlertStore::open(&reader, 2, Duration::from_secs(3600))
        .expect("alert state reopens");
    let open_ids = |st: &state::AlertStore| -> Vec<String> {
        let listed = st
            .list(&state::Filter::default())
            .expect("lists")
            .into_iter()
            .map(|a| a.id);
        let restored = st.open_alerts().expect("reads").into_iter().map(|a| a.id);
        let ids: Vec<String> = listed.collect();
        assert_eq!(ids, restored.collect::<Vec<_>>());
        ids
    };
    assert_eq!(open_ids(&st), vec![ids[0].clone()]);
    // Audit numbering goes on: a new entry adds to a trail, it does not replace one.
    let note = AuditEntry::new(3, "t", "note", "after the upgrade");
    let mut first = st.get(&ids[0]).expect("reads").expect("kept");
    st.write(&[(&first, Some(&note))], None).expect("writes");
    assert_eq!(st.audit(&ids[0]).expect("reads").len(), 2);
    // Closing the open alert takes it out of the index.
    first.status = AlertStatus::Closed;
    st.write(&[(&first, Some(&note))], None).expect("writes");
    assert!(open_ids(&st).is_empty());

    // Rolled back to the previous version, which opens an alert (no index) as it moves
    // its progress, then forward again: the index is rebuilt, the alert restored.
    st.write(&[], Some(10)).expect("writes");
    let mut reopened = first.clone();
    reopened.status = AlertStatus::Active;
    reopened.closed = None;
    tree.insert(
        format!("a/{}", reopened.id),
        serde_json::to_vec(&reopened).expect("encodes"),
    )
    .expect("writes");
    tree.insert("m/last_seq", &11u64.to_be_bytes())
        .expect("writes");
    drop(st);
    let st = state::AlertStore::open(&reader, 2, Duration::from_secs(3600))
        .expect("alert state reopens");
    assert_eq!(open_ids(&st), vec![ids[0].clone()]);
}

#[test]
fn events_per_second_keep_the_last_minute() {
    let mut r = Rate::default();
    let t = 1_000_000_000i64;
    r.add(t, 5);
    r.add(t + 10, 2);
    r.add(t + 1_000, 3);
    let v = r.last_60(t + 1_500);
    assert_eq!(v.len(), 60);
    assert_eq!(&v[58..], &[7, 3]);
    // A minute later the old seconds are gone.
    r.add(t + 61_000, 1);
    let v = r.last_60(t + 61_000);
    assert_eq!(v.iter().sum::<u64>(), 1);
}

/// Issue 16: pruning never removes a closed alert whose audit trail is younger than
/// `alerts.audit_retention`, even over `history_max` (a soft bound then, counted for
/// `/healthz`); one whose trail has aged is pruned.
#[test]
fn pruning_keeps_audit_trails_younger_than_the_retention() {
    use super::model::{AuditEntry, Closed, Disposition};
    use estate_protocols::model::AlertStatus;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config();
    let (_h, reader, _w) = store::open(
        dir.path(),
        StoreOptions::from_config(&cfg),
        Arc::new(Metrics::new()),
    )
    .expect("store opens");
    let day = 86_400_000i64;
    let st = state::AlertStore::open(&reader, 1, Duration::from_millis(day as u64))
        .expect("alert state");
    let now = crate::events::now_ms();
    let mut en = rules::Engine::new(&cfg, 0);
    // (created, last audit entry): old and done; old but closed an hour ago; new.
    let plan = [
        (now - 3 * day, now - 2 * day),
        (now - 3 * day + 1, now - 3_600_000),
        (now - 1000, now - 500),
    ];
    let mut ids = Vec::new();
    for (i, (created, last)) in plan.into_iter().enumerate() {
        let mut e = smoke_alarm();
        e.device_id = format!("dev-{i}");
        e.gateway_time_ms = created;
        let mut a = en
            .on_event(&e, created)
            .into_iter()
            .find_map(|e| match e {
                rules::Effect::Alert { alert, .. } => Some(alert),
                _ => None,
            })
            .expect("an alert opens");
        ids.push(a.id.clone());
        a.status = AlertStatus::Closed;
        a.closed = Some(Closed {
            by: "t".into(),
            at_ms: last,
            disposition: Disposition::Test,
            note: String::new(),
        });
        let opened = AuditEntry::new(created, "t", "opened", "");
        let closed = AuditEntry::new(last, "t", "closed", "test");
        st.write(&[(&a, Some(&opened)), (&a, Some(&closed))], None)
            .expect("writes");
    }
    let kept = |st: &state::AlertStore| -> Vec<String> {
        st.list(&state::Filter {
            status: "all".into(),
            ..state::Filter::default()
        })
        .expect("lists")
        .into_iter()
        .map(|a| a.id)
        .collect()
    };
    let now_kept = kept(&st);
    assert!(!now_kept.contains(&ids[0]), "the aged trail is pruned");
    assert!(now_kept.contains(&ids[1]), "closed an hour ago: kept");
    assert!(now_kept.contains(&ids[2]), "new: kept");
    assert_eq!(st.audit(&ids[0]).expect("reads").len(), 0);
    assert_eq!(
        st.audit(&ids[1]).expect("reads").len(),
        2,
        "its trail is whole"
    );
    assert_eq!(st.closed_count(), 2);
    assert_eq!(st.over_bound(), 1, "one over history_max = 1, for /healthz");
}
