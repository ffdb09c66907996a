//! The store's single writer: group commit, cursors, dead letters, eviction and the disk.
//!
//! One group is planned in pure code (`store/plan.rs`: seqs, cursor moves, counters),
//! then [`StoreWriter::prepare`] adds what needs the tree (the sled batch and the counters it
//! would leave), then either [`StoreWriter::finish`] (the batch is durable: counters
//! published, submitters answered, events tapped) or [`StoreWriter::fail_group`] (nothing
//! was written: submitters get an error and the broker redelivers, the cursor moves and
//! the gateway's own events are carried into the next group, the events go to the alert
//! engine as not stored).

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, warn};

use estate_protocols::model::{Event, EventState, Lane, Reading};
use estate_protocols::pb;

use super::disk::{self, Reserve, WRITE_FLOOR};
use super::plan::{self, Done};
use super::recovery::{Finding, HighWater, Mark};
use super::{decode_record, keys, lane_index, Command, Shared, StoreError, StoreOptions, Tapped};
use crate::health::Level;
use crate::telemetry::{EvictLabel, Metrics};

/// `/healthz` key while free space is below `store.disk_low_free`.
const HEALTH_DISK_LOW: &str = "disk";
/// `/healthz` key while writes are paused (free space under [`WRITE_FLOOR`]) or a group
/// commit failed.
const HEALTH_STORE: &str = "store";
/// Logical bytes kept at most, as a share of the budget: sled's log holds dead space
/// until it rewrites a segment, so live data at half the budget keeps the folder's real
/// size near it (measured in tests/disk_full.rs, docs/never-lost.md, "Full disk").
const LIVE_SHARE: u64 = 2;
/// Writes resume at this much free space: room to take the reserve again and stay above
/// the floor (the released reserve alone must not end the pause, or the gateway would
/// fill the disk again at once).
const RESUME_FREE: u64 = disk::RESERVE_BYTES + 2 * WRITE_FLOOR;
/// How often the folder's real size is measured (a few `stat`s).
const MEASURE_EVERY: Duration = Duration::from_millis(250);
/// While paused, how long the writer waits before it looks at the disk again.
const PAUSED_RETRY: Duration = Duration::from_millis(200);
/// Gateway events kept for the next group while commits fail (alert changes going
/// upstream, `GW.DISK_LOW`); beyond it new ones are dropped, so that a store that never
/// recovers does not grow memory.
const DEFERRED_MAX: usize = 4096;
/// At most one `GW.STORE_EVICTED` per lane this often; evictions in between are summed
/// into the next one (the counters stay exact).
const EVICTED_EVENT_EVERY: Duration = Duration::from_secs(60);

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
    /// The store's folder, measured against the budget and for free space.
    dir: PathBuf,
    reserve: Reserve,
    /// `GW.DISK_LOW` is active.
    disk_low: bool,
    /// Writes are paused: free space is under [`WRITE_FLOOR`].
    paused: bool,
    /// Real bytes of the folder when last measured, and when.
    disk_bytes: u64,
    measured: Option<Instant>,
    /// Cursor moves (per lane: highest seq, events) of groups that failed, carried into
    /// the next group so that the backlog and cursors stay right.
    carried: [(Option<u64>, u64); 2],
    /// The gateway's own events (`done` none) of failed groups, already shown to the
    /// alert engine as not stored; retried at the front of the next group.
    deferred: Vec<Command>,
    /// The gateway's own events raised by the writer (disk low, evictions), committed
    /// with the next group.
    raised: Vec<Command>,
    /// Unforwarded evictions not yet raised as `GW.STORE_EVICTED` (per lane: first seq,
    /// last seq, events), and when each lane last raised one.
    evicted_unraised: [Option<(u64, u64, u64)>; 2],
    evicted_raised_at: [Option<Instant>; 2],
    /// The store's high-water mark, set with every commit that assigns seqs.
    high_water: Option<HighWater>,
    /// Gateway events about how the store was opened, committed first by [`Self::run`].
    recovered: Vec<Event>,
    /// For `resend_window`: (when, the next seq then), at most one a second, oldest
    /// first, trimmed to the window; and per lane, the seq up to which forwarded records
    /// were last deleted.
    recent: std::collections::VecDeque<(Instant, u64)>,
    /// The highest seq known to be older than the window.
    aged: u64,
    deleted_upto: [u64; 2],
}

/// Entries of [`StoreWriter::recent`] at most this often: the window's resolution.
const RECENT_EVERY: Duration = Duration::from_secs(1);

