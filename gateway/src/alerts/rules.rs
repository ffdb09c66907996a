//! The alert rule engine. Pure: no I/O, no clock. The caller feeds committed events
//! ([`Engine::on_event`]), the passing of time ([`Engine::on_tick`]) and operator actions,
//! each with "now" in Unix epoch milliseconds, and carries out the [`Effect`]s returned:
//! alert changes to persist and publish, events to raise into the store, linkage writes
//! to run, device status changes to show.
//!
//! Rules (from `[alerts]`): severity overrides, debounce, folding of repeats, clearing
//! and auto-close, hold-open timers, offline detection from missed heartbeats,
//! escalation, correlation, silence windows, linkage.
//!
//! Events the engine raises (`ACS.HELD_OPEN`, `DEV.OFFLINE`/`DEV.ONLINE`,
//! `FIRE.CONFIRMED`) go through the store like any other event and come back through
//! [`Engine::on_event`], which opens their alerts: one path for every alert, and every
//! derived fact is in the store and forwarded upstream.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;

use estate_config::{AlertsConfig, Config, Linkage, Scope};
use estate_protocols::model::{
    AlertChange, AlertStatus, DeviceKind, Event, EventState, Location, Severity, Source,
};
use estate_protocols::taxonomy;

use super::model::{
    Acknowledged, ActionRecord, Alert, AuditEntry, CityHandling, Closed, DeviceStatus, DeviceView,
    Disposition,
};

/// Who automatic changes are attributed to.
pub const BY_GATEWAY: &str = "gateway";

/// Most devices not in the config that are tracked (a registry gap must not grow memory
/// without bound).
const MAX_UNREGISTERED: usize = 10_000;

/// A change the caller must carry out.
// Effects live for one call in a short vector; boxing the alert would only add
// allocations.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// An alert changed: persist it (with the audit entry), publish it locally, and
    /// forward `upstream` when set (folds are not forwarded one by one).
    Alert {
        alert: Alert,
        audit: Option<AuditEntry>,
        upstream: Option<AlertChange>,
    },
    /// Append this event to the store (never waiting for its commit).
    Raise(Box<Event>),
    /// Run this linkage write and report its result with [`Engine::record_action`].
    Link {
        alert_id: String,
        action: LinkAction,
    },
    /// A device's status changed.
    Device(DeviceView),
}

/// One Modbus write of a linkage rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkAction {
    pub rule: String,
    pub device: String,
    pub write: LinkWrite,
}

/// What a linkage rule writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkWrite {
    Coil { address: u16, value: bool },
    Register { address: u16, value: u16 },
}

impl LinkAction {
    /// `rule: coil 0 = 1`, as recorded on the alert.
    pub fn describe(&self) -> String {
        match self.write {
            LinkWrite::Coil { address, value } => {
                format!("{}: coil {address} = {}", self.rule, u8::from(value))
            }
            LinkWrite::Register { address, value } => {
                format!("{}: register {address} = {value}", self.rule)
            }
        }
    }
}

/// An operator action the engine refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    #[error("no open alert {0}")]
    NotOpen(String),
    #[error("{0}")]
    Invalid(String),
}

/// A configured device, as the rules need it.
#[derive(Debug, Clone)]
struct DeviceInfo {
    kind: DeviceKind,
    name: String,
    location: Location,
    /// Heartbeats expected this often (MQTT devices with `heartbeat_interval`).
    heartbeat: Option<Duration>,
    missed: u32,
}

#[derive(Debug, Clone)]
struct DeviceState {
    status: DeviceStatus,
    last_seen_ms: Option<i64>,
    /// When heartbeat supervision started counting (start-up, or the last report).
    since_ms: i64,
    /// Offline because the engine saw heartbeats missing (it raised `DEV.OFFLINE`).
    offline_by_heartbeat: bool,
    registered: bool,
    kind: Option<DeviceKind>,
    location: Location,
}

/// What the engine keeps of a device across a restart (see [`Engine::device_records`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeviceRecord {
    pub id: String,
    pub status: DeviceStatus,
    pub last_seen_ms: Option<i64>,
    /// Offline because heartbeats were missing: the next report raises `DEV.ONLINE`.
    pub offline_by_heartbeat: bool,
    pub registered: bool,
    pub kind: Option<DeviceKind>,
    pub location: Location,
}

