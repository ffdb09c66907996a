//! Pure decoding: the data of read requests → typed point values → events.
//!
//! No I/O and no clock: the caller passes the data it read and `now_ms`.
//!
//! - [`decode`] turns the answers to a device's [`ReadRequest`]s into one [`Value`] per
//!   point element (byte and word order, `raw × scale + offset`).
//! - [`Tracker`] keeps what was last seen of each bit field, threshold and report, and
//!   turns a new set of values into [`Emit`]s: a condition that starts is `active`, one
//!   that ends `cleared` (only the start for momentary codes); a threshold is active from
//!   `value >= above` until `value <= above - hysteresis`; a value is reported
//!   (`DEV.READING`) the first time, when it moved more than the deadband, and after
//!   `max_interval`. A condition already present at the first poll is reported active;
//!   one absent at the first poll is not reported cleared.

use estate_config::{DataType, Order, Point, Profile, Table};
use estate_protocols::model::EventState;
use estate_protocols::taxonomy;

use super::plan::ReadRequest;

/// What one read request returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// Coils or discrete inputs (FC01/FC02), one per bit read.
    Bits(Vec<bool>),
    /// Holding or input registers (FC03/FC04), one per register read.
    Words(Vec<u16>),
}

/// A raw value as the device sent it (after byte and word order).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Raw {
    /// A coil or discrete input.
    Bool(bool),
    /// One register, unsigned.
    U16(u16),
    /// One register, two's complement.
    I16(i16),
    /// Two registers, unsigned, in the profile's word order.
    U32(u32),
    /// Two registers, two's complement, in the profile's word order.
    I32(i32),
    /// Two registers as an IEEE 754 single, in the profile's word order.
    F32(f32),
}

impl Raw {
    /// The bits of the raw value, for bit fields.
    pub fn bits(self) -> u32 {
        match self {
            Raw::Bool(b) => u32::from(b),
            Raw::U16(v) => u32::from(v),
            Raw::I16(v) => u32::from(v as u16),
            Raw::U32(v) => v,
            Raw::I32(v) => v as u32,
            Raw::F32(v) => v.to_bits(),
        }
    }

    /// The number it stands for (a bool is 0 or 1); exact, since every variant fits in
    /// an `f64`. Scale and offset apply to this.
    pub fn as_f64(self) -> f64 {
        match self {
            Raw::Bool(b) => f64::from(u8::from(b)),
            Raw::U16(v) => f64::from(v),
            Raw::I16(v) => f64::from(v),
            Raw::U32(v) => f64::from(v),
            Raw::I32(v) => f64::from(v),
            Raw::F32(v) => f64::from(v),
        }
    }
}

impl std::fmt::Display for Raw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Raw::Bool(b) => write!(f, "{}", u8::from(*b)),
            Raw::U16(v) => write!(f, "{v} (0x{v:04x})"),
            Raw::I16(v) => write!(f, "{v}"),
            Raw::U32(v) => write!(f, "{v} (0x{v:08x})"),
            Raw::I32(v) => write!(f, "{v}"),
            Raw::F32(v) => write!(f, "{v} (0x{:08x})", v.to_bits()),
        }
    }
}

/// One element of a point, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    /// Index of the point in the profile.
    pub point: usize,
    /// 0-based element of an array point (0 for a single point).
    pub element: u16,
    /// The table it was read from.
    pub table: Table,
    /// The element's own address.
    pub address: u16,
    /// What the device sent, before scale and offset.
    pub raw: Raw,
    /// `raw × scale + offset`.
    pub value: f64,
}

impl Value {
    /// `status`, or `channel[3]` for element 2 of an array point.
    pub fn name(&self, profile: &Profile) -> String {
        let p = &profile.points[self.point];
        if p.count > 1 {
            format!("{}[{}]", p.name, self.element + 1)
        } else {
            p.name.clone()
        }
    }
}

