//! The durable event store: one sled tree, one writer, group commit.
//!
//! ```text
//!  ingest ──StoreHandle::append──▶ [bounded channel] ──▶ writer thread ──▶ sled (apply_batch, flush, fdatasync)
//!  forward ─StoreHandle::forwarded─┘                         │
//!                                                            └──▶ committed watch ──▶ forward (StoreReader)
//! ```
//!
//! - **Acked means durable.** [`StoreHandle::append`] returns a [`Pending`] that resolves
//!   with the event's `seq` only after its whole group is in sled, flushed, and the log
//!   file fdatasync'ed. Ingest acknowledges the MQTT message only then. Upstream sled's
//!   `flush()` did not survive a power cut (sync_file_range, unsynced blob files,
//!   snapshot and settings files); the vendored copy is patched to be
//!   (`vendor/sled/PATCHES.md`), and the writer's own fdatasync stays as a cheap guard
//!   (the log is already clean, so it costs one syscall).
//! - **Group commit.** The writer takes every command already queued (up to
//!   `batch_max_events`), optionally lingers, and commits them with one `apply_batch` and one
//!   flush. With acks held until commit, the queue *is* the batch: waiting longer would only
//!   hold back the acks the broker is waiting for.
//! - **Records, not tiny keys.** A group's events are encoded per lane into records (prost
//!   `EventBatch`es) of about 6 KiB (an event larger than that alone, up to
//!   `record_max_bytes`), so that a sled leaf of 16 records stays under sled's 128 KiB
//!   blob size even when a fast fill commits hundreds of events at once: a blob leaf is
//!   written outside the log and held in the page cache longer than its size says.
//!   While a lane has a backlog (at least [`PACK_BACKLOG`] events, the uplink is down or
//!   behind), the writer packs its small records: the commit that brings the newest small
//!   ones to [`PACK_BYTES`] writes them again as one record and removes them, in the same
//!   batch. A backlog is then about a ninth of the sled keys, which is what holds the
//!   gateway's memory down while it drains (docs/footprint.md).
//! - **Lanes.** Severity 1–2 events go to the alarms lane, the rest to the events lane;
//!   `seq` is one counter across both. Each lane has a forward cursor.
//! - **Disk budget.** When stored bytes exceed the budget the writer evicts, in order:
//!   already forwarded records, the oldest unforwarded telemetry, alarms last. Every
//!   eviction is counted; unforwarded ones raise a `GW.STORE_EVICTED` event.

mod disk;
mod keys;
mod plan;
pub mod recovery;
pub mod verify;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use tokio::sync::{mpsc, oneshot, watch};

use estate_config::Config;
use estate_protocols::model::{Event, Lane};
use estate_protocols::pb;

use crate::telemetry::Metrics;

pub use disk::{dir_disk_bytes, free_bytes};
pub use writer::StoreWriter;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed.
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    /// Reading or syncing the store's files failed.
    #[error("I/O on the store's files: {0}")]
    Io(#[from] std::io::Error),
    /// A stored record does not decode.
    #[error("stored record {key:?} does not decode: {source}")]
    Corrupt {
        /// The record's key.
        key: Vec<u8>,
        /// What the decoder found.
        source: prost::DecodeError,
    },
    /// A metadata value has the wrong length or form.
    #[error("store metadata {} is malformed", String::from_utf8_lossy(.key))]
    BadMetadata {
        /// The metadata key.
        key: Vec<u8>,
    },
    /// The writer has ended; nothing more is stored.
    #[error("the store writer has stopped")]
    Closed,
    /// The group this submission joined was not written (the broker redelivers it).
    #[error("commit failed: {0}")]
    CommitFailed(#[source] Arc<StoreError>),
    /// Writes are paused: the data folder's filesystem is full (docs/never-lost.md, "Full disk").
    #[error("not stored: the disk is full, store writes are paused")]
    DiskFull,
}

/// Store settings, built from the config.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `gateway.id`, on the gateway's own events (`GW.*`) the writer raises.
    pub gateway_id: String,
    /// `gateway.estate_id`, likewise.
    pub estate_id: String,
    /// Most inputs in one group commit (one flush and fdatasync); at least 1.
    pub batch_max_events: usize,
    /// How long a group waits for more inputs once the queue is empty; 0: commit at once.
    pub batch_linger: Duration,
    /// Real disk bytes the store's folder may take (see `store/disk.rs`).
    pub disk_budget: u64,
    /// Free space below which `GW.DISK_LOW` is raised.
    pub disk_low_free: u64,
    /// sled's page cache, in bytes.
    pub cache_capacity: u64,
    /// Largest stored record in bytes (an event with its raw bytes); below 128 KiB so
    /// that every record stays in sled's log, which the power-loss flush covers.
    pub record_max_bytes: usize,
    /// Dead letters kept; the oldest are dropped (and counted) beyond it.
    pub dead_letter_max: usize,
    /// Keep forwarded events as local history instead of deleting them after the
    /// resend window.
    pub keep_forwarded: bool,
    /// Without `keep_forwarded`: how long forwarded records stay for a resend.
    pub resend_window: Duration,
    /// Capacity of the command channel. Ingest blocks (back-pressure to the broker) when
    /// it is full; it never drops.
    pub queue_capacity: usize,
    /// A lane with at least this many unforwarded events packs its small records.
    pub pack_backlog: u64,
    /// Size the small records of a backlogged lane are packed to (encoded bytes).
    pub pack_bytes: usize,
}

