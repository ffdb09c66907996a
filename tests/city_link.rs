//! Issue 14, the city link: the gateway's presence (retained online status, the last
//! will when it dies), its periodic `GatewayStatus`, and the city's commands answered on
//! `city/v1/{estate_id}/results` — status now, a resend that fills a gap the consumer
//! noticed, replayed ids refused (also across a restart), expired, malformed, disabled
//! and unknown commands refused without harm, a roll call nobody answers.
//!
//! The city side here is a plain MQTT client on the uplink broker (the shared one:
//! Mosquitto on CI) that decodes `protocols/proto/estate/v1/link.proto` by topic.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use estate_protocols::pb;
use estate_sim::publish::{self, random_client_id};

use common::{reserve_port, start_gateway_with, Broker, Gateway, RawPublisher, TestEnv};

const WAIT: Duration = Duration::from_secs(30);

/// One message the city received.
#[derive(Debug, Clone)]
struct Msg {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
}

/// The city's view of one estate: every message on `city/v1/{estate_id}/#`, in order.
struct City {
    msgs: Arc<Mutex<Vec<Msg>>>,
    client: rumqttc::AsyncClient,
    task: tokio::task::JoinHandle<()>,
    estate_id: String,
}

impl City {
    /// Subscribes (QoS 1) and returns once the broker confirmed the subscription.
    async fn start(broker: &Broker, estate_id: &str) -> City {
        use rumqttc::{Event, Incoming, QoS};
        let mut o =
            rumqttc::MqttOptions::new(random_client_id("e2e-cityl"), &broker.host, broker.port);
        o.set_clean_session(true)
            .set_max_packet_size(4 << 20, 64 << 10);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(o, 64);
        let filter = format!("city/v1/{estate_id}/#");
        let msgs = Arc::new(Mutex::new(Vec::new()));
        let sink = msgs.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let sub = client.clone();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        let _ = sub.try_subscribe(filter.as_str(), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Incoming::SubAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        sink.lock().unwrap_or_else(|e| e.into_inner()).push(Msg {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                        });
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("city: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("the city subscribes within 10 s")
            .expect("city task alive");
        City {
            msgs,
            client,
            task,
            estate_id: estate_id.to_owned(),
        }
    }

    fn on<T: Message + Default>(&self, leaf: &str) -> Vec<(Msg, T)> {
        let topic = format!("city/v1/{}/{leaf}", self.estate_id);
        self.msgs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|m| m.topic == topic)
            .filter_map(|m| T::decode(m.payload.as_slice()).ok().map(|t| (m.clone(), t)))
            .collect()
    }

    fn link_states(&self) -> Vec<(Msg, pb::LinkState)> {
        self.on("status")
    }

    fn statuses(&self) -> Vec<pb::GatewayStatus> {
        self.on("health").into_iter().map(|(_, s)| s).collect()
    }

    fn results(&self, id: &str) -> Vec<pb::CommandResult> {
        self.on::<pb::CommandResult>("results")
            .into_iter()
            .map(|(_, r)| r)
            .filter(|r| r.command_id == id)
            .collect()
    }

    /// Every event the lanes carried, duplicates included.
    fn events(&self) -> Vec<pb::Event> {
        let mut out = Vec::new();
        for leaf in ["alarms", "events"] {
            for (_, b) in self.on::<pb::EventBatch>(leaf) {
                out.extend(b.events);
            }
        }
        out
    }

    /// Polls every 20 ms until `f` gives a value; panics after `timeout` naming `what`.
    async fn wait<T>(&self, what: &str, timeout: Duration, f: impl Fn(&City) -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(t) = f(self) {
                return t;
            }
            if Instant::now() >= deadline {
                let topics: Vec<String> = self
                    .msgs
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .map(|m| m.topic.clone())
                    .collect();
                let results: Vec<String> = self
                    .on::<pb::CommandResult>("results")
                    .into_iter()
                    .map(|(_, r)| format!("{} {:?} {}", r.command_id, r.outcome(), r.detail))
                    .collect();
                panic!(
                    "city: timed out after {timeout:?} waiting for {what}; {} messages, last topics {:?}; results:\n{}",
                    topics.len(),
                    &topics[topics.len().saturating_sub(10)..],
                    results.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the final result of `id` (anything but ACCEPTED).
    async fn final_result(&self, id: &str) -> pb::CommandResult {
        self.wait(&format!("the final result of command {id:?}"), WAIT, |c| {
            c.results(id)
                .into_iter()
                .find(|r| r.outcome() != pb::CommandOutcome::Accepted)
        })
        .await
    }
}

impl Drop for City {
    fn drop(&mut self) {
        let _ = self.client.try_disconnect();
        self.task.abort();
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A command for this test's gateway, valid for a minute.
fn command(env: &TestEnv, id: &str, kind: pb::command::Kind) -> pb::Command {
    let now = now_ms();
    pb::Command {
        id: id.to_owned(),
        issuer: "city-duty-officer-7".into(),
        issued_at_ms: now - 1000,
        expires_at_ms: now + 60_000,
        gateway_id: env.gateway_id.clone(),
        kind: Some(kind),
    }
}

fn first_link_state_len(city: &City) -> usize {
    city.link_states()
        .first()
        .map_or(0, |(m, _)| m.payload.len())
}

fn status_kind() -> pb::command::Kind {
    pb::command::Kind::Status(pb::StatusRequest {})
}

fn commands_topic(env: &TestEnv) -> String {
    format!("city/v1/{}/commands", env.estate_id)
}

async fn send(city_pub: &mut RawPublisher, env: &TestEnv, cmd: &pb::Command) {
    city_pub
        .publish(&commands_topic(env), cmd.encode_to_vec())
        .await;
}

/// The city sees this gateway online (retained), and its last will when it is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_is_retained_and_the_last_will_says_offline_when_the_gateway_is_killed() {
    let broker = Broker::shared();
    let env = TestEnv::new(broker.clone(), broker.clone());
    let mut gw = env.start_gateway();
    gw.wait_connected().await;
    gw.wait_metrics("the city link connected", WAIT, |m| {
        m.n("estate_link_connected", &[]) == 1
    })
    .await;

    // A city that subscribes only now still learns that the gateway is online: retained.
    let city = City::start(&broker, &env.estate_id).await;
    let (msg, online) = city
        .wait("the retained online status", WAIT, |c| {
            c.link_states().into_iter().last()
        })
        .await;
    assert!(msg.retain, "the status is delivered as retained");
    assert!(online.online, "{online:?}");
    assert_eq!(
        (online.gateway_id.as_str(), online.boot_id.as_str()),
        (env.gateway_id.as_str(), gw.boot_id.as_str())
    );
    assert!(
        !online.version.is_empty() && online.since_ms > 0,
        "{online:?}"
    );

    // A roll call still waiting for its answer when the gateway dies.
    let mut city_pub = RawPublisher::connect(&broker).await;
    let rc = command(
        &env,
        "roll-call-killed",
        pb::command::Kind::RollCall(pb::RollCall {
            answer_within_s: 600,
            message: "查岗".into(),
        }),
    );
    send(&mut city_pub, &env, &rc).await;
    city.wait("the roll call accepted", WAIT, |c| {
        c.results("roll-call-killed")
            .into_iter()
            .find(|r| r.outcome() == pb::CommandOutcome::Accepted)
    })
    .await;

    // SIGKILL: no clean disconnect, so the broker publishes the connection's last will.
    let killed = Instant::now();
    gw.kill();
    let (_, offline) = city
        .wait("the last will (offline)", WAIT, |c| {
            c.link_states().into_iter().find(|(_, s)| !s.online)
        })
        .await;
    eprintln!(
        "{} broker: SIGKILL to the last will at the city in {:?}",
        broker.kind,
        killed.elapsed()
    );
    assert_eq!(
        (offline.gateway_id.as_str(), offline.boot_id.as_str()),
        (env.gateway_id.as_str(), gw.boot_id.as_str()),
        "the will names the gateway and the boot that died"
    );
    // And it stays: a city that subscribes after the death sees the estate offline.
    let later = City::start(&broker, &env.estate_id).await;
    let (msg, state) = later
        .wait("the retained last will", WAIT, |c| {
            c.link_states().into_iter().last()
        })
        .await;
    assert!(msg.retain && !state.online, "{state:?}");

    // Back: online again, with the new boot.
    let gw2 = env.start_gateway();
    let (_, back) = later
        .wait("online again after the restart", WAIT, |c| {
            c.link_states()
                .into_iter()
                .find(|(_, s)| s.online && s.boot_id == gw2.boot_id)
        })
        .await;
    assert_eq!(back.estate_id, env.estate_id);
    // The roll call the crash interrupted is answered, not run again.
    let r = later.final_result("roll-call-killed").await;
    assert_eq!(r.outcome(), pb::CommandOutcome::Failed, "{r:?}");
    assert!(r.detail.contains("not run again"), "{r:?}");
}

/// Listens on `port` and forwards to `target`, except MQTT connections whose client id
/// ends in `-uplink` while `block` is set: the batches' connection is refused (as a
/// broker ACL would), the link's goes through.
async fn selective_proxy(port: u16, target: String, block: Arc<AtomicBool>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("proxy cannot listen on port {port}: {e}"));
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            let target = target.clone();
            let block = block.clone();
            tokio::spawn(async move {
                // CONNECT: fixed header, remaining length (varint), protocol name, level,
                // flags, keep-alive, then the client id.
                let mut first = vec![0u8; 1];
                if inbound.read_exact(&mut first).await.is_err() {
                    return;
                }
                let mut remaining = 0usize;
                for i in 0..4 {
                    let mut b = [0u8; 1];
                    if inbound.read_exact(&mut b).await.is_err() {
                        return;
                    }
                    first.push(b[0]);
                    remaining |= ((b[0] & 0x7f) as usize) << (7 * i);
                    if b[0] & 0x80 == 0 {
                        break;
                    }
                }
                let mut body = vec![0u8; remaining];
                if inbound.read_exact(&mut body).await.is_err() {
                    return;
                }
                let id = (|| {
                    let name_len = u16::from_be_bytes([body[0], body[1]]) as usize;
                    let at = 2 + name_len + 4;
                    let id_len = u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]) as usize;
                    Some(String::from_utf8_lossy(body.get(at + 2..at + 2 + id_len)?).into_owned())
                })()
                .unwrap_or_default();
                if block.load(Ordering::SeqCst) && id.ends_with("-uplink") {
                    return;
                }
                let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                first.extend_from_slice(&body);
                if outbound.write_all(&first).await.is_err() {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
}

/// The status on connect, every `uplink.status_interval`, and on request: while the
/// batches cannot go up, the city sees the backlog grow and its age, then drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_the_backlog_while_batches_cannot_go_up_then_the_drain() {
    const COUNT: u64 = 200;
    let broker = Broker::shared();
    let port = reserve_port();
    let block = Arc::new(AtomicBool::new(true));
    selective_proxy(port, broker.addr(), block.clone()).await;
    let mut env = TestEnv::new(
        broker.clone(),
        Broker {
            host: "127.0.0.1".into(),
            port,
            kind: "proxied",
        },
    );
    env.uplink_extra = "status_interval = \"1s\"".into();
    let city = City::start(&broker, &env.estate_id).await;
    let mut gw = env.start_gateway();
    gw.wait_subscribed().await;

    // A status at once on connect, with the gateway's identity.
    let first = city
        .wait("a status on connect", WAIT, |c| {
            c.statuses().into_iter().next()
        })
        .await;
    assert_eq!(
        (
            first.gateway_id.as_str(),
            first.estate_id.as_str(),
            first.boot_id.as_str(),
            first.store_epoch
        ),
        (
            env.gateway_id.as_str(),
            env.estate_id.as_str(),
            gw.boot_id.as_str(),
            gw.store_epoch
        )
    );
    assert!(
        !first.version.is_empty() && first.command_id.is_empty(),
        "{first:?}"
    );

    let report = publish::run(env.publish_options(COUNT, 0))
        .await
        .expect("publisher runs");
    assert!(!report.incomplete && report.acked == COUNT, "{report}");

    // The backlog, its age, and everything else a city board shows.
    let s = city
        .wait("a status with the 200 events in the backlog", WAIT, |c| {
            c.statuses().into_iter().find(|s| {
                s.lanes
                    .iter()
                    .any(|l| l.lane() == pb::Lane::Events && l.backlog >= COUNT)
            })
        })
        .await;
    let events = s
        .lanes
        .iter()
        .find(|l| l.lane() == pb::Lane::Events)
        .expect("events lane");
    assert_eq!(events.forwarded_seq, 0, "nothing went up: {s:?}");
    assert!(events.last_seq >= COUNT, "{s:?}");
    assert!(events.oldest_unforwarded_age_ms > 0, "{s:?}");
    assert_eq!(s.lanes.len(), 2, "{s:?}");
    assert!(s.ingest_connected, "{s:?}");
    let devices = s.devices.as_ref().expect("device counts");
    assert!(
        devices.online > 0,
        "the publisher's devices were heard: {s:?}"
    );
    assert!(s.open_alerts.is_some(), "{s:?}");
    assert!(
        s.disk_free_bytes > 0 && s.disk_used_bytes > 0 && s.store_bytes > 0,
        "{s:?}"
    );
    assert!(s.uptime_s < 3600 && s.at_ms > first.at_ms, "{s:?}");
    assert_eq!((s.modbus_buses, s.modbus_buses_failing), (0, 0));
    // The audit chain's head: empty before any audit entry, else a SHA-256 in hex
    // (tests/audit.rs checks it against `audit verify`).
    assert!(
        s.audit_head.is_empty()
            || (s.audit_head.len() == 64 && s.audit_head.bytes().all(|b| b.is_ascii_hexdigit())),
        "{s:?}"
    );
    // The batches' connection is refused, not the gateway: /healthz is not failed.
    assert!(["ok", "degraded"].contains(&s.health.as_str()), "{s:?}");
    eprintln!(
        "GatewayStatus with a backlog: {} bytes encoded; LinkState: {} bytes",
        s.encoded_len(),
        first_link_state_len(&city)
    );

    // Periodic: more statuses keep coming without being asked.
    let n = city.statuses().len();
    city.wait("two more periodic statuses", WAIT, |c| {
        (c.statuses().len() >= n + 2).then_some(())
    })
    .await;

    // Status now, by command.
    let mut city_pub = RawPublisher::connect(&broker).await;
    let asked_at = Instant::now();
    send(
        &mut city_pub,
        &env,
        &command(&env, "status-now-1", status_kind()),
    )
    .await;
    let asked = city
        .wait("the status answering the command", WAIT, |c| {
            c.statuses()
                .into_iter()
                .find(|s| s.command_id == "status-now-1")
        })
        .await;
    assert_eq!(asked.gateway_id, env.gateway_id);
    let r = city.final_result("status-now-1").await;
    eprintln!(
        "{} broker: status command published to its result at the city in {:?}",
        broker.kind,
        asked_at.elapsed()
    );
    assert_eq!(r.outcome(), pb::CommandOutcome::Ok, "{r:?}");
    assert_eq!(
        (r.gateway_id.as_str(), r.estate_id.as_str()),
        (env.gateway_id.as_str(), env.estate_id.as_str())
    );

    // The batches go up: the status shows the backlog drained.
    block.store(false, Ordering::SeqCst);
    let drained = city
        .wait(
            "a status with the backlog drained",
            Duration::from_secs(60),
            |c| {
                c.statuses().into_iter().find(|s| {
                    s.lanes.iter().all(|l| l.backlog == 0)
                        && s.lanes
                            .iter()
                            .any(|l| l.lane() == pb::Lane::Events && l.forwarded_seq >= COUNT)
                })
            },
        )
        .await;
    for l in &drained.lanes {
        assert_eq!(l.oldest_unforwarded_age_ms, 0, "{drained:?}");
    }
    drop(gw);
}

/// A gap the consumer noticed is filled by a resend from the store, on the usual lane
/// topics; what the store never held is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_fills_a_gap_the_consumer_noticed() {
    const COUNT: u64 = 300;
    let broker = Broker::shared();
    let env = TestEnv::new(broker.clone(), broker.clone());
    let city = City::start(&broker, &env.estate_id).await;
    // The default config: forwarded events stay for `store.resend_window` (10 min).
    let mut gw = start_gateway_with(&env, "");
    gw.wait_connected().await;
    let report = publish::run(env.publish_options(COUNT, 10))
        .await
        .expect("publisher runs");
    assert!(!report.incomplete && report.acked == COUNT, "{report}");
    city.wait("every event upstream", Duration::from_secs(60), |c| {
        let seqs: std::collections::HashSet<u64> = c.events().iter().map(|e| e.seq).collect();
        (seqs.len() as u64 >= COUNT).then_some(())
    })
    .await;
    let before = city.events();
    let cursor_before = gw.healthz().await.expect("healthz")["cursor"].clone();

    // The consumer "lost" seqs 50-120 (as the NATS side lost events in the issue).
    let resend = |first, last, epoch| {
        pb::command::Kind::Resend(pb::Resend {
            store_epoch: epoch,
            first_seq: first,
            last_seq: last,
        })
    };
    let mut city_pub = RawPublisher::connect(&broker).await;
    send(
        &mut city_pub,
        &env,
        &command(&env, "resend-gap", resend(50, 120, gw.store_epoch)),
    )
    .await;
    let r = city.final_result("resend-gap").await;
    assert_eq!(r.outcome(), pb::CommandOutcome::Ok, "{r:?}");
    let Some(pb::command_result::Answer::Resend(a)) = &r.answer else {
        panic!("no resend answer: {r:?}");
    };
    assert_eq!(
        (a.resent, a.missing.len(), a.store_epoch),
        (71, 0, gw.store_epoch),
        "{r:?}"
    );
    // Each of them arrived again, the same event (same id) in a normal batch.
    let after = city
        .wait("the resent events", WAIT, |c| {
            let ev = c.events();
            (ev.len() >= before.len() + 71).then_some(ev)
        })
        .await;
    for seq in 50..=120u64 {
        let copies: Vec<&pb::Event> = after.iter().filter(|e| e.seq == seq).collect();
        assert!(
            copies.len() >= 2,
            "seq {seq} arrived {} times",
            copies.len()
        );
        assert!(
            copies.iter().all(|e| e.event_id == copies[0].event_id),
            "seq {seq}"
        );
    }
    // The forwarder's cursors did not move for it.
    let cursor_after = gw.healthz().await.expect("healthz")["cursor"].clone();
    assert!(
        cursor_after["events"].as_u64() >= cursor_before["events"].as_u64(),
        "{cursor_before} {cursor_after}"
    );

    // Seqs this epoch never had, and another epoch altogether: named missing.
    send(
        &mut city_pub,
        &env,
        &command(
            &env,
            "resend-future",
            resend(1_000_000, 1_000_009, gw.store_epoch),
        ),
    )
    .await;
    let r = city.final_result("resend-future").await;
    let Some(pb::command_result::Answer::Resend(a)) = &r.answer else {
        panic!("no resend answer: {r:?}");
    };
    assert_eq!(a.resent, 0, "{r:?}");
    assert_eq!(
        a.missing
            .iter()
            .map(|m| (m.first, m.last))
            .collect::<Vec<_>>(),
        vec![(1_000_000, 1_000_009)]
    );
    send(
        &mut city_pub,
        &env,
        &command(&env, "resend-other-epoch", resend(1, 5, gw.store_epoch ^ 1)),
    )
    .await;
    let r = city.final_result("resend-other-epoch").await;
    let Some(pb::command_result::Answer::Resend(a)) = &r.answer else {
        panic!("no resend answer: {r:?}");
    };
    assert_eq!((a.resent, a.missing.len()), (0, 1), "{r:?}");
    assert!(r.detail.contains("not this store's"), "{r:?}");
}

/// Hostile, stale, repeated and switched-off commands are refused with a clear result
/// and do no harm; ids stay refused across a restart; a roll call nobody answers says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_expired_replayed_and_disabled_commands_are_refused_and_the_link_carries_on() {
    let broker = Broker::shared();
    let env = TestEnv::new(broker.clone(), broker.clone());
    let city = City::start(&broker, &env.estate_id).await;
    let mut gw = env.start_gateway();
    gw.wait_metrics("the city link connected", WAIT, |m| {
        m.n("estate_link_connected", &[]) == 1
    })
    .await;
    let mut city_pub = RawPublisher::connect(&broker).await;

    // Malformed: answered REFUSED with an empty id, dead-lettered and counted.
    city_pub
        .publish(
            &commands_topic(&env),
            b"\xff\xfe not a protobuf command \x00\x01".to_vec(),
        )
        .await;
    let r = city.final_result("").await;
    assert_eq!(r.outcome(), pb::CommandOutcome::Refused, "{r:?}");
    assert!(r.detail.contains("does not decode"), "{r:?}");
    gw.wait_metrics("the dead letter counted", WAIT, |m| {
        m.n("estate_dead_lettered_total", &[("reason", "command")]) == 1
    })
    .await;
    // Too big for a command: refused and dead-lettered the same way.
    city_pub
        .publish(&commands_topic(&env), vec![0x0a; 200 * 1024])
        .await;
    let big = city
        .wait("the oversized payload refused", WAIT, |c| {
            c.results("")
                .into_iter()
                .find(|r| r.detail.contains("at most 65536"))
        })
        .await;
    assert_eq!(big.outcome(), pb::CommandOutcome::Refused, "{big:?}");
    gw.wait_metrics("both dead letters counted", WAIT, |m| {
        m.n("estate_dead_lettered_total", &[("reason", "command")]) == 2
    })
    .await;
    // ... and the next command is answered as usual.
    send(
        &mut city_pub,
        &env,
        &command(&env, "after-garbage", status_kind()),
    )
    .await;
    assert_eq!(
        city.final_result("after-garbage").await.outcome(),
        pb::CommandOutcome::Ok
    );

    // Expired.
    let mut stale = command(&env, "stale-1", status_kind());
    stale.issued_at_ms = now_ms() - 120_000;
    stale.expires_at_ms = now_ms() - 60_000;
    send(&mut city_pub, &env, &stale).await;
    let r = city.final_result("stale-1").await;
    assert_eq!(r.outcome(), pb::CommandOutcome::Expired, "{r:?}");

    // Valid for more than a day; for another gateway; an id too long; no kind.
    let mut long = command(&env, "too-long-lived", status_kind());
    long.expires_at_ms = long.issued_at_ms + 25 * 3600 * 1000;
    let mut other = command(&env, "for-someone-else", status_kind());
    other.gateway_id = "gw-somewhere-else".into();
    let mut no_kind = command(&env, "no-kind", status_kind());
    no_kind.kind = None;
    for c in [&long, &other, &no_kind] {
        send(&mut city_pub, &env, c).await;
        let r = city.final_result(&c.id).await;
        assert_eq!(r.outcome(), pb::CommandOutcome::Refused, "{r:?}");
    }
    let huge_id = "x".repeat(65);
    send(&mut city_pub, &env, &command(&env, &huge_id, status_kind())).await;
    let r = city.final_result(&"x".repeat(64)).await;
    assert!(
        r.outcome() == pb::CommandOutcome::Refused && r.detail.contains("65 bytes"),
        "{r:?}"
    );

    // Broadcast is off until configured.
    let bc = command(
        &env,
        "broadcast-1",
        pb::command::Kind::Broadcast(pb::Broadcast {
            group: String::new(),
            on: true,
            duration_s: 10,
            message: "drill".into(),
        }),
    );
    send(&mut city_pub, &env, &bc).await;
    let r = city.final_result("broadcast-1").await;
    assert_eq!(r.outcome(), pb::CommandOutcome::Refused, "{r:?}");
    assert!(r.detail.contains("commands.broadcast.enabled"), "{r:?}");

    // A roll call nobody answers (the duty desk skeleton): ACCEPTED, then NO_ANSWER.
    let rc = command(
        &env,
        "roll-call-1",
        pb::command::Kind::RollCall(pb::RollCall {
            answer_within_s: 1,
            message: "查岗".into(),
        }),
    );
    send(&mut city_pub, &env, &rc).await;
    let r = city.final_result("roll-call-1").await;
    assert_eq!(r.outcome(), pb::CommandOutcome::NoAnswer, "{r:?}");
    let accepted = city.results("roll-call-1");
    assert_eq!(
        accepted[0].outcome(),
        pb::CommandOutcome::Accepted,
        "{accepted:?}"
    );

    // Replayed: refused, not run again, and told the original result.
    let ok = command(&env, "replay-me", status_kind());
    send(&mut city_pub, &env, &ok).await;
    assert_eq!(
        city.final_result("replay-me").await.outcome(),
        pb::CommandOutcome::Ok
    );
    let asked = |c: &City| {
        c.statuses()
            .iter()
            .filter(|s| s.command_id == "replay-me")
            .count()
    };
    send(&mut city_pub, &env, &ok).await;
    let dup = city
        .wait("the replay refused", WAIT, |c| {
            c.results("replay-me")
                .into_iter()
                .find(|r| r.outcome() == pb::CommandOutcome::Duplicate)
        })
        .await;
    assert!(dup.detail.contains("its result was ok"), "{dup:?}");
    assert_eq!(asked(&city), 1, "the replay was not run");

    // Every command and result is in the audit trail, forwarded upstream.
    city.wait("the audit events upstream", WAIT, |c| {
        let ev = c.events();
        let cmds = ev.iter().filter(|e| e.code == "GW.COMMAND").count();
        let results = ev.iter().filter(|e| e.code == "GW.COMMAND_RESULT").count();
        (cmds >= 10 && results >= 11).then_some(())
    })
    .await;

    // Restart, with resends turned off; the seen-set is durable. A command sent while the
    // gateway is away waits in its persistent session.
    // A roll call still waiting when the gateway stops cleanly is answered at the stop.
    let waiting = command(
        &env,
        "roll-call-at-stop",
        pb::command::Kind::RollCall(pb::RollCall {
            answer_within_s: 600,
            message: "查岗".into(),
        }),
    );
    send(&mut city_pub, &env, &waiting).await;
    city.wait("the roll call accepted", WAIT, |c| {
        c.results("roll-call-at-stop")
            .into_iter()
            .find(|r| r.outcome() == pb::CommandOutcome::Accepted)
    })
    .await;
    let old_boot = gw.boot_id.clone();
    gw.terminate();
    assert!(
        gw.wait_exit(WAIT).is_some_and(|s| s.success()),
        "{}",
        gw.log_tail(40)
    );
    let (_, offline) = city
        .wait("offline on a clean stop", WAIT, |c| {
            c.link_states()
                .into_iter()
                .find(|(_, s)| !s.online && s.boot_id == old_boot)
        })
        .await;
    assert!(offline.since_ms > 0);
    let r = city.final_result("roll-call-at-stop").await;
    assert_eq!(r.outcome(), pb::CommandOutcome::Failed, "{r:?}");
    send(
        &mut city_pub,
        &env,
        &command(&env, "while-away", status_kind()),
    )
    .await;
    let gw = start_gateway_with(&env, "[commands]\nresend = false\n");
    assert_eq!(
        city.final_result("while-away").await.outcome(),
        pb::CommandOutcome::Ok
    );
    send(&mut city_pub, &env, &ok).await;
    city.wait("the replay refused after the restart", WAIT, |c| {
        (c.results("replay-me")
            .iter()
            .filter(|r| r.outcome() == pb::CommandOutcome::Duplicate)
            .count()
            >= 2)
            .then_some(())
    })
    .await;
    assert_eq!(asked(&city), 1, "not run again after the restart");
    let rs = command(
        &env,
        "resend-off",
        pb::command::Kind::Resend(pb::Resend {
            store_epoch: gw.store_epoch,
            first_seq: 1,
            last_seq: 2,
        }),
    );
    send(&mut city_pub, &env, &rs).await;
    let r = city.final_result("resend-off").await;
    assert!(
        r.outcome() == pb::CommandOutcome::Refused && r.detail.contains("commands.resend = false"),
        "{r:?}"
    );

    // Commands turned off altogether: one queued in the session meanwhile is refused.
    let mut gw = gw;
    gw.terminate();
    assert!(
        gw.wait_exit(WAIT).is_some_and(|s| s.success()),
        "{}",
        gw.log_tail(40)
    );
    send(
        &mut city_pub,
        &env,
        &command(&env, "while-off", status_kind()),
    )
    .await;
    let _gw: Gateway = start_gateway_with(&env, "[commands]\nenabled = false\n");
    let r = city.final_result("while-off").await;
    assert!(
        r.outcome() == pb::CommandOutcome::Refused && r.detail.contains("commands.enabled = false"),
        "{r:?}"
    );
}
