//! Access-control controllers' SDK event codes relayed as JSON:
//! `acs/<controller>/event` with `{"controller":"ctl-01","door":2,"code":"0x1b",
//! "card":"…","time":"2026-11-26T20:00:00+08:00"}` (`code` as hex text or a number), and
//! `acs/<controller>/status` with `online` / `offline` (the controller's last will).
//!
//! The device is the door, `{controller}/{door}`, or the controller itself when the
//! event has no door (host tamper). SDK codes not in the table are recorded as the
//! device's `DEV.HEARTBEAT` (the raw payload is kept), never dropped.

use estate_config::SourceFormat;
use estate_protocols::model::{DeviceKind, EventState};

use super::decoded::{error, DecodeError, DecodeReason, Observation};
use super::fields::{bad_field, json_object, missing, opt_time, req_id, text};

const F: SourceFormat = SourceFormat::AccessControlJson;

/// SDK event code → (event code, state, whether it concerns the controller not a door).
pub const SDK_CODES: &[(u32, &str, &str)] = &[
    (0x1b, "ACS.FORCED_OPEN", "door forced open"),
    (0x1c, "ACS.HELD_OPEN", "door held open"),
    (0x09, "ACS.INVALID_CRED", "invalid card"),
    (0x06, "ACS.INVALID_CRED", "no permission"),
    (0x0a, "ACS.INVALID_CRED", "anti-passback violation"),
    (0x85, "ACS.TAILGATE", "tailgating"),
    (0x40a, "ACS.DURESS", "duress code"),
    (0x404, "ACS.TAMPER", "host (controller) tamper"),
    (0x406, "ACS.TAMPER", "reader tamper"),
];

/// Stateless: every message is its own event.
#[derive(Debug, Default)]
pub struct AccessControl;

impl AccessControl {
    /// Decodes one message.
    pub fn decode(&self, topic: &str, payload: &[u8]) -> Result<Vec<Observation>, DecodeError> {
        if topic.ends_with("/status") {
            let controller = topic
                .rsplit('/')
                .nth(1)
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    error(
                        F,
                        DecodeReason::BadTopic,
                        format!("topic {topic:?} names no controller"),
                    )
                })?;
            return match text(F, payload)? {
                "online" => Ok(vec![Observation::new(
                    controller,
                    "DEV.ONLINE",
                    EventState::Active,
                )]),
                "offline" => Ok(vec![Observation::new(
                    controller,
                    "DEV.OFFLINE",
                    EventState::Active,
                )]),
                other => Err(error(
                    F,
                    DecodeReason::BadField,
                    format!("status payload: expected \"online\" or \"offline\", found {other:?}"),
                )),
            };
        }
        let body = json_object(F, payload)?;
        let controller = req_id(F, &body, "controller")?;
        let door = match body.get("door") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Number(n)) if n.is_u64() => Some(n.to_string()),
            Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(other) => return Err(bad_field(F, "door", "a door number", other)),
        };
        let sdk = match body.get("code") {
            Some(serde_json::Value::Number(n)) => n.as_u64().and_then(|v| u32::try_from(v).ok()),
            Some(serde_json::Value::String(s)) => parse_code(s),
            Some(other) => {
                return Err(bad_field(
                    F,
                    "code",
                    "an SDK event code (\"0x1b\" or 27)",
                    other,
                ))
            }
            None => return Err(missing(F, "code")),
        }
        .ok_or_else(|| {
            bad_field(
                F,
                "code",
                "an SDK event code (\"0x1b\" or 27)",
                body.get("code").unwrap_or(&serde_json::Value::Null),
            )
        })?;
        let time = opt_time(F, &body, "time")?;
        let (code, host) = match SDK_CODES.iter().find(|(c, _, _)| *c == sdk) {
            Some((_, code, _)) => (*code, sdk == 0x404),
            None => ("DEV.HEARTBEAT", false),
        };
        let device = match (&door, host) {
            (Some(d), false) => format!("{controller}/{d}"),
            _ => controller,
        };
        Ok(vec![Observation::new(device, code, EventState::Active)
            .with_time(time)
            .with_kind(Some(DeviceKind::AccessControl))])
    }
}

/// `"0x1b"`, `"1b"`-free decimal `"27"`, or hex with the prefix only.
fn parse_code(s: &str) -> Option<u32> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}
