//! The config file's sections and fields, with their defaults.
//!
//! Every default lives in the `Default` impl of its struct (plus `#[serde(default)]`),
//! and the doc comment of each field is the user documentation of that key.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use estate_protocols::model::{DeviceKind, Location};
use serde::{Deserialize, Serialize};

use crate::alerts::AlertsConfig;
use crate::modbus::{DeviceModbusConfig, ModbusConfig};
use crate::sources::{DeviceSource, SourceConfig};
use crate::units::{ByteSize, Secret};

/// The whole gateway configuration, one field per section of the file.
///
/// Only `[gateway]` is required; every other section may be left out and then takes
/// the defaults documented on its fields.
///
/// Load it with [`Config::load`] or [`Config::from_toml_str`], which validate it and
/// report every problem at once. (The `Deserialize` impl is plain serde: it stops at the
/// first error and skips the semantic checks.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[gateway]`: who this gateway is.
    pub gateway: GatewayConfig,
    /// `[ingest]`: where sensor data comes from.
    #[serde(default)]
    pub ingest: IngestConfig,
    /// `[store]`: the durable local event store.
    #[serde(default)]
    pub store: StoreConfig,
    /// `[uplink]`: forwarding to the city platform.
    #[serde(default)]
    pub uplink: UplinkConfig,
    /// `[api]`: the local HTTP API and console.
    #[serde(default)]
    pub api: ApiConfig,
    /// `[[devices]]`: the devices this gateway knows, one `[[devices]]` table each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceConfig>,
    /// `[modbus]`: Modbus buses and device profiles (see [`crate::ModbusConfig`]).
    #[serde(default, skip_serializing_if = "ModbusConfig::is_empty")]
    pub modbus: ModbusConfig,
    /// `[alerts]`: local alert rules and linkage (see [`crate::AlertsConfig`]).
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// `[commands]`: what the city may ask of this gateway (see [`crate::CommandsConfig`]).
    #[serde(default)]
    pub commands: crate::CommandsConfig,
}

/// `[gateway]`: the identity of this gateway. Both ids end up in every forwarded event
/// and in MQTT topics, so they may only contain letters, digits, `-` and `_`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Required. This gateway's id, unique among the gateways that report to one city
    /// platform, e.g. `"gw-demo-01"`. Together with an event's `seq` it is the key the
    /// city platform deduplicates on, so never reuse it for another gateway, and never
    /// change it on a running installation. Letters, digits, `-`, `_`; at most 64
    /// characters.
    pub id: String,
    /// Required. The estate (community, 小区) this gateway serves. Use the 20-digit
    /// community code where one is assigned (e.g. `"31011500000000000001"`); otherwise
    /// any id agreed with the city platform. It appears in uplink topics
    /// (`city/v1/{estate_id}/events`), so letters, digits, `-`, `_` only.
    pub estate_id: String,
    /// Folder for the event store, cursors and alert state. Relative paths resolve
    /// against the daemon's working directory. When unset, the daemon's own default
    /// (its `--data-dir` flag) applies. Put it on persistent storage, not tmpfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
}

/// `[ingest]`: the local MQTT broker the sensors publish to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// `[ingest.mqtt]`: the broker to subscribe to. Default: `127.0.0.1:1883`.
    pub mqtt: BrokerConfig,
    /// Topic prefix devices publish under: `estate` → `estate/{estate_id}/{kind}/{device_id}/event`.
    /// MQTT topic levels separated by `/`; no wildcards (`+`, `#`), no leading or
    /// trailing `/`. Default: `"estate"`.
    pub topic_prefix: String,
    /// Largest MQTT payload accepted; bigger messages go to the dead-letter store
    /// (truncated to `raw_limit`). At most 16 MiB less 64 KiB for the topic: the ingest
    /// client takes packets up to 16 MiB. Default: `"64 KiB"`.
    pub max_payload: ByteSize,
    /// How many raw payload bytes are kept with each event and each dead letter, for
    /// audit and debugging. Must be at least 1 KiB below `store.record_max_bytes` and
    /// below `uplink.max_batch_bytes` (room for the event's other fields), so that an
    /// event is stored and forwarded whole. Default: `"2 KiB"`.
    pub raw_limit: ByteSize,
    /// `[[ingest.sources]]`: the payload formats to read and their topics (see the
    /// docs/formats.md). When absent, exactly one native source under
    /// `topic_prefix`. When present, exactly the listed sources (list `format =
    /// "native"` too to keep the native devices). Default: absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<SourceConfig>>,
    /// `[ingest.camera_push]`: an HTTP listener for cameras that push ISAPI alarms (see
    /// [`crate::CameraPushConfig`]). Default: absent (no listener).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub camera_push: Option<crate::CameraPushConfig>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            mqtt: BrokerConfig::default(),
            topic_prefix: "estate".to_owned(),
            max_payload: ByteSize::kib(64),
            raw_limit: ByteSize::kib(2),
            sources: None,
            camera_push: None,
        }
    }
}

