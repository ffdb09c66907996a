//! `estate-gateway alerts | ack | close`: the operator's terminal client of the HTTP API.
//!
//! HTTP goes through hyper's HTTP/1.1 client (`hyper::client::conn::http1` over a tokio
//! `TcpStream`, one connection per request; the API listens on loopback or the
//! property-management LAN: no TLS, no proxy). `alerts --follow` reads `GET /api/stream`
//! (src/api/mod.rs, `stream`) frame by frame and:
//!
//! - folds repeats: it prints a line when an alert opens and when a field its line shows
//!   changes, not when a repeat only raises the count (`follow.rs`);
//! - reconnects: a lost stream is one line on stderr, then retries after 0.5 s, doubling
//!   to 10 s; back, it prints `-- reconnected --` on stderr and resyncs;
//! - resyncs, after a reconnect or when the gateway sends `resync` (this client fell
//!   behind): it re-reads `GET /api/alerts` and prints what differs from what it showed.
//!
//! The rooms: `http.rs` (requests and the open stream), `sse.rs` (the stream's events
//! from its bytes), `follow.rs` (what the follower prints, its reconnects and resyncs),
//! `lines.rs` (the table and the change lines). The pure parts (lines, SSE parsing, what
//! the follower prints, the delays) are tested in `tests.rs`.
//! docs/alerts-and-api.md ("On a terminal") is the operator's description.

mod follow;
mod http;
mod lines;
mod sse;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use hyper::Method;

use estate_config::Config;

use super::model::Alert;
use crate::events::now_ms;
use follow::{follow, Follow};
use http::{fetch_alerts, request, LiveStream, Target};
pub use lines::{change_line, table};

/// Where the API is and who acts.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// The gateway's API, e.g. `http://127.0.0.1:8080`. Default: `api.listen` of
    /// `--config`, else `http://127.0.0.1:8080`.
    #[arg(long)]
    pub api: Option<String>,
    /// Read `api.listen` from this config file.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Bearer token sent with every request: a named token (`estate-gateway users token
    /// add`) or `api.token`. Writes need one of an operator; reads need one where
    /// `api.anonymous_read` does not let this client read signed out.
    #[arg(long, env = "ESTATE_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// `estate-gateway alerts`: list alerts.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Where the API is (and, for writes, the token).
    #[command(flatten)]
    pub api: ApiArgs,
    /// Include closed alerts (the history).
    #[arg(long)]
    pub all: bool,
    /// Keep running and print a line when an alert's shown state changes.
    ///
    /// A line is printed when an alert opens and when a field the line shows changes:
    /// severity, status (active, acknowledged, closed and its disposition), cleared,
    /// escalated, who acknowledged or closed it. A repeat that only raises the count and
    /// the last-seen time prints nothing; the next line printed for that alert carries the
    /// count. Linkage actions and the city's handling are not on the line (the console
    /// shows them).
    ///
    /// When the connection to the gateway is lost, one line on stderr says so ("lost the
    /// gateway at URL: cause; retrying in 0.5 s"), and the client retries after 0.5 s,
    /// doubling up to 10 s (another line only when the cause changes). Once back it
    /// prints "-- reconnected --" on stderr, re-reads the alerts and prints a line for
    /// each alert that opened, changed, closed or is gone from the gateway meanwhile; the
    /// same when the gateway says this client fell behind (a `resync` event). An alert
    /// that opened and closed while the connection was down shows only with `--all`.
    /// Ctrl-C ends it.
    #[arg(long, short)]
    pub follow: bool,
}

/// `estate-gateway ack ID`.
#[derive(Debug, Clone, Args)]
pub struct AckArgs {
    /// The alert's id (see `estate-gateway alerts`).
    pub id: String,
    /// Where the API is (and, for writes, the token).
    #[command(flatten)]
    pub api: ApiArgs,
    /// Who acknowledges. Default: $USER.
    #[arg(long)]
    pub by: Option<String>,
    /// A note kept with the action in the alert's audit trail.
    #[arg(long, default_value = "")]
    pub note: String,
}

