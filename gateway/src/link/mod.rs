//! The city link (issue 14): the gateway's presence and status for the city platform,
//! and the city's commands to the gateway.
//!
//! A second MQTT connection to the city broker, beside the forwarder's: same hosts, TLS
//! client certificate and credentials as `[uplink.mqtt]`, client id
//! `estate-gw-{gateway.id}-link` ([`client_id`]), a **persistent session** (commands the
//! city sends while the gateway is away are queued for it) and **manual acks**. It never
//! waits behind a backlog the forwarder drains, and the forwarder keeps its clean session.
//! Topics (`{p}` = `{uplink.topic_prefix}/{gateway.estate_id}`, messages in
//! `protocols/proto/estate/v1/link.proto`):
//!
//! ```text
//!  {p}/status    retained LinkState: online on every CONNACK; the last will (offline);
//!                offline again on a clean stop
//!  {p}/health    GatewayStatus on connect, every uplink.status_interval, and on STATUS
//!  {p}/commands  ──▶ decode ─▶ id ─▶ seen-set ─▶ record (GW.COMMAND) ─▶ PUBACK ─▶ check ─▶ run
//!  {p}/results   ◀── CommandResult: ACCEPTED (roll call), then the final one (GW.COMMAND_RESULT)
//!  {p}/alarms|events   EventBatches a RESEND publishes again (the forwarder's cursors stay)
//! ```
//!
//! **A command is acknowledged only once its receipt is durable**: its id goes into the
//! seen-set (`link/seen.rs`, a sled tree of the store) and its `GW.COMMAND` audit event is
//! committed (that group commit's flush and fdatasync cover the seen-set too); only then
//! the PUBACK, and only then does it run. A command the broker redelivers because the
//! gateway died before acknowledging it is therefore never run twice: it is either not in
//! the seen-set (not recorded, not run: it runs now) or it is (answered `DUPLICATE`).
//!
//! **Replays and interruptions.** An id already in the seen-set is answered `DUPLICATE`
//! and not run again, whoever sent it; the answer carries the original command's final
//! result in its detail (and its roll-call or resend answer), so a city that missed the
//! first result learns it by sending the same command again. An id recorded but never
//! answered (the gateway stopped between the two: a crash, or a stop during a roll call)
//! is answered `FAILED` ("not run again: send a new command") at the next start, or at
//! the stop itself when it is clean. Ids are kept until an hour after their expiry
//! (which is at most a day after their issue), then pruned.
//!
//! Refusals (pure, `link/command.rs`): an undecodable payload (dead-lettered with its raw
//! bytes, counted in `estate_dead_lettered_total{reason="command"}`, answered with an
//! empty `command_id`); an empty or over-64-byte id; another gateway's id; no expiry, an
//! expiry before the issue or more than a day after it; an unknown kind; a kind turned off
//! in `[commands]`; a kind's own bad fields. `EXPIRED` when received after its expiry.
//!
//! Kinds: roll call → [`DutyDesk::roll_call`] in a task (`ACCEPTED` at once, then `OK`
//! with who answered and when, or `NO_ANSWER`); alarm handling and broadcast →
//! [`DutyDesk`] in a task; resend → the store's events of the range, this epoch only,
//! packed as the forwarder packs them (`pack` in `forward/batch.rs`) and published on the lane
//! topics, answered with what was resent and what is no longer held; status → a
//! `GatewayStatus` with the command's id. Store reads and sled writes run on the blocking
//! pool, never on an async worker.
//!
//! Supervision (crate doc, "Supervised stages"): the stage returns only at stop or when
//! the store writer is gone; it runs under `Guarded`, so any other end stops the gateway
//! (exit 1). A command that made the gateway crash is in the seen-set by then and is
//! never run again (no crash loop).

