//! Scenarios: which message the load generator sends as its `n`-th message. Pure.
//!
//! A run of `count` messages is laid out as:
//!
//! - `alarms` slots spread evenly over `1..=count`, each a `SMOKE.ALARM` (active) from the
//!   scenario's smoke detector;
//! - every other slot takes the next message of the scenario's stream: the scenario's
//!   opening script (e.g. a fire breaking out), routine telemetry, and its closing script
//!   (the incident clearing) as the last messages. When `count` is too small for both
//!   scripts, the opening wins.
//!
//! Every message carries `seq = n`, so a test can tell exactly which messages made it.

use anyhow::{bail, Result};
use estate_protocols::model::{DeviceKind, EventState};

use crate::estate::SimDevice;
use crate::native::NativeEvent;

/// What the simulated estate does during a run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Scenario {
    /// Routine traffic of severity 3–4: heartbeats (`DEV.HEARTBEAT` with battery % or a
    /// gas reading in %LEL), doors opening and closing, invalid cards, camera video loss.
    #[default]
    Telemetry,
    /// Every smoke detector in `building` goes into `SMOKE.ALARM`, then the fire panel
    /// raises `FIRE.ALARM` and the building's manual call point `FIRE.MANUAL_CALL`;
    /// telemetry follows, and the run ends with everything clearing.
    Fire {
        /// The building on fire, as in the devices' `location.building` (`"1"`).
        building: String,
    },
    /// Every water-leak detector raises `LEAK.ALARM` (with a leak distance); telemetry
    /// follows; the leak clears at the end.
    Leak,
    /// Telemetry with an incident (leak, forced door, SOS, low gas, intrusion, trapped
    /// lift, each raised and later cleared) every tenth message.
    Mixed,
}

impl Scenario {
    /// The name as `--scenario` spells it (and log lines show it): `"telemetry"`, `"fire"`,
    /// `"leak"` or `"mixed"`.
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Telemetry => "telemetry",
            Scenario::Fire { .. } => "fire",
            Scenario::Leak => "leak",
            Scenario::Mixed => "mixed",
        }
    }
}

/// One message of a plan: who sends it and what (with `seq` set, `ts` left to the sender).
#[derive(Debug, Clone, PartialEq)]
pub struct Planned<'a> {
    /// Index of `device` in [`Plan::devices`].
    pub index: usize,
    /// The device that sends it.
    pub device: &'a SimDevice,
    /// The message, with `seq` set to its position in the run (1-based).
    pub event: NativeEvent,
}

/// A scenario laid out over a run of `count` messages.
#[derive(Debug, Clone)]
pub struct Plan {
    devices: Vec<SimDevice>,
    count: u64,
    alarms: u64,
    /// Index into `devices` of the detector that sends the `alarms` slots.
    alarm_device: Option<usize>,
    head: Vec<(usize, NativeEvent)>,
    tail: Vec<(usize, NativeEvent)>,
    /// (device index, event) rotation for Mixed's incidents.
    incidents: Vec<(usize, NativeEvent)>,
}

fn ev(code: &str, state: EventState) -> NativeEvent {
    NativeEvent {
        state: Some(state),
        ..NativeEvent::new(code)
    }
}

fn with_value(mut e: NativeEvent, value: f64, unit: &str) -> NativeEvent {
    e.value = Some(value);
    e.unit = Some(unit.to_owned());
    e
}

/// A scenario's own messages (device index, event), besides telemetry and alarm slots.
#[derive(Default)]
struct Script {
    /// Sent first, in order.
    head: Vec<(usize, NativeEvent)>,
    /// Sent last, in order.
    tail: Vec<(usize, NativeEvent)>,
    /// Mixed's incidents, taken in rotation through the run.
    incidents: Vec<(usize, NativeEvent)>,
}

/// Indices of the devices of `kind`, in list order.
fn of_kind(devices: &[SimDevice], kind: DeviceKind) -> Vec<usize> {
    devices
        .iter()
        .enumerate()
        .filter(|(_, d)| d.kind == kind)
        .map(|(i, _)| i)
        .collect()
}

/// Index of the first device of `kind`.
fn first_of(devices: &[SimDevice], kind: DeviceKind) -> Option<usize> {
    of_kind(devices, kind).first().copied()
}

