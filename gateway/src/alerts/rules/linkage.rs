//! Linkage (`[alerts.linkage.*]`): an alert of one of `on` opening asks for a Modbus
//! write (a coil or a register of `device`, optionally only in the alert's building);
//! the caller runs it and reports the result, which is recorded on the alert.

use estate_config::Linkage;
use estate_protocols::model::AlertChange;

use super::{audit, Effect, Engine, BY_GATEWAY};
use crate::alerts::model::{ActionRecord, Alert};
use crate::output::Write;

/// One Modbus write of a linkage rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkAction {
    /// The linkage rule's name.
    pub rule: String,
    /// The Modbus device written to.
    pub device: String,
    /// What is written.
    pub write: Write,
}

impl LinkAction {
    /// `rule: coil 0 = 1`, as recorded on the alert.
    pub fn describe(&self) -> String {
        match self.write {
            Write::Coil { address, value } => {
                format!("{}: coil {address} = {}", self.rule, u8::from(value))
            }
            Write::Register { address, value } => {
                format!("{}: register {address} = {value}", self.rule)
            }
        }
    }
}

impl Engine {
    /// The result of a linkage write, recorded on its alert. `None` when the alert was
    /// closed in the meantime (the caller records it on the stored alert).
    pub fn record_action(&mut self, alert_id: &str, record: ActionRecord) -> Option<Effect> {
        let a = self.open.get_mut(alert_id)?;
        let note = format!("{} on {}: {}", record.action, record.target, record.result);
        let at = record.at_ms;
        a.actions.push(record);
        Some(Effect::Alert {
            alert: a.clone(),
            audit: Some(audit(at, BY_GATEWAY, "action", &note)),
            upstream: Some(AlertChange::Action),
        })
    }

    /// The writes the opening of `alert` asks for.
    pub(super) fn links_for(&self, alert: &Alert) -> Vec<LinkAction> {
        self.cfg
            .linkage
            .iter()
            .filter(|(_, l)| l.on.contains(&alert.code) && self.same_building(l, alert))
            .map(|(name, l)| link_action(name, l))
            .collect()
    }

    fn same_building(&self, l: &Linkage, alert: &Alert) -> bool {
        if !l.same_building {
            return true;
        }
        let target = self
            .devices
            .configured(&l.device)
            .map(|d| d.location.building.as_str())
            .unwrap_or("");
        !target.is_empty() && target == alert.location.building
    }
}

fn link_action(name: &str, l: &Linkage) -> LinkAction {
    let write = match (l.coil, l.register) {
        (_, Some(address)) => Write::Register {
            address,
            value: l.value,
        },
        (Some(address), None) => Write::Coil {
            address,
            value: l.value != 0,
        },
        (None, None) => Write::Coil {
            address: 0,
            value: l.value != 0,
        },
    };
    LinkAction {
        rule: name.to_owned(),
        device: l.device.clone(),
        write,
    }
}
