//! The duty desk (issue 14), through the gateway's public `run` API (the city link calls
//! `Running::duty` the same way) and its real HTTP API, with a real broker and a
//! simulated Modbus TCP sounder (`estate_sim::modbus`):
//!
//! - a roll call is on the live stream at once, answered through `POST
//!   /api/roll-calls/{id}/answer` (token required) and resolves `Answered` with that name
//!   and how long it took;
//! - one left unanswered resolves `NoAnswer` at its deadline and is listed as missed;
//! - the city's handling of an alert is attached to it, in its audit trail by the issuer,
//!   without changing its local status; an unknown alert id is `Unknown`;
//! - a broadcast switches the sounder's coil on and, after its duration, off again; every
//!   write is recorded as a `GW.BROADCAST` event; a write the device refuses fails the
//!   broadcast and names the write;
//! - a broadcast never switches off a sounder an open alert's linkage switched on.

mod common;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use estate_gateway::duty::{DutyError, RollCall, RollCallRequest};
use estate_gateway::Running;
use estate_protocols::pb;
use estate_sim::modbus::{BusSpec, DeviceType, Framing, SimFleet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use common::{get_json, http_request, Broker, EventTap, TestEnv};

const TOKEN: &str = "duty-e2e-token-41c9";
const STEP: Duration = Duration::from_secs(30);

/// A gateway in this process; stopped (in order) by [`InProcess::stop`].
struct InProcess {
    running: Running,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), estate_gateway::GatewayError>>,
}

impl InProcess {
    async fn start(env: &TestEnv, extra: &str) -> InProcess {
        let path = common::write_config_with(env, &format!("[api]\ntoken = \"{TOKEN}\"\n{extra}"));
        let cfg = estate_config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let shutdown = CancellationToken::new();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let opts = estate_gateway::RunOptions {
            data_dir: env.data_dir(),
            grace: Duration::from_millis(200),
            api_listener: Some(std::net::TcpListener::bind("127.0.0.1:0").expect("bind")),
            on_ready: Some(ready_tx),
        };
        let task = tokio::spawn(estate_gateway::run(cfg, opts, shutdown.clone()));
        let running = tokio::time::timeout(STEP, ready_rx)
            .await
            .expect("gateway ready within 30 s")
            .expect("gateway started");
        InProcess {
            running,
            shutdown,
            task,
        }
    }

    fn api(&self) -> SocketAddr {
        self.running.api_addr
    }

    /// Stops in order; the gateway must exit cleanly (the desk let go of the store).
    async fn stop(self) {
        self.shutdown.cancel();
        let r = tokio::time::timeout(STEP, self.task)
            .await
            .expect("the gateway stops within 30 s")
            .expect("the gateway task did not panic");
        assert!(r.is_ok(), "the gateway stopped with {r:?}");
    }
}

/// One simulated Modbus TCP sounder (unit 1) on a bus named `lobby`.
async fn lobby_sounder() -> SimFleet {
    SimFleet::start(vec![BusSpec::loopback("lobby", Framing::Tcp).device(
        1,
        "sounder",
        DeviceType::Sounder,
    )])
    .await
    .expect("simulator starts")
}

fn env() -> TestEnv {
    let broker = Broker::shared();
    let mut env = TestEnv::new(broker.clone(), broker);
    env.down_alert_after = "1h".into();
    env
}

async fn answer(addr: SocketAddr, id: &str, by: &str, token: Option<&str>) -> (u16, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    let body = serde_json::json!({ "by": by }).to_string();
    http_request(
        addr,
        "POST",
        &format!("/api/roll-calls/{id}/answer"),
        &headers,
        &body,
    )
    .await
    .expect("POST answer")
}

/// The roll call `id` as `GET /api/roll-calls` lists it.
async fn listed(addr: SocketAddr, id: &str) -> Option<serde_json::Value> {
    get_json(addr, "/api/roll-calls").await["roll_calls"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["id"] == id).cloned())
}

fn request(id: &str, within: Duration) -> RollCallRequest {
    let now = Instant::now();
    RollCallRequest {
        command_id: id.to_owned(),
        issuer: "city-duty-officer-7".into(),
        message: "查岗：请值班员应答 Roll call: please answer".into(),
        received: now,
        deadline: now + within,
    }
}

