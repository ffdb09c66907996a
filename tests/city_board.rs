//! The reference city consumer (`estate_sim::city::consumer`, behind `estate-sim city`)
//! against a real gateway (issue 14): under the fleet's traffic the estate is *ok* on the
//! board with every event accounted (no gap after dedup); SIGKILL of the gateway turns it
//! *dark* at once on its last will.
//! The board is read the way a user reads it: from the `--json` file it rewrites. And a
//! roll call from `estate-sim city roll-call`'s code to the gateway's duty desk and back:
//! ACCEPTED, then who answered at the desk, or NO_ANSWER.

mod common;

use std::path::Path;
use std::time::Duration;

use estate_protocols::pb;
use estate_sim::city::board::Rules;
use estate_sim::city::command::{self, Reply, SendOptions};
use estate_sim::city::consumer::{self, ConsumerOptions, JsonOut};
use estate_sim::fleet::{self, FleetOptions};
use estate_sim::publish::random_client_id;

use tokio::time::{sleep, Instant};
use tokio_util::sync::CancellationToken;

use common::{Broker, TestEnv};

/// Polls the board file until `pred` holds for this estate's row and its gateway's
/// stream; fails with the last board seen.
async fn wait_board(
    path: &Path,
    what: &str,
    timeout: Duration,
    estate: &str,
    gateway: &str,
    pred: impl Fn(&serde_json::Value, &serde_json::Value) -> bool,
) -> (serde_json::Value, serde_json::Value) {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(board) = serde_json::from_str::<serde_json::Value>(&text) {
                let row = board["estates"]
                    .as_array()
                    .and_then(|v| v.iter().find(|e| e["estate_id"] == estate))
                    .cloned();
                let stream = board["ledger"]["streams"]
                    .as_array()
                    .and_then(|v| v.iter().find(|s| s["gateway_id"] == gateway))
                    .cloned();
                if let (Some(row), Some(stream)) = (row, stream) {
                    if pred(&row, &stream) {
                        return (row, stream);
                    }
                }
            }
            last = text;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last board: {last}"
        );
        sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_estate_is_ok_with_nothing_lost_and_a_killed_gateway_goes_dark() {
    let city_broker = Broker::embedded();
    let mut env = TestEnv::new(Broker::shared(), city_broker.clone());
    // The fleet numbers estates: a digit id, unique per test run.
    env.estate_id = format!("3101159{:013}", rand::random::<u64>() % 10_000_000_000_000);
    let board_path = env.dir().join("board.json");
    let stop = CancellationToken::new();
    let city = tokio::spawn(consumer::run(
        ConsumerOptions {
            broker_host: city_broker.host.clone(),
            broker_port: city_broker.port,
            client_id: random_client_id("e2e-city-board"),
            prefix: "city/v1".into(),
            rules: Rules {
                // Longer than the test waits for dark: only the last will can make it dark.
                reporting_time: Duration::from_secs(120),
                ..Rules::default()
            },
            interval: Duration::from_millis(200),
            json: Some(JsonOut::File(board_path.clone())),
            repair: None,
            until_events: None,
            max_rows: 10,
        },
        stop.clone(),
    ));
    let mut gw = env.start_gateway();
    gw.wait_subscribed().await;
    let fleet_stop = CancellationToken::new();
    let fleet = tokio::spawn(fleet::run(
        FleetOptions {
            broker_host: env.ingest.host.clone(),
            broker_port: env.ingest.port,
            estates: 1,
            base: env.estate_id.clone(),
            rate: 50.0,
            alarms_per_mille: 20,
            ..FleetOptions::default()
        },
        fleet_stop.clone(),
    ));

    let (row, stream) = wait_board(
        &board_path,
        "the estate ok with 300 events and no gap",
        Duration::from_secs(60),
        &env.estate_id,
        &env.gateway_id,
        |row, stream| {
            row["state"] == "ok"
                && stream["unique"].as_u64() >= Some(300)
                && stream["gaps"].as_array().is_some_and(|g| g.is_empty())
        },
    )
    .await;
    assert_eq!(row["gateway_id"], env.gateway_id.as_str(), "{row}");
    assert!(row["lag_ms"].as_i64().is_some(), "lag shown: {row}");
    assert!(
        row["reasons"].as_array().is_some_and(|r| r.is_empty()),
        "{row}"
    );
    assert!(stream["max_seq"].as_u64() >= Some(300), "{stream}");

    gw.kill();
    let (row, _) = wait_board(
        &board_path,
        "the estate dark after SIGKILL of its gateway",
        Duration::from_secs(30),
        &env.estate_id,
        &env.gateway_id,
        |row, _| row["state"] == "dark",
    )
    .await;
    let why = row["reasons"][0].as_str().unwrap_or_default().to_owned();
    // The gateway's last will (its link's retained offline state), at once: not the
    // reporting time running out.
    assert!(
        why.starts_with("offline"),
        "the reason names the last will: {row}"
    );

    fleet_stop.cancel();
    let fleet = fleet.await.expect("fleet task").expect("fleet ran");
    assert!(fleet.acked > 0, "{fleet:?}");
    stop.cancel();
    let snap = city.await.expect("consumer task").expect("consumer ran");
    assert_eq!(snap.ledger.decode_errors, 0, "{}", snap.summary());
    assert!(snap.summary().contains("1 dark"), "{}", snap.summary());
}

