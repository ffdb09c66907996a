//! Config loading: any text either validates or is refused with located problems, never
//! a panic; a config that validates builds every stage that reads it.

use std::time::{Duration, Instant};

use estate_config::Config;
use estate_gateway::ingest::formats::Sources;
use estate_gateway::ingest::modbus::Modbus;

/// Checks one config text.
pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    // Located beside the shipped config, so `profile_files = ["profiles/…"]` finds the
    // shipped profiles.
    let origin = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/fuzz.toml");
    match Config::from_toml_str(&text, origin) {
        Ok(cfg) => built(&cfg),
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an error with no problem");
            let _ = errors.to_string();
        }
    }
}

fn built(cfg: &Config) {
    let sources = Sources::new(cfg);
    let _ = sources.filters();
    let _ = sources.tick_every_ms();
    Modbus::new(cfg).expect("a validated config names only known buses and profiles");
    let _ = cfg.warnings();
    // The stages add these to `Instant::now()` (the Modbus scheduler, its link, the store
    // writer, the forwarder): a value that validates must not overflow it.
    let now = Instant::now();
    let mut durations: Vec<(&str, Duration)> = vec![
        ("store.batch_linger", cfg.store.batch_linger),
        ("uplink.down_alert_after", cfg.uplink.down_alert_after),
        ("uplink.mqtt.reconnect_max", cfg.uplink.mqtt.reconnect_max),
        ("ingest.mqtt.reconnect_max", cfg.ingest.mqtt.reconnect_max),
    ];
    for b in &cfg.modbus.buses {
        durations.push(("modbus.buses.reconnect_max", b.reconnect_max));
    }
    for d in &cfg.devices {
        if let Some(m) = &d.modbus {
            durations.push(("devices.modbus.poll_interval", m.poll_interval));
            durations.push(("devices.modbus.backoff_max", m.backoff_max));
            durations.push(("devices.modbus.timeout", m.timeout));
        }
    }
    for (key, d) in durations {
        assert!(
            now.checked_add(d).is_some(),
            "{key} = {d:?} validates but overflows the clock"
        );
    }
}
