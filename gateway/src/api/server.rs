//! The API's HTTP/1.1 server: our own accept loop around hyper, because `axum::serve`
//! exposes none of the limits a daemon on a 4096-descriptor budget needs (issue 13: 4,096
//! idle connections exhausted the unit's `LimitNOFILE` and the MQTT reconnects then failed
//! with `EMFILE`).
//!
//! ```text
//!  listener ──accept──▶ permit? ──no──▶ "503, too many connections" written without waiting, closed
//!                         │ yes (one of api.max_connections)
//!                         ▼
//!                 one task per connection: hyper http1 ◀──▶ Router (axum)
//!                         │  the watchdog below closes it when a deadline passes
//!                         ▼
//!                 permit released when the connection ends
//! ```
//!
//! Deadlines of one connection (the same rules as Go's `ReadHeaderTimeout` and
//! `IdleTimeout`), kept by the connection's own task:
//! - a new connection has `api.header_read_timeout` from its accept to deliver a complete
//!   request head;
//! - once a response is complete the connection is idle: the next request's first byte
//!   must come within `api.idle_timeout`, and its head must be complete within
//!   `api.header_read_timeout` of that byte;
//! - while a request is in flight (its response body included: a live stream is in
//!   flight for as long as it lasts) no deadline runs; the handlers bound what they wait
//!   for themselves (a write action's body: `api.header_read_timeout`), and live streams
//!   have their own cap (`api.max_sse_clients`, in `super::stream`).
//!
//! A connection that misses a deadline is dropped (closed), and counted in
//! `estate_api_closed_total{reason="header_timeout"|"idle_timeout"}`. Request heads are
//! limited to 16 KiB (hyper answers 431 beyond).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, Response};
use axum::Router;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use estate_config::ApiConfig;

use crate::health::{LogThrottle, Throttled};
use crate::telemetry::{Metrics, ReasonLabel};

/// Largest request head (request line and headers) hyper buffers; beyond, it answers 431.
/// The API's URLs and headers are short; 16 KiB leaves room for a browser's cookies.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// How long stopping waits for open connections to finish their request (live streams
/// end on their own when the gateway stops; see `ApiState::stop`).
const DRAIN: Duration = Duration::from_secs(2);

/// Pause after `accept` fails for lack of descriptors (`EMFILE`/`ENFILE`): retrying at
/// once would spin while nothing has been freed.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The HTTP limits, from `[api]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From accept (or the first byte of a later request) until the request head is
    /// complete; slower connections are closed (`api.header_read_timeout`).
    pub header_read_timeout: Duration,
    /// A kept-alive connection with no new request this long is closed (`api.idle_timeout`).
    pub idle_timeout: Duration,
    /// Connections open at once, live streams included; at least 1 (`api.max_connections`).
    pub max_connections: usize,
}

impl Limits {
    /// The limits `[api]` configures; a `max_connections` of 0 becomes 1.
    pub fn from_config(api: &ApiConfig) -> Limits {
        Limits {
            header_read_timeout: api.header_read_timeout,
            idle_timeout: api.idle_timeout,
            max_connections: api.max_connections.max(1),
        }
    }
}

/// One log line per kind of accept failure, then a summary a minute: a descriptor
/// shortage repeats on every accept.
static ACCEPT_ERRORS: LogThrottle = LogThrottle::new(5, Duration::from_secs(60));

/// Serves `router` on `listener` within `limits` until `shutdown`; then stops accepting
/// and gives open connections `DRAIN` (2 s) to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    metrics: Arc<Metrics>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    // One permit per open connection; a connection's task holds its permit until the
    // connection is closed. Over the cap, new connections are refused (never queued: a
    // queued connection would still hold a descriptor).
    warn_if_no_room(limits.max_connections);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    // Cancelled when the API stops: each connection finishes its request and closes.
    let connections_stop = CancellationToken::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                accept_failed(&err).await;
                continue;
            }
        };
        let (stream, peer) = stream;
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics
                .api_closed
                .get_or_create(&ReasonLabel {
                    reason: "connections",
                })
                .inc();
            refuse(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let metrics = metrics.clone();
        let router = router.clone();
        let stop = connections_stop.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            // Released (and the gauge lowered) however the connection ends, a panic in a
            // handler included.
            let _open = Open::new(metrics.clone(), permit);
            let Some(tls) = tls else {
                serve_connection(stream, peer, router, limits, &metrics, stop).await;
                return;
            };
            // The handshake counts against the header deadline, like a slow request head.
            match tokio::time::timeout(limits.header_read_timeout, tls.accept(stream)).await {
                Ok(Ok(stream)) => {
                    serve_connection(stream, peer, router, limits, &metrics, stop).await;
                }
                Ok(Err(err)) => {
                    metrics
                        .api_closed
                        .get_or_create(&ReasonLabel { reason: "tls" })
                        .inc();
                    debug!(error = %err, %peer, "API TLS handshake failed.");
                }
                Err(_) => {
                    metrics
                        .api_closed
                        .get_or_create(&ReasonLabel {
                            reason: "header_timeout",
                        })
                        .inc();
                }
            }
        });
    }
    drop(listener);
    connections_stop.cancel();
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN, permits.acquire_many(all))
        .await
        .is_err()
    {
        debug!(waited = ?DRAIN, "API connections still open at stop; closing them.");
    }
    Ok(())
}

