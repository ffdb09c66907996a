//! The load generator / scenario runner: publishes a [`Plan`] over one real MQTT
//! connection and reports which messages the broker acknowledged.
//!
//! One task owns both halves of the rumqttc client. It tops up the client's request
//! channel between polls of the `EventLoop` (without ever cancelling a poll that is in
//! progress), so it always knows which requests are still in the channel. That makes the
//! PUBACK → `seq` mapping exact ([`AckTracker`]), even across a reconnect: rumqttc drops
//! its pending requests when the broker starts a fresh session, and the tracker then
//! queues those messages for publishing again (counted in
//! [`PublishReport::republished`]).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, Outgoing, QoS};
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::estate::{demo_devices, SimDevice};
use crate::native::{event_topic, now_ms};
use crate::scenario::Plan;
pub use crate::scenario::Scenario;

/// What to publish, where, and how fast.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// The ingest broker's host name or address.
    pub broker_host: String,
    /// The ingest broker's MQTT port.
    pub broker_port: u16,
    /// MQTT client id; the default is random (`estate-sim-pub-…`).
    pub client_id: String,
    /// First topic level of the native protocol.
    pub prefix: String,
    /// The estate id in the topics (the gateway's `gateway.estate_id`).
    pub estate_id: String,
    /// How many event messages to publish; their payload `seq` runs `1..=count`.
    pub count: u64,
    /// Messages per second; `None` publishes as fast as PUBACK flow control allows.
    pub rate: Option<f64>,
    /// How many of `count` are `SMOKE.ALARM`, spread evenly over the run.
    pub alarms: u64,
    /// Which messages make up the run (see [`Scenario`]).
    pub scenario: Scenario,
    /// QoS1 publishes awaiting PUBACK at once (also the request channel's capacity).
    pub max_inflight: u16,
    /// The simulated estate. Defaults to [`demo_devices`].
    pub devices: Vec<SimDevice>,
    /// After the last message has been handed over, how long to wait for outstanding
    /// PUBACKs (and reconnects) before returning a partial report.
    pub drain_timeout: Duration,
    /// MQTT keep-alive of the connection.
    pub keep_alive: Duration,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions {
            broker_host: "127.0.0.1".into(),
            broker_port: 1883,
            client_id: random_client_id("estate-sim-pub"),
            prefix: "estate".into(),
            estate_id: "demo".into(),
            count: 1000,
            rate: None,
            alarms: 0,
            scenario: Scenario::Telemetry,
            max_inflight: 100,
            devices: demo_devices(),
            drain_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(30),
        }
    }
}

/// `{prefix}-{16 hex digits}`.
pub fn random_client_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

/// What a run achieved.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct PublishReport {
    /// Distinct messages written to the broker connection at least once.
    pub sent: u64,
    /// Distinct messages whose PUBACK arrived.
    pub acked: u64,
    /// Payload `seq` of every acknowledged message, ascending.
    pub acked_seqs: Vec<u64>,
    /// From the first CONNACK to the last PUBACK (or to the end of the run).
    #[serde(serialize_with = "ser_secs")]
    pub elapsed: Duration,
    /// Connections lost during the run.
    pub reconnects: u64,
    /// Messages published again because a reconnect lost them before their PUBACK.
    pub republished: u64,
    /// True when the run stopped before every message was acknowledged (cancelled, or
    /// `drain_timeout` passed).
    pub incomplete: bool,
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl PublishReport {
    /// Acknowledged messages per second over `elapsed`.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.acked as f64 / secs
        } else {
            0.0
        }
    }
}

impl fmt::Display for PublishReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent {} acked {} in {:.3}s ({:.0} msg/s)",
            self.sent,
            self.acked,
            self.elapsed.as_secs_f64(),
            self.rate()
        )?;
        if self.reconnects > 0 {
            write!(
                f,
                ", {} reconnects, {} republished",
                self.reconnects, self.republished
            )?;
        }
        if self.incomplete {
            write!(
                f,
                ", INCOMPLETE ({} unacknowledged)",
                self.sent.saturating_sub(self.acked)
            )?;
        }
        Ok(())
    }
}

