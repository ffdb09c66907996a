//! The alert topic: a small QoS 1 publisher on the ingest broker, in its own task so
//! that a slow or absent broker never holds up the engine.
//!
//! - `{prefix}/{estate}/alerts` — the open alerts, one retained document, re-sent after
//!   every reconnect so that a late subscriber sees the truth;
//! - `{prefix}/{estate}/alerts/changes` — one message per transition, not retained.
//!
//! It reconnects as ingest does, through [`Connection`], with the ingest broker's backoff
//! (`ingest.mqtt.reconnect_min`, doubled per failed round of its nodes up to
//! `reconnect_max`).

use std::time::Duration;

use rumqttc::{Event, Incoming, QoS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use estate_config::Config;

use crate::mqtt::{Connection, Endpoints, Renew};

/// The client's request queue (see [`Connection::new`]); only the publisher task
/// fills it, with `try_publish`, and drops what does not fit.
const REQUESTS: usize = 64;
/// How long the queued publishes and the disconnect may take at the end.
const FINAL_FLUSH: Duration = Duration::from_millis(500);

/// One message for the alert topic.
struct MqttMsg {
    topic: String,
    retain: bool,
    payload: Vec<u8>,
}

/// The handle on the publisher task.
pub(crate) struct Publisher {
    /// To the publisher task. Bounded (1024): when full, a change message is dropped
    /// (logged); the retained active set is republished on the next change, so a late
    /// subscriber still sees the truth.
    tx: mpsc::Sender<MqttMsg>,
    /// `{prefix}/{estate}/alerts`.
    topic: String,
    /// The publisher task; it ends after the stop token, having sent what was queued.
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    /// Starts the publisher task on the current runtime; it connects to `endpoints` and
    /// runs until `stop`.
    pub(crate) fn start(endpoints: Endpoints, topic: String, stop: CancellationToken) -> Self {
        let (tx, rx) = mpsc::channel::<MqttMsg>(1024);
        let task = tokio::spawn(run(endpoints, rx, stop));
        Publisher { tx, topic, task }
    }

    /// Publishes one transition on `…/alerts/changes`.
    pub(crate) fn change(&self, payload: Vec<u8>) {
        self.send(MqttMsg {
            topic: format!("{}/changes", self.topic),
            retain: false,
            payload,
        });
    }

    /// Publishes the open alerts, retained, on `…/alerts`.
    pub(crate) fn active_set(&self, payload: Vec<u8>) {
        self.send(MqttMsg {
            topic: self.topic.clone(),
            retain: true,
            payload,
        });
    }

    /// Waits for the task to end (after its stop token), having sent what was queued.
    pub(crate) async fn finish(self) {
        let _ = self.task.await;
    }

    fn send(&self, msg: MqttMsg) {
        if self.tx.try_send(msg).is_err() {
            warn!(topic = %self.topic, "Alert topic publisher is behind; a change message was dropped (the retained active set stays current).");
        }
    }
}

/// The publisher task: publishes what comes in, keeps the latest retained document for
/// each new connection, and at `stop` sends what is queued and disconnects.
async fn run(endpoints: Endpoints, mut rx: mpsc::Receiver<MqttMsg>, stop: CancellationToken) {
    let mut conn = Connection::new(endpoints, REQUESTS, Renew::KeepOnOneNode);
    // The latest retained document, re-sent after every reconnect.
    let mut retained: Option<MqttMsg> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                // Never await the request queue here: only this loop drains it.
                if conn
                    .client()
                    .try_publish(msg.topic.clone(), QoS::AtLeastOnce, msg.retain, msg.payload.clone())
                    .is_err()
                {
                    debug!(topic = %msg.topic, "Alert topic publisher queue full; message dropped.");
                }
                if msg.retain {
                    retained = Some(msg);
                }
            }
            ev = conn.next() => match ev {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    if let Some(m) = &retained {
                        let _ = conn.client().try_publish(m.topic.clone(), QoS::AtLeastOnce, true, m.payload.clone());
                    }
                }
                Ok(_) => {}
                Err(lost) => {
                    debug!(broker = %lost.broker, error = %lost.error, next = %lost.next, retry_in = ?lost.retry_in, "Alert topic publisher disconnected; reconnecting.");
                }
            }
        }
    }
    while let Ok(msg) = rx.try_recv() {
        let _ = conn
            .client()
            .try_publish(msg.topic, QoS::AtLeastOnce, msg.retain, msg.payload);
    }
    let _ = conn.client().try_disconnect();
    // Let the disconnect (and queued publishes) go out.
    let _ = tokio::time::timeout(FINAL_FLUSH, async {
        while conn.next_in_session().await.is_some() {}
    })
    .await;
}

/// The ingest broker, as the alert topic's publisher connects to it (a clean session,
/// its own client id), or `None` (logged) when its TLS settings do not load.
pub(crate) fn broker(cfg: &Config) -> Option<Endpoints> {
    let client_id = format!("{}-alerts", cfg.ingest_client_id());
    match Endpoints::new(&cfg.ingest.mqtt, &client_id) {
        Ok(mut b) => {
            b.configure(|o| {
                o.set_clean_session(true);
                o.set_max_packet_size(4 << 20, 64 << 10);
            });
            Some(b)
        }
        Err(err) => {
            warn!(error = %crate::error_chain(&err), "Alert topic disabled: the ingest broker's TLS settings do not load.");
            None
        }
    }
}
