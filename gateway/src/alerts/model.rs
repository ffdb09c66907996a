//! What an alert is, as stored, served over HTTP/SSE and published on MQTT (JSON).

use serde::{Deserialize, Serialize};

use estate_protocols::model::{AlertChange, AlertStatus, AlertUpdate, Location, Severity};

/// A local alert: an incident people on duty must see, acknowledge and close.
///
/// `active → acknowledged → closed`. Repeats of the same (device, code) fold into the
/// open alert (`count`, `last_seen_ms`); a condition that ends marks it `cleared`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// ULID: sorts by creation time.
    pub id: String,
    /// The taxonomy code of the events folded in, e.g. `SMOKE.ALARM`
    /// (`protocols/src/taxonomy.rs`).
    pub code: String,
    /// Human text for the code (the taxonomy's description).
    pub title: String,
    /// 1 critical … 4 info, after overrides and escalation.
    pub severity: u8,
    /// `active`, `acknowledged` or `closed`; only an operator (or `alerts.auto_close`)
    /// closes an alert.
    pub status: AlertStatus,
    /// The condition has ended (a leak dried, a door closed, a device came back).
    pub cleared: bool,
    /// Not acknowledged within `alerts.escalation.after`.
    pub escalated: bool,
    /// The device that reported it, as in its events.
    pub device_id: String,
    /// The device's kind (`smoke`, `water_leak`, …) from the event or else the config;
    /// `None` when neither says.
    pub device_kind: Option<String>,
    /// The configured device's name; empty when unknown.
    pub device_name: String,
    /// Where the device is: the event's location, or the configured device's when the
    /// event carries none.
    pub location: Location,
    /// Events folded into this alert.
    pub count: u64,
    /// Gateway receive time (Unix ms) of the event that opened the alert.
    pub first_seen_ms: i64,
    /// Gateway receive time (Unix ms) of the latest event folded in; never moves back.
    pub last_seen_ms: i64,
    /// When (Unix ms, gateway receive time) the condition ended; `None` while it holds
    /// (a repeat after a clear reactivates the alert and resets this).
    pub cleared_ms: Option<i64>,
    /// Set once an operator acknowledged it; `None` before.
    pub acknowledged: Option<Acknowledged>,
    /// Set once the alert is closed (`status` is then `closed`); `None` while open.
    pub closed: Option<Closed>,
    /// Linkage actions run for this alert, with their results.
    pub actions: Vec<ActionRecord>,
    /// Seq of the committed event that opened the alert (0 while it is not stored).
    pub opened_by_seq: u64,
    /// Whether an event of this alert is in the store. `false`: the alert opened from an
    /// event the store could not commit (a full disk, docs/never-lost.md, "Full disk"); the broker
    /// redelivers that message, and once one of the alert's events commits this turns
    /// `true` (the console shows "Not stored" until then).
    #[serde(default = "stored_default")]
    pub stored: bool,
    /// The city platform's handling of this alert, as its latest command set it (issue
    /// 14); `None` until the city says something. Informative: it never changes the
    /// local status (closing stays with the person on duty here).
    #[serde(default)]
    pub city: Option<CityHandling>,
    /// Activations: the opening and every reactivation after a clear (issue 16).
    #[serde(default = "one")]
    pub activations: u64,
    /// Chattering (`[alerts.chattering]`): it activated `alerts.chattering.activations`
    /// times within the window; its clears and reactivations make no sound and go
    /// upstream only as "entered" and "left" chattering, until it has been stable for
    /// `alerts.chattering.stable_for`.
    #[serde(default)]
    pub chattering: bool,
    /// Clears and reactivations folded, not yet written to the audit trail (see
    /// `alerts/state.rs`, "Audit"); written as one `repeated` entry when the run ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unaudited: Option<Repeats>,
    /// Set while an operator has it shelved; `None` otherwise.
    #[serde(default)]
    pub shelved: Option<Shelved>,
}

fn stored_default() -> bool {
    true
}

fn one() -> u64 {
    1
}

fn is_one(n: &u64) -> bool {
    *n == 1
}