/// An MQTT broker connection (`[ingest.mqtt]`, `[uplink.mqtt]`). QoS 1 throughout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// Broker host name or IP address. Default: `"127.0.0.1"`.
    // Serialized only when not the default: beside `hosts` it must not be written.
    #[serde(skip_serializing_if = "is_default_host")]
    pub host: String,
    /// Broker TCP port, 1–65535. Default: `1883` (use `8883` with `tls`).
    #[serde(
        deserialize_with = "crate::units::port",
        skip_serializing_if = "is_default_port"
    )]
    pub port: u16,
    /// The nodes of a broker cluster, tried in this order, instead of `host`/`port`
    /// (give one or the other): `["mqtt1.city.example:8883", "10.0.0.7:8883",
    /// "[fd00::7]:8883"]` (an IPv6 address in brackets). The client connects to the
    /// first; when it loses a node (connection refused or reset, keep-alive timeout,
    /// `connect_timeout`) it moves to the next, round robin. With `tls` each node's
    /// certificate is checked against that node's own name. At most 16. Default: empty
    /// (`host`/`port`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// How long one connection attempt (TCP, TLS and the broker's CONNACK) may take
    /// before it is given up and the next node is tried. Generous on purpose: a broker
    /// still completes an attempt the client gave up on, and with the same client id
    /// that late session takes over the live one (issue 14). Whole seconds, 1 s to
    /// 5 min. Default: `"10s"`.
    #[serde(with = "crate::units::duration")]
    pub connect_timeout: Duration,
    /// MQTT client id. Leave unset: the default, `estate-gw-{gateway.id}-ingest` or
    /// `…-uplink`, is stable across restarts, which the broker needs to keep this
    /// gateway's persistent session (and the QoS 1 messages queued while it was away).
    /// Two gateways must never share a client id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// MQTT keep-alive: how long the connection may be idle before the client pings and
    /// a dead link is detected. Whole seconds, 1 s to 65535 s. Default: `"30s"`.
    #[serde(with = "crate::units::duration")]
    pub keep_alive: Duration,
    /// User name for broker authentication. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password for broker authentication; requires `username`. Never printed in logs.
    /// Prefer `password_file` or `password_env` so the config file holds no secret.
    /// At most one of the three. Default: none (there is no default password).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Read the password from this file when the config is loaded (its content, without
    /// the trailing newline), e.g. `"/etc/estate-gateway/uplink.pass"`. Keep the file
    /// `0600`, owned by the gateway's user: `check-config` warns otherwise. Relative
    /// paths resolve against the working directory. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Read the password from this environment variable when the config is loaded, e.g.
    /// `"ESTATE_UPLINK_PASSWORD"` (systemd: `EnvironmentFile=` or `LoadCredential=`).
    /// Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// `[….mqtt.tls]`: connect with TLS. When absent the connection is plain TCP, which
    /// is only acceptable on loopback or a trusted LAN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// First delay before reconnecting after the connection drops; doubled on every
    /// failed attempt (with `hosts`: on every round of failed attempts) up to
    /// `reconnect_max`. It starts again from here only once a connection has proved
    /// itself (the broker acknowledged a publish, subscription or ping), not on every
    /// CONNACK. Default: `"200ms"`.
    #[serde(with = "crate::units::duration")]
    pub reconnect_min: Duration,
    /// Longest delay between reconnect attempts. Must not be less than
    /// `reconnect_min`, at most a day. Default: `"30s"`.
    #[serde(with = "crate::units::duration")]
    pub reconnect_max: Duration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            host: "127.0.0.1".to_owned(),
            port: 1883,
            hosts: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            client_id: None,
            keep_alive: Duration::from_secs(30),
            username: None,
            password: None,
            password_file: None,
            password_env: None,
            tls: None,
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(30),
        }
    }
}

