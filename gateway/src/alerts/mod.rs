//! Local alerts: incidents people on duty must see, acknowledge and close, working with
//! the uplink down.
//!
//! ```text
//!  store writer ──committed events (unbounded, never waits)──▶ alerts task ──▶ rules::Engine (pure)
//!                                                               │  effects:
//!   API (ack/close) ──commands (bounded, waits)───────────────▶ ├─ persist: sled tree `alerts` (state.rs)
//!                                                               ├─ SSE / console: broadcast of changes
//!                                                               ├─ MQTT: {prefix}/{estate}/alerts (retained active set)
//!                                                               │         {prefix}/{estate}/alerts/changes
//!                                                               ├─ store: raised events (ACS.HELD_OPEN, DEV.OFFLINE,
//!                                                               │         FIRE.CONFIRMED) and ALERT.UPDATE for upstream
//!                                                               └─ linkage: Modbus writes, results recorded on the alert
//! ```
//!
//! - [`model`] — `Alert`, statuses, dispositions, audit entries (JSON).
//! - [`rules`] — the pure engine: events and time in, effects out.
//! - [`state`] — durable state and history in the store's database.
//! - [`cli`] — `estate-gateway alerts | ack | close`, the terminal client of the API.
//! - [`linkage`] — the [`LinkagePort`] linkage writes go through (`lib.rs` hands in
//!   the Modbus buses), one task per write.
//! - `handle.rs` ([`AlertsHandle`], operator commands), `effects.rs` (carrying out the
//!   engine's effects), `updates.rs` (what a change looks like outside), `publish.rs`
//!   (the alert topic), `meter.rs` (the event rate on `/api/status`).
//!
//! **No alert lost on a crash.** The engine's progress (`last_seq`) is written with the
//! alert changes it caused, in one sled batch. On start the engine replays the committed
//! events after it; the store keeps forwarded records the engine has not processed.
//!
//! **No deadlock.** The writer hands committed events over an unbounded channel and never
//! waits for the engine; the engine raises events with `append_nowait` and never waits
//! for a commit.
//!
//! **Supervised, off the async workers** ([`supervisor`]). The stage runs on its own
//! thread (its sled reads and writes never block the runtime that ingest and forward
//! share) and is restarted in place after a failure: the engine is rebuilt from the
//! store ([`Alerts::rebuild`]) and replays the committed events after its persisted
//! progress, while its inputs (the writer's tap, the API's commands) stay attached, so
//! nothing committed meanwhile is missed.

pub mod chain;
pub mod cli;
mod effects;
mod handle;
pub mod linkage;
mod meter;
pub mod model;
mod publish;
mod replay;
pub mod rules;
pub mod state;
pub mod supervisor;
mod updates;

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use estate_config::Config;
use estate_protocols::model::Event;

use crate::events::now_ms;
use crate::mqtt::Endpoints;
use crate::store::{StoreError, StoreHandle, StoreReader, Tapped};
use crate::telemetry::Metrics;

use effects::Outputs;
use handle::Command;
pub use handle::{AlertsHandle, OpError};
use linkage::LinkDone;
pub use linkage::{LinkError, Linkage, LinkagePort};
pub use meter::FloodView;
use meter::Rate;
use publish::Publisher;
use rules::Engine;
use state::AlertStore;
use updates::Origin;
pub use updates::Update;

/// How often timers (debounce, hold-open, heartbeats, escalation) are checked.
const TICK: Duration = Duration::from_millis(200);
/// How often the devices' statuses are saved (when they changed) for the next start.
const SAVE_DEVICES: Duration = Duration::from_secs(30);
/// Committed events taken from the tap per engine step.
const BATCH: usize = 256;
/// The `/healthz` condition of a history over its bound (see [`Alerts::report_history`]).
const HISTORY_HEALTH: &str = "alerts.history";

/// The alerts stage, built from the config with [`Alerts::new`] and consumed by
/// [`Alerts::run`].
#[derive(Debug)]
pub struct Alerts {
    engine: Engine,
    store: AlertStore,
    handle: AlertsHandle,
    /// From the store writer: every committed event, in seq order, and the events it
    /// could not commit (opened as not stored).
    tap: mpsc::UnboundedReceiver<Tapped>,
    /// From [`AlertsHandle`]: the operators' commands.
    cmd_rx: mpsc::Receiver<Command>,
    /// Committed events after this seq were in the store at start-up, not yet handled:
    /// they are replayed (page by page, see [`Alerts::replay_page`]) before the tap.
    replay_until: u64,
    reader: StoreReader,
    last_seq: u64,
    /// Progress over events that changed nothing, saved on the next tick rather than
    /// with every commit (see [`Alerts::apply`]).
    unsaved_progress: Option<u64>,
    origin: Origin,
    /// `{prefix}/{estate}/alerts`.
    topic: String,
    /// The ingest broker, for the alert topic; `None` when its TLS settings do not load.
    mqtt: Option<Endpoints>,
    /// `alerts.forward`: alert changes go upstream as `ALERT.UPDATE` events.
    forward: bool,
    /// `alerts.audit_retention`, for `/healthz`'s message.
    audit_retention: Duration,
}

