//! Camera push: the HTTP listener that Hikvision ISAPI cameras and NVRs post their
//! alarms to (their "Alarm Host" / "HTTP Listening" setting), on a port of its own
//! (`[ingest.camera_push]`, off by default).
//!
//! ```text
//! camera ─POST─▶ accept (≤ 16 connections) ─▶ auth (basic / digest) ─401─▶ camera
//!                  │ body ≤ max_body ─413─▶ camera
//!                  ▼
//!        body.rs: plain XML (or JSON), or multipart → the alert's part + JPEG snapshots
//!                  ▼
//!        formats::isapi_xml::parse (isapi::parse_json) ─▶ camera id (mac / ip / user) ─▶ Sources::push
//!          │ malformed → dead letter                 (isapi's fold and clear, shared
//!          ▼                                          with the JSON format)
//!        StoreHandle::append / dead_letter ─▶ commit ─▶ 200 (503 when not stored)
//!        tick (silence) ─▶ Sources::tick ─▶ StoreHandle::append_nowait
//! ```
//!
//! Like a PUBACK, the camera's `200` comes only after what its request produced (its
//! events, or its dead letter) is committed. A body that does not decode is dead-lettered
//! and still answered `200`: cameras retry a failed post, and a body that can never
//! decode would come back for good; the dead letter keeps it, and
//! `estate_dead_lettered_total{reason}` counts it like a malformed MQTT payload. Only a
//! commit that failed is answered `503`, so that the camera sends it again. Wrong or
//! missing credentials get `401` with the challenge, an oversized body `413`; all are
//! counted in `estate_camera_push_requests_total{result}` (`unauthorized` for wrong
//! credentials, `challenged` for none or a stale nonce: the first leg of every digest
//! exchange) and store nothing.

pub mod auth;
pub mod body;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ALLOW, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE,
};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use estate_config::{CameraIdFrom, Config};

use crate::events::now_ms;
use crate::health::{LogThrottle, Throttled};
use crate::ingest::formats::{bounded_raw, isapi, isapi_xml, DecodeError, DecodeReason, Sources};
use crate::store::{Pending, StoreHandle};
use crate::telemetry::{Metrics, PushResultLabel};

/// Connections served at once; more wait in the kernel's listen backlog (not accepted,
/// so they hold no descriptor of ours). With `max_body` this bounds the memory bodies take.
pub const MAX_CONNECTIONS: usize = 16;

/// How long a camera may take to send a request's headers (from the accept, or while a
/// kept-alive connection is idle).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a camera may take to send a body once its headers are in.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long stopping waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(5);

/// The camera push stage, built from `[ingest.camera_push]`, consumed by [`CameraPush::run`].
#[derive(Debug)]
pub struct CameraPush {
    listen: SocketAddr,
    shared: Shared,
}

/// What every request reads.
#[derive(Debug)]
struct Shared {
    name: String,
    camera_id: CameraIdFrom,
    max_body: usize,
    raw_limit: usize,
    auth: auth::Authenticator,
    /// The one source and its ISAPI state machine; held across the appends of one
    /// request so that the events of one camera are stored in the order they were decided.
    sources: tokio::sync::Mutex<Sources>,
    refusals_log: LogThrottle,
    dead_letters_log: LogThrottle,
}

/// The stage's handles while it runs.
#[derive(Debug)]
struct Running {
    shared: Shared,
    store: StoreHandle,
    metrics: Arc<Metrics>,
    /// Cancelled when the stage stops: bodies still being read are answered 503.
    stop: CancellationToken,
}

impl CameraPush {
    /// The stage, or `None` when `[ingest.camera_push]` is absent.
    pub fn new(cfg: &Config) -> Option<CameraPush> {
        let push = cfg.ingest.camera_push.as_ref()?;
        let sources = Sources::camera_push(cfg)?;
        Some(CameraPush {
            listen: push.listen,
            shared: Shared {
                name: push.name.clone(),
                camera_id: push.camera_id,
                max_body: push.max_body.as_usize(),
                raw_limit: cfg.ingest.raw_limit.as_usize(),
                auth: auth::Authenticator::new(push.auth, &push.realm, &push.users, rand::random()),
                sources: tokio::sync::Mutex::new(sources),
                refusals_log: LogThrottle::new(5, Duration::from_secs(60)),
                dead_letters_log: LogThrottle::new(5, Duration::from_secs(60)),
            },
        })
    }

