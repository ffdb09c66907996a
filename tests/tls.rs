//! TLS on both MQTT connections, against a real Mosquitto that requires client
//! certificates (`require_certificate true`), with a CA, server and client certificates
//! made at test time with `rcgen`.
//!
//! - mutual TLS on ingest and uplink: an event published by a TLS client reaches the
//!   city topic, decoded as an `EventBatch`;
//! - a gateway without a client certificate is refused: the uplink never connects and
//!   the log says why;
//! - a gateway that trusts the wrong CA refuses the broker, and the log names the
//!   certificate problem.
//!
//! Skipped, with a printed reason, when `mosquitto` is not installed; under `CI=1` that
//! fails instead (`scripts/test.sh` installs it).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prost::Message as _;
use rumqttc::{AsyncClient, Event, Incoming, QoS};

use common::{reserve_port, unique_id, Broker, Gateway};
use estate_config::{BrokerConfig, TlsConfig};

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Why the TLS tests cannot run here, if they cannot.
fn skip_reason() -> Option<String> {
    if !have("mosquitto") {
        return Some("`mosquitto` is not installed (apt-get install mosquitto)".into());
    }
    None
}

/// Writes one PEM file into the test's folder (the gateway and Mosquitto read files).
fn write_pem(dir: &Path, file: &str, pem: &str) {
    std::fs::write(dir.join(file), pem).unwrap_or_else(|e| panic!("write {file}: {e}"));
}

/// A CA (`{name}-ca.crt`) and, signed by it, a server certificate for 127.0.0.1 and
/// localhost (`{name}-server.crt`) and a client certificate (`{name}-client.crt`), each
/// with its P-256 key beside it (`.key`), valid from now for two days.
fn make_pki(dir: &Path, name: &str) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, SanType,
    };

    let now = time::OffsetDateTime::now_utc();
    let params = |cn: &str, is_ca: IsCa, key_usages: Vec<KeyUsagePurpose>| {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = is_ca;
        p.key_usages = key_usages;
        p.not_before = now;
        p.not_after = now + time::Duration::days(2);
        p
    };

    // keyUsage and basicConstraints are critical in a CA certificate from rcgen.
    let ca_key = KeyPair::generate().expect("CA key");
    let ca_params = params(
        &format!("estate test CA {name}"),
        IsCa::Ca(BasicConstraints::Unconstrained),
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign],
    );
    let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign the CA");
    write_pem(dir, &format!("{name}-ca.key"), &ca_key.serialize_pem());
    write_pem(dir, &format!("{name}-ca.crt"), &ca_cert.pem());
    let ca = Issuer::new(ca_params, ca_key);

    let mut server = params(
        "localhost",
        IsCa::ExplicitNoCa,
        vec![KeyUsagePurpose::DigitalSignature],
    );
    server.subject_alt_names = vec![
        SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
        SanType::DnsName("localhost".try_into().expect("a DNS name")),
    ];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];

    let mut client = params(
        "estate-gateway",
        IsCa::ExplicitNoCa,
        vec![KeyUsagePurpose::DigitalSignature],
    );
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];

    for (leaf, leaf_params) in [("server", server), ("client", client)] {
        let key = KeyPair::generate().expect("leaf key");
        let cert = leaf_params
            .signed_by(&key, &ca)
            .unwrap_or_else(|e| panic!("sign the {leaf} certificate: {e}"));
        write_pem(dir, &format!("{name}-{leaf}.key"), &key.serialize_pem());
        write_pem(dir, &format!("{name}-{leaf}.crt"), &cert.pem());
    }
}

