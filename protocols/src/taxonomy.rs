//! The event-code taxonomy (DESIGN.md): every code the gateway accepts, its default
//! severity, and whether it names a condition that has an end (`state` may be `cleared`).
//!
//! Extend, never rename: codes are part of the uplink contract.

use crate::model::{DeviceKind, Severity};

/// What the gateway knows about one event code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeInfo {
    pub code: &'static str,
    pub severity: Severity,
    /// True for conditions that end (a leak, a fault); false for momentary events.
    pub stateful: bool,
    /// The device kind the code usually comes from, used when a device is unregistered.
    pub kind: Option<DeviceKind>,
}

const fn c(
    code: &'static str,
    severity: Severity,
    stateful: bool,
    kind: Option<DeviceKind>,
) -> CodeInfo {
    CodeInfo {
        code,
        severity,
        stateful,
        kind,
    }
}

use DeviceKind as K;
use Severity::{Critical as S1, Info as S4, Major as S2, Minor as S3};

/// Every known code. Sorted by family as in DESIGN.md.
pub const CODES: &[CodeInfo] = &[
    c("FIRE.ALARM", S1, true, Some(K::FirePanel)),
    c("FIRE.MANUAL_CALL", S1, true, Some(K::ManualCallPoint)),
    c("SMOKE.ALARM", S1, true, Some(K::Smoke)),
    // Raised by the gateway's alert rules when detectors corroborate each other (e.g. two
    // smoke detectors in one building within a window).
    c("FIRE.CONFIRMED", S1, false, None),
    c("FIRE.SUPERVISORY", S2, true, Some(K::FirePanel)),
    c("SMOKE.TAMPER", S2, true, Some(K::Smoke)),
    c("FIRE.FAULT", S3, true, Some(K::FirePanel)),
    c("FIRE.POWER_FAULT", S3, true, Some(K::FirePanel)),
    c("FIRE.DISABLED", S3, true, Some(K::FirePanel)),
    c("SMOKE.LOW_BATT", S3, true, Some(K::Smoke)),
    c("SMOKE.DUST", S3, true, Some(K::Smoke)),
    // A detector's own fault (NB-IoT state code 5); added for issue 5.
    c("SMOKE.FAULT", S3, true, Some(K::Smoke)),
    c("SMOKE.TEST", S4, false, Some(K::Smoke)),
    c("SMOKE.SILENCED", S4, false, Some(K::Smoke)),
    c("GAS.AL2", S1, true, Some(K::Gas)),
    c("GAS.AL1", S2, true, Some(K::Gas)),
    c("GAS.FAULT", S3, true, Some(K::Gas)),
    c("LEAK.ALARM", S2, true, Some(K::WaterLeak)),
    c("LEAK.CABLE_BREAK", S3, true, Some(K::WaterLeak)),
    c("ACS.FORCED_OPEN", S1, true, Some(K::AccessControl)),
    c("ACS.DURESS", S1, false, Some(K::AccessControl)),
    c("ACS.TAMPER", S2, true, Some(K::AccessControl)),
    c("ACS.HELD_OPEN", S3, true, Some(K::AccessControl)),
    c("ACS.TAILGATE", S3, false, Some(K::AccessControl)),
    c("ACS.INVALID_CRED", S4, false, Some(K::AccessControl)),
    c("ACS.OPEN", S4, true, Some(K::AccessControl)),
    c("VID.INTRUSION", S2, true, Some(K::Camera)),
    c("VID.LINE_CROSS", S2, false, Some(K::Camera)),
    c("VID.FIRE_LANE", S2, true, Some(K::Camera)),
    c("VID.TAMPER", S2, true, Some(K::Camera)),
    c("VID.LOITER", S3, true, Some(K::Camera)),
    c("VID.LOSS", S3, true, Some(K::Camera)),
    // Plain motion (camera VMD, an NVR's non-person object): information, not an alarm.
    c("VID.MOTION", S4, true, Some(K::Camera)),
    c("ELEV.TRAPPED", S1, true, Some(K::Elevator)),
    c("ELEV.FAULT", S3, true, Some(K::Elevator)),
    c("SOS.PRESSED", S1, false, Some(K::EmergencyButton)),
    c("SOS.LOW_BATT", S3, true, Some(K::EmergencyButton)),
    c("DEV.OFFLINE", S3, true, None),
    c("DEV.ONLINE", S4, false, None),
    c("DEV.HEARTBEAT", S4, false, None),
    // Battery low / enclosure opened on a device whose family has no code of its own
    // (zigbee sensors, third-party devices); added for issue 5.
    c("DEV.LOW_BATT", S3, true, None),
    c("DEV.TAMPER", S2, true, None),
    // A value report (Modbus point reading), not an alert.
    c("DEV.READING", S4, false, None),
    c("GW.UPLINK_DOWN", S2, true, Some(K::Gateway)),
    c("GW.STORE_EVICTED", S2, false, Some(K::Gateway)),
    c("GW.DISK_LOW", S2, true, Some(K::Gateway)),
    // The change of a local alert, carried upstream in `Event.alert` (always the alarms
    // lane: severity 1 for a critical alert, else 2). Never an alert itself.
    c("ALERT.UPDATE", S2, false, Some(K::Gateway)),
];

