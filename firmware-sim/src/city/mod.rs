//! The reference city-platform subscriber: decodes the gateway's uplink, deduplicates,
//! finds gaps and checks lanes.
//!
//! - [`Ledger`] is the pure accounting: feed it `(topic, payload)` and read a
//!   [`CityReport`]. Unit-tested without a broker.
//! - [`CityRecorder`] is a handle; a background task owns the MQTT connection and feeds
//!   every received batch into the shared ledger, bumping a `watch` version that
//!   [`CityRecorder::wait_for`] waits on.
//!
//! The uplink contract (`estate/v1/events.proto`): `EventBatch`es arrive on
//! `city/v1/{estate_id}/alarms` (severity 1–2) and `city/v1/{estate_id}/events` (3–4).
//! `seq` is one counter per `(gateway_id, store_epoch)` across both topics, starting at 1;
//! the ledger keeps one *stream* per such pair, deduplicates on `seq` within it and
//! reports the seqs missing between 1 and the highest one seen.

pub mod board;
pub mod command;
pub mod consumer;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use estate_protocols::model::Lane;
use estate_protocols::pb;
use prost::Message;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS, SubscribeReasonCode};
use serde::Serialize;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::publish::random_client_id;

/// Where and what to subscribe.
#[derive(Debug, Clone)]
pub struct CityOptions {
    /// The city broker's host name or address.
    pub broker_host: String,
    /// The city broker's MQTT port.
    pub broker_port: u16,
    /// Unique per recorder (clean session); the default is random (`estate-sim-city-…`).
    pub client_id: String,
    /// Default `city/v1/#`.
    pub topic_filter: String,
    /// How long [`CityRecorder::start`] waits for CONNACK + SUBACK.
    pub connect_timeout: Duration,
    /// Keep every unique event for [`CityRecorder::report`] (default: yes, for tests);
    /// without, `received` stays empty and memory stays bounded.
    pub record_events: bool,
}

impl Default for CityOptions {
    fn default() -> Self {
        CityOptions {
            broker_host: "127.0.0.1".into(),
            broker_port: 1883,
            client_id: random_client_id("estate-sim-city"),
            topic_filter: "city/v1/#".into(),
            connect_timeout: Duration::from_secs(10),
            record_events: true,
        }
    }
}

/// One unique event as the city platform saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReceivedEvent {
    /// The lane of the topic it arrived on.
    pub lane: Lane,
    /// The event's seq in its stream.
    pub seq: u64,
    /// The event's taxonomy code, e.g. `"SMOKE.ALARM"`.
    pub code: String,
    /// Raw `pb::Severity` value (1 critical … 4 info).
    pub severity: i32,
    /// The device the event is about.
    pub device_id: String,
    /// The device's own counter, when the event carried one.
    pub device_seq: Option<u64>,
    /// Position among all decoded events, duplicates included, over all topics (0-based).
    pub arrival: u64,
    /// The batch's `gateway_id` (with `store_epoch`, the dedup stream).
    pub gateway_id: String,
    /// The batch's `store_epoch`.
    pub store_epoch: u64,
}

/// Per-`(gateway_id, store_epoch)` view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamReport {
    /// The gateway of the stream.
    pub gateway_id: String,
    /// The store epoch of the stream.
    pub store_epoch: u64,
    /// Distinct seqs received in it.
    pub unique: u64,
    /// Highest seq received in it.
    pub max_seq: u64,
    /// Missing inclusive seq ranges within `1..=max_seq`.
    pub gaps: Vec<(u64, u64)>,
}

