//! Ingest: sensors → events. MQTT is here; Modbus polling is in [`modbus`]; cameras that
//! push ISAPI alarms over HTTP are in [`camera_push`].
//!
//! The MQTT stage keeps a persistent session (stable client id, `clean_session = false`),
//! subscribes QoS 1 to every configured source's topic filters, and acknowledges each
//! message only after everything it produced (0..n events, or a dead letter for malformed
//! input) is durable in the store. Nothing is dropped: unregistered devices are accepted
//! and counted; bad input is dead-lettered and acked so it cannot loop.
//!
//! ```text
//! broker ─▶ EventLoop::poll ─▶ formats::Sources::decode ─▶ StoreHandle::append × n ─▶ ([Pending], Publish) ─▶ PUBACK in order
//!            tick (camera silence) ─▶ Sources::tick ─▶ StoreHandle::append_nowait
//! ```
//!
//! Which decoder reads a message is chosen by topic (see [`formats`]); the native
//! protocol is [`formats::native`].

pub mod camera_push;
pub mod formats;
pub mod modbus;
mod ready;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event as MqttEvent, Packet, Publish, QoS};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use estate_config::Config;

use crate::events::now_ms;
use crate::health::{LogThrottle, Throttled};
use crate::mqtt::{Connection, Renew};
use crate::store::{DeadLetter, Pending, StoreError, StoreHandle};
use crate::telemetry::Metrics;
use formats::{bounded_raw, cut, DecodeError, Sources};
use ready::ReadyAcks;

/// Largest packet the client accepts. Payloads above `ingest.max_payload` are received
/// whole and dead-lettered; only a packet above this would make rumqttc drop the
/// connection (and the broker redeliver it), so keep the broker's `message_size_limit`
/// at or below it. `check-config` keeps `ingest.max_payload` below it.
pub const MAX_INCOMING_PACKET: usize = estate_config::INGEST_MAX_PACKET.as_u64() as usize;

/// Messages received but not yet committed before ingest stops reading from the broker.
/// Four of the writer's groups (`store.batch_max_events`, 256) keep it busy; more only
/// holds messages in memory while the writer is behind: at full ingest speed 8,192 here
/// and in the store's queue cost about 13 MB of RSS (docs/footprint.md). Mosquitto 2.0's
/// `max_inflight_messages` does not hold back before this (measured: 21,000–49,000
/// PUBACKs outstanding at a window of 1,000).
const MAX_UNACKED: usize = 1024;

/// The MQTT client's request channel: PUBACKs queue here until the event loop writes them.
const REQUEST_CAPACITY: usize = 16 * 1024;

/// After a message was left unacknowledged (its commit failed), ingest opens a new
/// session this long after the last answered commit: the broker then redelivers what
/// was not acknowledged, which would otherwise hold its in-flight window for good (no
/// further message, not even an alarm, would arrive).
const RESESSION_AFTER: Duration = Duration::from_secs(2);

/// Why MQTT ingest could not start; the cause is the [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The ingest broker's TLS settings do not load.
    #[error("ingest broker TLS")]
    Tls(#[from] crate::mqtt::TlsError),
}

/// The MQTT ingest stage, built from config, consumed by [`MqttIngest::run`].
#[derive(Debug)]
pub struct MqttIngest {
    /// The ingest broker's nodes (an estate may run two) and the reconnect backoff.
    endpoints: crate::mqtt::Endpoints,
    /// Every configured source and its decoder state.
    sources: Sources,
    raw_limit: usize,
    /// One per dead-letter reason: hostile input must not flood the log (the
    /// `dead_lettered` counter stays exact).
    dead_letter_logs: std::collections::HashMap<&'static str, LogThrottle>,
}

/// Dead letters logged in full per reason before the log switches to summaries.
const DEAD_LETTER_LOG_BURST: u64 = 5;
/// At most one summary line per reason this often.
const DEAD_LETTER_LOG_EVERY: Duration = Duration::from_secs(60);

impl MqttIngest {
    /// The ingest stage from `[ingest]`, `[[sources]]` and `[[devices]]`: a persistent
    /// session (`clean_session = false`) with manual acks. Fails only on TLS settings
    /// that do not load; it connects in [`MqttIngest::run`].
    pub fn new(cfg: &Config) -> Result<Self, IngestError> {
        let mut endpoints = crate::mqtt::Endpoints::new(&cfg.ingest.mqtt, &cfg.ingest_client_id())?;
        endpoints.configure(|o| {
            o.set_clean_session(false)
                .set_manual_acks(true)
                .set_max_packet_size(MAX_INCOMING_PACKET, 64 * 1024);
        });
        Ok(MqttIngest {
            endpoints,
            sources: Sources::new(cfg),
            raw_limit: cfg.ingest.raw_limit.as_usize(),
            dead_letter_logs: Default::default(),
        })
    }