/// Warns when `api.max_connections` could take more than a quarter of the process's
/// descriptor limit (`LimitNOFILE`, `ulimit -n`): the MQTT sessions, Modbus links,
/// serial ports and the store need the rest.
fn warn_if_no_room(max_connections: usize) {
    let Some(limit) = descriptor_limit() else {
        return;
    };
    if max_connections as u64 > limit / 4 {
        warn!(
            max_connections,
            descriptor_limit = limit,
            "api.max_connections is more than a quarter of the descriptor limit; a flood of API connections could leave MQTT and Modbus without descriptors. Lower it or raise LimitNOFILE."
        );
    }
}

/// The soft limit on open files, from `/proc/self/limits` (Linux); `None` elsewhere or
/// when unlimited.
fn descriptor_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One open connection: its permit and its count in `estate_api_connections`.
struct Open {
    metrics: Arc<Metrics>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Open {
    fn new(metrics: Arc<Metrics>, permit: tokio::sync::OwnedSemaphorePermit) -> Open {
        metrics.api_connections.inc();
        Open {
            metrics,
            _permit: permit,
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.metrics.api_connections.dec();
    }
}

/// Logs (throttled) and, when descriptors ran out, waits a little before accepting again.
async fn accept_failed(err: &io::Error) {
    let no_descriptors = matches!(err.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE));
    match ACCEPT_ERRORS.hit(Instant::now()) {
        Throttled::Log => {
            warn!(error = %err, "API could not accept a connection.");
        }
        Throttled::Summary(n) => {
            warn!(error = %err, suppressed = n, "API could not accept connections (repeated).");
        }
        Throttled::Quiet => {}
    }
    if no_descriptors {
        tokio::time::sleep(ACCEPT_BACKOFF).await;
    }
}

/// A connection over the cap: a `503` written if the socket takes it at once (it has an
/// empty send buffer, so it does), then closed. Never waits, so a flood of connections
/// costs the gateway no descriptor beyond this call. A client that already sent its
/// request may see a reset instead of the 503.
fn refuse(stream: TcpStream) {
    const BODY: &str = r#"{"error":"too many connections to the gateway API; retry later"}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = stream.try_write(response.as_bytes());
    // Read what already arrived, so that closing sends a FIN rather than a reset where
    // it can.
    let mut sink = [0u8; 2048];
    let _ = stream.try_read(&mut sink);
}

/// Serves one connection until it closes, misses a deadline (module doc) or the API
/// stops.
async fn serve_connection<S>(
    stream: S,
    peer: std::net::SocketAddr,
    router: Router,
    limits: Limits,
    metrics: &Metrics,
    stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let state = Arc::new(ConnState::new());
    let io = TokioIo::new(Watched {
        io: stream,
        state: state.clone(),
    });
    let service = ConnService {
        router,
        state: state.clone(),
        peer,
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(true)
        .max_buf_size(MAX_HEAD_BYTES)
        // Our own deadlines below: hyper's would start when a connection goes idle,
        // making the idle timeout and the header timeout one and the same.
        .header_read_timeout(None);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        let deadline = state.deadline(&limits);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result {
                    debug!(error = %err, "API connection ended with an error.");
                }
                return;
            }
            _ = stop.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = state.changed.notified() => {}
            _ = sleep_until(deadline) => {
                if let Some((_, reason)) = state.deadline(&limits).filter(|(at, _)| *at <= Instant::now()) {
                    metrics.api_closed.get_or_create(&ReasonLabel { reason }).inc();
                    debug!(reason, "API connection closed by its deadline.");
                    return;
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<(Instant, &'static str)>) {
    match deadline {
        Some((at, _)) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// What the deadlines of one connection depend on (module doc).
#[derive(Debug)]
struct ConnState {
    activity: Mutex<Activity>,
    /// Woken whenever `activity` changes, so the connection's task recomputes its
    /// deadline.
    changed: Notify,
}

#[derive(Debug)]
struct Activity {
    /// Requests whose response is not complete yet.
    in_flight: usize,
    /// No request has started yet on this connection.
    fresh: bool,
    /// Since when no request has been in flight (the accept, at first).
    idle_since: Instant,
    /// When the first byte of the next request arrived, while idle.
    head_started: Option<Instant>,
}

impl ConnState {
    fn new() -> ConnState {
        ConnState {
            activity: Mutex::new(Activity {
                in_flight: 0,
                fresh: true,
                idle_since: Instant::now(),
                head_started: None,
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Activity> {
        // Every update is a few field writes; a poisoned lock still holds sane values.
        self.activity
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// When the connection must be closed, and why; `None` while a request is in flight.
    fn deadline(&self, limits: &Limits) -> Option<(Instant, &'static str)> {
        let a = self.lock();
        if a.in_flight > 0 {
            None
        } else if a.fresh {
            Some((a.idle_since + limits.header_read_timeout, "header_timeout"))
        } else if let Some(started) = a.head_started {
            Some((started + limits.header_read_timeout, "header_timeout"))
        } else {
            Some((a.idle_since + limits.idle_timeout, "idle_timeout"))
        }
    }

    /// Bytes arrived from the client.
    fn read_some(&self) {
        let mut a = self.lock();
        if a.in_flight == 0 && !a.fresh && a.head_started.is_none() {
            a.head_started = Some(Instant::now());
            drop(a);
            self.changed.notify_one();
        }
    }

    fn request_started(&self) {
        let mut a = self.lock();
        a.in_flight += 1;
        a.fresh = false;
        a.head_started = None;
        drop(a);
        self.changed.notify_one();
    }

    fn request_done(&self) {
        let mut a = self.lock();
        a.in_flight = a.in_flight.saturating_sub(1);
        if a.in_flight == 0 {
            a.idle_since = Instant::now();
        }
        drop(a);
        self.changed.notify_one();
    }
}

/// The connection's stream (TCP, or TLS over it), telling [`ConnState`] when bytes arrive.
struct Watched<S> {
    io: S,
    state: Arc<ConnState>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.read_some();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The router for one connection, marking each request in flight from its head until
/// its response body is done (hyper drops the body then).
#[derive(Clone)]
struct ConnService {
    router: Router,
    state: Arc<ConnState>,
    /// The client's address, handed to the handlers as `ConnectInfo` (anonymous reads
    /// from loopback, lockout per address).
    peer: std::net::SocketAddr,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(self.peer));
        let busy = InFlight::begin(self.state.clone());
        // A Router is always ready (its `poll_ready` returns `Ready(Ok)`), so it is
        // called without polling readiness first.
        let mut router = self.router.clone();
        let response = tower_service::Service::call(&mut router, req);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| Body::new(Tracked { body, _busy: busy })))
        })
    }
}

/// One request in flight; done when dropped (with its response body, or with the
/// handler's future when the connection goes away first).
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn begin(state: Arc<ConnState>) -> InFlight {
        state.request_started();
        InFlight(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_done();
    }
}

/// A response body that keeps its request in flight until hyper is done with it.
struct Tracked {
    body: Body,
    _busy: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_connections: 4,
        }
    }

    #[test]
    fn the_descriptor_limit_is_read() {
        // Linux test machines have a finite soft limit.
        assert!(descriptor_limit().is_some_and(|n| n > 0));
    }

    #[test]
    fn deadlines_follow_the_connection() {
        let s = ConnState::new();
        let l = limits();
        let accepted = s.lock().idle_since;
        // Fresh: the head must be complete within the header timeout of the accept.
        assert_eq!(
            s.deadline(&l),
            Some((accepted + l.header_read_timeout, "header_timeout"))
        );
        // In flight: no deadline, even as more bytes come.
        s.request_started();
        s.read_some();
        assert_eq!(s.deadline(&l), None);
        // Idle after the response: the idle timeout.
        s.request_done();
        let idle = s.lock().idle_since;
        assert_eq!(
            s.deadline(&l),
            Some((idle + l.idle_timeout, "idle_timeout"))
        );
        // A byte of the next request: the header timeout from that byte.
        s.read_some();
        let started = s.lock().head_started.expect("started");
        assert_eq!(
            s.deadline(&l),
            Some((started + l.header_read_timeout, "header_timeout"))
        );
        s.request_started();
        assert_eq!(s.deadline(&l), None);
    }
}
