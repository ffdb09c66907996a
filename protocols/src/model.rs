//! The domain event model and its checked conversions to and from the wire types.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::pb;

/// 1 紧急 critical … 4 提示 info.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// 1 紧急: life safety, act now (fire, smoke, high gas, duress, forced door).
    Critical = 1,
    /// 2 重要: act soon (tamper, low gas, leak, intrusion).
    Major = 2,
    /// 3 一般: a fault, or maintenance needed.
    Minor = 3,
    /// 4 提示: informational.
    Info = 4,
}

impl Severity {
    /// Which forwarding lane events of this severity travel in.
    pub fn lane(self) -> Lane {
        match self {
            Severity::Critical | Severity::Major => Lane::Alarms,
            Severity::Minor | Severity::Info => Lane::Events,
        }
    }

    /// The severity of level 1–4 (as written in config and the native protocol); `None`
    /// for any other number.
    pub fn from_level(level: u8) -> Option<Self> {
        Some(match level {
            1 => Severity::Critical,
            2 => Severity::Major,
            3 => Severity::Minor,
            4 => Severity::Info,
            _ => return None,
        })
    }

    /// The level, 1 (critical) to 4 (info).
    pub fn level(self) -> u8 {
        self as u8
    }
}

/// The two forwarding lanes: alarms always drain before the event backlog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    /// Severity 1–2 and every alert update; published on `city/v1/{estate}/alarms`.
    Alarms,
    /// Severity 3–4; published on `city/v1/{estate}/events`, after the alarms lane is drained.
    Events,
}

impl Lane {
    /// Both lanes, alarms first (the order they drain in).
    pub const ALL: [Lane; 2] = [Lane::Alarms, Lane::Events];

    /// `"alarms"` or `"events"`: the topic suffix, metric label and JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Alarms => "alarms",
            Lane::Events => "events",
        }
    }

    /// One byte used as a key prefix in the store.
    pub fn tag(self) -> u8 {
        match self {
            Lane::Alarms => b'a',
            Lane::Events => b'e',
        }
    }
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an event starts or ends a condition (`"active"` / `"cleared"` in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventState {
    /// A condition began, or a momentary event happened (the default).
    #[default]
    Active,
    /// A condition ended (only for codes that are `stateful` in the taxonomy).
    Cleared,
}

impl FromStr for EventState {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        match s {
            "active" => Ok(EventState::Active),
            "cleared" => Ok(EventState::Cleared),
            _ => Err(UnknownName(s.to_owned())),
        }
    }
}

macro_rules! device_kinds {
    ($($(#[$doc:meta])* $variant:ident = $name:literal),+ $(,)?) => {
        /// The class of a device. Names are the snake_case strings used in config and topics.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum DeviceKind { $($(#[$doc])* $variant),+ }

        impl DeviceKind {
            /// Every kind, in the order of the `.proto`'s `DeviceKind`.
            pub const ALL: &'static [DeviceKind] = &[$(DeviceKind::$variant),+];
            /// The snake_case name used in config, topics and JSON (`"water_leak"`).
            pub fn as_str(self) -> &'static str {
                match self { $(DeviceKind::$variant => $name),+ }
            }
        }

        impl FromStr for DeviceKind {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s {
                    $($name => Ok(DeviceKind::$variant),)+
                    _ => Err(UnknownName(s.to_owned())),
                }
            }
        }
    };
}

device_kinds! {
    /// A door controller or card reader.
    AccessControl = "access_control",
    /// A smoke detector (life-safety).
    Smoke = "smoke",
    /// A water-leak sensor or sensing rope.
    WaterLeak = "water_leak",
    /// A combustible-gas detector, readings in %LEL (life-safety).
    Gas = "gas",
    /// A camera with its own analytics (intrusion, line crossing, fire lane).
    Camera = "camera",
    /// A fire alarm control panel (life-safety).
    FirePanel = "fire_panel",
    /// A manual call point, break glass (life-safety).
    ManualCallPoint = "manual_call_point",
    /// A lift controller (life-safety: trapped passengers).
    Elevator = "elevator",
    /// An emergency (panic) button (life-safety).
    EmergencyButton = "emergency_button",
    /// A motorised valve the gateway may close (linkage).
    Valve = "valve",
    /// A sounder or strobe the gateway may switch (linkage, broadcasts).
    Sounder = "sounder",
    /// The gateway itself, the device of its own `GW.*` events.
    Gateway = "gateway",
}