/// Human text for an event code, shown as an alert's title.
pub fn title(code: &str) -> &'static str {
    match code {
        "FIRE.ALARM" => "Fire alarm",
        "FIRE.MANUAL_CALL" => "Manual call point activated",
        "SMOKE.ALARM" => "Smoke detected",
        "FIRE.CONFIRMED" => "Confirmed fire (several detectors)",
        "FIRE.SUPERVISORY" => "Fire system supervisory condition",
        "SMOKE.TAMPER" => "Smoke detector tampered",
        "FIRE.FAULT" => "Fire system fault",
        "FIRE.POWER_FAULT" => "Fire system power fault",
        "FIRE.DISABLED" => "Fire detection disabled",
        "SMOKE.LOW_BATT" => "Smoke detector battery low",
        "SMOKE.DUST" => "Smoke detector needs cleaning",
        "SMOKE.TEST" => "Smoke detector test",
        "SMOKE.SILENCED" => "Smoke detector silenced",
        "GAS.AL2" => "Gas concentration high (AL2)",
        "GAS.AL1" => "Gas concentration raised (AL1)",
        "GAS.FAULT" => "Gas detector fault",
        "LEAK.ALARM" => "Water leak",
        "LEAK.CABLE_BREAK" => "Leak sensing cable broken",
        "ACS.FORCED_OPEN" => "Door forced open",
        "ACS.DURESS" => "Duress code used",
        "ACS.TAMPER" => "Access controller tampered",
        "ACS.HELD_OPEN" => "Door held open",
        "ACS.TAILGATE" => "Tailgating",
        "ACS.INVALID_CRED" => "Invalid credential",
        "ACS.OPEN" => "Door open",
        "VID.INTRUSION" => "Intrusion detected",
        "VID.LINE_CROSS" => "Line crossing",
        "VID.FIRE_LANE" => "Fire lane obstructed",
        "VID.TAMPER" => "Camera tampered",
        "VID.LOITER" => "Loitering",
        "VID.LOSS" => "Video signal lost",
        "ELEV.TRAPPED" => "Passenger trapped in lift",
        "ELEV.FAULT" => "Lift fault",
        "SOS.PRESSED" => "Emergency button pressed",
        "SOS.LOW_BATT" => "Emergency button battery low",
        "DEV.OFFLINE" => "Device offline",
        "DEV.ONLINE" => "Device back online",
        "DEV.HEARTBEAT" => "Heartbeat",
        "DEV.READING" => "Reading",
        "GW.UPLINK_DOWN" => "Uplink to the city platform down",
        "GW.STORE_EVICTED" => "Stored events evicted (disk full)",
        "GW.DISK_LOW" => "Gateway disk low",
        "ALERT.UPDATE" => "Alert update",
        _ => "Event",
    }
}

/// Looks up a code; `None` for codes not in the taxonomy.
pub fn lookup(code: &str) -> Option<&'static CodeInfo> {
    CODES.iter().find(|i| i.code == code)
}

/// Default severity of `code` raised by a device of `kind`. `DEV.OFFLINE` is major (2)
/// for life-safety devices and minor (3) otherwise.
pub fn default_severity(info: &CodeInfo, kind: Option<DeviceKind>) -> Severity {
    if info.code == "DEV.OFFLINE" && kind.is_some_and(DeviceKind::is_life_safety) {
        Severity::Major
    } else {
        info.severity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_well_formed() {
        for (i, a) in CODES.iter().enumerate() {
            assert!(a.code.split_once('.').is_some(), "{} has no family", a.code);
            assert!(
                CODES[i + 1..].iter().all(|b| b.code != a.code),
                "{} listed twice",
                a.code
            );
        }
    }

    #[test]
    fn every_code_has_a_title() {
        for c in CODES {
            assert_ne!(title(c.code), "Event", "{} has no title", c.code);
        }
    }

    #[test]
    fn offline_is_major_for_life_safety_devices() {
        let off = lookup("DEV.OFFLINE").expect("known");
        assert_eq!(default_severity(off, Some(K::Smoke)), Severity::Major);
        assert_eq!(default_severity(off, Some(K::Camera)), Severity::Minor);
        assert_eq!(default_severity(off, None), Severity::Minor);
    }
}
