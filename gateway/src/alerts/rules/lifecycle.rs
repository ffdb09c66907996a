//! An alert's life: opened by a report (with the linkage writes it asks for), then
//! acknowledged and closed by an operator or closed by the rules; the city's handling
//! attached to it on the way.

use estate_protocols::model::{AlertChange, AlertStatus, Event};
use estate_protocols::taxonomy;

use super::chatter::take_run;
use super::fold::Fold;
use super::key_of_alert;
use super::{audit, ActionError, Effect, Engine, Key, BY_GATEWAY};
use crate::alerts::model::{Acknowledged, Alert, CityHandling, Closed, Disposition};
use crate::hash::fnv1a;

impl Engine {
    /// An operator acknowledges an active alert.
    pub fn acknowledge(
        &mut self,
        id: &str,
        by: &str,
        note: &str,
        now_ms: i64,
    ) -> Result<Vec<Effect>, ActionError> {
        let a = self
            .open
            .get_mut(id)
            .ok_or_else(|| ActionError::NotOpen(id.to_owned()))?;
        if a.status != AlertStatus::Active {
            return Err(ActionError::Invalid(format!(
                "alert {id} is {}, only an active alert can be acknowledged",
                a.status.as_str()
            )));
        }
        let mut out: Vec<Effect> = take_run(a).into_iter().collect();
        a.status = AlertStatus::Acknowledged;
        a.acknowledged = Some(Acknowledged {
            by: by.to_owned(),
            at_ms: now_ms,
            note: note.to_owned(),
        });
        out.push(Effect::Alert {
            alert: a.clone(),
            audit: Some(audit(now_ms, by, "acknowledged", note)),
            upstream: Some(AlertChange::Acknowledged),
        });
        Ok(out)
    }

    /// An operator closes an open alert with a disposition.
    pub fn close(
        &mut self,
        id: &str,
        by: &str,
        disposition: Disposition,
        note: &str,
        now_ms: i64,
    ) -> Result<Vec<Effect>, ActionError> {
        if !self.open.contains_key(id) {
            return Err(ActionError::NotOpen(id.to_owned()));
        }
        let mut out = Vec::new();
        self.close_alert(id, by, disposition, note, now_ms, &mut out);
        Ok(out)
    }

    /// The city's handling state, attached to an open alert (issue 14). Nothing goes
    /// upstream: the city set it. `None` when the alert is not open (the caller attaches
    /// it to the stored alert).
    pub fn city_handling(&mut self, alert_id: &str, city: CityHandling) -> Option<Effect> {
        let a = self.open.get_mut(alert_id)?;
        Some(city_effect(a, city))
    }

    /// Opens the alert `ev` reported (under `key`), and asks for its linkage writes.
    pub(super) fn open_alert(
        &mut self,
        key: Key,
        ev: &Event,
        fold: Fold,
        now_ms: i64,
        out: &mut Vec<Effect>,
    ) {
        let mut alert = self.new_alert(ev, fold);
        let id = alert.id.clone();
        let links = self.links_for(&alert);
        // An `auto_close` code's alerts open anew at each activation: the one that makes
        // it chatter stays open (see chatter.rs).
        let in_window = self.record_activation(&key, ev.gateway_time_ms);
        let chattering = self
            .chatters(in_window)
            .then(|| self.chattering_entry(in_window, now_ms));
        self.by_key.insert(key, id.clone());
        let opened = audit(now_ms, BY_GATEWAY, "opened", &format!("seq {}", ev.seq));
        out.push(Effect::Alert {
            alert: alert.clone(),
            audit: Some(opened),
            upstream: Some(AlertChange::Opened),
        });
        if let Some(entry) = chattering {
            alert.chattering = true;
            out.push(Effect::Alert {
                alert: alert.clone(),
                audit: Some(entry),
                upstream: None,
            });
        }
        self.open.insert(id.clone(), alert);
        for action in links {
            out.push(Effect::Link {
                alert_id: id.clone(),
                action,
            });
        }
    }

    /// The alert `ev` opens; what the event does not say comes from the device's config.
    fn new_alert(&self, ev: &Event, fold: Fold) -> Alert {
        let info = self.devices.configured(&ev.device_id);
        let first_seen = ev.gateway_time_ms;
        Alert {
            id: alert_id(first_seen, &ev.event_id, &ev.code),
            code: ev.code.clone(),
            title: taxonomy::title(&ev.code).to_owned(),
            severity: fold.severity.level(),
            status: AlertStatus::Active,
            cleared: false,
            escalated: false,
            device_id: ev.device_id.clone(),
            device_kind: ev
                .device_kind
                .or(info.map(|i| i.kind))
                .map(|k| k.as_str().to_owned()),
            device_name: info.map(|i| i.name.clone()).unwrap_or_default(),
            location: if ev.location.is_empty() {
                info.map(|i| i.location.clone()).unwrap_or_default()
            } else {
                ev.location.clone()
            },
            count: fold.count,
            first_seen_ms: first_seen,
            last_seen_ms: fold.last_seen_ms.max(first_seen),
            cleared_ms: None,
            acknowledged: None,
            closed: None,
            actions: Vec::new(),
            opened_by_seq: ev.seq,
            stored: ev.seq != 0,
            city: None,
            activations: 1,
            chattering: false,
            unaudited: None,
            shelved: None,
        }
    }

    pub(super) fn close_alert(
        &mut self,
        id: &str,
        by: &str,
        disposition: Disposition,
        note: &str,
        now_ms: i64,
        out: &mut Vec<Effect>,
    ) {
        let Some(mut a) = self.open.remove(id) else {
            return;
        };
        self.by_key.remove(&key_of_alert(&a, &self.gateway_id));
        if a.device_id == self.gateway_id {
            self.correlation.closed(&a);
        }
        out.extend(take_run(&mut a));
        a.shelved = None;
        a.chattering = false;
        a.status = AlertStatus::Closed;
        a.closed = Some(Closed {
            by: by.to_owned(),
            at_ms: now_ms,
            disposition,
            note: note.to_owned(),
        });
        let line = format!("{}: {note}", disposition.as_str());
        out.push(Effect::Alert {
            alert: a,
            audit: Some(audit(now_ms, by, "closed", &line)),
            upstream: Some(AlertChange::Closed),
        });
    }
}

/// Attaches the city's handling to `a`, with its audit entry (`city`, by the issuer).
pub(crate) fn city_effect(a: &mut Alert, city: CityHandling) -> Effect {
    let note = if city.note.is_empty() {
        city.state.clone()
    } else {
        format!("{}: {}", city.state, city.note)
    };
    let entry = audit(city.at_ms, &city.by, "city", &note);
    a.city = Some(city);
    Effect::Alert {
        alert: a.clone(),
        audit: Some(entry),
        upstream: None,
    }
}

/// The id of the alert `code` opened by the event `event_id`: a ULID with the event's
/// time, and random bits taken from the event's own (ULID) id mixed with the code. The
/// same event always opens the same alert id, so replaying events after a crash (see
/// `alerts::Alerts`) gives an alert the operator may already have seen the same id,
/// and one event opening two alerts (its own and a correlation) gives two ids.
fn alert_id(first_seen_ms: i64, event_id: &str, code: &str) -> String {
    let event_bits = ulid::Ulid::from_string(event_id)
        .map_or_else(|_| fnv1a(event_id.as_bytes()) as u128, |u| u.random());
    let code_bits = fnv1a(code.as_bytes()) as u128;
    ulid::Ulid::from_parts(
        u64::try_from(first_seen_ms).unwrap_or(0),
        event_bits ^ (code_bits << 16),
    )
    .to_string()
}
