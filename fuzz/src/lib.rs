//! What the fuzz targets share: the gateway config they decode with, the input format of
//! the payload targets, and the invariants every decoded event must hold.
//!
//! Payload targets (`native`, `zigbee2mqtt`, …) feed [`Sources::decode`] exactly as MQTT
//! ingest does. One input is a sequence of messages, one per line: `SUFFIX<TAB>PAYLOAD`
//! is a message on the format's base topic plus `SUFFIX`, a line without a tab is a
//! payload on the format's usual topic. Time advances 700 ms per message and the
//! silence timers tick after each, so the stateful decoders (change-only zigbee2mqtt,
//! Frigate incidents, camera repeats) are driven through their transitions.

use std::sync::OnceLock;

use estate_config::Config;
use estate_gateway::ingest;
use estate_gateway::ingest::formats::{DecodeError, Decoded, Sources};
use estate_protocols::model::Event;
use estate_protocols::{pb, taxonomy};
use prost::Message;

pub const ESTATE: &str = "31011500000000000001";
pub const GATEWAY: &str = "gw-fuzz";

/// Room the config promises an event's fields besides its raw bytes (`ingest.raw_limit`
/// is "at least 1 KiB below store.record_max_bytes and uplink.max_batch_bytes").
pub const EVENT_FIELDS_ROOM: usize = 1024;

/// The ingest side of the fuzzing gateway: every format, a few registered devices, a
/// small `raw_limit` so that truncation is reached with short inputs.
pub fn config_text() -> String {
    format!(
        r#"
[gateway]
id = "{GATEWAY}"
estate_id = "{ESTATE}"

[ingest]
raw_limit = "256 B"
max_payload = "8 KiB"
{mixed}
[[ingest.sources]]
format = "json-map"
name = "lora"
topics = ["lora/+/up", "lora/+/status"]
[ingest.sources.map]
device_id = "/devEui"
code_field = "/object/event"
codes = {{ leak = "LEAK.ALARM", smoke = "SMOKE.ALARM", "1" = "GAS.AL1" }}
state_field = "/object/state"
time_field = "/time"
time_format = "epoch_s"
value_field = "/object/level"
unit = "%LEL"
availability_topic = "lora/+/status"

[[devices]]
id = "smoke-1-1-1"
kind = "smoke"
location = {{ building = "1", unit = "1", floor = "1", room = "101" }}

[[devices]]
id = "lora-leak"
kind = "water_leak"
location = {{ building = "5" }}
source = {{ name = "lora", id = "0004a30b001c1234" }}
"#,
        mixed = estate_sim::formats::mixed_estate_config("", "5s"),
    )
}

/// The validated fuzzing config (parsed once).
pub fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        Config::from_toml_str(&config_text(), "fuzz.toml").unwrap_or_else(|e| panic!("{e}"))
    })
}

/// A payload format the gateway decodes, with where its messages arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Native,
    Zigbee2mqtt,
    Frigate,
    CameraIsapiJson,
    AccessControlJson,
    NbiotSmokeJson,
    JsonMap,
}

impl Format {
    /// (base topic that a line's suffix is appended to, the usual topic).
    fn topics(self) -> (String, String) {
        let (base, usual) = match self {
            Format::Native => (format!("estate/{ESTATE}/"), "smoke/smoke-1-1-1/event"),
            Format::Zigbee2mqtt => ("zigbee2mqtt/".into(), estate_sim::formats::ZIGBEE_LEAK),
            Format::Frigate => ("frigate/".into(), "events"),
            Format::CameraIsapiJson => ("isapi/".into(), "4419b66d2485"),
            Format::AccessControlJson => ("acs/".into(), "ctl-01/event"),
            Format::NbiotSmokeJson => ("nbiot/".into(), "868120300000001"),
            Format::JsonMap => ("lora/".into(), "0004a30b001c1234/up"),
        };
        let usual = format!("{base}{usual}");
        (base, usual)
    }
}

