//! The local API's limits (issue 13: 4,096 idle connections exhausted the unit's
//! `LimitNOFILE`, the MQTT reconnects then failed with EMFILE; a 300 KiB note closing an
//! alert wedged the uplink). The real gateway binary, a real broker, raw sockets:
//!
//! - idle connections (nothing sent, half a request head, a served request kept alive)
//!   are closed by the gateway after their timeout, while a live stream stays open;
//! - the connection cap holds: connections over it are refused at once, the gateway's
//!   descriptors stay bounded, alarms are still ingested and forwarded meanwhile, and
//!   the API answers again once connections close; live streams have their own cap;
//! - the `Bearer` scheme is accepted in any case;
//! - an oversized body (a 300 KiB note) is refused with 413, over-long fields with 400
//!   naming the field, and nothing changes on the alert.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::{get_json, Broker, EventTap, Gateway, TestEnv};

const TOKEN: &str = "limits-token-7c2e";

fn env() -> TestEnv {
    let broker = Broker::shared();
    let mut env = TestEnv::new(broker.clone(), broker);
    env.down_alert_after = "1h".into();
    env
}

fn start(env: &TestEnv, api: &str) -> Gateway {
    // `[api]` is not in the generated config; appended after the devices it is its own
    // table.
    common::start_gateway_with(env, &format!("\n[api]\ntoken = {TOKEN:?}\n{api}"))
}

/// Reads one HTTP/1.1 response (head and a `Content-Length` body) from a kept-alive
/// connection; returns its status and body.
async fn read_response(s: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("a response within 10 s")
            .expect("read");
        assert!(n > 0, "connection closed before a response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .expect("content-length");
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await.expect("read body");
        assert!(n > 0, "closed mid-body");
        buf.extend_from_slice(&chunk[..n]);
    }
    (
        status,
        String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string(),
    )
}

/// Sends `GET path` on a kept-alive connection and reads the response.
async fn get_keep_alive(s: &mut TcpStream, path: &str) -> (u16, String) {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: gw\r\n\r\n").as_bytes())
        .await
        .expect("write");
    read_response(s).await
}

/// Waits until the peer closes `s` (EOF or reset), reading and returning whatever it
/// sent first; panics after `within`.
async fn wait_closed(s: &mut TcpStream, within: Duration, what: &str) -> Vec<u8> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => panic!("{what}: still open after {within:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Issue 13: idle connections are closed (they used to stay open forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_after_their_timeout() {
    let env = env();
    let mut gw = start(
        &env,
        "header_read_timeout = \"1s\"\nidle_timeout = \"2s\"\n",
    );
    gw.wait_subscribed().await;
    let addr = gw.api;

    // A live stream is never idle: it must outlive every timeout below.
    let mut stream = connect(addr).await;
    stream
        .write_all(b"GET /api/stream HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .expect("write");

    // 20 connections that send nothing, one that sends half a request head, five that
    // are served a request and then stay idle.
    let opened = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(connect(addr).await);
    }
    let mut partial = connect(addr).await;
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost:")
        .await
        .expect("write");
    let mut kept = Vec::new();
    for _ in 0..5 {
        let mut s = connect(addr).await;
        let (status, _) = get_keep_alive(&mut s, "/healthz").await;
        assert_eq!(status, 200);
        // Still usable: a second request on the same connection.
        let (status, _) = get_keep_alive(&mut s, "/api/status").await;
        assert_eq!(status, 200);
        kept.push((s, Instant::now()));
    }

    for (i, s) in silent.iter_mut().enumerate() {
        let got = wait_closed(
            s,
            Duration::from_secs(15),
            &format!("silent connection {i}"),
        )
        .await;
        assert!(got.is_empty(), "nothing is sent to a silent connection");
    }
    assert!(
        opened.elapsed() >= Duration::from_millis(900),
        "closed before the header timeout (1 s): {:?}",
        opened.elapsed()
    );
    wait_closed(&mut partial, Duration::from_secs(15), "half a request head").await;
    for (i, (s, served)) in kept.iter_mut().enumerate() {
        wait_closed(
            s,
            Duration::from_secs(15),
            &format!("kept-alive connection {i}"),
        )
        .await;
        assert!(
            served.elapsed() >= Duration::from_millis(1900),
            "kept-alive connection {i} closed {:?} after its response, before the idle timeout (2 s)",
            served.elapsed()
        );
    }

    // The stream is still delivering (a status event every second), past both timeouts.
    let mut buf = vec![0u8; 64 * 1024];
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains("event: status") || opened.elapsed() < Duration::from_secs(3) {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .expect("the live stream keeps sending")
            .expect("read stream");
        assert!(n > 0, "the live stream was closed as idle");
        seen = String::from_utf8_lossy(&buf[..n]).to_string();
    }

    let m = gw.metrics().await.expect("metrics");
    assert!(
        m.n("estate_api_closed_total", &[("reason", "header_timeout")]) >= 21,
        "{}",
        m.summary()
    );
    assert!(m.n("estate_api_closed_total", &[("reason", "idle_timeout")]) >= 5);
    drop(stream);
    gw.terminate();
    assert_eq!(
        gw.wait_exit(Duration::from_secs(20)).map(|s| s.success()),
        Some(true)
    );
}

