//! Modbus RTU over a real serial port, end to end: the gateway binary opens a
//! pseudo-terminal as its `transport = "rtu"` bus (tokio-serial), and `socat` bridges the
//! other side of the pty to the simulator's RTU-over-TCP server.
//!
//! - a leak at 12.5 m on the simulated rope detector is `LEAK.ALARM` with value 12.5 m
//!   on the alarms lane upstream;
//! - the simulator never saw two transactions in flight on the bus.
//!
//! Needs `socat` on the PATH; without it the test prints "skipped: socat not installed"
//! and passes.

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use estate_protocols::pb::EventState;
use estate_sim::modbus::{BusSpec, DeviceType, Framing, SimFleet};

use common::{Broker, EventTap, Gateway, TestEnv};

/// Whether `socat` can be run.
fn socat_available() -> bool {
    Command::new("socat")
        .arg("-V")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A running `socat` bridging a pty (at `link`) to a TCP address; killed on drop.
struct Socat {
    child: Child,
    log: PathBuf,
}

impl Socat {
    fn start(link: &Path, tcp: std::net::SocketAddr, log: PathBuf) -> Socat {
        let stderr = std::fs::File::create(&log).expect("create socat log");
        let child = Command::new("socat")
            .arg("-d")
            .arg("-d")
            .arg(format!("pty,raw,echo=0,link={}", link.display()))
            .arg(format!("tcp:{tcp}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn socat");
        Socat { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (polling every 10 ms) until `link` exists; panics after `timeout` or when
    /// socat exits first.
    fn wait_for_link(&mut self, link: &Path, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if link.exists() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "socat exited ({status}) before creating {}:\n{}",
                    link.display(),
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "socat did not create {} within {timeout:?}:\n{}",
                    link.display(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Socat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `[modbus]` with every shipped profile, one RTU bus on the serial `device` at 9600
/// baud, and the rope-leak detector at unit 1 on it.
fn serial_toml(device: &Path, kind: &str, profile: &str) -> String {
    let files: Vec<String> = common::shipped_profile_files()
        .iter()
        .map(|p| format!("{:?}", p.display().to_string()))
        .collect();
    let mut s = format!("[modbus]\nprofile_files = [{}]\n", files.join(", "));
    let _ = write!(
        s,
        "\n[[modbus.buses]]\nname = \"serial-bus\"\ntransport = \"rtu\"\ndevice = {:?}\nbaud = 9600\nreconnect_min = \"100ms\"\nreconnect_max = \"500ms\"\n",
        device.display().to_string()
    );
    let _ = write!(
        s,
        "\n[[devices]]\nid = \"mb-serial-leak\"\nkind = {kind:?}\nmodbus = {{ bus = \"serial-bus\", unit = 1, profile = {profile:?}, poll_interval = \"200ms\", timeout = \"500ms\", offline_after = 3 }}\n"
    );
    s
}

/// Waits (polling every 20 ms) until `cond` holds; panics with `what`, the gateway log
/// and the socat log after `timeout` or when the gateway exits.
async fn wait_until(
    gw: &mut Gateway,
    socat: &Socat,
    timeout: Duration,
    what: &str,
    cond: impl Fn() -> bool,
) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if let Some(status) = gw.try_exit_status() {
            panic!(
                "gateway exited ({status}) while waiting for {what}\n{}\nsocat:\n{}",
                gw.log_tail(60),
                socat.log()
            );
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}\n{}\nsocat:\n{}",
                gw.log_tail(60),
                socat.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rope_leak_over_a_serial_port_becomes_leak_alarm_upstream() {
    if !socat_available() {
        common::cannot_run(
            "the serial-port test",
            "socat is not installed (apt-get install socat)",
        );
        return;
    }
    let broker = Broker::shared();
    let mut env = TestEnv::new(broker.clone(), broker);
    env.down_alert_after = "1h".into();

    let fleet = SimFleet::start(vec![BusSpec::loopback("serial-bus", Framing::RtuOverTcp)
        .device(1, "leak", DeviceType::RopeLeak)])
    .await
    .expect("simulator starts");
    let leak = fleet.device("leak");

    let link = env.dir().join("ttyV0");
    let mut socat = Socat::start(&link, leak.addr(), env.dir().join("socat.log"));
    socat.wait_for_link(&link, Duration::from_secs(10));

    let tap = EventTap::start(&env.uplink, &env.estate_id).await;
    let toml = serial_toml(&link, leak.device_type.kind(), leak.device_type.profile());
    let mut gw = common::start_gateway_with(&env, &toml);
    wait_until(
        &mut gw,
        &socat,
        Duration::from_secs(20),
        "the rope detector to be polled over the serial port",
        || leak.request_count() >= 2,
    )
    .await;

    leak.raise_leak(12.5);
    let events = tap
        .wait_for("LEAK.ALARM on the tap", Duration::from_secs(20), |ev| {
            ev.iter()
                .any(|(_, e)| e.code == "LEAK.ALARM" && e.device_id == "mb-serial-leak")
        })
        .await;
    let (topic, e) = events
        .iter()
        .find(|(_, e)| e.code == "LEAK.ALARM" && e.device_id == "mb-serial-leak")
        .expect("found above");
    assert!(
        topic.ends_with("/alarms"),
        "LEAK.ALARM on the alarms lane: {topic}"
    );
    assert_eq!(e.state(), EventState::Active);
    let v = e.value.as_ref().expect("LEAK.ALARM carries the distance");
    assert!(
        (v.value - 12.5).abs() < 1e-6,
        "distance from the word-swapped float: {v:?}"
    );
    assert_eq!(v.unit, "m");

    let s = fleet.buses[0].stats();
    assert!(s.answered >= 2, "answers over the serial port: {s:?}");
    assert_eq!(
        s.max_in_flight, 1,
        "never two transactions in flight on the serial bus: {s:?}"
    );
    assert!(s.violations.is_empty(), "{:?}", s.violations);
    drop(gw);
}
