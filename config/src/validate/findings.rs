//! The one findings type of the rules, and the sections they read.
//!
//! Every rule set (`core.rs`, `sources.rs`, `alerts.rs`, `modbus.rs`) pushes into a
//! [`Findings`]: a key path, the other keys the rule read, and a message. The loader
//! (`load.rs`) turns the paths into file, line and column.

use std::collections::HashMap;

use crate::error::ConfigProblem;
use crate::modbus::{BusConfig, BusTransport, ModbusConfig};
use crate::schema::{
    ApiConfig, DeviceConfig, GatewayConfig, IngestConfig, StoreConfig, UplinkConfig,
};

/// The sections as far as they deserialized.
#[derive(Debug)]
pub(crate) struct Parts {
    pub gateway: Option<GatewayConfig>,
    pub ingest: Option<IngestConfig>,
    pub store: Option<StoreConfig>,
    pub uplink: Option<UplinkConfig>,
    pub api: Option<ApiConfig>,
    pub alerts: Option<crate::alerts::AlertsConfig>,
    pub commands: Option<crate::CommandsConfig>,
    /// Devices that deserialized, with their index in `[[devices]]`.
    pub devices: Vec<(usize, DeviceConfig)>,
    /// Every device id that is at least a string, including devices that failed to
    /// deserialize for another reason, so duplicates are found among all of them.
    pub device_ids: Vec<(usize, String)>,
    /// `[[ingest.sources]]` tables that deserialized, with their index (as written: their
    /// format-specific keys are checked by the rules).
    pub sources: Vec<(usize, crate::sources::SourceTable)>,
    /// Every source's effective name that is known, including sources that failed to
    /// deserialize but have a `name`.
    pub source_names: Vec<(usize, String)>,
    /// False when some `[[ingest.sources]]` entry failed to deserialize (so a name not
    /// found among them may still be meant).
    pub sources_complete: bool,
    /// The broker keys that the file gives explicitly, of those whose default cannot
    /// tell (`ingest.mqtt.host`, `….port`, `uplink.mqtt.host`, `….port`).
    pub given: Vec<String>,
    /// `[modbus]`, its buses and the profiles of its profile files.
    pub modbus: ModbusParts,
}

impl Default for Parts {
    fn default() -> Self {
        Parts {
            gateway: None,
            ingest: None,
            store: None,
            uplink: None,
            api: None,
            alerts: None,
            commands: None,
            devices: Vec::new(),
            device_ids: Vec::new(),
            sources: Vec::new(),
            source_names: Vec::new(),
            sources_complete: true,
            given: Vec::new(),
            modbus: ModbusParts::default(),
        }
    }
}

/// What `[modbus]` yielded.
#[derive(Debug, Default)]
pub(crate) struct ModbusParts {
    /// `None` when the section itself is broken (already reported).
    pub config: Option<ModbusConfig>,
    /// Buses that deserialized, with their index.
    pub buses: Vec<(usize, BusConfig)>,
    /// Every bus name seen (with its transport when the bus deserialized).
    pub bus_names: HashMap<String, Option<BusTransport>>,
    /// Problems located in profile files, each file's in file order.
    pub profile_problems: Vec<ConfigProblem>,
    /// Every profile name seen in a profile file, including profiles that failed.
    pub profile_names: Vec<String>,
    /// Every profile file was read and parsed (so an unknown profile is really unknown).
    pub profiles_complete: bool,
}

/// One rule violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    /// Where to point the user.
    pub path: String,
    /// Other keys the rule read. The finding is reported at the first of `path` and
    /// these that the file actually sets; and if any of them was already reported as
    /// broken (and so replaced by its default), it is dropped as a likely consequence.
    pub involves: Vec<String>,
    /// Another place the message refers to (shown with its line by the loader).
    pub related: Option<String>,
    pub message: String,
}

#[derive(Default)]
pub(crate) struct Findings(pub(crate) Vec<Finding>);

impl Findings {
    pub(crate) fn at(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Finding {
            path: path.into(),
            involves: Vec::new(),
            related: None,
            message: message.into(),
        });
    }

    /// A finding whose rule also read `other` keys.
    pub(crate) fn across(
        &mut self,
        path: impl Into<String>,
        other: &[String],
        message: impl Into<String>,
    ) {
        self.0.push(Finding {
            path: path.into(),
            involves: other.to_vec(),
            related: None,
            message: message.into(),
        });
    }
}
