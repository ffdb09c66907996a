//! Correlation (`[alerts.correlation.*]`): reports of one of `codes` from at least
//! `min_devices` devices in the `same` place within `within` raise `raise` (e.g.
//! `FIRE.CONFIRMED`) once, for that place, until its alert closes.

use std::collections::{BTreeMap, HashMap, HashSet};

use estate_config::{Correlation, Scope};
use estate_protocols::model::{Event, EventState, Location};

use super::{ms, Effect, Engine, Key};
use crate::alerts::model::Alert;

/// (rule, scope value): one correlation window.
type Group = (String, String);

/// The rules, their windows and the correlations raised.
#[derive(Debug)]
pub(super) struct Correlations {
    rules: BTreeMap<String, Correlation>,
    /// Recent reports per window: (device, time).
    windows: HashMap<Group, Vec<(String, i64)>>,
    /// Correlations raised whose alert has not closed yet.
    fired: HashSet<Group>,
}

/// A correlation that holds: the code to raise, where, and why.
struct Confirmed {
    code: String,
    location: Location,
    detail: serde_json::Value,
}

impl Correlations {
    pub(super) fn new(rules: &BTreeMap<String, Correlation>) -> Self {
        Correlations {
            rules: rules.clone(),
            windows: HashMap::new(),
            fired: HashSet::new(),
        }
    }

    /// An active report at `t`: the correlations it completes. `raised` says whether an
    /// alert for a code at a place is open already (then it is not raised again).
    fn report(
        &mut self,
        ev: &Event,
        t: i64,
        raised: impl Fn(&str, &Location) -> bool,
    ) -> Vec<Confirmed> {
        let mut out = Vec::new();
        for (name, c) in self
            .rules
            .iter()
            .filter(|(_, c)| c.codes.contains(&ev.code))
        {
            let Some((scope_value, location)) = scope_of(&ev.location, c.same) else {
                continue;
            };
            let group = (name.clone(), scope_value);
            let within = ms(c.within);
            let v = self.windows.entry(group.clone()).or_default();
            v.retain(|(_, at)| t - *at <= within);
            v.push((ev.device_id.clone(), t));
            let mut devices: Vec<&str> = v.iter().map(|(d, _)| d.as_str()).collect();
            devices.sort_unstable();
            devices.dedup();
            if devices.len() < c.min_devices
                || self.fired.contains(&group)
                || raised(&c.raise, &location)
            {
                continue;
            }
            let detail = serde_json::json!({
                "rule": name,
                "devices": devices,
                "within_ms": within,
            });
            self.fired.insert(group);
            out.push(Confirmed {
                code: c.raise.clone(),
                location,
                detail,
            });
        }
        out
    }

    /// A gateway-raised alert closed: its correlation may fire again, from a fresh window.
    pub(super) fn closed(&mut self, a: &Alert) {
        for (name, c) in self.rules.iter().filter(|(_, c)| c.raise == a.code) {
            if let Some((v, _)) = scope_of(&a.location, c.same) {
                let group = (name.clone(), v);
                self.fired.remove(&group);
                self.windows.remove(&group);
            }
        }
    }

    /// Forgets the reports that left their window.
    pub(super) fn forget(&mut self, now_ms: i64) {
        let rules = &self.rules;
        self.windows.retain(|(rule, _), v| {
            let within = rules.get(rule).map_or(0, |c| ms(c.within));
            v.retain(|(_, t)| now_ms - *t <= within);
            !v.is_empty()
        });
    }
}

impl Engine {
    /// An active report: raises the correlations it completes.
    pub(super) fn correlate(&mut self, ev: &Event, t: i64, out: &mut Vec<Effect>) {
        let gateway = self.gateway_id.clone();
        let by_key = &self.by_key;
        let confirmed = self.correlation.report(ev, t, |code, location| {
            let key: Key = (gateway.clone(), code.to_owned(), location.to_string());
            by_key.contains_key(&key)
        });
        for c in confirmed {
            let mut e = self.gateway_raised(&c.code, EventState::Active, c.detail, t);
            e.location = c.location;
            out.push(Effect::Raise(Box::new(e)));
        }
    }
}

/// The value of the location part `same` names, and a location holding only that part;
/// `None` when the event's location lacks it (it cannot be correlated by place).
fn scope_of(l: &Location, same: Scope) -> Option<(String, Location)> {
    let mut out = Location::default();
    let v = match same {
        Scope::Estate => return Some((String::new(), out)),
        Scope::Building => {
            out.building = l.building.clone();
            l.building.clone()
        }
        Scope::Unit => {
            out.building = l.building.clone();
            out.unit = l.unit.clone();
            if l.unit.is_empty() {
                String::new()
            } else {
                format!("{}/{}", l.building, l.unit)
            }
        }
        Scope::Floor => {
            out.building = l.building.clone();
            out.unit = l.unit.clone();
            out.floor = l.floor.clone();
            if l.floor.is_empty() {
                String::new()
            } else {
                format!("{}/{}/{}", l.building, l.unit, l.floor)
            }
        }
        Scope::Zone => {
            out.zone = l.zone.clone();
            l.zone.clone()
        }
    };
    (!v.is_empty()).then_some((v, out))
}