/// Maps rumqttc's packet ids back to payload `seq`s. Pure state machine, fed with what
/// the task hands to the request channel and the events the `EventLoop` yields.
///
/// Invariant: `queued` holds, in order, the `seq`s of the publish requests that are in
/// rumqttc's request channel (or its pending queue) and have not yet been given a packet
/// id. rumqttc processes requests in order, so the next fresh `Outgoing::Publish(pkid)`
/// belongs to `queued.front()`.
#[derive(Debug, Default)]
pub struct AckTracker {
    queued: VecDeque<u64>,
    /// Written to the connection, awaiting PUBACK: pkid → seq.
    inflight: HashMap<u16, u64>,
    /// A publish rumqttc held back because its pkid was still in flight (broker acking
    /// out of order); it is written when that pkid is acknowledged.
    collision: Option<(u16, u64)>,
    /// Messages to publish again (a fresh session lost them), lowest first.
    resend: BTreeSet<u64>,
    /// Resent messages that had already been written once (so `sent` counts them once).
    rewritten: HashSet<u64>,
    sent: u64,
    acked: Vec<u64>,
    republished: u64,
}

impl AckTracker {
    /// A publish request for `seq` was put into the request channel.
    pub fn queued(&mut self, seq: u64) {
        self.queued.push_back(seq);
    }

    /// Requests in the channel not yet taken by the event loop.
    pub fn queued_len(&self) -> usize {
        self.queued.len()
    }

    /// Next message that must be published again, if any.
    pub fn take_resend(&mut self) -> Option<u64> {
        let seq = self.resend.pop_first()?;
        self.republished += 1;
        Some(seq)
    }

    /// Puts back a message that could not be handed over after `take_resend`.
    pub fn untake_resend(&mut self, seq: u64) {
        self.republished -= 1;
        self.resend.insert(seq);
    }

    /// rumqttc wrote a publish with packet id `pkid` (`Outgoing::Publish`): the next queued
    /// seq now waits for that pkid's PUBACK (a retransmission of a pkid in flight changes nothing).
    pub fn on_outgoing_publish(&mut self, pkid: u16) {
        if self.inflight.contains_key(&pkid) {
            // A retransmission of a message already in flight (same pkid).
            return;
        }
        let seq = match self.collision {
            Some((p, seq)) if p == pkid => {
                self.collision = None;
                Some(seq)
            }
            _ => self.queued.pop_front(),
        };
        match seq {
            Some(seq) => {
                if !self.rewritten.remove(&seq) {
                    self.sent += 1;
                }
                self.inflight.insert(pkid, seq);
            }
            None => warn!(
                pkid,
                "Publish with no queued message; ack accounting may be off."
            ),
        }
    }

    /// rumqttc held a publish back because `pkid` is still in flight (`Outgoing::AwaitAck`):
    /// the next queued seq is written, under that pkid, once it is acknowledged.
    pub fn on_await_ack(&mut self, pkid: u16) {
        match self.queued.pop_front() {
            Some(seq) => self.collision = Some((pkid, seq)),
            None => warn!(pkid, "Held-back publish with no queued message."),
        }
    }

    /// The broker acknowledged `pkid`: its seq counts as acked.
    pub fn on_puback(&mut self, pkid: u16) {
        match self.inflight.remove(&pkid) {
            Some(seq) => self.acked.push(seq),
            None => debug!(pkid, "PUBACK for a packet id not in flight."),
        }
    }

    /// The broker started a fresh session: rumqttc dropped every pending request, so all
    /// unacknowledged messages must be published again.
    pub fn on_session_lost(&mut self) {
        for (_, seq) in self.inflight.drain() {
            self.rewritten.insert(seq);
            self.resend.insert(seq);
        }
        if let Some((_, seq)) = self.collision.take() {
            self.resend.insert(seq);
        }
        self.resend.extend(self.queued.drain(..));
    }

    /// Nothing queued, in flight or waiting to be resent.
    pub fn idle(&self) -> bool {
        self.queued.is_empty()
            && self.inflight.is_empty()
            && self.collision.is_none()
            && self.resend.is_empty()
    }

