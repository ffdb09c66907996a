//! A fleet of simulated buses and the scriptable handle of each device.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::device::{DeviceType, SimDevice};
use super::frame::Table;
use super::server::{lock, Bus, BusStats, Faults, Framing, RequestRecord, UnitState};

/// One bus to start: a listener and the devices (unit id, name, type) behind it.
#[derive(Debug, Clone)]
pub struct BusSpec {
    /// The bus's name (the profile name in the demo fleet), used by [`SimFleet::bus`] and in logs.
    pub name: String,
    /// How requests are framed on it: Modbus TCP or RTU over TCP.
    pub framing: Framing,
    /// Where to listen; port 0 picks a free one.
    pub bind: SocketAddr,
    /// The devices behind it: (unit id, device name, type).
    pub devices: Vec<(u8, String, DeviceType)>,
}

impl BusSpec {
    /// A bus on a free loopback port.
    pub fn loopback(name: &str, framing: Framing) -> BusSpec {
        BusSpec {
            name: name.into(),
            framing,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            devices: Vec::new(),
        }
    }

    /// Listens on `port` instead (0 picks a free one).
    pub fn port(mut self, port: u16) -> BusSpec {
        self.bind.set_port(port);
        self
    }

    /// Adds a device at `unit`.
    pub fn device(mut self, unit: u8, name: &str, t: DeviceType) -> BusSpec {
        self.devices.push((unit, name.into(), t));
        self
    }
}

/// The demo fleet, in the port order of the shared spec: one Modbus TCP (or RTU over TCP)
/// listener per device, unit 1, at `base_port + i` for rope-leak, gas-pt495, gas-toc635,
/// fire-notifier, smoke-gb26875, valve, sounder. Device names are the profile names.
pub fn demo_fleet(base_port: u16, framing: Framing) -> Vec<BusSpec> {
    DEMO_TYPES
        .iter()
        .enumerate()
        .map(|(i, t)| {
            BusSpec::loopback(t.profile(), framing)
                .port(if base_port == 0 {
                    0
                } else {
                    base_port + i as u16
                })
                .device(1, t.profile(), *t)
        })
        .collect()
}

/// Every simulated device type, in the order of the buses of `config/estate-demo.toml`.
pub const DEMO_TYPES: [DeviceType; 7] = [
    DeviceType::RopeLeak,
    DeviceType::GasPt495,
    DeviceType::GasToc635,
    DeviceType::FireNotifier,
    DeviceType::SmokeGb26875,
    DeviceType::Valve,
    DeviceType::Sounder,
];

/// Running buses and their devices.
#[derive(Debug)]
pub struct SimFleet {
    /// The running buses, in the order of their specs.
    pub buses: Vec<Bus>,
    /// Every device of every bus, in spec order.
    pub devices: Vec<SimHandle>,
}

impl SimFleet {
    /// Starts every bus (each listening before this returns).
    pub async fn start(specs: Vec<BusSpec>) -> std::io::Result<SimFleet> {
        let mut buses = Vec::new();
        let mut devices = Vec::new();
        for spec in specs {
            let units = spec
                .devices
                .iter()
                .map(|(u, _, t)| (*u, SimDevice::new(*t)))
                .collect();
            let bus = Bus::start(&spec.name, spec.framing, spec.bind, units).await?;
            for (unit, name, t) in spec.devices {
                let state = bus.inner.units[&unit].clone();
                devices.push(SimHandle {
                    name,
                    unit,
                    device_type: t,
                    bus: bus.clone(),
                    state,
                });
            }
            buses.push(bus);
        }
        Ok(SimFleet { buses, devices })
    }

    /// The device named `name`; panics if there is none (test convenience).
    pub fn device(&self, name: &str) -> &SimHandle {
        self.find(name)
            .unwrap_or_else(|| panic!("no simulated device {name:?}"))
    }

    /// The device named `name`; `None` when there is none.
    pub fn find(&self, name: &str) -> Option<&SimHandle> {
        self.devices.iter().find(|d| d.name == name)
    }

    /// The bus named `name`; panics if there is none (test convenience).
    pub fn bus(&self, name: &str) -> &Bus {
        self.buses
            .iter()
            .find(|b| b.name() == name)
            .unwrap_or_else(|| panic!("no simulated bus {name:?}"))
    }

    /// Stops every bus's listener and connections (also on drop).
    pub fn shutdown(&self) {
        for b in &self.buses {
            b.shutdown();
        }
    }
}