/// Clears and reactivations of one alert folded into one audit entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repeats {
    /// Reactivations folded.
    pub reactivated: u64,
    /// Clears folded.
    pub cleared: u64,
    /// When the first of them happened (Unix ms, gateway clock).
    pub first_ms: i64,
    /// When the last of them happened.
    pub last_ms: i64,
}

impl Repeats {
    /// The audit entry for this run: `repeated`, counted, from first to last.
    pub fn entry(&self) -> AuditEntry {
        AuditEntry {
            at_ms: self.first_ms,
            by: super::rules::BY_GATEWAY.into(),
            action: "repeated".into(),
            note: format!(
                "reactivated {} and cleared {} times",
                self.reactivated, self.cleared
            ),
            count: self.reactivated + self.cleared,
            last_ms: Some(self.last_ms),
            prev: None,
        }
    }
}

/// Who shelved an alert, why, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shelved {
    /// The operator, as the request named them.
    pub by: String,
    /// Why (required).
    pub reason: String,
    /// When it was shelved (Unix ms, gateway clock).
    pub at_ms: i64,
    /// When it is unshelved automatically (Unix ms).
    pub until_ms: i64,
    /// Transitions not forwarded upstream while shelved.
    #[serde(default)]
    pub held_back: u64,
}

impl Alert {
    /// Not closed yet: active or acknowledged (what `estate_alerts_open` counts).
    pub fn is_open(&self) -> bool {
        self.status != AlertStatus::Closed
    }

    /// `severity` as the taxonomy's type; a level outside 1–4 reads as critical, so a
    /// corrupt record errs on the loud side.
    pub fn severity(&self) -> Severity {
        Severity::from_level(self.severity).unwrap_or(Severity::Critical)
    }

    /// The upstream form of `change` (see `AlertUpdate` in the `.proto`).
    pub fn update(&self, change: AlertChange, by: &str, note: &str) -> AlertUpdate {
        let (action, action_target, action_result) = match (change, self.actions.last()) {
            (AlertChange::Action, Some(a)) => {
                (a.action.clone(), a.target.clone(), a.result.clone())
            }
            _ => Default::default(),
        };
        AlertUpdate {
            alert_id: self.id.clone(),
            change,
            status: self.status,
            code: self.code.clone(),
            severity: self.severity(),
            device_id: self.device_id.clone(),
            cleared: self.cleared,
            escalated: self.escalated,
            count: self.count,
            first_seen_ms: self.first_seen_ms,
            last_seen_ms: self.last_seen_ms,
            by: by.to_owned(),
            disposition: self
                .closed
                .as_ref()
                .map(|c| c.disposition.as_str().to_owned())
                .unwrap_or_default(),
            note: note.to_owned(),
            action,
            action_target,
            action_result,
            opened_by_seq: self.opened_by_seq,
        }
    }
}

/// The city's state for an alert (`CityAlarmState` in `link.proto`) and its note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CityHandling {
    /// `received`, `dispatched`, `on_scene` or `closed`.
    pub state: String,
    /// Free text from the city, e.g. the unit dispatched.
    pub note: String,
    /// Who at the city set it (the command's issuer).
    pub by: String,
    /// When the gateway attached it.
    pub at_ms: i64,
}

/// Who acknowledged the alert, when, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledged {
    /// The operator, as the API request named them (trimmed).
    pub by: String,
    /// When (Unix ms, gateway clock).
    pub at_ms: i64,
    /// Free text from the operator; may be empty.
    pub note: String,
}

/// Who closed the alert, when, with which disposition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closed {
    /// The operator, or `gateway` for an automatic close.
    pub by: String,
    /// When (Unix ms, gateway clock).
    pub at_ms: i64,
    /// What the alert turned out to be.
    pub disposition: Disposition,
    /// Free text from the operator; may be empty.
    pub note: String,
}

