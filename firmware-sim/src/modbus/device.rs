//! The simulated devices' register maps (as in `config/profiles/`), as pure functions of
//! each device's state. Addresses are zero-based PDU addresses (Modicon 30001 = input 0,
//! 40001 = holding 0, 38001 = input 8000, 49500 = holding 9499).
//!
//! Reading an address a device does not have is exception 02, like the real products;
//! so is writing a read-only register.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::frame::{exception, Table};

/// Which product a simulated device models; the names are the shipped profile names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum DeviceType {
    /// Rope water-leak detector (Aqualeak 10K style), FC04.
    RopeLeak,
    /// Combustible gas detector (PemTech PT495 style), FC03.
    GasPt495,
    /// 8-channel gas controller (IGD TOC-635 style), FC04 + coils.
    GasToc635,
    /// Fire panel Modbus gateway (Notifier MODBUS-GW style), FC03.
    FireNotifier,
    /// Smoke / fire loop with GB/T 26875.3 component status words, FC03.
    SmokeGb26875,
    /// Motorised water valve: coil 0 close, discrete input 0 closed feedback.
    Valve,
    /// Sounder / strobe: coil 0 on.
    Sounder,
    /// A generic bank of holding registers 0..n (benchmarks).
    Bank(u16),
}

impl DeviceType {
    /// The shipped profile name (`config/profiles/`).
    pub fn profile(&self) -> &'static str {
        match self {
            DeviceType::RopeLeak => "rope-leak",
            DeviceType::GasPt495 => "gas-pt495",
            DeviceType::GasToc635 => "gas-toc635",
            DeviceType::FireNotifier => "fire-notifier",
            DeviceType::SmokeGb26875 => "smoke-gb26875",
            DeviceType::Valve => "valve",
            DeviceType::Sounder => "sounder",
            DeviceType::Bank(_) => "bank",
        }
    }

    /// The `device_kind` of the gateway's config.
    pub fn kind(&self) -> &'static str {
        match self {
            DeviceType::RopeLeak => "water_leak",
            DeviceType::GasPt495 | DeviceType::GasToc635 => "gas",
            DeviceType::FireNotifier => "fire_panel",
            DeviceType::SmokeGb26875 => "smoke",
            DeviceType::Valve => "valve",
            DeviceType::Sounder => "sounder",
            DeviceType::Bank(_) => "gas",
        }
    }
}

/// Number of programmed fire-panel points (1..=24); points 25..=32 read 0x00FF.
pub const NOTIFIER_PROGRAMMED: u16 = 24;
/// Fire-panel point registers: points 1..=32 at holding 0..=31.
pub const NOTIFIER_POINTS: u16 = 32;
/// The panel status register (49500).
pub const NOTIFIER_PANEL_STATUS: u16 = 9499;
/// Active event type in the low byte of a fire-panel point in alarm.
pub const NOTIFIER_EVENT_FIRE: u16 = 0x01;
/// Detectors on the GB/T 26875.3 loop: 1..=16 at holding 0..=15.
pub const GB26875_DETECTORS: u16 = 16;
/// TOC-635 channels 1..=8: concentration at input n, status at input 3000 + n.
pub const TOC_CHANNELS: u16 = 8;

/// Word-swapped ("float inverse") f32: the low-order word first.
pub fn f32_word_swapped(v: f32) -> [u16; 2] {
    let b = v.to_bits();
    [(b & 0xFFFF) as u16, (b >> 16) as u16]
}

/// Concentration ×10, saturating to the register.
pub fn times10(v: f64) -> u16 {
    (v * 10.0).round().clamp(0.0, u16::MAX as f64) as u16
}

/// TOC-635 raw channel value: %LEL = raw/10 − 10, raw 0–1200.
pub fn toc_raw(lel: f64) -> u16 {
    ((lel + 10.0) * 10.0).round().clamp(0.0, 1200.0) as u16
}