fn is_default_host(h: &str) -> bool {
    h == BrokerConfig::default().host
}

fn is_default_port(p: &u16) -> bool {
    *p == BrokerConfig::default().port
}

impl BrokerConfig {
    /// The broker nodes to connect to, in order: `hosts`, or `host`/`port` alone. An
    /// entry of `hosts` that does not parse is left out (validation reports it).
    pub fn endpoints(&self) -> Vec<(String, u16)> {
        if self.hosts.is_empty() {
            return vec![(self.host.clone(), self.port)];
        }
        self.hosts
            .iter()
            .filter_map(|h| parse_host_port(h).ok())
            .collect()
    }
}

/// Splits `"host:port"` (IPv6 as `"[::1]:1883"`) into the host, without brackets, and
/// the port; the error says what is wrong.
pub fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    if s.contains("://") {
        return Err(format!(
            "{s:?} is a URL; give only \"host:port\" (TLS is set in `tls`)"
        ));
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (ip, port) = rest
            .split_once(']')
            .ok_or_else(|| format!("{s:?} opens `[` without closing it"))?;
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{s:?}: {ip:?} in brackets is not an IPv6 address"));
        }
        let port = port
            .strip_prefix(':')
            .ok_or_else(|| format!("{s:?} has no `:port` after the address"))?;
        (ip, port)
    } else {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} has no port; write \"host:port\""))?;
        if host.contains(':') {
            return Err(format!(
                "{s:?}: write an IPv6 address in brackets, e.g. \"[::1]:1883\""
            ));
        }
        (host, port)
    };
    if host.is_empty() {
        return Err(format!("{s:?} has no host before the port"));
    }
    if host
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        return Err(format!("{s:?}: {host:?} is not a host name or address"));
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok((host.to_owned(), p)),
        _ => Err(format!(
            "{s:?}: the port must be a number between 1 and 65535, found {port:?}"
        )),
    }
}

/// `[….mqtt.tls]`: TLS for a broker connection. Files are PEM. The paths are checked
/// when the gateway starts, not when the config is validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Required. CA certificate(s) that the broker's certificate must chain to.
    pub ca_file: PathBuf,
    /// Client certificate, for brokers that authenticate gateways by certificate (the
    /// city platform does). Set together with `key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// Private key of `cert_file`. Set together with `cert_file`; keep it readable only
    /// by the gateway's user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

