//! Operators who sign in (issue 16), over real HTTP to the real gateway binary:
//!
//! - with `api.anonymous_read = "none"` reading needs a sign-in; an operator signs in
//!   (an `HttpOnly`, `SameSite=Strict` cookie), acknowledges, and the audit names the
//!   account whatever `by` the request typed; a viewer is refused the write (403); a
//!   write without the session's CSRF token, or from a foreign `Origin`, is refused
//!   (403); after signing out the cookie reads nothing;
//! - five wrong passwords lock the account: the right one is then refused (429), and
//!   the lockout is counted and logged;
//! - the `alerts` CLI reads with a viewer's named token where reading needs a sign-in;
//! - a named token (`users token add`, made while the gateway runs) acts under its name,
//!   a viewer token cannot write, the deprecated `api.token` still works, and removing an
//!   account ends its session;
//! - with `api.tls_cert`/`api.tls_key` the API answers over HTTPS only, with a `Secure`
//!   cookie.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{add_user, http_request_full, run_gateway_cli, Broker, Gateway, TestEnv};

const PASSWORD: &str = "duty-desk-pass";

fn env() -> TestEnv {
    let broker = Broker::shared();
    let mut env = TestEnv::new(broker.clone(), broker);
    env.down_alert_after = "1h".into();
    env
}

/// A console's cookie and CSRF token.
#[derive(Debug, Clone, Default)]
struct Console {
    cookie: Option<String>,
    csrf: Option<String>,
}

/// One request: status, headers, body as JSON (a JSON string when it is not JSON).
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, Value) {
    let (status, headers, body) = http_request_full(addr, method, path, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e:#}"));
    let v = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, headers, v)
}

impl Console {
    /// Signs in (`POST /api/session`): the status and the body; keeps the cookie and CSRF
    /// token of a success.
    async fn sign_in(addr: SocketAddr, name: &str, password: &str) -> (u16, Value, Console) {
        let body = serde_json::json!({"name": name, "password": password}).to_string();
        let (status, headers, v) = call(addr, "POST", "/api/session", &[], &body).await;
        let mut c = Console::default();
        if status == 200 {
            let set = headers
                .iter()
                .find(|(k, _)| k == "set-cookie")
                .map(|(_, v)| v.clone())
                .expect("a Set-Cookie header");
            for part in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
                assert!(set.contains(part), "cookie lacks {part}: {set}");
            }
            c.cookie = Some(set.split(';').next().unwrap_or_default().to_owned());
            c.csrf = v["csrf_token"].as_str().map(str::to_owned);
        }
        (status, v, c)
    }

    fn headers<'a>(&'a self, csrf: bool, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut h = extra.to_vec();
        if let Some(c) = &self.cookie {
            h.push(("cookie", c));
        }
        if csrf {
            if let Some(t) = &self.csrf {
                h.push(("x-csrf-token", t));
            }
        }
        h
    }

    async fn get(&self, addr: SocketAddr, path: &str) -> (u16, Value) {
        let (s, _, v) = call(addr, "GET", path, &self.headers(false, &[]), "").await;
        (s, v)
    }

    async fn post(
        &self,
        addr: SocketAddr,
        path: &str,
        csrf: bool,
        extra: &[(&str, &str)],
        body: &str,
    ) -> (u16, Value) {
        let (s, _, v) = call(addr, "POST", path, &self.headers(csrf, extra), body).await;
        (s, v)
    }
}

