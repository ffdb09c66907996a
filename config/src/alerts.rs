//! `[alerts]`: the rules that turn events into local alerts (incidents people on duty
//! must see, acknowledge and close), and the linkage actions they trigger.
//!
//! ```toml
//! [alerts]
//! min_severity = 3                      # events of severity 1–3 open alerts
//! auto_close = ["DEV.OFFLINE", "ACS.HELD_OPEN"]
//! held_open_after = "60s"               # ACS.OPEN longer than this raises ACS.HELD_OPEN
//!
//! [alerts.severity]                     # per code
//! "VID.LOITER" = 4
//!
//! [alerts.device_severity."cam-gate-north"]   # per device and code
//! "VID.INTRUSION" = 1
//!
//! [alerts.debounce]                     # a condition must last this long
//! "LEAK.ALARM" = "2s"
//!
//! [alerts.offline]
//! missed_heartbeats = 3
//! classes = { smoke = 2 }
//!
//! [alerts.escalation]
//! after = "5m"
//!
//! [alerts.correlation.confirmed-fire]
//! codes = ["SMOKE.ALARM", "FIRE.ALARM"]
//! min_devices = 2
//! within = "2m"
//! same = "building"
//! raise = "FIRE.CONFIRMED"
//!
//! [alerts.linkage.leak-closes-valve]
//! on = ["LEAK.ALARM"]
//! device = "valve-main-water"
//! coil = 0
//! value = 1
//!
//! [alerts.chattering]                 # 5 activations within 60 s: one chattering alert
//! activations = 5
//! window = "60s"
//! stable_for = "120s"                  # no activation this long: chattering ends
//!
//! [alerts.shelving]                    # operators shelve nuisance alerts, bounded
//! max = "8h"
//! life_safety_max = "15m"
//!
//! [alerts.flood]                      # EEMUA 191: more than 10 new alerts in 10 min
//! new_alerts = 10
//! window = "10m"
//!
//! [alerts.silence.pump-room-works]
//! devices = ["leak-b2-pump"]
//! from = "2026-12-01T08:00:00Z"
//! until = "2026-12-01T12:00:00Z"
//! ```
//!
//! Named rules are tables (`[alerts.correlation.NAME]`), not arrays, so every problem is
//! reported at its own key.

use std::collections::BTreeMap;
use std::time::Duration;

use estate_protocols::model::{DeviceKind, Severity};
use estate_protocols::{rfc3339, taxonomy};
use serde::{Deserialize, Serialize};