impl Drop for SimFleet {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Scriptable control of one simulated device. Clones share the device.
#[derive(Debug, Clone)]
pub struct SimHandle {
    /// The device's name (from its [`BusSpec`]).
    pub name: String,
    /// Its Modbus unit id on the bus.
    pub unit: u8,
    /// Which product it models.
    pub device_type: DeviceType,
    bus: Bus,
    state: Arc<Mutex<UnitState>>,
}

impl SimHandle {
    /// Runs `f` on the device state.
    pub fn with<R>(&self, f: impl FnOnce(&mut SimDevice) -> R) -> R {
        f(&mut lock(&self.state).device)
    }

    fn faults(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut lock(&self.state).faults)
    }

    /// The bus the device is on.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The address its bus listens on.
    pub fn addr(&self) -> SocketAddr {
        self.bus.addr()
    }

    /// Rope leak: a leak at `metres` from the controller.
    pub fn raise_leak(&self, metres: f64) {
        self.with(|d| d.leak_m = Some(metres));
    }

    /// Rope leak: the leak is gone.
    pub fn clear_leak(&self) {
        self.with(|d| d.leak_m = None);
    }

    /// Gas: %LEL on the PT495 and on every TOC-635 channel.
    pub fn set_gas_lel(&self, lel: f64) {
        self.with(|d| d.set_lel(lel));
    }

    /// TOC-635: one channel (1..=8).
    pub fn set_channel_lel(&self, channel: u16, lel: f64) {
        self.with(|d| d.set_channel_lel(channel, lel));
    }

    /// Smoke loop detector / fire-panel point `n` (1-based) in fire, or back to normal.
    pub fn smoke_fire(&self, n: u16, on: bool) {
        self.with(|d| d.set_fire(n, on));
    }

    /// The device's own fault condition (sensor fault, cable break, panel trouble).
    pub fn fault(&self, on: bool) {
        self.with(|d| d.fault = on);
    }

    /// Valve: how long the feedback takes to follow the coil.
    pub fn set_travel(&self, travel: Duration) {
        self.with(|d| d.travel = travel);
    }

    /// Answer late (a slow device; longer than the master's timeout is a timeout).
    pub fn set_delay(&self, delay: Duration) {
        self.faults(|f| f.delay = delay);
    }

    /// Never answer.
    pub fn set_silent(&self, on: bool) {
        self.faults(|f| f.silent = on);
    }

    /// Close the connection on every request to this unit.
    pub fn set_drop(&self, on: bool) {
        self.faults(|f| f.drop_connection = on);
    }

    /// Close every open connection of this device's bus now.
    pub fn drop_connections(&self) {
        self.bus.drop_connections();
    }

    /// Answer every request with this exception code (`None`: normal answers).
    pub fn answer_exception(&self, code: Option<u8>) {
        self.faults(|f| f.exception = code);
    }

    /// Answer with undecodable frames.
    pub fn answer_garbage(&self, on: bool) {
        self.faults(|f| f.garbage = on);
    }

    /// Clears every communication fault.
    pub fn heal(&self) {
        self.faults(|f| *f = Faults::default());
    }

    /// The communication faults the device is scripted with now.
    pub fn current_faults(&self) -> Faults {
        lock(&self.state).faults.clone()
    }

    /// Coil `addr` as the device holds it.
    pub fn coil(&self, addr: u16) -> bool {
        self.with(|d| d.bit(Table::Coil, addr, Instant::now()))
            .unwrap_or(false)
    }

    /// Discrete input `addr` now.
    pub fn discrete(&self, addr: u16) -> bool {
        self.with(|d| d.bit(Table::Discrete, addr, Instant::now()))
            .unwrap_or(false)
    }

    /// Register `addr` of `table` as the device reads it now; `None` where the device has
    /// none (exception 02 on the wire).
    pub fn register(&self, table: Table, addr: u16) -> Option<u16> {
        self.with(|d| d.register(table, addr))
    }

    /// The bus's counters (shared with the other devices on the bus).
    pub fn stats(&self) -> BusStats {
        self.bus.stats()
    }

    /// This unit's requests so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        let unit = self.unit;
        self.bus
            .requests()
            .into_iter()
            .filter(|r| r.unit == unit)
            .collect()
    }

    /// Number of this unit's requests so far.
    pub fn request_count(&self) -> usize {
        let unit = self.unit;
        self.bus.count_requests(|r| r.unit == unit)
    }
}

// ---------------------------------------------------------------------------------------
// Line commands (the CLI's stdin control channel)
// ---------------------------------------------------------------------------------------

