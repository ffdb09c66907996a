//! The duty desk: what the city's commands ask of the estate's people and outputs
//! (issue 14). The city link (`crate::link`) validates a command (id, expiry, replay,
//! whether its kind is enabled), records it, and calls one of these; it turns what they
//! return into the `CommandResult` it sends back.
//!
//! ```text
//!  link ──roll_call──▶ DutyDesk ──RollCallView (broadcast)──▶ API: SSE `roll_call`, console banner
//!    ▲                   │  ◀──answer(id, by)──────────────── API: POST /api/roll-calls/{id}/answer
//!    └──Answered/NoAnswer┘
//!  link ──alarm_handling──▶ AlertsHandle::city_handling (stored, audited, SSE `alert`)
//!  link ──broadcast──▶ ModbusHandle::write per output ──▶ GW.BROADCAST events (store, uplink)
//!                        └─ off after the duration (a timer per broadcast)
//! ```
//!
//! - [`DutyDesk::roll_call`] (查岗): the call is pushed at once on the live stream (the
//!   console sounds its alarm and shows a banner with a countdown); resolves with who
//!   answered and how long after the command arrived, or [`RollCall::NoAnswer`] at the
//!   deadline (the console then shows it as missed). The last [`HISTORY`] finished calls
//!   stay listed (`GET /api/roll-calls`); they are not kept across a restart.
//! - [`DutyDesk::alarm_handling`]: the city's state for one of the gateway's alerts
//!   (received, dispatched, on scene, closed) and its note, attached to the local alert
//!   (stored with it, in its audit trail by the issuer, on the live stream). It does not
//!   go back upstream as an `ALERT.UPDATE`: the city set it and the command's result
//!   confirms it, so echoing it would only add traffic to the alarms lane. The city's
//!   `closed` does not close the local alert: that stays with the person on duty.
//! - [`DutyDesk::broadcast`]: the outputs of a `[commands.broadcast.groups]` group (or
//!   all of them) on for `duration_s` (at most `max_duration`, then off again) or off,
//!   through the same Modbus write path as linkage ([`ModbusHandle::write`], with the
//!   same 10 s bound). Every write and its result is recorded as a `GW.BROADCAST` event
//!   (`GW.BROADCAST_FAILED` when it failed, which also opens a local alert) in the store,
//!   so it is durable and forwarded to the city like any event. A later broadcast to an
//!   output supersedes the earlier one's pending switch-off. Switching off (asked, or at
//!   the end of the duration) skips an output an open alert's linkage switched on (its
//!   recorded action), so a drill's end never silences a real fire's sounder. Pending
//!   switch-offs are stored (sled tree `duty`) before switching on and run again by the
//!   next start, so a gateway that stops during a broadcast does not leave it sounding.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use estate_config::{BroadcastConfig, BroadcastOutput, Config};
use estate_protocols::model::EventState;
use estate_protocols::pb;

use crate::alerts::model::CityHandling;
use crate::alerts::{AlertsHandle, OpError};
use crate::events::{gateway_event, now_ms};
use crate::ingest::modbus::ModbusHandle;
use crate::output::Write;
use crate::store::{StoreError, StoreHandle, StoreReader};

/// Finished roll calls kept for `GET /api/roll-calls`.
pub const HISTORY: usize = 20;
/// How long one broadcast write may take before it is recorded as failed (as linkage).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest city note kept on an alert, in bytes (`AlarmHandling.note`: at most 1 KiB).
const MAX_CITY_NOTE_BYTES: usize = 1024;

/// Why the duty desk could not do what a city command asked; the city link sends it
/// back as the command's result.
#[derive(Debug, thiserror::Error)]
pub enum DutyError {
    /// The command names something this gateway does not have (an alert id, a group).
    #[error("{0}")]
    Unknown(String),
    /// It was tried and failed (a Modbus write, a store write).
    #[error("{0}")]
    Failed(String),
}

/// How a roll call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollCall {
    /// Someone on duty answered before the deadline.
    Answered {
        /// Who answered (the API request's `by`).
        by: String,
        /// How long after the command reached the gateway.
        after: Duration,
    },
    /// Nobody answered by the deadline.
    NoAnswer,
}

