//! # estate-gateway
//!
//! The edge daemon of a residential estate: sensors in, durable store, city platform out.
//!
//! ```text
//!  sensors ──MQTT──▶ ingest ──▶ store (sled, group commit, fdatasync) ──▶ forward ──MQTT──▶ city/v1/{estate}/alarms|events
//!                      │  ack only after commit          │  the store is the outbox
//!                      └─ malformed → dead letters       └─ api: /healthz, /metrics
//! ```
//!
//! Layout (one purpose per room):
//! - [`ingest`] — MQTT subscriber with manual acks; [`ingest::formats`] holds the pure decoders;
//!   [`ingest::modbus`] polls Modbus devices (TCP, RTU, RTU over TCP) and writes for linkage;
//!   [`ingest::camera_push`] is the HTTP listener ISAPI cameras push alarms to.
//! - [`store`] — the one writer, lanes, cursors, dead letters, disk budget.
//! - [`forward`] — uplink publisher, alarms first, cursors move on PUBACK only.
//! - [`alerts`] — local alerts: the pure rule engine, durable state and audit, linkage,
//!   the alert topic; fed by the store writer with every committed event.
//! - [`link`] — the city link: retained presence and last will, `GatewayStatus`, the
//!   city's commands (seen-set, audit, resend).
//! - [`duty`] — the duty desk: what those commands ask of the people on duty and the
//!   outputs (roll calls, the city's alarm handling, broadcasts).
//! - [`auth`] — accounts with roles, console sessions, named API tokens, lockout.
//! - [`api`] — local HTTP: alerts, devices, status, roll calls, server-sent events, the
//!   console, health and Prometheus metrics.
//! - `broker` — embedded rumqttd for the demo and tests; `demo` — the whole estate on one
//!   machine, nothing installed. Both only with the `demo` cargo feature (on by default;
//!   the field build, `scripts/cross-build.sh` and the `.deb`, turns it off and links
//!   neither rumqttd nor the simulator).
//! - [`telemetry`] — metrics and logging; [`health`] — the conditions `/healthz` reports.
//! - [`systemd`] — `sd_notify` readiness and the watchdog (a no-op outside systemd).
//!
//! Shutdown order: stop ingest (acknowledging what is committed), camera push (answering
//! what is committed) and Modbus → alerts
//! handle what was committed and stop → forward gets one last attempt within the grace
//! period, while the city link answers what still runs, publishes its offline status and
//! disconnects (within 2 s) → the store writer drains, flushes, exits.
//!
//! ## Supervised stages
//!
//! No long-running task ends silently (issue 13). Each one that ends while the gateway
//! is running logs why at ERROR, sets `/healthz` to `failed` under `stage.<name>` (503),
//! and is either restarted in place or stops the gateway in order, so that the process
//! exits non-zero and systemd restarts it (`Restart=on-failure`, packaging/):
//!
//! | stage | when it ends unexpectedly | why |
//! |---|---|---|
//! | ingest (MQTT) | stops the gateway, exit 1 | its session and acks are tied to the store writer; a fresh process reconnects and the broker redelivers what was not acknowledged |
//! | camera push | stops the gateway, exit 1 (`stage.camera_push`) | it owns its listening socket; a fresh process binds it again, and cameras resend what was not answered |
//! | forward (uplink) | stops the gateway, exit 1 | its cursors live in the store; a fresh process resumes from them |
//! | city link | stops the gateway, exit 1 (`Guarded`, `stage.link`) | its session lives in the broker and its seen-set in the store; a fresh process resumes both, answers what was interrupted, and never runs a recorded command again, so a command that crashed it cannot loop ([`link`]) |
//! | alerts | **restarted in place** (250 ms, doubling to 4 s), rebuilt from the store; more than 5 failures in 10 min stop the gateway, exit 1 | local alerts come back fastest that way while ingest and forward run on (see [`alerts::supervisor`]) |
//! | Modbus bus | restarted in place after 1 s, forever | one bus's bug must not stop the others or MQTT ingest ([`ingest::modbus`]) |
//! | Modbus (all buses) | stops the gateway, exit 1 | it only returns at stop; anything else is a bug |
//! | API | stops the gateway, exit 1 | it owns the listening socket; a fresh process binds it again. One connection's panic ends only that connection |
//! | store writer | stops the gateway, exit 1 | nothing is acknowledged without it; the store is crash-safe and a fresh process reopens it |
//! | systemd watchdog | stops the gateway, exit 1 | without it systemd would kill the process anyway after `WatchdogSec`; stopping in order loses less |
//!
//! "Stops the gateway" is the usual shutdown order above; the exit status is 1 even when
//! the stage returned without an error. A panic is caught because the release profile
//! unwinds (Cargo.toml).