/// GB/T 26875.3 component status word bits.
pub mod gb26875 {
    /// Bit 0: normal, always set by the simulator (a real detector in test clears it; the
    /// profile reads it inverted as `SMOKE.TEST`).
    pub const NORMAL: u16 = 1 << 0;
    /// Bit 1: fire (`SMOKE.ALARM`).
    pub const FIRE: u16 = 1 << 1;
    /// Bit 2: fault (`FIRE.FAULT`).
    pub const FAULT: u16 = 1 << 2;
    /// Bit 3: disabled, 屏蔽 (`FIRE.DISABLED`).
    pub const DISABLED: u16 = 1 << 3;
    /// Bit 4: supervisory (`FIRE.SUPERVISORY`).
    pub const SUPERVISORY: u16 = 1 << 4;
    /// Bit 5: started (an output component was started).
    pub const STARTED: u16 = 1 << 5;
    /// Bit 6: feedback (an output component reported back).
    pub const FEEDBACK: u16 = 1 << 6;
    /// Bit 7: delay (a delayed start is counting down).
    pub const DELAY: u16 = 1 << 7;
    /// Bit 8: power fault (`FIRE.POWER_FAULT`).
    pub const POWER_FAULT: u16 = 1 << 8;
}

/// Notifier MODBUS-GW point word, upper byte.
pub mod notifier {
    /// Bit 15: acknowledgement block.
    pub const ACK_BLOCK: u16 = 1 << 15;
    /// Bit 14: pre-alarm.
    pub const PRE_ALARM: u16 = 1 << 14;
    /// Bit 13: trouble (`FIRE.FAULT`).
    pub const TROUBLE: u16 = 1 << 13;
    /// Bit 12: inactive.
    pub const INACTIVE: u16 = 1 << 12;
    /// Bit 11: active; the low byte holds the event type ([`super::NOTIFIER_EVENT_FIRE`] for a fire).
    pub const ACTIVE: u16 = 1 << 11;
    /// Bit 10: enabled.
    pub const ENABLED: u16 = 1 << 10;
    /// Bit 9: disabled (`FIRE.DISABLED`).
    pub const DISABLED: u16 = 1 << 9;
    /// Bit 8: fire alarm acknowledged.
    pub const FIRE_ACKED: u16 = 1 << 8;
    /// The whole word of a point that is not programmed.
    pub const NOT_PROGRAMMED: u16 = 0x00FF;
}

/// TOC-635 channel status bits.
pub mod toc {
    /// Bit 0: alarm level 1 reached (`GAS.AL1`).
    pub const AL1: u16 = 1 << 0;
    /// Bit 1: alarm level 2 reached (`GAS.AL2`).
    pub const AL2: u16 = 1 << 1;
    /// Bit 2: alarm level 3 reached.
    pub const AL3: u16 = 1 << 2;
    /// Bit 3: channel fault (`GAS.FAULT`).
    pub const FAULT: u16 = 1 << 3;
    /// Bit 4: channel disabled.
    pub const DISABLED: u16 = 1 << 4;
    /// Bit 5: sensor fault.
    pub const SENSOR_FAULT: u16 = 1 << 5;
    /// Bit 6: under range.
    pub const UNDER_RANGE: u16 = 1 << 6;
    /// Bit 7: over range.
    pub const OVER_RANGE: u16 = 1 << 7;
    /// Bit 8: communication fault with the channel's sensor.
    pub const COMMS: u16 = 1 << 8;
    /// Bits 13–15: set on a channel in alarm while "mute all" (coil 0) is on.
    pub const MUTED: u16 = 0b111 << 13;
    /// The controller's alarm levels, %LEL.
    pub const LEVELS: [f64; 3] = [10.0, 25.0, 50.0];
}

/// PT495 status word: high byte sensor type, low byte flags.
pub mod pt495 {
    /// High byte 0x02: the sensor measures %LEL.
    pub const SENSOR_LEL: u16 = 0x02 << 8;
    /// Bit 0: alarm relay on (latched until reset when latching).
    pub const ALARM: u16 = 1 << 0;
    /// Bit 1: calibration in progress.
    pub const CALIBRATION: u16 = 1 << 1;
    /// Bit 2: fault (`GAS.FAULT`).
    pub const FAULT: u16 = 1 << 2;
}

