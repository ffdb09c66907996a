//! The estate board: for every estate, *ok*, *degraded* or *dark*, from the last messages
//! it sent and the current time. Pure: [`assess`] is a function of ([`EstateSeen`], now,
//! [`Rules`]), so the rules are tested with injected time, without a broker or a sleep.
//!
//! - **dark** — nothing (no batch, no status, no online link state) arrived within the
//!   reporting time ([`Rules::reporting_time`], EN 50136-1's ATS fault reporting time), or
//!   the gateway's retained link state says *offline* (its last will) and nothing came
//!   after it.
//! - **degraded** — the last status says `health = "degraded"`, or life-safety devices are
//!   offline (`offline_life_safety > 0`), or the backlog grew over each of the last
//!   [`Rules::backlog_statuses`] statuses, or a status showed the audit history
//!   rewritten (its `audit_head` at the same `audit_head_n` with another hash, or
//!   `audit_head_n` lower than before; kept once seen).
//! - **ok** — otherwise.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::time::Duration;

use estate_protocols::pb;
use serde::Serialize;

/// When an estate counts as dark or degraded.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Dark when nothing arrived for this long. Default 30 s: three status intervals of
    /// the gateway's default 10 s, so one lost status never raises it.
    pub reporting_time: Duration,
    /// Degraded when the total backlog grew from each status to the next over this many
    /// statuses (default 3: two consecutive increases). At least 2.
    pub backlog_statuses: usize,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            reporting_time: Duration::from_secs(30),
            backlog_statuses: 3,
        }
    }
}

/// An estate's state on the board, worst last (`Ord`: ok < degraded < dark).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Heard from within the reporting time, and nothing wrong in its last status.
    Ok,
    /// Heard from, but its status says degraded, life-safety devices are offline, or its backlog keeps growing.
    Degraded,
    /// Nothing heard within the reporting time, or its last will says offline.
    Dark,
}

impl State {
    /// `"ok"`, `"degraded"` or `"dark"`, as printed and in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Degraded => "degraded",
            State::Dark => "dark",
        }
    }
}

/// The last `GatewayStatus` of an estate, as the board keeps it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StatusSeen {
    /// When it arrived (the consumer's clock, Unix ms).
    pub received_ms: i64,
    /// When the gateway took it (its clock).
    pub at_ms: i64,
    /// The gateway process's boot id (new on every start).
    pub boot_id: String,
    /// The store epoch the gateway reported.
    pub store_epoch: u64,
    /// Committed events not yet acknowledged by the city broker, alarms lane.
    pub backlog_alarms: u64,
    /// Committed events not yet acknowledged by the city broker, events lane.
    pub backlog_events: u64,
    /// Age of the oldest unforwarded event over both lanes, ms.
    pub oldest_unforwarded_ms: u64,
    /// The lowest `forwarded_seq` over the lanes: every seq up to it was acknowledged by
    /// the city broker (each lane forwards in order), so a hole below it is a loss behind
    /// the broker, not a batch still on its way.
    pub forwarded_seq: u64,
    /// Configured devices the gateway counts offline.
    pub devices_offline: u32,
    /// Of those, life-safety devices (smoke, gas, fire panel, …); above 0 the estate is degraded.
    pub offline_life_safety: u32,
    /// Open alerts: critical, major, minor, info.
    pub open_alerts: [u32; 4],
    /// The gateway's `/healthz` status: `"ok"`, `"degraded"` or `"failed"`.
    pub health: String,
    /// Why `health` is not ok, each `"key: reason"`.
    pub reasons: Vec<String>,
    /// The gateway's audit chain head: the latest entry's `n` and hash (hex; empty
    /// before its first entry).
    pub audit_head_n: u64,
    /// See `audit_head_n`.
    pub audit_head: String,
}

