//! The rules of `[commands]` and `[commands.broadcast]` (config/src/commands.rs).

use std::time::Duration;

use super::{Findings, Parts};
use crate::commands::{BroadcastConfig, CommandsConfig};

/// The rules of `[commands]`, including broadcast targets among the devices.
pub(super) fn check(parts: &Parts, f: &mut Findings) {
    if let Some(commands) = &parts.commands {
        for (path, message) in check_switches(commands) {
            f.at(path, message);
        }
        let devices: Vec<_> = parts
            .devices
            .iter()
            .map(|(_, d)| (d.id.clone(), d.modbus.is_some()))
            .collect();
        for (path, message) in check_broadcast(&commands.broadcast, &devices) {
            f.at(path, message);
        }
    }
}

/// The rules of `[commands]` (its switches and times; `[commands.broadcast]` has its
/// own): `(key path, message)` for each problem.
pub(crate) fn check_switches(c: &CommandsConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let w = c.roll_call_answer_within;
    if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&w) {
        out.push((
            "commands.roll_call_answer_within".to_owned(),
            format!(
                "must be between 1s and 1h (the longest a roll call may wait for the person on duty), found {}",
                humantime::format_duration(w)
            ),
        ));
    }
    out
}

/// The rules of `[commands.broadcast]`, as (key path, message). `devices` are the
/// configured devices as (id, has a `modbus` table).
pub(crate) fn check_broadcast(
    b: &BroadcastConfig,
    devices: &[(String, bool)],
) -> Vec<(String, String)> {
    let mut f = Vec::new();
    let d = b.max_duration;
    if d < Duration::from_secs(1) || d > Duration::from_secs(3600) {
        f.push((
            "commands.broadcast.max_duration".into(),
            format!(
                "must be between 1s and 1h, found {}",
                humantime::format_duration(d)
            ),
        ));
    }
    if b.enabled && b.groups.is_empty() {
        f.push((
            "commands.broadcast.enabled".into(),
            "broadcasts are enabled but no [[commands.broadcast.groups.NAME]] is configured: name the outputs they may switch".into(),
        ));
    }
    for (name, outputs) in &b.groups {
        let group = format!("commands.broadcast.groups.{name}");
        if name.is_empty() || name.len() > 64 {
            f.push((group.clone(), "a group name has 1 to 64 characters".into()));
        } else if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            f.push((
                group.clone(),
                format!("{name:?} contains {c:?}; the city names groups in its commands, so only letters, digits, '-' and '_' are allowed"),
            ));
        }
        if outputs.is_empty() {
            f.push((group.clone(), "must list at least one output".into()));
        }
        for (i, o) in outputs.iter().enumerate() {
            let key = |k: &str| format!("{group}[{i}].{k}");
            let has_modbus = devices.iter().find(|d| d.0 == o.device).map(|d| d.1);
            let coil = super::check_write_target(
                &mut f,
                &key,
                "broadcast",
                &o.device,
                has_modbus,
                o.coil,
                o.register,
            );
            if coil {
                for (k, v) in [("on", o.on), ("off", o.off)] {
                    if v > 1 {
                        f.push((key(k), format!("a coil takes 0 or 1, found {v}")));
                    }
                }
            }
            if o.on == o.off {
                f.push((
                    key("off"),
                    format!(
                        "`on` and `off` are both {}: the output would never change",
                        o.on
                    ),
                ));
            }
        }
    }
    f
}