/// `[store]`: the local event store (sled) that makes an acknowledged event durable and
/// buffers everything while the uplink is down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Most events written and flushed to disk in one group commit. Larger batches give
    /// more throughput; 1 means one disk flush per event. At least 1. Default: `256`.
    pub batch_max_events: usize,
    /// How long a group commit waits for more events after the first one arrives before
    /// it flushes. A group always takes every event already queued, and events queue up
    /// while the previous flush runs, so batching happens without waiting. Because MQTT
    /// messages are acknowledged only after their commit, the broker sends few new ones
    /// while a group waits: lingering mostly delays acks and every alarm. At most 1 s.
    /// Default: `"0s"` (flush as soon as the queue is empty).
    #[serde(with = "crate::units::duration")]
    pub batch_linger: Duration,
    /// Real disk space the data folder's store may use (its files' allocated blocks, as
    /// `du` counts them, not the events' logical bytes). When it is reached, the oldest
    /// telemetry is evicted before any alarm, and every eviction raises a
    /// `GW.STORE_EVICTED` alert. Size it for the longest uplink outage you must ride
    /// out. At least 1 MiB. Default: `"256 MiB"`.
    pub disk_budget: ByteSize,
    /// Free space on the data folder's filesystem below which `GW.DISK_LOW` is raised
    /// (and `/healthz` says `degraded`); it clears once free space is back above it by
    /// an eighth. Independently of it the store pauses writes below 2 MiB free rather
    /// than fail mid-write. At least 4 MiB. Default: `"64 MiB"`.
    pub disk_low_free: ByteSize,
    /// Memory for the store's page cache. On a 256 MB gateway keep the default.
    /// At least 64 KiB. Default: `"4 MiB"` (docs/footprint.md: 8 MiB drains a large backlog 2–3 MB over the 32 MB budget, no faster).
    pub cache_capacity: ByteSize,
    /// Largest stored record (one event with its raw bytes; smaller events are stored
    /// several to a record of about 6 KiB, whatever this says). Must stay below 128 KiB:
    /// bigger values are written outside the store's log, where the power-loss flush
    /// does not cover them. Must exceed `ingest.raw_limit`. Default: `"48 KiB"`.
    pub record_max_bytes: ByteSize,
    /// How many dead letters (malformed input, with raw bytes and reason) are kept; the
    /// oldest are dropped beyond this, and each drop is counted. At least 1.
    /// Default: `10000`.
    pub dead_letter_max: usize,
    /// Keep events after they were forwarded, until the disk budget needs the room
    /// (local history). `false` deletes them once the city platform has acknowledged
    /// them. Measured: with `true`, draining a large backlog makes sled hold the pages it
    /// read (83 MB RSS for 200 k events, 150+ MB for 1 M), with `false` RSS stays under
    /// 25 MB; keep `false` on a 256 MB gateway. Default: `false`.
    pub keep_forwarded: bool,
    /// With `keep_forwarded = false`: how long forwarded events stay before they are
    /// deleted, so that the city can still have them sent again (a `Resend` command,
    /// docs/uplink.md, "The city link") when its broker lost some after acknowledging them. The
    /// disk budget still comes first: forwarded events are evicted before anything else.
    /// `"0s"` deletes them as soon as the city broker has acknowledged them. At most a
    /// day. Default: `"10m"`.
    #[serde(with = "crate::units::duration")]
    pub resend_window: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            batch_max_events: 256,
            batch_linger: Duration::ZERO,
            disk_budget: ByteSize::mib(256),
            disk_low_free: ByteSize::mib(64),
            cache_capacity: ByteSize::mib(4),
            record_max_bytes: ByteSize::kib(48),
            dead_letter_max: 10_000,
            keep_forwarded: false,
            resend_window: Duration::from_secs(600),
        }
    }
}

/// `[uplink]`: forwarding events and alerts to the city platform as protobuf batches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UplinkConfig {
    /// `[uplink.mqtt]`: the city platform's broker. In the field this is the city
    /// broker with `tls` and a client certificate. Default: `127.0.0.1:1883`.
    pub mqtt: BrokerConfig,
    /// Topic prefix on the city broker; batches go to
    /// `{topic_prefix}/{gateway.estate_id}/alarms` and `…/events`. No wildcards
    /// (`+`, `#`), no leading or trailing `/`. Default: `"city/v1"`.
    pub topic_prefix: String,
    /// Most events in one batch. At least 1. Default: `500`.
    pub max_batch_events: usize,
    /// Largest encoded batch. More than 1 KiB, and a batch this big must fit in one
    /// packet of `max_packet_size` with its topic. Should hold a device event with
    /// `ingest.raw_limit` raw bytes (`check-config` says so when it does not).
    /// Default: `"256 KiB"`.
    pub max_batch_bytes: ByteSize,
    /// Largest MQTT packet the uplink sends, topic and header included. Set it to the
    /// city broker's limit (EMQX `mqtt.max_packet_size`, 1 MB by default; Mosquitto
    /// `max_packet_size`; AWS IoT Core 128 KB): a broker drops the connection on a
    /// bigger packet. Batches are cut to fit, and an event too big for a packet on its
    /// own is forwarded shortened and flagged (`raw_truncated`, `text_truncated`; docs/uplink.md,
    /// "The uplink contract"), so no event can hold up a lane. Default: `"1 MiB"`.
    pub max_packet_size: ByteSize,
    /// Batches published but not yet acknowledged by the broker. More hides the uplink's
    /// round-trip time; 1 sends strictly one at a time. Each one more holds another batch
    /// in memory while a backlog drains: 8 peaked 2–8 MB above 2 (docs/footprint.md).
    /// 2 × 500 events per round trip is 10,000 events/s over a 100 ms uplink; raise it
    /// for a slower link on a board with memory to spare.
    /// 1–65535. Default: `2`.
    pub max_inflight_batches: usize,
    /// Raise a `GW.UPLINK_DOWN` alert when the uplink has been disconnected this long.
    /// More than 0 s, at most a day. Default: `"30s"`.
    #[serde(with = "crate::units::duration")]
    pub down_alert_after: Duration,
    /// How often the gateway publishes its `GatewayStatus` on
    /// `{topic_prefix}/{gateway.estate_id}/health` (docs/uplink.md, "The city link"), besides
    /// once on every connect and on a STATUS command. The city raises an estate as dark
    /// when nothing arrived for about three intervals, so this bounds how fast it notices
    /// a gateway that is connected but stuck (a dead connection is the last will's job,
    /// within 1.5 × `uplink.mqtt.keep_alive`). 10 s keeps three missed statuses (30 s)
    /// well inside EN 50136-1's 90 s fault reporting class (T5) at ~30 messages/s per
    /// 1,000 estates, about 1% of the ~2.4k messages/s a 3-node NATS cluster took here.
    /// 1 s to 1 h. Default: `"10s"`.
    #[serde(with = "crate::units::duration")]
    pub status_interval: Duration,
    /// How long the events lane waits for a batch to fill (`max_batch_events`, or
    /// `max_batch_bytes`) before it publishes what it has. A city broker takes a few
    /// thousand QoS 1 messages a second across all its estates (a 3-node NATS cluster
    /// here: ~2.4k/s), so at estate rates (tens of events a second) a batch must carry
    /// tens of events, not one. The alarms lane never waits, and at shutdown nothing
    /// lingers. `"0s"` publishes every event as soon as it is committed. At most 1 min.
    /// Default: `"1s"`.
    #[serde(with = "crate::units::duration")]
    pub linger: Duration,
}

