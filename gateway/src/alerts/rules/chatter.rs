//! Chattering and folded repeats (`[alerts.chattering]`, issue 16): what a clear or a
//! reactivation does to an open alert.
//!
//! - **Activations** of one key (its alert's opening and every reactivation after a
//!   clear; for an `auto_close` code also the alerts opened anew) are remembered for
//!   `window`. The one that makes `activations` of them puts the alert into
//!   *chattering*: forwarded once (as the reactivation or opening it is, with a note),
//!   then its clears and reactivations go neither upstream nor on `…/alerts/changes`,
//!   and an `auto_close` code's alert is not closed by its clears. Once no activation
//!   came for `stable_for`, it leaves chattering: its state at that moment is forwarded
//!   (and a cleared `auto_close` alert is closed then).
//! - **Folded repeats.** An alert's first clear and first reactivation are audited one
//!   by one; after that (and always while chattering) clears and reactivations are
//!   counted on the alert (`Alert::unaudited`) and written as one `repeated` entry with
//!   the count, first and last time when the run ends: before any other entry of the
//!   alert (an acknowledgement, chattering starting or ending, a close), or after
//!   [`FOLD_FLUSH`] at the latest. Stored audit entries are never changed (they are to
//!   be hash-chained); the open run rides on the alert's own record, which is rewritten
//!   with every change anyway, so a crash loses none of it.
//! - **Shelved** alerts (`shelving.rs`) are quiet too, unless their code is life-safety:
//!   their transitions are counted (`Shelved::held_back`) instead of forwarded.
//!
//! Life-safety codes open their alert at the first report like any other; chattering
//! only keeps the later transitions of that one open alert from going out one by one.

use std::collections::VecDeque;

use estate_config::is_life_safety_code;
use estate_protocols::model::AlertChange;

use super::{audit, key_of_alert, ms, Effect, Engine, Key, BY_GATEWAY};
use crate::alerts::model::{Alert, Disposition, Repeats};

/// An open run of folded repeats is written to the audit trail after this long at the
/// latest (so a trail grows by at most 24 entries a day for an alert that never stops).
pub(super) const FOLD_FLUSH_MS: i64 = 3_600_000;

/// A clear or a reactivation of an open alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Transition {
    Reactivated,
    Cleared,
}

/// Recent activations per key, oldest first, at most `alerts.chattering.activations`.
pub(super) type Activations = std::collections::HashMap<Key, VecDeque<i64>>;

/// Whether `a`'s transitions stay local: chattering, or shelved (unless life-safety).
fn quiet(a: &Alert) -> bool {
    a.chattering || (a.shelved.is_some() && !is_life_safety_code(&a.code))
}

/// The folded run of `a` as an audit entry (and the run ended), if there is one.
pub(super) fn take_run(a: &mut Alert) -> Option<Effect> {
    let entry = a.unaudited.take()?.entry();
    Some(Effect::Alert {
        alert: a.clone(),
        audit: Some(entry),
        upstream: None,
    })
}

/// What goes upstream for `change` of `a`: nothing while it is quiet (counted when
/// shelved).
fn forward(a: &mut Alert, change: AlertChange) -> Option<AlertChange> {
    if !quiet(a) {
        return Some(change);
    }
    if !a.chattering {
        if let Some(s) = a.shelved.as_mut() {
            s.held_back += 1;
        }
    }
    None
}

/// The change that tells upstream where `a` stands now (after chattering or shelving).
pub(super) fn current_change(a: &Alert) -> AlertChange {
    if a.cleared {
        AlertChange::Cleared
    } else {
        AlertChange::Opened
    }
}

impl Engine {
    /// Counts an activation of `key` at `t`; returns the activations within the window.
    pub(super) fn record_activation(&mut self, key: &Key, t: i64) -> usize {
        let c = &self.cfg.chattering;
        let window = ms(c.window);
        let max = c.activations as usize;
        let d = self.activations.entry(key.clone()).or_default();
        d.push_back(t);
        while d.front().is_some_and(|&f| f <= t - window) || d.len() > max {
            d.pop_front();
        }
        d.len()
    }

    /// Whether `n` activations within the window make an alert chatter.
    pub(super) fn chatters(&self, n: usize) -> bool {
        n >= self.cfg.chattering.activations as usize
    }

    /// The audit entry of an alert that starts chattering with `n` activations.
    pub(super) fn chattering_entry(
        &self,
        n: usize,
        now_ms: i64,
    ) -> crate::alerts::model::AuditEntry {
        let c = &self.cfg.chattering;
        let note = format!(
            "{n} activations within {}: clears and reactivations are folded and not forwarded until none for {}",
            humantime::format_duration(c.window),
            humantime::format_duration(c.stable_for)
        );
        audit(now_ms, BY_GATEWAY, "chattering", &note)
    }