/// One control command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `leak 12.5` / `leak off` (every rope-leak detector).
    Leak(Option<f64>),
    /// `gas 30` (every gas device, every channel) or `gas 30 3` (TOC-635 channel 3).
    Gas(f64, Option<u16>),
    /// `fire 3 on|off`: smoke-loop detector 3 and fire-panel point 3.
    Fire(u16, bool),
    /// `fault DEVICE on|off`.
    Fault(String, bool),
    /// `slow DEVICE 800ms` (`0s` to clear).
    Slow(String, Duration),
    /// `silent DEVICE on|off`.
    Silent(String, bool),
    /// `drop DEVICE on|off` (on every request), or `drop DEVICE now` (once).
    Drop(String, Option<bool>),
    /// `exception DEVICE 4|off`.
    Exception(String, Option<u8>),
    /// `garbage DEVICE on|off`.
    Garbage(String, bool),
    /// `heal DEVICE`: clear every communication fault.
    Heal(String),
    /// `status`: coils, feedback and bus counters.
    Status,
    /// `help` or `?`: print [`HELP`].
    Help,
}

fn on_off(s: Option<&str>) -> Result<bool, String> {
    match s {
        Some("on" | "1" | "true") => Ok(true),
        Some("off" | "0" | "false") => Ok(false),
        other => Err(format!("expected on|off, got {other:?}")),
    }
}

/// Parses one line; the error says what is wrong.
pub fn parse_command(line: &str) -> Result<Command, String> {
    let mut w = line.split_whitespace();
    let cmd = w.next().ok_or("empty command")?;
    let mut dev = || {
        w.next()
            .map(str::to_owned)
            .ok_or_else(|| format!("{cmd}: which device?"))
    };
    let c = match cmd {
        "leak" => match w.next() {
            Some("off") => Command::Leak(None),
            Some(v) => Command::Leak(Some(v.parse().map_err(|_| format!("bad distance {v:?}"))?)),
            None => return Err("leak METRES|off".into()),
        },
        "gas" => {
            let v = w.next().ok_or("gas LEL [CHANNEL]")?;
            let lel = v.parse().map_err(|_| format!("bad %LEL {v:?}"))?;
            let ch = match w.next() {
                Some(c) => Some(c.parse().map_err(|_| format!("bad channel {c:?}"))?),
                None => None,
            };
            Command::Gas(lel, ch)
        }
        "fire" => {
            let v = w.next().ok_or("fire N on|off")?;
            let n = v.parse().map_err(|_| format!("bad point {v:?}"))?;
            Command::Fire(n, on_off(w.next())?)
        }
        "fault" => {
            let d = dev()?;
            Command::Fault(d, on_off(w.next())?)
        }
        "slow" => {
            let d = dev()?;
            let v = w.next().ok_or("slow DEVICE DURATION")?;
            Command::Slow(
                d,
                humantime::parse_duration(v).map_err(|e| format!("{v:?}: {e}"))?,
            )
        }
        "silent" => {
            let d = dev()?;
            Command::Silent(d, on_off(w.next())?)
        }
        "drop" => {
            let d = dev()?;
            match w.next() {
                Some("now") | None => Command::Drop(d, None),
                v => Command::Drop(d, Some(on_off(v)?)),
            }
        }
        "exception" => {
            let d = dev()?;
            match w.next() {
                Some("off") => Command::Exception(d, None),
                Some(v) => Command::Exception(
                    d,
                    Some(v.parse().map_err(|_| format!("bad exception code {v:?}"))?),
                ),
                None => return Err("exception DEVICE CODE|off".into()),
            }
        }
        "garbage" => {
            let d = dev()?;
            Command::Garbage(d, on_off(w.next())?)
        }
        "heal" => Command::Heal(dev()?),
        "status" => Command::Status,
        "help" | "?" => Command::Help,
        other => return Err(format!("unknown command {other:?} (try help)")),
    };
    Ok(c)
}

/// The line commands the CLI reads on stdin, for `help`.
pub const HELP: &str = "commands: leak M|off · gas LEL [CH] · fire N on|off · fault DEV on|off · \
slow DEV DUR · silent DEV on|off · drop DEV [on|off|now] · exception DEV CODE|off · \
garbage DEV on|off · heal DEV · status";

