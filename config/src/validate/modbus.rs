//! Semantic rules for Modbus: buses, the `modbus` table of devices, and profiles.
//!
//! Pure, like `validate.rs`: typed input in, findings by key path out. Profile rules run
//! per profile file (their paths are `profiles[i].points[j]…` and are located in that
//! file); bus and device rules run on the main config file.

use std::collections::HashMap;
use std::time::Duration;

use estate_protocols::taxonomy;

use super::core::too_long;
use super::findings::{Finding, Findings, Parts};
use crate::modbus::{BusConfig, BusTransport, DataType, DeviceModbusConfig, Point, Profile, Table};
use crate::schema::DeviceConfig;

fn at(f: &mut Vec<Finding>, path: impl Into<String>, message: impl Into<String>) {
    f.push(Finding {
        path: path.into(),
        involves: Vec::new(),
        related: None,
        message: message.into(),
    });
}

fn related(f: &mut Vec<Finding>, path: String, other: String, message: String) {
    f.push(Finding {
        path,
        involves: Vec::new(),
        related: Some(other),
        message,
    });
}

fn fmt_d(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn check_code(path: String, code: &str, f: &mut Vec<Finding>) {
    if taxonomy::lookup(code).is_none() {
        at(
            f,
            path,
            format!(
                "unknown event code {code:?}; use a code of the taxonomy (docs/protocol.md, \"Event codes\")"
            ),
        );
    }
}

/// The rules of `[modbus]` buses and the devices' `modbus` tables (main file). The
/// profiles' own rules ran when their files were read ([`check_profiles`]), as their
/// findings are located in those files.
pub(super) fn check(parts: &Parts, f: &mut Findings) {
    let m = &parts.modbus;
    check_buses(&m.buses, &mut f.0);
    let mut profiles: HashMap<String, Option<&Profile>> =
        m.profile_names.iter().map(|n| (n.clone(), None)).collect();
    if let Some(config) = &m.config {
        for p in &config.profiles {
            profiles.insert(p.name.clone(), Some(p));
        }
    }
    let complete = m.profiles_complete && m.config.is_some();
    check_devices(&parts.devices, &m.bus_names, &profiles, complete, &mut f.0);
}

/// Rules for the profiles of one profile file. `profiles` holds those that deserialized,
/// with their index in the file; each one's points are complete (bad points were
/// reported and left out).
pub(crate) fn check_profiles(profiles: &[(usize, Profile)], f: &mut Vec<Finding>) {
    for (i, p) in profiles {
        let base = format!("profiles[{i}]");
        if p.name.is_empty() || p.name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            at(
                f,
                format!("{base}.name"),
                format!("{:?} must be non-empty, without spaces", p.name),
            );
        }
        if p.points.is_empty() {
            at(f, base.clone(), "a profile needs at least one point");
        }
        check_points(&base, p, f);
    }
}

/// Rules for one profile's points: each point on its own, then overlaps per table.
fn check_points(base: &str, p: &Profile, f: &mut Vec<Finding>) {
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (j, pt) in p.points.iter().enumerate() {
        let pb = format!("{base}.points[{j}]");
        check_point_name(base, &pb, j, pt, &mut names, f);
        check_point_shape(&pb, pt, f);
        if pt.data_type != DataType::Bool {
            check_bit_fields(&pb, p, pt, f);
        }
        check_thresholds(&pb, pt, f);
        check_report(&pb, pt, f);
    }
    check_overlaps(base, p, f);
}

/// A point's name: not empty, and unique within the profile (`names`: name → first index).
fn check_point_name<'a>(
    base: &str,
    pb: &str,
    j: usize,
    pt: &'a Point,
    names: &mut HashMap<&'a str, usize>,
    f: &mut Vec<Finding>,
) {
    if pt.name.is_empty() {
        at(f, format!("{pb}.name"), "must not be empty");
    } else if let Some(first) = names.insert(pt.name.as_str(), j) {
        related(
            f,
            format!("{pb}.name"),
            format!("{base}.points[{first}].name"),
            format!(
                "duplicate point name {:?}, already used by points[{first}]",
                pt.name
            ),
        );
        names.insert(pt.name.as_str(), first);
    }
}

