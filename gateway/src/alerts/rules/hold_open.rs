//! Doors held open (`alerts.held_open_after`): a door reported open (`ACS.OPEN` active)
//! for that long raises `ACS.HELD_OPEN`; closing it clears that again.

use std::collections::HashMap;
use std::time::Duration;

use estate_protocols::model::{Event, EventState};

use super::{ms, Effect, Engine};

/// The doors reported open and the rule's delay.
#[derive(Debug)]
pub(super) struct Doors {
    /// `alerts.held_open_after`, in ms; `None` when the rule is off.
    after_ms: Option<i64>,
    /// Door → (open since, whether `ACS.HELD_OPEN` was raised).
    open: HashMap<String, (i64, bool)>,
}

impl Doors {
    pub(super) fn new(after: Option<Duration>) -> Self {
        Doors {
            after_ms: after.map(ms),
            open: HashMap::new(),
        }
    }

    /// A door reported open (or closed) at `t`. True when it closed after its
    /// `ACS.HELD_OPEN` was raised (that is to be cleared).
    fn report(&mut self, device: &str, state: EventState, t: i64) -> bool {
        match state {
            EventState::Active => {
                self.open.entry(device.to_owned()).or_insert((t, false));
                false
            }
            EventState::Cleared => matches!(self.open.remove(device), Some((_, true))),
        }
    }

    /// The doors open for `after_ms` by `now_ms` not raised yet; marks them raised.
    fn due(&mut self, now_ms: i64) -> Vec<String> {
        let Some(held) = self.after_ms else {
            return Vec::new();
        };
        let mut raise = Vec::new();
        for (device, (since, raised)) in self.open.iter_mut() {
            if !*raised && now_ms - *since >= held {
                *raised = true;
                raise.push(device.clone());
            }
        }
        raise
    }
}

impl Engine {
    /// `ACS.OPEN`, active or cleared.
    pub(super) fn door(&mut self, ev: &Event, t: i64, out: &mut Vec<Effect>) {
        if self.doors.report(&ev.device_id, ev.state, t) {
            let detail = serde_json::json!({"rule": "held_open_after", "closed": true});
            let e = self.device_event(
                &ev.device_id,
                "ACS.HELD_OPEN",
                EventState::Cleared,
                detail,
                t,
            );
            out.push(Effect::Raise(Box::new(e)));
        }
    }

    /// Doors open too long raise `ACS.HELD_OPEN`.
    pub(super) fn raise_held_open(&mut self, now_ms: i64, out: &mut Vec<Effect>) {
        let due = self.doors.due(now_ms);
        let held = self.doors.after_ms.unwrap_or_default();
        for device in due {
            let detail = serde_json::json!({"rule": "held_open_after", "after_ms": held});
            let e = self.device_event(&device, "ACS.HELD_OPEN", EventState::Active, detail, now_ms);
            out.push(Effect::Raise(Box::new(e)));
        }
    }
}
