//! `json-map`: a declarative mapping (`[ingest.sources.map]`) for any other JSON payload:
//! which field is the device id, which field's value selects the event code, which field
//! says active or cleared, where the time and a reading are; plus an optional
//! availability / last-will topic. Stateless: every mapped message is one event.

use serde_json::Value;

use estate_config::{JsonMap, SourceFormat, TimeFormat};
use estate_protocols::model::{EventState, Reading};

use super::decoded::{error, DecodeError, DecodeReason, Observation};
use super::fields::{json_object, json_type, show, text};

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
        let device = match body.pointer(&self.map.device_id) {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
            Some(Value::Number(n)) => n.to_string(),
            Some(other) => {
                return Err(field(
                    &self.map.device_id,
                    "a non-empty string or a number",
                    other,
                ))
            }
            None => return Err(absent(&self.map.device_id)),
        };
        let code = match body.pointer(&self.map.code_field) {
            None | Some(Value::Null) => "DEV.HEARTBEAT",
            Some(v) => {
                let key = as_text(v)
                    .ok_or_else(|| field(&self.map.code_field, "a string, number or boolean", v))?;
                self.codes
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, c)| *c)
                    .ok_or_else(|| {
                        error(
                            F,
                            DecodeReason::BadField,
                            format!(
                                "field {:?}: value {key:?} is not in the code table (known: {})",
                                self.map.code_field,
                                self.codes
                                    .iter()
                                    .map(|(k, _)| k.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        )
                    })?
            }
        };
        let state = match &self.map.state_field {
            None => EventState::Active,
            Some(p) => match body.pointer(p) {
                None | Some(Value::Null) => EventState::Active,
                Some(v) => {
                    let t = as_text(v).ok_or_else(|| field(p, "a string, number or boolean", v))?;
                    if self.map.active.contains(&t) {
                        EventState::Active
                    } else if self.map.cleared.contains(&t) {
                        EventState::Cleared
                    } else {
                        return Err(error(
                            F,
                            DecodeReason::BadField,
                            format!(
                                "field {p:?}: value {t:?} is neither active ({}) nor cleared ({})",
                                self.map.active.join(", "),
                                self.map.cleared.join(", ")
                            ),
                        ));
                    }
                }
            },
        };
        let time = match &self.map.time_field {
            None => None,
            Some(p) => match body.pointer(p) {
                None | Some(Value::Null) => None,
                Some(v) => Some(parse_time(self.map.time_format, v).ok_or_else(|| {
                    field(
                        p,
                        match self.map.time_format {
                            TimeFormat::Rfc3339 => "an RFC 3339 time",
                            TimeFormat::EpochMs => "epoch milliseconds",
                            TimeFormat::EpochS => "epoch seconds",
                        },
                        v,
                    )
                })?),
            },
        };
        let value = match &self.map.value_field {
            None => None,
            Some(p) => match body.pointer(p) {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) => n.as_f64().map(|v| Reading {
                    value: v,
                    unit: self.map.unit.clone(),
                }),
                Some(other) => return Err(field(p, "a number", other)),
            },
        };
        Ok(vec![Observation::new(device, code, state)
            .with_time(time)
            .with_value(value)])
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

fn absent(pointer: &str) -> DecodeError {
    error(
        F,
        DecodeReason::BadField,
        format!("field {pointer:?} is missing"),
    )
}
