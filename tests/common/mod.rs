//! Shared helpers for the black-box end-to-end tests.
//!
//! - The gateway runs as a real process ([`Gateway`]): `estate-gateway run` with a config
//!   written per test, its API on port 0 (learned from the one `ready` line on stdout),
//!   its logs (stderr) in a file in the test's temp dir. The process is killed when the
//!   handle drops, and the log tail is printed when the test is failing.
//! - Brokers ([`Broker`]): an embedded rumqttd started in the test process by default.
//!   When `ESTATE_TEST_MQTT=host:port` is set (CI points it at a Mosquitto),
//!   [`Broker::shared`] returns that broker instead, so every test except the
//!   embedded-only pipeline variant runs against the broker a deployment uses. The
//!   external broker may be shared by concurrently running tests: each test has its own
//!   gateway id and estate id ([`Ids`]), hence its own topics and client ids, and the city
//!   recorder subscribes to `city/v1/{estate_id}/#` only. The external broker must not
//!   drop QoS 1 messages for a session that lags: with Mosquitto set
//!   `max_queued_messages 0` (its default, 1000, loses messages under the pipeline test's
//!   load; see [`broker_drop_hint`]).
//! - Observation: [`http_get`] is a tiny HTTP/1.1 client for `/metrics` and `/healthz`;
//!   [`Metrics`] parses the Prometheus text; waits poll with a deadline and fail with the
//!   last values seen. Nothing sleeps to order steps.

#![allow(dead_code)] // each test binary uses a different subset of these helpers

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use estate_sim::city::{CityOptions, CityRecorder};
use estate_sim::estate::demo_devices;
use estate_sim::publish::{random_client_id, PublishOptions};

/// True when every test must run (`CI` is set: `scripts/test.sh` sets it after installing
/// every tool the tests need).
pub fn everything_required() -> bool {
    std::env::var_os("CI").is_some()
}

/// A test cannot run here because `missing` is: under [`everything_required`] that fails
/// the test, otherwise it says `SKIPPED` on stderr and the caller returns.
pub fn cannot_run(test: &str, missing: &str) {
    if everything_required() {
        panic!("{test}: {missing} (CI=1: every test must run; scripts/test.sh installs it)");
    }
    eprintln!("SKIPPED {test}: {missing}");
}

/// The gateway binary under test.
pub const GATEWAY_BIN: &str = env!("CARGO_BIN_EXE_estate-gateway");

/// The workspace root (for `config/…` paths).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the gateway package lives in the workspace")
        .to_path_buf()
}

// ---------------------------------------------------------------------------------------
// Brokers
// ---------------------------------------------------------------------------------------

/// An MQTT broker the test talks to.
#[derive(Debug, Clone)]
pub struct Broker {
    pub host: String,
    pub port: u16,
    /// `"embedded"` or `"external"`, for messages.
    pub kind: &'static str,
}

impl Broker {
    /// A fresh embedded rumqttd on a free loopback port (it lives as long as the test
    /// process).
    pub fn embedded() -> Broker {
        let b = estate_gateway::broker::start(0).expect("embedded broker starts");
        Broker {
            host: b.addr.ip().to_string(),
            port: b.addr.port(),
            kind: "embedded",
        }
    }

    /// The broker named by `ESTATE_TEST_MQTT=host:port`, if set.
    pub fn external() -> Option<Broker> {
        let v = std::env::var("ESTATE_TEST_MQTT").ok()?;
        let v = v.trim();
        if v.is_empty() {
            return None;
        }
        let (host, port) = v
            .rsplit_once(':')
            .unwrap_or_else(|| panic!("ESTATE_TEST_MQTT={v:?} is not host:port"));
        let port = port
            .parse()
            .unwrap_or_else(|_| panic!("ESTATE_TEST_MQTT={v:?}: bad port"));
        Some(Broker {
            host: host.to_owned(),
            port,
            kind: "external",
        })
    }

