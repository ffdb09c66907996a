//! The `city_batch` fuzz target's model check (fuzz/src/city.rs) on stable, on a few
//! hand-made inputs: redelivery, a gap, two epochs, garbage, another topic.

#[path = "../../fuzz/src/city.rs"]
mod city;

use estate_protocols::pb;
use prost::Message;

fn msg(out: &mut Vec<u8>, topic: u8, payload: &[u8]) {
    out.push(topic);
    out.extend_from_slice(&(payload.len() as u16).to_le_bytes());
    out.extend_from_slice(payload);
}

fn batch(epoch: u64, seqs: &[u64]) -> Vec<u8> {
    pb::EventBatch {
        gateway_id: "gw-1".into(),
        store_epoch: epoch,
        first_seq: seqs.first().copied().unwrap_or(0),
        last_seq: seqs.last().copied().unwrap_or(0),
        lane: pb::Lane::Events as i32,
        events: seqs
            .iter()
            .map(|&seq| pb::Event {
                seq,
                severity: 4,
                gateway_time_ms: seq as i64 * 10 - 25,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
    .encode_to_vec()
}

#[test]
fn the_fuzz_model_holds_on_hand_made_streams() {
    let mut data = Vec::new();
    msg(&mut data, 1, &batch(1, &[1, 2, 3]));
    msg(&mut data, 1, &batch(1, &[2, 3, 4, 9]));
    msg(&mut data, 0, &batch(1, &[6, 0]));
    msg(&mut data, 1, &batch(2, &[1]));
    msg(&mut data, 1, &batch(1, &[]));
    msg(&mut data, 2, &batch(1, &[5]));
    msg(&mut data, 1, b"\xff\xff\xff");
    city::batches(&data);
    city::batches(&data[..data.len() / 2]);
    city::batches(&[]);
}