impl Alerts {
    /// Opens the alert state, restores the open alerts, attaches to the store writer and
    /// reads the committed events the engine has not processed yet. Call before any
    /// stage appends events.
    pub fn new(cfg: &Config, reader: &StoreReader) -> Result<(Alerts, AlertsHandle), StoreError> {
        let store = AlertStore::open(reader, cfg.alerts.history_max, cfg.alerts.audit_retention)?;
        let mut engine = Engine::new(cfg, now_ms());
        let open = store.open_alerts()?;
        let restored = open.len();
        engine.restore(open);
        engine.restore_devices(store.devices()?);
        // The writer is not running yet: the committed seq is stable here.
        let committed = *reader.committed().borrow();
        let last_seq = match store.progress()? {
            Some(seq) => seq,
            None => {
                // First start with alerts (a new store, or one from before alerts
                // existed): history is not alerted again; from now on nothing is missed.
                store.write(&[], Some(committed))?;
                committed
            }
        };
        let (tap_tx, tap) = mpsc::unbounded_channel();
        reader.attach_alerts(tap_tx, last_seq);
        info!(
            open_alerts = restored,
            last_seq,
            to_replay = committed.saturating_sub(last_seq),
            "Alert state restored."
        );
        // Bounded (64): an API request waits while it is full.
        let (cmd, cmd_rx) = mpsc::channel(64);
        // Slow subscribers lag (they are told so and re-read the lists).
        let (updates, _) = broadcast::channel(1024);
        let handle = AlertsHandle {
            cmd,
            updates,
            store: store.clone(),
            devices: Arc::new(RwLock::new(engine.devices())),
            rate: Arc::new(Mutex::new(Rate::default())),
            openings: Arc::new(Mutex::new(meter::Openings::new(&cfg.alerts.flood))),
        };
        let stage = Alerts {
            engine,
            store,
            handle: handle.clone(),
            tap,
            cmd_rx,
            replay_until: committed,
            reader: reader.clone(),
            last_seq,
            unsaved_progress: None,
            origin: Origin {
                gateway_id: cfg.gateway.id.clone(),
                estate_id: cfg.gateway.estate_id.clone(),
            },
            topic: format!(
                "{}/{}/alerts",
                cfg.ingest.topic_prefix, cfg.gateway.estate_id
            ),
            mqtt: publish::broker(cfg),
            forward: cfg.alerts.forward,
            audit_retention: cfg.alerts.audit_retention,
        };
        Ok((stage, handle))
    }

    /// Rebuilds the engine from the store after the stage failed: the open alerts, the
    /// devices and the progress as last persisted. The committed events after that
    /// progress are replayed by the next [`Alerts::run`] (the store keeps them until
    /// `set_alerts_done` passes them); the inputs (the writer's tap, the API's commands)
    /// are kept, so nothing committed meanwhile is missed. Blocking (sled reads).
    pub fn rebuild(&mut self, cfg: &Config) -> Result<(), StoreError> {
        let mut engine = Engine::new(cfg, now_ms());
        engine.restore(self.store.open_alerts()?);
        engine.restore_devices(self.store.devices()?);
        self.engine = engine;
        self.last_seq = self.store.last_seq()?;
        self.unsaved_progress = None;
        // The writer updates `committed` before it hands the events to the tap, so every
        // event the failed run took from the tap is at or below this.
        self.replay_until = *self.reader.committed().borrow();
        Ok(())
    }