/// See [`StoreOptions::pack_backlog`]: about two seconds of a busy estate's flow. Below
/// it the forwarder is keeping up and records are deleted soon after they are written.
pub const PACK_BACKLOG: u64 = 2048;
/// See [`StoreOptions::pack_bytes`]. sled alone, 400-byte events written two per commit
/// then packed: 3 KiB records drained a 400,000-event backlog in 16 MB, 6 KiB in 8 MB,
/// 10 KiB in 7 MB, against 28 MB unpacked; filling peaked at 15, 22 and 30 MB against 23.
/// In the gateway 3, 6 and 12 KiB measured within noise of each other (docs/footprint.md,
/// "Footprint"), and the larger packs left more garbage in sled's file (1 M events:
/// 570, 650 and 700 MB filled at 1,000 events/s): 3 KiB.
pub const PACK_BYTES: usize = 3 * 1024;

/// Inputs queued for the writer before submitters wait: four groups of
/// `store.batch_max_events` (256). A longer queue does not commit faster; it holds
/// events in memory while the writer is behind (8,192 with ingest's 8,192 unacknowledged
/// messages: about 13 MB of RSS at full ingest speed, docs/footprint.md).
pub const QUEUE_CAPACITY: usize = 1024;

impl StoreOptions {
    /// The `[store]` settings, with the queue at [`QUEUE_CAPACITY`] inputs and packing at
    /// [`PACK_BACKLOG`] / [`PACK_BYTES`] (no larger than a record).
    pub fn from_config(cfg: &Config) -> Self {
        let s = &cfg.store;
        StoreOptions {
            gateway_id: cfg.gateway.id.clone(),
            estate_id: cfg.gateway.estate_id.clone(),
            batch_max_events: s.batch_max_events,
            batch_linger: s.batch_linger,
            disk_budget: s.disk_budget.as_u64(),
            disk_low_free: s.disk_low_free.as_u64(),
            cache_capacity: s.cache_capacity.as_u64(),
            record_max_bytes: s.record_max_bytes.as_usize(),
            dead_letter_max: s.dead_letter_max,
            keep_forwarded: s.keep_forwarded,
            resend_window: s.resend_window,
            queue_capacity: QUEUE_CAPACITY,
            pack_backlog: PACK_BACKLOG,
            pack_bytes: PACK_BYTES.min(s.record_max_bytes.as_usize()),
        }
    }
}

/// Input that could not become an event, kept with its raw bytes and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// When the gateway received the input, Unix ms.
    pub received_ms: i64,
    /// Where it came from (the MQTT topic).
    pub source: String,
    /// Why it is not an event, for an operator (a decoder's reason and detail).
    pub reason: String,
    /// The raw bytes, truncated to `ingest.raw_limit`.
    pub raw: Bytes,
    /// Size of the original input in bytes.
    pub original_len: usize,
}

