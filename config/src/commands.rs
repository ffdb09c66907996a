//! `[commands]`: what the city may ask of this gateway over the uplink (issue 14), and
//! `[commands.broadcast]`, the outputs a broadcast switches.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[commands]`: commands from the city platform, received on the uplink connection
/// (`{uplink.topic_prefix}/{estate_id}/commands`) and answered on `…/results`. Every
/// command and its result are recorded. Each kind can be turned off; a command of a kind
/// that is off is answered `REFUSED`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommandsConfig {
    /// Subscribe to the city's commands at all. Default: `true`.
    pub enabled: bool,
    /// Roll calls (查岗) shown to the person on duty. Default: `true`.
    pub roll_call: bool,
    /// The city's handling state attached to local alerts. Default: `true`.
    pub alarm_handling: bool,
    /// Resending a seq range from the store. Default: `true`.
    pub resend: bool,
    /// Status on request. Default: `true`.
    pub status: bool,
    /// How long the person on duty has to answer a roll call that names no time.
    /// 1 s to 1 h. Default: `"2m"`.
    #[serde(with = "crate::units::duration")]
    pub roll_call_answer_within: Duration,
    /// `[commands.broadcast]`: off until configured.
    pub broadcast: BroadcastConfig,
}

impl Default for CommandsConfig {
    fn default() -> Self {
        CommandsConfig {
            enabled: true,
            roll_call: true,
            alarm_handling: true,
            resend: true,
            status: true,
            roll_call_answer_within: Duration::from_secs(120),
            broadcast: BroadcastConfig::default(),
        }
    }
}

/// `[commands.broadcast]`: the sounders and strobes a city broadcast may switch, by
/// group. Off unless `enabled` is set and at least one group is configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BroadcastConfig {
    /// Accept broadcasts. Default: `false`.
    pub enabled: bool,
    /// Longest time a broadcast may keep outputs on. 1 s to 1 h. Default: `"10m"`.
    #[serde(with = "crate::units::duration")]
    pub max_duration: Duration,
    /// `[[commands.broadcast.groups.NAME]]`: the outputs of each group.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, Vec<BroadcastOutput>>,
}

impl Default for BroadcastConfig {
    fn default() -> Self {
        BroadcastConfig {
            enabled: false,
            max_duration: Duration::from_secs(600),
            groups: BTreeMap::new(),
        }
    }
}

/// One output of a broadcast group: a coil or holding register of a Modbus device,
/// written like a linkage action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BroadcastOutput {
    /// Required. A configured Modbus device (`[[devices]]` with `modbus`).
    pub device: String,
    /// Zero-based coil address. Exactly one of `coil` and `register`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coil: Option<u16>,
    /// Zero-based holding register address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub register: Option<u16>,
    /// Written to switch it on. Default: `1`.
    #[serde(default = "default_on")]
    pub on: u16,
    /// Written to switch it off. Default: `0`.
    #[serde(default)]
    pub off: u16,
}

fn default_on() -> u16 {
    1
}

/// The rules of `[commands]` (its switches and times; `[commands.broadcast]` has its
/// own): `(key path, message)` for each problem.
pub(crate) fn check(c: &CommandsConfig) -> Vec<(String, String)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Through the loader: both rules point at their line.
    #[test]
    fn check_config_names_a_bad_status_interval_and_roll_call_time() {
        let text = "[gateway]\nid = \"gw-1\"\nestate_id = \"e1\"\n\n[uplink]\nstatus_interval = \"0s\"\n\n[commands]\nroll_call_answer_within = \"2h\"\n";
        let errs = crate::Config::from_toml_str(text, "t.toml").expect_err("rejected");
        let at = |path: &str| {
            errs.problems()
                .iter()
                .find(|p| p.path == path)
                .unwrap_or_else(|| panic!("no problem at {path}: {errs}"))
                .clone()
        };
        let s = at("uplink.status_interval");
        assert_eq!(s.line, Some(6), "{s:?}");
        assert!(s.message.contains("between 1s and 1h"), "{s:?}");
        let r = at("commands.roll_call_answer_within");
        assert_eq!(r.line, Some(9), "{r:?}");
        assert_eq!(errs.len(), 2, "{errs}");
        let ok = "[gateway]\nid = \"gw-1\"\nestate_id = \"e1\"\n";
        let cfg = crate::Config::from_toml_str(ok, "t.toml").expect("defaults load");
        assert_eq!(cfg.uplink.status_interval, Duration::from_secs(10));
    }

    #[test]
    fn the_defaults_pass() {
        assert!(check(&CommandsConfig::default()).is_empty());
    }

    #[test]
    fn a_roll_call_time_out_of_range_is_named() {
        for bad in [
            Duration::ZERO,
            Duration::from_millis(500),
            Duration::from_secs(3601),
        ] {
            let c = CommandsConfig {
                roll_call_answer_within: bad,
                ..CommandsConfig::default()
            };
            let found = check(&c);
            assert_eq!(found.len(), 1, "{bad:?}: {found:?}");
            assert_eq!(found[0].0, "commands.roll_call_answer_within");
        }
    }
}
