//! `[[ingest.sources]]`: which MQTT payload format arrives on which topics, and a
//! device's identity in its source (`[[devices]] source = { name, id }`).
//!
//! When `ingest.sources` is absent the gateway reads exactly one source, the native
//! format under `ingest.topic_prefix`. When present, it reads exactly the listed ones.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A payload format the gateway decodes. Names as in config: kebab-case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceFormat {
    /// Our own firmware: `{topic_prefix}/{estate_id}/{kind}/{device_id}/event|heartbeat`.
    Native,
    /// zigbee2mqtt: `zigbee2mqtt/<friendly name>` full-state JSON, `…/availability`.
    Zigbee2mqtt,
    /// Frigate NVR: `frigate/events` (new / update / end), `frigate/available`.
    Frigate,
    /// Hikvision ISAPI-style camera alarms relayed as JSON (`eventType`, `eventState`).
    CameraIsapiJson,
    /// Access-control controllers' SDK event codes as JSON.
    AccessControlJson,
    /// NB-IoT smoke detectors' vendor state codes as JSON.
    NbiotSmokeJson,
    /// Anything else, described declaratively in `[ingest.sources.map]`.
    JsonMap,
}

impl SourceFormat {
    /// Every format, in documentation order.
    pub const ALL: &'static [SourceFormat] = &[
        SourceFormat::Native,
        SourceFormat::Zigbee2mqtt,
        SourceFormat::Frigate,
        SourceFormat::CameraIsapiJson,
        SourceFormat::AccessControlJson,
        SourceFormat::NbiotSmokeJson,
        SourceFormat::JsonMap,
    ];

    /// The name used in config, metrics and dead-letter reasons.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceFormat::Native => "native",
            SourceFormat::Zigbee2mqtt => "zigbee2mqtt",
            SourceFormat::Frigate => "frigate",
            SourceFormat::CameraIsapiJson => "camera-isapi-json",
            SourceFormat::AccessControlJson => "access-control-json",
            SourceFormat::NbiotSmokeJson => "nbiot-smoke-json",
            SourceFormat::JsonMap => "json-map",
        }
    }

    /// The topic filters subscribed when `topics` is not given. Native has none of its
    /// own: it always uses `ingest.topic_prefix`; json-map has none (`topics` required).
    pub fn default_topics(self) -> &'static [&'static str] {
        match self {
            SourceFormat::Native | SourceFormat::JsonMap => &[],
            SourceFormat::Zigbee2mqtt => &["zigbee2mqtt/#"],
            SourceFormat::Frigate => &["frigate/events", "frigate/available"],
            SourceFormat::CameraIsapiJson => &["isapi/#"],
            SourceFormat::AccessControlJson => &["acs/#"],
            SourceFormat::NbiotSmokeJson => &["nbiot/#"],
        }
    }
}

impl std::fmt::Display for SourceFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[ingest.sources]]` entry: its name and topics, and what its format needs.
///
/// In the file it is one flat table, the format named by `format` and the format's own
/// keys beside it (`clear_after`, `[ingest.sources.map]`); see [`SourceTable`]. Here the
/// format-specific part is a [`SourceKind`], so a json-map source always has its map and
/// only a camera source has a `clear_after`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SourceTable", into = "SourceTable")]
pub struct SourceConfig {
    /// The source's label: in every event's `source.reference` (`{name}:{topic}`), in
    /// dead-letter reasons, in `[[devices]] source = { name = … }` and in the device id
    /// of unregistered devices (`{name}.{their id}`). Letters, digits, `-`, `_`; unique.
    /// Default: the format's name.
    pub name: Option<String>,
    /// MQTT topic filters to subscribe to (`+` and `#` allowed). Default per format:
    /// zigbee2mqtt `["zigbee2mqtt/#"]`, frigate `["frigate/events", "frigate/available"]`,
    /// camera-isapi-json `["isapi/#"]`, access-control-json `["acs/#"]`,
    /// nbiot-smoke-json `["nbiot/#"]`; required for json-map; not allowed for native
    /// (it uses `ingest.topic_prefix`). No two sources may have filters that match the
    /// same topic.
    pub topics: Option<Vec<String>>,
    /// The payload format, with the keys only that format has.
    pub kind: SourceKind,
}