    /// True while a message lost with a session waits to be published again.
    pub fn has_resend(&self) -> bool {
        !self.resend.is_empty()
    }

    /// Messages written at least once (a republished one counts once).
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// The seqs the broker acknowledged, in PUBACK order (a seq acknowledged twice appears
    /// twice).
    pub fn acked(&self) -> &[u64] {
        &self.acked
    }
}

/// Publishes the whole plan and waits for its PUBACKs. See [`run_until`].
pub async fn run(opts: PublishOptions) -> Result<PublishReport> {
    run_until(opts, CancellationToken::new()).await
}

/// What the inner select loop woke up for.
enum Step {
    Event(std::result::Result<Event, rumqttc::ConnectionError>),
    Cancelled,
    DrainTimeout,
}

/// Publishes the plan until every message is acknowledged, `stop` is cancelled or the
/// drain timeout passes; then disconnects and reports. Fails only when the first
/// connection attempt fails or the options are unusable.
pub async fn run_until(opts: PublishOptions, stop: CancellationToken) -> Result<PublishReport> {
    let plan = Plan::new(
        &opts.scenario,
        opts.devices.clone(),
        opts.count,
        opts.alarms,
    )?;
    if let Some(rate) = opts.rate {
        anyhow::ensure!(
            rate.is_finite() && rate > 0.0,
            "rate must be a positive number, got {rate}"
        );
    }
    let (mut run, mut eventloop) = Run::new(&opts, plan);
    info!(
        broker = %format_args!("{}:{}", opts.broker_host, opts.broker_port),
        client_id = %opts.client_id,
        count = opts.count,
        scenario = opts.scenario.name(),
        "Publishing."
    );
    let incomplete = run.drive(&mut eventloop, &stop).await?;
    if run.connected {
        run.disconnect(&mut eventloop).await;
    }
    let report = run.report(incomplete);
    info!(%report, "Publishing done.");
    Ok(report)
}

/// One run of [`run_until`]: the plan, the client's request half and what has happened so
/// far. The `EventLoop` stays outside, so a poll in progress can be held while the request
/// channel is topped up.
struct Run<'a> {
    opts: &'a PublishOptions,
    plan: Plan,
    /// Each device's event topic, by its index in the plan (the same for all its messages).
    topics: Vec<String>,
    client: AsyncClient,
    /// Capacity of the request channel: publishes handed over and not yet written.
    cap: usize,
    tracker: AckTracker,
    /// Next fresh message of the plan.
    next_seq: u64,
    /// Fresh and resent messages handed over, for rate pacing.
    handed: u64,
    connected: bool,
    ever_connected: bool,
    /// The first CONNACK: the start of the rate pacing and of `elapsed`.
    started: Option<Instant>,
    last_ack: Option<Instant>,
    reconnects: u64,
    /// Wait before the next reconnect: 100 ms, doubling to at most 5 s.
    backoff: Duration,
}

impl<'a> Run<'a> {
    fn new(opts: &'a PublishOptions, plan: Plan) -> (Run<'a>, EventLoop) {
        let topics: Vec<String> = plan
            .devices()
            .iter()
            .map(|d| event_topic(&opts.prefix, &opts.estate_id, d.kind, &d.id))
            .collect();
        let max_inflight = opts.max_inflight.max(1);
        let cap = usize::from(max_inflight);
        let mut mqtt = MqttOptions::new(&opts.client_id, &opts.broker_host, opts.broker_port);
        mqtt.set_clean_session(true)
            .set_keep_alive(opts.keep_alive)
            .set_inflight(max_inflight)
            .set_max_packet_size(1 << 20, 1 << 20)
            .set_request_channel_capacity(cap);
        // The request channel holds at most `cap` publishes: this task never hands over more
        // than fit (try_publish), so it never blocks and never loses track of what is queued.
        let (client, eventloop) = AsyncClient::new(mqtt, cap);
        let run = Run {
            opts,
            plan,
            topics,
            client,
            cap,
            tracker: AckTracker::default(),
            next_seq: 1,
            handed: 0,
            connected: false,
            ever_connected: false,
            started: None,
            last_ack: None,
            reconnects: 0,
            backoff: Duration::from_millis(100),
        };
        (run, eventloop)
    }

