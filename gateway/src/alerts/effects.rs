//! Carrying out the engine's effects ([`Alerts::apply`]): persist the alert changes with
//! the progress that caused them, then tell the world ([`Outputs`]: the live stream, the
//! alert topic, the uplink), raise events and start linkage writes.

use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::warn;

use estate_protocols::model::{AlertChange, Event};

use super::linkage::{self, LinkDone, Linkage};
use super::model::{Alert, AuditEntry};
use super::publish::Publisher;
use super::rules::{self, Effect, Engine, LinkAction};
use super::updates::{self, Origin, Update};
use super::{Alerts, OpError};
use crate::store::StoreHandle;
use crate::telemetry::Metrics;

/// Where effects go besides the alert state.
pub(crate) struct Outputs {
    pub(crate) metrics: Arc<Metrics>,
    /// For the events the rules raise and the `ALERT.UPDATE`s going upstream.
    pub(crate) store: StoreHandle,
    pub(crate) linkage: Linkage,
    /// Finished linkage writes, back to the task loop.
    pub(crate) link_tx: mpsc::UnboundedSender<LinkDone>,
    /// The alert topic, when the ingest broker's settings load.
    pub(crate) publisher: Option<Publisher>,
    /// The active set changed since it was last published.
    pub(crate) active_dirty: bool,
    /// Alert changes go upstream (`alerts.forward`).
    pub(crate) forward: bool,
    pub(crate) origin: Origin,
}

impl Outputs {
    /// A transition: forwarded upstream (as an `ALERT.UPDATE` event through the store) and
    /// published on `…/alerts/changes`.
    async fn change(&mut self, alert: &Alert, change: AlertChange, by: &str, note: &str) {
        if self.forward {
            let ev = updates::upstream_event(&self.origin, alert, change, by, note);
            if let Err(err) = self.store.append_nowait(ev).await {
                warn!(error = %err, alert_id = %alert.id, "Could not queue an alert update for the uplink.");
            }
        }
        if let Some(p) = &self.publisher {
            p.change(updates::change_message(alert, change, by, note));
        }
    }

    /// The open alerts as one retained document on the alert topic, when they changed.
    pub(crate) fn publish_active(&mut self, engine: &Engine) {
        if !std::mem::take(&mut self.active_dirty) {
            return;
        }
        if let Some(p) = &self.publisher {
            p.active_set(updates::active_set(&self.origin, engine.open_alerts()));
        }
    }
}

/// A batch of effects, sorted by where each goes.
#[derive(Default)]
struct Sorted {
    /// Only the latest state of an alert is written; every audit entry is.
    changes: Vec<(Alert, Option<AuditEntry>)>,
    /// Transitions for upstream and `…/alerts/changes`: (alert, change, by, note).
    upstream: Vec<(Alert, AlertChange, String, String)>,
    raise: Vec<Event>,
    links: Vec<(String, LinkAction)>,
    devices_changed: bool,
}

impl Alerts {
    /// Carries out effects: persist (with `last_seq`), publish, raise, link.
    pub(crate) async fn apply(
        &mut self,
        effects: Vec<Effect>,
        last_seq: Option<u64>,
        out: &mut Outputs,
    ) -> Result<(), OpError> {
        let sorted = self.sort(effects, out);
        let stored = self.persist(&sorted, last_seq);
        for (a, _) in &sorted.changes {
            let _ = self.handle.updates.send(Update::Alert(Box::new(a.clone())));
        }
        if sorted.devices_changed {
            self.publish_devices();
        }
        for (alert, change, by, note) in sorted.upstream {
            out.change(&alert, change, &by, &note).await;
        }
        for ev in sorted.raise {
            if let Err(err) = out.store.append_nowait(ev).await {
                warn!(error = %err, "Could not raise an event from the alert rules.");
            }
        }
        for (alert_id, action) in sorted.links {
            linkage::spawn(&out.linkage, alert_id, action, out.link_tx.clone());
        }
        stored
    }

