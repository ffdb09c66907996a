//! Payload formats: one decoder per source format, chosen per `[[ingest.sources]]`.
//!
//! ```text
//! (topic, payload) ─▶ Sources::decode ─▶ route by topic filter ─▶ format decoder ─▶ Observation* ─▶ Event*
//!                                                                  (pure; small state      (device identity,
//!                                                                   machines, explicit now)  kind, location, severity)
//! ```
//!
//! Each format module turns one message into zero or more [`Observation`]s ("device X of
//! this source says code C is active") or a precise [`DecodeError`] that names the format
//! and the field. The stateful formats keep small state machines with an explicit `now_ms`
//! (no clock inside): zigbee2mqtt reports full state, so only changes become events;
//! Frigate keeps one incident per event id; ISAPI-style cameras repeat while active and
//! never clear, so repeats fold and [`Sources::tick`] clears after a silence.
//!
//! [`Sources`] then maps each observation to an [`Event`]: the source's own device id is
//! looked up in `[[devices]] source = { name, id }`; an unknown one becomes an
//! unregistered device `{source name}.{sanitised id}`, never dropped.
//!
//! Restart semantics: decoder state lives in memory. After a restart the first report of
//! each device is a baseline: conditions it reports active are raised (again), inactive
//! ones are silent. So an alarm is never lost (at least once); a clear that happened
//! while the gateway was down is not re-sent.

pub mod access_control;
pub mod decoded;
pub mod fields;
pub mod frigate;
pub mod isapi;
pub mod isapi_xml;
pub mod json_map;
pub mod native;
pub mod nbiot;
pub mod zigbee;

use std::collections::HashMap;

use estate_config::{Config, SourceConfig, SourceFormat, SourceKind};
use estate_protocols::model::{Event, Source};
use estate_protocols::taxonomy;

pub use decoded::{
    DecodeError, DecodeReason, Decoded, DeviceInfo, Observation, MAX_DEVICE_ID_BYTES,
    MAX_TOPIC_BYTES, MAX_UNIT_BYTES, MAX_ZONE_BYTES,
};
pub use fields::{bounded_raw, cut};
use native::DecodeContext;

/// The device id given to a device a source names but the config does not list:
/// `{source}.{id}` with every character other than letters, digits, `-`, `_`, `.`
/// replaced by `_`, at most [`MAX_DEVICE_ID_BYTES`]. Stable: the same source id always gives the
/// same device id.
pub fn unregistered_device_id(source: &str, source_id: &str) -> String {
    let mut id: String = format!("{source}.")
        .chars()
        .chain(source_id.chars())
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    id.truncate(MAX_DEVICE_ID_BYTES);
    id
}

/// A configured device as a source knows it.
#[derive(Debug, Clone)]
struct Registered {
    device_id: String,
    info: DeviceInfo,
}

/// The per-format state machine of one source.
#[derive(Debug)]
enum Decoder {
    Native,
    Zigbee(zigbee::Zigbee),
    Frigate(frigate::Frigate),
    Isapi(isapi::Isapi),
    AccessControl(access_control::AccessControl),
    Nbiot(nbiot::Nbiot),
    JsonMap(Box<json_map::JsonMapDecoder>),
}

/// One `[[ingest.sources]]` entry at run time.
#[derive(Debug)]
struct SourceRt {
    name: String,
    format: SourceFormat,
    filters: Vec<String>,
    decoder: Decoder,
    /// Source id → configured device.
    devices: HashMap<String, Registered>,
    /// How its messages arrive, for `source.protocol`: `mqtt`, or `http` (camera push).
    protocol: &'static str,
}

/// Every configured source, with the decoders' state. Built from config; pure apart from
/// generating event ids.
#[derive(Debug)]
pub struct Sources {
    sources: Vec<SourceRt>,
    gateway_id: String,
    estate_id: String,
    prefix: String,
    max_payload: usize,
    raw_limit: usize,
    /// Native devices, by id.
    native_devices: HashMap<String, DeviceInfo>,
}

