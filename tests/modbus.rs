//! Modbus end to end (issue 3): the real gateway binary polls simulated devices
//! (`estate_sim::modbus`) through the shipped profiles (`config/profiles/*.toml`).
//!
//! - every shipped profile decodes its simulated device, quirks included (`modbus probe`);
//! - a leak on the rope detector is `LEAK.ALARM` with its distance on the alarms lane;
//! - a device that times out, answers garbage, drops the connection or answers exceptions
//!   goes `DEV.OFFLINE` and back `DEV.ONLINE`, and the other devices on its bus keep
//!   being polled; the poller survives every case;
//! - never two transactions in flight on one bus, and adjacent points read in one request;
//! - a coil write reaches the simulated valve and its feedback is read back.

mod common;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use estate_protocols::model::Lane;
use estate_protocols::pb::EventState;
use estate_sim::modbus::{BusSpec, DeviceType, Framing, SimFleet, SimHandle};

use common::{Broker, EventTap, Gateway, TestEnv};

// ---------------------------------------------------------------------------------------
// Config for simulated devices
// ---------------------------------------------------------------------------------------

/// One device in the generated config.
struct Dev<'a> {
    id: String,
    sim: &'a SimHandle,
    bus: String,
    poll: &'a str,
    timeout: &'a str,
    offline_after: u32,
    extra: &'a str,
}