/// The messages of one input: (topic, payload).
pub fn messages(format: Format, data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let (base, usual) = format.topics();
    data.split(|&b| b == b'\n')
        .map(|line| match line.iter().position(|&b| b == b'\t') {
            Some(tab) => (
                format!("{base}{}", String::from_utf8_lossy(&line[..tab])),
                line[tab + 1..].to_vec(),
            ),
            None => (usual.clone(), line.to_vec()),
        })
        .collect()
}

/// Start of the fuzzed clock (2026-11-26T20:00:00Z).
pub const T0_MS: i64 = 1_764_187_200_000;

/// Decodes every message of `data` as ingest does and checks each outcome.
pub fn sources(format: Format, data: &[u8]) {
    let cfg = config();
    let mut sources = Sources::new(cfg);
    let mut now = T0_MS;
    for (topic, payload) in messages(format, data) {
        now += 700;
        match sources.decode(&topic, &payload, now) {
            Ok(decoded) => check_decoded(&decoded, Some(&payload), now),
            Err(e) => check_error(&topic, &payload, &e),
        }
        check_decoded(&sources.tick(now), None, now);
    }
}

/// What one message (or a tick) produced holds the contract's limits.
pub fn check_decoded(decoded: &Decoded, payload: Option<&[u8]>, now: i64) {
    let cfg = config();
    let raw_limit = cfg.ingest.raw_limit.as_usize();
    assert!(decoded.unregistered <= decoded.events.len());
    // One message describes one device: a handful of conditions at most.
    assert!(decoded.events.len() <= 8, "{} events", decoded.events.len());
    for e in &decoded.events {
        check_event(e, raw_limit);
        assert_eq!(e.gateway_time_ms, now);
        if let Some(payload) = payload {
            assert!(payload.starts_with(&e.raw), "raw is the payload's start");
            assert_eq!(e.raw_truncated, payload.len() > raw_limit);
        }
    }
    assert_eq!(
        decoded.unregistered,
        decoded.events.iter().filter(|e| !e.registered).count()
    );
}

/// One event: a known code, the gateway's identity, raw bytes within `raw_limit`, every
/// other field within the room the config keeps for them, and a lossless protobuf
/// round trip (what the store writes and the city reads).
pub fn check_event(e: &Event, raw_limit: usize) {
    assert!(taxonomy::lookup(&e.code).is_some(), "code {:?}", e.code);
    assert_eq!(e.gateway_id, GATEWAY);
    assert_eq!(e.estate_id, ESTATE);
    assert!(!e.device_id.is_empty());
    assert!(e.raw.len() <= raw_limit);
    assert!(!e.raw_truncated || e.raw.len() == raw_limit);
    let wire = pb::Event::from(e);
    let len = wire.encoded_len();
    assert!(
        len <= raw_limit + EVENT_FIELDS_ROOM,
        "event of {len} bytes (raw {}): device_id {} bytes, reference {} bytes, location {:?}, value {:?}",
        e.raw.len(),
        e.device_id.len(),
        e.source.reference.len(),
        e.location,
        e.value,
    );
    let back =
        Event::try_from(pb::Event::decode(wire.encode_to_vec().as_slice()).expect("decodes"))
            .expect("converts");
    assert_eq!(&back, e);
}

/// The dead letter ingest stores for a message that did not decode stays small: a
/// stable reason label, the topic and reason cut, the raw bytes within `raw_limit`.
pub fn check_error(topic: &str, payload: &[u8], e: &DecodeError) {
    let raw_limit = config().ingest.raw_limit.as_usize();
    assert!(!e.reason.as_str().is_empty() && e.reason.as_str().is_ascii());
    let letter = ingest::dead_letter(topic, payload, e, raw_limit, T0_MS);
    assert!(letter.source.len() <= ingest::DEAD_LETTER_TEXT_MAX);
    assert!(
        letter.reason.len() <= ingest::DEAD_LETTER_TEXT_MAX,
        "reason of {} bytes",
        letter.reason.len()
    );
    assert!(payload.starts_with(&letter.raw) && letter.raw.len() <= raw_limit);
    assert_eq!(letter.original_len, payload.len());
}

pub mod city;
pub mod modbus;
pub mod settings;
