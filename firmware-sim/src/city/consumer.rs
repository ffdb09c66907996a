//! `estate-sim city`: the long-running reference consumer. One task owns the MQTT
//! connection, the bounded [`Ledger`] and the [`Board`]; every `interval` it prints the
//! board, rewrites the JSON snapshot and, with repair on, asks for the gaps that stayed
//! open ([`Repairer`]).
//!
//! Messages under `{prefix}/#` are routed by their last topic level: `alarms` and
//! `events` (an `EventBatch`) to the ledger and the board, `health` (`GatewayStatus`) and
//! `status` (the retained `LinkState`) to the board, `results` (`CommandResult`) to the
//! repair bookkeeping; `commands` (ours, or another operator's) are ignored.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use estate_protocols::pb;
use prost::Message;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use serde::Serialize;
use tokio::time::sleep;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::board::{self, Board, Counts, EstateView, Rules, State};
use super::command::{self, now_ms};
use super::{CityReport, Ledger};

/// Where the JSON snapshot goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonOut {
    /// One snapshot object per line on stdout (instead of the table).
    Stdout,
    /// Rewritten atomically (temp file + rename) every interval.
    File(PathBuf),
}

/// Asking for gaps again (`Resend`).
#[derive(Debug, Clone)]
pub struct RepairOptions {
    /// A gap must stay open this long first (batches of the other lane, or a backlog
    /// draining after a failover, close their holes within seconds).
    pub after: Duration,
    /// At most one resend per stream this often.
    pub every: Duration,
    /// At most this many resends per interval over all streams.
    pub max_per_tick: usize,
    /// Who the commands name as issuer.
    pub issuer: String,
}

impl Default for RepairOptions {
    fn default() -> Self {
        RepairOptions {
            after: Duration::from_secs(5),
            every: Duration::from_secs(10),
            max_per_tick: 20,
            issuer: "estate-sim city --repair".into(),
        }
    }
}

/// What `estate-sim city` connects to, how it judges estates, and what it writes.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// The city broker's host name or address.
    pub broker_host: String,
    /// The city broker's MQTT port.
    pub broker_port: u16,
    /// The MQTT client id (random by default, so two consumers never take each other's session).
    pub client_id: String,
    /// `city/v1`.
    pub prefix: String,
    /// When an estate counts as dark or degraded.
    pub rules: Rules,
    /// How often the board is printed and the JSON rewritten.
    pub interval: Duration,
    /// Where to write the snapshot as JSON (`--json`); `None` writes none.
    pub json: Option<JsonOut>,
    /// Ask gateways to resend the gaps (`--repair`); `None` only reports them.
    pub repair: Option<RepairOptions>,
    /// Stop once this many unique events have arrived.
    pub until_events: Option<u64>,
    /// Rows of the terminal table.
    pub max_rows: usize,
}

/// Resends sent and what came back.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RepairStats {
    /// `Resend` commands sent.
    pub sent: u64,
    /// Final results received for them.
    pub answered: u64,
    /// Events the gateways sent again.
    pub resent: u64,
    /// Seqs the gateways no longer held (lost for good).
    pub not_held: u64,
}

/// What the consumer shows and writes.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// When the snapshot was taken (the consumer's clock, Unix ms).
    pub at_ms: i64,
    /// Estates per state.
    pub counts: Counts,
    /// What the ledger counted over all streams (without the events themselves).
    pub ledger: CityReport,
    /// What gap repair asked for and got.
    pub repair: RepairStats,
    /// Every estate's row, by estate id.
    pub estates: Vec<EstateView>,
}