impl DeadLetter {
    fn encode(&self) -> Vec<u8> {
        // A JSON header line, then the raw bytes as they came.
        let header = serde_json::json!({
            "received_ms": self.received_ms,
            "source": self.source,
            "reason": self.reason,
            "original_len": self.original_len,
        });
        let mut out = header.to_string().into_bytes();
        out.push(b'\n');
        out.extend_from_slice(&self.raw);
        out
    }

    fn decode(bytes: &[u8]) -> Option<DeadLetter> {
        let nl = bytes.iter().position(|b| *b == b'\n')?;
        let h: serde_json::Value = serde_json::from_slice(&bytes[..nl]).ok()?;
        Some(DeadLetter {
            received_ms: h.get("received_ms")?.as_i64()?,
            source: h.get("source")?.as_str()?.to_owned(),
            reason: h.get("reason")?.as_str()?.to_owned(),
            original_len: usize::try_from(h.get("original_len")?.as_u64()?).ok()?,
            raw: Bytes::copy_from_slice(&bytes[nl + 1..]),
        })
    }
}

#[derive(Debug)]
pub(crate) enum Command {
    Append {
        event: Box<Event>,
        received: Instant,
        done: Option<oneshot::Sender<Result<u64, StoreError>>>,
    },
    DeadLetter {
        letter: DeadLetter,
        received: Instant,
        done: Option<oneshot::Sender<Result<u64, StoreError>>>,
    },
    /// The uplink acknowledged every event of `lane` up to `seq` (`count` events).
    Forwarded { lane: Lane, seq: u64, count: u64 },
    /// Liveness probe (the systemd watchdog): answered once the group it joined has
    /// committed; dropped unanswered when that commit fails.
    Ping { done: oneshot::Sender<()> },
}

/// What the writer hands the alert engine.
#[derive(Debug, Clone)]
pub enum Tapped {
    /// Committed, in seq order.
    Committed(Event),
    /// Its group commit failed (a full disk): not stored, `seq` 0, not acknowledged to
    /// the broker, which redelivers it; it still opens its local alert meanwhile.
    NotStored(Event),
}

/// Per-lane counters shared between the writer and readers.
#[derive(Debug, Default)]
struct LaneState {
    /// Highest seq committed in this lane.
    last_seq: AtomicU64,
    /// Highest seq acknowledged upstream.
    cursor: AtomicU64,
    /// Events committed but neither forwarded nor evicted.
    backlog: AtomicU64,
    /// Logical bytes of records kept.
    stored_bytes: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    epoch: u64,
    lanes: [LaneState; 2],
    /// Highest seq committed in any lane; forward waits on it.
    committed: watch::Sender<u64>,
    /// Highest seq the alert engine has processed and persisted; forwarded records above
    /// it are kept (not deleted) so that the engine can replay them after a crash.
    /// `u64::MAX` when no engine is attached.
    alerts_done: AtomicU64,
    /// The store's log file (`db`), for making writes outside the writer durable.
    log_file: std::fs::File,
    /// Committed events, in seq order, to the alert engine (set once at start-up), and
    /// the events of a group that could not be committed (a full disk).
    /// Unbounded so that the writer never waits on the engine: the engine handles an
    /// event in microseconds, and its backlog is at most what the writer was given.
    tap: std::sync::OnceLock<mpsc::UnboundedSender<Tapped>>,
}

impl Shared {
    fn lane(&self, lane: Lane) -> &LaneState {
        &self.lanes[lane_index(lane)]
    }
}

fn lane_index(lane: Lane) -> usize {
    match lane {
        Lane::Alarms => 0,
        Lane::Events => 1,
    }
}

/// A handle for submitting to the writer. Cheap to clone; the writer stops once every
/// handle is dropped and the queue is drained.
#[derive(Debug, Clone)]
pub struct StoreHandle {
    /// To the writer thread. Bounded by `queue_capacity`; senders wait when it is full.
    tx: mpsc::Sender<Command>,
}

/// Resolves once the submitted input is durable (`Ok(seq)`, or the dead letter's id).
pub type Pending = oneshot::Receiver<Result<u64, StoreError>>;

impl StoreHandle {
    /// Queues an event for the next group commit. Waits while the queue is full.
    pub async fn append(&self, event: Event) -> Result<Pending, StoreError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Command::Append {
                event: Box::new(event),
                received: Instant::now(),
                done: Some(done),
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(rx)
    }

