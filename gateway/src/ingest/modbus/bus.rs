//! The bus scheduler: one task per bus owns its [`Link`] and runs every transaction of
//! the bus, one at a time: the polls of its devices and the writes asked for through
//! [`super::ModbusHandle`].
//!
//! - **Order.** Writes first (linkage is urgent), between transactions. Then the device
//!   whose poll is due earliest; a device polled goes to the back (its next due time is
//!   its previous one plus its interval, or now if the bus is behind), so an overloaded
//!   bus serves its devices round-robin.
//! - **A failing device** is polled at its interval doubled per consecutive failure, up
//!   to `backoff_max`, and the rest of its reads are skipped: a dead unit costs the bus
//!   one timeout per backoff period, not per poll interval.
//! - **Health.** `offline_after` failed polls in a row raise `DEV.OFFLINE`; the next
//!   answer raises `DEV.ONLINE`.
//! - **Events** go to the store with `append_nowait`: the poller does not wait for the
//!   group commit (which would hold up the bus by an fsync per event). Nothing is lost
//!   that a restart does not restore: a condition still present is raised again by the
//!   first poll after a restart. When the store's queue is full the poller waits.
//! - **Never dies.** Every error is logged, counted and backed off. Only a bug (a panic)
//!   ends the task; [`supervise`] then logs it as an ERROR and restarts it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::time::Instant;
use tokio_modbus::prelude::{Request, Response};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use estate_config::{BusConfig, DeviceModbusConfig, Profile, Table};
use estate_protocols::model::{DeviceKind, Event, EventState, Location, Reading, Source};
use estate_protocols::taxonomy;

use super::decode::{self, Data, Emit, Tracker};
use super::health::{poll_delay, Health, Transition};
use super::link::{Link, LinkChange, TxError};
use super::plan::{plan, ReadRequest};
use super::{Write, WriteOutcome};
use crate::events::now_ms;
use crate::store::StoreHandle;
use crate::telemetry::{
    Metrics, ModbusBusLabel, ModbusDeviceLabel, ModbusErrorLabel, ModbusWriteLabel,
};

/// One device as the scheduler sees it.
#[derive(Debug, Clone)]
pub(crate) struct DeviceSpec {
    pub id: String,
    pub kind: DeviceKind,
    pub location: Location,
    pub modbus: DeviceModbusConfig,
    pub profile: Arc<Profile>,
    pub reads: Vec<ReadRequest>,
}

impl DeviceSpec {
    pub fn new(
        id: &str,
        kind: DeviceKind,
        location: &Location,
        modbus: &DeviceModbusConfig,
        profile: Arc<Profile>,
    ) -> DeviceSpec {
        DeviceSpec {
            id: id.to_owned(),
            kind,
            location: location.clone(),
            modbus: modbus.clone(),
            reads: plan(&profile.points),
            profile,
        }
    }
}

/// One bus and its devices.
#[derive(Debug)]
pub(crate) struct BusSpec {
    pub config: BusConfig,
    pub devices: Vec<DeviceSpec>,
}

/// A write waiting for its turn on the bus.
#[derive(Debug)]
pub(crate) struct WriteCommand {
    /// Index into the bus's devices.
    pub device: usize,
    pub write: Write,
    pub reply: oneshot::Sender<Result<WriteOutcome, TxError>>,
}

/// What the bus task needs from the rest of the gateway.
#[derive(Debug, Clone)]
pub(crate) struct Env {
    pub gateway_id: String,
    pub estate_id: String,
    pub store: StoreHandle,
    pub metrics: Arc<Metrics>,
}

