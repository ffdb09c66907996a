//! Key layout of the one sled tree the store writes. Everything a group commit touches
//! lives in this tree so that one `apply_batch` makes the whole group durable or none of it.
//!
//! | key | value |
//! |---|---|
//! | `r` lane-tag last-seq(u64 BE) | a record: prost `EventBatch` holding consecutive events of one lane |
//! | `d` id(u64 BE) | a dead letter (see [`super::DeadLetter`]) |
//! | `m/…` | metadata: epoch, next seq, per-lane cursors and stored bytes |
//!
//! Records are keyed by the *last* seq they hold, so the record that contains the first
//! event after a cursor `c` is the first key at or after `r lane (c+1)`.

use estate_protocols::model::Lane;

pub const EPOCH: &[u8] = b"m/epoch";
pub const NEXT_SEQ: &[u8] = b"m/next_seq";
pub const NEXT_DEAD_LETTER: &[u8] = b"m/next_dead_letter";

pub fn record(lane: Lane, last_seq: u64) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[0] = b'r';
    k[1] = lane.tag();
    k[2..].copy_from_slice(&last_seq.to_be_bytes());
    k
}

/// All record keys of `lane` at or after `seq`.
pub fn records_from(lane: Lane, seq: u64) -> std::ops::RangeInclusive<[u8; 10]> {
    record(lane, seq)..=record(lane, u64::MAX)
}

pub fn cursor(lane: Lane) -> Vec<u8> {
    format!("m/cursor/{lane}").into_bytes()
}

/// Events of the lane committed but neither forwarded nor evicted, kept with every
/// commit so that opening a store with a large backlog does not have to count it.
pub fn backlog(lane: Lane) -> Vec<u8> {
    format!("m/backlog/{lane}").into_bytes()
}

pub fn stored_bytes(lane: Lane) -> Vec<u8> {
    format!("m/bytes/{lane}").into_bytes()
}

pub fn dead_letter(id: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'd';
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

pub const DEAD_LETTERS: std::ops::RangeInclusive<[u8; 9]> =
    [b'd', 0, 0, 0, 0, 0, 0, 0, 0]..=[b'd', 255, 255, 255, 255, 255, 255, 255, 255];

pub fn u64_value(v: Option<impl AsRef<[u8]>>) -> u64 {
    v.and_then(|v| v.as_ref().try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

pub fn seq_of_record_key(k: &[u8]) -> Option<u64> {
    k.get(2..10)?.try_into().ok().map(u64::from_be_bytes)
}
