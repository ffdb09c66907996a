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
    pub code: String,
    /// Human text for the code (the taxonomy's description).
    pub title: String,
    /// 1 critical … 4 info, after overrides and escalation.
    pub severity: u8,
    pub status: AlertStatus,
    /// The condition has ended (a leak dried, a door closed, a device came back).
    pub cleared: bool,
    /// Not acknowledged within `alerts.escalation.after`.
    pub escalated: bool,
    pub device_id: String,
    pub device_kind: Option<String>,
    /// The configured device's name; empty when unknown.
    pub device_name: String,
    pub location: Location,
    /// Events folded into this alert.
    pub count: u64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub cleared_ms: Option<i64>,
    pub acknowledged: Option<Acknowledged>,
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
}

fn stored_default() -> bool {
    true
}

impl Alert {
    pub fn is_open(&self) -> bool {
        self.status != AlertStatus::Closed
    }

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
    pub by: String,
    pub at_ms: i64,
    pub note: String,
}

/// Who closed the alert, when, with which disposition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closed {
    pub by: String,
    pub at_ms: i64,
    pub disposition: Disposition,
    pub note: String,
}

/// How an alert ended. Operators pick one of the first four; `auto_cleared` is the
/// gateway closing an alert whose code is in `alerts.auto_close` when it clears.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    Real,
    FalseAlarm,
    Test,
    Maintenance,
    AutoCleared,
}

impl Disposition {
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
    pub at_ms: i64,
    /// `ok` or the error.
    pub result: String,
}

/// One line of an alert's audit trail: every change, automatic or by an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at_ms: i64,
    /// The operator, or `gateway` for automatic changes.
    pub by: String,
    /// `opened`, `acknowledged`, `escalated`, `cleared`, `reactivated`, `closed`, `action`,
    /// `city` (the city's handling state; the note says which).
    pub action: String,
    pub note: String,
}

/// Status of one device as the gateway sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceView {
    pub id: String,
    pub kind: Option<String>,
    pub name: String,
    pub location: Location,
    pub status: DeviceStatus,
    pub last_seen_ms: Option<i64>,
    /// In the config's `[[devices]]`.
    pub registered: bool,
}

/// `online` (reported recently), `offline` (missed heartbeats or failed polls), or
/// `unknown` (configured, never heard from).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    Online,
    Offline,
    Unknown,
}
