//! Modbus ingest: the gateway as a Modbus master (TCP, RTU on RS-485, RTU over TCP).
//!
//! ```text
//!  config ─▶ Modbus::new ─▶ per bus: supervise ─▶ run_bus (one task, owns the Link)
//!                                                    │ due device ─▶ plan ─▶ Link::transact ─▶ decode ─▶ Tracker ─▶ StoreHandle::append_nowait
//!  ModbusHandle::write ──[bounded queue per bus]─────┘ (writes go first, between transactions)
//! ```
//!
//! Strict layers, each testable on its own:
//! - [`plan`] — pure: a profile's points → the fewest reads (adjacent points merged up to
//!   125 registers / 2000 bits).
//! - [`decode`] — pure: answers → typed values (byte/word order, scale, offset) → events
//!   (bit edges, thresholds with hysteresis, deadband / max-interval reports). No I/O,
//!   no clock.
//! - [`health`] — pure: consecutive failures → `DEV.OFFLINE` / `DEV.ONLINE`; the backoff of
//!   a failing device.
//! - [`link`] — the one connection of a bus and one transaction at a time on it: the
//!   inter-frame gap, per-device timeouts, reconnect with backoff, and exceptions kept
//!   apart from transport failures.
//! - `bus` — the scheduler task per bus and its supervisor.
//! - [`cli`] — `estate-gateway modbus probe` and `modbus write`, through the same plan →
//!   link → decode path, without a running daemon.
//!
//! Events carry `source.protocol = "modbus"` and `source.reference = "bus/unit/table:address"`
//! (`"bus/unit"` for `DEV.OFFLINE` / `DEV.ONLINE`).

mod bus;
pub mod cli;
pub mod decode;
pub mod health;
pub mod link;
pub mod plan;

/// Entry points for the fuzz targets in `fuzz/` (the same functions the poller uses);
/// not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use super::bus::read_data;
}

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::info;

use estate_config::Config;

/// The write a device output takes ([`crate::output`]).
pub use crate::output::Write;
use crate::store::StoreHandle;
use crate::telemetry::Metrics;
use bus::{BusSpec, DeviceSpec, Env, WriteCommand};
pub use link::TxError;

/// Writes queued per bus before [`ModbusHandle::write`] waits for room.
const WRITE_QUEUE: usize = 32;

/// A write the device confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOutcome {
    /// From sending the request to its answer (not counting the wait for the bus).
    pub round_trip: Duration,
}

/// A configuration the Modbus stage cannot run (config validation rules these out; this
/// guards a `Config` built in code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModbusError {
    /// A Modbus device names a bus that is not in `[[modbus.buses]]`.
    #[error("device {device:?}: unknown Modbus bus {bus:?}")]
    UnknownBus {
        /// The device's id.
        device: String,
        /// The bus it names.
        bus: String,
    },
    /// A Modbus device names a profile that was not loaded.
    #[error("device {device:?}: unknown Modbus profile {profile:?}")]
    UnknownProfile {
        /// The device's id.
        device: String,
        /// The profile it names.
        profile: String,
    },
    /// The device id asked for (a CLI argument) is not a configured Modbus device.
    #[error("no Modbus device {0:?} is configured")]
    UnknownDevice(String),
}

/// Handle for writing to Modbus devices through their bus's scheduler. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ModbusHandle {
    /// device id → (its bus's queue, its index on the bus). The bus task holds the
    /// receiving end; the queue is bounded ([`WRITE_QUEUE`]) and a full one makes
    /// `write` wait (a linkage command is never dropped).
    devices: Arc<HashMap<String, (mpsc::Sender<WriteCommand>, usize)>>,
}

impl ModbusHandle {
    /// Writes one coil or register on a configured Modbus device, in turn with the
    /// polls of its bus (ahead of them), and returns what the device said. Waits while
    /// the bus's write queue is full; wrap it in a timeout if the caller cannot wait.
    pub async fn write(&self, device_id: &str, write: Write) -> Result<WriteOutcome, TxError> {
        let (tx, device) = self
            .devices
            .get(device_id)
            .ok_or_else(|| TxError::UnknownDevice(device_id.to_owned()))?;
        let (reply, rx) = oneshot::channel();
        tx.send(WriteCommand {
            device: *device,
            write,
            reply,
        })
        .await
        .map_err(|_| TxError::Stopped)?;
        rx.await.map_err(|_| TxError::Stopped)?
    }