impl DeviceKind {
    /// Devices whose silence may hide a life-threatening condition.
    pub fn is_life_safety(self) -> bool {
        matches!(
            self,
            DeviceKind::Smoke
                | DeviceKind::Gas
                | DeviceKind::FirePanel
                | DeviceKind::ManualCallPoint
                | DeviceKind::EmergencyButton
                | DeviceKind::Elevator
        )
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of the accepted values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown name {0:?}")]
pub struct UnknownName(pub String);

/// Where a device is installed, as configured. Every part is free text; empty means
/// unknown.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Location {
    /// Building number or name.
    pub building: String,
    /// Unit (entrance or stairwell) within the building.
    pub unit: String,
    /// Floor, as written on site (`"11"`, `"B1"`).
    pub floor: String,
    /// Room or flat number (`"1102"`).
    pub room: String,
    /// Free-form zone name (a car park, a fire lane, a camera's detection zone).
    pub zone: String,
}

impl Location {
    /// True when every part is unknown (such a location is not sent on the wire).
    pub fn is_empty(&self) -> bool {
        self == &Location::default()
    }
}

impl fmt::Display for Location {
    /// "building 3 / unit 2 / floor 11 / room 1102", leaving out unknown parts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = [
            ("building", &self.building),
            ("unit", &self.unit),
            ("floor", &self.floor),
            ("room", &self.room),
            ("zone", &self.zone),
        ];
        let mut first = true;
        for (label, v) in parts.iter().filter(|(_, v)| !v.is_empty()) {
            if !first {
                f.write_str(" / ")?;
            }
            first = false;
            write!(f, "{label} {v}")?;
        }
        Ok(())
    }
}

/// A measured value that came with an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// The number, in `unit`.
    pub value: f64,
    /// Unit as text: `"%LEL"`, `"m"`, `"%"`, `"ohm"`, ….
    pub unit: String,
}

/// The path an event took into the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Source {
    /// "mqtt", "modbus" or "gateway".
    pub protocol: String,
    /// The MQTT topic, or "unit/register" for Modbus.
    pub reference: String,
}

/// One normalized event. `seq` is 0 until the store commits it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Store sequence number: one counter across both lanes, contiguous, assigned at
    /// commit; 0 before. With `gateway_id` and the store epoch, the receiver's dedup key.
    pub seq: u64,
    /// Globally unique id (a ULID, 26 characters), kept when the event is resent.
    pub event_id: String,
    /// The configured id of the gateway that took the event in.
    pub gateway_id: String,
    /// The estate that gateway serves.
    pub estate_id: String,
    /// The device's configured id, or the id it announced itself with when unregistered.
    pub device_id: String,
    /// From the device's config; for an unregistered device, what its source says (the
    /// topic, or the code's usual kind). `None` when nothing says.
    pub device_kind: Option<DeviceKind>,
    /// Taxonomy code (`protocols/src/taxonomy.rs`), e.g. `"SMOKE.ALARM"`; never empty.
    pub code: String,
    /// How urgent the event is; picks the lane (see [`Event::lane`]).
    pub severity: Severity,
    /// Whether a condition began or ended.
    pub state: EventState,
    /// Where the device is; empty parts are unknown.
    pub location: Location,
    /// Time the device reported, Unix epoch ms; `None` when it sent none.
    pub device_time_ms: Option<i64>,
    /// Time the gateway received the input, Unix epoch ms.
    pub gateway_time_ms: i64,
    /// A reading with its unit, when the device sent one.
    pub value: Option<Reading>,
    /// Protocol and topic (or Modbus register) the event came in on.
    pub source: Source,
    /// The original payload, cut to `ingest.raw_limit` bytes.
    pub raw: Bytes,
    /// True when `raw` was cut short.
    pub raw_truncated: bool,
    /// False when the device is not in the gateway's configuration (still accepted).
    pub registered: bool,
    /// The device's own message counter, when it sends one; `None` otherwise.
    pub device_seq: Option<u64>,
    /// Set on `ALERT.UPDATE` events: the change of a local alert they carry upstream.
    pub alert: Option<Box<AlertUpdate>>,
}

impl Event {
    /// The forwarding lane: by severity, except that alert updates always take the
    /// alarms lane (an operator's acknowledgement of a minor alert still matters now).
    pub fn lane(&self) -> Lane {
        if self.alert.is_some() {
            Lane::Alarms
        } else {
            self.severity.lane()
        }
    }
}