    /// The external broker when `ESTATE_TEST_MQTT` is set, a fresh embedded one otherwise.
    pub fn shared() -> Broker {
        Broker::external().unwrap_or_else(Broker::embedded)
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

// ---------------------------------------------------------------------------------------
// Per-test identity, config and temp dir
// ---------------------------------------------------------------------------------------

/// A fresh `{prefix}{8 hex digits}`: only `[A-Za-z0-9_-]`, safe in topics and client ids.
pub fn unique_id(prefix: &str) -> String {
    format!("{prefix}{:08x}", rand::random::<u32>())
}

/// One test's world: temp dir, ids, brokers, and the gateway config written from them.
#[derive(Debug)]
pub struct TestEnv {
    dir: Option<tempfile::TempDir>,
    pub gateway_id: String,
    pub estate_id: String,
    pub ingest: Broker,
    pub uplink: Broker,
    /// `uplink.down_alert_after`.
    pub down_alert_after: String,
    /// Extra TOML appended to the `[uplink]` section (e.g. `max_batch_events = 50`).
    pub uplink_extra: String,
    /// `alerts.forward`: alert changes go upstream as `ALERT.UPDATE` events. Off by
    /// default here, because most tests assert the exact stream of sensor events the
    /// city receives; `tests/alerts.rs` turns it on and checks the two together.
    pub alerts_forward: bool,
}

impl TestEnv {
    pub fn new(ingest: Broker, uplink: Broker) -> TestEnv {
        let dir = tempfile::Builder::new()
            .prefix("estate-e2e-")
            .tempdir()
            .expect("temp dir");
        TestEnv {
            dir: Some(dir),
            gateway_id: unique_id("gw-t"),
            estate_id: unique_id("t"),
            ingest,
            uplink,
            down_alert_after: "1s".into(),
            uplink_extra: String::new(),
            alerts_forward: false,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("temp dir").path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir().join("gateway.log")
    }

    /// The gateway config for this test, as TOML. The devices are the simulator's demo
    /// estate, so simulated events arrive as registered devices.
    pub fn config_toml(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            r#"[gateway]
id = "{gw}"
estate_id = "{estate}"

[ingest.mqtt]
host = "{ih}"
port = {ip}
reconnect_min = "100ms"
reconnect_max = "1s"

[uplink]
down_alert_after = "{down}"
{extra}

[uplink.mqtt]
host = "{uh}"
port = {up}
reconnect_min = "100ms"
reconnect_max = "1s"

[alerts]
forward = {fwd}
"#,
            gw = self.gateway_id,
            estate = self.estate_id,
            ih = self.ingest.host,
            ip = self.ingest.port,
            down = self.down_alert_after,
            extra = self.uplink_extra,
            uh = self.uplink.host,
            up = self.uplink.port,
            fwd = self.alerts_forward,
        );
        for d in demo_devices() {
            let l = &d.location;
            let parts: Vec<String> = [
                ("building", &l.building),
                ("unit", &l.unit),
                ("floor", &l.floor),
                ("room", &l.room),
                ("zone", &l.zone),
            ]
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k} = {v:?}"))
            .collect();
            let _ = write!(
                s,
                "\n[[devices]]\nid = {:?}\nkind = {:?}\nlocation = {{ {} }}\n",
                d.id,
                d.kind.as_str(),
                parts.join(", ")
            );
        }
        s
    }

    /// Writes the config into the temp dir and returns its path.
    pub fn write_config(&self) -> PathBuf {
        let path = self.dir().join("gateway.toml");
        std::fs::write(&path, self.config_toml()).expect("write config");
        path
    }

    /// Writes the config and starts the gateway on this test's data dir.
    pub fn start_gateway(&self) -> Gateway {
        let config = self.write_config();
        Gateway::start(&config, &self.data_dir(), &self.log_path())
            .unwrap_or_else(|e| panic!("{e:#}\n{}", log_tail(&self.log_path(), 60)))
    }

    /// Publisher options for `count` native events to this test's estate on the ingest
    /// broker, as fast as PUBACK flow control allows.
    pub fn publish_options(&self, count: u64, alarms: u64) -> PublishOptions {
        PublishOptions {
            broker_host: self.ingest.host.clone(),
            broker_port: self.ingest.port,
            client_id: random_client_id("e2e-pub"),
            estate_id: self.estate_id.clone(),
            count,
            alarms,
            drain_timeout: Duration::from_secs(60),
            ..PublishOptions::default()
        }
    }

    /// A city-platform recorder subscribed to this test's estate on the uplink broker.
    pub async fn city(&self) -> CityRecorder {
        self.city_on(&self.uplink).await
    }

    pub async fn city_on(&self, broker: &Broker) -> CityRecorder {
        CityRecorder::start(CityOptions {
            broker_host: broker.host.clone(),
            broker_port: broker.port,
            client_id: random_client_id("e2e-city"),
            topic_filter: format!("city/v1/{}/#", self.estate_id),
            ..CityOptions::default()
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "city recorder on {} broker {}: {e:#}",
                broker.kind,
                broker.addr()
            )
        })
    }

