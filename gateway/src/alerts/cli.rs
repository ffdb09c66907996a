//! `estate-gateway alerts | ack | close`: the operator's terminal client of the HTTP API.
//!
//! HTTP goes through hyper's HTTP/1.1 client (`hyper::client::conn::http1` over a tokio
//! `TcpStream`, one connection per request; the API listens on loopback or the
//! property-management LAN: no TLS, no proxy). `alerts --follow` reads `GET /api/stream`
//! (src/api/mod.rs, `stream`) frame by frame and:
//!
//! - folds repeats: it prints a line when an alert opens and when a field its line shows
//!   changes, not when a repeat only raises the count ([`Follow`], [`Shown`]);
//! - reconnects: a lost stream is one line on stderr, then retries after 0.5 s, doubling
//!   to 10 s ([`Backoff`]); back, it prints `-- reconnected --` on stderr and resyncs;
//! - resyncs, after a reconnect or when the gateway sends `resync` (this client fell
//!   behind): it re-reads `GET /api/alerts` and prints what differs from what it showed.
//!
//! The pure parts are tested beside the code: the table and the lines, the SSE parser
//! ([`SseParser`]), what the follower prints ([`Follow`]) and the delays ([`Backoff`]).
//! docs/alerts-and-api.md ("On a terminal") is the operator's description.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{header, Method, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use estate_config::Config;

use super::model::Alert;
use crate::events::now_ms;

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
    /// Bearer token for write actions (`api.token`).
    #[arg(long, env = "ESTATE_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// `estate-gateway alerts`: list alerts.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
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
    #[command(flatten)]
    pub api: ApiArgs,
    /// Who acknowledges. Default: $USER.
    #[arg(long)]
    pub by: Option<String>,
    #[arg(long, default_value = "")]
    pub note: String,
}

/// `estate-gateway close ID --disposition …`.
#[derive(Debug, Clone, Args)]
pub struct CloseArgs {
    /// The alert's id (see `estate-gateway alerts`).
    pub id: String,
    #[command(flatten)]
    pub api: ApiArgs,
    /// `real`, `false_alarm`, `test` or `maintenance`.
    #[arg(long, value_parser = ["real", "false_alarm", "test", "maintenance"])]
    pub disposition: String,
    /// Who closes. Default: $USER.
    #[arg(long)]
    pub by: Option<String>,
    #[arg(long, default_value = "")]
    pub note: String,
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

fn who(by: &Option<String>) -> String {
    by.clone()
        .or_else(|| std::env::var("USER").ok())
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "cli".into())
}

/// How long a request may take, from connecting to the last byte of its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The live stream sends `status` every second and a keep-alive comment every 15 s
/// (src/api/mod.rs, `live_stream`): this long without a byte, the connection is lost.
const STREAM_IDLE: Duration = Duration::from_secs(30);

/// The error and its sources, `: `-separated (hyper's errors keep the I/O cause apart).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let msg = cause.to_string();
        if !out.ends_with(&msg) {
            let _ = write!(out, ": {msg}");
        }
        source = cause.source();
    }
    out
}

/// Sends `req` on a new HTTP/1.1 connection to `addr`: the response, its body still
/// arriving, and the connection's request half (hold it while reading the body). `Err`
/// is why nothing came back (the transport's cause, without the address).
async fn send(
    addr: SocketAddr,
    req: Request<Full<Bytes>>,
) -> Result<(Response<Incoming>, SendRequest<Full<Bytes>>), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) = http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| chain(&e))?;
    // The connection's driver: it ends with the connection (the body read, or dropped).
    // Its error, if any, reaches the reader of the response as well.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender.send_request(req).await.map_err(|e| chain(&e))?;
    Ok((resp, sender))
}