/// What happened to a local alert (see `AlertUpdate` in the `.proto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertChange {
    /// The alert was raised.
    Opened,
    /// An operator acknowledged it.
    Acknowledged,
    /// Nobody acknowledged it in time: its severity went up one level.
    Escalated,
    /// Its condition ended; it stays open until closed.
    Cleared,
    /// Closed, by an operator or automatically (`disposition` says why).
    Closed,
    /// A linkage action ran (`action`, `action_target`, `action_result`).
    Action,
}

/// Where a local alert is in its lifecycle: `active → acknowledged → closed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    /// Open, not yet acknowledged.
    Active,
    /// Open and acknowledged.
    Acknowledged,
    /// Closed.
    Closed,
}

impl AlertStatus {
    /// `"active"`, `"acknowledged"` or `"closed"`, as in the API's JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Active => "active",
            AlertStatus::Acknowledged => "acknowledged",
            AlertStatus::Closed => "closed",
        }
    }
}

/// One change of a local alert, as forwarded upstream (field docs in the `.proto`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertUpdate {
    /// The alert's id (a ULID), the same in all its updates.
    pub alert_id: String,
    /// What this update changed.
    pub change: AlertChange,
    /// The alert's status after the change.
    pub status: AlertStatus,
    /// The alert's event code, e.g. `"FIRE.CONFIRMED"`.
    pub code: String,
    /// Its current severity, after overrides and escalation.
    pub severity: Severity,
    /// The device it is about (the gateway's own id for derived alerts).
    pub device_id: String,
    /// Its condition has ended.
    pub cleared: bool,
    /// It was escalated for want of an acknowledgement.
    pub escalated: bool,
    /// Events folded into it so far.
    pub count: u64,
    /// Gateway time of its first event, Unix epoch ms.
    pub first_seen_ms: i64,
    /// Gateway time of its latest event, Unix epoch ms.
    pub last_seen_ms: i64,
    /// Who made the change: an operator's name, or `"gateway"`.
    pub by: String,
    /// For `Closed`: `"real"`, `"false_alarm"`, `"test"`, `"maintenance"` or
    /// `"auto_cleared"`; empty otherwise.
    pub disposition: String,
    /// The operator's note, or the detail of an automatic change.
    pub note: String,
    /// For `Action`: the linkage action (`"close_valve"`, `"write_coil"`, …).
    pub action: String,
    /// For `Action`: the device it was aimed at.
    pub action_target: String,
    /// For `Action`: `"ok"` or the error.
    pub action_result: String,
    /// Seq of the event that opened the alert.
    pub opened_by_seq: u64,
}

impl From<&AlertUpdate> for pb::AlertUpdate {
    fn from(a: &AlertUpdate) -> Self {
        let change = match a.change {
            AlertChange::Opened => pb::AlertChange::Opened,
            AlertChange::Acknowledged => pb::AlertChange::Acknowledged,
            AlertChange::Escalated => pb::AlertChange::Escalated,
            AlertChange::Cleared => pb::AlertChange::Cleared,
            AlertChange::Closed => pb::AlertChange::Closed,
            AlertChange::Action => pb::AlertChange::Action,
        };
        let status = match a.status {
            AlertStatus::Active => pb::AlertStatus::Active,
            AlertStatus::Acknowledged => pb::AlertStatus::Acknowledged,
            AlertStatus::Closed => pb::AlertStatus::Closed,
        };
        pb::AlertUpdate {
            alert_id: a.alert_id.clone(),
            change: change.into(),
            status: status.into(),
            code: a.code.clone(),
            severity: pb::Severity::from(a.severity).into(),
            device_id: a.device_id.clone(),
            cleared: a.cleared,
            escalated: a.escalated,
            count: a.count,
            first_seen_ms: a.first_seen_ms,
            last_seen_ms: a.last_seen_ms,
            by: a.by.clone(),
            disposition: a.disposition.clone(),
            note: a.note.clone(),
            action: a.action.clone(),
            action_target: a.action_target.clone(),
            action_result: a.action_result.clone(),
            opened_by_seq: a.opened_by_seq,
        }
    }
}

impl TryFrom<pb::AlertUpdate> for AlertUpdate {
    type Error = ConversionError;

