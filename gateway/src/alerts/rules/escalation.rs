//! Escalation (`[alerts.escalation]`): an alert still active (not acknowledged) `after`
//! its first report, at or below `max_severity` in urgency, rises one severity level,
//! once. A shelved alert does not escalate while shelved (`shelving.rs`).

use estate_protocols::model::{AlertChange, AlertStatus};

use super::{audit, ms, Effect, Engine, BY_GATEWAY};

impl Engine {
    /// Escalates the alerts left unacknowledged too long, in id order.
    pub(super) fn escalate(&mut self, now_ms: i64, out: &mut Vec<Effect>) {
        let Some(esc) = self.cfg.escalation.clone() else {
            return;
        };
        let after = ms(esc.after);
        let mut ids: Vec<String> = self
            .open
            .values()
            .filter(|a| {
                a.status == AlertStatus::Active
                    && !a.escalated
                    && a.shelved.is_none()
                    && a.severity <= esc.max_severity
                    && now_ms - a.first_seen_ms >= after
            })
            .map(|a| a.id.clone())
            .collect();
        ids.sort();
        for id in ids {
            let Some(a) = self.open.get_mut(&id) else {
                continue;
            };
            out.extend(super::chatter::take_run(a));
            let from = a.severity;
            a.severity = a.severity.saturating_sub(1).max(1);
            a.escalated = true;
            let note = format!(
                "not acknowledged within {}; severity {from} → {}",
                humantime::format_duration(esc.after),
                a.severity
            );
            out.push(Effect::Alert {
                alert: a.clone(),
                audit: Some(audit(now_ms, BY_GATEWAY, "escalated", &note)),
                upstream: Some(AlertChange::Escalated),
            });
        }
    }
}
