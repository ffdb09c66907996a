//! Camera alarms in the Hikvision ISAPI event-notification JSON, relayed to MQTT (any
//! topic under the source's filters): `{"ipAddress","macAddress","channelID","dateTime",
//! "eventType","eventState","eventDescription",…}`.
//!
//! The camera is `{macAddress}/{channelID}` (or `{ipAddress}/…` without a MAC; without a
//! channel just the address). It repeats an active alarm about once a second and never
//! sends a clear: the first `active` raises the alarm, repeats fold silently, and
//! [`Isapi::tick`] clears it after `clear_after` of silence. An explicit `inactive` clears
//! at once; an `inactive` for nothing open (cameras send `videoloss` `inactive` as a
//! keep-alive) is a `DEV.HEARTBEAT`, and so is every `heartBeat`. Momentary codes
//! (`VID.LINE_CROSS`) are raised once per burst and end silently.
//!
//! The same alarms pushed over HTTP as XML (`ingest/camera_push/`) go through the same
//! mapping ([`EVENT_TYPES`], [`camera_id`]) and state machine ([`Isapi::observe`]).

use std::collections::HashMap;

use estate_config::SourceFormat;
use estate_protocols::model::{DeviceKind, EventState};
use estate_protocols::taxonomy;

use super::decoded::{error, DecodeError, DecodeReason, Observation};
use super::fields::{bad_field, json_object, missing, opt_str, opt_time};

const F: SourceFormat = SourceFormat::CameraIsapiJson;

/// `eventType` → code. Matching ignores case (firmwares differ: `VMD`, `vmd`). The one
/// mapping of both ISAPI encodings: this JSON and the XML that cameras push over HTTP
/// (`isapi_xml.rs`, `ingest/camera_push/`).
pub const EVENT_TYPES: &[(&str, &str)] = &[
    ("linedetection", "VID.LINE_CROSS"),
    ("fielddetection", "VID.INTRUSION"),
    ("regionEntrance", "VID.INTRUSION"),
    ("regionExiting", "VID.INTRUSION"),
    ("loitering", "VID.LOITER"),
    // Parking detection armed on a fire lane (消防通道占用): `parking` in the ISAPI event
    // list, `illegalParking` on the traffic firmwares.
    ("parking", "VID.FIRE_LANE"),
    ("illegalParking", "VID.FIRE_LANE"),
    ("videoloss", "VID.LOSS"),
    ("tamperdetection", "VID.TAMPER"),
    ("shelteralarm", "VID.TAMPER"),
    ("VMD", "VID.MOTION"),
    // The keep-alive some firmwares send every few seconds (`eventType` `heartBeat`).
    ("heartBeat", "DEV.HEARTBEAT"),
];

/// The code of an ISAPI `eventType` (case ignored), or the detail of the error that
/// names the known ones.
pub fn code_of(event_type: &str) -> Result<&'static str, String> {
    EVENT_TYPES
        .iter()
        .find(|(t, _)| t.eq_ignore_ascii_case(event_type))
        .map(|(_, c)| *c)
        .ok_or_else(|| {
            format!(
                "field \"eventType\": {event_type:?} is not a known event type (known: {})",
                EVENT_TYPES
                    .iter()
                    .map(|(t, _)| *t)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// What names a camera in both encodings: `{macAddress}/{channelID}`, or the
/// `ipAddress` when there is no MAC; without a channel just the address. `None` when
/// the alert carries neither address.
pub fn camera_id(mac: Option<&str>, ip: Option<&str>, channel: Option<u64>) -> Option<String> {
    let address = mac
        .filter(|m| !m.is_empty())
        .or(ip.filter(|a| !a.is_empty()))?;
    Some(with_channel(address, channel))
}

/// `{base}/{channel}`, or `base` without a channel.
pub fn with_channel(base: &str, channel: Option<u64>) -> String {
    match channel {
        Some(ch) => format!("{base}/{ch}"),
        None => base.to_owned(),
    }
}

/// One camera alarm as both encodings carry it (`EventNotificationAlert`): the JSON here
/// ([`parse_json`]) and the XML cameras push ([`super::isapi_xml::parse`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// The taxonomy code of its `eventType` ([`code_of`]).
    pub code: &'static str,
    /// `eventState` is `active` (else `inactive`).
    pub active: bool,
    /// `macAddress`, when not empty.
    pub mac: Option<String>,
    /// `ipAddress`, when not empty.
    pub ip: Option<String>,
    /// `channelID` (the XML's `dynChannelID` when it is empty), when given.
    pub channel: Option<u64>,
    /// `dateTime` in epoch milliseconds.
    pub time_ms: Option<i64>,
}

/// Decodes one JSON `EventNotificationAlert`; the error names the field.
pub fn parse_json(payload: &[u8]) -> Result<Alert, DecodeError> {
    let body = json_object(F, payload)?;
    let event_type = opt_str(F, &body, "eventType")?.ok_or_else(|| missing(F, "eventType"))?;
    let code = code_of(event_type).map_err(|e| error(F, DecodeReason::BadField, e))?;
    let active = match body.get("eventState") {
        Some(serde_json::Value::String(s)) if s == "active" => true,
        Some(serde_json::Value::String(s)) if s == "inactive" => false,
        Some(other) => {
            return Err(bad_field(
                F,
                "eventState",
                "\"active\" or \"inactive\"",
                other,
            ))
        }
        None => return Err(missing(F, "eventState")),
    };
    let non_empty = |v: Option<&str>| v.filter(|s| !s.is_empty()).map(str::to_owned);
    let mac = non_empty(opt_str(F, &body, "macAddress")?);
    let ip = non_empty(opt_str(F, &body, "ipAddress")?);
    if mac.is_none() && ip.is_none() {
        return Err(missing(F, "macAddress"));
    }
    let channel = match body.get("channelID") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) if n.is_u64() => n.as_u64(),
        Some(other) => return Err(bad_field(F, "channelID", "a channel number", other)),
    };
    Ok(Alert {
        code,
        active,
        mac,
        ip,
        channel,
        time_ms: opt_time(F, &body, "dateTime")?,
    })
}

