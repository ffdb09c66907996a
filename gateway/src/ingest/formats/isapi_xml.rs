//! Hikvision ISAPI `EventNotificationAlert` XML, the body a camera or NVR pushes to its
//! "alarm host" over HTTP (`ingest/camera_push/` receives it):
//!
//! ```xml
//! <EventNotificationAlert version="2.0" xmlns="http://www.isapi.org/ver20/XMLSchema">
//!   <ipAddress>192.168.1.64</ipAddress>  <macAddress>44:19:b6:6d:24:85</macAddress>
//!   <channelID>1</channelID>  <dateTime>2026-12-04T20:15:11+08:00</dateTime>
//!   <eventType>linedetection</eventType>  <eventState>active</eventState> …
//! </EventNotificationAlert>
//! ```
//!
//! Only the root's direct children that name the camera and the alarm are read; the
//! event-specific trees (`DetectionRegionList`, …) stay in the event's raw bytes. The
//! namespace and its version (`hikvision.com/ver10`, `isapi.org/ver20`) are ignored.
//! `channelID` may be empty (NVR keep-alives send `<channelID/>`); `dynChannelID` then
//! stands in. A `dateTime` that is not RFC 3339 (some firmwares leave out the offset) is
//! no reason to lose an intrusion alarm: the event then has no device time, and the raw
//! bytes keep what was sent. What the alarm means (code, fold, clear) is
//! [`super::isapi`]'s, shared with the JSON format. Pure: bytes in, an [`Alert`] or a
//! [`DecodeError`] out. Documented samples: `tests/fixtures/isapi/`.

use quick_xml::events::Event;
use quick_xml::Reader;

use super::decoded::{DecodeError, DecodeReason};
use super::isapi::code_of;

/// The name decode errors start with.
pub const FORMAT: &str = "isapi-xml";

pub use super::isapi::Alert;

fn err(reason: DecodeReason, detail: impl AsRef<str>) -> DecodeError {
    DecodeError::new(reason, format!("{FORMAT}: {}", detail.as_ref()))
}

/// The direct children of the root that are read.
#[derive(Debug, Default)]
struct Fields {
    ip: Option<String>,
    mac: Option<String>,
    channel: Option<String>,
    dyn_channel: Option<String>,
    date_time: Option<String>,
    event_type: Option<String>,
    event_state: Option<String>,
}

impl Fields {
    fn slot(&mut self, name: &[u8]) -> Option<&mut Option<String>> {
        Some(match name {
            b"ipAddress" => &mut self.ip,
            b"macAddress" => &mut self.mac,
            b"channelID" => &mut self.channel,
            b"dynChannelID" => &mut self.dyn_channel,
            b"dateTime" => &mut self.date_time,
            b"eventType" => &mut self.event_type,
            b"eventState" => &mut self.event_state,
            _ => return None,
        })
    }
}

/// 1-based line and column of byte `pos` in `text`.
fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..pos.min(text.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let col = before.len()
        - before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1)
        + 1;
    (line, col)
}

/// A root element (`name`) is the first one and an `<EventNotificationAlert>`.
fn check_root(name: &[u8], root_seen: bool) -> Result<(), DecodeError> {
    if root_seen {
        return Err(err(
            DecodeReason::BadXml,
            "a second root element after </EventNotificationAlert>",
        ));
    }
    if name != b"EventNotificationAlert" {
        return Err(err(
            DecodeReason::BadXml,
            format!(
                "the root element is <{}>, not <EventNotificationAlert>",
                String::from_utf8_lossy(name)
            ),
        ));
    }
    Ok(())
}