/// A roll call as the city sent it.
#[derive(Debug, Clone)]
pub struct RollCallRequest {
    /// The city command's id; the roll call's id on the API.
    pub command_id: String,
    /// Who at the city sent it (the command's issuer).
    pub issuer: String,
    /// The text shown to the person on duty.
    pub message: String,
    /// When the command reached the gateway: `after` is measured from here.
    pub received: Instant,
    /// No answer by then answers [`RollCall::NoAnswer`].
    pub deadline: Instant,
}

/// Where a roll call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RollCallStatus {
    /// Waiting for an answer; the deadline has not passed.
    Pending,
    /// Answered in time.
    Answered,
    /// The deadline passed without an answer.
    Missed,
}

/// A roll call as the API and the console see it.
#[derive(Debug, Clone, Serialize)]
pub struct RollCallView {
    /// The command's id.
    pub id: String,
    /// Who at the city sent it.
    pub issuer: String,
    /// The text shown to the person on duty.
    pub message: String,
    /// Pending, answered or missed.
    pub status: RollCallStatus,
    /// When the command arrived and when the answer is due, Unix epoch milliseconds.
    pub received_ms: i64,
    /// When the answer is due, Unix epoch milliseconds.
    pub deadline_ms: i64,
    /// Who answered, when, and how long after the command arrived; all `None` until
    /// answered (and for a missed roll call).
    pub answered_by: Option<String>,
    /// When it was answered, Unix epoch milliseconds.
    pub answered_ms: Option<i64>,
    /// Milliseconds from the command's arrival to the answer.
    pub answer_after_ms: Option<u64>,
    /// Milliseconds left to answer when this was sent (0 once finished): a console
    /// counts down from it, whatever its own clock says.
    pub remaining_ms: u64,
    #[serde(skip)]
    received: Instant,
    #[serde(skip)]
    deadline: Instant,
    #[serde(skip)]
    answered_at: Option<Instant>,
}

impl RollCallView {
    /// With `remaining_ms` as of now.
    fn now(&self) -> RollCallView {
        let mut v = self.clone();
        v.remaining_ms = match v.status {
            RollCallStatus::Pending => u64::try_from(
                v.deadline
                    .saturating_duration_since(Instant::now())
                    .as_millis(),
            )
            .unwrap_or(u64::MAX),
            _ => 0,
        };
        v
    }

    fn outcome(&self) -> RollCall {
        match (&self.answered_by, self.answered_at) {
            (Some(by), Some(at)) => RollCall::Answered {
                by: by.clone(),
                after: at.saturating_duration_since(self.received),
            },
            _ => RollCall::NoAnswer,
        }
    }
}

/// Why an answer was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// No roll call has this id (pending or among the last [`HISTORY`] finished).
    #[error("no roll call {0}")]
    NotFound(String),
    /// Already answered, or missed: the city has its result.
    #[error("roll call {id} is already {status}")]
    Finished {
        /// The roll call's id.
        id: String,
        /// `answered` or `missed`.
        status: &'static str,
    },
}

#[derive(Debug, Default)]
struct RollCalls {
    /// Waiting for an answer, oldest first; each with the waker of its `roll_call`.
    pending: Vec<(RollCallView, Option<oneshot::Sender<()>>)>,
    /// Finished, newest last.
    done: VecDeque<RollCallView>,
}

/// One output as a key for its pending switch-off.
type OutputKey = (String, Option<u16>, Option<u16>);

#[derive(Debug)]
struct Inner {
    alerts: AlertsHandle,
    modbus: ModbusHandle,
    broadcast: BroadcastConfig,
    gateway_id: String,
    estate_id: String,
    calls: Mutex<RollCalls>,
    /// Every roll-call change, to the live streams; a slow one misses changes (it is
    /// told it lagged and re-reads `GET /api/roll-calls`).
    updates: broadcast::Sender<RollCallView>,
    /// Records broadcast writes as events; taken by [`DutyDesk::stop`] so the store
    /// writer can drain at shutdown.
    store: Mutex<Option<StoreHandle>>,
    /// Per output, the generation of the broadcast that last switched it: a pending
    /// switch-off only acts while its generation is still the latest.
    generations: Mutex<HashMap<OutputKey, u64>>,
    /// Pending switch-offs (sled tree `duty` in the store's database, key per output):
    /// written before a broadcast switches on, removed once switched off, run again by
    /// the next start when the gateway stopped (or died) before.
    pending_offs: sled::Tree,
    /// Cancelled by [`DutyDesk::stop`]: pending switch-off timers end (the next start
    /// runs them from `pending_offs`).
    stop: CancellationToken,
}

