//! Modbus config: the shipped profiles and demo estate, and every profile/bus/device rule
//! reported with its file and line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

fn crate_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A fresh folder with `files` (name, text) in it; returns the folder.
fn folder(tag: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "estate-config-{tag}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("write");
    }
    dir
}

const MAIN: &str = r#"[gateway]
id = "gw-1"
estate_id = "e1"

[modbus]
profile_files = ["p.toml"]

[[modbus.buses]]
name = "b1"
transport = "tcp"
host = "127.0.0.1"
"#;

const PROFILE: &str = r#"[[profiles]]
name = "leak"
kind = "water_leak"

[[profiles.points]]
name = "status"
table = "input"
address = 0
type = "u16"
bits = [{ bit = 0, code = "LEAK.ALARM", value_point = "distance" }]

[[profiles.points]]
name = "distance"
table = "input"
address = 8000
type = "f32"
word_order = "low_first"
unit = "m"
"#;

fn load(tag: &str, main: &str, profile: &str) -> (PathBuf, Result<Config, ConfigErrors>) {
    let dir = folder(tag, &[("gateway.toml", main), ("p.toml", profile)]);
    let r = Config::load(&dir.join("gateway.toml"));
    (dir, r)
}

fn at<'a>(errs: &'a ConfigErrors, path: &str) -> &'a ConfigProblem {
    let found: Vec<_> = errs.iter().filter(|p| p.path == path).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one problem at {path}, got:\n{errs}"
    );
    found[0]
}