    fn filters(&self) -> Vec<rumqttc::SubscribeFilter> {
        self.sources
            .filters()
            .into_iter()
            .map(|f| rumqttc::SubscribeFilter::new(f, QoS::AtLeastOnce))
            .collect()
    }

    /// Runs until `shutdown`, then acknowledges what is already committed and disconnects.
    /// Connection errors never end it: it reconnects with backoff.
    ///
    /// One task does everything, so nothing it waits on can wait on it: it polls the
    /// event loop (which also writes the PUBACKs out), and acknowledges messages in arrival
    /// order as their commits land. While `MAX_UNACKED` messages await their commit it
    /// stops reading new ones (back-pressure to the broker); commits land without the event
    /// loop, so that wait always ends.
    pub async fn run(
        mut self,
        store: StoreHandle,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Result<(), IngestError> {
        let mut conn = Connection::new(
            self.endpoints.clone(),
            REQUEST_CAPACITY,
            Renew::KeepOnOneNode,
        );
        let mut resession_at: Option<tokio::time::Instant> = None;
        let mut acks = AckQueue::default();
        // Clears camera alarms after their silence; only sources that need it tick.
        let tick_every = self.sources.tick_every_ms();
        let mut tick = tokio::time::interval(Duration::from_millis(
            tick_every.unwrap_or(3_600_000).max(1) as u64,
        ));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        info!(broker = %conn.addr(), nodes = self.endpoints.len(), client_id = %self.endpoints.options().client_id(), "MQTT ingest starting.");
        loop {
            acks.promote();
            acks.flush(conn.client(), &metrics);
            let reading = acks.waiting.len() < MAX_UNACKED;
            if std::mem::take(&mut acks.left_unacked) {
                resession_at = Some(tokio::time::Instant::now() + RESESSION_AFTER);
            }
            let idle = acks.waiting.is_empty() && acks.ready.is_empty();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = sleep_until(resession_at), if resession_at.is_some() && idle => {
                    resession_at = None;
                    warn!("Messages were left unacknowledged (not stored); opening a new ingest session so that the broker redelivers them.");
                    metrics.ingest_connected.set(0);
                    // Dropping the event loop closes the connection; the persistent
                    // session keeps the unacknowledged messages for the new one.
                    conn.renew_now();
                }
                done = acks.next_commit(), if !acks.waiting.is_empty() => acks.committed(done),
                _ = tick.tick(), if tick_every.is_some() => {
                    if self.tick(&store, &metrics).await.is_err() {
                        error!("Store writer stopped; ingest cannot continue.");
                        break;
                    }
                }
                polled = conn.next(), if reading => match polled {
                    Ok(MqttEvent::Incoming(Packet::Publish(publish))) => {
                        metrics.ingest_received.inc();
                        match self.accept(&publish, &store, &metrics).await {
                            Ok((pending, telemetry)) => acks.push(pending, publish, telemetry),
                            Err(_) => {
                                error!("Store writer stopped; ingest cannot continue.");
                                break;
                            }
                        }
                    }
                    Ok(MqttEvent::Incoming(Packet::ConnAck(ack))) => {
                        info!(broker = %conn.addr(), session_present = ack.session_present, "Connected to the ingest broker.");
                        if let Err(err) = conn.client().try_subscribe_many(self.filters()) {
                            warn!(error = %err, "Could not queue the subscription.");
                        }
                    }
                    Ok(MqttEvent::Incoming(Packet::SubAck(ack))) => {
                        debug!(codes = ?ack.return_codes, "Subscribed.");
                        // Connected *and* subscribed: from here on the broker keeps
                        // what the sensors publish for this session.
                        metrics.ingest_connected.set(1);
                    }
                    Ok(_) => {}
                    Err(lost) => {
                        metrics.ingest_connected.set(0);
                        // With one node the same event loop reconnects, keeping its
                        // session state; a fresh client at the next node, whose
                        // persistent session there redelivers what was not acknowledged.
                        warn!(broker = %lost.broker, error = %lost.error, next = %lost.next, retry_in = ?lost.retry_in, "Ingest broker connection failed; reconnecting.");
                    }
                },
            }
        }
        drain(&mut conn, &mut acks, &metrics).await;
        metrics.ingest_connected.set(0);
        info!("MQTT ingest stopped.");
        Ok(())
    }