/// (device id, code, location for gateway-derived alerts): what repeats fold on.
type Key = (String, String, String);

#[derive(Debug, Clone)]
struct PendingAlert {
    due_ms: i64,
    event: Box<Event>,
    count: u64,
    severity: Severity,
    last_seen_ms: i64,
}

/// The engine's state. Build it with [`Engine::new`], restore open alerts with
/// [`Engine::restore`].
#[derive(Debug)]
pub struct Engine {
    cfg: AlertsConfig,
    gateway_id: String,
    estate_id: String,
    configured: HashMap<String, DeviceInfo>,
    devices: BTreeMap<String, DeviceState>,
    /// Open alerts by id.
    open: HashMap<String, Alert>,
    by_key: HashMap<Key, String>,
    /// Debounced conditions not yet alerts.
    pending: HashMap<Key, PendingAlert>,
    /// Doors reported open: since when, and whether `ACS.HELD_OPEN` was raised.
    doors: HashMap<String, (i64, bool)>,
    /// Correlation windows: (rule, scope value) → recent (device, time).
    windows: HashMap<(String, String), Vec<(String, i64)>>,
    /// Correlations raised whose alert has not closed yet.
    fired: HashSet<(String, String)>,
    silences: Vec<(i64, i64, estate_config::Silence)>,
}

impl Engine {
    /// Builds the engine from the config; `now_ms` starts heartbeat supervision.
    pub fn new(cfg: &Config, now_ms: i64) -> Engine {
        let a = cfg.alerts.clone();
        let mut configured = HashMap::new();
        let mut devices = BTreeMap::new();
        for d in &cfg.devices {
            let heartbeat = if d.modbus.is_some() {
                None
            } else {
                d.heartbeat_interval
            };
            configured.insert(
                d.id.clone(),
                DeviceInfo {
                    kind: d.kind,
                    name: d.name.clone(),
                    location: d.location.clone(),
                    heartbeat,
                    missed: a.offline.missed_for(d.kind),
                },
            );
            devices.insert(
                d.id.clone(),
                DeviceState {
                    status: DeviceStatus::Unknown,
                    last_seen_ms: None,
                    since_ms: now_ms,
                    offline_by_heartbeat: false,
                    registered: true,
                    kind: Some(d.kind),
                    location: d.location.clone(),
                },
            );
        }
        let silences = a
            .silence
            .values()
            .filter_map(|s| s.window_ms().map(|(f, u)| (f, u, s.clone())))
            .collect();
        Engine {
            cfg: a,
            gateway_id: cfg.gateway.id.clone(),
            estate_id: cfg.gateway.estate_id.clone(),
            configured,
            devices,
            open: HashMap::new(),
            by_key: HashMap::new(),
            pending: HashMap::new(),
            doors: HashMap::new(),
            windows: HashMap::new(),
            fired: HashSet::new(),
            silences,
        }
    }

    /// Takes back the open alerts persisted before a restart.
    pub fn restore(&mut self, alerts: impl IntoIterator<Item = Alert>) {
        for a in alerts.into_iter().filter(Alert::is_open) {
            self.by_key
                .insert(key_of_alert(&a, &self.gateway_id), a.id.clone());
            self.open.insert(a.id.clone(), a);
        }
    }

    /// Every tracked device's status, for saving across a restart.
    pub fn device_records(&self) -> Vec<DeviceRecord> {
        self.devices
            .iter()
            .map(|(id, st)| DeviceRecord {
                id: id.clone(),
                status: st.status,
                last_seen_ms: st.last_seen_ms,
                offline_by_heartbeat: st.offline_by_heartbeat,
                registered: st.registered,
                kind: st.kind,
                location: st.location.clone(),
            })
            .collect()
    }

    /// Takes back the device statuses saved before a restart, so the console shows when
    /// each device was last heard from instead of "never". Heartbeat supervision still
    /// counts from this start: a device gets its full window to report again. Devices
    /// configured then but not now are dropped; the config decides kind and location.
    pub fn restore_devices(&mut self, records: impl IntoIterator<Item = DeviceRecord>) {
        for r in records {
            if let Some(st) = self.devices.get_mut(&r.id) {
                st.status = r.status;
                st.last_seen_ms = r.last_seen_ms;
                st.offline_by_heartbeat = r.offline_by_heartbeat;
            } else if !r.registered && self.devices.len() - self.configured.len() < MAX_UNREGISTERED
            {
                self.devices.insert(
                    r.id,
                    DeviceState {
                        status: r.status,
                        last_seen_ms: r.last_seen_ms,
                        // Only configured devices have heartbeat supervision.
                        since_ms: 0,
                        offline_by_heartbeat: r.offline_by_heartbeat,
                        registered: false,
                        kind: r.kind,
                        location: r.location,
                    },
                );
            }
        }
    }

