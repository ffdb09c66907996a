//! `estate-gateway alerts | ack | close`: the operator's terminal client of the HTTP API.
//!
//! A tiny HTTP/1.1 client over a tokio `TcpStream` (the API listens on loopback or the
//! property-management LAN; no TLS, no proxy), so no HTTP client crate is needed. The
//! table formatting is pure and tested.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
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
    /// Keep running and print every alert change as it happens.
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

/// One HTTP request: status and body.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Result<(u16, String), String> {
    let fut = async {
        let mut s = TcpStream::connect(addr).await?;
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        if let Some(t) = token {
            let _ = write!(req, "Authorization: Bearer {t}\r\n");
        }
        if method != "GET" {
            let _ = write!(
                req,
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            );
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(15), fut)
        .await
        .map_err(|_| format!("{addr}: no answer within 15 s"))?
        .map_err(|e| format!("cannot reach the gateway API at http://{addr}: {e}"))?;
    parse_response(&buf)
}

/// Status and body of an HTTP/1.1 response (plain or chunked).
fn parse_response(buf: &[u8]) -> Result<(u16, String), String> {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("malformed HTTP response")?;
    let head = String::from_utf8_lossy(&buf[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("malformed HTTP status line")?;
    let mut body = buf[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&b[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        b = &b[eol + 2..];
        if size == 0 || b.len() < size {
            break;
        }
        out.extend_from_slice(&b[..size]);
        b = b.get(size + 2..).unwrap_or_default();
    }
    out
}

/// The error message of a JSON error body, or the body.
fn api_error(status: u16, body: &str) -> String {
    let msg = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.trim().to_owned());
    format!("the API refused ({status}): {msg}")
}

/// `estate-gateway alerts`: prints the table; with `--follow` then prints every change.
pub async fn list(args: ListArgs) -> Result<(), String> {
    let addr = api_addr(&args.api)?;
    let path = if args.all {
        "/api/alerts?status=all"
    } else {
        "/api/alerts"
    };
    let (status, body) = request(addr, "GET", path, None, "").await?;
    if status != 200 {
        return Err(api_error(status, &body));
    }
    #[derive(serde::Deserialize)]
    struct List {
        alerts: Vec<Alert>,
    }
    let list: List =
        serde_json::from_str(&body).map_err(|e| format!("unexpected API answer: {e}"))?;
    print!("{}", table(&list.alerts, now_ms()));
    if args.follow {
        follow(addr).await?;
    }
    Ok(())
}

/// Prints one line per `alert` event of the live stream until it ends or Ctrl-C.
async fn follow(addr: SocketAddr) -> Result<(), String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot reach the gateway API at http://{addr}: {e}"))?;
    s.write_all(
        format!("GET /api/stream HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n")
            .as_bytes(),
    )
    .await
    .map_err(|e| e.to_string())?;
    println!("-- following changes (Ctrl-C to stop) --");
    let mut lines = BufReader::new(s).lines();
    let mut event = String::new();
    loop {
        let line = tokio::select! {
            l = lines.next_line() => l.map_err(|e| e.to_string())?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Some(line) = line else {
            return Err("the gateway closed the stream".into());
        };
        if let Some(e) = line.strip_prefix("event: ") {
            event = e.to_owned();
        } else if let Some(d) = line.strip_prefix("data: ") {
            if event == "alert" {
                if let Ok(a) = serde_json::from_str::<Alert>(d) {
                    println!("{}", change_line(&a, now_ms()));
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
    let (status, resp) = request(addr, "POST", path, token, body).await?;
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

/// One line for a change: `[severity] status code at location (device) ×count id`.
pub fn change_line(a: &Alert, now_ms: i64) -> String {
    let who = match (&a.closed, &a.acknowledged) {
        (Some(c), _) => format!(" by {}", c.by),
        (None, Some(k)) => format!(" by {}", k.by),
        _ => String::new(),
    };
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
    fn responses_parse_plain_and_chunked() {
        let plain = b"HTTP/1.1 409 Conflict\r\ncontent-length: 15\r\n\r\n{\"error\":\"no\"}";
        assert_eq!(parse_response(plain).expect("parses").0, 409);
        let chunked =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(chunked).expect("parses"),
            (200, "hello world".into())
        );
        assert_eq!(
            api_error(403, r#"{"error":"read-only: no api.token is configured"}"#),
            "the API refused (403): read-only: no api.token is configured"
        );
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
