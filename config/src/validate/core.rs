//! The core sections' rules: gateway, brokers, store, uplink, API, devices, commands.

use std::collections::hash_map::{Entry, HashMap};
use std::net::Ipv6Addr;
use std::time::Duration;

use super::findings::{Finding, Findings, Parts};
use crate::schema::{
    ApiConfig, BrokerConfig, GatewayConfig, IngestConfig, StoreConfig, TlsConfig, UplinkConfig,
};
use crate::units::ByteSize;

/// Values above this go to sled's blob files, which the store's fdatasync of `db` does
/// not cover, so they would not survive a power cut (docs/never-lost.md).
pub const SLED_BLOB_THRESHOLD: ByteSize = ByteSize::kib(128);

/// Longest wait a config may set for a poll interval, a backoff, a reconnect or an alert
/// delay. The stages add these to the clock; a value of centuries validated before and
/// then panicked the stage on its first use (found by the fuzz targets, `fuzz/`).
pub const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// "must be at most 1day, found …" when `d` exceeds [`MAX_WAIT`].
pub(crate) fn too_long(d: Duration) -> Option<String> {
    (d > MAX_WAIT).then(|| {
        format!(
            "must be at most {}, found {}",
            humantime::format_duration(MAX_WAIT),
            humantime::format_duration(d)
        )
    })
}

/// Longest `uplink.linger`: events may wait this long for a batch to fill.
const MAX_LINGER: Duration = Duration::from_secs(60);

/// Most nodes in a broker's `hosts`.
const MAX_HOSTS: usize = 16;

/// Longest `connect_timeout` of a broker connection.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(300);

/// MQTT's largest packet (remaining length is at most 268,435,455 bytes).
const MQTT_MAX_PACKET: u64 = 268_435_455;

/// Largest MQTT packet the ingest client accepts (`gateway/src/ingest/mod.rs`). A bigger
/// one makes it drop the connection, and the broker redelivers the message forever.
pub const INGEST_MAX_PACKET: ByteSize = ByteSize::mib(16);

/// Room kept around `raw_limit` for an event's other fields (ids, code, location, topic).
const EVENT_FIELDS_ROOM: u64 = 1024;

/// Room kept for the topic of an ingest packet (topics are at most 65,535 bytes).
const INGEST_TOPIC_ROOM: u64 = 64 * 1024;

/// Bytes a QoS 1 MQTT PUBLISH adds to its payload at most: fixed header (1 byte and a
/// remaining length of up to 4), topic (2-byte length and the topic), packet id (2).
pub fn publish_overhead(topic_len: usize) -> u64 {
    (1 + 4 + 2 + topic_len + 2) as u64
}

/// The longest uplink topic: `{topic_prefix}/{estate_id}/alarms` (`events` is as long).
fn uplink_topic_len(uplink: &UplinkConfig, gateway: Option<&GatewayConfig>) -> usize {
    // Without a usable gateway section, the longest estate id allowed.
    let estate = gateway.map_or(64, |g| g.estate_id.len());
    uplink.topic_prefix.len() + 1 + estate + 1 + "alarms".len()
}