/// Publishes an SOS from `sos-0307` and waits (30 s at most) until `reader` sees its
/// alert: the alert's id.
async fn raise_sos(env: &TestEnv, gw: &Gateway, reader: &Console) -> String {
    let mut publisher = env.raw_client().await;
    let topic = format!("estate/{}/emergency_button/sos-0307/event", env.estate_id);
    publisher.publish(&topic, r#"{"code":"SOS.PRESSED"}"#).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, v) = reader.get(gw.api, "/api/alerts").await;
        assert_eq!(status, 200, "{v}");
        if let Some(a) = v["alerts"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["code"] == "SOS.PRESSED"))
        {
            return a["id"].as_str().expect("id").to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no SOS alert: {v}\n{}",
            gw.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET /api/stream` with `cookie`, read until its first `status` event.
async fn open_stream(addr: SocketAddr, cookie: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET /api/stream HTTP/1.1\r\nhost: {addr}\r\ncookie: {cookie}\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.expect("write");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&seen).contains("event: status") {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
            other => panic!(
                "no status event: {other:?}: {}",
                String::from_utf8_lossy(&seen)
            ),
        }
    }
    assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"));
    tcp
}

/// Reads `tcp` until the gateway ends the stream (10 s at most).
async fn stream_ends(tcp: &mut tokio::net::TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => {
                // The chunked body's last chunk ends the response.
                if buf[..n].ends_with(b"0\r\n\r\n") {
                    return;
                }
            }
            Err(_) => panic!("the live stream of a signed-out session is still open"),
        }
    }
}

fn start(env: &TestEnv, api: &str) -> Gateway {
    common::start_gateway_with(env, &format!("\n[api]\n{api}\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_acts_under_their_name_and_signs_out_a_viewer_and_csrf_are_refused() {
    let env = env();
    add_user(&env.data_dir(), "wang", "operator", PASSWORD);
    add_user(&env.data_dir(), "zhao", "viewer", PASSWORD);
    let mut gw = start(&env, "anonymous_read = \"none\"");
    gw.wait_subscribed().await;

    // Reading needs a sign-in; health and metrics stay open; a wrong password is 401.
    let nobody = Console::default();
    let (s, v) = nobody.get(gw.api, "/api/alerts").await;
    assert_eq!(s, 401, "{v}");
    assert!(v["error"].as_str().unwrap_or("").contains("sign in"), "{v}");
    assert_eq!(nobody.get(gw.api, "/healthz").await.0, 200);
    let (s, v, _) = Console::sign_in(gw.api, "wang", "not-the-password").await;
    assert_eq!(
        (s, v["error"].as_str()),
        (401, Some("wrong name or password"))
    );

    let (s, v, viewer) = Console::sign_in(gw.api, "zhao", PASSWORD).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["name"].as_str(), v["role"].as_str()),
        (Some("zhao"), Some("viewer"))
    );
    let id = raise_sos(&env, &gw, &viewer).await;
    let ack = format!("/api/alerts/{id}/ack");
    let body = r#"{"by":"mallory","note":"on my way"}"#;

    // A viewer reads but may not act.
    let (s, v) = viewer.post(gw.api, &ack, true, &[], body).await;
    assert_eq!(s, 403, "{v}");
    assert!(v["error"].as_str().unwrap_or("").contains("viewer"), "{v}");

    // An operator without the CSRF token, or from another site, is refused too.
    let (s, v, wang) = Console::sign_in(gw.api, "wang", PASSWORD).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = wang.post(gw.api, &ack, false, &[], body).await;
    assert_eq!(s, 403, "no CSRF token: {v}");
    assert!(
        v["error"].as_str().unwrap_or("").contains("X-CSRF-Token"),
        "{v}"
    );
    let evil = [("origin", "http://evil.example")];
    let (s, v) = wang.post(gw.api, &ack, true, &evil, body).await;
    assert_eq!(s, 403, "foreign Origin: {v}");
    let (_, a) = wang.get(gw.api, &format!("/api/alerts/{id}")).await;
    assert_eq!(a["status"], "active", "nothing changed: {a}");

    // With both (and this gateway as Origin) it acts, and the audit names wang, not the
    // typed `by`.
    let origin = format!("http://{}", gw.api);
    let (s, a) = wang
        .post(gw.api, &ack, true, &[("origin", &origin)], body)
        .await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["acknowledged"]["by"], "wang", "{a}");
    let (_, a) = wang.get(gw.api, &format!("/api/alerts/{id}")).await;
    let audit = a["audit"].as_array().cloned().unwrap_or_default();
    assert!(audit.iter().any(|e| e["by"] == "wang"), "{audit:?}");
    assert!(!audit.iter().any(|e| e["by"] == "mallory"), "{audit:?}");

    // Who is signed in; then sign out: the old cookie reads nothing, and the live stream
    // opened with it ends.
    let mut live = open_stream(gw.api, wang.cookie.as_deref().expect("cookie")).await;
    let (_, me) = wang.get(gw.api, "/api/session").await;
    assert_eq!(
        (me["signed_in"].as_bool(), me["name"].as_str()),
        (Some(true), Some("wang"))
    );
    let (s, _, v) = call(
        gw.api,
        "DELETE",
        "/api/session",
        &wang.headers(true, &[]),
        "",
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(wang.get(gw.api, "/api/alerts").await.0, 401);
    stream_ends(&mut live).await;
    let (_, me) = wang.get(gw.api, "/api/session").await;
    assert_eq!(me["signed_in"], false, "{me}");

    let m = gw.metrics().await.expect("metrics");
    assert!(m.n("estate_api_sign_ins_total", &[("reason", "ok")]) >= 2);
    assert_eq!(
        m.n("estate_api_sign_ins_total", &[("reason", "refused")]),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_wrong_passwords_lock_the_account_even_for_the_right_one() {
    let env = env();
    add_user(&env.data_dir(), "wang", "operator", PASSWORD);
    let gw = start(&env, "lockout_after = 5");
    for i in 0..5 {
        let (s, v, _) = Console::sign_in(gw.api, "wang", &format!("guess-{i}")).await;
        assert_eq!(s, 401, "attempt {i}: {v}");
    }
    let body = serde_json::json!({"name": "wang", "password": PASSWORD}).to_string();
    let (s, headers, v) = call(gw.api, "POST", "/api/session", &[], &body).await;
    assert_eq!(s, 429, "the right password while locked: {v}");
    assert!(v["error"].as_str().unwrap_or("").contains("locked"), "{v}");
    let retry: u64 = headers
        .iter()
        .find(|(k, _)| k == "retry-after")
        .and_then(|(_, v)| v.parse().ok())
        .expect("Retry-After");
    assert!((14 * 60..=15 * 60 + 1).contains(&retry), "{retry}");
    let m = gw.metrics().await.expect("metrics");
    assert_eq!(
        m.n("estate_api_lockouts_total", &[("reason", "account")]),
        1
    );
    assert_eq!(m.n("estate_api_sign_ins_total", &[("reason", "locked")]), 1);
    assert!(
        gw.log_tail(200)
            .contains("Sign-in locked after repeated failures."),
        "{}",
        gw.log_tail(40)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_tokens_act_under_their_name_and_the_shared_token_still_works() {
    let env = env();
    add_user(&env.data_dir(), "zhao", "viewer", PASSWORD);
    let mut gw = start(&env, "token = \"legacy-token-1\"");
    gw.wait_subscribed().await;
    let dir = env.data_dir().display().to_string();
    // Made while the gateway runs: it re-reads the accounts file.
    let token = |name: &str, role: &str| {
        let (status, out, err) = run_gateway_cli(&[
            "users",
            "--data-dir",
            &dir,
            "token",
            "add",
            name,
            "--role",
            role,
        ]);
        assert!(status.success(), "{out}{err}");
        out.lines().next().expect("the token").to_owned()
    };
    let bms = token("bms", "operator");
    let board = token("lobby-board", "viewer");
    assert!(bms.starts_with("egw_"), "{bms}");
    let (status, list, _) = run_gateway_cli(&["users", "--data-dir", &dir, "list"]);
    assert!(status.success());
    assert!(
        list.contains("bms") && list.contains("zhao") && !list.contains(&bms),
        "{list}"
    );

    let (_, _, viewer) = Console::sign_in(gw.api, "zhao", PASSWORD).await;
    let id = raise_sos(&env, &gw, &viewer).await;
    let ack = format!("/api/alerts/{id}/ack");
    let bearer = |t: &str| format!("Bearer {t}");
    let body = r#"{"by":"typed-name","note":""}"#;

    let b = bearer(&board);
    let (s, _, v) = call(gw.api, "POST", &ack, &[("authorization", &b)], body).await;
    assert_eq!(s, 403, "a viewer token writes nothing: {v}");
    let b = bearer("egw_0000000000000000_wrong");
    let (s, _, _) = call(gw.api, "POST", &ack, &[("authorization", &b)], body).await;
    assert_eq!(s, 401);
    // A token needs no CSRF token (a browser never sends it by itself).
    let b = bearer(&bms);
    let (s, _, a) = call(gw.api, "POST", &ack, &[("authorization", &b)], body).await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["acknowledged"]["by"], "bms", "{a}");

    // The deprecated shared token: the typed name is recorded, as before accounts.
    let close = format!("/api/alerts/{id}/close");
    let b = bearer("legacy-token-1");
    let body = r#"{"by":"li","disposition":"test","note":""}"#;
    let (s, _, a) = call(gw.api, "POST", &close, &[("authorization", &b)], body).await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["closed"]["by"], "li", "{a}");

    // Removing an account ends its session at the next request.
    let (status, out, err) = run_gateway_cli(&["users", "--data-dir", &dir, "remove", "zhao"]);
    assert!(status.success(), "{out}{err}");
    let (s, me) = viewer.get(gw.api, "/api/session").await;
    assert_eq!((s, me["signed_in"].as_bool()), (200, Some(false)), "{me}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alerts_cli_reads_with_a_viewer_token_where_reading_needs_a_sign_in() {
    let env = env();
    add_user(&env.data_dir(), "zhao", "viewer", PASSWORD);
    let mut gw = start(&env, "anonymous_read = \"none\"");
    gw.wait_subscribed().await;
    let dir = env.data_dir().display().to_string();
    let (status, out, err) = run_gateway_cli(&[
        "users",
        "--data-dir",
        &dir,
        "token",
        "add",
        "duty-terminal",
        "--role",
        "viewer",
    ]);
    assert!(status.success(), "{out}{err}");
    let token = out.lines().next().expect("the token").to_owned();
    let (_, _, viewer) = Console::sign_in(gw.api, "zhao", PASSWORD).await;
    raise_sos(&env, &gw, &viewer).await;

    let api = format!("http://{}", gw.api);
    let (status, out, err) = run_gateway_cli(&["alerts", "--api", &api]);
    assert!(!status.success(), "read signed out: {out}{err}");
    assert!(
        err.contains("(401)") && err.contains("ESTATE_API_TOKEN"),
        "the refusal says how to pass a token: {err}"
    );
    let (status, out, err) = run_gateway_cli(&["alerts", "--api", &api, "--token", &token]);
    assert!(status.success(), "{out}{err}");
    assert!(
        out.contains("SOS.PRESSED"),
        "the open alert is listed: {out}"
    );
}

/// `GET path` over HTTPS, trusting only `ca_pem`, for the name `localhost`: status,
/// headers (lower-cased names), body.
async fn https_request(
    addr: SocketAddr,
    ca_pem: &str,
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<(u16, Vec<(String, String)>, String)> {
    use http_body_util::{BodyExt, Full};
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    let tls = connector.connect(name, tcp).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", format!("localhost:{}", addr.port()))
        .header("content-type", "application/json")
        .body(Full::new(hyper::body::Bytes::from(body.to_owned())))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, headers, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_certificate_the_api_serves_https_only_and_the_cookie_is_secure() {
    let env = env();
    add_user(&env.data_dir(), "wang", "operator", PASSWORD);
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    let cert_file = env.dir().join("api.crt");
    let key_file = env.dir().join("api.key");
    std::fs::write(&cert_file, &cert_pem).expect("write cert");
    std::fs::write(&key_file, &key_pem).expect("write key");
    let gw = start(
        &env,
        &format!("tls_cert = {cert_file:?}\ntls_key = {key_file:?}"),
    );

    let (s, _, body) = https_request(gw.api, &cert_pem, "GET", "/healthz", "")
        .await
        .expect("HTTPS /healthz");
    assert_eq!(s, 200, "{body}");
    let (s, _, page) = https_request(gw.api, &cert_pem, "GET", "/", "")
        .await
        .expect("HTTPS console");
    assert_eq!(s, 200);
    assert!(page.contains("值班台"), "the console page over HTTPS");
    let body = serde_json::json!({"name": "wang", "password": PASSWORD}).to_string();
    let (s, headers, v) = https_request(gw.api, &cert_pem, "POST", "/api/session", &body)
        .await
        .expect("HTTPS sign-in");
    assert_eq!(s, 200, "{v}");
    let cookie = headers
        .iter()
        .find(|(k, _)| k == "set-cookie")
        .map(|(_, v)| v.clone())
        .expect("Set-Cookie");
    assert!(cookie.contains("; Secure"), "{cookie}");

    // Plain HTTP on the same port gets no answer (the handshake fails, the connection
    // closes), and it is counted.
    assert!(
        common::http_get(gw.api, "/healthz").await.is_err(),
        "plain HTTP answered on the HTTPS port"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, _, m) = https_request(gw.api, &cert_pem, "GET", "/metrics", "")
            .await
            .expect("HTTPS /metrics");
        if m.contains("estate_api_closed_total{reason=\"tls\"} 1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the failed handshake is not counted:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