impl Default for UplinkConfig {
    fn default() -> Self {
        UplinkConfig {
            mqtt: BrokerConfig::default(),
            topic_prefix: "city/v1".to_owned(),
            max_batch_events: 500,
            max_batch_bytes: ByteSize::kib(256),
            max_packet_size: ByteSize::mib(1),
            max_inflight_batches: 2,
            down_alert_after: Duration::from_secs(30),
            status_interval: Duration::from_secs(10),
            linger: Duration::from_secs(1),
        }
    }
}

/// `[api]`: the local HTTP API, server-sent events, metrics and web console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address and port to listen on. Reading needs a sign-in except from this machine
    /// (see `anonymous_read`); `/healthz` and `/metrics` are open, so keep it on loopback
    /// or the property-management LAN behind a firewall. Port 0 picks a free port.
    /// Default: `"127.0.0.1:8080"`.
    pub listen: SocketAddr,
    /// Deprecated shared bearer token (before accounts, issue 16): an integration token
    /// with the operator role whose writes record the `by` the request names. Prefer
    /// named tokens (`estate-gateway users token add`). Without it, accounts or named
    /// tokens, the API is read-only (every write refused with 403). At most one of
    /// `token`, `token_file`, `token_env`. Never printed. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// Read `token` from this file when the config is loaded (without the trailing
    /// newline). Keep it `0600`. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Read `token` from this environment variable when the config is loaded.
    /// Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// How long a client may take to send a request's headers: from the connection's
    /// accept (first request) or from the first byte of a later request on a kept-alive
    /// connection. Also bounds the body of a write action. A client that is slower is
    /// disconnected (a slow-header client cannot hold a connection for long).
    /// More than 0 s. Default: `"10s"`.
    #[serde(with = "crate::units::duration")]
    pub header_read_timeout: Duration,
    /// How long a kept-alive connection may wait, idle, for its next request before the
    /// gateway closes it. Live streams (`/api/stream`) are never idle (they send every
    /// second). More than 0 s. Default: `"30s"`.
    #[serde(with = "crate::units::duration")]
    pub idle_timeout: Duration,
    /// Most HTTP connections open at once (live streams included). A connection over the
    /// cap gets a `503` written without waiting and is closed. Every connection is a file
    /// descriptor: the systemd unit allows 4096 (`LimitNOFILE`), which the MQTT sessions,
    /// Modbus links, serial ports and the store also need, so keep this well below it.
    /// 1–1024. Default: `256`.
    pub max_connections: usize,
    /// Most live streams (`GET /api/stream`, the console's live view) at once; a stream
    /// over the cap is answered `503`. Each also counts against `max_connections`. At
    /// least 1, at most `max_connections`. Default: `32`.
    pub max_sse_clients: usize,
    /// Who may read (alerts, devices, status, roll calls, the live stream) without signing
    /// in: `"loopback"` (clients on 127.0.0.1 or ::1, i.e. this machine; everyone else signs
    /// in) or `"none"` (everyone signs in or sends a token). `/healthz`, `/metrics`, the
    /// console's page and `/api/codes` are always open. Default: `"loopback"`.
    pub anonymous_read: AnonymousRead,
    /// How long a console sign-in lasts (the cookie's expiry; a duty shift). 1 min–7 days.
    /// Default: `"12h"`.
    #[serde(with = "crate::units::duration")]
    pub session_ttl: Duration,
    /// Failed sign-ins of one account within `lockout_window` that lock it for
    /// `lockout_for`; a source address is locked after four times as many (any accounts).
    /// 1–100. Default: `5`.
    pub lockout_after: u32,
    /// The window failed sign-ins are counted in. More than 0 s. Default: `"15m"`.
    #[serde(with = "crate::units::duration")]
    pub lockout_window: Duration,
    /// How long a locked account (or address) is refused, even with the right password.
    /// More than 0 s, at most 24 h. Default: `"15m"`.
    #[serde(with = "crate::units::duration")]
    pub lockout_for: Duration,
    /// PEM certificate chain: with `tls_key`, the API and console are served over HTTPS
    /// only (and the session cookie is `Secure`). Both or neither. Default: none (HTTP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert`. Keep it `0600`. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
}

