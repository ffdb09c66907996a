//! Issue 5: a mixed estate — zigbee2mqtt leak sensor, Frigate camera, ISAPI-style camera,
//! access controller, NB-IoT smoke detector — through a real broker. The city platform
//! receives exactly the expected events (codes, states, device ids, locations), no
//! duplicates from repeated full-state reports, the ISAPI alarm is cleared after its
//! silence, and a malformed payload of each format is dead-lettered with a reason that
//! names the format and the field.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use estate_protocols::pb;
use estate_sim::formats::{self, mixed_estate, mixed_estate_config};

use common::{Broker, EventTap, TestEnv};

const ACTIVE: i32 = pb::EventState::Active as i32;
const CLEARED: i32 = pb::EventState::Cleared as i32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_estate_formats_reach_the_city_as_the_expected_events() {
    let broker = Broker::shared();
    let env = TestEnv::new(broker.clone(), broker.clone());
    // Every source's topics under this test's own base, so tests can share a broker.
    let base = env.estate_id.clone();
    let config = format!("{}{}", env.config_toml(), mixed_estate_config(&base, "2s"));
    let path = env.dir().join("gateway.toml");
    std::fs::write(&path, &config).expect("write config");
    let city = env.city().await;
    let tap = EventTap::start(&broker, &env.estate_id).await;
    let mut gw = common::Gateway::start(&path, &env.data_dir(), &env.log_path())
        .unwrap_or_else(|e| panic!("{e:#}\n{}", common::log_tail(&env.log_path(), 60)));
    gw.wait_connected().await;

    let mut raw = env.raw_client().await;
    let steps = mixed_estate(&base);
    // Published back to back: the cadence of repeats does not matter as long as it is
    // faster than the ISAPI silence (2 s here); the silence itself comes after the last.
    for step in &steps {
        raw.publish(&step.msg.topic, step.msg.payload.clone()).await;
    }
    // One malformed payload per format, each naming the field that is wrong.
    let bad: Vec<(String, &[u8], &str)> = vec![
        (format!("{base}/zigbee2mqtt/{}", formats::ZIGBEE_LEAK), br#"{"water_leak":"yes","battery":97}"#, r#"zigbee2mqtt: field "water_leak": expected a boolean, found "yes""#),
        (format!("{base}/frigate/events"), br#"{"type":"new","after":{"id":"x","label":"person"}}"#, r#"frigate: field "after.camera" is missing"#),
        (format!("{base}/isapi/4419b66d2485"), br#"{"macAddress":"44:19:b6:6d:24:85","channelID":1,"eventType":"fielddetection","eventState":"on"}"#, r#"camera-isapi-json: field "eventState": expected "active" or "inactive", found "on""#),
        (format!("{base}/acs/ctl-01/event"), br#"{"controller":"ctl-01","door":1,"code":"forced"}"#, r#"access-control-json: field "code""#),
        (format!("{base}/nbiot/{}", formats::NBIOT_IMEI), br#"{"imei":"868120300000001","state":99}"#, r#"nbiot-smoke-json: field "state": unknown state code 99"#),
    ];
    for (topic, payload, _) in &bad {
        raw.publish(topic, payload.to_vec()).await;
    }
    let published = (steps.len() + bad.len()) as u64;

    // Expected, per device, in order: (code, state, location part).
    let leak = "leak-b1-101";
    let expected: Vec<(&str, Vec<(&str, i32)>)> = vec![
        (
            leak,
            vec![
                ("LEAK.ALARM", ACTIVE),
                ("LEAK.ALARM", CLEARED),
                ("DEV.OFFLINE", ACTIVE),
            ],
        ),
        (
            "cam-north-gate",
            vec![("VID.INTRUSION", ACTIVE), ("VID.INTRUSION", CLEARED)],
        ),
        (
            "cam-b2-perimeter",
            vec![("VID.INTRUSION", ACTIVE), ("VID.INTRUSION", CLEARED)],
        ),
        (
            "door-b3-main",
            vec![("ACS.FORCED_OPEN", ACTIVE), ("ACS.INVALID_CRED", ACTIVE)],
        ),
        (
            "smoke-b4-1201",
            vec![("SMOKE.ALARM", ACTIVE), ("SMOKE.ALARM", CLEARED)],
        ),
    ];
    let expected = Arc::new(expected);
    let want = expected.clone();
    let per_device = |events: &[(String, pb::Event)]| -> BTreeMap<String, Vec<pb::Event>> {
        let mut seen = std::collections::HashSet::new();
        let mut sorted: Vec<&pb::Event> = events
            .iter()
            .map(|(_, e)| e)
            .filter(|e| seen.insert(e.seq))
            .collect();
        sorted.sort_by_key(|e| e.seq);
        let mut out: BTreeMap<String, Vec<pb::Event>> = BTreeMap::new();
        for e in sorted {
            if e.code != "DEV.HEARTBEAT" {
                out.entry(e.device_id.clone()).or_default().push(e.clone());
            }
        }
        out
    };
    let events = tap
        .wait_for(
            "every expected event, the ISAPI clear after 2 s of silence last",
            Duration::from_secs(30),
            move |events| {
                let by = per_device(events);
                want.iter()
                    .all(|(d, codes)| by.get(*d).is_some_and(|got| got.len() >= codes.len()))
            },
        )
        .await;
    let by = per_device(&events);
    for (device, codes) in expected.iter() {
        let got: Vec<(&str, i32)> = by[*device]
            .iter()
            .map(|e| (e.code.as_str(), e.state))
            .collect();
        assert_eq!(
            &got, codes,
            "{device}: events in order (no duplicates from repeats)"
        );
    }
    // Locations come from the config; Frigate's zones are added.
    let loc = |device: &str| by[device][0].location.clone().unwrap_or_default();
    assert_eq!(loc(leak).room, "101");
    assert_eq!(loc("cam-north-gate").zone, "north gate / gate");
    assert_eq!(loc("cam-b2-perimeter").building, "2");
    assert_eq!(loc("smoke-b4-1201").floor, "12");
    assert_eq!(by["smoke-b4-1201"][0].severity, 1);
    assert_eq!(by["door-b3-main"][0].severity, 1, "forced open is critical");
    let r = city.report();
    assert_eq!(r.duplicates, 0, "{r}");
    assert!(r.gaps.is_empty(), "{r}");
    assert_eq!(r.decode_errors, 0, "{r}");
    // Full-state repeats are heartbeats (last seen), not alarms.
    let heartbeats = tap.of(leak, "DEV.HEARTBEAT").len();
    assert_eq!(
        heartbeats, 4,
        "one per unchanged report: dry (baseline), dry, wet repeated twice"
    );

    // The unregistered zigbee smoke sensor is accepted under a stable id, not dropped.
    let unregistered = tap.of("zigbee.b1-102_hall_smoke", "DEV.HEARTBEAT");
    assert_eq!(unregistered.len(), 1);

    let m = gw
        .wait_metrics("every message acknowledged", Duration::from_secs(30), |m| {
            m.n("estate_ingest_acked_total", &[]) >= published
        })
        .await;
    assert_eq!(
        m.n("estate_ingest_received_total", &[]),
        published,
        "{}",
        m.summary()
    );
    assert_eq!(
        m.n("estate_ingest_acked_total", &[]),
        published,
        "{}",
        m.summary()
    );
    assert_eq!(
        m.n("estate_dead_lettered_total", &[]),
        bad.len() as u64,
        "{}",
        m.summary()
    );
    assert_eq!(
        m.n("estate_dead_lettered_total", &[("reason", "bad_field")]),
        bad.len() as u64
    );
    assert!(
        m.n("estate_ingest_unregistered_total", &[]) >= 1,
        "{}",
        m.summary()
    );

    // The dead letters say which format and which field.
    gw.terminate();
    assert!(
        gw.wait_exit(Duration::from_secs(20)).is_some(),
        "gateway stops on SIGTERM"
    );
    let metrics = std::sync::Arc::new(estate_gateway::telemetry::Metrics::new());
    let cfg = estate_config::Config::load(&path).expect("config");
    let (_, reader, _writer) = estate_gateway::store::open(
        &env.data_dir().join("store"),
        estate_gateway::store::StoreOptions::from_config(&cfg),
        metrics,
    )
    .expect("open the store after the gateway stopped");
    let letters = reader.dead_letters(100).expect("dead letters");
    assert_eq!(letters.len(), bad.len(), "{letters:?}");
    for (topic, _, needle) in &bad {
        let letter = letters
            .iter()
            .find(|l| &l.source == topic)
            .unwrap_or_else(|| panic!("no dead letter from {topic}: {letters:?}"));
        assert!(
            letter.reason.contains(needle),
            "{}\nshould contain\n{needle}",
            letter.reason
        );
    }
    city.shutdown().await;
}

/// A LoRaWAN network server's uplinks through a `json-map` source with `seq_field`: the
/// device's frame counter reaches the city as `device_seq` (so a lost uplink shows as a
/// gap in the device's own numbering), and a counter that is not a non-negative integer
/// is dead-lettered naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_map_device_counter_reaches_the_city_as_device_seq() {
    let broker = Broker::shared();
    let env = TestEnv::new(broker.clone(), broker.clone());
    let base = env.estate_id.clone();
    let config = format!(
        r#"{}
[[ingest.sources]]
format = "json-map"
name = "lora"
topics = ["{base}/lora/+/up"]

[ingest.sources.map]
device_id = "/deviceInfo/devEui"
code_field = "/object/alarm"
codes = {{ leak = "LEAK.ALARM" }}
state_field = "/object/active"
seq_field = "/fCnt"
"#,
        env.config_toml()
    );
    let path = env.dir().join("gateway.toml");
    std::fs::write(&path, &config).expect("write config");
    let tap = EventTap::start(&broker, &env.estate_id).await;
    let mut gw = common::Gateway::start(&path, &env.data_dir(), &env.log_path())
        .unwrap_or_else(|e| panic!("{e:#}\n{}", common::log_tail(&env.log_path(), 60)));
    gw.wait_connected().await;

    let mut raw = env.raw_client().await;
    let eui = "a84041000181c4e1";
    let topic = format!("{base}/lora/{eui}/up");
    let uplink = |fcnt: &str, active: bool| {
        format!(
            r#"{{"deviceInfo":{{"devEui":"{eui}"}},"fCnt":{fcnt},"object":{{"alarm":"leak","active":{active}}}}}"#
        )
        .into_bytes()
    };
    // Frame 9 never arrived (radio loss); "x" is a broken network-server payload.
    for (fcnt, active) in [("7", true), ("8", false), ("10", true), (r#""x""#, false)] {
        raw.publish(&topic, uplink(fcnt, active)).await;
    }

    let device = format!("lora.{eui}");
    tap.wait_for(
        "three leak events from the LoRa sensor",
        Duration::from_secs(30),
        |events| {
            let seqs: std::collections::HashSet<u64> = events
                .iter()
                .filter(|(_, e)| e.device_id == device && e.code == "LEAK.ALARM")
                .map(|(_, e)| e.seq)
                .collect();
            seqs.len() >= 3
        },
    )
    .await;
    let mut leaks = tap.of(&device, "LEAK.ALARM");
    leaks.sort_by_key(|(_, e)| e.seq);
    let got: Vec<(Option<u64>, i32)> = leaks.iter().map(|(_, e)| (e.device_seq, e.state)).collect();
    assert_eq!(
        got,
        [(Some(7), ACTIVE), (Some(8), CLEARED), (Some(10), ACTIVE)],
        "the device's own counter, with its gap, reaches the city"
    );
    let m = gw
        .wait_metrics(
            "the broken uplink dead-lettered",
            Duration::from_secs(30),
            |m| m.n("estate_dead_lettered_total", &[("reason", "bad_field")]) >= 1,
        )
        .await;
    assert_eq!(m.n("estate_dead_lettered_total", &[]), 1, "{}", m.summary());
}
