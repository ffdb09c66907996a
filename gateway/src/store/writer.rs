//! The store's single writer: group commit, cursors, dead letters and eviction.

use std::fs::File;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, warn};

use estate_protocols::model::{Event, EventState, Lane, Reading};
use estate_protocols::pb;

use super::recovery::{Finding, HighWater, Mark};
use super::{decode_record, keys, lane_index, Command, Shared, StoreError, StoreOptions};
use crate::telemetry::{EvictLabel, Metrics};

type Done = Option<oneshot::Sender<Result<u64, StoreError>>>;

/// Owns the sled tree for writing. Run it with [`StoreWriter::run`] on a blocking thread;
/// it returns once every [`super::StoreHandle`] is dropped and the queue is committed.
#[derive(Debug)]
pub struct StoreWriter {
    db: sled::Db,
    log_file: File,
    shared: Arc<Shared>,
    /// From every `StoreHandle`. Closed when the last handle is dropped.
    rx: mpsc::Receiver<Command>,
    opts: StoreOptions,
    metrics: Arc<Metrics>,
    next_seq: u64,
    next_dead_letter: u64,
    /// Per lane, the small records written since the lane was last packed.
    tails: [Tail; 2],
    /// The store's high-water mark, set with every commit that assigns seqs.
    high_water: Option<HighWater>,
    /// Gateway events about how the store was opened, committed first by [`Self::run`].
    recovered: Vec<Event>,
}

/// The newest records of a backlogged lane that are smaller than `pack_bytes`, with
/// their events, so that the commit which brings them to that size replaces them with
/// one record without reading them back. Forgotten (the records stay as they are) when
/// the lane's backlog falls, the forwarder reaches the tail, eviction runs or a commit
/// fails.
///
/// Why: a backlog built at a few events per commit is one sled key per event or two.
/// Draining it deletes them one by one, and sled merges the emptied leaves and relocates
/// their segments. A 1 M-event backlog built at 1,000 events/s was 857,000 records and
/// drained at 60 MB of RSS; packed, it is 96,000 and drained at 35 MB, before the heap
/// trimmer, the smaller uplink window and the sled cache patch (README "Footprint"). An
/// event is written at most twice: small, then packed.
#[derive(Debug, Default)]
struct Tail {
    keys: Vec<[u8; 10]>,
    events: Vec<pb::Event>,
    /// Encoded size of `events` as `split_records` counts it.
    event_bytes: usize,
    /// Sum of the records' value sizes (stored bytes freed by packing).
    record_bytes: u64,
}

impl Tail {
    fn clear(&mut self) {
        *self = Tail::default();
    }
}

impl StoreWriter {
    pub(super) fn new(
        db: sled::Db,
        log_file: File,
        shared: Arc<Shared>,
        rx: mpsc::Receiver<Command>,
        opts: StoreOptions,
        metrics: Arc<Metrics>,
        saved: &keys::State,
    ) -> Self {
        StoreWriter {
            db,
            log_file,
            shared,
            rx,
            opts,
            metrics,
            next_seq: saved.next_seq,
            next_dead_letter: saved.next_dead_letter,
            tails: Default::default(),
            high_water: None,
            recovered: Vec::new(),
        }
    }

    /// What opening found ([`super::recovery`]): the high-water file to keep current, and
    /// the events to commit before anything else (the findings, then what was salvaged
    /// of a quarantined store, as new events with their original ids).
    pub(super) fn recovered(
        &mut self,
        high_water: HighWater,
        findings: Vec<Finding>,
        salvaged: Vec<pb::Event>,
    ) {
        self.high_water = Some(high_water);
        let (gw, estate) = (&self.opts.gateway_id, &self.opts.estate_id);
        self.recovered = findings.iter().map(|f| f.event(gw, estate)).collect();
        self.recovered
            .extend(salvaged.into_iter().filter_map(|e| Event::try_from(e).ok()));
    }