/// A snapshot of everything received so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CityReport {
    /// MQTT messages received (decodable or not).
    pub batches: u64,
    /// Payloads that are not an `EventBatch`.
    pub decode_errors: u64,
    /// Batches that decoded but break the contract: `first_seq`/`last_seq` not matching
    /// the events, seqs not strictly increasing, a seq of 0, or a `lane` field that
    /// disagrees with the topic. Their events are still counted.
    pub inconsistent_batches: u64,
    /// Messages on topics that end in neither `/alarms` nor `/events` (not decoded).
    pub unknown_topics: u64,
    /// Distinct `(gateway_id, store_epoch, seq)` seen.
    pub unique: u64,
    /// Events seen again (redelivery, or the same seq on both topics).
    pub duplicates: u64,
    /// Unique events that arrived on the alarms topic.
    pub alarms: u64,
    /// Unique events that arrived on the events topic.
    pub events: u64,
    /// Missing seq ranges, inclusive. With one stream (one gateway, one store epoch) these
    /// are that stream's gaps; with several, every stream's gaps in turn, ordered by
    /// (gateway_id, store_epoch) — see `streams` for which is which.
    pub gaps: Vec<(u64, u64)>,
    /// Unique events whose severity does not belong on the topic's lane (severity 1–2 on
    /// events, 3–4 on alarms, or a severity outside 1–4).
    pub wrong_lane: u64,
    /// One entry per `(gateway_id, store_epoch)` stream, ordered by both.
    pub streams: Vec<StreamReport>,
    /// Unique events in arrival order. Empty in [`Ledger::summary`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub received: Vec<ReceivedEvent>,
}

impl CityReport {
    /// Total number of missing seqs.
    pub fn missing(&self) -> u64 {
        self.gaps.iter().map(|(a, b)| b - a + 1).sum()
    }

    /// The `device_seq`s (payload `seq` of the native protocol) that arrived.
    pub fn device_seqs(&self) -> HashSet<u64> {
        self.received.iter().filter_map(|e| e.device_seq).collect()
    }

    /// Which of `expected` device seqs (e.g. [`crate::publish::PublishReport::acked_seqs`])
    /// have not arrived, ascending.
    pub fn missing_device_seqs(&self, expected: &[u64]) -> Vec<u64> {
        let seen = self.device_seqs();
        let mut missing: Vec<u64> = expected
            .iter()
            .copied()
            .filter(|s| !seen.contains(s))
            .collect();
        missing.sort_unstable();
        missing
    }
}

impl fmt::Display for CityReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unique {} (alarms {}, events {}), duplicates {}, missing {} in {} gaps, wrong lane {}, \
             batches {}, decode errors {}, inconsistent batches {}",
            self.unique,
            self.alarms,
            self.events,
            self.duplicates,
            self.missing(),
            self.gaps.len(),
            self.wrong_lane,
            self.batches,
            self.decode_errors,
            self.inconsistent_batches,
        )?;
        if self.unknown_topics > 0 {
            write!(f, ", unknown topics {}", self.unknown_topics)?;
        }
        if self.streams.len() > 1 {
            write!(f, ", {} streams", self.streams.len())?;
        }
        Ok(())
    }
}

/// Seqs seen in one stream, as disjoint inclusive ranges (start → end): dedup and gap
/// finding stay cheap when millions arrive mostly in order.
#[derive(Debug, Default)]
struct SeqSet {
    ranges: BTreeMap<u64, u64>,
    len: u64,
}

impl SeqSet {
    /// Adds `seq`; false when it was already there.
    fn insert(&mut self, seq: u64) -> bool {
        let left = self.ranges.range(..=seq).next_back().map(|(&s, &e)| (s, e));
        if let Some((_, end)) = left {
            if end >= seq {
                return false;
            }
        }
        let right_end = seq
            .checked_add(1)
            .and_then(|r| self.ranges.get(&r).copied());
        match (left, right_end) {
            (Some((start, end)), Some(r_end)) if end + 1 == seq => {
                self.ranges.remove(&(seq + 1));
                self.ranges.insert(start, r_end);
            }
            (Some((start, end)), None) if end + 1 == seq => {
                self.ranges.insert(start, seq);
            }
            (_, Some(r_end)) => {
                self.ranges.remove(&(seq + 1));
                self.ranges.insert(seq, r_end);
            }
            _ => {
                self.ranges.insert(seq, seq);
            }
        }
        self.len += 1;
        true
    }

