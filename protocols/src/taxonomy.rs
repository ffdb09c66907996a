//! The event-code taxonomy (docs/protocol.md, "Event codes"): every code the gateway accepts, its default
//! severity, and whether it names a condition that has an end (`state` may be `cleared`).
//!
//! Extend, never rename: codes are part of the uplink contract.

use crate::model::{DeviceKind, Severity};

/// What the gateway knows about one event code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeInfo {
    /// The code as it travels, `FAMILY.NAME` (`"SMOKE.ALARM"`).
    pub code: &'static str,
    /// The default severity of events with this code (`DEV.OFFLINE` of a life-safety device
    /// is major instead: [`default_severity`]).
    pub severity: Severity,
    /// True for conditions that end (a leak, a fault); false for momentary events.
    pub stateful: bool,
    /// The device kind the code usually comes from, used when a device is unregistered.
    pub kind: Option<DeviceKind>,
    /// Human text, shown as an alert's title.
    pub title: &'static str,
    /// The same in Chinese, shown first by the web console (served by `GET /api/codes`).
    pub title_zh: &'static str,
}

const fn c(
    code: &'static str,
    severity: Severity,
    stateful: bool,
    kind: Option<DeviceKind>,
    title: &'static str,
    title_zh: &'static str,
) -> CodeInfo {
    CodeInfo {
        code,
        severity,
        stateful,
        kind,
        title,
        title_zh,
    }
}

use DeviceKind as K;
use Severity::{Critical as S1, Info as S4, Major as S2, Minor as S3};

