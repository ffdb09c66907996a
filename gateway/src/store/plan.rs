//! The pure half of a group commit: what one group of commands would write and the
//! counters it would leave, computed from the writer's in-memory state without sled or
//! any I/O. [`super::writer`] turns the [`Intake`]'s [`Op`]s into one sled batch, adds
//! the records it packs, applies it, and only once that is durable commits the new
//! [`State`]; a failed apply keeps the old one (the writer's own fields are untouched
//! until then) and carries the cursor moves into the next group.

use std::time::Instant;

use tokio::sync::oneshot;

use estate_protocols::model::{Event, Lane};
use estate_protocols::pb;

use super::keys::{self, State};
use super::{lane_index, Command, StoreError};

/// Where a submitter waits for its id (seq or dead-letter id); none for the gateway's
/// own events.
pub(super) type Done = Option<oneshot::Sender<Result<u64, StoreError>>>;

/// One write of a plan, in batch order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Op {
    /// Insert `value` at `key`.
    Insert(Vec<u8>, Vec<u8>),
    /// Remove `key`.
    Remove(Vec<u8>),
}

/// What the writer knows before a group: the next ids and the cursor moves carried from
/// failed groups.
#[derive(Debug, Clone, Copy)]
pub(super) struct Start {
    /// The seq the group's first append gets.
    pub next_seq: u64,
    /// The id the group's first dead letter gets.
    pub next_dead_letter: u64,
    /// Dead letters kept at most (`store.dead_letter_max`): older ones are removed.
    pub dead_letter_max: u64,
    /// Per lane (by `lane_index`): highest seq and events forwarded by failed groups.
    pub carried: [(Option<u64>, u64); 2],
}

/// One group, taken apart: its appends with their seqs, sorted by lane, the dead-letter
/// writes, the cursor moves and everyone waiting for an answer.
#[derive(Debug, Default)]
pub(super) struct Intake {
    /// Dead-letter inserts and removals.
    pub ops: Vec<Op>,
    /// The group's appends per lane (by `lane_index`), seqs assigned, in seq order.
    pub lanes: [Vec<pb::Event>; 2],
    /// Per submitter: where to answer, its id, when it was received.
    pub answers: Vec<(Done, u64, Option<Instant>)>,
    /// Liveness probes, answered once the group is durable.
    pub pings: Vec<oneshot::Sender<()>>,
    /// The group's events, for the alert engine, and whether each is the gateway's own
    /// (`done` none: kept and retried if the group fails).
    pub events: Vec<(Event, bool)>,
    /// Per lane: the highest acknowledged seq, if this group (or a carried one) moved it.
    pub cursor_moves: [Option<u64>; 2],
    /// Per lane: events acknowledged upstream by this group and the carried ones.
    pub forwarded: [u64; 2],
    /// The seq after the group's last append.
    pub next_seq: u64,
    /// The dead-letter id after the group's last dead letter.
    pub next_dead_letter: u64,
    /// Something must reach the disk (appends or dead letters) before answering.
    pub needs_sync: bool,
}

/// Assigns the group's seqs (one sequence across both lanes, in arrival order) and
/// dead-letter ids, and folds its cursor moves onto the carried ones.
pub(super) fn take_group(group: Vec<Command>, start: &Start) -> Intake {
    let mut g = Intake {
        cursor_moves: [start.carried[0].0, start.carried[1].0],
        forwarded: [start.carried[0].1, start.carried[1].1],
        next_seq: start.next_seq,
        next_dead_letter: start.next_dead_letter,
        ..Intake::default()
    };
    for cmd in group {
        match cmd {
            Command::Append {
                mut event,
                received,
                done,
            } => {
                event.seq = g.next_seq;
                g.lanes[lane_index(event.lane())].push(pb::Event::from(&*event));
                g.events.push((*event, done.is_none()));
                g.answers.push((done, g.next_seq, Some(received)));
                g.next_seq += 1;
                g.needs_sync = true;
            }
            Command::DeadLetter {
                letter,
                received,
                done,
            } => {
                let id = g.next_dead_letter;
                g.ops
                    .push(Op::Insert(keys::dead_letter(id).to_vec(), letter.encode()));
                if let Some(old) = id.checked_sub(start.dead_letter_max) {
                    g.ops.push(Op::Remove(keys::dead_letter(old).to_vec()));
                }
                g.answers.push((done, id, Some(received)));
                g.next_dead_letter += 1;
                g.needs_sync = true;
            }
            Command::Forwarded { lane, seq, count } => {
                let i = lane_index(lane);
                g.cursor_moves[i] = Some(g.cursor_moves[i].unwrap_or(0).max(seq));
                g.forwarded[i] += count;
            }
            Command::Ping { done } => g.pings.push(done),
        }
    }
    g
}

/// `state` with the group's ids and cursor moves: a cursor only moves forward.
pub(super) fn advance(state: &State, g: &Intake) -> State {
    let mut next = *state;
    next.next_seq = g.next_seq;
    next.next_dead_letter = g.next_dead_letter;
    for (i, c) in next.lanes.iter_mut().enumerate() {
        c.cursor = c.cursor.max(g.cursor_moves[i].unwrap_or(0));
    }
    next
}

/// Per lane (by `lane_index`), what a group or an eviction changes in the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Delta {
    /// Stored bytes of records written.
    pub added_bytes: u64,
    /// Stored bytes of records removed (packed, forwarded or evicted).
    pub freed_bytes: u64,
    /// Events committed.
    pub added_events: u64,
    /// Events that leave the backlog (forwarded upstream or evicted unforwarded).
    pub gone_events: u64,
}