    /// Queues an event without waiting for its commit (gateway-raised events).
    pub async fn append_nowait(&self, event: Event) -> Result<(), StoreError> {
        self.tx
            .send(Command::Append {
                event: Box::new(event),
                received: Instant::now(),
                done: None,
            })
            .await
            .map_err(|_| StoreError::Closed)
    }

    /// Queues a dead letter for the next group commit, like [`StoreHandle::append`]; the
    /// [`Pending`] resolves with its id once it is durable, and only then may its input
    /// be acknowledged.
    pub async fn dead_letter(&self, letter: DeadLetter) -> Result<Pending, StoreError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Command::DeadLetter {
                letter,
                received: Instant::now(),
                done: Some(done),
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(rx)
    }

    /// Resolves once the writer has committed a group after this call: the writer thread
    /// is alive and its disk writes complete. Used by the systemd watchdog.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Command::Ping { done })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)
    }

    /// Records that the uplink acknowledged `lane` up to `seq`.
    pub async fn forwarded(&self, lane: Lane, seq: u64, count: u64) -> Result<(), StoreError> {
        self.tx
            .send(Command::Forwarded { lane, seq, count })
            .await
            .map_err(|_| StoreError::Closed)
    }
}

/// Read access for forward and the API. Reads go straight to sled (it is safe to read
/// while the writer writes); only committed records are visible.
#[derive(Debug, Clone)]
pub struct StoreReader {
    db: sled::Db,
    shared: Arc<Shared>,
}

impl StoreReader {
    /// The store's epoch: `seq` is unique within it.
    pub fn epoch(&self) -> u64 {
        self.shared.epoch
    }

    /// The highest seq of `lane` the uplink has acknowledged (0 before any); every event
    /// of `lane` up to it is forwarded. Seqs count across both lanes.
    pub fn cursor(&self, lane: Lane) -> u64 {
        self.shared.lane(lane).cursor.load(Ordering::Acquire)
    }

    /// The highest seq committed in `lane` (0 before any).
    pub fn last_seq(&self, lane: Lane) -> u64 {
        self.shared.lane(lane).last_seq.load(Ordering::Acquire)
    }

    /// Committed events of `lane` not yet acknowledged upstream.
    pub fn backlog(&self, lane: Lane) -> u64 {
        self.shared.lane(lane).backlog.load(Ordering::Acquire)
    }

    /// Logical bytes of `lane`'s stored records (what `estate_store_stored_bytes`
    /// reports), not their size on disk.
    pub fn stored_bytes(&self, lane: Lane) -> u64 {
        self.shared.lane(lane).stored_bytes.load(Ordering::Acquire)
    }

    /// The sled tree `name` in the store's database (the alert state lives beside the
    /// events, so one fdatasync covers both).
    pub fn open_tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(name)?)
    }

    /// Makes every write so far power-loss durable: sled flush, then fdatasync of its
    /// log file (see the module doc). Blocking; call from `spawn_blocking`.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.shared.log_file.sync_data()?;
        Ok(())
    }

    /// Attaches the alert engine: from now on every committed event is sent to `tx`, and
    /// forwarded records above `done` are kept until [`StoreReader::set_alerts_done`]
    /// moves past them. Only the first call attaches.
    pub fn attach_alerts(&self, tx: mpsc::UnboundedSender<Tapped>, done: u64) {
        self.shared.alerts_done.store(done, Ordering::Release);
        let _ = self.shared.tap.set(tx);
    }

    /// The alert engine has processed and persisted every event up to `seq`.
    pub fn set_alerts_done(&self, seq: u64) {
        self.shared.alerts_done.fetch_max(seq, Ordering::AcqRel);
    }

    /// Changes whenever a group commit lands; holds the highest committed seq.
    pub fn committed(&self) -> watch::Receiver<u64> {
        self.shared.committed.subscribe()
    }

    /// Up to `max_events` events of `lane` with `seq > after`, in seq order, stopping before
    /// the encoded size would pass `max_bytes` (at least one event is returned if any).
    pub fn read_lane(
        &self,
        lane: Lane,
        after: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Vec<pb::Event>, StoreError> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        // Raised past every event taken: if the writer packs records while this reads
        // them, the packed record comes after the small ones and repeats their events.
        let mut after = after;
        for item in self
            .db
            .range(keys::records_from(lane, after.saturating_add(1)))
        {
            let (k, v) = item?;
            let rec = decode_record(&k, &v)?;
            for e in rec.events {
                if e.seq <= after {
                    continue;
                }
                let len = e.encoded_len() + 4;
                if out.len() >= max_events || (!out.is_empty() && bytes + len > max_bytes) {
                    return Ok(out);
                }
                bytes += len;
                after = e.seq;
                out.push(e);
            }
        }
        Ok(out)
    }

    /// The newest dead letters, newest first.
    pub fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.range(keys::DEAD_LETTERS).rev().take(limit) {
            let (_, v) = item?;
            if let Some(d) = DeadLetter::decode(&v) {
                out.push(d);
            }
        }
        Ok(out)
    }
}