/// Runs the bus task, restarting it if it panics, until `shutdown`.
pub(crate) async fn supervise(
    spec: Arc<BusSpec>,
    commands: mpsc::Receiver<WriteCommand>,
    env: Env,
    shutdown: CancellationToken,
) {
    // Shared so that a restarted task takes over the same queue (the lock is released
    // when a panicking task unwinds).
    let commands = Arc::new(Mutex::new(commands));
    // After a restart `/healthz` says `degraded` (key `stage.modbus`, shared by every
    // bus) until the bus has run this long without failing again.
    const HEALTHY_AFTER: Duration = Duration::from_secs(600);
    let mut restarted = false;
    loop {
        let mut task = tokio::spawn(run_bus(
            spec.clone(),
            commands.clone(),
            env.clone(),
            shutdown.clone(),
        ));
        let joined = loop {
            tokio::select! {
                r = &mut task => break r,
                _ = tokio::time::sleep(HEALTHY_AFTER), if restarted => {
                    restarted = false;
                    env.metrics.health.clear("stage.modbus");
                }
            }
        };
        match joined {
            Ok(()) => return,
            Err(err) => {
                error!(bus = %spec.config.name, error = %err, "Modbus bus task failed (a bug); restarting it in 1s.");
                env.metrics.health.set(
                    "stage.modbus",
                    crate::health::Level::Failed,
                    format!(
                        "Modbus bus {} failed ({err}); restarting it in 1s",
                        spec.config.name
                    ),
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                env.metrics
                    .stage_restarts
                    .get_or_create(&crate::telemetry::StageLabel { stage: "modbus" })
                    .inc();
                env.metrics.health.set(
                    "stage.modbus",
                    crate::health::Level::Degraded,
                    format!(
                        "Modbus bus {} restarted after a failure ({err})",
                        spec.config.name
                    ),
                );
                restarted = true;
            }
        }
    }
}

/// Per device: schedule, health, what was last seen, and its metric handles.
struct DeviceRt {
    due: Instant,
    health: Health,
    tracker: Tracker,
    label: ModbusDeviceLabel,
}

async fn run_bus(
    spec: Arc<BusSpec>,
    commands: Arc<Mutex<mpsc::Receiver<WriteCommand>>>,
    env: Env,
    shutdown: CancellationToken,
) {
    let mut commands = commands.lock().await;
    let bus_label = ModbusBusLabel {
        bus: spec.config.name.clone(),
    };
    let mut link = {
        let metrics = env.metrics.clone();
        let label = bus_label.clone();
        Link::new(&spec.config).on_change(move |c| {
            let connected = metrics.modbus_bus_connected.get_or_create(&label);
            match c {
                LinkChange::Opened => {
                    connected.set(1);
                    metrics.modbus_connects.get_or_create(&label).inc();
                }
                LinkChange::Closed => {
                    connected.set(0);
                }
            }
        })
    };
    let start = Instant::now();
    let n = spec.devices.len().max(1) as u32;
    let mut devices: Vec<DeviceRt> = spec
        .devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let label = ModbusDeviceLabel {
                bus: spec.config.name.clone(),
                device: d.id.clone(),
            };
            env.metrics
                .modbus_device_online
                .get_or_create(&label)
                .set(1);
            DeviceRt {
                // Spread the first polls over one interval.
                due: start + d.modbus.poll_interval / n * i as u32,
                health: Health::default(),
                tracker: Tracker::new(&d.profile),
                label,
            }
        })
        .collect();
    info!(bus = %spec.config.name, link = %super::link::describe(&spec.config), devices = spec.devices.len(), "Modbus bus starting.");
    let mut commands_open = true;
    loop {
        let next = devices
            .iter()
            .enumerate()
            .min_by_key(|(_, d)| d.due)
            .map(|(i, d)| (i, d.due));
        let poll_at = next.map(|(_, due)| due);
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            cmd = commands.recv(), if commands_open => match cmd {
                Some(cmd) => {
                    tokio::select! {
                        biased;
                        // The dropped reply tells the writer `TxError::Stopped`.
                        _ = shutdown.cancelled() => break,
                        _ = write(&spec, &mut link, &env, cmd) => {}
                    }
                }
                None => commands_open = false,
            },
            _ = sleep_until_opt(poll_at) => {
                let Some((i, _)) = next else { continue };
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break,
                    _ = poll(&spec.config.name, &spec.devices[i], &mut devices[i], &mut link, &env) => {}
                }
            }
        }
    }
    link.close();
    info!(bus = %spec.config.name, "Modbus bus stopped.");
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn read_request(r: &ReadRequest) -> Request<'static> {
    match r.table {
        Table::Coil => Request::ReadCoils(r.address, r.count),
        Table::Discrete => Request::ReadDiscreteInputs(r.address, r.count),
        Table::Input => Request::ReadInputRegisters(r.address, r.count),
        Table::Holding => Request::ReadHoldingRegisters(r.address, r.count),
    }
}