impl<'a> Dev<'a> {
    fn new(id: &str, sim: &'a SimHandle) -> Dev<'a> {
        Dev {
            id: id.into(),
            sim,
            bus: sim.bus().name().into(),
            poll: "200ms",
            timeout: "500ms",
            offline_after: 3,
            extra: "",
        }
    }
}

/// `[modbus]` with every shipped profile, a bus per simulated bus, and the devices.
fn modbus_toml(fleet: &SimFleet, bus_extra: &str, devices: &[Dev<'_>]) -> String {
    let files: Vec<String> = common::shipped_profile_files()
        .iter()
        .map(|p| format!("{:?}", p.display().to_string()))
        .collect();
    let mut s = format!("[modbus]\nprofile_files = [{}]\n", files.join(", "));
    for b in &fleet.buses {
        let transport = match b.framing() {
            Framing::Tcp => "tcp",
            Framing::RtuOverTcp => "rtu-over-tcp",
        };
        let _ = write!(
            s,
            "\n[[modbus.buses]]\nname = {:?}\ntransport = {transport:?}\nhost = \"127.0.0.1\"\nport = {}\nreconnect_min = \"100ms\"\nreconnect_max = \"500ms\"\n{bus_extra}\n",
            b.name(),
            b.addr().port()
        );
    }
    for d in devices {
        let _ = write!(
            s,
            "\n[[devices]]\nid = {:?}\nkind = {:?}\nmodbus = {{ bus = {:?}, unit = {}, profile = {:?}, poll_interval = {:?}, timeout = {:?}, offline_after = {}{} }}\n",
            d.id,
            d.sim.device_type.kind(),
            d.bus,
            d.sim.unit,
            d.sim.device_type.profile(),
            d.poll,
            d.timeout,
            d.offline_after,
            d.extra,
        );
    }
    s
}

fn env() -> TestEnv {
    let broker = Broker::shared();
    let mut env = TestEnv::new(broker.clone(), broker);
    env.down_alert_after = "1h".into();
    env
}

/// Waits (polling every 20 ms) until `cond` holds; panics with `what()` after `timeout`.
async fn wait_until(
    gw: &mut Gateway,
    timeout: Duration,
    what: impl Fn() -> String,
    cond: impl Fn() -> bool,
) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if let Some(status) = gw.try_exit_status() {
            panic!(
                "gateway exited ({status}) while waiting for {}\n{}",
                what(),
                gw.log_tail(60)
            );
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} waiting for {}\n{}",
                what(),
                gw.log_tail(60)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn states(tap: &EventTap, device: &str, code: &str) -> Vec<EventState> {
    tap.of(device, code)
        .iter()
        .map(|(_, e)| e.state())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Probe: every shipped profile decodes its simulated device
// ---------------------------------------------------------------------------------------

/// The value `estate-gateway modbus probe` printed for `point` (the line that starts with
/// the point's name): the decoded value after `=` when the point is scaled, else the raw
/// value after `raw`.
fn probe_value(out: &str, point: &str) -> Option<f64> {
    let line = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some(point))?;
    let after = match line.rsplit_once("= ") {
        Some((_, v)) => v,
        None => line.split_once(" raw ")?.1,
    };
    after.split_whitespace().next()?.parse().ok()
}

fn probe(config: &std::path::Path, device: &str) -> String {
    let config = config.display().to_string();
    let (status, out, err) =
        common::run_gateway_cli(&["modbus", "probe", "--config", &config, "--device", device]);
    assert!(
        status.success(),
        "modbus probe --device {device} failed ({status}):\n{out}\n{err}"
    );
    out
}

#[track_caller]
fn assert_point(out: &str, point: &str, want: f64) {
    let got = probe_value(out, point)
        .unwrap_or_else(|| panic!("probe printed no value for {point}:\n{out}"));
    assert!(
        (got - want).abs() < 1e-3,
        "{point}: decoded {got}, the simulator holds {want}\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shipped_profile_decodes_its_simulated_device() {
    let env = env();
    let specs: Vec<BusSpec> = estate_sim::modbus::demo_fleet(0, Framing::Tcp);
    let fleet = SimFleet::start(specs).await.expect("simulator starts");
    let devs: Vec<Dev<'_>> = fleet
        .devices
        .iter()
        .map(|d| Dev::new(&format!("mb-{}", d.name), d))
        .collect();
    // Every shipped profile has a simulated device (and the other way round).
    let mut shipped: Vec<String> = common::shipped_profile_files()
        .iter()
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    shipped.sort();
    let mut simulated: Vec<String> = fleet
        .devices
        .iter()
        .map(|d| d.device_type.profile().to_owned())
        .collect();
    simulated.sort();
    assert_eq!(
        shipped, simulated,
        "one simulated device per shipped profile"
    );

    // Quirky values: a leak at 12.5 m (integer register 13, word-swapped f32 12.5),
    // 30 %LEL (×10 on the PT495; raw 400 = 400/10 − 10 on TOC-635 channel 3), a fire on
    // panel point 3 and loop detector 5, the valve closed.
    fleet.device("rope-leak").raise_leak(12.5);
    fleet.device("gas-pt495").set_gas_lel(30.0);
    fleet.device("gas-toc635").set_channel_lel(3, 30.0);
    fleet.device("fire-notifier").smoke_fire(3, true);
    fleet.device("smoke-gb26875").smoke_fire(5, true);
    fleet.device("valve").with(|d| {
        d.coil = true;
        d.feedback_from = true;
    });
    let config = common::write_config_with(&env, &modbus_toml(&fleet, "", &devs));

    let out = probe(&config, "mb-rope-leak");
    assert_point(&out, "status", 9.0);
    assert_point(&out, "distance", 13.0);
    assert_point(&out, "distance_f32", 12.5);
    assert_point(&out, "distance_unit", 0.0);
    assert_point(&out, "leak_current", 150.0);
    assert_point(&out, "cable_length", 50.0);
    assert_point(&out, "leg_resistance_1", 2600.0);
    assert_point(&out, "firmware", 301.0);

    let out = probe(&config, "mb-gas-pt495");
    assert_point(&out, "concentration", 30.0);
    assert_point(&out, "status", f64::from(0x0201));
    assert_point(&out, "al1_setpoint", 10.0);
    assert_point(&out, "al2_setpoint", 25.0);

    let out = probe(&config, "mb-gas-toc635");
    assert_point(&out, "channel[1]", 0.0);
    assert_point(&out, "channel[3]", 30.0);
    assert_point(&out, "channel_status[3]", 3.0);
    assert_point(&out, "channel_status[1]", 0.0);

    let out = probe(&config, "mb-fire-notifier");
    assert_point(&out, "point[1]", f64::from(0x1400));
    assert_point(&out, "point[3]", f64::from(0x0C01));
    assert_point(&out, "point[32]", f64::from(0x00FF));
    assert_point(&out, "panel_status", 0.0);

    let out = probe(&config, "mb-smoke-gb26875");
    assert_point(&out, "detector[1]", 1.0);
    assert_point(&out, "detector[5]", 3.0);

    let out = probe(&config, "mb-valve");
    assert_point(&out, "close_command", 1.0);
    assert_point(&out, "closed", 1.0);

    let out = probe(&config, "mb-sounder");
    assert_point(&out, "on", 0.0);

    for b in &fleet.buses {
        let s = b.stats();
        assert!(s.answered >= 1, "{} was read: {s:?}", b.name());
        assert_eq!(s.exceptions, 0, "{}: no exception answers: {s:?}", b.name());
    }
}

// ---------------------------------------------------------------------------------------
// A leak becomes LEAK.ALARM upstream, with its distance
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rope_leak_becomes_leak_alarm_upstream_with_distance() {
    let env = env();
    let fleet = SimFleet::start(vec![BusSpec::loopback("leak-bus", Framing::Tcp).device(
        1,
        "leak",
        DeviceType::RopeLeak,
    )])
    .await
    .expect("simulator starts");
    let leak = fleet.device("leak");
    let city = env.city().await;
    let tap = EventTap::start(&env.uplink, &env.estate_id).await;
    let devs = [Dev::new("mb-leak-pump", leak)];
    let mut gw = common::start_gateway_with(&env, &modbus_toml(&fleet, "", &devs));
    wait_until(
        &mut gw,
        Duration::from_secs(20),
        || "the rope detector to be polled".into(),
        || leak.request_count() >= 2,
    )
    .await;

    leak.raise_leak(12.5);
    let report = city
        .wait_for(
            |r| {
                r.received
                    .iter()
                    .any(|e| e.code == "LEAK.ALARM" && e.device_id == "mb-leak-pump")
            },
            Duration::from_secs(20),
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", gw.log_tail(60)));
    let alarm = report
        .received
        .iter()
        .find(|e| e.code == "LEAK.ALARM")
        .expect("found above");
    assert_eq!(
        alarm.lane,
        Lane::Alarms,
        "LEAK.ALARM is severity 2: {alarm:?}"
    );
    assert_eq!(alarm.severity, 2);
    let events = tap
        .wait_for("LEAK.ALARM on the tap", Duration::from_secs(10), |ev| {
            ev.iter().any(|(_, e)| e.code == "LEAK.ALARM")
        })
        .await;
    let (topic, e) = events
        .iter()
        .find(|(_, e)| e.code == "LEAK.ALARM")
        .expect("found above");
    assert!(topic.ends_with("/alarms"), "{topic}");
    assert_eq!(e.state(), EventState::Active);
    let v = e.value.as_ref().expect("LEAK.ALARM carries the distance");
    assert!(
        (v.value - 12.5).abs() < 1e-6,
        "distance from the word-swapped float: {v:?}"
    );
    assert_eq!(v.unit, "m");

    // Cleared when the leak is gone.
    leak.clear_leak();
    tap.wait_for("LEAK.ALARM cleared", Duration::from_secs(20), |_| {
        states(&tap, "mb-leak-pump", "LEAK.ALARM").contains(&EventState::Cleared)
    })
    .await;
    assert_eq!(fleet.buses[0].stats().max_in_flight, 1);
    city.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// A failing device on a shared bus: offline, online, and the others keep being polled
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_device_goes_offline_and_back_without_stopping_its_bus() {
    let env = env();
    // One RS-485 line behind a serial device server: three units on one listener.
    let fleet = SimFleet::start(vec![BusSpec::loopback("rs485-1", Framing::RtuOverTcp)
        .device(1, "leak", DeviceType::RopeLeak)
        .device(2, "gas", DeviceType::GasPt495)
        .device(3, "smoke", DeviceType::SmokeGb26875)])
    .await
    .expect("simulator starts");
    let bus = fleet.bus("rs485-1");
    let (leak, gas, smoke) = (
        fleet.device("leak"),
        fleet.device("gas"),
        fleet.device("smoke"),
    );
    let tap = EventTap::start(&env.uplink, &env.estate_id).await;
    let mut devs = vec![
        Dev::new("mb-leak", leak),
        Dev::new("mb-gas", gas),
        Dev::new("mb-smoke", smoke),
    ];
    for d in &mut devs {
        d.poll = "100ms";
        d.timeout = "300ms";
        d.offline_after = 2;
        d.extra = ", backoff_max = \"400ms\"";
    }
    let mut gw = common::start_gateway_with(
        &env,
        &modbus_toml(&fleet, "inter_frame_gap = \"2ms\"", &devs),
    );
    wait_until(
        &mut gw,
        Duration::from_secs(20),
        || "every unit polled".into(),
        || leak.request_count() >= 3 && gas.request_count() >= 3 && smoke.request_count() >= 3,
    )
    .await;

    type Inject = fn(&SimHandle);
    let faults: [(&str, Inject); 5] = [
        ("a timeout (answers after 1 s)", |d| {
            d.set_delay(Duration::from_secs(1))
        }),
        ("no answer at all", |d| d.set_silent(true)),
        ("garbage answers", |d| d.answer_garbage(true)),
        ("a dropped connection", |d| d.set_drop(true)),
        ("exception 04 answers", |d| d.answer_exception(Some(4))),
    ];
    for (round, (what, inject)) in faults.iter().enumerate() {
        let round = round + 1;
        inject(gas);
        let what = *what;
        wait_until(
            &mut gw,
            Duration::from_secs(20),
            || format!("DEV.OFFLINE #{round} of the gas detector after {what}"),
            || {
                states(&tap, "mb-gas", "DEV.OFFLINE")
                    .iter()
                    .filter(|s| **s == EventState::Active)
                    .count()
                    >= round
            },
        )
        .await;
        // The others on the bus are still polled while the gas detector fails.
        let (l0, s0) = (leak.request_count(), smoke.request_count());
        wait_until(
            &mut gw,
            Duration::from_secs(10),
            || format!("the leak and smoke units polled during {what}"),
            || leak.request_count() >= l0 + 5 && smoke.request_count() >= s0 + 5,
        )
        .await;
        gas.heal();
        wait_until(
            &mut gw,
            Duration::from_secs(20),
            || format!("DEV.ONLINE #{round} of the gas detector after {what} ended"),
            || tap.of("mb-gas", "DEV.ONLINE").len() >= round,
        )
        .await;
    }
    // A gas alarm still gets through after all that: the poller is alive.
    gas.set_gas_lel(30.0);
    tap.wait_for("GAS.AL2 after the faults", Duration::from_secs(20), |_| {
        !tap.of("mb-gas", "GAS.AL2").is_empty()
    })
    .await;

    for d in ["mb-leak", "mb-smoke"] {
        assert!(
            tap.of(d, "DEV.OFFLINE").is_empty(),
            "{d} shares the bus with the failing device but never failed itself"
        );
    }
    let offline = tap.of("mb-gas", "DEV.OFFLINE");
    assert_eq!(offline.len(), faults.len());
    // A gas detector is life-safety: DEV.OFFLINE is severity 2, on the alarms lane.
    assert!(
        offline.iter().all(|(t, e)| t.ends_with("/alarms")
            && e.severity() == estate_protocols::pb::Severity::Major),
        "{offline:?}"
    );
    let s = bus.stats();
    assert_eq!(
        s.max_in_flight, 1,
        "never two transactions in flight on one bus: {:#?}",
        s.violations
    );
    assert!(
        s.garbage >= 1 && s.dropped >= 1 && s.exceptions >= 1,
        "{s:?}"
    );
    assert!(
        gw.try_exit_status().is_none(),
        "the gateway is still running"
    );
}

// ---------------------------------------------------------------------------------------
// The scheduler: one transaction at a time per bus, adjacent points merged
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_transaction_at_a_time_per_bus_and_merged_reads() {
    let env = env();
    // A busy shared line: every profile but the TCP-only ones, polled fast, two devices
    // slow (but within their timeouts), plus a separate TCP device.
    let fleet = SimFleet::start(vec![
        BusSpec::loopback("rs485-busy", Framing::RtuOverTcp)
            .device(1, "leak", DeviceType::RopeLeak)
            .device(2, "gas", DeviceType::GasPt495)
            .device(3, "toc", DeviceType::GasToc635)
            .device(4, "smoke", DeviceType::SmokeGb26875)
            .device(5, "valve", DeviceType::Valve)
            .device(6, "sounder", DeviceType::Sounder),
        BusSpec::loopback("panel-tcp", Framing::Tcp).device(1, "panel", DeviceType::FireNotifier),
    ])
    .await
    .expect("simulator starts");
    fleet.device("gas").set_delay(Duration::from_millis(30));
    fleet.device("toc").set_delay(Duration::from_millis(20));
    let mut devs: Vec<Dev<'_>> = fleet
        .devices
        .iter()
        .map(|d| Dev::new(&format!("mb-{}", d.name), d))
        .collect();
    for d in &mut devs {
        d.poll = "50ms";
    }
    let mut gw = common::start_gateway_with(
        &env,
        &modbus_toml(&fleet, "inter_frame_gap = \"5ms\"", &devs),
    );
    let leak = fleet.device("leak");
    wait_until(
        &mut gw,
        Duration::from_secs(30),
        || {
            format!(
                "40 polls of the rope detector and 20 of every other device; counts: {:?}",
                fleet
                    .devices
                    .iter()
                    .map(|d| (d.name.clone(), d.request_count()))
                    .collect::<Vec<_>>()
            )
        },
        || leak.request_count() >= 40 && fleet.devices.iter().all(|d| d.request_count() >= 20),
    )
    .await;

    for b in &fleet.buses {
        let s = b.stats();
        assert_eq!(
            s.max_in_flight,
            1,
            "bus {}: never two transactions in flight: {:#?}",
            b.name(),
            s.violations
        );
        assert!(s.violations.is_empty());
        assert_eq!(
            s.exceptions,
            0,
            "bus {}: only mapped addresses read: {s:?}",
            b.name()
        );
    }
    let busy = fleet.bus("rs485-busy").stats();
    let gap = busy.min_gap.expect("transactions followed one another");
    assert!(
        gap >= Duration::from_millis(4),
        "the 5 ms inter-frame gap is kept between transactions (shortest seen {gap:?})"
    );

    // Merged reads: the rope detector's 9 status registers (30001–30009) in one request,
    // its float (38001–38002) in another; 16 loop detectors, 8 TOC channels and their 8
    // status words, 7 PT495 registers, 32 panel points: one request each.
    let reqs = |d: &str| fleet.device(d).requests();
    let shapes = |d: &str| -> std::collections::BTreeSet<(u8, u16, u16)> {
        reqs(d)
            .iter()
            .map(|r| (r.function, r.address, r.count))
            .collect()
    };
    assert_eq!(
        shapes("leak"),
        [(4, 0, 9), (4, 8000, 2)].into_iter().collect(),
        "rope-leak reads"
    );
    assert_eq!(
        shapes("gas"),
        [(3, 0, 7)].into_iter().collect(),
        "gas-pt495 reads"
    );
    assert_eq!(
        shapes("toc"),
        [(4, 1, 8), (4, 3001, 8), (1, 0, 2)].into_iter().collect(),
        "gas-toc635 reads"
    );
    assert_eq!(
        shapes("smoke"),
        [(3, 0, 16)].into_iter().collect(),
        "smoke loop reads"
    );
    assert_eq!(
        shapes("valve"),
        [(1, 0, 1), (2, 0, 1)].into_iter().collect(),
        "valve reads"
    );
    assert_eq!(
        shapes("panel"),
        [(3, 0, 32), (3, 9499, 1)].into_iter().collect(),
        "fire panel reads"
    );
    // Fair: the slow gas detector did not crowd out the rest (each got its polls).
    let counts: Vec<(String, usize)> = fleet
        .devices
        .iter()
        .filter(|d| d.bus().name() == "rs485-busy")
        .map(|d| (d.name.clone(), d.request_count()))
        .collect();
    eprintln!("requests per device on the busy bus: {counts:?}; min gap {gap:?}");
}

// ---------------------------------------------------------------------------------------
// A coil write reaches the valve; its feedback is read back
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coil_write_closes_the_valve_and_its_feedback_is_read_back() {
    use estate_gateway::ingest::modbus::Write;
    let env = env();
    let fleet = SimFleet::start(vec![BusSpec::loopback("valves", Framing::RtuOverTcp)
        .device(7, "valve", DeviceType::Valve)
        .device(8, "leak", DeviceType::RopeLeak)])
    .await
    .expect("simulator starts");
    let valve = fleet.device("valve");
    valve.set_travel(Duration::from_millis(300));
    let tap = EventTap::start(&env.uplink, &env.estate_id).await;
    let devs = [
        Dev::new("mb-valve-main", valve),
        Dev::new("mb-leak-b2", fleet.device("leak")),
    ];
    // The gateway in this process (the public `run` API): linkage writes go through
    // `Running::modbus`, the running buses' schedulers.
    let path = common::write_config_with(&env, &modbus_toml(&fleet, "", &devs));
    let cfg = estate_config::Config::load(&path).expect("generated config is valid");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let opts = estate_gateway::RunOptions {
        data_dir: env.data_dir(),
        grace: Duration::from_millis(200),
        api_listener: Some(std::net::TcpListener::bind("127.0.0.1:0").expect("bind")),
        on_ready: Some(ready_tx),
    };
    let gateway = tokio::spawn(estate_gateway::run(cfg, opts, shutdown.clone()));
    let running = tokio::time::timeout(Duration::from_secs(30), ready_rx)
        .await
        .expect("gateway ready within 30 s")
        .expect("gateway started");
    let deadline = Instant::now() + Duration::from_secs(20);
    while valve.request_count() < 2 {
        assert!(Instant::now() < deadline, "the valve is polled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !valve.coil(0) && !valve.discrete(0),
        "the valve starts open"
    );

    let close = Write::Coil {
        address: 0,
        value: true,
    };
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        running.modbus.write("mb-valve-main", close),
    )
    .await
    .expect("the write is answered within 10 s")
    .expect("the valve confirms the write");
    assert!(
        valve.coil(0),
        "the coil write reached the valve ({outcome:?})"
    );
    assert!(
        valve
            .requests()
            .iter()
            .any(|r| r.function == 5 && r.address == 0),
        "FC05 on coil 0: {:?}",
        valve.requests()
    );
    // The closed feedback follows after 300 ms of travel and the gateway reads it back:
    // a reading of discrete input 0 = 1 upstream.
    let closed_reading = |value: f64| {
        move |ev: &[(String, estate_protocols::pb::Event)]| {
            ev.iter().any(|(_, e)| {
                e.device_id == "mb-valve-main"
                    && e.code == "DEV.READING"
                    && e.source
                        .as_ref()
                        .is_some_and(|s| s.reference.ends_with("discrete:0"))
                    && e.value.as_ref().is_some_and(|v| v.value == value)
            })
        }
    };
    tap.wait_for(
        "the valve's closed feedback (discrete 0 = 1) upstream",
        Duration::from_secs(20),
        closed_reading(1.0),
    )
    .await;

    // Open it again: the feedback follows back to 0.
    let open = Write::Coil {
        address: 0,
        value: false,
    };
    running
        .modbus
        .write("mb-valve-main", open)
        .await
        .expect("the valve confirms the write");
    assert!(!valve.coil(0));
    tap.wait_for(
        "the valve's open feedback (discrete 0 = 0) upstream",
        Duration::from_secs(20),
        closed_reading(0.0),
    )
    .await;
    // A write the device refuses is reported as such (the valve has no coil 5).
    let refused = running
        .modbus
        .write(
            "mb-valve-main",
            Write::Coil {
                address: 5,
                value: true,
            },
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(estate_gateway::ingest::modbus::TxError::Exception { code: 2, .. })
        ),
        "{refused:?}"
    );
    let s = fleet.bus("valves").stats();
    assert_eq!(
        s.max_in_flight, 1,
        "writes and polls take turns on the bus: {:#?}",
        s.violations
    );
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), gateway).await;
}

/// The installer's path: `estate-gateway modbus write` (no daemon) closes a valve, and
/// `modbus probe` reads its feedback back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_write_closes_the_valve_and_probe_reads_the_feedback() {
    let env = env();
    let fleet = SimFleet::start(vec![BusSpec::loopback("valve-tcp", Framing::Tcp).device(
        1,
        "valve",
        DeviceType::Valve,
    )])
    .await
    .expect("simulator starts");
    let valve = fleet.device("valve");
    let devs = [Dev::new("mb-valve-cli", valve)];
    let config = common::write_config_with(&env, &modbus_toml(&fleet, "", &devs));
    let c = config.display().to_string();
    let (status, out, err) = tokio::task::spawn_blocking(move || {
        common::run_gateway_cli(&[
            "modbus",
            "write",
            "--config",
            &c,
            "--device",
            "mb-valve-cli",
            "--coil",
            "0=1",
        ])
    })
    .await
    .expect("cli thread");
    assert!(
        status.success(),
        "modbus write failed ({status}):\n{out}\n{err}"
    );
    assert!(valve.coil(0), "the write reached the valve: {out}");
    let out = probe(&config, "mb-valve-cli");
    assert_point(&out, "close_command", 1.0);
    assert_point(&out, "closed", 1.0);
}