    /// Polls and publishes until every message is acknowledged, `stop` is cancelled or
    /// the drain timeout passes. Ok(true) when it ended before every message was
    /// acknowledged; fails only when the first connection attempt fails.
    async fn drive(&mut self, eventloop: &mut EventLoop, stop: &CancellationToken) -> Result<bool> {
        let mut drain_deadline: Option<Instant> = None;
        loop {
            let all_handed = self.next_seq > self.opts.count && !self.tracker.has_resend();
            if self.ever_connected && all_handed && self.tracker.idle() {
                return Ok(false);
            }
            if all_handed && drain_deadline.is_none() {
                drain_deadline = Some(Instant::now() + self.opts.drain_timeout);
            }
            match self.next_step(eventloop, stop, drain_deadline).await {
                Step::Event(Ok(Event::Incoming(Incoming::ConnAck(ack)))) => {
                    self.on_connack(eventloop, ack.session_present)
                }
                Step::Event(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                    self.tracker.on_outgoing_publish(pkid)
                }
                Step::Event(Ok(Event::Outgoing(Outgoing::AwaitAck(pkid)))) => {
                    self.tracker.on_await_ack(pkid)
                }
                Step::Event(Ok(Event::Incoming(Incoming::PubAck(ack)))) => {
                    self.tracker.on_puback(ack.pkid);
                    self.last_ack = Some(Instant::now());
                }
                Step::Event(Ok(_)) => {}
                Step::Event(Err(err)) => {
                    if self.on_connection_error(err, stop).await? {
                        return Ok(true);
                    }
                }
                Step::Cancelled => {
                    info!("Stopped before every message was acknowledged.");
                    return Ok(true);
                }
                Step::DrainTimeout => {
                    warn!(timeout = ?self.opts.drain_timeout, "Gave up waiting for PUBACKs.");
                    return Ok(true);
                }
            }
        }
    }

