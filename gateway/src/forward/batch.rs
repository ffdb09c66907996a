//! Pure: uplink batches that always fit one MQTT packet.
//!
//! A batch goes up as one QoS 1 PUBLISH: MQTT header, topic, packet id and the encoded
//! `EventBatch`. rumqttc refuses a packet above its `max_outgoing_packet_size`
//! (`uplink.max_packet_size`), and a broker drops the connection on one above its own
//! limit; either way a batch that is too big would be resent forever and hold up its lane
//! (issue 13). So [`pack`] fills a batch with whole events only while it stays within
//! [`Limits::max_payload`], the smaller of `uplink.max_batch_bytes` and what the packet
//! limit leaves after the topic and header ([`max_payload`]). An event too big for a
//! batch on its own goes alone, shortened by [`fit`]: its raw bytes first
//! (`raw_truncated`), then its free text, longest field first (`text_truncated`). What is
//! never cut (ids, code, seq, times, the alert's status) is small and bounded by the
//! config, so an event that still does not fit ([`Unfit`]) only happens with a packet
//! limit `check-config` rejects.

use prost::encoding::encoded_len_varint;
use prost::Message;

use estate_protocols::pb;

/// Size of a QoS 1 PUBLISH of `payload_len` bytes on a topic of `topic_len` bytes, the
/// way rumqttc computes it before refusing a packet (`Publish::size` with a packet id):
/// 1 byte of packet type, the remaining length (1–4 bytes, 7 bits each), the topic with
/// its 2-byte length, the 2-byte packet id, the payload.
pub fn publish_size(topic_len: usize, payload_len: usize) -> usize {
    let remaining = 2 + topic_len + 2 + payload_len;
    let len_len = match remaining {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    };
    1 + len_len + remaining
}

/// The largest payload whose publish on a topic of `topic_len` bytes fits in
/// `max_packet` (0 when not even an empty one does).
pub fn max_payload(topic_len: usize, max_packet: usize) -> usize {
    // Start from the worst case (a 4-byte remaining length) and grow by the bytes a
    // shorter length field leaves: at most 3 steps.
    let mut p = max_packet.saturating_sub(1 + 4 + 2 + topic_len + 2);
    while publish_size(topic_len, p + 1) <= max_packet {
        p += 1;
    }
    p
}

/// What bounds one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most events (`uplink.max_batch_events`).
    pub max_events: usize,
    /// Largest encoded `EventBatch`: `uplink.max_batch_bytes`, or less when the packet
    /// limit leaves less room after the lane's topic.
    pub max_payload: usize,
}

/// The fields every batch of one lane carries.
#[derive(Debug, Clone)]
pub struct Header {
    pub gateway_id: String,
    pub estate_id: String,
    pub boot_id: String,
    pub store_epoch: u64,
    pub lane: pb::Lane,
}

impl Header {
    /// The encoded size of a batch with no events, at its largest (seqs and the send time
    /// at their widest varints).
    fn bound(&self) -> usize {
        pb::EventBatch {
            first_seq: u64::MAX,
            last_seq: u64::MAX,
            ..self.batch(Vec::new(), -1)
        }
        .encoded_len()
    }

    fn batch(&self, events: Vec<pb::Event>, sent_at_ms: i64) -> pb::EventBatch {
        pb::EventBatch {
            gateway_id: self.gateway_id.clone(),
            estate_id: self.estate_id.clone(),
            boot_id: self.boot_id.clone(),
            store_epoch: self.store_epoch,
            first_seq: events.first().map_or(0, |e| e.seq),
            last_seq: events.last().map_or(0, |e| e.seq),
            lane: self.lane.into(),
            events,
            sent_at_ms,
        }
    }
}

/// One event forwarded shortened, for the log and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    pub seq: u64,
    pub code: String,
    /// Encoded size of the event as stored, and as sent.
    pub from: usize,
    pub to: usize,
    /// Free text was cut too, not only raw bytes.
    pub text: bool,
}

/// A batch ready to publish.
#[derive(Debug, Clone)]
pub struct Packed {
    pub batch: pb::EventBatch,
    /// The event sent shortened, if any (only ever a batch's single event).
    pub cut: Option<Cut>,
}

/// An event that does not fit in a batch even with its raw bytes and free text cut.
#[derive(Debug, Clone, PartialEq)]
pub struct Unfit {
    pub event: pb::Event,
    /// Its encoded size with everything cut, and the room a batch has for one event.
    pub size: usize,
    pub room: usize,
}