    /// A raw MQTT client on the ingest broker (for hand-made payloads).
    pub async fn raw_client(&self) -> RawPublisher {
        RawPublisher::connect(&self.ingest).await
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!("test failed; its files are kept in {}", kept.display());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The gateway process
// ---------------------------------------------------------------------------------------

/// The last `n` lines of a log file.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    format!(
        "--- last {} lines of {} ---\n{}\n--- end of log ---",
        lines.len() - from,
        path.display(),
        lines[from..].join("\n")
    )
}

/// A running `estate-gateway run` process. Killed (SIGKILL) on drop.
#[derive(Debug)]
pub struct Gateway {
    child: Child,
    pub api: SocketAddr,
    pub store_epoch: u64,
    pub boot_id: String,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

impl Gateway {
    /// Starts the gateway and waits (30 s at most) for its `ready` line.
    pub fn start(config: &Path, data_dir: &Path, log: &Path) -> Result<Gateway> {
        Gateway::start_with_env(config, data_dir, log, &[])
    }

    /// [`Gateway::start`] with extra environment variables (e.g. what systemd sets).
    pub fn start_with_env(
        config: &Path,
        data_dir: &Path,
        log: &Path,
        env: &[(&str, &str)],
    ) -> Result<Gateway> {
        // Append: a restarted gateway's log follows the previous one's.
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .context("open the gateway log")?;
        let mut child = Command::new(GATEWAY_BIN)
            .arg("run")
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--api-listen", "127.0.0.1:0", "--grace", "5s"])
            .args(["--log-level", "info,rumqttd=warn,estate_gateway=debug"])
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .context("spawn estate-gateway")?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            // Keep reading after the ready line so the pipe never fills.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        let line = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with("estate-gateway ready ") => break line,
                Ok(other) => seen.push(other),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!("no ready line within 30 s (stdout so far: {seen:?})");
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait()?;
                    bail!("gateway exited ({status}) before its ready line (stdout: {seen:?})");
                }
            }
        };
        let field = |key: &str| -> Result<&str> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .ok_or_else(|| anyhow!("no {key} in ready line {line:?}"))
        };
        let api: SocketAddr = field("api=http://")?.parse().context("api address")?;
        let store_epoch = field("store_epoch=")?.parse().context("store_epoch")?;
        let boot_id = field("boot_id=")?.to_owned();
        Ok(Gateway {
            child,
            api,
            store_epoch,
            boot_id,
            log: log.to_path_buf(),
            exited: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_tail(&self, n: usize) -> String {
        log_tail(&self.log, n)
    }

    /// `None` while running.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if self.try_exit_status().is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
    }

    /// Sends SIGTERM (orderly shutdown).
    pub fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// Waits for the process to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What to print when a wait on the city side fails: the gateway's metrics and log.
    pub async fn diagnostics(&self) -> String {
        let metrics = match self.metrics().await {
            Ok(m) => m.summary(),
            Err(e) => format!("(no /metrics: {e:#})"),
        };
        format!("gateway /metrics:\n{metrics}\n{}", self.log_tail(40))
    }

    pub async fn metrics(&self) -> Result<Metrics> {
        let (status, body) = http_get(self.api, "/metrics").await?;
        if status != 200 {
            bail!("GET /metrics: HTTP {status}: {body}");
        }
        Ok(Metrics::parse(&body))
    }

    pub async fn healthz(&self) -> Result<serde_json::Value> {
        let (status, body) = http_get(self.api, "/healthz").await?;
        if status != 200 {
            bail!("GET /healthz: HTTP {status}: {body}");
        }
        serde_json::from_str(&body).with_context(|| format!("/healthz is not JSON: {body}"))
    }

    /// Polls `/metrics` every 50 ms until `pred` holds; panics after `timeout` with `what`,
    /// the last metrics and the log tail. Also fails at once if the gateway exits.
    /// Waits until ingest is connected and subscribed: from then on the broker keeps
    /// what sensors publish for the gateway (before it, a publish reaches no one).
    pub async fn wait_subscribed(&mut self) {
        self.wait_metrics("ingest subscribed", Duration::from_secs(30), |m| {
            m.n("estate_ingest_connected", &[]) == 1
        })
        .await;
    }

    /// Waits until both broker connections are up: ingest subscribed, uplink connected.
    pub async fn wait_connected(&mut self) {
        self.wait_metrics("both broker connections up", Duration::from_secs(30), |m| {
            m.n("estate_ingest_connected", &[]) == 1 && m.n("estate_uplink_connected", &[]) == 1
        })
        .await;
    }

    pub async fn wait_metrics(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Metrics) -> bool,
    ) -> Metrics {
        let deadline = Instant::now() + timeout;
        let mut last: Option<Metrics> = None;
        let mut last_err = String::new();
        loop {
            match self.metrics().await {
                Ok(m) if pred(&m) => return m,
                Ok(m) => last = Some(m),
                Err(e) => last_err = format!("{e:#}"),
            }
            if let Some(status) = self.try_exit_status() {
                panic!(
                    "gateway exited ({status}) while waiting for {what}\n{}",
                    self.log_tail(60)
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; last /metrics:\n{}\n(last error: {last_err})\n{}",
                    last.map(|m| m.summary()).unwrap_or_default(),
                    self.log_tail(60)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("gateway pid {}:\n{}", self.pid(), self.log_tail(80));
        }
        self.kill();
    }
}

/// Explains a shortfall that is the broker's doing: it acknowledged `acked` messages to
/// the publisher but delivered only `received` to the gateway. A Mosquitto with its
/// default `max_queued_messages 1000` drops QoS 1 messages for a session that falls
/// behind (the gateway acknowledges only after its disk commit); CI's broker config must
/// raise it (`max_queued_messages 0`).
pub fn broker_drop_hint(received: u64, acked: u64) -> String {
    if received < acked {
        format!(
            "NOTE: the gateway received only {received} messages of the {acked} the broker acknowledged \
             to the publisher: the broker dropped {} before delivering them (Mosquitto's default \
             max_queued_messages is 1000; set it to 0 for these tests)",
            acked - received
        )
    } else {
        format!("the gateway received {received} messages; the broker acknowledged {acked}")
    }
}

// ---------------------------------------------------------------------------------------
// HTTP and metrics
// ---------------------------------------------------------------------------------------

/// `GET path` over HTTP/1.1 (`Connection: close`): status and body. 10 s at most.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let (status, _headers, body) = http_get_full(addr, path).await?;
    Ok((status, body))
}