/// Reads the live stream until an event named `event` whose data contains `needle`.
async fn stream_until(addr: SocketAddr, event: &str, needle: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req =
        format!("GET /api/stream HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("send");
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    let found = tokio::time::timeout(STEP, async {
        loop {
            let n = s.read(&mut buf).await.expect("read the stream");
            assert!(n > 0, "the stream ended: {text}");
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
            if let Some(block) = text
                .split("\n\n")
                .find(|b| b.contains(&format!("event: {event}")) && b.contains(needle))
            {
                return block.to_owned();
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no {event} event with {needle} on the stream"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roll_call_is_on_the_live_stream_and_answered_through_the_api() {
    let env = env();
    let gw = InProcess::start(&env, "").await;
    let api = gw.api();
    let id = common::unique_id("rc-");
    // The stream is open before the call arrives, as a console's is.
    let watch = tokio::spawn({
        let id = id.clone();
        async move { stream_until(api, "roll_call", &format!("\"id\":\"{id}\"")).await }
    });
    // Wait until the stream is subscribed (its first status event), so the call is news.
    stream_until(api, "status", "gateway_id").await;
    let req = request(&id, Duration::from_secs(120));
    let received = req.received;
    let desk = gw.running.duty.clone();
    let call = tokio::spawn(async move { desk.roll_call(req).await });

    let shown = watch.await.expect("stream reader");
    assert!(shown.contains("\"status\":\"pending\""), "{shown}");
    assert!(
        shown.contains("city-duty-officer-7"),
        "the issuer is shown: {shown}"
    );
    let rc = listed(api, &id).await.expect("listed");
    assert_eq!(rc["status"], "pending", "{rc}");
    let left = rc["remaining_ms"].as_u64().expect("remaining_ms");
    assert!(
        left > 0 && left <= 120_000,
        "a countdown within the deadline: {rc}"
    );

    // Answering is a write: no token, no answer.
    let (status, body) = answer(api, &id, "王芳", None).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = answer(api, &id, "  ", Some(TOKEN)).await;
    assert_eq!(status, 400, "an answer names who answers: {body}");
    let (status, body) = answer(api, &id, "王芳", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let answered_by_test = received.elapsed();

    let outcome = tokio::time::timeout(STEP, call)
        .await
        .expect("the roll call resolves once answered")
        .expect("roll call task");
    let RollCall::Answered { by, after } = outcome else {
        panic!("expected an answer, got {outcome:?}");
    };
    assert_eq!(by, "王芳");
    assert!(
        after > Duration::ZERO && after <= answered_by_test,
        "`after` runs from the command's arrival to the answer: {after:?} (answer sent by {answered_by_test:?})"
    );
    let rc = listed(api, &id).await.expect("still listed");
    assert_eq!(
        (&rc["status"], &rc["answered_by"]),
        (&serde_json::json!("answered"), &serde_json::json!("王芳")),
        "{rc}"
    );
    // Answered once: a second answer is refused, and so is an unknown id.
    let (status, body) = answer(api, &id, "李伟", Some(TOKEN)).await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = answer(api, "no-such-call", "李伟", Some(TOKEN)).await;
    assert_eq!(status, 404, "{body}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roll_call_nobody_answers_is_no_answer_at_its_deadline_and_listed_as_missed() {
    let env = env();
    let gw = InProcess::start(&env, "").await;
    let api = gw.api();
    let id = common::unique_id("rc-");
    let req = request(&id, Duration::from_secs(2));
    let deadline = req.deadline;
    let outcome = tokio::time::timeout(STEP, gw.running.duty.roll_call(req))
        .await
        .expect("resolves at its deadline");
    assert_eq!(outcome, RollCall::NoAnswer);
    assert!(Instant::now() >= deadline, "not before its deadline");
    let rc = listed(api, &id).await.expect("listed");
    assert_eq!(rc["status"], "missed", "{rc}");
    assert_eq!(rc["answered_by"], serde_json::Value::Null, "{rc}");
    // Too late now.
    let (status, body) = answer(api, &id, "王芳", Some(TOKEN)).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("missed"), "{body}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_citys_handling_is_attached_to_the_alert_and_in_its_audit_trail() {
    let env = env();
    let gw = InProcess::start(&env, "").await;
    let api = gw.api();
    gw.running
        .wait_subscribed(STEP)
        .await
        .expect("ingest subscribed");
    env.raw_client()
        .await
        .publish(
            &format!("estate/{}/smoke/smoke-1-1-3/event", env.estate_id),
            br#"{"code":"SMOKE.ALARM","state":"active","seq":1}"#.to_vec(),
        )
        .await;
    let deadline = Instant::now() + STEP;
    let id = loop {
        let list = get_json(api, "/api/alerts").await;
        if let Some(a) = list["alerts"].as_array().and_then(|a| a.first()) {
            break a["id"].as_str().expect("id").to_owned();
        }
        assert!(Instant::now() < deadline, "the smoke alarm opens an alert");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut alerts = gw.running.alerts.subscribe();

    let handling = pb::AlarmHandling {
        alert_id: id.clone(),
        state: pb::CityAlarmState::Dispatched as i32,
        note: "消防救援站 2 车出动 Fire station 2 dispatched".into(),
    };
    gw.running
        .duty
        .alarm_handling("city-119-desk", &handling)
        .await
        .expect("attached");
    // On the live stream at once.
    let updated = tokio::time::timeout(STEP, async {
        loop {
            if let Ok(estate_gateway::alerts::Update::Alert(a)) = alerts.recv().await {
                if a.id == id && a.city.is_some() {
                    return a;
                }
            }
        }
    })
    .await
    .expect("the change is broadcast");
    assert_eq!(
        updated.city.as_ref().map(|c| c.state.as_str()),
        Some("dispatched")
    );

    let a = get_json(api, &format!("/api/alerts/{id}")).await;
    assert_eq!(a["city"]["state"], "dispatched", "{a}");
    assert_eq!(a["city"]["by"], "city-119-desk", "{a}");
    assert_eq!(a["city"]["note"], handling.note, "{a}");
    assert_eq!(a["status"], "active", "the local status is the desk's: {a}");
    let audit = a["audit"].as_array().cloned().unwrap_or_default();
    assert!(
        audit.iter().any(|e| e["action"] == "city"
            && e["by"] == "city-119-desk"
            && e["note"]
                .as_str()
                .is_some_and(|n| n.starts_with("dispatched"))),
        "the audit trail has the city's change by its issuer: {a}"
    );

    // Later states replace the current one; the trail keeps both.
    let on_scene = pb::AlarmHandling {
        alert_id: id.clone(),
        state: pb::CityAlarmState::OnScene as i32,
        note: String::new(),
    };
    gw.running
        .duty
        .alarm_handling("city-119-desk", &on_scene)
        .await
        .expect("attached");
    let a = get_json(api, &format!("/api/alerts/{id}")).await;
    assert_eq!(a["city"]["state"], "on_scene", "{a}");
    let city_entries = a["audit"]
        .as_array()
        .map_or(0, |v| v.iter().filter(|e| e["action"] == "city").count());
    assert_eq!(city_entries, 2, "{a}");

    let unknown = pb::AlarmHandling {
        alert_id: "01NOSUCHALERT".into(),
        state: pb::CityAlarmState::Received as i32,
        note: String::new(),
    };
    let err = gw
        .running
        .duty
        .alarm_handling("city-119-desk", &unknown)
        .await
        .expect_err("no such alert");
    assert!(matches!(err, DutyError::Unknown(_)), "{err:?}");
    gw.stop().await;
}

/// The `GW.BROADCAST*` events among `events` (as the city received them), as (code,
/// detail JSON), in seq order.
fn broadcast_records(
    events: &[(String, estate_protocols::pb::Event)],
) -> Vec<(String, serde_json::Value)> {
    let mut evs: Vec<&estate_protocols::pb::Event> = events
        .iter()
        .map(|(_, e)| e)
        .filter(|e| e.code.starts_with("GW.BROADCAST"))
        .collect();
    evs.sort_by_key(|e| e.seq);
    evs.dedup_by_key(|e| e.seq);
    evs.into_iter()
        .map(|e| {
            (
                e.code.clone(),
                serde_json::from_slice(&e.raw).unwrap_or_default(),
            )
        })
        .collect()
}

/// `[modbus]` with the simulated sounder as `sounder-lobby`, broadcast groups `lobby`
/// (coil 0) and `broken` (coil 5, which the sounder does not have), and `extra`.
fn sounder_toml(port: u16, extra: &str) -> String {
    let files: Vec<String> = common::shipped_profile_files()
        .iter()
        .map(|p| format!("{:?}", p.display().to_string()))
        .collect();
    let mut s = format!("[modbus]\nprofile_files = [{}]\n", files.join(", "));
    let _ = write!(
        s,
        "\n[[modbus.buses]]\nname = \"lobby\"\ntransport = \"tcp\"\nhost = \"127.0.0.1\"\nport = {port}\n\
         \n[[devices]]\nid = \"sounder-lobby\"\nkind = \"sounder\"\n\
         modbus = {{ bus = \"lobby\", unit = 1, profile = \"sounder\", poll_interval = \"200ms\", timeout = \"500ms\" }}\n\
         \n[commands.broadcast]\nenabled = true\nmax_duration = \"2s\"\n\
         \n[[commands.broadcast.groups.lobby]]\ndevice = \"sounder-lobby\"\ncoil = 0\n\
         \n[[commands.broadcast.groups.broken]]\ndevice = \"sounder-lobby\"\ncoil = 5\n{extra}"
    );
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_switches_the_sounder_on_then_off_and_a_refused_write_fails_it() {
    let env = env();
    let fleet = lobby_sounder().await;
    let sounder = fleet.device("sounder");
    let extra = sounder_toml(sounder.addr().port(), "");
    let tap = EventTap::start(&env.uplink, &env.estate_id).await;
    let gw = InProcess::start(&env, &extra).await;
    let desk = &gw.running.duty;
    assert!(!sounder.coil(0), "the sounder starts off");

    // On for 60 s asked, capped at max_duration (2 s): on now, off by itself after.
    let on = pb::Broadcast {
        group: "lobby".into(),
        on: true,
        duration_s: 60,
        message: "疏散演练 Evacuation drill".into(),
    };
    let detail = tokio::time::timeout(STEP, desk.broadcast("city-drill", &on))
        .await
        .expect("answered within 30 s")
        .expect("the sounder switched on");
    assert!(detail.starts_with("1 output on for 2 s"), "{detail}");
    assert!(
        sounder.coil(0),
        "the coil is on after the broadcast returns"
    );
    let deadline = Instant::now() + STEP;
    while sounder.coil(0) {
        assert!(
            Instant::now() < deadline,
            "the sounder is switched off after the duration"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Each write and its result, stored and forwarded like any event.
    let events = tap
        .wait_for("both writes upstream", STEP, |evs| {
            broadcast_records(evs).len() >= 2
        })
        .await;
    let records = broadcast_records(&events);
    let switched: Vec<(&str, &str, &str)> = records
        .iter()
        .map(|(code, d)| {
            (
                code.as_str(),
                d["switch"].as_str().unwrap_or(""),
                d["result"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        switched,
        [("GW.BROADCAST", "on", "ok"), ("GW.BROADCAST", "off", "ok")],
        "{records:?}"
    );
    assert_eq!(records[0].1["issuer"], "city-drill");
    assert_eq!(records[0].1["device"], "sounder-lobby");
    assert_eq!(records[0].1["write"], "coil 0 = 1");

    // The device refuses a write to a coil it does not have: the broadcast fails and
    // names the write; the failure is recorded too.
    let broken = pb::Broadcast {
        group: "broken".into(),
        on: true,
        duration_s: 1,
        message: String::new(),
    };
    let err = desk
        .broadcast("city-drill", &broken)
        .await
        .expect_err("the device refuses the write");
    let DutyError::Failed(msg) = &err else {
        panic!("expected Failed, got {err:?}");
    };
    assert!(
        msg.contains("sounder-lobby coil 5 = 1") && msg.contains("exception"),
        "{msg}"
    );
    tap.wait_for("the failed write upstream", STEP, |evs| {
        broadcast_records(evs)
            .iter()
            .any(|(code, d)| code == "GW.BROADCAST_FAILED" && d["write"] == "coil 5 = 1")
    })
    .await;

    // A group that is not configured.
    let nope = pb::Broadcast {
        group: "garage".into(),
        on: false,
        duration_s: 0,
        message: String::new(),
    };
    let err = desk
        .broadcast("city-drill", &nope)
        .await
        .expect_err("unknown group");
    assert!(
        matches!(&err, DutyError::Unknown(m) if m.contains("garage")),
        "{err:?}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_never_silences_a_sounder_that_an_open_alarm_switched_on() {
    let env = env();
    let fleet = lobby_sounder().await;
    let sounder = fleet.device("sounder");
    let linkage = "\n[alerts.linkage.smoke-starts-sounder]\non = [\"SMOKE.ALARM\"]\n\
                   device = \"sounder-lobby\"\ncoil = 0\nvalue = 1\n";
    let tap = EventTap::start(&env.uplink, &env.estate_id).await;
    let gw = InProcess::start(&env, &sounder_toml(sounder.addr().port(), linkage)).await;
    let api = gw.api();
    gw.running
        .wait_subscribed(STEP)
        .await
        .expect("ingest subscribed");
    env.raw_client()
        .await
        .publish(
            &format!("estate/{}/smoke/smoke-1-1-3/event", env.estate_id),
            br#"{"code":"SMOKE.ALARM","state":"active","seq":1}"#.to_vec(),
        )
        .await;
    // The alarm's linkage switches the sounder on, and says so on the alert.
    let deadline = Instant::now() + STEP;
    let alert = loop {
        let list = get_json(api, "/api/alerts").await;
        let linked = list["alerts"].as_array().and_then(|a| {
            a.iter()
                .find(|a| {
                    a["actions"]
                        .as_array()
                        .is_some_and(|x| x.iter().any(|x| x["result"] == "ok"))
                })
                .cloned()
        });
        if let Some(a) = linked {
            break a;
        }
        assert!(Instant::now() < deadline, "the linkage runs: {list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(sounder.coil(0), "the alarm switched the sounder on");

    // The city ends a drill on the same sounder: it stays on, and the answer says why.
    let off = pb::Broadcast {
        group: "lobby".into(),
        on: false,
        duration_s: 0,
        message: String::new(),
    };
    let detail = gw
        .running
        .duty
        .broadcast("city-drill", &off)
        .await
        .expect("not a failure");
    let id = alert["id"].as_str().expect("id");
    assert!(
        detail.starts_with("0 outputs off; 1 left on") && detail.contains(id),
        "{detail}"
    );
    assert!(sounder.coil(0), "the alarm's sounder is still on");
    let events = tap
        .wait_for("the skipped switch-off upstream", STEP, |evs| {
            !broadcast_records(evs).is_empty()
        })
        .await;
    let records = broadcast_records(&events);
    assert!(
        records[0].1["result"]
            .as_str()
            .is_some_and(|r| r.starts_with("left on: alert")),
        "{records:?}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_left_on_by_a_stopped_gateway_is_switched_off_after_its_restart() {
    let env = env();
    let fleet = lobby_sounder().await;
    let sounder = fleet.device("sounder");
    // 8 s: ample for a stop in order, so the switch-off falls due after the restart.
    let toml = sounder_toml(sounder.addr().port(), "")
        .replace("max_duration = \"2s\"", "max_duration = \"1m\"");
    let gw = InProcess::start(&env, &toml).await;
    let on = pb::Broadcast {
        group: "lobby".into(),
        on: true,
        duration_s: 8,
        message: String::new(),
    };
    gw.running
        .duty
        .broadcast("city-drill", &on)
        .await
        .expect("switched on");
    // Stopped (an upgrade, a power cut) before the switch-off was due: still on.
    gw.stop().await;
    assert!(
        sounder.coil(0),
        "the sounder was left on by the stopped gateway"
    );
    let gw = InProcess::start(&env, &toml).await;
    let deadline = Instant::now() + STEP;
    while sounder.coil(0) {
        assert!(
            Instant::now() < deadline,
            "the restarted gateway switches the sounder off"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.stop().await;
}
