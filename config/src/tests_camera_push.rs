//! `[ingest.camera_push]`: defaults, its users' secrets, the devices that name it, and
//! every rule located.

use std::time::Duration;

use super::*;

const MINIMAL: &str = r#"
[gateway]
id = "gw-1"
estate_id = "E1"
"#;

#[test]
fn a_camera_push_loads_with_its_defaults_and_names_devices_without_sources() {
    let text = format!(
        r#"{MINIMAL}
[ingest.camera_push]
listen = "0.0.0.0:8089"
users = [{{ name = "cameras", password = "Hik-12345" }}]

[[devices]]
id = "cam-north-gate"
kind = "camera"
source = {{ name = "camera-push", id = "44:19:b6:6d:24:85/1" }}
"#
    );
    let c = Config::from_toml_str(&text, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    let p = c.ingest.camera_push.expect("camera push");
    assert_eq!(p.listen.to_string(), "0.0.0.0:8089");
    assert_eq!(p.name, "camera-push");
    assert_eq!(p.auth, PushAuth::Digest);
    assert_eq!(p.realm, "estate-gateway");
    assert_eq!(p.camera_id, CameraIdFrom::Mac);
    assert_eq!(p.clear_after, Duration::from_secs(5));
    assert_eq!(p.max_body, ByteSize::mib(2));
    assert_eq!(format!("{:?}", p.users[0].password), "Some(***)");
    assert_eq!(c.ingest.sources, None, "no MQTT source list is needed");
    let off = Config::from_toml_str(MINIMAL, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(off.ingest.camera_push, None, "off by default");
}

#[test]
fn a_users_password_comes_from_its_environment_variable() {
    std::env::set_var("ESTATE_TEST_CAMERA_PUSH_PASSWORD", "from-env");
    let text = format!(
        r#"{MINIMAL}
[ingest.camera_push]
listen = "127.0.0.1:8089"
auth = "basic"
[[ingest.camera_push.users]]
name = "nvr-1"
password_env = "ESTATE_TEST_CAMERA_PUSH_PASSWORD"
"#
    );
    let c = Config::from_toml_str(&text, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    let user = &c.ingest.camera_push.expect("push").users[0];
    assert_eq!(user.password.as_ref().map(|p| p.expose()), Some("from-env"));
}

#[test]
fn every_camera_push_problem_is_reported_at_its_key() {
    let text = format!(
        r#"{MINIMAL}
[[ingest.sources]]
format = "camera-isapi-json"
name = "cams"

[api]
listen = "127.0.0.1:8089"

[ingest.camera_push]
listen = "127.0.0.1:8089"
name = "cams"
auth = "digest"
realm = "a \"b\""
clear_after = "100ms"
max_body = "100 MiB"
users = [
  {{ name = "a:b", password = "x" }},
  {{ name = "nvr" }},
  {{ name = "nvr", password = "y" }},
]
"#
    );
    let errs = Config::from_toml_str(&text, "t.toml").expect_err("invalid");
    let at = |path: &str| -> String {
        let found: Vec<_> = errs.iter().filter(|p| p.path == path).collect();
        assert_eq!(
            found.len(),
            1,
            "expected one problem at {path}, got:\n{errs}"
        );
        found[0].message.clone()
    };
    assert!(
        at("ingest.camera_push.name").contains("is also the name of ingest.sources[0]"),
        "{errs}"
    );
    assert!(
        at("ingest.camera_push.listen").contains("is the API's address too"),
        "{errs}"
    );
    assert!(
        at("ingest.camera_push.realm").contains("printable ASCII"),
        "{errs}"
    );
    assert!(
        at("ingest.camera_push.clear_after").contains("between 1s and 1h"),
        "{errs}"
    );
    assert!(
        at("ingest.camera_push.max_body").contains("between 4 KiB and 16 MiB"),
        "{errs}"
    );
    assert!(
        at("ingest.camera_push.users[0].name").contains("contains ':'"),
        "{errs}"
    );
    assert!(
        at("ingest.camera_push.users[1].name").contains("has no password"),
        "{errs}"
    );
    assert!(
        at("ingest.camera_push.users[2].name").contains("duplicate user \"nvr\""),
        "{errs}"
    );
    // Each located in the file.
    assert!(errs.iter().all(|p| p.line.is_some()), "{errs}");

    let none = format!(
        "{MINIMAL}\n[ingest.camera_push]\nlisten = \"127.0.0.1:8089\"\nauth = \"none\"\ncamera_id = \"user\"\n"
    );
    let errs = Config::from_toml_str(&none, "t.toml").expect_err("invalid");
    assert!(
        at_path(&errs, "ingest.camera_push.camera_id").contains("asks for no user"),
        "{errs}"
    );
    let no_users = format!("{MINIMAL}\n[ingest.camera_push]\nlisten = \"127.0.0.1:8089\"\n");
    let errs = Config::from_toml_str(&no_users, "t.toml").expect_err("invalid");
    assert!(
        at_path(&errs, "ingest.camera_push.users").contains("needs at least one account"),
        "{errs}"
    );
    let no_listen = format!("{MINIMAL}\n[ingest.camera_push]\nauth = \"none\"\n");
    let errs = Config::from_toml_str(&no_listen, "t.toml").expect_err("invalid");
    assert!(
        errs.to_string().contains("missing required key `listen`"),
        "{errs}"
    );
}

fn at_path(errs: &ConfigErrors, path: &str) -> String {
    errs.iter()
        .find(|p| p.path == path)
        .unwrap_or_else(|| panic!("no problem at {path}:\n{errs}"))
        .message
        .clone()
}

#[test]
fn a_camera_push_beyond_loopback_without_digest_is_warned_about() {
    let with = |listen: &str, auth: &str| {
        let text = format!(
            "{MINIMAL}\n[ingest.camera_push]\nlisten = \"{listen}\"\nauth = \"{auth}\"\nusers = [{{ name = \"c\", password = \"p\" }}]\n"
        );
        Config::from_toml_str(&text, "t.toml")
            .unwrap_or_else(|e| panic!("{e}"))
            .warnings()
            .into_iter()
            .filter(|w| w.path.starts_with("ingest.camera_push"))
            .map(|w| w.message)
            .collect::<Vec<_>>()
    };
    assert!(
        with("0.0.0.0:8089", "none")[0].contains("anyone on that network can raise camera alarms")
    );
    assert!(with("0.0.0.0:8089", "basic")[0].contains("in clear"));
    assert!(with("0.0.0.0:8089", "digest").is_empty());
    assert!(with("127.0.0.1:8089", "none").is_empty());
}