    fn max(&self) -> u64 {
        self.ranges.last_key_value().map_or(0, |(_, &e)| e)
    }

    /// True when a seq in `1..=max` is missing.
    fn has_gaps(&self) -> bool {
        self.ranges.len() > 1 || self.ranges.first_key_value().is_some_and(|(&s, _)| s > 1)
    }

    /// Missing ranges within `1..=max`.
    fn gaps(&self) -> Vec<(u64, u64)> {
        let mut gaps = Vec::new();
        let mut next = 1u64;
        for (&s, &e) in &self.ranges {
            if s > next {
                gaps.push((next, s - 1));
            }
            next = e.saturating_add(1);
        }
        gaps
    }
}

/// The pure accounting behind [`CityRecorder`].
#[derive(Debug, Default)]
pub struct Ledger {
    batches: u64,
    decode_errors: u64,
    inconsistent_batches: u64,
    unknown_topics: u64,
    duplicates: u64,
    alarms: u64,
    events: u64,
    wrong_lane: u64,
    arrivals: u64,
    streams: BTreeMap<(String, u64), SeqSet>,
    /// Keep every unique event in `received` (tests that check payloads); off for the
    /// long-running consumer, whose memory then grows with streams and holes only.
    record: bool,
    received: Vec<ReceivedEvent>,
}

/// What one accepted batch told the ledger, for the estate board.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchSeen {
    /// Events in the batch, duplicates included.
    pub events: u64,
    /// Of them, seen for the first time.
    pub unique: u64,
    /// The newest `gateway_time_ms` in the batch (0 without events).
    pub newest_gateway_time_ms: i64,
}

/// The lane a topic carries, from its last level.
pub fn lane_of_topic(topic: &str) -> Option<Lane> {
    match topic.rsplit('/').next() {
        Some("alarms") => Some(Lane::Alarms),
        Some("events") => Some(Lane::Events),
        _ => None,
    }
}

fn severity_lane(severity: i32) -> Option<Lane> {
    match severity {
        1 | 2 => Some(Lane::Alarms),
        3 | 4 => Some(Lane::Events),
        _ => None,
    }
}

impl Ledger {
    /// A bounded ledger: counters and per-stream seq ranges only (`received` stays empty).
    pub fn new() -> Self {
        Ledger::default()
    }

    /// A ledger that also keeps every unique event (for tests that check payloads; its
    /// memory grows with every event).
    pub fn recording() -> Self {
        Ledger {
            record: true,
            ..Ledger::default()
        }
    }

    /// Accounts one received MQTT message; `None` when it is not a decodable batch. The
    /// city link's status, health, commands and results topics are passed over.
    pub fn on_batch(&mut self, topic: &str, payload: &[u8]) -> Option<BatchSeen> {
        self.on_batch_with_gateway(topic, payload)
            .map(|(_, seen)| seen)
    }