#[test]
fn shipped_demo_estate_loads_with_every_profile() {
    let c = Config::load(&crate_file("estate-demo.toml")).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = c.modbus.profiles.iter().map(|p| p.name.as_str()).collect();
    for want in [
        "rope-leak",
        "gas-pt495",
        "gas-toc635",
        "fire-notifier",
        "smoke-gb26875",
        "valve",
        "sounder",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    // The simulator's default ports, in the shared spec's order.
    let ports: Vec<u16> = c.modbus.buses.iter().map(|b| b.port).collect();
    assert_eq!(ports, (15020..15027).collect::<Vec<_>>());
    let leak = c
        .device("leak-b2-pump")
        .and_then(|d| d.modbus.as_ref())
        .expect("leak");
    assert_eq!(leak.profile, "rope-leak");
    assert_eq!(leak.timeout, Duration::from_millis(500));
    assert_eq!(leak.offline_after, 3);
    let rope = c.modbus.profile("rope-leak").expect("rope-leak");
    let f = rope
        .points
        .iter()
        .find(|p| p.name == "distance_f32")
        .expect("f32");
    assert_eq!((f.address, f.word_order), (8000, Order::LowFirst));
}

#[test]
fn minimal_modbus_config_gets_defaults() {
    let main = format!(
        "{MAIN}\n[[devices]]\nid = \"l1\"\nkind = \"water_leak\"\nmodbus = {{ bus = \"b1\", unit = 3, profile = \"leak\" }}\n"
    );
    let (_, r) = load("defaults", &main, PROFILE);
    let c = r.unwrap_or_else(|e| panic!("{e}"));
    let bus = &c.modbus.buses[0];
    assert_eq!((bus.port, bus.baud), (502, 9600));
    assert_eq!(bus.effective_inter_frame_gap(), Duration::ZERO);
    let m = c.devices[0].modbus.as_ref().expect("modbus");
    assert_eq!(m.poll_interval, Duration::from_secs(1));
    assert_eq!(m.timeout, Duration::from_secs(1));
    assert_eq!(m.offline_after, 3);
    let p = &c.modbus.profiles[0];
    assert_eq!(p.points[1].scale, 1.0);
    assert_eq!(p.points[1].count, 1);
}

#[test]
fn rtu_gap_is_three_and_a_half_characters() {
    let bus = |baud| BusConfig {
        name: "b".into(),
        transport: BusTransport::Rtu,
        device: Some("/dev/ttyS1".into()),
        baud,
        parity: Parity::None,
        data_bits: 8,
        stop_bits: 1,
        host: None,
        port: 502,
        inter_frame_gap: None,
        reconnect_min: Duration::from_millis(500),
        reconnect_max: Duration::from_secs(30),
    };
    assert_eq!(
        bus(9600).effective_inter_frame_gap(),
        Duration::from_micros(4010)
    );
    assert_eq!(
        bus(115_200).effective_inter_frame_gap(),
        Duration::from_micros(1750)
    );
}

#[test]
fn profile_problems_are_located_in_the_profile_file() {
    let profile = r#"[[profiles]]
name = "leak"
kind = "water_leak"

[[profiles.points]]
name = "status"
table = "input"
address = 0
type = "u16"
bits = [{ bit = 16, code = "LEAK.ALARM" }, { bit = 1, code = "LEAK.NOPE" }]

[[profiles.points]]
name = "status2"
table = "input"
address = 0
type = "u32"

[[profiles.points]]
name = "big"
table = "holding"
address = 65535
type = "u32"

[[profiles.points]]
name = "many"
table = "holding"
address = 10
count = 126
type = "u16"

[[profiles.points]]
name = "flag"
table = "coil"
address = 0
type = "bool"
bits = [{ bit = 0, code = "LEAK.ALARM" }]

[[profiles.points]]
name = "what"
table = "registers"
address = 0
type = "u8"
"#;
    let (dir, r) = load("profile", MAIN, profile);
    let errs = r.expect_err("rejected");
    let file = dir.join("p.toml").display().to_string();
    assert!(errs.iter().all(|p| p.file == file), "{errs}");
    let bit = at(&errs, "profiles[0].points[0].bits[0]");
    assert!(bit.message.contains("bit 16 does not exist"), "{errs}");
    assert_eq!(bit.line, Some(10));
    assert!(at(&errs, "profiles[0].points[0].bits[1].code")
        .message
        .contains("unknown event code"));
    let overlap = at(&errs, "profiles[0].points[1].address");
    assert!(
        overlap.message.contains("overlaps") && overlap.message.contains("(line 8)"),
        "{errs}"
    );
    assert!(at(&errs, "profiles[0].points[2].address")
        .message
        .contains("65535"));
    assert!(at(&errs, "profiles[0].points[3].count")
        .message
        .contains("125"));
    assert!(at(&errs, "profiles[0].points[4].bits")
        .message
        .contains("bool point"));
    assert_eq!(at(&errs, "profiles[0].points[5].table").line, Some(40));
    assert_eq!(at(&errs, "profiles[0].points[5].type").line, Some(42));
}

#[test]
fn bus_and_device_references_are_checked() {
    let main = r#"[gateway]
id = "gw-1"
estate_id = "e1"

[modbus]
profile_files = ["p.toml", "missing.toml"]

[[modbus.buses]]
name = "tcp1"
transport = "tcp"

[[modbus.buses]]
name = "rs485"
transport = "rtu"

[[modbus.buses]]
name = "rs485"
transport = "rtu"
device = "/dev/ttyS1"

[[devices]]
id = "a"
kind = "water_leak"
modbus = { bus = "rs485", unit = 0, profile = "leak" }

[[devices]]
id = "b"
kind = "smoke"
modbus = { bus = "rs485", unit = 4, profile = "leak" }

[[devices]]
id = "c"
kind = "water_leak"
modbus = { bus = "rs485", unit = 4, profile = "leak", timeout = "0s" }

[[devices]]
id = "d"
kind = "water_leak"
modbus = { bus = "nope", unit = 4, profile = "leak" }
"#;
    let (_, r) = load("refs", main, PROFILE);
    let errs = r.expect_err("rejected");
    assert!(at(&errs, "modbus.profile_files[1]")
        .message
        .contains("cannot read"));
    assert!(at(&errs, "modbus.buses[0].transport")
        .message
        .contains("needs `host`"));
    assert!(at(&errs, "modbus.buses[1].transport")
        .message
        .contains("needs `device`"));
    assert!(at(&errs, "modbus.buses[2].name")
        .message
        .contains("duplicate bus name"));
    assert!(at(&errs, "devices[0].modbus.unit")
        .message
        .contains("1–247"));
    assert!(at(&errs, "devices[1].modbus.profile")
        .message
        .contains("water_leak"));
    let dup = at(&errs, "devices[2].modbus.unit");
    assert!(dup.message.contains("already used"), "{errs}");
    assert!(at(&errs, "devices[2].modbus.timeout")
        .message
        .contains("more than 0s"));
    assert!(at(&errs, "devices[3].modbus.bus")
        .message
        .contains("unknown bus"));
}

#[test]
fn unknown_profile_names_the_loaded_ones() {
    let main = format!(
        "{MAIN}\n[[devices]]\nid = \"l1\"\nkind = \"water_leak\"\nmodbus = {{ bus = \"b1\", unit = 3, profile = \"leek\" }}\n"
    );
    let (_, r) = load("unknown-profile", &main, PROFILE);
    let errs = r.expect_err("rejected");
    let p = at(&errs, "devices[0].modbus.profile");
    assert!(
        p.message.contains("\"leek\"") && p.message.contains("leak"),
        "{errs}"
    );
    assert_eq!(p.line, Some(16));
}

/// Fuzz target `config` (`fuzz/`): a poll interval of centuries validated and the bus
/// task panicked adding it to the clock after its first poll, restarted, and panicked
/// again, forever. Poll interval, backoff and a bus's reconnect wait are at most a day.
#[test]
fn modbus_waits_longer_than_a_day_are_refused() {
    let main = format!(
        "{}reconnect_max = \"2days\"\n\n[[devices]]\nid = \"l1\"\nkind = \"water_leak\"\nmodbus = {{ bus = \"b1\", unit = 3, profile = \"leak\", poll_interval = \"300000000000y\", backoff_max = \"300000000000y\" }}\n",
        MAIN
    );
    let (_, r) = load("long-waits", &main, PROFILE);
    let errs = r.expect_err("rejected");
    for key in [
        "modbus.buses[0].reconnect_max",
        "devices[0].modbus.poll_interval",
        "devices[0].modbus.backoff_max",
    ] {
        let p = at(&errs, key);
        assert!(
            p.message.starts_with("must be at most 1day"),
            "{key}: {}",
            p.message
        );
    }
}
