//! Decoder throughput per source format (pure decoding, no broker, no store): how many
//! messages per second one core turns into events.
//!
//! ```sh
//! cargo bench -p estate-gateway --bench formats
//! ```

use std::time::Instant;

use estate_config::Config;
use estate_gateway::ingest::formats::Sources;
use estate_sim::formats as sim;

fn main() {
    let base = "";
    let cfg_text = format!(
        "[gateway]\nid = \"gw-bench\"\nestate_id = \"E1\"\n{}",
        sim::mixed_estate_config(base, "5s")
    );
    let cfg = match Config::from_toml_str(&cfg_text, "bench.toml") {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let dry = sim::ZigbeeState {
        water_leak: Some(false),
        battery: 97,
        linkquality: 120,
        ..Default::default()
    };
    let cases: Vec<(&str, Vec<sim::Msg>)> = vec![
        (
            "native",
            vec![sim::Msg {
                topic: "estate/E1/smoke/smoke-1/event".into(),
                payload: br#"{"code":"SMOKE.ALARM","state":"active","ts":1764187200000,"seq":1}"#
                    .to_vec(),
                retain: false,
            }],
        ),
        (
            "zigbee2mqtt (unchanged full state)",
            vec![sim::zigbee_state(base, sim::ZIGBEE_LEAK, &dry)],
        ),
        (
            "frigate (update)",
            vec![
                sim::frigate_event(
                    base,
                    "new",
                    "e1",
                    sim::FRIGATE_CAMERA,
                    "person",
                    &["gate"],
                    1.0,
                ),
                sim::frigate_event(
                    base,
                    "update",
                    "e1",
                    sim::FRIGATE_CAMERA,
                    "person",
                    &["gate"],
                    1.0,
                ),
            ],
        ),
        (
            "camera-isapi-json (repeat)",
            vec![sim::isapi_alarm(
                base,
                sim::ISAPI_MAC,
                1,
                "fielddetection",
                true,
                "2026-11-26T20:00:05+08:00",
            )],
        ),
        (
            "access-control-json",
            vec![sim::acs_event(
                base,
                sim::ACS_CONTROLLER,
                1,
                0x1b,
                "3081234567",
            )],
        ),
        (
            "nbiot-smoke-json",
            vec![sim::nbiot_state(
                base,
                sim::NBIOT_IMEI,
                7,
                87,
                1_764_187_200_000,
            )],
        ),
    ];
    const N: usize = 200_000;
    println!("{:<36} {:>12} {:>10}", "format", "msgs/s", "µs/msg");
    for (name, msgs) in cases {
        let mut sources = Sources::new(&cfg);
        // Warm up (and open the Frigate incident so the loop measures updates).
        for m in &msgs {
            let _ = sources.decode(&m.topic, &m.payload, 0);
        }
        let m = &msgs[msgs.len() - 1];
        let start = Instant::now();
        let mut events = 0usize;
        for i in 0..N {
            match sources.decode(&m.topic, &m.payload, i as i64) {
                Ok(d) => events += d.events.len(),
                Err(e) => panic!("{name}: {e}"),
            }
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{name:<36} {:>12.0} {:>10.2}   ({events} events)",
            N as f64 / secs,
            secs * 1e6 / N as f64
        );
    }
}
