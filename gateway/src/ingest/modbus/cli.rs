//! `estate-gateway modbus probe|write`: one device, once, without a running daemon —
//! for installers checking wiring and register maps, and for testing linkage by hand.
//!
//! Both go through the same path as the poller (plan → [`Link::transact`] → decode), on
//! a link of their own. Do not probe an RS-485 line that a running gateway polls: two
//! masters on one line garble each other's frames.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use estate_config::{Config, Table};

use super::bus::{read_device, write_once, DeviceSpec};
use super::link::{describe, Link};
use super::{ModbusError, Write, WriteOutcome};

/// `estate-gateway modbus …`
#[derive(Debug, clap::Args)]
pub struct ModbusArgs {
    /// `probe` or `write`.
    #[command(subcommand)]
    pub command: ModbusCommand,
}

/// The `modbus` subcommands; each loads the config and talks to one device once.
#[derive(Debug, clap::Subcommand)]
pub enum ModbusCommand {
    /// Read a configured device once and print every decoded point.
    Probe {
        /// Configuration file.
        #[arg(long, short, default_value = "/etc/estate-gateway/gateway.toml")]
        config: PathBuf,
        /// The device's id (`[[devices]] id`).
        #[arg(long)]
        device: String,
    },
    /// Write one coil or holding register of a configured device, once.
    Write {
        /// Configuration file.
        #[arg(long, short, default_value = "/etc/estate-gateway/gateway.toml")]
        config: PathBuf,
        /// The device's id (`[[devices]] id`).
        #[arg(long)]
        device: String,
        /// `ADDRESS=0|1`: write a coil (FC05), zero-based address (coil 1 is 0).
        #[arg(long, value_parser = parse_coil, conflicts_with = "register", required_unless_present = "register")]
        coil: Option<(u16, bool)>,
        /// `ADDRESS=VALUE`: write a holding register (FC06), zero-based (40001 is 0).
        #[arg(long, value_parser = parse_register)]
        register: Option<(u16, u16)>,
    },
}

fn parse_pair(s: &str) -> Result<(u16, &str), String> {
    let (a, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected ADDRESS=VALUE"))?;
    let a = a
        .trim()
        .parse::<u16>()
        .map_err(|_| format!("{a:?} is not an address 0-65535"))?;
    Ok((a, v.trim()))
}

fn parse_coil(s: &str) -> Result<(u16, bool), String> {
    let (a, v) = parse_pair(s)?;
    match v {
        "1" | "on" | "true" => Ok((a, true)),
        "0" | "off" | "false" => Ok((a, false)),
        _ => Err(format!("{v:?}: a coil value is 0 or 1")),
    }
}

fn parse_register(s: &str) -> Result<(u16, u16), String> {
    let (a, v) = parse_pair(s)?;
    let v = match v.strip_prefix("0x") {
        Some(hex) => u16::from_str_radix(hex, 16),
        None => v.parse::<u16>(),
    }
    .map_err(|_| format!("{v:?} is not a register value 0-65535"))?;
    Ok((a, v))
}

/// Runs a `modbus` subcommand; the text to print, or what went wrong.
pub async fn run(args: ModbusArgs) -> Result<String, String> {
    match args.command {
        ModbusCommand::Probe { config, device } => {
            let cfg = Config::load(&config).map_err(|e| format!("invalid config:\n{e}"))?;
            probe(&cfg, &device).await
        }
        ModbusCommand::Write {
            config,
            device,
            coil,
            register,
        } => {
            let cfg = Config::load(&config).map_err(|e| format!("invalid config:\n{e}"))?;
            let w = match (coil, register) {
                (Some((address, value)), _) => Write::Coil { address, value },
                (None, Some((address, value))) => Write::Register { address, value },
                (None, None) => return Err("give --coil ADDR=0|1 or --register ADDR=VALUE".into()),
            };
            let outcome = write(&cfg, &device, w).await?;
            Ok(format!(
                "{device}: {w:?} confirmed by the device in {:?}\n",
                outcome.round_trip
            ))
        }
    }
}

/// The device `id` and its bus, from the config.
fn device(cfg: &Config, id: &str) -> Result<(estate_config::BusConfig, DeviceSpec), ModbusError> {
    let d = cfg
        .device(id)
        .filter(|d| d.modbus.is_some())
        .ok_or_else(|| ModbusError::UnknownDevice(id.to_owned()))?;
    let Some(m) = &d.modbus else {
        return Err(ModbusError::UnknownDevice(id.to_owned()));
    };
    let bus = cfg
        .modbus
        .bus(&m.bus)
        .ok_or_else(|| ModbusError::UnknownBus {
            device: id.to_owned(),
            bus: m.bus.clone(),
        })?;
    let profile = cfg
        .modbus
        .profile(&m.profile)
        .ok_or_else(|| ModbusError::UnknownProfile {
            device: id.to_owned(),
            profile: m.profile.clone(),
        })?;
    Ok((
        bus.clone(),
        DeviceSpec::new(&d.id, d.kind, &d.location, m, Arc::new(profile.clone())),
    ))
}

/// Writes once on a link of its own.
pub async fn write(cfg: &Config, device_id: &str, w: Write) -> Result<WriteOutcome, String> {
    let (bus, spec) = device(cfg, device_id).map_err(|e| e.to_string())?;
    let mut link = Link::new(&bus);
    let r = write_once(&mut link, &spec, w).await;
    link.close();
    r.map_err(|e| format!("{device_id}: write failed: {e}"))
}

/// Reads the device once and renders every decoded point.
pub async fn probe(cfg: &Config, device_id: &str) -> Result<String, String> {
    let (bus, spec) = device(cfg, device_id).map_err(|e| e.to_string())?;
    let mut link = Link::new(&bus);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} ({}), profile {}, unit {} on bus {} ({}), {} read(s):",
        spec.id,
        spec.kind,
        spec.profile.name,
        spec.modbus.unit,
        bus.name,
        describe(&bus),
        spec.reads.len()
    );
    for r in &spec.reads {
        let _ = writeln!(
            out,
            "  read {} {}..{} ({} items)",
            r.table,
            r.address,
            r.end() - 1,
            r.count
        );
    }
    let mut trips = Vec::new();
    let values = read_device(&mut link, &spec, |d, _| trips.push(d)).await;
    link.close();
    let values = values.map_err(|e| format!("{out}{device_id}: read failed: {e}"))?;
    let _ = writeln!(out, "  round trips: {trips:?}");
    let p = &spec.profile;
    for v in &values {
        let point = &p.points[v.point];
        let unit = if point.unit.is_empty() {
            String::new()
        } else {
            format!(" {}", point.unit)
        };
        let value = if point.table.is_bits() || (point.scale == 1.0 && point.offset == 0.0) {
            String::new()
        } else {
            format!("  = {}{unit}", round(v.value))
        };
        let unit_raw = if value.is_empty() {
            unit
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{:<22} {:>8}:{:<5} raw {}{unit_raw}{value}",
            v.name(p),
            table_name(v.table),
            v.address,
            v.raw
        );
        let raw_bits = v.raw.bits();
        for b in &point.bits {
            let (mask, equals) = b.mask_equals();
            let on = ((raw_bits & mask) == equals) != b.invert;
            let _ = writeln!(
                out,
                "{:<24}{} {:<14} {}{}",
                "",
                if on { "[x]" } else { "[ ]" },
                b.label(),
                if b.meaning.is_empty() { "" } else { &b.meaning },
                b.code
                    .as_ref()
                    .map(|c| format!("  -> {c}"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(out)
}

fn table_name(t: Table) -> &'static str {
    t.as_str()
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
