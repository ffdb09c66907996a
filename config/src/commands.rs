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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::commands::check_switches as check;

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

    use crate::Config;

    /// A config with a Modbus sounder (the shipped profile) and a device without Modbus.
    fn load(broadcast: &str) -> Result<Config, crate::ConfigErrors> {
        let profiles =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/sounder.toml");
        let text = format!(
            r#"[gateway]
id = "gw-1"
estate_id = "e1"

[modbus]
profile_files = [{profiles:?}]

[[modbus.buses]]
name = "b1"
transport = "tcp"
host = "127.0.0.1"

[[devices]]
id = "sounder-1"
kind = "sounder"
modbus = {{ bus = "b1", unit = 1, profile = "sounder" }}

[[devices]]
id = "smoke-1"
kind = "smoke"

{broadcast}"#
        );
        Config::from_toml_str(&text, "t.toml")
    }

    #[test]
    fn broadcast_is_off_by_default() {
        let c = load("").unwrap_or_else(|e| panic!("{e}"));
        let b = &c.commands.broadcast;
        assert!(!b.enabled && b.groups.is_empty());
        assert_eq!(b.max_duration, std::time::Duration::from_secs(600));
    }

    #[test]
    fn a_broadcast_group_loads() {
        let c = load(
            r#"[commands.broadcast]
enabled = true
max_duration = "5m"

[[commands.broadcast.groups.lobby]]
device = "sounder-1"
coil = 0

[[commands.broadcast.groups.lobby]]
device = "sounder-1"
register = 7
on = 3
off = 0
"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let lobby = &c.commands.broadcast.groups["lobby"];
        assert_eq!(lobby.len(), 2);
        assert_eq!((lobby[0].coil, lobby[0].on, lobby[0].off), (Some(0), 1, 0));
        assert_eq!((lobby[1].register, lobby[1].on), (Some(7), 3));
    }

    #[test]
    fn every_broadcast_problem_is_reported_with_its_line() {
        let text = r#"[commands.broadcast]
enabled = true
max_duration = "2h"

[[commands.broadcast.groups."bad/name"]]
device = "nope"
coil = 0

[[commands.broadcast.groups.lobby]]
device = "smoke-1"
coil = 0

[[commands.broadcast.groups.lobby]]
device = "sounder-1"
coil = 0
on = 2

[[commands.broadcast.groups.lobby]]
device = "sounder-1"
coil = 1
register = 1

[[commands.broadcast.groups.lobby]]
device = "sounder-1"

[[commands.broadcast.groups.lobby]]
device = "sounder-1"
register = 4
on = 0
"#;
        let errs = load(text).expect_err("rejected");
        let at = |path: &str| -> String {
            errs.iter()
                .find(|p| p.path == path)
                .map(|p| p.message.clone())
                .unwrap_or_else(|| panic!("no problem at {path}:\n{errs}"))
        };
        assert!(at("commands.broadcast.max_duration").contains("1h"));
        assert!(at("commands.broadcast.groups.bad/name").contains("'-' and '_'"));
        assert!(at("commands.broadcast.groups.bad/name[0].device").contains("no device \"nope\""));
        assert!(at("commands.broadcast.groups.lobby[0].device").contains("no `modbus` table"));
        assert!(at("commands.broadcast.groups.lobby[1].on").contains("0 or 1"));
        assert!(at("commands.broadcast.groups.lobby[2].register").contains("only one"));
        assert!(at("commands.broadcast.groups.lobby[3].coil").contains("set `coil` or `register`"));
        assert!(at("commands.broadcast.groups.lobby[4].off").contains("never change"));
        // Located: the problem in the second output of `lobby` points at its own line.
        let p = errs
            .iter()
            .find(|p| p.path == "commands.broadcast.groups.lobby[1].on")
            .expect("found");
        assert!(p.line.is_some(), "{p:?}");
    }

    #[test]
    fn enabled_without_groups_is_refused() {
        let errs = load("[commands.broadcast]\nenabled = true\n").expect_err("rejected");
        assert!(errs.iter().any(|p| p.path == "commands.broadcast.enabled"
            && p.message.contains("no [[commands.broadcast.groups")));
    }
}