/// A switch-off to do, as kept in `pending_offs`.
#[derive(Debug, Serialize, Deserialize)]
struct PendingOff {
    off_at_ms: i64,
    issuer: String,
    group: String,
    output: BroadcastOutput,
}

/// The duty desk. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DutyDesk {
    inner: Arc<Inner>,
}

impl DutyDesk {
    /// `store` records broadcast writes; the desk holds it until [`DutyDesk::stop`].
    /// `reader` holds the pending switch-offs: those left by the last run are scheduled
    /// again (at once when overdue). Call inside the runtime.
    pub fn new(
        cfg: &Config,
        alerts: AlertsHandle,
        modbus: ModbusHandle,
        store: StoreHandle,
        reader: &StoreReader,
    ) -> Result<Self, StoreError> {
        let pending_offs = reader.open_tree("duty")?;
        let (updates, _) = broadcast::channel(64);
        let desk = DutyDesk {
            inner: Arc::new(Inner {
                alerts,
                modbus,
                broadcast: cfg.commands.broadcast.clone(),
                gateway_id: cfg.gateway.id.clone(),
                estate_id: cfg.gateway.estate_id.clone(),
                calls: Mutex::new(RollCalls::default()),
                updates,
                store: Mutex::new(Some(store)),
                generations: Mutex::new(HashMap::new()),
                pending_offs,
                stop: CancellationToken::new(),
            }),
        };
        let mut left = Vec::new();
        for item in desk.inner.pending_offs.iter() {
            let (_, v) = item?;
            match serde_json::from_slice::<PendingOff>(&v) {
                Ok(p) => left.push(p),
                Err(err) => warn!(error = %err, "Unreadable pending broadcast switch-off skipped."),
            }
        }
        for p in left {
            let after = Duration::from_millis(u64::try_from(p.off_at_ms - now_ms()).unwrap_or(0));
            info!(device = %p.output.device, group = %p.group, after_ms = after.as_millis() as u64, "Broadcast switch-off left by the last run scheduled.");
            let generation = desk.next_generation(std::slice::from_ref(&p.output));
            desk.schedule_off(p.issuer, p.group, vec![p.output], generation, after);
        }
        Ok(desk)
    }

