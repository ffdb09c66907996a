use std::time::Duration;

use bytes::Bytes;
use estate_protocols::model::{DeviceKind, Event, EventState, Lane, Severity, Source};

use super::*;

fn opts() -> StoreOptions {
    StoreOptions {
        gateway_id: "gw".into(),
        estate_id: "E1".into(),
        batch_max_events: 256,
        batch_linger: Duration::ZERO,
        disk_budget: 64 * 1024 * 1024,
        disk_low_free: 4 * 1024 * 1024,
        cache_capacity: 1024 * 1024,
        record_max_bytes: 48 * 1024,
        dead_letter_max: 100,
        keep_forwarded: true,
        resend_window: Duration::ZERO,
        queue_capacity: 1024,
        pack_backlog: PACK_BACKLOG,
        pack_bytes: PACK_BYTES,
    }
}

pub(super) fn event(code: &str, severity: Severity, raw_len: usize) -> Event {
    Event {
        seq: 0,
        event_id: ulid::Ulid::new().to_string(),
        gateway_id: "gw".into(),
        estate_id: "E1".into(),
        device_id: "d1".into(),
        device_kind: Some(DeviceKind::Smoke),
        code: code.into(),
        severity,
        state: EventState::Active,
        location: Default::default(),
        device_time_ms: None,
        gateway_time_ms: 1,
        value: None,
        source: Source::default(),
        raw: Bytes::from(vec![b'x'; raw_len]),
        raw_truncated: false,
        registered: true,
        device_seq: None,
        alert: None,
    }
}

struct Opened {
    handle: StoreHandle,
    reader: StoreReader,
    writer: tokio::task::JoinHandle<Result<(), StoreError>>,
    metrics: Arc<Metrics>,
}

fn start(dir: &Path, o: StoreOptions) -> Opened {
    let metrics = Arc::new(Metrics::new());
    let (handle, reader, writer) = open(dir, o, metrics.clone()).expect("opens");
    let writer = tokio::task::spawn_blocking(move || writer.run());
    Opened {
        handle,
        reader,
        writer,
        metrics,
    }
}

impl Opened {
    async fn close(self) -> StoreReader {
        drop(self.handle);
        self.writer.await.expect("joins").expect("writer ok");
        self.reader
    }
}

async fn append_all(h: &StoreHandle, events: Vec<Event>) -> Vec<u64> {
    let mut pending = Vec::new();
    for e in events {
        pending.push(h.append(e).await.expect("queued"));
    }
    let mut seqs = Vec::new();
    for p in pending {
        seqs.push(p.await.expect("answered").expect("committed"));
    }
    seqs
}

fn all(reader: &StoreReader, lane: Lane) -> Vec<pb::Event> {
    reader
        .read_lane(lane, 0, usize::MAX, usize::MAX)
        .expect("reads")
}

