//! Commands from the city to one gateway (`estate/v1/link.proto`): build a [`pb::Command`],
//! publish it QoS 1 on `{prefix}/{estate}/commands`, and collect the
//! [`pb::CommandResult`]s with its id from `{prefix}/{estate}/results` (and, for a STATUS
//! command, the `GatewayStatus` that answers it on `{prefix}/{estate}/health`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Result};
use estate_protocols::pb;
use prost::Message;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS, SubscribeReasonCode};
use tokio::time::{sleep_until, Instant};
use tracing::debug;

/// Unix ms now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A new command with a fresh ULID id, issued now and expiring `ttl` later.
pub fn build(
    kind: pb::command::Kind,
    gateway_id: &str,
    issuer: &str,
    ttl: Duration,
    now_ms: i64,
) -> pb::Command {
    pb::Command {
        id: ulid::Ulid::new().to_string(),
        issuer: issuer.to_owned(),
        issued_at_ms: now_ms,
        expires_at_ms: now_ms.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)),
        gateway_id: gateway_id.to_owned(),
        kind: Some(kind),
    }
}

/// `{prefix}/{estate}/commands`: where the gateway of `estate` takes its commands.
pub fn commands_topic(prefix: &str, estate: &str) -> String {
    format!("{prefix}/{estate}/commands")
}

/// A result is final unless it is ACCEPTED (a roll call waiting for its answer).
pub fn is_final(r: &pb::CommandResult) -> bool {
    !matches!(
        pb::CommandOutcome::try_from(r.outcome),
        Ok(pb::CommandOutcome::Accepted)
    )
}

/// True when the outcome is OK (not accepted, refused, failed, …).
pub fn is_ok(r: &pb::CommandResult) -> bool {
    r.outcome == pb::CommandOutcome::Ok as i32
}

/// One line for a result: outcome, detail, and the answer (who answered a roll call and
/// how fast; what a resend sent and what the store no longer held).
pub fn describe(r: &pb::CommandResult) -> String {
    let outcome = pb::CommandOutcome::try_from(r.outcome).map_or_else(
        |_| format!("outcome {}", r.outcome),
        |o| o.as_str_name().to_owned(),
    );
    let outcome = outcome.trim_start_matches("COMMAND_OUTCOME_");
    let mut line = format!("{outcome} from {} ({})", r.gateway_id, r.estate_id);
    match &r.answer {
        Some(pb::command_result::Answer::RollCall(a)) => line.push_str(&format!(
            ": answered by {:?} after {:.1} s",
            a.answered_by,
            a.answer_ms as f64 / 1000.0
        )),
        Some(pb::command_result::Answer::Resend(a)) => {
            line.push_str(&format!(": resent {} of epoch {}", a.resent, a.store_epoch));
            if !a.missing.is_empty() {
                let ranges: Vec<String> = a
                    .missing
                    .iter()
                    .map(|m| format!("{}-{}", m.first, m.last))
                    .collect();
                line.push_str(&format!("; no longer held: {}", ranges.join(", ")));
            }
        }
        None => {}
    }
    if !r.detail.is_empty() {
        line.push_str(&format!(" — {}", r.detail));
    }
    line
}

/// What came back for a command.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A `CommandResult` whose `command_id` is the command's.
    Result(pb::CommandResult),
    /// The `GatewayStatus` answering a STATUS command.
    Status(pb::GatewayStatus),
}

/// Where to send.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// The city broker's host name or address.
    pub broker_host: String,
    /// The city broker's MQTT port (1883 without TLS).
    pub broker_port: u16,
    /// The MQTT client id to connect with (clean session).
    pub client_id: String,
    /// `city/v1` by default.
    pub prefix: String,
    /// The estate whose gateway gets the command (the topic's `{estate_id}`).
    pub estate: String,
}