/// An answer that does not fit what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// Decodes the answers (`data[i]` answers `reads[i]`) into every point element, in the
/// order of the reads.
pub fn decode(
    profile: &Profile,
    reads: &[ReadRequest],
    data: &[Data],
) -> Result<Vec<Value>, DecodeError> {
    if reads.len() != data.len() {
        return Err(DecodeError(format!(
            "{} answers for {} reads",
            data.len(),
            reads.len()
        )));
    }
    let mut out = Vec::new();
    for (req, d) in reads.iter().zip(data) {
        for &pi in &req.points {
            let Some(p) = profile.points.get(pi) else {
                return Err(DecodeError(format!("no point {pi} in the profile")));
            };
            let start = usize::from(p.address.saturating_sub(req.address));
            let width = usize::from(p.data_type.width());
            for e in 0..p.count {
                let at = start + usize::from(e) * width;
                let address = p.address.wrapping_add(e.wrapping_mul(p.data_type.width()));
                let raw = match d {
                    Data::Bits(bits) => {
                        let b = bits
                            .get(at)
                            .copied()
                            .ok_or_else(|| short(req, bits.len()))?;
                        Raw::Bool(b)
                    }
                    Data::Words(words) => {
                        let w = words
                            .get(at..at + width)
                            .ok_or_else(|| short(req, words.len()))?;
                        decode_words(p, w)?
                    }
                };
                out.push(Value {
                    point: pi,
                    element: e,
                    table: p.table,
                    address,
                    raw,
                    value: raw.as_f64() * p.scale + p.offset,
                });
            }
        }
    }
    Ok(out)
}

fn short(req: &ReadRequest, got: usize) -> DecodeError {
    DecodeError(format!(
        "{} read at {} asked for {} items, the answer has {got}",
        req.table, req.address, req.count
    ))
}

/// One value from its registers (one or two), honouring byte and word order.
pub fn decode_words(p: &Point, words: &[u16]) -> Result<Raw, DecodeError> {
    let fix = |w: u16| match p.byte_order {
        Order::HighFirst => w,
        Order::LowFirst => w.swap_bytes(),
    };
    let one = || {
        words
            .first()
            .copied()
            .map(fix)
            .ok_or_else(|| DecodeError("missing register".into()))
    };
    let two = || -> Result<u32, DecodeError> {
        let [a, b] = words else {
            return Err(DecodeError(format!("{} needs two registers", p.data_type)));
        };
        let (hi, lo) = match p.word_order {
            Order::HighFirst => (fix(*a), fix(*b)),
            Order::LowFirst => (fix(*b), fix(*a)),
        };
        Ok((u32::from(hi) << 16) | u32::from(lo))
    };
    Ok(match p.data_type {
        DataType::Bool => Raw::Bool(one()? != 0),
        DataType::U16 => Raw::U16(one()?),
        DataType::I16 => Raw::I16(one()? as i16),
        DataType::U32 => Raw::U32(two()?),
        DataType::I32 => Raw::I32(two()? as i32),
        DataType::F32 => Raw::F32(f32::from_bits(two()?)),
    })
}

/// An event to raise, before it gets the device's identity.
#[derive(Debug, Clone, PartialEq)]
pub struct Emit {
    /// The event code the profile maps this to, e.g. `GAS.ALARM` or `DEV.READING`.
    pub code: String,
    /// `active`, or `cleared` when a stateful condition (a bit, a threshold) ends.
    pub state: EventState,
    /// The point element it comes from.
    pub point: usize,
    /// 0-based element of an array point (0 for a single point).
    pub element: u16,
    /// The table the element was read from.
    pub table: Table,
    /// The element's own address.
    pub address: u16,
    /// What the device sent, before scale and offset.
    pub raw: Raw,
    /// The value to attach, with its unit.
    pub value: Option<(f64, String)>,
    /// What happened, for people: `bit 0 (leak)`, `≥ 25 %LEL`, `reading`.
    pub detail: String,
}

/// Per point element: the state of each bit field and threshold, and the last report.
#[derive(Debug, Clone, Default)]
struct ElementState {
    bits: Vec<Option<bool>>,
    thresholds: Vec<Option<bool>>,
    /// (value, time) of the last `DEV.READING`.
    reported: Option<(f64, i64)>,
}