    /// Waits for the event loop's next event (or `stop`, or the drain deadline), topping
    /// up the request channel meanwhile without cancelling the poll in progress.
    async fn next_step(
        &mut self,
        eventloop: &mut EventLoop,
        stop: &CancellationToken,
        drain_deadline: Option<Instant>,
    ) -> Step {
        let poll = eventloop.poll();
        tokio::pin!(poll);
        loop {
            let wake = if self.connected && !stop.is_cancelled() {
                self.top_up()
            } else {
                None
            };
            let wake = wake.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            let deadline =
                drain_deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                biased;
                ev = &mut poll => return Step::Event(ev),
                _ = stop.cancelled() => return Step::Cancelled,
                _ = sleep_until(deadline), if drain_deadline.is_some() => return Step::DrainTimeout,
                _ = sleep_until(wake) => {}
            }
        }
    }

    /// Hands messages to the request channel (resends first) until it is full, the plan is
    /// exhausted, or the rate says wait: then returns when the next one is due.
    fn top_up(&mut self) -> Option<Instant> {
        while self.tracker.queued_len() < self.cap {
            if let (Some(rate), Some(t0)) = (self.opts.rate, self.started) {
                let due = t0 + Duration::from_secs_f64(self.handed as f64 / rate);
                if due > Instant::now() {
                    return Some(due);
                }
            }
            let (seq, resend) = match self.tracker.take_resend() {
                Some(seq) => (seq, true),
                None if self.next_seq <= self.opts.count => (self.next_seq, false),
                None => break,
            };
            let planned = self.plan.message(seq);
            let mut event = planned.event;
            event.ts_ms = Some(now_ms());
            let topic = &self.topics[planned.index];
            match self
                .client
                .try_publish(topic.as_str(), QoS::AtLeastOnce, false, event.to_json())
            {
                Ok(()) => {
                    self.tracker.queued(seq);
                    self.handed += 1;
                    if !resend {
                        self.next_seq += 1;
                    }
                }
                Err(err) => {
                    // Full cannot happen (we count what is queued); a closed
                    // channel means the event loop is gone. Retry on next wake.
                    if resend {
                        self.tracker.untake_resend(seq);
                    }
                    debug!(seq, error = %err, "Request channel refused a publish; retrying.");
                    break;
                }
            }
        }
        None
    }

    fn on_connack(&mut self, eventloop: &mut EventLoop, session_present: bool) {
        if self.ever_connected && !session_present {
            // rumqttc dropped its pending requests; so does the tracker, which
            // queues them for publishing again. A held-back publish would be
            // written by rumqttc later under a stale packet id: forget it.
            eventloop.state.collision = None;
            self.tracker.on_session_lost();
        }
        if !self.ever_connected {
            self.started = Some(Instant::now());
            info!(client_id = %self.opts.client_id, "Connected.");
        } else {
            info!(client_id = %self.opts.client_id, "Reconnected.");
        }
        self.ever_connected = true;
        self.connected = true;
        self.backoff = Duration::from_millis(100);
    }

    /// The connection failed: fatal before the first CONNACK; afterwards waits out the
    /// backoff (the next poll reconnects). Ok(true) when `stop` came during the wait.
    async fn on_connection_error(
        &mut self,
        err: rumqttc::ConnectionError,
        stop: &CancellationToken,
    ) -> Result<bool> {
        if !self.ever_connected {
            return Err(anyhow!(err)).with_context(|| {
                format!(
                    "connecting to MQTT broker {}:{}",
                    self.opts.broker_host, self.opts.broker_port
                )
            });
        }
        if self.connected {
            self.reconnects += 1;
        }
        self.connected = false;
        warn!(error = %err, retry_in = ?self.backoff, "MQTT connection lost; reconnecting.");
        tokio::select! {
            _ = sleep(self.backoff) => {}
            _ = stop.cancelled() => return Ok(true),
        }
        self.backoff = (self.backoff * 2).min(Duration::from_secs(5));
        Ok(false)
    }

    /// A clean DISCONNECT; failures are ignored, the report is already settled (PUBACKs
    /// that still arrive are counted).
    async fn disconnect(&mut self, eventloop: &mut EventLoop) {
        if self.client.try_disconnect().is_ok() {
            let _ = timeout(Duration::from_secs(2), async {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                        Ok(Event::Incoming(Incoming::PubAck(ack))) => {
                            self.tracker.on_puback(ack.pkid)
                        }
                        Ok(_) => {}
                    }
                }
            })
            .await;
        }
    }

    fn report(&self, incomplete: bool) -> PublishReport {
        let end = if incomplete {
            Some(Instant::now())
        } else {
            self.last_ack
        };
        let elapsed = match (self.started, end) {
            (Some(s), Some(e)) => e.saturating_duration_since(s),
            _ => Duration::ZERO,
        };
        let mut acked_seqs = self.tracker.acked().to_vec();
        acked_seqs.sort_unstable();
        PublishReport {
            sent: self.tracker.sent(),
            acked: acked_seqs.len() as u64,
            acked_seqs,
            elapsed,
            reconnects: self.reconnects,
            republished: self.tracker.republished,
            incomplete: incomplete || self.tracker.acked().len() as u64 != self.opts.count,
        }
    }
}