#![warn(missing_docs)]

pub mod alerts;
pub mod api;
pub mod auth;
#[cfg(any(test, feature = "demo"))]
pub mod broker;
#[cfg(feature = "demo")]
pub mod demo;
pub mod duty;
pub mod events;
pub mod forward;
pub mod hash;
pub mod health;
pub mod ingest;
pub mod link;
pub mod mqtt;
pub mod output;
pub mod store;
pub mod systemd;
pub mod telemetry;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use estate_config::Config;

use crate::store::StoreReader;
use crate::telemetry::Metrics;

/// Why the gateway could not start or did not stop cleanly. Each variant names what
/// failed and keeps the cause as its [`source`](std::error::Error::source): print it
/// with its chain (see [`error_chain`]).
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Opening or running the store.
    #[error("store")]
    Store(#[from] store::StoreError),
    /// Building the MQTT ingest stage.
    #[error(transparent)]
    Ingest(#[from] ingest::IngestError),
    /// Building or running forward (the uplink).
    #[error(transparent)]
    Forward(#[from] forward::ForwardError),
    /// Building the Modbus stage.
    #[error("modbus")]
    Modbus(#[from] ingest::modbus::ModbusError),
    /// Binding or setting up the API listener.
    #[error("API listener")]
    Api(#[source] std::io::Error),
    /// Binding or running the camera push listener (`ingest.camera_push.listen`).
    #[error("camera push listener {0}")]
    CameraPush(SocketAddr, #[source] std::io::Error),
    /// A stage's task panicked.
    #[error("a stage panicked")]
    Join(#[from] tokio::task::JoinError),
    /// Starting or running the alert engine.
    #[error(transparent)]
    Alerts(#[from] alerts::supervisor::SupervisorError),
    /// Building or running the city link.
    #[error(transparent)]
    Link(#[from] link::LinkError),
    /// A stage ended by itself while the gateway was running (it has been logged).
    #[error("the {0} stage stopped while the gateway was running")]
    StageEnded(&'static str),
}

/// `err` and its sources, joined by `": "` as anyhow's `{:#}` prints them, less a cause
/// that the message before it already ends with: some error types spell out their source
/// in their own message (`#[error("store: {0}")]`), which `{:#}` would print twice.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let msg = s.to_string();
        if !out.ends_with(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        source = s.source();
    }
    out
}

/// How to run, besides the config.
#[derive(Debug)]
pub struct RunOptions {
    /// The gateway's folder: the store lives in `data_dir/store`, its high-water mark and
    /// quarantined stores beside it. Must be on a local filesystem that honours fdatasync.
    pub data_dir: PathBuf,
    /// How long forward may keep delivering after shutdown is requested.
    pub grace: Duration,
    /// A listener for the API, already bound (tests and the demo bind port 0). `None`
    /// binds `api.listen` from the config.
    pub api_listener: Option<std::net::TcpListener>,
    /// Told once the store is open and every stage is started.
    pub on_ready: Option<oneshot::Sender<Running>>,
}

/// Handles to a running gateway, for the demo, benches and tests.
#[derive(Debug, Clone)]
pub struct Running {
    /// Where the local API listens (the bound port when it was asked for port 0).
    pub api_addr: SocketAddr,
    /// The metrics and health conditions `/metrics` and `/healthz` serve.
    pub metrics: Arc<Metrics>,
    /// Writes to Modbus devices (linkage), through their buses' schedulers.
    pub modbus: ingest::modbus::ModbusHandle,
    /// Read-only view of the store: cursors, backlog, epoch.
    pub reader: StoreReader,
    /// This process's ULID, sent in every `EventBatch` and `GatewayStatus`: the city
    /// tells restarts apart by it.
    pub boot_id: String,
    /// The local alerts (list, acknowledge, close, live updates).
    pub alerts: alerts::AlertsHandle,
    /// The duty desk: roll calls, the city's alarm handling, broadcasts (issue 14).
    pub duty: duty::DutyDesk,
}

impl Running {
    /// Waits until MQTT ingest is connected and subscribed: from then on the broker keeps
    /// what sensors publish for this gateway's session (before, a publish reaches no one).
    /// `Err` when that takes longer than `within`.
    pub async fn wait_subscribed(
        &self,
        within: Duration,
    ) -> Result<(), tokio::time::error::Elapsed> {
        tokio::time::timeout(within, async {
            while self.metrics.ingest_connected.get() != 1 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
    }
}

/// Runs the gateway until `shutdown` is cancelled, then stops in order and returns.
pub async fn run(
    cfg: Config,
    opts: RunOptions,
    shutdown: CancellationToken,
) -> Result<(), GatewayError> {
    let metrics = Arc::new(Metrics::new());
    let boot_id = ulid::Ulid::new().to_string();
    let mqtt_stages = MqttStages::new(&cfg, &boot_id)?;
    let modbus = ingest::modbus::Modbus::new(&cfg)?;
    let modbus_handle = modbus.handle();
    let (api_listener, api_addr) = bind_api(opts.api_listener, &cfg)?;
    let api_tls = load_api_tls(&cfg)?;
    let camera_push = bind_camera_push(&cfg)?;
    let core = open_core(&cfg, &opts.data_dir, &metrics, &modbus_handle).await?;
    let (handle, reader, duty) = (core.handle, core.reader, core.duty);
    // The first stage that ended while the gateway was running (see `guarded`).
    let ended: Ended = Arc::new(std::sync::OnceLock::new());
    let guard = Guarded::maker(&shutdown, &metrics, &ended);
    let writer = spawn_writer(guard("store writer", "stage.store"), core.writer);
    // The API outlives the stages so health stays visible while draining.
    let api_stop = CancellationToken::new();
    let api = spawn_api(
        guard("API", "stage.api"),
        api_listener,
        api::ApiState {
            tls: api_tls,
            // Live streams end as soon as the gateway begins to stop: a console
            // reconnects (and gets refused or a fresh stream) instead of holding the
            // API open.
            stop: shutdown.child_token(),
            ..api_state(
                &cfg,
                &opts.data_dir,
                &metrics,
                &reader,
                &core.alerts_handle,
                &duty,
            )
        },
        api_stop.clone(),
    );
    // Alerts stop after ingest and Modbus (so they see every committed event) and before
    // the writer drains (they hold a StoreHandle for the events they raise).
    // On its own thread, restarted in place after a failure (alerts::supervisor).
    let alerts_stop = CancellationToken::new();
    let alerts_task = alerts::supervisor::spawn(
        core.alerts_stage,
        cfg.clone(),
        handle.clone(),
        Arc::new(modbus_handle.clone()),
        metrics.clone(),
        alerts_stop.clone(),
        shutdown.clone(),
    )?;
    let link_context = link::Context {
        reader: reader.clone(),
        store: handle.clone(),
        metrics: metrics.clone(),
        alerts: core.alerts_handle.clone(),
        duty: duty.clone(),
        store_dir: opts.data_dir.join("store"),
    };
    let (ingest, forward, city_link) =
        spawn_mqtt_stages(guard, mqtt_stages, link_context, &shutdown, opts.grace);
    let modbus = spawn_modbus_and_watchdog(guard, modbus, &handle, &metrics, &shutdown);
    let camera_push = camera_push.map(|(stage, listener)| {
        spawn_camera_push(guard, stage, listener, &handle, &metrics, &shutdown)
    });
    drop(handle);
    announce_ready(
        &cfg,
        &shutdown,
        opts.on_ready,
        Running {
            api_addr,
            metrics: metrics.clone(),
            modbus: modbus_handle,
            reader: reader.clone(),
            boot_id,
            alerts: core.alerts_handle,
            duty: duty.clone(),
        },
    );
    Stages {
        ingest,
        camera_push,
        modbus,
        duty,
        alerts_stop,
        alerts: alerts_task,
        forward,
        city_link,
        writer,
        api_stop,
        api,
    }
    .stop_in_order(&ended)
    .await
}

/// Opens the store under `data_dir/store` on the blocking pool.
async fn open_store(
    cfg: &Config,
    data_dir: &std::path::Path,
    metrics: &Arc<Metrics>,
) -> Result<store::Opened, GatewayError> {
    let store_opts = store::StoreOptions::from_config(cfg);
    let dir = data_dir.join("store");
    let metrics = metrics.clone();
    Ok(tokio::task::spawn_blocking(move || store::open(&dir, store_opts, metrics)).await??)
}

/// The store and what sits directly on it, before any stage runs.
struct Core {
    handle: store::StoreHandle,
    reader: StoreReader,
    writer: store::StoreWriter,
    alerts_stage: alerts::Alerts,
    alerts_handle: alerts::AlertsHandle,
    duty: duty::DutyDesk,
}

/// Opens the store, attaches the alert engine before anything appends (so it sees every
/// commit), and builds the duty desk on both and the Modbus outputs.
async fn open_core(
    cfg: &Config,
    data_dir: &std::path::Path,
    metrics: &Arc<Metrics>,
    modbus: &ingest::modbus::ModbusHandle,
) -> Result<Core, GatewayError> {
    let (handle, reader, writer) = open_store(cfg, data_dir, metrics).await?;
    let (alerts_stage, alerts_handle) = {
        let cfg = cfg.clone();
        let reader = reader.clone();
        tokio::task::spawn_blocking(move || alerts::Alerts::new(&cfg, &reader)).await??
    };
    let duty = duty::DutyDesk::new(
        cfg,
        alerts_handle.clone(),
        modbus.clone(),
        handle.clone(),
        &reader,
    )?;
    Ok(Core {
        handle,
        reader,
        writer,
        alerts_stage,
        alerts_handle,
        duty,
    })
}

/// Starts Modbus polling (each bus task restarts itself after a bug, see
/// [`ingest::modbus`]) and, under systemd, the watchdog; both guarded. Returns the Modbus
/// stage's task (the watchdog ends with the shutdown on its own).
fn spawn_modbus_and_watchdog(
    guard: impl Fn(&'static str, &'static str) -> Guarded,
    modbus: ingest::modbus::Modbus,
    handle: &store::StoreHandle,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let task = tokio::spawn(guard("Modbus", "stage.modbus").run(
        modbus.run(handle.clone(), metrics.clone(), shutdown.clone()),
        |()| "it returned".to_owned(),
    ));
    if let Some(interval) = systemd::watchdog_interval() {
        tokio::spawn(guard("systemd watchdog", "stage.watchdog").run(
            systemd::watchdog(interval, handle.clone(), shutdown.clone()),
            |()| "it returned".to_owned(),
        ));
    }
    task
}

/// Starts the camera push listener under its guard.
fn spawn_camera_push(
    guard: impl Fn(&'static str, &'static str) -> Guarded,
    stage: ingest::camera_push::CameraPush,
    listener: tokio::net::TcpListener,
    handle: &store::StoreHandle,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<Result<(), GatewayError>> {
    let addr = stage.listen();
    let run = stage.run(listener, handle.clone(), metrics.clone(), shutdown.clone());
    tokio::spawn(guard("camera push", "stage.camera_push").run(
        async move { run.await.map_err(|e| GatewayError::CameraPush(addr, e)) },
        result_cause,
    ))
}

/// The API task; it serves until `stop`, which comes after the stages have stopped, so
/// that health stays visible while they drain.
fn spawn_api(
    guard: Guarded,
    listener: tokio::net::TcpListener,
    state: api::ApiState,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<Result<(), std::io::Error>> {
    tokio::spawn(guard.run(api::run(listener, state, stop), result_cause))
}

/// Runs the store writer on the blocking pool under `guard`.
fn spawn_writer(
    guard: Guarded,
    writer: store::StoreWriter,
) -> tokio::task::JoinHandle<Result<Result<(), store::StoreError>, tokio::task::JoinError>> {
    tokio::spawn(guard.run(
        tokio::task::spawn_blocking(move || writer.run()),
        |r| match r {
            Ok(Ok(())) => "it returned".to_owned(),
            Ok(Err(err)) => error_chain(err),
            Err(err) => error_chain(err),
        },
    ))
}

/// The stages that talk MQTT, built and not yet running.
struct MqttStages {
    ingest: ingest::MqttIngest,
    forwarder: forward::Forwarder,
    city_link: link::Link,
}

impl MqttStages {
    /// The three MQTT stages from the config (this fails only on TLS settings that do
    /// not load); none connects before it runs.
    fn new(cfg: &Config, boot_id: &str) -> Result<MqttStages, GatewayError> {
        Ok(MqttStages {
            ingest: ingest::MqttIngest::new(cfg)?,
            forwarder: forward::Forwarder::new(cfg, boot_id)?,
            city_link: link::Link::new(cfg, boot_id)?,
        })
    }
}

/// Spawns ingest, forward and the city link, each under its guard. The city link
/// (status, last will and commands on its own connection to the city broker) holds a
/// StoreHandle (audit events), so it stops before the writer drains.
#[allow(clippy::type_complexity)]
fn spawn_mqtt_stages(
    guard: impl Fn(&'static str, &'static str) -> Guarded,
    stages: MqttStages,
    link_context: link::Context,
    shutdown: &CancellationToken,
    grace: Duration,
) -> (
    tokio::task::JoinHandle<Result<(), ingest::IngestError>>,
    tokio::task::JoinHandle<Result<(), forward::ForwardError>>,
    tokio::task::JoinHandle<Result<(), link::LinkError>>,
) {
    let store = link_context.store.clone();
    let metrics = link_context.metrics.clone();
    let ingest = tokio::spawn(
        guard("ingest", "stage.ingest").run(
            stages
                .ingest
                .run(store.clone(), metrics.clone(), shutdown.clone()),
            result_cause,
        ),
    );
    let forward = tokio::spawn(guard("forward", "stage.forward").run(
        stages.forwarder.run(
            link_context.reader.clone(),
            store,
            metrics,
            shutdown.clone(),
            grace,
        ),
        result_cause,
    ));
    let city_link = tokio::spawn(guard("city link", "stage.link").run(
        stages.city_link.run(link_context, shutdown.clone()),
        result_cause,
    ));
    (ingest, forward, city_link)
}

/// The API listener: `given` (already bound) or one bound to `api.listen`, made async.
fn bind_api(
    given: Option<std::net::TcpListener>,
    cfg: &Config,
) -> Result<(tokio::net::TcpListener, SocketAddr), GatewayError> {
    let listener = match given {
        Some(l) => l,
        None => std::net::TcpListener::bind(cfg.api.listen).map_err(GatewayError::Api)?,
    };
    listener.set_nonblocking(true).map_err(GatewayError::Api)?;
    let addr = listener.local_addr().map_err(GatewayError::Api)?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(GatewayError::Api)?;
    Ok((listener, addr))
}

/// The camera push stage and its bound listener, when `[ingest.camera_push]` is set.
fn bind_camera_push(
    cfg: &Config,
) -> Result<Option<(ingest::camera_push::CameraPush, tokio::net::TcpListener)>, GatewayError> {
    let Some(stage) = ingest::camera_push::CameraPush::new(cfg) else {
        return Ok(None);
    };
    let addr = stage.listen();
    let err = |e| GatewayError::CameraPush(addr, e);
    let listener = std::net::TcpListener::bind(addr).map_err(err)?;
    listener.set_nonblocking(true).map_err(err)?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(err)?;
    Ok(Some((stage, listener)))
}

/// `api.tls_cert` and `api.tls_key` loaded for HTTPS, once, before any stage starts;
/// `None` without them (HTTP).
fn load_api_tls(cfg: &Config) -> Result<Option<Arc<rustls::ServerConfig>>, GatewayError> {
    let (Some(cert), Some(key)) = (&cfg.api.tls_cert, &cfg.api.tls_key) else {
        return Ok(None);
    };
    api::tls::server_config(cert, key)
        .map(Some)
        .map_err(|e| GatewayError::Api(std::io::Error::other(e)))
}

/// What the API serves from; its live streams' stop and its TLS are the caller's to
/// set (`run`: the shutdown's child token, [`load_api_tls`]).
fn api_state(
    cfg: &Config,
    data_dir: &std::path::Path,
    metrics: &Arc<Metrics>,
    reader: &StoreReader,
    alerts: &alerts::AlertsHandle,
    duty: &duty::DutyDesk,
) -> api::ApiState {
    api::ApiState {
        metrics: metrics.clone(),
        reader: reader.clone(),
        gateway_id: cfg.gateway.id.clone(),
        estate_id: cfg.gateway.estate_id.clone(),
        alerts: alerts.clone(),
        duty: duty.clone(),
        auth: Arc::new(auth::Auth::new(data_dir.to_path_buf(), &cfg.api)),
        stop: CancellationToken::new(),
        limits: api::server::Limits::from_config(&cfg.api),
        sse_clients: Arc::new(tokio::sync::Semaphore::new(cfg.api.max_sse_clients.max(1))),
        max_sse_clients: cfg.api.max_sse_clients,
        tls: None,
    }
}

/// Tells systemd (READY now, STOPPING once `shutdown` is cancelled) and the caller
/// (`on_ready`) that the gateway runs. Ready means the store is open and every stage
/// runs; brokers connect (and reconnect) on their own, and an uplink that is down at
/// boot is exactly what the store is for.
fn announce_ready(
    cfg: &Config,
    shutdown: &CancellationToken,
    on_ready: Option<oneshot::Sender<Running>>,
    running: Running,
) {
    info!(gateway_id = %cfg.gateway.id, estate_id = %cfg.gateway.estate_id, api_addr = %running.api_addr, epoch = running.reader.epoch(), boot_id = %running.boot_id, "Gateway running.");
    systemd::notify_or_log("READY=1");
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            systemd::notify_or_log("STOPPING=1");
        }
    });
    if let Some(tx) = on_ready {
        let _ = tx.send(running);
    }
}

/// The running stages, stopped by [`Stages::stop_in_order`].
struct Stages {
    ingest: tokio::task::JoinHandle<Result<(), ingest::IngestError>>,
    camera_push: Option<tokio::task::JoinHandle<Result<(), GatewayError>>>,
    modbus: tokio::task::JoinHandle<()>,
    duty: duty::DutyDesk,
    alerts_stop: CancellationToken,
    alerts: alerts::supervisor::Supervised,
    forward: tokio::task::JoinHandle<Result<(), forward::ForwardError>>,
    city_link: tokio::task::JoinHandle<Result<(), link::LinkError>>,
    writer: tokio::task::JoinHandle<Result<Result<(), store::StoreError>, tokio::task::JoinError>>,
    api_stop: CancellationToken,
    api: tokio::task::JoinHandle<Result<(), std::io::Error>>,
}

impl Stages {
    /// Waits for the stages (shutdown has been or will be requested) in the order that
    /// lets every committed event reach alerts and the store drain last, then returns
    /// the first error, or [`GatewayError::StageEnded`] if a stage ended on its own.
    async fn stop_in_order(self, ended: &Ended) -> Result<(), GatewayError> {
        let ingest_result = self.ingest.await;
        // Camera push answers what is committed and drops its StoreHandle.
        let camera_push_result = match self.camera_push {
            Some(task) => task.await,
            None => Ok(Ok(())),
        };
        // Modbus stops polling at a safe point and drops its StoreHandle before the store drains.
        let modbus_result = self.modbus.await;
        // No broadcast writes after Modbus: the desk lets go of its StoreHandle.
        self.duty.stop();
        self.alerts_stop.cancel();
        let alerts_result = self.alerts.join().await;
        let forward_result = self.forward.await;
        let link_result = self.city_link.await;
        // Every StoreHandle is gone now: the writer commits what is queued and exits.
        let writer_result = self.writer.await.and_then(|r| r);
        self.api_stop.cancel();
        let _ = self.api.await;
        if let Ok(Err(err)) = &writer_result {
            error!(error = %err, "Store writer failed while stopping.");
        }
        ingest_result??;
        camera_push_result??;
        modbus_result?;
        alerts_result?;
        forward_result??;
        link_result??;
        writer_result??;
        if let Some(stage) = ended.get() {
            return Err(GatewayError::StageEnded(stage));
        }
        info!("Gateway stopped.");
        Ok(())
    }
}

/// The first stage that ended while the gateway was running.
type Ended = Arc<std::sync::OnceLock<&'static str>>;

/// Why a stage that returns a `Result` ended.
fn result_cause<E: std::error::Error + 'static>(r: &Result<(), E>) -> String {
    match r {
        Ok(()) => "it returned".to_owned(),
        Err(err) => error_chain(err),
    }
}

/// Runs a stage; when it ends while the gateway is not stopping (a fatal error, a return,
/// or a panic: the release profile unwinds, so this guard still runs), it logs why at
/// ERROR, sets `/healthz` to failed under its key and stops the whole gateway in order,
/// so the process exits non-zero and its supervisor restarts it instead of leaving it
/// running half-alive (crate doc, "Supervised stages").
struct Guarded {
    stage: &'static str,
    key: &'static str,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
    ended: Ended,
}

impl Guarded {
    /// Makes the guard of each stage of one run (`stage` for the log, `key` for
    /// `/healthz`), all sharing its shutdown, metrics and first-ended record.
    fn maker<'a>(
        shutdown: &'a CancellationToken,
        metrics: &'a Arc<Metrics>,
        ended: &'a Ended,
    ) -> impl Fn(&'static str, &'static str) -> Guarded + Copy + 'a {
        move |stage, key| Guarded {
            stage,
            key,
            shutdown: shutdown.clone(),
            metrics: metrics.clone(),
            ended: ended.clone(),
        }
    }

    async fn run<F: std::future::Future>(
        self,
        stage_future: F,
        cause: impl FnOnce(&F::Output) -> String,
    ) -> F::Output {
        struct OnEnd(Guarded, Option<String>);
        impl Drop for OnEnd {
            fn drop(&mut self) {
                let g = &self.0;
                if g.shutdown.is_cancelled() {
                    return;
                }
                let cause = self
                    .1
                    .take()
                    .unwrap_or_else(|| "it panicked (see the panic message above)".to_owned());
                error!(
                    stage = g.stage,
                    %cause,
                    "Stage stopped while the gateway was running; stopping the gateway (exit 1) so that systemd restarts it."
                );
                g.metrics.health.set(
                    g.key,
                    crate::health::Level::Failed,
                    format!(
                        "the {} stage stopped ({cause}); the gateway is stopping so that systemd restarts it",
                        g.stage
                    ),
                );
                let _ = g.ended.set(g.stage);
                g.shutdown.cancel();
            }
        }
        let mut on_end = OnEnd(self, None);
        let out = stage_future.await;
        on_end.1 = Some(cause(&out));
        out
    }
}

/// Linkage writes go to the Modbus buses: the port the alerts stage drives its outputs
/// through, handed in above, so that `alerts/` knows nothing of `ingest/`.
impl alerts::LinkagePort for ingest::modbus::ModbusHandle {
    fn write(
        &self,
        device: &str,
        write: output::Write,
    ) -> futures_util::future::BoxFuture<'static, Result<(), alerts::LinkError>> {
        let (modbus, device) = (self.clone(), device.to_owned());
        Box::pin(async move {
            modbus.write(&device, write).await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use anyhow::Context as _;

    #[derive(Debug, thiserror::Error)]
    #[error("store: {0}")]
    struct Spelled(#[source] std::io::Error);

    #[test]
    fn the_error_chain_names_every_cause_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left on device");
        let e = Err::<(), _>(Spelled(io()))
            .context("open /var/lib/estate/store")
            .expect_err("an error");
        assert_eq!(
            super::error_chain(e.as_ref()),
            "open /var/lib/estate/store: store: No space left on device"
        );
        let e = Err::<(), _>(io())
            .context("write the dead letter")
            .expect_err("an error");
        assert_eq!(
            super::error_chain(e.as_ref()),
            "write the dead letter: No space left on device"
        );
    }
}
