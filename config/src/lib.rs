//! `estate-config`: the gateway's configuration — its types, loading, and validation
//! that reports every problem at once, each with its file, line, column and key path.
//!
//! The config is one TOML file. Only `[gateway]` with `id` and `estate_id` is required;
//! every other section has defaults (documented on each field, defined once in the
//! `Default` impl of its struct):
//!
//! ```toml
//! [gateway]
//! id = "gw-1"
//! estate_id = "31011500000000000001"
//! ```
//!
//! The shipped, commented default is `config/gateway.toml`; `config/examples/broken.toml`
//! shows what the validator reports.
//!
//! # Layout
//!
//! - `schema.rs`: the sections ([`Config`], [`GatewayConfig`], [`IngestConfig`],
//!   [`BrokerConfig`], [`StoreConfig`], [`UplinkConfig`], [`ApiConfig`],
//!   [`DeviceConfig`]) — field doc comments are the user documentation of each key.
//! - `units.rs`: value types: [`ByteSize`] (`"64 KiB"`), [`Secret`] (prints `***`).
//!   Durations are humantime strings (`"30s"`, `"2ms"`).
//! - `load.rs`: text → document → sections, collecting type errors per key.
//! - `validate/`: semantic rules over the typed sections, all run from `validate()` with
//!   one signature (`check(&Parts, &mut Findings)`): `findings.rs` (the one findings type),
//!   `core.rs` (ranges, cross-field checks, topic-safe ids, duplicate devices),
//!   `commands.rs` (`[commands]` and broadcast outputs), `sources.rs`, `alerts.rs`,
//!   `modbus.rs` (buses and devices' `modbus` tables); `check_write_target` in `mod.rs`
//!   is the one rule for a Modbus write target (a linkage, a broadcast output).
//! - `secrets.rs`: `password_file` / `password_env` / `token_file` / `token_env`, read
//!   into their [`Secret`] field at load time.
//! - `warnings.rs`: [`Config::warnings`] — insecure but valid settings (a key file others
//!   can read, an uplink without TLS, an API beyond loopback without a token).
//! - `modbus.rs`: `[modbus]` buses, the devices' `modbus` table, and device profiles
//!   ([`ModbusConfig`], [`BusConfig`], [`DeviceModbusConfig`], [`Profile`], [`Point`]);
//!   `validate/modbus.rs` their rules (a profile's own rules run as its file is read, so
//!   that its problems are located in it). Profile files named in `modbus.profile_files` are
//!   read relative to the config file's folder, and their problems are located in them.
//! - `sources.rs`: `[[ingest.sources]]` ([`SourceConfig`] with its [`SourceKind`],
//!   [`SourceFormat`], [`JsonMap`]) and a device's identity in its source
//!   ([`DeviceSource`]); MQTT topic-filter helpers. Each source is deserialized on its own,
//!   like a device, as the flat [`SourceTable`] written in the file; `validate/sources.rs`
//!   checks names, filters (valid, not overlapping), format-specific keys and taxonomy
//!   codes, and a table whose keys fit its format becomes a [`SourceConfig`].
//! - `camera_push.rs`: `[ingest.camera_push]`, the HTTP listener ISAPI cameras push
//!   alarms to ([`CameraPushConfig`]); `validate/camera_push.rs` its rules, `secrets.rs`
//!   reads its users' passwords.
//! - `alerts.rs`: `[alerts]` — local alert rules (severity overrides, debounce,
//!   hold-open, offline detection, escalation, correlation, linkage, silence windows),
//!   [`AlertsConfig`]; `validate/alerts.rs` their rules.
//! - `error.rs`: [`ConfigErrors`] / [`ConfigProblem`].
//!
//! # Flow
//!
//! [`Config::load`] reads the file (the only I/O in this crate) and hands the text to
//! [`Config::from_toml_str`]. A TOML syntax error stops there, as a single problem. Then
//! every section and every `[[devices]]` entry is deserialized on its own, so a bad key in
//! one place never hides a bad key in another; then the semantic rules run on whatever
//! deserialized. Either the result is a `Config` that passed every rule, or a
//! [`ConfigErrors`] listing all problems in file order:
//!
//! ```text
//! config/examples/broken.toml:30:8: uplink.mqtt.port: invalid type: string "abc", expected a port number between 1 and 65535
//! config/examples/broken.toml:31:17: uplink.mqtt.reconnect_min: reconnect_min (1m) must not exceed reconnect_max (10s)
//! config/examples/broken.toml:48:8: devices[1].kind: unknown variant `smoky`, expected one of `access_control`, `smoke`, ...
//! config/examples/broken.toml:51:6: devices[2].id: duplicate device id "smoke-1-1-3", already used by devices[0] (line 42)
//! ```
//!
//! ```no_run
//! # fn main() -> Result<(), estate_config::ConfigErrors> {
//! let config = estate_config::Config::load("config/gateway.toml".as_ref())?;
//! println!("{} serves estate {}", config.gateway.id, config.gateway.estate_id);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod alerts;
mod camera_push;
mod commands;
mod error;
mod load;
mod modbus;
mod schema;
mod secrets;
mod sources;
mod units;
mod validate;
mod warnings;

