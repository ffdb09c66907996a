//! MQTT publishers and taps: raw publishes to the ingest broker, the city uplink recorded.

#[allow(unused_imports)]
use super::*;

/// A QoS 1 publisher for arbitrary payloads: [`RawPublisher::publish`] returns once the
/// broker acknowledged the message.
#[derive(Debug)]
pub struct RawPublisher {
    client: rumqttc::AsyncClient,
    acks: tokio::sync::mpsc::UnboundedReceiver<()>,
    task: tokio::task::JoinHandle<()>,
}

impl RawPublisher {
    pub async fn connect(broker: &Broker) -> RawPublisher {
        use rumqttc::{Event, Incoming};
        let mut o =
            rumqttc::MqttOptions::new(random_client_id("e2e-raw"), &broker.host, broker.port);
        o.set_clean_session(true)
            .set_inflight(1)
            .set_max_packet_size(2 << 20, 2 << 20);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(o, 16);
        let (tx, acks) = tokio::sync::mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Incoming::PubAck(_))) => {
                        let _ = tx.send(());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("raw publisher: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("raw publisher connects within 10 s")
            .expect("raw publisher task alive");
        RawPublisher { client, acks, task }
    }

    /// Publishes QoS 1 and waits for its PUBACK (one at a time: inflight is 1).
    pub async fn publish(&mut self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload.into())
            .await
            .expect("queue publish");
        tokio::time::timeout(Duration::from_secs(10), self.acks.recv())
            .await
            .unwrap_or_else(|_| panic!("no PUBACK within 10 s for a publish to {topic}"))
            .expect("raw publisher task alive");
    }
}

impl Drop for RawPublisher {
    fn drop(&mut self) {
        let _ = self.client.try_disconnect();
        self.task.abort();
    }
}

/// Every forwarded event as decoded from the wire, complete (value, device, state).
#[derive(Debug)]
pub struct EventTap {
    events: std::sync::Arc<std::sync::Mutex<Vec<(String, estate_protocols::pb::Event)>>>,
    /// The `store_epoch` of each event's batch, index for index with `events`.
    epochs: std::sync::Arc<std::sync::Mutex<Vec<u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl EventTap {
    /// Subscribes to `city/v1/{estate_id}/#`; returns once subscribed.
    pub async fn start(broker: &Broker, estate_id: &str) -> EventTap {
        use prost::Message as _;
        use rumqttc::{Event, Incoming, QoS};
        let mut o =
            rumqttc::MqttOptions::new(random_client_id("e2e-etap"), &broker.host, broker.port);
        o.set_clean_session(true)
            .set_max_packet_size(4 << 20, 64 << 10);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(o, 16);
        let filter = format!("city/v1/{estate_id}/#");
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let epochs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let sink = events.clone();
        let epoch_sink = epochs.clone();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        let _ = client.try_subscribe(filter.as_str(), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Incoming::SubAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    // Batches only: the city link's status, health and results share
                    // the prefix, and some of them would decode as an EventBatch.
                    Ok(Event::Incoming(Incoming::Publish(p)))
                        if p.topic.ends_with("/alarms") || p.topic.ends_with("/events") =>
                    {
                        let Ok(batch) =
                            estate_protocols::pb::EventBatch::decode(p.payload.as_ref())
                        else {
                            continue;
                        };
                        let mut sink = sink.lock().unwrap_or_else(|e| e.into_inner());
                        let mut epoch_sink = epoch_sink.lock().unwrap_or_else(|e| e.into_inner());
                        for e in batch.events {
                            epoch_sink.push(batch.store_epoch);
                            sink.push((p.topic.clone(), e));
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("event tap: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("event tap subscribes within 10 s")
            .expect("event tap task alive");
        EventTap {
            events,
            epochs,
            task,
        }
    }

    /// (topic, event) in arrival order, duplicates included.
    pub fn events(&self) -> Vec<(String, estate_protocols::pb::Event)> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `(store_epoch, event)` in arrival order, duplicates included.
    pub fn events_with_epoch(&self) -> Vec<(u64, estate_protocols::pb::Event)> {
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let epochs = self.epochs.lock().unwrap_or_else(|e| e.into_inner());
        epochs
            .iter()
            .copied()
            .zip(events.iter().map(|(_, e)| e.clone()))
            .collect()
    }

    /// Events of `device` with `code` so far (deduplicated on seq).
    pub fn of(&self, device: &str, code: &str) -> Vec<(String, estate_protocols::pb::Event)> {
        let mut seen = std::collections::HashSet::new();
        self.events()
            .into_iter()
            .filter(|(_, e)| e.device_id == device && e.code == code && seen.insert(e.seq))
            .collect()
    }

    /// Polls every 20 ms until `pred` holds; panics after `timeout` with `what` and the
    /// events seen (code, device, state, value).
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[(String, estate_protocols::pb::Event)]) -> bool,
    ) -> Vec<(String, estate_protocols::pb::Event)> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.events();
            if pred(&events) {
                return events;
            }
            if Instant::now() >= deadline {
                let shown: Vec<String> = events
                    .iter()
                    .rev()
                    .take(40)
                    .rev()
                    .map(|(t, e)| {
                        format!(
                            "  {t} seq {} {} {} {:?} {:?}",
                            e.seq,
                            e.device_id,
                            e.code,
                            e.state(),
                            e.value.as_ref().map(|v| (v.value, v.unit.clone()))
                        )
                    })
                    .collect();
                panic!(
                    "event tap: timed out after {timeout:?} waiting for {what}; last events:\n{}",
                    shown.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for EventTap {
    fn drop(&mut self) {
        self.task.abort();
    }
}