/// `api.anonymous_read`: who may read the API without signing in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AnonymousRead {
    /// Clients on this machine (a loopback source address) read without signing in.
    #[default]
    Loopback,
    /// Every reader signs in (or sends a token).
    None,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            token: None,
            token_file: None,
            token_env: None,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_connections: 256,
            max_sse_clients: 32,
            anonymous_read: AnonymousRead::Loopback,
            session_ttl: Duration::from_secs(12 * 3600),
            lockout_after: 5,
            lockout_window: Duration::from_secs(15 * 60),
            lockout_for: Duration::from_secs(15 * 60),
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// `[[devices]]`: one configured device. Events from devices that are not listed are
/// still stored, but without name and location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Required. The device's id as it appears in its MQTT topic, unique within this
    /// gateway and different from `gateway.id`. Letters, digits, `-`, `_`, `.`; at most
    /// 128 characters.
    pub id: String,
    /// Required. The device class: one of `access_control`, `smoke`, `water_leak`, `gas`,
    /// `camera`, `fire_panel`, `manual_call_point`, `elevator`, `emergency_button`,
    /// `valve`, `sounder`, `gateway`.
    pub kind: DeviceKind,
    /// A human-readable name shown to the operator on duty, e.g. `"3F corridor smoke"`.
    /// Default: empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Where the device is: `{ building = "1", unit = "1", floor = "3", room = "301" }`,
    /// or a `zone` for outdoor and shared areas. Shown with every alert; all parts
    /// optional. Default: empty.
    #[serde(default, skip_serializing_if = "Location::is_empty")]
    pub location: Location,
    /// How often the device reports when nothing happens. When set, the device is
    /// reported offline (`DEV.OFFLINE`) after missing heartbeats; when unset, it is never
    /// reported offline. At least 1 s. Default: unset.
    #[serde(
        default,
        with = "crate::units::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub heartbeat_interval: Option<Duration>,
    /// `modbus = { bus = "rs485-1", unit = 3, profile = "rope-leak", poll_interval = "1s",
    /// timeout = "500ms", offline_after = 3 }`: the gateway polls this device over
    /// Modbus (see [`crate::DeviceModbusConfig`]). Default: unset (the device publishes
    /// over MQTT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modbus: Option<DeviceModbusConfig>,
    /// `source = { name = "zigbee", id = "b1-101 kitchen leak" }`: the device publishes
    /// through the `[[ingest.sources]]` entry `name`, which knows it by `id` (a zigbee2mqtt
    /// friendly name, a camera id, a door). Its events then carry this device's `id`,
    /// kind and location. Default: unset (a native device, known by `id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<DeviceSource>,
}