/// How an alert ended. Operators pick one of the first four; `auto_cleared` is the
/// gateway closing an alert whose code is in `alerts.auto_close` when it clears.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    /// A real incident (`real`).
    Real,
    /// Nothing was wrong, e.g. a faulty or oversensitive detector (`false_alarm`).
    FalseAlarm,
    /// A planned test of the device (`test`).
    Test,
    /// Caused by maintenance work (`maintenance`).
    Maintenance,
    /// Closed by the gateway when the condition cleared (`auto_cleared`); never chosen by
    /// an operator.
    AutoCleared,
}

impl Disposition {
    /// The snake_case name used in JSON, the audit and `AlertUpdate.disposition`.
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Real => "real",
            Disposition::FalseAlarm => "false_alarm",
            Disposition::Test => "test",
            Disposition::Maintenance => "maintenance",
            Disposition::AutoCleared => "auto_cleared",
        }
    }

    /// The dispositions an operator may choose.
    pub fn from_operator(s: &str) -> Option<Disposition> {
        Some(match s {
            "real" => Disposition::Real,
            "false_alarm" => Disposition::FalseAlarm,
            "test" => Disposition::Test,
            "maintenance" => Disposition::Maintenance,
            _ => return None,
        })
    }
}

/// A linkage action run for an alert and what came of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// The rule's name and what it wrote, e.g. `leak-closes-valve: coil 0 = 1`.
    pub action: String,
    /// The device written to.
    pub target: String,
    /// When it was run (Unix ms, gateway clock).
    pub at_ms: i64,
    /// `ok` or the error.
    pub result: String,
}

/// One line of an alert's audit trail: every change, automatic or by an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When the change happened (Unix ms, gateway clock).
    pub at_ms: i64,
    /// The operator, or `gateway` for automatic changes.
    pub by: String,
    /// `opened`, `acknowledged`, `escalated`, `cleared`, `reactivated`, `repeated`
    /// (folded clears and reactivations), `chattering`, `chattering_ended`, `shelved`,
    /// `unshelved`, `closed`, `action`, `city` (the city's handling state; the note says
    /// which).
    pub action: String,
    /// The operator's note, or what changed (e.g. the code that reactivated it).
    pub note: String,
    /// How many changes this entry stands for: more than 1 for folded repeats
    /// (`repeated`), which happened from `at_ms` to `last_ms`. Omitted when 1.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub count: u64,
    /// When the last folded repeat happened; omitted for a single change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ms: Option<i64>,
    /// The SHA-256 (hex) of the audit entry before this one in the store, over every
    /// alert (`alerts/chain.rs`); set when the entry is stored, `None` for entries
    /// written before the chain (and on an entry not stored yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
}

impl AuditEntry {
    /// One change: at `at_ms`, by `by`.
    pub fn new(at_ms: i64, by: &str, action: &str, note: &str) -> AuditEntry {
        AuditEntry {
            at_ms,
            by: by.to_owned(),
            action: action.to_owned(),
            note: note.to_owned(),
            count: 1,
            last_ms: None,
            prev: None,
        }
    }

    /// When the latest change this entry stands for happened.
    pub fn last_at_ms(&self) -> i64 {
        self.last_ms.unwrap_or(self.at_ms).max(self.at_ms)
    }
}

/// Status of one device as the gateway sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceView {
    /// The device id, as in its events and the config.
    pub id: String,
    /// Its kind (`smoke`, `water_leak`, …); `None` when neither the config nor its events
    /// said.
    pub kind: Option<String>,
    /// The configured name; empty for a device not in the config.
    pub name: String,
    /// Where it is: from the config, or from its events for an unregistered device.
    pub location: Location,
    /// Online, offline or never heard from.
    pub status: DeviceStatus,
    /// Gateway receive time (Unix ms) of its latest event; `None` if never heard from.
    pub last_seen_ms: Option<i64>,
    /// In the config's `[[devices]]`.
    pub registered: bool,
}

/// `online` (reported recently), `offline` (missed heartbeats or failed polls), or
/// `unknown` (configured, never heard from).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    /// Heard from, and not reported offline since.
    Online,
    /// Missed its heartbeats, failed its polls, or was reported by `DEV.OFFLINE`.
    Offline,
    /// Configured but never heard from.
    Unknown,
}