/// Reads the root's direct children (their text) from `xml`.
fn read_fields(xml: &[u8]) -> Result<Fields, DecodeError> {
    let text = std::str::from_utf8(xml).map_err(|e| {
        err(
            DecodeReason::InvalidUtf8,
            format!("not UTF-8 (byte {} is not)", e.valid_up_to()),
        )
    })?;
    let mut reader = Reader::from_str(text);
    reader.config_mut().trim_text(true);
    let mut fields = Fields::default();
    let mut depth = 0usize;
    let mut root_seen = false;
    // The direct child being read and its text so far; `None` inside nested trees.
    let mut child: Option<(Vec<u8>, String)> = None;
    let syntax = |reader: &Reader<&[u8]>, e: &dyn std::fmt::Display| {
        let (line, col) = line_col(text, reader.error_position() as usize);
        err(
            DecodeReason::BadXml,
            format!("not well-formed XML at line {line}, column {col}: {e}"),
        )
    };
    loop {
        let event = reader.read_event().map_err(|e| syntax(&reader, &e))?;
        let opens = matches!(event, Event::Start(_));
        match event {
            Event::Start(e) | Event::Empty(e) if depth == 0 => {
                check_root(e.local_name().as_ref(), root_seen)?;
                root_seen = true;
                if opens {
                    depth = 1;
                }
            }
            Event::Start(e) => {
                child = (depth == 1).then(|| (e.local_name().as_ref().to_vec(), String::new()));
                depth += 1;
            }
            Event::Empty(e) if depth == 1 => {
                if let Some(slot) = fields.slot(e.local_name().as_ref()) {
                    slot.get_or_insert_with(String::new);
                }
            }
            Event::Empty(_) => {}
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                if depth == 1 {
                    if let Some((name, value)) = child.take() {
                        if let Some(slot) = fields.slot(&name) {
                            slot.get_or_insert(value);
                        }
                    }
                }
            }
            Event::Text(t) if depth == 2 => {
                if let Some((_, value)) = &mut child {
                    value.push_str(&t.unescape().map_err(|e| syntax(&reader, &e))?);
                }
            }
            Event::CData(c) if depth == 2 => {
                if let Some((_, value)) = &mut child {
                    value.push_str(&String::from_utf8_lossy(&c));
                }
            }
            Event::Text(t) if depth == 0 => {
                return Err(err(
                    DecodeReason::BadXml,
                    format!(
                        "text outside the root element: {:?}",
                        super::cut(&String::from_utf8_lossy(&t), 40)
                    ),
                ));
            }
            Event::DocType(_) => {
                return Err(err(
                    DecodeReason::BadXml,
                    "a <!DOCTYPE> is not accepted (cameras send none; it could declare entities)",
                ))
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !root_seen {
        return Err(err(
            DecodeReason::BadXml,
            "no <EventNotificationAlert> element (the body is empty or only a declaration)",
        ));
    }
    if depth > 0 {
        return Err(err(
            DecodeReason::BadXml,
            "the body ends before </EventNotificationAlert> (cut short?)",
        ));
    }
    Ok(fields)
}

/// Decodes one `EventNotificationAlert`; the error names what is wrong and where.
pub fn parse(xml: &[u8]) -> Result<Alert, DecodeError> {
    let f = read_fields(xml)?;
    let present = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let event_type = present(f.event_type).ok_or_else(|| {
        err(
            DecodeReason::BadField,
            "field \"eventType\" is missing or empty",
        )
    })?;
    let code = code_of(&event_type).map_err(|e| err(DecodeReason::BadField, e))?;
    let active = match present(f.event_state).as_deref() {
        Some("active") => true,
        Some("inactive") => false,
        Some(other) => {
            return Err(err(
                DecodeReason::BadField,
                format!(
                    "field \"eventState\": expected \"active\" or \"inactive\", found {other:?}"
                ),
            ))
        }
        None => {
            return Err(err(
                DecodeReason::BadField,
                "field \"eventState\" is missing or empty",
            ))
        }
    };
    let channel = match present(f.channel).or(present(f.dyn_channel)) {
        None => None,
        Some(ch) => Some(ch.parse::<u64>().map_err(|_| {
            err(
                DecodeReason::BadField,
                format!("field \"channelID\": expected a channel number, found {ch:?}"),
            )
        })?),
    };
    let time_ms = present(f.date_time).and_then(|t| estate_protocols::rfc3339::parse_ms(&t));
    Ok(Alert {
        code,
        active,
        mac: present(f.mac),
        ip: present(f.ip),
        channel,
        time_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../tests/fixtures/isapi/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn alert(name: &str) -> Alert {
        parse(&sample(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    #[test]
    fn the_documented_samples_decode_to_their_codes_and_cameras() {
        let cases = [
            ("vmd.xml", "VID.MOTION", true, "bc:ad:28:5f:31:0a/1"),
            (
                "linedetection.xml",
                "VID.LINE_CROSS",
                true,
                "44:19:b6:6d:24:85/1",
            ),
            (
                "fielddetection.xml",
                "VID.INTRUSION",
                true,
                "44:19:b6:6d:24:9c/1",
            ),
            (
                "shelteralarm.xml",
                "VID.TAMPER",
                true,
                "c0:56:e3:a1:07:4e/1",
            ),
            ("videoloss.xml", "VID.LOSS", true, "c0:6d:ed:02:d3:d9/5"),
            (
                "videoloss-heartbeat.xml",
                "VID.LOSS",
                false,
                "c0:6d:ed:02:d3:d9",
            ),
        ];
        for (file, code, active, camera) in cases {
            let a = alert(file);
            assert_eq!((a.code, a.active), (code, active), "{file}");
            let id = super::super::isapi::camera_id(a.mac.as_deref(), a.ip.as_deref(), a.channel);
            assert_eq!(id.as_deref(), Some(camera), "{file}");
        }
        let a = alert("linedetection.xml");
        // 2026-12-04T21:05:42+08:00
        assert_eq!(a.time_ms, Some(1_796_389_542_000));
        assert_eq!(a.ip.as_deref(), Some("192.168.10.71"));
    }

    #[test]
    fn nested_trees_namespaces_and_empty_channels_do_not_confuse_the_fields() {
        let xml = br#"<?xml version="1.0"?>
<isapi:EventNotificationAlert xmlns:isapi="http://www.isapi.org/ver20/XMLSchema">
  <DetectionRegionList><DetectionRegionEntry><eventType>videoloss</eventType></DetectionRegionEntry></DetectionRegionList>
  <isapi:eventType>field&#100;etection</isapi:eventType>
  <eventState><![CDATA[active]]></eventState>
  <channelID></channelID><dynChannelID>6</dynChannelID>
  <ipAddress>10.1.2.3</ipAddress><dateTime>2026-12-04T21:05:42</dateTime>
</isapi:EventNotificationAlert>"#;
        let a = parse(xml).expect("decodes");
        assert_eq!(
            a.code, "VID.INTRUSION",
            "the nested eventType is not the alert's"
        );
        assert!(a.active);
        assert_eq!(
            a.channel,
            Some(6),
            "dynChannelID stands in for an empty channelID"
        );
        assert_eq!(a.mac, None);
        assert_eq!(a.time_ms, None, "no offset: no device time, still an alarm");
    }

    proptest::proptest! {
        /// Hostile bodies never panic: arbitrary bytes, and a sample with one byte changed.
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn a_sample_with_a_byte_changed_never_panics(at in 0usize..1177, byte in proptest::num::u8::ANY) {
            let mut xml = sample("fielddetection.xml");
            let i = at % xml.len();
            xml[i] = byte;
            let _ = parse(&xml);
        }
    }

    #[test]
    fn malformed_bodies_say_what_and_where() {
        let whole = sample("fielddetection.xml");
        let at_tag = String::from_utf8_lossy(&whole)
            .find("<DetectionRegionList>")
            .expect("tag");
        let cases: Vec<(Vec<u8>, DecodeReason, &str)> = vec![
            (whole[..at_tag].to_vec(), DecodeReason::BadXml, "ends before </EventNotificationAlert>"),
            (whole[..at_tag + 5].to_vec(), DecodeReason::BadXml, "not well-formed XML at line 14, column 1"),
            (b"<EventNotificationAlert><eventType>VMD</eventState></EventNotificationAlert>".to_vec(), DecodeReason::BadXml, "not well-formed XML at line 1, column"),
            (b"<ResponseStatus><statusCode>1</statusCode></ResponseStatus>".to_vec(), DecodeReason::BadXml, "the root element is <ResponseStatus>"),
            (b"{\"eventType\":\"VMD\"}".to_vec(), DecodeReason::BadXml, "text outside the root element"),
            (b"".to_vec(), DecodeReason::BadXml, "no <EventNotificationAlert> element"),
            (b"<!DOCTYPE x [<!ENTITY a \"b\">]><EventNotificationAlert/>".to_vec(), DecodeReason::BadXml, "DOCTYPE"),
            (b"<EventNotificationAlert><eventType>faceSnap</eventType><eventState>active</eventState></EventNotificationAlert>".to_vec(), DecodeReason::BadField, "\"faceSnap\" is not a known event type"),
            (b"<EventNotificationAlert><eventType>VMD</eventType><eventState>on</eventState></EventNotificationAlert>".to_vec(), DecodeReason::BadField, "field \"eventState\": expected \"active\" or \"inactive\", found \"on\""),
            (b"<EventNotificationAlert><eventType>VMD</eventType><eventState>active</eventState><channelID>one</channelID></EventNotificationAlert>".to_vec(), DecodeReason::BadField, "field \"channelID\": expected a channel number, found \"one\""),
            (b"<EventNotificationAlert><eventState>active</eventState></EventNotificationAlert>".to_vec(), DecodeReason::BadField, "field \"eventType\" is missing"),
            (b"<EventNotificationAlert>\xff</EventNotificationAlert>".to_vec(), DecodeReason::InvalidUtf8, "not UTF-8"),
        ];
        for (body, reason, needle) in cases {
            let e = parse(&body).expect_err(needle);
            assert_eq!(e.reason, reason, "{e}");
            assert!(e.detail.starts_with("isapi-xml: "), "{e}");
            assert!(e.detail.contains(needle), "{e}\nshould contain {needle}");
        }
    }
}