/// sled's background flush period, which is also how often it cleans segments (see
/// [`open`]; it cleans for at most half of each period); acks never wait on it.
/// Measured in tests/disk_full.rs (8 MiB budget, 60,000 messages, uplink down): at
/// 200 ms the folder peaked at 1.5-2.4x the budget flat out and 2.9x (still growing) at
/// a steady 3,000 messages/s; at 50 ms, 1.08-1.23x and 1.31x while records were up to
/// 48 KiB (a fast burst's leaves went to blob files). With records of about 6 KiB
/// (writer.rs, `RECORD_TARGET_BYTES`) every leaf stays in the log, whose segments must
/// be cleaned: flat out 2.13-2.25x at 50 ms, 1.44-1.63x at 20 ms, 1.19-1.25x at 10 ms
/// (three runs each, same machine). The price of 10 ms: an idle gateway used 19 ticks
/// of CPU in 20 s instead of 9 (under 1 % of one core).
const SLED_FLUSH_EVERY_MS: u64 = 10;

/// Opens sled, waiting up to a second for its file lock. sled holds the lock while any
/// handle is alive, including a background log write of a store closed a moment ago in
/// this process (a store reopened in place, as the tests do), which ends within
/// milliseconds. A store that another running gateway holds stays locked, and this
/// fails with sled's "could not acquire lock" error after the wait.
fn open_sled(config: &sled::Config) -> sled::Result<sled::Db> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            opened => return opened,
        }
    }
}

/// What [`open`] returns: the handle for writers, the reader, and the writer itself,
/// which the caller runs on a blocking thread.
pub type Opened = (StoreHandle, StoreReader, StoreWriter);

/// Opens (or creates) the store under `dir`. A store sled cannot open (corruption, or a
/// panic inside sled) is quarantined and replaced by a fresh one; a store that comes
/// back behind its high-water mark starts a new epoch (see [`recovery`]).
pub fn open(dir: &Path, opts: StoreOptions, metrics: Arc<Metrics>) -> Result<Opened, StoreError> {
    let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        open_store(dir, opts.clone(), metrics.clone(), None)
    }));
    let error = match attempt {
        Ok(Ok(opened)) => return Ok(opened),
        Ok(Err(err)) if !recovery::is_corruption(&err) => return Err(err),
        Ok(Err(err)) => err.to_string(),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("a panic");
            format!("sled panicked: {msg}")
        }
    };
    tracing::error!(store = %dir.display(), %error, "The store cannot be opened; quarantining it and starting a fresh one.");
    let moved_to = recovery::quarantine(dir)?;
    let salvaged = recovery::salvage(&moved_to);
    tracing::warn!(moved_to = %moved_to.display(), salvaged = salvaged.len(), "Store quarantined.");
    open_store(dir, opts, metrics, Some((error, moved_to, salvaged)))
}