    /// The ids of the Modbus devices this handle can write to.
    pub fn device_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.devices.keys().cloned().collect();
        ids.sort();
        ids
    }
}

/// The Modbus stage, built from the config and consumed by [`Modbus::run`].
#[derive(Debug)]
pub struct Modbus {
    buses: Vec<(Arc<BusSpec>, mpsc::Receiver<WriteCommand>)>,
    handle: ModbusHandle,
    gateway_id: String,
    estate_id: String,
}

impl Modbus {
    /// Builds the buses (those with at least one device) from the config.
    pub fn new(cfg: &Config) -> Result<Modbus, ModbusError> {
        let mut by_bus: Vec<(estate_config::BusConfig, Vec<DeviceSpec>)> = Vec::new();
        for d in &cfg.devices {
            let Some(m) = &d.modbus else { continue };
            let bus = cfg
                .modbus
                .bus(&m.bus)
                .ok_or_else(|| ModbusError::UnknownBus {
                    device: d.id.clone(),
                    bus: m.bus.clone(),
                })?;
            let profile =
                cfg.modbus
                    .profile(&m.profile)
                    .ok_or_else(|| ModbusError::UnknownProfile {
                        device: d.id.clone(),
                        profile: m.profile.clone(),
                    })?;
            let spec = DeviceSpec::new(&d.id, d.kind, &d.location, m, Arc::new(profile.clone()));
            match by_bus.iter_mut().find(|(b, _)| b.name == bus.name) {
                Some((_, devices)) => devices.push(spec),
                None => by_bus.push((bus.clone(), vec![spec])),
            }
        }
        let mut buses = Vec::new();
        let mut devices = HashMap::new();
        for (config, specs) in by_bus {
            let (tx, rx) = mpsc::channel(WRITE_QUEUE);
            for (i, d) in specs.iter().enumerate() {
                devices.insert(d.id.clone(), (tx.clone(), i));
            }
            buses.push((
                Arc::new(BusSpec {
                    config,
                    devices: specs,
                }),
                rx,
            ));
        }
        Ok(Modbus {
            buses,
            handle: ModbusHandle {
                devices: Arc::new(devices),
            },
            gateway_id: cfg.gateway.id.clone(),
            estate_id: cfg.gateway.estate_id.clone(),
        })
    }

    /// No bus has a device: nothing to run.
    pub fn is_empty(&self) -> bool {
        self.buses.is_empty()
    }

    /// The write handle (valid while [`Modbus::run`] runs).
    pub fn handle(&self) -> ModbusHandle {
        self.handle.clone()
    }

    /// Polls every bus until `shutdown`; each bus stops at a safe point (between
    /// transactions, or abandoning the one in flight) and drops its `StoreHandle`, so
    /// the store can drain after this returns.
    pub async fn run(self, store: StoreHandle, metrics: Arc<Metrics>, shutdown: CancellationToken) {
        let Modbus {
            buses,
            handle,
            gateway_id,
            estate_id,
        } = self;
        drop(handle);
        if buses.is_empty() {
            // Still "running" until stop: returning early would read as a stage that
            // ended (lib.rs, "Supervised stages").
            drop(store);
            shutdown.cancelled().await;
            return;
        }
        let env = Env {
            gateway_id,
            estate_id,
            store,
            metrics,
        };
        info!(buses = buses.len(), "Modbus ingest starting.");
        let mut tasks = JoinSet::new();
        for (spec, rx) in buses {
            tasks.spawn(bus::supervise(spec, rx, env.clone(), shutdown.clone()));
        }
        drop(env);
        while tasks.join_next().await.is_some() {}
        info!("Modbus ingest stopped.");
    }
}
