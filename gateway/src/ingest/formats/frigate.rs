//! Frigate NVR: `frigate/events` with `{"type":"new"|"update"|"end","before":{…},
//! "after":{"id","camera","label","entered_zones","current_zones","start_time",…}}`, and
//! `frigate/available` (`online` / `offline`, Frigate's last will).
//!
//! One incident per Frigate event id: `new` raises it (a `person` is `VID.INTRUSION`,
//! any other object `VID.MOTION`), `update`s fold into it, `end` clears it. The zones the
//! object entered go into the event's location. An `update` or `end` for an id not seen
//! (the gateway restarted mid-event) is raised resp. cleared as it comes. The NVR's own
//! availability is device `nvr` of the source.

use std::collections::{HashMap, VecDeque};

use serde_json::{Map, Value};

use estate_config::SourceFormat;
use estate_protocols::model::{DeviceKind, EventState};

use super::decoded::{error, DecodeError, DecodeReason, Observation};
use super::fields::{bad_field, json_object, missing, opt_str, text};

const F: SourceFormat = SourceFormat::Frigate;

/// The source id of the NVR itself (its `available` topic).
pub const NVR: &str = "nvr";

/// Open incidents kept at most; the oldest is forgotten beyond this (an `end` lost).
const MAX_OPEN: usize = 4096;

/// Open incidents by Frigate event id.
#[derive(Debug, Default)]
pub struct Frigate {
    open: HashMap<String, &'static str>,
    order: VecDeque<String>,
}

impl Frigate {
    /// Decodes one message.
    pub fn decode(&mut self, topic: &str, payload: &[u8]) -> Result<Vec<Observation>, DecodeError> {
        if topic.ends_with("/available") {
            return match text(F, payload)? {
                "online" => Ok(vec![Observation::new(
                    NVR,
                    "DEV.ONLINE",
                    EventState::Active,
                )]),
                "offline" => Ok(vec![Observation::new(
                    NVR,
                    "DEV.OFFLINE",
                    EventState::Active,
                )]),
                other => Err(error(
                    F,
                    DecodeReason::BadField,
                    format!("{topic}: expected \"online\" or \"offline\", found {other:?}"),
                )),
            };
        }
        if !topic.ends_with("/events") {
            // Frigate's other topics (object counts, stats, snapshots) are not incidents.
            return Ok(Vec::new());
        }
        let body = json_object(F, payload)?;
        let kind = opt_str(F, &body, "type")?.ok_or_else(|| missing(F, "type"))?;
        let after = match body.get("after") {
            Some(Value::Object(m)) => m,
            Some(other) => return Err(bad_field(F, "after", "an object", other)),
            None => return Err(missing(F, "after")),
        };
        let id = after_str(after, "id")?;
        let camera = after_str(after, "camera")?;
        let label = after_str(after, "label")?;
        let code = if label == "person" {
            "VID.INTRUSION"
        } else {
            "VID.MOTION"
        };
        let zones = zones(after)?;
        let time = |field: &str| -> Result<Option<i64>, DecodeError> {
            match after.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(n)) => Ok(n.as_f64().map(|s| (s * 1000.0) as i64)),
                Some(other) => Err(bad_field(
                    F,
                    &format!("after.{field}"),
                    "epoch seconds",
                    other,
                )),
            }
        };
        let false_positive = matches!(after.get("false_positive"), Some(Value::Bool(true)));
        let obs = |state: EventState, t: Option<i64>| {
            let mut o = Observation::new(camera, code, state).with_time(t);
            o.zone = (!zones.is_empty()).then(|| zones.join(", "));
            o.kind = Some(DeviceKind::Camera);
            o
        };
        match kind {
            "new" | "update" => {
                if self.open.contains_key(id) || false_positive {
                    return Ok(Vec::new());
                }
                self.open.insert(id.to_owned(), code);
                self.order.push_back(id.to_owned());
                while self.order.len() > MAX_OPEN {
                    if let Some(old) = self.order.pop_front() {
                        self.open.remove(&old);
                    }
                }
                Ok(vec![obs(EventState::Active, time("start_time")?)])
            }
            "end" => {
                let was_open = self.open.remove(id).is_some();
                self.order.retain(|o| o != id);
                if !was_open && false_positive {
                    return Ok(Vec::new());
                }
                Ok(vec![obs(EventState::Cleared, time("end_time")?)])
            }
            other => Err(error(
                F,
                DecodeReason::BadField,
                format!("field \"type\": expected \"new\", \"update\" or \"end\", found {other:?}"),
            )),
        }
    }
}

fn after_str<'a>(after: &'a Map<String, Value>, field: &str) -> Result<&'a str, DecodeError> {
    match after.get(field) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        None | Some(Value::Null) => Err(missing(F, &format!("after.{field}"))),
        Some(other) => Err(bad_field(
            F,
            &format!("after.{field}"),
            "a non-empty string",
            other,
        )),
    }
}

/// `entered_zones` (every zone the object went into), else `current_zones`, else `zones`.
fn zones(after: &Map<String, Value>) -> Result<Vec<String>, DecodeError> {
    for field in ["entered_zones", "current_zones", "zones"] {
        match after.get(field) {
            None | Some(Value::Null) => continue,
            Some(Value::Array(a)) => {
                let mut out = Vec::with_capacity(a.len());
                for z in a {
                    match z {
                        Value::String(s) => out.push(s.clone()),
                        other => {
                            return Err(bad_field(
                                F,
                                &format!("after.{field}"),
                                "a list of zone names",
                                other,
                            ))
                        }
                    }
                }
                if !out.is_empty() {
                    return Ok(out);
                }
            }
            Some(other) => {
                return Err(bad_field(
                    F,
                    &format!("after.{field}"),
                    "a list of zone names",
                    other,
                ))
            }
        }
    }
    Ok(Vec::new())
}
