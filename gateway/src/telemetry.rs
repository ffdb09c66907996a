//! Metrics (Prometheus text via prometheus-client) and log set-up.
//!
//! One [`Metrics`] is created at start-up and shared by every stage through an `Arc`;
//! stages only increment, `/metrics` encodes.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use estate_protocols::model::Lane;

/// A store lane, as metrics label it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LaneLabel {
    /// `alarms` or `events`.
    pub lane: &'static str,
}

impl From<Lane> for LaneLabel {
    fn from(l: Lane) -> Self {
        LaneLabel { lane: l.as_str() }
    }
}

/// Why an input was dead-lettered or an API connection refused or closed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// A short fixed word (a `DecodeReason`, `command`, `connections`, `idle_timeout`, …),
    /// never free text, so the label set stays small.
    pub reason: &'static str,
}

/// What became of a camera's push (`ingest/camera_push/`), or of its snapshots.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PushResultLabel {
    /// Requests: `accepted`, `dead_lettered`, `unauthorized` (wrong credentials),
    /// `challenged` (none, or a stale nonce: a digest exchange's first leg), `too_large`,
    /// `bad_request`, `not_stored`. Snapshots: `kept` (in the event's raw bytes) or `dropped`.
    pub result: &'static str,
}

/// A long-running stage, for its restarts (lib.rs, "Supervised stages").
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    /// The restarted stage: `alerts` or `modbus`.
    pub stage: &'static str,
}

/// An eviction under the disk budget: which lane, and whether it lost data.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EvictLabel {
    /// `alarms` or `events`.
    pub lane: &'static str,
    /// `forwarded` (already delivered upstream: housekeeping) or `unforwarded` (data loss).
    pub kind: &'static str,
}

/// A city command's result (`ok`, `refused`, `expired`, `duplicate`, `failed`,
/// `no_answer`, `accepted`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// One of the outcomes above.
    pub outcome: &'static str,
}

/// A Modbus device: its bus and id.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModbusDeviceLabel {
    /// The bus's name (`[[modbus.buses]] name`).
    pub bus: String,
    /// The device's id (`[[devices]] id`).
    pub device: String,
}

/// A failed Modbus transaction: `kind` is `timeout`, `exception` (the device answered
/// with an exception code), `transport` (connection or port failure) or `decode` (an
/// answer that does not fit the request or the profile).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModbusErrorLabel {
    /// The bus's name.
    pub bus: String,
    /// The device's id.
    pub device: String,
    /// One of the kinds above.
    pub kind: &'static str,
}

/// A Modbus bus (one TCP connection or serial port).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModbusBusLabel {
    /// The bus's name (`[[modbus.buses]] name`).
    pub bus: String,
}

/// A Modbus write: `result` is `ok`, `exception`, `timeout`, `transport` or `decode`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModbusWriteLabel {
    /// The bus's name.
    pub bus: String,
    /// The device's id.
    pub device: String,
    /// One of the results above.
    pub result: &'static str,
}

/// Constructor of the Modbus round-trip histograms: 1 ms … ~4 s.
pub type HistogramFn = fn() -> Histogram;

fn modbus_round_trip_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 13,
    ))
}