/// A request to the API (JSON `body` unless GET): its status and body. `Err` is the
/// transport's cause (refused, reset, no answer within [`REQUEST_TIMEOUT`]).
async fn request_raw(
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Result<(u16, String), String> {
    let mut req = Request::builder()
        .method(method.clone())
        .uri(path)
        .header(header::HOST, addr.to_string());
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if method != Method::GET {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_owned())))
        .map_err(|e| format!("cannot build the request {path}: {e}"))?;
    let exchange = async {
        let (resp, _sender) = send(addr, req).await?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| chain(&e))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()))?
}

/// [`request_raw`] for a one-shot command: a transport failure names the API.
async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Result<(u16, String), String> {
    request_raw(addr, method, path, token, body)
        .await
        .map_err(|e| format!("cannot reach the gateway API at http://{addr}: {e}"))
}

/// The error message of a JSON error body, or the body.
fn api_error(status: u16, body: &str) -> String {
    let msg = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.trim().to_owned());
    format!("the API refused ({status}): {msg}")
}

/// `GET /api/alerts` (the open ones; with `all` the history too). `Err` without the
/// address, as [`request_raw`].
async fn fetch_alerts(addr: SocketAddr, all: bool) -> Result<Vec<Alert>, String> {
    let path = if all {
        "/api/alerts?status=all"
    } else {
        "/api/alerts"
    };
    let (status, body) = request_raw(addr, Method::GET, path, None, "").await?;
    if status != 200 {
        return Err(api_error(status, &body));
    }
    #[derive(serde::Deserialize)]
    struct List {
        alerts: Vec<Alert>,
    }
    let list: List =
        serde_json::from_str(&body).map_err(|e| format!("unexpected API answer: {e}"))?;
    Ok(list.alerts)
}

/// `GET /api/alerts/{id}`: the alert, or `None` when the gateway no longer has it.
async fn fetch_alert(addr: SocketAddr, id: &str) -> Result<Option<Alert>, String> {
    let (status, body) =
        request_raw(addr, Method::GET, &format!("/api/alerts/{id}"), None, "").await?;
    match status {
        200 => serde_json::from_str(&body)
            .map(Some)
            .map_err(|e| format!("unexpected API answer: {e}")),
        404 => Ok(None),
        _ => Err(api_error(status, &body)),
    }
}

/// `estate-gateway alerts`: prints the table; with `--follow` then prints every change.
pub async fn list(args: ListArgs) -> Result<(), String> {
    let addr = api_addr(&args.api)?;
    let reach = |e: String| format!("cannot reach the gateway API at http://{addr}: {e}");
    // With --follow the stream opens before the list is read, so no change between the
    // table and the first streamed event is lost (one seen twice folds away).
    let stream = match args.follow {
        true => Some(LiveStream::open(addr).await.map_err(reach)?),
        false => None,
    };
    let alerts = fetch_alerts(addr, args.all).await.map_err(reach)?;
    let now = now_ms();
    print!("{}", table(&alerts, now));
    let Some(stream) = stream else {
        return Ok(());
    };
    println!("-- following changes (Ctrl-C to stop) --");
    let shown = Follow::new(args.all, alerts, now);
    tokio::select! {
        never = follow(addr, args.all, stream, shown) => match never {},
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// `GET /api/stream`, open: the body as it arrives.
#[derive(Debug)]
struct LiveStream {
    body: Incoming,
    /// The connection's request half: hyper keeps the connection while it lives.
    _sender: SendRequest<Full<Bytes>>,
}

impl LiveStream {
    /// Opens the stream (`Err`: the transport's cause or the API's refusal, e.g. 503
    /// when `api.max_sse_clients` streams are open). Once the answer is 200 the gateway
    /// has subscribed this stream to every change.
    async fn open(addr: SocketAddr) -> Result<LiveStream, String> {
        let req = Request::builder()
            .uri("/api/stream")
            .header(header::HOST, addr.to_string())
            .header(header::ACCEPT, "text/event-stream")
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let (resp, sender) = tokio::time::timeout(REQUEST_TIMEOUT, send(addr, req))
            .await
            .map_err(|_| format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()))??;
        let status = resp.status().as_u16();
        if status != 200 {
            let body = tokio::time::timeout(REQUEST_TIMEOUT, resp.into_body().collect())
                .await
                .ok()
                .and_then(Result::ok)
                .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                .unwrap_or_default();
            return Err(api_error(status, &body));
        }
        Ok(LiveStream {
            body: resp.into_body(),
            _sender: sender,
        })
    }

    /// The next bytes of the stream; `Err` when it ended, failed or went quiet for
    /// [`STREAM_IDLE`], with the cause.
    async fn next_bytes(&mut self) -> Result<Bytes, String> {
        loop {
            let frame = tokio::time::timeout(STREAM_IDLE, self.body.frame())
                .await
                .map_err(|_| format!("nothing on the stream for {} s", STREAM_IDLE.as_secs()))?;
            match frame {
                None => return Err("the gateway closed the stream".into()),
                Some(Err(e)) => return Err(chain(&e)),
                // Trailers carry no events.
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        return Ok(data);
                    }
                }
            }
        }
    }
}

