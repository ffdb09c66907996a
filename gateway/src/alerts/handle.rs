//! The API's handle on the alerts ([`AlertsHandle`], used by `api/` and `duty/`) and the
//! alerts task's side of it: the operator commands, answered once their change is
//! durable.

use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::{broadcast, mpsc, oneshot};

use super::effects::Outputs;
use super::meter::{FloodView, Openings, Rate};
use super::model::{Alert, CityHandling, DeviceView, Disposition};
use super::rules::{self, Effect};
use super::state::AlertStore;
use super::updates::Update;
use super::Alerts;
use crate::events::now_ms;

/// Why an operator action failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// No alert has this id (open or in the history).
    #[error("no alert {0}")]
    NotFound(String),
    /// The transition is not allowed (e.g. closing a closed alert).
    #[error("{0}")]
    Conflict(String),
    /// The request is out of bounds (e.g. shelving for longer than allowed).
    #[error("{0}")]
    Invalid(String),
    /// The change could not be made durable.
    #[error("alert state could not be stored: {0}")]
    Store(String),
    /// The alerts task is not running (stopping, or failed and not yet restarted).
    #[error("the alerts engine has stopped")]
    Stopped,
}

/// Where the alerts task answers a command: the changed alert, or why not.
pub(crate) type Reply = oneshot::Sender<Result<Alert, OpError>>;

/// An operator action, from the handle to the alerts task.
pub(crate) enum Command {
    Ack {
        id: String,
        by: String,
        note: String,
        reply: Reply,
    },
    Close {
        id: String,
        by: String,
        disposition: Disposition,
        note: String,
        reply: Reply,
    },
    City {
        id: String,
        handling: CityHandling,
        reply: Reply,
    },
    Shelve {
        id: String,
        by: String,
        for_ms: i64,
        reason: String,
        reply: Reply,
    },
    Unshelve {
        id: String,
        by: String,
        reply: Reply,
    },
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Ack { id, .. } => write!(f, "Ack({id})"),
            Command::Close { id, .. } => write!(f, "Close({id})"),
            Command::City { id, .. } => write!(f, "City({id})"),
            Command::Shelve { id, .. } => write!(f, "Shelve({id})"),
            Command::Unshelve { id, .. } => write!(f, "Unshelve({id})"),
        }
    }
}

/// The API's handle on the alerts: reads go to the store and shared snapshots, writes go
/// to the alerts task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AlertsHandle {
    /// To the alerts task, which answers each command once the change is durable.
    /// Bounded (64): an API request waits while it is full.
    pub(crate) cmd: mpsc::Sender<Command>,
    /// Every alert and device change; slow subscribers miss changes (they are told they
    /// lagged and should re-read the lists).
    pub(crate) updates: broadcast::Sender<Update>,
    pub(crate) store: AlertStore,
    /// The devices with their status, replaced by the alerts task when they change.
    pub(crate) devices: Arc<RwLock<Vec<DeviceView>>>,
    /// Counted by the alerts task as it handles committed events.
    pub(crate) rate: Arc<Mutex<Rate>>,
    /// Alerts opened recently, counted by the alerts task (`[alerts.flood]`).
    pub(crate) openings: Arc<Mutex<Openings>>,
}

impl AlertsHandle {
    /// Subscribes to live changes.
    pub fn subscribe(&self) -> broadcast::Receiver<Update> {
        self.updates.subscribe()
    }

    /// The alert state and history, for reads (lists, one alert, its audit trail).
    pub fn store(&self) -> &AlertStore {
        &self.store
    }