    /// Decodes one message and submits its events (or its dead letter) to the store.
    /// The returned commits all land before the message is acknowledged; none (a message
    /// that changed nothing, e.g. a folded camera repeat) acknowledges it in order. The
    /// flag says the message is only telemetry (events lane, no dead letter).
    async fn accept(
        &mut self,
        publish: &Publish,
        store: &StoreHandle,
        metrics: &Metrics,
    ) -> Result<(VecDeque<Pending>, bool), crate::store::StoreError> {
        let now = now_ms();
        match self.sources.decode(&publish.topic, &publish.payload, now) {
            Ok(decoded) => {
                let mut pending = VecDeque::with_capacity(decoded.events.len());
                let telemetry = decoded
                    .events
                    .iter()
                    .all(|e| e.lane() == estate_protocols::model::Lane::Events);
                for event in decoded.events {
                    if !event.registered {
                        metrics.ingest_unregistered.inc();
                        debug!(device_id = %event.device_id, "Event from an unregistered device accepted.");
                    }
                    pending.push_back(store.append(event).await?);
                }
                Ok((pending, telemetry))
            }
            Err(e) => {
                metrics.dead_letter(e.reason.as_str());
                let letter = dead_letter(&publish.topic, &publish.payload, &e, self.raw_limit, now);
                let throttle = self
                    .dead_letter_logs
                    .entry(e.reason.as_str())
                    .or_insert_with(|| {
                        LogThrottle::new(DEAD_LETTER_LOG_BURST, DEAD_LETTER_LOG_EVERY)
                    });
                match throttle.hit(std::time::Instant::now()) {
                    Throttled::Log => {
                        warn!(topic = %letter.source, reason = %e.reason, error = %cut(&e.detail, DEAD_LETTER_TEXT_MAX), "Malformed input dead-lettered.")
                    }
                    Throttled::Summary(n) => {
                        warn!(topic = %letter.source, reason = %e.reason, error = %cut(&e.detail, DEAD_LETTER_TEXT_MAX), not_logged = n, "Malformed input dead-lettered; more of this reason were kept but not logged (see estate_dead_lettered).")
                    }
                    Throttled::Quiet => {}
                }
                let pending = store.dead_letter(letter).await?;
                Ok((VecDeque::from([pending]), false))
            }
        }
    }

    /// Stores what the time-driven decoders ended (camera alarms cleared after silence).
    /// Not tied to any message, so nothing waits for these commits.
    async fn tick(&mut self, store: &StoreHandle, metrics: &Metrics) -> Result<(), StoreError> {
        let decoded = self.sources.tick(now_ms());
        for event in decoded.events {
            if !event.registered {
                metrics.ingest_unregistered.inc();
            }
            debug!(device_id = %event.device_id, code = %event.code, "Cleared after silence.");
            store.append_nowait(event).await?;
        }
        Ok(())
    }
}

/// Resolves at `at`; never when it is none.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Longest topic and reason a dead letter keeps, in bytes. A topic may be 64 KiB and a
/// reason quotes the topic or the payload (escaped, up to 10 bytes per byte); uncut, one
/// hostile message made a record of megabytes, far above `store.record_max_bytes` and
/// sled's blob threshold (found by the fuzz targets, `fuzz/`).
pub const DEAD_LETTER_TEXT_MAX: usize = 512;

/// The dead letter of a message that did not decode: its raw bytes up to `raw_limit`,
/// its topic and reason each cut to [`DEAD_LETTER_TEXT_MAX`] bytes (marked with `…`).
pub fn dead_letter(
    topic: &str,
    payload: &[u8],
    e: &DecodeError,
    raw_limit: usize,
    now_ms: i64,
) -> DeadLetter {
    let (raw, _) = bounded_raw(payload, raw_limit);
    DeadLetter {
        received_ms: now_ms,
        source: cut(topic, DEAD_LETTER_TEXT_MAX),
        reason: cut(&e.to_string(), DEAD_LETTER_TEXT_MAX),
        raw,
        original_len: payload.len(),
    }
}

/// Messages waiting for their commits (all of them: one message may produce several
/// events), then for their PUBACK to be handed to the client, both in arrival order. A
/// failed commit leaves its message unacknowledged: the broker redelivers it on the next
/// session (see [`RESESSION_AFTER`]). Telemetry that could not be stored because the disk
/// is full is acknowledged anyway (counted in `estate_ingest_acked_unstored`) so that it
/// does not hold the broker's window against alarms; alarms and dead letters never are.
#[derive(Debug, Default)]
struct AckQueue {
    waiting: VecDeque<Waiting>,
    /// Committed; PUBACK not yet accepted by the client's request channel. At full
    /// ingest speed hundreds of thousands long, as a few runs of packet ids (`ready.rs`).
    ready: ReadyAcks,
    /// A message was left unacknowledged since the run loop last looked.
    left_unacked: bool,
    /// Telemetry acknowledged unstored, not yet counted.
    acked_unstored: u64,
}

