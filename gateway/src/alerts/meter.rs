//! The committed-event rate shown on `/api/status`: events per second over the last
//! minute, counted by the alerts task as it handles them and read by the API; and the
//! alerts opened within `alerts.flood.window`, for flood mode ([`Openings`]).

use std::collections::VecDeque;

use serde::Serialize;

/// Most openings remembered (the count shown saturates there).
const MAX_OPENINGS: usize = 10_000;

/// When recent alerts opened (Unix ms), oldest first, within the flood window.
#[derive(Debug)]
pub(crate) struct Openings {
    window_ms: i64,
    limit: u32,
    times: VecDeque<i64>,
}

/// Flood mode as `/api/status` shows it (`"flood"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FloodView {
    /// More than `limit` alerts opened within the window.
    pub active: bool,
    /// Alerts opened within the window.
    pub new_alerts: usize,
    /// `alerts.flood.new_alerts`.
    pub limit: u32,
    /// `alerts.flood.window`, in ms.
    pub window_ms: i64,
}

impl Openings {
    pub(crate) fn new(cfg: &estate_config::Flood) -> Openings {
        Openings {
            window_ms: i64::try_from(cfg.window.as_millis()).unwrap_or(i64::MAX),
            limit: cfg.new_alerts,
            times: VecDeque::new(),
        }
    }

    /// An alert opened at `now_ms`.
    pub(crate) fn add(&mut self, now_ms: i64) {
        self.times.push_back(now_ms);
        while self.times.len() > MAX_OPENINGS
            || self
                .times
                .front()
                .is_some_and(|&t| t <= now_ms - self.window_ms)
        {
            self.times.pop_front();
        }
    }

    /// Where the rate stands at `now_ms`.
    pub(crate) fn view(&self, now_ms: i64) -> FloodView {
        let n = self
            .times
            .iter()
            .filter(|&&t| t > now_ms - self.window_ms)
            .count();
        FloodView {
            active: n > self.limit as usize,
            new_alerts: n,
            limit: self.limit,
            window_ms: self.window_ms,
        }
    }
}

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

    /// EEMUA 191's flood: more than 10 new alerts within 10 minutes; it ends as the
    /// window moves past them.
    #[test]
    fn more_than_ten_new_alerts_in_ten_minutes_is_a_flood() {
        let mut o = Openings::new(&estate_config::Flood::default());
        for i in 0..10 {
            o.add(1_000_000 + i * 1000);
        }
        assert!(!o.view(1_010_000).active, "10 is not more than 10");
        o.add(1_020_000);
        let v = o.view(1_020_000);
        assert!(v.active && v.new_alerts == 11, "{v:?}");
        assert!(
            !o.view(1_000_000 + 600_000 + 1000).active,
            "the first ones aged out"
        );
        assert_eq!(o.view(1_020_000 + 600_000).new_alerts, 0);
    }
}
