//! Modbus polling benchmark: `cargo bench -p estate-gateway --bench modbus`.
//!
//! 500 simulated Modbus TCP devices (`estate_sim::modbus`, in this process, one listener
//! each) × 30 holding-register points, each polled every second by the real
//! `estate-gateway` binary running as a child process: 15,000 points/s. After a warm-up
//! (connections, first readings stored) it measures over a window:
//!
//! - the gateway's CPU use (utime + stime from `/proc/<pid>/stat`, as % of one core) and
//!   its RSS (`VmRSS` at the end, `VmHWM` peak);
//! - the simulator's own CPU over the same window (this process: 500 servers and the
//!   embedded broker), as the baseline cost of the other end;
//! - whether the schedule was kept (polls received / polls due);
//! - poll jitter from the simulator's request timestamps: the interval between two polls
//!   of a device against the configured 1 s, and each poll against its device's ideal
//!   1 s grid (anchored at its first poll in the window), p50 / p99 / max.
//!
//! `BENCH_DEVICES` (500), `BENCH_POINTS` (30), `BENCH_WARMUP_S` (10), `BENCH_SECONDS` (30)
//! change the load and the window.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use estate_sim::modbus::{BusSpec, DeviceType, Framing, SimFleet};

const GATEWAY_BIN: &str = env!("CARGO_BIN_EXE_estate-gateway");

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces; fields count from after its closing parenthesis.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, utime field 14, stime field 15 (1-based over the line).
    let get = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(14) + get(15)
}