    /// The writer loop. Blocks the calling thread; call from `spawn_blocking`.
    pub fn run(mut self) -> Result<(), StoreError> {
        let runtime = tokio::runtime::Handle::try_current().ok();
        let max = self.opts.batch_max_events.max(1);
        let mut recovered = std::mem::take(&mut self.recovered).into_iter().peekable();
        while recovered.peek().is_some() {
            let group = recovered
                .by_ref()
                .take(max)
                .map(|mut event| {
                    event.seq = 0;
                    Command::Append {
                        event: Box::new(event),
                        received: Instant::now(),
                        done: None,
                    }
                })
                .collect();
            self.commit(group);
        }
        while let Some(first) = self.rx.blocking_recv() {
            let mut group = Vec::with_capacity(max.min(1024));
            group.push(first);
            while group.len() < max {
                match self.rx.try_recv() {
                    Ok(c) => group.push(c),
                    Err(_) => break,
                }
            }
            if let (Some(rt), false) = (&runtime, self.opts.batch_linger.is_zero()) {
                let deadline = tokio::time::Instant::now() + self.opts.batch_linger;
                while group.len() < max {
                    match rt.block_on(tokio::time::timeout_at(deadline, self.rx.recv())) {
                        Ok(Some(c)) => group.push(c),
                        _ => break,
                    }
                }
            }
            self.commit(group);
            if self.total_stored() > self.opts.disk_budget {
                if let Err(err) = self.evict() {
                    error!(error = %err, "Eviction failed; the store may grow past its disk budget.");
                }
            }
        }
        // Cursor-only groups are not flushed on their own; make them durable on the way
        // out, with the counters also where the previous version reads them (rollback).
        let mut batch = sled::Batch::default();
        self.state().write_legacy(&mut batch);
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        self.log_file.sync_data()?;
        debug!("Store writer stopped.");
        Ok(())
    }

    /// The counters as committed.
    fn state(&self) -> keys::State {
        let mut state = keys::State {
            next_seq: self.next_seq,
            next_dead_letter: self.next_dead_letter,
            ..keys::State::default()
        };
        for lane in Lane::ALL {
            let st = self.lane(lane);
            state.lanes[lane_index(lane)] = keys::LaneCounters {
                cursor: st.cursor.load(Ordering::Acquire),
                backlog: Some(st.backlog.load(Ordering::Acquire)),
                stored_bytes: st.stored_bytes.load(Ordering::Acquire),
            };
        }
        state
    }

    /// Makes committed counters visible to readers and metrics.
    fn publish(&self, state: &keys::State) {
        for lane in Lane::ALL {
            let c = &state.lanes[lane_index(lane)];
            let st = self.lane(lane);
            let backlog = c.backlog.unwrap_or(0);
            st.cursor.fetch_max(c.cursor, Ordering::AcqRel);
            st.stored_bytes.store(c.stored_bytes, Ordering::Release);
            st.backlog.store(backlog, Ordering::Release);
            self.metrics
                .forward_backlog
                .get_or_create(&lane.into())
                .set(backlog as i64);
            self.metrics
                .store_stored_bytes
                .get_or_create(&lane.into())
                .set(c.stored_bytes as i64);
        }
    }

    fn total_stored(&self) -> u64 {
        Lane::ALL
            .iter()
            .map(|l| self.lane(*l).stored_bytes.load(Ordering::Acquire))
            .sum()
    }

    fn lane(&self, lane: Lane) -> &super::LaneState {
        &self.shared.lanes[lane_index(lane)]
    }

