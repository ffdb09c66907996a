//! Keeps the alerts stage running (issue 13: it used to die silently, and the gateway ran
//! on without local alerts while forwarded records stopped being deleted).
//!
//! ```text
//!  thread "alerts" ── current-thread runtime ── Alerts::run ──panics──▶ ERROR, /healthz failed,
//!        ▲                                                             wait 250 ms … 4 s
//!        └──────────── Alerts::rebuild (from the store) ◀──────────────┘
//!  more than MAX_RESTARTS failures within WINDOW ──▶ stop the gateway, exit non-zero (systemd restarts it)
//! ```
//!
//! **Its own thread.** The stage's sled reads and writes (alert state, progress, replay
//! pages) are blocking calls; on its own thread with its own single-threaded runtime they
//! never hold up the async workers that ingest, forward and the API share. Its
//! alert-topic publisher and linkage writes run on that runtime too.
//!
//! **Restarted in place** rather than the whole process, because that brings local alerts
//! back fastest: a restart in place takes the backoff (250 ms at first) plus the rebuild
//! (reading the open alerts and replaying the committed events after the persisted
//! progress, milliseconds for a normal backlog), while ingest, the store and the uplink
//! keep running and nothing is redelivered; a process restart takes systemd's
//! `RestartSec` (2 s), reopening the store, the broker redelivering its in-flight window,
//! and reconnecting every session. Nothing is lost either way: the engine's progress is
//! persisted with the changes it caused, the store keeps every forwarded record the
//! engine has not processed (`StoreReader::set_alerts_done`), and the inputs (the
//! writer's tap, the API's command queue) stay attached across the restart. A command in
//! progress when the stage failed is answered 503; queued ones are handled after it.
//!
//! **Gives up** when it keeps failing (more than [`MAX_RESTARTS`] failures within
//! [`WINDOW`], for example an event that makes the engine panic every time it is
//! replayed): it stops the gateway so the process exits non-zero and systemd restarts it
//! (and, if that fails too, stops trying after the unit's `StartLimitBurst`).
//!
//! `/healthz` under the key `stage.alerts`: `failed` while the stage is down, `degraded`
//! after a restart (naming the cause) until it has run for [`WINDOW`] without failing.
//! Restarts are counted in `estate_stage_restarts_total{stage="alerts"}`.
//!
//! A panic can only be caught with `panic = "unwind"` (the release profile's setting,
//! Cargo.toml); with "abort" the process would exit and systemd restart it.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use estate_config::Config;
use estate_protocols::model::Event;

use super::Alerts;
use super::Linkage;
use crate::health::Level;
use crate::store::StoreHandle;
use crate::telemetry::{Metrics, StageLabel};

/// Restarts allowed within [`WINDOW`]; the next failure stops the gateway.
pub const MAX_RESTARTS: usize = 5;
/// How long failures are remembered, and how long a restarted stage stays `degraded`.
pub const WINDOW: Duration = Duration::from_secs(600);
/// The wait before the first restart; it doubles with each failure in the window (250 ms,
/// 500 ms, 1 s, 2 s, 4 s).
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

const HEALTH_KEY: &str = "stage.alerts";

/// Why the supervised alerts stage ended other than by a clean stop; each one stops the
/// gateway with exit status 1 (lib.rs, "Supervised stages").
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// More than [`MAX_RESTARTS`] failures within [`WINDOW`]: not restarted again.
    #[error("the alerts stage failed {failures} times within {window:?} (last: {cause}); gave up")]
    GaveUp {
        /// Failures counted within the window, the last one included.
        failures: usize,
        /// The window they fell in ([`WINDOW`]).
        window: Duration,
        /// What the last failure was (an error or a panic message).
        cause: String,
    },
    /// It failed after the stop was asked for; not restarted, the committed events it did
    /// not handle are replayed at the next start. Carries the cause.
    #[error("the alerts stage failed while stopping: {0}")]
    FailedAtStop(String),
    /// Its thread or its tokio runtime could not be created.
    #[error("cannot run the alerts stage: {0}")]
    Start(std::io::Error),
}