/// The counters after `delta`: stored bytes and backlog never go below zero (a store
/// written before the backlog was kept has none and keeps none).
pub(super) fn settle(state: &mut State, delta: &[Delta; 2]) {
    for (c, d) in state.lanes.iter_mut().zip(delta) {
        c.stored_bytes = (c.stored_bytes + d.added_bytes).saturating_sub(d.freed_bytes);
        c.backlog = c
            .backlog
            .map(|b| (b + d.added_events).saturating_sub(d.gone_events));
    }
}

/// The lanes in eviction order once forwarded records are gone: telemetry first, alarms
/// last.
pub(super) const EVICTION_ORDER: [Lane; 2] = [Lane::Events, Lane::Alarms];

#[cfg(test)]
mod tests {
    use estate_protocols::model::Severity;

    use super::super::keys::LaneCounters;
    use super::super::tests::event;
    use super::*;

    const ALARMS: usize = 0;
    const EVENTS: usize = 1;

    fn start() -> Start {
        Start {
            next_seq: 10,
            next_dead_letter: 1,
            dead_letter_max: 100,
            carried: [(None, 0); 2],
        }
    }

    fn append(severity: Severity) -> Command {
        Command::Append {
            event: Box::new(event("X", severity, 1)),
            received: Instant::now(),
            done: None,
        }
    }

    fn state() -> State {
        State {
            next_seq: 10,
            next_dead_letter: 1,
            lanes: [LaneCounters {
                cursor: 3,
                backlog: Some(5),
                stored_bytes: 1000,
            }; 2],
        }
    }

    #[test]
    fn one_seq_runs_across_both_lanes_in_arrival_order() {
        let g = take_group(
            vec![
                append(Severity::Info),
                append(Severity::Critical),
                append(Severity::Minor),
            ],
            &start(),
        );
        let seqs = |i: usize| g.lanes[i].iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(seqs(EVENTS), [10, 12]);
        assert_eq!(seqs(ALARMS), [11]);
        assert_eq!(g.next_seq, 13);
        let answered: Vec<u64> = g.answers.iter().map(|a| a.1).collect();
        assert_eq!(answered, [10, 11, 12]);
        assert!(g.needs_sync);
    }

    #[test]
    fn cursor_moves_fold_onto_carried_ones_and_never_go_back() {
        let mut s = start();
        s.carried[ALARMS] = (Some(7), 2);
        let g = take_group(
            vec![
                Command::Forwarded {
                    lane: Lane::Alarms,
                    seq: 5,
                    count: 1,
                },
                Command::Forwarded {
                    lane: Lane::Events,
                    seq: 2,
                    count: 4,
                },
            ],
            &s,
        );
        assert_eq!(g.cursor_moves, [Some(7), Some(2)]);
        assert_eq!(g.forwarded, [3, 4]);
        assert!(!g.needs_sync, "cursor moves alone need no fdatasync");
        let next = advance(&state(), &g);
        assert_eq!(next.lanes[ALARMS].cursor, 7);
        assert_eq!(
            next.lanes[EVENTS].cursor, 3,
            "an older ack does not move it back"
        );
    }

    #[test]
    fn counters_after_append_forward_and_evict() {
        let mut s = state();
        let mut d = [Delta::default(); 2];
        d[EVENTS] = Delta {
            added_bytes: 300,
            freed_bytes: 100,
            added_events: 3,
            gone_events: 2,
        };
        d[ALARMS] = Delta {
            freed_bytes: 5000,
            gone_events: 9,
            ..Delta::default()
        };
        settle(&mut s, &d);
        assert_eq!(s.lanes[EVENTS].stored_bytes, 1200);
        assert_eq!(s.lanes[EVENTS].backlog, Some(6));
        assert_eq!(s.lanes[ALARMS].stored_bytes, 0, "never below zero");
        assert_eq!(s.lanes[ALARMS].backlog, Some(0));
        let mut old = state();
        old.lanes[EVENTS].backlog = None;
        settle(&mut old, &d);
        assert_eq!(old.lanes[EVENTS].backlog, None);
    }

    #[test]
    fn dead_letters_beyond_the_maximum_remove_the_oldest() {
        let mut s = start();
        s.next_dead_letter = 100;
        s.dead_letter_max = 100;
        let letter = super::super::DeadLetter {
            received_ms: 1,
            source: "t".into(),
            reason: "r".into(),
            raw: bytes::Bytes::new(),
            original_len: 0,
        };
        let g = take_group(
            vec![Command::DeadLetter {
                letter,
                received: Instant::now(),
                done: None,
            }],
            &s,
        );
        assert_eq!(g.next_dead_letter, 101);
        assert_eq!(g.next_seq, 10, "dead letters take no seq");
        assert_eq!(g.ops[1], Op::Remove(keys::dead_letter(0).to_vec()));
    }

    #[test]
    fn planning_leaves_the_state_it_was_given_unchanged() {
        // A failed apply keeps the old counters: planning must not touch them.
        let before = state();
        let g = take_group(vec![append(Severity::Critical)], &start());
        let planned = advance(&before, &g);
        assert_eq!(before, state());
        assert_eq!(planned.next_seq, 11);
    }

    #[test]
    fn telemetry_is_evicted_before_alarms() {
        assert_eq!(EVICTION_ORDER, [Lane::Events, Lane::Alarms]);
    }
}
