//! Modbus answers, as the poller handles them, for each shipped device profile.
//!
//! Input: a profile selector byte, then polls until the input ends. A poll is a clock
//! step byte (seconds), then for each planned read a shape byte and the answer's data:
//! bit 7 answers with the function given by bits 0–1 (whatever was asked; bit 5 makes it
//! a write echo), bit 6 makes the length `count + (bits 0–3) − 8`; otherwise the answer
//! is the right function and length. Registers are 2 bytes (big-endian), bits 8 a byte.

use std::sync::OnceLock;

use estate_config::{Config, Profile, Table};
use estate_gateway::ingest::modbus::decode::{self, Data, Tracker};
use estate_gateway::ingest::modbus::fuzzing::read_data;
use estate_gateway::ingest::modbus::plan::{plan, ReadRequest};
use estate_protocols::taxonomy;
use tokio_modbus::prelude::Response;

/// The shipped profiles (`config/profiles/*.toml`), loaded once.
pub fn profiles() -> &'static [Profile] {
    static PROFILES: OnceLock<Vec<Profile>> = OnceLock::new();
    PROFILES.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../config");
        let mut files: Vec<String> = std::fs::read_dir(format!("{dir}/profiles"))
            .expect("config/profiles")
            .filter_map(|e| e.ok())
            .map(|e| {
                format!(
                    "{:?}",
                    format!("profiles/{}", e.file_name().to_string_lossy())
                )
            })
            .filter(|f| f.ends_with(".toml\""))
            .collect();
        files.sort();
        let text = format!(
            "[gateway]\nid = \"gw-fuzz\"\nestate_id = \"{}\"\n[modbus]\nprofile_files = [{}]\n",
            crate::ESTATE,
            files.join(", ")
        );
        let cfg = Config::from_toml_str(&text, &format!("{dir}/fuzz.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!cfg.modbus.profiles.is_empty());
        cfg.modbus.profiles
    })
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
}

fn answer(r: &ReadRequest, input: &mut Input<'_>) -> Response {
    let shape = input.byte();
    let n = usize::from(r.count);
    let len = if shape & 0x40 != 0 {
        (n + usize::from(shape & 0x0f)).saturating_sub(8)
    } else {
        n
    };
    let table = if shape & 0x80 != 0 {
        if shape & 0x20 != 0 {
            return Response::WriteSingleCoil(r.address, true);
        }
        [Table::Coil, Table::Discrete, Table::Input, Table::Holding][usize::from(shape & 3)]
    } else {
        r.table
    };
    let bits = |input: &mut Input<'_>| -> Vec<bool> {
        // Bits come in whole bytes, as on the wire.
        (0..len.div_ceil(8))
            .flat_map(|_| {
                let b = input.byte();
                (0..8).map(move |i| b & (1 << i) != 0)
            })
            .collect()
    };
    let words = |input: &mut Input<'_>| -> Vec<u16> {
        (0..len)
            .map(|_| u16::from_be_bytes([input.byte(), input.byte()]))
            .collect()
    };
    match table {
        Table::Coil => Response::ReadCoils(bits(input)),
        Table::Discrete => Response::ReadDiscreteInputs(bits(input)),
        Table::Input => Response::ReadInputRegisters(words(input)),
        Table::Holding => Response::ReadHoldingRegisters(words(input)),
    }
}

/// Polls one profile with the answers in `data`.
pub fn polls(data: &[u8]) {
    let mut input = Input(data);
    let all = profiles();
    let profile = &all[usize::from(input.byte()) % all.len()];
    let reads = plan(&profile.points);
    for r in &reads {
        assert!(r.count > 0 && r.count <= r.table.max_read());
        assert!(r.end() <= 65_536);
    }
    let elements: usize = reads
        .iter()
        .flat_map(|r| &r.points)
        .map(|&i| usize::from(profile.points[i].count))
        .sum();
    let mut tracker = Tracker::new(profile);
    let mut now = crate::T0_MS;
    while !input.0.is_empty() {
        now += 1000 * (1 + i64::from(input.byte()));
        let mut answers: Vec<Data> = Vec::with_capacity(reads.len());
        for r in &reads {
            match read_data(r, answer(r, &mut input)) {
                Ok(d) => {
                    match &d {
                        Data::Bits(b) => assert_eq!(b.len(), usize::from(r.count)),
                        Data::Words(w) => assert_eq!(w.len(), usize::from(r.count)),
                    }
                    answers.push(d);
                }
                Err(_) => break,
            }
        }
        if answers.len() < reads.len() {
            continue; // a failed poll: the poller backs off
        }
        let values = decode::decode(profile, &reads, &answers)
            .expect("checked answers to planned reads decode");
        assert_eq!(values.len(), elements);
        for v in &values {
            let p = &profile.points[v.point];
            assert!(v.element < p.count);
            assert_eq!(v.table, p.table);
        }
        for emit in tracker.observe(profile, &values, now) {
            assert!(taxonomy::lookup(&emit.code).is_some(), "code {}", emit.code);
            assert!(emit.point < profile.points.len());
            if let Some((value, _)) = &emit.value {
                assert!(value.is_finite(), "{} with value {value}", emit.code);
            }
        }
    }
}
