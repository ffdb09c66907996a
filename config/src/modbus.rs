//! Modbus: the `[modbus]` section (profile files and buses), the `modbus = {…}` table of a
//! `[[devices]]` entry, and device profiles (register maps) loaded from profile files.
//!
//! A *profile* describes a device type once: its points (table, address, data type, byte
//! and word order, scale, offset, unit) and what each point means as events (bit fields,
//! thresholds with hysteresis, value reports). A *device* names a profile, a bus, a unit
//! id and its timing. A *bus* is one TCP connection or one serial line, polled one
//! transaction at a time.
//!
//! ```toml
//! [modbus]
//! profile_files = ["profiles/rope-leak.toml"]   # relative to this config file's folder
//!
//! [[modbus.buses]]
//! name = "rs485-1"
//! transport = "rtu"
//! device = "/dev/ttyS1"
//! baud = 9600
//!
//! [[devices]]
//! id = "leak-b2-pump"
//! kind = "water_leak"
//! modbus = { bus = "rs485-1", unit = 3, profile = "rope-leak", poll_interval = "1s", timeout = "500ms" }
//! ```
//!
//! The field doc comments below are the user documentation of each key.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use estate_protocols::model::DeviceKind;
use serde::{Deserialize, Serialize};

/// Most registers one read request may ask for (Modbus application protocol, FC03/FC04).
pub const MAX_READ_REGISTERS: u16 = 125;
/// Most bits one read request may ask for (FC01/FC02).
pub const MAX_READ_BITS: u16 = 2000;

/// `[modbus]`: Modbus buses and the profile files that describe device register maps.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModbusConfig {
    /// Profile files (each holding `[[profiles]]`), relative to the config file's folder.
    /// The shipped profiles are in `config/profiles/`. Default: none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub profile_files: Vec<PathBuf>,
    /// `[[modbus.buses]]`: one entry per TCP connection or serial line. Default: none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub buses: Vec<BusConfig>,
    /// The profiles read from `profile_files`, in file order. Filled by the loader.
    #[serde(skip)]
    pub profiles: Vec<Profile>,
}

impl ModbusConfig {
    /// True with no buses, no profile files and no profiles: Modbus is off.
    pub fn is_empty(&self) -> bool {
        self.profile_files.is_empty() && self.buses.is_empty() && self.profiles.is_empty()
    }

    /// The profile named `name`.
    pub fn profile(&self, name: &str) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.name == name)
    }

    /// The bus named `name`.
    pub fn bus(&self, name: &str) -> Option<&BusConfig> {
        self.buses.iter().find(|b| b.name == name)
    }
}

/// How a bus reaches its devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BusTransport {
    /// Modbus TCP (MBAP header), e.g. a fire-panel gateway or a TCP-capable detector.
    Tcp,
    /// Modbus RTU on a local serial port (RS-485).
    Rtu,
    /// Modbus RTU frames (with CRC) carried over a TCP socket: a serial device server
    /// in transparent mode.
    RtuOverTcp,
}

impl BusTransport {
    /// The name as written in `transport`: `"tcp"`, `"rtu"` or `"rtu-over-tcp"`.
    pub fn as_str(self) -> &'static str {
        match self {
            BusTransport::Tcp => "tcp",
            BusTransport::Rtu => "rtu",
            BusTransport::RtuOverTcp => "rtu-over-tcp",
        }
    }

    /// RTU framing (serial line timing applies).
    pub fn is_rtu(self) -> bool {
        !matches!(self, BusTransport::Tcp)
    }
}

impl fmt::Display for BusTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Serial parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    /// No parity bit (the default).
    #[default]
    None,
    /// Even parity.
    Even,
    /// Odd parity.
    Odd,
}