/// Issue 13: connections over `api.max_connections` are refused at once and cost no
/// descriptor; alarms are ingested and forwarded meanwhile; the API answers again once
/// connections close; live streams have their own cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_holds_and_mqtt_never_starves() {
    const CAP: usize = 8;
    let env = env();
    let tap = EventTap::start(&env.uplink, &env.estate_id).await;
    let mut gw = start(
        &env,
        &format!("max_connections = {CAP}\nmax_sse_clients = 2\nidle_timeout = \"5m\"\nheader_read_timeout = \"5m\"\n"),
    );
    gw.wait_subscribed().await;
    let addr = gw.api;
    let baseline = open_fds(gw.pid());

    // Take every slot with a served, kept-alive connection.
    let mut held = Vec::new();
    for _ in 0..CAP {
        let mut s = connect(addr).await;
        assert_eq!(get_keep_alive(&mut s, "/healthz").await.0, 200);
        held.push(s);
    }

    // 200 more, at once: each is refused (a 503, or closed) without waiting.
    let mut extra = Vec::new();
    for _ in 0..200 {
        extra.push(connect(addr).await);
    }
    let mut refused_503 = 0;
    for (i, s) in extra.iter_mut().enumerate() {
        let got = wait_closed(
            s,
            Duration::from_secs(10),
            &format!("connection {i} over the cap"),
        )
        .await;
        if got.starts_with(b"HTTP/1.1 503") {
            refused_503 += 1;
        } else {
            assert!(
                got.is_empty(),
                "over the cap: {}",
                String::from_utf8_lossy(&got)
            );
        }
    }
    assert!(refused_503 > 0, "connections over the cap are told 503");
    let fds = open_fds(gw.pid());
    assert!(
        fds <= baseline + CAP + 8,
        "descriptors grew from {baseline} to {fds} with {CAP} connections held and 200 refused"
    );

    // Meanwhile a smoke alarm is ingested and forwarded.
    let mut publisher = env.raw_client().await;
    publisher
        .publish(
            &format!("estate/{}/smoke/smoke-1-1-3/event", env.estate_id),
            r#"{"code":"SMOKE.ALARM"}"#,
        )
        .await;
    tap.wait_for("the alarm upstream", Duration::from_secs(30), |_| {
        !tap.of("smoke-1-1-3", "SMOKE.ALARM").is_empty()
    })
    .await;
    let m_ok = gw.try_exit_status().is_none();
    assert!(m_ok, "gateway still running");

    // Free one slot: a fresh connection is served again (as soon as the gateway sees the
    // close), and the alarm's local alert is there.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    let alerts: Value = loop {
        match common::http_get(addr, "/api/alerts").await {
            Ok((200, body)) => break serde_json::from_str(&body).expect("json"),
            Ok((503, _)) | Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("API after a slot was freed: {other:?}"),
        }
    };
    assert!(
        alerts["alerts"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["code"] == "SMOKE.ALARM")),
        "{alerts:#}"
    );

    // Live streams: two at most (api.max_sse_clients = 2), each also a connection.
    drop(held.drain(..4).collect::<Vec<_>>());
    let mut streams = Vec::new();
    for _ in 0..2 {
        let mut s = loop {
            let mut s = connect(addr).await;
            s.write_all(b"GET /api/stream HTTP/1.1\r\nHost: gw\r\n\r\n")
                .await
                .expect("write");
            let mut head = [0u8; 12];
            s.read_exact(&mut head).await.expect("status line");
            match &head {
                b"HTTP/1.1 200" => break s,
                // A held connection's close not seen yet: its slot is still taken.
                b"HTTP/1.1 503" if Instant::now() < deadline + Duration::from_secs(10) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => panic!("stream: {}", String::from_utf8_lossy(other)),
            }
        };
        let mut first = [0u8; 256];
        let n = s.read(&mut first).await.expect("read");
        assert!(n > 0);
        streams.push(s);
    }
    let (status, body) = common::http_get(addr, "/api/stream").await.expect("GET");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("max_sse_clients = 2"), "{body}");
    let m = gw.metrics().await.expect("metrics");
    assert!(m.n("estate_api_closed_total", &[("reason", "connections")]) >= 200);
    assert!(m.n("estate_api_closed_total", &[("reason", "streams")]) >= 1);

    drop(streams);
    drop(held);
    gw.terminate();
    assert_eq!(
        gw.wait_exit(Duration::from_secs(20)).map(|s| s.success()),
        Some(true)
    );
}