    /// Switches `outputs` off after `after`, those still of `generation`.
    fn schedule_off(
        &self,
        issuer: String,
        group: String,
        outputs: Vec<BroadcastOutput>,
        generation: u64,
        after: Duration,
    ) {
        let desk = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = desk.inner.stop.cancelled() => return,
                _ = tokio::time::sleep(after) => {}
            }
            let due: Vec<BroadcastOutput> = {
                let g = lock(&desk.inner.generations);
                outputs
                    .into_iter()
                    .filter(|o| g.get(&key(o)) == Some(&generation))
                    .collect()
            };
            if !due.is_empty() {
                desk.write_all(&issuer, &group, &due, false).await;
            }
        });
    }

    /// Keeps (or, with `None`, drops) the pending switch-off of `o`, durably.
    async fn set_pending_off(&self, o: &BroadcastOutput, pending: Option<PendingOff>) {
        let k = pending_key(o);
        let r = match pending {
            Some(p) => self
                .inner
                .pending_offs
                .insert(k, serde_json::to_vec(&p).unwrap_or_default())
                .map(|_| ()),
            None => self.inner.pending_offs.remove(k).map(|_| ()),
        };
        let r = match r {
            Ok(()) => self.inner.pending_offs.flush_async().await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(err) = r {
            warn!(device = %o.device, error = %err, "Pending broadcast switch-off not stored; a restart before it would leave the output on.");
        }
    }

    /// Lets go of the store (call once Modbus has stopped, before the store drains):
    /// writes after this are logged, not recorded.
    pub fn stop(&self) {
        self.inner.stop.cancel();
        lock(&self.inner.store).take();
    }

    /// Subscribes to roll-call changes (the live stream).
    pub fn subscribe(&self) -> broadcast::Receiver<RollCallView> {
        self.inner.updates.subscribe()
    }

    /// The pending roll calls (oldest first), then the last finished ones (newest first).
    pub fn roll_calls(&self) -> Vec<RollCallView> {
        let calls = lock(&self.inner.calls);
        calls
            .pending
            .iter()
            .map(|(v, _)| v.now())
            .chain(calls.done.iter().rev().cloned())
            .collect()
    }

    /// Shows the roll call to the person on duty; resolves on their answer or at the
    /// deadline. Never fails: a console nobody watches is what `NoAnswer` reports.
    /// Dropping the future withdraws the call (listed as missed).
    pub async fn roll_call(&self, req: RollCallRequest) -> RollCall {
        let (wake, woken) = oneshot::channel();
        let now = Instant::now();
        let view = RollCallView {
            id: req.command_id.clone(),
            issuer: req.issuer,
            message: req.message,
            status: RollCallStatus::Pending,
            received_ms: now_ms() - ms(now.saturating_duration_since(req.received)),
            deadline_ms: now_ms() + ms(req.deadline.saturating_duration_since(now)),
            answered_by: None,
            answered_ms: None,
            answer_after_ms: None,
            remaining_ms: 0,
            received: req.received,
            deadline: req.deadline,
            answered_at: None,
        };
        info!(command_id = %view.id, issuer = %view.issuer, deadline_ms = view.deadline_ms, "Roll call shown to the person on duty.");
        let shown = view.now();
        lock(&self.inner.calls).pending.push((view, Some(wake)));
        let _ = self.inner.updates.send(shown);
        // Marks the call missed unless it finished (also when this future is dropped).
        let finish = Finish {
            desk: self,
            id: req.command_id,
            done: false,
        };
        tokio::select! {
            _ = woken => {}
            _ = tokio::time::sleep_until(req.deadline.into()) => {}
        }
        finish.finish()
    }

    /// The person on duty answers roll call `id`. `Finished` when it was answered or
    /// missed already (the deadline is checked here, so an answer never arrives late).
    pub fn answer(&self, id: &str, by: &str) -> Result<RollCallView, AnswerError> {
        let mut calls = lock(&self.inner.calls);
        let Some(i) = calls.pending.iter().position(|(v, _)| v.id == id) else {
            return Err(match calls.done.iter().find(|v| v.id == id) {
                Some(v) => AnswerError::Finished {
                    id: id.to_owned(),
                    status: status_str(v.status),
                },
                None => AnswerError::NotFound(id.to_owned()),
            });
        };
        let now = Instant::now();
        let (view, wake) = &mut calls.pending[i];
        if now >= view.deadline {
            return Err(AnswerError::Finished {
                id: id.to_owned(),
                status: "missed",
            });
        }
        view.status = RollCallStatus::Answered;
        view.answered_by = Some(by.to_owned());
        view.answered_at = Some(now);
        view.answered_ms = Some(now_ms());
        view.answer_after_ms = Some(
            u64::try_from(now.saturating_duration_since(view.received).as_millis())
                .unwrap_or(u64::MAX),
        );
        let answered = view.now();
        if let Some(w) = wake.take() {
            let _ = w.send(());
        }
        Ok(answered)
    }

    /// Attaches the city's state (and its note) to a local alert; `issuer` is who at the
    /// city set it. `Unknown` when the gateway has no alert of that id.
    pub async fn alarm_handling(
        &self,
        issuer: &str,
        req: &pb::AlarmHandling,
    ) -> Result<(), DutyError> {
        let state = match pb::CityAlarmState::try_from(req.state) {
            Ok(pb::CityAlarmState::Received) => "received",
            Ok(pb::CityAlarmState::Dispatched) => "dispatched",
            Ok(pb::CityAlarmState::OnScene) => "on_scene",
            Ok(pb::CityAlarmState::Closed) => "closed",
            Ok(pb::CityAlarmState::Unspecified) | Err(_) => {
                return Err(DutyError::Unknown(format!(
                    "unknown city alarm state {}",
                    req.state
                )))
            }
        };
        let handling = CityHandling {
            state: state.to_owned(),
            note: truncate(&req.note, MAX_CITY_NOTE_BYTES).to_owned(),
            by: issuer.to_owned(),
            at_ms: now_ms(),
        };
        match self
            .inner
            .alerts
            .city_handling(&req.alert_id, handling)
            .await
        {
            Ok(_) => {
                info!(alert_id = %req.alert_id, %issuer, state, "City handling attached to the alert.");
                Ok(())
            }
            Err(OpError::NotFound(id)) => Err(DutyError::Unknown(format!("no alert {id}"))),
            Err(e) => Err(DutyError::Failed(e.to_string())),
        }
    }

    /// Switches a configured group of outputs; returns what was done (for the result's
    /// detail). `Unknown` for a group not configured.
    pub async fn broadcast(&self, issuer: &str, req: &pb::Broadcast) -> Result<String, DutyError> {
        let b = &self.inner.broadcast;
        if !b.enabled {
            return Err(DutyError::Unknown(
                "broadcasts are off on this gateway ([commands.broadcast] enabled = false)".into(),
            ));
        }
        let outputs: Vec<BroadcastOutput> = if req.group.is_empty() {
            let mut all: Vec<BroadcastOutput> = Vec::new();
            for o in b.groups.values().flatten() {
                if !all.iter().any(|a| key(a) == key(o)) {
                    all.push(o.clone());
                }
            }
            all
        } else {
            match b.groups.get(&req.group) {
                Some(g) => g.clone(),
                None => {
                    return Err(DutyError::Unknown(format!(
                        "no broadcast group {:?} (configured: {})",
                        req.group,
                        b.groups.keys().cloned().collect::<Vec<_>>().join(", ")
                    )))
                }
            }
        };
        let group = if req.group.is_empty() {
            "all".to_owned()
        } else {
            req.group.clone()
        };
        let generation = self.next_generation(&outputs);
        let secs = u64::from(req.duration_s.max(1)).min(b.max_duration.as_secs().max(1));
        let duration = Duration::from_secs(secs);
        if req.on {
            // Stored before switching on: a gateway that stops meanwhile switches off
            // after its next start.
            for o in &outputs {
                let p = PendingOff {
                    off_at_ms: now_ms() + ms(duration),
                    issuer: issuer.to_owned(),
                    group: group.clone(),
                    output: o.clone(),
                };
                self.set_pending_off(o, Some(p)).await;
            }
        }
        let results = self.write_all(issuer, &group, &outputs, req.on).await;
        let n = outputs.len();
        let what = if req.on {
            // Switched off after the duration even when some writes failed: a write that
            // timed out may still have happened.
            self.schedule_off(
                issuer.to_owned(),
                group.clone(),
                outputs.clone(),
                generation,
                duration,
            );
            let capped = if u64::from(req.duration_s) > secs {
                " (capped at commands.broadcast.max_duration)"
            } else {
                ""
            };
            format!("on for {secs} s{capped}")
        } else {
            "off".to_owned()
        };
        let mut failed = Vec::new();
        let mut held = Vec::new();
        for r in results {
            match r {
                Ok(None) => {}
                Ok(Some(why)) => held.push(why),
                Err(err) => failed.push(err),
            }
        }
        let done = n - failed.len() - held.len();
        let held = if held.is_empty() {
            String::new()
        } else {
            format!("; {} left on ({})", held.len(), held.join("; "))
        };
        if failed.is_empty() {
            Ok(format!("{done} output{} {what}{held}", plural(done)))
        } else {
            Err(DutyError::Failed(format!(
                "{} of {n} write{} failed ({done} output{} {what} otherwise{held}): {}",
                failed.len(),
                plural(n),
                plural(done),
                failed.join("; ")
            )))
        }
    }

    /// Makes this broadcast the latest for each of `outputs`; returns its generation.
    fn next_generation(&self, outputs: &[BroadcastOutput]) -> u64 {
        let mut g = lock(&self.inner.generations);
        let next = g.values().copied().max().unwrap_or(0) + 1;
        for o in outputs {
            g.insert(key(o), next);
        }
        next
    }

    /// Writes `on` or `off` to every output at once; records each write and its result.
    /// `Err` names the failed write; `Ok(Some(why))` is an output left on because an
    /// open alert's linkage switched it on.
    async fn write_all(
        &self,
        issuer: &str,
        group: &str,
        outputs: &[BroadcastOutput],
        on: bool,
    ) -> Vec<Result<Option<String>, String>> {
        let writes = outputs.iter().map(|o| self.write_one(issuer, group, o, on));
        futures_util::future::join_all(writes).await
    }

    async fn write_one(
        &self,
        issuer: &str,
        group: &str,
        o: &BroadcastOutput,
        on: bool,
    ) -> Result<Option<String>, String> {
        let value = if on { o.on } else { o.off };
        let held = if on {
            None
        } else {
            self.held_by_linkage(o).await
        };
        let (write, describe) = match (o.coil, o.register) {
            (Some(address), _) => (
                Write::Coil {
                    address,
                    value: value != 0,
                },
                format!("coil {address} = {value}"),
            ),
            (None, Some(address)) => (
                Write::Register { address, value },
                format!("register {address} = {value}"),
            ),
            // Refused by check-config.
            (None, None) => return Err(format!("{}: no coil or register", o.device)),
        };
        let result = match &held {
            // A fire's sounder stays on whatever a broadcast asks.
            Some(_) => Ok(()),
            None => {
                match tokio::time::timeout(WRITE_TIMEOUT, self.inner.modbus.write(&o.device, write))
                    .await
                {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(err)) => Err(err.to_string()),
                    Err(_) => Err(format!("no answer within {WRITE_TIMEOUT:?}")),
                }
            }
        };
        let outcome = match (&result, &held) {
            (Ok(()), Some(why)) => format!("left on: {why}"),
            (Ok(()), None) => "ok".to_owned(),
            (Err(err), _) => err.clone(),
        };
        let state = if on { "on" } else { "off" };
        match (&result, &held) {
            (Ok(()), Some(why)) => {
                warn!(device = %o.device, write = %describe, %group, %issuer, reason = %why, "Broadcast switch-off skipped: an open alert's linkage holds the output on.")
            }
            (Ok(()), None) => {
                info!(device = %o.device, write = %describe, %group, %issuer, state, "Broadcast write done.")
            }
            (Err(err), _) => {
                warn!(device = %o.device, write = %describe, %group, %issuer, state, error = %err, "Broadcast write failed.")
            }
        }
        let ev = gateway_event(
            &self.inner.gateway_id,
            &self.inner.estate_id,
            if result.is_ok() {
                "GW.BROADCAST"
            } else {
                "GW.BROADCAST_FAILED"
            },
            if on {
                EventState::Active
            } else {
                EventState::Cleared
            },
            None,
            serde_json::json!({
                "issuer": issuer,
                "group": group,
                "device": o.device,
                "write": describe,
                "switch": state,
                "result": outcome,
            }),
        );
        if !on && result.is_ok() {
            self.set_pending_off(o, None).await;
        }
        let store = lock(&self.inner.store).clone();
        match store {
            Some(s) => {
                if let Err(err) = s.append_nowait(ev).await {
                    warn!(device = %o.device, error = %err, "Broadcast write not recorded.");
                }
            }
            None => {
                warn!(device = %o.device, "Broadcast write not recorded: the gateway is stopping.")
            }
        }
        result
            .map(|()| held.map(|why| format!("{} {describe}: {why}", o.device)))
            .map_err(|err| format!("{} {describe}: {err}", o.device))
    }

    /// Why `o` must stay on, when an open alert's linkage switched it on (e.g. the
    /// sounder of a confirmed fire): a broadcast, or its end, never silences it.
    async fn held_by_linkage(&self, o: &BroadcastOutput) -> Option<String> {
        let store = self.inner.alerts.store().clone();
        let open = match tokio::task::spawn_blocking(move || store.open_alerts()).await {
            Ok(Ok(open)) => open,
            Ok(Err(err)) => {
                warn!(error = %err, "Cannot read the open alerts; switching the broadcast output off regardless.");
                return None;
            }
            Err(_) => return None,
        };
        let (table, address) = match (o.coil, o.register) {
            (Some(a), _) => ("coil", a),
            (None, Some(a)) => ("register", a),
            (None, None) => return None,
        };
        open.iter().find_map(|a| {
            a.actions
                .iter()
                .any(|x| {
                    x.target == o.device
                        && x.result == "ok"
                        && linkage_write(&x.action)
                            .is_some_and(|(t, addr, v)| t == table && addr == address && v != o.off)
                })
                .then(|| format!("alert {} ({}) switched it on by linkage", a.id, a.code))
        })
    }
}