/// Follows the stream for good: prints changes, reconnects when it is lost, resyncs.
/// Ends only with the task (Ctrl-C in [`list`]).
async fn follow(
    addr: SocketAddr,
    all: bool,
    mut stream: LiveStream,
    mut shown: Follow,
) -> Infallible {
    let mut backoff = Backoff::default();
    loop {
        let mut cause = read_stream(addr, all, &mut stream, &mut shown).await;
        // One line for the loss, another only when the cause changes (the gateway's
        // stream ended, then its port refuses while it restarts).
        let mut told: Option<String> = None;
        stream = loop {
            let delay = backoff.next_delay();
            if told.as_deref() != Some(cause.as_str()) {
                eprintln!(
                    "lost the gateway at http://{addr}: {cause}; retrying in {}",
                    seconds(delay)
                );
                told = Some(cause.clone());
            }
            tokio::time::sleep(delay).await;
            match LiveStream::open(addr).await {
                Ok(s) => {
                    eprintln!("-- reconnected --");
                    match resync(addr, all, &mut shown).await {
                        Ok(()) => break s,
                        Err(e) => cause = e,
                    }
                }
                Err(e) => cause = e,
            }
        };
        backoff.reset();
    }
}

/// Reads events until the stream fails: the cause.
async fn read_stream(
    addr: SocketAddr,
    all: bool,
    stream: &mut LiveStream,
    shown: &mut Follow,
) -> String {
    let mut parser = SseParser::default();
    loop {
        let bytes = match stream.next_bytes().await {
            Ok(b) => b,
            Err(cause) => return cause,
        };
        for ev in parser.push(&bytes) {
            match ev.event.as_str() {
                "alert" => match serde_json::from_str::<Alert>(&ev.data) {
                    Ok(a) => {
                        if let Some(line) = shown.change(a, now_ms()) {
                            println!("{line}");
                        }
                    }
                    Err(e) => eprintln!("ignored an alert event this client cannot read: {e}"),
                },
                "resync" => {
                    if let Err(cause) = resync(addr, all, shown).await {
                        return cause;
                    }
                }
                _ => {}
            }
        }
    }
}

/// Re-reads the alerts and prints what differs from what was shown.
async fn resync(addr: SocketAddr, all: bool, shown: &mut Follow) -> Result<(), String> {
    let list = fetch_alerts(addr, all).await?;
    let (lines, missing) = shown.resync(list, now_ms());
    for line in lines {
        println!("{line}");
    }
    for id in missing {
        let found = fetch_alert(addr, &id).await?;
        if let Some(line) = shown.looked_up(&id, found, now_ms()) {
            println!("{line}");
        }
    }
    Ok(())
}

/// "0.5 s", "1 s", "10 s".
fn seconds(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// The delays between reconnect attempts: 0.5 s, doubling, at most 10 s; from 0.5 s
/// again once a stream is open.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(10);

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(Self::MAX);
        d
    }

    /// Connected: the next loss starts from 0.5 s.
    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: Self::FIRST }
    }
}