/// Every metric the gateway exports. Names are prefixed `estate_` on export.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// MQTT messages received on the ingest subscription, before decoding
    /// (`estate_ingest_received_total`).
    pub ingest_received: Counter,
    /// Events from devices not in `[[devices]]`; they are accepted anyway.
    pub ingest_unregistered: Counter,
    /// Messages acknowledged to the ingest broker, each after its event or dead letter
    /// was durable.
    pub ingest_acked: Counter,
    /// 1 while connected to the ingest broker and subscribed, else 0.
    pub ingest_connected: Gauge,
    /// Inputs kept as dead letters instead of events, by reason (see [`Metrics::dead_letter`]).
    pub dead_lettered: Family<ReasonLabel, Counter>,
    /// Events committed (flushed and fdatasync'ed), by lane.
    pub store_committed: Family<LaneLabel, Counter>,
    /// Events evicted to stay within `store.disk_budget`, by lane and whether they had
    /// been forwarded.
    pub store_evicted: Family<EvictLabel, Counter>,
    /// Group commits that failed: none of their inputs was acknowledged, the broker
    /// redelivers them.
    pub store_errors: Counter,
    /// Inputs whose group could not be committed (a full disk): not acknowledged.
    pub store_not_stored: Counter,
    /// Free bytes on the data folder's filesystem.
    pub store_disk_free: Gauge,
    /// Real bytes the store's folder takes on disk (what `store.disk_budget` bounds).
    pub store_disk_bytes: Gauge,
    /// Telemetry messages acknowledged to the broker unstored while the disk was full.
    pub ingest_acked_unstored: Counter,
    /// Seconds from an input's receipt to its durable commit (buckets 50 µs … ~1.6 s).
    pub store_commit_latency: Histogram,
    /// Inputs per group commit (one flush and fdatasync each; buckets 1 … 2048).
    pub store_group_size: Histogram,
    /// Logical bytes of stored events, by lane (not their size on disk).
    pub store_stored_bytes: Family<LaneLabel, Gauge>,
    /// Events the uplink broker acknowledged (PUBACK), by lane.
    pub forward_events: Family<LaneLabel, Counter>,
    /// `EventBatch` messages the uplink broker acknowledged, by lane.
    pub forward_batches: Family<LaneLabel, Counter>,
    /// Committed events not yet acknowledged upstream, by lane.
    pub forward_backlog: Family<LaneLabel, Gauge>,
    /// Events forwarded shortened to fit one uplink packet (raw bytes, then free text).
    pub forward_truncated: Family<LaneLabel, Counter>,
    /// Events given up on: refused by the uplink client even as an envelope, or too big
    /// for a packet with everything cut. Each is dead-lettered and raises `GW.UPLINK_REFUSED`.
    pub forward_dead_lettered: Family<LaneLabel, Counter>,
    /// Publishes the uplink client refused (the connection is rebuilt after each).
    pub uplink_refused: Counter,
    /// 1 while the uplink (city broker) connection of the forwarder is up, else 0.
    pub uplink_connected: Gauge,
    /// 1 while the city link connection (status and commands) is up.
    pub link_connected: Gauge,
    /// Results the gateway sent for city commands, by outcome.
    pub link_results: Family<OutcomeLabel, Counter>,
    /// Completed Modbus polls (every read of the device succeeded and decoded).
    pub modbus_polls: Family<ModbusDeviceLabel, Counter>,
    /// Failed Modbus transactions, by kind.
    pub modbus_errors: Family<ModbusErrorLabel, Counter>,
    /// Round trip of one Modbus transaction, per bus.
    pub modbus_round_trip: Family<ModbusBusLabel, Histogram, HistogramFn>,
    /// Duration of one whole poll of a device (all its reads), per device.
    pub modbus_poll_duration: Family<ModbusDeviceLabel, Histogram, HistogramFn>,
    /// 1 while the device answers, 0 once it is reported offline.
    pub modbus_device_online: Family<ModbusDeviceLabel, Gauge>,
    /// 1 while the bus has an open connection or serial port.
    pub modbus_bus_connected: Family<ModbusBusLabel, Gauge>,
    /// Connections or serial ports (re)opened, per bus.
    pub modbus_connects: Family<ModbusBusLabel, Counter>,
    /// Writes (linkage), by result.
    pub modbus_writes: Family<ModbusWriteLabel, Counter>,
    /// Open (not closed) local alerts.
    pub alerts_open: Gauge,
    /// Local alerts opened.
    pub alerts_opened: Counter,
    /// Committed events handed to the alert engine but not handled yet.
    pub alerts_backlog: Gauge,
    /// Stages restarted in place after a failure (lib.rs, "Supervised stages").
    pub stage_restarts: Family<StageLabel, Counter>,
    /// HTTP connections open on the API (live streams included).
    pub api_connections: Gauge,
    /// API connections or live streams refused over their cap (`reason`: `connections`,
    /// `streams`), and connections closed by a timeout (`header_timeout`, `idle_timeout`).
    pub api_closed: Family<ReasonLabel, Counter>,
    /// Console sign-ins by result (`reason`: `ok`, `refused` for a wrong name or password,
    /// `locked` for an attempt while the account or address is locked; issue 16).
    pub api_sign_ins: Family<ReasonLabel, Counter>,
    /// Lockouts begun after repeated failed sign-ins (`reason`: `account`, `address`).
    pub api_lockouts: Family<ReasonLabel, Counter>,
    /// Camera push requests by result (see [`PushResultLabel`]).
    pub camera_push_requests: Family<PushResultLabel, Counter>,
    /// Snapshots of pushed camera alarms, kept in the event's raw bytes or dropped for
    /// `ingest.raw_limit`.
    pub camera_push_images: Family<PushResultLabel, Counter>,
    /// What `/healthz` reports beyond the counters: the conditions stages raise.
    pub health: crate::health::Health,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric at zero, registered under the `estate_` prefix with its HELP text.
    pub fn new() -> Self {
        let mut m = Metrics {
            ingest_received: Counter::default(),
            ingest_unregistered: Counter::default(),
            ingest_acked: Counter::default(),
            ingest_connected: Gauge::default(),
            dead_lettered: Family::default(),
            store_committed: Family::default(),
            store_evicted: Family::default(),
            store_errors: Counter::default(),
            store_not_stored: Counter::default(),
            store_disk_free: Gauge::default(),
            store_disk_bytes: Gauge::default(),
            ingest_acked_unstored: Counter::default(),
            // 50 µs … ~1.6 s (16 buckets doubling from 50 µs)
            store_commit_latency: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.000_05, 2.0, 16),
            ),
            store_group_size: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(1.0, 2.0, 12),
            ),
            store_stored_bytes: Family::default(),
            forward_events: Family::default(),
            forward_batches: Family::default(),
            forward_backlog: Family::default(),
            forward_truncated: Family::default(),
            forward_dead_lettered: Family::default(),
            uplink_refused: Counter::default(),
            uplink_connected: Gauge::default(),
            link_connected: Gauge::default(),
            link_results: Family::default(),
            modbus_polls: Family::default(),
            modbus_errors: Family::default(),
            modbus_round_trip: Family::new_with_constructor(modbus_round_trip_histogram),
            modbus_poll_duration: Family::new_with_constructor(modbus_round_trip_histogram),
            modbus_device_online: Family::default(),
            modbus_bus_connected: Family::default(),
            modbus_connects: Family::default(),
            modbus_writes: Family::default(),
            alerts_open: Gauge::default(),
            alerts_opened: Counter::default(),
            alerts_backlog: Gauge::default(),
            stage_restarts: Family::default(),
            api_connections: Gauge::default(),
            api_closed: Family::default(),
            api_sign_ins: Family::default(),
            api_lockouts: Family::default(),
            camera_push_requests: Family::default(),
            camera_push_images: Family::default(),
            health: crate::health::Health::default(),
            registry: Registry::with_prefix("estate"),
        };
        m.register_ingest();
        m.register_camera_push();
        m.register_store();
        m.register_forward();
        m.register_link();
        m.register_modbus();
        m.register_alerts();
        m.register_api();
        m
    }

    /// Registers the metrics of MQTT ingest: messages in, acknowledgements, dead letters.
    fn register_ingest(&mut self) {
        let r = &mut self.registry;
        r.register(
            "ingest_received",
            "MQTT messages received from sensors",
            self.ingest_received.clone(),
        );
        r.register(
            "ingest_unregistered",
            "Events from devices that are not in the config (accepted anyway)",
            self.ingest_unregistered.clone(),
        );
        r.register(
            "ingest_acked",
            "MQTT messages acknowledged to the broker after their event or dead letter was durable",
            self.ingest_acked.clone(),
        );
        r.register(
            "ingest_connected",
            "1 while connected to the ingest broker and subscribed",
            self.ingest_connected.clone(),
        );
        r.register(
            "dead_lettered",
            "Inputs kept in the dead-letter tree instead of becoming events, by reason",
            self.dead_lettered.clone(),
        );
        r.register(
            "ingest_acked_unstored",
            "Telemetry messages acknowledged without being stored while the disk was full (alarms never are)",
            self.ingest_acked_unstored.clone(),
        );
    }

    /// Registers the metrics of the camera push listener (`ingest/camera_push/`); its
    /// dead letters count in `dead_lettered` like MQTT's.
    fn register_camera_push(&mut self) {
        let r = &mut self.registry;
        r.register(
            "camera_push_requests",
            "Camera push requests by result (accepted, dead_lettered, unauthorized, challenged, too_large, bad_request, not_stored)",
            self.camera_push_requests.clone(),
        );
        r.register(
            "camera_push_images",
            "Snapshots of pushed camera alarms kept whole in the event's raw bytes, or dropped for ingest.raw_limit",
            self.camera_push_images.clone(),
        );
    }

    /// Registers the metrics of the store writer: commits, groups, eviction, the disk.
    fn register_store(&mut self) {
        let r = &mut self.registry;
        r.register(
            "store_committed",
            "Events committed (flushed and fsynced) to the store, by lane",
            self.store_committed.clone(),
        );
        r.register(
            "store_evicted",
            "Events evicted to respect the disk budget, by lane and whether they had been forwarded",
            self.store_evicted.clone(),
        );
        r.register(
            "store_errors",
            "Group commits that failed (events not acknowledged; the broker redelivers)",
            self.store_errors.clone(),
        );
        r.register(
            "store_not_stored",
            "Inputs whose group commit failed or was paused (disk full); not acknowledged, the broker redelivers them",
            self.store_not_stored.clone(),
        );
        r.register(
            "store_disk_free_bytes",
            "Free bytes on the data folder's filesystem",
            self.store_disk_free.clone(),
        );
        r.register(
            "store_disk_bytes",
            "Real bytes (allocated blocks) of the store's folder; store.disk_budget bounds it",
            self.store_disk_bytes.clone(),
        );
        r.register(
            "store_commit_latency_seconds",
            "Time from receipt of an input to its durable commit",
            self.store_commit_latency.clone(),
        );
        r.register(
            "store_group_size",
            "Inputs per group commit (one flush + fdatasync each)",
            self.store_group_size.clone(),
        );
        r.register(
            "store_stored_bytes",
            "Logical bytes of stored events, by lane",
            self.store_stored_bytes.clone(),
        );
    }

    /// Registers the metrics of the uplink: batches, backlog, cut and refused events.
    fn register_forward(&mut self) {
        let r = &mut self.registry;
        r.register(
            "forward_events",
            "Events acknowledged (PUBACK) by the uplink broker, by lane",
            self.forward_events.clone(),
        );
        r.register(
            "forward_batches",
            "EventBatch messages acknowledged by the uplink broker, by lane",
            self.forward_batches.clone(),
        );
        r.register(
            "forward_backlog",
            "Committed events not yet acknowledged upstream, by lane",
            self.forward_backlog.clone(),
        );
        r.register(
            "forward_truncated",
            "Events forwarded shortened to fit one uplink packet (raw_truncated / text_truncated), by lane",
            self.forward_truncated.clone(),
        );
        r.register(
            "forward_dead_lettered",
            "Events the uplink would not take even reduced to their envelope: dead-lettered, announced by GW.UPLINK_REFUSED, by lane",
            self.forward_dead_lettered.clone(),
        );
        r.register(
            "uplink_refused",
            "Publishes the uplink MQTT client refused (e.g. above its packet limit)",
            self.uplink_refused.clone(),
        );
        r.register(
            "uplink_connected",
            "1 while the uplink (city broker) connection is up",
            self.uplink_connected.clone(),
        );
    }

    /// Registers the metrics of the city link: its connection and the commands' results.
    fn register_link(&mut self) {
        let r = &mut self.registry;
        r.register(
            "link_connected",
            "1 while the city link connection (status, last will, commands) is up",
            self.link_connected.clone(),
        );
        r.register(
            "link_results",
            "Results sent for commands from the city, by outcome",
            self.link_results.clone(),
        );
    }

    /// Registers the metrics of Modbus: polls, errors, round trips, devices and buses, writes.
    fn register_modbus(&mut self) {
        let r = &mut self.registry;
        r.register(
            "modbus_polls",
            "Modbus polls that read and decoded every point of the device",
            self.modbus_polls.clone(),
        );
        r.register(
            "modbus_errors",
            "Failed Modbus transactions, by kind (timeout, exception, transport, decode)",
            self.modbus_errors.clone(),
        );
        r.register(
            "modbus_round_trip_seconds",
            "Round trip of one Modbus transaction, per bus",
            self.modbus_round_trip.clone(),
        );
        r.register(
            "modbus_poll_duration_seconds",
            "One whole poll of a Modbus device (all its reads)",
            self.modbus_poll_duration.clone(),
        );
        r.register(
            "modbus_device_online",
            "1 while the Modbus device answers, 0 once it is reported offline",
            self.modbus_device_online.clone(),
        );
        r.register(
            "modbus_bus_connected",
            "1 while the Modbus bus has an open connection or serial port",
            self.modbus_bus_connected.clone(),
        );
        r.register(
            "modbus_connects",
            "Modbus connections or serial ports opened, per bus",
            self.modbus_connects.clone(),
        );
        r.register(
            "modbus_writes",
            "Modbus writes (linkage), by result",
            self.modbus_writes.clone(),
        );
    }

    /// Registers the metrics of local alerts and the supervised stages.
    fn register_alerts(&mut self) {
        let r = &mut self.registry;
        r.register(
            "alerts_open",
            "Local alerts not closed (active or acknowledged)",
            self.alerts_open.clone(),
        );
        r.register(
            "alerts_opened",
            "Local alerts opened",
            self.alerts_opened.clone(),
        );
        r.register(
            "alerts_backlog",
            "Committed events waiting for the alert engine",
            self.alerts_backlog.clone(),
        );
        r.register(
            "stage_restarts",
            "Stages restarted in place after a failure, by stage",
            self.stage_restarts.clone(),
        );
    }

    /// Registers the metrics of the local API's connections.
    fn register_api(&mut self) {
        let r = &mut self.registry;
        r.register(
            "api_connections",
            "HTTP connections open on the local API",
            self.api_connections.clone(),
        );
        r.register(
            "api_closed",
            "API connections refused or closed by a limit (connections, streams over their cap; header_timeout, idle_timeout)",
            self.api_closed.clone(),
        );
        r.register(
            "api_sign_ins",
            "Console sign-ins by result (ok, refused, locked)",
            self.api_sign_ins.clone(),
        );
        r.register(
            "api_lockouts",
            "Lockouts begun after repeated failed sign-ins (account, address)",
            self.api_lockouts.clone(),
        );
    }

    /// OpenMetrics text exposition of every metric (`application/openmetrics-text`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The classic Prometheus text exposition (`text/plain; version=0.0.4`) of every
    /// metric: what `promtool check metrics` and scrapers without OpenMetrics read.
    pub fn encode_classic(&self) -> String {
        openmetrics_to_classic(&self.encode())
    }

    /// Counts one dead letter under `reason` (`estate_dead_lettered_total{reason}`).
    pub fn dead_letter(&self, reason: &'static str) {
        self.dead_lettered
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }
}