#[tokio::test(flavor = "multi_thread")]
async fn seq_is_contiguous_across_lanes_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path(), opts());
    let events: Vec<Event> = (0..1000)
        .map(|i| {
            if i % 10 == 0 {
                event("SMOKE.ALARM", Severity::Critical, 10)
            } else {
                event("DEV.HEARTBEAT", Severity::Info, 10)
            }
        })
        .collect();
    let seqs = append_all(&s.handle, events).await;
    assert_eq!(seqs, (1..=1000).collect::<Vec<u64>>());
    let epoch = s.reader.epoch();
    let reader = s.close().await;
    let alarms = all(&reader, Lane::Alarms);
    let events = all(&reader, Lane::Events);
    assert_eq!(alarms.len(), 100);
    assert_eq!(events.len(), 900);
    assert!(alarms.iter().all(|e| e.code == "SMOKE.ALARM"));
    let mut union: Vec<u64> = alarms.iter().chain(&events).map(|e| e.seq).collect();
    union.sort_unstable();
    assert_eq!(union, (1..=1000).collect::<Vec<u64>>());
    drop(reader);

    let s = start(dir.path(), opts());
    assert_eq!(s.reader.epoch(), epoch, "epoch is kept across restarts");
    assert_eq!(s.reader.backlog(Lane::Alarms), 100);
    assert_eq!(s.reader.backlog(Lane::Events), 900);
    let next = append_all(&s.handle, vec![event("GAS.AL2", Severity::Critical, 1)]).await;
    assert_eq!(next, vec![1001], "seq continues after a restart");
    s.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cursors_persist_and_reads_resume_after_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path(), opts());
    append_all(
        &s.handle,
        (0..50)
            .map(|_| event("ACS.OPEN", Severity::Info, 5))
            .collect(),
    )
    .await;
    s.handle
        .forwarded(Lane::Events, 20, 20)
        .await
        .expect("queued");
    let reader = s.close().await;
    drop(reader);
    let s = start(dir.path(), opts());
    assert_eq!(s.reader.cursor(Lane::Events), 20);
    assert_eq!(s.reader.backlog(Lane::Events), 30);
    let rest = s
        .reader
        .read_lane(Lane::Events, 20, 1000, usize::MAX)
        .expect("reads");
    assert_eq!(rest.first().map(|e| e.seq), Some(21));
    assert_eq!(rest.len(), 30);
    // Batch limits: events and bytes.
    assert_eq!(
        s.reader
            .read_lane(Lane::Events, 20, 7, usize::MAX)
            .expect("reads")
            .len(),
        7
    );
    let one = s
        .reader
        .read_lane(Lane::Events, 20, 1000, 1)
        .expect("reads");
    assert_eq!(
        one.len(),
        1,
        "at least one event even when it exceeds max_bytes"
    );
    s.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn large_groups_are_split_into_records_below_the_blob_threshold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut o = opts();
    o.record_max_bytes = 16 * 1024;
    let s = start(dir.path(), o);
    append_all(
        &s.handle,
        (0..200)
            .map(|_| event("DEV.HEARTBEAT", Severity::Info, 1000))
            .collect(),
    )
    .await;
    let reader = s.close().await;
    let mut records = 0;
    for item in reader.db.range(keys::records_from(Lane::Events, 0)) {
        let (_, v) = item.expect("reads");
        assert!(v.len() <= 16 * 1024, "record of {} bytes", v.len());
        records += 1;
    }
    assert!(
        records >= 12,
        "200 KB of events need at least 12 records, got {records}"
    );
    assert_eq!(all(&reader, Lane::Events).len(), 200);
}

