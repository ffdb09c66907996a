//! Forward: the store → the city platform, as protobuf `EventBatch`es over MQTT QoS 1.
//!
//! The store is the outbox. The forwarder reads committed events per lane after the last
//! position it sent, publishes batches (alarms lane always first), and moves a lane's
//! persisted cursor only when the broker has PUBACKed every batch up to it. After any
//! connection failure it throws the client away, builds a fresh one, and resends from the
//! cursors: whatever was in flight is sent again (the receiver deduplicates on
//! `(gateway_id, store_epoch, seq)`). An uplink outage never stalls ingest.

mod inflight;

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use rumqttc::{AsyncClient, Event as MqttEvent, Outgoing, Packet, QoS};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use estate_config::Config;
use estate_protocols::model::{EventState, Lane};
use estate_protocols::pb;

use crate::events::{gateway_event, now_ms};
use crate::store::{StoreHandle, StoreReader};
use crate::telemetry::Metrics;
pub use inflight::{Advance, InFlight};

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("uplink TLS: {0}")]
    Tls(#[from] crate::mqtt::TlsError),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// The uplink stage, built from config, consumed by [`Forwarder::run`].
#[derive(Debug)]
pub struct Forwarder {
    options: rumqttc::MqttOptions,
    gateway_id: String,
    estate_id: String,
    boot_id: String,
    topic_prefix: String,
    max_batch_events: usize,
    max_batch_bytes: usize,
    max_inflight: usize,
    down_alert_after: Duration,
    reconnect_min: Duration,
    reconnect_max: Duration,
}

/// Room for the batch header and MQTT framing around `max_batch_bytes` of events.
const PACKET_OVERHEAD: usize = 4096;

impl Forwarder {
    pub fn new(cfg: &Config, boot_id: &str) -> Result<Self, ForwardError> {
        let u = &cfg.uplink;
        let mut options = crate::mqtt::options(&u.mqtt, &cfg.uplink_client_id())?;
        let max_batch_bytes = u.max_batch_bytes.as_usize();
        options
            .set_clean_session(true)
            .set_inflight(u.max_inflight_batches.clamp(1, u16::MAX as usize) as u16)
            .set_max_packet_size(64 * 1024, max_batch_bytes + PACKET_OVERHEAD);
        Ok(Forwarder {
            options,
            gateway_id: cfg.gateway.id.clone(),
            estate_id: cfg.gateway.estate_id.clone(),
            boot_id: boot_id.to_owned(),
            topic_prefix: u.topic_prefix.clone(),
            max_batch_events: u.max_batch_events,
            max_batch_bytes,
            max_inflight: u.max_inflight_batches.max(1),
            down_alert_after: u.down_alert_after,
            reconnect_min: u.mqtt.reconnect_min,
            reconnect_max: u.mqtt.reconnect_max,
        })
    }

    pub fn topic(&self, lane: Lane) -> String {
        format!("{}/{}/{}", self.topic_prefix, self.estate_id, lane.as_str())
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
        let mut committed = reader.committed();
        let mut committed_open = true;
        let mut timers = Timers {
            grace,
            down_alert_after: self.down_alert_after,
            deadline: None,
            down_since: Some(Instant::now()),
            down_alert_raised: false,
        };
        let mut backoff = self.reconnect_min;
        let mut reconnect_at = Instant::now();

        'connection: loop {
            // Wait out the backoff (still raising the outage alert and honouring shutdown).
            loop {
                tokio::select! {
                    _ = shutdown.cancelled(), if timers.deadline.is_none() => timers.shutdown_requested(),
                    timer = timers.next() => if self.on_timer(timer, &mut timers, &store).await?.is_break() {
                        info!("Uplink still down at the end of the shutdown grace period.");
                        return Ok(());
                    },
                    _ = tokio::time::sleep_until(reconnect_at) => break,
                }
            }

            let (client, mut eventloop) =
                AsyncClient::new(self.options.clone(), self.max_inflight * 2 + 16);
            let mut inflight = InFlight::default();
            let mut sent = [reader.cursor(Lane::Alarms), reader.cursor(Lane::Events)];
            let mut connected = false;
            loop {
                if connected {
                    while inflight.len() < self.max_inflight {
                        let Some((lane, batch)) = self.next_batch(&reader, &mut sent)? else {
                            break;
                        };
                        let last = batch.last_seq;
                        let n = batch.events.len() as u64;
                        if let Err(err) = client.try_publish(
                            self.topic(lane),
                            QoS::AtLeastOnce,
                            false,
                            batch.encode_to_vec(),
                        ) {
                            warn!(error = %err, "Could not hand a batch to the uplink client.");
                            break;
                        }
                        inflight.push(lane, last, n);
                    }
                }
                if timers.deadline.is_some()
                    && inflight.is_empty()
                    && Lane::ALL.iter().all(|l| reader.backlog(*l) == 0)
                {
                    info!("Everything committed was forwarded; uplink done.");
                    let _ = client.try_disconnect();
                    let _ =
                        tokio::time::timeout(Duration::from_millis(500), eventloop.poll()).await;
                    return Ok(());
                }
                tokio::select! {
                    _ = shutdown.cancelled(), if timers.deadline.is_none() => timers.shutdown_requested(),
                    timer = timers.next() => if self.on_timer(timer, &mut timers, &store).await?.is_break() {
                        info!(in_flight = inflight.len(), "Shutdown grace period over; undelivered events stay in the store.");
                        return Ok(());
                    },
                    c = committed.changed(), if committed_open => {
                        if c.is_err() { committed_open = false; }
                    }
                    polled = eventloop.poll() => match polled {
                        Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                            info!(broker = ?self.options.broker_address(), "Uplink connected.");
                            connected = true;
                            metrics.uplink_connected.set(1);
                            backoff = self.reconnect_min;
                            if timers.down_alert_raised {
                                timers.down_alert_raised = false;
                                self.raise_uplink(&store, EventState::Cleared, timers.down_since).await?;
                            }
                            timers.down_since = None;
                        }
                        Ok(MqttEvent::Outgoing(Outgoing::Publish(pkid))) => {
                            if !inflight.on_outgoing_publish(pkid) {
                                debug!(pkid, "Publish id with no batch waiting for it.");
                            }
                        }
                        Ok(MqttEvent::Incoming(Packet::PubAck(ack))) => {
                            for adv in inflight.on_puback(ack.pkid) {
                                store.forwarded(adv.lane, adv.cursor, adv.events).await?;
                                metrics.forward_events.get_or_create(&adv.lane.into()).inc_by(adv.events);
                                metrics.forward_batches.get_or_create(&adv.lane.into()).inc_by(adv.batches);
                            }
                        }
                        Ok(_) => {}
                        Err(err) => {
                            metrics.uplink_connected.set(0);
                            if connected || timers.down_since.is_none() {
                                timers.down_since = Some(Instant::now());
                            }
                            warn!(error = %err, retry_in = ?backoff, in_flight = inflight.len(), "Uplink connection failed; will resend from the cursors.");
                            inflight.clear();
                            reconnect_at = Instant::now() + backoff;
                            backoff = (backoff * 2).min(self.reconnect_max);
                            continue 'connection;
                        }
                    }
                }
            }
        }
    }

    /// Acts on a timer that fired: raises the outage alert, or says the grace period is
    /// over (`Break`: stop now).
    async fn on_timer(
        &self,
        timer: Timer,
        timers: &mut Timers,
        store: &StoreHandle,
    ) -> Result<ControlFlow<()>, ForwardError> {
        match timer {
            Timer::GraceOver => Ok(ControlFlow::Break(())),
            Timer::UplinkDownAlert => {
                timers.down_alert_raised = true;
                self.raise_uplink(store, EventState::Active, timers.down_since)
                    .await?;
                Ok(ControlFlow::Continue(()))
            }
        }
    }

    /// The next batch to send: the alarms lane first, then the events lane.
    fn next_batch(
        &self,
        reader: &StoreReader,
        sent: &mut [u64; 2],
    ) -> Result<Option<(Lane, pb::EventBatch)>, ForwardError> {
        for (i, lane) in Lane::ALL.into_iter().enumerate() {
            if reader.last_seq(lane) <= sent[i] {
                continue;
            }
            let events =
                reader.read_lane(lane, sent[i], self.max_batch_events, self.max_batch_bytes)?;
            let (Some(first), Some(last)) = (events.first(), events.last()) else {
                continue;
            };
            let (first_seq, last_seq) = (first.seq, last.seq);
            sent[i] = last_seq;
            return Ok(Some((
                lane,
                pb::EventBatch {
                    gateway_id: self.gateway_id.clone(),
                    estate_id: self.estate_id.clone(),
                    boot_id: self.boot_id.clone(),
                    store_epoch: reader.epoch(),
                    first_seq,
                    last_seq,
                    lane: pb::Lane::from(lane).into(),
                    events,
                    sent_at_ms: now_ms(),
                },
            )));
        }
        Ok(None)
    }

    async fn raise_uplink(
        &self,
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
            serde_json::json!({"broker": format!("{}:{}", self.options.broker_address().0, self.options.broker_address().1), "down_for_s": down_for}),
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