/// The rules of the core sections: gateway, brokers, store, uplink, API and devices.
pub(super) fn check(parts: &Parts, f: &mut Findings) {
    if let Some(gateway) = &parts.gateway {
        check_gateway(gateway, f);
    }
    if let Some(ingest) = &parts.ingest {
        check_broker("ingest.mqtt", &ingest.mqtt, &parts.given, f);
        check_topic_prefix("ingest.topic_prefix", &ingest.topic_prefix, f);
        let max_payload = INGEST_MAX_PACKET.as_u64() - INGEST_TOPIC_ROOM;
        if ingest.max_payload.as_u64() == 0 || ingest.max_payload.as_u64() > max_payload {
            f.at(
                "ingest.max_payload",
                format!(
                    "must be between 1 B and {} (the ingest client's packet limit of {} less room for the topic; a bigger message would make it drop the connection and the broker redeliver it forever), found {}",
                    ByteSize(max_payload),
                    INGEST_MAX_PACKET,
                    ingest.max_payload
                ),
            );
        }
    }
    if let Some(store) = &parts.store {
        check_store(store, f);
    }
    if let (Some(ingest), Some(store)) = (&parts.ingest, &parts.store) {
        let room = store.record_max_bytes.as_u64().saturating_sub(1024);
        if store.record_max_bytes < SLED_BLOB_THRESHOLD && ingest.raw_limit.as_u64() > room {
            f.across(
                "ingest.raw_limit",
                &["store.record_max_bytes".into()],
                format!(
                    "{} does not fit in a stored record: must be at most store.record_max_bytes ({}) minus 1 KiB for the event's other fields",
                    ingest.raw_limit, store.record_max_bytes
                ),
            );
        }
    }
    if let Some(uplink) = &parts.uplink {
        check_uplink(uplink, &parts.given, f);
        check_uplink_sizes(parts.gateway.as_ref(), parts.ingest.as_ref(), uplink, f);
    }
    if let Some(api) = &parts.api {
        check_api(api, f);
    }
    if let (Some(gateway), Some(ingest), Some(uplink)) =
        (&parts.gateway, &parts.ingest, &parts.uplink)
    {
        let ingest_id = effective_client_id(&ingest.mqtt, &gateway.id, "ingest");
        let uplink_id = effective_client_id(&uplink.mqtt, &gateway.id, "uplink");
        if ingest_id == uplink_id {
            f.across(
                "uplink.mqtt.client_id",
                &["ingest.mqtt.client_id".into()],
                format!(
                    "client id {uplink_id:?} is also the ingest client id; on one broker the two connections would keep disconnecting each other"
                ),
            );
        }
    }
    check_devices(parts, f);
}

/// `client_id` if set, else `estate-gw-{gateway_id}-{role}`.
pub(crate) fn effective_client_id(broker: &BrokerConfig, gateway_id: &str, role: &str) -> String {
    match &broker.client_id {
        Some(id) => id.clone(),
        None => format!("estate-gw-{gateway_id}-{role}"),
    }
}

/// The first character of `s` that is not an ASCII letter, digit or one of `extra`.
fn bad_char(s: &str, extra: &[char]) -> Option<char> {
    s.chars()
        .find(|c| !(c.is_ascii_alphanumeric() || extra.contains(c)))
}

pub(crate) fn check_id(path: &str, value: &str, extra: &[char], max_len: usize, f: &mut Findings) {
    let allowed = if extra.contains(&'.') {
        "letters, digits, '-', '_' and '.'"
    } else {
        "letters, digits, '-' and '_'"
    };
    if value.is_empty() {
        f.at(path, "must not be empty");
    } else if let Some(c) = bad_char(value, extra) {
        f.at(
            path,
            format!("{value:?} contains {c:?}; it is used in MQTT topics, so only {allowed} are allowed"),
        );
    } else if value.len() > max_len {
        f.at(
            path,
            format!(
                "must be at most {max_len} characters, found {}",
                value.len()
            ),
        );
    }
}

fn check_gateway(g: &GatewayConfig, f: &mut Findings) {
    check_id("gateway.id", &g.id, &['-', '_'], 64, f);
    check_id("gateway.estate_id", &g.estate_id, &['-', '_'], 64, f);
    if g.data_dir
        .as_ref()
        .is_some_and(|d| d.as_os_str().is_empty())
    {
        f.at(
            "gateway.data_dir",
            "must not be empty; leave it out to use the daemon's default",
        );
    }
}

/// The rules of one broker table (`ingest.mqtt`, `uplink.mqtt`) below `prefix`; `given`:
/// the `host`/`port` keys the file sets explicitly (`Parts::given`).
fn check_broker(prefix: &str, b: &BrokerConfig, given: &[String], f: &mut Findings) {
    let key = |k: &str| format!("{prefix}.{k}");
    if !b.hosts.is_empty() {
        check_broker_nodes(prefix, b, given, f);
    }
    let ct = b.connect_timeout;
    if ct.subsec_nanos() != 0 || ct < Duration::from_secs(1) || ct > MAX_CONNECT_TIMEOUT {
        f.at(
            key("connect_timeout"),
            format!(
                "must be whole seconds between 1s and {}, found {}",
                humantime::format_duration(MAX_CONNECT_TIMEOUT),
                humantime::format_duration(ct)
            ),
        );
    }
    if b.hosts.is_empty() {
        check_broker_host(prefix, b, f);
    }
    check_broker_session(prefix, b, f);
    if let Some(tls) = &b.tls {
        check_broker_tls(prefix, tls, f);
    }
    check_broker_reconnect(prefix, b, f);
}

