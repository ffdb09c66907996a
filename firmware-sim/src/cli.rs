//! Argument definitions and the glue from each subcommand to the library.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use estate_sim::city::board::{Rules, StatusSeen};
use estate_sim::city::command::{self, Reply, SendOptions};
use estate_sim::city::consumer::{self, ConsumerOptions, JsonOut, RepairOptions};
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
    /// The reference city side: the consumer (dedup, gaps, the estate board) or, with a
    /// subcommand, a command to one gateway.
    City(Box<CityArgs>),
    /// Publish the sensors of many simulated estates from one process (one connection).
    Fleet(FleetArgs),
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

#[derive(Debug, clap::Args)]
pub struct FleetArgs {
    /// Ingest broker address, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub broker: String,
    /// How many estates.
    #[arg(long, default_value_t = 10)]
    pub estates: u32,
    /// The first estate's id (digits); estate i is base + i at the same width.
    #[arg(long, default_value = "31011500000000000001")]
    pub base: String,
    /// Messages per second per estate.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Of every 1,000 messages, this many are SMOKE.ALARM.
    #[arg(long, default_value_t = 2)]
    pub alarms_per_mille: u64,
    /// Messages per estate; default until stopped (Ctrl-C or --duration).
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop after this long.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// First topic level of the native protocol.
    #[arg(long, default_value = "estate")]
    pub prefix: String,
    /// QoS 1 messages awaiting PUBACK at once.
    #[arg(long, default_value_t = 200)]
    pub max_inflight: u16,
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
#[command(args_conflicts_with_subcommands = true)]
pub struct CityArgs {
    #[command(subcommand)]
    pub command: Option<CityCommand>,
    #[command(flatten)]
    pub link: LinkArgs,
    #[command(flatten)]
    pub consumer: ConsumerArgs,
}

/// The city broker and topic prefix, for the consumer and the commands.
#[derive(Debug, Clone, clap::Args)]
pub struct LinkArgs {
    /// City broker address, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:1883", global = true)]
    pub broker: String,
    /// Topic prefix of the city link.
    #[arg(long, default_value = "city/v1", global = true)]
    pub prefix: String,
    /// MQTT client id; default random.
    #[arg(long, global = true)]
    pub client_id: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ConsumerArgs {
    /// Dark when nothing (no batch, no status) arrived for this long: EN 50136-1's ATS
    /// fault reporting time. Default 3 x the gateway's 10 s status interval.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub reporting_time: Duration,
    /// Degraded when the backlog grew over each of this many statuses.
    #[arg(long, default_value_t = 3)]
    pub backlog_statuses: usize,
    /// The board as JSON: `-` prints one snapshot object per line on stdout (instead of
    /// the table); a path is rewritten atomically every --interval.
    #[arg(long)]
    pub json: Option<String>,
    /// Ask a gateway to resend (`Resend`) a gap that stayed open longer than --repair-after.
    #[arg(long)]
    pub repair: bool,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub repair_after: Duration,
    /// At most one resend per stream this often.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub repair_every: Duration,
    /// Stop after this long, e.g. 30s or 5m.
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "until_events")]
    pub duration: Option<Duration>,
    /// Stop once this many unique events have arrived.
    #[arg(long)]
    pub until_events: Option<u64>,
    /// With --until-events: give up after this long.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
    pub timeout: Duration,
    /// How often the board is refreshed (table, JSON, change lines).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub interval: Duration,
    /// Rows of the terminal table (dark and degraded first).
    #[arg(long, default_value_t = 40)]
    pub rows: usize,
}

