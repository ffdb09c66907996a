//! The committed-event rate shown on `/api/status`: events per second over the last
//! minute, counted by the alerts task as it handles them and read by the API.

use std::collections::VecDeque;

/// Events per second over the last 60 s.
#[derive(Debug, Default)]
pub(crate) struct Rate {
    /// (unix second, count), oldest first.
    buckets: VecDeque<(i64, u64)>,
}

impl Rate {
    /// Counts `n` events handled at `now_ms`; forgets seconds older than a minute.
    pub(crate) fn add(&mut self, now_ms: i64, n: u64) {
        let sec = now_ms.div_euclid(1000);
        match self.buckets.back_mut() {
            Some((s, c)) if *s == sec => *c += n,
            _ => self.buckets.push_back((sec, n)),
        }
        while self.buckets.front().is_some_and(|(s, _)| *s <= sec - 60) {
            self.buckets.pop_front();
        }
    }

    /// 60 numbers, oldest first, the last being the current second.
    pub(crate) fn last_60(&self, now_ms: i64) -> Vec<u64> {
        let sec = now_ms.div_euclid(1000);
        (0..60)
            .map(|i| {
                let s = sec - 59 + i;
                self.buckets
                    .iter()
                    .find(|(b, _)| *b == s)
                    .map_or(0, |(_, c)| *c)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/api/status` shows a minute of per-second counts: a second without events is a
    /// zero, and a count older than a minute is gone.
    #[test]
    fn counts_per_second_over_the_last_minute() {
        let mut r = Rate::default();
        r.add(10_000, 2);
        r.add(10_900, 3);
        r.add(12_000, 1);
        let last = r.last_60(12_500);
        assert_eq!(last.len(), 60);
        assert_eq!(&last[57..], &[5, 0, 1]);
        assert_eq!(
            r.last_60(71_000).iter().sum::<u64>(),
            1,
            "10 s is forgotten at 71 s"
        );
        r.add(80_000, 4);
        assert_eq!(r.last_60(80_000).iter().sum::<u64>(), 4);
    }
}