/// `[[modbus.buses]]`: one Modbus bus. The gateway runs exactly one transaction at a time
/// on it, so put devices that share a serial line or a TCP connection on one bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    /// Required. Unique name, referenced by devices' `modbus.bus` and shown in logs and
    /// metrics. Letters, digits, `-`, `_`.
    pub name: String,
    /// Required. `"tcp"`, `"rtu"` (local serial port) or `"rtu-over-tcp"` (serial device
    /// server).
    pub transport: BusTransport,
    /// `rtu` only, required there: the serial port, e.g. `"/dev/ttyS1"` or `"/dev/ttyUSB0"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// `rtu`: line speed in baud; for `rtu-over-tcp` it only sets the default
    /// `inter_frame_gap`. Default: `9600`.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// `rtu` only: `"none"`, `"even"` or `"odd"`. Default: `"none"`.
    #[serde(default)]
    pub parity: Parity,
    /// `rtu` only: 7 or 8. Default: `8`.
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    /// `rtu` only: 1 or 2. Default: `1`.
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// `tcp` and `rtu-over-tcp`, required there: host name or address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `tcp` and `rtu-over-tcp`: TCP port. Default: `502`.
    #[serde(
        default = "default_modbus_port",
        deserialize_with = "crate::units::port"
    )]
    pub port: u16,
    /// Silence kept between the end of one transaction and the start of the next. Default:
    /// for `rtu` and `rtu-over-tcp` 3.5 characters at `baud` (11 bits per character), at
    /// least 1.75 ms; for `tcp` none. At most 1 s.
    #[serde(
        default,
        with = "crate::units::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub inter_frame_gap: Option<Duration>,
    /// First delay before reconnecting after the port or connection cannot be opened;
    /// doubled on each failed attempt up to `reconnect_max`. Default: `"500ms"`.
    #[serde(default = "default_reconnect_min", with = "crate::units::duration")]
    pub reconnect_min: Duration,
    /// Longest delay between reconnect attempts. At most a day. Default: `"30s"`.
    #[serde(default = "default_reconnect_max", with = "crate::units::duration")]
    pub reconnect_max: Duration,
}

impl BusConfig {
    /// `inter_frame_gap`, or its default: 3.5 characters of 11 bits at `baud` for RTU
    /// framing (1.75 ms above 19200 baud, as the Modbus serial line spec fixes it), 0 for TCP.
    pub fn effective_inter_frame_gap(&self) -> Duration {
        if let Some(gap) = self.inter_frame_gap {
            return gap;
        }
        if !self.transport.is_rtu() {
            return Duration::ZERO;
        }
        if self.baud == 0 || self.baud > 19_200 {
            return Duration::from_micros(1750);
        }
        // 3.5 chars × 11 bits / baud seconds.
        Duration::from_micros(38_500_000 / u64::from(self.baud))
    }
}

fn default_baud() -> u32 {
    9600
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}
fn default_modbus_port() -> u16 {
    502
}
fn default_reconnect_min() -> Duration {
    Duration::from_millis(500)
}
fn default_reconnect_max() -> Duration {
    Duration::from_secs(30)
}

/// `modbus = {…}` on a `[[devices]]` entry: this device is polled over Modbus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceModbusConfig {
    /// Required. The `[[modbus.buses]]` entry the device is on.
    pub bus: String,
    /// Required. The device's unit (slave) id: 1–247 on RTU buses; 0–255 on TCP.
    pub unit: u8,
    /// Required. The profile (register map) that describes the device; its `kind` must be
    /// the device's `kind`.
    pub profile: String,
    /// How often the device is read. At least 10 ms, at most a day. Default: `"1s"`.
    #[serde(default = "default_poll_interval", with = "crate::units::duration")]
    pub poll_interval: Duration,
    /// How long one request may wait for its answer (many devices need more than
    /// 500 ms). A late answer counts as a failed poll and the connection is reopened.
    /// More than 0 s, at most 60 s. Default: `"1s"`.
    #[serde(default = "default_timeout", with = "crate::units::duration")]
    pub timeout: Duration,
    /// Consecutive failed polls before the device is reported `DEV.OFFLINE`. At least 1.
    /// Default: `3`.
    #[serde(default = "default_offline_after")]
    pub offline_after: u32,
    /// A failing device is polled less and less often (the poll interval doubled on each
    /// consecutive failure) up to this delay, so it cannot starve the others on its bus.
    /// Not less than `poll_interval`, at most a day. Default: `"30s"`.
    #[serde(default = "default_backoff_max", with = "crate::units::duration")]
    pub backoff_max: Duration,
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_offline_after() -> u32 {
    3
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(30)
}

