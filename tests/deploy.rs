//! Field deployment, as an installer meets it (issue 6):
//!
//! - secrets (inline, from a file, from an environment variable) never appear in
//!   `check-config` output, nor in the logs of a gateway run at `--log-level debug`;
//! - `check-config` warns, and still exits 0, about a private key or password file that
//!   others can read, an uplink without TLS, and an API beyond loopback without a token;
//! - the shipped systemd unit passes `systemd-analyze verify`;
//! - the field binary (`--no-default-features`, as `scripts/cross-build.sh` and the `.deb`
//!   build it) links neither the embedded broker nor the simulator, and the `.deb` ships
//!   the Modbus device profiles (issue 15).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{unique_id, workspace_root, Broker, Metrics, GATEWAY_BIN};

const INLINE_SECRET: &str = "inline-S3CRET-a1b2c3";
const FILE_SECRET: &str = "file-S3CRET-d4e5f6";
const ENV_SECRET: &str = "env-S3CRET-g7h8i9";

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn check_config(path: &Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(GATEWAY_BIN)
        .arg("check-config")
        .arg(path)
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .output()
        .expect("run estate-gateway check-config");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn warnings(output: &str) -> Vec<&str> {
    output
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .collect()
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in [INLINE_SECRET, FILE_SECRET, ENV_SECRET] {
        assert!(
            !text.contains(secret),
            "{what} shows the secret {secret:?}:\n{text}"
        );
    }
}

/// A config with one secret of each kind, against `broker` for both connections.
fn secrets_config(dir: &Path, broker: &Broker, env_var: &str) -> PathBuf {
    let pass_file = dir.join("uplink.pass");
    std::fs::write(&pass_file, format!("{FILE_SECRET}\n")).expect("write password file");
    chmod(&pass_file, 0o600);
    let config = format!(
        r#"[gateway]
id = "{gw}"
estate_id = "{estate}"

[ingest.mqtt]
host = "{host}"
port = {port}
username = "sensor-bus"
password = "{INLINE_SECRET}"

[uplink.mqtt]
host = "{host}"
port = {port}
username = "gw"
password_file = {pass_file:?}

[api]
listen = "127.0.0.1:0"
token_env = "{env_var}"
"#,
        gw = unique_id("gw-sec"),
        estate = unique_id("sec"),
        host = broker.host,
        port = broker.port,
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, config).expect("write config");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_check_config_output_or_debug_logs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = Broker::embedded();
    let env_var = format!("ESTATE_TEST_TOKEN_{}", unique_id("x"));
    let config = secrets_config(dir.path(), &broker, &env_var);

    let (code, output) = check_config(&config, &[(&env_var, ENV_SECRET)]);
    assert_eq!(code, Some(0), "check-config passes:\n{output}");
    assert!(output.contains(": OK ("), "{output}");
    assert_no_secret("check-config", &output);

    // Without the variable, check-config names it (and still not a secret).
    let (code, output) = check_config(&config, &[]);
    assert_ne!(code, Some(0), "a missing secret variable fails:\n{output}");
    assert!(
        output.contains(&format!("environment variable {env_var} is not set")),
        "{output}"
    );
    assert_no_secret("check-config", &output);

    // A short run with debug logging: connect both brokers (with the credentials),
    // then stop.
    let log = dir.path().join("gateway.log");
    let mut child = Command::new(GATEWAY_BIN)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--log-level", "debug", "--grace", "1s"])
        .env(&env_var, ENV_SECRET)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&log).expect("log")))
        .spawn()
        .expect("spawn gateway");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let ready = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("no ready line\n{}", common::log_tail(&log, 40)));
    assert!(ready.starts_with("estate-gateway ready "), "{ready}");
    let api: std::net::SocketAddr = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("api=http://"))
        .expect("api in ready line")
        .parse()
        .expect("api address");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok((200, body)) = common::http_get(api, "/metrics").await {
            let m = Metrics::parse(&body);
            if m.n("estate_ingest_connected", &[]) == 1 && m.n("estate_uplink_connected", &[]) == 1
            {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "both connections up within 20 s\n{}",
            common::log_tail(&log, 40)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().expect("wait for the gateway");
    assert!(status.success(), "clean exit after SIGTERM: {status}");
    let text = std::fs::read_to_string(&log).expect("read log");
    assert!(
        text.contains("DEBUG"),
        "the run logged at debug level:\n{text}"
    );
    assert_no_secret("the debug log", &text);
    assert_no_secret("stdout", &ready);
}

#[test]
fn check_config_warns_about_readable_keys_plain_uplink_and_a_plain_http_api_off_loopback() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    for f in ["ca.pem", "gw.crt", "gw.key", "uplink.pass"] {
        std::fs::write(d.join(f), "x\n").expect("write");
    }
    chmod(&d.join("gw.key"), 0o644);
    chmod(&d.join("uplink.pass"), 0o640);
    let tls = format!(
        "[uplink.mqtt.tls]\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\n",
        d.join("ca.pem"),
        d.join("gw.crt"),
        d.join("gw.key")
    );
    let write = |name: &str, body: &str| -> PathBuf {
        let path = d.join(name);
        std::fs::write(
            &path,
            format!("[gateway]\nid = \"gw-1\"\nestate_id = \"e1\"\n\n{body}"),
        )
        .expect("write config");
        path
    };

    // A readable key and password file, and the API on every interface without a token.
    let exposed = write(
        "exposed.toml",
        &format!(
            "[api]\nlisten = \"0.0.0.0:8080\"\n\n[uplink.mqtt]\nhost = \"mqtt.city.example\"\nport = 8883\nusername = \"gw-1\"\npassword_file = {:?}\n{tls}",
            d.join("uplink.pass")
        ),
    );
    let (code, output) = check_config(&exposed, &[]);
    assert_eq!(code, Some(0), "warnings alone do not fail:\n{output}");
    let w = warnings(&output);
    let key = d.join("gw.key").display().to_string();
    assert!(
        w.iter().any(|l| l.contains("uplink.mqtt.tls.key_file")
            && l.contains(&key)
            && l.contains("0644")),
        "a warning names the readable key file {key}: {w:#?}"
    );
    let pass = d.join("uplink.pass").display().to_string();
    assert!(
        w.iter()
            .any(|l| l.contains("uplink.mqtt.password_file") && l.contains(&pass)),
        "a warning names the readable password file: {w:#?}"
    );
    assert!(
        w.iter().any(|l| l.contains("api.listen")
            && l.contains("0.0.0.0:8080")
            && l.contains("api.tls_cert")),
        "a warning about passwords and tokens over plain HTTP: {w:#?}"
    );
    assert!(
        !w.iter().any(|l| l.contains("not TLS")),
        "the uplink is TLS: {w:#?}"
    );
    assert!(output.contains("3 warning(s)"), "{output}");

    // The same with the files locked down, a token and HTTPS: no warning at all.
    chmod(&d.join("gw.key"), 0o600);
    chmod(&d.join("uplink.pass"), 0o600);
    let token = d.join("api.token");
    std::fs::write(&token, "t0ken\n").expect("write token");
    chmod(&token, 0o600);
    let cert = rcgen::generate_simple_self_signed(vec!["gw-1.local".to_owned()]).expect("cert");
    let (api_cert, api_key) = (d.join("api.crt"), d.join("api.key"));
    std::fs::write(&api_cert, cert.cert.pem()).expect("write cert");
    std::fs::write(&api_key, cert.signing_key.serialize_pem()).expect("write key");
    chmod(&api_key, 0o600);
    let tight = write(
        "tight.toml",
        &format!(
            "[api]\nlisten = \"0.0.0.0:8080\"\ntoken_file = {token:?}\ntls_cert = {api_cert:?}\ntls_key = {api_key:?}\n\n[uplink.mqtt]\nhost = \"mqtt.city.example\"\nport = 8883\nusername = \"gw-1\"\npassword_file = {:?}\n{tls}",
            d.join("uplink.pass")
        ),
    );
    let (code, output) = check_config(&tight, &[]);
    assert_eq!(code, Some(0), "{output}");
    assert!(warnings(&output).is_empty(), "no warnings:\n{output}");
    assert!(!output.contains("t0ken"), "{output}");

    // An uplink without TLS.
    let plain = write(
        "plain.toml",
        "[uplink.mqtt]\nhost = \"mqtt.city.example\"\nport = 1883\n",
    );
    let (code, output) = check_config(&plain, &[]);
    assert_eq!(code, Some(0), "{output}");
    assert!(
        warnings(&output)
            .iter()
            .any(|l| l.contains("uplink.mqtt.tls") && l.contains("not TLS")),
        "a warning about the plain uplink:\n{output}"
    );
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit = workspace_root().join("packaging/estate-gateway.service");
    let text = std::fs::read_to_string(&unit).expect("read the unit");
    for needed in [
        "Type=notify",
        "WatchdogSec=30",
        "User=estate-gateway",
        "StateDirectory=estate-gateway",
        "ConfigurationDirectory=estate-gateway",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "\nCapabilityBoundingSet=\n",
        "Restart=on-failure",
        "ExecStart=/usr/bin/estate-gateway run --config /etc/estate-gateway/gateway.toml --data-dir /var/lib/estate-gateway --log-format json",
    ] {
        assert!(text.contains(needed), "the unit has {needed:?}");
    }
    let analyze = Command::new("systemd-analyze").arg("--version").output();
    if !analyze.is_ok_and(|o| o.status.success()) {
        common::cannot_run(
            "the systemd unit check",
            "systemd-analyze is not installed (apt-get install systemd)",
        );
        return;
    }
    // verify checks that ExecStart's binary exists: point it at the one under test.
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("estate-gateway.service");
    std::fs::write(&copy, text.replace("/usr/bin/estate-gateway", GATEWAY_BIN))
        .expect("write the unit copy");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("run systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Other units on this machine may draw remarks; ours must draw none.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("estate-gateway"))
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
}

/// Run as systemd runs it (`Type=notify`, `WatchdogSec=`): the gateway tells systemd it
/// is ready, pings the watchdog while its store writer commits, and says when it stops.
/// The socket is a real datagram socket, as systemd's is.
#[test]
fn tells_systemd_it_is_ready_pings_the_watchdog_and_says_when_it_stops() {
    use std::os::unix::net::UnixDatagram;

    let env = common::TestEnv::new(Broker::shared(), Broker::shared());
    let socket_path = env.dir().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    let next = || -> String {
        let mut buf = [0u8; 256];
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no message to systemd within 30 s: {e}"));
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };

    let mut gw = common::Gateway::start_with_env(
        &env.write_config(),
        &env.data_dir(),
        &env.log_path(),
        // WatchdogSec=1 (pings every 0.5 s); WATCHDOG_PID is left out, as systemd may.
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().expect("utf-8 path")),
            ("WATCHDOG_USEC", "1000000"),
        ],
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", common::log_tail(&env.log_path(), 60)));

    // The watchdog task starts just before READY=1, so the first ping may come first.
    let (mut ready, mut pings) = (false, 0);
    while !ready || pings < 3 {
        match next().as_str() {
            "READY=1" => ready = true,
            "WATCHDOG=1" => pings += 1,
            other => panic!("unexpected message to systemd before stopping: {other:?}"),
        }
    }

    gw.terminate();
    loop {
        match next().as_str() {
            "STOPPING=1" => break,
            "WATCHDOG=1" => {}
            other => panic!("unexpected message to systemd while stopping: {other:?}"),
        }
    }
    let status = gw
        .wait_exit(Duration::from_secs(30))
        .expect("exits after SIGTERM");
    assert!(status.success(), "clean exit after SIGTERM: {status}");
}