impl ElementState {
    /// Each bit field of `p` with a code whose state changed in `v`: `active` on a rising
    /// edge (or the first reading that has it on), `cleared` on a falling one if the code
    /// is stateful.
    fn bit_edges(
        &mut self,
        profile: &Profile,
        p: &Point,
        values: &[Value],
        v: &Value,
        out: &mut Vec<Emit>,
    ) {
        let raw_bits = v.raw.bits();
        for (k, bf) in p.bits.iter().enumerate() {
            let Some(code) = &bf.code else { continue };
            let (mask, equals) = bf.mask_equals();
            let on = ((raw_bits & mask) == equals) != bf.invert;
            let before = self.bits.get(k).copied().flatten();
            if let Some(slot) = self.bits.get_mut(k) {
                *slot = Some(on);
            }
            let state = match (before, on) {
                (Some(true), true) | (Some(false) | None, false) => continue,
                (_, true) => EventState::Active,
                (Some(true), false) => EventState::Cleared,
            };
            if state == EventState::Cleared && !stateful(code) {
                continue;
            }
            let value = bf
                .value_point
                .as_ref()
                .and_then(|name| value_of(profile, values, name, v.element));
            let detail = if bf.meaning.is_empty() {
                bf.label()
            } else {
                format!("{} ({})", bf.label(), bf.meaning)
            };
            out.push(emit(v, code, state, value, detail));
        }
    }

    /// Each threshold of `p` that `v` crossed: `active` at or above it, `cleared` once
    /// below it by the hysteresis (stateful codes only).
    fn threshold_crossings(&mut self, p: &Point, v: &Value, out: &mut Vec<Emit>) {
        for (k, t) in p.thresholds.iter().enumerate() {
            let before = self.thresholds.get(k).copied().flatten();
            let now_on = match before {
                Some(true) => v.value > t.above - t.hysteresis,
                _ => v.value >= t.above,
            };
            if let Some(slot) = self.thresholds.get_mut(k) {
                *slot = Some(now_on);
            }
            let state = match (before, now_on) {
                (Some(true), false) => EventState::Cleared,
                (Some(false) | None, true) => EventState::Active,
                _ => continue,
            };
            if state == EventState::Cleared && !stateful(&t.code) {
                continue;
            }
            let detail = match state {
                EventState::Active => format!("{} >= {} {}", v.value, t.above, p.unit),
                EventState::Cleared => {
                    format!("{} <= {} {}", v.value, t.above - t.hysteresis, p.unit)
                }
            };
            out.push(emit(
                v,
                &t.code,
                state,
                Some((v.value, p.unit.clone())),
                detail.trim_end().to_owned(),
            ));
        }
    }

    /// A `DEV.READING` of `v` when `p` reports and it is due: the first reading, a move
    /// beyond the deadband, or `max_interval` since the last report.
    fn report(&mut self, p: &Point, v: &Value, now_ms: i64, out: &mut Vec<Emit>) {
        let Some(r) = &p.report else {
            return;
        };
        let due = match self.reported {
            None => true,
            Some((last, at)) => {
                (v.value - last).abs() > r.deadband
                    || r.max_interval.is_some_and(|max| {
                        now_ms.saturating_sub(at)
                            >= i64::try_from(max.as_millis()).unwrap_or(i64::MAX)
                    })
            }
        };
        if due {
            self.reported = Some((v.value, now_ms));
            out.push(emit(
                v,
                "DEV.READING",
                EventState::Active,
                Some((v.value, p.unit.clone())),
                "reading".into(),
            ));
        }
    }
}

/// The event `code` in `state` from the element `v`.
fn emit(
    v: &Value,
    code: &str,
    state: EventState,
    value: Option<(f64, String)>,
    detail: String,
) -> Emit {
    Emit {
        code: code.to_owned(),
        state,
        point: v.point,
        element: v.element,
        table: v.table,
        address: v.address,
        raw: v.raw,
        value,
        detail,
    }
}

/// What was last seen of one device, turning new values into events.
#[derive(Debug, Clone)]
pub struct Tracker {
    /// `[point][element]`.
    state: Vec<Vec<ElementState>>,
}

/// Whether `code` names a condition that ends (its end is reported as `cleared`).
fn stateful(code: &str) -> bool {
    taxonomy::lookup(code).is_some_and(|i| i.stateful)
}

impl Tracker {
    /// A device of `profile` seen for the first time: no bit or threshold state yet and
    /// nothing reported.
    pub fn new(profile: &Profile) -> Tracker {
        Tracker {
            state: profile
                .points
                .iter()
                .map(|p| {
                    vec![
                        ElementState {
                            bits: vec![None; p.bits.len()],
                            thresholds: vec![None; p.thresholds.len()],
                            reported: None,
                        };
                        usize::from(p.count)
                    ]
                })
                .collect(),
        }
    }

