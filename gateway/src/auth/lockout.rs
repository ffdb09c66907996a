//! Lockout after repeated failed sign-ins (pure: time comes in as an argument).
//!
//! An account with `after` failures within `window` is locked for `lock_for`; so is a
//! source address with `4 × after` failures (whatever accounts it tried: someone trying
//! many names). While locked, even the right password is refused, so guessing gains
//! nothing. A successful sign-in clears its account's failures. Kept in memory: a
//! restart forgets failures (the process restarts rarely, and a restart by an attacker
//! needs root anyway).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How many failures, within what window, lock for how long (`api.lockout_*`).
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Failures of one account that lock it.
    pub after: u32,
    /// The window failures are counted in.
    pub window: Duration,
    /// How long a lock lasts.
    pub lock_for: Duration,
}

impl Policy {
    /// Failures from one source address that lock it.
    pub fn address_after(&self) -> u32 {
        self.after.saturating_mul(4)
    }
}

/// What is locked, until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locked {
    /// The account.
    Account(Instant),
    /// The source address.
    Address(Instant),
}

impl Locked {
    /// Until when.
    pub fn until(&self) -> Instant {
        match self {
            Locked::Account(t) | Locked::Address(t) => *t,
        }
    }

    /// `account` or `address`, for the metric and the log.
    pub fn scope(&self) -> &'static str {
        match self {
            Locked::Account(_) => "account",
            Locked::Address(_) => "address",
        }
    }
}

#[derive(Debug, Default)]
struct Failures {
    /// Failures in the current window (oldest first).
    at: Vec<Instant>,
    locked_until: Option<Instant>,
}

impl Failures {
    fn locked(&self, now: Instant) -> Option<Instant> {
        self.locked_until.filter(|t| *t > now)
    }

    /// Records one failure; `Some(until)` when it begins a lock.
    fn fail(&mut self, now: Instant, after: u32, p: &Policy) -> Option<Instant> {
        self.at
            .retain(|t| now.saturating_duration_since(*t) < p.window);
        self.at.push(now);
        if self.at.len() >= after as usize && self.locked(now).is_none() {
            let until = now + p.lock_for;
            self.locked_until = Some(until);
            self.at.clear();
            return Some(until);
        }
        None
    }

    fn idle(&self, now: Instant, p: &Policy) -> bool {
        self.locked(now).is_none()
            && self
                .at
                .last()
                .is_none_or(|t| now.saturating_duration_since(*t) >= p.window)
    }
}

/// Failures per account and per source address.
#[derive(Debug)]
pub struct Lockout {
    policy: Policy,
    accounts: HashMap<String, Failures>,
    addresses: HashMap<IpAddr, Failures>,
}

/// Most entries kept per map; beyond, idle ones are dropped first (an attacker trying
/// millions of names must not grow the gateway's memory).
const MAX_ENTRIES: usize = 10_000;

impl Lockout {
    /// No failures yet.
    pub fn new(policy: Policy) -> Lockout {
        Lockout {
            policy,
            accounts: HashMap::new(),
            addresses: HashMap::new(),
        }
    }

    /// Refused before the password is even checked when the account or address is locked.
    pub fn check(&self, name: &str, addr: IpAddr, now: Instant) -> Result<(), Locked> {
        if let Some(t) = self.addresses.get(&addr).and_then(|f| f.locked(now)) {
            return Err(Locked::Address(t));
        }
        if let Some(t) = self.accounts.get(name).and_then(|f| f.locked(now)) {
            return Err(Locked::Account(t));
        }
        Ok(())
    }

    /// A failed sign-in; the locks it begins (none, the account's, the address's or both).
    pub fn failure(&mut self, name: &str, addr: IpAddr, now: Instant) -> Vec<Locked> {
        self.prune(now);
        let p = self.policy;
        let mut begun = Vec::new();
        if let Some(t) = self
            .accounts
            .entry(name.to_owned())
            .or_default()
            .fail(now, p.after, &p)
        {
            begun.push(Locked::Account(t));
        }
        if let Some(t) = self
            .addresses
            .entry(addr)
            .or_default()
            .fail(now, p.address_after(), &p)
        {
            begun.push(Locked::Address(t));
        }
        begun
    }

    /// A successful sign-in clears the account's failures (not the address's).
    pub fn success(&mut self, name: &str) {
        self.accounts.remove(name);
    }

    fn prune(&mut self, now: Instant) {
        let p = self.policy;
        if self.accounts.len() >= MAX_ENTRIES {
            self.accounts.retain(|_, f| !f.idle(now, &p));
        }
        if self.addresses.len() >= MAX_ENTRIES {
            self.addresses.retain(|_, f| !f.idle(now, &p));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn policy() -> Policy {
        Policy {
            after: 5,
            window: 15 * MIN,
            lock_for: 15 * MIN,
        }
    }

    #[test]
    fn five_failures_in_the_window_lock_the_account_for_its_time() {
        let mut l = Lockout::new(policy());
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let t0 = Instant::now();
        for i in 0..4 {
            assert!(l.failure("wang", a, t0 + i * MIN).is_empty());
            assert_eq!(l.check("wang", a, t0 + i * MIN), Ok(()));
        }
        let begun = l.failure("wang", a, t0 + 4 * MIN);
        assert_eq!(begun, vec![Locked::Account(t0 + 19 * MIN)]);
        assert_eq!(
            l.check("wang", a, t0 + 5 * MIN),
            Err(Locked::Account(t0 + 19 * MIN))
        );
        // Another account from the same place is not locked.
        assert_eq!(l.check("li", a, t0 + 5 * MIN), Ok(()));
        // The lock ends on time.
        assert_eq!(l.check("wang", a, t0 + 19 * MIN), Ok(()));
    }

    #[test]
    fn failures_older_than_the_window_do_not_count_and_success_clears() {
        let mut l = Lockout::new(policy());
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let t0 = Instant::now();
        for i in 0..4 {
            l.failure("wang", a, t0 + i * MIN);
        }
        // 16 minutes later the first four have aged out.
        assert!(l.failure("wang", a, t0 + 16 * MIN + 3 * MIN).is_empty());
        l.success("wang");
        for i in 0..4 {
            assert!(l.failure("wang", a, t0 + 20 * MIN + i * MIN).is_empty());
        }
        assert_eq!(l.check("wang", a, t0 + 24 * MIN), Ok(()));
    }

    #[test]
    fn an_address_trying_many_names_is_locked() {
        let mut l = Lockout::new(policy());
        let a: IpAddr = "192.0.2.9".parse().expect("ip");
        let t0 = Instant::now();
        let mut begun = Vec::new();
        for i in 0..20u32 {
            begun = l.failure(&format!("user{i}"), a, t0 + Duration::from_secs(i.into()));
        }
        assert_eq!(
            begun,
            vec![Locked::Address(t0 + Duration::from_secs(19) + 15 * MIN)]
        );
        assert!(matches!(
            l.check("anyone", a, t0 + MIN),
            Err(Locked::Address(_))
        ));
        let other: IpAddr = "192.0.2.10".parse().expect("ip");
        assert_eq!(l.check("anyone", other, t0 + MIN), Ok(()));
    }
}