/// The data of a read's answer, checked against the request.
pub fn read_data(r: &ReadRequest, response: Response) -> Result<Data, TxError> {
    let n = usize::from(r.count);
    let data = match (r.table, response) {
        (Table::Coil, Response::ReadCoils(mut bits))
        | (Table::Discrete, Response::ReadDiscreteInputs(mut bits)) => {
            // Bits come in whole bytes; the padding is not data.
            if bits.len() < n {
                return Err(TxError::Protocol(format!(
                    "asked for {n} bits at {} {}, got {}",
                    r.table,
                    r.address,
                    bits.len()
                )));
            }
            bits.truncate(n);
            Data::Bits(bits)
        }
        (Table::Input, Response::ReadInputRegisters(words))
        | (Table::Holding, Response::ReadHoldingRegisters(words)) => {
            if words.len() != n {
                return Err(TxError::Protocol(format!(
                    "asked for {n} registers at {} {}, got {}",
                    r.table,
                    r.address,
                    words.len()
                )));
            }
            Data::Words(words)
        }
        (_, other) => {
            return Err(TxError::Protocol(format!(
                "answer {other:?} does not match a {} read",
                r.table
            )))
        }
    };
    Ok(data)
}

/// Reads every planned request of `device` (stopping at the first failure) and decodes
/// them. The same path serves the poller and `modbus probe`.
pub(crate) async fn read_device(
    link: &mut Link,
    device: &DeviceSpec,
    mut on_tx: impl FnMut(Duration, Option<&TxError>),
) -> Result<Vec<decode::Value>, TxError> {
    let mut data = Vec::with_capacity(device.reads.len());
    for r in &device.reads {
        let t0 = Instant::now();
        let result = link
            .transact(device.modbus.unit, read_request(r), device.modbus.timeout)
            .await
            .and_then(|resp| read_data(r, resp));
        on_tx(t0.elapsed(), result.as_ref().err());
        data.push(result?);
    }
    decode::decode(&device.profile, &device.reads, &data).map_err(|e| TxError::Protocol(e.0))
}

async fn poll(bus: &str, spec: &DeviceSpec, rt: &mut DeviceRt, link: &mut Link, env: &Env) {
    let started = Instant::now();
    let round_trip = env
        .metrics
        .modbus_round_trip
        .get_or_create(&ModbusBusLabel {
            bus: bus.to_owned(),
        })
        .clone();
    let result = read_device(link, spec, |elapsed, _| {
        round_trip.observe(elapsed.as_secs_f64())
    })
    .await;
    let now = Instant::now();
    let mut events = Vec::new();
    match result {
        Ok(values) => {
            env.metrics.modbus_polls.get_or_create(&rt.label).inc();
            env.metrics
                .modbus_poll_duration
                .get_or_create(&rt.label)
                .observe(started.elapsed().as_secs_f64());
            let now_ms = now_ms();
            for emit in rt.tracker.observe(&spec.profile, &values, now_ms) {
                events.push(event_from(env, bus, spec, &emit, now_ms));
            }
            if rt.health.success() == Some(Transition::Online) {
                info!(bus, device_id = %spec.id, "Modbus device answers again.");
                env.metrics
                    .modbus_device_online
                    .get_or_create(&rt.label)
                    .set(1);
                events.push(health_event(
                    env,
                    bus,
                    spec,
                    "DEV.ONLINE",
                    "answers again".into(),
                ));
            }
            rt.due = (rt.due + spec.modbus.poll_interval).max(now);
        }
        Err(err) => {
            env.metrics
                .modbus_errors
                .get_or_create(&ModbusErrorLabel {
                    bus: bus.to_owned(),
                    device: spec.id.clone(),
                    kind: err.kind(),
                })
                .inc();
            let transition = rt.health.failure(spec.modbus.offline_after);
            let delay = poll_delay(
                spec.modbus.poll_interval,
                rt.health.failures().saturating_sub(1),
                spec.modbus.backoff_max,
            );
            if rt.health.failures() == 1 || transition.is_some() {
                warn!(bus, device_id = %spec.id, error = %err, failures = rt.health.failures(), retry_in = ?delay, "Modbus poll failed; backing off.");
            } else {
                debug!(bus, device_id = %spec.id, error = %err, failures = rt.health.failures(), retry_in = ?delay, "Modbus poll failed again.");
            }
            if transition == Some(Transition::Offline) {
                env.metrics
                    .modbus_device_online
                    .get_or_create(&rt.label)
                    .set(0);
                let detail = format!(
                    "{} failed polls in a row; last: {err}",
                    rt.health.failures()
                );
                events.push(health_event(env, bus, spec, "DEV.OFFLINE", detail));
            }
            rt.due = now + delay;
        }
    }
    for event in events {
        if env.store.append_nowait(event).await.is_err() {
            // Only while the gateway stops: the writer is gone.
            warn!(bus, device_id = %spec.id, "Store closed; Modbus event not stored.");
        }
    }
}