fn open_store(
    dir: &Path,
    opts: StoreOptions,
    metrics: Arc<Metrics>,
    quarantined: Option<(String, PathBuf, Vec<pb::Event>)>,
) -> Result<Opened, StoreError> {
    std::fs::create_dir_all(dir)?;
    let db = open_sled(
        &sled::Config::new()
            .path(dir)
            .cache_capacity(opts.cache_capacity)
            .mode(sled::Mode::LowSpace)
            // The writer flushes and fsyncs every group itself; sled's flusher thread is
            // kept for what else it does between its flushes: segment cleaning
            // (`attempt_gc`, vendor/sled/src/flusher.rs), the only place sled rewrites
            // the live pages of mostly-dead segments so that they can be reused. Without
            // it sled's file only grows (issue 13: 55 MB for a 16 MiB budget).
            .flush_every_ms(Some(SLED_FLUSH_EVERY_MS)),
    )?;
    // fsync applies to the inode: a read-only handle on sled's log file lets the writer
    // make each group commit power-loss durable.
    let log_path: PathBuf = dir.join("db");
    let log_file = std::fs::File::open(&log_path)?;

    let mut epoch = stored_epoch(&db, &log_file)?;

    // `m/next_seq` is written with every commit by this version and the previous one:
    // when it differs from `m/state`, the previous version ran last (a rollback and
    // back) and its counters are the current ones.
    let state = saved_state(&db)?;

    // Behind the high-water mark (or quarantined): a new epoch, so that no seq the city
    // may already hold is ever assigned again.
    let mut high_water = recovery::HighWater::open(&recovery::path_for(dir))?;
    let (findings, salvaged) = recover(
        &db,
        &log_file,
        &high_water,
        &mut epoch,
        state.next_seq,
        quarantined,
    )?;
    high_water.set(recovery::Mark {
        epoch,
        next_seq: state.next_seq,
    })?;
    for finding in &findings {
        metrics.health.set(
            "store.recovery",
            crate::health::Level::Degraded,
            finding.reason(),
        );
    }
    let lanes = lane_states(&db, &state, &metrics)?;
    let (committed, _) = watch::channel(state.next_seq - 1);
    let shared = Arc::new(Shared {
        epoch,
        lanes,
        committed,
        alerts_done: AtomicU64::new(u64::MAX),
        log_file: log_file.try_clone()?,
        tap: std::sync::OnceLock::new(),
    });
    let reader = StoreReader {
        db: db.clone(),
        shared: shared.clone(),
    };
    for lane in Lane::ALL {
        let n = match state.lanes[lane_index(lane)].backlog {
            Some(n) => n,
            None => count_backlog(&db, lane, reader.cursor(lane))?,
        };
        shared.lane(lane).backlog.store(n, Ordering::Release);
        metrics
            .forward_backlog
            .get_or_create(&lane.into())
            .set(n as i64);
    }
    let (tx, rx) = mpsc::channel(opts.queue_capacity);
    let mut writer = StoreWriter::new(
        db,
        log_file,
        dir.to_path_buf(),
        shared,
        rx,
        opts,
        metrics,
        &state,
    );
    writer.recovered(high_water, findings, salvaged);
    Ok((StoreHandle { tx }, reader, writer))
}

/// A random non-zero epoch (0 means none).
fn new_epoch() -> u64 {
    loop {
        let e: u64 = rand::random();
        if e != 0 {
            break e;
        }
    }
}

/// The store's epoch; a fresh store gets a new one (receivers then know that seq starts
/// again) and its first counters, durable before anything else.
fn stored_epoch(db: &sled::Db, log_file: &std::fs::File) -> Result<u64, StoreError> {
    Ok(match db.get(keys::EPOCH)? {
        Some(v) => keys::u64_value(Some(v)),
        None => {
            // A fresh store: a new epoch tells receivers that seq starts again.
            let epoch = new_epoch();
            db.insert(keys::EPOCH, &epoch.to_be_bytes())?;
            let fresh = keys::State {
                next_seq: 1,
                ..keys::State::default()
            };
            db.insert(keys::STATE, fresh.encode())?;
            db.insert(keys::NEXT_SEQ, &1u64.to_be_bytes())?;
            db.flush()?;
            log_file.sync_all()?;
            epoch
        }
    })
}