/// The next batch of a lane from `events` (its next events in seq order): the longest
/// prefix that fits `limits`, or the first event alone, shortened by [`fit`], when it is
/// too big for a batch by itself. The events left over are read again for the next batch.
/// `None` when `events` is empty.
pub fn pack(
    header: &Header,
    events: Vec<pb::Event>,
    limits: Limits,
    sent_at_ms: i64,
) -> Result<Option<Packed>, Box<Unfit>> {
    let header_len = header.bound();
    let mut size = header_len;
    let mut out: Vec<pb::Event> = Vec::new();
    let mut cut = None;
    for e in events {
        if out.len() >= limits.max_events.max(1) {
            break;
        }
        let len = e.encoded_len();
        let framed = 1 + encoded_len_varint(len as u64) + len;
        if size + framed <= limits.max_payload {
            size += framed;
            out.push(e);
            continue;
        }
        if out.is_empty() {
            let room = alone_room(header_len, limits.max_payload);
            let (e, c) = fit(e, room)?;
            cut = c;
            out.push(e);
        }
        break;
    }
    if out.is_empty() {
        return Ok(None);
    }
    let batch = header.batch(out, sent_at_ms);
    debug_assert!(batch.encoded_len() <= limits.max_payload.max(header_len));
    Ok(Some(Packed { batch, cut }))
}

/// The room one event has in a batch of at most `max_payload` bytes whose other fields
/// take `header_len`: its field tag (1 byte) and length prefix come off too.
fn alone_room(header_len: usize, max_payload: usize) -> usize {
    max_payload.saturating_sub(header_len + 1 + encoded_len_varint(max_payload as u64))
}

/// `e`, shortened until it encodes in at most `room` bytes: raw bytes first (keeping
/// their beginning, `raw_truncated` set), then free text ([`texts`]), the longest field
/// first and each kept up to a character boundary (`text_truncated` set). `Ok` with what
/// was cut, if anything.
pub fn fit(mut e: pb::Event, room: usize) -> Result<(pb::Event, Option<Cut>), Box<Unfit>> {
    let from = e.encoded_len();
    if from <= room {
        return Ok((e, None));
    }
    // Cutting n bytes of a field shrinks the event by at least n (its length prefix can
    // only get shorter), so one cut of the excess is enough while the field has it.
    // The flags are set before measuring: they take bytes too.
    if !e.raw.is_empty() {
        e.raw_truncated = true;
        let excess = e.encoded_len().saturating_sub(room);
        let keep = e.raw.len().saturating_sub(excess);
        e.raw.truncate(keep);
    }
    let mut text = false;
    loop {
        let len = e.encoded_len();
        if len <= room {
            break;
        }
        if !text {
            text = true;
            e.text_truncated = true;
            continue;
        }
        let excess = len - room;
        let Some(s) = texts(&mut e)
            .into_iter()
            .filter(|s| !s.is_empty())
            .max_by_key(|s| s.len())
        else {
            return Err(Box::new(Unfit {
                event: e,
                size: len,
                room,
            }));
        };
        let mut keep = s.len().saturating_sub(excess);
        while !s.is_char_boundary(keep) {
            keep -= 1;
        }
        s.truncate(keep);
    }
    let cut = Cut {
        seq: e.seq,
        code: e.code.clone(),
        from,
        to: e.encoded_len(),
        text,
    };
    Ok((e, Some(cut)))
}

/// `e` reduced to what identifies it and what happened: no raw bytes, no free text
/// (flagged as cut where there was any). What the forwarder sends of an event the uplink
/// refused when sent alone (see `forward/mod.rs`).
pub fn envelope(mut e: pb::Event) -> pb::Event {
    if !e.raw.is_empty() {
        e.raw = Default::default();
        e.raw_truncated = true;
    }
    let mut text = false;
    for s in texts(&mut e) {
        if !s.is_empty() {
            s.clear();
            text = true;
        }
    }
    if text {
        e.text_truncated = true;
    }
    e
}