async fn write(spec: &BusSpec, link: &mut Link, env: &Env, cmd: WriteCommand) {
    let Some(device) = spec.devices.get(cmd.device) else {
        let _ = cmd
            .reply
            .send(Err(TxError::UnknownDevice(format!("#{}", cmd.device))));
        return;
    };
    let result = write_once(link, device, cmd.write).await;
    let label = ModbusWriteLabel {
        bus: spec.config.name.clone(),
        device: device.id.clone(),
        result: match &result {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        },
    };
    env.metrics.modbus_writes.get_or_create(&label).inc();
    match &result {
        Ok(o) => {
            info!(bus = %spec.config.name, device_id = %device.id, write = ?cmd.write, round_trip = ?o.round_trip, "Modbus write done.")
        }
        Err(e) => {
            warn!(bus = %spec.config.name, device_id = %device.id, write = ?cmd.write, error = %e, "Modbus write failed.")
        }
    }
    let _ = cmd.reply.send(result);
}

/// One write through `link` (the scheduler's, or the CLI's own).
pub(crate) async fn write_once(
    link: &mut Link,
    device: &DeviceSpec,
    w: Write,
) -> Result<WriteOutcome, TxError> {
    let request = match w {
        Write::Coil { address, value } => Request::WriteSingleCoil(address, value),
        Write::Register { address, value } => Request::WriteSingleRegister(address, value),
    };
    let t0 = Instant::now();
    let response = link
        .transact(device.modbus.unit, request, device.modbus.timeout)
        .await?;
    let echoed = match (w, response) {
        (Write::Coil { address, value }, Response::WriteSingleCoil(a, v)) => {
            a == address && v == value
        }
        (Write::Register { address, value }, Response::WriteSingleRegister(a, v)) => {
            a == address && v == value
        }
        _ => false,
    };
    if !echoed {
        return Err(TxError::Protocol(
            "the answer does not echo the write".into(),
        ));
    }
    Ok(WriteOutcome {
        round_trip: t0.elapsed(),
    })
}

fn reference(bus: &str, spec: &DeviceSpec, table: Table, address: u16) -> String {
    format!("{bus}/{}/{table}:{address}", spec.modbus.unit)
}

fn base_event(
    env: &Env,
    spec: &DeviceSpec,
    code: &str,
    state: EventState,
    reference: String,
    now_ms: i64,
) -> Event {
    let severity = taxonomy::lookup(code)
        .map(|info| taxonomy::default_severity(info, Some(spec.kind)))
        .unwrap_or(estate_protocols::model::Severity::Minor);
    Event {
        seq: 0,
        event_id: ulid::Ulid::new().to_string(),
        gateway_id: env.gateway_id.clone(),
        estate_id: env.estate_id.clone(),
        device_id: spec.id.clone(),
        device_kind: Some(spec.kind),
        code: code.to_owned(),
        severity,
        state,
        location: spec.location.clone(),
        device_time_ms: None,
        gateway_time_ms: now_ms,
        value: None,
        source: Source {
            protocol: "modbus".into(),
            reference,
        },
        raw: bytes::Bytes::new(),
        raw_truncated: false,
        registered: true,
        device_seq: None,
        alert: None,
    }
}

fn event_from(env: &Env, bus: &str, spec: &DeviceSpec, emit: &Emit, now_ms: i64) -> Event {
    let mut e = base_event(
        env,
        spec,
        &emit.code,
        emit.state,
        reference(bus, spec, emit.table, emit.address),
        now_ms,
    );
    e.value = emit.value.as_ref().map(|(value, unit)| Reading {
        value: *value,
        unit: unit.clone(),
    });
    let point = spec.profile.points.get(emit.point).map(|p| {
        if p.count > 1 {
            format!("{}[{}]", p.name, emit.element + 1)
        } else {
            p.name.clone()
        }
    });
    e.raw = bytes::Bytes::from(
        serde_json::json!({
            "point": point,
            "raw": emit.raw.bits(),
            "detail": emit.detail,
        })
        .to_string(),
    );
    e
}

fn health_event(env: &Env, bus: &str, spec: &DeviceSpec, code: &str, detail: String) -> Event {
    let reference = format!("{bus}/{}", spec.modbus.unit);
    // DEV.OFFLINE is a condition (active until the device answers: DEV.ONLINE ends it).
    let mut e = base_event(env, spec, code, EventState::Active, reference, now_ms());
    e.raw = bytes::Bytes::from(serde_json::json!({ "detail": detail }).to_string());
    e
}