    /// [`Ledger::on_batch`], also giving back the batch's `gateway_id` (the decoded
    /// string itself: no copy per batch).
    pub fn on_batch_with_gateway(
        &mut self,
        topic: &str,
        payload: &[u8],
    ) -> Option<(String, BatchSeen)> {
        // The city link's own messages (link.proto) are not batches.
        if matches!(
            topic.rsplit('/').next(),
            Some("status" | "health" | "results" | "commands")
        ) {
            return None;
        }
        self.batches += 1;
        let Some(lane) = lane_of_topic(topic) else {
            self.unknown_topics += 1;
            debug!(topic, "Message on a topic that is not a lane; ignored.");
            return None;
        };
        let batch = match pb::EventBatch::decode(payload) {
            Ok(b) => b,
            Err(err) => {
                self.decode_errors += 1;
                warn!(topic, error = %err, len = payload.len(), "Undecodable batch.");
                return None;
            }
        };
        let mut seen = BatchSeen {
            events: batch.events.len() as u64,
            ..BatchSeen::default()
        };
        if !Self::consistent(&batch, lane) {
            self.inconsistent_batches += 1;
            warn!(
                topic,
                first_seq = batch.first_seq,
                last_seq = batch.last_seq,
                events = batch.events.len(),
                lane = batch.lane,
                "Batch breaks the uplink contract."
            );
        }
        let store_epoch = batch.store_epoch;
        let recorded_id = self.record.then(|| batch.gateway_id.clone());
        // Looked up with the decoded id; its key is only copied for a new stream.
        let key = (batch.gateway_id, store_epoch);
        if !self.streams.contains_key(&key) {
            self.streams.insert(key.clone(), SeqSet::default());
        }
        let stream = self.streams.get_mut(&key)?; // inserted just above
        for e in batch.events {
            let arrival = self.arrivals;
            self.arrivals += 1;
            seen.newest_gateway_time_ms = seen.newest_gateway_time_ms.max(e.gateway_time_ms);
            if e.seq == 0 {
                continue; // counted as inconsistent above
            }
            if !stream.insert(e.seq) {
                self.duplicates += 1;
                continue;
            }
            seen.unique += 1;
            match lane {
                Lane::Alarms => self.alarms += 1,
                Lane::Events => self.events += 1,
            }
            if severity_lane(e.severity) != Some(lane) {
                self.wrong_lane += 1;
            }
            if let Some(gateway_id) = &recorded_id {
                self.received.push(ReceivedEvent {
                    lane,
                    seq: e.seq,
                    code: e.code,
                    severity: e.severity,
                    device_id: e.device_id,
                    device_seq: e.device_seq,
                    arrival,
                    gateway_id: gateway_id.clone(),
                    store_epoch,
                });
            }
        }
        Some((key.0, seen))
    }

    /// Every stream with a hole: (gateway_id, store_epoch, its gaps).
    pub fn stream_gaps(&self) -> impl Iterator<Item = (&str, u64, Vec<(u64, u64)>)> + '_ {
        self.streams
            .iter()
            .filter(|(_, set)| set.has_gaps())
            .map(|((gw, epoch), set)| (gw.as_str(), *epoch, set.gaps()))
    }

    /// Seq ranges held over all streams: what the ledger's memory grows with (besides
    /// one entry per stream), not the event count.
    pub fn ranges_held(&self) -> usize {
        self.streams.values().map(|s| s.ranges.len()).sum()
    }

    fn consistent(batch: &pb::EventBatch, lane: Lane) -> bool {
        let lane_ok = batch.lane == pb::Lane::from(lane) as i32;
        let increasing = batch.events.windows(2).all(|w| w[0].seq < w[1].seq);
        let bounds_ok = match (batch.events.first(), batch.events.last()) {
            (Some(first), Some(last)) => {
                first.seq == batch.first_seq && last.seq == batch.last_seq && first.seq > 0
            }
            _ => true,
        };
        lane_ok && increasing && bounds_ok
    }

    /// Everything, including the list of received events.
    pub fn report(&self) -> CityReport {
        let mut r = self.summary();
        r.received = self.received.clone();
        r
    }

    /// Counts, gaps and streams, without the (possibly long) list of received events.
    pub fn summary(&self) -> CityReport {
        let streams: Vec<StreamReport> = self
            .streams
            .iter()
            .map(|((gateway_id, store_epoch), set)| StreamReport {
                gateway_id: gateway_id.clone(),
                store_epoch: *store_epoch,
                unique: set.len,
                max_seq: set.max(),
                gaps: set.gaps(),
            })
            .collect();
        CityReport {
            batches: self.batches,
            decode_errors: self.decode_errors,
            inconsistent_batches: self.inconsistent_batches,
            unknown_topics: self.unknown_topics,
            unique: streams.iter().map(|s| s.unique).sum(),
            duplicates: self.duplicates,
            alarms: self.alarms,
            events: self.events,
            gaps: streams
                .iter()
                .flat_map(|s| s.gaps.iter().copied())
                .collect(),
            wrong_lane: self.wrong_lane,
            streams,
            received: Vec::new(),
        }
    }
}