/// `[alerts]`: local alert rules. Every key is optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Events whose severity (after `severity` / `device_severity` overrides) is at this
    /// level or more urgent open an alert: 1 only critical … 4 everything. Heartbeats,
    /// readings and `DEV.ONLINE` never open alerts. 1–4. Default: `3`.
    pub min_severity: u8,
    /// Forward every alert change to the city platform as an `ALERT.UPDATE` event (alarms
    /// lane, `Event.alert` in the `.proto`). Set `false` when the city platform must
    /// receive only the events themselves. Default: `true`.
    pub forward: bool,
    /// Closed alerts kept for the history (`GET /api/alerts?status=closed`); the oldest
    /// are pruned beyond it. Open alerts are never pruned. At least 1. Default: `10000`.
    pub history_max: usize,
    /// A closed alert whose audit trail has an entry younger than this is never pruned,
    /// whatever `history_max` says (which is then a soft bound; `/healthz` says when the
    /// history is over it). At least 1 h. Default: `"90d"`.
    #[serde(with = "crate::units::duration")]
    pub audit_retention: Duration,
    /// Codes whose alerts close themselves (disposition `auto_cleared`) when their
    /// condition clears. Every other alert stays open, marked cleared, until an operator
    /// closes it. Life-safety codes (fire, smoke, gas, SOS, duress, forced door, trapped
    /// lift) may not be listed: someone must see them. Default:
    /// `["DEV.OFFLINE", "ACS.HELD_OPEN", "GW.UPLINK_DOWN", "GW.DISK_LOW", "VID.LOSS"]`.
    pub auto_close: Vec<String>,
    /// Severity per event code, overriding the taxonomy's default, e.g.
    /// `{ "VID.LOITER" = 4 }`. Values 1–4. Default: none.
    pub severity: BTreeMap<String, u8>,
    /// Severity per device and code, overriding `severity`, e.g.
    /// `[alerts.device_severity."cam-gate-north"] "VID.INTRUSION" = 1`. The device must
    /// be configured. Default: none.
    pub device_severity: BTreeMap<String, BTreeMap<String, u8>>,
    /// Debounce per code: the condition must stay active this long before it becomes an
    /// alert; a `cleared` event within that time cancels it (a flapping sensor raises
    /// nothing). For momentary codes it only delays the alert. At most 1 h.
    /// Default: none.
    #[serde(with = "duration_map")]
    pub debounce: BTreeMap<String, Duration>,
    /// When a door reports `ACS.OPEN` and no `ACS.OPEN` `cleared` follows within this
    /// time, the gateway raises `ACS.HELD_OPEN` (cleared again when the door closes).
    /// At least 1 s. Default: unset (no hold-open timer).
    #[serde(
        with = "crate::units::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub held_open_after: Option<Duration>,
    /// `[alerts.offline]`: offline detection from missed heartbeats.
    pub offline: OfflineRules,
    /// `[alerts.escalation]`: what happens to an alert nobody acknowledges.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub escalation: Option<Escalation>,
    /// `[alerts.correlation.NAME]`: alerts derived from several devices agreeing.
    pub correlation: BTreeMap<String, Correlation>,
    /// `[alerts.linkage.NAME]`: Modbus writes run when an alert opens.
    pub linkage: BTreeMap<String, Linkage>,
    /// `[alerts.silence.NAME]`: maintenance windows in which matching events open no
    /// alert (they are still stored and forwarded).
    pub silence: BTreeMap<String, Silence>,
    /// `[alerts.chattering]`: an alert that activates again and again (ISA-18.2's
    /// chattering alarm) stays one alert with a count, quietly.
    pub chattering: Chattering,
    /// `[alerts.shelving]`: how long an operator may shelve an alert.
    pub shelving: Shelving,
    /// `[alerts.flood]`: when new alerts come faster than a person can handle.
    pub flood: Flood,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            min_severity: 3,
            forward: true,
            history_max: 10_000,
            audit_retention: Duration::from_secs(90 * 86_400),
            auto_close: [
                "DEV.OFFLINE",
                "ACS.HELD_OPEN",
                "GW.UPLINK_DOWN",
                "GW.DISK_LOW",
                "VID.LOSS",
            ]
            .map(String::from)
            .to_vec(),
            severity: BTreeMap::new(),
            device_severity: BTreeMap::new(),
            debounce: BTreeMap::new(),
            held_open_after: None,
            offline: OfflineRules::default(),
            escalation: None,
            correlation: BTreeMap::new(),
            linkage: BTreeMap::new(),
            silence: BTreeMap::new(),
            chattering: Chattering::default(),
            shelving: Shelving::default(),
            flood: Flood::default(),
        }
    }
}

/// `[alerts.flood]`: more than `new_alerts` alerts opened within `window` is an alarm
/// flood (EEMUA 191 rates more than 10 new alarms in 10 minutes per operator as one):
/// `/api/status` and `/healthz` say so, and the console groups the alerts by building and
/// kind, life-safety first, until the rate falls back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Flood {
    /// New alerts within `window` beyond which it is a flood. 1–10000. Default: `10`.
    pub new_alerts: u32,
    /// The window. 1 min to 1 day. Default: `"10m"`.
    #[serde(with = "crate::units::duration")]
    pub window: Duration,
}

impl Default for Flood {
    fn default() -> Self {
        Flood {
            new_alerts: 10,
            window: Duration::from_secs(600),
        }
    }
}