/// One group, ready to be written: see the module doc.
struct Prepared {
    batch: sled::Batch,
    answers: Vec<(Done, u64, Option<Instant>)>,
    pings: Vec<oneshot::Sender<()>>,
    /// The group's events, for the alert engine, and whether each is the gateway's own
    /// (`done` none: kept and retried if the group fails).
    events: Vec<(Event, bool)>,
    state: keys::State,
    cursor_moves: [Option<u64>; 2],
    forwarded: [u64; 2],
    added_events: [u64; 2],
    last_added: [Option<u64>; 2],
    needs_sync: bool,
    /// How many of the group's first appends were deferred from a failed group.
    deferred: usize,
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
/// trimmer, the smaller uplink window and the sled cache patch (docs/footprint.md). An
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
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        db: sled::Db,
        log_file: File,
        dir: PathBuf,
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
            reserve: Reserve::new(&dir),
            dir,
            disk_low: false,
            paused: false,
            disk_bytes: 0,
            measured: None,
            carried: [(None, 0); 2],
            deferred: Vec::new(),
            raised: Vec::new(),
            evicted_unraised: [None; 2],
            evicted_raised_at: [None; 2],
            high_water: None,
            recovered: Vec::new(),
            recent: std::collections::VecDeque::new(),
            aged: 0,
            deleted_upto: [0; 2],
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
        self.check_disk();
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
            self.commit(group, 0);
        }
        while let Some(first) = self.next_command() {
            let mut group = std::mem::take(&mut self.deferred);
            let deferred = group.len();
            group.append(&mut self.raised);
            group.reserve(max.min(1024));
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
            self.check_disk();
            self.commit(group, deferred);
            if let Some(target) = self.over_budget() {
                if let Err(err) = self.evict(target) {
                    error!(error = %err, "Eviction failed; the store may grow past its disk budget.");
                }
                if !self.raised.is_empty() {
                    let raised = std::mem::take(&mut self.raised);
                    self.commit(raised, 0);
                }
            }
        }
        // Evictions the rate limit held back are raised on the way out.
        self.evicted_raised_at = [None; 2];
        self.raise_evicted(self.opts.disk_budget);
        let last = std::mem::take(&mut self.deferred)
            .into_iter()
            .chain(std::mem::take(&mut self.raised))
            .collect::<Vec<_>>();
        if !last.is_empty() {
            self.check_disk();
            self.commit(last, 0);
        }
        if self.paused {
            warn!("Store writer stopping with writes paused (disk full); the broker redelivers what was not acknowledged.");
            return Ok(());
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

    /// The next command. While idle, looks at the disk every [`MEASURE_EVERY`] (free
    /// space can go while nothing arrives); with gateway events waiting, wakes every
    /// [`PAUSED_RETRY`] to commit them even when nothing else arrives.
    fn next_command(&mut self) -> Option<Command> {
        let runtime = tokio::runtime::Handle::try_current().ok();
        loop {
            if self.deferred.is_empty() && self.raised.is_empty() {
                let Some(rt) = &runtime else {
                    return self.rx.blocking_recv();
                };
                match rt.block_on(tokio::time::timeout(MEASURE_EVERY, self.rx.recv())) {
                    Ok(c) => return c,
                    Err(_) => {
                        self.check_disk();
                        continue;
                    }
                }
            }
            match self.rx.try_recv() {
                Ok(c) => return Some(c),
                Err(mpsc::error::TryRecvError::Disconnected) => return None,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            std::thread::sleep(PAUSED_RETRY);
            self.check_disk();
            if !self.paused {
                // Commit the deferred events on their own.
                return Some(Command::Ping {
                    done: oneshot::channel().0,
                });
            }
        }
    }

    /// Measures free space (every group: one statvfs) and the folder's real size (every
    /// [`MEASURE_EVERY`]); raises and clears `GW.DISK_LOW`, pauses and resumes writes,
    /// releases and takes the reserve.
    fn check_disk(&mut self) {
        // Without a reading nothing is paused: the writer commits, and a real ENOSPC
        // fails its group as any write error does. Said once per process.
        static UNKNOWN: std::sync::Once = std::sync::Once::new();
        let free = match disk::free_bytes(&self.dir) {
            Ok(Some(f)) => f,
            Ok(None) => {
                UNKNOWN.call_once(|| warn!(dir = %self.dir.display(), "The data folder's filesystem does not report its size: GW.DISK_LOW and the full-disk pause are off."));
                return;
            }
            Err(err) => {
                UNKNOWN.call_once(|| warn!(error = %err, "Cannot read the data folder's free space: GW.DISK_LOW and the full-disk pause are off."));
                return;
            }
        };
        self.metrics.store_disk_free.set(free as i64);
        if self.measured.is_none_or(|t| t.elapsed() >= MEASURE_EVERY) {
            if let Ok(b) = disk::dir_disk_bytes(&self.dir) {
                self.disk_bytes = b;
                self.metrics.store_disk_bytes.set(b as i64);
            }
            self.measured = Some(Instant::now());
        }
        let low = self.opts.disk_low_free;
        let health = &self.metrics.health;
        if free < WRITE_FLOOR && !self.paused {
            self.paused = true;
            if self.reserve.held() {
                if let Err(err) = self.reserve.release() {
                    warn!(error = %err, "Could not release the store's reserve file.");
                }
            }
            error!(free, floor = WRITE_FLOOR, "Disk full: store writes paused; messages are not acknowledged (the broker keeps them) and alarms open local alerts marked not stored.");
            health.set(
                HEALTH_STORE,
                Level::Degraded,
                format!("disk full: {free} bytes free on the data folder's filesystem, under the {WRITE_FLOOR}-byte floor; writes paused, nothing new is stored or acknowledged, alarms open local alerts marked not stored"),
            );
        } else if free >= RESUME_FREE && self.paused {
            self.paused = false;
            warn!(free, "Disk space is back: store writes resume.");
            health.clear(HEALTH_STORE);
        }
        if !self.paused && !self.reserve.held() && free >= RESUME_FREE {
            if let Err(err) = self.reserve.take() {
                debug!(error = %err, "Could not allocate the store's reserve file.");
            }
        }
        if free < low && !self.disk_low {
            self.disk_low = true;
            warn!(
                free,
                disk_low_free = low,
                "Disk space low: raising GW.DISK_LOW."
            );
            health.set(
                HEALTH_DISK_LOW,
                Level::Degraded,
                format!("disk space low: {free} bytes free on the data folder's filesystem, under store.disk_low_free ({low})"),
            );
            self.raise_disk_low(EventState::Active, free);
        } else if free >= low + low / 8 && self.disk_low {
            self.disk_low = false;
            warn!(
                free,
                "Disk space back above store.disk_low_free: clearing GW.DISK_LOW."
            );
            health.clear(HEALTH_DISK_LOW);
            self.raise_disk_low(EventState::Cleared, free);
        }
    }

    fn raise_disk_low(&mut self, state: EventState, free: u64) {
        let ev = crate::events::gateway_event(
            &self.opts.gateway_id,
            &self.opts.estate_id,
            "GW.DISK_LOW",
            state,
            Some(Reading {
                value: free as f64,
                unit: "bytes".into(),
            }),
            serde_json::json!({"free_bytes": free, "disk_low_free": self.opts.disk_low_free}),
        );
        // Committed with the next group (or shown as not stored if that fails).
        self.raised.push(Command::Append {
            event: Box::new(ev),
            received: Instant::now(),
            done: None,
        });
    }

    /// The logical size to evict down to, when the store is over its budget: live
    /// records over `budget / LIVE_SHARE`, or the folder's real size over the budget
    /// while live records are at least a quarter of it (then down by the share the real
    /// size is over). When the folder is mostly sled's dead space, evicting live events
    /// would lose them without shrinking it: sled's segment cleaning does that.
    fn over_budget(&self) -> Option<u64> {
        let budget = self.opts.disk_budget;
        let live = self.total_stored();
        let live_max = budget / LIVE_SHARE;
        if live > live_max {
            return Some(live_max - live_max / 10);
        }
        if self.disk_bytes > budget && live > self.disk_bytes / 4 {
            let scaled = (live as u128 * budget as u128 / self.disk_bytes as u128) as u64;
            return Some(scaled - scaled / 10);
        }
        None
    }

    /// Commits one group: every append, dead letter and cursor move in one sled batch,
    /// then flush + fdatasync, then the waiting submitters are answered. While writes
    /// are paused nothing is written and the group fails.
    /// `deferred`: how many of the group's first commands are gateway events carried
    /// from a failed group (already shown to the alert engine as not stored).
    fn commit(&mut self, group: Vec<Command>, deferred: usize) {
        let mut prepared = self.prepare(group, deferred);
        if self.paused {
            self.fail_group(prepared, None);
            return;
        }
        let result = self
            .db
            .apply_batch(std::mem::take(&mut prepared.batch))
            .map_err(StoreError::from)
            .and_then(|()| {
                if prepared.needs_sync {
                    self.db.flush()?;
                    self.log_file.sync_data()?;
                }
                // Durable before anything of this group is acknowledged or forwarded.
                if let Some(hw) = &mut self.high_water {
                    hw.set(Mark {
                        epoch: self.shared.epoch,
                        next_seq: prepared.state.next_seq,
                    })?;
                }
                Ok(())
            });
        match result {
            Ok(()) => self.finish(prepared),
            Err(err) => {
                self.metrics.store_errors.inc();
                self.metrics.health.set(
                    HEALTH_STORE,
                    Level::Degraded,
                    format!("group commit failed: {err}; nothing of it is acknowledged, the broker redelivers it"),
                );
                error!(error = %err, inputs = prepared.answers.len(), "Group commit failed; inputs not acknowledged, the broker will redeliver them.");
                self.fail_group(prepared, Some(Arc::new(err)));
                // A failing disk would otherwise spin this loop.
                std::thread::sleep(PAUSED_RETRY);
            }
        }
    }

    /// Builds the group's sled batch and the counters it would leave; writes nothing.
    /// The ids and counters come from [`plan`]; this adds the records (packing a lane's
    /// tail) and the forwarded records to drop, which need the tree.
    fn prepare(&mut self, group: Vec<Command>, deferred: usize) -> Prepared {
        let start = plan::Start {
            next_seq: self.next_seq,
            next_dead_letter: self.next_dead_letter,
            dead_letter_max: self.opts.dead_letter_max as u64,
            carried: self.carried,
        };
        let mut g = plan::take_group(group, &start);
        let mut batch = sled::Batch::default();
        for op in std::mem::take(&mut g.ops) {
            match op {
                plan::Op::Insert(k, v) => batch.insert(k, v),
                plan::Op::Remove(k) => batch.remove(k),
            }
        }
        let mut state = plan::advance(&self.state(), &g);
        let mut delta = [plan::Delta::default(); 2];
        let mut last_added = [None; 2];
        for lane in Lane::ALL {
            let i = lane_index(lane);
            let events = std::mem::take(&mut g.lanes[i]);
            delta[i].added_events = events.len() as u64;
            delta[i].gone_events = g.forwarded[i];
            last_added[i] = events.last().map(|e| e.seq);
            let cursor = state.lanes[i].cursor;
            let mut freed = 0;
            for rec in self.records(lane, events, cursor, &mut batch, &mut freed) {
                let value = rec.encode_to_vec();
                delta[i].added_bytes += value.len() as u64;
                batch.insert(&keys::record(lane, rec.last_seq), value);
            }
            delta[i].freed_bytes = freed;
        }
        self.drop_forwarded(&state, g.next_seq, &mut batch, &mut delta);
        plan::settle(&mut state, &delta);
        batch.insert(keys::STATE, state.encode());
        // Also where the previous version reads it, so that rolling back after a crash
        // (no clean stop to write the other counters) never reuses a seq: receivers
        // deduplicate on it. Its other counters, stale then, only cost duplicates.
        batch.insert(keys::NEXT_SEQ, &g.next_seq.to_be_bytes());
        Prepared {
            batch,
            answers: g.answers,
            pings: g.pings,
            events: g.events,
            state,
            cursor_moves: g.cursor_moves,
            forwarded: g.forwarded,
            added_events: delta.map(|d| d.added_events),
            last_added,
            needs_sync: g.needs_sync,
            deferred,
        }
    }

    /// Drops records that are forwarded when the config says not to keep them, once
    /// they are older than the resend window, adding their bytes to `delta`.
    fn drop_forwarded(
        &mut self,
        state: &keys::State,
        next_seq: u64,
        batch: &mut sled::Batch,
        delta: &mut [plan::Delta; 2],
    ) {
        if self.opts.keep_forwarded {
            return;
        }
        let aged = self.aged_seq(next_seq);
        // Records the alert engine has not processed yet stay for its replay.
        let alerts_done = self.shared.alerts_done.load(Ordering::Acquire);
        for lane in Lane::ALL {
            let i = lane_index(lane);
            let upto = state.lanes[i].cursor.min(alerts_done).min(aged);
            if upto <= self.deleted_upto[i] {
                continue;
            }
            match self.forwarded_records(lane, upto) {
                Ok(recs) => {
                    for (k, v) in recs {
                        batch.remove(k);
                        delta[i].freed_bytes += v.len() as u64;
                    }
                    self.deleted_upto[i] = upto;
                }
                Err(err) => warn!(%lane, error = %err, "Could not list forwarded records."),
            }
        }
    }

    /// The group is durable (applied, flushed and fdatasync'ed): publish its counters,
    /// hand its events to the alert engine, answer its submitters.
    fn finish(&mut self, p: Prepared) {
        let seq = p.state.next_seq;
        self.next_seq = seq;
        self.next_dead_letter = p.state.next_dead_letter;
        self.carried = [(None, 0); 2];
        if self.metrics.health.is_set(HEALTH_STORE) && !self.paused {
            self.metrics.health.clear(HEALTH_STORE);
        }
        self.publish(&p.state);
        for lane in Lane::ALL {
            let i = lane_index(lane);
            if let Some(last) = p.last_added[i] {
                self.lane(lane).last_seq.store(last, Ordering::Release);
            }
            self.metrics
                .store_committed
                .get_or_create(&lane.into())
                .inc_by(p.added_events[i]);
        }
        if seq > 1 {
            self.shared.committed.send_replace(seq - 1);
        }
        if let Some(tap) = self.shared.tap.get() {
            // Never waits (unbounded); a stopped engine just stops listening.
            for (e, _) in p.events {
                let _ = tap.send(Tapped::Committed(e));
            }
        }
        for done in p.pings {
            let _ = done.send(());
        }
        let now = Instant::now();
        self.metrics
            .store_group_size
            .observe(p.answers.len() as f64);
        for (done, id, received) in p.answers {
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

    /// Nothing of the group was written. Its submitters get the error (ingest does not
    /// acknowledge, the broker redelivers); its cursor moves and the gateway's own events
    /// are carried into the next group; its events go to the alert engine as not stored
    /// (once). `error` is the commit's error; none for a pause, which still answers the
    /// watchdog's pings: the writer is alive and waiting for space, which a restart
    /// would not bring.
    fn fail_group(&mut self, p: Prepared, error: Option<Arc<StoreError>>) {
        // The tails may hold events of this group, which was not written.
        for tail in &mut self.tails {
            tail.clear();
        }
        self.carried = [
            (p.cursor_moves[0], p.forwarded[0]),
            (p.cursor_moves[1], p.forwarded[1]),
        ];
        let tap = self.shared.tap.get();
        for (i, (mut e, own)) in p.events.into_iter().enumerate() {
            e.seq = 0;
            if i >= p.deferred {
                if let Some(tap) = tap {
                    let _ = tap.send(Tapped::NotStored(e.clone()));
                }
            }
            if own {
                if self.deferred.len() >= DEFERRED_MAX {
                    warn!(code = %e.code, "Too many gateway events waiting for the disk; dropping this one (it was shown to the alert engine).");
                    continue;
                }
                self.deferred.push(Command::Append {
                    event: Box::new(e),
                    received: Instant::now(),
                    done: None,
                });
            }
        }
        self.metrics
            .store_not_stored
            .inc_by(p.answers.iter().filter(|a| a.0.is_some()).count() as u64);
        if error.is_none() {
            for done in p.pings {
                let _ = done.send(());
            }
        }
        for (done, _, _) in p.answers {
            if let Some(done) = done {
                let _ = done.send(Err(match &error {
                    Some(err) => StoreError::CommitFailed(err.clone()),
                    None => StoreError::DiskFull,
                }));
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
        let max_bytes = self.opts.record_max_bytes.min(RECORD_TARGET_BYTES);
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
    /// The highest seq committed longer than `resend_window` ago (every seq when the
    /// window is zero). `next_seq`: the seq after this group's, every one below it
    /// committed now. Seqs between two entries of `recent` count as committed at the
    /// later one, so they stay a little longer, never shorter.
    fn aged_seq(&mut self, next_seq: u64) -> u64 {
        let window = self.opts.resend_window;
        if window.is_zero() {
            return u64::MAX;
        }
        let now = Instant::now();
        if self
            .recent
            .back()
            .is_none_or(|(t, _)| now.duration_since(*t) >= RECENT_EVERY)
        {
            self.recent.push_back((now, next_seq));
        }
        while let Some(&(t, next)) = self.recent.front() {
            if now.duration_since(t) < window {
                break;
            }
            self.aged = next.saturating_sub(1);
            self.recent.pop_front();
        }
        self.aged
    }

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

    /// Brings stored (logical) bytes down to `target` (see [`StoreWriter::over_budget`]):
    /// forwarded records first, then the oldest unforwarded telemetry, alarms last.
    /// Unforwarded evictions raise `GW.STORE_EVICTED` (per lane, with the seq range and
    /// count; at most one per lane per [`EVICTED_EVENT_EVERY`], summed).
    fn evict(&mut self, target: u64) -> Result<(), StoreError> {
        let budget = self.opts.disk_budget;
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
        for lane in plan::EVICTION_ORDER {
            if total <= target {
                break;
            }
            let mut step = Evicting {
                target,
                total: &mut total,
                batch: &mut batch,
                freed: &mut freed[lane_index(lane)],
            };
            if let Some((first, last, n)) = self.evict_unforwarded(lane, &mut step)? {
                lost.push((lane, first, last, n));
            }
        }
        let mut state = self.state();
        let mut delta = [plan::Delta::default(); 2];
        for (i, d) in delta.iter_mut().enumerate() {
            d.freed_bytes = freed[i];
        }
        for (lane, _, _, n) in &lost {
            delta[lane_index(*lane)].gone_events += n;
        }
        plan::settle(&mut state, &delta);
        batch.insert(keys::STATE, state.encode());
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        self.log_file.sync_data()?;
        self.publish(&state);
        for (lane, first, last, n) in lost {
            self.metrics
                .store_evicted
                .get_or_create(&EvictLabel {
                    lane: lane.as_str(),
                    kind: "unforwarded",
                })
                .inc_by(n);
            let i = lane_index(lane);
            let r = self.evicted_unraised[i].get_or_insert((first, last, 0));
            r.1 = last;
            r.2 += n;
        }
        self.raise_evicted(budget);
        Ok(())
    }
}

/// One lane's step of [`StoreWriter::evict`]: the bytes still stored (`total`), the batch
/// of removals and the lane's freed bytes.
struct Evicting<'a> {
    target: u64,
    total: &'a mut u64,
    batch: &'a mut sled::Batch,
    freed: &'a mut u64,
}

impl StoreWriter {
    /// Removes `lane`'s oldest unforwarded records until `step.total` is at its target;
    /// returns the unforwarded seqs lost (first, last, count), if any.
    fn evict_unforwarded(
        &self,
        lane: Lane,
        step: &mut Evicting<'_>,
    ) -> Result<Option<(u64, u64, u64)>, StoreError> {
        let cursor = self.lane(lane).cursor.load(Ordering::Acquire);
        let mut range: Option<(u64, u64, u64)> = None;
        for item in self
            .db
            .range(keys::records_from(lane, cursor.saturating_add(1)))
        {
            if *step.total <= step.target {
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
            step.batch.remove(k);
            *step.total = step.total.saturating_sub(v.len() as u64);
            *step.freed += v.len() as u64;
        }
        Ok(range)
    }

    /// Raises the unforwarded evictions summed since a lane's last `GW.STORE_EVICTED`, at
    /// most one per lane per [`EVICTED_EVENT_EVERY`] (a long outage at the budget would
    /// otherwise raise one per commit).
    fn raise_evicted(&mut self, budget: u64) {
        for lane in Lane::ALL {
            let i = lane_index(lane);
            if self.evicted_raised_at[i].is_some_and(|t| t.elapsed() < EVICTED_EVENT_EVERY) {
                continue;
            }
            let Some((first, last, n)) = self.evicted_unraised[i].take() else {
                continue;
            };
            self.evicted_raised_at[i] = Some(Instant::now());
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
            self.raised.push(Command::Append {
                event: Box::new(ev),
                received: Instant::now(),
                done: None,
            });
        }
    }
}

/// How large a record a group's events are split into (an event larger than this is a
/// record of its own, up to `record_max_bytes`). sled splits a leaf above 16 keys
/// (vendor/sled/src/node.rs `should_split`) and writes a leaf larger than a quarter of its
/// 512 KiB segment to a blob file (`pagecache/logger.rs` `reserve`); 16 records of 6 KiB
/// stay under that, so a fast fill (groups of hundreds of events) leaves no blob leaves,
/// which the page cache holds longer than their size says (docs/footprint.md).
pub(super) const RECORD_TARGET_BYTES: usize = 6 * 1024;

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