/// Why [`CityRecorder::wait_for`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// No matching report within `timeout`.
    #[error("timed out after {timeout:?} waiting on the city stream; last report: {report}")]
    Timeout {
        /// How long it waited.
        timeout: Duration,
        /// What had arrived by then.
        report: Box<CityReport>,
    },
    /// The recorder's background task ended before a report matched.
    #[error("the city recorder stopped; last report: {report}")]
    Stopped {
        /// What had arrived by then.
        report: Box<CityReport>,
    },
}

/// Handle to a running city-platform subscriber. Dropping it stops the background task.
#[derive(Debug)]
pub struct CityRecorder {
    /// Written by the background task for every message, read by `report()`.
    ledger: Arc<Mutex<Ledger>>,
    /// Bumped by the background task (the sender) after every message it accounts.
    changes: watch::Receiver<u64>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl CityRecorder {
    /// Connects, subscribes and returns once the SUBACK arrived: anything published
    /// after this returns is recorded. Fails when the broker cannot be reached, refuses
    /// the subscription, or `connect_timeout` passes.
    pub async fn start(opts: CityOptions) -> Result<CityRecorder> {
        let mut mqtt = MqttOptions::new(&opts.client_id, &opts.broker_host, opts.broker_port);
        mqtt.set_clean_session(true)
            .set_keep_alive(Duration::from_secs(30))
            // Batches can be large; the outgoing side only carries SUBSCRIBE and acks.
            .set_max_packet_size(4 << 20, 64 << 10);
        // Requests are one SUBSCRIBE per connection and DISCONNECT; rumqttc's automatic
        // PUBACKs bypass the channel. 16 never fills.
        let (client, eventloop) = AsyncClient::new(mqtt, 16);
        let ledger = Arc::new(Mutex::new(if opts.record_events {
            Ledger::recording()
        } else {
            Ledger::new()
        }));
        let (changes_tx, changes) = watch::channel(0u64);
        let stop = CancellationToken::new();
        let (ready_tx, ready_rx) = oneshot::channel();
        let task = tokio::spawn(drive(
            client,
            eventloop,
            opts.topic_filter.clone(),
            ledger.clone(),
            changes_tx,
            stop.clone(),
            ready_tx,
        ));
        let recorder = CityRecorder {
            ledger,
            changes,
            stop,
            task: Some(task),
        };
        let ready = tokio::time::timeout(opts.connect_timeout, ready_rx)
            .await
            .map_err(|_| anyhow!("no SUBACK within {:?}", opts.connect_timeout))
            .and_then(|r| r.map_err(|_| anyhow!("recorder task ended before subscribing")));
        match ready {
            Ok(Ok(())) => Ok(recorder),
            Ok(Err(err)) | Err(err) => Err(err).with_context(|| {
                format!(
                    "subscribing to {:?} on {}:{}",
                    opts.topic_filter, opts.broker_host, opts.broker_port
                )
            }),
        }
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        // A panic while holding the lock leaves plain counters behind; keep reading them.
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A snapshot, including every unique event received.
    pub fn report(&self) -> CityReport {
        self.ledger().report()
    }

    /// A snapshot without the list of received events (cheap; for periodic printing).
    pub fn summary(&self) -> CityReport {
        self.ledger().summary()
    }

    /// Waits until `pred` holds for the report, re-checking after each received message.
    /// On timeout the error is a [`WaitError`] carrying the last report.
    pub async fn wait_for(
        &self,
        pred: impl Fn(&CityReport) -> bool,
        timeout: Duration,
    ) -> Result<CityReport> {
        let deadline = Instant::now() + timeout;
        let mut changes = self.changes.clone();
        loop {
            // Mark the current version seen *before* reading, so no change is missed.
            changes.borrow_and_update();
            let report = self.report();
            if pred(&report) {
                return Ok(report);
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() {
                    bail!(WaitError::Stopped { report: Box::new(self.report()) });
                },
                _ = sleep_until(deadline) => {
                    bail!(WaitError::Timeout { timeout, report: Box::new(self.report()) });
                }
            }
        }
    }

    /// Disconnects and waits for the background task to end.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for CityRecorder {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The background task: owns the MQTT connection; (re)subscribes on every CONNACK.
async fn drive(
    client: AsyncClient,
    mut eventloop: rumqttc::EventLoop,
    filter: String,
    ledger: Arc<Mutex<Ledger>>,
    changes: watch::Sender<u64>,
    stop: CancellationToken,
    ready: oneshot::Sender<Result<()>>,
) {
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(100);
    loop {
        let event = tokio::select! {
            ev = eventloop.poll() => ev,
            _ = stop.cancelled() => {
                if client.try_disconnect().is_ok() {
                    let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
                }
                return;
            }
        };
        match event {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                backoff = Duration::from_millis(100);
                if let Err(err) = client.try_subscribe(filter.as_str(), QoS::AtLeastOnce) {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(Err(anyhow!("invalid topic filter {filter:?}: {err}")));
                    }
                    return;
                }
            }
            Ok(Event::Incoming(Incoming::SubAck(ack))) => {
                let refused = ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, SubscribeReasonCode::Failure));
                if refused {
                    warn!(%filter, "Broker refused the subscription.");
                }
                match ready.take() {
                    Some(tx) => {
                        let result = if refused {
                            Err(anyhow!("broker refused subscription to {filter:?}"))
                        } else {
                            info!(%filter, "Subscribed.");
                            Ok(())
                        };
                        let failed = result.is_err();
                        let _ = tx.send(result);
                        if failed {
                            return;
                        }
                    }
                    None => info!(%filter, "Resubscribed after reconnect."),
                }
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                ledger
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .on_batch(&p.topic, &p.payload);
                changes.send_modify(|v| *v += 1);
            }
            Ok(_) => {}
            Err(err) => {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(Err(anyhow!(err)));
                    return;
                }
                warn!(error = %err, retry_in = ?backoff, "City subscriber lost its connection; reconnecting (messages sent meanwhile are missed).");
                tokio::select! {
                    _ = sleep(backoff) => {}
                    _ = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALARMS: &str = "city/v1/e1/alarms";
    const EVENTS: &str = "city/v1/e1/events";

    fn event(seq: u64, code: &str, severity: pb::Severity, device_seq: u64) -> pb::Event {
        pb::Event {
            seq,
            code: code.into(),
            severity: severity as i32,
            state: pb::EventState::Active as i32,
            device_id: "smoke-1-1-3".into(),
            gateway_id: "gw-1".into(),
            device_seq: Some(device_seq),
            ..pb::Event::default()
        }
    }

    fn batch(lane: pb::Lane, epoch: u64, events: Vec<pb::Event>) -> Vec<u8> {
        pb::EventBatch {
            gateway_id: "gw-1".into(),
            estate_id: "e1".into(),
            boot_id: "boot-1".into(),
            store_epoch: epoch,
            first_seq: events.first().map_or(0, |e| e.seq),
            last_seq: events.last().map_or(0, |e| e.seq),
            lane: lane as i32,
            events,
            sent_at_ms: 1,
        }
        .encode_to_vec()
    }

    fn info(seq: u64) -> pb::Event {
        event(seq, "DEV.HEARTBEAT", pb::Severity::Info, seq * 10)
    }

    fn alarm(seq: u64) -> pb::Event {
        event(seq, "SMOKE.ALARM", pb::Severity::Critical, seq * 10)
    }

    #[test]
    fn dedups_redelivery_and_finds_a_gap_across_both_topics() {
        let mut l = Ledger::recording();
        l.on_batch(
            EVENTS,
            &batch(pb::Lane::Events, 1, vec![info(1), info(2), info(4)]),
        );
        // The alarm overtook the backlog: seq 3 arrives on the other topic.
        l.on_batch(ALARMS, &batch(pb::Lane::Alarms, 1, vec![alarm(3)]));
        // Redelivery after a gateway restart: the same batch again, plus one more.
        l.on_batch(
            EVENTS,
            &batch(pb::Lane::Events, 1, vec![info(1), info(2), info(4)]),
        );
        l.on_batch(EVENTS, &batch(pb::Lane::Events, 1, vec![info(5), info(8)]));
        let r = l.report();
        assert_eq!(r.batches, 4);
        assert_eq!(r.unique, 6);
        assert_eq!(r.duplicates, 3);
        assert_eq!((r.alarms, r.events), (1, 5));
        assert_eq!(r.gaps, [(6, 7)]);
        assert_eq!(r.missing(), 2);
        assert_eq!(r.wrong_lane, 0);
        assert_eq!(r.decode_errors + r.inconsistent_batches, 0);
        let seqs: Vec<_> = r.received.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2, 4, 3, 5, 8]);
        let arrivals: Vec<_> = r.received.iter().map(|e| e.arrival).collect();
        assert_eq!(
            arrivals,
            [0, 1, 2, 3, 7, 8],
            "duplicates take arrival slots too"
        );
        assert_eq!(r.received[3].lane, Lane::Alarms);
        assert_eq!(r.missing_device_seqs(&[10, 30, 60, 80]), [60]);
    }