/// Issue 15: the field build, without the `demo` feature, has neither rumqttd nor the
/// simulator in its dependency tree (the default build, for the demo, has both).
#[test]
fn the_field_build_links_neither_the_embedded_broker_nor_the_simulator() {
    let tree = |extra: &[&str]| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(workspace_root())
            .args(["tree", "--locked", "--offline", "-p", "estate-gateway"])
            .args(["-e", "normal", "--prefix", "none"])
            .args(extra)
            .output()
            .expect("run cargo tree");
        assert!(
            out.status.success(),
            "cargo tree {extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let names = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect()
    };
    let field = names(&tree(&["--no-default-features"]));
    let demo = names(&tree(&[]));
    for crate_name in ["rumqttd", "estate-sim"] {
        assert!(
            !field.iter().any(|n| n == crate_name),
            "the field build links {crate_name}"
        );
        assert!(
            demo.iter().any(|n| n == crate_name),
            "the default (demo) build links {crate_name}"
        );
    }
    assert!(
        field.iter().any(|n| n == "rumqttc"),
        "the field build still has its MQTT client"
    );
}

/// Issue 15: the `.deb` ships every Modbus device profile under
/// /etc/estate-gateway/profiles (where `modbus.profile_files = ["profiles/NAME.toml"]` in
/// /etc/estate-gateway/gateway.toml finds them), as conffiles an upgrade keeps, and the
/// README with every page of docs/ it links to.
#[test]
fn the_deb_ships_the_modbus_profiles_and_the_docs() {
    let dpkg = Command::new("dpkg-deb").arg("--version").output();
    if !dpkg.is_ok_and(|o| o.status.success()) {
        common::cannot_run(
            "the .deb check",
            "dpkg-deb is not installed (apt-get install dpkg)",
        );
        return;
    }
    let root = workspace_root();
    let out_dir = tempfile::tempdir().expect("temp dir");
    let built = Command::new("bash")
        .arg(root.join("scripts/build-deb.sh"))
        .arg("x86_64-unknown-linux-gnu")
        .current_dir(&root)
        .env("ESTATE_DEB_BIN", GATEWAY_BIN)
        .env("ESTATE_DEB_OUT", out_dir.path())
        .output()
        .expect("run scripts/build-deb.sh");
    assert!(
        built.status.success(),
        "scripts/build-deb.sh: {}\n{}",
        built.status,
        String::from_utf8_lossy(&built.stderr)
    );
    let deb = std::fs::read_dir(out_dir.path())
        .expect("read the output folder")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("a .deb was written");
    let run = |args: &[&str]| {
        let out = Command::new("dpkg-deb")
            .args(args)
            .arg(&deb)
            .output()
            .expect("run dpkg-deb");
        assert!(out.status.success(), "dpkg-deb {args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let contents = run(&["--contents"]);
    let conffiles_text = {
        let out = Command::new("dpkg-deb")
            .arg("--info")
            .arg(&deb)
            .arg("conffiles")
            .output()
            .expect("run dpkg-deb --info DEB conffiles");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut profiles: Vec<String> = std::fs::read_dir(root.join("config/profiles"))
        .expect("read config/profiles")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    profiles.sort();
    assert!(!profiles.is_empty(), "config/profiles has profiles");
    for name in &profiles {
        let installed = format!("/etc/estate-gateway/profiles/{name}");
        assert!(
            contents.contains(&format!(".{installed}")),
            "the .deb installs {installed}:\n{contents}"
        );
        assert!(
            conffiles_text.lines().any(|l| l == installed),
            "{installed} is a conffile:\n{conffiles_text}"
        );
    }
    let readme = std::fs::read_to_string(root.join("README.md")).expect("read README.md");
    let linked: std::collections::BTreeSet<&str> = readme
        .match_indices("](docs/")
        .filter_map(|(i, _)| readme[i + 2..].split([')', '#']).next())
        .collect();
    assert!(!linked.is_empty(), "the README links to docs/");
    for page in ["README.md"].into_iter().chain(linked) {
        let installed = format!("./usr/share/doc/estate-gateway/{page}");
        assert!(
            contents.contains(&installed),
            "the .deb installs {installed}, which the README links to:\n{contents}"
        );
    }
}
