//! `estate-sim fleet`: the sensors of many simulated estates from one process, over one
//! MQTT connection to one ingest broker. Each estate is a [`Plan`] of the demo devices
//! (routine telemetry with `alarms_per_mille` `SMOKE.ALARM`s spread evenly), published at
//! `rate` messages per second per estate; estate `i` is `base + i`, zero-padded to the
//! width of `base` (so a 20-digit community code stays one).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, Outgoing, QoS};
use tokio::time::{sleep, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::estate::demo_devices;
use crate::native::{event_topic, now_ms};
use crate::publish::random_client_id;
use crate::scenario::{Plan, Scenario};

/// How `estate-sim fleet` publishes: many estates' sensors from one MQTT connection.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// The ingest broker's host name or address.
    pub broker_host: String,
    /// The ingest broker's MQTT port.
    pub broker_port: u16,
    /// The MQTT client id (random by default).
    pub client_id: String,
    /// First topic level of the native protocol.
    pub prefix: String,
    /// How many estates to simulate, with ids `base`, `base + 1`, ….
    pub estates: u32,
    /// The first estate's id: digits (see the module docs).
    pub base: String,
    /// Messages per second per estate.
    pub rate: f64,
    /// Of every 1,000 messages, this many are SMOKE.ALARM.
    pub alarms_per_mille: u64,
    /// Messages per estate (payload seq 1..=count); `None`: until stopped.
    pub count: Option<u64>,
    /// QoS 1 publishes awaiting PUBACK at once.
    pub max_inflight: u16,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            broker_host: "127.0.0.1".into(),
            broker_port: 1883,
            client_id: random_client_id("estate-sim-fleet"),
            prefix: "estate".into(),
            estates: 10,
            base: "31011500000000000001".into(),
            rate: 50.0,
            alarms_per_mille: 2,
            count: None,
            max_inflight: 200,
        }
    }
}

/// Estate `index`'s id: `base + index`, as wide as `base`.
pub fn estate_id(base: &str, index: u32) -> Result<String> {
    if base.is_empty() || !base.bytes().all(|b| b.is_ascii_digit()) || base.len() > 38 {
        bail!("estate base {base:?} must be 1-38 digits");
    }
    let n: u128 = base.parse().context("estate base")?;
    let id = (n + u128::from(index)).to_string();
    Ok(format!("{id:0>width$}", width = base.len()))
}

/// What a fleet run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct FleetReport {
    /// Messages published (QoS 1).
    pub published: u64,
    /// Of those, acknowledged by the broker (PUBACK).
    pub acked: u64,
    /// Times the connection was lost and made again.
    pub reconnects: u64,
}

/// Publishes until `stop` (or every estate's `count`); returns the counts.
pub async fn run(opts: FleetOptions, stop: CancellationToken) -> Result<FleetReport> {
    anyhow::ensure!(
        opts.rate.is_finite() && opts.rate > 0.0,
        "rate must be positive"
    );
    anyhow::ensure!(opts.estates > 0, "--estates must be at least 1");
    // A plan long enough for days at the rate; alarms spread evenly over it.
    let count = opts.count.unwrap_or(1 << 40);
    let alarms = count / 1000 * opts.alarms_per_mille.min(1000);
    let plan = Plan::new(&Scenario::Telemetry, demo_devices(), count, alarms)?;
    let ids: Vec<String> = (0..opts.estates)
        .map(|i| estate_id(&opts.base, i))
        .collect::<Result<_>>()?;
    // topics[estate][device]
    let topics: Vec<Vec<String>> = ids
        .iter()
        .map(|e| {
            plan.devices()
                .iter()
                .map(|d| event_topic(&opts.prefix, e, d.kind, &d.id))
                .collect()
        })
        .collect();
    let mut mqtt = MqttOptions::new(&opts.client_id, &opts.broker_host, opts.broker_port);
    mqtt.set_clean_session(true)
        .set_keep_alive(Duration::from_secs(30))
        .set_inflight(opts.max_inflight.max(1));
    // `publish().await` waits while the channel is full: back-pressure from the broker
    // slows the fleet down rather than dropping messages.
    let (client, eventloop) = AsyncClient::new(mqtt, usize::from(opts.max_inflight.max(1)));
    let driver = tokio::spawn(drive(eventloop, stop.clone()));
    info!(
        estates = opts.estates,
        rate = opts.rate,
        first = %ids[0],
        "Fleet publishing."
    );
    publish_plan(&client, &plan, &topics, opts.rate, &stop).await;
    stop.cancel();
    let report = driver.await.context("fleet driver")?;
    Ok(report)
}

/// Polls the connection (rumqttc reconnects on the next poll) and counts publishes,
/// PUBACKs and reconnects until `stop`; then lets the last PUBACKs in for up to 2 s.
async fn drive(mut eventloop: EventLoop, stop: CancellationToken) -> FleetReport {
    let mut r = FleetReport::default();
    let mut connected = false;
    loop {
        let ev = tokio::select! {
            ev = eventloop.poll() => ev,
            _ = stop.cancelled() => {
                // Let the last PUBACKs in (briefly), then leave.
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while let Ok(ev) = eventloop.poll().await {
                        if let Event::Incoming(Incoming::PubAck(_)) = ev { r.acked += 1; }
                    }
                }).await;
                return r;
            }
        };
        match ev {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                if connected {
                    r.reconnects += 1;
                }
                connected = true;
            }
            Ok(Event::Incoming(Incoming::PubAck(_))) => r.acked += 1,
            Ok(Event::Outgoing(Outgoing::Publish(_))) => r.published += 1,
            Ok(_) => {}
            Err(err) => {
                warn!(error = %err, "Fleet lost its broker; reconnecting.");
                tokio::select! {
                    _ = sleep(Duration::from_millis(500)) => {}
                    _ = stop.cancelled() => return r,
                }
            }
        }
    }
}

/// Publishes messages 1..=`plan.count()` of the plan to every estate
/// (`topics[estate][device]`), estates staggered within each message's slot: message n at
/// start + (n − 1) / `rate`; until the plan ends, `stop`, or the client fails.
async fn publish_plan(
    client: &AsyncClient,
    plan: &Plan,
    topics: &[Vec<String>],
    rate: f64,
    stop: &CancellationToken,
) {
    let start = Instant::now();
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut n = 1u64;
    'outer: while n <= plan.count() {
        let due = start + period.mul_f64((n - 1) as f64);
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = stop.cancelled() => break,
        }
        let planned = plan.message(n);
        let mut event = planned.event;
        event.ts_ms = Some(now_ms());
        let payload = event.to_json();
        for t in topics {
            tokio::select! {
                sent = client.publish(t[planned.index].as_str(), QoS::AtLeastOnce, false, payload.clone()) => {
                    if sent.is_err() { break 'outer; }
                }
                _ = stop.cancelled() => break 'outer,
            }
        }
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estate_ids_count_up_from_the_base_at_its_width() {
        assert_eq!(
            estate_id("31011500000000000001", 0).ok().as_deref(),
            Some("31011500000000000001")
        );
        assert_eq!(
            estate_id("31011500000000000001", 3314).ok().as_deref(),
            Some("31011500000000003315")
        );
        assert_eq!(estate_id("0001", 9).ok().as_deref(), Some("0010"));
        assert!(estate_id("e1", 0).is_err());
        assert!(estate_id("", 0).is_err());
    }
}