    fn try_from(a: pb::AlertUpdate) -> Result<Self, ConversionError> {
        let change = match pb::AlertChange::try_from(a.change) {
            Ok(pb::AlertChange::Unspecified) => {
                return Err(ConversionError::Unspecified("alert.change"))
            }
            Ok(pb::AlertChange::Opened) => AlertChange::Opened,
            Ok(pb::AlertChange::Acknowledged) => AlertChange::Acknowledged,
            Ok(pb::AlertChange::Escalated) => AlertChange::Escalated,
            Ok(pb::AlertChange::Cleared) => AlertChange::Cleared,
            Ok(pb::AlertChange::Closed) => AlertChange::Closed,
            Ok(pb::AlertChange::Action) => AlertChange::Action,
            Err(_) => {
                return Err(ConversionError::UnknownEnum {
                    field: "alert.change",
                    value: a.change,
                })
            }
        };
        let status = match pb::AlertStatus::try_from(a.status) {
            Ok(pb::AlertStatus::Unspecified) => {
                return Err(ConversionError::Unspecified("alert.status"))
            }
            Ok(pb::AlertStatus::Active) => AlertStatus::Active,
            Ok(pb::AlertStatus::Acknowledged) => AlertStatus::Acknowledged,
            Ok(pb::AlertStatus::Closed) => AlertStatus::Closed,
            Err(_) => {
                return Err(ConversionError::UnknownEnum {
                    field: "alert.status",
                    value: a.status,
                })
            }
        };
        let severity = severity_from_pb(a.severity, "alert.severity")?;
        Ok(AlertUpdate {
            alert_id: a.alert_id,
            change,
            status,
            code: a.code,
            severity,
            device_id: a.device_id,
            cleared: a.cleared,
            escalated: a.escalated,
            count: a.count,
            first_seen_ms: a.first_seen_ms,
            last_seen_ms: a.last_seen_ms,
            by: a.by,
            disposition: a.disposition,
            note: a.note,
            action: a.action,
            action_target: a.action_target,
            action_result: a.action_result,
            opened_by_seq: a.opened_by_seq,
        })
    }
}

fn severity_from_pb(value: i32, field: &'static str) -> Result<Severity, ConversionError> {
    match pb::Severity::try_from(value) {
        Ok(pb::Severity::Unspecified) => Err(ConversionError::Unspecified(field)),
        Ok(pb::Severity::Critical) => Ok(Severity::Critical),
        Ok(pb::Severity::Major) => Ok(Severity::Major),
        Ok(pb::Severity::Minor) => Ok(Severity::Minor),
        Ok(pb::Severity::Info) => Ok(Severity::Info),
        Err(_) => Err(ConversionError::UnknownEnum { field, value }),
    }
}

/// Why a wire event is not a valid domain event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConversionError {
    /// A required enum field (named, e.g. `"severity"`, `"alert.change"`) is 0, UNSPECIFIED.
    #[error("field `{0}` is unspecified")]
    Unspecified(&'static str),
    /// An enum field holds a number this build does not know (a newer sender).
    #[error("field `{field}` has unknown value {value}")]
    UnknownEnum {
        /// The field, as in `Unspecified`.
        field: &'static str,
        /// The number it held.
        value: i32,
    },
    /// The event has no code.
    #[error("field `code` is empty")]
    EmptyCode,
}

impl From<Severity> for pb::Severity {
    fn from(s: Severity) -> Self {
        match s {
            Severity::Critical => pb::Severity::Critical,
            Severity::Major => pb::Severity::Major,
            Severity::Minor => pb::Severity::Minor,
            Severity::Info => pb::Severity::Info,
        }
    }
}

impl From<Lane> for pb::Lane {
    fn from(l: Lane) -> Self {
        match l {
            Lane::Alarms => pb::Lane::Alarms,
            Lane::Events => pb::Lane::Events,
        }
    }
}

impl From<EventState> for pb::EventState {
    fn from(s: EventState) -> Self {
        match s {
            EventState::Active => pb::EventState::Active,
            EventState::Cleared => pb::EventState::Cleared,
        }
    }
}

impl From<DeviceKind> for pb::DeviceKind {
    fn from(k: DeviceKind) -> Self {
        match k {
            DeviceKind::AccessControl => pb::DeviceKind::AccessControl,
            DeviceKind::Smoke => pb::DeviceKind::Smoke,
            DeviceKind::WaterLeak => pb::DeviceKind::WaterLeak,
            DeviceKind::Gas => pb::DeviceKind::Gas,
            DeviceKind::Camera => pb::DeviceKind::Camera,
            DeviceKind::FirePanel => pb::DeviceKind::FirePanel,
            DeviceKind::ManualCallPoint => pb::DeviceKind::ManualCallPoint,
            DeviceKind::Elevator => pb::DeviceKind::Elevator,
            DeviceKind::EmergencyButton => pb::DeviceKind::EmergencyButton,
            DeviceKind::Valve => pb::DeviceKind::Valve,
            DeviceKind::Sounder => pb::DeviceKind::Sounder,
            DeviceKind::Gateway => pb::DeviceKind::Gateway,
        }
    }
}