mod command;
mod seen;
mod status;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use rumqttc::{AsyncClient, Event as MqttEvent, LastWill, Packet, Publish, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use estate_config::Config;
use estate_protocols::model::{EventState, Lane};
use estate_protocols::pb;
use pb::command::Kind as PbKind;
use pb::CommandOutcome as Outcome;

use crate::alerts::AlertsHandle;
use crate::duty::{DutyDesk, DutyError, RollCall, RollCallRequest};
use crate::events::{gateway_event, now_ms};
use crate::forward::{Header, Limits};
use crate::health::Level;
use crate::mqtt::{Connection, Endpoints, Renew, WillFn};
use crate::store::{DeadLetter, StoreError, StoreHandle, StoreReader};
use crate::telemetry::{Metrics, OutcomeLabel};
use command::{clip, Refusal};
use command::{Kind, Rules};

/// Why the city link could not start or stopped; the cause is the
/// [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The city broker's TLS settings do not load.
    #[error("city link TLS")]
    Tls(#[from] crate::mqtt::TlsError),
    /// A store read or write failed.
    #[error("store")]
    Store(#[from] StoreError),
    /// A store call on the blocking pool panicked or was cancelled.
    #[error("a store call on the blocking pool did not finish")]
    Blocking(#[from] tokio::task::JoinError),
}

/// The client's request queue (publishes, acks). A publish that finds it full waits in
/// the link's own outbox, in order, and goes on the next turn of the loop.
const REQUEST_CAPACITY: usize = 4096;
/// Largest packet the link accepts: as ingest's. A command is a few hundred bytes and one
/// over [`MAX_COMMAND_BYTES`] is refused and dead-lettered; only a packet above this would
/// make the client drop the connection on every redelivery, so keep the city broker's
/// message size limit at or below it.
const MAX_INCOMING_PACKET: usize = crate::ingest::MAX_INCOMING_PACKET;
/// Largest command payload decoded.
const MAX_COMMAND_BYTES: usize = 64 * 1024;
/// How often ids past their time leave the seen-set.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// How long a clean stop waits for the offline status and the last results to go out.
const STOP_WITHIN: Duration = Duration::from_secs(2);
/// The `/healthz` key of a refused commands subscription.
const HEALTH_KEY: &str = "link.commands";
/// Audit and publish what the link receives, at most this much of a text field.
const TEXT_MAX: usize = 512;

/// The answer to a command recorded but never answered.
const INTERRUPTED: &str = "the gateway stopped before it finished this command (a restart or a crash); it is not run again: send a new command to retry";

/// The link's MQTT client id: `uplink.mqtt.client_id` with `-link` appended when one is
/// set, else `estate-gw-{gateway.id}-link`; stable, so the broker keeps its session.
pub fn client_id(cfg: &Config) -> String {
    match &cfg.uplink.mqtt.client_id {
        Some(id) => format!("{id}-link"),
        None => format!("estate-gw-{}-link", cfg.gateway.id),
    }
}

/// The topics of one estate.
#[derive(Debug, Clone)]
struct Topics {
    status: String,
    health: String,
    commands: String,
    results: String,
    /// Per lane, for a resend (as [`crate::forward::Forwarder::topic`]).
    lanes: [String; 2],
}

/// The city link stage, built from config, consumed by [`Link::run`].
#[derive(Debug)]
pub struct Link {
    /// The city broker's nodes (`uplink.mqtt.hosts`), with this link's session settings.
    endpoints: Endpoints,
    rules: Rules,
    gateway_id: String,
    estate_id: String,
    boot_id: String,
    topics: Topics,
    commands_enabled: bool,
    status_interval: Duration,
    /// Per lane, what bounds a resent batch (as the forwarder's).
    limits: [Limits; 2],
    raw_limit: usize,
    buses: Vec<String>,
}

/// What the link reads from and hands work to.
#[derive(Debug, Clone)]
pub struct Context {
    /// Backlog, cursors and stored events: `GatewayStatus` and resends.
    pub reader: StoreReader,
    /// Where the link stores each command's audit (`GW.COMMAND`) before acting on it,
    /// its result event (`GW.COMMAND_RESULT`), and malformed commands as dead letters.
    pub store: StoreHandle,
    /// Counters (`estate_link_*`) and the health conditions `GatewayStatus` reports.
    pub metrics: Arc<Metrics>,
    /// Devices and open alerts, counted in `GatewayStatus`.
    pub alerts: AlertsHandle,
    /// Where roll calls, the city's alarm handling and broadcasts go.
    pub duty: DutyDesk,
    /// The store's folder (for the status's disk figures).
    pub store_dir: PathBuf,
}

impl Link {
    /// The city link from `[uplink]` (the same broker nodes as the forwarder, its own
    /// persistent session and client id) and `[commands]`. Fails only on TLS settings
    /// that do not load; it connects in [`Link::run`].
    pub fn new(cfg: &Config, boot_id: &str) -> Result<Link, LinkError> {
        let u = &cfg.uplink;
        let max_packet = u.max_packet_size.as_usize();
        let mut endpoints = Endpoints::new(&u.mqtt, &client_id(cfg))?;
        endpoints.configure(|o| {
            o.set_clean_session(false)
                .set_manual_acks(true)
                .set_max_packet_size(MAX_INCOMING_PACKET, max_packet);
        });
        let p = format!("{}/{}", u.topic_prefix, cfg.gateway.estate_id);
        let lanes = Lane::ALL.map(|l| format!("{p}/{}", l.as_str()));
        let limits = [0, 1].map(|i| Limits {
            max_events: u.max_batch_events.max(1),
            max_payload: u
                .max_batch_bytes
                .as_usize()
                .min(crate::forward::max_payload(lanes[i].len(), max_packet)),
        });
        Ok(Link {
            endpoints,
            rules: Rules::from_config(cfg),
            gateway_id: cfg.gateway.id.clone(),
            estate_id: cfg.gateway.estate_id.clone(),
            boot_id: boot_id.to_owned(),
            topics: Topics {
                status: format!("{p}/status"),
                health: format!("{p}/health"),
                commands: format!("{p}/commands"),
                results: format!("{p}/results"),
                lanes,
            },
            commands_enabled: cfg.commands.enabled,
            status_interval: u.status_interval,
            limits,
            raw_limit: cfg.ingest.raw_limit.as_usize(),
            buses: cfg.modbus.buses.iter().map(|b| b.name.clone()).collect(),
        })
    }

    fn link_state(&self, online: bool, since_ms: i64) -> pb::LinkState {
        pb::LinkState {
            gateway_id: self.gateway_id.clone(),
            estate_id: self.estate_id.clone(),
            boot_id: self.boot_id.clone(),
            online,
            since_ms,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    /// The last will of each connection attempt: offline, stamped with the attempt's
    /// time (the broker publishes it later, unchanged). One event loop makes one attempt
    /// at a time and waits out the backoff between them ([`Connection`]), so there is
    /// never more than one live attempt for this client id.
    fn last_will(&self) -> WillFn {
        let topic = self.topics.status.clone();
        let offline = self.link_state(false, 0);
        Box::new(move || {
            let state = pb::LinkState {
                since_ms: now_ms(),
                ..offline.clone()
            };
            LastWill::new(topic.clone(), state.encode_to_vec(), QoS::AtLeastOnce, true)
        })
    }

    /// Runs until `shutdown`: connects (and reconnects with backoff), publishes the
    /// status, answers commands; then answers what is still running `FAILED`, publishes
    /// the offline status and disconnects. Returns early only when the store writer is gone.
    pub async fn run(self, ctx: Context, shutdown: CancellationToken) -> Result<(), LinkError> {
        let seen = {
            let reader = ctx.reader.clone();
            blocking(move || seen::Seen::open(&reader)).await?
        };
        let mut conn = Connection::new(self.endpoints.clone(), REQUEST_CAPACITY, Renew::Keep);
        conn.set_last_will(self.last_will());
        // Finished commands from their tasks. Bounded: a task waits while it is full (the
        // loop drains it every turn).
        let (done_tx, mut done_rx) = mpsc::channel::<pb::CommandResult>(64);
        let status = self.status_sources(&ctx);
        let mut st = State {
            link: &self,
            ctx,
            seen,
            client: conn.client().clone(),
            outbox: VecDeque::new(),
            pending: HashMap::new(),
            tasks: JoinSet::new(),
            done_tx,
            status,
        };
        st.answer_interrupted().await?;
        st.prune().await?;
        info!(client_id = %self.endpoints.options().client_id(), broker = %conn.addr(), nodes = self.endpoints.len(), commands = self.commands_enabled, "City link starting.");

        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + self.status_interval,
            self.status_interval,
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut prune =
            tokio::time::interval_at(tokio::time::Instant::now() + PRUNE_EVERY, PRUNE_EVERY);
        let mut connected = false;
        loop {
            st.flush_outbox();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(result) = done_rx.recv() => st.finish(result).await?,
                Some(joined) = st.tasks.join_next(), if !st.tasks.is_empty() => {
                    if let Err(err) = joined {
                        // A task that panicked: its command is answered at the next start
                        // (it stays unanswered in the seen-set) or at the stop.
                        warn!(error = %err, "A city command's task ended without a result.");
                    }
                }
                _ = tick.tick(), if connected => st.publish_status("").await?,
                _ = prune.tick() => st.prune().await?,
                polled = conn.next() => match polled {
                    Ok(MqttEvent::Incoming(Packet::ConnAck(ack))) => {
                        info!(session_present = ack.session_present, broker = %conn.addr(), "City link connected.");
                        connected = true;
                        st.on_connected().await?;
                        tick.reset();
                    }
                    Ok(MqttEvent::Incoming(Packet::Publish(p))) => st.on_publish(p).await?,
                    Ok(MqttEvent::Incoming(Packet::SubAck(ack))) => st.on_suback(&ack),
                    Ok(_) => {}
                    Err(lost) => {
                        connected = false;
                        st.ctx.metrics.link_connected.set(0);
                        warn!(error = %lost.error, broker = %lost.broker, next = %lost.next, retry_in = ?lost.retry_in, "City link connection failed; reconnecting.");
                    }
                },
            }
        }

        st.stop(&mut conn, &mut done_rx, connected).await
    }

    /// What `GatewayStatus` is built from.
    fn status_sources(&self, ctx: &Context) -> status::Sources {
        status::Sources {
            gateway_id: self.gateway_id.clone(),
            estate_id: self.estate_id.clone(),
            boot_id: self.boot_id.clone(),
            started: Instant::now(),
            reader: ctx.reader.clone(),
            alerts: ctx.alerts.clone(),
            metrics: ctx.metrics.clone(),
            store_dir: ctx.store_dir.clone(),
            buses: self.buses.clone(),
        }
    }
}

/// Something the client's request queue was full for: sent, in order, on a later turn.
#[derive(Debug)]
enum Out {
    Publish {
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    },
    Ack(Publish),
}

/// The running link's state, for one [`Link::run`].
struct State<'a> {
    link: &'a Link,
    ctx: Context,
    seen: seen::Seen,
    client: AsyncClient,
    /// What the request queue had no room for, oldest first.
    outbox: VecDeque<Out>,
    /// Commands running in a task, by id.
    pending: HashMap<String, Kind>,
    tasks: JoinSet<()>,
    /// Each task sends its final result here.
    done_tx: mpsc::Sender<pb::CommandResult>,
    status: status::Sources,
}

impl State<'_> {
    /// The connection is up: the retained online status, the commands subscription (or,
    /// with commands off, dropping one an earlier run left in the session), a status.
    async fn on_connected(&mut self) -> Result<(), LinkError> {
        let link = self.link;
        self.ctx.metrics.link_connected.set(1);
        self.send(
            &link.topics.status,
            link.link_state(true, now_ms()).encode_to_vec(),
            true,
        );
        // Turned off: the persistent session may still hold the subscription of an
        // earlier run; drop it.
        let queued = if link.commands_enabled {
            self.client
                .try_subscribe(link.topics.commands.clone(), QoS::AtLeastOnce)
        } else {
            self.client.try_unsubscribe(link.topics.commands.clone())
        };
        if let Err(err) = queued {
            warn!(error = %err, "Could not queue the commands subscription change.");
        }
        self.publish_status("").await
    }

    /// A message from the city broker: a command (or one while commands are off), or on
    /// a topic the link does not read (acknowledged and dropped).
    async fn on_publish(&mut self, p: Publish) -> Result<(), LinkError> {
        let topics = &self.link.topics;
        if p.topic == topics.commands && self.link.commands_enabled {
            self.on_command(p).await?;
        } else if p.topic == topics.commands {
            self.on_commands_off(p).await?;
        } else {
            debug!(topic = %p.topic, "Message on a topic the link does not read; acknowledged.");
            self.ack(p);
        }
        Ok(())
    }

    /// The broker's answer to the commands subscription: a refusal degrades `/healthz`.
    fn on_suback(&self, ack: &rumqttc::SubAck) {
        let commands = &self.link.topics.commands;
        if ack
            .return_codes
            .iter()
            .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
        {
            warn!(topic = %commands, "The city broker refused the commands subscription (its ACL for this identity?); no command can arrive.");
            self.ctx.metrics.health.set(HEALTH_KEY, Level::Degraded, format!("the city broker refused the subscription to {commands}: commands from the city cannot arrive (check the broker's ACL for this gateway)"));
        } else {
            debug!(codes = ?ack.return_codes, "Subscribed to the city's commands.");
            self.ctx.metrics.health.clear(HEALTH_KEY);
        }
    }

    /// The stop: finished commands answered, running ones answered FAILED, the offline
    /// status out, then a clean disconnect (the broker drops the will), within
    /// [`STOP_WITHIN`].
    async fn stop(
        mut self,
        conn: &mut Connection,
        done_rx: &mut mpsc::Receiver<pb::CommandResult>,
        connected: bool,
    ) -> Result<(), LinkError> {
        while let Ok(result) = done_rx.try_recv() {
            self.finish(result).await?;
        }
        self.tasks.abort_all();
        let ids: Vec<String> = self.pending.keys().cloned().collect();
        for id in ids {
            let r = self.result(&id, Outcome::Failed, INTERRUPTED.to_owned());
            self.finish(r).await?;
        }
        self.ctx.metrics.link_connected.set(0);
        if connected {
            self.send(
                &self.link.topics.status,
                self.link.link_state(false, now_ms()).encode_to_vec(),
                true,
            );
            let drain = async {
                loop {
                    self.flush_outbox();
                    if self.outbox.is_empty() {
                        break;
                    }
                    if conn.next_in_session().await.is_none() {
                        return;
                    }
                }
                let _ = self.client.try_disconnect();
                while conn.next_in_session().await.is_some() {}
            };
            if tokio::time::timeout(STOP_WITHIN, drain).await.is_err() {
                warn!("City link: the offline status or the last results may not have gone out before the stop.");
            }
        }
        info!("City link stopped.");
        Ok(())
    }

    fn result(&self, id: &str, outcome: Outcome, detail: String) -> pb::CommandResult {
        pb::CommandResult {
            command_id: id.to_owned(),
            gateway_id: self.link.gateway_id.clone(),
            estate_id: self.link.estate_id.clone(),
            outcome: outcome.into(),
            detail,
            at_ms: now_ms(),
            answer: None,
        }
    }

    /// Publishes QoS 1 (through the outbox when the request queue is full or holds
    /// older requests, so that order is kept).
    fn send(&mut self, topic: &str, payload: Vec<u8>, retain: bool) {
        self.outbox.push_back(Out::Publish {
            topic: topic.to_owned(),
            payload,
            retain,
        });
        self.flush_outbox();
    }

    /// Acknowledges a received message (in order, after everything queued before it).
    fn ack(&mut self, p: Publish) {
        self.outbox.push_back(Out::Ack(p));
        self.flush_outbox();
    }

    fn flush_outbox(&mut self) {
        while let Some(out) = self.outbox.pop_front() {
            let sent = match &out {
                Out::Publish {
                    topic,
                    payload,
                    retain,
                } => self
                    .client
                    .try_publish(topic.clone(), QoS::AtLeastOnce, *retain, payload.clone())
                    .is_ok(),
                Out::Ack(p) => self.client.try_ack(p).is_ok(),
            };
            if !sent {
                self.outbox.push_front(out);
                return;
            }
        }
    }

    async fn publish_status(&mut self, command_id: &str) -> Result<(), LinkError> {
        let sources = self.status.clone();
        let id = command_id.to_owned();
        let status = blocking(move || sources.take(&id)).await?;
        let topic = self.link.topics.health.clone();
        self.send(&topic, status.encode_to_vec(), false);
        Ok(())
    }

    async fn prune(&self) -> Result<(), LinkError> {
        let seen = self.seen.clone();
        let (n, left) = blocking(move || Ok((seen.prune(now_ms())?, seen.len()))).await?;
        if n > 0 {
            debug!(
                pruned = n,
                kept = left,
                "Command ids past their time left the seen-set."
            );
        }
        Ok(())
    }

    /// Answers `FAILED` the commands recorded but never answered (the gateway stopped
    /// between the two); they go out once the link connects.
    async fn answer_interrupted(&mut self) -> Result<(), LinkError> {
        let seen = self.seen.clone();
        let unanswered = blocking(move || seen.unanswered()).await?;
        for (id, _) in unanswered {
            warn!(command_id = %clip(&id, TEXT_MAX), "A city command was recorded but not answered before the gateway stopped; answering FAILED.");
            let r = self.result(&id, Outcome::Failed, INTERRUPTED.to_owned());
            self.finish(r).await?;
        }
        Ok(())
    }

    /// Audits one received command (`GW.COMMAND`) and waits until that is durable:
    /// `Err` with the reason when it could not be stored.
    async fn record_receipt(&self, cmd: &pb::Command) -> Result<Result<(), String>, LinkError> {
        let ev = gateway_event(
            &self.link.gateway_id,
            &self.link.estate_id,
            "GW.COMMAND",
            EventState::Active,
            None,
            serde_json::json!({
                "command_id": clip(&cmd.id, TEXT_MAX),
                "issuer": clip(&cmd.issuer, TEXT_MAX),
                "kind": command::kind_name(cmd),
                "issued_at_ms": cmd.issued_at_ms,
                "expires_at_ms": cmd.expires_at_ms,
                "gateway_id": clip(&cmd.gateway_id, TEXT_MAX),
            }),
        );
        let pending = self.ctx.store.append(ev).await?;
        Ok(match pending.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err("the store writer stopped".to_owned()),
        })
    }

    /// One message on the commands topic: see the module doc for the order of things.
    async fn on_command(&mut self, p: Publish) -> Result<(), LinkError> {
        let arrived = Instant::now();
        let now = now_ms();
        if p.payload.len() > MAX_COMMAND_BYTES {
            let why = format!(
                "the payload is {} bytes; a command is at most {MAX_COMMAND_BYTES}",
                p.payload.len()
            );
            return self.on_undecodable(p, why, now).await;
        }
        let cmd = match pb::Command::decode(p.payload.as_ref()) {
            Ok(cmd) => cmd,
            Err(err) => {
                let why = format!("the payload does not decode as estate.v1.Command ({err})");
                return self.on_undecodable(p, why, now).await;
            }
        };
        info!(command_id = %clip(&cmd.id, TEXT_MAX), issuer = %clip(&cmd.issuer, TEXT_MAX), kind = command::kind_name(&cmd), "Command from the city.");
        if let Err(refusal) = command::check_id(&cmd) {
            let _ = self.record_receipt(&cmd).await?;
            self.ack(p);
            let r = self.refusal(clip(&cmd.id, command::MAX_ID_BYTES), refusal);
            return self.publish_result(r, false).await;
        }
        let id = cmd.id.clone();
        let seen_before = {
            let seen = self.seen.clone();
            let id = id.clone();
            blocking(move || seen.get(&id)).await?
        };
        if let Some(before) = seen_before {
            let _ = self.record_receipt(&cmd).await?;
            self.ack(p);
            return self
                .publish_result(self.duplicate(&id, &before), false)
                .await;
        }
        let entry = seen::Entry {
            keep_until_ms: seen::keep_until(now, cmd.expires_at_ms),
            received_ms: now,
            result: None,
        };
        {
            let seen = self.seen.clone();
            let id = id.clone();
            blocking(move || seen.insert(&id, &entry)).await?;
        }
        if let Err(why) = self.record_receipt(&cmd).await? {
            // Not durable: not run. The city may send it again with the same id.
            let seen = self.seen.clone();
            let rid = id.clone();
            blocking(move || seen.remove(&rid)).await?;
            self.ack(p);
            let r = self.result(
                &id,
                Outcome::Failed,
                format!("the gateway could not record it ({why}); not run: send it again"),
            );
            return self.publish_result(r, false).await;
        }
        self.ack(p);
        match command::check(&self.link.rules, &cmd, now) {
            Err(refusal) => {
                let r = self.refusal(&id, refusal);
                self.finish(r).await
            }
            Ok(kind) => self.start(kind, cmd, now, arrived).await,
        }
    }

    /// A command that arrives while `commands.enabled` is off (queued in the session
    /// before the subscription was dropped): answered `REFUSED`, not recorded, not run.
    async fn on_commands_off(&mut self, p: Publish) -> Result<(), LinkError> {
        let id = pb::Command::decode(p.payload.as_ref())
            .map(|c| clip(&c.id, command::MAX_ID_BYTES).to_owned())
            .unwrap_or_default();
        self.ack(p);
        let r = self.result(
            &id,
            Outcome::Refused,
            "commands are turned off on this gateway (commands.enabled = false)".to_owned(),
        );
        self.publish_result(r, false).await
    }

    /// A payload that is not a `Command` (or too big for one): dead-lettered (raw bytes, reason), counted,
    /// acknowledged once that is durable, answered with an empty command id.
    async fn on_undecodable(&mut self, p: Publish, why: String, now: i64) -> Result<(), LinkError> {
        self.ctx.metrics.dead_letter("command");
        warn!(topic = %p.topic, len = p.payload.len(), error = %why, "City command is malformed; dead-lettered.");
        let (raw, _) = crate::ingest::formats::bounded_raw(&p.payload, self.link.raw_limit);
        let letter = DeadLetter {
            received_ms: now,
            source: clip(&p.topic, TEXT_MAX).to_owned(),
            reason: format!("city command refused: {why}"),
            raw,
            original_len: p.payload.len(),
        };
        let durable = self.ctx.store.dead_letter(letter).await?;
        if !matches!(durable.await, Ok(Ok(_))) {
            warn!("The undecodable command's dead letter could not be stored.");
        }
        self.ack(p);
        let r = self.result("", Outcome::Refused, format!("{why}; it is dead-lettered"));
        self.publish_result(r, false).await
    }

    fn refusal(&self, id: &str, r: Refusal) -> pb::CommandResult {
        self.result(id, r.outcome, r.detail)
    }

    fn duplicate(&self, id: &str, before: &seen::Entry) -> pb::CommandResult {
        let was = match &before.result {
            Some(r) => format!(
                "; its result was {}: {}",
                outcome_name(r.outcome()),
                clip(&r.detail, TEXT_MAX)
            ),
            None => "; it has no result yet".to_owned(),
        };
        let mut r = self.result(
            id,
            Outcome::Duplicate,
            format!(
                "command id already received at {} ms; not run again{was}",
                before.received_ms
            ),
        );
        r.answer = before.result.as_ref().and_then(|b| b.answer.clone());
        r
    }

    /// Runs a checked command: at once (status, a resend of another epoch), or in a task
    /// that sends its final result to the loop.
    /// `arrived`: when the message reached the gateway (a roll call's answer time counts
    /// from there).
    async fn start(
        &mut self,
        kind: Kind,
        cmd: pb::Command,
        now: i64,
        arrived: Instant,
    ) -> Result<(), LinkError> {
        let id = cmd.id.clone();
        let issuer = cmd.issuer.clone();
        let duty = self.ctx.duty.clone();
        let tx = self.done_tx.clone();
        let base = self.result(&id, Outcome::Ok, String::new());
        match cmd.kind {
            Some(PbKind::Status(_)) => {
                self.publish_status(&id).await?;
                let r = self.result(
                    &id,
                    Outcome::Ok,
                    format!("status published on {}", self.link.topics.health),
                );
                return self.finish(r).await;
            }
            Some(PbKind::RollCall(rc)) => {
                let window = command::roll_call_window(
                    &rc,
                    self.link.rules.roll_call_answer_within,
                    now,
                    cmd.expires_at_ms,
                );
                let received = arrived;
                let req = RollCallRequest {
                    command_id: id.clone(),
                    issuer,
                    message: rc.message,
                    received,
                    deadline: received + window,
                };
                let accepted = self.result(
                    &id,
                    Outcome::Accepted,
                    format!(
                        "shown to the person on duty; the answer is due within {} s",
                        window.as_secs()
                    ),
                );
                self.publish_result(accepted, false).await?;
                self.tasks.spawn(async move {
                    let _ = tx.send(roll_call(&duty, req, window, base).await).await;
                });
            }
            Some(PbKind::AlarmHandling(ah)) => {
                self.tasks.spawn(async move {
                    let r = match duty.alarm_handling(&issuer, &ah).await {
                        Ok(()) => duty_result(
                            base,
                            Outcome::Ok,
                            format!("attached to alert {}", ah.alert_id),
                        ),
                        Err(e) => duty_failure(base, e),
                    };
                    let _ = tx.send(r).await;
                });
            }
            Some(PbKind::Broadcast(b)) => {
                self.tasks.spawn(async move {
                    let r = match duty.broadcast(&issuer, &b).await {
                        Ok(done) => duty_result(base, Outcome::Ok, done),
                        Err(e) => duty_failure(base, e),
                    };
                    let _ = tx.send(r).await;
                });
            }
            Some(PbKind::Resend(r)) => {
                let epoch = self.ctx.reader.epoch();
                if r.store_epoch != epoch {
                    let res = self.resend_of_another_epoch(&id, &r, epoch);
                    return self.finish(res).await;
                }
                let job = self.resend_job(epoch);
                self.tasks.spawn(async move {
                    let _ = tx.send(job.run(r, base).await).await;
                });
            }
            // check() refuses a command without a kind; kept total all the same.
            None => {
                let r = self.result(&id, Outcome::Refused, "no command kind".to_owned());
                return self.finish(r).await;
            }
        }
        self.pending.insert(id, kind);
        Ok(())
    }

    /// The answer to a resend of another epoch than this store's: nothing of it is held,
    /// all of the range is missing.
    fn resend_of_another_epoch(&self, id: &str, r: &pb::Resend, epoch: u64) -> pb::CommandResult {
        let (missing, _) = command::missing(r.first_seq, r.last_seq, &[]);
        let mut res = self.result(
            id,
            Outcome::Ok,
            format!(
                "store epoch {} is not this store's ({epoch}): nothing of it is held",
                r.store_epoch
            ),
        );
        res.answer = Some(pb::command_result::Answer::Resend(pb::ResendAnswer {
            store_epoch: epoch,
            resent: 0,
            missing,
        }));
        res
    }

    /// A resend of this store's events (`epoch`), packed and published as the forwarder
    /// does, on the link's own client.
    fn resend_job(&self, epoch: u64) -> Resend {
        Resend {
            client: self.client.clone(),
            reader: self.ctx.reader.clone(),
            headers: Lane::ALL.map(|lane| Header {
                gateway_id: self.link.gateway_id.clone(),
                estate_id: self.link.estate_id.clone(),
                boot_id: self.link.boot_id.clone(),
                store_epoch: epoch,
                lane: pb::Lane::from(lane),
            }),
            limits: self.link.limits,
            topics: self.link.topics.lanes.clone(),
        }
    }

    /// A final result: recorded with its id in the seen-set, audited, published.
    async fn finish(&mut self, r: pb::CommandResult) -> Result<(), LinkError> {
        self.pending.remove(&r.command_id);
        self.publish_result(r, true).await
    }

    /// Audits (`GW.COMMAND_RESULT`) and publishes a result; a final one is first kept
    /// with its id in the seen-set (what a duplicate of it is told).
    async fn publish_result(&mut self, r: pb::CommandResult, last: bool) -> Result<(), LinkError> {
        if last && !r.command_id.is_empty() {
            let seen = self.seen.clone();
            let kept = r.clone();
            blocking(move || {
                if let Some(mut e) = seen.get(&kept.command_id)? {
                    e.result = Some(kept.clone());
                    seen.insert(&kept.command_id, &e)?;
                }
                Ok(())
            })
            .await?;
        }
        let outcome = outcome_name(r.outcome());
        self.ctx
            .metrics
            .link_results
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
        let mut detail = serde_json::json!({
            "command_id": r.command_id,
            "outcome": outcome,
            "detail": clip(&r.detail, TEXT_MAX),
        });
        match &r.answer {
            Some(pb::command_result::Answer::RollCall(a)) => {
                detail["answered_by"] = clip(&a.answered_by, TEXT_MAX).into();
                detail["answer_ms"] = a.answer_ms.into();
            }
            Some(pb::command_result::Answer::Resend(a)) => {
                detail["resent"] = a.resent.into();
                detail["missing_ranges"] = a.missing.len().into();
            }
            None => {}
        }
        let ev = gateway_event(
            &self.link.gateway_id,
            &self.link.estate_id,
            "GW.COMMAND_RESULT",
            EventState::Active,
            None,
            detail,
        );
        self.ctx.store.append_nowait(ev).await?;
        info!(command_id = %clip(&r.command_id, TEXT_MAX), outcome, detail = %clip(&r.detail, TEXT_MAX), "Answered a city command.");
        let topic = self.link.topics.results.clone();
        self.send(&topic, r.encode_to_vec(), false);
        Ok(())
    }
}

/// Waits for the person on duty (or the deadline) and turns the outcome into the roll
/// call's final result: `OK` with who answered and when, or `NO_ANSWER`.
async fn roll_call(
    duty: &DutyDesk,
    req: RollCallRequest,
    window: Duration,
    base: pb::CommandResult,
) -> pb::CommandResult {
    match duty.roll_call(req).await {
        RollCall::Answered { by, after } => pb::CommandResult {
            outcome: Outcome::Ok.into(),
            detail: format!("answered by {by}"),
            answer: Some(pb::command_result::Answer::RollCall(pb::RollCallAnswer {
                answered_by: by,
                answer_ms: after.as_millis() as u64,
            })),
            at_ms: now_ms(),
            ..base
        },
        RollCall::NoAnswer => pb::CommandResult {
            outcome: Outcome::NoAnswer.into(),
            detail: format!("nobody answered within {} s", window.as_secs()),
            at_ms: now_ms(),
            ..base
        },
    }
}

fn duty_result(base: pb::CommandResult, outcome: Outcome, detail: String) -> pb::CommandResult {
    pb::CommandResult {
        outcome: outcome.into(),
        detail,
        at_ms: now_ms(),
        ..base
    }
}

fn duty_failure(base: pb::CommandResult, e: DutyError) -> pb::CommandResult {
    match e {
        DutyError::Unknown(d) => duty_result(base, Outcome::Refused, d),
        DutyError::Failed(d) => duty_result(base, Outcome::Failed, d),
    }
}

/// A resend's work: the range's events read from the store lane by lane (blocking
/// pool), packed as the forwarder packs them, published on the lane topics. The
/// forwarder's cursors are not touched.
struct Resend {
    client: AsyncClient,
    reader: StoreReader,
    headers: [Header; 2],
    limits: [Limits; 2],
    topics: [String; 2],
}

impl Resend {
    async fn run(self, r: pb::Resend, base: pb::CommandResult) -> pb::CommandResult {
        let mut held: Vec<u64> = Vec::new();
        let mut resent = 0u64;
        let mut batches = 0u64;
        let mut unfit = 0u64;
        for (i, lane) in Lane::ALL.into_iter().enumerate() {
            let limits = self.limits[i];
            let mut after = r.first_seq - 1;
            loop {
                let reader = self.reader.clone();
                let read = tokio::task::spawn_blocking(move || {
                    reader.read_lane(lane, after, limits.max_events, limits.max_payload)
                })
                .await;
                let events = match read {
                    Ok(Ok(events)) => events,
                    Ok(Err(err)) => return failed(base, format!("reading the store: {err}")),
                    Err(err) => return failed(base, format!("reading the store: {err}")),
                };
                let events: Vec<pb::Event> = events
                    .into_iter()
                    .take_while(|e| e.seq <= r.last_seq)
                    .collect();
                if events.is_empty() {
                    break;
                }
                match crate::forward::pack(&self.headers[i], events, limits, now_ms()) {
                    Ok(Some(packed)) => {
                        after = packed.batch.last_seq;
                        let n = packed.batch.events.len() as u64;
                        held.extend(packed.batch.events.iter().map(|e| e.seq));
                        let payload = packed.batch.encode_to_vec();
                        if let Err(err) = self
                            .client
                            .publish(self.topics[i].clone(), QoS::AtLeastOnce, false, payload)
                            .await
                        {
                            return failed(base, format!("publishing: {err}"));
                        }
                        resent += n;
                        batches += 1;
                    }
                    Ok(None) => break,
                    Err(u) => {
                        // Too big for a packet even cut: the forwarder gave up on it too
                        // (GW.UPLINK_REFUSED names it); reported missing.
                        after = u.event.seq;
                        unfit += 1;
                    }
                }
            }
        }
        held.sort_unstable();
        let (missing, more) = command::missing(r.first_seq, r.last_seq, &held);
        let mut detail = format!(
            "resent {resent} events of seqs {}-{} in {batches} batches on the lane topics",
            r.first_seq, r.last_seq
        );
        if !missing.is_empty() {
            detail.push_str(&format!(
                "; {}{} ranges are not held (forwarded and pruned, evicted, or never in this epoch)",
                missing.len(),
                if more { "+" } else { "" }
            ));
        }
        if unfit > 0 {
            detail.push_str(&format!("; {unfit} too big for a packet, not sent"));
        }
        pb::CommandResult {
            outcome: Outcome::Ok.into(),
            detail,
            at_ms: now_ms(),
            answer: Some(pb::command_result::Answer::Resend(pb::ResendAnswer {
                store_epoch: self.headers[0].store_epoch,
                resent,
                missing,
            })),
            ..base
        }
    }
}

fn failed(base: pb::CommandResult, detail: String) -> pb::CommandResult {
    duty_result(base, Outcome::Failed, detail)
}

/// The outcome as counted and audited.
fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Unspecified => "unspecified",
        Outcome::Ok => "ok",
        Outcome::Refused => "refused",
        Outcome::Expired => "expired",
        Outcome::Duplicate => "duplicate",
        Outcome::Failed => "failed",
        Outcome::NoAnswer => "no_answer",
        Outcome::Accepted => "accepted",
    }
}

/// Runs a sled call on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, LinkError> {
    Ok(tokio::task::spawn_blocking(f).await??)
}