    /// Runs until `shutdown`; then handles the committed events already handed over and
    /// returns. Borrows the stage so that, after a panic, [`supervisor`] can rebuild and
    /// run it again with the same inputs. `linkage` carries out the linkage writes.
    pub async fn run(
        &mut self,
        store: StoreHandle,
        linkage: Linkage,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) {
        // One message per linkage write (bounded by the alerts that open); unbounded so a
        // finishing write never waits on the loop that is waiting on something else.
        let (link_tx, mut link_rx) = mpsc::unbounded_channel::<LinkDone>();
        // The publisher outlives the loop so the final active set goes out.
        let publisher_stop = CancellationToken::new();
        // Also stopped when this run unwinds, so a restarted run never has two.
        let _publisher_guard = publisher_stop.clone().drop_guard();
        let mut out = Outputs {
            metrics,
            store,
            linkage,
            link_tx,
            publisher: self
                .mqtt
                .clone()
                .map(|b| Publisher::start(b, self.topic.clone(), publisher_stop.clone())),
            active_dirty: true,
            forward: self.forward,
            origin: self.origin.clone(),
        };
        self.replay(&mut out).await;
        self.publish_devices();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut save_devices = tokio::time::interval(SAVE_DEVICES);
        save_devices.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut saved_devices = Vec::new();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                first = self.tap.recv() => {
                    let Some(first) = first else { break };
                    let batch = self.take_batch(first);
                    self.handle_tapped(batch, &mut out).await;
                }
                Some(cmd) = self.cmd_rx.recv() => self.handle_command(cmd, &mut out).await,
                Some(done) = link_rx.recv() => self.link_done(done, &mut out).await,
                _ = save_devices.tick() => self.save_devices(&mut saved_devices),
                _ = tick.tick() => self.on_tick(&mut out).await,
            }
        }
        self.finish(out, &mut saved_devices, publisher_stop).await;
    }

    /// `first` and what else the tap holds now, up to [`BATCH`].
    fn take_batch(&mut self, first: Tapped) -> Vec<Tapped> {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match self.tap.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        batch
    }

    /// The timers: rule effects due now, deferred progress, the retained active set and
    /// the stage's gauges.
    async fn on_tick(&mut self, out: &mut Outputs) {
        let effects = self.engine.on_tick(now_ms());
        let _ = self.apply(effects, None, out).await;
        self.save_progress();
        out.publish_active(&self.engine);
        out.metrics.alerts_backlog.set(self.tap.len() as i64);
        out.metrics
            .alerts_open
            .set(self.engine.open_alerts().count() as i64);
        self.report_history(&out.metrics);
    }

    /// `/healthz`: the history kept over `alerts.history_max` because its audit trails
    /// are younger than `alerts.audit_retention` (state.rs). Alerts go on regardless.
    fn report_history(&self, metrics: &Metrics) {
        let over = self.store.over_bound();
        if over == 0 {
            metrics.health.clear(HISTORY_HEALTH);
            return;
        }
        metrics.health.set(
            HISTORY_HEALTH,
            crate::health::Level::Degraded,
            format!(
                "{} closed alerts kept, {over} over alerts.history_max ({}): their audit trails are younger than alerts.audit_retention ({}); alerting goes on, and they are pruned as they age",
                self.store.closed_count(),
                self.store.history_max(),
                humantime::format_duration(self.audit_retention),
            ),
        );
    }

    /// After `shutdown`: alerts the events committed before the writer stopped taking
    /// them, saves what is pending and lets the publisher send the final active set.
    async fn finish(
        &mut self,
        mut out: Outputs,
        saved_devices: &mut Vec<u8>,
        publisher_stop: CancellationToken,
    ) {
        let mut rest = Vec::new();
        while let Ok(e) = self.tap.try_recv() {
            rest.push(e);
        }
        if !rest.is_empty() {
            self.handle_tapped(rest, &mut out).await;
        }
        out.publish_active(&self.engine);
        self.save_progress();
        self.save_devices(saved_devices);
        publisher_stop.cancel();
        if let Some(p) = out.publisher.take() {
            // The publisher runs on this stage's runtime, which ends with this run.
            p.finish().await;
        }
        debug!("Alerts stopped.");
    }

    /// Saves the devices' statuses when they changed since `saved` (the last save).
    fn save_devices(&self, saved: &mut Vec<u8>) {
        let json = serde_json::to_vec(&self.engine.device_records()).unwrap_or_default();
        if json == *saved {
            return;
        }
        match self.store.write_devices(&json) {
            Ok(()) => *saved = json,
            Err(err) => warn!(error = %err, "Could not save the devices' status."),
        }
    }

    /// Committed events advance the engine's progress; events the store could not commit
    /// open (or fold into) their alerts too, marked not stored, and leave the progress
    /// alone: their seq is 0 and the broker redelivers them.
    async fn handle_tapped(&mut self, tapped: Vec<Tapped>, out: &mut Outputs) {
        let mut committed = Vec::with_capacity(tapped.len());
        for t in tapped {
            match t {
                Tapped::Committed(e) => committed.push(e),
                Tapped::NotStored(e) => {
                    if !committed.is_empty() {
                        self.handle_events(std::mem::take(&mut committed), out)
                            .await;
                    }
                    let effects = self.engine.on_event(&e, now_ms());
                    let _ = self.apply(effects, None, out).await;
                }
            }
        }
        if !committed.is_empty() {
            self.handle_events(committed, out).await;
        }
    }

    async fn handle_events(&mut self, events: Vec<Event>, out: &mut Outputs) {
        supervisor::fault_hook(&events, self.last_seq);
        let now = now_ms();
        let mut effects = Vec::new();
        let mut n = 0u64;
        let mut last = self.last_seq;
        for e in events.iter().filter(|e| e.seq > self.last_seq) {
            effects.extend(self.engine.on_event(e, now));
            last = last.max(e.seq);
            n += 1;
        }
        if n == 0 {
            return;
        }
        if let Ok(mut r) = self.handle.rate.lock() {
            r.add(now, n);
        }
        self.last_seq = last;
        let _ = self.apply(effects, Some(last), out).await;
    }
}

#[cfg(test)]
mod tests;