/// The format of a source and its format-specific settings (the `format` key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// `native`: our own firmware under `ingest.topic_prefix`.
    Native,
    /// `zigbee2mqtt`.
    Zigbee2mqtt,
    /// `frigate`.
    Frigate,
    /// `camera-isapi-json`.
    CameraIsapiJson {
        /// Cameras repeat an active alarm about once a second and never send a clear,
        /// so an alarm is cleared after this much silence. 1 s to 1 h. Default: `"5s"`
        /// ([`SourceConfig::DEFAULT_CLEAR_AFTER`]).
        clear_after: Option<Duration>,
    },
    /// `access-control-json`.
    AccessControlJson,
    /// `nbiot-smoke-json`.
    NbiotSmokeJson,
    /// `json-map`, read as its `[ingest.sources.map]` says.
    JsonMap(Box<JsonMap>),
}

impl SourceKind {
    /// The format's name, as in config, metrics and dead-letter reasons.
    pub fn format(&self) -> SourceFormat {
        match self {
            SourceKind::Native => SourceFormat::Native,
            SourceKind::Zigbee2mqtt => SourceFormat::Zigbee2mqtt,
            SourceKind::Frigate => SourceFormat::Frigate,
            SourceKind::CameraIsapiJson { .. } => SourceFormat::CameraIsapiJson,
            SourceKind::AccessControlJson => SourceFormat::AccessControlJson,
            SourceKind::NbiotSmokeJson => SourceFormat::NbiotSmokeJson,
            SourceKind::JsonMap(_) => SourceFormat::JsonMap,
        }
    }
}

impl SourceConfig {
    /// Default for `clear_after`.
    pub const DEFAULT_CLEAR_AFTER: Duration = Duration::from_secs(5);

    /// The one source read when `ingest.sources` is absent: native, default name.
    pub fn native() -> Self {
        SourceConfig {
            name: None,
            topics: None,
            kind: SourceKind::Native,
        }
    }

    /// The payload format.
    pub fn format(&self) -> SourceFormat {
        self.kind.format()
    }

    /// `name`, or the format's name.
    pub fn effective_name(&self) -> &str {
        self.name.as_deref().unwrap_or(self.format().as_str())
    }

    /// `topics`, or the format's defaults.
    pub fn effective_topics(&self) -> Vec<String> {
        effective_topics(self.format(), self.topics.as_deref())
    }

    /// A camera-isapi-json source's `clear_after`, or its default; `None` for the other
    /// formats, which clear nothing by silence.
    pub fn clear_after(&self) -> Option<Duration> {
        match self.kind {
            SourceKind::CameraIsapiJson { clear_after } => {
                Some(clear_after.unwrap_or(Self::DEFAULT_CLEAR_AFTER))
            }
            _ => None,
        }
    }

    /// A json-map source's `[ingest.sources.map]`.
    pub fn map(&self) -> Option<&JsonMap> {
        match &self.kind {
            SourceKind::JsonMap(map) => Some(map),
            _ => None,
        }
    }
}

fn effective_topics(format: SourceFormat, topics: Option<&[String]>) -> Vec<String> {
    match topics {
        Some(t) => t.to_vec(),
        None => format
            .default_topics()
            .iter()
            .map(|t| (*t).to_owned())
            .collect(),
    }
}

/// One `[[ingest.sources]]` table as written: every key of every format side by side.
/// The loader reads this (so each unknown or mistyped key is reported where it is), the
/// rules check which keys the format allows, and only then it becomes a
/// [`SourceConfig`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceTable {
    /// Required. The payload format: `native`, `zigbee2mqtt`, `frigate`,
    /// `camera-isapi-json`, `access-control-json`, `nbiot-smoke-json` or `json-map`.
    pub format: SourceFormat,
    /// See [`SourceConfig::name`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// See [`SourceConfig::topics`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topics: Option<Vec<String>>,
    /// camera-isapi-json only; see [`SourceKind::CameraIsapiJson`].
    #[serde(
        default,
        with = "crate::units::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub clear_after: Option<Duration>,
    /// json-map only (and required there): `[ingest.sources.map]`, how to read the
    /// payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<JsonMap>,
}

impl SourceTable {
    /// `name`, or the format's name.
    pub fn effective_name(&self) -> &str {
        self.name.as_deref().unwrap_or(self.format.as_str())
    }

    /// `topics`, or the format's defaults.
    pub fn effective_topics(&self) -> Vec<String> {
        effective_topics(self.format, self.topics.as_deref())
    }

