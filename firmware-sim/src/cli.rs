//! Argument definitions and the glue from each subcommand to the library.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use estate_sim::city::{CityOptions, CityRecorder, CityReport};
use estate_sim::publish::{self, random_client_id, PublishOptions, Scenario};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "estate-sim",
    version,
    about = "Simulated estate devices, load generator and reference city-platform subscriber."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish native-protocol events from the simulated estate and report PUBACKs.
    Publish(PublishArgs),
    /// Subscribe to the gateway's uplink like the city platform and check it.
    City(CityArgs),
    /// Publish the mixed estate in third-party formats (zigbee2mqtt, Frigate, ISAPI-style
    /// camera, access-control SDK codes, NB-IoT smoke), as a real estate mixes them.
    Formats(FormatsArgs),
    /// Serve the simulated Modbus devices; control them with line commands on stdin.
    Modbus(ModbusArgs),
}

#[derive(Debug, clap::Args)]
pub struct ModbusArgs {
    /// First port: rope-leak, gas-pt495, gas-toc635, fire-notifier, smoke-gb26875, valve,
    /// sounder listen on this port and the next six (unit 1 each).
    #[arg(long, default_value_t = 15020)]
    pub base_port: u16,
    /// Listen on this address.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// RTU framing (with CRC) over TCP instead of Modbus TCP.
    #[arg(long)]
    pub rtu_over_tcp: bool,
    /// Valve travel time: its closed feedback follows the coil after this long.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub valve_travel: Duration,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ScenarioArg {
    Telemetry,
    Fire,
    Leak,
    Mixed,
}

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// Broker address, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub broker: String,
    /// Estate id, the second topic level (e.g. the 20-digit community code).
    #[arg(long)]
    pub estate_id: String,
    /// First topic level of the native protocol.
    #[arg(long, default_value = "estate")]
    pub prefix: String,
    /// Messages to publish (payload seq 1..=count).
    #[arg(long, default_value_t = 1000)]
    pub count: u64,
    /// Messages per second; default: as fast as PUBACK flow control allows.
    #[arg(long)]
    pub rate: Option<f64>,
    /// How many of the messages are SMOKE.ALARM, spread evenly.
    #[arg(long, default_value_t = 0)]
    pub alarms: u64,
    /// What the estate does: routine telemetry, a fire in --building, a leak, or a mix.
    #[arg(long, value_enum, default_value_t = ScenarioArg::Telemetry)]
    pub scenario: ScenarioArg,
    /// Building on fire (scenario fire).
    #[arg(long, default_value = "1")]
    pub building: String,
    /// QoS1 messages awaiting PUBACK at once.
    #[arg(long, default_value_t = 100)]
    pub max_inflight: u16,
    /// MQTT client id; default random.
    #[arg(long)]
    pub client_id: Option<String>,
    /// Also simulate devices the gateway is not configured for (ids `unreg-…`).
    #[arg(long)]
    pub unregistered: bool,
    /// How long to wait for outstanding PUBACKs after the last message, e.g. 30s.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    /// Print the report as one JSON object (without the list of acked seqs).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Zigbee2mqtt,
    Frigate,
    CameraIsapiJson,
    AccessControlJson,
    NbiotSmokeJson,
}