/// Finishes a roll call: answered (as recorded by [`DutyDesk::answer`]) or missed.
struct Finish<'a> {
    desk: &'a DutyDesk,
    id: String,
    done: bool,
}

impl Finish<'_> {
    fn finish(mut self) -> RollCall {
        self.done = true;
        self.take()
    }

    fn take(&self) -> RollCall {
        let inner = &self.desk.inner;
        let mut calls = lock(&inner.calls);
        let Some(i) = calls.pending.iter().position(|(v, _)| v.id == self.id) else {
            return RollCall::NoAnswer;
        };
        let (mut view, _) = calls.pending.remove(i);
        if view.status == RollCallStatus::Pending {
            view.status = RollCallStatus::Missed;
        }
        let outcome = view.outcome();
        match &outcome {
            RollCall::Answered { by, after } => {
                info!(command_id = %view.id, %by, after_ms = after.as_millis() as u64, "Roll call answered.")
            }
            RollCall::NoAnswer => {
                warn!(command_id = %view.id, issuer = %view.issuer, "Roll call not answered by its deadline.")
            }
        }
        let view = view.now();
        calls.done.push_back(view.clone());
        while calls.done.len() > HISTORY {
            calls.done.pop_front();
        }
        drop(calls);
        let _ = inner.updates.send(view);
        outcome
    }
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.take();
        }
    }
}