    /// The open alerts (any order).
    pub fn open_alerts(&self) -> impl Iterator<Item = &Alert> {
        self.open.values()
    }

    pub fn alert(&self, id: &str) -> Option<&Alert> {
        self.open.get(id)
    }

    /// Every known device (configured, or heard from), offline first.
    pub fn devices(&self) -> Vec<DeviceView> {
        let mut v: Vec<DeviceView> = self.devices.keys().filter_map(|id| self.view(id)).collect();
        v.sort_by_key(|d| {
            (
                match d.status {
                    DeviceStatus::Offline => 0,
                    DeviceStatus::Unknown => 1,
                    DeviceStatus::Online => 2,
                },
                d.id.clone(),
            )
        });
        v
    }

    fn view(&self, id: &str) -> Option<DeviceView> {
        let st = self.devices.get(id)?;
        let info = self.configured.get(id);
        Some(DeviceView {
            id: id.to_owned(),
            kind: st.kind.map(|k| k.as_str().to_owned()),
            name: info.map(|i| i.name.clone()).unwrap_or_default(),
            location: st.location.clone(),
            status: st.status,
            last_seen_ms: st.last_seen_ms,
            registered: st.registered,
        })
    }

    /// A committed event. `now_ms` is the engine's clock (on replay after a restart, the
    /// event's own time is used for folding and windows).
    pub fn on_event(&mut self, ev: &Event, now_ms: i64) -> Vec<Effect> {
        let mut out = Vec::new();
        if ev.code.starts_with("ALERT.") || ev.alert.is_some() {
            return out;
        }
        let t = ev.gateway_time_ms;
        if ev.device_id != self.gateway_id {
            self.track_device(ev, t, &mut out);
        }
        if ev.code == "ACS.OPEN" {
            self.door(ev, t, &mut out);
        }
        if ev.state == EventState::Active {
            self.correlate(ev, t, &mut out);
        }
        match ev.code.as_str() {
            "DEV.HEARTBEAT" | "DEV.READING" => {}
            // A device back online clears its offline alert.
            "DEV.ONLINE" => {
                let key = self.key("DEV.OFFLINE", ev);
                self.clear(&key, t, now_ms, &mut out);
            }
            _ => {
                let key = self.key(&ev.code, ev);
                match ev.state {
                    EventState::Cleared => {
                        self.pending.remove(&key);
                        self.clear(&key, t, now_ms, &mut out);
                    }
                    EventState::Active => self.activate(key, ev, t, now_ms, &mut out),
                }
            }
        }
        out
    }

