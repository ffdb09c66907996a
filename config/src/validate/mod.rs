//! Semantic rules: what a well-typed config must also satisfy.
//!
//! Pure: the rules see typed sections and return findings named by key path; the loader
//! turns paths into file locations. A section that failed to deserialize is `None` and
//! its rules are skipped (its type errors were already reported).
//!
//! One findings type ([`Findings`], a list of [`Finding`]) and one rule signature,
//! `fn check(parts: &Parts, f: &mut Findings)`, for every section:
//!
//! - `core.rs`: gateway, brokers, store, uplink, API, devices and the size limits that
//!   meet across them.
//! - `sources.rs`: `[[ingest.sources]]` and the devices' `source`.
//! - `alerts.rs`: `[alerts]`.
//! - `modbus.rs`: `[modbus]` buses and the devices' `modbus` table; the profiles' rules
//!   run as the loader reads each profile file, since they are located in that file.

mod alerts;
mod core;
mod findings;
pub(crate) mod modbus;
mod sources;

pub(crate) use self::core::effective_client_id;
pub use self::core::{publish_overhead, INGEST_MAX_PACKET, SLED_BLOB_THRESHOLD};
pub(crate) use self::findings::{Finding, Findings, ModbusParts, Parts};

/// Runs every rule set over the sections that deserialized; the findings in rule order.
pub(crate) fn validate(parts: &Parts) -> Vec<Finding> {
    let mut f = Findings::default();
    self::core::check(parts, &mut f);
    sources::check(parts, &mut f);
    alerts::check(parts, &mut f);
    self::core::check_commands(parts, &mut f);
    modbus::check(parts, &mut f);
    f.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{ApiConfig, GatewayConfig, IngestConfig, StoreConfig, UplinkConfig};

    #[test]
    fn defaults_pass_every_rule() {
        let parts = Parts {
            gateway: Some(GatewayConfig {
                id: "gw-1".into(),
                estate_id: "31011500000000000001".into(),
                data_dir: None,
            }),
            ingest: Some(IngestConfig::default()),
            store: Some(StoreConfig::default()),
            uplink: Some(UplinkConfig::default()),
            api: Some(ApiConfig::default()),
            alerts: Some(crate::alerts::AlertsConfig::default()),
            ..Parts::default()
        };
        assert_eq!(validate(&parts), Vec::new());
    }
}