/// The state of one simulated device. What the registers read is derived from it.
#[derive(Debug, Clone)]
pub struct SimDevice {
    /// Which product the device models; fixes its register map.
    pub device_type: DeviceType,
    /// Rope leak: the leak position in metres while leaking.
    pub leak_m: Option<f64>,
    /// Rope leak: report the distance in feet (register 30003 = 1).
    pub feet: bool,
    /// Rope leak: cable length, metres.
    pub cable_m: u16,
    /// Gas: %LEL (PT495, and every TOC-635 channel not set otherwise).
    pub lel: [f64; TOC_CHANNELS as usize],
    /// PT495 set points (%LEL) and latching; alarm latched until reset.
    pub al1: f64,
    /// PT495: alarm level 2 set point, %LEL.
    pub al2: f64,
    /// PT495: level 1 alarms stay latched until reset.
    pub al1_latching: bool,
    /// PT495: level 2 alarms stay latched until reset.
    pub al2_latching: bool,
    /// PT495: a latched alarm is holding the alarm relay on.
    pub pt495_latched: bool,
    /// PT495: in calibration (status bit 1).
    pub calibrating: bool,
    /// Device-level fault (sensor fault, cable break, panel trouble, …).
    pub fault: bool,
    /// TOC-635 "mute all" coil.
    pub muted: bool,
    /// Fire panel points / loop detectors in fire (index 0 = point / detector 1).
    pub fire: Vec<bool>,
    /// Loop detectors disabled (屏蔽).
    pub disabled: Vec<bool>,
    /// Fire panel status register (bit0 reset, bit1 silence).
    pub panel_status: u16,
    /// Valve / sounder coil 0.
    pub coil: bool,
    /// Valve: the feedback follows the coil after this long.
    pub travel: Duration,
    /// Valve: the feedback position before the last coil change, and when it changed.
    pub feedback_from: bool,
    /// Valve: when the coil last changed; `None` before any change.
    pub coil_changed: Option<Instant>,
    /// Bank: holding register values.
    pub bank: Vec<u16>,
}

impl SimDevice {
    /// A device of `device_type` in its quiet state: no leak, 0 %LEL, no fire, no fault, coil off.
    pub fn new(device_type: DeviceType) -> SimDevice {
        let points = match device_type {
            DeviceType::FireNotifier => NOTIFIER_POINTS as usize,
            DeviceType::SmokeGb26875 => GB26875_DETECTORS as usize,
            _ => 0,
        };
        SimDevice {
            device_type,
            leak_m: None,
            feet: false,
            cable_m: 50,
            lel: [0.0; TOC_CHANNELS as usize],
            al1: 10.0,
            al2: 25.0,
            al1_latching: false,
            al2_latching: false,
            pt495_latched: false,
            calibrating: false,
            fault: false,
            muted: false,
            fire: vec![false; points],
            disabled: vec![false; points],
            panel_status: 0,
            coil: false,
            travel: Duration::ZERO,
            feedback_from: false,
            coil_changed: None,
            bank: match device_type {
                DeviceType::Bank(n) => (0..n).map(|i| 100 + i).collect(),
                _ => Vec::new(),
            },
        }
    }

    /// Rope leak: the distance in the unit of register 30003.
    fn leak_in_unit(&self) -> f64 {
        let m = self.leak_m.unwrap_or(0.0);
        if self.feet {
            m / 0.3048
        } else {
            m
        }
    }

    /// The valve's closed-feedback input at `now`.
    pub fn feedback(&self, now: Instant) -> bool {
        match self.coil_changed {
            Some(at) if now.saturating_duration_since(at) < self.travel => self.feedback_from,
            _ => self.coil,
        }
    }

    fn pt495_alarm(&self) -> bool {
        self.pt495_latched || self.lel[0] >= self.al1
    }

    /// One register, or `None` if the device has no such address (exception 02).
    pub fn register(&self, table: Table, addr: u16) -> Option<u16> {
        use DeviceType as D;
        match (self.device_type, table) {
            (D::RopeLeak, Table::Input) => self.rope_leak_input(addr),
            (D::GasPt495, Table::Holding) => self.pt495_holding(addr),
            (D::GasToc635, Table::Input) => self.toc635_input(addr),
            (D::FireNotifier, Table::Holding) => self.notifier_holding(addr),
            (D::SmokeGb26875, Table::Holding) => self.gb26875_holding(addr),
            (D::Bank(n), Table::Holding) if addr < n => Some(self.bank[addr as usize]),
            _ => None,
        }
    }

    /// Rope leak, input registers 0..=8 (30001–30009: status, distance in whole units,
    /// unit, leak current, cable length, the two leg resistances (0xFFFF on a cable
    /// fault), reserved, firmware) and 8000–8001 (the distance as a word-swapped f32).
    fn rope_leak_input(&self, addr: u16) -> Option<u16> {
        let leak = self.leak_m.is_some();
        Some(match addr {
            0 => {
                let mut s = 0;
                if leak {
                    s |= 1;
                }
                if self.fault {
                    s |= 2;
                }
                if leak || self.fault {
                    s |= 8;
                }
                s
            }
            1 => self.leak_in_unit().round() as u16,
            2 => self.feet as u16,
            3 => {
                if leak {
                    150
                } else {
                    0
                }
            }
            4 => {
                if self.feet {
                    (self.cable_m as f64 / 0.3048).round() as u16
                } else {
                    self.cable_m
                }
            }
            5 | 6 => {
                if self.fault {
                    0xFFFF
                } else {
                    2600
                }
            }
            7 => 0,
            8 => 301,
            8000 | 8001 => f32_word_swapped(self.leak_in_unit() as f32)[(addr - 8000) as usize],
            _ => return None,
        })
    }