/// The running stage; [`Supervised::join`] waits for it to end.
#[derive(Debug)]
pub struct Supervised {
    done: oneshot::Receiver<Result<(), SupervisorError>>,
}

impl Supervised {
    /// Resolves once the stage has stopped (after `stop`) or given up.
    pub async fn join(self) -> Result<(), SupervisorError> {
        self.done.await.unwrap_or_else(|_| {
            Err(SupervisorError::GaveUp {
                failures: 1,
                window: WINDOW,
                cause: "the supervisor thread itself panicked".into(),
            })
        })
    }
}

/// Runs `stage` on its own thread until `stop`, restarting it after a failure (module
/// doc). When it gives up it cancels `gateway`. The thread holds `store` (a
/// [`StoreHandle`]) until the stage stops, then drops it so the writer can drain.
pub fn spawn(
    stage: Alerts,
    cfg: Config,
    store: StoreHandle,
    linkage: Linkage,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    gateway: CancellationToken,
) -> Result<Supervised, SupervisorError> {
    let (tx, done) = oneshot::channel();
    std::thread::Builder::new()
        .name("alerts".into())
        .spawn(move || {
            let result = supervise(stage, &cfg, store, linkage, &metrics, &stop, &gateway);
            let _ = tx.send(result);
        })
        .map_err(SupervisorError::Start)?;
    Ok(Supervised { done })
}

fn runtime() -> Result<tokio::runtime::Runtime, SupervisorError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(SupervisorError::Start)
}

fn supervise(
    mut stage: Alerts,
    cfg: &Config,
    store: StoreHandle,
    linkage: Linkage,
    metrics: &Arc<Metrics>,
    stop: &CancellationToken,
    gateway: &CancellationToken,
) -> Result<(), SupervisorError> {
    let mut failures: VecDeque<Instant> = VecDeque::new();
    // Why the stage last failed, while it is to be rebuilt and run again.
    let mut failed: Option<String> = None;
    // Whether this run follows a failure (then `degraded` until it has run for WINDOW).
    let mut restarted = false;
    loop {
        let mut cause = None;
        if let Some(last) = failed.take() {
            match stage.rebuild(cfg) {
                Ok(()) => {
                    metrics
                        .stage_restarts
                        .get_or_create(&StageLabel { stage: "alerts" })
                        .inc();
                    metrics.health.set(
                        HEALTH_KEY,
                        Level::Degraded,
                        format!(
                            "the alerts stage restarted after a failure ({last}); {} failure(s) in the last {} min",
                            failures.len(),
                            WINDOW.as_secs() / 60
                        ),
                    );
                    info!(
                        stage = "alerts",
                        failures = failures.len(),
                        "Alerts stage restarted from the store."
                    );
                    restarted = true;
                }
                // Not run on a half-built engine: a failure of its own.
                Err(err) => cause = Some(format!("cannot rebuild it from the store: {err}")),
            }
        }
        let cause = match cause {
            Some(cause) => cause,
            None => match run_once(&mut stage, restarted, &store, &linkage, metrics, stop)? {
                None => return Ok(()),
                Some(cause) => cause,
            },
        };
        if stop.is_cancelled() {
            // The committed events it did not handle are replayed at the next start.
            error!(stage = "alerts", %cause, "Alerts stage failed while stopping.");
            return Err(SupervisorError::FailedAtStop(cause));
        }
        let now = Instant::now();
        failures.push_back(now);
        while failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > WINDOW)
        {
            failures.pop_front();
        }
        if failures.len() > MAX_RESTARTS {
            let reason = format!(
                "the alerts stage failed {} times within {} min (last: {cause}); stopping the gateway so that systemd restarts it",
                failures.len(),
                WINDOW.as_secs() / 60
            );
            error!(stage = "alerts", %cause, failures = failures.len(), "Alerts stage keeps failing; no local alerts. Stopping the gateway so that systemd restarts it.");
            metrics.health.set(HEALTH_KEY, Level::Failed, reason);
            gateway.cancel();
            return Err(SupervisorError::GaveUp {
                failures: failures.len(),
                window: WINDOW,
                cause,
            });
        }
        let delay = FIRST_BACKOFF * 2u32.pow(failures.len().saturating_sub(1) as u32);
        error!(stage = "alerts", %cause, restart_in = ?delay, "Alerts stage failed; no local alerts until it restarts from the store.");
        metrics.health.set(
            HEALTH_KEY,
            Level::Failed,
            format!("the alerts stage failed ({cause}); no local alerts until it restarts"),
        );
        let stopped = runtime()?.block_on(async {
            tokio::select! {
                () = stop.cancelled() => true,
                () = tokio::time::sleep(delay) => false,
            }
        });
        if stopped {
            return Ok(());
        }
        failed = Some(cause);
    }
}