/// `[alerts.chattering]`: `activations` activations of one (device, code) within `window`
/// (its opening and every reactivation after a clear; for `auto_close` codes also the
/// alerts opened anew) put its alert into *chattering*: it stays open as one alert
/// counting `activations`, its clears and reactivations are folded into one audit entry,
/// and they make no sound on the console and go neither upstream nor on
/// `…/alerts/changes` one by one: only entering and leaving chattering do. It leaves
/// chattering once no activation came for `stable_for`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Chattering {
    /// Activations within `window` that make an alert chatter. 2–1000. Default: `5`.
    pub activations: u32,
    /// The window they must fall in. 1 s to 1 h. Default: `"60s"`.
    #[serde(with = "crate::units::duration")]
    pub window: Duration,
    /// How long a chattering alert must stay without an activation to leave chattering
    /// (an `auto_close` code's alert that is cleared then closes). 1 s to 1 day.
    /// Default: `"120s"`.
    #[serde(with = "crate::units::duration")]
    pub stable_for: Duration,
}

impl Default for Chattering {
    fn default() -> Self {
        Chattering {
            activations: 5,
            window: Duration::from_secs(60),
            stable_for: Duration::from_secs(120),
        }
    }
}

/// `[alerts.shelving]`: an operator shelves an alert (`POST /api/alerts/{id}/shelve`)
/// for at most `max`, an alert of a life-safety code (see [`is_life_safety_code`]) for
/// at most `life_safety_max`; it is unshelved automatically when that time is up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Shelving {
    /// Longest shelving. 1 min to 7 days. Default: `"8h"`.
    #[serde(with = "crate::units::duration")]
    pub max: Duration,
    /// Longest shelving of a life-safety alert. 1 min to 1 h, and at most `max`.
    /// Default: `"15m"`.
    #[serde(with = "crate::units::duration")]
    pub life_safety_max: Duration,
}

impl Default for Shelving {
    fn default() -> Self {
        Shelving {
            max: Duration::from_secs(8 * 3600),
            life_safety_max: Duration::from_secs(15 * 60),
        }
    }
}

impl Shelving {
    /// The longest an alert of `code` may be shelved.
    pub fn max_for(&self, code: &str) -> Duration {
        if is_life_safety_code(code) {
            self.life_safety_max.min(self.max)
        } else {
            self.max
        }
    }
}

/// `[alerts.offline]`: a device with `heartbeat_interval` that stays silent for
/// `missed_heartbeats` intervals is reported offline (`DEV.OFFLINE`, cleared by
/// `DEV.ONLINE` when it reports again). Modbus devices have their own `offline_after`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OfflineRules {
    /// Heartbeats a device may miss before it is offline. 1–100. Default: `3`.
    pub missed_heartbeats: u32,
    /// Per device class, overriding `missed_heartbeats`, e.g. `{ smoke = 2, camera = 5 }`.
    /// Default: none.
    pub classes: BTreeMap<DeviceKind, u32>,
}

impl Default for OfflineRules {
    fn default() -> Self {
        OfflineRules {
            missed_heartbeats: 3,
            classes: BTreeMap::new(),
        }
    }
}

impl OfflineRules {
    /// Heartbeats a device of `kind` may miss.
    pub fn missed_for(&self, kind: DeviceKind) -> u32 {
        self.classes
            .get(&kind)
            .copied()
            .unwrap_or(self.missed_heartbeats)
    }
}

/// `[alerts.escalation]`: an alert still `active` (not acknowledged) `after` it opened is
/// escalated once: its severity goes up one level (to at most 1), it is marked
/// `escalated`, and it is published again (console, alert topic, uplink).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Escalation {
    /// Required. How long an alert may stay unacknowledged. At least 1 s.
    #[serde(with = "crate::units::duration")]
    pub after: Duration,
    /// Only alerts of this severity or more urgent escalate. 1–4. Default: `3`.
    #[serde(default = "default_escalate_severity")]
    pub max_severity: u8,
}

fn default_escalate_severity() -> u8 {
    3
}

/// Which part of the location two devices must share to correlate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Anywhere in the estate.
    Estate,
    /// Same building; devices without a building never correlate.
    Building,
    /// Same building and unit.
    Unit,
    /// Same building, unit and floor.
    Floor,
    /// Same `zone` (whatever the building); devices without a zone never correlate.
    Zone,
}