/// One server-sent event: its type (`message` when the event names none) and its
/// `data:` lines joined with `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

/// The longest line kept: a longer one (no gateway sends it) is dropped, not buffered.
const SSE_MAX_LINE: usize = 1 << 20;

/// Server-sent events from bytes as they arrive (the WHATWG `text/event-stream` rules
/// the gateway uses): `event:` names the type, `data:` lines add to the data, a blank
/// line ends the event (one without data is dropped), a line starting with `:` is a
/// comment (the keep-alive), other fields (`id:`, `retry:`) are ignored. Lines end with
/// `\n` or `\r\n`; a chunk may end anywhere, even inside a character.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The current line went past [`SSE_MAX_LINE`]: drop it up to its end.
    overlong: bool,
    event: String,
    data: Option<String>,
}

impl SseParser {
    /// Takes the next bytes of the stream: the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if !std::mem::take(&mut self.overlong) {
                    self.line_done(&String::from_utf8_lossy(&line), &mut out);
                }
            } else if self.line.len() < SSE_MAX_LINE {
                self.line.push(b);
            } else {
                self.overlong = true;
                self.line.clear();
            }
        }
        out
    }

    fn line_done(&mut self, line: &str, out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            if let Some(data) = self.data.take() {
                out.push(SseEvent {
                    event: if event.is_empty() {
                        "message".into()
                    } else {
                        event
                    },
                    data,
                });
            }
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {}
        }
    }
}

/// What an alert's change line shows, less the count and the age: a follower prints a
/// line when this changes.
#[derive(Debug, PartialEq, Eq)]
pub struct Shown {
    severity: u8,
    /// Status, disposition, cleared, escalated ([`status_text`]).
    status: String,
    /// Who closed it, else who acknowledged it.
    by: Option<String>,
    code: String,
    title: String,
    place: String,
    device_id: String,
}

impl Shown {
    pub fn of(a: &Alert) -> Shown {
        Shown {
            severity: a.severity,
            status: status_text(a),
            by: by_whom(a).map(str::to_owned),
            code: a.code.clone(),
            title: a.title.clone(),
            place: place(a),
            device_id: a.device_id.clone(),
        }
    }
}

/// How long a closed alert stays known without `--all`: long enough that the stream's
/// copy of a close that a resync already printed is recognised (then it is forgotten, so
/// a follower running for months keeps only the open alerts).
const FORGET_CLOSED_MS: i64 = 60_000;

/// What `alerts --follow` has shown and what it prints next (pure: alerts and the time
/// in, lines out).
#[derive(Debug)]
pub struct Follow {
    /// Every alert known here, as last received: its [`Shown`] is what was printed last.
    known: HashMap<String, Alert>,
    /// `--all`: the history is listed, so closed alerts stay known (a resync would
    /// otherwise print them as new).
    all: bool,
    /// Without `--all`: closed alerts to forget, oldest first, with when they closed here.
    closed: VecDeque<(i64, String)>,
}

/// Active, acknowledged, closed: an alert never goes back.
fn rank(a: &Alert) -> u8 {
    match (&a.closed, a.status) {
        (Some(_), _) | (None, estate_protocols::model::AlertStatus::Closed) => 2,
        (None, estate_protocols::model::AlertStatus::Acknowledged) => 1,
        (None, _) => 0,
    }
}

impl Follow {
    /// Starts from the table just printed at `now_ms` (those alerts are shown).
    pub fn new(all: bool, listed: Vec<Alert>, now_ms: i64) -> Follow {
        let mut f = Follow {
            known: HashMap::new(),
            all,
            closed: VecDeque::new(),
        };
        for a in listed {
            f.remember(a, now_ms);
        }
        f
    }