/// `GET path`: status, headers (lower-cased names) and body.
pub async fn http_get_full(
    addr: SocketAddr,
    path: &str,
) -> Result<(u16, Vec<(String, String)>, String)> {
    http_request_full(addr, "GET", path, &[], "").await
}

/// `METHOD path` with extra headers and a body (JSON when not empty): status and body.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String)> {
    let (status, _headers, body) = http_request_full(addr, method, path, headers, body).await?;
    Ok((status, body))
}

/// `METHOD path` over HTTP/1.1 (`Connection: close`): status, headers, body. 10 s at most.
pub async fn http_request_full(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, Vec<(String, String)>, String)> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || method != "GET" {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        anyhow::Ok(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| anyhow!("{method} {path} on {addr}: no response within 10 s"))??;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("GET {path}: no end of headers"))?;
    let head = std::str::from_utf8(&buf[..split]).context("response head")?;
    let raw_body = &buf[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(raw_body)?
    } else {
        raw_body.to_vec()
    };
    Ok((
        status,
        headers,
        String::from_utf8(body).context("body is not UTF-8")?,
    ))
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("bad chunk header"))?;
        let size_text = std::str::from_utf8(&b[..eol])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(b.get(..size).ok_or_else(|| anyhow!("short chunk"))?);
        b = b
            .get(size + 2..)
            .ok_or_else(|| anyhow!("short chunk trailer"))?;
    }
}

