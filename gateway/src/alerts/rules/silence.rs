//! Silence windows (`[alerts.silence.*]`): while one is in force, the events it names
//! (by device, code and building; an empty list names all) open no alert.

use std::collections::BTreeMap;

use estate_config::Silence;
use estate_protocols::model::Event;

/// The configured windows with a valid time span: (from, until, window), Unix ms.
#[derive(Debug, Default)]
pub(super) struct Silences(Vec<(i64, i64, Silence)>);

impl Silences {
    pub(super) fn new(cfg: &BTreeMap<String, Silence>) -> Self {
        Silences(
            cfg.values()
                .filter_map(|s| s.window_ms().map(|(f, u)| (f, u, s.clone())))
                .collect(),
        )
    }

    /// Whether a window in force at `t` names `ev`.
    pub(super) fn covers(&self, ev: &Event, t: i64) -> bool {
        self.0.iter().any(|(from, until, s)| {
            *from <= t
                && t < *until
                && (s.devices.is_empty() || s.devices.contains(&ev.device_id))
                && (s.codes.is_empty() || s.codes.contains(&ev.code))
                && s.building
                    .as_ref()
                    .is_none_or(|b| *b == ev.location.building)
        })
    }
}