/// Commands to one gateway; each waits for its results and exits non-zero unless OK.
#[derive(Debug, Subcommand)]
pub enum CityCommand {
    /// 查岗: the person on duty must answer within --answer-within.
    RollCall {
        #[command(flatten)]
        to: CommandTarget,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "120s")]
        answer_within: Duration,
        #[arg(long, default_value = "")]
        message: String,
    },
    /// Send a seq range of a store epoch again.
    Resend {
        #[command(flatten)]
        to: CommandTarget,
        #[arg(long)]
        store_epoch: u64,
        #[arg(long)]
        first: u64,
        #[arg(long)]
        last: u64,
    },
    /// Switch the configured sounders and strobes of a group on or off.
    Broadcast {
        #[command(flatten)]
        to: CommandTarget,
        /// A group of [commands.broadcast.groups]; empty: every configured output.
        #[arg(long, default_value = "")]
        group: String,
        /// Off instead of on.
        #[arg(long)]
        off: bool,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
        duration: Duration,
        #[arg(long, default_value = "")]
        message: String,
    },
    /// Ask for a GatewayStatus now.
    Status {
        #[command(flatten)]
        to: CommandTarget,
    },
}

#[derive(Debug, clap::Args)]
pub struct CommandTarget {
    /// The estate id (the topic level).
    #[arg(long)]
    pub estate: String,
    /// The gateway's id; default: the one the estate's retained link state names.
    #[arg(long)]
    pub gateway: Option<String>,
    /// Who issues it (audit trail).
    #[arg(long, default_value = "estate-sim")]
    pub issuer: String,
    /// The command expires this long after issue.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
    pub ttl: Duration,
    /// Give up waiting for results after this long (roll call: its answer time plus this).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub wait: Duration,
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
        Command::City(a) => run_city(*a).await,
        Command::Modbus(a) => run_modbus(a).await,
        Command::Formats(a) => run_formats(a).await,
        Command::Fleet(a) => run_fleet(a).await,
    }
}

async fn run_fleet(a: FleetArgs) -> Result<()> {
    use estate_sim::fleet::{self, FleetOptions};
    let (broker_host, broker_port) = parse_broker(&a.broker)?;
    let stop = ctrl_c_token();
    if let Some(d) = a.duration {
        let s = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            s.cancel();
        });
    }
    let opts = FleetOptions {
        broker_host,
        broker_port,
        prefix: a.prefix,
        estates: a.estates,
        base: a.base,
        rate: a.rate,
        alarms_per_mille: a.alarms_per_mille,
        count: a.count,
        max_inflight: a.max_inflight,
        ..FleetOptions::default()
    };
    let r = fleet::run(opts, stop).await?;
    println!(
        "fleet: published {} messages, {} acknowledged, {} reconnects",
        r.published, r.acked, r.reconnects
    );
    Ok(())
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

async fn run_city(a: CityArgs) -> Result<()> {
    let (broker_host, broker_port) = parse_broker(&a.link.broker)?;
    let client_id = a
        .link
        .client_id
        .clone()
        .unwrap_or_else(|| random_client_id("estate-sim-city"));
    if let Some(cmd) = a.command {
        return run_city_command(cmd, a.link, broker_host, broker_port, client_id).await;
    }
    let c = a.consumer;
    let opts = ConsumerOptions {
        broker_host,
        broker_port,
        client_id,
        prefix: a.link.prefix,
        rules: Rules {
            reporting_time: c.reporting_time,
            backlog_statuses: c.backlog_statuses,
        },
        interval: c.interval,
        json: c.json.map(|j| {
            if j == "-" {
                JsonOut::Stdout
            } else {
                JsonOut::File(j.into())
            }
        }),
        repair: c.repair.then(|| RepairOptions {
            after: c.repair_after,
            every: c.repair_every,
            ..RepairOptions::default()
        }),
        until_events: c.until_events,
        max_rows: c.rows,
    };
    let stop = ctrl_c_token();
    let limit = c.duration.or(c.until_events.map(|_| c.timeout));
    if let Some(d) = limit {
        let s = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            s.cancel();
        });
    }
    let to_stdout = opts.json == Some(JsonOut::Stdout);
    let snap = consumer::run(opts, stop).await?;
    if to_stdout {
        println!("{}", serde_json::to_string(&snap)?);
    }
    // The summary also goes to stderr with JSON on stdout, so the pipe stays JSON only.
    if to_stdout {
        eprintln!("final: {}", snap.summary());
    } else {
        print!(
            "{}",
            estate_sim::city::board::render_table(&snap.estates, snap.at_ms, c.rows)
        );
        println!("final: {}", snap.summary());
    }
    Ok(())
}

