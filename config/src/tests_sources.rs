//! `[[ingest.sources]]` and devices' `source`: loading, defaults, and every rule located.

use std::time::Duration;

use super::*;

const MINIMAL: &str = r#"
[gateway]
id = "gw-1"
estate_id = "E1"
"#;

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
fn without_sources_only_native_is_read() {
    let c = Config::from_toml_str(MINIMAL, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.ingest.sources, None);
}

#[test]
fn a_mixed_estate_loads_with_per_format_defaults() {
    let text = format!(
        r#"{MINIMAL}
[[ingest.sources]]
format = "native"
[[ingest.sources]]
format = "zigbee2mqtt"
name = "zigbee"
[[ingest.sources]]
format = "frigate"
[[ingest.sources]]
format = "camera-isapi-json"
clear_after = "3s"
[[ingest.sources]]
format = "access-control-json"
[[ingest.sources]]
format = "nbiot-smoke-json"
[[ingest.sources]]
format = "json-map"
name = "lora"
topics = ["lora/+/up", "lora/+/status"]
[ingest.sources.map]
device_id = "/devEui"
code_field = "/object/event"
codes = {{ leak = "LEAK.ALARM" }}
time_format = "epoch_s"
availability_topic = "lora/+/status"

[[devices]]
id = "leak-b1-101"
kind = "water_leak"
source = {{ name = "zigbee", id = "b1-101 kitchen leak" }}
"#
    );
    let c = Config::from_toml_str(&text, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    let s = c.ingest.sources.as_ref().expect("sources");
    assert_eq!(s.len(), 7);
    assert_eq!(s[0].effective_name(), "native");
    assert_eq!(s[1].effective_name(), "zigbee");
    assert_eq!(s[1].effective_topics(), vec!["zigbee2mqtt/#".to_owned()]);
    assert_eq!(
        s[2].effective_topics(),
        vec!["frigate/events".to_owned(), "frigate/available".to_owned()]
    );
    assert_eq!(s[3].clear_after(), Some(Duration::from_secs(3)));
    assert_eq!(s[4].clear_after(), None, "only cameras clear by silence");
    assert_eq!(s[6].format(), SourceFormat::JsonMap);
    let map = s[6].map().expect("map");
    assert_eq!(map.time_format, TimeFormat::EpochS);
    assert_eq!(map.online, "online");
    assert!(map.active.contains(&"1".to_owned()));
    let d = c.device("leak-b1-101").expect("device");
    assert_eq!(
        d.source,
        Some(DeviceSource {
            name: "zigbee".into(),
            id: "b1-101 kitchen leak".into()
        })
    );
}

#[test]
fn every_source_mistake_is_reported_at_once_with_its_location() {
    let text = format!(
        r#"{MINIMAL}
[[ingest.sources]]
format = "zigbee"
[[ingest.sources]]
format = "frigate"
topics = ["frigate/#/x"]
clear_after = "5s"
[[ingest.sources]]
format = "zigbee2mqtt"
[[ingest.sources]]
format = "zigbee2mqtt"
topics = ["zigbee2mqtt/+/availability"]
name = "zb 2"
[[ingest.sources]]
format = "json-map"
topics = ["lora/#"]
[ingest.sources.map]
device_id = "devEui"
code_field = "/event"
codes = {{ leak = "LEAK.ALARMED" }}
colour = "red"
[[ingest.sources]]
format = "native"
topics = ["x/#"]

[[devices]]
id = "d1"
kind = "smoke"
source = {{ name = "nope", id = "x" }}
[[devices]]
id = "d2"
kind = "smoke"
source = {{ name = "zigbee2mqtt", id = "a" }}
[[devices]]
id = "d3"
kind = "smoke"
source = {{ name = "zigbee2mqtt", id = "a" }}
"#
    );
    let errs = Config::from_toml_str(&text, "t.toml").expect_err("rejected");
    let shown = errs.to_string();
    let at = |path: &str, line: usize, word: &str| {
        let p = problem_at(&errs, path);
        assert_eq!(p.line, Some(line), "{path}: {p}\n{shown}");
        assert!(
            p.message.contains(word),
            "{path}: {p} should mention {word}"
        );
    };
    at("ingest.sources[0].format", 7, "unknown variant `zigbee`");
    at("ingest.sources[1].topics[0]", 10, "'#'");
    at("ingest.sources[1].clear_after", 11, "camera-isapi-json");
    // [3] has a bad name and a filter overlapping [2]'s default.
    at(
        "ingest.sources[3].topics[0]",
        16,
        "overlaps \"zigbee2mqtt/#\"",
    );
    at("ingest.sources[3].name", 17, "' '");
    at("ingest.sources[4].map.device_id", 22, "JSON pointer");
    at("ingest.sources[4].map.codes", 24, "LEAK.ALARMED");
    at("ingest.sources[4].map.colour", 25, "unknown field");
    at("ingest.sources[5].topics", 28, "topic_prefix");
    at("devices[2].source.id", 41, "already devices[1] (line 37)");
    // devices[0] names an unknown source, but sources[0] did not load (it may have been
    // meant), so that is not reported as well.
    assert_eq!(errs.len(), 10, "{shown}");
}

#[test]
fn device_sources_must_name_a_non_native_source() {
    let text = format!(
        r#"{MINIMAL}
[[ingest.sources]]
format = "native"
[[ingest.sources]]
format = "frigate"
[[devices]]
id = "d1"
kind = "camera"
source = {{ name = "nope", id = "x" }}
[[devices]]
id = "d2"
kind = "camera"
source = {{ name = "native", id = "x" }}
"#
    );
    let errs = Config::from_toml_str(&text, "t.toml").expect_err("rejected");
    let p = problem_at(&errs, "devices[0].source.name");
    assert!(p.message.contains("known: frigate, native"), "{p}");
    assert_eq!(p.line, Some(13));
    assert!(problem_at(&errs, "devices[1].source.name")
        .message
        .contains("native source"));
    assert_eq!(errs.len(), 2, "{errs}");

    let text = format!(
        "{MINIMAL}\n[[devices]]\nid = \"d1\"\nkind = \"camera\"\nsource = {{ name = \"frigate\", id = \"x\" }}\n"
    );
    let errs = Config::from_toml_str(&text, "t.toml").expect_err("rejected");
    assert!(problem_at(&errs, "devices[0].source.name")
        .message
        .contains("no [[ingest.sources]] list"));
}

#[test]
fn json_map_needs_topics_and_a_map_and_an_empty_list_reads_nothing() {
    let text = format!("{MINIMAL}\n[[ingest.sources]]\nformat = \"json-map\"\n");
    let errs = Config::from_toml_str(&text, "t.toml").expect_err("rejected");
    let found: Vec<_> = errs
        .iter()
        .filter(|p| p.path == "ingest.sources[0].format")
        .collect();
    assert_eq!(found.len(), 2, "{errs}");
    assert!(found.iter().any(|p| p.message.contains("`topics`")));
    assert!(found
        .iter()
        .any(|p| p.message.contains("[ingest.sources.map]")));

    let text = format!("{MINIMAL}\n[ingest]\nsources = []\n");
    let errs = Config::from_toml_str(&text, "t.toml").expect_err("rejected");
    assert!(problem_at(&errs, "ingest.sources")
        .message
        .contains("nothing would be read"));
}