/// Every seq up to this was acknowledged by the city broker when the status was taken.
/// A lane's cursor covers the seqs of that lane only (seqs are one counter across both),
/// so the bound is the lower of the lanes' cursors; a lane with no backlog has forwarded
/// everything committed on it, so it bounds nothing below the highest committed seq (a
/// gateway with no alarm yet would otherwise never have a gap repaired).
fn forwarded_seq(s: &pb::GatewayStatus) -> u64 {
    let committed = s.lanes.iter().map(|l| l.last_seq).max().unwrap_or(0);
    s.lanes
        .iter()
        .map(|l| {
            if l.backlog == 0 {
                committed
            } else {
                l.forwarded_seq
            }
        })
        .min()
        .unwrap_or(0)
}

impl StatusSeen {
    /// Keeps what the board needs of `s`, received at `received_ms` (Unix ms, the consumer's clock).
    pub fn from_pb(s: &pb::GatewayStatus, received_ms: i64) -> StatusSeen {
        let lane = |l: pb::Lane| s.lanes.iter().find(|x| x.lane == l as i32);
        let backlog = |l| lane(l).map_or(0, |x| x.backlog);
        let devices = s.devices.unwrap_or_default();
        let alerts = s.open_alerts.unwrap_or_default();
        StatusSeen {
            received_ms,
            at_ms: s.at_ms,
            boot_id: s.boot_id.clone(),
            store_epoch: s.store_epoch,
            backlog_alarms: backlog(pb::Lane::Alarms),
            backlog_events: backlog(pb::Lane::Events),
            oldest_unforwarded_ms: s
                .lanes
                .iter()
                .map(|l| l.oldest_unforwarded_age_ms)
                .max()
                .unwrap_or(0),
            forwarded_seq: forwarded_seq(s),
            devices_offline: devices.offline,
            offline_life_safety: devices.offline_life_safety,
            open_alerts: [alerts.critical, alerts.major, alerts.minor, alerts.info],
            health: s.health.clone(),
            reasons: s.reasons.clone(),
            audit_head_n: s.audit_head_n,
            audit_head: s.audit_head.clone(),
        }
    }

    /// Both lanes' backlog together.
    pub fn backlog(&self) -> u64 {
        self.backlog_alarms + self.backlog_events
    }
}

/// The first 12 hex digits of a hash (or `none`).
fn short(h: &str) -> &str {
    if h.is_empty() {
        "none"
    } else {
        &h[..h.len().min(12)]
    }
}

/// The last retained `LinkState`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LinkSeen {
    /// When it arrived (the consumer's clock, Unix ms).
    pub received_ms: i64,
    /// False in the gateway's last will (it vanished) or after a clean stop.
    pub online: bool,
    /// When the gateway set it (its clock, Unix ms): for the last will, when that connection was made.
    pub since_ms: i64,
    /// The boot id of the gateway process that published it.
    pub boot_id: String,
}

/// Everything the board remembers of one estate: a few hundred bytes, whatever the
/// event count.
#[derive(Debug, Clone, Default)]
pub struct EstateSeen {
    /// The gateway id last seen in any of its messages (empty until one named it).
    pub gateway_id: String,
    /// When the last batch arrived (the consumer's clock, Unix ms).
    pub last_batch_ms: Option<i64>,
    /// The newest `gateway_time_ms` of any event received.
    pub newest_event_ms: Option<i64>,
    /// Batches received (duplicates included).
    pub batches: u64,
    /// Events received in those batches (duplicates included).
    pub events: u64,
    /// The last `GatewayStatus`; `None` before one arrived.
    pub status: Option<StatusSeen>,
    /// Total backlog of the last statuses, oldest first (at most `Rules::backlog_statuses`).
    pub backlogs: VecDeque<u64>,
    /// The last retained `LinkState`; `None` before one arrived.
    pub link: Option<LinkSeen>,
    /// Set (and kept) once a status showed the audit history rewritten: its chain head
    /// at the same `n` with another hash, or at a lower `n`, than a status before.
    pub audit_rewritten: Option<String>,
}

impl EstateSeen {
    /// When anything that shows the gateway alive last arrived.
    pub fn last_heard_ms(&self) -> Option<i64> {
        let online_link = self
            .link
            .as_ref()
            .filter(|l| l.online)
            .map(|l| l.received_ms);
        [
            self.last_batch_ms,
            self.status.as_ref().map(|s| s.received_ms),
            online_link,
        ]
        .into_iter()
        .flatten()
        .max()
    }
}

