//! The vocabulary every decoder shares: what a message says about a device
//! ([`Observation`]), what it decoded to ([`Decoded`]), why it did not ([`DecodeError`]
//! with its [`DecodeReason`]), and the bounds on what is kept from a message.
//!
//! Decoders import from here (and from `fields.rs`), never from `formats/mod.rs`, which
//! imports them: the dependency runs one way.

use estate_config::SourceFormat;
use estate_protocols::model::{DeviceKind, Event, EventState, Location, Reading};

/// Why a message was dead-lettered: the stable label of `estate_dead_lettered{reason}`
/// and the first word of a dead letter's reason. Renaming one breaks dashboards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecodeReason {
    /// The payload exceeds `ingest.max_payload`.
    TooLarge,
    /// The topic is too long, matches no source, or does not name what the format needs.
    BadTopic,
    /// The payload is not UTF-8.
    InvalidUtf8,
    /// The payload is not JSON, or not a JSON object.
    BadJson,
    /// A camera's pushed body is not well-formed XML, not an `EventNotificationAlert`, or
    /// a multipart body without one (`ingest/camera_push/`).
    BadXml,
    /// A field is missing, of the wrong type, or has a value the format does not know.
    BadField,
    /// A native event code that is not in the taxonomy.
    UnknownCode,
}

impl DecodeReason {
    /// Every reason, for tests and metric pre-registration.
    pub const ALL: &'static [DecodeReason] = &[
        DecodeReason::TooLarge,
        DecodeReason::BadTopic,
        DecodeReason::InvalidUtf8,
        DecodeReason::BadJson,
        DecodeReason::BadXml,
        DecodeReason::BadField,
        DecodeReason::UnknownCode,
    ];

    /// The label: `bad_field`, `bad_topic`, …
    pub fn as_str(self) -> &'static str {
        match self {
            DecodeReason::TooLarge => "too_large",
            DecodeReason::BadTopic => "bad_topic",
            DecodeReason::InvalidUtf8 => "invalid_utf8",
            DecodeReason::BadJson => "bad_json",
            DecodeReason::BadXml => "bad_xml",
            DecodeReason::BadField => "bad_field",
            DecodeReason::UnknownCode => "unknown_code",
        }
    }
}

impl std::fmt::Display for DecodeReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an input was dead-lettered: `reason` is the stable label, `detail` says exactly
/// what was wrong. Shown (and stored in the dead letter) as `{reason}: {detail}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct DecodeError {
    /// The label counted in `estate_dead_lettered`.
    pub reason: DecodeReason,
    /// What was wrong, for the operator.
    pub detail: String,
}

impl DecodeError {
    /// A decode error with no format named (topic routing, the native format).
    pub fn new(reason: DecodeReason, detail: impl Into<String>) -> Self {
        DecodeError {
            reason,
            detail: detail.into(),
        }
    }
}

/// A decode error of `format` (its `detail` starts with the format's name).
pub fn error(format: SourceFormat, reason: DecodeReason, detail: impl AsRef<str>) -> DecodeError {
    DecodeError::new(reason, format!("{format}: {}", detail.as_ref()))
}

/// What one message (or a timer) says about one device of a source.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The device's id in its source (a zigbee friendly name, a camera id, a door).
    pub source_id: String,
    /// A taxonomy code.
    pub code: &'static str,
    /// Active or cleared.
    pub state: EventState,
    /// The device's own timestamp, when the payload has one.
    pub device_time_ms: Option<i64>,
    /// A reading (battery %, distance), when the payload has one.
    pub value: Option<Reading>,
    /// Where within the device's area it happened (Frigate zones); added to the location.
    pub zone: Option<String>,
    /// The kind the payload implies, for unregistered devices.
    pub kind: Option<DeviceKind>,
    /// The device's own message counter, when the payload has one.
    pub device_seq: Option<u64>,
}

impl Observation {
    /// An active/cleared `code` of device `source_id`, nothing else known.
    pub fn new(source_id: impl Into<String>, code: &'static str, state: EventState) -> Self {
        Observation {
            source_id: source_id.into(),
            code,
            state,
            device_time_ms: None,
            value: None,
            zone: None,
            kind: None,
            device_seq: None,
        }
    }

    /// With the device's timestamp.
    pub fn with_time(mut self, t: Option<i64>) -> Self {
        self.device_time_ms = t;
        self
    }

    /// With a reading.
    pub fn with_value(mut self, v: Option<Reading>) -> Self {
        self.value = v;
        self
    }

    /// With the device's message counter.
    pub fn with_seq(mut self, seq: Option<u64>) -> Self {
        self.device_seq = seq;
        self
    }

    /// With the kind the payload implies.
    pub fn with_kind(mut self, k: Option<DeviceKind>) -> Self {
        self.kind = k;
        self
    }
}

/// What one message decoded to.
#[derive(Debug, Default)]
pub struct Decoded {
    /// In the order they are to be stored.
    pub events: Vec<Event>,
    /// How many of them come from devices the config does not list.
    pub unregistered: usize,
}

/// What the gateway knows about a configured device.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    /// The configured kind (the authority over what a payload implies).
    pub kind: DeviceKind,
    /// The configured location.
    pub location: Location,
}

/// Longest topic decoded, in bytes; a longer one is dead-lettered (`bad_topic`). Every
/// event keeps its topic (`source.reference`) and most name their device from it, and
/// an event's fields besides its raw bytes must fit in the 1 KiB that `ingest.raw_limit`
/// leaves of a stored record and of an uplink batch. Found by the fuzz targets: a 700-byte
/// topic made a 1.5 KiB event with no raw bytes at all.
pub const MAX_TOPIC_BYTES: usize = 256;

/// Longest device id taken from a message (the native topic's `{device_id}`, the
/// `{source}.{id}` of an unregistered device), in bytes.
pub const MAX_DEVICE_ID_BYTES: usize = 128;

/// Longest unit (`"%LEL"`) kept from a payload, in bytes; a longer one is cut (the whole
/// payload is in the event's raw bytes).
pub const MAX_UNIT_BYTES: usize = 16;
/// Longest zone (Frigate's zone names) kept from a payload, in bytes; cut like a unit.
pub const MAX_ZONE_BYTES: usize = 128;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_labels_are_the_metric_labels_dashboards_use() {
        let labels: Vec<String> = DecodeReason::ALL.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            labels,
            [
                "too_large",
                "bad_topic",
                "invalid_utf8",
                "bad_json",
                "bad_xml",
                "bad_field",
                "unknown_code"
            ]
        );
        let e = DecodeError::new(
            DecodeReason::BadTopic,
            "topic \"x\" matches no configured source",
        );
        assert_eq!(
            e.to_string(),
            "bad_topic: topic \"x\" matches no configured source"
        );
    }
}