/// `(table, address, value)` of a linkage action as recorded (`rule: coil 0 = 1`).
fn linkage_write(action: &str) -> Option<(&str, u16, u16)> {
    let (_, write) = action.rsplit_once(": ")?;
    let mut words = write.split_whitespace();
    let table = words.next()?;
    let address = words.next()?.parse().ok()?;
    (words.next()? == "=").then_some(())?;
    let value = words.next()?.parse().ok()?;
    Some((table, address, value))
}

/// `pending_offs` key of an output: `device/coil/N` or `device/register/N`.
fn pending_key(o: &BroadcastOutput) -> Vec<u8> {
    match (o.coil, o.register) {
        (Some(a), _) => format!("{}/coil/{a}", o.device),
        (None, Some(a)) => format!("{}/register/{a}", o.device),
        (None, None) => o.device.clone(),
    }
    .into_bytes()
}

fn key(o: &BroadcastOutput) -> OutputKey {
    (o.device.clone(), o.coil, o.register)
}

fn status_str(s: RollCallStatus) -> &'static str {
    match s {
        RollCallStatus::Pending => "pending",
        RollCallStatus::Answered => "answered",
        RollCallStatus::Missed => "missed",
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The lock even if a holder panicked (the data stays consistent: every update is one
/// assignment or push).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::{linkage_write, truncate};

    #[test]
    fn linkage_writes_are_read_back_as_recorded() {
        assert_eq!(
            linkage_write("fire-starts-sounder: coil 0 = 1"),
            Some(("coil", 0, 1))
        );
        assert_eq!(
            linkage_write("strobe: register 12 = 300"),
            Some(("register", 12, 300))
        );
        assert_eq!(linkage_write("no write here"), None);
        assert_eq!(linkage_write("x: coil zero = 1"), None);
    }

    #[test]
    fn notes_are_cut_at_a_character_boundary() {
        assert_eq!(truncate("消防", 4), "消");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