/// `hosts`, the broker's nodes: not beside `host`/`port`, at most `MAX_HOSTS`, each a valid
/// `host:port` listed once.
fn check_broker_nodes(prefix: &str, b: &BrokerConfig, given: &[String], f: &mut Findings) {
    let key = |k: &str| format!("{prefix}.{k}");
    for k in ["host", "port"] {
        if given.contains(&key(k)) {
            f.across(
                key(k),
                &[key("hosts")],
                "is set and so is `hosts`: give the broker's nodes in `hosts`, or one node in `host`/`port`, not both",
            );
        }
    }
    if b.hosts.len() > MAX_HOSTS {
        f.at(
            key("hosts"),
            format!("lists {} nodes; at most {MAX_HOSTS}", b.hosts.len()),
        );
    }
    let mut seen = std::collections::HashSet::new();
    for (i, h) in b.hosts.iter().enumerate() {
        match crate::schema::parse_host_port(h) {
            Err(m) => f.at(format!("{prefix}.hosts[{i}]"), m),
            Ok(hp) if !seen.insert(hp.clone()) => f.at(
                format!("{prefix}.hosts[{i}]"),
                format!("{h:?} is listed twice"),
            ),
            Ok(_) => {}
        }
    }
}

/// `host` (when there is no `hosts` list): a bare host name or address, no URL, no port.
fn check_broker_host(prefix: &str, b: &BrokerConfig, f: &mut Findings) {
    let key = |k: &str| format!("{prefix}.{k}");
    if b.host.trim().is_empty() {
        f.at(key("host"), "must not be empty");
    } else if b.host.contains("://") {
        f.at(
            key("host"),
            format!("{:?} is a URL; give only the host name or address (and the port in `port`, TLS in `tls`)", b.host),
        );
    } else if b.host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        f.at(
            key("host"),
            format!("{:?} contains spaces or control characters", b.host),
        );
    } else if b.host.contains(':') && b.host.parse::<Ipv6Addr>().is_err() {
        f.at(
            key("host"),
            format!(
                "{:?} is not a host name or address; put the port in `port`",
                b.host
            ),
        );
    }
}

/// The MQTT session: keep-alive in whole seconds up to 65535, a client id without spaces,
/// no password without a user name.
fn check_broker_session(prefix: &str, b: &BrokerConfig, f: &mut Findings) {
    let key = |k: &str| format!("{prefix}.{k}");
    let ka = b.keep_alive;
    if ka.subsec_nanos() != 0 || ka < Duration::from_secs(1) || ka > Duration::from_secs(65_535) {
        f.at(
            key("keep_alive"),
            format!(
                "must be whole seconds between 1s and 65535s, found {}",
                humantime::format_duration(ka)
            ),
        );
    }

    if let Some(id) = &b.client_id {
        if id.is_empty() {
            f.at(
                key("client_id"),
                "must not be empty; leave it out to use the default",
            );
        } else if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
            f.at(
                key("client_id"),
                format!("{id:?} contains spaces or control characters"),
            );
        }
    }

    match (&b.username, &b.password) {
        (Some(u), _) if u.is_empty() => f.at(
            key("username"),
            "must not be empty; leave it out to connect without authentication",
        ),
        (None, Some(_)) => f.at(
            key("password"),
            "is set but `username` is not; MQTT does not allow a password without a user name",
        ),
        _ => {}
    }
}

/// `tls`: a CA file, and a client certificate only with its key (and the other way round).
fn check_broker_tls(prefix: &str, tls: &TlsConfig, f: &mut Findings) {
    let key = |k: &str| format!("{prefix}.{k}");
    if tls.ca_file.as_os_str().is_empty() {
        f.at(key("tls.ca_file"), "must not be empty");
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(_), None) => f.at(
            key("tls.cert_file"),
            "is set but `key_file` is not; a client certificate needs its private key",
        ),
        (None, Some(_)) => f.at(
            key("tls.key_file"),
            "is set but `cert_file` is not; a private key needs its client certificate",
        ),
        _ => {}
    }
}

/// The reconnect backoff: a minimum above 0, a maximum not too long and not below it.
fn check_broker_reconnect(prefix: &str, b: &BrokerConfig, f: &mut Findings) {
    let key = |k: &str| format!("{prefix}.{k}");
    if b.reconnect_min.is_zero() {
        f.at(
            key("reconnect_min"),
            "must be more than 0s, or a broken broker gets reconnect attempts in a tight loop",
        );
    }
    if let Some(m) = too_long(b.reconnect_max) {
        f.at(key("reconnect_max"), m);
    }
    if b.reconnect_max < b.reconnect_min {
        f.across(
            key("reconnect_min"),
            &[key("reconnect_max")],
            format!(
                "reconnect_min ({}) must not exceed reconnect_max ({})",
                humantime::format_duration(b.reconnect_min),
                humantime::format_duration(b.reconnect_max)
            ),
        );
    }
}

