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

pub mod cli;
pub mod model;
pub mod rules;
pub mod state;
pub mod supervisor;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{AsyncClient, QoS};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use estate_config::Config;
use estate_protocols::model::{AlertChange, Event, EventState, Lane, Severity, Source};

use crate::events::now_ms;
use crate::ingest::modbus::{ModbusHandle, Write};
use crate::store::{StoreError, StoreHandle, StoreReader, Tapped};
use crate::telemetry::Metrics;

use model::{ActionRecord, Alert, AuditEntry, CityHandling, DeviceView, Disposition};
use rules::{Effect, Engine, LinkAction, LinkWrite};
use state::AlertStore;

/// How often timers (debounce, hold-open, heartbeats, escalation) are checked.
const TICK: Duration = Duration::from_millis(200);
/// How often the devices' statuses are saved (when they changed) for the next start.
const SAVE_DEVICES: Duration = Duration::from_secs(30);
/// How long a linkage write may take before it is recorded as failed.
const LINK_TIMEOUT: Duration = Duration::from_secs(10);

/// A change pushed to live subscribers (SSE, console).
#[derive(Debug, Clone)]
pub enum Update {
    Alert(Box<Alert>),
    Device(Box<DeviceView>),
}

/// Why an operator action failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    #[error("no alert {0}")]
    NotFound(String),
    /// The transition is not allowed (e.g. closing a closed alert).
    #[error("{0}")]
    Conflict(String),
    #[error("alert state could not be stored: {0}")]
    Store(String),
    #[error("the alerts engine has stopped")]
    Stopped,
}

enum Command {
    Ack {
        id: String,
        by: String,
        note: String,
        reply: oneshot::Sender<Result<Alert, OpError>>,
    },
    Close {
        id: String,
        by: String,
        disposition: Disposition,
        note: String,
        reply: oneshot::Sender<Result<Alert, OpError>>,
    },
    City {
        id: String,
        handling: CityHandling,
        reply: oneshot::Sender<Result<Alert, OpError>>,
    },
}

/// Events per second over the last 60 s, for `/api/status`.
#[derive(Debug, Default)]
struct Rate {
    /// (unix second, count), oldest first.
    buckets: VecDeque<(i64, u64)>,
}

impl Rate {
    fn add(&mut self, now_ms: i64, n: u64) {
        let sec = now_ms.div_euclid(1000);
        match self.buckets.back_mut() {
            Some((s, c)) if *s == sec => *c += n,
            _ => self.buckets.push_back((sec, n)),
        }
        while self.buckets.front().is_some_and(|(s, _)| *s <= sec - 60) {
            self.buckets.pop_front();
        }
    }

    /// 60 numbers, oldest first, the last being the current second.
    fn last_60(&self, now_ms: i64) -> Vec<u64> {
        let sec = now_ms.div_euclid(1000);
        (0..60)
            .map(|i| {
                let s = sec - 59 + i;
                self.buckets
                    .iter()
                    .find(|(b, _)| *b == s)
                    .map_or(0, |(_, c)| *c)
            })
            .collect()
    }
}

/// The API's handle on the alerts: reads go to the store and shared snapshots, writes go
/// to the alerts task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AlertsHandle {
    /// To the alerts task, which answers each command once the change is durable.
    /// Bounded (64): an API request waits while it is full.
    cmd: mpsc::Sender<Command>,
    /// Every alert and device change; slow subscribers miss changes (they are told they
    /// lagged and should re-read the lists).
    updates: broadcast::Sender<Update>,
    store: AlertStore,
    devices: Arc<RwLock<Vec<DeviceView>>>,
    rate: Arc<Mutex<Rate>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Ack { id, .. } => write!(f, "Ack({id})"),
            Command::Close { id, .. } => write!(f, "Close({id})"),
            Command::City { id, .. } => write!(f, "City({id})"),
        }
    }
}

