//! The gateway as a real process ([`Gateway`]): started, awaited, killed on drop.

#[allow(unused_imports)]
use super::*;

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
        Gateway::spawn(config, data_dir, log, "127.0.0.1:0", env)
    }

    /// [`Gateway::start`] with the API on `api` instead of a free port: a restart where
    /// its clients were (e.g. `alerts --follow` reconnecting, tests/follow.rs).
    pub fn start_on(
        config: &Path,
        data_dir: &Path,
        log: &Path,
        api: SocketAddr,
    ) -> Result<Gateway> {
        Gateway::spawn(config, data_dir, log, &api.to_string(), &[])
    }

    fn spawn(
        config: &Path,
        data_dir: &Path,
        log: &Path,
        api_listen: &str,
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
            .args(["--api-listen", api_listen, "--grace", "5s"])
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
        // `api=https://…` when the API serves HTTPS (api.tls_cert).
        let api: SocketAddr = field("api=http://")
            .or_else(|_| field("api=https://"))?
            .parse()
            .context("api address")?;
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

    /// Waits until the city link has subscribed to the city's commands (its log says so;
    /// no metric does): a command published before that reaches no one.
    pub async fn wait_commands_subscribed(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if log.contains("Subscribed to the city's commands.") {
                return;
            }
            if let Some(status) = self.try_exit_status() {
                panic!(
                    "gateway exited ({status}) before the commands subscription\n{}",
                    self.log_tail(60)
                );
            }
            assert!(
                Instant::now() < deadline,
                "the city link never subscribed to the commands\n{}",
                self.log_tail(60)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