/// Why `prefix` is not usable as the first levels of an MQTT topic name.
pub(crate) fn topic_prefix_problem(prefix: &str) -> Option<&'static str> {
    if prefix.is_empty() {
        Some("must not be empty")
    } else if prefix.contains(['+', '#']) {
        Some("must not contain the MQTT wildcards '+' or '#'")
    } else if prefix.starts_with('/') || prefix.ends_with('/') {
        Some("must not start or end with '/'")
    } else if prefix.contains("//") {
        Some("must not contain an empty topic level ('//')")
    } else if prefix.starts_with('$') {
        Some("must not start with '$', which brokers reserve for their own topics")
    } else if prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("must not contain spaces or control characters")
    } else {
        None
    }
}

fn check_topic_prefix(path: &str, prefix: &str, f: &mut Findings) {
    if let Some(why) = topic_prefix_problem(prefix) {
        f.at(path, format!("{prefix:?} {why}"));
    }
}

fn check_store(s: &StoreConfig, f: &mut Findings) {
    if let Some(m) = too_long(s.resend_window) {
        f.at("store.resend_window", m);
    }
    if s.batch_max_events == 0 {
        f.at("store.batch_max_events", "must be at least 1");
    } else if s.batch_max_events > 65_536 {
        f.at(
            "store.batch_max_events",
            format!(
                "must be at most 65536 (one batch is held in memory), found {}",
                s.batch_max_events
            ),
        );
    }
    if s.batch_linger > Duration::from_secs(1) {
        f.at(
            "store.batch_linger",
            format!(
                "must be at most 1s: every alarm may wait this long before it is stored, found {}",
                humantime::format_duration(s.batch_linger)
            ),
        );
    }
    if s.disk_budget < ByteSize::mib(1) {
        f.at(
            "store.disk_budget",
            format!("must be at least 1 MiB, found {}", s.disk_budget),
        );
    }
    if s.disk_low_free < ByteSize::mib(4) {
        f.at(
            "store.disk_low_free",
            format!(
                "must be at least 4 MiB: below 2 MiB free the store already pauses writes, found {}",
                s.disk_low_free
            ),
        );
    }
    if s.cache_capacity < ByteSize::kib(64) {
        f.at(
            "store.cache_capacity",
            format!("must be at least 64 KiB, found {}", s.cache_capacity),
        );
    }
    if s.record_max_bytes >= SLED_BLOB_THRESHOLD {
        f.at(
            "store.record_max_bytes",
            format!(
                "must be less than {SLED_BLOB_THRESHOLD}: larger records are stored as separate blob files that the power-loss flush does not cover, found {}",
                s.record_max_bytes
            ),
        );
    } else if s.record_max_bytes < ByteSize::kib(1) {
        f.at(
            "store.record_max_bytes",
            format!("must be at least 1 KiB, found {}", s.record_max_bytes),
        );
    }
    if s.dead_letter_max == 0 {
        f.at(
            "store.dead_letter_max",
            "must be at least 1, or malformed input would be dropped without a trace",
        );
    }
}

fn check_uplink(u: &UplinkConfig, given: &[String], f: &mut Findings) {
    check_broker("uplink.mqtt", &u.mqtt, given, f);
    check_topic_prefix("uplink.topic_prefix", &u.topic_prefix, f);
    if u.max_batch_events == 0 {
        f.at("uplink.max_batch_events", "must be at least 1");
    }
    if u.max_batch_bytes <= ByteSize::kib(1) || u.max_batch_bytes.as_u64() > MQTT_MAX_PACKET {
        f.at(
            "uplink.max_batch_bytes",
            format!(
                "must be more than 1 KiB and at most {} (the MQTT packet limit), found {}",
                ByteSize(MQTT_MAX_PACKET),
                u.max_batch_bytes
            ),
        );
    }
    if u.max_inflight_batches == 0 || u.max_inflight_batches > 65_535 {
        f.at(
            "uplink.max_inflight_batches",
            format!(
                "must be between 1 and 65535, found {}",
                u.max_inflight_batches
            ),
        );
    }
    if let Some(m) = too_long(u.down_alert_after) {
        f.at("uplink.down_alert_after", m);
    }
    if u.down_alert_after.is_zero() {
        f.at("uplink.down_alert_after", "must be more than 0s");
    }
    if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&u.status_interval) {
        f.at(
            "uplink.status_interval",
            format!(
                "must be between 1s and 1h, found {}",
                humantime::format_duration(u.status_interval)
            ),
        );
    }
    if u.linger > MAX_LINGER {
        f.at(
            "uplink.linger",
            format!(
                "must be at most {} (events wait this long before they go up), found {}",
                humantime::format_duration(MAX_LINGER),
                humantime::format_duration(u.linger)
            ),
        );
    }
}

