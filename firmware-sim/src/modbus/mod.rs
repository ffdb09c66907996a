//! Simulated Modbus field devices (profiles in `config/profiles/`): a rope leak detector, two gas
//! detectors, a fire-panel gateway, a GB/T 26875.3 smoke loop, a valve and a sounder,
//! served over Modbus TCP or RTU over TCP, with scriptable state and faults.
//!
//! ## Layout
//!
//! - [`frame`] — pure: request parsing, responses, MBAP and RTU (CRC-16) framing.
//! - [`device`] — pure: each product's register map as a function of its state, with the
//!   products' quirks (word-swapped f32, ×10 scaling, raw/10 − 10, status bit words).
//! - [`server`] — a [`Bus`]: one TCP listener serving one or more unit ids, injecting
//!   faults per unit and recording every request and any overlap of transactions.
//! - [`fleet`] — [`SimFleet`]: buses started from [`BusSpec`]s, a [`SimHandle`] per
//!   device (`raise_leak`, `set_gas_lel`, `smoke_fire`, `fault`, `set_delay`, …), the
//!   demo fleet, and the line commands of `estate-sim modbus`.
//!
//! ## Data flow
//!
//! ```text
//! gateway ─request─▶ Bus (listener) ─▶ per connection: reader ─▶ record arrival (overlap?)
//!                                                   └▶ responder: delay, faults, SimDevice
//!         ◀─answer (or silence, garbage, exception, closed connection)─┘
//! test / stdin ─▶ SimHandle ─▶ SimDevice state + Faults
//! ```
//!
//! A bus is one listener: with several unit ids behind it, it is an RS-485 line behind a
//! serial device server (use [`Framing::RtuOverTcp`]); with one, a Modbus TCP device.

pub mod device;
pub mod fleet;
pub mod frame;
pub mod server;

pub use device::{DeviceType, SimDevice};
pub use fleet::{demo_fleet, BusSpec, SimFleet, SimHandle};
pub use frame::Table;
pub use server::{Bus, BusStats, Faults, Framing, Outcome, RequestRecord, Violation};