/// `[[profiles]]` in a profile file: the register map of one device type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Required. Unique over all profile files; devices name it in `modbus.profile`.
    pub name: String,
    /// Required. The device class the profile describes; a device using it must have
    /// this `kind`.
    pub kind: DeviceKind,
    /// What the profile is for, e.g. the product it is modelled on. Default: empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// `[[profiles.points]]`: the points read from the device.
    #[serde(default)]
    pub points: Vec<Point>,
    /// The profile file it came from (set by the loader, for messages).
    #[serde(skip)]
    pub file: PathBuf,
}

/// The four Modbus data tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// Coils, read with FC01, written with FC05.
    Coil,
    /// Discrete inputs, FC02.
    Discrete,
    /// Input registers, FC04.
    Input,
    /// Holding registers, read with FC03, written with FC06.
    Holding,
}

impl Table {
    /// The name as written in `table`: `"coil"`, `"discrete"`, `"input"` or `"holding"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Table::Coil => "coil",
            Table::Discrete => "discrete",
            Table::Input => "input",
            Table::Holding => "holding",
        }
    }

    /// Coils and discrete inputs hold bits; the others 16-bit registers.
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::Discrete)
    }

    /// Most items one read of this table may ask for.
    pub fn max_read(self) -> u16 {
        if self.is_bits() {
            MAX_READ_BITS
        } else {
            MAX_READ_REGISTERS
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A point's data type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    /// One bit of a coil or discrete input.
    Bool,
    /// Unsigned 16-bit, one register (0–65535).
    U16,
    /// Signed 16-bit (two's complement), one register.
    I16,
    /// Unsigned 32-bit in two registers (see `word_order`).
    U32,
    /// Signed 32-bit in two registers (see `word_order`).
    I32,
    /// IEEE 754 single precision in two registers.
    F32,
}

impl DataType {
    /// The name as written in `type`: `"bool"`, `"u16"`, … `"f32"`.
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "bool",
            DataType::U16 => "u16",
            DataType::I16 => "i16",
            DataType::U32 => "u32",
            DataType::I32 => "i32",
            DataType::F32 => "f32",
        }
    }

    /// Registers (or bits, for `bool`) one value takes.
    pub fn width(self) -> u16 {
        match self {
            DataType::Bool | DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
        }
    }

    /// Bits in the raw value, for bit fields.
    pub fn bits(self) -> u32 {
        match self {
            DataType::Bool => 1,
            DataType::U16 | DataType::I16 => 16,
            DataType::U32 | DataType::I32 | DataType::F32 => 32,
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Order of the two bytes in a register, or of the two registers in a 32-bit value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Big-endian: the Modbus standard.
    #[default]
    HighFirst,
    /// Swapped: for `word_order`, the low word at the lower address ("word-swapped",
    /// "float inverse"); for `byte_order`, the low byte first within each register.
    LowFirst,
}

/// `[[profiles.points]]`: one value (or `count` consecutive values) read from a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Point {
    /// Required. Unique within the profile, e.g. `"distance"`. An array point's elements
    /// are named `name[1]`, `name[2]`, ….
    pub name: String,
    /// Required. `"coil"`, `"discrete"`, `"input"` or `"holding"`.
    pub table: Table,
    /// Required. Zero-based PDU address: Modicon 30001 is input 0, 40001 holding 0,
    /// 38001 input 8000, coil 1 is coil 0.
    pub address: u16,
    /// Required. `"bool"` (coil and discrete only), `"u16"`, `"i16"`, `"u32"`, `"i32"`,
    /// `"f32"` (register tables only).
    #[serde(rename = "type")]
    pub data_type: DataType,
    /// Consecutive values of this type starting at `address`, e.g. one status register
    /// per fire-panel point: `count = 32`. Each element gets the same meaning (bits,
    /// thresholds, report). At least 1; all of them must fit in one read (125 registers,
    /// 2000 bits). Default: `1`.
    #[serde(default = "default_count")]
    pub count: u16,
    /// 32-bit types: which register holds the high word. `"high_first"` (standard) or
    /// `"low_first"` (word-swapped, "float inverse"). Default: `"high_first"`.
    #[serde(default)]
    pub word_order: Order,
    /// Register types: byte order within each register. `"high_first"` (standard) or
    /// `"low_first"`. Default: `"high_first"`.
    #[serde(default)]
    pub byte_order: Order,
    /// The value is `raw × scale + offset`, e.g. `0.1` for a value sent ×10. Default: `1.0`.
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// Added after scaling, e.g. `-10.0` for TOC-635 channels. Default: `0.0`.
    #[serde(default)]
    pub offset: f64,
    /// Unit of the scaled value, e.g. `"%LEL"`, `"m"`. Default: empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub unit: String,
    /// Bit fields of the raw (unscaled) value, for register points. Each is a condition;
    /// with a `code` it becomes events: active when the condition starts, cleared when it
    /// ends. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bits: Vec<BitField>,
    /// Thresholds on the scaled value, for register points. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thresholds: Vec<Threshold>,
    /// Report the value itself as `DEV.READING` events. Default: no reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<Report>,
}