    #[test]
    fn the_gap_before_the_first_seen_seq_counts() {
        let mut l = Ledger::recording();
        l.on_batch(EVENTS, &batch(pb::Lane::Events, 1, vec![info(3)]));
        assert_eq!(l.summary().gaps, [(1, 2)]);
        // Filling it in out of order merges the ranges.
        l.on_batch(EVENTS, &batch(pb::Lane::Events, 1, vec![info(1)]));
        l.on_batch(EVENTS, &batch(pb::Lane::Events, 1, vec![info(2)]));
        let r = l.summary();
        assert!(r.gaps.is_empty());
        assert_eq!(r.streams[0].max_seq, 3);
        assert!(r.received.is_empty(), "summary leaves out the event list");
    }

    #[test]
    fn severity_on_the_wrong_topic_is_counted() {
        let mut l = Ledger::recording();
        // An alarm on the events topic, and an info event on the alarms topic; the
        // batches' lane fields agree with their topics.
        l.on_batch(EVENTS, &batch(pb::Lane::Events, 1, vec![alarm(1)]));
        l.on_batch(ALARMS, &batch(pb::Lane::Alarms, 1, vec![info(2)]));
        l.on_batch(
            ALARMS,
            &batch(
                pb::Lane::Alarms,
                1,
                vec![event(3, "X", pb::Severity::Unspecified, 0)],
            ),
        );
        let r = l.report();
        assert_eq!(r.wrong_lane, 3);
        assert_eq!(r.inconsistent_batches, 0);
        // A batch whose lane field contradicts its topic is inconsistent.
        l.on_batch(ALARMS, &batch(pb::Lane::Events, 1, vec![alarm(4)]));
        assert_eq!(l.summary().inconsistent_batches, 1);
    }