/// Fire in `building`: its smoke detectors, then the fire panel (the building's, or any),
/// then its manual call points go active; at the end all clear. Returns the first smoke
/// detector (it sends the alarm slots) with the script.
fn fire(devices: &[SimDevice], building: &str) -> Result<(usize, Script)> {
    use EventState::{Active, Cleared};
    let in_building = |kind| -> Vec<usize> {
        of_kind(devices, kind)
            .into_iter()
            .filter(|&i| devices[i].location.building == building)
            .collect()
    };
    let smokes = in_building(DeviceKind::Smoke);
    let Some(&first_smoke) = smokes.first() else {
        bail!("no smoke detector in building {building:?}");
    };
    let panel = in_building(DeviceKind::FirePanel)
        .first()
        .copied()
        .or_else(|| first_of(devices, DeviceKind::FirePanel));
    let mcps = in_building(DeviceKind::ManualCallPoint);
    let mut script = Script::default();
    for &s in &smokes {
        script.head.push((s, ev("SMOKE.ALARM", Active)));
    }
    if let Some(p) = panel {
        script.head.push((p, ev("FIRE.ALARM", Active)));
    }
    for &m in &mcps {
        script.head.push((m, ev("FIRE.MANUAL_CALL", Active)));
    }
    for &s in &smokes {
        script.tail.push((s, ev("SMOKE.ALARM", Cleared)));
    }
    for &m in &mcps {
        script.tail.push((m, ev("FIRE.MANUAL_CALL", Cleared)));
    }
    if let Some(p) = panel {
        script.tail.push((p, ev("FIRE.ALARM", Cleared)));
    }
    Ok((first_smoke, script))
}

/// Every water-leak detector raises `LEAK.ALARM` at 3.2 m first and clears it last.
fn leak(devices: &[SimDevice]) -> Result<Script> {
    use EventState::{Active, Cleared};
    let leaks = of_kind(devices, DeviceKind::WaterLeak);
    if leaks.is_empty() {
        bail!("no water-leak detector in the simulated estate");
    }
    let mut script = Script::default();
    for &l in &leaks {
        script
            .head
            .push((l, with_value(ev("LEAK.ALARM", Active), 3.2, "m")));
        script.tail.push((l, ev("LEAK.ALARM", Cleared)));
    }
    Ok(script)
}

/// One incident per kind present (leak, forced door, SOS, gas, intrusion, trapped lift),
/// from the first device of that kind: all raised, then all cleared.
fn mixed(devices: &[SimDevice]) -> Script {
    use EventState::{Active, Cleared};
    let pairs: [(DeviceKind, NativeEvent, NativeEvent); 6] = [
        (
            DeviceKind::WaterLeak,
            with_value(ev("LEAK.ALARM", Active), 3.2, "m"),
            ev("LEAK.ALARM", Cleared),
        ),
        (
            DeviceKind::AccessControl,
            ev("ACS.FORCED_OPEN", Active),
            ev("ACS.FORCED_OPEN", Cleared),
        ),
        (
            DeviceKind::EmergencyButton,
            ev("SOS.PRESSED", Active),
            // SOS.PRESSED is momentary; the pendant just checks in afterwards.
            with_value(NativeEvent::new("DEV.HEARTBEAT"), 90.0, "%"),
        ),
        (
            DeviceKind::Gas,
            with_value(ev("GAS.AL1", Active), 12.0, "%LEL"),
            with_value(ev("GAS.AL1", Cleared), 2.0, "%LEL"),
        ),
        (
            DeviceKind::Camera,
            ev("VID.INTRUSION", Active),
            ev("VID.INTRUSION", Cleared),
        ),
        (
            DeviceKind::Elevator,
            ev("ELEV.TRAPPED", Active),
            ev("ELEV.TRAPPED", Cleared),
        ),
    ];
    let mut script = Script::default();
    // Raise all, then clear all, so each incident stays open for a while.
    let present: Vec<_> = pairs
        .iter()
        .filter_map(|(k, a, c)| first_of(devices, *k).map(|i| (i, a, c)))
        .collect();
    script
        .incidents
        .extend(present.iter().map(|(i, a, _)| (*i, (*a).clone())));
    script
        .incidents
        .extend(present.iter().map(|(i, _, c)| (*i, (*c).clone())));
    script
}