/// A Mosquitto with one TLS listener on loopback that requires a client certificate
/// signed by the `good` CA. Killed on drop.
struct TlsBroker {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl TlsBroker {
    fn start(dir: &Path) -> TlsBroker {
        let port = reserve_port();
        let p = |f: &str| dir.join(f).display().to_string();
        let conf = format!(
            "listener {port} 127.0.0.1\n\
             allow_anonymous true\n\
             persistence false\n\
             max_inflight_messages 1000\n\
             max_queued_messages 0\n\
             cafile {}\ncertfile {}\nkeyfile {}\n\
             require_certificate true\n\
             tls_version tlsv1.2\n",
            p("good-ca.crt"),
            p("good-server.crt"),
            p("good-server.key"),
        );
        let conf_path = dir.join("mosquitto.conf");
        std::fs::write(&conf_path, conf).expect("write mosquitto.conf");
        let log = dir.join("mosquitto.log");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf_path)
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).expect("log file")))
            .spawn()
            .expect("start mosquitto");
        let broker = TlsBroker { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {port} within 10 s:\n{}",
                std::fs::read_to_string(&broker.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        broker
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One test's files: certificates, broker, gateway config.
struct World {
    dir: tempfile::TempDir,
    broker: TlsBroker,
    gateway_id: String,
    estate_id: String,
}

impl World {
    fn new() -> World {
        let dir = tempfile::Builder::new()
            .prefix("estate-tls-")
            .tempdir()
            .expect("temp dir");
        make_pki(dir.path(), "good");
        make_pki(dir.path(), "wrong");
        // Mosquitto drops root privileges to its own user before it reads the files.
        world_readable(dir.path());
        let broker = TlsBroker::start(dir.path());
        World {
            dir,
            broker,
            gateway_id: unique_id("gw-tls"),
            estate_id: unique_id("tls"),
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn tls_toml(&self, ca: &str, with_client_cert: bool) -> String {
        let mut s = format!("ca_file = {:?}\n", self.file(&format!("{ca}-ca.crt")));
        if with_client_cert {
            s += &format!(
                "cert_file = {:?}\nkey_file = {:?}\n",
                self.file("good-client.crt"),
                self.file("good-client.key")
            );
        }
        s
    }

    /// A config whose ingest goes to `ingest` (TLS to our broker when `None`), and whose
    /// uplink is TLS to our broker with the given trust and identity.
    fn write_config(&self, ingest: Option<&Broker>, uplink_ca: &str, uplink_cert: bool) -> PathBuf {
        let ingest_toml = match ingest {
            Some(b) => format!("[ingest.mqtt]\nhost = {:?}\nport = {}\n", b.host, b.port),
            None => format!(
                "[ingest.mqtt]\nhost = \"127.0.0.1\"\nport = {}\nreconnect_max = \"1s\"\n[ingest.mqtt.tls]\n{}",
                self.broker.port,
                self.tls_toml("good", true)
            ),
        };
        let config = format!(
            "[gateway]\nid = {:?}\nestate_id = {:?}\n\n{ingest_toml}\n\
             [uplink.mqtt]\nhost = \"127.0.0.1\"\nport = {}\nreconnect_min = \"100ms\"\nreconnect_max = \"1s\"\n\
             [uplink.mqtt.tls]\n{}",
            self.gateway_id,
            self.estate_id,
            self.broker.port,
            self.tls_toml(uplink_ca, uplink_cert)
        );
        let path = self.file("gateway.toml");
        std::fs::write(&path, config).expect("write config");
        path
    }

    fn start_gateway(&self, config: &Path) -> Gateway {
        let log = self.file("gateway.log");
        Gateway::start(config, &self.file("data"), &log)
            .unwrap_or_else(|e| panic!("{e:#}\n{}", common::log_tail(&log, 40)))
    }

    /// A test-side MQTT client over mutual TLS (the gateway's own option builder).
    async fn client(&self, role: &str) -> (AsyncClient, rumqttc::EventLoop) {
        let cfg = BrokerConfig {
            host: "127.0.0.1".into(),
            port: self.broker.port,
            tls: Some(TlsConfig {
                ca_file: self.file("good-ca.crt"),
                cert_file: Some(self.file("good-client.crt")),
                key_file: Some(self.file("good-client.key")),
            }),
            ..BrokerConfig::default()
        };
        let mut o = estate_gateway::mqtt::options(&cfg, &unique_id(role)).expect("TLS options");
        o.set_clean_session(true);
        AsyncClient::new(o, 16)
    }
}

fn world_readable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let _ = std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o644));
    }
}

