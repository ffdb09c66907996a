//! `estate-gateway demo`: a whole simulated estate on one machine, nothing installed.
//!
//! Embedded broker (rumqttd, loopback, free port) → the gateway (the shipped
//! `config/gateway.toml`, pointed at that broker, store in a temp folder) → uplink to the
//! same broker → the reference city-platform subscriber. The simulator publishes the demo
//! estate's devices (mixed scenario: telemetry, a fire, a leak) in the native format, and
//! beside them, over and over, the mixed estate in third-party formats (zigbee2mqtt,
//! Frigate, an ISAPI camera, an access controller, NB-IoT smoke: see
//! `estate_sim::formats::mixed_estate`), which the shipped config's `[[ingest.sources]]`
//! read. Every two seconds it prints what flows; at the end, a summary with what the city
//! platform received.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use estate_config::Config;
use estate_protocols::model::Lane;
use estate_sim::city::{CityOptions, CityRecorder};
use estate_sim::publish::{self, PublishOptions, Scenario};

/// The shipped default configuration, compiled in so the demo needs no files.
pub const SHIPPED_CONFIG: &str = include_str!("../../config/gateway.toml");

/// The `demo` subcommand's flags.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// How long to run (e.g. "30s"); runs until Ctrl-C when not given.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Simulated sensor messages per second.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// One message in this many is a smoke alarm.
    #[arg(long, default_value_t = 100)]
    pub alarm_every: u64,
}

/// Runs the demo until `--duration` is over or Ctrl-C, then prints the summary.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let broker = tokio::task::spawn_blocking(|| crate::broker::start(0)).await??;
    let (cfg, token) = demo_config(broker.addr)?;
    let data = tempfile::Builder::new().prefix("estate-demo-").tempdir()?;
    // An operator account for the console (issue 16), made for this run.
    let password = format!("demo-{:012x}", rand::random::<u64>() >> 16);
    let mut users = crate::auth::users::UsersFile::default();
    users.add_user("demo", crate::auth::Role::Operator, &password)?;
    users.save(data.path())?;
    let estate = cfg.gateway.estate_id.clone();

    let city = CityRecorder::start(CityOptions {
        broker_host: broker.addr.ip().to_string(),
        broker_port: broker.addr.port(),
        topic_filter: format!("city/v1/{estate}/#"),
        ..Default::default()
    })
    .await
    .context("starting the reference city subscriber")?;

    let shutdown = CancellationToken::new();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let api = std::net::TcpListener::bind("127.0.0.1:0")?;
    let gateway = tokio::spawn(crate::run(
        cfg,
        crate::RunOptions {
            data_dir: data.path().to_path_buf(),
            grace: Duration::from_secs(5),
            api_listener: Some(api),
            on_ready: Some(ready_tx),
        },
        shutdown.clone(),
    ));
    let running = ready_rx.await.context("the gateway did not start")?;
    // Publish only once the gateway's subscriptions exist: the embedded broker keeps
    // nothing for a session that has not subscribed yet, so earlier messages would be
    // acknowledged to the simulator and never reach the gateway.
    running
        .wait_subscribed(Duration::from_secs(10))
        .await
        .context("the gateway did not subscribe to the embedded broker within 10 s")?;

    let stop_publishing = CancellationToken::new();
    let publisher = spawn_sensors(&args, broker.addr, &estate, stop_publishing.clone());
    let formats = spawn_formats(broker.addr, stop_publishing.clone());
    print_banner(broker.addr, &running, (&token, &password), &data, &estate);
    print_progress(&args, &running, &city).await;

    stop_publishing.cancel();
    let report = publisher.await??;
    let formats_acked = formats.await??;
    settle(&running, &city, report.acked + formats_acked).await;
    shutdown.cancel();
    gateway.await??;
    let c = city.summary();
    println!(
        "\nSensors published {} (acknowledged {}) plus {formats_acked} in third-party formats; the city platform received {} unique events ({} alarms, {} events), {} duplicates, {} missing, {} decode errors.",
        report.sent, report.acked, c.unique, c.alarms, c.events, c.duplicates, c.missing(), c.decode_errors
    );
    Ok(())
}

/// The shipped config pointed at the embedded broker (ingest and uplink), with an API
/// token for the terminal (`ack`, `close`, `alerts --follow`); the token too.
fn demo_config(broker: SocketAddr) -> anyhow::Result<(Config, String)> {
    let mut cfg = Config::from_toml_str(SHIPPED_CONFIG, "config/gateway.toml")
        .map_err(|e| anyhow::anyhow!("shipped config: {e}"))?;
    cfg.ingest.mqtt.host = broker.ip().to_string();
    cfg.ingest.mqtt.port = broker.port();
    cfg.uplink.mqtt.host = broker.ip().to_string();
    cfg.uplink.mqtt.port = broker.port();
    // A fresh token per run; the shipped config has none (read-only API).
    let token = format!("demo-{:016x}", rand::random::<u64>());
    if cfg.api.token.is_none() {
        cfg.api.token = Some(estate_config::Secret::new(token.clone()));
    }
    Ok((cfg, token))
}

