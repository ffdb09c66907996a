//! Camera alarms in the Hikvision ISAPI event-notification JSON, relayed to MQTT (any
//! topic under the source's filters): `{"ipAddress","macAddress","channelID","dateTime",
//! "eventType","eventState","eventDescription",…}`.
//!
//! The camera is `{macAddress}/{channelID}` (or `{ipAddress}/…` without a MAC; without a
//! channel just the address). It repeats an active alarm about once a second and never
//! sends a clear: the first `active` raises the alarm, repeats fold silently, and
//! [`Isapi::tick`] clears it after `clear_after` of silence. An explicit `inactive` clears
//! at once; an `inactive` for nothing open (cameras send `videoloss` `inactive` as a
//! keep-alive) is a `DEV.HEARTBEAT`. Momentary codes (`VID.LINE_CROSS`) are raised once
//! per burst and end silently.

use std::collections::HashMap;

use estate_config::SourceFormat;
use estate_protocols::model::{DeviceKind, EventState};
use estate_protocols::taxonomy;

use super::decoded::{error, DecodeError, DecodeReason, Observation};
use super::fields::{bad_field, json_object, missing, opt_str, opt_time};

const F: SourceFormat = SourceFormat::CameraIsapiJson;

/// `eventType` → code. Matching ignores case (firmwares differ: `VMD`, `vmd`).
pub const EVENT_TYPES: &[(&str, &str)] = &[
    ("linedetection", "VID.LINE_CROSS"),
    ("fielddetection", "VID.INTRUSION"),
    ("regionEntrance", "VID.INTRUSION"),
    ("regionExiting", "VID.INTRUSION"),
    ("loitering", "VID.LOITER"),
    ("videoloss", "VID.LOSS"),
    ("tamperdetection", "VID.TAMPER"),
    ("shelteralarm", "VID.TAMPER"),
    ("VMD", "VID.MOTION"),
];

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
        let body = json_object(F, payload)?;
        let event_type = opt_str(F, &body, "eventType")?.ok_or_else(|| missing(F, "eventType"))?;
        let code = EVENT_TYPES
            .iter()
            .find(|(t, _)| t.eq_ignore_ascii_case(event_type))
            .map(|(_, c)| *c)
            .ok_or_else(|| {
                error(
                    F,
                    DecodeReason::BadField,
                    format!(
                        "field \"eventType\": {event_type:?} is not a known event type (known: {})",
                        EVENT_TYPES
                            .iter()
                            .map(|(t, _)| *t)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?;
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
        let address = match opt_str(F, &body, "macAddress")? {
            Some(m) if !m.is_empty() => m,
            _ => opt_str(F, &body, "ipAddress")?
                .filter(|a| !a.is_empty())
                .ok_or_else(|| missing(F, "macAddress"))?,
        };
        let camera = match body.get("channelID") {
            None | Some(serde_json::Value::Null) => address.to_owned(),
            Some(serde_json::Value::Number(n)) if n.is_u64() => format!("{address}/{n}"),
            Some(other) => return Err(bad_field(F, "channelID", "a channel number", other)),
        };
        let time = opt_time(F, &body, "dateTime")?;
        let obs = |code: &'static str, state| {
            Observation::new(camera.clone(), code, state)
                .with_time(time)
                .with_kind(Some(DeviceKind::Camera))
        };
        let key = (camera.clone(), code);
        if active {
            match self.open.get_mut(&key) {
                Some(incident) => {
                    incident.last_seen_ms = now_ms;
                    Ok(Vec::new())
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
                    Ok(vec![obs(code, EventState::Active)])
                }
            }
        } else {
            match self.open.remove(&key) {
                Some(i) if i.stateful => Ok(vec![obs(code, EventState::Cleared)]),
                Some(_) => Ok(Vec::new()),
                None => Ok(vec![obs("DEV.HEARTBEAT", EventState::Active)]),
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
