//! Pure bookkeeping of batches published to the uplink but not yet acknowledged.
//!
//! rumqttc assigns packet ids as it writes each publish and reports them, in order, as
//! `Outgoing::Publish(pkid)`. Batches are pushed here in the same order they are handed to
//! the client, so the oldest batch without a packet id gets the next reported one. A
//! lane's cursor advances over the acknowledged prefix of that lane's batches only: an
//! acknowledgement never moves a cursor past a batch that is still unacknowledged.
//!
//! An event the forwarder gives up on (dead-lettered, see `forward/mod.rs`) takes a place
//! in the same order as a *skip*: it is never published and counts as acknowledged, so
//! the cursor moves over it exactly when it moves over the batches before it.

use std::collections::VecDeque;

use estate_protocols::model::Lane;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    lane: Lane,
    last_seq: u64,
    events: u64,
    pkid: Option<u16>,
    acked: bool,
    /// Never published (a skipped event): takes no packet id.
    skip: bool,
}

/// What a PUBACK made final for one lane: the new cursor and how much it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advance {
    pub lane: Lane,
    pub cursor: u64,
    /// Events passed, skipped ones included (what leaves the backlog).
    pub events: u64,
    /// Batches acknowledged (skips are not batches).
    pub batches: u64,
    /// Of `events`, those given up on.
    pub skipped: u64,
}

#[derive(Debug, Default)]
pub struct InFlight {
    entries: VecDeque<Entry>,
}

impl InFlight {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A batch was handed to the client.
    pub fn push(&mut self, lane: Lane, last_seq: u64, events: u64) {
        self.entries.push_back(Entry {
            lane,
            last_seq,
            events,
            pkid: None,
            acked: false,
            skip: false,
        });
    }

    /// The event `seq` of `lane` is given up on, after the batches pushed so far. Returns
    /// the cursor advance this allows at once (when nothing of the lane is in flight).
    pub fn push_skip(&mut self, lane: Lane, seq: u64) -> Option<Advance> {
        self.entries.push_back(Entry {
            lane,
            last_seq: seq,
            events: 1,
            pkid: None,
            acked: true,
            skip: true,
        });
        self.advance(lane)
    }

    /// The highest seq of `lane` in flight (published or skipped, not yet final).
    pub fn last_seq(&self, lane: Lane) -> Option<u64> {
        self.entries
            .iter()
            .filter(|e| e.lane == lane)
            .map(|e| e.last_seq)
            .max()
    }

    /// The client wrote a publish with `pkid`. Returns false if no batch was waiting for one.
    pub fn on_outgoing_publish(&mut self, pkid: u16) -> bool {
        match self
            .entries
            .iter_mut()
            .find(|e| e.pkid.is_none() && !e.skip)
        {
            Some(e) => {
                e.pkid = Some(pkid);
                true
            }
            None => false,
        }
    }

    /// The broker acknowledged `pkid`. Returns the cursor advances it made possible.
    pub fn on_puback(&mut self, pkid: u16) -> Vec<Advance> {
        let Some(entry) = self
            .entries
            .iter_mut()
            .find(|e| e.pkid == Some(pkid) && !e.acked)
        else {
            return Vec::new();
        };
        entry.acked = true;
        let lane = entry.lane;
        self.advance(lane).into_iter().collect()
    }

    /// Pops `lane`'s acknowledged prefix: the cursor advance it makes, if any.
    fn advance(&mut self, lane: Lane) -> Option<Advance> {
        let mut adv = Advance {
            lane,
            cursor: 0,
            events: 0,
            batches: 0,
            skipped: 0,
        };
        // Pop this lane's acknowledged prefix.
        while let Some(pos) = self.entries.iter().position(|e| e.lane == lane) {
            if !self.entries[pos].acked {
                break;
            }
            if let Some(e) = self.entries.remove(pos) {
                adv.cursor = e.last_seq;
                adv.events += e.events;
                if e.skip {
                    adv.skipped += e.events;
                } else {
                    adv.batches += 1;
                }
            }
        }
        (adv.events > 0).then_some(adv)
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_advances_only_over_the_acknowledged_prefix_of_a_lane() {
        let mut f = InFlight::default();
        f.push(Lane::Events, 10, 10);
        f.push(Lane::Alarms, 11, 1);
        f.push(Lane::Events, 20, 9);
        for pkid in [1, 2, 3] {
            assert!(f.on_outgoing_publish(pkid));
        }
        assert!(!f.on_outgoing_publish(4), "no batch waits for a 4th id");
        // The second events batch is acked first: nothing may advance yet.
        assert_eq!(f.on_puback(3), vec![]);
        // The alarm batch advances its own lane independently.
        assert_eq!(
            f.on_puback(2),
            vec![Advance {
                lane: Lane::Alarms,
                cursor: 11,
                events: 1,
                batches: 1,
                skipped: 0
            }]
        );
        // Now the first events batch: both events batches become final together.
        assert_eq!(
            f.on_puback(1),
            vec![Advance {
                lane: Lane::Events,
                cursor: 20,
                events: 19,
                batches: 2,
                skipped: 0
            }]
        );
        assert!(f.is_empty());
    }

    #[test]
    fn a_skipped_event_is_passed_with_the_batches_before_it() {
        let mut f = InFlight::default();
        f.push(Lane::Alarms, 4, 4);
        assert_eq!(
            f.push_skip(Lane::Alarms, 5),
            None,
            "batch 1-4 still in flight"
        );
        f.push(Lane::Alarms, 9, 4);
        assert!(f.on_outgoing_publish(1));
        assert!(f.on_outgoing_publish(2), "the skip takes no packet id");
        assert_eq!(f.last_seq(Lane::Alarms), Some(9));
        assert_eq!(
            f.on_puback(1),
            vec![Advance {
                lane: Lane::Alarms,
                cursor: 5,
                events: 5,
                batches: 1,
                skipped: 1
            }]
        );
        // Nothing before it: a skip is final at once.
        let mut g = InFlight::default();
        assert_eq!(
            g.push_skip(Lane::Events, 3),
            Some(Advance {
                lane: Lane::Events,
                cursor: 3,
                events: 1,
                batches: 0,
                skipped: 1
            })
        );
        assert!(g.is_empty());
    }

    #[test]
    fn unknown_and_repeated_acks_are_ignored() {
        let mut f = InFlight::default();
        f.push(Lane::Alarms, 5, 5);
        assert_eq!(f.on_puback(9), vec![], "ack before the id is known");
        f.on_outgoing_publish(9);
        assert_eq!(f.on_puback(9).len(), 1);
        assert_eq!(f.on_puback(9), vec![]);
    }
}
