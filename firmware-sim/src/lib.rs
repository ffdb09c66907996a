//! # estate-sim
//!
//! The estate's other end, for demos, tests and benchmarks: simulated field devices that
//! speak our firmware's native MQTT protocol, scenarios, a load generator, and the
//! reference city-platform subscriber that checks what the gateway forwards.
//!
//! ## Layout
//!
//! - [`estate`] — the simulated estate: devices with id, kind and location
//!   ([`estate::demo_devices`] matches the shipped demo configuration).
//! - [`native`] — pure topic and JSON payload building for the native protocol.
//! - [`formats`] — pure rendering of third-party formats (zigbee2mqtt, Frigate, ISAPI-style
//!   camera alarms, access-control SDK codes, NB-IoT smoke state codes) and the scripted
//!   mixed estate ([`formats::mixed_estate`]) with the gateway config that reads it.
//! - [`scenario`] — pure: which message is the `n`-th of a run (telemetry, fire, leak,
//!   mixed, plus evenly spread `SMOKE.ALARM`s). Every message carries `seq = n`.
//! - [`publish`] — the load generator: one MQTT connection, QoS1, PUBACK flow control or
//!   a fixed rate; reports exactly which `seq`s were acknowledged ([`publish::AckTracker`]
//!   is the pure packet-id bookkeeping).
//! - [`city`] — the reference city side: [`city::Ledger`] (pure dedup / gap / lane
//!   accounting of `EventBatch`es in per-stream seq ranges; bounded unless recording)
//!   behind [`city::CityRecorder`] (the MQTT task tests use); [`city::board`] (pure: ok /
//!   degraded / dark per estate from its last messages and now); [`city::consumer`] (the
//!   long-running `estate-sim city`: board, JSON, gap repair); [`city::command`] (commands
//!   to a gateway and their results).
//! - [`fleet`] — many simulated estates' sensors from one process.
//! - [`modbus`] — simulated Modbus devices (rope leak, gas, fire panel, smoke loop, valve,
//!   sounder) over Modbus TCP and RTU over TCP, scriptable faults, and a record of every
//!   transaction (merged reads, overlapping transactions on a bus).
//!
//! ## Data flow
//!
//! ```text
//! Plan(scenario, devices) ─▶ publish::run ─QoS1 native JSON─▶ broker ─▶ gateway
//!     (seq 1..=count)          (acked_seqs)   estate/{estate}/{kind}/{id}/event
//!
//! gateway ─QoS1 EventBatch─▶ broker ─▶ city::CityRecorder ─▶ Ledger ─▶ CityReport
//!           city/v1/{estate}/{alarms|events}                  (unique, duplicates, gaps,
//!                                                               wrong lane, device_seqs)
//! ```
//!
//! A test that wants "acked means delivered" publishes with [`publish::run`] and checks
//! `CityReport::missing_device_seqs(&report.acked_seqs)` is empty.

#![warn(missing_docs)]

pub mod city;
pub mod estate;
pub mod fleet;
pub mod formats;
pub mod modbus;
pub mod native;
pub mod publish;
pub mod scenario;
