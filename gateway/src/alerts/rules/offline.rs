//! The devices' status: online when heard from, offline after missed heartbeats
//! (`[alerts.offline]`, MQTT devices with `heartbeat_interval`) or on a `DEV.OFFLINE`
//! report. A device taken offline by missed heartbeats raises `DEV.OFFLINE`, and
//! `DEV.ONLINE` when it is heard from again.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use estate_config::Config;
use estate_protocols::model::{DeviceKind, Event, EventState, Location};

use super::{ms, Effect, Engine};
use crate::alerts::model::{DeviceStatus, DeviceView};

/// Most devices not in the config that are tracked (a registry gap must not grow memory
/// without bound).
const MAX_UNREGISTERED: usize = 10_000;

/// A configured device, as the rules need it.
#[derive(Debug, Clone)]
pub(super) struct DeviceInfo {
    pub(super) kind: DeviceKind,
    pub(super) name: String,
    pub(super) location: Location,
    /// Heartbeats expected this often (MQTT devices with `heartbeat_interval`).
    heartbeat: Option<Duration>,
    missed: u32,
}

#[derive(Debug, Clone)]
pub(super) struct DeviceState {
    status: DeviceStatus,
    last_seen_ms: Option<i64>,
    /// When heartbeat supervision started counting (start-up, or the last report).
    since_ms: i64,
    /// Offline because the engine saw heartbeats missing (it raised `DEV.OFFLINE`).
    offline_by_heartbeat: bool,
    pub(super) registered: bool,
    pub(super) kind: Option<DeviceKind>,
    pub(super) location: Location,
}

impl DeviceState {
    fn new(since_ms: i64, registered: bool, kind: Option<DeviceKind>, location: Location) -> Self {
        DeviceState {
            status: DeviceStatus::Unknown,
            last_seen_ms: None,
            since_ms,
            offline_by_heartbeat: false,
            registered,
            kind,
            location,
        }
    }
}

/// What the engine keeps of a device across a restart (see [`Engine::device_records`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeviceRecord {
    /// The device's id.
    pub id: String,
    /// Its status when saved.
    pub status: DeviceStatus,
    /// When it was last heard from (Unix ms).
    pub last_seen_ms: Option<i64>,
    /// Offline because heartbeats were missing: the next report raises `DEV.ONLINE`.
    pub offline_by_heartbeat: bool,
    /// Whether the device is in the config.
    pub registered: bool,
    /// Its kind, as configured or as its events said.
    pub kind: Option<DeviceKind>,
    /// Its place, as configured or as its events said.
    pub location: Location,
}

/// The configured devices and every device heard from.
#[derive(Debug)]
pub(super) struct Devices {
    configured: HashMap<String, DeviceInfo>,
    states: BTreeMap<String, DeviceState>,
}

/// A device whose heartbeats stopped: (id, heartbeat interval in ms, heartbeats missed).
type Missed = (String, i64, u32);

impl Devices {
    /// The configured devices, all `Unknown`, supervision counting from `now_ms`.
    pub(super) fn new(cfg: &Config, now_ms: i64) -> Self {
        let mut configured = HashMap::new();
        let mut states = BTreeMap::new();
        for d in &cfg.devices {
            let heartbeat = if d.modbus.is_some() {
                None
            } else {
                d.heartbeat_interval
            };
            let info = DeviceInfo {
                kind: d.kind,
                name: d.name.clone(),
                location: d.location.clone(),
                heartbeat,
                missed: cfg.alerts.offline.missed_for(d.kind),
            };
            configured.insert(d.id.clone(), info);
            let state = DeviceState::new(now_ms, true, Some(d.kind), d.location.clone());
            states.insert(d.id.clone(), state);
        }
        Devices { configured, states }
    }

    /// The configured device `id`.
    pub(super) fn configured(&self, id: &str) -> Option<&DeviceInfo> {
        self.configured.get(id)
    }

    /// The tracked device `id`.
    pub(super) fn state(&self, id: &str) -> Option<&DeviceState> {
        self.states.get(id)
    }

    fn unregistered(&self) -> usize {
        self.states.len() - self.configured.len()
    }