/// `[alerts.correlation.NAME]`: when `min_devices` different devices report one of
/// `codes` (active) within `within`, sharing the `same` part of their location, the
/// gateway raises `raise` (severity per the taxonomy, e.g. `FIRE.CONFIRMED` = 1) once;
/// it is raised again only after that alert is closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Correlation {
    /// Required. Event codes that count, e.g. `["SMOKE.ALARM", "FIRE.ALARM"]`.
    pub codes: Vec<String>,
    /// Distinct devices needed. 2–1000. Default: `2`.
    #[serde(default = "default_min_devices")]
    pub min_devices: usize,
    /// Required. The window the reports must fall in. 1 s to 1 day.
    #[serde(with = "crate::units::duration")]
    pub within: Duration,
    /// `estate`, `building`, `unit`, `floor` or `zone`. Default: `"building"`.
    #[serde(default = "default_scope")]
    pub same: Scope,
    /// Required. The code raised, from the taxonomy (e.g. `"FIRE.CONFIRMED"`).
    pub raise: String,
}

fn default_min_devices() -> usize {
    2
}

fn default_scope() -> Scope {
    Scope::Building
}

/// `[alerts.linkage.NAME]`: when an alert with one of the `on` codes opens, write
/// `value` to `coil` (or `register`) of the Modbus `device` (e.g. close a valve, start a
/// sounder). The action and its result are recorded on the alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Linkage {
    /// Required. Alert codes that trigger the action, e.g. `["LEAK.ALARM"]`.
    pub on: Vec<String>,
    /// Required. A configured Modbus device (`[[devices]]` with `modbus`).
    pub device: String,
    /// Zero-based coil address to write (a valve's "close" coil 00001 is `0`). Exactly one
    /// of `coil` and `register`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coil: Option<u16>,
    /// Zero-based holding register address to write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub register: Option<u16>,
    /// The value: 0 or 1 for a coil, 0–65535 for a register. Default: `1`.
    #[serde(default = "default_link_value")]
    pub value: u16,
    /// Only when the alert's device is in the same building as `device`. Default: `false`.
    #[serde(default)]
    pub same_building: bool,
}

fn default_link_value() -> u16 {
    1
}

/// `[alerts.silence.NAME]`: a maintenance window. Events matching every given filter
/// (`devices`, `codes`, `building`; an empty filter matches all) open no alert between
/// `from` and `until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Silence {
    /// Required. Start, RFC 3339 (`"2026-12-01T08:00:00Z"`).
    pub from: String,
    /// Required. End, RFC 3339; after `from`.
    pub until: String,
    /// Device ids silenced. Default: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// Codes silenced. Default: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<String>,
    /// Building silenced. Default: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub building: Option<String>,
}

impl Silence {
    /// The window as Unix epoch milliseconds, when both ends parse.
    pub fn window_ms(&self) -> Option<(i64, i64)> {
        Some((
            rfc3339::parse_ms(&self.from)?,
            rfc3339::parse_ms(&self.until)?,
        ))
    }
}

/// True for codes whose alerts someone must see and close (never auto-closed).
pub fn is_life_safety_code(code: &str) -> bool {
    let family = code.split('.').next().unwrap_or("");
    matches!(family, "FIRE" | "GAS" | "SOS")
        || matches!(
            code,
            "SMOKE.ALARM" | "ACS.FORCED_OPEN" | "ACS.DURESS" | "ELEV.TRAPPED"
        )
        || taxonomy::lookup(code).is_some_and(|i| i.severity == Severity::Critical)
}

/// Durations as values of a map (`{ "LEAK.ALARM" = "2s" }`).
mod duration_map {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct D(#[serde(with = "crate::units::duration")] Duration);

    pub fn serialize<S: Serializer>(
        m: &BTreeMap<String, Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let m: BTreeMap<&String, D> = m.iter().map(|(k, v)| (k, D(*v))).collect();
        m.serialize(serializer)
    }

    pub fn deserialize<'de, De: Deserializer<'de>>(
        deserializer: De,
    ) -> Result<BTreeMap<String, Duration>, De::Error> {
        let m = BTreeMap::<String, D>::deserialize(deserializer)?;
        Ok(m.into_iter().map(|(k, D(v))| (k, v)).collect())
    }
}
