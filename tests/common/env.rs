//! Per-test identity, config and temp dir ([`TestEnv`]).

#[allow(unused_imports)]
use super::*;

/// A fresh `{prefix}{8 hex digits}`: only `[A-Za-z0-9_-]`, safe in topics and client ids.
pub fn unique_id(prefix: &str) -> String {
    format!("{prefix}{:08x}", rand::random::<u32>())
}

/// One test's world: temp dir, ids, brokers, and the gateway config written from them.
#[derive(Debug)]
pub struct TestEnv {
    dir: Option<tempfile::TempDir>,
    pub gateway_id: String,
    pub estate_id: String,
    pub ingest: Broker,
    pub uplink: Broker,
    /// `uplink.down_alert_after`.
    pub down_alert_after: String,
    /// Extra TOML appended to the `[uplink]` section (e.g. `max_batch_events = 50`).
    pub uplink_extra: String,
    /// `alerts.forward`: alert changes go upstream as `ALERT.UPDATE` events. Off by
    /// default here, because most tests assert the exact stream of sensor events the
    /// city receives; `tests/alerts.rs` turns it on and checks the two together.
    pub alerts_forward: bool,
}

impl TestEnv {
    pub fn new(ingest: Broker, uplink: Broker) -> TestEnv {
        let dir = tempfile::Builder::new()
            .prefix("estate-e2e-")
            .tempdir()
            .expect("temp dir");
        TestEnv {
            dir: Some(dir),
            gateway_id: unique_id("gw-t"),
            estate_id: unique_id("t"),
            ingest,
            uplink,
            down_alert_after: "1s".into(),
            uplink_extra: String::new(),
            alerts_forward: false,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("temp dir").path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir().join("gateway.log")
    }

    /// The gateway config for this test, as TOML. The devices are the simulator's demo
    /// estate, so simulated events arrive as registered devices.
    pub fn config_toml(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            r#"[gateway]
id = "{gw}"
estate_id = "{estate}"

[ingest.mqtt]
host = "{ih}"
port = {ip}
reconnect_min = "100ms"
reconnect_max = "1s"

[uplink]
down_alert_after = "{down}"
{extra}

[uplink.mqtt]
host = "{uh}"
port = {up}
reconnect_min = "100ms"
reconnect_max = "1s"

[alerts]
forward = {fwd}
"#,
            gw = self.gateway_id,
            estate = self.estate_id,
            ih = self.ingest.host,
            ip = self.ingest.port,
            down = self.down_alert_after,
            extra = self.uplink_extra,
            uh = self.uplink.host,
            up = self.uplink.port,
            fwd = self.alerts_forward,
        );
        for d in demo_devices() {
            let l = &d.location;
            let parts: Vec<String> = [
                ("building", &l.building),
                ("unit", &l.unit),
                ("floor", &l.floor),
                ("room", &l.room),
                ("zone", &l.zone),
            ]
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k} = {v:?}"))
            .collect();
            let _ = write!(
                s,
                "\n[[devices]]\nid = {:?}\nkind = {:?}\nlocation = {{ {} }}\n",
                d.id,
                d.kind.as_str(),
                parts.join(", ")
            );
        }
        s
    }

    /// Writes the config into the temp dir and returns its path.
    pub fn write_config(&self) -> PathBuf {
        let path = self.dir().join("gateway.toml");
        std::fs::write(&path, self.config_toml()).expect("write config");
        path
    }

    /// Writes the config and starts the gateway on this test's data dir.
    pub fn start_gateway(&self) -> Gateway {
        let config = self.write_config();
        Gateway::start(&config, &self.data_dir(), &self.log_path())
            .unwrap_or_else(|e| panic!("{e:#}\n{}", log_tail(&self.log_path(), 60)))
    }

    /// Publisher options for `count` native events to this test's estate on the ingest
    /// broker, as fast as PUBACK flow control allows.
    pub fn publish_options(&self, count: u64, alarms: u64) -> PublishOptions {
        PublishOptions {
            broker_host: self.ingest.host.clone(),
            broker_port: self.ingest.port,
            client_id: random_client_id("e2e-pub"),
            estate_id: self.estate_id.clone(),
            count,
            alarms,
            drain_timeout: Duration::from_secs(60),
            ..PublishOptions::default()
        }
    }

    /// A city-platform recorder subscribed to this test's estate on the uplink broker.
    pub async fn city(&self) -> CityRecorder {
        self.city_on(&self.uplink).await
    }

    pub async fn city_on(&self, broker: &Broker) -> CityRecorder {
        CityRecorder::start(CityOptions {
            broker_host: broker.host.clone(),
            broker_port: broker.port,
            client_id: random_client_id("e2e-city"),
            topic_filter: format!("city/v1/{}/#", self.estate_id),
            ..CityOptions::default()
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "city recorder on {} broker {}: {e:#}",
                broker.kind,
                broker.addr()
            )
        })
    }

    /// A raw MQTT client on the ingest broker (for hand-made payloads).
    pub async fn raw_client(&self) -> RawPublisher {
        RawPublisher::connect(&self.ingest).await
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!("test failed; its files are kept in {}", kept.display());
            }
        }
    }
}