    fn records(&self) -> Vec<DeviceRecord> {
        self.states
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

    fn restore(&mut self, r: DeviceRecord) {
        if let Some(st) = self.states.get_mut(&r.id) {
            st.status = r.status;
            st.last_seen_ms = r.last_seen_ms;
            st.offline_by_heartbeat = r.offline_by_heartbeat;
        } else if !r.registered && self.unregistered() < MAX_UNREGISTERED {
            // Only configured devices have heartbeat supervision.
            let mut st = DeviceState::new(0, false, r.kind, r.location);
            st.status = r.status;
            st.last_seen_ms = r.last_seen_ms;
            st.offline_by_heartbeat = r.offline_by_heartbeat;
            self.states.insert(r.id, st);
        }
    }

    pub(super) fn view(&self, id: &str) -> Option<DeviceView> {
        let st = self.states.get(id)?;
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

    fn list(&self) -> Vec<DeviceView> {
        let mut v: Vec<DeviceView> = self.states.keys().filter_map(|id| self.view(id)).collect();
        v.sort_by_key(|d| {
            let rank = match d.status {
                DeviceStatus::Offline => 0,
                DeviceStatus::Unknown => 1,
                DeviceStatus::Online => 2,
            };
            (rank, d.id.clone())
        });
        v
    }

    /// `ev` came from its device at `t`: returns whether the status changed, and whether
    /// the device came back after missed heartbeats (then `DEV.ONLINE` is raised).
    fn heard(&mut self, ev: &Event, t: i64) -> (bool, bool) {
        if !self.states.contains_key(&ev.device_id) {
            if self.unregistered() >= MAX_UNREGISTERED {
                return (false, false);
            }
            let st = DeviceState::new(t, false, ev.device_kind, ev.location.clone());
            self.states.insert(ev.device_id.clone(), st);
        }
        let Some(st) = self.states.get_mut(&ev.device_id) else {
            return (false, false);
        };
        let before = st.status;
        if ev.code == "DEV.OFFLINE" && ev.state == EventState::Active {
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
        (before != st.status, came_back)
    }

    /// Takes offline the supervised devices whose heartbeats stopped, in id order.
    fn missed_heartbeats(&mut self, now_ms: i64) -> Vec<Missed> {
        let mut offline = Vec::new();
        for (id, info) in &self.configured {
            let (Some(interval), Some(st)) = (info.heartbeat, self.states.get(id)) else {
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
        for (id, _, _) in &offline {
            if let Some(st) = self.states.get_mut(id) {
                st.status = DeviceStatus::Offline;
                st.offline_by_heartbeat = true;
            }
        }
        offline
    }
}

impl Engine {
    /// Every tracked device's status, for saving across a restart.
    pub fn device_records(&self) -> Vec<DeviceRecord> {
        self.devices.records()
    }

    /// Takes back the device statuses saved before a restart, so the console shows when
    /// each device was last heard from instead of "never". Heartbeat supervision still
    /// counts from this start: a device gets its full window to report again. Devices
    /// configured then but not now are dropped; the config decides kind and location.
    pub fn restore_devices(&mut self, records: impl IntoIterator<Item = DeviceRecord>) {
        for r in records {
            self.devices.restore(r);
        }
    }

    /// Every known device (configured, or heard from), offline first.
    pub fn devices(&self) -> Vec<DeviceView> {
        self.devices.list()
    }

    pub(super) fn track_device(&mut self, ev: &Event, t: i64, out: &mut Vec<Effect>) {
        let (changed, came_back) = self.devices.heard(ev, t);
        if changed {
            if let Some(v) = self.devices.view(&ev.device_id) {
                out.push(Effect::Device(v));
            }
        }
        if came_back {
            let detail = serde_json::json!({"rule": "missed_heartbeats", "heard": ev.code});
            let e = self.device_event(&ev.device_id, "DEV.ONLINE", EventState::Active, detail, t);
            out.push(Effect::Raise(Box::new(e)));
        }
    }

    /// Heartbeats missed: the device goes offline and `DEV.OFFLINE` is raised.
    pub(super) fn take_offline(&mut self, now_ms: i64, out: &mut Vec<Effect>) {
        for (id, interval_ms, missed) in self.devices.missed_heartbeats(now_ms) {
            if let Some(v) = self.devices.view(&id) {
                out.push(Effect::Device(v));
            }
            let detail = serde_json::json!({"rule": "missed_heartbeats", "missed": missed, "heartbeat_interval_ms": interval_ms});
            let e = self.device_event(&id, "DEV.OFFLINE", EventState::Active, detail, now_ms);
            out.push(Effect::Raise(Box::new(e)));
        }
    }
}