/// The free-text fields the forwarder may shorten: everything a person or a device wrote
/// that the receiver needs no part of to identify the event or act on it.
fn texts(e: &mut pb::Event) -> Vec<&mut String> {
    let mut v = Vec::new();
    if let Some(a) = e.alert.as_mut() {
        v.extend([
            &mut a.note,
            &mut a.action_result,
            &mut a.action_target,
            &mut a.action,
            &mut a.by,
            &mut a.disposition,
        ]);
    }
    if let Some(s) = e.source.as_mut() {
        v.push(&mut s.reference);
    }
    if let Some(l) = e.location.as_mut() {
        v.extend([
            &mut l.zone,
            &mut l.room,
            &mut l.floor,
            &mut l.unit,
            &mut l.building,
        ]);
    }
    if let Some(r) = e.value.as_mut() {
        v.push(&mut r.unit);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header() -> Header {
        Header {
            gateway_id: "gw-demo-01".into(),
            estate_id: "31011500000000000001".into(),
            boot_id: "01JBOOT0000000000000000000".into(),
            store_epoch: u64::MAX / 3,
            lane: pb::Lane::Alarms,
        }
    }

    fn event(seq: u64, raw: usize) -> pb::Event {
        pb::Event {
            seq,
            event_id: "01JEVENT000000000000000000".into(),
            gateway_id: "gw-demo-01".into(),
            estate_id: "31011500000000000001".into(),
            device_id: "smoke-1-1-3".into(),
            code: "SMOKE.ALARM".into(),
            severity: pb::Severity::Critical.into(),
            state: pb::EventState::Active.into(),
            gateway_time_ms: 1_767_000_000_000,
            source: Some(pb::Source {
                protocol: "mqtt".into(),
                reference: "estate/31011500000000000001/smoke/smoke-1-1-3/event".into(),
            }),
            location: Some(pb::Location {
                building: "1".into(),
                floor: "3".into(),
                ..Default::default()
            }),
            raw: vec![b'x'; raw].into(),
            ..Default::default()
        }
    }

    fn alert_update(seq: u64, note: String) -> pb::Event {
        pb::Event {
            code: "ALERT.UPDATE".into(),
            raw: Default::default(),
            alert: Some(pb::AlertUpdate {
                alert_id: "01JALERT000000000000000000".into(),
                change: pb::AlertChange::Closed.into(),
                status: pb::AlertStatus::Closed.into(),
                code: "SMOKE.ALARM".into(),
                by: "operator".into(),
                disposition: "false_alarm".into(),
                note,
                ..Default::default()
            }),
            ..event(seq, 0)
        }
    }

    /// Packs `events` into batches the way the forwarder does: each batch from what is
    /// left after the previous one.
    fn pack_all(events: Vec<pb::Event>, limits: Limits) -> Vec<Packed> {
        let mut out = Vec::new();
        let mut rest = events;
        while let Some(p) = pack(&header(), rest.clone(), limits, 1_767_000_000_000)
            .unwrap_or_else(|u| panic!("unfit: {} > {}", u.size, u.room))
        {
            let last = p.batch.last_seq;
            rest.retain(|e| e.seq > last);
            out.push(p);
        }
        out
    }

    #[test]
    fn publish_size_is_what_rumqttc_checks() {
        for topic in ["city/v1/e/alarms", "city/v1/31011500000000000001/events"] {
            for payload in [
                0, 1, 90, 127, 128, 200, 16_300, 16_383, 16_384, 70_000, 2_097_100, 2_097_200,
            ] {
                let mut p =
                    rumqttc::Publish::new(topic, rumqttc::QoS::AtLeastOnce, vec![0; payload]);
                p.pkid = 1;
                assert_eq!(
                    publish_size(topic.len(), payload),
                    p.size(),
                    "topic {topic}, payload {payload}"
                );
            }
        }
    }

    #[test]
    fn max_payload_is_the_largest_that_fits() {
        for packet in [200, 16_388, 16_389, 16_390, 64 * 1024, 1 << 20, 2_097_160] {
            let p = max_payload(35, packet);
            assert!(publish_size(35, p) <= packet, "{packet}");
            assert!(publish_size(35, p + 1) > packet, "{packet}");
        }
        assert_eq!(max_payload(35, 10), 0);
    }

    #[test]
    fn batches_split_to_fit_and_keep_every_event_in_order() {
        let limits = Limits {
            max_events: 500,
            max_payload: 4096,
        };
        let events: Vec<_> = (1..=40).map(|s| event(s, 700)).collect();
        let batches = pack_all(events, limits);
        assert!(batches.len() >= 8, "{} batches", batches.len());
        let mut seqs = Vec::new();
        for p in &batches {
            assert!(p.batch.encoded_len() <= 4096, "{}", p.batch.encoded_len());
            assert!(p.cut.is_none());
            assert_eq!(p.batch.first_seq, p.batch.events[0].seq);
            seqs.extend(p.batch.events.iter().map(|e| e.seq));
        }
        assert_eq!(seqs, (1..=40).collect::<Vec<_>>());
    }

    #[test]
    fn max_events_bounds_a_batch() {
        let limits = Limits {
            max_events: 3,
            max_payload: 1 << 20,
        };
        let batches = pack_all((1..=7).map(|s| event(s, 10)).collect(), limits);
        let sizes: Vec<_> = batches.iter().map(|p| p.batch.events.len()).collect();
        assert_eq!(sizes, vec![3, 3, 1]);
    }

    /// Issue 13: an event whose raw bytes exceed the batch goes alone, its raw bytes cut
    /// to fit (their beginning kept) and flagged, between whole events.
    #[test]
    fn an_event_too_big_alone_goes_with_its_raw_bytes_cut() {
        let limits = Limits {
            max_events: 500,
            max_payload: 64 * 1024,
        };
        let mut big = event(2, 300 * 1024);
        big.raw = (0..300 * 1024)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>()
            .into();
        let batches = pack_all(vec![event(1, 100), big.clone(), event(3, 100)], limits);
        assert_eq!(batches.len(), 3);
        let sent = &batches[1].batch.events[0];
        assert!(batches[1].batch.encoded_len() <= 64 * 1024);
        assert!(sent.raw_truncated && !sent.text_truncated);
        assert!(sent.raw.len() > 60 * 1024, "cut only as much as needed");
        assert_eq!(sent.raw[..], big.raw[..sent.raw.len()]);
        assert_eq!(
            (sent.seq, &sent.code, &sent.device_id, &sent.source),
            (2, &big.code, &big.device_id, &big.source)
        );
        let cut = batches[1].cut.as_ref().expect("reported as cut");
        assert_eq!((cut.seq, cut.text), (2, false));
        assert!(cut.from > 300 * 1024 && cut.to <= 64 * 1024);
        assert!(!batches[0].batch.events[0].raw_truncated);
        assert!(!batches[2].batch.events[0].raw_truncated);
    }

    /// Issue 13: an alert update with a 300 KiB note (no raw bytes) goes with its note cut
    /// on a character boundary, everything that identifies the alert intact.
    #[test]
    fn a_huge_note_is_cut_on_a_character_boundary() {
        let limits = Limits {
            max_events: 500,
            max_payload: 16 * 1024,
        };
        let note = "烟雾报警已确认。".repeat(300 * 1024 / 24);
        let upd = alert_update(5, note.clone());
        let batches = pack_all(vec![upd.clone(), event(6, 10)], limits);
        assert_eq!(batches.len(), 2);
        let sent = &batches[0].batch.events[0];
        assert!(batches[0].batch.encoded_len() <= 16 * 1024);
        assert!(sent.text_truncated);
        let a = sent.alert.as_ref().expect("alert kept");
        let orig = upd.alert.as_ref().expect("alert");
        assert!(
            note.starts_with(&a.note) && a.note.len() > 14 * 1024,
            "{}",
            a.note.len()
        );
        assert_eq!(
            (
                &a.alert_id,
                a.change,
                a.status,
                &a.code,
                &a.by,
                &a.disposition
            ),
            (
                &orig.alert_id,
                orig.change,
                orig.status,
                &orig.code,
                &orig.by,
                &orig.disposition
            ),
            "only the longest text is cut"
        );
        assert_eq!(batches[1].batch.events[0].seq, 6);
    }

    #[test]
    fn an_event_that_cannot_fit_is_unfit_not_sent_too_big() {
        let limits = Limits {
            max_events: 500,
            max_payload: 2048,
        };
        let mut e = event(1, 100);
        e.device_id = "d".repeat(4096);
        let u = pack(&header(), vec![e], limits, 0).expect_err("device ids are never cut");
        assert!(u.size > u.room && u.event.raw_truncated && u.event.raw.is_empty());
    }

    #[test]
    fn envelope_keeps_identity_and_flags_what_it_drops() {
        let e = envelope(alert_update(9, "n".repeat(1000)));
        assert!(e.text_truncated && !e.raw_truncated);
        let a = e.alert.as_ref().expect("alert kept");
        assert!(a.note.is_empty() && a.by.is_empty() && !a.alert_id.is_empty());
        assert_eq!((e.seq, e.code.as_str()), (9, "ALERT.UPDATE"));
        let e = envelope(event(3, 10));
        assert!(e.raw_truncated && e.raw.is_empty() && e.text_truncated);
    }

    proptest! {
        /// Whatever the events' sizes, every batch fits, events are shortened only when
        /// alone, and every seq is sent once, in order.
        #[test]
        fn every_batch_fits(raws in proptest::collection::vec(0usize..20_000, 1..40),
                            max_payload in 1500usize..40_000,
                            max_events in 1usize..20) {
            let events: Vec<_> = raws.iter().enumerate().map(|(i, r)| event(i as u64 + 1, *r)).collect();
            let limits = Limits { max_events, max_payload };
            let batches = pack_all(events.clone(), limits);
            let mut seqs = Vec::new();
            for p in &batches {
                prop_assert!(p.batch.encoded_len() <= max_payload);
                prop_assert!(p.batch.events.len() <= max_events);
                if p.cut.is_some() {
                    prop_assert_eq!(p.batch.events.len(), 1);
                }
                seqs.extend(p.batch.events.iter().map(|e| e.seq));
            }
            prop_assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
        }
    }
}