/// A fast fill commits groups of hundreds of events: they are split into records of
/// about `RECORD_TARGET_BYTES`, not `record_max_bytes`, so that sled's leaves (16 records)
/// stay below its blob threshold and the store has no blob files (whose pages the cache
/// holds longer than their size says: docs/footprint.md).
#[tokio::test(flavor = "multi_thread")]
async fn a_fast_fill_leaves_no_blob_leaves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = opts();
    assert!(o.record_max_bytes > 2 * super::writer::RECORD_TARGET_BYTES);
    let s = start(dir.path(), o);
    for _ in 0..8 {
        append_all(
            &s.handle,
            (0..500)
                .map(|_| event("DEV.HEARTBEAT", Severity::Info, 1000))
                .collect(),
        )
        .await;
    }
    let reader = s.close().await;
    for item in reader.db.range(keys::records_from(Lane::Events, 0)) {
        let (_, v) = item.expect("reads");
        assert!(
            v.len() <= super::writer::RECORD_TARGET_BYTES + 1100,
            "record of {} bytes",
            v.len()
        );
    }
    assert_eq!(all(&reader, Lane::Events).len(), 4000);
    drop(reader);
    // sled writes a leaf too large for its log to a file of its own in `blobs/`.
    let blobs: Vec<_> = std::fs::read_dir(dir.path().join("blobs"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(blobs.is_empty(), "blob files: {blobs:?}");
}

/// (records of the lane, their stored bytes)
fn records(reader: &StoreReader, lane: Lane) -> (usize, u64) {
    reader
        .db
        .range(keys::records_from(lane, 0))
        .map(|item| item.expect("reads").1.len() as u64)
        .fold((0, 0), |(n, bytes), len| (n + 1, bytes + len))
}

/// Packs records to 2 KiB from a backlog of `pack_backlog` events.
fn packing(pack_backlog: u64) -> StoreOptions {
    StoreOptions {
        pack_backlog,
        pack_bytes: 2048,
        ..opts()
    }
}

/// Appends `n` events of `raw_len` raw bytes one commit each, reading the lane the way
/// the forwarder does (from the last seq read) after every commit; returns what was read.
async fn append_one_by_one(s: &Opened, n: usize, raw_len: usize) -> Vec<u64> {
    let mut read = Vec::new();
    for _ in 0..n {
        append_all(
            &s.handle,
            vec![event("DEV.HEARTBEAT", Severity::Info, raw_len)],
        )
        .await;
        let after = read.last().copied().unwrap_or(0);
        let got = s
            .reader
            .read_lane(Lane::Events, after, usize::MAX, usize::MAX);
        read.extend(got.expect("reads").iter().map(|e| e.seq));
    }
    read
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backlogged_lane_packs_its_small_records_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut o = packing(10);
    let s = start(dir.path(), o.clone());
    let read = append_one_by_one(&s, 300, 100).await;
    assert_eq!(
        read,
        (1..=300).collect::<Vec<u64>>(),
        "read as written, once each"
    );
    assert_eq!(s.reader.backlog(Lane::Events), 300);
    let (n, bytes) = records(&s.reader, Lane::Events);
    assert_eq!(s.reader.stored_bytes(Lane::Events), bytes);
    // The first 9 commits stay small (backlog under 10), then ~12 events a record (2 KiB
    // at ~176 bytes an event), and at most 11 small ones not yet packed: 36, not 300.
    assert!(n <= 9 + 300 / 10, "300 one-event commits left {n} records");
    let reader = s.close().await;
    let seqs: Vec<u64> = all(&reader, Lane::Events).iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=300).collect::<Vec<u64>>());
    drop(reader);

    // Forwarding the packed backlog frees it all, and the count survives a reopen.
    o.keep_forwarded = false;
    let s = start(dir.path(), o);
    assert_eq!(s.reader.stored_bytes(Lane::Events), bytes);
    s.handle
        .forwarded(Lane::Events, 300, 300)
        .await
        .expect("queued");
    s.handle.ping().await.expect("committed");
    assert_eq!(records(&s.reader, Lane::Events), (0, 0));
    assert_eq!(s.reader.stored_bytes(Lane::Events), 0);
    assert_eq!(s.reader.backlog(Lane::Events), 0);
    s.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lane_the_forwarder_keeps_up_with_is_not_packed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path(), packing(1000));
    let read = append_one_by_one(&s, 100, 100).await;
    assert_eq!(read, (1..=100).collect::<Vec<u64>>());
    assert_eq!(
        records(&s.reader, Lane::Events).0,
        100,
        "one record a commit"
    );
    s.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_that_meets_a_packed_record_after_its_small_ones_returns_each_event_once() {
    // What a forwarder's read can see while the writer packs: the small records and the
    // packed one that repeats their events.
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path(), opts());
    let reader = s.close().await;
    let ev = |seq| pb::Event {
        seq,
        ..pb::Event::from(&event("DEV.HEARTBEAT", Severity::Info, 10))
    };
    for (first, last) in [(1, 2), (3, 3), (1, 5)] {
        let rec = pb::EventBatch {
            events: (first..=last).map(ev).collect(),
            first_seq: first,
            last_seq: last,
            ..Default::default()
        };
        let key = keys::record(Lane::Events, last);
        reader.db.insert(key, rec.encode_to_vec()).expect("writes");
    }
    let seqs: Vec<u64> = all(&reader, Lane::Events).iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
}