const TOKEN: &str = "city-board-e2e-token-7d21";

/// Sends a roll call (60 s to answer unless `within` says less) and returns every reply
/// with its id, then the final result.
async fn roll_call(
    opts: SendOptions,
    gateway_id: String,
    within_s: u32,
) -> (pb::CommandResult, Vec<Reply>) {
    let kind = pb::command::Kind::RollCall(pb::RollCall {
        answer_within_s: within_s,
        message: "查岗".into(),
    });
    let cmd = command::build(
        kind,
        &gateway_id,
        "city-op",
        Duration::from_secs(300),
        command::now_ms(),
    );
    let mut replies = Vec::new();
    let r = command::send(&opts, &cmd, Duration::from_secs(60), |r| {
        replies.push(r.clone())
    })
    .await
    .unwrap_or_else(|e| panic!("roll call: {e:#}"));
    (r, replies)
}

/// The roll call the desk lists as pending, once it is there.
async fn pending_roll_call(api: std::net::SocketAddr) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = common::http_get(api, "/api/roll-calls").await.expect("GET");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let pending = v["roll_calls"].as_array().and_then(|a| {
            a.iter()
                .find(|r| r["status"] == "pending")
                .and_then(|r| r["id"].as_str().map(str::to_owned))
        });
        if let Some(id) = pending {
            return id;
        }
        assert!(Instant::now() < deadline, "no pending roll call: {v}");
        sleep(Duration::from_millis(20)).await;
    }
}

fn outcomes(replies: &[Reply]) -> Vec<i32> {
    replies
        .iter()
        .map(|r| match r {
            Reply::Result(r) => r.outcome,
            Reply::Status(_) => -1,
        })
        .collect()
}

/// The whole path of a roll call (查岗) with a real gateway: the city's command over MQTT,
/// the gateway's ACCEPTED, the desk's answer through the API (as the console sends it),
/// and the final result with who answered; one nobody answers ends NO_ANSWER, which the
/// city's tool does not take for OK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roll_call_is_answered_at_the_desk_and_one_left_alone_is_no_answer() {
    let broker = Broker::shared();
    let env = TestEnv::new(broker.clone(), broker.clone());
    let mut gw = common::start_gateway_with(&env, &format!("[api]\ntoken = \"{TOKEN}\"\n"));
    gw.wait_connected().await;
    gw.wait_commands_subscribed().await;
    let opts = SendOptions {
        broker_host: broker.host.clone(),
        broker_port: broker.port,
        client_id: random_client_id("e2e-cmd"),
        prefix: "city/v1".into(),
        estate: env.estate_id.clone(),
    };

    let call = tokio::spawn(roll_call(opts.clone(), env.gateway_id.clone(), 60));
    let id = pending_roll_call(gw.api).await;
    let body = serde_json::json!({ "by": "Wang Fang" }).to_string();
    let auth = format!("Bearer {TOKEN}");
    let (status, reply) = common::http_request(
        gw.api,
        "POST",
        &format!("/api/roll-calls/{id}/answer"),
        &[("Authorization", auth.as_str())],
        &body,
    )
    .await
    .expect("POST answer");
    assert_eq!(status, 200, "{reply}");
    let (result, replies) = call.await.expect("roll call task");
    assert_eq!(result.command_id, id);
    assert_eq!(
        outcomes(&replies),
        [
            pb::CommandOutcome::Accepted as i32,
            pb::CommandOutcome::Ok as i32
        ],
        "ACCEPTED first, then the final result"
    );
    assert!(command::is_ok(&result));
    let Some(pb::command_result::Answer::RollCall(a)) = &result.answer else {
        panic!("no roll-call answer: {result:?}");
    };
    assert_eq!(a.answered_by, "Wang Fang");
    assert!(a.answer_ms > 0, "{a:?}");

    // Nobody at the desk: NO_ANSWER at the deadline, not OK.
    let (result, replies) = roll_call(opts, env.gateway_id.clone(), 1).await;
    assert_eq!(
        outcomes(&replies),
        [
            pb::CommandOutcome::Accepted as i32,
            pb::CommandOutcome::NoAnswer as i32
        ],
        "{result:?}"
    );
    assert!(!command::is_ok(&result));
    drop(gw);
}