/// Polls the gateway's log until it contains `needle` (case-insensitive); returns it.
fn wait_log(gw: &mut Gateway, log: &Path, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.to_lowercase().contains(&needle.to_lowercase()) {
            return text;
        }
        assert!(
            gw.try_exit_status().is_none(),
            "gateway exited: {}",
            gw.log_tail(40)
        );
        assert!(
            Instant::now() < deadline,
            "the gateway log does not mention {needle:?} within {timeout:?}:\n{}",
            gw.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_on_both_connections_delivers_an_event_upstream() {
    if let Some(reason) = skip_reason() {
        common::cannot_run("a TLS test", &reason);
        return;
    }
    let w = World::new();
    let config = w.write_config(None, "good", true);
    let mut gw = w.start_gateway(&config);
    gw.wait_metrics(
        "ingest and uplink connected over mTLS",
        Duration::from_secs(30),
        |m| m.n("estate_ingest_connected", &[]) == 1 && m.n("estate_uplink_connected", &[]) == 1,
    )
    .await;

    // The city side: subscribe over mTLS and wait for the SUBACK before anything is sent.
    let (city, mut city_loop) = w.client("tls-city").await;
    city.subscribe(format!("city/v1/{}/#", w.estate_id), QoS::AtLeastOnce)
        .await
        .expect("queue subscribe");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, city_loop.poll()).await {
            Ok(Ok(Event::Incoming(Incoming::SubAck(_)))) => break,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("city subscriber over mTLS: {e}"),
            Err(_) => panic!("no SUBACK within 10 s"),
        }
    }

    // A sensor publishes over mTLS. Retained, so it reaches the gateway even if its
    // subscription is processed after this publish.
    let (sensor, mut sensor_loop) = w.client("tls-sensor").await;
    let topic = format!("estate/{}/smoke/smoke-tls-1/event", w.estate_id);
    sensor
        .publish(
            &topic,
            QoS::AtLeastOnce,
            true,
            r#"{"code":"SMOKE.ALARM","seq":7}"#,
        )
        .await
        .expect("queue publish");
    let sensor_task = tokio::spawn(async move {
        loop {
            match sensor_loop.poll().await {
                Ok(Event::Incoming(Incoming::PubAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), sensor_task)
        .await
        .expect("sensor PUBACK within 10 s")
        .expect("sensor task")
        .expect("sensor publishes over mTLS");

    let deadline = Instant::now() + Duration::from_secs(20);
    let batch = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, city_loop.poll()).await {
            // The city link's status and health (issue 14) arrive on the same filter.
            Ok(Ok(Event::Incoming(Incoming::Publish(p))))
                if !p.topic.ends_with("/status") && !p.topic.ends_with("/health") =>
            {
                break (p.topic.clone(), p.payload.clone())
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("city subscriber: {e}"),
            Err(_) => panic!(
                "no batch on city/v1/{}/# within 20 s\n{}",
                w.estate_id,
                gw.diagnostics().await
            ),
        }
    };
    assert_eq!(batch.0, format!("city/v1/{}/alarms", w.estate_id));
    let decoded =
        estate_protocols::pb::EventBatch::decode(batch.1).expect("an estate.v1.EventBatch");
    assert_eq!(decoded.gateway_id, w.gateway_id);
    let event = decoded.events.first().expect("one event in the batch");
    assert_eq!(event.code, "SMOKE.ALARM");
    assert_eq!(event.device_id, "smoke-tls-1");
    let _ = sensor.try_disconnect();
    let _ = city.try_disconnect();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_without_a_client_certificate_is_refused() {
    if let Some(reason) = skip_reason() {
        common::cannot_run("a TLS test", &reason);
        return;
    }
    let w = World::new();
    // Ingest on a plain embedded broker, so only the uplink is under test.
    let ingest = Broker::embedded();
    let config = w.write_config(Some(&ingest), "good", false);
    let mut gw = w.start_gateway(&config);
    let log = w.file("gateway.log");
    // Mosquitto rejects the handshake (TLS alert "certificate required"), and the
    // gateway keeps retrying: its log names the certificate and the uplink stays down.
    let text = wait_log(
        &mut gw,
        &log,
        "Uplink connection failed",
        Duration::from_secs(20),
    );
    let failures: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Uplink connection failed"))
        .collect();
    assert!(
        failures
            .iter()
            .any(|l| l.to_lowercase().contains("certificate")),
        "the uplink failure says it is about the certificate: {failures:#?}"
    );
    let m = gw.metrics().await.expect("/metrics");
    assert_eq!(m.n("estate_uplink_connected", &[]), 0, "{}", m.summary());
    assert!(!text.contains("Uplink connected."), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_signed_by_an_unknown_ca_is_refused_with_a_clear_error() {
    if let Some(reason) = skip_reason() {
        common::cannot_run("a TLS test", &reason);
        return;
    }
    let w = World::new();
    let ingest = Broker::embedded();
    // The gateway trusts the `wrong` CA; the broker's certificate is from `good`.
    let config = w.write_config(Some(&ingest), "wrong", true);
    let mut gw = w.start_gateway(&config);
    let log = w.file("gateway.log");
    let text = wait_log(
        &mut gw,
        &log,
        "Uplink connection failed",
        Duration::from_secs(20),
    );
    let failure = text
        .lines()
        .find(|l| l.contains("Uplink connection failed"))
        .unwrap_or_default();
    assert!(
        failure.contains("invalid peer certificate") && failure.contains("UnknownIssuer"),
        "the failure names the certificate problem: {failure}"
    );
    let m = gw.metrics().await.expect("/metrics");
    assert_eq!(m.n("estate_uplink_connected", &[]), 0, "{}", m.summary());
}