impl AlertsHandle {
    /// Subscribes to live changes.
    pub fn subscribe(&self) -> broadcast::Receiver<Update> {
        self.updates.subscribe()
    }

    pub fn store(&self) -> &AlertStore {
        &self.store
    }

    /// Devices with their status, offline first.
    pub fn devices(&self) -> Vec<DeviceView> {
        self.devices
            .read()
            .map(|d| d.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Committed events per second, the last 60 seconds, oldest first.
    pub fn events_per_sec(&self) -> Vec<u64> {
        let now = now_ms();
        match self.rate.lock() {
            Ok(r) => r.last_60(now),
            Err(e) => e.into_inner().last_60(now),
        }
    }

    /// Acknowledges an active alert; resolves once the change is durable.
    pub async fn acknowledge(&self, id: &str, by: &str, note: &str) -> Result<Alert, OpError> {
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(Command::Ack {
                id: id.to_owned(),
                by: by.to_owned(),
                note: note.to_owned(),
                reply,
            })
            .await
            .map_err(|_| OpError::Stopped)?;
        rx.await.map_err(|_| OpError::Stopped)?
    }

    /// Attaches the city's handling state to an alert, open or closed (issue 14): stored
    /// with the alert, in its audit trail (by the city's issuer), on the live stream;
    /// never upstream (the city set it). Resolves once the change is durable.
    pub async fn city_handling(&self, id: &str, handling: CityHandling) -> Result<Alert, OpError> {
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(Command::City {
                id: id.to_owned(),
                handling,
                reply,
            })
            .await
            .map_err(|_| OpError::Stopped)?;
        rx.await.map_err(|_| OpError::Stopped)?
    }

    /// Closes an open alert; resolves once the change is durable.
    pub async fn close(
        &self,
        id: &str,
        by: &str,
        disposition: Disposition,
        note: &str,
    ) -> Result<Alert, OpError> {
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(Command::Close {
                id: id.to_owned(),
                by: by.to_owned(),
                disposition,
                note: note.to_owned(),
                reply,
            })
            .await
            .map_err(|_| OpError::Stopped)?;
        rx.await.map_err(|_| OpError::Stopped)?
    }
}

/// A finished linkage write.
struct LinkDone {
    alert_id: String,
    record: ActionRecord,
}

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
    cmd_rx: mpsc::Receiver<Command>,
    /// Committed events after this seq were in the store at start-up, not yet handled:
    /// they are replayed (page by page, see [`Alerts::replay_page`]) before the tap.
    replay_until: u64,
    reader: StoreReader,
    last_seq: u64,
    /// Progress over events that changed nothing, saved on the next tick rather than
    /// with every commit (see [`Alerts::apply`]).
    unsaved_progress: Option<u64>,
    gateway_id: String,
    estate_id: String,
    topic: String,
    mqtt: Option<rumqttc::MqttOptions>,
    /// `alerts.forward`: alert changes go upstream as `ALERT.UPDATE` events.
    forward: bool,
}

impl Alerts {
    /// Opens the alert state, restores the open alerts, attaches to the store writer and
    /// reads the committed events the engine has not processed yet. Call before any
    /// stage appends events.
    pub fn new(cfg: &Config, reader: &StoreReader) -> Result<(Alerts, AlertsHandle), StoreError> {
        let store = AlertStore::open(reader, cfg.alerts.history_max)?;
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
        let (cmd, cmd_rx) = mpsc::channel(64);
        let (updates, _) = broadcast::channel(1024);
        let handle = AlertsHandle {
            cmd,
            updates,
            store: store.clone(),
            devices: Arc::new(RwLock::new(engine.devices())),
            rate: Arc::new(Mutex::new(Rate::default())),
        };
        let client_id = format!("{}-alerts", cfg.ingest_client_id());
        let mqtt = match crate::mqtt::options(&cfg.ingest.mqtt, &client_id) {
            Ok(mut o) => {
                o.set_clean_session(true);
                o.set_max_packet_size(4 << 20, 64 << 10);
                Some(o)
            }
            Err(err) => {
                warn!(error = %err, "Alert topic disabled: the ingest broker's TLS settings do not load.");
                None
            }
        };
        Ok((
            Alerts {
                engine,
                store,
                handle: handle.clone(),
                tap,
                cmd_rx,
                replay_until: committed,
                reader: reader.clone(),
                last_seq,
                unsaved_progress: None,
                gateway_id: cfg.gateway.id.clone(),
                estate_id: cfg.gateway.estate_id.clone(),
                topic: format!(
                    "{}/{}/alerts",
                    cfg.ingest.topic_prefix, cfg.gateway.estate_id
                ),
                mqtt,
                forward: cfg.alerts.forward,
            },
            handle,
        ))
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
    /// run it again with the same inputs.
    pub async fn run(
        &mut self,
        store: StoreHandle,
        modbus: ModbusHandle,
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
        let publisher = self
            .mqtt
            .clone()
            .map(|o| MqttPublisher::start(o, self.topic.clone(), publisher_stop.clone()));
        let mut out = Outputs {
            metrics,
            store,
            modbus,
            link_tx,
            publisher,
            active_dirty: true,
            forward: self.forward,
            gateway_id: self.gateway_id.clone(),
            estate_id: self.estate_id.clone(),
        };
        // Replay what was committed but not handled before the last stop, a page at a
        // time (a long backlog never sits in memory whole).
        while self.last_seq < self.replay_until {
            match self.replay_page(self.last_seq) {
                Ok(page) if !page.is_empty() => self.handle_events(page, &mut out).await,
                Ok(_) => break,
                Err(err) => {
                    warn!(error = %err, after = self.last_seq, "Cannot read committed events to replay; continuing with new ones.");
                    break;
                }
            }
        }
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
                    let mut batch = vec![first];
                    while batch.len() < 256 {
                        match self.tap.try_recv() {
                            Ok(e) => batch.push(e),
                            Err(_) => break,
                        }
                    }
                    self.handle_tapped(batch, &mut out).await;
                }
                Some(cmd) = self.cmd_rx.recv() => self.handle_command(cmd, &mut out).await,
                Some(done) = link_rx.recv() => {
                    let effects = match self.engine.record_action(&done.alert_id, done.record.clone()) {
                        Some(e) => vec![e],
                        None => self.record_on_closed(&done),
                    };
                    let _ = self.apply(effects, None, &mut out).await;
                }
                _ = save_devices.tick() => self.save_devices(&mut saved_devices),
                _ = tick.tick() => {
                    let effects = self.engine.on_tick(now_ms());
                    let _ = self.apply(effects, None, &mut out).await;
                    self.save_progress();
                    out.publish_active(&self.engine);
                    out.metrics.alerts_backlog.set(self.tap.len() as i64);
                    out.metrics.alerts_open.set(self.engine.open_alerts().count() as i64);
                }
            }
        }
        // Events committed before the writer stops taking them are still alerted.
        let mut rest = Vec::new();
        while let Ok(e) = self.tap.try_recv() {
            rest.push(e);
        }
        if !rest.is_empty() {
            self.handle_tapped(rest, &mut out).await;
        }
        out.publish_active(&self.engine);
        self.save_progress();
        self.save_devices(&mut saved_devices);
        publisher_stop.cancel();
        if let Some(p) = out.publisher.take() {
            // The publisher runs on this stage's runtime, which ends with this run.
            let _ = p.task.await;
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

    /// The next committed events after `after`, in seq order, from both lanes (at most
    /// a page of each; where both pages are full, cut at the lower of their last seqs so
    /// the merge never skips an event).
    fn replay_page(&self, after: u64) -> Result<Vec<Event>, StoreError> {
        const PAGE: usize = 512;
        let mut all = Vec::new();
        let mut cut = u64::MAX;
        for lane in Lane::ALL {
            let page = self.reader.read_lane(lane, after, PAGE, 4 << 20)?;
            if page.len() == PAGE {
                cut = cut.min(page.last().map_or(u64::MAX, |e| e.seq));
            }
            all.extend(page);
        }
        let mut out: Vec<Event> = all
            .into_iter()
            .filter(|e| e.seq <= cut && e.seq <= self.replay_until)
            .filter_map(|e| Event::try_from(e).ok())
            .collect();
        out.sort_by_key(|e| e.seq);
        Ok(out)
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

    /// A linkage result for an alert closed meanwhile: recorded on the stored alert.
    fn record_on_closed(&self, done: &LinkDone) -> Vec<Effect> {
        match self.store.get(&done.alert_id) {
            Ok(Some(mut a)) => {
                a.actions.push(done.record.clone());
                let note = format!(
                    "{} on {}: {}",
                    done.record.action, done.record.target, done.record.result
                );
                vec![Effect::Alert {
                    alert: a,
                    audit: Some(AuditEntry {
                        at_ms: done.record.at_ms,
                        by: rules::BY_GATEWAY.into(),
                        action: "action".into(),
                        note,
                    }),
                    upstream: Some(AlertChange::Action),
                }]
            }
            _ => Vec::new(),
        }
    }

    async fn handle_command(&mut self, cmd: Command, out: &mut Outputs) {
        let now = now_ms();
        let (result, reply) = match cmd {
            Command::Ack {
                id,
                by,
                note,
                reply,
            } => (
                self.engine
                    .acknowledge(&id, &by, &note, now)
                    .map_err(|e| self.op_error(&id, e)),
                reply,
            ),
            Command::Close {
                id,
                by,
                disposition,
                note,
                reply,
            } => (
                self.engine
                    .close(&id, &by, disposition, &note, now)
                    .map_err(|e| self.op_error(&id, e)),
                reply,
            ),
            Command::City {
                id,
                handling,
                reply,
            } => match self.engine.city_handling(&id, handling.clone()) {
                Some(effect) => (Ok(vec![effect]), reply),
                // Closed here, still handled there: attached to the stored alert.
                None => (
                    match self.store.get(&id) {
                        Ok(Some(mut a)) => Ok(vec![rules::city_effect(&mut a, handling)]),
                        Ok(None) => Err(OpError::NotFound(id)),
                        Err(e) => Err(OpError::Store(e.to_string())),
                    },
                    reply,
                ),
            },
        };
        let effects = match result {
            Ok(effects) => effects,
            Err(err) => {
                let _ = reply.send(Err(err));
                return;
            }
        };
        let changed = effects.iter().find_map(|e| match e {
            Effect::Alert { alert, .. } => Some(alert.clone()),
            _ => None,
        });
        let stored = self.apply(effects, None, out).await;
        // Durable before the operator is told it is done.
        let synced = match stored {
            Ok(()) => {
                let s = self.store.clone();
                tokio::task::spawn_blocking(move || s.sync())
                    .await
                    .map_err(|e| OpError::Store(e.to_string()))
                    .and_then(|r| r.map_err(|e| OpError::Store(e.to_string())))
            }
            Err(e) => Err(e),
        };
        let _ = reply.send(
            synced
                .and_then(|()| changed.ok_or_else(|| OpError::Store("no change produced".into()))),
        );
    }

    fn op_error(&self, id: &str, e: rules::ActionError) -> OpError {
        match e {
            rules::ActionError::Invalid(m) => OpError::Conflict(m),
            rules::ActionError::NotOpen(_) => match self.store.get(id) {
                Ok(Some(a)) => OpError::Conflict(format!(
                    "alert {id} is {}; it cannot change any more",
                    a.status.as_str()
                )),
                _ => OpError::NotFound(id.to_owned()),
            },
        }
    }

    /// Carries out effects: persist (with `last_seq`), publish, raise, link.
    async fn apply(
        &mut self,
        effects: Vec<Effect>,
        last_seq: Option<u64>,
        out: &mut Outputs,
    ) -> Result<(), OpError> {
        let mut changes: Vec<(Alert, Option<AuditEntry>)> = Vec::new();
        let mut upstream: Vec<(Alert, AlertChange, String, String)> = Vec::new();
        let mut raise = Vec::new();
        let mut links = Vec::new();
        let mut devices_changed = false;
        for e in effects {
            match e {
                Effect::Alert {
                    alert,
                    audit,
                    upstream: up,
                } => {
                    if audit.as_ref().is_some_and(|a| a.action == "opened") {
                        out.metrics.alerts_opened.inc();
                    }
                    if let Some(change) = up {
                        let (by, note) = audit
                            .as_ref()
                            .map(|a| (a.by.clone(), a.note.clone()))
                            .unwrap_or_default();
                        upstream.push((alert.clone(), change, by, note));
                    }
                    out.active_dirty = true;
                    // Only the latest state of an alert is written; every audit entry is.
                    changes.push((alert, audit));
                }
                Effect::Raise(ev) => raise.push(ev),
                Effect::Link { alert_id, action } => links.push((alert_id, action)),
                Effect::Device(d) => {
                    devices_changed = true;
                    let _ = self.handle.updates.send(Update::Device(Box::new(d)));
                }
            }
        }
        let refs: Vec<(&Alert, Option<&AuditEntry>)> =
            changes.iter().map(|(a, e)| (a, e.as_ref())).collect();
        // Events that changed nothing (most of them) leave their progress for the next
        // tick: replaying them after a crash changes nothing either, and a sled write per
        // group commit costs memory while a backlog is stored (README "Footprint").
        let progress = if refs.is_empty() && raise.is_empty() && links.is_empty() {
            self.unsaved_progress = last_seq.or(self.unsaved_progress);
            None
        } else {
            last_seq.or(self.unsaved_progress.take())
        };
        let stored = if refs.is_empty() && progress.is_none() {
            Ok(())
        } else {
            self.store
                .write(&refs, progress)
                .map_err(|e| OpError::Store(e.to_string()))
        };
        match &stored {
            Ok(()) => {
                if let Some(seq) = progress {
                    self.store_progress(seq);
                }
            }
            Err(err) => {
                self.unsaved_progress = self.unsaved_progress.max(progress);
                warn!(error = %err, "Alert state not stored; it will be rebuilt from the events after a restart.")
            }
        }
        for (a, _) in &changes {
            let _ = self.handle.updates.send(Update::Alert(Box::new(a.clone())));
        }
        if devices_changed {
            self.publish_devices();
        }
        for (alert, change, by, note) in upstream {
            out.change(&alert, change, &by, &note).await;
        }
        for ev in raise {
            if let Err(err) = out.store.append_nowait(*ev).await {
                warn!(error = %err, "Could not raise an event from the alert rules.");
            }
        }
        for (alert_id, action) in links {
            out.link(alert_id, action);
        }
        stored
    }

    /// Saves progress left by [`Alerts::apply`] for events that changed nothing.
    fn save_progress(&mut self) {
        let Some(seq) = self.unsaved_progress.take() else {
            return;
        };
        match self.store.write(&[], Some(seq)) {
            Ok(()) => self.store_progress(seq),
            Err(err) => {
                self.unsaved_progress = Some(seq);
                warn!(error = %err, "Alert progress not stored; the events after it are replayed after a restart.");
            }
        }
    }

    /// The store may now delete forwarded records up to `seq` (the engine will not need
    /// them for a replay).
    fn store_progress(&self, seq: u64) {
        self.store.reader().set_alerts_done(seq);
    }

    fn publish_devices(&self) {
        let d = self.engine.devices();
        match self.handle.devices.write() {
            Ok(mut w) => *w = d,
            Err(e) => *e.into_inner() = d,
        }
    }
}

/// Where effects go besides the alert state.
struct Outputs {
    metrics: Arc<Metrics>,
    store: StoreHandle,
    modbus: ModbusHandle,
    link_tx: mpsc::UnboundedSender<LinkDone>,
    publisher: Option<MqttPublisher>,
    /// The active set changed since it was last published.
    active_dirty: bool,
    /// Alert changes go upstream (`alerts.forward`).
    forward: bool,
    gateway_id: String,
    estate_id: String,
}

impl Outputs {
    /// A transition: forwarded upstream (as an `ALERT.UPDATE` event through the store) and
    /// published on `…/alerts/changes`.
    async fn change(&mut self, alert: &Alert, change: AlertChange, by: &str, note: &str) {
        let update = alert.update(change, by, note);
        let ev = Event {
            seq: 0,
            event_id: ulid::Ulid::new().to_string(),
            gateway_id: self.gateway_id.clone(),
            estate_id: self.estate_id.clone(),
            device_id: alert.device_id.clone(),
            device_kind: alert.device_kind.as_deref().and_then(|k| k.parse().ok()),
            code: "ALERT.UPDATE".into(),
            // Critical alerts stay critical; every other update is major, so that the
            // event's lane follows from its severity as for every other event (receivers
            // check that). The alert's own severity is in `alert.severity`.
            severity: alert.severity().min(Severity::Major),
            state: if alert.is_open() && !alert.cleared {
                EventState::Active
            } else {
                EventState::Cleared
            },
            location: alert.location.clone(),
            device_time_ms: None,
            gateway_time_ms: now_ms(),
            value: None,
            source: Source {
                protocol: "gateway".into(),
                reference: format!("alerts/{}", alert.id),
            },
            raw: Bytes::new(),
            raw_truncated: false,
            registered: true,
            device_seq: None,
            alert: Some(Box::new(update)),
        };
        if self.forward {
            if let Err(err) = self.store.append_nowait(ev).await {
                warn!(error = %err, alert_id = %alert.id, "Could not queue an alert update for the uplink.");
            }
        }
        if let Some(p) = &self.publisher {
            #[derive(Serialize)]
            struct ChangeMsg<'a> {
                change: &'a str,
                by: &'a str,
                note: &'a str,
                alert: &'a Alert,
            }
            let change = match change {
                AlertChange::Opened => "opened",
                AlertChange::Acknowledged => "acknowledged",
                AlertChange::Escalated => "escalated",
                AlertChange::Cleared => "cleared",
                AlertChange::Closed => "closed",
                AlertChange::Action => "action",
            };
            let body = serde_json::to_vec(&ChangeMsg {
                change,
                by,
                note,
                alert,
            })
            .unwrap_or_default();
            p.send(MqttMsg {
                topic: format!("{}/changes", p.topic),
                retain: false,
                payload: body,
            });
        }
    }

    /// The open alerts as one retained document on the alert topic, when they changed.
    fn publish_active(&mut self, engine: &Engine) {
        if !self.active_dirty {
            return;
        }
        self.active_dirty = false;
        let Some(p) = &self.publisher else { return };
        let mut alerts: Vec<&Alert> = engine.open_alerts().collect();
        alerts.sort_by(|a, b| {
            (a.severity, a.first_seen_ms, &a.id).cmp(&(b.severity, b.first_seen_ms, &b.id))
        });
        let body = serde_json::to_vec(&serde_json::json!({
            "estate_id": self.estate_id,
            "gateway_id": self.gateway_id,
            "updated_ms": now_ms(),
            "alerts": alerts,
        }))
        .unwrap_or_default();
        p.send(MqttMsg {
            topic: p.topic.clone(),
            retain: true,
            payload: body,
        });
    }

    /// Runs a linkage write in its own task; the result comes back on `link_tx`.
    fn link(&self, alert_id: String, action: LinkAction) {
        let modbus = self.modbus.clone();
        let tx = self.link_tx.clone();
        tokio::spawn(async move {
            let write = match action.write {
                LinkWrite::Coil { address, value } => Write::Coil { address, value },
                LinkWrite::Register { address, value } => Write::Register { address, value },
            };
            let result =
                match tokio::time::timeout(LINK_TIMEOUT, modbus.write(&action.device, write)).await
                {
                    Ok(Ok(_)) => "ok".to_owned(),
                    Ok(Err(err)) => format!("failed: {err}"),
                    Err(_) => format!("failed: no answer within {LINK_TIMEOUT:?}"),
                };
            if result == "ok" {
                info!(%alert_id, device = %action.device, action = %action.describe(), "Linkage action done.");
            } else {
                warn!(%alert_id, device = %action.device, action = %action.describe(), %result, "Linkage action failed.");
            }
            let _ = tx.send(LinkDone {
                alert_id,
                record: ActionRecord {
                    action: action.describe(),
                    target: action.device.clone(),
                    at_ms: now_ms(),
                    result,
                },
            });
        });
    }
}

struct MqttMsg {
    topic: String,
    retain: bool,
    payload: Vec<u8>,
}

/// A small QoS 1 publisher on the ingest broker, in its own task so that a slow or absent
/// broker never holds up the engine.
struct MqttPublisher {
    /// To the publisher task. Bounded (1024): when full, a change message is dropped
    /// (counted in the log); the retained active set is republished on the next change,
    /// so a late subscriber still sees the truth.
    tx: mpsc::Sender<MqttMsg>,
    topic: String,
    /// The publisher task; it ends after the stop token, having sent what was queued.
    task: tokio::task::JoinHandle<()>,
}

impl MqttPublisher {
    fn start(opts: rumqttc::MqttOptions, topic: String, shutdown: CancellationToken) -> Self {
        let (tx, mut rx) = mpsc::channel::<MqttMsg>(1024);
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        let task = tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            // The latest retained document, re-sent after every reconnect.
            let mut retained: Option<MqttMsg> = None;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    msg = rx.recv() => {
                        let Some(msg) = msg else { break };
                        // Never await the request queue here: only this loop drains it.
                        if client
                            .try_publish(msg.topic.clone(), QoS::AtLeastOnce, msg.retain, msg.payload.clone())
                            .is_err()
                        {
                            debug!(topic = %msg.topic, "Alert topic publisher queue full; message dropped.");
                        }
                        if msg.retain {
                            retained = Some(msg);
                        }
                    }
                    ev = eventloop.poll() => match ev {
                        Ok(rumqttc::Event::Incoming(rumqttc::Incoming::ConnAck(_))) => {
                            backoff = Duration::from_millis(200);
                            if let Some(m) = &retained {
                                let _ = client.try_publish(m.topic.clone(), QoS::AtLeastOnce, true, m.payload.clone());
                            }
                        }
                        Ok(_) => {}
                        Err(err) => {
                            debug!(error = %err, "Alert topic publisher disconnected; retrying.");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(10));
                        }
                    }
                }
            }
            while let Ok(msg) = rx.try_recv() {
                let _ = client.try_publish(msg.topic, QoS::AtLeastOnce, msg.retain, msg.payload);
            }
            let _ = client.try_disconnect();
            // Let the disconnect (and queued publishes) go out.
            let _ = tokio::time::timeout(Duration::from_millis(500), async {
                while eventloop.poll().await.is_ok() {}
            })
            .await;
        });
        MqttPublisher { tx, topic, task }
    }

    fn send(&self, msg: MqttMsg) {
        if self.tx.try_send(msg).is_err() {
            warn!(topic = %self.topic, "Alert topic publisher is behind; a change message was dropped (the retained active set stays current).");
        }
    }
}

#[cfg(test)]
mod tests;