/// Rewrites OpenMetrics text as the classic Prometheus text format. The two differ, for
/// what this registry writes, in three places: a counter's HELP and TYPE name its family
/// (`x`) in OpenMetrics but its sample (`x_total`) in the classic format; `# UNIT` lines
/// and the closing `# EOF` exist only in OpenMetrics. Samples pass unchanged.
pub fn openmetrics_to_classic(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some((name, "counter")) = type_line(line) {
            counters.insert(name);
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let rest = line
            .strip_prefix("# HELP ")
            .map(|r| ("# HELP ", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)));
        match rest {
            Some((tag, r)) => {
                let (name, tail) = r.split_once(' ').unwrap_or((r, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                out.push_str(&format!("{tag}{name}{suffix} {tail}"));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// `(name, kind)` of a `# TYPE name kind` line.
fn type_line(line: &str) -> Option<(&str, &str)> {
    let mut words = line.strip_prefix("# TYPE ")?.split_whitespace();
    Some((words.next()?, words.next()?))
}

/// Log output format (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line, event fields flattened.
    Json,
}

/// Installs the global tracing subscriber. `RUST_LOG` overrides `level`. Text logs carry
/// ANSI colours only when stderr is a terminal, so files, pipes and journald get plain text.
pub fn init_logging(format: LogFormat, level: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_text_names_counters_by_their_samples_and_drops_eof() {
        let om = "# HELP acked Messages acknowledged.\n# TYPE acked counter\nacked_total 2\n\
                  # HELP up Connected.\n# TYPE up gauge\n# UNIT up seconds\nup 1\n# EOF\n";
        assert_eq!(
            openmetrics_to_classic(om),
            "# HELP acked_total Messages acknowledged.\n# TYPE acked_total counter\nacked_total 2\n\
             # HELP up Connected.\n# TYPE up gauge\nup 1\n"
        );
    }

    #[test]
    fn the_registry_in_classic_text_has_help_and_type_on_every_counter_sample() {
        let text = Metrics::new().encode_classic();
        assert!(!text.contains("# EOF"), "{text}");
        let counters: Vec<&str> = text
            .lines()
            .filter_map(type_line)
            .filter(|(_, kind)| *kind == "counter")
            .map(|(name, _)| name)
            .collect();
        assert!(!counters.is_empty(), "{text}");
        for name in counters {
            assert!(name.ends_with("_total"), "{name}:\n{text}");
            assert!(text.contains(&format!("# HELP {name} ")), "{name}:\n{text}");
        }
    }
}
