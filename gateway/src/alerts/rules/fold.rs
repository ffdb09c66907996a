//! Folding and debounce: what an active or cleared report does to its alert. Severity
//! overrides (`alerts.severity`, `alerts.device_severity`) and `min_severity` decide
//! whether it is an alert at all; a repeat folds into the open alert with the same key
//! (counted); `alerts.debounce` holds a condition back until it has lasted; a clear marks
//! the alert cleared, or closes it for the codes in `alerts.auto_close`.

use estate_protocols::model::{Event, Severity};

use super::chatter::Transition;
use super::{ms, Effect, Engine, Key, BY_GATEWAY};
use crate::alerts::model::Disposition;

/// What an alert opens with: its severity and the reports folded into it so far.
#[derive(Debug, Clone, Copy)]
pub(super) struct Fold {
    pub(super) severity: Severity,
    pub(super) count: u64,
    pub(super) last_seen_ms: i64,
}

/// A debounced condition, not an alert yet.
#[derive(Debug, Clone)]
pub(super) struct PendingAlert {
    due_ms: i64,
    event: Box<Event>,
    fold: Fold,
}

impl Engine {
    /// The key of `code` reported by `ev` (the gateway's own alerts fold per place).
    pub(super) fn key(&self, code: &str, ev: &Event) -> Key {
        let place = if ev.device_id == self.gateway_id {
            ev.location.to_string()
        } else {
            String::new()
        };
        (ev.device_id.clone(), code.to_owned(), place)
    }

    fn severity_for(&self, ev: &Event) -> Severity {
        let level = self
            .cfg
            .device_severity
            .get(&ev.device_id)
            .and_then(|m| m.get(&ev.code))
            .or_else(|| self.cfg.severity.get(&ev.code))
            .copied();
        level.and_then(Severity::from_level).unwrap_or(ev.severity)
    }

    /// An active report: folds into its open alert, waits out its debounce, or opens one.
    pub(super) fn activate(
        &mut self,
        key: Key,
        ev: &Event,
        t: i64,
        now_ms: i64,
        out: &mut Vec<Effect>,
    ) {
        let severity = self.severity_for(ev);
        if severity.level() > self.cfg.min_severity || self.silences.covers(ev, t) {
            return;
        }
        if self.fold_repeat(&key, ev, t, now_ms, out) {
            return;
        }
        let fold = Fold {
            severity,
            count: 1,
            last_seen_ms: t,
        };
        if let Some(d) = self.cfg.debounce.get(&ev.code).copied() {
            let p = self.pending.entry(key).or_insert_with(|| PendingAlert {
                due_ms: t + ms(d),
                event: Box::new(ev.clone()),
                fold: Fold { count: 0, ..fold },
            });
            p.fold.count += 1;
            p.fold.last_seen_ms = p.fold.last_seen_ms.max(t);
            return;
        }
        self.open_alert(key, ev, fold, now_ms, out);
    }

    /// Folds a repeat into the open alert of `key`, reactivating it if it had cleared.
    /// False when no alert of `key` is open.
    fn fold_repeat(
        &mut self,
        key: &Key,
        ev: &Event,
        t: i64,
        now_ms: i64,
        out: &mut Vec<Effect>,
    ) -> bool {
        let Some(a) = self.by_key.get(key).and_then(|id| self.open.get_mut(id)) else {
            return false;
        };
        if !a.stored {
            // While the alert is not stored its events are redeliveries of the one that
            // opened it as often as repeats: not counted. The first one stored stands in
            // for it.
            if ev.seq != 0 {
                a.stored = true;
                a.opened_by_seq = ev.seq;
            }
        } else {
            a.count += 1;
        }
        a.last_seen_ms = a.last_seen_ms.max(t);
        if a.cleared {
            self.transition(key, Transition::Reactivated, &ev.code, t, now_ms, out);
        } else {
            out.push(Effect::Alert {
                alert: a.clone(),
                audit: None,
                upstream: None,
            });
        }
        true
    }

    /// Debounced conditions that lasted open their alerts.
    pub(super) fn open_debounced(&mut self, now_ms: i64, out: &mut Vec<Effect>) {
        let due: Vec<Key> = self
            .pending
            .iter()
            .filter(|(_, p)| p.due_ms <= now_ms)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            if let Some(p) = self.pending.remove(&key) {
                self.open_alert(key, &p.event, p.fold, now_ms, out);
            }
        }
    }

    /// The condition of `key` ended at `t`: its alert is cleared (or auto-closed).
    pub(super) fn clear(&mut self, key: &Key, t: i64, now_ms: i64, out: &mut Vec<Effect>) {
        let Some(id) = self.by_key.get(key).cloned() else {
            return;
        };
        let Some(a) = self.open.get_mut(&id) else {
            return;
        };
        if a.cleared {
            return;
        }
        if self.cfg.auto_close.contains(&a.code) && !a.chattering {
            a.cleared = true;
            a.cleared_ms = Some(t);
            let note = "condition cleared (alerts.auto_close)";
            self.close_alert(&id, BY_GATEWAY, Disposition::AutoCleared, note, now_ms, out);
        } else {
            self.transition(key, Transition::Cleared, "", t, now_ms, out);
        }
    }
}
