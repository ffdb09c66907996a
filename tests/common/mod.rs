//! Shared helpers for the black-box end-to-end tests and the benches (each bench
//! includes this module with `#[path = "../../tests/common/mod.rs"]`).
//!
//! - The gateway runs as a real process ([`Gateway`]): `estate-gateway run` with a config
//!   written per test, its API on port 0 (learned from the one `ready` line on stdout),
//!   its logs (stderr) in a file in the test's temp dir. The process is killed when the
//!   handle drops, and the log tail is printed when the test is failing.
//! - Brokers ([`Broker`]): an embedded rumqttd started in the test process by default.
//!   When `ESTATE_TEST_MQTT=host:port` is set (CI points it at a Mosquitto),
//!   [`Broker::shared`] returns that broker instead, so every test except the
//!   embedded-only pipeline variant runs against the broker a deployment uses. The
//!   external broker may be shared by concurrently running tests: each test has its own
//!   gateway id and estate id ([`Ids`]), hence its own topics and client ids, and the city
//!   recorder subscribes to `city/v1/{estate_id}/#` only. The external broker must not
//!   drop QoS 1 messages for a session that lags: with Mosquitto set
//!   `max_queued_messages 0` (its default, 1000, loses messages under the pipeline test's
//!   load; see [`broker_drop_hint`]).
//! - Observation: [`http_get`] (hyper's HTTP/1.1 client) for `/metrics` and `/healthz`;
//!   [`Metrics`] parses the Prometheus text with `prometheus-parse`; waits poll with a deadline and fail with the
//!   last values seen. Nothing sleeps to order steps.

#![allow(dead_code)] // each test binary uses a different subset of these helpers
#![allow(unused_imports)] // the submodules take these through `use super::*`

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use estate_sim::city::{CityOptions, CityRecorder};
use estate_sim::estate::demo_devices;
use estate_sim::publish::{random_client_id, PublishOptions};

/// True when every test must run (`CI` is set: `scripts/test.sh` sets it after installing
/// every tool the tests need).
pub fn everything_required() -> bool {
    std::env::var_os("CI").is_some()
}

/// A test cannot run here because `missing` is: under [`everything_required`] that fails
/// the test, otherwise it says `SKIPPED` on stderr and the caller returns.
pub fn cannot_run(test: &str, missing: &str) {
    if everything_required() {
        panic!("{test}: {missing} (CI=1: every test must run; scripts/test.sh installs it)");
    }
    eprintln!("SKIPPED {test}: {missing}");
}

/// The gateway binary under test.
pub const GATEWAY_BIN: &str = env!("CARGO_BIN_EXE_estate-gateway");

/// The workspace root (for `config/…` paths).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the gateway package lives in the workspace")
        .to_path_buf()
}

mod broker;
pub use broker::*;
mod env;
pub use env::*;
mod gateway;
pub use gateway::*;
mod http;
pub use http::*;
mod metrics;
pub use metrics::*;
mod mqtt;
pub use mqtt::*;
mod net;
pub use net::*;
mod config;
pub use config::*;
mod cli;
pub use cli::*;
mod bench;
pub mod nats;
pub use bench::*;
