//! Key layout of the one sled tree the store writes. Everything a group commit touches
//! lives in this tree so that one `apply_batch` makes the whole group durable or none of it.
//!
//! | key | value |
//! |---|---|
//! | `r` lane-tag last-seq(u64 BE) | a record: prost `EventBatch` holding consecutive events of one lane |
//! | `d` id(u64 BE) | a dead letter (see [`super::DeadLetter`]) |
//! | `m/epoch` | the store's epoch |
//! | `m/state` | [`State`]: next seq, next dead letter, per-lane cursor, backlog, stored bytes |
//! | `m/next_seq`, `m/cursor/…`, … | the same counters one per key, as stores before `m/state` keep them: written when the writer stops (and `m/next_seq` with every commit), so that the previous version can be rolled back to; when `m/next_seq` differs from `m/state`, the previous version ran last and these are read instead |
//!
//! Records are keyed by the *last* seq they hold, so the record that contains the first
//! event after a cursor `c` is the first key at or after `r lane (c+1)`.

use estate_protocols::model::Lane;

pub const EPOCH: &[u8] = b"m/epoch";
pub const STATE: &[u8] = b"m/state";
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

/// The store's counters, in one value so that a group commit writes sled's metadata page
/// once, not six times: every tenth write to a page makes sled consolidate it and clean a
/// segment, which pulls cold pages of the backlog into memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct State {
    pub next_seq: u64,
    pub next_dead_letter: u64,
    /// Indexed by `lane_index`.
    pub lanes: [LaneCounters; 2],
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LaneCounters {
    /// Highest seq acknowledged upstream.
    pub cursor: u64,
    /// Events committed but neither forwarded nor evicted; `None` in a store written
    /// before the backlog was kept (it is then counted on open).
    pub backlog: Option<u64>,
    pub stored_bytes: u64,
}

impl State {
    const LEN: usize = 8 * 8;

    pub fn encode(&self) -> Vec<u8> {
        let mut fields = vec![self.next_seq, self.next_dead_letter];
        for l in &self.lanes {
            fields.extend([l.cursor, l.backlog.unwrap_or(0), l.stored_bytes]);
        }
        fields.iter().flat_map(|v| v.to_be_bytes()).collect()
    }

    pub fn decode(v: &[u8]) -> Option<State> {
        if v.len() != Self::LEN {
            return None;
        }
        let f = |i: usize| u64_value(Some(&v[i * 8..i * 8 + 8]));
        let lane = |i: usize| LaneCounters {
            cursor: f(i),
            backlog: Some(f(i + 1)),
            stored_bytes: f(i + 2),
        };
        Some(State {
            next_seq: f(0),
            next_dead_letter: f(1),
            lanes: [lane(2), lane(5)],
        })
    }

    /// The counters as a store written before `m/state` keeps them.
    pub fn read_legacy(db: &sled::Db) -> sled::Result<State> {
        let mut state = State {
            next_seq: u64_value(db.get(NEXT_SEQ)?),
            next_dead_letter: u64_value(db.get(NEXT_DEAD_LETTER)?),
            ..State::default()
        };
        for (lane, c) in Lane::ALL.into_iter().zip(&mut state.lanes) {
            c.cursor = u64_value(db.get(cursor(lane))?);
            c.backlog = db.get(backlog(lane))?.map(|v| u64_value(Some(v)));
            c.stored_bytes = u64_value(db.get(stored_bytes(lane))?);
        }
        Ok(state)
    }

    /// Writes the counters the way the previous version reads them.
    pub fn write_legacy(&self, batch: &mut sled::Batch) {
        batch.insert(NEXT_SEQ, &self.next_seq.to_be_bytes());
        batch.insert(NEXT_DEAD_LETTER, &self.next_dead_letter.to_be_bytes());
        for (lane, c) in Lane::ALL.into_iter().zip(&self.lanes) {
            batch.insert(cursor(lane), &c.cursor.to_be_bytes());
            batch.insert(backlog(lane), &c.backlog.unwrap_or(0).to_be_bytes());
            batch.insert(stored_bytes(lane), &c.stored_bytes.to_be_bytes());
        }
    }
}