impl SimFleet {
    /// Applies a command; returns what to print.
    pub fn apply(&self, cmd: &Command) -> Result<String, String> {
        let of = |t: &[DeviceType]| -> Vec<&SimHandle> {
            self.devices
                .iter()
                .filter(|d| t.contains(&d.device_type))
                .collect()
        };
        let named = |n: &str| self.find(n).ok_or_else(|| format!("no device {n:?}"));
        Ok(match cmd {
            Command::Leak(m) => {
                for d in of(&[DeviceType::RopeLeak]) {
                    match m {
                        Some(m) => d.raise_leak(*m),
                        None => d.clear_leak(),
                    }
                }
                format!("leak {m:?}")
            }
            Command::Gas(lel, ch) => {
                for d in of(&[DeviceType::GasPt495, DeviceType::GasToc635]) {
                    match ch {
                        Some(c) if d.device_type == DeviceType::GasToc635 => {
                            d.set_channel_lel(*c, *lel)
                        }
                        Some(_) => {}
                        None => d.set_gas_lel(*lel),
                    }
                }
                format!("gas {lel} %LEL")
            }
            Command::Fire(n, on) => {
                for d in of(&[DeviceType::SmokeGb26875, DeviceType::FireNotifier]) {
                    d.smoke_fire(*n, *on);
                }
                format!("fire {n} {on}")
            }
            Command::Fault(n, on) => {
                named(n)?.fault(*on);
                format!("{n} fault {on}")
            }
            Command::Slow(n, d) => {
                named(n)?.set_delay(*d);
                format!("{n} delay {d:?}")
            }
            Command::Silent(n, on) => {
                named(n)?.set_silent(*on);
                format!("{n} silent {on}")
            }
            Command::Drop(n, mode) => {
                let d = named(n)?;
                match mode {
                    Some(on) => d.set_drop(*on),
                    None => d.drop_connections(),
                }
                format!("{n} drop {mode:?}")
            }
            Command::Exception(n, code) => {
                named(n)?.answer_exception(*code);
                format!("{n} exception {code:?}")
            }
            Command::Garbage(n, on) => {
                named(n)?.answer_garbage(*on);
                format!("{n} garbage {on}")
            }
            Command::Heal(n) => {
                named(n)?.heal();
                format!("{n} healthy")
            }
            Command::Status => self.status(),
            Command::Help => HELP.to_owned(),
        })
    }

    /// One line per bus: address, counters, concurrency; coils of the actuators.
    pub fn status(&self) -> String {
        let mut out = Vec::new();
        for b in &self.buses {
            let s = b.stats();
            out.push(format!(
                "{:<14} {:?} {}  transactions {} answered {} exceptions {} garbage {} dropped {} silent {} max_in_flight {} violations {}",
                b.name(), b.framing(), b.addr(), s.transactions, s.answered, s.exceptions,
                s.garbage, s.dropped, s.silent, s.max_in_flight, s.violations.len()
            ));
        }
        for d in &self.devices {
            if matches!(d.device_type, DeviceType::Valve | DeviceType::Sounder) {
                out.push(format!(
                    "{:<14} coil {} feedback {}",
                    d.name,
                    d.coil(0),
                    d.discrete(0)
                ));
            }
        }
        out.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(parse_command("leak 12.5"), Ok(Command::Leak(Some(12.5))));
        assert_eq!(parse_command("leak off"), Ok(Command::Leak(None)));
        assert_eq!(parse_command("gas 30"), Ok(Command::Gas(30.0, None)));
        assert_eq!(parse_command("gas 30 3"), Ok(Command::Gas(30.0, Some(3))));
        assert_eq!(parse_command("fire 3 on"), Ok(Command::Fire(3, true)));
        assert_eq!(
            parse_command("slow gas-pt495 800ms"),
            Ok(Command::Slow(
                "gas-pt495".into(),
                Duration::from_millis(800)
            ))
        );
        assert_eq!(
            parse_command("exception valve 4"),
            Ok(Command::Exception("valve".into(), Some(4)))
        );
        assert_eq!(
            parse_command("drop valve"),
            Ok(Command::Drop("valve".into(), None))
        );
        assert!(parse_command("fire 3 maybe").is_err());
        assert!(parse_command("fault").is_err());
        assert!(parse_command("jump").is_err());
    }

    #[test]
    fn demo_fleet_port_order() {
        let f = demo_fleet(15020, Framing::Tcp);
        let v: Vec<(u16, &str)> = f.iter().map(|b| (b.bind.port(), b.name.as_str())).collect();
        assert_eq!(
            v,
            vec![
                (15020, "rope-leak"),
                (15021, "gas-pt495"),
                (15022, "gas-toc635"),
                (15023, "fire-notifier"),
                (15024, "smoke-gb26875"),
                (15025, "valve"),
                (15026, "sounder"),
            ]
        );
    }
}
