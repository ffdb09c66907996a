//! What `/healthz` says: the conditions the stages raise and clear.
//!
//! A stage that knows something is wrong (a commit that fails, a disk running low, a
//! publish the uplink refuses, a stage that ended) sets a [`Condition`] under its own
//! key and clears it when the fault is gone. `/healthz` reports the worst level with every
//! condition's reason, so an operator (or a supervisor polling it) sees *why*, not only
//! *that*.
//!
//! - [`Level::Degraded`]: the gateway still raises local alerts, but something an
//!   operator should fix is wrong (disk low, commits failing, an event truncated).
//!   `/healthz` answers 200 with `"status": "degraded"`.
//! - [`Level::Failed`]: a stage is down and the gateway will not recover by itself
//!   without a restart. `/healthz` answers 503 with `"status": "failed"`.
//!
//! The registry is a small map behind a mutex: conditions change a few times an hour at
//! most, and `/healthz` reads it once per request.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// How bad a condition is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Working, with something an operator should know (`/healthz` stays 200).
    Degraded,
    /// A stage has stopped or cannot do its job: `/healthz` answers 503.
    Failed,
}

impl Level {
    /// `degraded` or `failed`, as `/healthz` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Degraded => "degraded",
            Level::Failed => "failed",
        }
    }
}

/// One thing that is wrong, as `/healthz` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// How bad it is; the worst level of all conditions is `/healthz`'s status.
    pub level: Level,
    /// One sentence for the operator: what is wrong, and what the gateway does about it.
    pub reason: String,
    /// When it was first set (kept while the same key is set again).
    pub since: SystemTime,
}

/// The conditions currently set, by key (`"store"`, `"disk"`, `"stage.alerts"`, …).
#[derive(Debug, Default)]
pub struct Health {
    conditions: Mutex<BTreeMap<&'static str, Condition>>,
}

impl Health {
    /// Sets (or updates) the condition under `key`. Its `since` stays the first time.
    pub fn set(&self, key: &'static str, level: Level, reason: impl Into<String>) {
        let reason = reason.into();
        let mut map = self.lock();
        match map.get_mut(key) {
            Some(c) => {
                c.level = level;
                c.reason = reason;
            }
            None => {
                map.insert(
                    key,
                    Condition {
                        level,
                        reason,
                        since: SystemTime::now(),
                    },
                );
            }
        }
    }

    /// Clears the condition under `key`; returns whether one was set.
    pub fn clear(&self, key: &'static str) -> bool {
        self.lock().remove(key).is_some()
    }

    /// Whether a condition is set under `key`.
    pub fn is_set(&self, key: &'static str) -> bool {
        self.lock().contains_key(key)
    }

    /// The worst level set, `None` when all is well.
    pub fn worst(&self) -> Option<Level> {
        self.lock().values().map(|c| c.level).max()
    }

    /// Every condition, by key.
    pub fn conditions(&self) -> Vec<(&'static str, Condition)> {
        self.lock().iter().map(|(k, c)| (*k, c.clone())).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Condition>> {
        // A panic while holding this lock cannot leave the map half-written (every
        // operation is one insert or remove), so a poisoned lock is still good.
        self.conditions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Keeps a repeating log line from flooding the log: the first `burst` occurrences are
/// logged, then at most one summary per `every` with the count suppressed meanwhile.
/// Counters stay exact; only the log lines are thinned.
#[derive(Debug)]
pub struct LogThrottle {
    burst: u64,
    every: Duration,
    state: Mutex<ThrottleState>,
}

#[derive(Debug, Default)]
struct ThrottleState {
    seen: u64,
    suppressed: u64,
    last_summary: Option<Instant>,
}

/// What the caller should log for one occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttled {
    /// Log this occurrence in full.
    Log,
    /// Log a summary: this many occurrences (including this one) were not logged since
    /// the last line.
    Summary(u64),
    /// Log nothing.
    Quiet,
}

impl LogThrottle {
    /// Lets the first `burst` occurrences be logged in full, then at most one summary
    /// per `every`.
    pub const fn new(burst: u64, every: Duration) -> Self {
        LogThrottle {
            burst,
            every,
            state: Mutex::new(ThrottleState {
                seen: 0,
                suppressed: 0,
                last_summary: None,
            }),
        }
    }

    /// Counts one occurrence at `now` and says what to log for it.
    pub fn hit(&self, now: Instant) -> Throttled {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.seen += 1;
        if s.seen <= self.burst {
            return Throttled::Log;
        }
        s.suppressed += 1;
        let due = match s.last_summary {
            None => true,
            Some(t) => now.duration_since(t) >= self.every,
        };
        if due {
            s.last_summary = Some(now);
            let n = std::mem::take(&mut s.suppressed);
            Throttled::Summary(n)
        } else {
            Throttled::Quiet
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_level_wins_and_clearing_restores_ok() {
        let h = Health::default();
        assert_eq!(h.worst(), None);
        h.set("disk", Level::Degraded, "free space below 64 MiB");
        h.set("stage.alerts", Level::Failed, "the alerts stage ended");
        assert_eq!(h.worst(), Some(Level::Failed));
        assert!(h.clear("stage.alerts"));
        assert_eq!(h.worst(), Some(Level::Degraded));
        assert!(h.clear("disk"));
        assert!(!h.clear("disk"));
        assert_eq!(h.worst(), None);
    }

    #[test]
    fn setting_again_keeps_since_and_updates_the_reason() {
        let h = Health::default();
        h.set("store", Level::Degraded, "first");
        let since = h.conditions()[0].1.since;
        h.set("store", Level::Degraded, "second");
        let c = &h.conditions()[0].1;
        assert_eq!((c.reason.as_str(), c.since), ("second", since));
    }

    #[test]
    fn throttle_logs_a_burst_then_one_summary_per_period() {
        let t = LogThrottle::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        let first: Vec<_> = (0..3).map(|_| t.hit(t0)).collect();
        assert_eq!(first, vec![Throttled::Log; 3]);
        assert_eq!(t.hit(t0), Throttled::Summary(1));
        for _ in 0..99 {
            assert_eq!(t.hit(t0 + Duration::from_secs(5)), Throttled::Quiet);
        }
        assert_eq!(
            t.hit(t0 + Duration::from_secs(10)),
            Throttled::Summary(100),
            "every suppressed occurrence is counted in the next summary"
        );
    }
}