    /// PT495, holding registers: concentration ×10, the status word, and the set points
    /// (×10) with their latching.
    fn pt495_holding(&self, addr: u16) -> Option<u16> {
        Some(match addr {
            0 => times10(self.lel[0]),
            1 => {
                let mut s = pt495::SENSOR_LEL;
                if self.pt495_alarm() {
                    s |= pt495::ALARM;
                }
                if self.calibrating {
                    s |= pt495::CALIBRATION;
                }
                if self.fault {
                    s |= pt495::FAULT;
                }
                s
            }
            2 => times10(self.al1),
            3 => self.al1_latching as u16,
            4 => times10(self.al2),
            5 => self.al2_latching as u16,
            6 => 0,
            _ => return None,
        })
    }

    /// TOC-635, input registers: each channel's raw value (1..=8) and status word
    /// (3001..=3008).
    fn toc635_input(&self, addr: u16) -> Option<u16> {
        match addr {
            1..=TOC_CHANNELS => Some(toc_raw(self.lel[addr as usize - 1])),
            3001..=3008 => {
                let lel = self.lel[addr as usize - 3001];
                let mut s = 0;
                for (i, level) in toc::LEVELS.iter().enumerate() {
                    if lel >= *level {
                        s |= 1 << i;
                    }
                }
                if self.fault {
                    s |= toc::FAULT | toc::SENSOR_FAULT;
                }
                if lel < -10.0 {
                    s |= toc::UNDER_RANGE;
                }
                if lel > 110.0 {
                    s |= toc::OVER_RANGE;
                }
                if self.muted && s & (toc::AL1 | toc::AL2 | toc::AL3) != 0 {
                    s |= toc::MUTED;
                }
                Some(s)
            }
            _ => None,
        }
    }

    /// Notifier MODBUS-GW, holding registers: one word per point (0..32), the panel
    /// status at 9499.
    fn notifier_holding(&self, addr: u16) -> Option<u16> {
        match addr {
            0..NOTIFIER_POINTS => {
                if addr >= NOTIFIER_PROGRAMMED {
                    return Some(notifier::NOT_PROGRAMMED);
                }
                let mut w = notifier::ENABLED;
                if self.fire[addr as usize] {
                    w |= notifier::ACTIVE | NOTIFIER_EVENT_FIRE;
                } else {
                    w |= notifier::INACTIVE;
                }
                if self.fault {
                    w |= notifier::TROUBLE;
                }
                Some(w)
            }
            NOTIFIER_PANEL_STATUS => Some(self.panel_status),
            _ => None,
        }
    }

    /// GB/T 26875.3 loop, holding registers: one component status word per detector.
    fn gb26875_holding(&self, addr: u16) -> Option<u16> {
        match addr {
            0..GB26875_DETECTORS => {
                let i = addr as usize;
                let mut w = gb26875::NORMAL;
                if self.fire[i] {
                    w |= gb26875::FIRE;
                }
                if self.fault {
                    w |= gb26875::FAULT;
                }
                if self.disabled[i] {
                    w |= gb26875::DISABLED;
                }
                Some(w)
            }
            _ => None,
        }
    }

    /// One bit (coil or discrete input), or `None` if the device has no such address.
    pub fn bit(&self, table: Table, addr: u16, now: Instant) -> Option<bool> {
        use DeviceType as D;
        match (self.device_type, table, addr) {
            (D::Valve | D::Sounder, Table::Coil, 0) => Some(self.coil),
            (D::Valve, Table::Discrete, 0) => Some(self.feedback(now)),
            (D::GasToc635, Table::Coil, 0) => Some(self.muted),
            (D::GasToc635, Table::Coil, 1) => Some(false),
            _ => None,
        }
    }

    /// Reads `count` registers from `addr`.
    pub fn read_registers(&self, table: Table, addr: u16, count: u16) -> Result<Vec<u16>, u8> {
        (0..count)
            .map(|i| {
                addr.checked_add(i)
                    .and_then(|a| self.register(table, a))
                    .ok_or(exception::ILLEGAL_DATA_ADDRESS)
            })
            .collect()
    }