/// One row of the board.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EstateView {
    /// The estate's id, from the topic.
    pub estate_id: String,
    /// Its gateway's id (empty until a message named it).
    pub gateway_id: String,
    /// Ok, degraded or dark.
    pub state: State,
    /// Why it is not ok (empty when ok).
    pub reasons: Vec<String>,
    /// From the retained link state; `None` before one arrived.
    pub online: Option<bool>,
    /// Now − the newest event's gateway time, ms.
    pub lag_ms: Option<i64>,
    /// Now − the last message of any kind, ms.
    pub silent_ms: Option<i64>,
    /// Batches received.
    pub batches: u64,
    /// Events received (duplicates included).
    pub events: u64,
    /// The last status; `None` before one arrived.
    pub status: Option<StatusSeen>,
}

/// The rules, applied to one estate at `now_ms` (Unix ms, the consumer's clock).
pub fn assess(estate_id: &str, seen: &EstateSeen, now_ms: i64, rules: &Rules) -> EstateView {
    let mut reasons = Vec::new();
    let heard = seen.last_heard_ms();
    let silent_ms = heard.map(|h| now_ms.saturating_sub(h));
    let reporting_ms = i64::try_from(rules.reporting_time.as_millis()).unwrap_or(i64::MAX);
    let offline_last = seen
        .link
        .as_ref()
        .filter(|l| !l.online && heard.is_none_or(|h| l.received_ms >= h));
    let dark = if let Some(l) = offline_last {
        reasons.push(format!(
            "offline (last will of the connection made at {})",
            l.since_ms
        ));
        true
    } else {
        match silent_ms {
            None => {
                reasons.push("nothing received".into());
                true
            }
            Some(s) if s > reporting_ms => {
                reasons.push(format!(
                    "nothing for {:.1} s (reporting time {} s)",
                    s as f64 / 1000.0,
                    rules.reporting_time.as_secs()
                ));
                true
            }
            Some(_) => false,
        }
    };
    if let Some(st) = &seen.status {
        if st.health == "degraded" {
            let why = if st.reasons.is_empty() {
                String::new()
            } else {
                format!(": {}", st.reasons.join("; "))
            };
            reasons.push(format!("health degraded{why}"));
        }
        if st.offline_life_safety > 0 {
            reasons.push(format!(
                "{} life-safety device(s) offline",
                st.offline_life_safety
            ));
        }
    }
    reasons.extend(seen.audit_rewritten.clone());
    let n = rules.backlog_statuses.max(2);
    if seen.backlogs.len() >= n {
        let last: Vec<u64> = seen.backlogs.iter().rev().take(n).rev().copied().collect();
        if last.windows(2).all(|w| w[1] > w[0]) {
            reasons.push(format!(
                "backlog grew over the last {n} statuses ({} → {})",
                last[0],
                last[n - 1]
            ));
        }
    }
    let state = if dark {
        State::Dark
    } else if reasons.is_empty() {
        State::Ok
    } else {
        State::Degraded
    };
    EstateView {
        estate_id: estate_id.to_owned(),
        gateway_id: seen.gateway_id.clone(),
        state,
        reasons,
        online: seen.link.as_ref().map(|l| l.online),
        lag_ms: seen.newest_event_ms.map(|t| now_ms.saturating_sub(t)),
        silent_ms,
        batches: seen.batches,
        events: seen.events,
        status: seen.status.clone(),
    }
}

/// `{prefix}/{estate_id}/{kind}` → (estate_id, kind).
pub fn split_topic(topic: &str) -> Option<(&str, &str)> {
    let mut parts = topic.rsplitn(3, '/');
    let kind = parts.next()?;
    let estate = parts.next()?;
    parts.next()?;
    Some((estate, kind))
}

/// Every estate heard of, and the rules.
#[derive(Debug, Default)]
pub struct Board {
    /// When an estate is dark or degraded.
    pub rules: Rules,
    estates: HashMap<String, EstateSeen>,
}