impl Plan {
    /// Lays out `scenario` over `count` messages from `devices`. Fails when the scenario
    /// needs a device the list lacks (a smoke detector in the building on fire, a leak
    /// detector) or when `alarms > count`.
    pub fn new(
        scenario: &Scenario,
        devices: Vec<SimDevice>,
        count: u64,
        alarms: u64,
    ) -> Result<Plan> {
        if devices.is_empty() {
            bail!("the simulated estate has no devices");
        }
        if alarms > count {
            bail!("--alarms {alarms} is more than --count {count}");
        }
        let mut alarm_device = first_of(&devices, DeviceKind::Smoke);
        let script = match scenario {
            Scenario::Telemetry => Script::default(),
            Scenario::Fire { building } => {
                let (smoke, script) = fire(&devices, building)?;
                alarm_device = Some(smoke);
                script
            }
            Scenario::Leak => leak(&devices)?,
            Scenario::Mixed => mixed(&devices),
        };
        if alarms > 0 && alarm_device.is_none() {
            bail!("--alarms needs a smoke detector in the simulated estate");
        }
        Ok(Plan {
            devices,
            count,
            alarms,
            alarm_device,
            head: script.head,
            tail: script.tail,
            incidents: script.incidents,
        })
    }

    /// Messages in the run (payload `seq` 1..=count).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The devices the plan draws from, as given to [`Plan::new`] ([`Planned::index`]
    /// indexes them).
    pub fn devices(&self) -> &[SimDevice] {
        &self.devices
    }

    /// Number of alarm slots among messages `1..=n`.
    fn alarms_up_to(&self, n: u64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        // Slot j (1-based) sits at the middle of the j-th of `alarms` equal stretches,
        // so a run neither starts nor ends on an alarm slot unless it must.
        // u128: n * alarms may exceed u64 for huge runs.
        let c = u128::from(self.count);
        ((u128::from(n) * u128::from(self.alarms) + c / 2) / c) as u64
    }

    /// True when message `n` is one of the `alarms` evenly spread `SMOKE.ALARM`s.
    pub fn is_alarm_slot(&self, n: u64) -> bool {
        n >= 1 && self.alarms_up_to(n) != self.alarms_up_to(n - 1)
    }

