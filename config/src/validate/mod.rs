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
//! - `camera_push.rs`: `[ingest.camera_push]`.
//! - `alerts.rs`: `[alerts]`.
//! - `modbus.rs`: `[modbus]` buses and the devices' `modbus` table; the profiles' rules
//!   run as the loader reads each profile file, since they are located in that file.

mod alerts;
mod camera_push;
pub(crate) mod commands;
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
    camera_push::check(parts, &mut f);
    alerts::check(parts, &mut f);
    self::commands::check(parts, &mut f);
    modbus::check(parts, &mut f);
    f.0
}

/// The rules of one Modbus write target (an alert linkage, a broadcast output), as (key
/// path, message): `device` must be configured (`has_modbus` is its entry: whether it
/// has a `modbus` table) and have a `modbus` table, and exactly one of `coil` and
/// `register` be set. `what` names the writes in messages (`linkage`, `broadcast`).
/// Returns whether the target is a coil, whose values the caller checks (0 or 1).
pub(crate) fn check_write_target(
    f: &mut Vec<(String, String)>,
    key: &dyn Fn(&str) -> String,
    what: &str,
    device: &str,
    has_modbus: Option<bool>,
    coil: Option<u16>,
    register: Option<u16>,
) -> bool {
    match has_modbus {
        None => f.push((
            key("device"),
            format!("no device {device:?} is configured in [[devices]]"),
        )),
        Some(false) => f.push((
            key("device"),
            format!("device {device:?} has no `modbus` table; {what} writes go over Modbus"),
        )),
        Some(true) => {}
    }
    match (coil, register) {
        (None, None) => f.push((
            key("coil"),
            "set `coil` or `register`: the address to write".into(),
        )),
        (Some(_), Some(_)) => f.push((
            key("register"),
            "set only one of `coil` and `register`".into(),
        )),
        (Some(_), None) => return true,
        (None, Some(_)) => {}
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{ApiConfig, GatewayConfig, IngestConfig, StoreConfig, UplinkConfig};

    /// Alert linkages and broadcast outputs write over Modbus: the same target rules,
    /// each problem at its own key, named for what writes.
    #[test]
    fn write_targets_need_a_modbus_device_and_one_address() {
        let key = |k: &str| format!("t[0].{k}");
        let run = |has_modbus, coil, register| {
            let mut f = Vec::new();
            let is_coil =
                check_write_target(&mut f, &key, "linkage", "siren", has_modbus, coil, register);
            (f, is_coil)
        };
        assert_eq!(run(Some(true), Some(3), None), (vec![], true));
        assert_eq!(run(Some(true), None, Some(40001)), (vec![], false));
        let (f, _) = run(None, None, None);
        assert_eq!(
            f,
            vec![
                (
                    "t[0].device".to_owned(),
                    "no device \"siren\" is configured in [[devices]]".to_owned()
                ),
                (
                    "t[0].coil".to_owned(),
                    "set `coil` or `register`: the address to write".to_owned()
                ),
            ]
        );
        let (f, _) = run(Some(false), Some(1), Some(2));
        assert_eq!(
            f[0].1,
            "device \"siren\" has no `modbus` table; linkage writes go over Modbus"
        );
        assert_eq!(
            f[1],
            (
                "t[0].register".to_owned(),
                "set only one of `coil` and `register`".to_owned()
            )
        );
    }

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