/// A `Vm…` line of /proc/<pid>/status, in KiB.
fn vm_kib(pid: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct GatewayProcess {
    child: Child,
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let devices = env_or("BENCH_DEVICES", 500) as usize;
    let points = env_or("BENCH_POINTS", 30) as u16;
    let warmup = Duration::from_secs(env_or("BENCH_WARMUP_S", 10));
    let window = Duration::from_secs(env_or("BENCH_SECONDS", 30));
    let interval = Duration::from_secs(1);
    println!(
        "modbus bench: {devices} Modbus TCP devices x {points} points every {interval:?} = {} points/s; warm-up {warmup:?}, window {window:?}",
        devices * points as usize
    );

    let specs: Vec<BusSpec> = (0..devices)
        .map(|i| {
            BusSpec::loopback(&format!("b{i}"), Framing::Tcp).device(
                1,
                &format!("d{i}"),
                DeviceType::Bank(points),
            )
        })
        .collect();
    let fleet = SimFleet::start(specs).await.expect("simulator starts");
    let broker = estate_gateway::broker::start(0).expect("embedded broker starts");

    let dir = tempfile::tempdir().expect("tempdir");
    let mut profile = String::from(
        "[[profiles]]\nname = \"bench-30\"\nkind = \"gas\"\ndescription = \"bench: holding registers\"\n",
    );
    for p in 0..points {
        let _ = write!(
            profile,
            "\n[[profiles.points]]\nname = \"p{p}\"\ntable = \"holding\"\naddress = {p}\ntype = \"u16\"\nscale = 0.1\nunit = \"%LEL\"\nreport = {{ deadband = 5.0, max_interval = \"1h\" }}\n"
        );
    }
    std::fs::write(dir.path().join("bench-profile.toml"), profile).expect("write profile");
    let (bh, bp) = (broker.addr.ip(), broker.addr.port());
    let mut cfg = format!(
        "[gateway]\nid = \"bench-mb\"\nestate_id = \"bench0000000000000002\"\n\n[ingest.mqtt]\nhost = \"{bh}\"\nport = {bp}\n\n[uplink]\ndown_alert_after = \"1h\"\n\n[uplink.mqtt]\nhost = \"{bh}\"\nport = {bp}\n\n[modbus]\nprofile_files = [\"bench-profile.toml\"]\n"
    );
    for b in &fleet.buses {
        let _ = write!(
            cfg,
            "\n[[modbus.buses]]\nname = \"{}\"\ntransport = \"tcp\"\nhost = \"127.0.0.1\"\nport = {}\n",
            b.name(),
            b.addr().port()
        );
    }
    for (i, _) in fleet.devices.iter().enumerate() {
        let _ = write!(
            cfg,
            "\n[[devices]]\nid = \"mb-{i}\"\nkind = \"gas\"\nmodbus = {{ bus = \"b{i}\", unit = 1, profile = \"bench-30\", poll_interval = \"1s\", timeout = \"500ms\" }}\n"
        );
    }
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, cfg).expect("write config");

    let log = std::fs::File::create(dir.path().join("gateway.log")).expect("log file");
    let mut child = Command::new(GATEWAY_BIN)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--api-listen", "127.0.0.1:0", "--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn estate-gateway");
    let stdout = child.stdout.take().expect("stdout");
    let gw = GatewayProcess { child };
    let pid = gw.child.id().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let ready = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Ok(l) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if l.starts_with("estate-gateway ready") {
                return true;
            }
        }
        false
    })
    .await
    .expect("ready thread");
    if !ready {
        let log = std::fs::read_to_string(dir.path().join("gateway.log")).unwrap_or_default();
        let tail: Vec<&str> = log
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        panic!(
            "the gateway did not get ready within 60 s:\n{}",
            tail.join("\n")
        );
    }

    tokio::time::sleep(warmup).await;
    let hz = clk_tck();
    let (g0, s0, t0) = (cpu_ticks(&pid), cpu_ticks("self"), Instant::now());
    let marks: Vec<usize> = fleet.buses.iter().map(|b| b.requests_from(0).1).collect();
    tokio::time::sleep(window).await;
    let (g1, s1, t1) = (cpu_ticks(&pid), cpu_ticks("self"), Instant::now());
    let secs = t1.duration_since(t0).as_secs_f64();
    let gw_cpu = (g1 - g0) as f64 / hz / secs * 100.0;
    let sim_cpu = (s1 - s0) as f64 / hz / secs * 100.0;
    let (rss, hwm) = (vm_kib(&pid, "VmRSS:"), vm_kib(&pid, "VmHWM:"));

    // Jitter from the simulator's request timestamps, within the window.
    let started = fleet.buses[0].started();
    let (w0, w1) = (
        t0.duration_since(started).as_secs_f64(),
        t1.duration_since(started).as_secs_f64(),
    );
    let mut deltas = Vec::new();
    let mut grid = Vec::new();
    let mut polls = 0usize;
    let mut answered = 0u64;
    let mut violations = 0usize;
    for (b, from) in fleet.buses.iter().zip(marks) {
        let (reqs, _) = b.requests_from(from);
        let times: Vec<f64> = reqs
            .iter()
            .filter(|r| r.function == 3 && r.address == 0)
            // Each bus has its own start; put every time on the first bus's clock.
            .map(|r| r.at.as_secs_f64() + b.started().duration_since(started).as_secs_f64())
            .filter(|t| *t >= w0 && *t < w1)
            .collect();
        polls += times.len();
        for w in times.windows(2) {
            deltas.push(((w[1] - w[0]) - interval.as_secs_f64()).abs() * 1000.0);
        }
        if let Some(first) = times.first() {
            for (k, t) in times.iter().enumerate() {
                grid.push((t - (first + k as f64 * interval.as_secs_f64())).abs() * 1000.0);
            }
        }
        let s = b.stats();
        answered += s.answered;
        violations += s.violations.len();
    }
    deltas.sort_by(f64::total_cmp);
    grid.sort_by(f64::total_cmp);
    let due = devices as f64 * secs / interval.as_secs_f64();

    println!("window    {secs:.1} s");
    println!(
        "gateway   CPU {gw_cpu:6.1} % of one core   RSS {:.1} MiB (peak {:.1} MiB)   [target: < 25 %]",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    println!("simulator CPU {sim_cpu:6.1} % of one core   (baseline: the other end, 500 servers + broker, same window)");
    println!(
        "schedule  {polls} polls received of {due:.0} due ({:.1} %), {:.0} points/s; {answered} answers in all; {violations} overlap violations",
        polls as f64 / due * 100.0,
        polls as f64 * points as f64 / secs
    );
    println!(
        "jitter    poll interval vs 1 s   p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  ({} intervals)",
        percentile(&deltas, 0.5),
        percentile(&deltas, 0.99),
        deltas.last().copied().unwrap_or(f64::NAN),
        deltas.len()
    );
    println!(
        "jitter    poll vs its 1 s grid   p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        percentile(&grid, 0.5),
        percentile(&grid, 0.99),
        grid.last().copied().unwrap_or(f64::NAN)
    );
    drop(gw);
    fleet.shutdown();
}