/// A point's type against its table, its count, address range, scale and offset, and the
/// keys a bool point cannot have.
fn check_point_shape(pb: &str, pt: &Point, f: &mut Vec<Finding>) {
    let bits_table = pt.table.is_bits();
    let bool_type = pt.data_type == DataType::Bool;
    if bits_table && !bool_type {
        at(
            f,
            format!("{pb}.type"),
            format!(
                "a {} holds single bits: the type must be \"bool\", found {:?}",
                pt.table,
                pt.data_type.as_str()
            ),
        );
    } else if !bits_table && bool_type {
        at(
            f,
            format!("{pb}.type"),
            format!(
                "\"bool\" is for coils and discrete inputs; a {} register is u16, i16, u32, i32 or f32 (use `bits` for its bits)",
                pt.table
            ),
        );
    }
    if pt.count == 0 {
        at(f, format!("{pb}.count"), "must be at least 1");
    } else if pt.span() > u32::from(pt.table.max_read()) {
        at(
            f,
            format!("{pb}.count"),
            format!(
                "{} × {} spans {} {}, more than one read may ask for ({})",
                pt.count,
                pt.data_type,
                pt.span(),
                if bits_table { "bits" } else { "registers" },
                pt.table.max_read()
            ),
        );
    }
    if pt.end() > 65_536 {
        at(
            f,
            format!("{pb}.address"),
            format!(
                "the point covers addresses {}..{} but the last {} address is 65535",
                pt.address,
                pt.end() - 1,
                pt.table
            ),
        );
    }
    if !pt.scale.is_finite() || pt.scale == 0.0 {
        at(
            f,
            format!("{pb}.scale"),
            format!("must be a finite number other than 0, found {}", pt.scale),
        );
    }
    if !pt.offset.is_finite() {
        at(f, format!("{pb}.offset"), "must be a finite number");
    }
    if pt.data_type.width() == 1 && pt.word_order != Default::default() {
        at(
            f,
            format!("{pb}.word_order"),
            format!(
                "only 32-bit types have a word order; this point is {}",
                pt.data_type
            ),
        );
    }
    if bool_type && pt.byte_order != Default::default() {
        at(
            f,
            format!("{pb}.byte_order"),
            "a bool point has no byte order",
        );
    }
    if !pt.bits.is_empty() && bool_type {
        at(
            f,
            format!("{pb}.bits"),
            "a bool point has no bit fields; its value is the bit",
        );
    }
    if !pt.thresholds.is_empty() && bool_type {
        at(
            f,
            format!("{pb}.thresholds"),
            "thresholds need a numeric point, this one is bool",
        );
    }
}

/// The `bits` of a register point: `bit` or `mask` within the type's width, a code or a
/// meaning, and a numeric `value_point` of the same profile.
fn check_bit_fields(pb: &str, p: &Profile, pt: &Point, f: &mut Vec<Finding>) {
    let width = pt.data_type.bits();
    for (k, b) in pt.bits.iter().enumerate() {
        let bb = format!("{pb}.bits[{k}]");
        match (b.bit, b.mask) {
            (Some(_), Some(_)) => at(
                f,
                bb.clone(),
                format!("bits[{k}] has both `bit` and `mask`; give one"),
            ),
            (None, None) => at(
                f,
                bb.clone(),
                format!("bits[{k}] needs `bit` (one bit) or `mask` (a multi-bit field)"),
            ),
            (Some(bit), None) => {
                if u32::from(bit) >= width {
                    at(
                        f,
                        bb.clone(),
                        format!(
                            "bits[{k}]: bit {bit} does not exist in a {} (bits 0–{})",
                            pt.data_type,
                            width - 1
                        ),
                    );
                }
                if b.equals.is_some() {
                    at(
                        f,
                        bb.clone(),
                        format!("bits[{k}]: `equals` goes with `mask`, not `bit`"),
                    );
                }
            }
            (None, Some(mask)) => {
                let fits = if width >= 32 {
                    u32::MAX
                } else {
                    (1u32 << width) - 1
                };
                if mask == 0 || mask & !fits != 0 {
                    at(
                        f,
                        bb.clone(),
                        format!(
                            "bits[{k}]: mask {mask:#x} must be non-zero and within the {} bits of a {}",
                            width, pt.data_type
                        ),
                    );
                } else if b.equals.is_some_and(|e| e & !mask != 0) {
                    at(
                        f,
                        bb.clone(),
                        format!(
                            "bits[{k}]: `equals` sets bits outside `mask`, so it can never match"
                        ),
                    );
                }
            }
        }
        if let Some(code) = &b.code {
            check_code(format!("{bb}.code"), code, f);
        }
        if b.code.is_none() && b.meaning.is_empty() {
            at(
                f,
                bb.clone(),
                format!("bits[{k}] has neither `code` nor `meaning`"),
            );
        }
        if let Some(vp) = &b.value_point {
            match p.points.iter().find(|o| &o.name == vp) {
                None => at(
                    f,
                    bb.clone(),
                    format!("bits[{k}]: value_point {vp:?} is not a point of profile {:?}", p.name),
                ),
                Some(o) if o.data_type == DataType::Bool => at(
                    f,
                    bb.clone(),
                    format!("bits[{k}]: value_point {vp:?} is a bool point; it must have a numeric value"),
                ),
                Some(_) => {}
            }
        }
    }
}