    /// Commits one group: every append, dead letter and cursor move in one sled batch,
    /// then flush + fdatasync, then the waiting submitters are answered.
    fn commit(&mut self, group: Vec<Command>) {
        let mut batch = sled::Batch::default();
        let mut lanes: [Vec<pb::Event>; 2] = [Vec::new(), Vec::new()];
        let mut answers: Vec<(Done, u64, Option<Instant>)> = Vec::with_capacity(group.len());
        let mut cursor_moves: [Option<u64>; 2] = [None, None];
        let mut forwarded: [u64; 2] = [0, 0];
        let mut seq = self.next_seq;
        let mut dead_letter_id = self.next_dead_letter;
        let mut needs_sync = false;
        let mut pings = Vec::new();
        let tap = self.shared.tap.get().cloned();
        let mut committed: Vec<Event> = Vec::new();
        for cmd in group {
            match cmd {
                Command::Append {
                    mut event,
                    received,
                    done,
                } => {
                    event.seq = seq;
                    lanes[lane_index(event.lane())].push(pb::Event::from(&*event));
                    if tap.is_some() {
                        committed.push(*event);
                    }
                    answers.push((done, seq, Some(received)));
                    seq += 1;
                    needs_sync = true;
                }
                Command::DeadLetter {
                    letter,
                    received,
                    done,
                } => {
                    batch.insert(&keys::dead_letter(dead_letter_id), letter.encode());
                    if let Some(old) = dead_letter_id.checked_sub(self.opts.dead_letter_max as u64)
                    {
                        batch.remove(&keys::dead_letter(old));
                    }
                    answers.push((done, dead_letter_id, Some(received)));
                    dead_letter_id += 1;
                    needs_sync = true;
                }
                Command::Forwarded { lane, seq, count } => {
                    let i = lane_index(lane);
                    cursor_moves[i] = Some(cursor_moves[i].unwrap_or(0).max(seq));
                    forwarded[i] += count;
                }
                Command::Ping { done } => pings.push(done),
            }
        }

        let mut state = self.state();
        state.next_seq = seq;
        state.next_dead_letter = dead_letter_id;
        for (i, c) in state.lanes.iter_mut().enumerate() {
            c.cursor = c.cursor.max(cursor_moves[i].unwrap_or(0));
        }
        let mut added_bytes = [0u64; 2];
        let mut added_events = [0u64; 2];
        let mut last_added = [None; 2];
        let mut freed = [0u64; 2];
        for lane in Lane::ALL {
            let i = lane_index(lane);
            let events = std::mem::take(&mut lanes[i]);
            added_events[i] = events.len() as u64;
            last_added[i] = events.last().map(|e| e.seq);
            let cursor = state.lanes[i].cursor;
            for rec in self.records(lane, events, cursor, &mut batch, &mut freed[i]) {
                let value = rec.encode_to_vec();
                added_bytes[i] += value.len() as u64;
                batch.insert(&keys::record(lane, rec.last_seq), value);
            }
        }

        // Drop records that are forwarded when the config says not to keep them.
        for lane in Lane::ALL {
            let i = lane_index(lane);
            let Some(c) = cursor_moves[i] else { continue };
            if !self.opts.keep_forwarded {
                // Records the alert engine has not processed yet stay for its replay.
                let alerts_done = self.shared.alerts_done.load(Ordering::Acquire);
                match self.forwarded_records(lane, c.min(alerts_done)) {
                    Ok(recs) => {
                        for (k, v) in recs {
                            batch.remove(k);
                            freed[i] += v.len() as u64;
                        }
                    }
                    Err(err) => warn!(%lane, error = %err, "Could not list forwarded records."),
                }
            }
        }
        for (i, c) in state.lanes.iter_mut().enumerate() {
            c.stored_bytes = (c.stored_bytes + added_bytes[i]).saturating_sub(freed[i]);
            c.backlog = c
                .backlog
                .map(|b| (b + added_events[i]).saturating_sub(forwarded[i]));
        }
        batch.insert(keys::STATE, state.encode());
        // Also where the previous version reads it, so that rolling back after a crash
        // (no clean stop to write the other counters) never reuses a seq: receivers
        // deduplicate on it. Its other counters, stale then, only cost duplicates.
        batch.insert(keys::NEXT_SEQ, &seq.to_be_bytes());

        let result = self
            .db
            .apply_batch(batch)
            .map_err(StoreError::from)
            .and_then(|()| {
                if needs_sync {
                    self.db.flush()?;
                    self.log_file.sync_data()?;
                }
                // Durable before anything of this group is acknowledged or forwarded.
                if let Some(hw) = &mut self.high_water {
                    hw.set(Mark {
                        epoch: self.shared.epoch,
                        next_seq: seq,
                    })?;
                }
                Ok(())
            });
        if let Err(err) = result {
            self.metrics.store_errors.inc();
            error!(error = %err, inputs = answers.len(), "Group commit failed; inputs not acknowledged, the broker will redeliver them.");
            // The tails may hold events of this group, which was not written.
            for tail in &mut self.tails {
                tail.clear();
            }
            let msg = err.to_string();
            for (done, _, _) in answers {
                if let Some(done) = done {
                    let _ = done.send(Err(StoreError::CommitFailed(msg.clone())));
                }
            }
            // A failing disk would otherwise spin this loop.
            std::thread::sleep(Duration::from_millis(200));
            return;
        }

        self.next_seq = seq;
        self.next_dead_letter = dead_letter_id;
        self.publish(&state);
        for lane in Lane::ALL {
            let i = lane_index(lane);
            if let Some(last) = last_added[i] {
                self.lane(lane).last_seq.store(last, Ordering::Release);
            }
            self.metrics
                .store_committed
                .get_or_create(&lane.into())
                .inc_by(added_events[i]);
        }
        if seq > 1 {
            self.shared.committed.send_replace(seq - 1);
        }
        if let Some(tap) = tap {
            // Never waits (unbounded); a stopped engine just stops listening.
            for e in committed {
                let _ = tap.send(e);
            }
        }
        for done in pings {
            let _ = done.send(());
        }
        let now = Instant::now();
        self.metrics.store_group_size.observe(answers.len() as f64);
        for (done, id, received) in answers {
            if let Some(r) = received {
                self.metrics
                    .store_commit_latency
                    .observe(now.duration_since(r).as_secs_f64());
            }
            if let Some(done) = done {
                let _ = done.send(Ok(id));
            }
        }
    }

