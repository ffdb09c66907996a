//! Forward: the store → the city platform, as protobuf `EventBatch`es over MQTT QoS 1.
//!
//! The store is the outbox. The forwarder reads committed events per lane after the last
//! position it sent, publishes batches (alarms lane always first), and moves a lane's
//! persisted cursor only when the broker has PUBACKed every batch up to it. After any
//! connection failure it throws the client away, builds a fresh one, and resends from the
//! cursors: whatever was in flight is sent again (the receiver deduplicates on
//! `(gateway_id, store_epoch, seq)`). An uplink outage never stalls ingest.
//!
//! **Nothing blocks a lane** (issue 13). Every batch fits one MQTT packet of
//! `uplink.max_packet_size` (`batch.rs`): batches are cut to fit, and an event too big
//! alone goes shortened and flagged (`raw_truncated`, `text_truncated`). Should the
//! uplink still refuse a publish, the forwarder does not resend the same batch forever.
//! A refusal is the client's own packet check failing (which `batch.rs` mirrors, so this
//! means a bug or a changed client), or the broker dropping the connection
//! `BROKER_STRIKES` times in a row with the same batches in flight and none
//! acknowledged (a broker limit below `uplink.max_packet_size`). It is logged as one
//! ERROR, counted, and sets `/healthz` degraded (`uplink.refused`); what was in flight is
//! resent *carefully*, one event per batch and one batch in flight, so that a refusal
//! names its event. A named event goes again reduced to its envelope
//! (`batch::envelope`); refused even so by the client, it is given up on:
//! dead-lettered (its envelope, with the reason), announced upstream by
//! `GW.UPLINK_REFUSED` naming its seq, and passed over like an acknowledged one, so the
//! lane moves on. (A broker dropping the link on a few hundred bytes is a failing link,
//! not a packet limit: the envelope is retried, never given up on.)
//!
//! Store reads (sled) run on the blocking pool (`spawn_blocking`), never on an async
//! worker.

mod batch;
mod inflight;

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use rumqttc::{AsyncClient, Event as MqttEvent, Outgoing, Packet, QoS};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use estate_config::Config;
use estate_protocols::model::{EventState, Lane};
use estate_protocols::pb;

use crate::events::{gateway_event, now_ms};
use crate::health::{Level, LogThrottle, Throttled};
use crate::mqtt::{Connection, Renew};
use crate::store::{DeadLetter, StoreHandle, StoreReader};
use crate::telemetry::Metrics;
// The city link packs a resend as the forwarder packs a batch; nothing else leaves the crate.
pub(crate) use batch::{max_payload, pack, publish_size, Cut, Header, Limits, Unfit};
use inflight::{Advance, InFlight};

