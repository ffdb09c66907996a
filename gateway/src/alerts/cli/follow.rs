//! `alerts --follow`: what it has shown and prints next ([`Follow`], pure), the delays
//! between reconnects ([`Backoff`]), and the loop that reads the stream, reconnects and
//! resyncs.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use crate::alerts::model::Alert;
use crate::events::now_ms;

use super::http::{fetch_alert, fetch_alerts, LiveStream, Target};
use super::lines::{by_whom, change_line, gone_line, place, status_text};
use super::sse::SseParser;

/// Follows the stream for good: prints changes, reconnects when it is lost, resyncs.
/// Ends only with the task (Ctrl-C in [`list`]).
pub(super) async fn follow(
    api: &Target,
    all: bool,
    mut stream: LiveStream,
    mut shown: Follow,
) -> Infallible {
    let mut backoff = Backoff::default();
    loop {
        let mut cause = read_stream(api, all, &mut stream, &mut shown).await;
        // One line for the loss, another only when the cause changes (the gateway's
        // stream ended, then its port refuses while it restarts).
        let mut told: Option<String> = None;
        stream = loop {
            let delay = backoff.next_delay();
            if told.as_deref() != Some(cause.as_str()) {
                eprintln!(
                    "lost the gateway at http://{}: {cause}; retrying in {}",
                    api.addr,
                    seconds(delay)
                );
                told = Some(cause.clone());
            }
            tokio::time::sleep(delay).await;
            match LiveStream::open(api).await {
                Ok(s) => {
                    eprintln!("-- reconnected --");
                    match resync(api, all, &mut shown).await {
                        Ok(()) => break s,
                        Err(e) => cause = e,
                    }
                }
                Err(e) => cause = e,
            }
        };
        backoff.reset();
    }
}

/// Reads events until the stream fails: the cause.
pub(super) async fn read_stream(
    api: &Target,
    all: bool,
    stream: &mut LiveStream,
    shown: &mut Follow,
) -> String {
    let mut parser = SseParser::default();
    loop {
        let bytes = match stream.next_bytes().await {
            Ok(b) => b,
            Err(cause) => return cause,
        };
        for ev in parser.push(&bytes) {
            match ev.event.as_str() {
                "alert" => match serde_json::from_str::<Alert>(&ev.data) {
                    Ok(a) => {
                        if let Some(line) = shown.change(a, now_ms()) {
                            println!("{line}");
                        }
                    }
                    Err(e) => eprintln!("ignored an alert event this client cannot read: {e}"),
                },
                "resync" => {
                    if let Err(cause) = resync(api, all, shown).await {
                        return cause;
                    }
                }
                _ => {}
            }
        }
    }
}

/// Re-reads the alerts and prints what differs from what was shown.
pub(super) async fn resync(api: &Target, all: bool, shown: &mut Follow) -> Result<(), String> {
    let list = fetch_alerts(api, all).await?;
    let (lines, missing) = shown.resync(list, now_ms());
    for line in lines {
        println!("{line}");
    }
    for id in missing {
        let found = fetch_alert(api, &id).await?;
        if let Some(line) = shown.looked_up(&id, found, now_ms()) {
            println!("{line}");
        }
    }
    Ok(())
}

/// "0.5 s", "1 s", "10 s".
pub(super) fn seconds(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// The delays between reconnect attempts: 0.5 s, doubling, at most 10 s; from 0.5 s
/// again once a stream is open.
#[derive(Debug, Clone)]
pub(super) struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(10);

    /// The delay before the next attempt.
    pub(super) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(Self::MAX);
        d
    }

    /// Connected: the next loss starts from 0.5 s.
    pub(super) fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: Self::FIRST }
    }
}

/// What an alert's change line shows, less the count and the age: a follower prints a
/// line when this changes.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Shown {
    severity: u8,
    /// Status, disposition, cleared, escalated ([`status_text`]).
    status: String,
    /// Who closed it, else who acknowledged it.
    by: Option<String>,
    code: String,
    title: String,
    place: String,
    device_id: String,
}

impl Shown {
    pub(super) fn of(a: &Alert) -> Shown {
        Shown {
            severity: a.severity,
            status: status_text(a),
            by: by_whom(a).map(str::to_owned),
            code: a.code.clone(),
            title: a.title.clone(),
            place: place(a),
            device_id: a.device_id.clone(),
        }
    }
}