    /// The records to write for `events`, one group's events of `lane`. While the lane
    /// is backlogged, a group smaller than `pack_bytes` is written as it is and
    /// remembered in the lane's [`Tail`]; the group that brings the tail to `pack_bytes`
    /// is written together with it, and the tail's records are removed in the same batch
    /// (their stored bytes added to `freed`). `cursor` is the lane's cursor after this
    /// group.
    fn records(
        &mut self,
        lane: Lane,
        events: Vec<pb::Event>,
        cursor: u64,
        batch: &mut sled::Batch,
        freed: &mut u64,
    ) -> Vec<pb::EventBatch> {
        let max_bytes = self.opts.record_max_bytes;
        let pack_bytes = self.opts.pack_bytes;
        let backlog = self.lane(lane).backlog.load(Ordering::Acquire) + events.len() as u64;
        let backlogged = backlog >= self.opts.pack_backlog;
        let tail = &mut self.tails[lane_index(lane)];
        // Caught up, or the forwarder has reached the tail: its records stay as they are.
        if !backlogged || tail.events.first().is_some_and(|e| e.seq <= cursor) {
            tail.clear();
        }
        if !backlogged || events.is_empty() {
            return split_records(lane, events, max_bytes);
        }
        let bytes: usize = events.iter().map(|e| e.encoded_len() + 4).sum();
        if tail.event_bytes + bytes < pack_bytes {
            tail.events.extend(events.iter().cloned());
            tail.event_bytes += bytes;
            let records = split_records(lane, events, max_bytes);
            for rec in &records {
                tail.keys.push(keys::record(lane, rec.last_seq));
                tail.record_bytes += rec.encoded_len() as u64;
            }
            return records;
        }
        for key in &tail.keys {
            batch.remove(key);
        }
        *freed += tail.record_bytes;
        let mut all = std::mem::take(&mut tail.events);
        all.extend(events);
        tail.clear();
        split_records(lane, all, max_bytes)
    }

