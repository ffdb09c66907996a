//! Shelving (`[alerts.shelving]`, issue 16): an operator puts a nuisance alert aside for
//! a bounded time with a reason; it stays open and visible (who, why, until when), makes
//! no sound, does not escalate, and its clears and reactivations are not forwarded one
//! by one (counted in `Shelved::held_back`; see `chatter.rs`). When the time is up the
//! gateway unshelves it, and if anything was held back its current state goes upstream.
//! A life-safety alert may be shelved only for `life_safety_max`, and its transitions
//! are forwarded even while shelved: shelving only quiets the console for it.

use estate_protocols::model::AlertChange;

use super::chatter::{current_change, take_run};
use super::{audit, ms, ActionError, Effect, Engine, BY_GATEWAY};
use crate::alerts::model::Shelved;

impl Engine {
    /// An operator shelves the open alert `id` for `for_ms` (at least a second, at most
    /// `alerts.shelving.max`, or `life_safety_max` for a life-safety code), saying why.
    /// Shelving a shelved alert again sets a new end.
    pub fn shelve(
        &mut self,
        id: &str,
        by: &str,
        for_ms: i64,
        reason: &str,
        now_ms: i64,
    ) -> Result<Vec<Effect>, ActionError> {
        let a = self
            .open
            .get_mut(id)
            .ok_or_else(|| ActionError::NotOpen(id.to_owned()))?;
        let max = self.cfg.shelving.max_for(&a.code);
        if !(1000..=ms(max)).contains(&for_ms) {
            let which = if estate_config::is_life_safety_code(&a.code) {
                format!(
                    "{} is a life-safety code: alerts.shelving.life_safety_max",
                    a.code
                )
            } else {
                "alerts.shelving.max".to_owned()
            };
            return Err(ActionError::Refused(format!(
                "`minutes` must be more than 0 and at most {} for this alert ({which}), found {}",
                max.as_secs_f64() / 60.0,
                for_ms as f64 / 60_000.0
            )));
        }
        if reason.trim().is_empty() {
            return Err(ActionError::Refused(
                "`reason` must say why the alert is shelved".into(),
            ));
        }
        let mut out: Vec<Effect> = take_run(a).into_iter().collect();
        let until_ms = now_ms.saturating_add(for_ms);
        let held_back = a.shelved.as_ref().map_or(0, |s| s.held_back);
        a.shelved = Some(Shelved {
            by: by.to_owned(),
            reason: reason.to_owned(),
            at_ms: now_ms,
            until_ms,
            held_back,
        });
        let note = format!(
            "for {}: {reason}",
            humantime::format_duration(std::time::Duration::from_millis(for_ms as u64))
        );
        out.push(Effect::Alert {
            alert: a.clone(),
            audit: Some(audit(now_ms, by, "shelved", &note)),
            upstream: None,
        });
        Ok(out)
    }

    /// An operator takes the alert `id` off the shelf before its time.
    pub fn unshelve(
        &mut self,
        id: &str,
        by: &str,
        now_ms: i64,
    ) -> Result<Vec<Effect>, ActionError> {
        let a = self
            .open
            .get(id)
            .ok_or_else(|| ActionError::NotOpen(id.to_owned()))?;
        if a.shelved.is_none() {
            return Err(ActionError::Invalid(format!("alert {id} is not shelved")));
        }
        let mut out = Vec::new();
        self.unshelve_alert(id, by, "", now_ms, &mut out);
        Ok(out)
    }

    /// Shelved alerts whose time is up are unshelved by the gateway.
    pub(super) fn expire_shelves(&mut self, now_ms: i64, out: &mut Vec<Effect>) {
        let mut due: Vec<String> = self
            .open
            .values()
            .filter(|a| a.shelved.as_ref().is_some_and(|s| s.until_ms <= now_ms))
            .map(|a| a.id.clone())
            .collect();
        due.sort();
        for id in due {
            self.unshelve_alert(&id, BY_GATEWAY, "shelving time is up", now_ms, out);
        }
    }

    fn unshelve_alert(
        &mut self,
        id: &str,
        by: &str,
        note: &str,
        now_ms: i64,
        out: &mut Vec<Effect>,
    ) {
        let Some(a) = self.open.get_mut(id) else {
            return;
        };
        let Some(s) = a.shelved.take() else {
            return;
        };
        out.extend(take_run(a));
        let mut line = String::new();
        if !note.is_empty() {
            line.push_str(note);
            line.push_str("; ");
        }
        line.push_str(&format!("shelved by {} ({})", s.by, s.reason));
        if s.held_back > 0 {
            line.push_str(&format!("; {} changes held back meanwhile", s.held_back));
        }
        let upstream: Option<AlertChange> =
            (s.held_back > 0 && !a.chattering).then(|| current_change(a));
        out.push(Effect::Alert {
            alert: a.clone(),
            audit: Some(audit(now_ms, by, "unshelved", &line)),
            upstream,
        });
    }
}
