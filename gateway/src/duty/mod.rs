//! The duty desk: what the city's commands ask of the estate's people and outputs
//! (issue 14). The city link (`crate::link`) validates a command (id, expiry, replay,
//! whether its kind is enabled), records it, and calls one of these; it turns what they
//! return into the `CommandResult` it sends back.
//!
//! - [`DutyDesk::roll_call`] (查岗): the console shows the call at once, loud, with a
//!   countdown; resolves with who answered and how long it took, or [`RollCall::NoAnswer`]
//!   at the deadline.
//! - [`DutyDesk::alarm_handling`]: the city's state for one of the gateway's alerts
//!   (received, dispatched, on scene, closed), attached to the local alert and shown in
//!   the console.
//! - [`DutyDesk::broadcast`]: configured sounders and strobes on or off for a while,
//!   through the same Modbus write path and audit trail as linkage.
//!
//! SKELETON: the signatures the link is written against; the implementation lands on
//! branch `duty`.

use std::time::{Duration, Instant};

use estate_protocols::pb;

use crate::alerts::AlertsHandle;
use crate::ingest::modbus::ModbusHandle;

#[derive(Debug, thiserror::Error)]
pub enum DutyError {
    /// The command names something this gateway does not have (an alert id, a group).
    #[error("{0}")]
    Unknown(String),
    /// It was tried and failed (a Modbus write, a store write).
    #[error("{0}")]
    Failed(String),
}

/// How a roll call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollCall {
    Answered { by: String, after: Duration },
    NoAnswer,
}

/// A roll call as the city sent it.
#[derive(Debug, Clone)]
pub struct RollCallRequest {
    pub command_id: String,
    pub issuer: String,
    pub message: String,
    /// When the command reached the gateway: `after` is measured from here.
    pub received: Instant,
    /// No answer by then answers [`RollCall::NoAnswer`].
    pub deadline: Instant,
}

#[derive(Debug, Clone)]
pub struct DutyDesk {
    #[allow(dead_code)]
    alerts: AlertsHandle,
    #[allow(dead_code)]
    modbus: ModbusHandle,
}

impl DutyDesk {
    pub fn new(_cfg: &estate_config::Config, alerts: AlertsHandle, modbus: ModbusHandle) -> Self {
        DutyDesk { alerts, modbus }
    }

    /// Shows the roll call to the person on duty; resolves on their answer or at the
    /// deadline. Never fails: a console nobody watches is what `NoAnswer` reports.
    pub async fn roll_call(&self, req: RollCallRequest) -> RollCall {
        tokio::time::sleep_until(req.deadline.into()).await;
        RollCall::NoAnswer
    }

    /// Attaches the city's state (and its note) to a local alert; `issuer` is who at the
    /// city set it. `Unknown` when the gateway has no alert of that id.
    pub async fn alarm_handling(
        &self,
        issuer: &str,
        req: &pb::AlarmHandling,
    ) -> Result<(), DutyError> {
        let _ = issuer;
        Err(DutyError::Unknown(format!("no alert {}", req.alert_id)))
    }

    /// Switches a configured group of outputs; returns what was done (for the result's
    /// detail). `Unknown` for a group not configured.
    pub async fn broadcast(&self, issuer: &str, req: &pb::Broadcast) -> Result<String, DutyError> {
        let _ = issuer;
        Err(DutyError::Unknown(format!(
            "no broadcast group {:?}",
            req.group
        )))
    }
}