/// The counters saved by the last commit. `m/next_seq` is written with every commit by
/// this version and the previous one: when it differs from `m/state`, the previous
/// version ran last (a rollback and back) and its counters are the current ones.
fn saved_state(db: &sled::Db) -> Result<keys::State, StoreError> {
    let legacy_next_seq = keys::u64_value(db.get(keys::NEXT_SEQ)?);
    let saved = db
        .get(keys::STATE)?
        .map(|v| {
            keys::State::decode(&v).ok_or(StoreError::BadMetadata {
                key: keys::STATE.to_vec(),
            })
        })
        .transpose()?;
    let mut state = match saved {
        Some(s) if s.next_seq == legacy_next_seq => s,
        _ => keys::State::read_legacy(db)?,
    };
    state.next_seq = state.next_seq.max(1);
    Ok(state)
}

/// What [`recover`] found and the events salvaged from a quarantined store.
type Recovered = (Vec<recovery::Finding>, Vec<pb::Event>);

/// Findings and salvaged events to raise: a quarantined store, or one behind its
/// high-water mark, which gets a new epoch (durable now) so that no seq the city may
/// already hold is ever assigned again.
fn recover(
    db: &sled::Db,
    log_file: &std::fs::File,
    high_water: &recovery::HighWater,
    epoch: &mut u64,
    next_seq: u64,
    quarantined: Option<(String, PathBuf, Vec<pb::Event>)>,
) -> Result<Recovered, StoreError> {
    let mut findings = Vec::new();
    let mut salvaged = Vec::new();
    if let Some((error, moved_to, events)) = quarantined {
        findings.push(recovery::Finding::Quarantined {
            error,
            moved_to,
            new_epoch: *epoch,
            salvaged: events.len() as u64,
        });
        salvaged = events;
    } else if let Some(mark) = recovery::behind(high_water.mark(), *epoch, next_seq) {
        let old_epoch = *epoch;
        *epoch = new_epoch();
        db.insert(keys::EPOCH, &epoch.to_be_bytes())?;
        db.flush()?;
        log_file.sync_all()?;
        let finding = recovery::Finding::Rollback {
            old_epoch: mark.epoch,
            new_epoch: *epoch,
            // Another epoch than the mark's (a fresh or restored store): all of the
            // mark's epoch that was not forwarded may be gone.
            first_lost: if mark.epoch == old_epoch { next_seq } else { 1 },
            last_lost: mark.next_seq.saturating_sub(1),
        };
        tracing::error!(reason = %finding.reason(), "Store rollback detected.");
        findings.push(finding);
    }
    Ok((findings, salvaged))
}

/// Per lane, the counters loaded into the shared state (the last seq read from the
/// tree), and the stored-bytes gauges set.
fn lane_states(
    db: &sled::Db,
    state: &keys::State,
    metrics: &Metrics,
) -> Result<[LaneState; 2], StoreError> {
    let lanes: [LaneState; 2] = Default::default();
    for lane in Lane::ALL {
        let st = &lanes[lane_index(lane)];
        let saved = &state.lanes[lane_index(lane)];
        st.cursor.store(saved.cursor, Ordering::Release);
        st.stored_bytes.store(saved.stored_bytes, Ordering::Release);
        let last = db
            .range(keys::records_from(lane, 0))
            .next_back()
            .transpose()?
            .and_then(|(k, _)| keys::seq_of_record_key(&k))
            .unwrap_or(0);
        st.last_seq.store(last, Ordering::Release);
        metrics
            .store_stored_bytes
            .get_or_create(&lane.into())
            .set(st.stored_bytes.load(Ordering::Acquire) as i64);
    }
    Ok(lanes)
}

/// Decodes one stored record; a record that does not decode names its key.
fn decode_record(key: &[u8], value: &[u8]) -> Result<pb::EventBatch, StoreError> {
    pb::EventBatch::decode(value).map_err(|source| StoreError::Corrupt {
        key: key.to_vec(),
        source,
    })
}

/// Counts a lane's events after its cursor by decoding its records; only for a store
/// written before the backlog was kept in its metadata.
fn count_backlog(db: &sled::Db, lane: Lane, cursor: u64) -> Result<u64, StoreError> {
    let mut n = 0u64;
    for item in db.range(keys::records_from(lane, cursor.saturating_add(1))) {
        let (k, v) = item?;
        let rec = decode_record(&k, &v)?;
        n += rec.events.iter().filter(|e| e.seq > cursor).count() as u64;
    }
    Ok(n)
}

#[cfg(test)]
mod tests;
