//! NB-IoT smoke detectors' vendor state codes, relayed as JSON (any topic under the
//! source's filters): `{"imei":"868120300000001","state":1,"battery":87,"ts":1764187200000}`
//! (`ts` epoch ms or RFC 3339, `battery` in %, both optional).
//!
//! | state | meaning | event |
//! |---|---|---|
//! | 1 | alarm | `SMOKE.ALARM` active |
//! | 2 | silenced | `SMOKE.SILENCED` |
//! | 4 | low battery | `SMOKE.LOW_BATT` active |
//! | 5 | fault | `SMOKE.FAULT` active |
//! | 7 | normal | clears what is active (alarm, low battery, fault); else `DEV.HEARTBEAT` |
//! | 10 | tamper | `SMOKE.TAMPER` active |
//! | 11 | tamper restored | `SMOKE.TAMPER` cleared |
//! | 12 | online | `DEV.ONLINE` |
//! | 14 | test alarm | `SMOKE.TEST` |
//!
//! Detectors repeat a state while it lasts; a repeat of an active state folds silently.

use std::collections::{BTreeSet, HashMap};

use estate_config::SourceFormat;
use estate_protocols::model::{DeviceKind, EventState, Reading};

use super::decoded::{error, DecodeError, DecodeReason, Observation};
use super::fields::{bad_field, json_object, missing, opt_f64, opt_time, req_id};

const F: SourceFormat = SourceFormat::NbiotSmokeJson;

/// The state codes known, for error messages.
pub const STATES: &[u64] = &[1, 2, 4, 5, 7, 10, 11, 12, 14];

/// Active conditions per detector.
#[derive(Debug, Default)]
pub struct Nbiot {
    active: HashMap<String, BTreeSet<&'static str>>,
}

impl Nbiot {
    /// Decodes one message.
    pub fn decode(
        &mut self,
        _topic: &str,
        payload: &[u8],
    ) -> Result<Vec<Observation>, DecodeError> {
        let body = json_object(F, payload)?;
        let imei = req_id(F, &body, "imei")?;
        let state = match body.get("state") {
            Some(serde_json::Value::Number(n)) if n.is_u64() => n.as_u64().unwrap_or_default(),
            Some(serde_json::Value::String(s)) if s.trim().parse::<u64>().is_ok() => {
                s.trim().parse().unwrap_or_default()
            }
            Some(other) => return Err(bad_field(F, "state", "a state code (an integer)", other)),
            None => return Err(missing(F, "state")),
        };
        let time = opt_time(F, &body, "ts")?;
        let battery = opt_f64(F, &body, "battery")?.map(|v| Reading {
            value: v,
            unit: "%".into(),
        });
        let obs = |code: &'static str, st: EventState| {
            Observation::new(imei.clone(), code, st)
                .with_time(time)
                .with_kind(Some(DeviceKind::Smoke))
        };
        let active = self.active.entry(imei.clone()).or_default();
        let raise = |active: &mut BTreeSet<&'static str>, code: &'static str| {
            if active.insert(code) {
                vec![obs(code, EventState::Active)]
            } else {
                Vec::new()
            }
        };
        let mut out = match state {
            1 => raise(active, "SMOKE.ALARM"),
            2 => vec![obs("SMOKE.SILENCED", EventState::Active)],
            4 => raise(active, "SMOKE.LOW_BATT"),
            5 => raise(active, "SMOKE.FAULT"),
            7 => {
                let ended: Vec<&'static str> = active
                    .iter()
                    .copied()
                    .filter(|c| *c != "SMOKE.TAMPER")
                    .collect();
                active.retain(|c| *c == "SMOKE.TAMPER");
                if ended.is_empty() {
                    vec![obs("DEV.HEARTBEAT", EventState::Active)]
                } else {
                    ended
                        .into_iter()
                        .map(|c| obs(c, EventState::Cleared))
                        .collect()
                }
            }
            10 => raise(active, "SMOKE.TAMPER"),
            11 => {
                active.remove("SMOKE.TAMPER");
                vec![obs("SMOKE.TAMPER", EventState::Cleared)]
            }
            12 => vec![obs("DEV.ONLINE", EventState::Active)],
            14 => vec![obs("SMOKE.TEST", EventState::Active)],
            other => {
                return Err(error(
                    F,
                    DecodeReason::BadField,
                    format!(
                        "field \"state\": unknown state code {other} (known: {})",
                        STATES
                            .iter()
                            .map(u64::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ))
            }
        };
        for o in &mut out {
            if matches!(o.code, "DEV.HEARTBEAT" | "SMOKE.LOW_BATT" | "DEV.ONLINE") {
                o.value = battery.clone();
            }
        }
        Ok(out)
    }
}