/// The size limits that meet on the way up: a device event (up to `ingest.raw_limit` raw
/// bytes) in a batch (`uplink.max_batch_bytes`) in one MQTT packet with its topic
/// (`uplink.max_packet_size`). `store.record_max_bytes` does not meet them: the forwarder
/// reads events out of records and batches them anew.
fn check_uplink_sizes(
    gateway: Option<&GatewayConfig>,
    ingest: Option<&IngestConfig>,
    u: &UplinkConfig,
    f: &mut Findings,
) {
    let packet = u.max_packet_size.as_u64();
    if !(2048..=MQTT_MAX_PACKET).contains(&packet) {
        f.at(
            "uplink.max_packet_size",
            format!(
                "must be between 2 KiB and {} (the MQTT packet limit), found {}",
                ByteSize(MQTT_MAX_PACKET),
                u.max_packet_size
            ),
        );
        return;
    }
    let topic_len = uplink_topic_len(u, gateway);
    let overhead = publish_overhead(topic_len);
    let batch = u.max_batch_bytes.as_u64();
    if batch > ByteSize::kib(1).as_u64() && batch + overhead > packet {
        f.across(
            "uplink.max_batch_bytes",
            &[
                "uplink.max_packet_size".into(),
                "uplink.topic_prefix".into(),
                "gateway.estate_id".into(),
            ],
            format!(
                "a batch of {} does not fit in one uplink packet of uplink.max_packet_size ({}): the topic ({topic_len} bytes) and MQTT header add up to {overhead} bytes; lower max_batch_bytes to at most {} or raise max_packet_size to at least {}",
                u.max_batch_bytes,
                u.max_packet_size,
                ByteSize(packet - overhead),
                ByteSize(batch + overhead)
            ),
        );
    }
    if let Some(ingest) = ingest {
        let raw = ingest.raw_limit.as_u64();
        let room = batch.min(packet.saturating_sub(overhead));
        if raw + EVENT_FIELDS_ROOM > room {
            f.across(
                "ingest.raw_limit",
                &[
                    "uplink.max_batch_bytes".into(),
                    "uplink.max_packet_size".into(),
                ],
                format!(
                    "an event with {} of raw bytes does not fit in one uplink batch of {} (uplink.max_batch_bytes, within uplink.max_packet_size {}) with 1 KiB for its other fields; it would be forwarded with its raw bytes cut: lower raw_limit to at most {} or raise max_batch_bytes",
                    ingest.raw_limit,
                    ByteSize(room),
                    u.max_packet_size,
                    ByteSize(room.saturating_sub(EVENT_FIELDS_ROOM))
                ),
            );
        }
    }
}

/// Most HTTP connections `api.max_connections` may allow: a quarter of the systemd
/// unit's `LimitNOFILE` (4096), the rest kept for MQTT, Modbus, serial ports and sled.
pub const API_MAX_CONNECTIONS: usize = 1024;

fn check_api(a: &ApiConfig, f: &mut Findings) {
    if a.header_read_timeout.is_zero() {
        f.at("api.header_read_timeout", "must be more than 0s");
    }
    if a.idle_timeout.is_zero() {
        f.at("api.idle_timeout", "must be more than 0s");
    }
    if a.max_connections == 0 || a.max_connections > API_MAX_CONNECTIONS {
        f.at(
            "api.max_connections",
            format!(
                "must be between 1 and {API_MAX_CONNECTIONS} (each connection is a file descriptor the MQTT and Modbus links also need), found {}",
                a.max_connections
            ),
        );
    }
    check_api_auth(a, f);
    if a.max_sse_clients == 0 {
        f.at("api.max_sse_clients", "must be at least 1");
    } else if a.max_sse_clients > a.max_connections {
        f.across(
            "api.max_sse_clients",
            &["api.max_connections".into()],
            format!(
                "{} live streams cannot all be open: each is a connection and api.max_connections is {}",
                a.max_sse_clients, a.max_connections
            ),
        );
    }
}

