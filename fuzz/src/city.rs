//! The reference city subscriber's `EventBatch` accounting, against a plain model.
//!
//! Input: messages, each a topic byte (`% 3`: the alarms topic, the events topic, another
//! topic), a 2-byte little-endian length and that many payload bytes.

use std::collections::{BTreeMap, BTreeSet};

use estate_protocols::pb;
use estate_sim::city::Ledger;
use prost::Message;

/// Feeds every message to a [`Ledger`] and checks its report against a model.
pub fn batches(data: &[u8]) {
    let mut ledger = Ledger::new();
    let mut rest = data;
    let (mut batches, mut decode_errors, mut unknown_topics, mut duplicates) = (0, 0, 0, 0);
    let mut seen: BTreeMap<(String, u64), BTreeSet<u64>> = BTreeMap::new();
    while let [t, a, b, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*a, *b])).min(tail.len());
        let (payload, next) = tail.split_at(len);
        rest = next;
        let topic = match t % 3 {
            0 => "city/v1/31011500000000000001/alarms",
            1 => "city/v1/31011500000000000001/events",
            _ => "city/v1/31011500000000000001/other",
        };
        let accounted = ledger.on_batch(topic, payload);
        batches += 1;
        if t % 3 == 2 {
            unknown_topics += 1;
            assert!(accounted.is_none());
            continue;
        }
        let Ok(batch) = pb::EventBatch::decode(payload) else {
            decode_errors += 1;
            assert!(accounted.is_none());
            continue;
        };
        let accounted = accounted.expect("a decodable batch on a lane topic is accounted");
        assert_eq!(accounted.events, batch.events.len() as u64);
        let newest = batch
            .events
            .iter()
            .map(|e| e.gateway_time_ms)
            .fold(0, i64::max);
        assert_eq!(accounted.newest_gateway_time_ms, newest);
        let mut new_unique = 0;
        // What decodes re-encodes to something that decodes the same.
        let again = pb::EventBatch::decode(batch.encode_to_vec().as_slice()).expect("re-decodes");
        assert_eq!(again, batch);
        let stream = seen
            .entry((batch.gateway_id.clone(), batch.store_epoch))
            .or_default();
        for e in &batch.events {
            if e.seq != 0 {
                if stream.insert(e.seq) {
                    new_unique += 1;
                } else {
                    duplicates += 1;
                }
            }
        }
        // What the board is told about each batch agrees with the model.
        assert_eq!(accounted.unique, new_unique);
    }
    let r = ledger.summary();
    assert_eq!(r.batches, batches);
    assert_eq!(r.decode_errors, decode_errors);
    assert_eq!(r.unknown_topics, unknown_topics);
    assert_eq!(r.duplicates, duplicates);
    let unique: usize = seen.values().map(BTreeSet::len).sum();
    assert_eq!(r.unique, unique as u64);
    assert_eq!(r.alarms + r.events, r.unique);
    let streams: Vec<_> = seen.iter().filter(|(_, s)| !s.is_empty()).collect();
    assert!(r.streams.len() >= streams.len());
    for s in &r.streams {
        let model = &seen[&(s.gateway_id.clone(), s.store_epoch)];
        assert_eq!(s.unique, model.len() as u64);
        assert_eq!(s.max_seq, model.last().copied().unwrap_or(0));
        // The gaps are exactly the seqs in 1..=max that never arrived.
        let mut missing = 0u64;
        let mut last_end = 0u64;
        for &(a, b) in &s.gaps {
            assert!(a <= b && a > last_end && b < s.max_seq);
            assert!(
                model.range(a..=b).next().is_none(),
                "gap {a}..={b} has a seen seq"
            );
            missing += b - a + 1;
            last_end = b;
        }
        assert_eq!(missing + s.unique, s.max_seq);
    }
}
