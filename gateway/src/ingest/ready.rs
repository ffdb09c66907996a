//! Committed messages whose PUBACK the MQTT client has not taken yet, in arrival order,
//! kept as runs of consecutive packet ids.
//!
//! A broker numbers the messages of one session in sequence (1, 2, … 65,535, 1, …), so
//! at full ingest speed, when hundreds of thousands of PUBACKs wait for the client (it
//! writes one request per turn of its event loop while it reads up to ten messages, and
//! Mosquitto 2.0 does not hold back for it), they are a handful of runs instead of one
//! entry each (docs/footprint.md, "At full ingest speed"). Out-of-order ids still work:
//! each starts a run of its own.

use std::collections::VecDeque;

use rumqttc::QoS;

use super::Ack;

/// PUBACKs waiting for the client, oldest first.
#[derive(Debug, Default)]
pub(super) struct ReadyAcks {
    runs: VecDeque<Run>,
}

/// `count` acks of `qos` from packet id `first` on (QoS 0 messages all have id 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    first: u16,
    count: u16,
    qos: QoS,
}

impl Run {
    /// The packet id `n` places after `first`.
    fn nth(&self, n: u16) -> u16 {
        if self.qos == QoS::AtMostOnce {
            return 0;
        }
        // Ids run 1..=65535 and wrap to 1 (0 is not an id).
        ((u32::from(self.first) - 1 + u32::from(n)) % u32::from(u16::MAX) + 1) as u16
    }
}

impl ReadyAcks {
    /// Queues `ack` after the others.
    pub(super) fn push(&mut self, ack: Ack) {
        if let Some(run) = self.runs.back_mut() {
            if run.qos == ack.qos && run.count < u16::MAX && run.nth(run.count) == ack.pkid {
                run.count += 1;
                return;
            }
        }
        self.runs.push_back(Run {
            first: ack.pkid,
            count: 1,
            qos: ack.qos,
        });
    }

    /// The oldest waiting ack.
    pub(super) fn front(&self) -> Option<Ack> {
        self.runs.front().map(|r| Ack {
            pkid: r.first,
            qos: r.qos,
        })
    }

    /// Drops the oldest waiting ack (the client took it).
    pub(super) fn pop_front(&mut self) {
        let Some(run) = self.runs.front_mut() else {
            return;
        };
        run.first = run.nth(1);
        run.count -= 1;
        if run.count == 0 {
            self.runs.pop_front();
        }
    }

    /// Nothing waits.
    pub(super) fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Gives back the memory of a flood of out-of-order ids once it has drained.
    pub(super) fn shrink(&mut self) {
        if self.runs.capacity() > 4096 && self.runs.len() < 1024 {
            self.runs.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(pkid: u16) -> Ack {
        Ack {
            pkid,
            qos: QoS::AtLeastOnce,
        }
    }

    fn drain(r: &mut ReadyAcks) -> Vec<(u16, QoS)> {
        let mut out = Vec::new();
        while let Some(a) = r.front() {
            out.push((a.pkid, a.qos));
            r.pop_front();
        }
        out
    }

    #[test]
    fn consecutive_ids_are_one_run_and_come_back_in_order() {
        let mut r = ReadyAcks::default();
        for id in 1..=50_000u16 {
            r.push(ack(id));
        }
        assert_eq!(r.runs.len(), 1);
        let out = drain(&mut r);
        assert_eq!(out.len(), 50_000);
        assert!(out.iter().zip(1u16..).all(|(a, id)| a.0 == id));
        assert!(r.is_empty());
    }

    #[test]
    fn ids_wrap_from_65535_to_1_within_a_run() {
        let mut r = ReadyAcks::default();
        for id in [65_534, 65_535, 1, 2] {
            r.push(ack(id));
        }
        assert_eq!(r.runs.len(), 1);
        let ids: Vec<u16> = drain(&mut r).into_iter().map(|a| a.0).collect();
        assert_eq!(ids, [65_534, 65_535, 1, 2]);
    }

    #[test]
    fn out_of_order_ids_and_a_qos_change_keep_every_ack_in_arrival_order() {
        let mut r = ReadyAcks::default();
        let input = [
            (7, QoS::AtLeastOnce),
            (9, QoS::AtLeastOnce),
            (10, QoS::AtLeastOnce),
            (0, QoS::AtMostOnce),
            (0, QoS::AtMostOnce),
            (11, QoS::AtLeastOnce),
            (12, QoS::ExactlyOnce),
        ];
        for (pkid, qos) in input {
            r.push(Ack { pkid, qos });
        }
        assert_eq!(r.runs.len(), 5);
        assert_eq!(drain(&mut r), input);
    }

    #[test]
    fn a_run_is_split_before_its_count_overflows() {
        let mut r = ReadyAcks::default();
        let mut id = 1u16;
        for _ in 0..(u32::from(u16::MAX) + 10) {
            r.push(ack(id));
            id = if id == u16::MAX { 1 } else { id + 1 };
        }
        assert_eq!(r.runs.len(), 2);
        assert_eq!(drain(&mut r).len(), usize::from(u16::MAX) + 10);
    }
}
