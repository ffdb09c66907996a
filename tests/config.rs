//! `estate-gateway check-config`: an operator validating a config before deploying it
//! sees every mistake at once, each with `file:line:col: key.path:`.

mod common;

use std::process::Command;

use common::{workspace_root, GATEWAY_BIN};

fn check_config(path: &str) -> (Option<i32>, String, String) {
    let out = Command::new(GATEWAY_BIN)
        .args(["check-config", path])
        .current_dir(workspace_root())
        .env("NO_COLOR", "1")
        .output()
        .expect("run estate-gateway check-config");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn broken_config_reports_every_mistake_with_its_location() {
    let file = "config/examples/broken.toml";
    assert!(
        workspace_root().join(file).is_file(),
        "{file} exists under {}",
        workspace_root().display()
    );
    let (code, stdout, stderr) = check_config(file);
    assert!(
        matches!(code, Some(c) if c != 0),
        "check-config of a broken file fails (exit {code:?})\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    // (line:col, key path, a word of the explanation) — one per kind of mistake the
    // file's comments mark: syntax-level (types, unknown keys and variants) and semantic.
    let expected = [
        ("9:6", "gateway.id", "empty"),
        ("10:13", "gateway.estate_id", "' '"),
        ("13:16", "ingest.topic_prefix", "wildcard"),
        ("17:14", "ingest.mqtt.keep_alive", "not a duration"),
        ("18:12", "ingest.mqtt.password", "username"),
        ("21:20", "store.batch_max_events", "at least 1"),
        ("22:20", "store.record_max_bytes", "128 KiB"),
        ("25:1", "uplink.max_batch_size", "unknown field"),
        (
            "26:24",
            "uplink.max_inflight_batches",
            "between 1 and 65535",
        ),
        ("30:8", "uplink.mqtt.port", "invalid type"),
        ("31:17", "uplink.mqtt.reconnect_min", "reconnect_max"),
        ("36:13", "uplink.mqtt.tls.cert_file", "key_file"),
        ("39:10", "api.listen", "address"),
        ("44:30", "devices[0].location.flor", "unknown field"),
        ("48:8", "devices[1].kind", "smoky"),
        ("51:6", "devices[2].id", "duplicate"),
        ("53:22", "devices[2].heartbeat_interval", "at least 1s"),
        ("56:10", "ingest.sources[0].format", "zigbee2mqtt"),
        (
            "59:10",
            "alerts.correlation.confirmed-fire.codes[0]",
            "SMOKE.ALRAM",
        ),
    ];
    let lines: Vec<&str> = stdout.lines().collect();
    for (loc, key, word) in expected {
        let prefix = format!("{file}:{loc}: {key}: ");
        let line = lines
            .iter()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{stdout}"));
        assert!(line.contains(word), "{line:?} should mention {word:?}");
    }
    assert_eq!(
        lines.len(),
        expected.len(),
        "one line per mistake, nothing else:\n{stdout}"
    );
    assert!(
        stderr.contains(&format!("{} problem(s) in {file}", expected.len())),
        "stderr sums up: {stderr}"
    );
}

#[test]
fn shipped_config_passes_check_config() {
    let (code, stdout, stderr) = check_config("config/gateway.toml");
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.starts_with("config/gateway.toml: OK"), "{stdout}");
}

#[test]
fn shipped_configs_pass_check_config() {
    // The default and the Modbus demo estate (with its profile files in config/profiles/).
    for file in ["config/gateway.toml", "config/estate-demo.toml"] {
        let (code, stdout, stderr) = check_config(file);
        assert_eq!(
            code,
            Some(0),
            "check-config {file}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        assert!(stdout.contains("OK"), "{file}: {stdout}");
    }
}