#[tokio::test(flavor = "multi_thread")]
async fn eviction_takes_forwarded_then_telemetry_and_keeps_alarms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut o = opts();
    // Live data is held at half the budget (sled's log keeps dead space, see disk.rs).
    o.disk_budget = 400 * 1024;
    o.record_max_bytes = 8 * 1024;
    let s = start(dir.path(), o);
    // 40 alarms first, then plenty of telemetry: ~1 KB each.
    append_all(
        &s.handle,
        (0..40)
            .map(|_| event("SMOKE.ALARM", Severity::Critical, 1000))
            .collect(),
    )
    .await;
    append_all(
        &s.handle,
        (0..100)
            .map(|_| event("DEV.HEARTBEAT", Severity::Info, 1000))
            .collect(),
    )
    .await;
    // The first 60 telemetry events were forwarded upstream.
    s.handle
        .forwarded(Lane::Events, 100, 60)
        .await
        .expect("queued");
    append_all(
        &s.handle,
        (0..200)
            .map(|_| event("DEV.HEARTBEAT", Severity::Info, 1000))
            .collect(),
    )
    .await;
    let metrics = s.metrics.clone();
    let reader = s.close().await;
    let total = reader.stored_bytes(Lane::Alarms) + reader.stored_bytes(Lane::Events);
    assert!(
        total <= 200 * 1024,
        "stored {total} bytes over half the budget"
    );
    let alarms = all(&reader, Lane::Alarms);
    let smoke: Vec<_> = alarms.iter().filter(|e| e.code == "SMOKE.ALARM").collect();
    assert_eq!(
        smoke.len(),
        40,
        "no alarm is evicted while telemetry remains"
    );
    let evicted: Vec<_> = alarms
        .iter()
        .filter(|e| e.code == "GW.STORE_EVICTED")
        .collect();
    assert!(
        !evicted.is_empty(),
        "unforwarded eviction raises GW.STORE_EVICTED"
    );
    let text = metrics.encode();
    assert!(
        text.contains(r#"estate_store_evicted_total{lane="events",kind="forwarded"} 60"#),
        "{text}"
    );
    let lost: u64 = evicted
        .iter()
        .map(|e| e.value.as_ref().map_or(0.0, |v| v.value) as u64)
        .sum();
    let kept_telemetry = all(&reader, Lane::Events).len() as u64;
    assert_eq!(
        kept_telemetry + lost + 60,
        300,
        "every telemetry event is either kept, forwarded-and-evicted, or reported lost"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_keep_raw_bytes_and_reason_bounded_in_number() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut o = opts();
    o.dead_letter_max = 5;
    let s = start(dir.path(), o);
    for i in 0..8u8 {
        let p = s
            .handle
            .dead_letter(DeadLetter {
                received_ms: i64::from(i),
                source: "estate/E1/smoke/x/event".into(),
                reason: format!("bad_json: case {i}"),
                raw: Bytes::from(vec![0xff, i]),
                original_len: 2,
            })
            .await
            .expect("queued");
        p.await.expect("answered").expect("committed");
    }
    let reader = s.close().await;
    let letters = reader.dead_letters(100).expect("reads");
    assert_eq!(letters.len(), 5, "only the newest dead_letter_max are kept");
    assert_eq!(letters[0].reason, "bad_json: case 7");
    assert_eq!(letters[0].raw.as_ref(), &[0xff, 7]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_store_leaves_its_counters_where_the_previous_version_reads_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path(), opts());
    append_all(
        &s.handle,
        (0..30)
            .map(|i| {
                let sev = if i % 3 == 0 {
                    Severity::Critical
                } else {
                    Severity::Info
                };
                event("DEV.HEARTBEAT", sev, 20)
            })
            .collect(),
    )
    .await;
    // Rolling back after a crash, before any clean stop, must not reuse a seq either.
    let next_seq = keys::u64_value(s.reader.db.get(keys::NEXT_SEQ).expect("reads"));
    assert_eq!(next_seq, 31);
    s.handle
        .forwarded(Lane::Events, 12, 8)
        .await
        .expect("queued");
    let reader = s.close().await;
    let bytes = reader.stored_bytes(Lane::Events);
    assert!(bytes > 0);

    // What the previous version reads (it knows nothing of `m/state`): a rollback
    // continues the seq and the cursors instead of reusing them.
    let db = reader.db.clone();
    let legacy = keys::State::read_legacy(&db).expect("reads");
    assert_eq!(legacy.next_seq, 31);
    assert_eq!(legacy.lanes[lane_index(Lane::Events)].cursor, 12);
    assert_eq!(legacy.lanes[lane_index(Lane::Events)].backlog, Some(12));
    assert_eq!(legacy.lanes[lane_index(Lane::Alarms)].backlog, Some(10));
    assert_eq!(legacy.lanes[lane_index(Lane::Events)].stored_bytes, bytes);

    // A store the previous version wrote (no `m/state`) opens with the same counters.
    db.remove(keys::STATE).expect("removes");
    db.flush().expect("flushes");
    drop((db, reader));
    let s = start(dir.path(), opts());
    assert_eq!(s.reader.cursor(Lane::Events), 12);
    assert_eq!(s.reader.backlog(Lane::Events), 12);
    assert_eq!(s.reader.backlog(Lane::Alarms), 10);
    assert_eq!(s.reader.stored_bytes(Lane::Events), bytes);
    let next = append_all(&s.handle, vec![event("GAS.AL2", Severity::Critical, 1)]).await;
    assert_eq!(next, vec![31]);
    let reader = s.close().await;

    // Rolled back, the previous version commits (it moves `m/next_seq`, not `m/state`);
    // forward again, seq continues after what it wrote.
    reader
        .db
        .insert(keys::NEXT_SEQ, &40u64.to_be_bytes())
        .expect("writes");
    reader.db.flush().expect("flushes");
    drop(reader);
    let s = start(dir.path(), opts());
    let next = append_all(&s.handle, vec![event("GAS.AL2", Severity::Critical, 1)]).await;
    assert_eq!(next, vec![40]);
    s.close().await;
}

/// Issue 14: forwarded events stay for `resend_window` (a city `Resend` can still have
/// them), then go with a later commit; with no window they go with the acknowledgement.
#[tokio::test(flavor = "multi_thread")]
async fn forwarded_events_stay_for_the_resend_window_then_go() {
    let dir = tempfile::tempdir().expect("tempdir");
    let window = Duration::from_millis(1500);
    let s = start(
        dir.path(),
        StoreOptions {
            keep_forwarded: false,
            resend_window: window,
            ..opts()
        },
    );
    let read = append_one_by_one(&s, 10, 10).await;
    assert_eq!(read, (1..=10).collect::<Vec<u64>>());
    let forwarded_at = Instant::now();
    s.handle
        .forwarded(Lane::Events, 10, 10)
        .await
        .expect("queued");
    s.handle.ping().await.expect("committed");
    assert_eq!(s.reader.backlog(Lane::Events), 0);
    let kept = s.reader.read_lane(Lane::Events, 0, usize::MAX, usize::MAX);
    assert_eq!(
        kept.expect("reads").len(),
        10,
        "forwarded, still held for a resend"
    );
    // Later commits (heartbeats) delete them once they are older than the window.
    loop {
        append_all(&s.handle, vec![event("DEV.HEARTBEAT", Severity::Info, 10)]).await;
        let left = s.reader.read_lane(Lane::Events, 0, 1, usize::MAX);
        if left.expect("reads").first().is_none_or(|e| e.seq > 10) {
            break;
        }
        assert!(
            forwarded_at.elapsed() < window * 10,
            "forwarded events still held long after the window"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        forwarded_at.elapsed() >= window,
        "deleted before the window was over"
    );
    s.close().await;
}