/// The native devices: the mixed scenario at `--rate` until `stop`.
fn spawn_sensors(
    args: &DemoArgs,
    broker: SocketAddr,
    estate: &str,
    stop: CancellationToken,
) -> JoinHandle<anyhow::Result<publish::PublishReport>> {
    let seconds = args.duration.map_or(86_400.0 * 365.0, |d| d.as_secs_f64());
    let count = ((args.rate * seconds) as u64).max(1);
    tokio::spawn(publish::run_until(
        PublishOptions {
            broker_host: broker.ip().to_string(),
            broker_port: broker.port(),
            estate_id: estate.to_owned(),
            count,
            rate: Some(args.rate),
            alarms: count / args.alarm_every.max(1),
            scenario: Scenario::Mixed,
            ..Default::default()
        },
        stop,
    ))
}

/// Third-party formats beside the native devices, the script repeated until `stop`; how
/// many messages the broker acknowledged.
fn spawn_formats(broker: SocketAddr, stop: CancellationToken) -> JoinHandle<anyhow::Result<u64>> {
    let host = broker.ip().to_string();
    let port = broker.port();
    tokio::spawn(async move {
        // Not retained here (availability topics are, on a real broker): a retained
        // publish is one more rumqttd path, and the demo's broker is rumqttd.
        let mut steps = estate_sim::formats::mixed_estate("");
        for s in &mut steps {
            s.msg.retain = false;
        }
        let mut acked = 0u64;
        while !stop.is_cancelled() {
            let id = publish::random_client_id("demo-formats");
            acked += publish::publish_steps(&host, port, &id, &steps, stop.clone()).await?;
        }
        anyhow::Ok(acked)
    })
}

/// Where everything is: broker, console, token, API, store, topics.
fn print_banner(
    broker: SocketAddr,
    running: &crate::Running,
    (token, password): (&str, &str),
    data: &tempfile::TempDir,
    estate: &str,
) {
    println!("estate-gateway demo: a simulated estate on this machine");
    println!("  broker (embedded)   mqtt://{broker}");
    println!(
        "  console             http://{}/   (open it in a browser)",
        running.api_addr
    );
    println!("  console sign-in     demo / {password}   (an operator: acknowledge, close, shelve)");
    println!("  API token           {token}   (for the terminal and scripts)");
    println!(
        "  on a terminal       ESTATE_API_TOKEN={token} estate-gateway alerts --follow --api http://{}",
        running.api_addr
    );
    println!(
        "  gateway API         http://{}/api/alerts  http://{}/healthz  http://{}/metrics",
        running.api_addr, running.api_addr, running.api_addr
    );
    println!("  store               {}", data.path().display());
    println!("  sensors publish to  estate/{estate}/<kind>/<device>/event");
    println!("  and third-party     zigbee2mqtt/#, frigate/events, isapi/#, acs/#, nbiot/#");
    println!("  city stream         city/v1/{estate}/alarms|events");
    println!("Press Ctrl-C to stop.\n");
}

/// Every two seconds one line of what flows, until `--duration` is over or Ctrl-C.
async fn print_progress(args: &DemoArgs, running: &crate::Running, city: &CityRecorder) {
    let started = Instant::now();
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.tick().await;
    let m = &running.metrics;
    let mut last_committed = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
        }
        let committed: u64 = Lane::ALL
            .iter()
            .map(|l| m.store_committed.get_or_create(&(*l).into()).get())
            .sum();
        let fwd = |l: Lane| m.forward_events.get_or_create(&l.into()).get();
        let c = city.summary();
        println!(
            "t={:>4.0}s  ingested {:>7} ({:>5.0}/s)  forwarded alarms {:>5} events {:>7}  backlog {:>5}  dead letters {:>3}  | city: {} unique, {} dup, {} missing",
            started.elapsed().as_secs_f64(),
            committed,
            (committed - last_committed) as f64 / 2.0,
            fwd(Lane::Alarms),
            fwd(Lane::Events),
            running.reader.backlog(Lane::Alarms) + running.reader.backlog(Lane::Events),
            dead_letters(m),
            c.unique,
            c.duplicates,
            c.missing(),
        );
        last_committed = committed;
    }
}

/// Lets the last events reach the city before stopping: first everything the sensors
/// got a PUBACK for (`acked`) is committed, then the city has received it all (10 s
/// each at most).
async fn settle(running: &crate::Running, city: &CityRecorder, acked: u64) {
    let settle = tokio::time::Instant::now() + Duration::from_secs(10);
    while running.metrics.ingest_acked.get() < acked && tokio::time::Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let committed_total = *running.reader.committed().borrow();
    let _ = city
        .wait_for(|r| r.unique >= committed_total, Duration::from_secs(10))
        .await;
}

fn dead_letters(m: &crate::telemetry::Metrics) -> u64 {
    [
        "too_large",
        "invalid_utf8",
        "bad_json",
        "bad_field",
        "unknown_code",
        "bad_topic",
    ]
    .iter()
    .map(|r| {
        m.dead_lettered
            .get_or_create(&crate::telemetry::ReasonLabel { reason: r })
            .get()
    })
    .sum()
}