fn device_kind_from_pb(k: pb::DeviceKind) -> Option<DeviceKind> {
    Some(match k {
        pb::DeviceKind::Unspecified => return None,
        pb::DeviceKind::AccessControl => DeviceKind::AccessControl,
        pb::DeviceKind::Smoke => DeviceKind::Smoke,
        pb::DeviceKind::WaterLeak => DeviceKind::WaterLeak,
        pb::DeviceKind::Gas => DeviceKind::Gas,
        pb::DeviceKind::Camera => DeviceKind::Camera,
        pb::DeviceKind::FirePanel => DeviceKind::FirePanel,
        pb::DeviceKind::ManualCallPoint => DeviceKind::ManualCallPoint,
        pb::DeviceKind::Elevator => DeviceKind::Elevator,
        pb::DeviceKind::EmergencyButton => DeviceKind::EmergencyButton,
        pb::DeviceKind::Valve => DeviceKind::Valve,
        pb::DeviceKind::Sounder => DeviceKind::Sounder,
        pb::DeviceKind::Gateway => DeviceKind::Gateway,
    })
}

impl From<&Event> for pb::Event {
    fn from(e: &Event) -> Self {
        pb::Event {
            seq: e.seq,
            event_id: e.event_id.clone(),
            gateway_id: e.gateway_id.clone(),
            estate_id: e.estate_id.clone(),
            device_id: e.device_id.clone(),
            device_kind: e
                .device_kind
                .map_or(pb::DeviceKind::Unspecified, Into::into)
                .into(),
            code: e.code.clone(),
            severity: pb::Severity::from(e.severity).into(),
            state: pb::EventState::from(e.state).into(),
            location: (!e.location.is_empty()).then(|| pb::Location {
                building: e.location.building.clone(),
                unit: e.location.unit.clone(),
                floor: e.location.floor.clone(),
                room: e.location.room.clone(),
                zone: e.location.zone.clone(),
            }),
            device_time_ms: e.device_time_ms,
            gateway_time_ms: e.gateway_time_ms,
            value: e.value.as_ref().map(|r| pb::Reading {
                value: r.value,
                unit: r.unit.clone(),
            }),
            source: Some(pb::Source {
                protocol: e.source.protocol.clone(),
                reference: e.source.reference.clone(),
            }),
            raw: e.raw.clone(),
            raw_truncated: e.raw_truncated,
            registered: e.registered,
            device_seq: e.device_seq,
            alert: e.alert.as_deref().map(pb::AlertUpdate::from),
            // Only the forwarder shortens text, on the copy it sends.
            text_truncated: false,
        }
    }
}

impl TryFrom<pb::Event> for Event {
    type Error = ConversionError;

    fn try_from(e: pb::Event) -> Result<Self, ConversionError> {
        let severity = severity_from_pb(e.severity, "severity")?;
        let state = match pb::EventState::try_from(e.state) {
            Ok(pb::EventState::Unspecified) => return Err(ConversionError::Unspecified("state")),
            Ok(pb::EventState::Active) => EventState::Active,
            Ok(pb::EventState::Cleared) => EventState::Cleared,
            Err(_) => {
                return Err(ConversionError::UnknownEnum {
                    field: "state",
                    value: e.state,
                })
            }
        };
        // An unknown device kind from a newer gateway is read as "unknown", not an error:
        // the enum only grows.
        let device_kind = pb::DeviceKind::try_from(e.device_kind)
            .ok()
            .and_then(device_kind_from_pb);
        if e.code.is_empty() {
            return Err(ConversionError::EmptyCode);
        }
        let location = e.location.map_or_else(Location::default, |l| Location {
            building: l.building,
            unit: l.unit,
            floor: l.floor,
            room: l.room,
            zone: l.zone,
        });
        let source = e.source.map_or_else(Source::default, |s| Source {
            protocol: s.protocol,
            reference: s.reference,
        });
        Ok(Event {
            seq: e.seq,
            event_id: e.event_id,
            gateway_id: e.gateway_id,
            estate_id: e.estate_id,
            device_id: e.device_id,
            device_kind,
            code: e.code,
            severity,
            state,
            location,
            device_time_ms: e.device_time_ms,
            gateway_time_ms: e.gateway_time_ms,
            value: e.value.map(|r| Reading {
                value: r.value,
                unit: r.unit,
            }),
            source,
            raw: e.raw,
            raw_truncated: e.raw_truncated,
            registered: e.registered,
            device_seq: e.device_seq,
            alert: e
                .alert
                .map(AlertUpdate::try_from)
                .transpose()?
                .map(Box::new),
        })
    }
}