impl Snapshot {
    /// The closing summary: events, unique, lost after dedup, duplicates, board counts.
    pub fn summary(&self) -> String {
        let l = &self.ledger;
        let dark: Vec<&str> = self
            .estates
            .iter()
            .filter(|e| e.state == State::Dark)
            .map(|e| e.estate_id.as_str())
            .take(10)
            .collect();
        let mut s = format!(
            "events {} in {} batches, unique {}, lost after dedup {} (in {} gaps), duplicates {}, \
             decode errors {}; estates {}: {} ok, {} degraded, {} dark",
            l.unique + l.duplicates,
            l.batches,
            l.unique,
            l.missing(),
            l.gaps.len(),
            l.duplicates,
            l.decode_errors,
            self.estates.len(),
            self.counts.ok,
            self.counts.degraded,
            self.counts.dark,
        );
        if !dark.is_empty() {
            s.push_str(&format!(" ({})", dark.join(", ")));
        }
        if self.repair.sent > 0 {
            let r = &self.repair;
            s.push_str(&format!(
                "; repair: {} resends, {} answered, {} events resent, {} seqs no longer held",
                r.sent, r.answered, r.resent, r.not_held
            ));
        }
        s
    }
}

/// Which gaps to ask for now. Pure: fed the current gaps and the clock.
#[derive(Debug, Default)]
pub struct Repairer {
    /// (gateway, epoch, gap start) → when that gap was first seen.
    first_seen: HashMap<(String, u64, u64), i64>,
    /// (gateway, epoch) → when a resend was last sent.
    last_sent: HashMap<(String, u64), i64>,
}

/// One `Resend` to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResendDue {
    /// The gateway to ask.
    pub gateway_id: String,
    /// The store epoch the gap is in.
    pub store_epoch: u64,
    /// First missing seq.
    pub first: u64,
    /// Last missing seq (inclusive).
    pub last: u64,
}

impl Repairer {
    /// `gaps`: every stream's gaps now. `forwarded(gw, epoch)`: the gateway's last status
    /// says every seq up to this was acknowledged by the broker; a hole above it may be
    /// still on its way and is not asked for.
    pub fn due<'a>(
        &mut self,
        gaps: impl IntoIterator<Item = (&'a str, u64, Vec<(u64, u64)>)>,
        forwarded: impl Fn(&str, u64) -> Option<u64>,
        now_ms: i64,
        opts: &RepairOptions,
    ) -> Vec<ResendDue> {
        let after = i64::try_from(opts.after.as_millis()).unwrap_or(i64::MAX);
        let every = i64::try_from(opts.every.as_millis()).unwrap_or(i64::MAX);
        let mut still = HashMap::new();
        let mut due = Vec::new();
        for (gw, epoch, stream_gaps) in gaps {
            let cap = forwarded(gw, epoch);
            let mut oldest: Option<(i64, u64, u64)> = None;
            for (first, last) in stream_gaps {
                let key = (gw.to_owned(), epoch, first);
                let seen = self.first_seen.get(&key).copied().unwrap_or(now_ms);
                still.insert(key, seen);
                let last = cap.map_or(last, |c| last.min(c));
                if first > last || now_ms - seen < after {
                    continue;
                }
                if oldest.is_none_or(|(t, _, _)| seen < t) {
                    oldest = Some((seen, first, last));
                }
            }
            let Some((_, first, last)) = oldest else {
                continue;
            };
            let stream = (gw.to_owned(), epoch);
            let recent = self
                .last_sent
                .get(&stream)
                .is_some_and(|&t| now_ms - t < every);
            if recent || due.len() >= opts.max_per_tick {
                continue;
            }
            self.last_sent.insert(stream, now_ms);
            due.push(ResendDue {
                gateway_id: gw.to_owned(),
                store_epoch: epoch,
                first,
                last,
            });
        }
        self.first_seen = still;
        due
    }
}