impl Sources {
    /// The sources of `cfg`: `ingest.sources`, or one native source when it is absent.
    pub fn new(cfg: &Config) -> Self {
        let native_source = [SourceConfig::native()];
        let list: &[SourceConfig] = cfg.ingest.sources.as_deref().unwrap_or(&native_source);
        let sources = list
            .iter()
            .map(|s| {
                let name = s.effective_name().to_owned();
                let filters = match s.kind {
                    SourceKind::Native => ["event", "heartbeat"]
                        .iter()
                        .map(|leaf| {
                            format!(
                                "{}/{}/+/+/{leaf}",
                                cfg.ingest.topic_prefix, cfg.gateway.estate_id
                            )
                        })
                        .collect(),
                    _ => s.effective_topics(),
                };
                let decoder = match &s.kind {
                    SourceKind::Native => Decoder::Native,
                    SourceKind::Zigbee2mqtt => Decoder::Zigbee(zigbee::Zigbee::new(&filters)),
                    SourceKind::Frigate => Decoder::Frigate(frigate::Frigate::default()),
                    SourceKind::CameraIsapiJson { clear_after } => {
                        let after = clear_after.unwrap_or(SourceConfig::DEFAULT_CLEAR_AFTER);
                        Decoder::Isapi(isapi::Isapi::new(after.as_millis() as i64))
                    }
                    SourceKind::AccessControlJson => {
                        Decoder::AccessControl(access_control::AccessControl)
                    }
                    SourceKind::NbiotSmokeJson => Decoder::Nbiot(nbiot::Nbiot::default()),
                    SourceKind::JsonMap(map) => {
                        Decoder::JsonMap(Box::new(json_map::JsonMapDecoder::new((**map).clone())))
                    }
                };
                SourceRt {
                    devices: registered(cfg, &name),
                    name,
                    format: s.format(),
                    filters,
                    decoder,
                    protocol: "mqtt",
                }
            })
            .collect();
        Sources::with(cfg, sources)
    }

    /// The one source of `[ingest.camera_push]` (ISAPI alarms pushed over HTTP), or
    /// `None` when it is not configured. It reads no topic: alerts come in through
    /// [`Sources::push`], and [`Sources::tick`] clears them after their silence like a
    /// camera-isapi-json source's.
    pub fn camera_push(cfg: &Config) -> Option<Self> {
        let push = cfg.ingest.camera_push.as_ref()?;
        let source = SourceRt {
            devices: registered(cfg, &push.name),
            name: push.name.clone(),
            format: SourceFormat::CameraIsapiJson,
            filters: Vec::new(),
            decoder: Decoder::Isapi(isapi::Isapi::new(push.clear_after.as_millis() as i64)),
            protocol: "http",
        };
        Some(Sources::with(cfg, vec![source]))
    }

    /// Maps one pushed camera alert (see [`Sources::camera_push`]) to events: `camera`
    /// is its source id, `raw` what is kept of the body, `reference` its
    /// `source.reference`.
    pub fn push(
        &mut self,
        camera: String,
        alert: &isapi::Alert,
        raw: bytes::Bytes,
        raw_truncated: bool,
        reference: &str,
        now_ms: i64,
    ) -> Decoded {
        let Some(i) = self
            .sources
            .iter()
            .position(|s| matches!(s.decoder, Decoder::Isapi(_)))
        else {
            return Decoded::default();
        };
        let Decoder::Isapi(d) = &mut self.sources[i].decoder else {
            return Decoded::default();
        };
        let observations = d.observe(camera, alert.code, alert.active, alert.time_ms, now_ms);
        self.events(i, observations, reference, raw, raw_truncated, now_ms)
    }

    fn with(cfg: &Config, sources: Vec<SourceRt>) -> Self {
        Sources {
            sources,
            gateway_id: cfg.gateway.id.clone(),
            estate_id: cfg.gateway.estate_id.clone(),
            prefix: cfg.ingest.topic_prefix.clone(),
            max_payload: cfg.ingest.max_payload.as_usize(),
            raw_limit: cfg.ingest.raw_limit.as_usize(),
            native_devices: cfg
                .devices
                .iter()
                .filter(|d| d.source.is_none())
                .map(|d| {
                    (
                        d.id.clone(),
                        DeviceInfo {
                            kind: d.kind,
                            location: d.location.clone(),
                        },
                    )
                })
                .collect(),
        }
    }

    /// Every topic filter to subscribe to.
    pub fn filters(&self) -> Vec<String> {
        self.sources
            .iter()
            .flat_map(|s| s.filters.iter().cloned())
            .collect()
    }

    /// Decodes one message: routes it to the source whose filter matches `topic` and
    /// maps what it observed to events (0..n).
    pub fn decode(
        &mut self,
        topic: &str,
        payload: &[u8],
        now_ms: i64,
    ) -> Result<Decoded, DecodeError> {
        if topic.len() > MAX_TOPIC_BYTES {
            return Err(DecodeError::new(
                DecodeReason::BadTopic,
                format!(
                    "topic of {} bytes is longer than {MAX_TOPIC_BYTES} bytes: {:?}",
                    topic.len(),
                    cut(topic, 64)
                ),
            ));
        }
        let Some(i) = self.sources.iter().position(|s| {
            s.filters
                .iter()
                .any(|f| estate_config::topic_matches(f, topic))
        }) else {
            return Err(DecodeError::new(
                DecodeReason::BadTopic,
                format!("topic {topic:?} matches no configured source"),
            ));
        };
        if payload.len() > self.max_payload {
            return Err(decoded::error(
                self.sources[i].format,
                DecodeReason::TooLarge,
                format!(
                    "payload of {} bytes exceeds ingest.max_payload ({} bytes)",
                    payload.len(),
                    self.max_payload
                ),
            ));
        }
        let source = &mut self.sources[i];
        let observations = match &mut source.decoder {
            Decoder::Native => {
                let ctx = DecodeContext {
                    gateway_id: &self.gateway_id,
                    estate_id: &self.estate_id,
                    prefix: &self.prefix,
                    max_payload: self.max_payload,
                    raw_limit: self.raw_limit,
                    devices: &self.native_devices,
                    now_ms,
                    event_id: ulid::Ulid::new().to_string(),
                };
                let event = native::decode(topic, payload, &ctx)?;
                let unregistered = usize::from(!event.registered);
                return Ok(Decoded {
                    events: vec![event],
                    unregistered,
                });
            }
            Decoder::Zigbee(d) => d.decode(topic, payload)?,
            Decoder::Frigate(d) => d.decode(topic, payload)?,
            Decoder::Isapi(d) => d.decode(topic, payload, now_ms)?,
            Decoder::AccessControl(d) => d.decode(topic, payload)?,
            Decoder::Nbiot(d) => d.decode(topic, payload)?,
            Decoder::JsonMap(d) => d.decode(topic, payload)?,
        };
        let (raw, truncated) = bounded_raw(payload, self.raw_limit);
        let reference = format!("{}:{topic}", source.name);
        Ok(self.events(i, observations, &reference, raw, truncated, now_ms))
    }

