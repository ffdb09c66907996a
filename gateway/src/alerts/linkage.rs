//! Linkage writes, the I/O side of the linkage rules (`rules/linkage.rs`): an opening
//! alert asks for writes, each runs in its own task through a [`LinkagePort`], and its
//! result comes back to the task loop to be recorded on the alert.
//!
//! The port is how the alerts reach the outputs they drive without knowing them:
//! `lib.rs` implements it for the Modbus buses' handle and hands it in.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::model::ActionRecord;
use super::rules::LinkAction;
use crate::events::now_ms;
use crate::output::Write;

/// How long a linkage write may take before it is recorded as failed.
const LINK_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an output did not confirm a write, as its driver explains it.
pub type LinkError = Box<dyn std::error::Error + Send + Sync>;

/// What linkage needs of the outputs it drives: one write on a named device — a coil
/// (an output switched on or off) or a holding register.
pub trait LinkagePort: Send + Sync + 'static {
    /// Writes `write` on `device`, resolving once the device confirmed it. It may wait
    /// (a busy bus); the stage gives up after a timeout of its own.
    fn write(&self, device: &str, write: Write) -> BoxFuture<'static, Result<(), LinkError>>;
}

/// The port the stage holds (shared by its linkage tasks).
pub type Linkage = Arc<dyn LinkagePort>;

/// A finished linkage write, for the task loop to record on its alert.
#[derive(Debug)]
pub(crate) struct LinkDone {
    pub(crate) alert_id: String,
    pub(crate) record: ActionRecord,
}

/// Runs one linkage write in its own task; the result comes back on `done`.
pub(crate) fn spawn(
    port: &Linkage,
    alert_id: String,
    action: LinkAction,
    done: mpsc::UnboundedSender<LinkDone>,
) {
    let write = port.write(&action.device, action.write);
    tokio::spawn(async move {
        let result = match tokio::time::timeout(LINK_TIMEOUT, write).await {
            Ok(Ok(())) => "ok".to_owned(),
            Ok(Err(err)) => format!("failed: {err}"),
            Err(_) => format!("failed: no answer within {LINK_TIMEOUT:?}"),
        };
        if result == "ok" {
            info!(%alert_id, device = %action.device, action = %action.describe(), "Linkage action done.");
        } else {
            warn!(%alert_id, device = %action.device, action = %action.describe(), %result, "Linkage action failed.");
        }
        let _ = done.send(LinkDone {
            alert_id,
            record: ActionRecord {
                action: action.describe(),
                target: action.device.clone(),
                at_ms: now_ms(),
                result,
            },
        });
    });
}

/// A gateway with no outputs wired: every write fails, as a write to a device the
/// gateway does not know does. For the stage's tests, whose configs have no linkage.
#[cfg(test)]
pub(crate) struct Unwired;

#[cfg(test)]
impl LinkagePort for Unwired {
    fn write(&self, device: &str, _: Write) -> BoxFuture<'static, Result<(), LinkError>> {
        let err = format!("no output {device:?} is wired");
        Box::pin(async move { Err(err.into()) })
    }
}