impl Board {
    /// An empty board judged by `rules`.
    pub fn new(rules: Rules) -> Board {
        Board {
            rules,
            estates: HashMap::new(),
        }
    }

    fn estate(&mut self, estate_id: &str, gateway_id: &str) -> &mut EstateSeen {
        // get_mut first: no key allocation for an estate already on the board.
        if !self.estates.contains_key(estate_id) {
            self.estates
                .insert(estate_id.to_owned(), EstateSeen::default());
        }
        let seen = self
            .estates
            .get_mut(estate_id)
            .unwrap_or_else(|| unreachable!("inserted above"));
        if !gateway_id.is_empty() && seen.gateway_id != gateway_id {
            gateway_id.clone_into(&mut seen.gateway_id);
        }
        seen
    }

    /// Counts a batch of `estate_id` received at `now_ms` (consumer's clock, Unix ms).
    pub fn on_batch(
        &mut self,
        estate_id: &str,
        gateway_id: &str,
        batch: &super::BatchSeen,
        now_ms: i64,
    ) {
        let seen = self.estate(estate_id, gateway_id);
        seen.last_batch_ms = Some(now_ms);
        seen.batches += 1;
        seen.events += batch.events;
        if batch.events > 0 {
            let newest = seen.newest_event_ms.unwrap_or(i64::MIN);
            seen.newest_event_ms = Some(newest.max(batch.newest_gateway_time_ms));
        }
    }

    /// Keeps the estate's `GatewayStatus` received at `now_ms`, and its backlog for the growth rule.
    pub fn on_status(&mut self, estate_id: &str, status: &pb::GatewayStatus, now_ms: i64) {
        let keep = self.rules.backlog_statuses.max(2);
        let seen = self.estate(estate_id, &status.gateway_id);
        let st = StatusSeen::from_pb(status, now_ms);
        if let Some(before) = seen.status.as_ref().filter(|b| !b.audit_head.is_empty()) {
            let (n0, h0) = (before.audit_head_n, &before.audit_head);
            let (n1, h1) = (st.audit_head_n, &st.audit_head);
            let rewritten = n1 < n0 || (n1 == n0 && h1 != h0);
            if rewritten && seen.audit_rewritten.is_none() {
                seen.audit_rewritten = Some(format!(
                    "audit history rewritten: head n={n0} {} became n={n1} {}",
                    short(h0),
                    short(h1)
                ));
            }
        }
        seen.backlogs.push_back(st.backlog());
        while seen.backlogs.len() > keep {
            seen.backlogs.pop_front();
        }
        seen.status = Some(st);
    }

    /// Keeps the estate's retained `LinkState` received at `now_ms`.
    pub fn on_link(&mut self, estate_id: &str, link: &pb::LinkState, now_ms: i64) {
        let seen = self.estate(estate_id, &link.gateway_id);
        seen.link = Some(LinkSeen {
            received_ms: now_ms,
            online: link.online,
            since_ms: link.since_ms,
            boot_id: link.boot_id.clone(),
        });
    }

    /// What the board remembers of `estate_id`; `None` for an estate never heard of.
    pub fn get(&self, estate_id: &str) -> Option<&EstateSeen> {
        self.estates.get(estate_id)
    }

    /// Estates heard of.
    pub fn len(&self) -> usize {
        self.estates.len()
    }

    /// True before any estate was heard of.
    pub fn is_empty(&self) -> bool {
        self.estates.is_empty()
    }

    /// Every estate's row at `now_ms`, by estate id.
    pub fn views(&self, now_ms: i64) -> Vec<EstateView> {
        let mut v: Vec<EstateView> = self
            .estates
            .iter()
            .map(|(id, seen)| assess(id, seen, now_ms, &self.rules))
            .collect();
        v.sort_by(|a, b| a.estate_id.cmp(&b.estate_id));
        v
    }

    /// (gateway_id → estate_id) for every estate that named its gateway.
    pub fn estates_by_gateway(&self) -> HashMap<&str, &str> {
        self.estates
            .iter()
            .filter(|(_, s)| !s.gateway_id.is_empty())
            .map(|(e, s)| (s.gateway_id.as_str(), e.as_str()))
            .collect()
    }
}