/// A point's `thresholds`: a known code, a finite `above`, a hysteresis of 0 or more.
fn check_thresholds(pb: &str, pt: &Point, f: &mut Vec<Finding>) {
    for (k, t) in pt.thresholds.iter().enumerate() {
        let tb = format!("{pb}.thresholds[{k}]");
        check_code(format!("{tb}.code"), &t.code, f);
        if !t.above.is_finite() {
            at(
                f,
                tb.clone(),
                format!("thresholds[{k}]: `above` must be a finite number"),
            );
        }
        if !(t.hysteresis.is_finite() && t.hysteresis >= 0.0) {
            at(
                f,
                tb.clone(),
                format!(
                    "thresholds[{k}]: `hysteresis` must be 0 or more, found {}",
                    t.hysteresis
                ),
            );
        }
    }
}

/// A point's `report`: a deadband of 0 or more, a `max_interval` of at least 1 s.
fn check_report(pb: &str, pt: &Point, f: &mut Vec<Finding>) {
    if let Some(r) = &pt.report {
        if !(r.deadband.is_finite() && r.deadband >= 0.0) {
            at(
                f,
                format!("{pb}.report"),
                format!("`deadband` must be 0 or more, found {}", r.deadband),
            );
        }
        if r.max_interval.is_some_and(|d| d < Duration::from_secs(1)) {
            at(
                f,
                format!("{pb}.report"),
                "`max_interval` must be at least 1s",
            );
        }
    }
}

/// Points of one table whose address ranges overlap, in address order.
fn check_overlaps(base: &str, p: &Profile, f: &mut Vec<Finding>) {
    // Overlaps, per table, in address order.
    let mut by_table: Vec<(Table, u32, u32, usize)> = p
        .points
        .iter()
        .enumerate()
        .filter(|(_, pt)| pt.count > 0)
        .map(|(j, pt)| (pt.table, u32::from(pt.address), pt.end(), j))
        .collect();
    by_table.sort();
    for w in by_table.windows(2) {
        let (ta, _, end_a, ja) = w[0];
        let (tb, start_b, _, jb) = w[1];
        if ta == tb && start_b < end_a {
            related(
                f,
                format!("{base}.points[{jb}].address"),
                format!("{base}.points[{ja}].address"),
                format!(
                    "point {:?} overlaps point {:?} (points[{ja}], {} addresses up to {})",
                    p.points[jb].name,
                    p.points[ja].name,
                    ta,
                    end_a - 1
                ),
            );
        }
    }
}

/// Rules for `[[modbus.buses]]` entries (with their index).
pub(super) fn check_buses(buses: &[(usize, BusConfig)], f: &mut Vec<Finding>) {
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, b) in buses {
        let base = format!("modbus.buses[{i}]");
        check_bus_name(&base, *i, b, &mut names, f);
        check_bus_endpoint(&base, b, f);
        check_bus_line(&base, b, f);
        check_bus_reconnect(&base, b, f);
    }
}