/// Subscribes to the estate's results (and health), publishes `cmd` once subscribed,
/// and calls `on_reply` for every reply to it until a final result (and, for STATUS, the
/// status) arrived. Returns the final result; fails on a connection error or at
/// `timeout` (naming what was still awaited).
pub async fn send(
    opts: &SendOptions,
    cmd: &pb::Command,
    timeout: Duration,
    mut on_reply: impl FnMut(&Reply),
) -> Result<pb::CommandResult> {
    let mut mqtt = MqttOptions::new(&opts.client_id, &opts.broker_host, opts.broker_port);
    mqtt.set_clean_session(true)
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(1 << 20, 1 << 20);
    // One SUBSCRIBE and one PUBLISH are all this client sends: 8 never fills.
    let (client, mut eventloop) = AsyncClient::new(mqtt, 8);
    let results = format!("{}/{}/results", opts.prefix, opts.estate);
    let health = format!("{}/{}/health", opts.prefix, opts.estate);
    let wants_status = matches!(cmd.kind, Some(pb::command::Kind::Status(_)));
    let deadline = Instant::now() + timeout;
    let mut published = false;
    let mut subacks = 0;
    let mut final_result: Option<pb::CommandResult> = None;
    let mut status_seen = false;
    loop {
        if let Some(r) = &final_result {
            if status_seen || !wants_status || !is_ok(r) {
                let _ = client.try_disconnect();
                return Ok(r.clone());
            }
        }
        let event = tokio::select! {
            ev = eventloop.poll() => ev.map_err(|e| anyhow!("city broker {}:{}: {e}", opts.broker_host, opts.broker_port))?,
            _ = sleep_until(deadline) => {
                let what = if final_result.is_some() { "the status" } else { "a final result" };
                bail!("no answer to command {} within {timeout:?} (waiting for {what})", cmd.id);
            }
        };
        match event {
            Event::Incoming(Incoming::ConnAck(_)) => {
                client.try_subscribe(results.as_str(), QoS::AtLeastOnce)?;
                if wants_status {
                    client.try_subscribe(health.as_str(), QoS::AtLeastOnce)?;
                }
            }
            Event::Incoming(Incoming::SubAck(ack)) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, SubscribeReasonCode::Failure))
                {
                    bail!("the broker refused the subscription to {results}");
                }
                subacks += 1;
                if !published && subacks == if wants_status { 2 } else { 1 } {
                    client.try_publish(
                        commands_topic(&opts.prefix, &opts.estate),
                        QoS::AtLeastOnce,
                        false,
                        cmd.encode_to_vec(),
                    )?;
                    published = true;
                }
            }
            Event::Incoming(Incoming::Publish(p)) if p.topic == results => {
                match pb::CommandResult::decode(p.payload.as_ref()) {
                    Ok(r) if r.command_id == cmd.id => {
                        on_reply(&Reply::Result(r.clone()));
                        if is_final(&r) {
                            final_result = Some(r);
                        }
                    }
                    Ok(r) => debug!(command_id = %r.command_id, "A result for another command."),
                    Err(err) => debug!(error = %err, "Undecodable result."),
                }
            }
            Event::Incoming(Incoming::Publish(p)) if p.topic == health => {
                if let Ok(s) = pb::GatewayStatus::decode(p.payload.as_ref()) {
                    if s.command_id == cmd.id {
                        on_reply(&Reply::Status(s));
                        status_seen = true;
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_has_a_fresh_id_and_its_expiry() {
        let kind = pb::command::Kind::Status(pb::StatusRequest {});
        let a = build(
            kind.clone(),
            "gw-1",
            "city-op-7",
            Duration::from_secs(60),
            1_000,
        );
        let b = build(kind, "gw-1", "city-op-7", Duration::from_secs(60), 1_000);
        assert_ne!(a.id, b.id);
        assert_eq!(a.id.len(), 26, "a ULID");
        assert_eq!((a.issued_at_ms, a.expires_at_ms), (1_000, 61_000));
        assert_eq!(a.gateway_id, "gw-1");
        let decoded = pb::Command::decode(a.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(decoded, a);
    }

    #[test]
    fn results_read_as_a_person_would() {
        let mut r = pb::CommandResult {
            command_id: "c".into(),
            gateway_id: "gw-1".into(),
            estate_id: "e1".into(),
            outcome: pb::CommandOutcome::Accepted as i32,
            ..Default::default()
        };
        assert!(!is_final(&r));
        r.outcome = pb::CommandOutcome::Ok as i32;
        r.answer = Some(pb::command_result::Answer::RollCall(pb::RollCallAnswer {
            answered_by: "Li Wei".into(),
            answer_ms: 12_300,
        }));
        assert!(is_final(&r) && is_ok(&r));
        assert_eq!(
            describe(&r),
            "OK from gw-1 (e1): answered by \"Li Wei\" after 12.3 s"
        );
        r.outcome = pb::CommandOutcome::NoAnswer as i32;
        r.answer = None;
        r.detail = "nobody answered within 120 s".into();
        assert!(is_final(&r) && !is_ok(&r));
        assert_eq!(
            describe(&r),
            "NO_ANSWER from gw-1 (e1) — nobody answered within 120 s"
        );
    }
}