impl FormatArg {
    /// The first topic level (after the base) of this format's messages.
    fn topic_root(self) -> &'static str {
        match self {
            FormatArg::Zigbee2mqtt => "zigbee2mqtt",
            FormatArg::Frigate => "frigate",
            FormatArg::CameraIsapiJson => "isapi",
            FormatArg::AccessControlJson => "acs",
            FormatArg::NbiotSmokeJson => "nbiot",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct FormatsArgs {
    /// Broker address, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub broker: String,
    /// Topic level put before every topic (e.g. "lab" → "lab/zigbee2mqtt/…"); default
    /// none: the formats' real topics.
    #[arg(long, default_value = "")]
    pub base: String,
    /// Only these formats (repeatable); default all.
    #[arg(long = "format", value_enum)]
    pub formats: Vec<FormatArg>,
    /// Run the script this many times.
    #[arg(long, default_value_t = 1)]
    pub repeat: u32,
    /// Print the gateway's [[ingest.sources]] and [[devices]] for this script and exit.
    #[arg(long)]
    pub print_config: bool,
    /// ISAPI silence before a camera alarm counts as cleared (with --print-config).
    #[arg(long, default_value = "5s")]
    pub clear_after: String,
}

#[derive(Debug, clap::Args)]
pub struct CityArgs {
    /// Broker address, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub broker: String,
    /// Topic filter to subscribe to.
    #[arg(long, default_value = "city/v1/#")]
    pub topic: String,
    /// MQTT client id; default random.
    #[arg(long)]
    pub client_id: Option<String>,
    /// Print one JSON report object per line instead of a human summary.
    #[arg(long)]
    pub json: bool,
    /// Stop after this long, e.g. 30s or 5m.
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "until_events")]
    pub duration: Option<Duration>,
    /// Stop once this many unique events have arrived.
    #[arg(long)]
    pub until_events: Option<u64>,
    /// With --until-events: give up after this long.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
    pub timeout: Duration,
    /// How often to print a progress summary.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
    pub interval: Duration,
}

/// `HOST:PORT` (the host may be a bracketed IPv6 address).
fn parse_broker(s: &str) -> Result<(String, u16)> {
    let (host, port) = s
        .rsplit_once(':')
        .with_context(|| format!("broker {s:?} is not HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("bad port in broker {s:?}"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        bail!("broker {s:?} has no host");
    }
    Ok((host.to_owned(), port))
}

/// Cancelled on Ctrl-C.
fn ctrl_c_token() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            t.cancel();
        }
    });
    token
}

pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Publish(a) => run_publish(a).await,
        Command::City(a) => run_city(a).await,
        Command::Modbus(a) => run_modbus(a).await,
        Command::Formats(a) => run_formats(a).await,
    }
}

async fn run_formats(a: FormatsArgs) -> Result<()> {
    use estate_sim::formats::{mixed_estate, mixed_estate_config};
    if a.print_config {
        print!("{}", mixed_estate_config(&a.base, &a.clear_after));
        return Ok(());
    }
    let (host, port) = parse_broker(&a.broker)?;
    let prefix = if a.base.is_empty() {
        String::new()
    } else {
        format!("{}/", a.base)
    };
    let steps: Vec<_> = mixed_estate(&a.base)
        .into_iter()
        .filter(|s| {
            a.formats.is_empty()
                || a.formats.iter().any(|f| {
                    s.msg
                        .topic
                        .strip_prefix(&prefix)
                        .is_some_and(|t| t.starts_with(f.topic_root()))
                })
        })
        .collect();
    let stop = ctrl_c_token();
    let mut acked = 0;
    for _ in 0..a.repeat {
        acked += publish::publish_steps(
            &host,
            port,
            &random_client_id("estate-sim-formats"),
            &steps,
            stop.clone(),
        )
        .await?;
        if stop.is_cancelled() {
            break;
        }
    }
    println!("published {acked} messages in third-party formats (acknowledged)");
    Ok(())
}

async fn run_modbus(a: ModbusArgs) -> Result<()> {
    use estate_sim::modbus::{demo_fleet, fleet, DeviceType, Framing, SimFleet};
    let framing = if a.rtu_over_tcp {
        Framing::RtuOverTcp
    } else {
        Framing::Tcp
    };
    let mut specs = demo_fleet(a.base_port, framing);
    for s in &mut specs {
        s.bind.set_ip(a.host);
    }
    let fleet = SimFleet::start(specs)
        .await
        .context("start the simulated Modbus devices")?;
    for d in &fleet.devices {
        if d.device_type == DeviceType::Valve {
            d.set_travel(a.valve_travel);
        }
        println!("{:<14} {:?} {} unit {}", d.name, framing, d.addr(), d.unit);
    }
    println!("{}", fleet::HELP);
    // Stdin on a plain thread (one line at a time); EOF just stops the control channel.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let stop = ctrl_c_token();
    let mut stdin_open = true;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            line = rx.recv(), if stdin_open => match line {
                None => stdin_open = false,
                Some(line) if line.trim().is_empty() => {}
                Some(line) => match fleet::parse_command(&line).and_then(|c| fleet.apply(&c)) {
                    Ok(out) => println!("{out}"),
                    Err(e) => println!("error: {e}"),
                },
            },
        }
    }
    println!("{}", fleet.status());
    Ok(())
}