    /// Records of `lane` whose events are all at or below `cursor` (key, value).
    fn forwarded_records(
        &self,
        lane: Lane,
        cursor: u64,
    ) -> Result<Vec<(sled::IVec, sled::IVec)>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .db
            .range(keys::record(lane, 0)..=keys::record(lane, cursor))
        {
            let (k, v) = item?;
            out.push((k, v));
        }
        Ok(out)
    }

    /// Brings stored bytes back under 90 % of the budget: forwarded records first, then
    /// the oldest unforwarded telemetry, alarms last. Unforwarded evictions raise
    /// `GW.STORE_EVICTED` (one event per lane, with the seq range and count).
    fn evict(&mut self) -> Result<(), StoreError> {
        let budget = self.opts.disk_budget;
        let target = budget - budget / 10;
        let mut total = self.total_stored();
        let mut batch = sled::Batch::default();
        let mut freed = [0u64; 2];
        let mut lost: Vec<(Lane, u64, u64, u64)> = Vec::new();
        // Eviction may remove a tail's records; packing them after would bring them back.
        for tail in &mut self.tails {
            tail.clear();
        }

        // 1. Already forwarded: housekeeping, nothing is lost.
        for lane in [Lane::Events, Lane::Alarms] {
            let cursor = self.lane(lane).cursor.load(Ordering::Acquire);
            for (k, v) in self.forwarded_records(lane, cursor)? {
                if total <= target {
                    break;
                }
                let n = decode_record(&k, &v)
                    .map(|r| r.events.len() as u64)
                    .unwrap_or(0);
                let len = v.len() as u64;
                batch.remove(k);
                total = total.saturating_sub(len);
                freed[lane_index(lane)] += len;
                self.metrics
                    .store_evicted
                    .get_or_create(&EvictLabel {
                        lane: lane.as_str(),
                        kind: "forwarded",
                    })
                    .inc_by(n);
            }
        }
        // 2. Not yet forwarded: telemetry first, alarms last.
        for lane in [Lane::Events, Lane::Alarms] {
            if total <= target {
                break;
            }
            let cursor = self.lane(lane).cursor.load(Ordering::Acquire);
            let mut range: Option<(u64, u64, u64)> = None;
            for item in self
                .db
                .range(keys::records_from(lane, cursor.saturating_add(1)))
            {
                if total <= target {
                    break;
                }
                let (k, v) = item?;
                let rec = decode_record(&k, &v)?;
                let unforwarded: Vec<u64> = rec
                    .events
                    .iter()
                    .map(|e| e.seq)
                    .filter(|s| *s > cursor)
                    .collect();
                let already_forwarded = (rec.events.len() - unforwarded.len()) as u64;
                if already_forwarded > 0 {
                    self.metrics
                        .store_evicted
                        .get_or_create(&EvictLabel {
                            lane: lane.as_str(),
                            kind: "forwarded",
                        })
                        .inc_by(already_forwarded);
                }
                if let (Some(first), Some(last)) = (unforwarded.first(), unforwarded.last()) {
                    let r = range.get_or_insert((*first, *last, 0));
                    r.1 = *last;
                    r.2 += unforwarded.len() as u64;
                }
                batch.remove(k);
                total = total.saturating_sub(v.len() as u64);
                freed[lane_index(lane)] += v.len() as u64;
            }
            if let Some((first, last, n)) = range {
                lost.push((lane, first, last, n));
            }
        }
        let mut state = self.state();
        for (i, c) in state.lanes.iter_mut().enumerate() {
            c.stored_bytes = c.stored_bytes.saturating_sub(freed[i]);
        }
        for (lane, _, _, n) in &lost {
            let c = &mut state.lanes[lane_index(*lane)];
            c.backlog = c.backlog.map(|b| b.saturating_sub(*n));
        }
        batch.insert(keys::STATE, state.encode());
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        self.log_file.sync_data()?;
        self.publish(&state);
        let mut raised = Vec::new();
        for (lane, first, last, n) in lost {
            self.metrics
                .store_evicted
                .get_or_create(&EvictLabel {
                    lane: lane.as_str(),
                    kind: "unforwarded",
                })
                .inc_by(n);
            warn!(%lane, first_seq = first, last_seq = last, events = n, budget, "Disk budget reached; evicted events that were not yet forwarded.");
            let ev: Event = crate::events::gateway_event(
                &self.opts.gateway_id,
                &self.opts.estate_id,
                "GW.STORE_EVICTED",
                EventState::Active,
                Some(Reading {
                    value: n as f64,
                    unit: "events".into(),
                }),
                serde_json::json!({"lane": lane.as_str(), "first_seq": first, "last_seq": last, "events": n, "disk_budget": budget}),
            );
            raised.push(Command::Append {
                event: Box::new(ev),
                received: Instant::now(),
                done: None,
            });
        }
        if !raised.is_empty() {
            self.commit(raised);
        }
        Ok(())
    }
}

/// Splits one lane's events of a group into records of at most `max_bytes` encoded.
fn split_records(lane: Lane, events: Vec<pb::Event>, max_bytes: usize) -> Vec<pb::EventBatch> {
    let mut out = Vec::new();
    let mut cur: Vec<pb::Event> = Vec::new();
    let mut size = 0usize;
    let flush = |cur: &mut Vec<pb::Event>, out: &mut Vec<pb::EventBatch>| {
        if let (Some(f), Some(l)) = (cur.first(), cur.last()) {
            out.push(pb::EventBatch {
                lane: pb::Lane::from(lane).into(),
                first_seq: f.seq,
                last_seq: l.seq,
                events: std::mem::take(cur),
                ..Default::default()
            });
        }
    };
    for e in events {
        let len = e.encoded_len() + 4;
        if !cur.is_empty() && size + len > max_bytes {
            flush(&mut cur, &mut out);
            size = 0;
        }
        size += len;
        cur.push(e);
    }
    flush(&mut cur, &mut out);
    out
}
