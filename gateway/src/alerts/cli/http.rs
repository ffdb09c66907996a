//! The CLI's HTTP: one request per connection over hyper's HTTP/1.1 client, and the live
//! stream (`GET /api/stream`) held open.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{header, Method, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::alerts::model::Alert;
use crate::error_chain as chain;

/// How long a request may take, from connecting to the last byte of its answer.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The live stream sends `status` every second and a keep-alive comment every 15 s
/// (src/api/mod.rs, `live_stream`): this long without a byte, the connection is lost.
pub(super) const STREAM_IDLE: Duration = Duration::from_secs(30);

/// Sends `req` on a new HTTP/1.1 connection to `addr`: the response, its body still
/// arriving, and the connection's request half (hold it while reading the body). `Err`
/// is why nothing came back (the transport's cause, without the address).
pub(super) async fn send(
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

/// Where the API is, and the bearer token sent with every request: `--token` /
/// `ESTATE_API_TOKEN`, a named token (`estate-gateway users token add`) or `api.token`.
/// Reading needs it where `api.anonymous_read` does not let this client read signed out.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub(super) addr: SocketAddr,
    pub(super) token: Option<String>,
}

impl Target {
    fn token(&self) -> Option<&str> {
        self.token.as_deref().filter(|t| !t.is_empty())
    }

    /// `req` with the token as `Authorization: Bearer`, when there is one.
    fn authorize(&self, req: hyper::http::request::Builder) -> hyper::http::request::Builder {
        match self.token() {
            Some(t) => req.header(header::AUTHORIZATION, format!("Bearer {t}")),
            None => req,
        }
    }

    /// The API's refusal (`status`, `body`) as a message; a 401 without a token says how
    /// to pass one.
    pub(super) fn refusal(&self, status: u16, body: &str) -> String {
        let mut msg = api_error(status, body);
        if status == 401 && self.token().is_none() {
            msg.push_str(" (pass --token or set ESTATE_API_TOKEN)");
        }
        msg
    }
}

/// A request to the API (JSON `body` unless GET): its status and body. `Err` is the
/// transport's cause (refused, reset, no answer within [`REQUEST_TIMEOUT`]).
pub(super) async fn request(
    api: &Target,
    method: Method,
    path: &str,
    body: &str,
) -> Result<(u16, String), String> {
    let addr = api.addr;
    let mut req = Request::builder()
        .method(method.clone())
        .uri(path)
        .header(header::HOST, addr.to_string());
    req = api.authorize(req);
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

/// The error message of a JSON error body, or the body.
pub(super) fn api_error(status: u16, body: &str) -> String {
    let msg = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.trim().to_owned());
    format!("the API refused ({status}): {msg}")
}

/// `GET /api/alerts` (the open ones; with `all` the history too). `Err` without the
/// address, as [`request`].
pub(super) async fn fetch_alerts(api: &Target, all: bool) -> Result<Vec<Alert>, String> {
    let path = if all {
        "/api/alerts?status=all"
    } else {
        "/api/alerts"
    };
    let (status, body) = request(api, Method::GET, path, "").await?;
    if status != 200 {
        return Err(api.refusal(status, &body));
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
pub(super) async fn fetch_alert(api: &Target, id: &str) -> Result<Option<Alert>, String> {
    let (status, body) = request(api, Method::GET, &format!("/api/alerts/{id}"), "").await?;
    match status {
        200 => serde_json::from_str(&body)
            .map(Some)
            .map_err(|e| format!("unexpected API answer: {e}")),
        404 => Ok(None),
        _ => Err(api.refusal(status, &body)),
    }
}

/// `GET /api/stream`, open: the body as it arrives.
#[derive(Debug)]
pub(super) struct LiveStream {
    body: Incoming,
    /// The connection's request half: hyper keeps the connection while it lives.
    _sender: SendRequest<Full<Bytes>>,
}

impl LiveStream {
    /// Opens the stream (`Err`: the transport's cause or the API's refusal, e.g. 503
    /// when `api.max_sse_clients` streams are open). Once the answer is 200 the gateway
    /// has subscribed this stream to every change.
    pub(super) async fn open(api: &Target) -> Result<LiveStream, String> {
        let addr = api.addr;
        let mut req = Request::builder()
            .uri("/api/stream")
            .header(header::HOST, addr.to_string())
            .header(header::ACCEPT, "text/event-stream");
        req = api.authorize(req);
        let req = req
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
            return Err(api.refusal(status, &body));
        }
        Ok(LiveStream {
            body: resp.into_body(),
            _sender: sender,
        })
    }

    /// The next bytes of the stream; `Err` when it ended, failed or went quiet for
    /// [`STREAM_IDLE`], with the cause.
    pub(super) async fn next_bytes(&mut self) -> Result<Bytes, String> {
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