/// One sample of the Prometheus text exposition.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// A parsed `/metrics` response.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(parse_sample)
            .collect();
        Metrics {
            text: text.to_owned(),
            samples,
        }
    }

    /// Sum of the samples named `name` whose labels include every `(key, value)` of
    /// `filter` (0 when there are none).
    pub fn sum(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                filter
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// [`Metrics::sum`] as an integer (counters and gauges here are whole numbers).
    pub fn n(&self, name: &str, filter: &[(&str, &str)]) -> u64 {
        self.sum(name, filter).max(0.0) as u64
    }

    /// Whether the exposition declares the metric family (`# TYPE family …`).
    pub fn has_family(&self, family: &str) -> bool {
        self.text.lines().any(|l| {
            l.strip_prefix("# TYPE ")
                .and_then(|r| r.split_whitespace().next())
                == Some(family)
        })
    }

    /// Every sample except histogram buckets, one per line, for failure messages.
    pub fn summary(&self) -> String {
        self.samples
            .iter()
            .filter(|s| !s.name.ends_with("_bucket"))
            .map(|s| {
                let labels: Vec<String> =
                    s.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
                format!("  {}{{{}}} {}", s.name, labels.join(","), s.value)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => (&line[..i], &line[i..]),
        None => return None,
    };
    let mut labels = Vec::new();
    let rest = if let Some(r) = rest.strip_prefix('{') {
        let end = r.find('}')?;
        for pair in r[..end].split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=')?;
            labels.push((k.trim().to_owned(), v.trim().trim_matches('"').to_owned()));
        }
        &r[end + 1..]
    } else {
        rest
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

// ---------------------------------------------------------------------------------------
// Raw MQTT publishing (hand-made payloads)
// ---------------------------------------------------------------------------------------

/// A QoS 1 publisher for arbitrary payloads: [`RawPublisher::publish`] returns once the
/// broker acknowledged the message.
#[derive(Debug)]
pub struct RawPublisher {
    client: rumqttc::AsyncClient,
    acks: tokio::sync::mpsc::UnboundedReceiver<()>,
    task: tokio::task::JoinHandle<()>,
}

impl RawPublisher {
    pub async fn connect(broker: &Broker) -> RawPublisher {
        use rumqttc::{Event, Incoming};
        let mut o =
            rumqttc::MqttOptions::new(random_client_id("e2e-raw"), &broker.host, broker.port);
        o.set_clean_session(true)
            .set_inflight(1)
            .set_max_packet_size(2 << 20, 2 << 20);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(o, 16);
        let (tx, acks) = tokio::sync::mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Incoming::PubAck(_))) => {
                        let _ = tx.send(());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("raw publisher: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("raw publisher connects within 10 s")
            .expect("raw publisher task alive");
        RawPublisher { client, acks, task }
    }

    /// Publishes QoS 1 and waits for its PUBACK (one at a time: inflight is 1).
    pub async fn publish(&mut self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload.into())
            .await
            .expect("queue publish");
        tokio::time::timeout(Duration::from_secs(10), self.acks.recv())
            .await
            .unwrap_or_else(|_| panic!("no PUBACK within 10 s for a publish to {topic}"))
            .expect("raw publisher task alive");
    }
}

impl Drop for RawPublisher {
    fn drop(&mut self) {
        let _ = self.client.try_disconnect();
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------
// A TCP proxy that starts listening late (an uplink that comes back)
// ---------------------------------------------------------------------------------------

/// A free loopback port, released again: nothing listens on it until [`start_proxy`].
pub fn reserve_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("local addr").port()
}

/// Listens on `127.0.0.1:port` and forwards every connection to `target`, both ways.
/// Runs until the test's runtime ends.
pub async fn start_proxy(port: u16, target: String) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("proxy cannot listen on port {port}: {e}"));
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

// ---------------------------------------------------------------------------------------
// Modbus (issue 3): configs with extra sections, full events upstream, the CLI
// ---------------------------------------------------------------------------------------

/// Writes this test's config followed by `extra` TOML (e.g. `[modbus]`, Modbus
/// `[[devices]]`) and returns its path.
pub fn write_config_with(env: &TestEnv, extra: &str) -> PathBuf {
    let path = env.dir().join("gateway.toml");
    std::fs::write(&path, format!("{}\n{extra}", env.config_toml())).expect("write config");
    path
}

/// Starts the gateway on [`write_config_with`]`(env, extra)`.
pub fn start_gateway_with(env: &TestEnv, extra: &str) -> Gateway {
    let config = write_config_with(env, extra);
    Gateway::start(&config, &env.data_dir(), &env.log_path())
        .unwrap_or_else(|e| panic!("{e:#}\n{}", log_tail(&env.log_path(), 60)))
}

/// The shipped profile files (`config/profiles/*.toml`), absolute, sorted.
pub fn shipped_profile_files() -> Vec<PathBuf> {
    let dir = workspace_root().join("config").join("profiles");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    v.sort();
    v
}

/// Runs `estate-gateway ARGS…` to completion (60 s at most): exit status, stdout, stderr.
pub fn run_gateway_cli(args: &[&str]) -> (ExitStatus, String, String) {
    let mut child = Command::new(GATEWAY_BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn estate-gateway");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().ok().flatten().is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("collect output");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every forwarded event as decoded from the wire, complete (value, device, state).
#[derive(Debug)]
pub struct EventTap {
    events: std::sync::Arc<std::sync::Mutex<Vec<(String, estate_protocols::pb::Event)>>>,
    /// The `store_epoch` of each event's batch, index for index with `events`.
    epochs: std::sync::Arc<std::sync::Mutex<Vec<u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl EventTap {
    /// Subscribes to `city/v1/{estate_id}/#`; returns once subscribed.
    pub async fn start(broker: &Broker, estate_id: &str) -> EventTap {
        use prost::Message as _;
        use rumqttc::{Event, Incoming, QoS};
        let mut o =
            rumqttc::MqttOptions::new(random_client_id("e2e-etap"), &broker.host, broker.port);
        o.set_clean_session(true)
            .set_max_packet_size(4 << 20, 64 << 10);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(o, 16);
        let filter = format!("city/v1/{estate_id}/#");
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let epochs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let sink = events.clone();
        let epoch_sink = epochs.clone();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        let _ = client.try_subscribe(filter.as_str(), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Incoming::SubAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    // Batches only: the city link's status, health and results share
                    // the prefix, and some of them would decode as an EventBatch.
                    Ok(Event::Incoming(Incoming::Publish(p)))
                        if p.topic.ends_with("/alarms") || p.topic.ends_with("/events") =>
                    {
                        let Ok(batch) =
                            estate_protocols::pb::EventBatch::decode(p.payload.as_ref())
                        else {
                            continue;
                        };
                        let mut sink = sink.lock().unwrap_or_else(|e| e.into_inner());
                        let mut epoch_sink = epoch_sink.lock().unwrap_or_else(|e| e.into_inner());
                        for e in batch.events {
                            epoch_sink.push(batch.store_epoch);
                            sink.push((p.topic.clone(), e));
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("event tap: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("event tap subscribes within 10 s")
            .expect("event tap task alive");
        EventTap {
            events,
            epochs,
            task,
        }
    }

    /// (topic, event) in arrival order, duplicates included.
    pub fn events(&self) -> Vec<(String, estate_protocols::pb::Event)> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `(store_epoch, event)` in arrival order, duplicates included.
    pub fn events_with_epoch(&self) -> Vec<(u64, estate_protocols::pb::Event)> {
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let epochs = self.epochs.lock().unwrap_or_else(|e| e.into_inner());
        epochs
            .iter()
            .copied()
            .zip(events.iter().map(|(_, e)| e.clone()))
            .collect()
    }

    /// Events of `device` with `code` so far (deduplicated on seq).
    pub fn of(&self, device: &str, code: &str) -> Vec<(String, estate_protocols::pb::Event)> {
        let mut seen = std::collections::HashSet::new();
        self.events()
            .into_iter()
            .filter(|(_, e)| e.device_id == device && e.code == code && seen.insert(e.seq))
            .collect()
    }

    /// Polls every 20 ms until `pred` holds; panics after `timeout` with `what` and the
    /// events seen (code, device, state, value).
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[(String, estate_protocols::pb::Event)]) -> bool,
    ) -> Vec<(String, estate_protocols::pb::Event)> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.events();
            if pred(&events) {
                return events;
            }
            if Instant::now() >= deadline {
                let shown: Vec<String> = events
                    .iter()
                    .rev()
                    .take(40)
                    .rev()
                    .map(|(t, e)| {
                        format!(
                            "  {t} seq {} {} {} {:?} {:?}",
                            e.seq,
                            e.device_id,
                            e.code,
                            e.state(),
                            e.value.as_ref().map(|v| (v.value, v.unit.clone()))
                        )
                    })
                    .collect();
                panic!(
                    "event tap: timed out after {timeout:?} waiting for {what}; last events:\n{}",
                    shown.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for EventTap {
    fn drop(&mut self) {
        self.task.abort();
    }
}
pub mod nats;