fn default_count() -> u16 {
    1
}
fn default_scale() -> f64 {
    1.0
}

impl Point {
    /// Registers (or bits) the whole point spans.
    pub fn span(&self) -> u32 {
        u32::from(self.count) * u32::from(self.data_type.width())
    }

    /// One past the last address the point covers (may exceed 65535 in a bad profile).
    pub fn end(&self) -> u32 {
        u32::from(self.address) + self.span()
    }
}

/// A bit field of a register point: either one `bit`, or a `mask` compared with `equals`.
///
/// `{ bit = 0, code = "LEAK.ALARM" }` is active while bit 0 is 1.
/// `{ mask = 0x00FF, equals = 0x00FF, meaning = "not programmed" }` is active while the
/// low byte is 0xFF (a multi-bit field: Notifier's event type, a sensor type byte).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BitField {
    /// Bit number, 0 = least significant; below the type's width (16 or 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bit: Option<u8>,
    /// Instead of `bit`: the bits of the raw value to compare with `equals`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<u32>,
    /// With `mask`: the value the masked bits must have. Default: `mask` (all set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<u32>,
    /// Active when the condition is *false*, e.g. GB/T 26875 bit 0 "1 = normal, 0 = test".
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub invert: bool,
    /// Event code from the taxonomy, e.g. `"LEAK.ALARM"`. Without one the field is only
    /// shown by `modbus probe`. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// What the field means, for people (`modbus probe`, the event's raw detail).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub meaning: String,
    /// Attach the value of this point (same profile) to the event, e.g. the leak distance
    /// to `LEAK.ALARM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_point: Option<String>,
}

impl BitField {
    /// `(mask, equals)` of the condition (before `invert`).
    pub fn mask_equals(&self) -> (u32, u32) {
        match (self.bit, self.mask) {
            (Some(bit), _) => {
                let m = 1u32.checked_shl(u32::from(bit)).unwrap_or(0);
                (m, m)
            }
            (None, Some(mask)) => (mask, self.equals.unwrap_or(mask)),
            (None, None) => (0, 0),
        }
    }

    /// A short label: `bit 3` or `mask 0x00ff=0x00ff`.
    pub fn label(&self) -> String {
        match (self.bit, self.mask) {
            (Some(bit), _) => format!("bit {bit}"),
            _ => {
                let (m, e) = self.mask_equals();
                format!("mask {m:#06x}={e:#06x}")
            }
        }
    }
}

/// A threshold on a point's scaled value: active when `value >= above`, cleared when
/// `value <= above - hysteresis`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// Required. The level, in the point's unit.
    pub above: f64,
    /// How far the value must fall below `above` to clear, so a value hovering at the
    /// level does not flap. At least 0. Default: `0.0`.
    #[serde(default)]
    pub hysteresis: f64,
    /// Required. Event code from the taxonomy, e.g. `"GAS.AL2"`.
    pub code: String,
}

/// Value reports (`DEV.READING`, severity 4) for a point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// Report when the value moved more than this since the last report. At least 0.
    /// Default: `0.0` (every change).
    #[serde(default)]
    pub deadband: f64,
    /// Report at least this often, even without a change. At least 1 s. Default: only
    /// on change.
    #[serde(
        default,
        with = "crate::units::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_interval: Option<Duration>,
}