async fn post(addr: SocketAddr, path: &str, auth: &str, body: &str) -> (u16, Value) {
    let (status, body) = common::http_request(addr, "POST", path, &[("Authorization", auth)], body)
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e:#}"));
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

/// Issue 13: a 300 KiB note is refused (413) and changes nothing; over-long fields are
/// refused (400, naming the field); `bearer` in lower case is accepted; a note at its cap
/// is stored and a later alarm still reaches the city.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_notes_are_refused_and_bearer_is_case_insensitive() {
    let env = env();
    let tap = EventTap::start(&env.uplink, &env.estate_id).await;
    let mut gw = start(&env, "");
    gw.wait_subscribed().await;
    let addr = gw.api;
    let mut publisher = env.raw_client().await;
    publisher
        .publish(
            &format!("estate/{}/emergency_button/sos-0307/event", env.estate_id),
            r#"{"code":"SOS.PRESSED"}"#,
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let id = loop {
        let v = get_json(addr, "/api/alerts").await;
        if let Some(a) = v["alerts"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["code"] == "SOS.PRESSED"))
        {
            break a["id"].as_str().expect("id").to_owned();
        }
        assert!(Instant::now() < deadline, "no SOS alert: {v:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let base = format!("/api/alerts/{id}");
    let before = get_json(addr, &base).await;
    let bearer = format!("Bearer {TOKEN}");

    let huge = "x".repeat(300 * 1024);
    let (status, body) = post(
        addr,
        &format!("{base}/close"),
        &bearer,
        &serde_json::json!({"by":"li","disposition":"real","note": huge}).to_string(),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("16384")),
        "{body}"
    );

    let (status, body) = post(
        addr,
        &format!("{base}/ack"),
        &bearer,
        &serde_json::json!({"by":"li","note": "n".repeat(1001)}).to_string(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"],
        "`note` is too long: at most 1000 characters, found 1001"
    );
    let (status, body) = post(
        addr,
        &format!("{base}/ack"),
        &bearer,
        &serde_json::json!({"by": "王".repeat(129)}).to_string(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]
        .as_str()
        .is_some_and(|e| e.starts_with("`by` is too long")));
    let (status, body) = post(
        addr,
        &format!("{base}/close"),
        &bearer,
        &serde_json::json!({"by":"li","disposition": "d".repeat(40)}).to_string(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]
        .as_str()
        .is_some_and(|e| e.starts_with("`disposition` is too long")));

    // Nothing changed on the alert.
    let after = get_json(addr, &base).await;
    assert_eq!(after["status"], before["status"]);
    assert_eq!(
        after["audit"], before["audit"],
        "refused requests leave no audit entry"
    );

    // `bearer` in lower case acknowledges; then a note at its cap closes the alert.
    let (status, body) = post(
        addr,
        &format!("{base}/ack"),
        &format!("bearer {TOKEN}"),
        r#"{"by":"wang","note":"on my way"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "acknowledged");
    let note = "备".repeat(1000);
    let (status, body) = post(
        addr,
        &format!("{base}/close"),
        &format!("BEARER {TOKEN}"),
        &serde_json::json!({"by":"li","disposition":"test","note": note}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "closed");

    // The uplink carries on: a later alarm reaches the city.
    publisher
        .publish(
            &format!("estate/{}/smoke/smoke-1-1-3/event", env.estate_id),
            r#"{"code":"SMOKE.ALARM"}"#,
        )
        .await;
    tap.wait_for("the later alarm upstream", Duration::from_secs(30), |_| {
        !tap.of("smoke-1-1-3", "SMOKE.ALARM").is_empty()
    })
    .await;
    gw.terminate();
    assert_eq!(
        gw.wait_exit(Duration::from_secs(20)).map(|s| s.success()),
        Some(true)
    );
}