    /// Asks the time-driven state machines (camera alarms cleared after silence) what
    /// ended by `now_ms`.
    pub fn tick(&mut self, now_ms: i64) -> Decoded {
        let mut out = Decoded::default();
        for i in 0..self.sources.len() {
            let Decoder::Isapi(d) = &mut self.sources[i].decoder else {
                continue;
            };
            let (observations, silence) = (d.tick(now_ms), d.clear_after_ms());
            if observations.is_empty() {
                continue;
            }
            let raw = bytes::Bytes::from(
                serde_json::json!({ "cleared_after_silence_ms": silence }).to_string(),
            );
            let reference = format!("{}:silence", self.sources[i].name);
            let d = self.events(i, observations, &reference, raw, false, now_ms);
            out.unregistered += d.unregistered;
            out.events.extend(d.events);
        }
        out
    }

    /// How often [`Sources::tick`] should run; `None` when no source needs it.
    pub fn tick_every_ms(&self) -> Option<i64> {
        self.sources
            .iter()
            .filter_map(|s| match &s.decoder {
                Decoder::Isapi(d) => Some((d.clear_after_ms() / 5).clamp(100, 1000)),
                _ => None,
            })
            .min()
    }

    fn events(
        &self,
        i: usize,
        observations: Vec<Observation>,
        reference: &str,
        raw: bytes::Bytes,
        raw_truncated: bool,
        now_ms: i64,
    ) -> Decoded {
        let source = &self.sources[i];
        let mut out = Decoded::default();
        for o in observations {
            let registered = source.devices.get(&o.source_id);
            let info = taxonomy::lookup(o.code);
            let kind = registered
                .map(|r| r.info.kind)
                .or(o.kind)
                .or_else(|| info.and_then(|i| i.kind));
            let mut location = registered
                .map(|r| r.info.location.clone())
                .unwrap_or_default();
            if let Some(zone) = o.zone.filter(|z| !z.is_empty()) {
                let zone = cut(&zone, MAX_ZONE_BYTES);
                location.zone = if location.zone.is_empty() {
                    zone
                } else {
                    format!("{} / {zone}", location.zone)
                };
            }
            let severity = info.map_or(estate_protocols::model::Severity::Info, |i| {
                taxonomy::default_severity(i, kind)
            });
            if registered.is_none() {
                out.unregistered += 1;
            }
            out.events.push(Event {
                seq: 0,
                event_id: ulid::Ulid::new().to_string(),
                gateway_id: self.gateway_id.clone(),
                estate_id: self.estate_id.clone(),
                device_id: registered.map_or_else(
                    || unregistered_device_id(&source.name, &o.source_id),
                    |r| r.device_id.clone(),
                ),
                device_kind: kind,
                code: o.code.to_owned(),
                severity,
                state: o.state,
                location,
                device_time_ms: o.device_time_ms,
                gateway_time_ms: now_ms,
                value: o.value,
                source: Source {
                    protocol: source.protocol.into(),
                    reference: reference.to_owned(),
                },
                raw: raw.clone(),
                raw_truncated,
                registered: registered.is_some(),
                device_seq: o.device_seq,
                alert: None,
            });
        }
        out
    }
}

/// The devices of `[[devices]]` that source `name` knows, by their id in it.
fn registered(cfg: &Config, name: &str) -> HashMap<String, Registered> {
    cfg.devices
        .iter()
        .filter_map(|d| {
            let src = d.source.as_ref()?;
            (src.name == name).then(|| {
                (
                    src.id.clone(),
                    Registered {
                        device_id: d.id.clone(),
                        info: DeviceInfo {
                            kind: d.kind,
                            location: d.location.clone(),
                        },
                    },
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