/// A bus name: 1–64 letters, digits, '-' or '_', and unique (`names`: name → first index).
fn check_bus_name<'a>(
    base: &str,
    i: usize,
    b: &'a BusConfig,
    names: &mut HashMap<&'a str, usize>,
    f: &mut Vec<Finding>,
) {
    if b.name.is_empty()
        || b.name.len() > 64
        || b.name
            .chars()
            .any(|c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
    {
        at(
            f,
            format!("{base}.name"),
            format!(
                "{:?}: 1–64 letters, digits, '-' or '_' (it appears in metrics and event sources)",
                b.name
            ),
        );
    } else if let Some(first) = names.get(b.name.as_str()) {
        related(
            f,
            format!("{base}.name"),
            format!("modbus.buses[{first}].name"),
            format!(
                "duplicate bus name {:?}, already used by modbus.buses[{first}]",
                b.name
            ),
        );
    } else {
        names.insert(b.name.as_str(), i);
    }
}

/// Where the bus is: `host` for tcp and rtu-over-tcp, `device` (a serial port) for rtu.
fn check_bus_endpoint(base: &str, b: &BusConfig, f: &mut Vec<Finding>) {
    let tcp = !matches!(b.transport, BusTransport::Rtu);
    match (&b.host, tcp) {
        (None, true) => at(
            f,
            format!("{base}.transport"),
            format!(
                "a {} bus needs `host` (and `port`, default 502)",
                b.transport
            ),
        ),
        (Some(h), true) if h.trim().is_empty() || h.contains("://") || h.contains(' ') => at(
            f,
            format!("{base}.host"),
            format!("{h:?} is not a host name or address"),
        ),
        (Some(_), false) => at(
            f,
            format!("{base}.host"),
            "`host` is for tcp and rtu-over-tcp buses; an rtu bus uses `device`",
        ),
        _ => {}
    }
    match (&b.device, b.transport) {
        (None, BusTransport::Rtu) => at(
            f,
            format!("{base}.transport"),
            "an rtu bus needs `device`, the serial port (e.g. \"/dev/ttyS1\")",
        ),
        (Some(d), BusTransport::Rtu) if d.trim().is_empty() => {
            at(f, format!("{base}.device"), "must not be empty")
        }
        (Some(_), BusTransport::Tcp | BusTransport::RtuOverTcp) => at(
            f,
            format!("{base}.device"),
            "`device` (a serial port) is for rtu buses; tcp buses use `host` and `port`",
        ),
        _ => {}
    }
}

/// The serial line's settings: baud, data and stop bits, the inter-frame gap.
fn check_bus_line(base: &str, b: &BusConfig, f: &mut Vec<Finding>) {
    if b.baud < 300 || b.baud > 1_000_000 {
        at(
            f,
            format!("{base}.baud"),
            format!("must be between 300 and 1000000, found {}", b.baud),
        );
    }
    if !(7..=8).contains(&b.data_bits) {
        at(
            f,
            format!("{base}.data_bits"),
            format!("must be 7 or 8, found {}", b.data_bits),
        );
    }
    if !(1..=2).contains(&b.stop_bits) {
        at(
            f,
            format!("{base}.stop_bits"),
            format!("must be 1 or 2, found {}", b.stop_bits),
        );
    }
    if b.inter_frame_gap
        .is_some_and(|g| g > Duration::from_secs(1))
    {
        at(f, format!("{base}.inter_frame_gap"), "must be at most 1s");
    }
}

/// The reconnect backoff: a minimum above 0, a maximum not too long and not below it.
fn check_bus_reconnect(base: &str, b: &BusConfig, f: &mut Vec<Finding>) {
    if b.reconnect_min.is_zero() {
        at(
            f,
            format!("{base}.reconnect_min"),
            "must be more than 0s, or an unreachable bus is retried in a tight loop",
        );
    }
    if let Some(m) = too_long(b.reconnect_max) {
        at(f, format!("{base}.reconnect_max"), m);
    }
    if b.reconnect_max < b.reconnect_min {
        f.push(Finding {
            path: format!("{base}.reconnect_min"),
            involves: vec![format!("{base}.reconnect_max")],
            related: None,
            message: format!(
                "reconnect_min ({}) must not exceed reconnect_max ({})",
                fmt_d(b.reconnect_min),
                fmt_d(b.reconnect_max)
            ),
        });
    }
}

/// Rules for devices' `modbus` tables against the buses and the profiles.
/// `profile_names` holds every profile name seen in a profile file, including profiles
/// that failed to load (so a reference to them is not also reported as unknown).
/// `bus_names` likewise, with each bus's transport when it deserialized.
pub(super) fn check_devices(
    devices: &[(usize, DeviceConfig)],
    buses: &HashMap<String, Option<BusTransport>>,
    profiles: &HashMap<String, Option<&Profile>>,
    profiles_complete: bool,
    f: &mut Vec<Finding>,
) {
    let mut units: HashMap<(&str, u8), usize> = HashMap::new();
    for (i, d) in devices {
        let Some(m) = &d.modbus else { continue };
        let base = format!("devices[{i}].modbus");
        check_device_timing(&base, m, f);
        match buses.get(&m.bus) {
            None => at(
                f,
                format!("{base}.bus"),
                if buses.is_empty() {
                    format!(
                        "unknown bus {:?}: there is no [[modbus.buses]] entry",
                        m.bus
                    )
                } else {
                    let mut known: Vec<&str> = buses.keys().map(String::as_str).collect();
                    known.sort_unstable();
                    format!(
                        "unknown bus {:?}; configured buses: {}",
                        m.bus,
                        known.join(", ")
                    )
                },
            ),
            Some(transport) => {
                if *transport == Some(BusTransport::Rtu) && !(1..=247).contains(&m.unit) {
                    at(
                        f,
                        format!("{base}.unit"),
                        format!(
                            "must be 1–247 on an rtu bus (0 is broadcast), found {}",
                            m.unit
                        ),
                    );
                }
                match units.get(&(m.bus.as_str(), m.unit)) {
                    Some(first) => related(
                        f,
                        format!("{base}.unit"),
                        format!("devices[{first}].modbus.unit"),
                        format!(
                            "unit {} is already used on bus {:?} by devices[{first}]",
                            m.unit, m.bus
                        ),
                    ),
                    None => {
                        units.insert((m.bus.as_str(), m.unit), *i);
                    }
                }
            }
        }
        match profiles.get(&m.profile) {
            None if profiles_complete => {
                let mut known: Vec<&str> = profiles.keys().map(String::as_str).collect();
                known.sort_unstable();
                at(
                    f,
                    format!("{base}.profile"),
                    if known.is_empty() {
                        format!(
                            "unknown profile {:?}: no profiles are loaded (modbus.profile_files)",
                            m.profile
                        )
                    } else {
                        format!(
                            "unknown profile {:?}; loaded profiles: {}",
                            m.profile,
                            known.join(", ")
                        )
                    },
                );
            }
            Some(Some(profile)) if profile.kind != d.kind => f.push(Finding {
                path: format!("{base}.profile"),
                involves: vec![format!("devices[{i}].kind")],
                related: None,
                message: format!(
                    "profile {:?} describes a {} device, but this device's kind is {}",
                    m.profile, profile.kind, d.kind
                ),
            }),
            _ => {}
        }
    }
}

fn check_device_timing(base: &str, m: &DeviceModbusConfig, f: &mut Vec<Finding>) {
    if m.poll_interval < Duration::from_millis(10) {
        at(
            f,
            format!("{base}.poll_interval"),
            format!("must be at least 10ms, found {}", fmt_d(m.poll_interval)),
        );
    }
    if m.timeout.is_zero() || m.timeout > Duration::from_secs(60) {
        at(
            f,
            format!("{base}.timeout"),
            format!(
                "must be more than 0s and at most 60s, found {}",
                fmt_d(m.timeout)
            ),
        );
    }
    if let Some(msg) = too_long(m.poll_interval) {
        at(f, format!("{base}.poll_interval"), msg);
    }
    if let Some(msg) = too_long(m.backoff_max) {
        at(f, format!("{base}.backoff_max"), msg);
    }
    if m.offline_after == 0 {
        at(f, format!("{base}.offline_after"), "must be at least 1");
    }
    if m.backoff_max < m.poll_interval {
        at(
            f,
            format!("{base}.backoff_max"),
            format!(
                "must not be less than poll_interval ({}), found {}",
                fmt_d(m.poll_interval),
                fmt_d(m.backoff_max)
            ),
        );
    }
}