/// The contract's repair path end to end (issue 14: a broker that lost acknowledged
/// events): a consumer that was away when the first events went up has a hole in the
/// gateway's stream; with `--repair` it sends `Resend`, the gateway sends them again from
/// its store (they are within `store.resend_window`), and the hole closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_missed_events_has_them_resent_and_the_gap_closes() {
    const EARLY: u64 = 120;
    const LATE: u64 = 40;
    let city_broker = Broker::embedded();
    let mut env = TestEnv::new(Broker::shared(), city_broker.clone());
    // Statuses often, so the consumer soon knows how far the gateway has forwarded.
    env.uplink_extra = "status_interval = \"1s\"".into();
    let mut gw = env.start_gateway();
    gw.wait_connected().await;
    let early = estate_sim::publish::run(env.publish_options(EARLY, 10))
        .await
        .expect("publisher runs");
    assert!(!early.incomplete && early.acked == EARLY, "{early}");
    gw.wait_metrics(
        "the early events forwarded (to nobody: the consumer is not there yet)",
        Duration::from_secs(60),
        |m| m.n("estate_forward_events_total", &[]) >= EARLY,
    )
    .await;

    let board_path = env.dir().join("board.json");
    let stop = CancellationToken::new();
    let city = tokio::spawn(consumer::run(
        ConsumerOptions {
            broker_host: city_broker.host.clone(),
            broker_port: city_broker.port,
            client_id: random_client_id("e2e-city-repair"),
            prefix: "city/v1".into(),
            rules: Rules::default(),
            interval: Duration::from_millis(200),
            json: Some(JsonOut::File(board_path.clone())),
            repair: Some(consumer::RepairOptions {
                after: Duration::from_millis(500),
                every: Duration::from_secs(1),
                ..consumer::RepairOptions::default()
            }),
            until_events: None,
            max_rows: 10,
        },
        stop.clone(),
    ));
    // Events the consumer does see, past the hole.
    let late = estate_sim::publish::run(env.publish_options(LATE, 10))
        .await
        .expect("publisher runs");
    assert!(!late.incomplete && late.acked == LATE, "{late}");

    let (_, stream) = wait_board(
        &board_path,
        "the hole before the consumer came filled by a resend",
        Duration::from_secs(60),
        &env.estate_id,
        &env.gateway_id,
        |_, stream| {
            stream["unique"].as_u64() >= Some(EARLY + LATE)
                && stream["gaps"].as_array().is_some_and(|g| g.is_empty())
        },
    )
    .await;
    assert!(stream["max_seq"].as_u64() >= Some(EARLY + LATE), "{stream}");
    stop.cancel();
    let snap = city.await.expect("consumer task").expect("consumer ran");
    assert!(snap.repair.sent >= 1, "{:?}", snap.repair);
    assert!(snap.repair.resent >= EARLY, "{:?}", snap.repair);
    assert_eq!(snap.repair.not_held, 0, "{:?}", snap.repair);
    drop(gw);
}