    /// The format-specific keys that are wrong for `format`: each as the key to point
    /// at (`clear_after`, `map`, or `format` for a key missing) and what is wrong.
    pub fn format_key_problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if self.clear_after.is_some() && self.format != SourceFormat::CameraIsapiJson {
            problems.push((
                "clear_after",
                format!(
                    "only applies to format \"camera-isapi-json\" (this source is {:?})",
                    self.format.as_str()
                ),
            ));
        }
        match (self.format, &self.map) {
            (SourceFormat::JsonMap, None) => problems.push((
                "format",
                "json-map needs an [ingest.sources.map] table saying how to read the payload"
                    .to_owned(),
            )),
            (SourceFormat::JsonMap, Some(_)) | (_, None) => {}
            (_, Some(_)) => problems.push((
                "map",
                format!(
                    "only applies to format \"json-map\" (this source is {:?})",
                    self.format.as_str()
                ),
            )),
        }
        problems
    }
}

impl TryFrom<SourceTable> for SourceConfig {
    type Error = String;

    /// Fails with [`SourceTable::format_key_problems`].
    fn try_from(t: SourceTable) -> Result<Self, String> {
        let problems = t.format_key_problems();
        if !problems.is_empty() {
            let all: Vec<String> = problems
                .into_iter()
                .map(|(key, why)| format!("`{key}`: {why}"))
                .collect();
            return Err(all.join("; "));
        }
        let kind = match t.format {
            SourceFormat::Native => SourceKind::Native,
            SourceFormat::Zigbee2mqtt => SourceKind::Zigbee2mqtt,
            SourceFormat::Frigate => SourceKind::Frigate,
            SourceFormat::CameraIsapiJson => SourceKind::CameraIsapiJson {
                clear_after: t.clear_after,
            },
            SourceFormat::AccessControlJson => SourceKind::AccessControlJson,
            SourceFormat::NbiotSmokeJson => SourceKind::NbiotSmokeJson,
            // `format_key_problems` said a json-map source has its map.
            SourceFormat::JsonMap => SourceKind::JsonMap(Box::new(
                t.map
                    .ok_or("json-map needs an [ingest.sources.map] table")?,
            )),
        };
        Ok(SourceConfig {
            name: t.name,
            topics: t.topics,
            kind,
        })
    }
}

impl From<SourceConfig> for SourceTable {
    fn from(s: SourceConfig) -> Self {
        let format = s.format();
        let (clear_after, map) = match s.kind {
            SourceKind::CameraIsapiJson { clear_after } => (clear_after, None),
            SourceKind::JsonMap(map) => (None, Some(*map)),
            _ => (None, None),
        };
        SourceTable {
            format,
            name: s.name,
            topics: s.topics,
            clear_after,
            map,
        }
    }
}

/// How a json-map timestamp is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// `"2026-11-26T20:00:00Z"`.
    #[default]
    Rfc3339,
    /// Milliseconds since the epoch, a number.
    EpochMs,
    /// Seconds since the epoch, a number.
    EpochS,
}

/// `[ingest.sources.map]`: a declarative mapping from a JSON payload to events. Field
/// paths are JSON pointers (RFC 6901): `"/deviceInfo/devEui"`, `"/alarms/0/type"`.
/// Values are compared as text: `true`, `1` and `"1"` are `"true"`, `"1"`, `"1"`.
///
/// ```toml
/// [ingest.sources.map]
/// device_id = "/devEui"
/// code_field = "/object/event"
/// codes = { leak = "LEAK.ALARM", tamper = "DEV.TAMPER" }
/// state_field = "/object/state"
/// active = ["1", "alarm"]
/// cleared = ["0", "normal"]
/// time_field = "/time"
/// value_field = "/object/distance"
/// unit = "m"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonMap {
    /// Required. Pointer to the device's own id (a string or a number).
    pub device_id: String,
    /// Required. Pointer to the field whose value selects the event code in `codes`.
    /// When the payload lacks it, the message is a report without an event
    /// (`DEV.HEARTBEAT`, with the value when there is one).
    pub code_field: String,
    /// Required. Source value → taxonomy code, e.g. `{ "1" = "SMOKE.ALARM" }`. A value
    /// not listed is dead-lettered.
    pub codes: BTreeMap<String, String>,
    /// Pointer to the field saying whether the condition starts or ends. When unset,
    /// every event is `active`. Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_field: Option<String>,
    /// Values of `state_field` meaning active. Default: `["true", "1", "active", "alarm"]`.
    #[serde(default = "default_active")]
    pub active: Vec<String>,
    /// Values of `state_field` meaning cleared. Default: `["false", "0", "cleared",
    /// "normal", "inactive"]`.
    #[serde(default = "default_cleared")]
    pub cleared: Vec<String>,
    /// Pointer to the device's timestamp. Default: unset (no device time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_field: Option<String>,
    /// How `time_field` is written: `rfc3339`, `epoch_ms` or `epoch_s`.
    /// Default: `rfc3339`.
    #[serde(default)]
    pub time_format: TimeFormat,
    /// Pointer to a numeric reading kept as the event's value. Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_field: Option<String>,
    /// Unit of `value_field`, e.g. `"m"`, `"%LEL"`. Default: empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub unit: String,
    /// Pointer to the device's own message counter (a non-negative integer, e.g. a
    /// LoRaWAN `fCnt`), kept as the event's `device_seq` so the city can tell a lost or
    /// repeated uplink. A message whose counter is not a non-negative integer is
    /// dead-lettered. Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq_field: Option<String>,
    /// A topic filter on which the devices' availability / last-will messages arrive,
    /// e.g. `"lora/+/status"`; the device id is then the topic level matched by the
    /// first `+` (or the last level). Must be one of this source's `topics` or be
    /// matched by one. Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_topic: Option<String>,
    /// Availability payload meaning online. Default: `"online"`.
    #[serde(default = "default_online")]
    pub online: String,
    /// Availability payload meaning offline (usually the last will). Default: `"offline"`.
    #[serde(default = "default_offline")]
    pub offline: String,
}