    /// A change (from the stream, or re-read): its line when the alert is new here or
    /// what its line shows changed. A copy older than the one known (fewer repeats, or an
    /// earlier status: the stream's queue behind a resync) is ignored.
    pub fn change(&mut self, a: Alert, now_ms: i64) -> Option<String> {
        self.forget_closed(now_ms);
        let line = match self.known.get(&a.id) {
            Some(prev) if a.count < prev.count || rank(&a) < rank(prev) => return None,
            Some(prev) if Shown::of(prev) == Shown::of(&a) => None,
            _ => Some(change_line(&a, now_ms)),
        };
        self.remember(a, now_ms);
        line
    }

    /// A re-read list of alerts (open ones; with `--all` the history): the lines for
    /// what differs from what was shown, and the ids of alerts shown open that the list
    /// lacks (closed since, or gone), to be looked up one by one ([`Follow::looked_up`]).
    pub fn resync(&mut self, list: Vec<Alert>, now_ms: i64) -> (Vec<String>, Vec<String>) {
        let listed: HashSet<String> = list.iter().map(|a| a.id.clone()).collect();
        let lines = list
            .into_iter()
            .filter_map(|a| self.change(a, now_ms))
            .collect();
        let mut missing = Vec::new();
        let mut pruned = Vec::new();
        for (id, a) in &self.known {
            if listed.contains(id) {
                continue;
            }
            if a.is_open() {
                missing.push(id.clone());
            } else if self.all {
                // Closed and out of the history: nothing to show.
                pruned.push(id.clone());
            }
        }
        for id in pruned {
            self.known.remove(&id);
        }
        missing.sort();
        (lines, missing)
    }

    /// The answer for an id [`Follow::resync`] asked about: the alert (closed since), or
    /// `None` when the gateway no longer has it (a line saying so).
    pub fn looked_up(&mut self, id: &str, found: Option<Alert>, now_ms: i64) -> Option<String> {
        match found {
            Some(a) => self.change(a, now_ms),
            None => self.known.remove(id).map(|a| gone_line(&a)),
        }
    }

    fn remember(&mut self, a: Alert, now_ms: i64) {
        if !self.all && !a.is_open() {
            self.closed.push_back((now_ms, a.id.clone()));
        }
        self.known.insert(a.id.clone(), a);
    }

    fn forget_closed(&mut self, now_ms: i64) {
        while let Some((at, _)) = self.closed.front() {
            if now_ms - at < FORGET_CLOSED_MS {
                break;
            }
            if let Some((_, id)) = self.closed.pop_front() {
                if self.known.get(&id).is_some_and(|a| !a.is_open()) {
                    self.known.remove(&id);
                }
            }
        }
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
    let addr = api_addr(api)?;
    let token = api.token.as_deref().filter(|t| !t.is_empty());
    let (status, resp) = request(addr, Method::POST, path, token, body).await?;
    if status != 200 {
        let mut msg = api_error(status, &resp);
        if status == 401 && token.is_none() {
            msg.push_str(" (pass --token or set ESTATE_API_TOKEN)");
        }
        return Err(msg);
    }
    let a: Alert =
        serde_json::from_str(&resp).map_err(|e| format!("unexpected API answer: {e}"))?;
    println!("{}", change_line(&a, now_ms()));
    Ok(())
}

fn severity_name(level: u8) -> &'static str {
    match level {
        1 => "1 critical",
        2 => "2 major",
        3 => "3 minor",
        _ => "4 info",
    }
}

fn status_text(a: &Alert) -> String {
    let mut s = match &a.closed {
        Some(c) => format!("closed ({})", c.disposition.as_str()),
        None => a.status.as_str().to_owned(),
    };
    if a.cleared && a.is_open() {
        s.push_str(", cleared");
    }
    if a.escalated {
        s.push_str(", escalated");
    }
    s
}