/// Publishes a script of third-party-format messages ([`crate::formats::mixed_estate`])
/// QoS 1, one at a time, waiting `step.after` before each and for its PUBACK after it.
/// Returns how many were acknowledged; stops early on `stop`.
pub async fn publish_steps(
    broker_host: &str,
    broker_port: u16,
    client_id: &str,
    steps: &[crate::formats::Step],
    stop: CancellationToken,
) -> anyhow::Result<u64> {
    let mut o = MqttOptions::new(client_id, broker_host, broker_port);
    o.set_clean_session(true).set_inflight(1);
    let (client, mut eventloop) = AsyncClient::new(o, 16);
    let (ack_tx, mut acks) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut driver = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::PubAck(_))) => {
                    let _ = ack_tx.send(());
                }
                // Leave only once the DISCONNECT is written: a connection that just
                // vanishes can make a broker discard what it has not routed yet.
                Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                Ok(_) => {}
                Err(e) => {
                    warn!(error = %e, "Format publisher connection failed; retrying.");
                    sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
    let mut acked = 0;
    for step in steps {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = sleep(step.after) => {}
        }
        client
            .publish(
                step.msg.topic.as_str(),
                QoS::AtLeastOnce,
                step.msg.retain,
                step.msg.payload.clone(),
            )
            .await?;
        tokio::select! {
            _ = stop.cancelled() => break,
            got = timeout(Duration::from_secs(30), acks.recv()) => {
                if matches!(got, Ok(Some(()))) {
                    acked += 1;
                } else {
                    anyhow::bail!("no PUBACK within 30 s for {}", step.msg.topic);
                }
            }
        }
    }
    let _ = client.disconnect().await;
    if timeout(Duration::from_secs(5), &mut driver).await.is_err() {
        driver.abort();
    }
    Ok(acked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_map_back_to_payload_seqs_in_order() {
        let mut t = AckTracker::default();
        for seq in 1..=3 {
            t.queued(seq);
        }
        t.on_outgoing_publish(1);
        t.on_outgoing_publish(2);
        t.on_outgoing_publish(3);
        assert_eq!(t.queued_len(), 0);
        t.on_puback(2);
        t.on_puback(1);
        t.on_puback(7); // unknown pkid: ignored
        assert_eq!(t.acked(), [2, 1]);
        assert_eq!(t.sent(), 3);
        assert!(!t.idle());
        t.on_puback(3);
        assert!(t.idle());
    }

    #[test]
    fn packet_ids_are_reused_after_their_ack() {
        let mut t = AckTracker::default();
        t.queued(1);
        t.queued(2);
        t.on_outgoing_publish(1);
        t.on_puback(1);
        t.on_outgoing_publish(1);
        t.on_puback(1);
        assert_eq!(t.acked(), [1, 2]);
    }

    #[test]
    fn retransmissions_keep_their_seq() {
        let mut t = AckTracker::default();
        t.queued(1);
        t.queued(2);
        t.on_outgoing_publish(5);
        t.on_outgoing_publish(5); // resent with the same pkid after a reconnect
        t.on_outgoing_publish(6);
        t.on_puback(5);
        t.on_puback(6);
        assert_eq!(t.acked(), [1, 2]);
        assert_eq!(t.sent(), 2);
    }

    #[test]
    fn a_held_back_publish_gets_its_own_seq() {
        let mut t = AckTracker::default();
        for seq in 1..=3 {
            t.queued(seq);
        }
        t.on_outgoing_publish(1);
        t.on_outgoing_publish(2);
        t.on_await_ack(1); // seq 3 collides with pkid 1
        t.on_puback(1);
        t.on_outgoing_publish(1); // rumqttc now writes seq 3
        t.on_puback(1);
        t.on_puback(2);
        assert_eq!(t.acked(), [1, 3, 2]);
    }

    #[test]
    fn a_fresh_session_resends_everything_unacknowledged() {
        let mut t = AckTracker::default();
        for seq in 1..=4 {
            t.queued(seq);
        }
        t.on_outgoing_publish(1);
        t.on_outgoing_publish(2);
        t.on_puback(1);
        t.on_session_lost(); // 2 was in flight, 3 and 4 still queued
        assert_eq!(t.queued_len(), 0);
        let mut again = Vec::new();
        while let Some(seq) = t.take_resend() {
            t.queued(seq);
            again.push(seq);
        }
        assert_eq!(again, [2, 3, 4]);
        for pkid in 2..=4 {
            t.on_outgoing_publish(pkid);
            t.on_puback(pkid);
        }
        assert_eq!(t.acked(), [1, 2, 3, 4]);
        assert_eq!(t.sent(), 4, "each message counts once");
        assert_eq!(t.republished, 3);
        assert!(t.idle());
    }
}