/// Why forward could not start or stopped; the cause is the [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The uplink broker's TLS settings do not load.
    #[error("uplink TLS")]
    Tls(#[from] crate::mqtt::TlsError),
    /// A store read or write failed.
    #[error("store")]
    Store(#[from] crate::store::StoreError),
    /// A store read on the blocking pool panicked or was cancelled.
    #[error("a store read on the blocking pool did not finish")]
    Blocking(#[from] tokio::task::JoinError),
}

/// The `/healthz` key of a publish the client refused or an event given up on.
const HEALTH_KEY: &str = "uplink.refused";

/// How long `/healthz` keeps reporting an event given up on (an operator should look at
/// the dead letter), once the lanes flow again.
const GIVE_UP_HOLD: Duration = Duration::from_secs(3600);

/// Connections in a row the broker drops with the same batches in flight and none
/// acknowledged before the forwarder takes it as a refusal of what it sends.
const BROKER_STRIKES: u32 = 3;

/// The code raised upstream and locally for an event given up on.
const REFUSED_CODE: &str = "GW.UPLINK_REFUSED";

/// The uplink stage, built from config, consumed by [`Forwarder::run`].
#[derive(Debug)]
pub struct Forwarder {
    /// The city broker's nodes and the reconnect backoff.
    endpoints: crate::mqtt::Endpoints,
    gateway_id: String,
    estate_id: String,
    boot_id: String,
    topic_prefix: String,
    max_batch_events: usize,
    max_batch_bytes: usize,
    /// `uplink.max_packet_size`: what the batches are cut to fit.
    max_packet: usize,
    max_inflight: usize,
    down_alert_after: Duration,
    /// `uplink.linger`: how long the events lane waits for a batch to fill.
    linger: Duration,
    /// The ERROR for a refused publish or an event given up on: the first, then one
    /// summary a minute (the counters stay exact).
    refused_log: Arc<LogThrottle>,
    /// The WARN for an event forwarded shortened.
    cut_log: Arc<LogThrottle>,
}

impl Forwarder {
    /// The uplink stage from `[uplink]`: a clean session, at most
    /// `uplink.max_inflight_batches` batches unacknowledged, packets cut to
    /// `uplink.max_packet_size`. Fails only on TLS settings that do not load; it connects
    /// in [`Forwarder::run`].
    pub fn new(cfg: &Config, boot_id: &str) -> Result<Self, ForwardError> {
        let u = &cfg.uplink;
        let mut endpoints = crate::mqtt::Endpoints::new(&u.mqtt, &cfg.uplink_client_id())?;
        let max_packet = u.max_packet_size.as_usize();
        endpoints.configure(|o| {
            o.set_clean_session(true)
                .set_inflight(u.max_inflight_batches.clamp(1, u16::MAX as usize) as u16)
                .set_max_packet_size(64 * 1024, max_packet);
        });
        Ok(Forwarder {
            endpoints,
            gateway_id: cfg.gateway.id.clone(),
            estate_id: cfg.gateway.estate_id.clone(),
            boot_id: boot_id.to_owned(),
            topic_prefix: u.topic_prefix.clone(),
            max_batch_events: u.max_batch_events,
            max_batch_bytes: u.max_batch_bytes.as_usize(),
            max_packet,
            refused_log: Arc::new(LogThrottle::new(1, Duration::from_secs(60))),
            cut_log: Arc::new(LogThrottle::new(5, Duration::from_secs(60))),
            max_inflight: u.max_inflight_batches.max(1),
            down_alert_after: u.down_alert_after,
            linger: u.linger,
        })
    }

    /// Where `lane`'s batches go: `{uplink.topic_prefix}/{gateway.estate_id}/alarms` or
    /// `…/events`.
    pub fn topic(&self, lane: Lane) -> String {
        format!("{}/{}/{}", self.topic_prefix, self.estate_id, lane.as_str())
    }

    /// What outlives a connection for each lane, at start-up.
    fn lanes(&self, reader: &StoreReader) -> [LaneState; 2] {
        Lane::ALL.map(|lane| {
            let topic = self.topic(lane);
            let max_payload = self
                .max_batch_bytes
                .min(batch::max_payload(topic.len(), self.max_packet));
            LaneState {
                lane,
                header: batch::Header {
                    gateway_id: self.gateway_id.clone(),
                    estate_id: self.estate_id.clone(),
                    boot_id: self.boot_id.clone(),
                    store_epoch: reader.epoch(),
                    lane: pb::Lane::from(lane),
                },
                limits: Limits {
                    max_events: self.max_batch_events.max(1),
                    max_payload,
                },
                topic,
                passed: 0,
                careful_until: 0,
                envelope: None,
            }
        })
    }

    /// Forwards until `shutdown`; then keeps going for at most `grace` to deliver what is
    /// committed, and returns.
    pub async fn run(
        self,
        reader: StoreReader,
        store: StoreHandle,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> Result<(), ForwardError> {
        let env = Env {
            reader: &reader,
            store: &store,
            metrics: &metrics,
        };
        let mut committed = reader.committed();
        let mut committed_open = true;
        let mut p = Progress {
            lanes: self.lanes(&reader),
            timers: Timers {
                grace,
                down_alert_after: self.down_alert_after,
                deadline: None,
                down_since: Some(Instant::now()),
                down_alert_raised: false,
            },
            lingering: None,
            gave_up_at: None,
            strikes: (0, [0, 0]),
        };
        let mut conn = Connection::new(
            self.endpoints.clone(),
            self.max_inflight * 2 + 16,
            Renew::Fresh,
        );

        'connection: loop {
            // A fresh client for every connection, after the backoff (which `conn.next()`
            // waits out in the `select!` below, so the outage alert and shutdown go on):
            // the previous event loop, and with it its socket, is gone, one attempt at a
            // time per client id (issue 14).
            let mut s = Session::new(conn.addr(), &reader, &p.lanes);
            loop {
                if s.connected {
                    self.fill_window(&env, conn.client(), &mut s, &mut p)
                        .await?;
                }
                if p.timers.deadline.is_some()
                    && s.inflight.is_empty()
                    && Lane::ALL.iter().all(|l| reader.backlog(*l) == 0)
                {
                    info!("Everything committed was forwarded; uplink done.");
                    let _ = conn.client().try_disconnect();
                    let _ =
                        tokio::time::timeout(Duration::from_millis(500), conn.next_in_session())
                            .await;
                    return Ok(());
                }
                let room = s.inflight.len() < self.window(&s, &p.lanes);
                let lingering = p.lingering;
                tokio::select! {
                    _ = shutdown.cancelled(), if p.timers.deadline.is_none() => p.timers.shutdown_requested(),
                    timer = p.timers.next() => if self.on_timer(timer, &mut p.timers, &s.broker, &store).await?.is_break() {
                        info!(in_flight = s.inflight.len(), "Shutdown grace period over; undelivered events stay in the store.");
                        return Ok(());
                    },
                    c = committed.changed(), if committed_open => {
                        if c.is_err() { committed_open = false; }
                    }
                    // A held events batch is due (it is published in the loop above, once
                    // the window has room: until then a PUBACK is what wakes it).
                    _ = tokio::time::sleep_until(lingering.map_or_else(Instant::now, |t| t + self.linger)), if s.connected && lingering.is_some() && room => {}
                    // Cancel-safe: a commit or timer never abandons a connection attempt.
                    polled = conn.next() => match polled {
                        Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                            self.on_connected(&env, &mut s, &mut p.timers).await?;
                        }
                        Ok(MqttEvent::Outgoing(Outgoing::Publish(pkid))) => {
                            if !s.inflight.on_outgoing_publish(pkid) {
                                debug!(pkid, "Publish id with no batch waiting for it.");
                            }
                        }
                        Ok(MqttEvent::Incoming(Packet::PubAck(ack))) => {
                            self.on_puback(&env, &mut s, &mut p, ack.pkid).await?;
                        }
                        Ok(_) => {}
                        Err(lost) => {
                            self.on_lost(&env, &mut s, &mut p, lost).await?;
                            continue 'connection;
                        }
                    }
                }
            }
        }
    }

    /// How many batches may be in flight: one while anything is sent carefully (after a
    /// refusal), else `uplink.max_inflight_batches`.
    fn window(&self, s: &Session, lanes: &[LaneState; 2]) -> usize {
        let careful =
            s.careful_sent.is_some() || (0..2).any(|i| s.sent[i] < lanes[i].careful_until);
        if careful {
            1
        } else {
            self.max_inflight
        }
    }

    /// Hands the client the next batches while the window has room and there is
    /// something to send (or to give up on: an event no packet can carry is passed over).
    async fn fill_window(
        &self,
        env: &Env<'_>,
        client: &AsyncClient,
        s: &mut Session,
        p: &mut Progress,
    ) -> Result<(), ForwardError> {
        loop {
            if s.inflight.len() >= self.window(s, &p.lanes) {
                return Ok(());
            }
            let linger = p.timers.deadline.is_none().then_some(&mut p.lingering);
            let Some(next) = self
                .next_batch(env.reader, &p.lanes, &mut s.sent, linger)
                .await?
            else {
                return Ok(());
            };
            match next {
                Next::Unfit { i, before, unfit } => {
                    let why = format!(
                        "{} bytes with its raw bytes and free text cut, the uplink packet leaves {} for one event",
                        unfit.size, unfit.room
                    );
                    self.give_up(&p.lanes[i], &unfit.event, &why, env.store, env.metrics)
                        .await?;
                    p.gave_up_at = Some(Instant::now());
                    debug_assert!(before < unfit.event.seq);
                    if let Some(adv) = s.inflight.push_skip(p.lanes[i].lane, unfit.event.seq) {
                        self.on_advance(&adv, &mut p.lanes, env.store, env.metrics, p.gave_up_at)
                            .await?;
                    }
                }
                Next::Batch(ready) => {
                    if !self.publish(client, s, &p.lanes, env.metrics, ready) {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Hands one batch to the client and tracks it in flight. False when the client
    /// would not take it (it is going away): the batch is read again later.
    fn publish(
        &self,
        client: &AsyncClient,
        s: &mut Session,
        lanes: &[LaneState; 2],
        metrics: &Metrics,
        ready: Ready,
    ) -> bool {
        let Ready {
            i,
            before,
            packed,
            careful,
            enveloped,
        } = ready;
        let lane = lanes[i].lane;
        let payload = packed.batch.encode_to_vec();
        // What rumqttc checks; `batch` makes it hold by construction.
        debug_assert!(publish_size(lanes[i].topic.len(), payload.len()) <= self.max_packet);
        if let Some(cut) = &packed.cut {
            self.on_cut(lane, cut, metrics);
        }
        let last = packed.batch.last_seq;
        let n = packed.batch.events.len() as u64;
        if let Err(err) =
            client.try_publish(lanes[i].topic.clone(), QoS::AtLeastOnce, false, payload)
        {
            // The request queue holds twice the window, so this is the client going away;
            // the batch is read again.
            warn!(error = %err, "Could not hand a batch to the uplink client.");
            s.sent[i] = before;
            return false;
        }
        s.inflight.push(lane, last, n);
        s.careful_sent = careful
            .then(|| packed.batch.events.into_iter().next())
            .flatten()
            .map(|e| (i, e, enveloped));
        true
    }

    /// The broker accepted the connection: count it, and clear the outage alert if it
    /// was raised.
    async fn on_connected(
        &self,
        env: &Env<'_>,
        s: &mut Session,
        timers: &mut Timers,
    ) -> Result<(), ForwardError> {
        info!(broker = %s.broker, "Uplink connected.");
        s.connected = true;
        env.metrics.uplink_connected.set(1);
        if timers.down_alert_raised {
            timers.down_alert_raised = false;
            self.raise_uplink(&s.broker, env.store, EventState::Cleared, timers.down_since)
                .await?;
        }
        timers.down_since = None;
        Ok(())
    }

    /// A PUBACK: every cursor advance it makes final goes to the store; a careful batch
    /// it covers is no longer the one a refusal would name.
    async fn on_puback(
        &self,
        env: &Env<'_>,
        s: &mut Session,
        p: &mut Progress,
        pkid: u16,
    ) -> Result<(), ForwardError> {
        for adv in s.inflight.on_puback(pkid) {
            if s.careful_sent
                .as_ref()
                .is_some_and(|(i, e, _)| p.lanes[*i].lane == adv.lane && e.seq <= adv.cursor)
            {
                s.careful_sent = None;
            }
            s.advanced = true;
            p.strikes.0 = 0;
            self.on_advance(&adv, &mut p.lanes, env.store, env.metrics, p.gave_up_at)
                .await?;
        }
        Ok(())
    }

    /// What was in flight was refused: [`Self::on_refused`], noting when it gave up on
    /// an event.
    async fn refused(
        &self,
        env: &Env<'_>,
        s: &mut Session,
        p: &mut Progress,
        refusal: Refusal,
    ) -> Result<(), ForwardError> {
        let careful = s.careful_sent.take();
        if self
            .on_refused(
                refusal,
                careful,
                &s.inflight,
                &mut p.lanes,
                env.store,
                env.metrics,
            )
            .await?
        {
            p.gave_up_at = Some(Instant::now());
        }
        Ok(())
    }

    /// The connection was lost or refused a publish: decide whether what was in flight
    /// was refused (by the client, or by a broker that keeps dropping the link with it in
    /// flight), and forget the in-flight batches; the next connection resends from the
    /// cursors.
    async fn on_lost(
        &self,
        env: &Env<'_>,
        s: &mut Session,
        p: &mut Progress,
        lost: crate::mqtt::Lost,
    ) -> Result<(), ForwardError> {
        env.metrics.uplink_connected.set(0);
        if lost.refused {
            let refusal = Refusal::Client(format!("the uplink client refused it: {}", lost.error));
            self.refused(env, s, p, refusal).await?;
            // Not a link failure: the same node again after `reconnect_min`, without
            // growing the backoff.
            s.inflight.clear();
            return Ok(());
        }
        if s.connected || p.timers.down_since.is_none() {
            p.timers.down_since = Some(Instant::now());
        }
        warn!(broker = %lost.broker, error = %lost.error, next = %lost.next, retry_in = ?lost.retry_in, in_flight = s.inflight.len(), "Uplink connection failed; will resend from the cursors.");
        // See `Progress::strikes`.
        let strikes = &mut p.strikes;
        if s.connected && !s.advanced && !s.inflight.is_empty() {
            *strikes = if strikes.1 == s.start {
                (strikes.0 + 1, s.start)
            } else {
                (1, s.start)
            };
        } else {
            strikes.0 = 0;
        }
        if strikes.0 >= BROKER_STRIKES {
            strikes.0 = 0;
            let refusal = Refusal::Broker(format!("the broker dropped the connection {BROKER_STRIKES} times in a row with it in flight (a packet above the broker's limit?): {}", lost.error));
            self.refused(env, s, p, refusal).await?;
        }
        s.inflight.clear();
        Ok(())
    }

    /// A publish was refused (`cause`). When it was a careful batch alone in flight, its
    /// event is named: sent whole, it goes next as its envelope; sent as its envelope and
    /// refused by the client (`certain`), it is given up on (returns true) and passed
    /// over. A broker that keeps dropping the link on an envelope is not taken as certain
    /// (a link that fails before every acknowledgement looks the same): the envelope is
    /// retried with the usual backoff, `/healthz` degraded. Otherwise what was in flight
    /// is sent again carefully: one event per batch, one batch in flight.
    async fn on_refused(
        &self,
        refusal: Refusal,
        careful_sent: Option<(usize, pb::Event, bool)>,
        inflight: &InFlight,
        lanes: &mut [LaneState; 2],
        store: &StoreHandle,
        metrics: &Metrics,
    ) -> Result<bool, ForwardError> {
        metrics.uplink_refused.inc();
        let (cause, certain) = match &refusal {
            Refusal::Client(c) => (c.as_str(), true),
            Refusal::Broker(c) => (c.as_str(), false),
        };
        if let Some((i, event, enveloped)) = careful_sent.filter(|_| inflight.len() == 1) {
            if enveloped && !certain {
                metrics.health.set(
                    HEALTH_KEY,
                    Level::Degraded,
                    format!("the uplink keeps failing with event seq {} in flight, even reduced to its envelope ({cause}); retrying", event.seq),
                );
                return Ok(false);
            }
            if enveloped {
                let why = format!("{cause}, even reduced to its envelope");
                self.give_up(&lanes[i], &event, &why, store, metrics)
                    .await?;
                store.forwarded(lanes[i].lane, event.seq, 1).await?;
                lanes[i].passed = lanes[i].passed.max(event.seq);
                lanes[i].envelope = None;
                return Ok(true);
            }
            lanes[i].envelope = Some(event.seq);
            if let Some(suppressed) = log_line(&self.refused_log) {
                error!(
                    seq = event.seq,
                    code = clip(&event.code, 128),
                    cause,
                    suppressed,
                    "The uplink refused an event sent alone; sending it reduced to its envelope."
                );
            }
            metrics.health.set(
                HEALTH_KEY,
                Level::Degraded,
                format!("the uplink refused event seq {} sent alone ({cause}); it is resent without raw bytes or free text", event.seq),
            );
            return Ok(false);
        }
        for st in lanes.iter_mut() {
            if let Some(last) = inflight.last_seq(st.lane) {
                st.careful_until = st.careful_until.max(last);
            }
        }
        if let Some(suppressed) = log_line(&self.refused_log) {
            error!(cause, in_flight = inflight.len(), suppressed, "The uplink refused a publish; resending the events in flight one per batch, one batch at a time.");
        }
        metrics.health.set(
            HEALTH_KEY,
            Level::Degraded,
            format!("the uplink refused a publish ({cause}); the events in flight are resent one per batch"),
        );
        Ok(false)
    }

    /// A cursor advance made final: tell the store, count it, and clear `/healthz` once
    /// the lanes flow normally again (and an event given up on is an hour old).
    async fn on_advance(
        &self,
        adv: &Advance,
        lanes: &mut [LaneState; 2],
        store: &StoreHandle,
        metrics: &Metrics,
        gave_up_at: Option<Instant>,
    ) -> Result<(), ForwardError> {
        store.forwarded(adv.lane, adv.cursor, adv.events).await?;
        let label = adv.lane.into();
        metrics
            .forward_events
            .get_or_create(&label)
            .inc_by(adv.events - adv.skipped);
        metrics
            .forward_batches
            .get_or_create(&label)
            .inc_by(adv.batches);
        for st in lanes.iter_mut().filter(|st| st.lane == adv.lane) {
            st.passed = st.passed.max(adv.cursor);
        }
        let careful = lanes.iter().any(|st| st.passed < st.careful_until);
        let held = gave_up_at.is_some_and(|t| t.elapsed() < GIVE_UP_HOLD);
        if !careful && !held && metrics.health.clear(HEALTH_KEY) {
            info!("The uplink takes every batch again.");
        }
        Ok(())
    }

    /// Logs and counts an event forwarded shortened.
    fn on_cut(&self, lane: Lane, cut: &Cut, metrics: &Metrics) {
        metrics.forward_truncated.get_or_create(&lane.into()).inc();
        if let Some(suppressed) = log_line(&self.cut_log) {
            warn!(
                seq = cut.seq,
                code = %cut.code,
                lane = lane.as_str(),
                stored_bytes = cut.from,
                sent_bytes = cut.to,
                text_cut = cut.text,
                suppressed,
                "Event too big for one uplink packet; forwarded with its raw bytes cut (and free text, when text_cut) and flagged."
            );
        }
    }

    /// Gives up on `event` (it is passed over by the caller): counted, logged, kept as a
    /// dead letter (its envelope), and announced by `GW.UPLINK_REFUSED`, locally and
    /// upstream, so the seq the city never receives is explained.
    async fn give_up(
        &self,
        st: &LaneState,
        event: &pb::Event,
        why: &str,
        store: &StoreHandle,
        metrics: &Metrics,
    ) -> Result<(), ForwardError> {
        metrics
            .forward_dead_lettered
            .get_or_create(&st.lane.into())
            .inc();
        if let Some(suppressed) = log_line(&self.refused_log) {
            error!(
                seq = event.seq,
                code = clip(&event.code, 128),
                device = clip(&event.device_id, 128),
                lane = st.lane.as_str(),
                reason = why,
                suppressed,
                "An event cannot be sent upstream; dead-lettered, announced by GW.UPLINK_REFUSED, and the lane moves on."
            );
        }
        metrics.health.set(
            HEALTH_KEY,
            Level::Degraded,
            format!(
                "event seq {} ({} from {}) was not sent upstream: {why}; it is dead-lettered and GW.UPLINK_REFUSED names it",
                event.seq,
                clip(&event.code, 128),
                clip(&event.device_id, 128)
            ),
        );
        let envelope = batch::envelope(event.clone());
        // The commit is not awaited: the dead letter is a record for the operator, and the
        // lane must not wait on the disk for it.
        let pending = store
            .dead_letter(DeadLetter {
                received_ms: now_ms(),
                source: st.topic.clone(),
                reason: format!("uplink refused: {why}"),
                raw: envelope.encode_to_vec().into(),
                original_len: event.encoded_len(),
            })
            .await?;
        drop(pending);
        // Never for its own announcement: a refused GW.UPLINK_REFUSED must not beget more.
        if event.code != REFUSED_CODE {
            let ev = gateway_event(
                &self.gateway_id,
                &self.estate_id,
                REFUSED_CODE,
                EventState::Active,
                None,
                // Clipped: the announcement must fit where the event did not.
                serde_json::json!({
                    "seq": event.seq,
                    "lane": st.lane.as_str(),
                    "code": clip(&event.code, 128),
                    "device_id": clip(&event.device_id, 128),
                    "event_id": clip(&event.event_id, 64),
                    "reason": clip(why, 512),
                }),
            );
            store.append_nowait(ev).await?;
        }
        Ok(())
    }

    /// The next batch to send, the alarms lane first: read on the blocking pool, packed
    /// to fit (see [`batch::pack`]). While a lane is careful (after a refusal), one event
    /// reduced to its envelope.
    ///
    /// `lingering` (`None` at shutdown: nothing waits then) is since when the events
    /// lane holds a batch that is not full; such a batch goes once it is `uplink.linger`
    /// old. The alarms lane never waits.
    async fn next_batch(
        &self,
        reader: &StoreReader,
        lanes: &[LaneState; 2],
        sent: &mut [u64; 2],
        mut lingering: Option<&mut Option<Instant>>,
    ) -> Result<Option<Next>, ForwardError> {
        for (i, st) in lanes.iter().enumerate() {
            let last = reader.last_seq(st.lane);
            if last <= sent[i] {
                continue;
            }
            let careful = sent[i] < st.careful_until;
            let max_events = if careful { 1 } else { st.limits.max_events };
            let events =
                read_lane(reader, st.lane, sent[i], max_events, st.limits.max_payload).await?;
            if st.lane == Lane::Events && !careful && !self.linger.is_zero() {
                if let Some(since) = lingering.as_deref_mut() {
                    // Full: as many events as a batch takes, or stopped short of the last
                    // committed one by the byte limit.
                    let full =
                        events.len() >= max_events || events.last().is_some_and(|e| e.seq < last);
                    let started = *since.get_or_insert_with(Instant::now);
                    if !full && started.elapsed() < self.linger {
                        continue;
                    }
                    *since = None;
                }
            }
            let careful = careful && events.first().is_some_and(|e| e.seq <= st.careful_until);
            let enveloped = careful && events.first().map(|e| e.seq) == st.envelope;
            let events = if enveloped {
                events.into_iter().map(batch::envelope).collect()
            } else {
                events
            };
            let before = sent[i];
            match batch::pack(&st.header, events, st.limits, now_ms()) {
                Ok(Some(packed)) => {
                    sent[i] = packed.batch.last_seq;
                    return Ok(Some(Next::Batch(Ready {
                        i,
                        before,
                        packed,
                        careful,
                        enveloped,
                    })));
                }
                Ok(None) => continue,
                Err(unfit) => {
                    sent[i] = unfit.event.seq;
                    return Ok(Some(Next::Unfit { i, before, unfit }));
                }
            }
        }
        Ok(None)
    }

    /// Acts on a timer that fired: raises the outage alert, or says the grace period is
    /// over (`Break`: stop now).
    async fn on_timer(
        &self,
        timer: Timer,
        timers: &mut Timers,
        broker: &str,
        store: &StoreHandle,
    ) -> Result<ControlFlow<()>, ForwardError> {
        match timer {
            Timer::GraceOver => Ok(ControlFlow::Break(())),
            Timer::UplinkDownAlert => {
                timers.down_alert_raised = true;
                self.raise_uplink(broker, store, EventState::Active, timers.down_since)
                    .await?;
                Ok(ControlFlow::Continue(()))
            }
        }
    }

    async fn raise_uplink(
        &self,
        broker: &str,
        store: &StoreHandle,
        state: EventState,
        since: Option<Instant>,
    ) -> Result<(), ForwardError> {
        let down_for = since.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
        match state {
            EventState::Active => warn!(
                down_for_s = down_for,
                "Uplink down past its alert threshold; raising GW.UPLINK_DOWN."
            ),
            EventState::Cleared => info!(
                down_for_s = down_for,
                "Uplink back; clearing GW.UPLINK_DOWN."
            ),
        }
        let ev = gateway_event(
            &self.gateway_id,
            &self.estate_id,
            "GW.UPLINK_DOWN",
            state,
            Some(estate_protocols::model::Reading {
                value: down_for,
                unit: "s".into(),
            }),
            serde_json::json!({"broker": broker, "down_for_s": down_for}),
        );
        store.append_nowait(ev).await?;
        Ok(())
    }
}

/// The forwarder's timers, shared by the backoff wait and the connected loop: the end of
/// the shutdown grace period, and the outage alert `down_alert_after` into an outage.
#[derive(Debug)]
struct Timers {
    grace: Duration,
    down_alert_after: Duration,
    /// When forwarding must stop; set once shutdown is requested.
    deadline: Option<Instant>,
    /// When the uplink went down; `None` while connected.
    down_since: Option<Instant>,
    down_alert_raised: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    GraceOver,
    UplinkDownAlert,
}

impl Timers {
    fn shutdown_requested(&mut self) {
        self.deadline.get_or_insert(Instant::now() + self.grace);
    }

    /// Resolves when the earliest armed timer fires; never while none is armed.
    async fn next(&self) -> Timer {
        let alert = self
            .down_since
            .filter(|_| !self.down_alert_raised)
            .map(|since| (since + self.down_alert_after, Timer::UplinkDownAlert));
        let grace = self.deadline.map(|at| (at, Timer::GraceOver));
        match [grace, alert]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)
        {
            Some((at, timer)) => {
                tokio::time::sleep_until(at).await;
                timer
            }
            None => std::future::pending().await,
        }
    }
}

/// What outlives a connection for one lane.
#[derive(Debug)]
struct LaneState {
    lane: Lane,
    topic: String,
    header: batch::Header,
    limits: Limits,
    /// Highest seq passed for good (acknowledged, or given up on). The store's cursor
    /// follows a commit later; a new connection starts from whichever is further.
    passed: u64,
    /// After a refused publish, seqs up to here go one per batch, with one batch in
    /// flight (0: never).
    careful_until: u64,
    /// The event refused when sent alone: it goes next as its envelope.
    envelope: Option<u64>,
}

/// Who refused a publish, and how it showed.
#[derive(Debug)]
enum Refusal {
    /// rumqttc's packet check failed writing it: certain.
    Client(String),
    /// The broker dropped the link [`BROKER_STRIKES`] times in a row with it in flight:
    /// likely, not certain (a link that fails before every acknowledgement looks alike).
    Broker(String),
}

/// What [`Forwarder::next_batch`] found for lane `i` (`before`: its sent mark before).
#[derive(Debug)]
enum Next {
    Batch(Ready),
    /// The lane's next event does not fit a packet even cut: it is given up on.
    Unfit {
        i: usize,
        before: u64,
        unfit: Box<Unfit>,
    },
}

/// A batch of lane `i` to publish (`before`: the lane's sent mark before it).
#[derive(Debug)]
struct Ready {
    i: usize,
    before: u64,
    packed: batch::Packed,
    /// Sent carefully (one event, one batch in flight), after a refusal.
    careful: bool,
    /// Its event reduced to its envelope.
    enveloped: bool,
}

/// What `run` reads from and writes to.
#[derive(Debug, Clone, Copy)]
struct Env<'a> {
    reader: &'a StoreReader,
    store: &'a StoreHandle,
    metrics: &'a Metrics,
}

/// What outlives a connection, besides the store's cursors.
#[derive(Debug)]
struct Progress {
    lanes: [LaneState; 2],
    timers: Timers,
    /// Since when the events lane has held a batch that is not full (`uplink.linger`).
    lingering: Option<Instant>,
    /// When an event was last given up on (`/healthz` keeps saying so for a while).
    gave_up_at: Option<Instant>,
    /// Connections in a row that the broker dropped with batches in flight and none
    /// acknowledged, all starting from `strikes.1`: a broker that drops the link on a
    /// packet above its own limit looks like this.
    strikes: (u32, [u64; 2]),
}

/// One connection's state; the next connection starts afresh from the cursors.
#[derive(Debug)]
struct Session {
    /// The node connected to (or tried).
    broker: String,
    inflight: InFlight,
    /// The last seq handed to the client (or skipped), per lane: from the cursor, or past
    /// it where an acknowledgement or a skip has not reached the store yet.
    sent: [u64; 2],
    /// `sent` when the connection started.
    start: [u64; 2],
    /// The event of the last careful batch published, and whether it went as its
    /// envelope: the one a refusal names while it is the only batch in flight.
    careful_sent: Option<(usize, pb::Event, bool)>,
    connected: bool,
    /// Some batch was acknowledged on this connection.
    advanced: bool,
}

impl Session {
    fn new(broker: String, reader: &StoreReader, lanes: &[LaneState; 2]) -> Session {
        let sent = [0, 1].map(|i| reader.cursor(lanes[i].lane).max(lanes[i].passed));
        Session {
            broker,
            inflight: InFlight::default(),
            sent,
            start: sent,
            careful_sent: None,
            connected: false,
            advanced: false,
        }
    }
}

/// Reads a lane on the blocking pool: sled does disk I/O and must not hold up an async
/// worker (issue 13).
async fn read_lane(
    reader: &StoreReader,
    lane: Lane,
    after: u64,
    max_events: usize,
    max_bytes: usize,
) -> Result<Vec<pb::Event>, ForwardError> {
    let reader = reader.clone();
    let events =
        tokio::task::spawn_blocking(move || reader.read_lane(lane, after, max_events, max_bytes))
            .await??;
    Ok(events)
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn clip(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Whether to log this occurrence: `Some(suppressed since the last line)`.
fn log_line(throttle: &LogThrottle) -> Option<u64> {
    match throttle.hit(std::time::Instant::now()) {
        Throttled::Log => Some(0),
        Throttled::Summary(n) => Some(n),
        Throttled::Quiet => None,
    }
}

#[cfg(test)]
mod tests;