    /// A clear or a reactivation (by `code`) of the open alert of `key`, at `t`.
    pub(super) fn transition(
        &mut self,
        key: &Key,
        kind: Transition,
        code: &str,
        t: i64,
        now_ms: i64,
        out: &mut Vec<Effect>,
    ) {
        let in_window = match kind {
            Transition::Reactivated => self.record_activation(key, t),
            Transition::Cleared => 0,
        };
        let starts = kind == Transition::Reactivated && self.chatters(in_window);
        let entry = starts.then(|| self.chattering_entry(in_window, now_ms));
        let Some(a) = self.by_key.get(key).and_then(|id| self.open.get_mut(id)) else {
            return;
        };
        let (change, action) = match kind {
            Transition::Reactivated => {
                a.cleared = false;
                a.cleared_ms = None;
                a.activations += 1;
                (AlertChange::Opened, "reactivated")
            }
            Transition::Cleared => {
                a.cleared = true;
                a.cleared_ms = Some(t);
                (AlertChange::Cleared, "cleared")
            }
        };
        if let (false, Some(entry)) = (a.chattering, entry) {
            // Entering chattering: the run so far, then the entry; forwarded once.
            out.extend(take_run(a));
            let upstream = forward(a, change);
            a.chattering = true;
            out.push(Effect::Alert {
                alert: a.clone(),
                audit: Some(entry),
                upstream,
            });
            return;
        }
        let fold = a.chattering
            || match kind {
                Transition::Cleared => a.activations >= 2,
                Transition::Reactivated => a.activations >= 3,
            };
        let audit = if fold {
            let r = a.unaudited.get_or_insert(Repeats {
                reactivated: 0,
                cleared: 0,
                first_ms: now_ms,
                last_ms: now_ms,
            });
            match kind {
                Transition::Reactivated => r.reactivated += 1,
                Transition::Cleared => r.cleared += 1,
            }
            r.last_ms = now_ms;
            None
        } else {
            let note = match kind {
                Transition::Reactivated => code,
                Transition::Cleared => "condition cleared",
            };
            Some(audit(now_ms, BY_GATEWAY, action, note))
        };
        let upstream = forward(a, change);
        out.push(Effect::Alert {
            alert: a.clone(),
            audit,
            upstream,
        });
    }

    /// Time passed: chattering alerts stable for `stable_for` leave chattering, runs
    /// older than [`FOLD_FLUSH_MS`] are written, and old activations are forgotten.
    pub(super) fn settle_chattering(&mut self, now_ms: i64, out: &mut Vec<Effect>) {
        let c = self.cfg.chattering.clone();
        let stable = ms(c.stable_for);
        let mut settled: Vec<String> = Vec::new();
        let mut flush: Vec<String> = Vec::new();
        for a in self.open.values() {
            if a.unaudited
                .is_some_and(|r| now_ms - r.first_ms >= FOLD_FLUSH_MS)
            {
                flush.push(a.id.clone());
            }
            if a.chattering {
                let key = key_of_alert(a, &self.gateway_id);
                let last = self
                    .activations
                    .get(&key)
                    .and_then(|d| d.back().copied())
                    .unwrap_or(a.last_seen_ms);
                if now_ms - last >= stable {
                    settled.push(a.id.clone());
                }
            }
        }
        settled.sort();
        flush.sort();
        for id in flush.iter().filter(|id| !settled.contains(id)) {
            if let Some(a) = self.open.get_mut(id) {
                out.extend(take_run(a));
            }
        }
        for id in settled {
            self.leave_chattering(&id, now_ms, out);
        }
        let keep = ms(c.window).max(stable);
        self.activations
            .retain(|_, d| d.back().is_some_and(|&b| now_ms - b < keep));
    }

    /// `id` has been stable: it leaves chattering, says where it stands upstream, and a
    /// cleared `auto_close` alert closes.
    fn leave_chattering(&mut self, id: &str, now_ms: i64, out: &mut Vec<Effect>) {
        let stable_for = self.cfg.chattering.stable_for;
        let auto_close = self
            .open
            .get(id)
            .is_some_and(|a| a.cleared && self.cfg.auto_close.contains(&a.code));
        let Some(a) = self.open.get_mut(id) else {
            return;
        };
        out.extend(take_run(a));
        a.chattering = false;
        let note = format!(
            "no activation for {}; {} activations in all",
            humantime::format_duration(stable_for),
            a.activations
        );
        let upstream = if auto_close {
            None
        } else {
            forward(a, current_change(a))
        };
        out.push(Effect::Alert {
            alert: a.clone(),
            audit: Some(audit(now_ms, BY_GATEWAY, "chattering_ended", &note)),
            upstream,
        });
        if auto_close {
            let note = "condition cleared (alerts.auto_close), after chattering";
            self.close_alert(id, BY_GATEWAY, Disposition::AutoCleared, note, now_ms, out);
        }
    }
}