/// Sign-in, lockout and HTTPS keys of `[api]` (issue 16).
fn check_api_auth(a: &ApiConfig, f: &mut Findings) {
    const MINUTE: Duration = Duration::from_secs(60);
    const DAY: Duration = Duration::from_secs(24 * 3600);
    if a.session_ttl < MINUTE || a.session_ttl > 7 * DAY {
        f.at(
            "api.session_ttl",
            format!(
                "must be between 1m and 7d, found {}",
                humantime::format_duration(a.session_ttl)
            ),
        );
    }
    if !(1..=100).contains(&a.lockout_after) {
        f.at(
            "api.lockout_after",
            format!(
                "must be between 1 and 100 failed sign-ins, found {}",
                a.lockout_after
            ),
        );
    }
    if a.lockout_window.is_zero() {
        f.at("api.lockout_window", "must be more than 0s");
    }
    if a.lockout_for.is_zero() || a.lockout_for > DAY {
        f.at(
            "api.lockout_for",
            format!(
                "must be more than 0s and at most 24h, found {}",
                humantime::format_duration(a.lockout_for)
            ),
        );
    }
    match (&a.tls_cert, &a.tls_key) {
        (Some(_), None) => f.across(
            "api.tls_cert",
            &["api.tls_key".into()],
            "is set but `api.tls_key` is not: HTTPS needs both the certificate and its key",
        ),
        (None, Some(_)) => f.across(
            "api.tls_key",
            &["api.tls_cert".into()],
            "is set but `api.tls_cert` is not: HTTPS needs both the certificate and its key",
        ),
        _ => {}
    }
    for (key, file) in [("api.tls_cert", &a.tls_cert), ("api.tls_key", &a.tls_key)] {
        if let Some(file) = file {
            match std::fs::read(file) {
                Ok(bytes) if !bytes.windows(11).any(|w| w == b"-----BEGIN ") => f.at(
                    key,
                    format!("{} holds no PEM block (-----BEGIN …)", file.display()),
                ),
                Ok(_) => {}
                Err(e) => f.at(key, format!("cannot read {}: {e}", file.display())),
            }
        }
    }
}

fn check_devices(parts: &Parts, f: &mut Findings) {
    // First index of each id.
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(parts.device_ids.len());
    for (i, id) in &parts.device_ids {
        let path = format!("devices[{i}].id");
        check_id(&path, id, &['-', '_', '.'], 128, f);
        if id.is_empty() {
            continue;
        }
        match seen.entry(id.as_str()) {
            Entry::Occupied(first) => {
                let first = *first.get();
                f.0.push(Finding {
                    path,
                    involves: Vec::new(),
                    related: Some(format!("devices[{first}].id")),
                    message: format!(
                        "duplicate device id {id:?}, already used by devices[{first}]"
                    ),
                });
            }
            Entry::Vacant(slot) => {
                slot.insert(*i);
            }
        }
        if let Some(gateway) = &parts.gateway {
            if !id.is_empty() && *id == gateway.id {
                f.across(
                    format!("devices[{i}].id"),
                    &["gateway.id".into()],
                    format!("{id:?} is the gateway's own id (gateway.id); device ids must differ from it"),
                );
            }
        }
    }
    for (i, d) in &parts.devices {
        if let Some(hb) = d.heartbeat_interval {
            if hb < Duration::from_secs(1) {
                f.at(
                    format!("devices[{i}].heartbeat_interval"),
                    format!(
                        "must be at least 1s, found {}; leave it out for devices without heartbeats",
                        humantime::format_duration(hb)
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_prefixes_must_be_plain_topic_levels() {
        for good in ["estate", "city/v1", "a/b-c/d_e"] {
            assert_eq!(topic_prefix_problem(good), None, "{good}");
        }
        for bad in [
            "",
            "city/+",
            "city/#",
            "/city",
            "city/",
            "a//b",
            "$SYS",
            "my estate",
        ] {
            assert!(topic_prefix_problem(bad).is_some(), "{bad}");
        }
    }
}
