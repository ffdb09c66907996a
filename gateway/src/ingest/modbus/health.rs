//! Device health and the backoff of a failing device. Pure.

use std::time::Duration;

/// A change of a device's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// `offline_after` polls in a row failed: raise `DEV.OFFLINE`.
    Offline,
    /// It answered again after being offline: raise `DEV.ONLINE`.
    Online,
}

/// Consecutive failures of one device.
#[derive(Debug, Clone, Default)]
pub struct Health {
    failures: u32,
    offline: bool,
}

impl Health {
    /// Failed polls in a row since the last success (0 after one).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Reported offline (`DEV.OFFLINE` raised) and not back yet.
    pub fn is_offline(&self) -> bool {
        self.offline
    }

    /// A poll succeeded: the failures reset; `Online` if the device was offline.
    pub fn success(&mut self) -> Option<Transition> {
        self.failures = 0;
        if std::mem::take(&mut self.offline) {
            Some(Transition::Online)
        } else {
            None
        }
    }

    /// A poll failed: `Offline` once, when this makes `offline_after` (at least 1) in a
    /// row; `None` before and while it stays offline.
    pub fn failure(&mut self, offline_after: u32) -> Option<Transition> {
        self.failures = self.failures.saturating_add(1);
        if !self.offline && self.failures >= offline_after.max(1) {
            self.offline = true;
            Some(Transition::Offline)
        } else {
            None
        }
    }
}

/// Delay before the next poll of a device after `failures` consecutive failed polls:
/// the poll interval, doubled per failure, at most `cap` (and never less than the
/// interval).
pub fn poll_delay(interval: Duration, failures: u32, cap: Duration) -> Duration {
    let factor = 1u32.checked_shl(failures.min(20)).unwrap_or(u32::MAX);
    interval
        .checked_mul(factor)
        .unwrap_or(Duration::MAX)
        .min(cap)
        .max(interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_after_n_failures_then_online_once() {
        let mut h = Health::default();
        assert_eq!(h.failure(3), None);
        assert_eq!(h.failure(3), None);
        assert_eq!(h.failure(3), Some(Transition::Offline));
        assert_eq!(h.failure(3), None, "raised once");
        assert!(h.is_offline());
        assert_eq!(h.success(), Some(Transition::Online));
        assert_eq!(h.success(), None);
        // A success in between resets the count.
        assert_eq!(h.failure(2), None);
        assert_eq!(h.success(), None);
        assert_eq!(h.failure(2), None);
        assert_eq!(h.failure(2), Some(Transition::Offline));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let s = Duration::from_secs;
        let got: Vec<Duration> = (0..8).map(|n| poll_delay(s(1), n, s(30))).collect();
        assert_eq!(
            got,
            vec![s(1), s(2), s(4), s(8), s(16), s(30), s(30), s(30)]
        );
        assert_eq!(poll_delay(s(1), u32::MAX, s(30)), s(30));
        // The cap never makes polls faster than the interval.
        assert_eq!(poll_delay(s(60), 3, s(30)), s(60));
    }
}