/// Runs the stage once, on a fresh runtime (dropping the last one dropped whatever a
/// failed run had spawned: its alert-topic publisher, linkage writes). `None` when it
/// stopped as asked, else why it failed. After a restart the `degraded` condition is
/// cleared once it has run for [`WINDOW`].
fn run_once(
    stage: &mut Alerts,
    restarted: bool,
    store: &StoreHandle,
    linkage: &Linkage,
    metrics: &Arc<Metrics>,
    stop: &CancellationToken,
) -> Result<Option<String>, SupervisorError> {
    let rt = runtime()?;
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        rt.block_on(async {
            let run = stage.run(store.clone(), linkage.clone(), metrics.clone(), stop.clone());
            tokio::pin!(run);
            if restarted {
                tokio::select! {
                    () = &mut run => return,
                    () = tokio::time::sleep(WINDOW) => {
                        metrics.health.clear(HEALTH_KEY);
                        info!(stage = "alerts", "Alerts stage ran without failing since its restart; healthy again.");
                    }
                }
            }
            run.await;
        })
    }));
    drop(rt);
    Ok(match outcome {
        Ok(()) if stop.is_cancelled() => None,
        Ok(()) => Some("it returned while the gateway was running (its input closed)".to_owned()),
        Err(panic) => Some(format!("panicked: {}", panic_message(&*panic))),
    })
}

/// The message a panic carried (`panic!("…")` gives a `&str` or a `String`).
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

/// Test-only fault injection, compiled into debug builds only (the test suite's binary),
/// never into a release build: with `ESTATE_GATEWAY_TEST_ALERTS_PANIC=<device id>` the
/// stage panics on the first event from that device it handles (once per process, so
/// the restarted stage handles it); with `<device id>:always`, on every one (it never
/// gets past it, and the supervisor gives up).
#[cfg(debug_assertions)]
pub(crate) fn fault_hook(events: &[Event], after: u64) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::OnceLock;
    static TARGET: OnceLock<Option<(String, bool)>> = OnceLock::new();
    static FIRED: AtomicBool = AtomicBool::new(false);
    let target = TARGET.get_or_init(|| {
        let v = std::env::var("ESTATE_GATEWAY_TEST_ALERTS_PANIC").ok()?;
        Some(match v.strip_suffix(":always") {
            Some(device) => (device.to_owned(), true),
            None => (v, false),
        })
    });
    let Some((device, always)) = target else {
        return;
    };
    if events
        .iter()
        .any(|e| e.seq > after && e.device_id == *device)
        && (*always || !FIRED.swap(true, Ordering::AcqRel))
    {
        panic!("test fault hook: the alerts stage fails on an event from {device}");
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub(crate) fn fault_hook(_events: &[Event], _after: u64) {}