    /// Reads `count` bits from `addr`.
    pub fn read_bits(
        &self,
        table: Table,
        addr: u16,
        count: u16,
        now: Instant,
    ) -> Result<Vec<bool>, u8> {
        (0..count)
            .map(|i| {
                addr.checked_add(i)
                    .and_then(|a| self.bit(table, a, now))
                    .ok_or(exception::ILLEGAL_DATA_ADDRESS)
            })
            .collect()
    }

    /// FC05 / FC15.
    pub fn write_coil(&mut self, addr: u16, value: bool, now: Instant) -> Result<(), u8> {
        use DeviceType as D;
        match (self.device_type, addr) {
            (D::Valve | D::Sounder, 0) => {
                if value != self.coil {
                    self.feedback_from = self.feedback(now);
                    self.coil = value;
                    self.coil_changed = Some(now);
                }
                Ok(())
            }
            (D::GasToc635, 0) => {
                self.muted = value;
                Ok(())
            }
            (D::GasToc635, 1) => {
                if value {
                    self.muted = false;
                }
                Ok(())
            }
            _ => Err(exception::ILLEGAL_DATA_ADDRESS),
        }
    }

    /// FC06 / FC16.
    pub fn write_register(&mut self, addr: u16, value: u16) -> Result<(), u8> {
        use DeviceType as D;
        match (self.device_type, addr) {
            (D::GasPt495, 2) => self.al1 = value as f64 / 10.0,
            (D::GasPt495, 3) => self.al1_latching = value != 0,
            (D::GasPt495, 4) => self.al2 = value as f64 / 10.0,
            (D::GasPt495, 5) => self.al2_latching = value != 0,
            (D::GasPt495, 6) => {
                if value == 1 {
                    self.pt495_latched = false;
                }
            }
            (D::FireNotifier, NOTIFIER_PANEL_STATUS) => self.panel_status = value & 0b11,
            (D::Bank(n), a) if a < n => self.bank[a as usize] = value,
            _ => return Err(exception::ILLEGAL_DATA_ADDRESS),
        }
        Ok(())
    }

    /// Sets the gas concentration of every channel (PT495: its only one).
    pub fn set_lel(&mut self, lel: f64) {
        self.lel = [lel; TOC_CHANNELS as usize];
        self.latch();
    }

    /// TOC-635: one channel, 1..=8.
    pub fn set_channel_lel(&mut self, channel: u16, lel: f64) {
        if (1..=TOC_CHANNELS).contains(&channel) {
            self.lel[channel as usize - 1] = lel;
        }
        self.latch();
    }

    fn latch(&mut self) {
        if self.device_type == DeviceType::GasPt495
            && ((self.al1_latching && self.lel[0] >= self.al1)
                || (self.al2_latching && self.lel[0] >= self.al2))
        {
            self.pt495_latched = true;
        }
    }