    /// Sorts effects by destination; device changes go out on the live stream at once.
    fn sort(&self, effects: Vec<Effect>, out: &mut Outputs) -> Sorted {
        let mut s = Sorted::default();
        for e in effects {
            match e {
                Effect::Alert {
                    alert,
                    audit,
                    upstream,
                } => {
                    if audit.as_ref().is_some_and(|a| a.action == "opened") {
                        out.metrics.alerts_opened.inc();
                        if let Ok(mut o) = self.handle.openings.lock() {
                            o.add(crate::events::now_ms());
                        }
                    }
                    if let Some(change) = upstream {
                        let (by, note) = audit
                            .as_ref()
                            .map(|a| (a.by.clone(), a.note.clone()))
                            .unwrap_or_default();
                        s.upstream.push((alert.clone(), change, by, note));
                    }
                    out.active_dirty = true;
                    s.changes.push((alert, audit));
                }
                Effect::Raise(ev) => s.raise.push(*ev),
                Effect::Link { alert_id, action } => s.links.push((alert_id, action)),
                Effect::Device(d) => {
                    s.devices_changed = true;
                    let _ = self.handle.updates.send(Update::Device(Box::new(d)));
                }
            }
        }
        s
    }

    /// Writes the alert changes with the progress that caused them, in one sled batch.
    fn persist(&mut self, sorted: &Sorted, last_seq: Option<u64>) -> Result<(), OpError> {
        let refs: Vec<(&Alert, Option<&AuditEntry>)> = sorted
            .changes
            .iter()
            .map(|(a, e)| (a, e.as_ref()))
            .collect();
        // Events that changed nothing (most of them) leave their progress for the next
        // tick: replaying them after a crash changes nothing either, and a sled write per
        // group commit costs memory while a backlog is stored (docs/footprint.md).
        let progress = if refs.is_empty() && sorted.raise.is_empty() && sorted.links.is_empty() {
            self.unsaved_progress = last_seq.or(self.unsaved_progress);
            None
        } else {
            last_seq.or(self.unsaved_progress.take())
        };
        let stored = if refs.is_empty() && progress.is_none() {
            Ok(())
        } else {
            self.store
                .write(&refs, progress)
                .map_err(|e| OpError::Store(e.to_string()))
        };
        match &stored {
            Ok(()) => {
                if let Some(seq) = progress {
                    self.store_progress(seq);
                }
            }
            Err(err) => {
                self.unsaved_progress = self.unsaved_progress.max(progress);
                warn!(error = %err, "Alert state not stored; it will be rebuilt from the events after a restart.")
            }
        }
        stored
    }

    /// Saves progress left by [`Alerts::apply`] for events that changed nothing.
    pub(crate) fn save_progress(&mut self) {
        let Some(seq) = self.unsaved_progress.take() else {
            return;
        };
        match self.store.write(&[], Some(seq)) {
            Ok(()) => self.store_progress(seq),
            Err(err) => {
                self.unsaved_progress = Some(seq);
                warn!(error = %err, "Alert progress not stored; the events after it are replayed after a restart.");
            }
        }
    }

    /// The store may now delete forwarded records up to `seq` (the engine will not need
    /// them for a replay).
    fn store_progress(&self, seq: u64) {
        self.store.reader().set_alerts_done(seq);
    }

    /// Shares the devices' statuses with the API.
    pub(crate) fn publish_devices(&self) {
        let d = self.engine.devices();
        match self.handle.devices.write() {
            Ok(mut w) => *w = d,
            Err(e) => *e.into_inner() = d,
        }
    }

    /// A finished linkage write, recorded on its alert (open, or closed meanwhile).
    pub(crate) async fn link_done(&mut self, done: LinkDone, out: &mut Outputs) {
        let effects = match self
            .engine
            .record_action(&done.alert_id, done.record.clone())
        {
            Some(e) => vec![e],
            None => self.record_on_closed(&done),
        };
        let _ = self.apply(effects, None, out).await;
    }

    /// A linkage result for an alert closed meanwhile: recorded on the stored alert.
    fn record_on_closed(&self, done: &LinkDone) -> Vec<Effect> {
        match self.store.get(&done.alert_id) {
            Ok(Some(mut a)) => {
                a.actions.push(done.record.clone());
                let note = format!(
                    "{} on {}: {}",
                    done.record.action, done.record.target, done.record.result
                );
                vec![Effect::Alert {
                    alert: a,
                    audit: Some(AuditEntry::new(
                        done.record.at_ms,
                        rules::BY_GATEWAY,
                        "action",
                        &note,
                    )),
                    upstream: Some(AlertChange::Action),
                }]
            }
            _ => Vec::new(),
        }
    }
}