/// Wall-clock now, Unix epoch milliseconds (the unit of every timestamp in the model).
pub fn now_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn sample() -> Event {
        Event {
            seq: 42,
            event_id: "01JDXW0000000000000000000A".into(),
            gateway_id: "gw-1".into(),
            estate_id: "31011500000000000001".into(),
            device_id: "smoke-3-2-11".into(),
            device_kind: Some(DeviceKind::Smoke),
            code: "SMOKE.ALARM".into(),
            severity: Severity::Critical,
            state: EventState::Active,
            location: Location {
                building: "3".into(),
                unit: "2".into(),
                floor: "11".into(),
                room: "1102".into(),
                zone: String::new(),
            },
            device_time_ms: Some(1_700_000_000_000),
            gateway_time_ms: 1_700_000_000_050,
            value: Some(Reading {
                value: 12.5,
                unit: "m".into(),
            }),
            source: Source {
                protocol: "mqtt".into(),
                reference: "estate/x/smoke/smoke-3-2-11/event".into(),
            },
            raw: Bytes::from_static(br#"{"code":"SMOKE.ALARM"}"#),
            raw_truncated: false,
            registered: true,
            device_seq: Some(7),
            alert: None,
        }
    }

    #[test]
    fn alert_updates_round_trip_and_take_the_alarms_lane() {
        let mut e = sample();
        e.code = "ALERT.UPDATE".into();
        e.severity = Severity::Minor;
        e.alert = Some(Box::new(AlertUpdate {
            alert_id: "01JDXW0000000000000000000B".into(),
            change: AlertChange::Closed,
            status: AlertStatus::Closed,
            code: "ACS.HELD_OPEN".into(),
            severity: Severity::Minor,
            device_id: "door-1".into(),
            cleared: true,
            escalated: false,
            count: 3,
            first_seen_ms: 1,
            last_seen_ms: 2,
            by: "wang".into(),
            disposition: "false_alarm".into(),
            note: "wedged".into(),
            action: String::new(),
            action_target: String::new(),
            action_result: String::new(),
            opened_by_seq: 9,
        }));
        assert_eq!(e.lane(), Lane::Alarms, "alert updates skip the minor lane");
        let bytes = pb::Event::from(&e).encode_to_vec();
        let back = Event::try_from(pb::Event::decode(bytes.as_slice()).expect("decodes"))
            .expect("converts");
        assert_eq!(back, e);
        let mut p = pb::Event::from(&e);
        if let Some(a) = p.alert.as_mut() {
            a.change = 0;
        }
        assert_eq!(
            Event::try_from(p),
            Err(ConversionError::Unspecified("alert.change"))
        );
    }

    #[test]
    fn round_trips_through_the_wire_encoding() {
        let e = sample();
        let bytes = pb::Event::from(&e).encode_to_vec();
        let back = Event::try_from(pb::Event::decode(bytes.as_slice()).expect("decodes"))
            .expect("converts");
        assert_eq!(back, e);
    }

    #[test]
    fn rejects_unspecified_and_unknown_severity() {
        let mut p = pb::Event::from(&sample());
        p.severity = 0;
        assert_eq!(
            Event::try_from(p.clone()),
            Err(ConversionError::Unspecified("severity"))
        );
        p.severity = 99;
        assert_eq!(
            Event::try_from(p),
            Err(ConversionError::UnknownEnum {
                field: "severity",
                value: 99
            })
        );
    }

    #[test]
    fn severity_picks_the_lane() {
        assert_eq!(Severity::Critical.lane(), Lane::Alarms);
        assert_eq!(Severity::Major.lane(), Lane::Alarms);
        assert_eq!(Severity::Minor.lane(), Lane::Events);
        assert_eq!(Severity::Info.lane(), Lane::Events);
    }

    #[test]
    fn location_reads_like_an_address() {
        assert_eq!(
            sample().location.to_string(),
            "building 3 / unit 2 / floor 11 / room 1102"
        );
    }
}