#[derive(Debug, Clone, Copy)]
struct Incident {
    last_seen_ms: i64,
    stateful: bool,
}

/// Open camera incidents, keyed by (camera, code).
#[derive(Debug)]
pub struct Isapi {
    clear_after_ms: i64,
    open: HashMap<(String, &'static str), Incident>,
}

impl Isapi {
    /// Incidents clear after `clear_after_ms` of silence.
    pub fn new(clear_after_ms: i64) -> Self {
        Isapi {
            clear_after_ms,
            open: HashMap::new(),
        }
    }

    /// The silence after which an incident clears.
    pub fn clear_after_ms(&self) -> i64 {
        self.clear_after_ms
    }

    /// Decodes one message received at `now_ms`.
    pub fn decode(
        &mut self,
        _topic: &str,
        payload: &[u8],
        now_ms: i64,
    ) -> Result<Vec<Observation>, DecodeError> {
        let a = parse_json(payload)?;
        let camera = camera_id(a.mac.as_deref(), a.ip.as_deref(), a.channel)
            .ok_or_else(|| missing(F, "macAddress"))?;
        Ok(self.observe(camera, a.code, a.active, a.time_ms, now_ms))
    }

    /// What one alert of `camera` (`code` from [`code_of`], `active` its `eventState`)
    /// means at `now_ms`, in either encoding: the first `active` raises, repeats fold,
    /// `inactive` clears what is open or is a `DEV.HEARTBEAT` (module doc).
    pub fn observe(
        &mut self,
        camera: String,
        code: &'static str,
        active: bool,
        time: Option<i64>,
        now_ms: i64,
    ) -> Vec<Observation> {
        let obs = |code: &'static str, state| {
            Observation::new(camera.clone(), code, state)
                .with_time(time)
                .with_kind(Some(DeviceKind::Camera))
        };
        if code == "DEV.HEARTBEAT" {
            return vec![obs(code, EventState::Active)];
        }
        let key = (camera.clone(), code);
        if active {
            match self.open.get_mut(&key) {
                Some(incident) => {
                    incident.last_seen_ms = now_ms;
                    Vec::new()
                }
                None => {
                    let stateful = taxonomy::lookup(code).is_some_and(|i| i.stateful);
                    self.open.insert(
                        key,
                        Incident {
                            last_seen_ms: now_ms,
                            stateful,
                        },
                    );
                    vec![obs(code, EventState::Active)]
                }
            }
        } else {
            match self.open.remove(&key) {
                Some(i) if i.stateful => vec![obs(code, EventState::Cleared)],
                Some(_) => Vec::new(),
                None => vec![obs("DEV.HEARTBEAT", EventState::Active)],
            }
        }
    }

    /// Incidents silent for `clear_after` by `now_ms`: cleared (stateful codes) or closed.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Observation> {
        let mut out = Vec::new();
        let after = self.clear_after_ms;
        self.open.retain(|(camera, code), i| {
            if now_ms - i.last_seen_ms < after {
                return true;
            }
            if i.stateful {
                out.push(
                    Observation::new(camera.clone(), code, EventState::Cleared)
                        .with_kind(Some(DeviceKind::Camera)),
                );
            }
            false
        });
        out.sort_by(|a, b| (&a.source_id, a.code).cmp(&(&b.source_id, b.code)));
        out
    }
}