    /// The `n`-th message (1-based, `n <= count`), with `seq = n`.
    pub fn message(&self, n: u64) -> Planned<'_> {
        let (device, mut event) = if self.is_alarm_slot(n) {
            // alarm_device is Some whenever alarms > 0 (checked in new()).
            let d = self.alarm_device.unwrap_or(0);
            (d, ev("SMOKE.ALARM", EventState::Active))
        } else {
            let k = n - self.alarms_up_to(n); // 1-based position in the scenario stream
            let m = self.count - self.alarms; // length of the scenario stream
            self.stream(k, m)
        };
        event.seq = Some(n);
        Planned {
            index: device,
            device: &self.devices[device],
            event,
        }
    }

    fn stream(&self, k: u64, m: u64) -> (usize, NativeEvent) {
        let head = self.head.len() as u64;
        let tail = self.tail.len() as u64;
        if k <= head {
            return self.head[(k - 1) as usize].clone();
        }
        let tail_start = m.saturating_sub(tail) + 1;
        if k >= tail_start && tail_start > head {
            return self.tail[(k - tail_start) as usize].clone();
        }
        if !self.incidents.is_empty() && k % 10 == 0 {
            let i = (k / 10 - 1) % self.incidents.len() as u64;
            return self.incidents[i as usize].clone();
        }
        self.telemetry(k)
    }

    /// Routine traffic: round-robin over the devices, each kind with its usual chatter.
    fn telemetry(&self, k: u64) -> (usize, NativeEvent) {
        let len = self.devices.len() as u64;
        let i = (k % len) as usize;
        let round = k / len; // how many times this device has spoken before
        let battery = 100.0 - (round % 20) as f64;
        let hb = || with_value(NativeEvent::new("DEV.HEARTBEAT"), battery, "%");
        let e = match self.devices[i].kind {
            DeviceKind::AccessControl => match round % 3 {
                0 => ev("ACS.OPEN", EventState::Active),
                1 => ev("ACS.OPEN", EventState::Cleared),
                _ => ev("ACS.INVALID_CRED", EventState::Active),
            },
            DeviceKind::Gas => with_value(
                NativeEvent::new("DEV.HEARTBEAT"),
                (round % 7) as f64 * 0.5,
                "%LEL",
            ),
            DeviceKind::Camera => match round % 4 {
                1 => ev("VID.LOSS", EventState::Active),
                3 => ev("VID.LOSS", EventState::Cleared),
                _ => NativeEvent::new("DEV.HEARTBEAT"),
            },
            _ => hb(),
        };
        (i, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::estate::demo_devices;
    use estate_protocols::model::Severity;
    use estate_protocols::taxonomy::lookup;

    fn codes(plan: &Plan) -> Vec<(String, String, Option<EventState>)> {
        (1..=plan.count())
            .map(|n| {
                let p = plan.message(n);
                assert_eq!(p.event.seq, Some(n));
                (p.device.id.clone(), p.event.code.clone(), p.event.state)
            })
            .collect()
    }

    #[test]
    fn alarms_are_exactly_k_and_spread_evenly() {
        let plan = Plan::new(&Scenario::Telemetry, demo_devices(), 1000, 10).expect("plan");
        let slots: Vec<u64> = (1..=1000).filter(|&n| plan.is_alarm_slot(n)).collect();
        assert_eq!(slots, (0..10).map(|i| 50 + i * 100).collect::<Vec<_>>());
        for n in slots {
            let p = plan.message(n);
            assert_eq!(
                (p.device.id.as_str(), p.event.code.as_str()),
                ("smoke-1-1-3", "SMOKE.ALARM")
            );
        }
        for count in 1..40 {
            for alarms in 0..=count {
                let plan = Plan::new(&Scenario::Leak, demo_devices(), count, alarms).expect("plan");
                let n = (1..=count).filter(|&n| plan.is_alarm_slot(n)).count() as u64;
                assert_eq!(n, alarms, "count {count} alarms {alarms}");
                for n in 1..=count {
                    plan.message(n); // never out of range
                }
            }
        }
        let all = Plan::new(&Scenario::Telemetry, demo_devices(), 7, 7).expect("plan");
        assert!((1..=7).all(|n| all.is_alarm_slot(n)));
        assert!(Plan::new(&Scenario::Telemetry, demo_devices(), 3, 4).is_err());
    }

    #[test]
    fn telemetry_is_minor_or_info_and_known() {
        let plan = Plan::new(&Scenario::Telemetry, demo_devices(), 500, 0).expect("plan");
        for (id, code, _) in codes(&plan) {
            let info = lookup(&code).unwrap_or_else(|| panic!("{code} is in the taxonomy"));
            assert!(info.severity >= Severity::Minor, "{id} {code}");
        }
    }

    #[test]
    fn fire_opens_with_the_building_and_clears_at_the_end() {
        let scenario = Scenario::Fire {
            building: "1".into(),
        };
        let plan = Plan::new(&scenario, demo_devices(), 20, 0).expect("plan");
        let c = codes(&plan);
        let first: Vec<_> = c[..3]
            .iter()
            .map(|(d, code, _)| (d.as_str(), code.as_str()))
            .collect();
        assert_eq!(
            first,
            [
                ("smoke-1-1-3", "SMOKE.ALARM"),
                ("panel-1", "FIRE.ALARM"),
                ("mcp-1-1", "FIRE.MANUAL_CALL")
            ]
        );
        let last: Vec<_> = c[17..]
            .iter()
            .map(|(d, code, s)| (d.as_str(), code.as_str(), *s))
            .collect();
        assert_eq!(
            last,
            [
                ("smoke-1-1-3", "SMOKE.ALARM", Some(EventState::Cleared)),
                ("mcp-1-1", "FIRE.MANUAL_CALL", Some(EventState::Cleared)),
                ("panel-1", "FIRE.ALARM", Some(EventState::Cleared)),
            ]
        );
        assert!(Plan::new(
            &Scenario::Fire {
                building: "9".into()
            },
            demo_devices(),
            20,
            0
        )
        .is_err());
    }

    #[test]
    fn short_runs_keep_the_opening() {
        let plan = Plan::new(&Scenario::Leak, demo_devices(), 1, 0).expect("plan");
        let p = plan.message(1);
        assert_eq!(
            (p.device.id.as_str(), p.event.code.as_str()),
            ("leak-b2-pump", "LEAK.ALARM")
        );
        assert_eq!(p.event.state, Some(EventState::Active));
    }

    #[test]
    fn mixed_raises_incidents_every_tenth_message() {
        let plan = Plan::new(&Scenario::Mixed, demo_devices(), 200, 0).expect("plan");
        let c = codes(&plan);
        assert_eq!(c[9].1, "LEAK.ALARM");
        assert_eq!(c[19].1, "ACS.FORCED_OPEN");
        assert_eq!(c[69].1, "LEAK.ALARM");
        assert_eq!(c[69].2, Some(EventState::Cleared));
        for (i, (id, code, _)) in c.iter().enumerate() {
            let sev = lookup(code).map(|info| info.severity);
            if (i + 1) % 10 != 0 {
                assert!(
                    sev >= Some(Severity::Minor),
                    "message {} {id} {code}",
                    i + 1
                );
            }
        }
    }
}