/// The gateway the estate's retained link state names (a short wait for it).
async fn gateway_of(opts: &SendOptions) -> Result<String> {
    use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
    let mut mqtt = MqttOptions::new(
        format!("{}-lookup", opts.client_id),
        &opts.broker_host,
        opts.broker_port,
    );
    mqtt.set_clean_session(true);
    let (client, mut ev) = AsyncClient::new(mqtt, 4);
    let topic = format!("{}/{}/status", opts.prefix, opts.estate);
    let found = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ev.poll().await? {
                Event::Incoming(Incoming::ConnAck(_)) => {
                    client.try_subscribe(topic.as_str(), QoS::AtLeastOnce)?
                }
                Event::Incoming(Incoming::Publish(p)) if p.topic == topic => {
                    let l = <estate_protocols::pb::LinkState as prost::Message>::decode(
                        p.payload.as_ref(),
                    )?;
                    return anyhow::Ok(l.gateway_id);
                }
                _ => {}
            }
        }
    })
    .await;
    let _ = client.try_disconnect();
    match found {
        Ok(r) => r,
        Err(_) => bail!("no retained link state on {topic} within 5 s: pass --gateway"),
    }
}

async fn run_city_command(
    cmd: CityCommand,
    link: LinkArgs,
    broker_host: String,
    broker_port: u16,
    client_id: String,
) -> Result<()> {
    use estate_protocols::pb;
    let (to, kind, extra_wait) = match cmd {
        CityCommand::RollCall {
            to,
            answer_within,
            message,
        } => (
            to,
            pb::command::Kind::RollCall(pb::RollCall {
                answer_within_s: u32::try_from(answer_within.as_secs()).unwrap_or(u32::MAX),
                message,
            }),
            answer_within,
        ),
        CityCommand::Resend {
            to,
            store_epoch,
            first,
            last,
        } => (
            to,
            pb::command::Kind::Resend(pb::Resend {
                store_epoch,
                first_seq: first,
                last_seq: last,
            }),
            Duration::ZERO,
        ),
        CityCommand::Broadcast {
            to,
            group,
            off,
            duration,
            message,
        } => (
            to,
            pb::command::Kind::Broadcast(pb::Broadcast {
                group,
                on: !off,
                duration_s: u32::try_from(duration.as_secs()).unwrap_or(u32::MAX),
                message,
            }),
            Duration::ZERO,
        ),
        CityCommand::Status { to } => (
            to,
            pb::command::Kind::Status(pb::StatusRequest {}),
            Duration::ZERO,
        ),
    };
    let opts = SendOptions {
        broker_host,
        broker_port,
        client_id,
        prefix: link.prefix,
        estate: to.estate.clone(),
    };
    let gateway = match to.gateway {
        Some(g) => g,
        None => gateway_of(&opts).await?,
    };
    let cmd = command::build(kind, &gateway, &to.issuer, to.ttl, command::now_ms());
    println!("command {} to {gateway} ({})", cmd.id, to.estate);
    let sent = std::time::Instant::now();
    let result = command::send(&opts, &cmd, to.wait + extra_wait, |reply| match reply {
        Reply::Result(r) => println!(
            "{:>7.3}s {}",
            sent.elapsed().as_secs_f64(),
            command::describe(r)
        ),
        Reply::Status(s) => println!(
            "{:>7.3}s status: {}",
            sent.elapsed().as_secs_f64(),
            serde_json::to_string(&StatusSeen::from_pb(s, command::now_ms())).unwrap_or_default()
        ),
    })
    .await?;
    if !command::is_ok(&result) {
        bail!("{}", command::describe(&result));
    }
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
