//! `json-map`: a declarative mapping (`[ingest.sources.map]`) for any other JSON payload:
//! which field is the device id, which field's value selects the event code, which field
//! says active or cleared, where the time and a reading are; plus an optional
//! availability / last-will topic. Stateless: every mapped message is one event.

use serde_json::Value;

use estate_config::{JsonMap, SourceFormat, TimeFormat};
use estate_protocols::model::{EventState, Reading};

use super::decoded::{error, DecodeError, DecodeReason, Observation};
use super::fields::{json_object, json_type, missing, show, text};

const F: SourceFormat = SourceFormat::JsonMap;

/// A json-map source's mapping.
#[derive(Debug)]
pub struct JsonMapDecoder {
    map: JsonMap,
    /// `(value, code)` with each code resolved to the taxonomy's static name.
    codes: Vec<(String, &'static str)>,
}

impl JsonMapDecoder {
    /// Codes not in the taxonomy are left out (config validation rejects them).
    pub fn new(map: JsonMap) -> Self {
        let codes = map
            .codes
            .iter()
            .filter_map(|(v, c)| estate_protocols::taxonomy::lookup(c).map(|i| (v.clone(), i.code)))
            .collect();
        JsonMapDecoder { map, codes }
    }

    /// Decodes one message.
    pub fn decode(&self, topic: &str, payload: &[u8]) -> Result<Vec<Observation>, DecodeError> {
        if let Some(filter) = &self.map.availability_topic {
            if estate_config::topic_matches(filter, topic) {
                return self.availability(filter, topic, payload);
            }
        }
        let body = Value::Object(json_object(F, payload)?);
        let m = &self.map;
        let device = match body.pointer(&m.device_id) {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
            Some(Value::Number(n)) => n.to_string(),
            Some(other) => {
                return Err(field(&m.device_id, "a non-empty string or a number", other))
            }
            None => return Err(missing(F, &m.device_id)),
        };
        let code = match body.pointer(&m.code_field) {
            None | Some(Value::Null) => "DEV.HEARTBEAT",
            Some(v) => self.code(v)?,
        };
        let state =
            optional(&body, &m.state_field, |p, v| self.state(p, v))?.unwrap_or(EventState::Active);
        let time = optional(&body, &m.time_field, |p, v| {
            parse_time(m.time_format, v).ok_or_else(|| field(p, time_format_name(m.time_format), v))
        })?;
        let value = optional(&body, &m.value_field, |p, v| match v {
            Value::Number(n) => Ok(n.as_f64().map(|value| Reading {
                value,
                unit: m.unit.clone(),
            })),
            other => Err(field(p, "a number", other)),
        })?
        .flatten();
        let seq = optional(&body, &m.seq_field, |p, v| {
            v.as_u64()
                .ok_or_else(|| field(p, "a non-negative integer", v))
        })?;
        Ok(vec![Observation::new(device, code, state)
            .with_time(time)
            .with_value(value)
            .with_seq(seq)])
    }

    /// The code `codes` maps the code field's value `v` to.
    fn code(&self, v: &Value) -> Result<&'static str, DecodeError> {
        let key = as_text(v)
            .ok_or_else(|| field(&self.map.code_field, "a string, number or boolean", v))?;
        self.codes
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, c)| *c)
            .ok_or_else(|| {
                let known: Vec<&str> = self.codes.iter().map(|(k, _)| k.as_str()).collect();
                error(
                    F,
                    DecodeReason::BadField,
                    format!(
                        "field {:?}: value {key:?} is not in the code table (known: {})",
                        self.map.code_field,
                        known.join(", ")
                    ),
                )
            })
    }

    /// Active or cleared, from the state field `p`'s value `v`.
    fn state(&self, p: &str, v: &Value) -> Result<EventState, DecodeError> {
        let t = as_text(v).ok_or_else(|| field(p, "a string, number or boolean", v))?;
        if self.map.active.contains(&t) {
            Ok(EventState::Active)
        } else if self.map.cleared.contains(&t) {
            Ok(EventState::Cleared)
        } else {
            Err(error(
                F,
                DecodeReason::BadField,
                format!(
                    "field {p:?}: value {t:?} is neither active ({}) nor cleared ({})",
                    self.map.active.join(", "),
                    self.map.cleared.join(", ")
                ),
            ))
        }
    }

    fn availability(
        &self,
        filter: &str,
        topic: &str,
        payload: &[u8],
    ) -> Result<Vec<Observation>, DecodeError> {
        // The device id is the level the first '+' matched, else the topic's last level.
        let plus = filter.split('/').position(|l| l == "+");
        let device = match plus {
            Some(i) => topic.split('/').nth(i),
            None => topic.rsplit('/').next(),
        }
        .filter(|d| !d.is_empty())
        .ok_or_else(|| {
            error(
                F,
                DecodeReason::BadTopic,
                format!("topic {topic:?} names no device"),
            )
        })?;
        let t = text(F, payload)?;
        let code = if t == self.map.online {
            "DEV.ONLINE"
        } else if t == self.map.offline {
            "DEV.OFFLINE"
        } else {
            return Err(error(
                F,
                DecodeReason::BadField,
                format!(
                    "availability payload: expected {:?} or {:?}, found {t:?}",
                    self.map.online, self.map.offline
                ),
            ));
        };
        Ok(vec![Observation::new(device, code, EventState::Active)])
    }
}

/// An optional field: `None` when it is not mapped, absent or null, else what `read`
/// makes of its value.
fn optional<T>(
    body: &Value,
    pointer: &Option<String>,
    read: impl FnOnce(&str, &Value) -> Result<T, DecodeError>,
) -> Result<Option<T>, DecodeError> {
    match pointer {
        None => Ok(None),
        Some(p) => match body.pointer(p) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => read(p, v).map(Some),
        },
    }
}

fn time_format_name(format: TimeFormat) -> &'static str {
    match format {
        TimeFormat::Rfc3339 => "an RFC 3339 time",
        TimeFormat::EpochMs => "epoch milliseconds",
        TimeFormat::EpochS => "epoch seconds",
    }
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn parse_time(format: TimeFormat, v: &Value) -> Option<i64> {
    match (format, v) {
        (TimeFormat::Rfc3339, Value::String(s)) => estate_protocols::rfc3339::parse_ms(s),
        (TimeFormat::EpochMs, Value::Number(n)) => n.as_i64(),
        (TimeFormat::EpochS, Value::Number(n)) => n.as_f64().map(|s| (s * 1000.0) as i64),
        _ => None,
    }
}

fn field(pointer: &str, expected: &str, found: &Value) -> DecodeError {
    error(
        F,
        DecodeReason::BadField,
        format!(
            "field {pointer:?}: expected {expected}, found {} {}",
            json_type(found),
            show(found)
        ),
    )
}