fn default_active() -> Vec<String> {
    ["true", "1", "active", "alarm"].map(String::from).to_vec()
}

fn default_cleared() -> Vec<String> {
    ["false", "0", "cleared", "normal", "inactive"]
        .map(String::from)
        .to_vec()
}

fn default_online() -> String {
    "online".into()
}

fn default_offline() -> String {
    "offline".into()
}

/// `[[devices]] source = { name = "zigbee", id = "b1-101 kitchen leak" }`: the device is
/// known to source `name` by its own id (a zigbee friendly name, a camera id, a door).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSource {
    /// Required. The `name` of an `[[ingest.sources]]` entry (not a native one).
    pub name: String,
    /// Required. The device's id in that source, exactly as it sends it.
    pub id: String,
}

/// Why `filter` is not a valid MQTT topic filter.
pub fn topic_filter_problem(filter: &str) -> Option<String> {
    if filter.is_empty() {
        return Some("must not be empty".into());
    }
    if filter.chars().any(|c| c.is_control()) {
        return Some("must not contain control characters".into());
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Some("'#' must be a whole topic level and the last one".into());
        }
        if level.contains('+') && *level != "+" {
            return Some("'+' must be a whole topic level".into());
        }
    }
    None
}

/// True when some topic matches both filters (two valid filters).
pub fn filters_overlap(a: &str, b: &str) -> bool {
    let mut a = a.split('/');
    let mut b = b.split('/');
    loop {
        match (a.next(), b.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (None, None) => return true,
            (Some(x), Some(y)) => {
                if x != "+" && y != "+" && x != y {
                    return false;
                }
            }
            // "a/#" also matches "a", but "#" was handled above.
            _ => return false,
        }
    }
}

/// True when `topic` (a topic name, no wildcards) matches `filter`.
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    // Topics starting with '$' are never matched by a leading wildcard (MQTT 4.7.2).
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (None, None) => return true,
            (Some("+"), Some(_)) => {}
            (Some(x), Some(y)) if x == y => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_checked_level_by_level() {
        for good in ["a/#", "#", "a/+/b", "+", "zigbee2mqtt/#", "frigate/events"] {
            assert_eq!(topic_filter_problem(good), None, "{good}");
        }
        for bad in ["", "a/#/b", "a#", "a/b+", "a/+b/c"] {
            assert!(topic_filter_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn overlap_and_match() {
        assert!(filters_overlap("a/#", "a/b/c"));
        assert!(filters_overlap("a/+/c", "a/b/+"));
        assert!(filters_overlap("#", "x"));
        assert!(!filters_overlap("a/+", "a/b/c"));
        assert!(!filters_overlap("zigbee2mqtt/#", "frigate/events"));
        assert!(!filters_overlap(
            "estate/E/+/+/event",
            "estate/E/+/+/heartbeat"
        ));
        assert!(topic_matches("a/#", "a/b/c"));
        assert!(topic_matches("a/#", "a"));
        assert!(topic_matches("a/+/c", "a/b/c"));
        assert!(!topic_matches("a/+", "a/b/c"));
        assert!(!topic_matches("#", "$SYS/x"));
        assert!(topic_matches(
            "zigbee2mqtt/#",
            "zigbee2mqtt/b1 leak/availability"
        ));
    }
}