/// What a PUBACK needs of its message.
#[derive(Debug, Clone, Copy)]
struct Ack {
    pkid: u16,
    qos: QoS,
}

impl Ack {
    /// The message as `AsyncClient::try_ack` takes it: no topic, no payload.
    fn publish(self) -> Publish {
        let mut p = Publish::new(String::new(), self.qos, Vec::new());
        p.pkid = self.pkid;
        p
    }
}

#[derive(Debug)]
struct Waiting {
    /// Commits still outstanding, oldest first.
    pending: VecDeque<Pending>,
    /// The message's topic, for the log when its commit fails.
    topic: String,
    ack: Ack,
    /// One of its commits failed: never acknowledge it.
    failed: bool,
    /// Only telemetry: acknowledged even when the disk is full.
    telemetry: bool,
    /// Its commit was refused because the disk is full.
    disk_full: bool,
}

impl AckQueue {
    fn push(&mut self, pending: VecDeque<Pending>, publish: Publish, telemetry: bool) {
        // Not the payload (a slice that pins the MQTT client's read buffer): the stored
        // event has its copy.
        self.waiting.push_back(Waiting {
            pending,
            ack: Ack {
                pkid: publish.pkid,
                qos: publish.qos,
            },
            topic: publish.topic,
            failed: false,
            telemetry,
            disk_full: false,
        });
    }

    /// Moves the front messages whose commits have all landed to `ready` (or drops a
    /// failed one from the queue without acknowledging it).
    fn promote(&mut self) {
        while self.waiting.front().is_some_and(|w| w.pending.is_empty()) {
            let Some(w) = self.waiting.pop_front() else {
                return;
            };
            if !w.failed {
                self.ready.push(w.ack);
            } else if w.telemetry && w.disk_full {
                self.acked_unstored += 1;
                self.ready.push(w.ack);
            } else {
                self.left_unacked = true;
            }
        }
    }

    /// Resolves when the oldest outstanding commit of the oldest waiting message is answered.
    async fn next_commit(&mut self) -> Result<Result<u64, StoreError>, oneshot::error::RecvError> {
        match self.waiting.front_mut().and_then(|w| w.pending.front_mut()) {
            Some(pending) => pending.await,
            None => std::future::pending().await,
        }
    }

    fn committed(&mut self, done: Result<Result<u64, StoreError>, oneshot::error::RecvError>) {
        let Some(w) = self.waiting.front_mut() else {
            return;
        };
        w.pending.pop_front();
        match done {
            Ok(Ok(_)) => {}
            Ok(Err(StoreError::DiskFull)) => {
                w.failed = true;
                w.disk_full = true;
                if !w.telemetry {
                    debug!(topic = %w.topic, "Disk full: alarm not stored; not acknowledging it (its local alert opens, marked not stored).");
                }
            }
            Ok(Err(err)) => {
                w.failed = true;
                error!(topic = %w.topic, error = %err, "Event not committed; not acknowledging it.");
            }
            Err(_) => {
                w.failed = true;
                error!(topic = %w.topic, "Store writer gone; not acknowledging.");
            }
        }
        self.promote();
    }
    /// Hands ready PUBACKs to the client until its request channel is full; the event
    /// loop writes them out as it is polled.
    fn flush(&mut self, client: &AsyncClient, metrics: &Metrics) {
        metrics
            .ingest_acked_unstored
            .inc_by(std::mem::take(&mut self.acked_unstored));
        while let Some(ack) = self.ready.front() {
            if client.try_ack(&ack.publish()).is_err() {
                return;
            }
            self.ready.pop_front();
            metrics.ingest_acked.inc();
        }
        self.ready.shrink();
    }
}

/// The stop: acknowledges what is committed, then leaves cleanly, within 5 s. Messages
/// that arrive now are not acknowledged; the persistent session redelivers them.
async fn drain(conn: &mut Connection, acks: &mut AckQueue, metrics: &Metrics) {
    let drain = async {
        loop {
            acks.promote();
            acks.flush(conn.client(), metrics);
            if acks.waiting.is_empty() && acks.ready.is_empty() {
                break;
            }
            tokio::select! {
                done = acks.next_commit(), if !acks.waiting.is_empty() => acks.committed(done),
                p = conn.next_in_session() => if p.is_none() { return },
            }
        }
        let _ = conn.client().try_disconnect();
        // Read until the broker closes the connection. Closing our end first while
        // its publishes still sit unread in the socket makes the kernel send a reset,
        // and the broker then discards the final PUBACKs it has not read yet: those
        // messages would come back after a restart as new events under new seqs.
        while conn.next_in_session().await.is_some() {}
    };
    if tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .is_err()
    {
        warn!("Ingest drain timed out; unacknowledged messages will be redelivered.");
    }
}