async fn run_publish(a: PublishArgs) -> Result<()> {
    let (broker_host, broker_port) = parse_broker(&a.broker)?;
    let scenario = match a.scenario {
        ScenarioArg::Telemetry => Scenario::Telemetry,
        ScenarioArg::Fire => Scenario::Fire {
            building: a.building.clone(),
        },
        ScenarioArg::Leak => Scenario::Leak,
        ScenarioArg::Mixed => Scenario::Mixed,
    };
    let mut opts = PublishOptions {
        broker_host,
        broker_port,
        prefix: a.prefix,
        estate_id: a.estate_id,
        count: a.count,
        rate: a.rate,
        alarms: a.alarms,
        scenario,
        max_inflight: a.max_inflight,
        drain_timeout: a.drain_timeout,
        ..PublishOptions::default()
    };
    if let Some(id) = a.client_id {
        opts.client_id = id;
    }
    if a.unregistered {
        opts.devices
            .extend(estate_sim::estate::unregistered_devices());
    }
    let report = publish::run_until(opts, ctrl_c_token()).await?;
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        if let Some(o) = v.as_object_mut() {
            o.remove("acked_seqs");
            o.insert("rate".into(), serde_json::json!(report.rate()));
        }
        println!("{v}");
    } else {
        println!("{report}");
    }
    if report.incomplete {
        bail!(
            "{} of {} messages were not acknowledged",
            a.count - report.acked,
            a.count
        );
    }
    Ok(())
}

fn print_city(report: &CityReport, json: bool, label: &str) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        println!("{label}: {report}");
        if !report.gaps.is_empty() {
            let shown: Vec<String> = report
                .gaps
                .iter()
                .take(10)
                .map(|(a, b)| {
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{a}-{b}")
                    }
                })
                .collect();
            let more = report.gaps.len().saturating_sub(shown.len());
            let more = if more > 0 {
                format!(" (+{more} more)")
            } else {
                String::new()
            };
            println!("  missing seqs: {}{more}", shown.join(", "));
        }
    }
    Ok(())
}

async fn run_city(a: CityArgs) -> Result<()> {
    let (broker_host, broker_port) = parse_broker(&a.broker)?;
    let opts = CityOptions {
        broker_host,
        broker_port,
        client_id: a
            .client_id
            .unwrap_or_else(|| random_client_id("estate-sim-city")),
        topic_filter: a.topic,
        ..CityOptions::default()
    };
    let recorder = CityRecorder::start(opts).await?;
    let stop = ctrl_c_token();
    let mut tick = tokio::time::interval(a.interval);
    tick.tick().await; // the first tick is immediate
    let done = async {
        match (a.duration, a.until_events) {
            (Some(d), _) => tokio::time::sleep(d).await,
            (None, Some(n)) => {
                if let Err(err) = recorder.wait_for(|r| r.unique >= n, a.timeout).await {
                    tracing::warn!(error = %err, "Stopped waiting.");
                }
            }
            (None, None) => std::future::pending::<()>().await,
        }
    };
    {
        tokio::pin!(done);
        loop {
            tokio::select! {
                _ = &mut done => break,
                _ = stop.cancelled() => break,
                _ = tick.tick() => print_city(&recorder.summary(), a.json, "so far")?,
            }
        }
    }
    let report = recorder.summary();
    recorder.shutdown().await;
    print_city(&report, a.json, "final")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_addresses() {
        assert_eq!(
            parse_broker("127.0.0.1:1883").ok(),
            Some(("127.0.0.1".into(), 1883))
        );
        assert_eq!(
            parse_broker("[::1]:18830").ok(),
            Some(("::1".into(), 18830))
        );
        assert!(parse_broker("localhost").is_err());
        assert!(parse_broker(":1883").is_err());
    }
}