/// "3m", "2h", "1d": how long ago.
fn age(now_ms: i64, then_ms: i64) -> String {
    let s = (now_ms - then_ms).max(0) / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn place(a: &Alert) -> String {
    let l = a.location.to_string();
    if l.is_empty() {
        "-".into()
    } else {
        l
    }
}

/// The alert table: severity, age, status, code, location spelled out, device, count, id.
pub fn table(alerts: &[Alert], now_ms: i64) -> String {
    if alerts.is_empty() {
        return "No alerts.\n".into();
    }
    let rows: Vec<[String; 8]> = alerts
        .iter()
        .map(|a| {
            let device = if a.device_name.is_empty() {
                a.device_id.clone()
            } else {
                format!("{} ({})", a.device_name, a.device_id)
            };
            [
                severity_name(a.severity).into(),
                age(now_ms, a.first_seen_ms),
                status_text(a),
                a.code.clone(),
                place(a),
                device,
                a.count.to_string(),
                a.id.clone(),
            ]
        })
        .collect();
    let header = [
        "SEVERITY", "AGE", "STATUS", "CODE", "LOCATION", "DEVICE", "COUNT", "ID",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ", w = *w);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

/// Who closed the alert, else who acknowledged it.
fn by_whom(a: &Alert) -> Option<&str> {
    match (&a.closed, &a.acknowledged) {
        (Some(c), _) => Some(&c.by),
        (None, Some(k)) => Some(&k.by),
        _ => None,
    }
}

/// One line for a change: `[severity] status code at location (device) ×count id`.
pub fn change_line(a: &Alert, now_ms: i64) -> String {
    let who = by_whom(a).map(|b| format!(" by {b}")).unwrap_or_default();
    format!(
        "[{}] {}{who}: {} ({}) at {} — {} ×{} {} ago  id {}",
        severity_name(a.severity),
        status_text(a),
        a.code,
        a.title,
        place(a),
        a.device_id,
        a.count,
        age(now_ms, a.last_seen_ms),
        a.id
    )
}

/// The line for an alert shown open that the gateway no longer has (its store was
/// replaced, or the alert closed and was pruned while this client was away).
pub fn gone_line(a: &Alert) -> String {
    format!(
        "[{}] gone from the gateway: {} ({}) at {} — {}  id {}",
        severity_name(a.severity),
        a.code,
        a.title,
        place(a),
        a.device_id,
        a.id
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use estate_protocols::model::{AlertStatus, Location};

    fn alert() -> Alert {
        Alert {
            id: "01JDXW0000000000000000000A".into(),
            code: "SMOKE.ALARM".into(),
            title: "Smoke detected".into(),
            severity: 1,
            status: AlertStatus::Active,
            cleared: true,
            escalated: false,
            device_id: "smoke-1-1-3".into(),
            device_kind: Some("smoke".into()),
            device_name: "3F corridor".into(),
            location: Location {
                building: "1".into(),
                unit: "1".into(),
                floor: "3".into(),
                room: "301".into(),
                zone: String::new(),
            },
            count: 12,
            first_seen_ms: 1_000_000,
            last_seen_ms: 1_100_000,
            cleared_ms: Some(1_100_000),
            acknowledged: None,
            closed: None,
            actions: Vec::new(),
            opened_by_seq: 1,
            stored: true,
            city: None,
        }
    }

    #[test]
    fn the_table_spells_out_severity_age_status_and_location() {
        let t = table(&[alert()], 1_000_000 + 125_000);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("SEVERITY"), "{t}");
        assert!(lines[1].starts_with("1 critical"), "{t}");
        assert!(lines[1].contains("  2m  "), "{t}");
        assert!(lines[1].contains("active, cleared"), "{t}");
        assert!(
            lines[1].contains("building 1 / unit 1 / floor 3 / room 301"),
            "{t}"
        );
        assert!(lines[1].contains("3F corridor (smoke-1-1-3)"), "{t}");
        assert!(lines[1].ends_with("01JDXW0000000000000000000A"), "{t}");
        assert_eq!(table(&[], 0), "No alerts.\n");
    }

    #[test]
    fn api_errors_carry_the_apis_message() {
        assert_eq!(
            api_error(403, r#"{"error":"read-only: no api.token is configured"}"#),
            "the API refused (403): read-only: no api.token is configured"
        );
        assert_eq!(
            api_error(502, "bad gateway\n"),
            "the API refused (502): bad gateway"
        );
    }

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
        }
    }

    #[test]
    fn sse_events_parse_across_chunks() {
        let mut p = SseParser::default();
        // A keep-alive comment, then an event cut mid-line and inside "é" (0xC3 0xA9).
        assert_eq!(p.push(b": keep-alive\n\nevent: alert\r\nda"), vec![]);
        assert_eq!(p.push(b"ta: {\"t\":\"caf\xc3"), vec![]);
        assert_eq!(
            p.push(b"\xa9\"}\r\n\r\nevent: resync\ndata:{\"missed\":3}\n\n"),
            vec![
                ev("alert", "{\"t\":\"café\"}"),
                ev("resync", "{\"missed\":3}")
            ]
        );
        // Several data lines join with '\n'; no type is `message`; `id:` is ignored.
        assert_eq!(
            p.push(b"id: 7\ndata: a\ndata:\ndata: b\n\n"),
            vec![ev("message", "a\n\nb")]
        );
        // An event without data is dropped, and its type does not leak into the next.
        assert_eq!(
            p.push(b"event: status\n\ndata: x\n\n"),
            vec![ev("message", "x")]
        );
        // An overlong line is dropped up to its end; the parser carries on.
        let mut long = b"data: ".to_vec();
        long.resize(SSE_MAX_LINE + 10, b'x');
        assert_eq!(p.push(&long), vec![]);
        assert_eq!(
            p.push(b"\nevent: alert\ndata: ok\n\n"),
            vec![ev("alert", "ok")]
        );
    }

    #[test]
    fn reconnect_delays_double_from_half_a_second_to_ten() {
        let mut b = Backoff::default();
        let ms: Vec<u128> = (0..7).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(ms, [500, 1000, 2000, 4000, 8000, 10_000, 10_000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(500));
        assert_eq!(seconds(Duration::from_millis(500)), "0.5 s");
        assert_eq!(seconds(Duration::from_secs(10)), "10 s");
    }

    fn open(id: &str, count: u64) -> Alert {
        Alert {
            id: id.into(),
            count,
            cleared: false,
            cleared_ms: None,
            last_seen_ms: 1_000_000 + count as i64,
            ..alert()
        }
    }

    fn acked(id: &str, count: u64) -> Alert {
        Alert {
            status: AlertStatus::Acknowledged,
            acknowledged: Some(crate::alerts::model::Acknowledged {
                by: "wang".into(),
                at_ms: 1_200_000,
                note: String::new(),
            }),
            ..open(id, count)
        }
    }

    fn closed(id: &str, count: u64) -> Alert {
        Alert {
            status: AlertStatus::Closed,
            closed: Some(crate::alerts::model::Closed {
                by: "li".into(),
                at_ms: 1_300_000,
                disposition: crate::alerts::model::Disposition::FalseAlarm,
                note: String::new(),
            }),
            ..acked(id, count)
        }
    }

    #[test]
    fn repeats_fold_and_shown_changes_print() {
        let now = 2_000_000;
        let mut f = Follow::new(false, vec![], 0);
        let first = f.change(open("A", 1), now).expect("a new alert prints");
        assert!(
            first.contains("active: SMOKE.ALARM") && first.contains("×1"),
            "{first}"
        );
        // Repeats only raise the count (and last seen): nothing.
        for n in 2..=20 {
            assert_eq!(f.change(open("A", n), now), None, "repeat {n}");
        }
        // Cleared, escalated, acknowledged, severity: each is a line, with the count.
        let cleared = Alert {
            cleared: true,
            ..open("A", 20)
        };
        let line = f.change(cleared.clone(), now).expect("cleared prints");
        assert!(
            line.contains("active, cleared") && line.contains("×20"),
            "{line}"
        );
        assert_eq!(f.change(cleared.clone(), now), None, "the same again");
        let escalated = Alert {
            escalated: true,
            ..cleared
        };
        assert!(f
            .change(escalated, now)
            .expect("escalated")
            .contains("escalated"));
        let line = f.change(acked("A", 21), now).expect("acknowledged prints");
        assert!(line.contains("acknowledged by wang"), "{line}");
        let major = Alert {
            severity: 2,
            ..acked("A", 22)
        };
        assert!(f
            .change(major, now)
            .expect("severity")
            .starts_with("[2 major]"));
        // A copy from before (fewer repeats, an earlier status) is not news.
        assert_eq!(f.change(open("A", 5), now), None);
        let line = f.change(closed("A", 22), now).expect("closed prints");
        assert!(line.contains("closed (false_alarm) by li"), "{line}");
        assert_eq!(f.change(acked("A", 22), now), None, "closed stays closed");
    }

    #[test]
    fn a_resync_prints_what_changed_meanwhile() {
        let now = 2_000_000;
        // Shown: A active, B acknowledged, C active, D active.
        let mut f = Follow::new(
            false,
            vec![open("A", 3), acked("B", 1), open("C", 1), open("D", 1)],
            now,
        );
        // Meanwhile A repeated, B unchanged, C closed, D went, E opened.
        let (lines, missing) = f.resync(vec![open("A", 9), acked("B", 1), open("E", 1)], now);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("id E"), "{lines:?}");
        assert_eq!(missing, ["C", "D"]);
        let c = f
            .looked_up("C", Some(closed("C", 1)), now)
            .expect("closed prints");
        assert!(
            c.contains("closed (false_alarm)") && c.contains("id C"),
            "{c}"
        );
        let d = f.looked_up("D", None, now).expect("gone prints");
        assert!(
            d.starts_with("[1 critical] gone from the gateway: SMOKE.ALARM"),
            "{d}"
        );
        assert!(d.ends_with("id D"), "{d}");
        // The stream's own copy of C's close, queued behind the resync: not twice.
        assert_eq!(f.change(closed("C", 1), now + 1), None);
        // A second resync with nothing new prints nothing and asks for nothing.
        let (lines, missing) = f.resync(vec![open("A", 9), acked("B", 1), open("E", 1)], now);
        assert!(
            lines.is_empty() && missing.is_empty(),
            "{lines:?} {missing:?}"
        );
        // Without --all a closed alert is forgotten a minute later.
        assert!(f.known.contains_key("C"));
        f.change(open("A", 10), now + FORGET_CLOSED_MS);
        assert!(!f.known.contains_key("C") && f.known.contains_key("A"));
    }

    #[test]
    fn with_all_closed_alerts_stay_known() {
        let now = 2_000_000;
        let mut f = Follow::new(true, vec![closed("OLD", 1), open("A", 1)], now);
        // The history again, and an alert that opened and closed while away.
        let (lines, missing) = f.resync(
            vec![closed("OLD", 1), open("A", 1), closed("NEW", 2)],
            now + 10 * FORGET_CLOSED_MS,
        );
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains("id NEW") && lines[0].contains("closed"),
            "{lines:?}"
        );
        assert!(missing.is_empty());
        // A closed alert pruned from the history is dropped without a line.
        let (lines, missing) = f.resync(vec![open("A", 1), closed("NEW", 2)], now);
        assert!(
            lines.is_empty() && missing.is_empty(),
            "{lines:?} {missing:?}"
        );
        assert!(!f.known.contains_key("OLD"));
    }

    #[test]
    fn the_api_address_comes_from_the_flag() {
        let a = ApiArgs {
            api: Some("http://127.0.0.1:18080/".into()),
            config: None,
            token: None,
        };
        assert_eq!(api_addr(&a).expect("addr").port(), 18080);
        let bad = ApiArgs {
            api: Some("https://x".into()),
            ..a
        };
        assert!(api_addr(&bad).is_err());
    }
}
