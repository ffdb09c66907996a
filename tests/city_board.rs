//! The reference city consumer (`estate_sim::city::consumer`, behind `estate-sim city`)
//! against a real gateway (issue 14): under the fleet's traffic the estate is *ok* on the
//! board with every event accounted (no gap after dedup); SIGKILL of the gateway turns it
//! *dark* once the reporting time passes without a message (or at once on its last will).
//! The board is read the way a user reads it: from the `--json` file it rewrites. And a
//! roll call's client side over a real broker: ACCEPTED, then the final answer.

mod common;

use std::path::Path;
use std::time::Duration;

use estate_protocols::pb;
use estate_sim::city::board::Rules;
use estate_sim::city::command::{self, Reply, SendOptions};
use estate_sim::city::consumer::{self, ConsumerOptions, JsonOut};
use estate_sim::fleet::{self, FleetOptions};
use estate_sim::publish::random_client_id;
use prost::Message;
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
                reporting_time: Duration::from_secs(3),
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
        Duration::from_secs(60),
        &env.estate_id,
        &env.gateway_id,
        |row, _| row["state"] == "dark",
    )
    .await;
    let why = row["reasons"][0].as_str().unwrap_or_default().to_owned();
    assert!(
        why.starts_with("nothing for") || why.starts_with("offline"),
        "the reason names the silence or the last will: {row}"
    );

    fleet_stop.cancel();
    let fleet = fleet.await.expect("fleet task").expect("fleet ran");
    assert!(fleet.acked > 0, "{fleet:?}");
    stop.cancel();
    let snap = city.await.expect("consumer task").expect("consumer ran");
    assert_eq!(snap.ledger.decode_errors, 0, "{}", snap.summary());
    assert!(snap.summary().contains("1 dark"), "{}", snap.summary());
}

/// Stands in for the gateway's side of the command contract (not on this branch yet):
/// answers every roll call on the real broker with ACCEPTED, then `final_outcome`.
async fn answer_roll_calls(broker: Broker, estate: String, final_outcome: pb::CommandOutcome) {
    use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
    let mut mqtt = MqttOptions::new(random_client_id("e2e-desk"), broker.host, broker.port);
    mqtt.set_clean_session(true);
    let (client, mut ev) = AsyncClient::new(mqtt, 16);
    let commands = format!("city/v1/{estate}/commands");
    let results = format!("city/v1/{estate}/results");
    while let Ok(e) = ev.poll().await {
        match e {
            Event::Incoming(Incoming::ConnAck(_)) => {
                let _ = client.try_subscribe(commands.as_str(), QoS::AtLeastOnce);
            }
            Event::Incoming(Incoming::Publish(p)) if p.topic == commands => {
                let Ok(cmd) = pb::Command::decode(p.payload.as_ref()) else {
                    continue;
                };
                for outcome in [pb::CommandOutcome::Accepted, final_outcome] {
                    let r = pb::CommandResult {
                        command_id: cmd.id.clone(),
                        gateway_id: cmd.gateway_id.clone(),
                        estate_id: estate.clone(),
                        outcome: outcome as i32,
                        answer: (outcome == pb::CommandOutcome::Ok).then(|| {
                            pb::command_result::Answer::RollCall(pb::RollCallAnswer {
                                answered_by: "Wang Fang".into(),
                                answer_ms: 4_200,
                            })
                        }),
                        ..Default::default()
                    };
                    let _ = client.try_publish(
                        results.as_str(),
                        QoS::AtLeastOnce,
                        false,
                        r.encode_to_vec(),
                    );
                }
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roll_call_waits_for_the_final_answer_and_no_answer_is_not_ok() {
    let broker = Broker::embedded();
    for (estate, outcome) in [
        ("e-answered", pb::CommandOutcome::Ok),
        ("e-empty-desk", pb::CommandOutcome::NoAnswer),
    ] {
        let desk = tokio::spawn(answer_roll_calls(broker.clone(), estate.into(), outcome));
        let opts = SendOptions {
            broker_host: broker.host.clone(),
            broker_port: broker.port,
            client_id: random_client_id("e2e-cmd"),
            prefix: "city/v1".into(),
            estate: estate.into(),
        };
        let kind = pb::command::Kind::RollCall(pb::RollCall {
            answer_within_s: 60,
            message: "查岗".into(),
        });
        // The desk may subscribe after the command went out: send until it answers (a
        // new id each time, as a city operator retrying would).
        let deadline = Instant::now() + Duration::from_secs(30);
        let (result, replies) = loop {
            let mut replies = Vec::new();
            let cmd = command::build(
                kind.clone(),
                "gw-1",
                "city-op",
                Duration::from_secs(300),
                command::now_ms(),
            );
            match command::send(&opts, &cmd, Duration::from_secs(2), |r| {
                replies.push(r.clone())
            })
            .await
            {
                Ok(r) => break (r, replies),
                Err(e) => assert!(Instant::now() < deadline, "{e:#}"),
            }
        };
        let outcomes: Vec<i32> = replies
            .iter()
            .map(|r| match r {
                Reply::Result(r) => r.outcome,
                Reply::Status(_) => -1,
            })
            .collect();
        assert_eq!(
            outcomes,
            [pb::CommandOutcome::Accepted as i32, outcome as i32],
            "ACCEPTED first, then the final result"
        );
        assert_eq!(command::is_ok(&result), outcome == pb::CommandOutcome::Ok);
        if outcome == pb::CommandOutcome::Ok {
            assert_eq!(
                command::describe(&result),
                "OK from gw-1 (e-answered): answered by \"Wang Fang\" after 4.2 s"
            );
        }
        desk.abort();
    }
}