    /// Time passed: debounce expiry, hold-open timers, heartbeat timeouts, escalation.
    pub fn on_tick(&mut self, now_ms: i64) -> Vec<Effect> {
        let mut out = Vec::new();
        // Debounced conditions that lasted.
        let due: Vec<Key> = self
            .pending
            .iter()
            .filter(|(_, p)| p.due_ms <= now_ms)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            if let Some(p) = self.pending.remove(&key) {
                self.open_alert(
                    key,
                    &p.event,
                    p.severity,
                    p.count,
                    p.last_seen_ms,
                    now_ms,
                    &mut out,
                );
            }
        }
        // Doors held open.
        if let Some(held) = self.cfg.held_open_after {
            let held = ms(held);
            let mut raise = Vec::new();
            for (device, (since, raised)) in self.doors.iter_mut() {
                if !*raised && now_ms - *since >= held {
                    *raised = true;
                    raise.push(device.clone());
                }
            }
            for device in raise {
                let detail = serde_json::json!({"rule": "held_open_after", "after_ms": held});
                out.push(Effect::Raise(Box::new(self.device_event(
                    &device,
                    "ACS.HELD_OPEN",
                    EventState::Active,
                    detail,
                    now_ms,
                ))));
            }
        }
        // Heartbeats missed.
        let mut offline = Vec::new();
        for (id, info) in &self.configured {
            let Some(interval) = info.heartbeat else {
                continue;
            };
            let Some(st) = self.devices.get(id) else {
                continue;
            };
            if st.status == DeviceStatus::Offline {
                continue;
            }
            let last = st.last_seen_ms.unwrap_or(st.since_ms).max(st.since_ms);
            if now_ms - last >= ms(interval) * i64::from(info.missed) {
                offline.push((id.clone(), ms(interval), info.missed));
            }
        }
        offline.sort();
        for (id, interval_ms, missed) in offline {
            if let Some(st) = self.devices.get_mut(&id) {
                st.status = DeviceStatus::Offline;
                st.offline_by_heartbeat = true;
            }
            if let Some(v) = self.view(&id) {
                out.push(Effect::Device(v));
            }
            let detail = serde_json::json!({"rule": "missed_heartbeats", "missed": missed, "heartbeat_interval_ms": interval_ms});
            out.push(Effect::Raise(Box::new(self.device_event(
                &id,
                "DEV.OFFLINE",
                EventState::Active,
                detail,
                now_ms,
            ))));
        }
        // Escalation.
        if let Some(esc) = self.cfg.escalation.clone() {
            let after = ms(esc.after);
            let mut ids: Vec<String> = self
                .open
                .values()
                .filter(|a| {
                    a.status == AlertStatus::Active
                        && !a.escalated
                        && a.severity <= esc.max_severity
                        && now_ms - a.first_seen_ms >= after
                })
                .map(|a| a.id.clone())
                .collect();
            ids.sort();
            for id in ids {
                if let Some(a) = self.open.get_mut(&id) {
                    let from = a.severity;
                    a.severity = a.severity.saturating_sub(1).max(1);
                    a.escalated = true;
                    let note = format!(
                        "not acknowledged within {}; severity {from} → {}",
                        humantime::format_duration(esc.after),
                        a.severity
                    );
                    out.push(Effect::Alert {
                        alert: a.clone(),
                        audit: Some(audit(now_ms, BY_GATEWAY, "escalated", &note)),
                        upstream: Some(AlertChange::Escalated),
                    });
                }
            }
        }
        // Forget correlation reports that left their window.
        let windows = &self.cfg.correlation;
        self.windows.retain(|(rule, _), v| {
            let within = windows.get(rule).map_or(0, |c| ms(c.within));
            v.retain(|(_, t)| now_ms - *t <= within);
            !v.is_empty()
        });
        out
    }

    /// An operator acknowledges an active alert.
    pub fn acknowledge(
        &mut self,
        id: &str,
        by: &str,
        note: &str,
        now_ms: i64,
    ) -> Result<Vec<Effect>, ActionError> {
        let a = self
            .open
            .get_mut(id)
            .ok_or_else(|| ActionError::NotOpen(id.to_owned()))?;
        if a.status != AlertStatus::Active {
            return Err(ActionError::Invalid(format!(
                "alert {id} is {}, only an active alert can be acknowledged",
                a.status.as_str()
            )));
        }
        a.status = AlertStatus::Acknowledged;
        a.acknowledged = Some(Acknowledged {
            by: by.to_owned(),
            at_ms: now_ms,
            note: note.to_owned(),
        });
        Ok(vec![Effect::Alert {
            alert: a.clone(),
            audit: Some(audit(now_ms, by, "acknowledged", note)),
            upstream: Some(AlertChange::Acknowledged),
        }])
    }

    /// An operator closes an open alert with a disposition.
    pub fn close(
        &mut self,
        id: &str,
        by: &str,
        disposition: Disposition,
        note: &str,
        now_ms: i64,
    ) -> Result<Vec<Effect>, ActionError> {
        if !self.open.contains_key(id) {
            return Err(ActionError::NotOpen(id.to_owned()));
        }
        let mut out = Vec::new();
        self.close_alert(id, by, disposition, note, now_ms, &mut out);
        Ok(out)
    }

    /// The city's handling state, attached to an open alert (issue 14). Nothing goes
    /// upstream: the city set it. `None` when the alert is not open (the caller attaches
    /// it to the stored alert).
    pub fn city_handling(&mut self, alert_id: &str, city: CityHandling) -> Option<Effect> {
        let a = self.open.get_mut(alert_id)?;
        Some(city_effect(a, city))
    }

    /// The result of a linkage write, recorded on its alert. `None` when the alert was
    /// closed in the meantime (the caller records it on the stored alert).
    pub fn record_action(&mut self, alert_id: &str, record: ActionRecord) -> Option<Effect> {
        let a = self.open.get_mut(alert_id)?;
        let note = format!("{} on {}: {}", record.action, record.target, record.result);
        let at = record.at_ms;
        a.actions.push(record);
        Some(Effect::Alert {
            alert: a.clone(),
            audit: Some(audit(at, BY_GATEWAY, "action", &note)),
            upstream: Some(AlertChange::Action),
        })
    }

    // -- internals ----------------------------------------------------------------------

    fn key(&self, code: &str, ev: &Event) -> Key {
        let derived = ev.device_id == self.gateway_id;
        (
            ev.device_id.clone(),
            code.to_owned(),
            if derived {
                ev.location.to_string()
            } else {
                String::new()
            },
        )
    }

    fn track_device(&mut self, ev: &Event, t: i64, out: &mut Vec<Effect>) {
        let unregistered = self.devices.len() - self.configured.len();
        if !self.devices.contains_key(&ev.device_id) {
            if unregistered >= MAX_UNREGISTERED {
                return;
            }
            self.devices.insert(
                ev.device_id.clone(),
                DeviceState {
                    status: DeviceStatus::Unknown,
                    last_seen_ms: None,
                    since_ms: t,
                    offline_by_heartbeat: false,
                    registered: false,
                    kind: ev.device_kind,
                    location: ev.location.clone(),
                },
            );
        }
        let Some(st) = self.devices.get_mut(&ev.device_id) else {
            return;
        };
        let before = st.status;
        let offline_event = ev.code == "DEV.OFFLINE" && ev.state == EventState::Active;
        if offline_event {
            st.status = DeviceStatus::Offline;
        } else {
            // An offline report is about the device, not from it: only other events
            // count as the device being heard from.
            st.last_seen_ms = Some(st.last_seen_ms.map_or(t, |l| l.max(t)));
            st.status = DeviceStatus::Online;
        }
        let came_back = before == DeviceStatus::Offline
            && st.status == DeviceStatus::Online
            && st.offline_by_heartbeat
            && ev.code != "DEV.ONLINE";
        if st.status == DeviceStatus::Online {
            st.offline_by_heartbeat = false;
        }
        if before != st.status {
            if let Some(v) = self.view(&ev.device_id) {
                out.push(Effect::Device(v));
            }
        }
        if came_back {
            let detail = serde_json::json!({"rule": "missed_heartbeats", "heard": ev.code});
            out.push(Effect::Raise(Box::new(self.device_event(
                &ev.device_id,
                "DEV.ONLINE",
                EventState::Active,
                detail,
                t,
            ))));
        }
    }

    fn door(&mut self, ev: &Event, t: i64, out: &mut Vec<Effect>) {
        match ev.state {
            EventState::Active => {
                self.doors.entry(ev.device_id.clone()).or_insert((t, false));
            }
            EventState::Cleared => {
                if let Some((_, true)) = self.doors.remove(&ev.device_id) {
                    let detail = serde_json::json!({"rule": "held_open_after", "closed": true});
                    out.push(Effect::Raise(Box::new(self.device_event(
                        &ev.device_id,
                        "ACS.HELD_OPEN",
                        EventState::Cleared,
                        detail,
                        t,
                    ))));
                }
            }
        }
    }

    fn correlate(&mut self, ev: &Event, t: i64, out: &mut Vec<Effect>) {
        let rules: Vec<(String, estate_config::Correlation)> = self
            .cfg
            .correlation
            .iter()
            .filter(|(_, c)| c.codes.contains(&ev.code))
            .map(|(n, c)| (n.clone(), c.clone()))
            .collect();
        for (name, c) in rules {
            let Some((scope_value, location)) = scope_of(&ev.location, c.same) else {
                continue;
            };
            let group = (name.clone(), scope_value);
            let within = ms(c.within);
            let v = self.windows.entry(group.clone()).or_default();
            v.retain(|(_, at)| t - *at <= within);
            v.push((ev.device_id.clone(), t));
            let mut devices: Vec<&str> = v.iter().map(|(d, _)| d.as_str()).collect();
            devices.sort_unstable();
            devices.dedup();
            if devices.len() < c.min_devices {
                continue;
            }
            let key: Key = (
                self.gateway_id.clone(),
                c.raise.clone(),
                location.to_string(),
            );
            if self.fired.contains(&group) || self.by_key.contains_key(&key) {
                continue;
            }
            self.fired.insert(group);
            let detail = serde_json::json!({
                "rule": name,
                "devices": devices,
                "within_ms": within,
            });
            let mut e = self.gateway_raised(&c.raise, EventState::Active, detail, t);
            e.location = location;
            out.push(Effect::Raise(Box::new(e)));
        }
    }

    fn severity_for(&self, ev: &Event) -> Severity {
        let level = self
            .cfg
            .device_severity
            .get(&ev.device_id)
            .and_then(|m| m.get(&ev.code))
            .or_else(|| self.cfg.severity.get(&ev.code))
            .copied();
        level.and_then(Severity::from_level).unwrap_or(ev.severity)
    }

    fn silenced(&self, ev: &Event, t: i64) -> bool {
        self.silences.iter().any(|(from, until, s)| {
            *from <= t
                && t < *until
                && (s.devices.is_empty() || s.devices.contains(&ev.device_id))
                && (s.codes.is_empty() || s.codes.contains(&ev.code))
                && s.building
                    .as_ref()
                    .is_none_or(|b| *b == ev.location.building)
        })
    }

    fn activate(&mut self, key: Key, ev: &Event, t: i64, now_ms: i64, out: &mut Vec<Effect>) {
        let severity = self.severity_for(ev);
        if severity.level() > self.cfg.min_severity || self.silenced(ev, t) {
            return;
        }
        if let Some(id) = self.by_key.get(&key).cloned() {
            if let Some(a) = self.open.get_mut(&id) {
                if !a.stored {
                    // While the alert is not stored its events are redeliveries of the
                    // one that opened it as often as repeats: not counted. The first one
                    // stored stands in for it.
                    if ev.seq != 0 {
                        a.stored = true;
                        a.opened_by_seq = ev.seq;
                    }
                } else {
                    a.count += 1;
                }
                a.last_seen_ms = a.last_seen_ms.max(t);
                if a.cleared {
                    a.cleared = false;
                    a.cleared_ms = None;
                    out.push(Effect::Alert {
                        alert: a.clone(),
                        audit: Some(audit(now_ms, BY_GATEWAY, "reactivated", &ev.code)),
                        upstream: Some(AlertChange::Opened),
                    });
                } else {
                    out.push(Effect::Alert {
                        alert: a.clone(),
                        audit: None,
                        upstream: None,
                    });
                }
                return;
            }
        }
        if let Some(d) = self.cfg.debounce.get(&ev.code).copied() {
            let p = self.pending.entry(key).or_insert_with(|| PendingAlert {
                due_ms: t + ms(d),
                event: Box::new(ev.clone()),
                count: 0,
                severity,
                last_seen_ms: t,
            });
            p.count += 1;
            p.last_seen_ms = p.last_seen_ms.max(t);
            return;
        }
        self.open_alert(key, ev, severity, 1, t, now_ms, out);
    }

    #[allow(clippy::too_many_arguments)]
    fn open_alert(
        &mut self,
        key: Key,
        ev: &Event,
        severity: Severity,
        count: u64,
        last_seen_ms: i64,
        now_ms: i64,
        out: &mut Vec<Effect>,
    ) {
        let info = self.configured.get(&ev.device_id);
        let first_seen = ev.gateway_time_ms;
        let id = alert_id(first_seen, &ev.event_id, &ev.code);
        let alert = Alert {
            id: id.clone(),
            code: ev.code.clone(),
            title: taxonomy::title(&ev.code).to_owned(),
            severity: severity.level(),
            status: AlertStatus::Active,
            cleared: false,
            escalated: false,
            device_id: ev.device_id.clone(),
            device_kind: ev
                .device_kind
                .or(info.map(|i| i.kind))
                .map(|k| k.as_str().to_owned()),
            device_name: info.map(|i| i.name.clone()).unwrap_or_default(),
            location: if ev.location.is_empty() {
                info.map(|i| i.location.clone()).unwrap_or_default()
            } else {
                ev.location.clone()
            },
            count,
            first_seen_ms: first_seen,
            last_seen_ms: last_seen_ms.max(first_seen),
            cleared_ms: None,
            acknowledged: None,
            closed: None,
            actions: Vec::new(),
            opened_by_seq: ev.seq,
            stored: ev.seq != 0,
            city: None,
        };
        let links: Vec<LinkAction> = self
            .cfg
            .linkage
            .iter()
            .filter(|(_, l)| l.on.contains(&ev.code) && self.same_building(l, &alert))
            .map(|(name, l)| link_action(name, l))
            .collect();
        self.by_key.insert(key, id.clone());
        self.open.insert(id.clone(), alert.clone());
        out.push(Effect::Alert {
            alert,
            audit: Some(audit(
                now_ms,
                BY_GATEWAY,
                "opened",
                &format!("seq {}", ev.seq),
            )),
            upstream: Some(AlertChange::Opened),
        });
        for action in links {
            out.push(Effect::Link {
                alert_id: id.clone(),
                action,
            });
        }
    }

    fn same_building(&self, l: &Linkage, alert: &Alert) -> bool {
        if !l.same_building {
            return true;
        }
        let target = self
            .configured
            .get(&l.device)
            .map(|d| d.location.building.as_str())
            .unwrap_or("");
        !target.is_empty() && target == alert.location.building
    }

    fn clear(&mut self, key: &Key, t: i64, now_ms: i64, out: &mut Vec<Effect>) {
        let Some(id) = self.by_key.get(key).cloned() else {
            return;
        };
        let Some(a) = self.open.get_mut(&id) else {
            return;
        };
        if a.cleared {
            return;
        }
        a.cleared = true;
        a.cleared_ms = Some(t);
        let auto = self.cfg.auto_close.contains(&a.code);
        if auto {
            self.close_alert(
                &id,
                BY_GATEWAY,
                Disposition::AutoCleared,
                "condition cleared (alerts.auto_close)",
                now_ms,
                out,
            );
        } else {
            out.push(Effect::Alert {
                alert: a.clone(),
                audit: Some(audit(now_ms, BY_GATEWAY, "cleared", "condition cleared")),
                upstream: Some(AlertChange::Cleared),
            });
        }
    }

    fn close_alert(
        &mut self,
        id: &str,
        by: &str,
        disposition: Disposition,
        note: &str,
        now_ms: i64,
        out: &mut Vec<Effect>,
    ) {
        let Some(mut a) = self.open.remove(id) else {
            return;
        };
        let key = key_of_alert(&a, &self.gateway_id);
        self.by_key.remove(&key);
        // A closed correlation may fire again.
        if a.device_id == self.gateway_id {
            let loc = a.location.clone();
            let rules: Vec<(String, Scope)> = self
                .cfg
                .correlation
                .iter()
                .filter(|(_, c)| c.raise == a.code)
                .map(|(n, c)| (n.clone(), c.same))
                .collect();
            for (name, same) in rules {
                if let Some((v, _)) = scope_of(&loc, same) {
                    self.fired.remove(&(name.clone(), v.clone()));
                    self.windows.remove(&(name, v));
                }
            }
        }
        a.status = AlertStatus::Closed;
        a.closed = Some(Closed {
            by: by.to_owned(),
            at_ms: now_ms,
            disposition,
            note: note.to_owned(),
        });
        let line = format!("{}: {note}", disposition.as_str());
        out.push(Effect::Alert {
            alert: a,
            audit: Some(audit(now_ms, by, "closed", &line)),
            upstream: Some(AlertChange::Closed),
        });
    }

    /// An event about a device (raised by the rules), with the device's kind and place.
    fn device_event(
        &self,
        device: &str,
        code: &'static str,
        state: EventState,
        detail: serde_json::Value,
        now_ms: i64,
    ) -> Event {
        let st = self.devices.get(device);
        let kind = st.and_then(|s| s.kind);
        let mut e = self.gateway_raised(code, state, detail, now_ms);
        e.device_id = device.to_owned();
        e.device_kind = kind;
        e.location = st.map(|s| s.location.clone()).unwrap_or_default();
        e.registered = st.is_some_and(|s| s.registered);
        if let Some(info) = taxonomy::lookup(code) {
            e.severity = taxonomy::default_severity(info, kind);
        }
        e
    }

    fn gateway_raised(
        &self,
        code: &str,
        state: EventState,
        detail: serde_json::Value,
        now_ms: i64,
    ) -> Event {
        let severity = taxonomy::lookup(code).map_or(Severity::Major, |i| i.severity);
        Event {
            seq: 0,
            event_id: ulid::Ulid::new().to_string(),
            gateway_id: self.gateway_id.clone(),
            estate_id: self.estate_id.clone(),
            device_id: self.gateway_id.clone(),
            device_kind: Some(DeviceKind::Gateway),
            code: code.to_owned(),
            severity,
            state,
            location: Location::default(),
            device_time_ms: None,
            gateway_time_ms: now_ms,
            value: None,
            source: Source {
                protocol: "gateway".into(),
                reference: "alerts".into(),
            },
            raw: Bytes::from(detail.to_string()),
            raw_truncated: false,
            registered: true,
            device_seq: None,
            alert: None,
        }
    }
}