/// How long a closed alert stays known without `--all`: long enough that the stream's
/// copy of a close that a resync already printed is recognised (then it is forgotten, so
/// a follower running for months keeps only the open alerts).
pub(super) const FORGET_CLOSED_MS: i64 = 60_000;

/// What `alerts --follow` has shown and what it prints next (pure: alerts and the time
/// in, lines out).
#[derive(Debug)]
pub(super) struct Follow {
    /// Every alert known here, as last received: its [`Shown`] is what was printed last.
    known: HashMap<String, Alert>,
    /// `--all`: the history is listed, so closed alerts stay known (a resync would
    /// otherwise print them as new).
    all: bool,
    /// Without `--all`: closed alerts to forget, oldest first, with when they closed here.
    closed: VecDeque<(i64, String)>,
}

/// Active, acknowledged, closed: an alert never goes back.
pub(super) fn rank(a: &Alert) -> u8 {
    match (&a.closed, a.status) {
        (Some(_), _) | (None, estate_protocols::model::AlertStatus::Closed) => 2,
        (None, estate_protocols::model::AlertStatus::Acknowledged) => 1,
        (None, _) => 0,
    }
}

impl Follow {
    /// Starts from the table just printed at `now_ms` (those alerts are shown).
    pub(super) fn new(all: bool, listed: Vec<Alert>, now_ms: i64) -> Follow {
        let mut f = Follow {
            known: HashMap::new(),
            all,
            closed: VecDeque::new(),
        };
        for a in listed {
            f.remember(a, now_ms);
        }
        f
    }

    /// A change (from the stream, or re-read): its line when the alert is new here or
    /// what its line shows changed. A copy older than the one known (fewer repeats, or an
    /// earlier status: the stream's queue behind a resync) is ignored.
    pub(super) fn change(&mut self, a: Alert, now_ms: i64) -> Option<String> {
        self.forget_closed(now_ms);
        let line = match self.known.get(&a.id) {
            Some(prev) if a.count < prev.count || rank(&a) < rank(prev) => return None,
            Some(prev) if Shown::of(prev) == Shown::of(&a) => None,
            _ => Some(change_line(&a, now_ms)),
        };
        self.remember(a, now_ms);
        line
    }

    /// A re-read list of alerts (open ones; with `--all` the history): the lines for
    /// what differs from what was shown, and the ids of alerts shown open that the list
    /// lacks (closed since, or gone), to be looked up one by one ([`Follow::looked_up`]).
    pub(super) fn resync(&mut self, list: Vec<Alert>, now_ms: i64) -> (Vec<String>, Vec<String>) {
        let listed: HashSet<String> = list.iter().map(|a| a.id.clone()).collect();
        let lines = list
            .into_iter()
            .filter_map(|a| self.change(a, now_ms))
            .collect();
        let mut missing = Vec::new();
        let mut pruned = Vec::new();
        for (id, a) in &self.known {
            if listed.contains(id) {
                continue;
            }
            if a.is_open() {
                missing.push(id.clone());
            } else if self.all {
                // Closed and out of the history: nothing to show.
                pruned.push(id.clone());
            }
        }
        for id in pruned {
            self.known.remove(&id);
        }
        missing.sort();
        (lines, missing)
    }

    /// The answer for an id [`Follow::resync`] asked about: the alert (closed since), or
    /// `None` when the gateway no longer has it (a line saying so).
    pub(super) fn looked_up(
        &mut self,
        id: &str,
        found: Option<Alert>,
        now_ms: i64,
    ) -> Option<String> {
        match found {
            Some(a) => self.change(a, now_ms),
            None => self.known.remove(id).map(|a| gone_line(&a)),
        }
    }

    /// Whether the alert `id` is known here (shown, not yet forgotten).
    #[cfg(test)]
    pub(super) fn knows(&self, id: &str) -> bool {
        self.known.contains_key(id)
    }

    fn remember(&mut self, a: Alert, now_ms: i64) {
        if !self.all && !a.is_open() {
            self.closed.push_back((now_ms, a.id.clone()));
        }
        self.known.insert(a.id.clone(), a);
    }

    fn forget_closed(&mut self, now_ms: i64) {
        while let Some((at, _)) = self.closed.front() {
            if now_ms - at < FORGET_CLOSED_MS {
                break;
            }
            if let Some((_, id)) = self.closed.pop_front() {
                if self.known.get(&id).is_some_and(|a| !a.is_open()) {
                    self.known.remove(&id);
                }
            }
        }
    }
}