    /// Devices with their status, offline first.
    pub fn devices(&self) -> Vec<DeviceView> {
        self.devices
            .read()
            .map(|d| d.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Committed events per second, the last 60 seconds, oldest first.
    pub fn events_per_sec(&self) -> Vec<u64> {
        let now = now_ms();
        match self.rate.lock() {
            Ok(r) => r.last_60(now),
            Err(e) => e.into_inner().last_60(now),
        }
    }

    /// Flood mode now: more than `alerts.flood.new_alerts` alerts opened within
    /// `alerts.flood.window` (EEMUA 191).
    pub fn flood(&self) -> FloodView {
        let now = now_ms();
        match self.openings.lock() {
            Ok(o) => o.view(now),
            Err(e) => e.into_inner().view(now),
        }
    }

    /// Acknowledges an active alert; resolves once the change is durable.
    pub async fn acknowledge(&self, id: &str, by: &str, note: &str) -> Result<Alert, OpError> {
        self.ask(|reply| Command::Ack {
            id: id.to_owned(),
            by: by.to_owned(),
            note: note.to_owned(),
            reply,
        })
        .await
    }

    /// Attaches the city's handling state to an alert, open or closed (issue 14): stored
    /// with the alert, in its audit trail (by the city's issuer), on the live stream;
    /// never upstream (the city set it). Resolves once the change is durable.
    pub async fn city_handling(&self, id: &str, handling: CityHandling) -> Result<Alert, OpError> {
        self.ask(|reply| Command::City {
            id: id.to_owned(),
            handling,
            reply,
        })
        .await
    }

    /// Closes an open alert; resolves once the change is durable.
    pub async fn close(
        &self,
        id: &str,
        by: &str,
        disposition: Disposition,
        note: &str,
    ) -> Result<Alert, OpError> {
        self.ask(|reply| Command::Close {
            id: id.to_owned(),
            by: by.to_owned(),
            disposition,
            note: note.to_owned(),
            reply,
        })
        .await
    }

    /// Shelves an open alert for `for_ms` with a reason (issue 16; bounded by
    /// `[alerts.shelving]`); resolves once the change is durable.
    pub async fn shelve(
        &self,
        id: &str,
        by: &str,
        for_ms: i64,
        reason: &str,
    ) -> Result<Alert, OpError> {
        self.ask(|reply| Command::Shelve {
            id: id.to_owned(),
            by: by.to_owned(),
            for_ms,
            reason: reason.to_owned(),
            reply,
        })
        .await
    }

    /// Takes a shelved alert off the shelf; resolves once the change is durable.
    pub async fn unshelve(&self, id: &str, by: &str) -> Result<Alert, OpError> {
        self.ask(|reply| Command::Unshelve {
            id: id.to_owned(),
            by: by.to_owned(),
            reply,
        })
        .await
    }

    /// Sends a command to the alerts task and waits for its answer.
    async fn ask(&self, command: impl FnOnce(Reply) -> Command) -> Result<Alert, OpError> {
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(command(reply))
            .await
            .map_err(|_| OpError::Stopped)?;
        rx.await.map_err(|_| OpError::Stopped)?
    }
}

impl Alerts {
    /// Carries out an operator command and answers it once its change is durable.
    pub(crate) async fn handle_command(&mut self, cmd: Command, out: &mut Outputs) {
        let (effects, reply) = self.command_effects(cmd);
        let effects = match effects {
            Ok(effects) => effects,
            Err(err) => {
                let _ = reply.send(Err(err));
                return;
            }
        };
        // The last change is the alert as the command left it (a folded run of repeats
        // may be written before it).
        let changed = effects.iter().rev().find_map(|e| match e {
            Effect::Alert { alert, .. } => Some(alert.clone()),
            _ => None,
        });
        let stored = self.apply(effects, None, out).await;
        // Durable before the operator is told it is done.
        let synced = match stored {
            Ok(()) => {
                let s = self.store.clone();
                tokio::task::spawn_blocking(move || s.sync())
                    .await
                    .map_err(|e| OpError::Store(e.to_string()))
                    .and_then(|r| r.map_err(|e| OpError::Store(e.to_string())))
            }
            Err(e) => Err(e),
        };
        let _ = reply.send(
            synced
                .and_then(|()| changed.ok_or_else(|| OpError::Store("no change produced".into()))),
        );
    }

    /// What the engine makes of a command (or why it refuses it), and where to answer.
    fn command_effects(&mut self, cmd: Command) -> (Result<Vec<Effect>, OpError>, Reply) {
        let now = now_ms();
        match cmd {
            Command::Ack {
                id,
                by,
                note,
                reply,
            } => (
                self.engine
                    .acknowledge(&id, &by, &note, now)
                    .map_err(|e| self.op_error(&id, e)),
                reply,
            ),
            Command::Close {
                id,
                by,
                disposition,
                note,
                reply,
            } => (
                self.engine
                    .close(&id, &by, disposition, &note, now)
                    .map_err(|e| self.op_error(&id, e)),
                reply,
            ),
            Command::City {
                id,
                handling,
                reply,
            } => (self.city_effects(id, handling), reply),
            Command::Shelve {
                id,
                by,
                for_ms,
                reason,
                reply,
            } => (
                self.engine
                    .shelve(&id, &by, for_ms, &reason, now)
                    .map_err(|e| self.op_error(&id, e)),
                reply,
            ),
            Command::Unshelve { id, by, reply } => (
                self.engine
                    .unshelve(&id, &by, now)
                    .map_err(|e| self.op_error(&id, e)),
                reply,
            ),
        }
    }

    /// The city's handling of an alert: on the open alert, or, closed here but still
    /// handled there, attached to the stored alert.
    fn city_effects(&mut self, id: String, handling: CityHandling) -> Result<Vec<Effect>, OpError> {
        match self.engine.city_handling(&id, handling.clone()) {
            Some(effect) => Ok(vec![effect]),
            None => match self.store.get(&id) {
                Ok(Some(mut a)) => Ok(vec![rules::city_effect(&mut a, handling)]),
                Ok(None) => Err(OpError::NotFound(id)),
                Err(e) => Err(OpError::Store(e.to_string())),
            },
        }
    }

    fn op_error(&self, id: &str, e: rules::ActionError) -> OpError {
        match e {
            rules::ActionError::Invalid(m) => OpError::Conflict(m),
            rules::ActionError::Refused(m) => OpError::Invalid(m),
            rules::ActionError::NotOpen(_) => match self.store.get(id) {
                Ok(Some(a)) => OpError::Conflict(format!(
                    "alert {id} is {}; it cannot change any more",
                    a.status.as_str()
                )),
                _ => OpError::NotFound(id.to_owned()),
            },
        }
    }
}