    /// The configured address (`ingest.camera_push.listen`).
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// Serves cameras on `listener` until `shutdown`, then lets requests in flight finish
    /// (their commits land) within 5 s. Only a listener that fails for good ends it early.
    pub async fn run(
        self,
        listener: TcpListener,
        store: StoreHandle,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        info!(listen = %listener.local_addr()?, source = %self.shared.name, "Camera push listening.");
        let tick_every = self
            .shared
            .sources
            .lock()
            .await
            .tick_every_ms()
            .unwrap_or(1000)
            .max(1) as u64;
        let running = Arc::new(Running {
            shared: self.shared,
            store,
            metrics,
            stop: CancellationToken::new(),
        });
        tokio::join!(
            accept_loop(listener, running.clone(), shutdown.clone()),
            tick_loop(running.clone(), Duration::from_millis(tick_every), shutdown),
        );
        drop(running);
        info!("Camera push stopped.");
        Ok(())
    }
}

/// Accepts connections (one task each, at most [`MAX_CONNECTIONS`]) until `shutdown`.
async fn accept_loop(listener: TcpListener, running: Arc<Running>, shutdown: CancellationToken) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(err) => {
                    warn!(error = %err, "Camera push: accept failed; retrying.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let running = running.clone();
        tokio::spawn(async move {
            let _permit = permit;
            serve_connection(stream, peer, running).await;
        });
    }
    drop(listener);
    running.stop.cancel();
    let all = u32::try_from(MAX_CONNECTIONS).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN, permits.acquire_many(all))
        .await
        .is_err()
    {
        debug!("Camera push connections still open at stop; closing them.");
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, peer: SocketAddr, running: Arc<Running>) {
    let stop = running.stop.clone();
    let service = hyper::service::service_fn(move |req| {
        let running = running.clone();
        async move { Ok::<_, Infallible>(running.handle(peer, req).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(16 * 1024)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(err) = r {
                debug!(%peer, error = %err, "Camera push connection ended with an error.");
            }
        }
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Clears camera alarms after their silence (`clear_after`).
async fn tick_loop(running: Arc<Running>, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut sources = running.shared.sources.lock().await;
        for event in sources.tick(now_ms()).events {
            if !event.registered {
                running.metrics.ingest_unregistered.inc();
            }
            debug!(device_id = %event.device_id, code = %event.code, "Cleared after silence.");
            if running.store.append_nowait(event).await.is_err() {
                return;
            }
        }
    }
}

/// The alert in `body`: JSON when typed `application/json` or when it starts with `{`
/// (firmwares set to JSON; the camera-isapi-json decoder reads it), else XML. With the
/// media type the raw bytes give it.
fn parse_alert(
    media_type: Option<&str>,
    body: &[u8],
) -> Result<(isapi::Alert, &'static str), DecodeError> {
    if media_type == Some("application/json") || body.trim_ascii_start().starts_with(b"{") {
        Ok((isapi::parse_json(body)?, "application/json"))
    } else {
        Ok((isapi_xml::parse(body)?, "application/xml"))
    }
}

fn reply(status: StatusCode, text: impl Into<String>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(text.into() + "\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// What one body decoded to, before it meets the state machine.
struct Decoded {
    alert: isapi::Alert,
    raw: Bytes,
    truncated: bool,
    images: (usize, usize),
}

impl Running {
    fn count(&self, result: &'static str) {
        self.metrics
            .camera_push_requests
            .get_or_create(&PushResultLabel { result })
            .inc();
    }

    async fn handle(&self, peer: SocketAddr, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let now = now_ms();
        let method = req.method().as_str().to_owned();
        if method != "POST" && method != "PUT" {
            self.count("bad_request");
            let mut r = reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "cameras POST their alarms here",
            );
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("POST, PUT"));
            return r;
        }
        let uri = req
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        let authorization = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let user = match self.shared.auth.check(&method, &uri, authorization, now) {
            Ok(user) => user,
            Err(refusal) => return self.unauthorized(peer, &refusal, now),
        };
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.shared.max_body as u64) {
            return self.too_large(peer);
        }
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let limited = Limited::new(req.into_body(), self.shared.max_body);
        let body = tokio::select! {
            r = tokio::time::timeout(BODY_TIMEOUT, limited.collect()) => r,
            _ = self.stop.cancelled() => {
                self.count("not_stored");
                return reply(StatusCode::SERVICE_UNAVAILABLE, "the gateway is stopping; send it again");
            }
        };
        let body = match body {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(err)) if err.downcast_ref::<LengthLimitError>().is_some() => {
                return self.too_large(peer)
            }
            Ok(Err(err)) => {
                self.count("bad_request");
                debug!(%peer, error = %err, "Camera push: the body could not be read.");
                return reply(StatusCode::BAD_REQUEST, "the body could not be read");
            }
            Err(_) => {
                self.count("bad_request");
                return reply(
                    StatusCode::REQUEST_TIMEOUT,
                    "the body did not arrive in time",
                );
            }
        };
        let reference = format!("{}:{}", self.shared.name, peer.ip());
        match self.decode(&content_type, &body, &user) {
            Ok((camera, decoded)) => self.store_events(camera, decoded, &reference, now).await,
            Err(e) => self.dead_letter(&reference, &body, &e, now).await,
        }
    }

    fn unauthorized(
        &self,
        peer: SocketAddr,
        refusal: &auth::Refusal,
        now: i64,
    ) -> Response<Full<Bytes>> {
        // The first leg of every digest exchange carries no credentials, and a stale
        // nonce is renewed: both are the protocol working, not a refusal to log.
        if matches!(refusal, auth::Refusal::Missing | auth::Refusal::Stale) {
            self.count("challenged");
            debug!(%peer, reason = %refusal, "Camera push challenged: 401.");
        } else {
            self.count("unauthorized");
            self.log_refusal(peer, refusal);
        }
        let mut r = reply(StatusCode::UNAUTHORIZED, "credentials required");
        let stale = *refusal == auth::Refusal::Stale;
        for c in self.shared.auth.challenges(stale, now) {
            if let Ok(v) = HeaderValue::from_str(&c) {
                r.headers_mut().append(WWW_AUTHENTICATE, v);
            }
        }
        r
    }

    fn log_refusal(&self, peer: SocketAddr, refusal: &auth::Refusal) {
        match self.shared.refusals_log.hit(Instant::now()) {
            Throttled::Log => warn!(%peer, reason = %refusal, "Camera push refused: 401."),
            Throttled::Summary(n) => {
                warn!(%peer, reason = %refusal, not_logged = n, "Camera push refused: 401; more were refused but not logged (see estate_camera_push_requests_total).")
            }
            Throttled::Quiet => {}
        }
    }

    fn too_large(&self, peer: SocketAddr) -> Response<Full<Bytes>> {
        self.count("too_large");
        warn!(%peer, max_body = self.shared.max_body, "Camera push refused: the body is larger than ingest.camera_push.max_body (413).");
        reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {} bytes", self.shared.max_body),
        )
    }

    /// The alert in `body`, the camera it names, and what the event keeps of the body.
    fn decode(
        &self,
        content_type: &str,
        body: &[u8],
        user: &str,
    ) -> Result<(String, Decoded), DecodeError> {
        let xml_err = |detail: String| {
            DecodeError::new(
                DecodeReason::BadXml,
                format!("{}: {detail}", isapi_xml::FORMAT),
            )
        };
        let decoded = if body::media_type(content_type).starts_with("multipart/") {
            let boundary = body::parameter(content_type, "boundary").unwrap_or_default();
            let parts =
                body::parts(body, &boundary).map_err(|e| xml_err(format!("multipart: {e}")))?;
            let (xml, images) = body::split(&parts);
            let xml = xml.ok_or_else(|| {
                xml_err(format!(
                    "multipart body without an XML or JSON part ({} parts: {})",
                    parts.len(),
                    parts
                        .iter()
                        .map(|p| p.media_type().unwrap_or_else(|| "untyped".into()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            let (alert, media) = parse_alert(xml.media_type().as_deref(), xml.body)?;
            let kept = body::keep(media, xml.body, &images, self.shared.raw_limit);
            Decoded {
                alert,
                raw: kept.raw,
                truncated: kept.truncated,
                images: (kept.images_kept, kept.images_dropped),
            }
        } else {
            let (alert, _) = parse_alert(Some(&body::media_type(content_type)), body)?;
            let (raw, truncated) = bounded_raw(body, self.shared.raw_limit);
            Decoded {
                alert,
                raw,
                truncated,
                images: (0, 0),
            }
        };
        let a = &decoded.alert;
        let missing = |field: &str, why: &str| {
            DecodeError::new(
                DecodeReason::BadField,
                format!(
                    "{}: field {field:?} is missing or empty ({why})",
                    isapi_xml::FORMAT
                ),
            )
        };
        let camera = match self.shared.camera_id {
            CameraIdFrom::Mac => isapi::camera_id(a.mac.as_deref(), a.ip.as_deref(), a.channel)
                .ok_or_else(|| missing("macAddress", "and so is \"ipAddress\""))?,
            CameraIdFrom::Ip => {
                a.ip.as_deref()
                    .map(|ip| isapi::with_channel(ip, a.channel))
                    .ok_or_else(|| missing("ipAddress", "camera_id = \"ip\""))?
            }
            CameraIdFrom::User => isapi::with_channel(user, a.channel),
        };
        Ok((camera, decoded))
    }

    /// Appends what the alert means (0..n events) and answers once all are committed.
    async fn store_events(
        &self,
        camera: String,
        d: Decoded,
        reference: &str,
        now: i64,
    ) -> Response<Full<Bytes>> {
        let mut pending: Vec<Pending> = Vec::new();
        {
            let mut sources = self.shared.sources.lock().await;
            let decoded = sources.push(camera, &d.alert, d.raw, d.truncated, reference, now);
            for event in decoded.events {
                if !event.registered {
                    self.metrics.ingest_unregistered.inc();
                    debug!(device_id = %event.device_id, "Camera push from an unregistered camera accepted.");
                }
                match self.store.append(event).await {
                    Ok(p) => pending.push(p),
                    Err(_) => return self.not_stored(),
                }
            }
        }
        for p in pending {
            if !matches!(p.await, Ok(Ok(_))) {
                return self.not_stored();
            }
        }
        self.count("accepted");
        let (kept, dropped) = d.images;
        self.count_images("kept", kept);
        self.count_images("dropped", dropped);
        reply(StatusCode::OK, "OK")
    }

    fn count_images(&self, result: &'static str, n: usize) {
        if n > 0 {
            self.metrics
                .camera_push_images
                .get_or_create(&PushResultLabel { result })
                .inc_by(n as u64);
        }
    }

    fn not_stored(&self) -> Response<Full<Bytes>> {
        self.count("not_stored");
        warn!("Camera push: the alarm could not be committed; answering 503 so that the camera sends it again.");
        reply(StatusCode::SERVICE_UNAVAILABLE, "not stored; send it again")
    }

    /// Keeps a body that did not decode as a dead letter and answers 200 once it is
    /// committed (module doc: a camera would resend it forever).
    async fn dead_letter(
        &self,
        reference: &str,
        body: &[u8],
        e: &DecodeError,
        now: i64,
    ) -> Response<Full<Bytes>> {
        self.metrics.dead_letter(e.reason.as_str());
        match self.shared.dead_letters_log.hit(Instant::now()) {
            Throttled::Log => {
                warn!(source = %reference, reason = %e.reason, error = %crate::ingest::formats::cut(&e.detail, 512), "Malformed camera push dead-lettered.")
            }
            Throttled::Summary(n) => {
                warn!(source = %reference, reason = %e.reason, not_logged = n, "Malformed camera push dead-lettered; more were kept but not logged (see estate_dead_lettered_total).")
            }
            Throttled::Quiet => {}
        }
        let letter = crate::ingest::dead_letter(reference, body, e, self.shared.raw_limit, now);
        let committed = match self.store.dead_letter(letter).await {
            Ok(p) => matches!(p.await, Ok(Ok(_))),
            Err(_) => false,
        };
        if !committed {
            return self.not_stored();
        }
        self.count("dead_lettered");
        reply(StatusCode::OK, format!("dead-lettered: {e}"))
    }
}