use std::path::Path;

pub use alerts::{
    is_life_safety_code, AlertsConfig, Chattering, Correlation, Escalation, Flood, Linkage,
    OfflineRules, Scope, Shelving, Silence,
};
pub use camera_push::{
    CameraIdFrom, CameraPushConfig, PushAuth, PushUser, DEFAULT_CAMERA_PUSH_NAME,
};
pub use commands::{BroadcastConfig, BroadcastOutput, CommandsConfig};
pub use error::{ConfigErrors, ConfigProblem};
pub use load::SECTIONS;
pub use modbus::{
    BitField, BusConfig, BusTransport, DataType, DeviceModbusConfig, ModbusConfig, Order, Parity,
    Point, Profile, Report, Table, Threshold, MAX_READ_BITS, MAX_READ_REGISTERS,
};
pub use schema::{
    parse_host_port, AnonymousRead, ApiConfig, BrokerConfig, Config, DeviceConfig, GatewayConfig,
    IngestConfig, StoreConfig, TlsConfig, UplinkConfig,
};
pub use sources::{
    filters_overlap, topic_filter_problem, topic_matches, DeviceSource, JsonMap, SourceConfig,
    SourceFormat, SourceKind, SourceTable, TimeFormat,
};
pub use units::{ByteSize, ByteSizeError, Secret};
pub use validate::{publish_overhead, INGEST_MAX_PACKET, SLED_BLOB_THRESHOLD};
pub use warnings::ConfigWarning;

impl Config {
    /// Reads and validates the config file at `path`. Problems are located by `path` as
    /// given; an unreadable file is a single problem.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let file = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Config::from_toml_str(&text, &file),
            Err(err) => Err(ConfigErrors(vec![ConfigProblem {
                file,
                line: None,
                column: None,
                path: String::new(),
                message: format!("cannot read config file: {err}"),
            }])),
        }
    }

    /// Parses and validates config text. `origin` names the text in problem locations
    /// (usually its file name).
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigErrors> {
        load::from_toml_str(text, origin)
    }

    /// The configured device with this id.
    pub fn device(&self, id: &str) -> Option<&DeviceConfig> {
        self.devices.iter().find(|d| d.id == id)
    }

    /// The MQTT client id for ingest: `ingest.mqtt.client_id`, or
    /// `estate-gw-{gateway.id}-ingest`. Stable across restarts, so the broker keeps the
    /// persistent session (and the QoS 1 messages queued for it while the gateway was
    /// down).
    pub fn ingest_client_id(&self) -> String {
        validate::effective_client_id(&self.ingest.mqtt, &self.gateway.id, "ingest")
    }

    /// The MQTT client id for the uplink: `uplink.mqtt.client_id`, or
    /// `estate-gw-{gateway.id}-uplink`. Stable across restarts (persistent session).
    pub fn uplink_client_id(&self) -> String {
        validate::effective_client_id(&self.uplink.mqtt, &self.gateway.id, "uplink")
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_alerts;
#[cfg(test)]
mod tests_camera_push;
#[cfg(test)]
mod tests_modbus;
#[cfg(test)]
mod tests_sources;
