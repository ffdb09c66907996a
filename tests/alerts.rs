//! Local alerts end to end (issue 4): the real gateway binary, a real broker, the
//! simulator, and the Modbus simulator for linkage.
//!
//! - a fire scenario (hundreds of alarms) produces exactly one `FIRE.CONFIRMED` alert,
//!   visible on the API, on the live stream, on the retained alert topic, and upstream as
//!   an `ALERT.UPDATE` the city platform decodes;
//! - acknowledging and closing through the API are recorded (audit) and survive a
//!   restart; invalid transitions are refused;
//! - without the token write actions are refused (401), and without a configured token
//!   the API is read-only (403); nothing changes either way;
//! - a leak closes the simulated Modbus valve and the action is recorded on the alert;
//! - alarm management (issue 16): a door forced and closed 50 times is one chattering
//!   alert with a bounded audit and a bounded number of updates upstream; pruning keeps
//!   young audit trails over `history_max` and `/healthz` says so; a shelved alert is
//!   unshelved automatically and its held-back state goes upstream once; more new alerts
//!   than `[alerts.flood]` allows is a flood on `/api/status` and `/healthz`.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use estate_sim::modbus::{BusSpec, DeviceType, Framing, SimFleet};
use estate_sim::publish;
use estate_sim::scenario::Scenario;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use common::{get_json, post_json, Broker, EventTap, Gateway, TestEnv};

const TOKEN: &str = "test-token-4f9a";

const FIRE_RULES: &str = r#"
[alerts.correlation.confirmed-fire]
codes = ["SMOKE.ALARM", "FIRE.ALARM", "FIRE.MANUAL_CALL"]
min_devices = 2
within = "2m"
same = "building"
raise = "FIRE.CONFIRMED"
"#;

fn env() -> TestEnv {
    let broker = Broker::shared();
    let mut env = TestEnv::new(broker.clone(), broker);
    env.down_alert_after = "1h".into();
    env.alerts_forward = true;
    env
}

fn with_token(extra: &str) -> String {
    // `[api]` is not in the generated config; appended after the devices it is its own
    // table.
    format!("\n[api]\ntoken = {TOKEN:?}\n{extra}")
}

fn alerts_of(v: &Value) -> Vec<Value> {
    v["alerts"].as_array().cloned().unwrap_or_default()
}

/// Publishes one native event `body` from `kind/device` and waits until the single open
/// alert of `code` is on the API; returns that alert.
async fn raise(
    env: &TestEnv,
    gw: &mut Gateway,
    kind: &str,
    device: &str,
    body: &str,
    code: &str,
) -> serde_json::Value {
    let mut publisher = env.raw_client().await;
    let topic = format!("estate/{}/{kind}/{device}/event", env.estate_id);
    publisher.publish(&topic, body).await;
    let v = wait_json(
        gw,
        "/api/alerts",
        &format!("the {code} alert"),
        Duration::from_secs(30),
        |v| codes(&alerts_of(v), code) == 1,
    )
    .await;
    alerts_of(&v)
        .into_iter()
        .find(|a| a["code"] == code)
        .expect("the alert")
}

