//! zigbee2mqtt: `{base}/<friendly name>` with the device's full state as JSON on every
//! report, `{base}/<friendly name>/availability` (`{"state":"online"}` or plain
//! `online`), `{base}/bridge/state` (the bridge's own last will).
//!
//! Full state every time, so only changes are events: `water_leak` false → true is
//! `LEAK.ALARM` active, true → false cleared; likewise `smoke`, `gas`, `tamper`,
//! `battery_low`. A report that changes nothing is one `DEV.HEARTBEAT` (with `battery`).
//! The first report of a device (after a restart too) is the baseline: what it reports
//! active is raised, what is inactive is silent.

use std::collections::HashMap;

use estate_config::SourceFormat;
use estate_protocols::model::{DeviceKind, EventState, Reading};

use super::decoded::{error, DecodeError, DecodeReason, Observation};
use super::fields::{json_object, opt_bool, opt_f64, text};

const F: SourceFormat = SourceFormat::Zigbee2mqtt;

/// The boolean exposes that are conditions, in the order their events are emitted.
const FLAGS: &[&str] = &["smoke", "gas", "water_leak", "tamper", "battery_low"];

/// The friendly name used for the bridge itself (`bridge/state`).
pub const BRIDGE: &str = "bridge";

/// Change-only state of every device seen.
#[derive(Debug, Default)]
pub struct Zigbee {
    /// The base topic (`zigbee2mqtt`), from the source's first filter.
    base: String,
    devices: HashMap<String, DeviceState>,
}

#[derive(Debug, Default)]
struct DeviceState {
    flags: HashMap<&'static str, bool>,
    online: Option<bool>,
}

impl Zigbee {
    /// A decoder for the base topic of `filters[0]` (its levels before a wildcard).
    pub fn new(filters: &[String]) -> Self {
        let base = filters
            .first()
            .map(|f| {
                f.split('/')
                    .take_while(|l| *l != "#" && *l != "+")
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .unwrap_or_else(|| "zigbee2mqtt".to_owned());
        Zigbee {
            base,
            devices: HashMap::new(),
        }
    }

    /// Decodes one message.
    pub fn decode(&mut self, topic: &str, payload: &[u8]) -> Result<Vec<Observation>, DecodeError> {
        let rest = topic
            .strip_prefix(self.base.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .filter(|r| !r.is_empty())
            .ok_or_else(|| {
                error(
                    F,
                    DecodeReason::BadTopic,
                    format!("topic {topic:?} is not {}/<friendly name>", self.base),
                )
            })?;
        if rest == "bridge/state" {
            return self.availability(BRIDGE, payload);
        }
        // Bridge logs, device lists, and commands other clients send (`…/set`, `…/get`)
        // are not device reports.
        if rest.starts_with("bridge/") || rest.ends_with("/set") || rest.ends_with("/get") {
            return Ok(Vec::new());
        }
        if let Some(name) = rest.strip_suffix("/availability") {
            return self.availability(name, payload);
        }
        let body = json_object(F, payload)?;
        let mut values = Vec::with_capacity(FLAGS.len());
        for flag in FLAGS {
            if let Some(v) = opt_bool(F, &body, flag)? {
                values.push((*flag, v));
            }
        }
        let battery = opt_f64(F, &body, "battery")?;
        let kind = if body.contains_key("smoke") {
            Some(DeviceKind::Smoke)
        } else if body.contains_key("gas") {
            Some(DeviceKind::Gas)
        } else if body.contains_key("water_leak") {
            Some(DeviceKind::WaterLeak)
        } else {
            None
        };
        let state = self.devices.entry(rest.to_owned()).or_default();
        let mut out = Vec::new();
        for (flag, now) in values {
            let before = state.flags.insert(flag, now);
            let changed = match before {
                None => now, // baseline: only an active condition is news
                Some(b) => b != now,
            };
            if changed {
                let st = if now {
                    EventState::Active
                } else {
                    EventState::Cleared
                };
                let mut o = Observation::new(rest, code(flag, kind), st).with_kind(kind);
                if flag == "battery_low" {
                    o = o.with_value(battery.map(percent));
                }
                out.push(o);
            }
        }
        if out.is_empty() {
            out.push(
                Observation::new(rest, "DEV.HEARTBEAT", EventState::Active)
                    .with_kind(kind)
                    .with_value(battery.map(percent)),
            );
        }
        Ok(out)
    }

    fn availability(
        &mut self,
        name: &str,
        payload: &[u8],
    ) -> Result<Vec<Observation>, DecodeError> {
        let t = text(F, payload)?;
        let word = if t.starts_with('{') {
            let body = json_object(F, payload)?;
            match body.get("state") {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(other) => {
                    return Err(super::fields::bad_field(
                        F,
                        "state",
                        "\"online\" or \"offline\"",
                        other,
                    ))
                }
                None => return Err(super::fields::missing(F, "state")),
            }
        } else {
            t.to_owned()
        };
        let online = match word.as_str() {
            "online" => true,
            "offline" => false,
            other => {
                return Err(error(
                    F,
                    DecodeReason::BadField,
                    format!("field \"state\": expected \"online\" or \"offline\", found {other:?}"),
                ))
            }
        };
        let state = self.devices.entry(name.to_owned()).or_default();
        let before = state.online.replace(online);
        Ok(match (before, online) {
            // Baseline: offline is news, online is not.
            (None, false) | (Some(true), false) => {
                vec![Observation::new(name, "DEV.OFFLINE", EventState::Active)]
            }
            (Some(false), true) => vec![Observation::new(name, "DEV.ONLINE", EventState::Active)],
            _ => Vec::new(),
        })
    }
}

fn percent(v: f64) -> Reading {
    Reading {
        value: v,
        unit: "%".into(),
    }
}

/// The event code of a zigbee2mqtt expose on a device of `kind`.
pub fn code(flag: &str, kind: Option<DeviceKind>) -> &'static str {
    let smoke = kind == Some(DeviceKind::Smoke);
    match flag {
        "smoke" => "SMOKE.ALARM",
        "gas" => "GAS.AL2",
        "water_leak" => "LEAK.ALARM",
        "tamper" if smoke => "SMOKE.TAMPER",
        "tamper" => "DEV.TAMPER",
        "battery_low" if smoke => "SMOKE.LOW_BATT",
        _ => "DEV.LOW_BATT",
    }
}
