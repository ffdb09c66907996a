//! Modbus RTU over a real serial port, end to end: the gateway binary opens a
//! pseudo-terminal as its `transport = "rtu"` bus (tokio-serial), and the test bridges the
//! pty's master to the simulator's RTU-over-TCP server.
//!
//! - a leak at 12.5 m on the simulated rope detector is `LEAK.ALARM` with value 12.5 m
//!   on the alarms lane upstream;
//! - the simulator never saw two transactions in flight on the bus.
//!
//! The pty comes from the kernel through rustix (no external tool), so the test always runs.

mod common;

use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};
use rustix::pty::OpenptFlags;
use rustix::termios::OptionalActions;

use estate_protocols::pb::EventState;
use estate_sim::modbus::{BusSpec, DeviceType, Framing, SimFleet};

use common::{Broker, EventTap, Gateway, TestEnv};

/// A serial line made of a pseudo-terminal pair: the gateway opens the slave at `path`,
/// and the master is bridged, byte for byte both ways, to a TCP address (the simulator's
/// RTU-over-TCP server) by two threads doing blocking reads. The bridge stops on drop.
struct SerialLine {
    path: PathBuf,
    /// Held open for the whole test: while no one has the slave open the master reads
    /// EIO, and this keeps the line up (and its raw mode) around the gateway's opens.
    _slave: OwnedFd,
    /// Shut down on drop, which ends the simulator → gateway thread; the other one ends
    /// when the slave is closed by everyone (EIO) or the TCP write fails.
    tcp: TcpStream,
    /// What the bridge did: bytes each way and how each direction ended.
    log: Arc<Mutex<String>>,
}

impl SerialLine {
    fn start(tcp: std::net::SocketAddr) -> std::io::Result<SerialLine> {
        let master =
            rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
        rustix::pty::grantpt(&master)?;
        rustix::pty::unlockpt(&master)?;
        let path = PathBuf::from(std::ffi::OsString::from_vec(
            rustix::pty::ptsname(&master, Vec::new())?.into_bytes(),
        ));
        let slave = rustix::fs::open(
            &path,
            OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        // Raw (cfmakeraw): no echo, no CR/LF translation, no line editing; an RTU frame
        // holds any byte.
        let mut termios = rustix::termios::tcgetattr(&slave)?;
        termios.make_raw();
        rustix::termios::tcsetattr(&slave, OptionalActions::Now, &termios)?;

        let tcp = TcpStream::connect(tcp)?;
        let log = Arc::new(Mutex::new(String::new()));
        let master = File::from(master);
        // Gateway → simulator, and simulator → gateway.
        pump(
            "pty → tcp",
            master.try_clone()?,
            tcp.try_clone()?,
            log.clone(),
        )?;
        pump("tcp → pty", tcp.try_clone()?, master, log.clone())?;
        Ok(SerialLine {
            path,
            _slave: slave,
            tcp,
            log,
        })
    }

    fn log(&self) -> String {
        let ended = self.log.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if ended.is_empty() {
            "bridge running both ways".into()
        } else {
            ended
        }
    }
}

impl Drop for SerialLine {
    fn drop(&mut self) {
        let _ = self.tcp.shutdown(std::net::Shutdown::Both);
    }
}

/// Copies `from` to `to` on a thread of its own until either side fails or ends, then
/// notes in `log` how many bytes went and why it stopped.
fn pump(
    name: &'static str,
    mut from: impl Read + Send + 'static,
    mut to: impl Write + Send + 'static,
    log: Arc<Mutex<String>>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let mut buf = [0u8; 512];
            let mut total = 0usize;
            let end = loop {
                let n = match from.read(&mut buf) {
                    Ok(0) => break "end of stream".to_string(),
                    Ok(n) => n,
                    Err(e) => break format!("read: {e}"),
                };
                if let Err(e) = to.write_all(&buf[..n]) {
                    break format!("write: {e}");
                }
                total += n;
            };
            let line = format!("{name}: {total} bytes, then {end}\n");
            log.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_str(&line);
        })
        .map(drop)
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
/// and the bridge's log after `timeout` or when the gateway exits.
async fn wait_until(
    gw: &mut Gateway,
    line: &SerialLine,
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
                "gateway exited ({status}) while waiting for {what}\n{}\nserial line:\n{}",
                gw.log_tail(60),
                line.log()
            );
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}\n{}\nserial line:\n{}",
                gw.log_tail(60),
                line.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rope_leak_over_a_serial_port_becomes_leak_alarm_upstream() {
    let broker = Broker::shared();
    let mut env = TestEnv::new(broker.clone(), broker);
    env.down_alert_after = "1h".into();

    let fleet = SimFleet::start(vec![BusSpec::loopback("serial-bus", Framing::RtuOverTcp)
        .device(1, "leak", DeviceType::RopeLeak)])
    .await
    .expect("simulator starts");
    let leak = fleet.device("leak");

    let line = SerialLine::start(leak.addr()).expect("a pseudo-terminal bridged to the simulator");

    let tap = EventTap::start(&env.uplink, &env.estate_id).await;
    let toml = serial_toml(
        &line.path,
        leak.device_type.kind(),
        leak.device_type.profile(),
    );
    let mut gw = common::start_gateway_with(&env, &toml);
    wait_until(
        &mut gw,
        &line,
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