    /// Fire panel point / loop detector `n` (1-based) in fire or back to normal.
    pub fn set_fire(&mut self, n: u16, on: bool) {
        if let Some(p) = (n as usize)
            .checked_sub(1)
            .and_then(|i| self.fire.get_mut(i))
        {
            *p = on;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_swapped_float_is_low_word_first() {
        // 12.5 = 0x4148_0000: high word 0x4148, low word 0x0000.
        assert_eq!(f32_word_swapped(12.5), [0x0000, 0x4148]);
        // 1.1 = 0x3F8C_CCCD.
        assert_eq!(f32_word_swapped(1.1), [0xCCCD, 0x3F8C]);
    }

    #[test]
    fn rope_leak_register_map() {
        let mut d = SimDevice::new(DeviceType::RopeLeak);
        assert_eq!(
            d.read_registers(Table::Input, 0, 9),
            Ok(vec![0, 0, 0, 0, 50, 2600, 2600, 0, 301])
        );
        d.leak_m = Some(12.5);
        let r = d.read_registers(Table::Input, 0, 9).expect("map");
        assert_eq!(r[0], 0b1001, "leak + summary alarm");
        assert_eq!(r[1], 13, "×1 integer distance, rounded");
        assert_eq!(r[2], 0, "metres");
        assert_eq!(
            d.read_registers(Table::Input, 8000, 2),
            Ok(vec![0x0000, 0x4148])
        );
        d.feet = true;
        let r = d.read_registers(Table::Input, 0, 3).expect("map");
        assert_eq!((r[1], r[2]), (41, 1), "12.5 m = 41 ft");
        d.fault = true;
        d.leak_m = None;
        assert_eq!(d.register(Table::Input, 0), Some(0b1010), "cable break");
        assert_eq!(
            d.read_registers(Table::Input, 7, 3),
            Err(exception::ILLEGAL_DATA_ADDRESS),
            "30010 does not exist"
        );
        assert_eq!(d.register(Table::Holding, 0), None);
    }

    #[test]
    fn pt495_times_ten_and_status_word() {
        let mut d = SimDevice::new(DeviceType::GasPt495);
        assert_eq!(
            d.read_registers(Table::Holding, 0, 7),
            Ok(vec![0, 0x0200, 100, 0, 250, 0, 0])
        );
        d.set_lel(30.0);
        assert_eq!(
            d.read_registers(Table::Holding, 0, 2),
            Ok(vec![300, 0x0201])
        );
        d.fault = true;
        assert_eq!(d.register(Table::Holding, 1), Some(0x0205));
        // Latching AL1: stays in alarm until 40007 = 1.
        let mut d = SimDevice::new(DeviceType::GasPt495);
        d.write_register(3, 1).expect("AL1 latching");
        d.set_lel(12.0);
        d.set_lel(0.0);
        assert_eq!(d.register(Table::Holding, 1), Some(0x0201));
        d.write_register(6, 1).expect("reset relays");
        assert_eq!(d.register(Table::Holding, 1), Some(0x0200));
        assert_eq!(d.write_register(0, 5), Err(exception::ILLEGAL_DATA_ADDRESS));
    }

    #[test]
    fn toc635_raw_offset_and_status() {
        let mut d = SimDevice::new(DeviceType::GasToc635);
        assert_eq!(toc_raw(0.0), 100);
        assert_eq!(toc_raw(30.0), 400);
        d.set_channel_lel(3, 30.0);
        let r = d.read_registers(Table::Input, 1, 8).expect("channels");
        assert_eq!(r, vec![100, 100, 400, 100, 100, 100, 100, 100]);
        let s = d.read_registers(Table::Input, 3001, 8).expect("status");
        assert_eq!(s[2], toc::AL1 | toc::AL2);
        assert_eq!(s[0], 0);
        d.write_coil(0, true, Instant::now()).expect("mute");
        assert_eq!(d.register(Table::Input, 3003), Some(0b111 << 13 | 0b11));
        assert_eq!(d.register(Table::Input, 0), None);
    }

    #[test]
    fn notifier_point_words() {
        let mut d = SimDevice::new(DeviceType::FireNotifier);
        assert_eq!(d.register(Table::Holding, 0), Some(0x1400));
        d.set_fire(3, true);
        assert_eq!(d.register(Table::Holding, 2), Some(0x0C01));
        assert_eq!(d.register(Table::Holding, 24), Some(0x00FF));
        assert_eq!(d.register(Table::Holding, 32), None);
        d.write_register(NOTIFIER_PANEL_STATUS, 2).expect("silence");
        assert_eq!(d.register(Table::Holding, 9499), Some(2));
    }

    #[test]
    fn gb26875_status_words() {
        let mut d = SimDevice::new(DeviceType::SmokeGb26875);
        assert_eq!(d.read_registers(Table::Holding, 0, 16).map(|v| v[0]), Ok(1));
        d.set_fire(5, true);
        assert_eq!(d.register(Table::Holding, 4), Some(0b11));
        d.fault = true;
        assert_eq!(d.register(Table::Holding, 0), Some(0b101));
    }

    #[test]
    fn valve_feedback_follows_the_coil_after_travel() {
        let t0 = Instant::now();
        let mut d = SimDevice::new(DeviceType::Valve);
        d.travel = Duration::from_secs(2);
        assert_eq!(d.bit(Table::Discrete, 0, t0), Some(false));
        d.write_coil(0, true, t0).expect("close");
        assert_eq!(d.bit(Table::Coil, 0, t0), Some(true));
        assert_eq!(
            d.bit(Table::Discrete, 0, t0 + Duration::from_secs(1)),
            Some(false)
        );
        assert_eq!(
            d.bit(Table::Discrete, 0, t0 + Duration::from_secs(2)),
            Some(true)
        );
        let mut s = SimDevice::new(DeviceType::Sounder);
        s.write_coil(0, true, t0).expect("on");
        assert_eq!(s.read_bits(Table::Coil, 0, 1, t0), Ok(vec![true]));
        assert_eq!(s.bit(Table::Discrete, 0, t0), None);
    }
}