/// How many estates are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Estates in state ok.
    pub ok: usize,
    /// Estates in state degraded.
    pub degraded: usize,
    /// Estates in state dark.
    pub dark: usize,
}

/// How many of `views` are in each state.
pub fn counts(views: &[EstateView]) -> Counts {
    let mut c = Counts::default();
    for v in views {
        match v.state {
            State::Ok => c.ok += 1,
            State::Degraded => c.degraded += 1,
            State::Dark => c.dark += 1,
        }
    }
    c
}

fn secs(ms: Option<i64>) -> String {
    ms.map_or_else(|| "-".into(), |m| format!("{:.1}s", m as f64 / 1000.0))
}

/// The terminal table: dark and degraded estates first, at most `max_rows` rows. Columns:
/// lag and silence (see [`EstateView`]), age of the last status, backlog alarms+events,
/// store epoch, devices offline/of them life-safety, open alerts critical/major/minor.
pub fn render_table(views: &[EstateView], now_ms: i64, max_rows: usize) -> String {
    let mut rows: Vec<&EstateView> = views.iter().collect();
    rows.sort_by(|a, b| {
        b.state
            .cmp(&a.state)
            .then_with(|| a.estate_id.cmp(&b.estate_id))
    });
    let c = counts(views);
    let mut out = format!(
        "{} estates: {} ok, {} degraded, {} dark\n{:<22} {:<8} {:<7} {:>8} {:>8} {:>8} {:>10} {:>6} {:>5} {:>9}  reasons\n",
        views.len(),
        c.ok,
        c.degraded,
        c.dark,
        "estate",
        "state",
        "link",
        "lag",
        "silent",
        "status",
        "backlog",
        "epoch",
        "off",
        "alerts",
    );
    for v in rows.iter().take(max_rows) {
        let st = v.status.as_ref();
        let _ = writeln!(
            out,
            "{:<22} {:<8} {:<7} {:>8} {:>8} {:>8} {:>10} {:>6} {:>5} {:>9}  {}",
            v.estate_id,
            v.state.as_str(),
            match v.online {
                Some(true) => "online",
                Some(false) => "offline",
                None => "-",
            },
            secs(v.lag_ms),
            secs(v.silent_ms),
            secs(st.map(|s| now_ms.saturating_sub(s.received_ms))),
            st.map_or("-".into(), |s| format!(
                "{}+{}",
                s.backlog_alarms, s.backlog_events
            )),
            st.map_or("-".into(), |s| s.store_epoch.to_string()),
            st.map_or("-".into(), |s| format!(
                "{}/{}",
                s.devices_offline, s.offline_life_safety
            )),
            st.map_or("-".into(), |s| format!(
                "{}/{}/{}",
                s.open_alerts[0], s.open_alerts[1], s.open_alerts[2]
            )),
            v.reasons.join("; "),
        );
    }
    if rows.len() > max_rows {
        let _ = writeln!(out, "… and {} more", rows.len() - max_rows);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::city::BatchSeen;

    const T0: i64 = 1_800_000_000_000;

    fn status(backlog_events: u64, life_safety_off: u32, health: &str) -> pb::GatewayStatus {
        pb::GatewayStatus {
            gateway_id: "gw-1".into(),
            estate_id: "e1".into(),
            boot_id: "b1".into(),
            store_epoch: 7,
            lanes: vec![
                pb::LaneStatus {
                    lane: pb::Lane::Alarms as i32,
                    backlog: 0,
                    last_seq: 90,
                    forwarded_seq: 90,
                    ..Default::default()
                },
                pb::LaneStatus {
                    lane: pb::Lane::Events as i32,
                    backlog: backlog_events,
                    oldest_unforwarded_age_ms: 1500,
                    last_seq: 100,
                    forwarded_seq: 80,
                },
            ],
            devices: Some(pb::DeviceCounts {
                online: 10,
                offline: life_safety_off + 1,
                offline_life_safety: life_safety_off,
                unknown: 0,
            }),
            health: health.into(),
            reasons: if health == "degraded" {
                vec!["modbus bus fire-panel failing".into()]
            } else {
                vec![]
            },
            ..Default::default()
        }
    }

    fn batch(newest: i64) -> BatchSeen {
        BatchSeen {
            events: 20,
            unique: 20,
            newest_gateway_time_ms: newest,
        }
    }

    fn state(b: &Board, now: i64) -> (State, Vec<String>) {
        let v = &b.views(now)[0];
        (v.state, v.reasons.clone())
    }

    #[test]
    fn dark_after_the_reporting_time_and_back_with_the_next_batch() {
        let mut b = Board::new(Rules::default());
        b.on_batch("e1", "gw-1", &batch(T0 - 400), T0);
        assert_eq!(
            state(&b, T0 + 30_000).0,
            State::Ok,
            "exactly the reporting time"
        );
        let (s, why) = state(&b, T0 + 30_001);
        assert_eq!(s, State::Dark);
        assert!(why[0].contains("nothing for 30.0 s"), "{why:?}");
        // A status alone keeps it alive, and the lag is from the newest event.
        b.on_status("e1", &status(20, 0, "ok"), T0 + 40_000);
        let v = &b.views(T0 + 41_000)[0];
        assert_eq!(v.state, State::Ok);
        assert_eq!(v.lag_ms, Some(41_400));
        assert_eq!(v.silent_ms, Some(1_000));
        // The events lane's cursor bounds what is surely forwarded (seqs run across lanes).
        assert_eq!(v.status.as_ref().map(|s| s.forwarded_seq), Some(80));
        // Both lanes drained: everything committed is forwarded, even with no alarm ever
        // sent (an alarms cursor of 0 bounds nothing).
        let mut drained = status(0, 0, "ok");
        drained.lanes[0].last_seq = 0;
        drained.lanes[0].forwarded_seq = 0;
        drained.lanes[1].forwarded_seq = 100;
        b.on_status("e1", &drained, T0 + 42_000);
        let v = &b.views(T0 + 42_000)[0];
        assert_eq!(v.status.as_ref().map(|s| s.forwarded_seq), Some(100));
    }

    #[test]
    fn an_offline_last_will_is_dark_at_once_until_the_gateway_is_heard_again() {
        let mut b = Board::new(Rules::default());
        b.on_batch("e1", "gw-1", &batch(T0), T0);
        let will = pb::LinkState {
            gateway_id: "gw-1".into(),
            online: false,
            since_ms: T0 - 60_000,
            ..Default::default()
        };
        b.on_link("e1", &will, T0 + 10);
        let (s, why) = state(&b, T0 + 11);
        assert_eq!(s, State::Dark);
        assert!(why[0].starts_with("offline"), "{why:?}");
        assert_eq!(b.views(T0 + 11)[0].online, Some(false));
        // Back: its online state (retained, on connect), then batches.
        b.on_link(
            "e1",
            &pb::LinkState {
                online: true,
                ..will.clone()
            },
            T0 + 5_000,
        );
        assert_eq!(state(&b, T0 + 5_001).0, State::Ok);
        // A retained offline state received at subscribe time, for a gateway never heard.
        let mut b = Board::new(Rules::default());
        b.on_link("e2", &will, T0);
        assert_eq!(state(&b, T0).0, State::Dark);
    }

    #[test]
    fn degraded_on_health_life_safety_devices_and_a_growing_backlog() {
        let mut b = Board::new(Rules::default());
        b.on_status("e1", &status(0, 0, "degraded"), T0);
        let (s, why) = state(&b, T0);
        assert_eq!(s, State::Degraded);
        assert_eq!(why, ["health degraded: modbus bus fire-panel failing"]);

        let mut b = Board::new(Rules::default());
        b.on_status("e1", &status(0, 2, "ok"), T0);
        assert_eq!(
            state(&b, T0),
            (
                State::Degraded,
                vec!["2 life-safety device(s) offline".into()]
            )
        );

        let mut b = Board::new(Rules::default());
        for (i, backlog) in [5, 40, 90].into_iter().enumerate() {
            // Not yet: two statuses are not "over the last 3".
            assert_eq!(state_or_ok(&b, T0), State::Ok);
            b.on_status("e1", &status(backlog, 0, "ok"), T0 + i as i64 * 10_000);
        }
        let (s, why) = state(&b, T0 + 20_000);
        assert_eq!(s, State::Degraded);
        assert_eq!(why, ["backlog grew over the last 3 statuses (5 → 90)"]);
        // Draining again clears it; a flat backlog is not growth.
        b.on_status("e1", &status(60, 0, "ok"), T0 + 30_000);
        assert_eq!(state(&b, T0 + 30_000).0, State::Ok);
        b.on_status("e1", &status(60, 0, "ok"), T0 + 40_000);
        b.on_status("e1", &status(60, 0, "ok"), T0 + 50_000);
        assert_eq!(state(&b, T0 + 50_000).0, State::Ok);
        // Dark wins over degraded, and keeps the other reasons.
        b.on_status("e1", &status(60, 1, "ok"), T0 + 60_000);
        let (s, why) = state(&b, T0 + 100_000);
        assert_eq!(s, State::Dark);
        assert_eq!(why.len(), 2);
    }

    #[test]
    fn an_audit_head_that_changes_at_the_same_n_or_goes_back_is_a_rewritten_history() {
        let with_head = |n: u64, h: &str| pb::GatewayStatus {
            audit_head_n: n,
            audit_head: h.repeat(64),
            ..status(0, 0, "ok")
        };
        let mut b = Board::new(Rules::default());
        b.on_status("e1", &with_head(3, "a"), T0);
        b.on_status("e1", &with_head(3, "a"), T0 + 1);
        b.on_status("e1", &with_head(9, "b"), T0 + 2);
        assert_eq!(state(&b, T0 + 2).0, State::Ok, "the chain grew");
        assert_eq!(
            b.views(T0 + 2)[0].status.as_ref().map(|s| s.audit_head_n),
            Some(9)
        );
        b.on_status("e1", &with_head(9, "c"), T0 + 3);
        let (s, why) = state(&b, T0 + 3);
        assert_eq!(s, State::Degraded);
        assert_eq!(
            why,
            ["audit history rewritten: head n=9 bbbbbbbbbbbb became n=9 cccccccccccc"]
        );
        // Kept: a later, growing head does not undo it.
        b.on_status("e1", &with_head(12, "d"), T0 + 4);
        assert_eq!(state(&b, T0 + 4).0, State::Degraded);
        let mut b = Board::new(Rules::default());
        b.on_status("e1", &with_head(9, "b"), T0);
        b.on_status("e1", &with_head(4, "b"), T0 + 1);
        assert_eq!(state(&b, T0 + 1).0, State::Degraded, "went back");
    }

    fn state_or_ok(b: &Board, now: i64) -> State {
        b.views(now).first().map_or(State::Ok, |v| v.state)
    }

    #[test]
    fn topics_split_into_estate_and_kind() {
        assert_eq!(split_topic("city/v1/e1/alarms"), Some(("e1", "alarms")));
        assert_eq!(split_topic("a/b/c/e1/health"), Some(("e1", "health")));
        assert_eq!(split_topic("e1/health"), None);
    }

    #[test]
    fn the_table_puts_dark_estates_first() {
        let mut b = Board::new(Rules::default());
        b.on_batch("e1", "gw-1", &batch(T0), T0 + 60_000);
        b.on_batch("e2", "gw-2", &batch(T0), T0);
        b.on_status("e3", &status(3, 0, "ok"), T0 + 60_000);
        let table = render_table(&b.views(T0 + 60_000), T0 + 60_000, 2);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "3 estates: 2 ok, 0 degraded, 1 dark");
        assert!(
            lines[2].starts_with("e2") && lines[2].contains("dark"),
            "{table}"
        );
        assert!(lines[3].starts_with("e1"), "{table}");
        assert!(lines[4].contains("1 more"), "{table}");
    }
}
