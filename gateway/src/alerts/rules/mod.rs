//! The alert rule engine. Pure: no I/O, no clock. The caller feeds committed events
//! ([`Engine::on_event`]), the passing of time ([`Engine::on_tick`]) and operator actions,
//! each with "now" in Unix epoch milliseconds, and carries out the [`Effect`]s returned:
//! alert changes to persist and publish, events to raise into the store, linkage writes
//! to run, device status changes to show.
//!
//! One module per rule family (from `[alerts]`); the [`Engine`] holds each family's
//! state and composes them:
//!
//! - `fold` — severity overrides, debounce, folding of repeats, clearing and auto-close;
//! - `lifecycle` — opening and closing alerts, the operator's and the city's actions;
//! - `hold_open` — doors held open (`ACS.HELD_OPEN`);
//! - `offline` — the devices' status, offline detection from missed heartbeats;
//! - `escalation` — unacknowledged alerts raised in severity;
//! - `correlation` — reports of several devices confirming each other;
//! - `silence` — windows in which matching events open no alert;
//! - `chatter` — chattering alerts and folded repeats in the audit trail;
//! - `shelving` — alerts an operator shelved for a while;
//! - `linkage` — Modbus writes an opening alert asks for, and their results;
//! - `raised` — the events the rules raise.
//!
//! Events the engine raises (`ACS.HELD_OPEN`, `DEV.OFFLINE`/`DEV.ONLINE`,
//! `FIRE.CONFIRMED`) go through the store like any other event and come back through
//! [`Engine::on_event`], which opens their alerts: one path for every alert, and every
//! derived fact is in the store and forwarded upstream.

mod chatter;
mod correlation;
mod escalation;
mod fold;
mod hold_open;
mod lifecycle;
mod linkage;
mod offline;
mod raised;
mod shelving;
mod silence;

use std::collections::HashMap;
use std::time::Duration;

use estate_config::{AlertsConfig, Config};
use estate_protocols::model::{AlertChange, Event, EventState};

use super::model::{Alert, AuditEntry, DeviceView};

pub(crate) use lifecycle::city_effect;
pub use linkage::LinkAction;
pub use offline::DeviceRecord;

/// Who automatic changes are attributed to.
pub const BY_GATEWAY: &str = "gateway";

/// A change the caller must carry out.
// Effects live for one call in a short vector; boxing the alert would only add
// allocations.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// An alert changed: persist it (with the audit entry), publish it locally, and
    /// forward `upstream` when set (folds are not forwarded one by one).
    Alert {
        /// The alert as it now is.
        alert: Alert,
        /// The entry for its audit trail; `None` for a fold.
        audit: Option<AuditEntry>,
        /// The transition to forward upstream, if any.
        upstream: Option<AlertChange>,
    },
    /// Append this event to the store (never waiting for its commit).
    Raise(Box<Event>),
    /// Run this linkage write and report its result with [`Engine::record_action`].
    Link {
        /// The alert that asked for the write.
        alert_id: String,
        /// The write.
        action: LinkAction,
    },
    /// A device's status changed.
    Device(DeviceView),
}

/// An operator action the engine refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// No open alert has this id (it may be closed, or unknown).
    #[error("no open alert {0}")]
    NotOpen(String),
    /// The transition is not allowed from the alert's status.
    #[error("{0}")]
    Invalid(String),
    /// The request itself is out of bounds (e.g. shelving longer than allowed).
    #[error("{0}")]
    Refused(String),
}

/// (device id, code, location for gateway-derived alerts): what repeats fold on.
type Key = (String, String, String);

/// The engine's state. Build it with [`Engine::new`], restore open alerts with
/// [`Engine::restore`].
#[derive(Debug)]
pub struct Engine {
    cfg: AlertsConfig,
    gateway_id: String,
    estate_id: String,
    /// Configured and heard-from devices, and their heartbeat supervision.
    devices: offline::Devices,
    /// Open alerts by id.
    open: HashMap<String, Alert>,
    by_key: HashMap<Key, String>,
    /// Debounced conditions not yet alerts.
    pending: HashMap<Key, fold::PendingAlert>,
    /// Doors reported open.
    doors: hold_open::Doors,
    /// Correlation windows and the correlations raised.
    correlation: correlation::Correlations,
    silences: silence::Silences,
    /// Recent activations per key, for chattering (`chatter.rs`).
    activations: chatter::Activations,
}

impl Engine {
    /// Builds the engine from the config; `now_ms` starts heartbeat supervision.
    pub fn new(cfg: &Config, now_ms: i64) -> Engine {
        let a = &cfg.alerts;
        Engine {
            cfg: a.clone(),
            gateway_id: cfg.gateway.id.clone(),
            estate_id: cfg.gateway.estate_id.clone(),
            devices: offline::Devices::new(cfg, now_ms),
            open: HashMap::new(),
            by_key: HashMap::new(),
            pending: HashMap::new(),
            doors: hold_open::Doors::new(a.held_open_after),
            correlation: correlation::Correlations::new(&a.correlation),
            silences: silence::Silences::new(&a.silence),
            activations: HashMap::new(),
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

    /// The open alerts (any order).
    pub fn open_alerts(&self) -> impl Iterator<Item = &Alert> {
        self.open.values()
    }

    /// The open alert `id`, if it is open.
    pub fn alert(&self, id: &str) -> Option<&Alert> {
        self.open.get(id)
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
        self.open_debounced(now_ms, &mut out);
        self.raise_held_open(now_ms, &mut out);
        self.take_offline(now_ms, &mut out);
        self.escalate(now_ms, &mut out);
        self.settle_chattering(now_ms, &mut out);
        self.expire_shelves(now_ms, &mut out);
        self.correlation.forget(now_ms);
        out
    }
}

/// The key an open alert folds repeats on (fold.rs; chatter.rs and lifecycle.rs find
/// alerts by it).
pub(super) fn key_of_alert(a: &Alert, gateway_id: &str) -> Key {
    let place = if a.device_id == gateway_id {
        a.location.to_string()
    } else {
        String::new()
    };
    (a.device_id.clone(), a.code.clone(), place)
}

fn audit(at_ms: i64, by: &str, action: &str, note: &str) -> AuditEntry {
    AuditEntry::new(at_ms, by, action, note)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