/// `estate-gateway close ID --disposition …`.
#[derive(Debug, Clone, Args)]
pub struct CloseArgs {
    /// The alert's id (see `estate-gateway alerts`).
    pub id: String,
    /// Where the API is (and, for writes, the token).
    #[command(flatten)]
    pub api: ApiArgs,
    /// `real`, `false_alarm`, `test` or `maintenance`.
    #[arg(long, value_parser = ["real", "false_alarm", "test", "maintenance"])]
    pub disposition: String,
    /// Who closes. Default: $USER.
    #[arg(long)]
    pub by: Option<String>,
    /// A note kept with the action in the alert's audit trail.
    #[arg(long, default_value = "")]
    pub note: String,
}

/// The API's address and token from the flags.
fn target(a: &ApiArgs) -> Result<Target, String> {
    Ok(Target {
        addr: api_addr(a)?,
        token: a.token.clone(),
    })
}

/// The API's address from the flags.
fn api_addr(a: &ApiArgs) -> Result<SocketAddr, String> {
    if let Some(url) = &a.api {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("--api {url:?}: only http:// URLs are supported"))?;
        let hostport = rest.trim_end_matches('/');
        use std::net::ToSocketAddrs;
        return hostport
            .to_socket_addrs()
            .map_err(|e| format!("--api {url:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("--api {url:?}: no address"));
    }
    if let Some(path) = &a.config {
        let cfg = Config::load(path).map_err(|e| format!("invalid config:\n{e}"))?;
        let mut addr = cfg.api.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        return Ok(addr);
    }
    Ok(SocketAddr::from(([127, 0, 0, 1], 8080)))
}

/// A transport failure of a one-shot command, naming the API.
fn cannot_reach(addr: SocketAddr, cause: String) -> String {
    format!("cannot reach the gateway API at http://{addr}: {cause}")
}

fn who(by: &Option<String>) -> String {
    by.clone()
        .or_else(|| std::env::var("USER").ok())
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "cli".into())
}

/// `estate-gateway alerts`: prints the table; with `--follow` then prints every change.
pub async fn list(args: ListArgs) -> Result<(), String> {
    let api = target(&args.api)?;
    let addr = api.addr;
    let reach = |e| cannot_reach(addr, e);
    // With --follow the stream opens before the list is read, so no change between the
    // table and the first streamed event is lost (one seen twice folds away).
    let stream = match args.follow {
        true => Some(LiveStream::open(&api).await.map_err(reach)?),
        false => None,
    };
    let alerts = fetch_alerts(&api, args.all).await.map_err(reach)?;
    let now = now_ms();
    print!("{}", table(&alerts, now));
    let Some(stream) = stream else {
        return Ok(());
    };
    println!("-- following changes (Ctrl-C to stop) --");
    let shown = Follow::new(args.all, alerts, now);
    tokio::select! {
        never = follow(&api, args.all, stream, shown) => match never {},
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// `estate-gateway ack ID`.
pub async fn ack(args: AckArgs) -> Result<(), String> {
    let body = serde_json::json!({"by": who(&args.by), "note": args.note}).to_string();
    act(&args.api, &format!("/api/alerts/{}/ack", args.id), &body).await
}

/// `estate-gateway close ID --disposition …`.
pub async fn close(args: CloseArgs) -> Result<(), String> {
    let body = serde_json::json!({
        "by": who(&args.by),
        "disposition": args.disposition,
        "note": args.note,
    })
    .to_string();
    act(&args.api, &format!("/api/alerts/{}/close", args.id), &body).await
}

async fn act(api: &ApiArgs, path: &str, body: &str) -> Result<(), String> {
    let target = target(api)?;
    let (status, resp) = request(&target, Method::POST, path, body)
        .await
        .map_err(|e| cannot_reach(target.addr, e))?;
    if status != 200 {
        return Err(target.refusal(status, &resp));
    }
    let a: Alert =
        serde_json::from_str(&resp).map_err(|e| format!("unexpected API answer: {e}"))?;
    println!("{}", change_line(&a, now_ms()));
    Ok(())
}