    /// The events `values` (one poll's worth) raise at `now_ms`.
    pub fn observe(&mut self, profile: &Profile, values: &[Value], now_ms: i64) -> Vec<Emit> {
        let mut out = Vec::new();
        for v in values {
            let Some(p) = profile.points.get(v.point) else {
                continue;
            };
            let Some(st) = self
                .state
                .get_mut(v.point)
                .and_then(|s| s.get_mut(usize::from(v.element)))
            else {
                continue;
            };
            st.bit_edges(profile, p, values, v, &mut out);
            if !v.value.is_finite() {
                // A NaN or infinite float: nothing to compare or report.
                continue;
            }
            st.threshold_crossings(p, v, &mut out);
            st.report(p, v, now_ms, &mut out);
        }
        out
    }
}

/// The value of point `name` to attach to an event of element `element`: the same
/// element of an array point of the same length, else its first element.
fn value_of(
    profile: &Profile,
    values: &[Value],
    name: &str,
    element: u16,
) -> Option<(f64, String)> {
    let (pi, p) = profile
        .points
        .iter()
        .enumerate()
        .find(|(_, p)| p.name == name)?;
    let e = if element < p.count { element } else { 0 };
    values
        .iter()
        .find(|v| v.point == pi && v.element == e)
        .filter(|v| v.value.is_finite())
        .map(|v| (v.value, p.unit.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use estate_config::{BitField, Report, Threshold};
    use estate_protocols::model::DeviceKind;
    use std::time::Duration;

    fn point(name: &str, table: Table, address: u16, ty: DataType) -> Point {
        Point {
            name: name.into(),
            table,
            address,
            data_type: ty,
            count: 1,
            word_order: Order::HighFirst,
            byte_order: Order::HighFirst,
            scale: 1.0,
            offset: 0.0,
            unit: String::new(),
            bits: Vec::new(),
            thresholds: Vec::new(),
            report: None,
        }
    }

    fn bit(n: u8, code: &str) -> BitField {
        BitField {
            bit: Some(n),
            mask: None,
            equals: None,
            invert: false,
            code: Some(code.into()),
            meaning: String::new(),
            value_point: None,
        }
    }

    fn profile(points: Vec<Point>) -> Profile {
        Profile {
            name: "t".into(),
            kind: DeviceKind::Gas,
            description: String::new(),
            points,
            file: Default::default(),
        }
    }

    fn values(p: &Profile, data: Vec<Data>) -> Vec<Value> {
        let reads = super::super::plan::plan(&p.points);
        decode(p, &reads, &data).expect("decodes")
    }

    fn codes(emits: &[Emit]) -> Vec<(String, EventState)> {
        emits.iter().map(|e| (e.code.clone(), e.state)).collect()
    }

    #[test]
    fn word_swapped_f32_decodes_like_the_rope_detector_sends_it() {
        let mut p = point("d", Table::Input, 8000, DataType::F32);
        p.word_order = Order::LowFirst;
        let bits = 12.5f32.to_bits();
        let words = [(bits & 0xFFFF) as u16, (bits >> 16) as u16];
        assert_eq!(decode_words(&p, &words), Ok(Raw::F32(12.5)));
        p.word_order = Order::HighFirst;
        assert_eq!(decode_words(&p, &[words[1], words[0]]), Ok(Raw::F32(12.5)));
        // Byte order within registers.
        let mut q = point("q", Table::Holding, 0, DataType::U16);
        q.byte_order = Order::LowFirst;
        assert_eq!(decode_words(&q, &[0x3412]), Ok(Raw::U16(0x1234)));
        let i = point("i", Table::Holding, 0, DataType::I32);
        assert_eq!(decode_words(&i, &[0xFFFF, 0xFFFE]), Ok(Raw::I32(-2)));
        let s = point("s", Table::Holding, 0, DataType::I16);
        assert_eq!(decode_words(&s, &[0xFF9C]), Ok(Raw::I16(-100)));
    }

    #[test]
    fn scale_and_offset_apply_to_every_element() {
        // PT495: %LEL ×10. TOC-635: raw/10 − 10, 8 channels.
        let mut lel = point("lel", Table::Holding, 0, DataType::U16);
        lel.scale = 0.1;
        let mut ch = point("channel", Table::Input, 1, DataType::U16);
        ch.scale = 0.1;
        ch.offset = -10.0;
        ch.count = 3;
        let p = profile(vec![lel, ch]);
        let v = values(
            &p,
            vec![Data::Words(vec![100, 200, 400]), Data::Words(vec![300])],
        );
        // Reads are in table order: input first.
        let got: Vec<(String, f64)> = v
            .iter()
            .map(|x| (x.name(&p), (x.value * 10.0).round() / 10.0))
            .collect();
        assert_eq!(
            got,
            vec![
                ("channel[1]".into(), 0.0),
                ("channel[2]".into(), 10.0),
                ("channel[3]".into(), 30.0),
                ("lel".into(), 30.0)
            ]
        );
        assert_eq!(v[2].address, 3);
    }

    #[test]
    fn a_short_answer_is_a_decode_error_not_a_panic() {
        let mut ch = point("channel", Table::Input, 0, DataType::U16);
        ch.count = 4;
        let p = profile(vec![ch]);
        let reads = super::super::plan::plan(&p.points);
        assert!(decode(&p, &reads, &[Data::Words(vec![1, 2])]).is_err());
        assert!(decode(&p, &reads, &[]).is_err());
        assert!(decode(&p, &reads, &[Data::Bits(vec![true])]).is_err());
    }

    #[test]
    fn status_bits_raise_on_rising_and_clear_on_falling_edges() {
        let mut status = point("status", Table::Input, 0, DataType::U16);
        status.bits = vec![bit(0, "LEAK.ALARM"), bit(1, "LEAK.CABLE_BREAK")];
        status.bits[0].value_point = Some("distance".into());
        let mut distance = point("distance", Table::Input, 1, DataType::U16);
        distance.unit = "m".into();
        let p = profile(vec![status, distance]);
        let mut t = Tracker::new(&p);
        // Quiet at start: nothing (no "cleared" for what was never active).
        assert!(t
            .observe(&p, &values(&p, vec![Data::Words(vec![0, 0])]), 0)
            .is_empty());
        let e = t.observe(&p, &values(&p, vec![Data::Words(vec![0b01, 12])]), 1);
        assert_eq!(codes(&e), vec![("LEAK.ALARM".into(), EventState::Active)]);
        assert_eq!(e[0].value, Some((12.0, "m".into())));
        assert_eq!((e[0].table, e[0].address), (Table::Input, 0));
        // Still leaking: no repeat. Cable breaks too.
        let e = t.observe(&p, &values(&p, vec![Data::Words(vec![0b11, 12])]), 2);
        assert_eq!(
            codes(&e),
            vec![("LEAK.CABLE_BREAK".into(), EventState::Active)]
        );
        let e = t.observe(&p, &values(&p, vec![Data::Words(vec![0, 0])]), 3);
        assert_eq!(
            codes(&e),
            vec![
                ("LEAK.ALARM".into(), EventState::Cleared),
                ("LEAK.CABLE_BREAK".into(), EventState::Cleared)
            ]
        );
    }

    #[test]
    fn a_condition_present_at_the_first_poll_is_reported() {
        let mut status = point("detector", Table::Holding, 0, DataType::U16);
        status.count = 2;
        status.bits = vec![bit(1, "SMOKE.ALARM"), bit(0, "SMOKE.TEST")];
        status.bits[1].invert = true; // GB/T 26875: bit 0 is 1 when normal
        let p = profile(vec![status]);
        let mut t = Tracker::new(&p);
        let e = t.observe(&p, &values(&p, vec![Data::Words(vec![0b01, 0b11])]), 0);
        assert_eq!(codes(&e), vec![("SMOKE.ALARM".into(), EventState::Active)]);
        assert_eq!((e[0].element, e[0].address), (1, 1));
        // Detector 1 goes to test (bit 0 drops): a momentary code, raised once, never cleared.
        let e = t.observe(&p, &values(&p, vec![Data::Words(vec![0b00, 0b11])]), 1);
        assert_eq!(codes(&e), vec![("SMOKE.TEST".into(), EventState::Active)]);
        let e = t.observe(&p, &values(&p, vec![Data::Words(vec![0b01, 0b11])]), 2);
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn masks_match_multi_bit_fields() {
        let mut w = point("point", Table::Holding, 0, DataType::U16);
        w.bits = vec![BitField {
            bit: None,
            mask: Some(0x08FF),
            equals: Some(0x0801),
            ..bit(0, "FIRE.ALARM")
        }];
        let p = profile(vec![w]);
        let mut t = Tracker::new(&p);
        assert!(t
            .observe(&p, &values(&p, vec![Data::Words(vec![0x0800])]), 0)
            .is_empty());
        let e = t.observe(&p, &values(&p, vec![Data::Words(vec![0x0C01])]), 1);
        assert_eq!(codes(&e), vec![("FIRE.ALARM".into(), EventState::Active)]);
    }

    #[test]
    fn thresholds_have_hysteresis() {
        let mut lel = point("lel", Table::Holding, 0, DataType::U16);
        lel.scale = 0.1;
        lel.unit = "%LEL".into();
        lel.thresholds = vec![
            Threshold {
                above: 10.0,
                hysteresis: 1.0,
                code: "GAS.AL1".into(),
            },
            Threshold {
                above: 25.0,
                hysteresis: 2.0,
                code: "GAS.AL2".into(),
            },
        ];
        let p = profile(vec![lel]);
        let mut t = Tracker::new(&p);
        let mut step = |raw: u16, now: i64| {
            let v = values(&p, vec![Data::Words(vec![raw])]);
            codes(&t.observe(&p, &v, now))
        };
        assert!(step(50, 0).is_empty());
        assert_eq!(
            step(300, 1),
            vec![
                ("GAS.AL1".into(), EventState::Active),
                ("GAS.AL2".into(), EventState::Active)
            ]
        );
        // 24 %LEL: below AL2 but within its hysteresis: nothing.
        assert!(step(240, 2).is_empty());
        assert_eq!(step(220, 3), vec![("GAS.AL2".into(), EventState::Cleared)]);
        assert!(step(249, 4).is_empty());
        assert_eq!(step(250, 5), vec![("GAS.AL2".into(), EventState::Active)]);
        assert_eq!(
            step(80, 6),
            vec![
                ("GAS.AL1".into(), EventState::Cleared),
                ("GAS.AL2".into(), EventState::Cleared)
            ]
        );
    }

    #[test]
    fn reports_respect_deadband_and_max_interval() {
        let mut d = point("distance", Table::Input, 0, DataType::U16);
        d.report = Some(Report {
            deadband: 5.0,
            max_interval: Some(Duration::from_secs(60)),
        });
        let p = profile(vec![d]);
        let mut t = Tracker::new(&p);
        let mut step = |raw: u16, now: i64| {
            let v = values(&p, vec![Data::Words(vec![raw])]);
            t.observe(&p, &v, now)
                .iter()
                .map(|e| e.value.as_ref().map(|v| v.0))
                .collect::<Vec<_>>()
        };
        assert_eq!(step(100, 0), vec![Some(100.0)], "first value is reported");
        assert!(step(104, 1_000).is_empty(), "within the deadband");
        assert!(step(95, 2_000).is_empty(), "measured from the last report");
        assert_eq!(step(106, 3_000), vec![Some(106.0)]);
        assert!(step(106, 62_999).is_empty());
        assert_eq!(step(106, 63_000), vec![Some(106.0)], "max interval");
    }

    #[test]
    fn bool_points_report_changes() {
        let mut c = point("closed", Table::Discrete, 0, DataType::Bool);
        c.report = Some(Report {
            deadband: 0.0,
            max_interval: None,
        });
        let p = profile(vec![c]);
        let mut t = Tracker::new(&p);
        assert_eq!(
            t.observe(&p, &values(&p, vec![Data::Bits(vec![false])]), 0)
                .len(),
            1
        );
        assert!(t
            .observe(&p, &values(&p, vec![Data::Bits(vec![false])]), 1)
            .is_empty());
        let e = t.observe(&p, &values(&p, vec![Data::Bits(vec![true])]), 2);
        assert_eq!(e[0].value, Some((1.0, String::new())));
    }

    #[test]
    fn nan_values_raise_nothing() {
        let mut d = point("d", Table::Input, 0, DataType::F32);
        d.thresholds = vec![Threshold {
            above: 1.0,
            hysteresis: 0.0,
            code: "GAS.AL1".into(),
        }];
        d.report = Some(Report {
            deadband: 0.0,
            max_interval: None,
        });
        let p = profile(vec![d]);
        let mut t = Tracker::new(&p);
        let nan = f32::NAN.to_bits();
        let v = values(&p, vec![Data::Words(vec![(nan >> 16) as u16, nan as u16])]);
        assert!(t.observe(&p, &v, 0).is_empty());
    }
}