/// Polls `GET path` every 50 ms until `pred` holds on the JSON; panics after `timeout`.
async fn wait_json(
    gw: &mut Gateway,
    path: &str,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let v = get_json(gw.api, path).await;
        if pred(&v) {
            return v;
        }
        if let Some(status) = gw.try_exit_status() {
            panic!(
                "gateway exited ({status}) waiting for {what}\n{}",
                gw.log_tail(60)
            );
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}; last {path}: {v:#}\n{}",
                gw.log_tail(60)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A subscriber to `GET /api/stream` that collects `(event, data)` pairs.
struct SseTap {
    events: std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SseTap {
    async fn start(addr: SocketAddr) -> SseTap {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(
            format!(
                "GET /api/stream HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("request");
        let mut lines = BufReader::new(s).lines();
        // The response head, then the first (status) event proves the stream is live.
        let mut head = String::new();
        while let Ok(Some(l)) = lines.next_line().await {
            if l.is_empty() {
                break;
            }
            head.push_str(&l);
            head.push('\n');
        }
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("text/event-stream"),
            "{head}"
        );
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = events.clone();
        let task = tokio::spawn(async move {
            let mut event = String::new();
            while let Ok(Some(l)) = lines.next_line().await {
                // Chunked transfer: size lines are hex numbers; skip what is not a field.
                if let Some(e) = l.strip_prefix("event: ") {
                    event = e.to_owned();
                } else if let Some(d) = l.strip_prefix("data: ") {
                    if let Ok(v) = serde_json::from_str::<Value>(d) {
                        sink.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((event.clone(), v));
                    }
                }
            }
        });
        SseTap { events, task }
    }

    fn of(&self, kind: &str) -> Vec<Value> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

impl Drop for SseTap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The retained document on `estate/{estate}/alerts`, read by a subscriber that connects
/// now (as a late console would), waiting until `pred` holds.
async fn retained_alerts(
    broker: &Broker,
    estate_id: &str,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    use rumqttc::{Event, Incoming, QoS};
    let deadline = Instant::now() + timeout;
    let topic = format!("estate/{estate_id}/alerts");
    let mut last = Value::Null;
    while Instant::now() < deadline {
        let mut o = rumqttc::MqttOptions::new(
            estate_sim::publish::random_client_id("e2e-alerts"),
            &broker.host,
            broker.port,
        );
        // The document lists every open alert (docs/alerts-and-api.md, "MQTT").
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut el) = rumqttc::AsyncClient::new(o, 16);
        client
            .subscribe(topic.as_str(), QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        let got = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Incoming::Publish(p))) if p.topic == topic => {
                        return Some((p.retain, p.payload));
                    }
                    Ok(_) => {}
                    Err(_) => return None,
                }
            }
        })
        .await
        .ok()
        .flatten();
        let _ = client.disconnect().await;
        if let Some((retain, payload)) = got {
            assert!(
                retain,
                "a new subscriber gets the active set as a retained message"
            );
            last = serde_json::from_slice(&payload).expect("alert topic carries JSON");
            if pred(&last) {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("alert topic {topic}: timed out; last document: {last:#}");
}

fn codes(alerts: &[Value], code: &str) -> usize {
    alerts.iter().filter(|a| a["code"] == code).count()
}

// ---------------------------------------------------------------------------------------
// A fire: one confirmed-fire alert, not hundreds
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fire_scenario_raises_one_confirmed_fire_alert_everywhere() {
    let env = env();
    let tap = EventTap::start(&env.uplink, &env.estate_id).await;
    let city = env.city().await;
    let mut gw = common::start_gateway_with(&env, &with_token(FIRE_RULES));
    gw.wait_subscribed().await;
    let sse = SseTap::start(gw.api).await;

    // Building 1 burns: its smoke detector, the fire panel and the call point alarm,
    // and the smoke detector repeats its alarm 200 times; everything clears at the end.
    const COUNT: u64 = 600;
    const ALARMS: u64 = 200;
    let mut opts = env.publish_options(COUNT, ALARMS);
    opts.scenario = Scenario::Fire {
        building: "1".into(),
    };
    let report = publish::run(opts).await.expect("publisher runs");
    assert_eq!(report.acked, COUNT, "{report}");

    // Wait until the gateway has seen the whole run: every smoke alarm folded into one
    // alert, and the panel and call point cleared (the scenario's closing script).
    let all = wait_json(
        &mut gw,
        "/api/alerts?status=all",
        "every smoke alarm folded, the panel and call point cleared",
        Duration::from_secs(60),
        |v| {
            let all = alerts_of(v);
            let has = |code: &str, p: &dyn Fn(&Value) -> bool| {
                all.iter().any(|a| a["code"] == code && p(a))
            };
            has("SMOKE.ALARM", &|a| a["count"].as_u64() == Some(ALARMS + 1))
                && has("FIRE.ALARM", &|a| a["cleared"] == true)
                && has("FIRE.MANUAL_CALL", &|a| a["cleared"] == true)
        },
    )
    .await;
    let all = alerts_of(&all);
    assert_eq!(
        codes(&all, "FIRE.CONFIRMED"),
        1,
        "exactly one confirmed fire: {all:#?}"
    );
    assert_eq!(codes(&all, "SMOKE.ALARM"), 1, "repeats fold into one alert");
    let fire = all
        .iter()
        .find(|a| a["code"] == "FIRE.CONFIRMED")
        .expect("confirmed fire")
        .clone();
    assert_eq!(fire["severity"], 1);
    assert_eq!(fire["status"], "active");
    assert_eq!(fire["location"]["building"], "1");
    assert_eq!(fire["title"], "Confirmed fire (several detectors)");
    // Life-safety alerts stay open after clearing, for someone to close.
    let smoke = all
        .iter()
        .find(|a| a["code"] == "SMOKE.ALARM")
        .expect("smoke");
    assert_eq!(smoke["status"], "active");
    // Ordered by severity, then first seen.
    let sev: Vec<u64> = all.iter().filter_map(|a| a["severity"].as_u64()).collect();
    assert!(sev.windows(2).all(|w| w[0] <= w[1]), "{sev:?}");

    // The open alerts (default filter) include it; so does one alert by id, with audit.
    let open = alerts_of(&get_json(gw.api, "/api/alerts").await);
    assert_eq!(codes(&open, "FIRE.CONFIRMED"), 1);
    let one = get_json(
        gw.api,
        &format!("/api/alerts/{}", fire["id"].as_str().unwrap_or("")),
    )
    .await;
    assert_eq!(one["audit"][0]["action"], "opened");

    // Live: the stream carried the confirmed fire.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sse
        .of("alert")
        .iter()
        .any(|a| a["code"] == "FIRE.CONFIRMED")
    {
        assert!(
            Instant::now() < deadline,
            "no FIRE.CONFIRMED on /api/stream"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!sse.of("status").is_empty(), "status events every second");

    // A console connecting late to the broker sees it on the retained alert topic.
    let doc = retained_alerts(&env.ingest, &env.estate_id, Duration::from_secs(20), |d| {
        codes(&alerts_of(d), "FIRE.CONFIRMED") == 1
    })
    .await;
    assert_eq!(codes(&alerts_of(&doc), "FIRE.CONFIRMED"), 1);

    // Upstream: the city platform decodes the alert update from the .proto.
    let ups = tap
        .wait_for(
            "FIRE.CONFIRMED opened upstream",
            Duration::from_secs(30),
            |ev| {
                ev.iter().any(|(t, e)| {
                    t.ends_with("/alarms")
                        && e.code == "ALERT.UPDATE"
                        && e.alert.as_ref().is_some_and(|a| {
                            a.code == "FIRE.CONFIRMED"
                                && a.change() == estate_protocols::pb::AlertChange::Opened
                        })
                })
            },
        )
        .await;
    let opened: std::collections::BTreeSet<String> = ups
        .iter()
        .filter_map(|(_, e)| e.alert.as_ref())
        .filter(|a| {
            a.code == "FIRE.CONFIRMED" && a.change() == estate_protocols::pb::AlertChange::Opened
        })
        .map(|a| a.alert_id.clone())
        .collect();
    assert_eq!(opened.len(), 1, "one confirmed fire upstream: {opened:?}");
    assert_eq!(opened.first().map(String::as_str), fire["id"].as_str());
    // The raised FIRE.CONFIRMED event itself is forwarded too.
    assert!(ups.iter().any(|(_, e)| e.code == "FIRE.CONFIRMED"));
    // With alert updates interleaved, the city's stream is still whole and every event
    // on the lane its severity says; every sensor message arrived.
    let r = city
        .wait_for(
            |r| r.received.iter().filter(|e| e.device_seq.is_some()).count() as u64 >= COUNT,
            Duration::from_secs(60),
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(r.gaps.is_empty(), "{r}");
    assert_eq!(r.wrong_lane, 0, "{r}");
    assert_eq!(r.decode_errors + r.inconsistent_batches, 0, "{r}");
    city.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Acknowledge and close: recorded, refused when invalid, durable across a restart
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_and_close_are_audited_and_survive_a_restart() {
    let env = env();
    let config = common::write_config_with(&env, &with_token(""));
    let mut gw = Gateway::start(&config, &env.data_dir(), &env.log_path()).expect("starts");
    gw.wait_subscribed().await;
    let sos = raise(
        &env,
        &mut gw,
        "emergency_button",
        "sos-0307",
        r#"{"code":"SOS.PRESSED"}"#,
        "SOS.PRESSED",
    )
    .await;
    let id = sos["id"].as_str().expect("id").to_owned();
    assert_eq!(sos["device_id"], "sos-0307");
    assert_eq!(sos["location"]["room"], "307");
    let base = format!("/api/alerts/{id}");

    // Refused: no token, a wrong token, a bad body, an unknown id, a bad disposition.
    let ack = r#"{"by":"wang","note":"on my way"}"#;
    assert_eq!(
        post_json(gw.api, &format!("{base}/ack"), None, ack).await.0,
        401
    );
    assert_eq!(
        post_json(gw.api, &format!("{base}/ack"), Some("guess"), ack)
            .await
            .0,
        401
    );
    assert_eq!(
        post_json(gw.api, &format!("{base}/ack"), Some(TOKEN), "{nope")
            .await
            .0,
        400
    );
    assert_eq!(
        post_json(
            gw.api,
            &format!("{base}/ack"),
            Some(TOKEN),
            r#"{"note":"no name"}"#
        )
        .await
        .0,
        400
    );
    assert_eq!(
        post_json(
            gw.api,
            "/api/alerts/01NOSUCHALERT0000000000000/ack",
            Some(TOKEN),
            ack
        )
        .await
        .0,
        404
    );
    let bad = r#"{"by":"wang","disposition":"dunno","note":""}"#;
    assert_eq!(
        post_json(gw.api, &format!("{base}/close"), Some(TOKEN), bad)
            .await
            .0,
        400
    );
    assert_eq!(
        get_json(gw.api, &base).await["status"],
        "active",
        "nothing changed"
    );

    // Acknowledge, then close; a second close is a conflict.
    let (status, acked) = post_json(gw.api, &format!("{base}/ack"), Some(TOKEN), ack).await;
    assert_eq!(status, 200, "{acked}");
    assert_eq!(acked["status"], "acknowledged");
    assert_eq!(acked["acknowledged"]["by"], "wang");
    assert_eq!(
        post_json(gw.api, &format!("{base}/ack"), Some(TOKEN), ack)
            .await
            .0,
        409
    );
    let close = r#"{"by":"li","disposition":"false_alarm","note":"pendant dropped"}"#;
    let (status, closed) = post_json(gw.api, &format!("{base}/close"), Some(TOKEN), close).await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!(closed["status"], "closed");
    assert_eq!(closed["closed"]["disposition"], "false_alarm");
    assert_eq!(
        post_json(gw.api, &format!("{base}/close"), Some(TOKEN), close)
            .await
            .0,
        409
    );

    let audit = |v: &Value| -> Vec<(String, String)> {
        v["audit"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|e| {
                (
                    e["action"].as_str().unwrap_or("").to_owned(),
                    e["by"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    };
    let want = vec![
        ("opened".to_owned(), "gateway".to_owned()),
        ("acknowledged".to_owned(), "wang".to_owned()),
        ("closed".to_owned(), "li".to_owned()),
    ];
    assert_eq!(audit(&get_json(gw.api, &base).await), want);

    let sos_before = device(&get_json(gw.api, "/api/devices").await, "sos-0307");
    assert_eq!(sos_before["status"], "online", "{sos_before}");
    assert!(sos_before["last_seen_ms"].is_i64(), "{sos_before}");

    // Restart on the same data dir: the closed alert and its audit trail are still there.
    gw.terminate();
    assert!(
        gw.wait_exit(Duration::from_secs(30))
            .is_some_and(|s| s.success()),
        "clean exit\n{}",
        gw.log_tail(40)
    );
    let gw = Gateway::start(&config, &env.data_dir(), &env.log_path()).expect("restarts");
    let after = get_json(gw.api, &base).await;
    assert_eq!(after["status"], "closed");
    assert_eq!(after["closed"]["by"], "li");
    assert_eq!(after["closed"]["note"], "pendant dropped");
    assert_eq!(after["acknowledged"]["note"], "on my way");
    assert_eq!(audit(&after), want);
    let closed = alerts_of(&get_json(gw.api, "/api/alerts?status=closed").await);
    assert!(closed.iter().any(|a| a["id"] == id.as_str()));
    let open = alerts_of(&get_json(gw.api, "/api/alerts").await);
    assert!(
        open.iter().all(|a| a["id"] != id.as_str()),
        "closed is not open"
    );

    // The devices are known, and the console still shows when the SOS button was last
    // heard from (not "never"), though it sent nothing since the restart.
    let devices = get_json(gw.api, "/api/devices").await;
    let ids: Vec<&str> = devices["devices"]
        .as_array()
        .map(|d| d.iter().filter_map(|x| x["id"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        ids.contains(&"sos-0307") && ids.contains(&"smoke-1-1-3"),
        "{ids:?}"
    );
    let sos_after = device(&devices, "sos-0307");
    assert_eq!(sos_after["last_seen_ms"], sos_before["last_seen_ms"]);
    assert_eq!(sos_after["status"], "online", "{sos_after}");
}

/// One device from `/api/devices`.
fn device(devices: &serde_json::Value, id: &str) -> serde_json::Value {
    devices["devices"]
        .as_array()
        .and_then(|d| d.iter().find(|x| x["id"] == id))
        .cloned()
        .unwrap_or_else(|| panic!("no device {id} in {devices}"))
}

// ---------------------------------------------------------------------------------------
// Without a configured token the API is read-only
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_api_is_read_only() {
    let env = env();
    let mut gw = env.start_gateway();
    gw.wait_subscribed().await;
    let status = get_json(gw.api, "/api/status").await;
    assert_eq!(status["read_only"], true);
    assert_eq!(status["events_per_sec"].as_array().map(Vec::len), Some(60));
    let door = raise(
        &env,
        &mut gw,
        "access_control",
        "door-1-main",
        r#"{"code":"ACS.FORCED_OPEN"}"#,
        "ACS.FORCED_OPEN",
    )
    .await;
    let id = door["id"].as_str().expect("id").to_owned();
    for (action, body) in [
        ("ack", r#"{"by":"wang"}"#),
        ("close", r#"{"by":"wang","disposition":"real"}"#),
    ] {
        for token in [None, Some("anything")] {
            let (status, body) =
                post_json(gw.api, &format!("/api/alerts/{id}/{action}"), token, body).await;
            assert_eq!(status, 403, "{action} with {token:?}: {body}");
            assert_eq!(body["error"], "read-only: no operator account, named token or api.token is configured (estate-gateway users add NAME --role operator)");
        }
    }
    let a = get_json(gw.api, &format!("/api/alerts/{id}")).await;
    assert_eq!(a["status"], "active", "nothing changed");
    assert!(a["acknowledged"].is_null() && a["closed"].is_null());
}

// ---------------------------------------------------------------------------------------
// Linkage: a leak closes the valve
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leak_closes_the_simulated_valve_and_the_action_is_recorded() {
    let env = env();
    let fleet = SimFleet::start(vec![BusSpec::loopback("pump-room", Framing::Tcp)
        .device(1, "leak", DeviceType::RopeLeak)
        .device(2, "valve", DeviceType::Valve)])
    .await
    .expect("simulator starts");
    let leak = fleet.device("leak");
    let valve = fleet.device("valve");
    let files: Vec<String> = common::shipped_profile_files()
        .iter()
        .map(|p| format!("{:?}", p.display().to_string()))
        .collect();
    let bus = fleet.bus("pump-room");
    let extra = format!(
        r#"
[modbus]
profile_files = [{files}]

[[modbus.buses]]
name = "pump-room"
transport = "tcp"
host = "127.0.0.1"
port = {port}
reconnect_min = "100ms"
reconnect_max = "500ms"

[[devices]]
id = "mb-leak-pump"
kind = "water_leak"
location = {{ building = "2", floor = "B1" }}
modbus = {{ bus = "pump-room", unit = 1, profile = "rope-leak", poll_interval = "200ms", timeout = "500ms" }}

[[devices]]
id = "mb-valve-main"
kind = "valve"
location = {{ building = "2", floor = "B1" }}
modbus = {{ bus = "pump-room", unit = 2, profile = "valve", poll_interval = "200ms", timeout = "500ms" }}

[alerts.linkage.leak-closes-valve]
on = ["LEAK.ALARM"]
device = "mb-valve-main"
coil = 0
value = 1
same_building = true
"#,
        files = files.join(", "),
        port = bus.addr().port(),
    );
    let mut gw = common::start_gateway_with(&env, &extra);
    let deadline = Instant::now() + Duration::from_secs(20);
    while leak.request_count() < 2 || valve.request_count() < 2 {
        assert!(
            Instant::now() < deadline,
            "both devices are polled\n{}",
            gw.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!valve.coil(0), "the valve starts open");

    leak.raise_leak(7.5);
    let v = wait_json(
        &mut gw,
        "/api/alerts",
        "the leak alert with its valve action done",
        Duration::from_secs(30),
        |v| {
            alerts_of(v).iter().any(|a| {
                a["code"] == "LEAK.ALARM" && a["actions"].as_array().is_some_and(|x| !x.is_empty())
            })
        },
    )
    .await;
    let alert = alerts_of(&v)
        .into_iter()
        .find(|a| a["code"] == "LEAK.ALARM")
        .expect("leak alert");
    let action = &alert["actions"][0];
    assert_eq!(action["target"], "mb-valve-main");
    assert_eq!(action["result"], "ok", "{alert:#}");
    assert_eq!(action["action"], "leak-closes-valve: coil 0 = 1");
    assert!(valve.coil(0), "the valve's close coil was written");
    assert!(
        valve
            .requests()
            .iter()
            .any(|r| r.function == 5 && r.address == 0),
        "FC05 on coil 0: {:?}",
        valve.requests()
    );
    let one = get_json(
        gw.api,
        &format!("/api/alerts/{}", alert["id"].as_str().unwrap_or("")),
    )
    .await;
    assert!(
        one["audit"]
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["action"] == "action")),
        "the action is in the audit trail: {one:#}"
    );
}

// ---------------------------------------------------------------------------------------
// An open live stream does not keep the gateway from stopping
// ---------------------------------------------------------------------------------------

/// Regression (found by the console's browser test): `/api/stream` never ended, so axum's
/// graceful shutdown waited forever for an open console and SIGTERM hung.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_gateway_while_an_event_stream_is_open() {
    let env = env();
    let mut gw = env.start_gateway();
    let sse = SseTap::start(gw.api).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while sse.of("status").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the stream delivers status events"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.terminate();
    let status = gw.wait_exit(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "exits cleanly within 30 s with a stream open ({status:?})\n{}",
        gw.log_tail(40)
    );
    // The stream ended with the gateway (the reader task saw EOF).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sse.task.is_finished() {
        assert!(Instant::now() < deadline, "the stream ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------
// The event-code list the console labels alerts with
// ---------------------------------------------------------------------------------------

/// `GET /api/codes` lists every code of the taxonomy, in its order, with its Chinese
/// label (the console shows it first), readable without a token; a matching
/// `If-None-Match` gets 304.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_lists_every_event_code_with_its_chinese_label() {
    let env = env();
    let gw = env.start_gateway();
    let (status, headers, body) = common::http_get_full(gw.api, "/api/codes")
        .await
        .expect("GET /api/codes");
    assert_eq!(status, 200, "{body}");
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {name} header: {headers:?}"))
    };
    assert!(header("content-type").starts_with("application/json"));
    let codes: Vec<Value> = serde_json::from_str(&body).expect("a JSON array");
    let taxonomy = estate_protocols::taxonomy::CODES;
    assert_eq!(codes.len(), taxonomy.len(), "{body}");
    for (c, t) in codes.iter().zip(taxonomy) {
        assert_eq!(c["code"], t.code, "taxonomy order: {c}");
        assert_eq!(c["title"], t.title, "{c}");
        assert_eq!(c["title_zh"], t.title_zh, "{c}");
        assert!(!t.title_zh.is_empty(), "{c}");
        assert_eq!(c["severity"], u64::from(t.severity.level()), "{c}");
        assert_eq!(c["stateful"], t.stateful, "{c}");
        assert_eq!(
            c["kind"],
            serde_json::json!(t.kind.map(|k| k.as_str())),
            "{c}"
        );
    }
    let smoke = codes
        .iter()
        .find(|c| c["code"] == "SMOKE.ALARM")
        .expect("SMOKE.ALARM listed");
    assert_eq!(smoke["title_zh"], "烟感报警");
    assert_eq!(smoke["kind"], "smoke");
    // Fixed for a build: a client revalidates with the ETag and gets 304.
    let etag = header("etag");
    let (status, _, body) = common::http_request_full(
        gw.api,
        "GET",
        "/api/codes",
        &[("If-None-Match", etag.as_str())],
        "",
    )
    .await
    .expect("GET /api/codes again");
    assert_eq!(status, 304, "{body}");
}

// ---------------------------------------------------------------------------------------
// The terminal client
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_acknowledges_and_closes_through_the_api() {
    let env = env();
    let config = common::write_config_with(&env, &with_token(""));
    let mut gw = Gateway::start(&config, &env.data_dir(), &env.log_path()).expect("starts");
    gw.wait_subscribed().await;
    let leak = raise(
        &env,
        &mut gw,
        "water_leak",
        "leak-b2-pump",
        r#"{"code":"LEAK.ALARM","value":3.5,"unit":"m"}"#,
        "LEAK.ALARM",
    )
    .await;
    let id = leak["id"].as_str().expect("id").to_owned();
    let api = format!("http://{}", gw.api);
    let cli = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            common::run_gateway_cli(&refs)
        })
    };
    let (st, out, err) = cli(vec!["alerts".into(), "--api".into(), api.clone()])
        .await
        .expect("runs");
    assert!(st.success(), "{out}{err}");
    let row = out
        .lines()
        .find(|l| l.contains(&id))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(row.starts_with("2 major"), "{row}");
    assert!(
        row.contains("building 2 / floor B1 / room pump room"),
        "{row}"
    );
    assert!(
        row.contains("LEAK.ALARM") && row.contains("active"),
        "{row}"
    );

    // Without the token: refused, with the reason.
    let (st, _, err) = cli(vec!["ack".into(), id.clone(), "--api".into(), api.clone()])
        .await
        .expect("runs");
    assert!(!st.success());
    assert!(err.contains("401") && err.contains("--token"), "{err}");

    let (st, out, err) = cli(vec![
        "ack".into(),
        id.clone(),
        "--api".into(),
        api.clone(),
        "--token".into(),
        TOKEN.into(),
        "--by".into(),
        "zhao".into(),
    ])
    .await
    .expect("runs");
    assert!(st.success(), "{out}{err}");
    assert!(out.contains("acknowledged by zhao"), "{out}");
    let (st, out, err) = cli(vec![
        "close".into(),
        id.clone(),
        "--config".into(),
        config.display().to_string(),
        "--api".into(),
        api.clone(),
        "--token".into(),
        TOKEN.into(),
        "--by".into(),
        "zhao".into(),
        "--disposition".into(),
        "maintenance".into(),
        "--note".into(),
        "pump seal replaced".into(),
    ])
    .await
    .expect("runs");
    assert!(st.success(), "{out}{err}");
    assert!(out.contains("closed (maintenance) by zhao"), "{out}");
    let a = get_json(gw.api, &format!("/api/alerts/{id}")).await;
    assert_eq!(a["closed"]["note"], "pump seal replaced");
}

// ---------------------------------------------------------------------------------------
// Alarm management (issue 16)
// ---------------------------------------------------------------------------------------

/// The `ALERT.UPDATE`s of alert `id` the city received so far (deduplicated on seq).
fn updates_of(tap: &EventTap, id: &str) -> Vec<estate_protocols::pb::AlertUpdate> {
    let mut seen = std::collections::HashSet::new();
    tap.events()
        .into_iter()
        .filter(|(t, e)| t.ends_with("/alarms") && seen.insert(e.seq))
        .filter_map(|(_, e)| e.alert)
        .filter(|a| a.alert_id == id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chattering_door_is_one_alert_with_a_bounded_audit_and_few_updates_upstream() {
    let env = env();
    let tap = EventTap::start(&env.uplink, &env.estate_id).await;
    let extra = "\n[alerts.chattering]\nactivations = 5\nwindow = \"60s\"\nstable_for = \"4s\"\n";
    let mut gw = common::start_gateway_with(&env, &with_token(extra));
    gw.wait_subscribed().await;

    // Forced open and closed again, 50 times, as fast as the broker takes it.
    const CYCLES: u64 = 50;
    let mut publisher = env.raw_client().await;
    let topic = format!("estate/{}/access_control/door-1-main/event", env.estate_id);
    for _ in 0..CYCLES {
        publisher
            .publish(&topic, r#"{"code":"ACS.FORCED_OPEN"}"#)
            .await;
        publisher
            .publish(&topic, r#"{"code":"ACS.FORCED_OPEN","state":"cleared"}"#)
            .await;
    }
    let v = wait_json(
        &mut gw,
        "/api/alerts?status=all&device=door-1-main",
        "the door's 50 activations on one alert",
        Duration::from_secs(60),
        |v| {
            alerts_of(v)
                .iter()
                .any(|a| a["activations"] == CYCLES && a["cleared"] == true)
        },
    )
    .await;
    let all = alerts_of(&v);
    assert_eq!(all.len(), 1, "one alert, not 50: {all:#?}");
    let id = all[0]["id"].as_str().expect("id").to_owned();
    assert_eq!(
        all[0]["status"], "active",
        "a forced door is never auto-closed"
    );

    // Four seconds without an activation: it leaves chattering.
    let one = wait_json(
        &mut gw,
        &format!("/api/alerts/{id}"),
        "chattering to end",
        Duration::from_secs(30),
        |a| {
            a["chattering"] == false
                && a["audit"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|e| e["action"] == "chattering_ended"))
        },
    )
    .await;
    let trail = one["audit"].as_array().cloned().unwrap_or_default();
    let actions: Vec<&str> = trail.iter().filter_map(|e| e["action"].as_str()).collect();
    assert!(
        trail.len() <= 8,
        "a bounded audit, not {} entries: {actions:?}",
        2 * CYCLES
    );
    assert_eq!(actions.first(), Some(&"opened"));
    assert!(actions.contains(&"chattering"), "{actions:?}");
    let folded: u64 = trail
        .iter()
        .filter(|e| e["action"] == "repeated")
        .filter_map(|e| e["count"].as_u64())
        .sum();
    let single = trail
        .iter()
        .filter(|e| {
            ["cleared", "reactivated", "chattering"].contains(&e["action"].as_str().unwrap_or(""))
        })
        .count() as u64;
    // Every clear and reactivation is accounted for: 50 clears and 49 reactivations (the
    // one that made it chatter is the `chattering` entry).
    assert_eq!(folded + single, 2 * CYCLES - 1, "{trail:#?}");

    // Upstream: the raw events all arrive (never lost), but the alert's updates are the
    // first few transitions, entering chattering and its state when it ended.
    let ups = tap
        .wait_for(
            "the alert's state after chattering upstream",
            Duration::from_secs(30),
            |_| {
                updates_of(&tap, &id).iter().any(|u| {
                    u.change() == estate_protocols::pb::AlertChange::Cleared
                        && u.note.starts_with("no activation for")
                })
            },
        )
        .await;
    let updates = updates_of(&tap, &id);
    assert!(
        updates.len() <= 12,
        "{} updates upstream for {} transitions",
        updates.len(),
        2 * CYCLES
    );
    assert_eq!(
        updates[0].change(),
        estate_protocols::pb::AlertChange::Opened
    );
    assert!(updates
        .iter()
        .any(|u| u.note.contains("activations within")));
    let raw = ups
        .iter()
        .filter(|(_, e)| e.device_id == "door-1-main" && e.code == "ACS.FORCED_OPEN")
        .map(|(_, e)| e.seq)
        .collect::<std::collections::BTreeSet<_>>();
    let raw = if raw.len() as u64 >= 2 * CYCLES {
        raw.len() as u64
    } else {
        tap.wait_for(
            "every raw door event upstream",
            Duration::from_secs(30),
            |_| tap.of("door-1-main", "ACS.FORCED_OPEN").len() as u64 >= 2 * CYCLES,
        )
        .await;
        tap.of("door-1-main", "ACS.FORCED_OPEN").len() as u64
    };
    assert_eq!(raw, 2 * CYCLES, "the door's own events all go upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_keeps_young_audit_trails_over_history_max_and_healthz_says_so() {
    let env = env();
    // history_max = 1, the default retention (90 days): every trail here is young.
    let config = env.dir().join("gateway.toml");
    let text = env
        .config_toml()
        .replacen("[alerts]\n", "[alerts]\nhistory_max = 1\n", 1);
    std::fs::write(&config, format!("{text}{}", with_token(""))).expect("write config");
    let mut gw = Gateway::start(&config, &env.data_dir(), &env.log_path()).expect("starts");
    gw.wait_subscribed().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let sos = raise(
            &env,
            &mut gw,
            "emergency_button",
            "sos-0307",
            r#"{"code":"SOS.PRESSED"}"#,
            "SOS.PRESSED",
        )
        .await;
        let id = sos["id"].as_str().expect("id").to_owned();
        let close = r#"{"by":"wang","disposition":"test","note":"drill"}"#;
        let (status, body) = post_json(
            gw.api,
            &format!("/api/alerts/{id}/close"),
            Some(TOKEN),
            close,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        ids.push(id);
    }
    let closed = alerts_of(&get_json(gw.api, "/api/alerts?status=closed").await);
    assert_eq!(closed.len(), 3, "no young trail is pruned: {closed:#?}");
    for id in &ids {
        let a = get_json(gw.api, &format!("/api/alerts/{id}")).await;
        let trail: Vec<&str> = a["audit"]
            .as_array()
            .map(|t| t.iter().filter_map(|e| e["action"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(trail, ["opened", "closed"], "{id}: its trail is whole");
    }
    // Over the bound: /healthz says so (degraded, still 200), and alerting goes on.
    let h = wait_json(
        &mut gw,
        "/healthz",
        "the history over its bound on /healthz",
        Duration::from_secs(10),
        |h| {
            h["problems"]
                .as_array()
                .is_some_and(|p| p.iter().any(|c| c["key"] == "alerts.history"))
        },
    )
    .await;
    assert_eq!(h["status"], "degraded", "{h:#}");
    let reason = h["problems"]
        .as_array()
        .and_then(|p| p.iter().find(|c| c["key"] == "alerts.history"))
        .map(|c| c["reason"].to_string())
        .unwrap_or_default();
    assert!(reason.contains("alerts.audit_retention"), "{reason}");
    raise(
        &env,
        &mut gw,
        "emergency_button",
        "sos-0307",
        r#"{"code":"SOS.PRESSED"}"#,
        "SOS.PRESSED",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shelved_alert_is_unshelved_automatically_and_its_held_back_state_goes_upstream() {
    let env = env();
    let tap = EventTap::start(&env.uplink, &env.estate_id).await;
    let mut gw = common::start_gateway_with(&env, &with_token(""));
    gw.wait_subscribed().await;
    let cam = raise(
        &env,
        &mut gw,
        "camera",
        "cam-gate-north",
        r#"{"code":"VID.TAMPER"}"#,
        "VID.TAMPER",
    )
    .await;
    let id = cam["id"].as_str().expect("id").to_owned();
    let shelve = format!("/api/alerts/{id}/shelve");

    // Refused: no token; longer than alerts.shelving.max (8 h); no reason.
    let ok = r#"{"by":"wang","minutes":0.1,"reason":"lens cleaning"}"#;
    assert_eq!(post_json(gw.api, &shelve, None, ok).await.0, 401);
    let (status, body) = post_json(
        gw.api,
        &shelve,
        Some(TOKEN),
        r#"{"by":"wang","minutes":600,"reason":"x"}"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].to_string().contains("alerts.shelving.max"),
        "{body}"
    );
    let (status, body) = post_json(
        gw.api,
        &shelve,
        Some(TOKEN),
        r#"{"by":"wang","minutes":5,"reason":"  "}"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");

    // Shelved for 6 s: visible with who, why and until when.
    let (status, a) = post_json(gw.api, &shelve, Some(TOKEN), ok).await;
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["shelved"]["by"], "wang");
    assert_eq!(a["shelved"]["reason"], "lens cleaning");
    assert!(a["shelved"]["until_ms"].as_i64() > a["shelved"]["at_ms"].as_i64());
    assert_eq!(a["status"], "active", "still open and listed");

    // It clears while shelved: the alert shows it, upstream is not told one by one.
    let mut publisher = env.raw_client().await;
    let topic = format!("estate/{}/camera/cam-gate-north/event", env.estate_id);
    publisher
        .publish(&topic, r#"{"code":"VID.TAMPER","state":"cleared"}"#)
        .await;
    let seen = wait_json(
        &mut gw,
        &format!("/api/alerts/{id}"),
        "the clear on the alert",
        Duration::from_secs(10),
        |a| a["cleared"] == true,
    )
    .await;
    assert!(
        !seen["shelved"].is_null(),
        "cleared while still shelved: {seen:#}"
    );

    // Time is up: the gateway unshelves it and forwards where it stands, once.
    let one = wait_json(
        &mut gw,
        &format!("/api/alerts/{id}"),
        "the automatic unshelve",
        Duration::from_secs(30),
        |a| a["shelved"].is_null() && a["cleared"] == true,
    )
    .await;
    let trail = one["audit"].as_array().cloned().unwrap_or_default();
    let by = |action: &str| {
        trail
            .iter()
            .find(|e| e["action"] == action)
            .map(|e| e["by"].clone())
    };
    assert_eq!(by("shelved"), Some("wang".into()), "{trail:#?}");
    assert_eq!(by("unshelved"), Some("gateway".into()), "{trail:#?}");
    tap.wait_for(
        "the held-back clear upstream after the unshelve",
        Duration::from_secs(30),
        |_| {
            updates_of(&tap, &id)
                .iter()
                .any(|u| u.note.contains("shelving time is up"))
        },
    )
    .await;
    let cleared: Vec<_> = updates_of(&tap, &id)
        .into_iter()
        .filter(|u| u.change() == estate_protocols::pb::AlertChange::Cleared)
        .collect();
    assert_eq!(cleared.len(), 1, "{cleared:#?}");
    assert!(
        cleared[0].note.contains("1 changes held back"),
        "{cleared:#?}"
    );

    // A life-safety alert shelves only briefly (alerts.shelving.life_safety_max, 15 min).
    let door = raise(
        &env,
        &mut gw,
        "access_control",
        "door-1-main",
        r#"{"code":"ACS.FORCED_OPEN"}"#,
        "ACS.FORCED_OPEN",
    )
    .await;
    let (status, body) = post_json(
        gw.api,
        &format!("/api/alerts/{}/shelve", door["id"].as_str().unwrap_or("")),
        Some(TOKEN),
        r#"{"by":"wang","minutes":30,"reason":"door fault"}"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].to_string().contains("life-safety"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_new_alerts_than_the_flood_rate_is_a_flood_on_status_and_healthz() {
    let env = env();
    let extra = "\n[alerts.flood]\nnew_alerts = 2\nwindow = \"10m\"\n";
    let mut gw = common::start_gateway_with(&env, &with_token(extra));
    gw.wait_subscribed().await;
    let status = get_json(gw.api, "/api/status").await;
    assert_eq!(status["flood"]["active"], false, "{status:#}");
    for (kind, device, code) in [
        ("camera", "cam-gate-north", "VID.TAMPER"),
        ("access_control", "door-1-main", "ACS.FORCED_OPEN"),
        ("emergency_button", "sos-0307", "SOS.PRESSED"),
    ] {
        raise(
            &env,
            &mut gw,
            kind,
            device,
            &format!(r#"{{"code":"{code}"}}"#),
            code,
        )
        .await;
    }
    let status = get_json(gw.api, "/api/status").await;
    assert_eq!(status["flood"]["active"], true, "{status:#}");
    assert_eq!(status["flood"]["new_alerts"], 3);
    assert_eq!(status["flood"]["limit"], 2);
    // /healthz says so too, as a field: a flood is the estate's state, the gateway is
    // healthy.
    let h = get_json(gw.api, "/healthz").await;
    assert_eq!(h["flood"]["active"], true, "{h:#}");
    assert_eq!(h["status"], "ok", "{h:#}");
}