fn key_of_alert(a: &Alert, gateway_id: &str) -> Key {
    (
        a.device_id.clone(),
        a.code.clone(),
        if a.device_id == gateway_id {
            a.location.to_string()
        } else {
            String::new()
        },
    )
}

/// The value of the location part `same` names, and a location holding only that part;
/// `None` when the event's location lacks it (it cannot be correlated by place).
fn scope_of(l: &Location, same: Scope) -> Option<(String, Location)> {
    let mut out = Location::default();
    let v = match same {
        Scope::Estate => return Some((String::new(), out)),
        Scope::Building => {
            out.building = l.building.clone();
            l.building.clone()
        }
        Scope::Unit => {
            out.building = l.building.clone();
            out.unit = l.unit.clone();
            if l.unit.is_empty() {
                String::new()
            } else {
                format!("{}/{}", l.building, l.unit)
            }
        }
        Scope::Floor => {
            out.building = l.building.clone();
            out.unit = l.unit.clone();
            out.floor = l.floor.clone();
            if l.floor.is_empty() {
                String::new()
            } else {
                format!("{}/{}/{}", l.building, l.unit, l.floor)
            }
        }
        Scope::Zone => {
            out.zone = l.zone.clone();
            l.zone.clone()
        }
    };
    (!v.is_empty()).then_some((v, out))
}