    #[test]
    fn undecodable_and_off_contract_messages_are_counted() {
        let mut l = Ledger::recording();
        l.on_batch(EVENTS, b"\xff\xff\xff not protobuf");
        l.on_batch("city/v1/e1/other", b"online");
        let mut bad =
            pb::EventBatch::decode(batch(pb::Lane::Events, 1, vec![info(2), info(1)]).as_slice())
                .expect("decodes");
        bad.first_seq = 2;
        bad.last_seq = 1;
        l.on_batch(EVENTS, &bad.encode_to_vec());
        let r = l.summary();
        assert_eq!(r.batches, 3);
        assert_eq!(r.decode_errors, 1);
        assert_eq!(r.unknown_topics, 1);
        assert_eq!(r.inconsistent_batches, 1, "seqs not increasing");
        assert_eq!(r.unique, 2, "events of an inconsistent batch still count");
    }

    #[test]
    fn streams_are_keyed_by_gateway_and_store_epoch() {
        let mut l = Ledger::recording();
        l.on_batch(EVENTS, &batch(pb::Lane::Events, 1, vec![info(1), info(3)]));
        // The store was wiped: seqs restart under a new epoch and are not duplicates.
        l.on_batch(EVENTS, &batch(pb::Lane::Events, 2, vec![info(1), info(2)]));
        let r = l.summary();
        assert_eq!(r.unique, 4);
        assert_eq!(r.duplicates, 0);
        assert_eq!(r.streams.len(), 2);
        assert_eq!(r.streams[0].gaps, [(2, 2)]);
        assert!(r.streams[1].gaps.is_empty());
        assert_eq!(r.gaps, [(2, 2)]);
    }

