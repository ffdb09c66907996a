//! What the in-process benches (gateway/benches/) add to the harness: the broker they
//! measure through, a gateway started in the bench's own process, and percentiles.

#[allow(unused_imports)]
use super::*;

use tokio_util::sync::CancellationToken;

use estate_config::Config;
use estate_gateway::{RunOptions, Running};

/// A gateway run in the bench's process: its handle, the token that stops it, its task,
/// and its data folder (keep it alive while the gateway runs).
pub type InProcess = (
    Running,
    CancellationToken,
    tokio::task::JoinHandle<()>,
    tempfile::TempDir,
);

/// The broker to measure through: `ESTATE_BENCH_MQTT=host:port` (e.g. a local Mosquitto
/// with `config/mosquitto/estate-broker.conf`), else an embedded one.
pub fn broker() -> (String, u16) {
    if let Ok(hp) = std::env::var("ESTATE_BENCH_MQTT") {
        if let Some((h, p)) = hp.rsplit_once(':') {
            if let Ok(p) = p.parse() {
                return (h.to_owned(), p);
            }
        }
        panic!("ESTATE_BENCH_MQTT must be host:port, got {hp:?}");
    }
    let b = estate_gateway::broker::start(0).expect("embedded broker starts");
    (b.addr.ip().to_string(), b.addr.port())
}

/// A fresh id for client ids that must not collide with an earlier run's session.
pub fn rand_id() -> u64 {
    rand::random()
}

/// The value at quantile `p` (0–1) of `sorted`; NaN when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A gateway running in this process, subscribed to the estate `estate` on `host:port`.
/// The uplink points at a closed port (the discard port) and its outage alert is an hour
/// away, so ingest and local work are measured alone. Keep the returned folder alive.
pub async fn start_gateway(estate: &str, host: &str, port: u16) -> InProcess {
    let cfg = Config::from_toml_str(
        &format!(
            "[gateway]\nid = \"bench-gw\"\nestate_id = \"{estate}\"\n[ingest.mqtt]\nhost = \"{host}\"\nport = {port}\nclient_id = \"bench-gw-{:x}\"\n[uplink]\ndown_alert_after = \"1h\"\n[uplink.mqtt]\nhost = \"127.0.0.1\"\nport = 9\n",
            rand_id()
        ),
        "bench.toml",
    )
    .expect("bench config is valid");
    run_in_process(cfg).await
}

/// A gateway running in this process with `cfg`, its data in a fresh folder (keep the
/// returned one alive); returns once ingest has subscribed.
pub async fn run_in_process(cfg: Config) -> InProcess {
    let dir = tempfile::tempdir().expect("tempdir");
    let shutdown = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let opts = RunOptions {
        data_dir: dir.path().to_path_buf(),
        grace: Duration::from_millis(100),
        api_listener: Some(std::net::TcpListener::bind("127.0.0.1:0").expect("bind")),
        on_ready: Some(tx),
    };
    let s = shutdown.clone();
    let task = tokio::spawn(async move {
        estate_gateway::run(cfg, opts, s)
            .await
            .expect("gateway runs");
    });
    let running = rx.await.expect("gateway ready");
    running
        .wait_subscribed(Duration::from_secs(10))
        .await
        .expect("ingest subscribes within 10 s");
    (running, shutdown, task, dir)
}
