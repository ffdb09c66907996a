//! Issue 16, an audit that cannot be rewritten unnoticed: a real gateway makes a trail
//! (an SOS raised, acknowledged and closed through the API) and stops; `estate-gateway
//! audit verify` finds the chain intact, with the head the city board saw in the
//! gateway's status. A tamperer then changes one byte of one stored audit entry (sled
//! opened directly, as anyone with the store can): `audit verify` fails naming that
//! entry. A tamperer who recomputes the whole chain passes `audit verify`, but the
//! restarted gateway reports another head at the same `n`, and the board shows the
//! estate's audit history rewritten.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::time::{sleep, Instant};
use tokio_util::sync::CancellationToken;

use estate_gateway::alerts::chain;
use estate_gateway::alerts::model::AuditEntry;
use estate_sim::city::board::Rules;
use estate_sim::city::consumer::{self, ConsumerOptions, JsonOut};
use estate_sim::publish::random_client_id;

use common::{get_json, post_json, run_gateway_cli, Broker, Gateway, TestEnv};

const TOKEN: &str = "test-token-audit-16";
const WAIT: Duration = Duration::from_secs(30);

/// Polls the board file until `pred` holds for this estate's row; fails with the last
/// board seen.
async fn wait_row(path: &Path, estate: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    let mut last = String::new();
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            let row = serde_json::from_str::<Value>(&text).ok().and_then(|b| {
                b["estates"]
                    .as_array()
                    .and_then(|v| v.iter().find(|e| e["estate_id"] == estate).cloned())
            });
            if let Some(row) = row.filter(|r| pred(r)) {
                return row;
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

/// Polls `GET path` until `pred` holds; fails with the last answer.
async fn wait_json(gw: &Gateway, path: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = get_json(gw.api, path).await;
        if pred(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last {path}: {v:#}\n{}",
            gw.log_tail(40)
        );
        sleep(Duration::from_millis(50)).await;
    }
}

/// `audit verify --data-dir DIR`: success, stdout.
fn verify(data_dir: &Path) -> (bool, String) {
    let dir = data_dir.to_str().expect("utf-8 path");
    let (status, out, err) = run_gateway_cli(&["audit", "verify", "--data-dir", dir]);
    assert!(
        err.is_empty() || status.success(),
        "stderr: {err}\nstdout: {out}"
    );
    (status.success(), out)
}

/// The `head: n=N sha256=H` line of a report.
fn head_of(report: &str) -> (u64, String) {
    let line = report
        .lines()
        .find_map(|l| l.strip_prefix("head: n="))
        .unwrap_or_else(|| panic!("no head in: {report}"));
    let (n, hash) = line.split_once(" sha256=").expect("n and hash");
    (n.parse().expect("n"), hash.to_owned())
}

fn stop(gw: &mut Gateway) {
    gw.terminate();
    assert!(
        gw.wait_exit(WAIT).is_some_and(|s| s.success()),
        "clean exit\n{}",
        gw.log_tail(40)
    );
}

/// The store's `alerts` tree, opened as a tamperer would (the gateway stopped).
fn alerts_tree(data_dir: &Path) -> (sled::Db, sled::Tree) {
    let db = sled::Config::new()
        .path(data_dir.join("store"))
        .open()
        .expect("the store opens");
    let tree = db.open_tree("alerts").expect("the alerts tree");
    (db, tree)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_trail_verifies_its_head_goes_upstream_and_a_changed_byte_is_named() {
    let city_broker = Broker::embedded();
    let mut env = TestEnv::new(Broker::shared(), city_broker.clone());
    env.uplink_extra = "status_interval = \"1s\"".into();
    let board: PathBuf = env.dir().join("board.json");
    let stop_city = CancellationToken::new();
    let city = tokio::spawn(consumer::run(
        ConsumerOptions {
            broker_host: city_broker.host.clone(),
            broker_port: city_broker.port,
            client_id: random_client_id("e2e-city-audit"),
            prefix: "city/v1".into(),
            rules: Rules {
                reporting_time: Duration::from_secs(120),
                ..Rules::default()
            },
            interval: Duration::from_millis(200),
            json: Some(JsonOut::File(board.clone())),
            repair: None,
            until_events: None,
            max_rows: 10,
        },
        stop_city.clone(),
    ));
    let config = common::write_config_with(&env, &format!("\n[api]\ntoken = {TOKEN:?}\n"));
    let data_dir = env.data_dir();
    let mut gw = Gateway::start(&config, &data_dir, &env.log_path()).expect("starts");
    gw.wait_subscribed().await;

    // The trail: opened, acknowledged, closed.
    let mut publisher = env.raw_client().await;
    let topic = format!("estate/{}/emergency_button/sos-0307/event", env.estate_id);
    publisher.publish(&topic, r#"{"code":"SOS.PRESSED"}"#).await;
    let listed = wait_json(&gw, "/api/alerts", "the SOS alert", |v| {
        v["alerts"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["code"] == "SOS.PRESSED"))
    })
    .await;
    let id = listed["alerts"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["code"] == "SOS.PRESSED"))
        .and_then(|a| a["id"].as_str())
        .expect("the alert's id")
        .to_owned();
    let base = format!("/api/alerts/{id}");
    let ack = r#"{"by":"wang","note":"on my way"}"#;
    let (status, body) = post_json(gw.api, &format!("{base}/ack"), Some(TOKEN), ack).await;
    assert_eq!(status, 200, "{body}");
    let close = r#"{"by":"li","disposition":"false_alarm","note":"pendant dropped"}"#;
    let (status, body) = post_json(gw.api, &format!("{base}/close"), Some(TOKEN), close).await;
    assert_eq!(status, 200, "{body}");
    let detail = get_json(gw.api, &base).await;
    let trail = detail["audit"].as_array().cloned().unwrap_or_default();
    let actions: Vec<&str> = trail.iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(actions, ["opened", "acknowledged", "closed"], "{detail:#}");
    assert!(
        trail
            .iter()
            .all(|e| e["prev"].as_str().is_some_and(|p| p.len() == 64)),
        "every entry records the previous hash: {detail:#}"
    );

    // The city board sees a head at least as far as this trail's last entry.
    let row = wait_row(
        &board,
        &env.estate_id,
        "a status with the trail's head",
        |r| {
            r["status"]["audit_head_n"].as_u64() >= Some(2)
                && r["status"]["audit_head"]
                    .as_str()
                    .is_some_and(|h| h.len() == 64)
        },
    )
    .await;
    stop(&mut gw);

    let (intact, report) = verify(&data_dir);
    assert!(intact, "{report}");
    eprintln!("audit verify on the trail:\n{report}");
    assert!(report.contains("verdict: intact"), "{report}");
    assert!(report.contains("entries unhashed: 0"), "{report}");
    let checked: u64 = report
        .lines()
        .find_map(|l| l.strip_prefix("entries checked: "))
        .and_then(|n| n.parse().ok())
        .expect("entries checked");
    assert!(checked >= 3, "{report}");
    let (head_n, head) = head_of(&report);
    assert_eq!(
        (
            row["status"]["audit_head_n"].as_u64(),
            row["status"]["audit_head"].as_str()
        ),
        (Some(head_n), Some(head.as_str())),
        "the head upstream is the verified one: {row}\n{report}"
    );

    // One byte of the acknowledgement changed in the store.
    let (db, tree) = alerts_tree(&data_dir);
    let (key, n) = tree
        .scan_prefix(format!("u/{id}/").as_bytes())
        .filter_map(|kv| kv.ok())
        .find(|(_, v)| String::from_utf8_lossy(v).contains("on my way"))
        .map(|(k, _)| {
            let (_, n) = chain::parse_entry_key(&k).expect("an audit key");
            (k, n)
        })
        .expect("the acknowledgement is stored");
    let mut value = tree.get(&key).expect("reads").expect("stored").to_vec();
    let at = value
        .windows(6)
        .position(|w| w == b"my way")
        .expect("the note");
    value[at] = b'M';
    tree.insert(&key, value).expect("rewrites");
    db.flush().expect("flushes");
    drop((tree, db));
    let (intact, report) = verify(&data_dir);
    assert!(!intact, "a changed byte fails: {report}");
    assert!(
        report.contains(&format!("first broken entry: n={n} alert {id}:")),
        "names the entry changed (n={n}): {report}"
    );
    assert!(report.contains("verdict: BROKEN"), "{report}");
    eprintln!("audit verify after one changed byte:\n{report}");

    // A tamperer who knows the hash recomputes the chain from there and the head.
    let (db, tree) = alerts_tree(&data_dir);
    let mut entries: Vec<(u64, String, Vec<u8>)> = tree
        .scan_prefix(b"u/")
        .filter_map(|kv| kv.ok())
        .filter_map(|(k, v)| chain::parse_entry_key(&k).map(|(id, n)| (n, id, v.to_vec())))
        .collect();
    entries.sort_by_key(|e| e.0);
    let mut prev = chain::ZERO;
    for (n, id, json) in entries {
        let mut e: AuditEntry = serde_json::from_slice(&json).expect("an entry");
        e.prev = Some(chain::hex(&prev));
        let json = serde_json::to_vec(&e).expect("json");
        prev = chain::entry_hash(n, &id, &json, &prev);
        tree.insert(format!("u/{id}/{n:016x}"), json)
            .expect("writes");
    }
    let forged = chain::Head {
        n: head_n,
        hash: prev,
    };
    tree.insert(chain::HEAD, &forged.encode()[..])
        .expect("writes");
    db.flush().expect("flushes");
    drop((tree, db));
    let (intact, report) = verify(&data_dir);
    assert!(intact, "locally it verifies: {report}");
    assert_ne!(head_of(&report), (head_n, head.clone()));

    // But the city saw the real head at this n: the estate shows a rewritten history.
    let gw = Gateway::start(&config, &data_dir, &env.log_path()).expect("restarts");
    let row = wait_row(
        &board,
        &env.estate_id,
        "the rewritten history on the board",
        |r| r["state"] == "degraded",
    )
    .await;
    let reasons = row["reasons"].to_string();
    assert!(
        reasons.contains(&format!(
            "audit history rewritten: head n={head_n} {}",
            &head[..12]
        )),
        "{row}"
    );
    drop(gw);
    stop_city.cancel();
    city.await.expect("joins").expect("the city consumer ran");
}