fn link_action(name: &str, l: &Linkage) -> LinkAction {
    let write = match (l.coil, l.register) {
        (_, Some(address)) => LinkWrite::Register {
            address,
            value: l.value,
        },
        (Some(address), None) => LinkWrite::Coil {
            address,
            value: l.value != 0,
        },
        (None, None) => LinkWrite::Coil {
            address: 0,
            value: l.value != 0,
        },
    };
    LinkAction {
        rule: name.to_owned(),
        device: l.device.clone(),
        write,
    }
}

/// Attaches the city's handling to `a`, with its audit entry (`city`, by the issuer).
pub(crate) fn city_effect(a: &mut Alert, city: CityHandling) -> Effect {
    let note = if city.note.is_empty() {
        city.state.clone()
    } else {
        format!("{}: {}", city.state, city.note)
    };
    let entry = audit(city.at_ms, &city.by, "city", &note);
    a.city = Some(city);
    Effect::Alert {
        alert: a.clone(),
        audit: Some(entry),
        upstream: None,
    }
}

fn audit(at_ms: i64, by: &str, action: &str, note: &str) -> AuditEntry {
    AuditEntry {
        at_ms,
        by: by.to_owned(),
        action: action.to_owned(),
        note: note.to_owned(),
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The id of the alert `code` opened by the event `event_id`: a ULID with the event's
/// time, and random bits taken from the event's own (ULID) id mixed with the code. The
/// same event always opens the same alert id, so replaying events after a crash (see
/// `alerts::Alerts`) gives an alert the operator may already have seen the same id,
/// and one event opening two alerts (its own and a correlation) gives two ids.
fn alert_id(first_seen_ms: i64, event_id: &str, code: &str) -> String {
    let event_bits = ulid::Ulid::from_string(event_id)
        .map_or_else(|_| fnv1a(event_id.as_bytes()) as u128, |u| u.random());
    let code_bits = fnv1a(code.as_bytes()) as u128;
    ulid::Ulid::from_parts(
        u64::try_from(first_seen_ms).unwrap_or(0),
        event_bits ^ (code_bits << 16),
    )
    .to_string()
}

/// 64-bit FNV-1a: a fixed, dependency-free hash (ids must not change between releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests;