/// Runs until `stop`, or `until_events`; returns the last snapshot.
pub async fn run(opts: ConsumerOptions, stop: CancellationToken) -> Result<Snapshot> {
    let mut mqtt = MqttOptions::new(&opts.client_id, &opts.broker_host, opts.broker_port);
    mqtt.set_clean_session(true)
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(4 << 20, 1 << 20);
    // SUBSCRIBE, resends (at most max_per_tick per interval) and acks: 256 is room for
    // them; a resend that does not fit waits for the next interval (try_publish).
    let (client, mut eventloop) = AsyncClient::new(mqtt, 256);
    let filter = format!("{}/#", opts.prefix);
    let mut ledger = Ledger::new();
    let mut board = Board::new(opts.rules.clone());
    let mut repairer = Repairer::default();
    let mut repair = RepairStats::default();
    let mut last_states: HashMap<String, State> = HashMap::new();
    let table = opts.json != Some(JsonOut::Stdout) && std::io::stdout().is_terminal();
    let mut tick = tokio::time::interval(opts.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff = Duration::from_millis(100);
    let mut connected_once = false;
    loop {
        let event = tokio::select! {
            ev = eventloop.poll() => ev,
            _ = tick.tick() => {
                let now = now_ms();
                if let Some(r) = &opts.repair {
                    send_repairs(&client, &opts.prefix, &ledger, &board, &mut repairer, &mut repair, r, now);
                }
                let snap = snapshot(&ledger, &board, &repair, now);
                output(&opts, &snap, table, &mut last_states)?;
                if opts.until_events.is_some_and(|n| snap.ledger.unique >= n) {
                    break;
                }
                continue;
            }
            _ = stop.cancelled() => break,
        };
        match event {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                backoff = Duration::from_millis(100);
                client.try_subscribe(filter.as_str(), QoS::AtLeastOnce)?;
            }
            Ok(Event::Incoming(Incoming::SubAck(_))) => {
                connected_once = true;
                info!(%filter, broker = %format_args!("{}:{}", opts.broker_host, opts.broker_port), "Subscribed.");
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                on_message(
                    &mut ledger,
                    &mut board,
                    &mut repair,
                    &p.topic,
                    &p.payload,
                    now_ms(),
                );
            }
            Ok(_) => {}
            Err(err) => {
                if !connected_once {
                    return Err(err).with_context(|| {
                        format!("connecting to {}:{}", opts.broker_host, opts.broker_port)
                    });
                }
                warn!(error = %err, retry_in = ?backoff, "City consumer lost its connection; reconnecting.");
                tokio::select! {
                    _ = sleep(backoff) => {}
                    _ = stop.cancelled() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    let _ = client.try_disconnect();
    Ok(snapshot(&ledger, &board, &repair, now_ms()))
}

/// Routes one message by its last topic level. The hot path: `alarms`/`events`.
pub fn on_message(
    ledger: &mut Ledger,
    board: &mut Board,
    repair: &mut RepairStats,
    topic: &str,
    payload: &[u8],
    now_ms: i64,
) {
    let Some((estate, kind)) = board::split_topic(topic) else {
        ledger.on_batch(topic, payload); // counted as an unknown topic
        return;
    };
    match kind {
        "alarms" | "events" => {
            if let Some((gateway_id, seen)) = ledger.on_batch_with_gateway(topic, payload) {
                board.on_batch(estate, &gateway_id, &seen, now_ms);
            }
        }
        "health" => match pb::GatewayStatus::decode(payload) {
            Ok(s) => board.on_status(estate, &s, now_ms),
            Err(err) => warn!(topic, error = %err, "Undecodable status."),
        },
        "status" => match pb::LinkState::decode(payload) {
            Ok(l) => {
                if !l.online {
                    info!(estate, gateway_id = %l.gateway_id, "Gateway offline (last will).");
                }
                board.on_link(estate, &l, now_ms)
            }
            Err(err) => warn!(topic, error = %err, "Undecodable link state."),
        },
        "results" => match pb::CommandResult::decode(payload) {
            Ok(r) => {
                if let Some(pb::command_result::Answer::Resend(a)) = &r.answer {
                    repair.answered += 1;
                    repair.resent += a.resent;
                    repair.not_held += a.missing.iter().map(|m| m.last - m.first + 1).sum::<u64>();
                    info!(estate, result = %command::describe(&r), "Resend answered.");
                } else {
                    debug!(estate, result = %command::describe(&r), "Command result.");
                }
            }
            Err(err) => warn!(topic, error = %err, "Undecodable command result."),
        },
        "commands" => {}
        _ => {
            ledger.on_batch(topic, payload); // counted as an unknown topic
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn send_repairs(
    client: &AsyncClient,
    prefix: &str,
    ledger: &Ledger,
    board: &Board,
    repairer: &mut Repairer,
    stats: &mut RepairStats,
    opts: &RepairOptions,
    now: i64,
) {
    let estates = board.estates_by_gateway();
    let forwarded = |gw: &str, epoch: u64| {
        let estate = estates.get(gw)?;
        let st = board.get(estate)?.status.as_ref()?;
        (st.store_epoch == epoch).then_some(st.forwarded_seq)
    };
    for d in repairer.due(ledger.stream_gaps(), forwarded, now, opts) {
        let Some(estate) = estates.get(d.gateway_id.as_str()) else {
            continue;
        };
        let cmd = command::build(
            pb::command::Kind::Resend(pb::Resend {
                store_epoch: d.store_epoch,
                first_seq: d.first,
                last_seq: d.last,
            }),
            &d.gateway_id,
            &opts.issuer,
            Duration::from_secs(60),
            now,
        );
        let topic = command::commands_topic(prefix, estate);
        match client.try_publish(topic, QoS::AtLeastOnce, false, cmd.encode_to_vec()) {
            Ok(()) => {
                stats.sent += 1;
                info!(estate, gateway_id = %d.gateway_id, store_epoch = d.store_epoch, first = d.first, last = d.last, "Gap still open; resend requested.");
            }
            Err(err) => debug!(error = %err, "Resend not queued; next interval."),
        }
    }
}

fn snapshot(ledger: &Ledger, board: &Board, repair: &RepairStats, now: i64) -> Snapshot {
    let estates = board.views(now);
    Snapshot {
        at_ms: now,
        counts: board::counts(&estates),
        ledger: ledger.summary(),
        repair: repair.clone(),
        estates,
    }
}

fn output(
    opts: &ConsumerOptions,
    snap: &Snapshot,
    table: bool,
    last: &mut HashMap<String, State>,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match &opts.json {
        Some(JsonOut::Stdout) => writeln!(out, "{}", serde_json::to_string(snap)?)?,
        Some(JsonOut::File(path)) => write_atomically(path, &serde_json::to_vec(snap)?)?,
        None => {}
    }
    if table {
        // Home, clear, then the table: a refresh in place.
        writeln!(
            out,
            "\x1b[H\x1b[2J{}{}",
            board::render_table(&snap.estates, snap.at_ms, opts.max_rows),
            snap.summary()
        )?;
    } else if opts.json != Some(JsonOut::Stdout) {
        for e in &snap.estates {
            let before = last.insert(e.estate_id.clone(), e.state);
            if before != Some(e.state) {
                writeln!(
                    out,
                    "{} {} {} → {}{}",
                    snap.at_ms,
                    e.estate_id,
                    before.map_or("new", State::as_str),
                    e.state.as_str(),
                    if e.reasons.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", e.reasons.join("; "))
                    }
                )?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// Temp file beside `path`, then rename: a reader never sees half a snapshot.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {tmp:?}"))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {tmp:?} to {path:?}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> RepairOptions {
        RepairOptions {
            after: Duration::from_secs(5),
            every: Duration::from_secs(10),
            max_per_tick: 1,
            ..RepairOptions::default()
        }
    }

    #[test]
    fn a_gap_is_asked_for_once_it_stayed_open_and_not_again_too_soon() {
        let mut r = Repairer::default();
        let none = |_: &str, _: u64| None;
        let gaps = || vec![("gw-1", 3, vec![(10, 12), (40, 40)])];
        assert!(r.due(gaps(), none, 0, &opts()).is_empty(), "just opened");
        assert!(r.due(gaps(), none, 4_999, &opts()).is_empty());
        let due = r.due(gaps(), none, 5_000, &opts());
        assert_eq!(
            due,
            [ResendDue {
                gateway_id: "gw-1".into(),
                store_epoch: 3,
                first: 10,
                last: 12
            }]
        );
        assert!(
            r.due(gaps(), none, 9_000, &opts()).is_empty(),
            "rate-limited"
        );
        assert_eq!(r.due(gaps(), none, 15_000, &opts()).len(), 1);
        // Closed gaps are forgotten: reopening starts the clock again.
        assert!(r.due(vec![], none, 16_000, &opts()).is_empty());
        assert!(r.due(gaps(), none, 30_000, &opts()).is_empty());
    }

    #[test]
    fn holes_above_what_the_gateway_forwarded_are_not_asked_for() {
        let mut r = Repairer::default();
        let gaps = || vec![("gw-1", 3, vec![(10, 12), (40, 45)])];
        let cap = |_: &str, epoch: u64| (epoch == 3).then_some(11);
        r.due(gaps(), cap, 0, &opts());
        let due = r.due(gaps(), cap, 6_000, &opts());
        assert_eq!(
            (due[0].first, due[0].last),
            (10, 11),
            "clipped to forwarded"
        );
        // Everything above the cap: nothing to ask for.
        let mut r = Repairer::default();
        let gaps = || vec![("gw-1", 3, vec![(40, 45)])];
        r.due(gaps(), cap, 0, &opts());
        assert!(r.due(gaps(), cap, 60_000, &opts()).is_empty());
        // The per-tick limit spreads streams over ticks.
        let mut r = Repairer::default();
        let two = || vec![("gw-1", 1, vec![(1, 1)]), ("gw-2", 1, vec![(1, 1)])];
        r.due(two(), |_, _| None, 0, &opts());
        assert_eq!(r.due(two(), |_, _| None, 6_000, &opts()).len(), 1);
        assert_eq!(r.due(two(), |_, _| None, 7_000, &opts()).len(), 1);
    }

    #[test]
    fn messages_are_routed_by_their_last_topic_level() {
        let mut ledger = Ledger::new();
        let mut board = Board::new(Rules::default());
        let mut repair = RepairStats::default();
        let batch = pb::EventBatch {
            gateway_id: "gw-1".into(),
            store_epoch: 1,
            first_seq: 1,
            last_seq: 2,
            lane: pb::Lane::Events as i32,
            events: (1..=2)
                .map(|seq| pb::Event {
                    seq,
                    severity: pb::Severity::Info as i32,
                    gateway_time_ms: 900 + seq as i64,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let mut feed = |topic: &str, payload: Vec<u8>| {
            on_message(&mut ledger, &mut board, &mut repair, topic, &payload, 1_000)
        };
        feed("city/v1/e1/events", batch.encode_to_vec());
        feed("city/v1/e1/commands", b"ours".to_vec());
        let result = pb::CommandResult {
            outcome: pb::CommandOutcome::Ok as i32,
            answer: Some(pb::command_result::Answer::Resend(pb::ResendAnswer {
                store_epoch: 1,
                resent: 4,
                missing: vec![pb::SeqRange { first: 1, last: 3 }],
            })),
            ..Default::default()
        };
        feed("city/v1/e1/results", result.encode_to_vec());
        feed("city/v1/e1/whatever", vec![]);
        let s = snapshot(&ledger, &board, &repair, 1_500);
        assert_eq!(s.ledger.unique, 2);
        assert_eq!(s.ledger.unknown_topics, 1, "commands are not counted");
        assert_eq!(s.estates[0].gateway_id, "gw-1");
        assert_eq!(s.estates[0].lag_ms, Some(598));
        assert_eq!((repair.answered, repair.resent, repair.not_held), (1, 4, 3));
    }
}