    #[test]
    fn seq_set_merges_neighbours() {
        let mut s = SeqSet::default();
        for seq in [5, 1, 3, 2, 4, 4, 9] {
            s.insert(seq);
        }
        assert_eq!(s.len, 6);
        assert_eq!(
            s.ranges.iter().map(|(&a, &b)| (a, b)).collect::<Vec<_>>(),
            [(1, 5), (9, 9)]
        );
        assert_eq!(s.gaps(), [(6, 8)]);
        assert!(!s.insert(3));
        assert!(s.insert(u64::MAX));
    }

    #[test]
    fn seq_set_matches_a_plain_set_model() {
        use rand::{rngs::StdRng, Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(14);
        for round in 0..200 {
            let mut s = SeqSet::default();
            let mut model = std::collections::BTreeSet::new();
            let span = 1 + round % 60;
            for _ in 0..300 {
                let seq = rng.random_range(1..=span);
                assert_eq!(s.insert(seq), model.insert(seq), "insert {seq}");
                assert_eq!(s.len, model.len() as u64);
                assert_eq!(s.max(), model.last().copied().unwrap_or(0));
                let missing: Vec<u64> = (1..=s.max()).filter(|x| !model.contains(x)).collect();
                let from_gaps: Vec<u64> = s.gaps().iter().flat_map(|&(a, b)| a..=b).collect();
                assert_eq!(from_gaps, missing);
                assert_eq!(s.has_gaps(), !missing.is_empty());
                // Coalesced: no two ranges touch.
                let r: Vec<(u64, u64)> = s.ranges.iter().map(|(&a, &b)| (a, b)).collect();
                assert!(r.windows(2).all(|w| w[0].1 + 1 < w[1].0), "{r:?}");
            }
        }
    }

    #[test]
    fn a_bounded_ledger_holds_ranges_not_events() {
        let mut l = Ledger::new();
        let mut seq = 0;
        for b in 0..5_000u64 {
            let events: Vec<_> = (0..40)
                .map(|_| {
                    seq += 1;
                    info(seq)
                })
                .collect();
            // Every 1,000th batch is lost, and every 7th arrives twice.
            if b % 1000 == 999 {
                continue;
            }
            let payload = batch(pb::Lane::Events, 1, events);
            let seen = l.on_batch(EVENTS, &payload).expect("a batch");
            assert_eq!((seen.events, seen.unique), (40, 40));
            if b % 7 == 0 {
                assert_eq!(l.on_batch(EVENTS, &payload).map(|s| s.unique), Some(0));
            }
        }
        let r = l.report();
        assert!(r.received.is_empty(), "no event list kept");
        assert_eq!(r.unique, 200_000 - 5 * 40);
        assert_eq!(r.duplicates, 715 * 40);
        assert_eq!(
            r.missing(),
            4 * 40,
            "the last lost batch is above the highest seq"
        );
        assert_eq!(r.gaps.len(), 4);
        assert_eq!(l.ranges_held(), 5, "200k events in 5 ranges");
        let gaps: Vec<_> = l.stream_gaps().collect();
        assert_eq!(gaps, [("gw-1", 1, r.gaps.clone())]);
    }
}
