//! Loading and validation over whole config files: the shipped default, the minimal
//! config, and `examples/broken.toml`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use estate_protocols::model::DeviceKind;

use super::*;

const MINIMAL: &str = r#"
[gateway]
id = "gw-1"
estate_id = "31011500000000000001"
"#;

fn crate_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn errors(text: &str) -> ConfigErrors {
    Config::from_toml_str(text, "t.toml").expect_err("config should be rejected")
}

/// The one problem reported for `path`, failing with the full report otherwise.
fn problem_at<'a>(errs: &'a ConfigErrors, path: &str) -> &'a ConfigProblem {
    let found: Vec<_> = errs.iter().filter(|p| p.path == path).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one problem at {path}, got:\n{errs}"
    );
    found[0]
}

#[test]
fn shipped_config_loads_with_one_device_of_every_kind_but_gateway() {
    let config = Config::load(&crate_file("gateway.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.gateway.id, "gw-demo-01");
    assert_eq!(config.gateway.estate_id, "31011500000000000001");
    assert_eq!(config.ingest.mqtt.host, "127.0.0.1");
    assert_eq!(config.ingest.mqtt.port, 1883);
    assert_eq!(config.uplink.mqtt.port, 1883);
    assert_eq!(config.api.listen.to_string(), "127.0.0.1:8080");

    for kind in DeviceKind::ALL
        .iter()
        .filter(|k| **k != DeviceKind::Gateway)
    {
        assert!(
            config.devices.iter().any(|d| d.kind == *kind),
            "no demo device of kind {kind}"
        );
    }
    let smoke = config.device("smoke-1-1-3").expect("smoke detector");
    assert_eq!(smoke.kind, DeviceKind::Smoke);
    assert_eq!(
        (
            smoke.location.building.as_str(),
            smoke.location.unit.as_str()
        ),
        ("1", "1")
    );
    assert_eq!(
        (smoke.location.floor.as_str(), smoke.location.room.as_str()),
        ("3", "301")
    );
    assert_eq!(
        smoke.heartbeat_interval,
        Some(Duration::from_secs(4 * 3600))
    );
    let leak = config.device("leak-b2-pump").expect("leak cable");
    assert_eq!(leak.kind, DeviceKind::WaterLeak);
    assert_eq!(leak.location.building, "2");
    assert!(config
        .devices
        .iter()
        .any(|d| d.heartbeat_interval.is_none()));
    assert!(config.device("no-such-device").is_none());
}

#[test]
fn shipped_config_states_the_defaults() {
    // gateway.toml shows every default explicitly; it must not drift from the code.
    let shipped = Config::load(&crate_file("gateway.toml")).unwrap_or_else(|e| panic!("{e}"));
    let minimal = Config::from_toml_str(MINIMAL, "minimal.toml").unwrap_or_else(|e| panic!("{e}"));
    // The demo's [[ingest.sources]] are not a default; everything else in [ingest] is.
    assert!(shipped.ingest.sources.is_some());
    let shipped_ingest = IngestConfig {
        sources: None,
        ..shipped.ingest.clone()
    };
    assert_eq!(shipped_ingest, minimal.ingest);
    assert_eq!(shipped.store, minimal.store);
    assert_eq!(shipped.uplink, minimal.uplink);
    assert_eq!(shipped.api, minimal.api);
    let (a, d) = (&shipped.alerts, &minimal.alerts);
    assert_eq!(
        (
            a.min_severity,
            a.forward,
            a.history_max,
            &a.auto_close,
            &a.offline
        ),
        (
            d.min_severity,
            d.forward,
            d.history_max,
            &d.auto_close,
            &d.offline
        )
    );
    // What the shipped file adds beyond the defaults, on purpose.
    assert!(a.held_open_after.is_some() && a.escalation.is_some());
    assert!(a.correlation.contains_key("confirmed-fire"));
}

#[test]
fn minimal_config_gets_documented_defaults() {
    let c = Config::from_toml_str(MINIMAL, "minimal.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.gateway.data_dir, None);
    assert!(c.devices.is_empty());

    for mqtt in [&c.ingest.mqtt, &c.uplink.mqtt] {
        assert_eq!(mqtt.host, "127.0.0.1");
        assert_eq!(mqtt.port, 1883);
        assert_eq!(mqtt.client_id, None);
        assert_eq!(mqtt.keep_alive, Duration::from_secs(30));
        assert!(mqtt.username.is_none() && mqtt.password.is_none() && mqtt.tls.is_none());
        assert_eq!(mqtt.reconnect_min, Duration::from_millis(200));
        assert_eq!(mqtt.reconnect_max, Duration::from_secs(30));
    }
    assert_eq!(c.ingest.topic_prefix, "estate");
    assert_eq!(c.ingest.max_payload.as_u64(), 64 * 1024);
    assert_eq!(c.ingest.raw_limit.as_usize(), 2 * 1024);

    assert_eq!(c.store.batch_max_events, 256);
    assert_eq!(c.store.batch_linger, Duration::ZERO);
    assert_eq!(c.store.disk_budget, ByteSize::mib(256));
    assert_eq!(c.store.cache_capacity, ByteSize::mib(4));
    assert_eq!(c.store.record_max_bytes, ByteSize::kib(48));
    assert!(c.store.record_max_bytes < SLED_BLOB_THRESHOLD);
    assert_eq!(c.store.dead_letter_max, 10_000);
    assert!(!c.store.keep_forwarded);

    assert_eq!(c.uplink.topic_prefix, "city/v1");
    assert_eq!(c.uplink.max_batch_events, 500);
    assert_eq!(c.uplink.max_batch_bytes, ByteSize::kib(256));
    assert_eq!(c.uplink.max_packet_size, ByteSize::mib(1));
    assert_eq!(c.uplink.max_inflight_batches, 2);
    assert_eq!(c.uplink.down_alert_after, Duration::from_secs(30));

    assert_eq!(c.api.listen.to_string(), "127.0.0.1:8080");

    assert_eq!(c.ingest_client_id(), "estate-gw-gw-1-ingest");
    assert_eq!(c.uplink_client_id(), "estate-gw-gw-1-uplink");
}

#[test]
fn explicit_client_ids_win() {
    let text = format!(
        "{MINIMAL}\n[ingest.mqtt]\nclient_id = \"in-1\"\n[uplink.mqtt]\nclient_id = \"up-1\"\n"
    );
    let c = Config::from_toml_str(&text, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.ingest_client_id(), "in-1");
    assert_eq!(c.uplink_client_id(), "up-1");
}

/// Every mistake in examples/broken.toml: (line, key path, part of the message).
const BROKEN_EXPECTED: &[(usize, &str, &str)] = &[
    (9, "gateway.id", "must not be empty"),
    (10, "gateway.estate_id", "contains ' '"),
    (13, "ingest.topic_prefix", "wildcards"),
    (
        17,
        "ingest.mqtt.keep_alive",
        "unknown time unit \"parsecs\"",
    ),
    (18, "ingest.mqtt.password", "username"),
    (21, "store.batch_max_events", "at least 1"),
    (22, "store.record_max_bytes", "less than 128 KiB"),
    (
        25,
        "uplink.max_batch_size",
        "unknown field `max_batch_size`",
    ),
    (26, "uplink.max_inflight_batches", "between 1 and 65535"),
    (30, "uplink.mqtt.port", "invalid type: string \"abc\""),
    (
        31,
        "uplink.mqtt.reconnect_min",
        "must not exceed reconnect_max",
    ),
    (36, "uplink.mqtt.tls.cert_file", "key_file"),
    (39, "api.listen", "invalid socket address"),
    (44, "devices[0].location.flor", "unknown field `flor`"),
    (48, "devices[1].kind", "unknown variant `smoky`"),
    (51, "devices[2].id", "duplicate device id \"smoke-1-1-3\""),
    (53, "devices[2].heartbeat_interval", "at least 1s"),
    (56, "ingest.sources[0].format", "unknown variant `zigbee`"),
    (
        59,
        "alerts.correlation.confirmed-fire.codes[0]",
        "unknown event code \"SMOKE.ALRAM\"",
    ),
];

#[test]
fn broken_example_reports_every_mistake_with_its_location() {
    let path = crate_file("examples/broken.toml");
    let text = std::fs::read_to_string(&path).expect("read broken.toml");
    let errs = Config::load(&path).expect_err("broken.toml must not load");
    let file = path.display().to_string();

    for &(line, key, fragment) in BROKEN_EXPECTED {
        // Guard the test itself: the expected line really is the marked mistake.
        let source_line = text.lines().nth(line - 1).unwrap_or_default();
        assert!(
            source_line.contains("# mistake"),
            "line {line} is not a mistake: {source_line}"
        );

        let p = problem_at(&errs, key);
        assert_eq!(p.file, file);
        assert_eq!(p.line, Some(line), "{key}: wrong line in\n{errs}");
        assert!(p.column.is_some(), "{key}: no column");
        assert!(
            p.message.contains(fragment),
            "{key}: {:?} lacks {fragment:?}",
            p.message
        );
    }
    // Nothing else: no duplicate or follow-on reports.
    assert_eq!(
        errs.len(),
        BROKEN_EXPECTED.len(),
        "unexpected extra problems:\n{errs}"
    );
    // Every line marked as a mistake was reported.
    let marked = text.lines().filter(|l| l.contains("# mistake")).count();
    assert_eq!(marked, BROKEN_EXPECTED.len());
    // Reported in file order, each rendered "file:line:col: path: message".
    let lines: Vec<_> = errs.iter().map(|p| p.line).collect();
    assert!(
        lines.windows(2).all(|w| w[0] <= w[1]),
        "not in file order:\n{errs}"
    );
    let shown = errs.to_string();
    assert_eq!(shown.lines().count(), errs.len());
    assert!(
        shown.contains(&format!("{file}:30:8: uplink.mqtt.port: invalid type")),
        "{shown}"
    );
}

#[test]
fn secrets_never_appear_in_debug_or_serialized_config() {
    let text =
        format!("{MINIMAL}\n[uplink.mqtt]\nusername = \"gw\"\npassword = \"hunter2-city\"\n");
    let c = Config::from_toml_str(&text, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    let password = c.uplink.mqtt.password.as_ref().expect("password");
    assert_eq!(password.expose(), "hunter2-city");
    let debug = format!("{c:?} {c:#?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("***"));
    let serialized = toml::to_string(&c).expect("serialize");
    assert!(!serialized.contains("hunter2"), "{serialized}");

    // A secret in a rejected config stays out of the problem report too.
    let errs = errors(&format!(
        "{MINIMAL}\n[uplink.mqtt]\npassword = \"hunter2-city\"\n"
    ));
    assert!(!errs.to_string().contains("hunter2"), "{errs}");
}

#[test]
fn serialized_config_loads_back_equal() {
    let c = Config::load(&crate_file("gateway.toml")).unwrap_or_else(|e| panic!("{e}"));
    let text = toml::to_string(&c).expect("serialize");
    let back =
        Config::from_toml_str(&text, "serialized.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(back, c);
}

#[test]
fn durations_parse_and_bad_ones_are_located() {
    let text = format!(
        "{MINIMAL}\n[store]\nbatch_linger = \"2ms\"\n[uplink]\ndown_alert_after = \"1m 30s\"\n"
    );
    let c = Config::from_toml_str(&text, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.store.batch_linger, Duration::from_millis(2));
    assert_eq!(c.uplink.down_alert_after, Duration::from_secs(90));

    let errs = errors(&format!(
        "{MINIMAL}\n[ingest.mqtt]\nkeep_alive = \"5 parsecs\"\n"
    ));
    let p = problem_at(&errs, "ingest.mqtt.keep_alive");
    assert_eq!((p.line, p.column), (Some(7), Some(14)));
    assert!(p.message.contains("parsecs"), "{}", p.message);

    let errs = errors(&format!(
        "{MINIMAL}\n[ingest.mqtt]\nkeep_alive = \"1500ms\"\n"
    ));
    assert!(problem_at(&errs, "ingest.mqtt.keep_alive")
        .message
        .contains("whole seconds"));
}

#[test]
fn byte_sizes_in_config_accept_integers_and_units() {
    let text = format!(
        "{MINIMAL}\n[ingest]\nmax_payload = 131072\nraw_limit = \"1KB\"\n[store]\ndisk_budget = \"512MB\"\n"
    );
    let c = Config::from_toml_str(&text, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.ingest.max_payload.as_u64(), 131_072);
    assert_eq!(c.ingest.raw_limit.as_u64(), 1000);
    assert_eq!(c.store.disk_budget.as_u64(), 512_000_000);

    let errs = errors(&format!(
        "{MINIMAL}\n[store]\ndisk_budget = \"12 parsecs\"\ncache_capacity = -1\n"
    ));
    assert!(problem_at(&errs, "store.disk_budget")
        .message
        .contains("unknown size unit"));
    assert!(problem_at(&errs, "store.cache_capacity")
        .message
        .contains("negative"));
    assert_eq!(problem_at(&errs, "store.cache_capacity").line, Some(8));
}

#[test]
fn gateway_section_and_its_ids_are_required() {
    let errs = errors("[store]\nbatch_max_events = 1\n");
    let p = problem_at(&errs, "gateway");
    assert!(p.message.contains("missing required section [gateway]"));

    let errs = errors("[gateway]\nid = \"gw-1\"\n");
    let p = problem_at(&errs, "gateway.estate_id");
    assert_eq!(p.line, Some(1), "points at the [gateway] header");
    assert!(p.message.contains("missing required key `estate_id`"));

    // A required key of the wrong type is reported once, not again as missing.
    let errs = errors("[gateway]\nid = 7\nestate_id = \"e1\"\n");
    assert_eq!(errs.len(), 1, "{errs}");
    assert_eq!(problem_at(&errs, "gateway.id").line, Some(2));
}

#[test]
fn estate_id_must_be_topic_safe_but_need_not_be_20_digits() {
    let ok = "[gateway]\nid = \"gw_1\"\nestate_id = \"demo-estate_2\"\n";
    Config::from_toml_str(ok, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    for bad in ["", "a/b", "a+b", "a#b", "小区"] {
        let errs = errors(&format!(
            "[gateway]\nid = \"gw-1\"\nestate_id = \"{bad}\"\n"
        ));
        assert_eq!(
            problem_at(&errs, "gateway.estate_id").line,
            Some(3),
            "{bad}"
        );
    }
}

#[test]
fn one_section_yields_all_its_type_errors_and_unknown_keys() {
    let text = format!(
        "{MINIMAL}\n[uplink]\nfoo = 1\nmax_batch_events = \"many\"\n[uplink.mqtt]\nport = 0\nbar = true\n"
    );
    let errs = errors(&text);
    assert_eq!(problem_at(&errs, "uplink.foo").line, Some(7));
    assert_eq!(problem_at(&errs, "uplink.max_batch_events").line, Some(8));
    let port = problem_at(&errs, "uplink.mqtt.port");
    assert_eq!((port.line, port.column), (Some(10), Some(8)));
    assert!(port.message.contains("must be between 1 and 65535"));
    assert_eq!(problem_at(&errs, "uplink.mqtt.bar").line, Some(11));
    assert_eq!(errs.len(), 4, "{errs}");
}

#[test]
fn cross_field_rules() {
    // reconnect_max left at its default (30s) is reported at the key the user wrote.
    let errs = errors(&format!(
        "{MINIMAL}\n[ingest.mqtt]\nreconnect_min = \"1m\"\n"
    ));
    assert_eq!(problem_at(&errs, "ingest.mqtt.reconnect_min").line, Some(7));

    // raw bytes must fit in a stored record.
    let errs = errors(&format!(
        "{MINIMAL}\n[store]\nrecord_max_bytes = \"2 KiB\"\n"
    ));
    assert!(problem_at(&errs, "store.record_max_bytes")
        .message
        .contains("does not fit"));

    // ingest and uplink must not share a client id.
    let errs = errors(&format!(
        "{MINIMAL}\n[uplink.mqtt]\nclient_id = \"estate-gw-gw-1-ingest\"\n"
    ));
    assert!(problem_at(&errs, "uplink.mqtt.client_id")
        .message
        .contains("disconnecting"));

    // A device may not take the gateway's own id.
    let errs = errors(&format!(
        "{MINIMAL}\n[[devices]]\nid = \"gw-1\"\nkind = \"smoke\"\n"
    ));
    assert_eq!(problem_at(&errs, "devices[0].id").line, Some(7));

    // A bad value that fell back to its default does not cause follow-on reports.
    let errs = errors(&format!(
        "{MINIMAL}\n[ingest.mqtt]\nreconnect_min = \"1m\"\nreconnect_max = \"soon\"\n"
    ));
    assert_eq!(errs.len(), 1, "{errs}");
    assert_eq!(problem_at(&errs, "ingest.mqtt.reconnect_max").line, Some(8));
}

/// Issue 13: every pair of size limits that can meet is checked, each problem named at the
/// key the file sets (an event's raw bytes in a batch, a batch in an uplink packet, an
/// ingest payload in the ingest client's packet).
#[test]
fn size_limits_that_meet_are_cross_checked() {
    // A batch must fit in one packet with its topic (city/v1/{estate}/alarms, 35 bytes)
    // and header (9 bytes at most).
    let errs = errors(&format!(
        "{MINIMAL}\n[uplink]\nmax_batch_bytes = \"64 KiB\"\nmax_packet_size = \"64 KiB\"\n"
    ));
    let p = problem_at(&errs, "uplink.max_batch_bytes");
    assert_eq!(p.line, Some(7), "{errs}");
    assert!(
        p.message.contains("does not fit in one uplink packet")
            && p.message.contains("at most 65492 B")
            && p.message.contains("uplink.max_packet_size (64 KiB)"),
        "{errs}"
    );
    assert_eq!(errs.len(), 1, "{errs}");
    let ok =
        format!("{MINIMAL}\n[uplink]\nmax_batch_bytes = 65492\nmax_packet_size = \"64 KiB\"\n");
    Config::from_toml_str(&ok, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    // Only max_packet_size set: reported there (the batch size is the default).
    let errs = errors(&format!(
        "{MINIMAL}\n[uplink]\nmax_packet_size = \"128 KiB\"\n"
    ));
    let p = problem_at(&errs, "uplink.max_packet_size");
    assert!(
        p.line == Some(7) && p.message.contains("a batch of 256 KiB"),
        "{errs}"
    );

    // An event's raw bytes must fit in a batch, with room for its other fields.
    let errs = errors(&format!(
        "{MINIMAL}\n[ingest]\nraw_limit = \"16 KiB\"\n[uplink]\nmax_batch_bytes = \"8 KiB\"\n"
    ));
    let p = problem_at(&errs, "ingest.raw_limit");
    assert_eq!(p.line, Some(7), "{errs}");
    assert!(
        p.message
            .contains("does not fit in one uplink batch of 8 KiB")
            && p.message.contains("at most 7 KiB"),
        "{errs}"
    );
    assert_eq!(errs.len(), 1, "{errs}");

    // An ingest payload must fit in the ingest client's packet.
    let errs = errors(&format!("{MINIMAL}\n[ingest]\nmax_payload = \"16 MiB\"\n"));
    assert!(
        problem_at(&errs, "ingest.max_payload")
            .message
            .contains("the ingest client's packet limit of 16 MiB"),
        "{errs}"
    );

    // The packet limit itself.
    let errs = errors(&format!(
        "{MINIMAL}\n[uplink]\nmax_batch_bytes = 1500\nmax_packet_size = 1000\n"
    ));
    assert!(
        problem_at(&errs, "uplink.max_packet_size")
            .message
            .contains("between 2 KiB"),
        "{errs}"
    );
}

#[test]
fn tls_needs_certificate_and_key_together() {
    let base = format!("{MINIMAL}\n[uplink.mqtt.tls]\nca_file = \"ca.pem\"\n");
    let both = format!("{base}cert_file = \"gw.crt\"\nkey_file = \"gw.key\"\n");
    let c = Config::from_toml_str(&both, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    let tls = c.uplink.mqtt.tls.expect("tls");
    assert_eq!(tls.key_file, Some(PathBuf::from("gw.key")));

    let errs = errors(&format!("{base}key_file = \"gw.key\"\n"));
    assert_eq!(problem_at(&errs, "uplink.mqtt.tls.key_file").line, Some(8));

    let errs = errors(&format!(
        "{MINIMAL}\n[uplink.mqtt.tls]\ncert_file = \"gw.crt\"\n"
    ));
    let p = problem_at(&errs, "uplink.mqtt.tls");
    assert!(
        p.message.contains("missing required key `ca_file`"),
        "{errs}"
    );
    assert_eq!(p.line, Some(6));
}

#[test]
fn devices_are_checked_one_by_one() {
    let text = format!(
        r#"{MINIMAL}
[[devices]]
id = "a"
kind = "smoke"
[[devices]]
kind = "gas"
[[devices]]
id = "a"
kind = "lamp"
[[devices]]
id = "b c"
kind = "gas"
colour = "red"
"#
    );
    let errs = errors(&text);
    assert_eq!(problem_at(&errs, "devices[1].id").line, Some(9), "{errs}");
    assert!(problem_at(&errs, "devices[1].id")
        .message
        .contains("missing required key"));
    // devices[2] has two mistakes: its kind, and an id already used by devices[0].
    let kind = problem_at(&errs, "devices[2].kind");
    assert_eq!((kind.line, kind.column), (Some(13), Some(8)));
    let dup = problem_at(&errs, "devices[2].id");
    assert!(dup.message.contains("devices[0]") && dup.message.contains("(line 7)"));
    assert_eq!(problem_at(&errs, "devices[3].id").line, Some(15));
    assert_eq!(problem_at(&errs, "devices[3].colour").line, Some(17));
    assert_eq!(errs.len(), 5, "{errs}");
}

#[test]
fn devices_may_be_an_inline_array() {
    let text = format!(
        "devices = [{{ id = \"s1\", kind = \"smoke\" }}, {{ id = \"v1\", kind = \"valve\", heartbeat_interval = \"1m\" }}]\n{MINIMAL}"
    );
    let c = Config::from_toml_str(&text, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.devices.len(), 2);
    assert_eq!(
        c.device("v1").and_then(|d| d.heartbeat_interval),
        Some(Duration::from_secs(60))
    );

    let errs = errors(&format!(
        "devices = [{{ id = \"s1\", kind = \"rock\" }}, 5]\n{MINIMAL}"
    ));
    assert!(problem_at(&errs, "devices[0].kind")
        .message
        .contains("rock"));
    assert!(problem_at(&errs, "devices[1]")
        .message
        .contains("must be a table"));
}

#[test]
fn structural_mistakes_are_reported_not_fatal() {
    let errs = errors(&format!(
        "store = 5\ndevices = \"all\"\n{MINIMAL}[metrics]\nport = 1\n[api]\nlisten = 8080\n"
    ));
    assert!(problem_at(&errs, "store")
        .message
        .contains("must be a table"));
    assert!(problem_at(&errs, "devices").message.contains("[[devices]]"));
    assert!(problem_at(&errs, "metrics")
        .message
        .contains("unknown section"));
    assert_eq!(problem_at(&errs, "metrics").line, Some(7));
    assert_eq!(problem_at(&errs, "api.listen").line, Some(10));
}

#[test]
fn syntax_error_is_a_single_located_problem() {
    let errs = errors("[gateway]\nid = \"gw-1\nestate_id = \"e\"\n");
    assert_eq!(errs.len(), 1);
    let p = &errs.problems()[0];
    assert_eq!(p.line, Some(2), "{errs}");
    assert!(p.path.is_empty());
}

#[test]
fn unreadable_file_is_one_problem_naming_it() {
    let errs = Config::load(Path::new("/nonexistent/gateway.toml")).expect_err("missing file");
    assert_eq!(errs.len(), 1);
    let shown = errs.to_string();
    assert!(
        shown.starts_with("/nonexistent/gateway.toml: cannot read config file"),
        "{shown}"
    );
}

#[test]
fn a_large_estate_loads_and_points_at_the_one_bad_device() {
    let mut text = String::from(MINIMAL);
    for i in 0..3000 {
        let kind = if i == 2718 { "smoak" } else { "smoke" };
        text.push_str(&format!(
            "[[devices]]\nid = \"smoke-{i}\"\nkind = \"{kind}\"\nlocation = {{ building = \"{}\" }}\n",
            i / 100
        ));
    }
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs}");
    // 4 lines of MINIMAL, then 4 lines per device; `kind` is the device's 3rd line.
    assert_eq!(
        problem_at(&errs, "devices[2718].kind").line,
        Some(4 + 2718 * 4 + 3)
    );

    let fixed = text.replace("smoak", "smoke");
    let c = Config::from_toml_str(&fixed, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.devices.len(), 3000);
    assert_eq!(
        c.device("smoke-2999").map(|d| d.location.building.as_str()),
        Some("29")
    );
}

/// Issue 13: the HTTP limits have defaults well below the unit's `LimitNOFILE` (4096)
/// and are checked against each other.
#[test]
fn api_limits() {
    let c = Config::from_toml_str(MINIMAL, "test.toml").expect("minimal config loads");
    assert_eq!(c.api.header_read_timeout, Duration::from_secs(10));
    assert_eq!(c.api.idle_timeout, Duration::from_secs(30));
    assert_eq!(c.api.max_connections, 256);
    assert_eq!(c.api.max_sse_clients, 32);

    let errs = errors(&format!(
        "{MINIMAL}\n[api]\nmax_connections = 8\nmax_sse_clients = 9\nidle_timeout = \"0s\"\n"
    ));
    assert!(problem_at(&errs, "api.max_sse_clients")
        .message
        .contains("api.max_connections is 8"));
    problem_at(&errs, "api.idle_timeout");
    let errs = errors(&format!("{MINIMAL}\n[api]\nmax_connections = 5000\n"));
    assert!(problem_at(&errs, "api.max_connections")
        .message
        .contains("between 1 and 1024"));
}

/// Issue 16: sign-in defaults, and every bad sign-in, lockout or HTTPS key named.
#[test]
fn api_sign_in_keys() {
    let c = Config::from_toml_str(MINIMAL, "test.toml").expect("minimal config loads");
    assert_eq!(c.api.anonymous_read, crate::AnonymousRead::Loopback);
    assert_eq!(c.api.session_ttl, Duration::from_secs(12 * 3600));
    assert_eq!(c.api.lockout_after, 5);
    assert_eq!(c.api.lockout_window, Duration::from_secs(900));
    assert_eq!(c.api.lockout_for, Duration::from_secs(900));
    let not_pem = std::env::temp_dir().join(format!("not-pem-{}.txt", std::process::id()));
    std::fs::write(&not_pem, "hello").expect("write");
    let errs = errors(&format!(
        "{MINIMAL}\n[api]\nanonymous_read = \"none\"\nsession_ttl = \"10s\"\nlockout_after = 0\nlockout_window = \"0s\"\nlockout_for = \"2d\"\ntls_cert = {not_pem:?}\n"
    ));
    assert!(problem_at(&errs, "api.session_ttl")
        .message
        .contains("between 1m and 7d"));
    problem_at(&errs, "api.lockout_after");
    problem_at(&errs, "api.lockout_window");
    assert!(problem_at(&errs, "api.lockout_for").message.contains("24h"));
    assert!(errs
        .0
        .iter()
        .any(|p| p.path == "api.tls_cert" && p.message.contains("`api.tls_key` is not")));
    assert!(errs
        .0
        .iter()
        .any(|p| p.path == "api.tls_cert" && p.message.contains("no PEM block")));
    let _ = std::fs::remove_file(&not_pem);
    let errs = errors(&format!(
        "{MINIMAL}\n[api]\nanonymous_read = \"everyone\"\n"
    ));
    problem_at(&errs, "api.anonymous_read");
}

#[test]
fn disk_low_free_defaults_to_64_mib_and_rejects_less_than_the_write_floor() {
    let c = Config::from_toml_str(MINIMAL, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.store.disk_low_free, ByteSize::mib(64));
    let errs = errors(&format!("{MINIMAL}\n[store]\ndisk_low_free = \"1 MiB\"\n"));
    assert!(problem_at(&errs, "store.disk_low_free")
        .message
        .contains("at least 4 MiB"));
}

/// Fuzz target `config` (`fuzz/`): a wait of centuries validated, and the stage that
/// added it to the clock panicked on first use (`uplink.down_alert_after` in the
/// forwarder, `reconnect_max` in the MQTT clients). Every such wait is at most a day.
#[test]
fn waits_longer_than_a_day_are_refused() {
    let errs = errors(&format!(
        "{MINIMAL}\n[uplink]\ndown_alert_after = \"300000000000y\"\n[uplink.mqtt]\nreconnect_max = \"2days\"\n[ingest.mqtt]\nreconnect_max = \"25h\"\n"
    ));
    for key in [
        "uplink.down_alert_after",
        "uplink.mqtt.reconnect_max",
        "ingest.mqtt.reconnect_max",
    ] {
        let p = problem_at(&errs, key);
        assert!(
            p.message.starts_with("must be at most 1day, found "),
            "{key}: {}",
            p.message
        );
    }
    let ok = format!("{MINIMAL}\n[uplink]\ndown_alert_after = \"24h\"\n[uplink.mqtt]\nreconnect_max = \"1day\"\n");
    Config::from_toml_str(&ok, "t.toml").unwrap_or_else(|e| panic!("{e}"));
}

/// Issue 14: a broker cluster is `hosts = ["host:port", …]`, in place of `host`/`port`
/// (which still work alone); each entry is checked where it stands, and both at once is
/// an error at the key that should go.
#[test]
fn broker_hosts_list_a_cluster_instead_of_host_and_port() {
    let c = Config::from_toml_str(
        &format!(
            "{MINIMAL}\n[uplink]\nlinger = \"250ms\"\n[uplink.mqtt]\n\
             hosts = [\"nats1.city.example:8883\", \"10.0.0.7:8883\", \"[fd00::7]:1883\"]\n\
             connect_timeout = \"3s\"\n"
        ),
        "t.toml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.uplink.mqtt.endpoints(),
        vec![
            ("nats1.city.example".to_owned(), 8883),
            ("10.0.0.7".to_owned(), 8883),
            ("fd00::7".to_owned(), 1883),
        ]
    );
    assert_eq!(c.uplink.mqtt.connect_timeout, Duration::from_secs(3));
    assert_eq!(c.uplink.linger, Duration::from_millis(250));
    // Round trip: the serialized config does not grow a `host` beside `hosts`.
    let text = toml::to_string(&c).expect("serialize");
    assert_eq!(Config::from_toml_str(&text, "s.toml").ok(), Some(c));

    // Defaults: one node, a 10 s connect timeout, a 1 s linger.
    let c = Config::from_toml_str(MINIMAL, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.ingest.mqtt.endpoints(),
        vec![("127.0.0.1".to_owned(), 1883)]
    );
    assert_eq!(c.uplink.mqtt.connect_timeout, Duration::from_secs(10));
    assert_eq!(c.uplink.linger, Duration::from_secs(1));

    let errs = errors(&format!(
        "{MINIMAL}\n[ingest.mqtt]\nhost = \"127.0.0.1\"\n\
         hosts = [\"a:1\", \"b\", \"::1:1883\", \"[::1]\", \"mqtt://c:1883\", \"d:0\", \"a:1\"]\n\
         [uplink]\nlinger = \"2m\"\n[uplink.mqtt]\nconnect_timeout = \"1500ms\"\n"
    ));
    let host = problem_at(&errs, "ingest.mqtt.host");
    assert_eq!(host.line, Some(7));
    assert!(host.message.contains("not both"), "{}", host.message);
    for (i, what) in [
        (1, "has no port"),
        (2, "in brackets"),
        (3, "no `:port`"),
        (4, "is a URL"),
        (5, "between 1 and 65535"),
        (6, "listed twice"),
    ] {
        let p = problem_at(&errs, &format!("ingest.mqtt.hosts[{i}]"));
        assert!(p.message.contains(what), "hosts[{i}]: {}", p.message);
        assert_eq!(p.line, Some(8));
    }
    assert!(problem_at(&errs, "uplink.linger")
        .message
        .contains("at most 1m"));
    assert!(problem_at(&errs, "uplink.mqtt.connect_timeout")
        .message
        .contains("whole seconds"));
    assert_eq!(errs.len(), 9, "{errs}");
}