/// Every known code. Sorted by family as in docs/protocol.md, "Event codes".
#[rustfmt::skip]
pub const CODES: &[CodeInfo] = &[
    c("FIRE.ALARM", S1, true, Some(K::FirePanel), "Fire alarm", "火警"),
    c("FIRE.MANUAL_CALL", S1, true, Some(K::ManualCallPoint), "Manual call point activated", "手动报警"),
    c("SMOKE.ALARM", S1, true, Some(K::Smoke), "Smoke detected", "烟感报警"),
    // Raised by the gateway's alert rules when detectors corroborate each other (e.g. two
    // smoke detectors in one building within a window).
    c("FIRE.CONFIRMED", S1, false, None, "Confirmed fire (several detectors)", "确认火警"),
    c("FIRE.SUPERVISORY", S2, true, Some(K::FirePanel), "Fire system supervisory condition", "消防监管"),
    c("SMOKE.TAMPER", S2, true, Some(K::Smoke), "Smoke detector tampered", "烟感被拆"),
    c("FIRE.FAULT", S3, true, Some(K::FirePanel), "Fire system fault", "消防故障"),
    c("FIRE.POWER_FAULT", S3, true, Some(K::FirePanel), "Fire system power fault", "消防电源故障"),
    c("FIRE.DISABLED", S3, true, Some(K::FirePanel), "Fire detection disabled", "消防屏蔽"),
    c("SMOKE.LOW_BATT", S3, true, Some(K::Smoke), "Smoke detector battery low", "烟感电量低"),
    c("SMOKE.DUST", S3, true, Some(K::Smoke), "Smoke detector needs cleaning", "烟感积尘"),
    // A detector's own fault (NB-IoT state code 5); added for issue 5.
    c("SMOKE.FAULT", S3, true, Some(K::Smoke), "Smoke detector fault", "烟感故障"),
    c("SMOKE.TEST", S4, false, Some(K::Smoke), "Smoke detector test", "烟感测试"),
    c("SMOKE.SILENCED", S4, false, Some(K::Smoke), "Smoke detector silenced", "烟感消音"),
    c("GAS.AL2", S1, true, Some(K::Gas), "Gas concentration high (AL2)", "燃气高报"),
    c("GAS.AL1", S2, true, Some(K::Gas), "Gas concentration raised (AL1)", "燃气低报"),
    c("GAS.FAULT", S3, true, Some(K::Gas), "Gas detector fault", "燃气探测器故障"),
    c("LEAK.ALARM", S2, true, Some(K::WaterLeak), "Water leak", "漏水报警"),
    c("LEAK.CABLE_BREAK", S3, true, Some(K::WaterLeak), "Leak sensing cable broken", "漏水线缆断开"),
    c("ACS.FORCED_OPEN", S1, true, Some(K::AccessControl), "Door forced open", "门被强行打开"),
    c("ACS.DURESS", S1, false, Some(K::AccessControl), "Duress code used", "胁迫开门"),
    c("ACS.TAMPER", S2, true, Some(K::AccessControl), "Access controller tampered", "门禁被拆"),
    c("ACS.HELD_OPEN", S3, true, Some(K::AccessControl), "Door held open", "门长时间未关"),
    c("ACS.TAILGATE", S3, false, Some(K::AccessControl), "Tailgating", "尾随进入"),
    c("ACS.INVALID_CRED", S4, false, Some(K::AccessControl), "Invalid credential", "无效卡"),
    c("ACS.OPEN", S4, true, Some(K::AccessControl), "Door open", "开门"),
    c("VID.INTRUSION", S2, true, Some(K::Camera), "Intrusion detected", "区域入侵"),
    c("VID.LINE_CROSS", S2, false, Some(K::Camera), "Line crossing", "越线"),
    c("VID.FIRE_LANE", S2, true, Some(K::Camera), "Fire lane obstructed", "消防通道占用"),
    c("VID.TAMPER", S2, true, Some(K::Camera), "Camera tampered", "摄像机遮挡"),
    c("VID.LOITER", S3, true, Some(K::Camera), "Loitering", "徘徊"),
    c("VID.LOSS", S3, true, Some(K::Camera), "Video signal lost", "视频丢失"),
    // Plain motion (camera VMD, an NVR's non-person object): information, not an alarm.
    c("VID.MOTION", S4, true, Some(K::Camera), "Motion detected", "移动侦测"),
    c("ELEV.TRAPPED", S1, true, Some(K::Elevator), "Passenger trapped in lift", "电梯困人"),
    c("ELEV.FAULT", S3, true, Some(K::Elevator), "Lift fault", "电梯故障"),
    c("SOS.PRESSED", S1, false, Some(K::EmergencyButton), "Emergency button pressed", "一键求助"),
    c("SOS.LOW_BATT", S3, true, Some(K::EmergencyButton), "Emergency button battery low", "求助按钮电量低"),
    c("DEV.OFFLINE", S3, true, None, "Device offline", "设备离线"),
    c("DEV.ONLINE", S4, false, None, "Device back online", "设备上线"),
    c("DEV.HEARTBEAT", S4, false, None, "Heartbeat", "心跳"),
    // Battery low / enclosure opened on a device whose family has no code of its own
    // (zigbee sensors, third-party devices); added for issue 5.
    c("DEV.LOW_BATT", S3, true, None, "Device battery low", "设备电量低"),
    c("DEV.TAMPER", S2, true, None, "Device tampered", "设备被拆"),
    // A value report (Modbus point reading), not an alert.
    c("DEV.READING", S4, false, None, "Reading", "读数"),
    c("GW.UPLINK_DOWN", S2, true, Some(K::Gateway), "Uplink to the city platform down", "上行中断"),
    // An event the uplink client refused even reduced to its envelope (issue 13): its seq
    // never arrives; this names it (seq, lane, code, device) so the gap is explained.
    c("GW.UPLINK_REFUSED", S2, false, Some(K::Gateway), "Event refused by the uplink, dead-lettered", "上行拒收，已转入死信"),
    c("GW.STORE_EVICTED", S2, false, Some(K::Gateway), "Stored events evicted (disk full)", "存储已清除旧数据"),
    c("GW.DISK_LOW", S2, true, Some(K::Gateway), "Gateway disk low", "磁盘空间不足"),
    // The store came back behind its high-water mark (issue 13): a new store_epoch
    // started; the detail names the old epoch and the seq range that was lost.
    c("GW.STORE_ROLLBACK", S2, false, Some(K::Gateway), "Store rolled back, new epoch started", "存储回退，已开始新纪元"),
    // The store could not be opened: moved aside, a fresh store (new epoch) started.
    c("GW.STORE_QUARANTINED", S2, false, Some(K::Gateway), "Store unreadable, quarantined, new epoch started", "存储损坏已隔离，已开始新纪元"),
    // A command from the city platform as received (issue 14, docs/uplink.md, "The city link"):
    // raw JSON {"command_id","issuer","kind","issued_at_ms","expires_at_ms","gateway_id"}.
    // The audit trail of the city link; never an alert.
    c("GW.COMMAND", S4, false, Some(K::Gateway), "Command from the city platform", "市级平台指令"),
    // The gateway's answer to one: {"command_id","kind","outcome","detail"} (and the
    // roll call's or resend's answer).
    c("GW.COMMAND_RESULT", S4, false, Some(K::Gateway), "Result of a city command", "市级平台指令结果"),
    // A write of a city broadcast (issue 14) to a configured output, its detail naming
    // the device, the write, the issuer and the result; a failed one is minor, so that
    // the person on duty sees it as an alert.
    c("GW.BROADCAST", S4, true, Some(K::Gateway), "Output switched by a city broadcast", "市级广播已切换输出"),
    c("GW.BROADCAST_FAILED", S3, false, Some(K::Gateway), "City broadcast write failed", "市级广播写入失败"),
    // The change of a local alert, carried upstream in `Event.alert` (always the alarms
    // lane: severity 1 for a critical alert, else 2). Never an alert itself.
    c("ALERT.UPDATE", S2, false, Some(K::Gateway), "Alert update", "告警更新"),
];

/// Human text for an event code, shown as an alert's title; `"Event"` for unknown codes.
pub fn title(code: &str) -> &'static str {
    lookup(code).map_or("Event", |i| i.title)
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
            assert!(!a.title.trim().is_empty(), "{} has no title", a.code);
            assert!(
                !a.title_zh.trim().is_empty(),
                "{} has no Chinese title",
                a.code
            );
            assert!(
                CODES[i + 1..].iter().all(|b| b.code != a.code),
                "{} listed twice",
                a.code
            );
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
