//! A simulated Modbus bus: one TCP listener serving one or more unit ids, in Modbus TCP
//! (MBAP) or RTU-over-TCP framing (what a serial device server puts on the wire), with
//! fault injection per unit and a record of every transaction.
//!
//! ## Concurrency recording
//!
//! A bus is one listener, whatever the number of connections: an RS-485 line behind a
//! serial device server, or a Modbus TCP device. Every request is in flight from its
//! arrival until the simulator answers it (or decides on silence, or drops the
//! connection). A request arriving while another is in flight on the same bus is an
//! *overlap*. It is a **violation** (the gateway talked on a busy bus) when the earlier
//! request was on the same connection (pipelining, or going on after a timeout on a
//! context that may still get the late answer), or when the earlier request was still
//! answered. An earlier request whose connection the *client* closed before the answer
//! (the gateway gave up, closed and reconnected) is not: the gateway can no longer
//! receive that answer, and which of the close and the new request the simulator sees
//! first is down to task scheduling.
//!
//! ## Faults ([`Faults`])
//!
//! `delay` (answer late; the request stays in flight), `silent` (never answer: a timeout),
//! `drop_connection` (close the connection instead of answering), `exception` (answer
//! with that exception code), `garbage` (an undecodable answer: for TCP a read response
//! whose byte count disagrees with its length, for RTU a frame with a wrong CRC).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::device::SimDevice;
use super::frame::{self, exception, Request, RtuSplit, Table};

/// How requests and answers are framed on the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Framing {
    /// Modbus TCP: MBAP header, no CRC.
    Tcp,
    /// RTU frames (unit, PDU, CRC-16) over a TCP socket.
    RtuOverTcp,
}

/// Communication faults of one unit. `Default` is a healthy device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Faults {
    /// Answer this much later.
    pub delay: Duration,
    /// Never answer.
    pub silent: bool,
    /// Close the connection instead of answering.
    pub drop_connection: bool,
    /// Answer every request with this exception code.
    pub exception: Option<u8>,
    /// Answer with an undecodable frame.
    pub garbage: bool,
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// Still in flight.
    Pending,
    /// A normal response.
    Answered,
    /// An exception response with this code (injected, or the device's own, e.g. 02).
    Exception(u8),
    /// An undecodable response (injected).
    Garbage,
    /// The simulator closed the connection instead of answering (injected).
    Dropped,
    /// No answer: the `silent` fault, an unknown unit on an RTU bus, or a bad CRC.
    Silent,
    /// The client closed the connection before the answer.
    Abandoned,
}

/// One request as the simulator received it.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    /// Position of the request in the bus's log (0, 1, … in arrival order).
    pub id: u64,
    /// Arrival, relative to the bus start.
    #[serde(with = "duration_secs")]
    pub at: Duration,
    /// The connection (1, 2, … in accept order).
    pub conn: u64,
    /// The unit id it was addressed to.
    pub unit: u8,
    /// Its function code (for an invalid request, as received).
    pub function: u8,
    /// First address it names (0 when it names none).
    pub address: u16,
    /// Items it reads or writes (0 when it names none).
    pub count: u16,
    /// How the simulator answered it.
    pub outcome: Outcome,
}

mod duration_secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// A request that arrived while another was in flight on the bus and counts as a
/// violation (see the module docs).
#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    /// The later request.
    pub request: RequestRecord,
    /// The request that was still in flight.
    pub in_flight: RequestRecord,
    /// Both came on the same connection (a master pipelining), not on two.
    pub same_connection: bool,
}

/// Counters and the concurrency verdict of one bus.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BusStats {
    /// Requests received (good frames).
    pub transactions: u64,
    /// Requests answered normally.
    pub answered: u64,
    /// Requests answered with an exception (illegal address, injected, …).
    pub exceptions: u64,
    /// Requests answered with undecodable bytes (injected).
    pub garbage: u64,
    /// Requests after which the simulator closed the connection (injected).
    pub dropped: u64,
    /// Requests left unanswered (the `silent` fault, an unknown RTU unit).
    pub silent: u64,
    /// Requests whose connection the client closed before the answer.
    pub abandoned: u64,
    /// RTU frames with a bad CRC (ignored, like a real slave does).
    pub bad_crc: u64,
    /// Connections accepted.
    pub connections: u64,
    /// Most transactions ever in flight at once, counting only violating overlaps (1 for
    /// a well-behaved master; 0 before the first request).
    pub max_in_flight: usize,
    /// Each overlapping request, with the one it overlapped.
    pub violations: Vec<Violation>,
    /// Shortest time from the end of an answer to the next request on the bus (the
    /// master's inter-frame gap as the simulator sees it; includes the network).
    #[serde(skip)]
    pub min_gap: Option<Duration>,
}

#[derive(Debug)]
struct Candidate {
    newer: u64,
    older: u64,
    same_conn: bool,
}

#[derive(Debug, Default)]
struct Recorder {
    log: Vec<RequestRecord>,
    /// Ids (= log indexes) of the requests in flight.
    in_flight: Vec<u64>,
    candidates: Vec<Candidate>,
    stats: BusStats,
    last_answer: Option<Instant>,
}

impl Recorder {
    fn finish(&mut self, id: u64, outcome: Outcome) {
        self.in_flight.retain(|i| *i != id);
        if let Some(r) = self.log.get_mut(id as usize) {
            if r.outcome != Outcome::Pending {
                return;
            }
            r.outcome = outcome;
        }
        let s = &mut self.stats;
        match outcome {
            Outcome::Pending => {}
            Outcome::Answered => s.answered += 1,
            Outcome::Exception(_) => s.exceptions += 1,
            Outcome::Garbage => s.garbage += 1,
            Outcome::Dropped => s.dropped += 1,
            Outcome::Silent => s.silent += 1,
            Outcome::Abandoned => s.abandoned += 1,
        }
    }

    fn stats(&self) -> BusStats {
        let mut s = self.stats.clone();
        let mut per_newer: HashMap<u64, usize> = HashMap::new();
        for c in &self.candidates {
            let older = &self.log[c.older as usize];
            if c.same_conn || !matches!(older.outcome, Outcome::Abandoned | Outcome::Pending) {
                *per_newer.entry(c.newer).or_default() += 1;
                s.violations.push(Violation {
                    request: self.log[c.newer as usize].clone(),
                    in_flight: older.clone(),
                    same_connection: c.same_conn,
                });
            }
        }
        s.max_in_flight = if s.transactions == 0 {
            0
        } else {
            1 + per_newer.values().copied().max().unwrap_or(0)
        };
        s
    }
}

/// One unit on a bus: its device state and its faults.
#[derive(Debug)]
pub(crate) struct UnitState {
    pub(crate) device: SimDevice,
    pub(crate) faults: Faults,
}

#[derive(Debug)]
pub(crate) struct BusInner {
    pub(crate) name: String,
    pub(crate) framing: Framing,
    pub(crate) addr: SocketAddr,
    pub(crate) units: HashMap<u8, Arc<Mutex<UnitState>>>,
    started: Instant,
    rec: Mutex<Recorder>,
    drop_gen: watch::Sender<u64>,
    stop: CancellationToken,
}

impl BusInner {
    fn rec(&self) -> MutexGuard<'_, Recorder> {
        self.rec.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(crate) fn lock(u: &Mutex<UnitState>) -> MutexGuard<'_, UnitState> {
    u.lock().unwrap_or_else(|p| p.into_inner())
}

/// Handle to a running simulated bus. Cloning shares it; [`Bus::shutdown`] (or dropping
/// the last [`super::SimFleet`]) stops it.
#[derive(Debug, Clone)]
pub struct Bus {
    pub(crate) inner: Arc<BusInner>,
}

impl Bus {
    /// Listens on `bind` (port 0 for a free one) and serves `units`.
    pub async fn start(
        name: &str,
        framing: Framing,
        bind: SocketAddr,
        units: Vec<(u8, SimDevice)>,
    ) -> io::Result<Bus> {
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(BusInner {
            name: name.to_owned(),
            framing,
            addr,
            units: units
                .into_iter()
                .map(|(u, device)| {
                    (
                        u,
                        Arc::new(Mutex::new(UnitState {
                            device,
                            faults: Faults::default(),
                        })),
                    )
                })
                .collect(),
            started: Instant::now(),
            rec: Mutex::new(Recorder::default()),
            drop_gen: watch::channel(0).0,
            stop: CancellationToken::new(),
        });
        tokio::spawn(accept_loop(inner.clone(), listener));
        Ok(Bus { inner })
    }

    /// The bus's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The address it listens on (the bound port when it was asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// How it frames requests.
    pub fn framing(&self) -> Framing {
        self.inner.framing
    }

    /// The bus start (request times in [`RequestRecord::at`] are relative to it).
    pub fn started(&self) -> Instant {
        self.inner.started
    }

    /// Counters and the concurrency verdict.
    pub fn stats(&self) -> BusStats {
        self.inner.rec().stats()
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.inner.rec().log.clone()
    }

    /// Requests from index `from` on (for incremental reading) and the next index.
    pub fn requests_from(&self, from: usize) -> (Vec<RequestRecord>, usize) {
        let r = self.inner.rec();
        let v = r.log.get(from..).map(<[_]>::to_vec).unwrap_or_default();
        (v, r.log.len())
    }

    /// Number of requests so far that `pred` accepts.
    pub fn count_requests(&self, pred: impl Fn(&RequestRecord) -> bool) -> usize {
        self.inner.rec().log.iter().filter(|r| pred(r)).count()
    }

    /// Closes every open connection now (the listener stays up).
    pub fn drop_connections(&self) {
        self.inner.drop_gen.send_modify(|g| *g += 1);
    }

    /// Stops listening and closes every connection.
    pub fn shutdown(&self) {
        self.inner.stop.cancel();
    }
}

async fn accept_loop(inner: Arc<BusInner>, listener: TcpListener) {
    let mut conn = 0u64;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = inner.stop.cancelled() => return,
        };
        match accepted {
            Ok((stream, _)) => {
                conn += 1;
                inner.rec().stats.connections += 1;
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_conn(inner.clone(), stream, conn));
            }
            Err(e) => {
                tracing::warn!(bus = %inner.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[derive(Debug)]
struct Pending {
    id: u64,
    tid: u16,
    unit: u8,
    req: Request,
}

async fn serve_conn(inner: Arc<BusInner>, stream: TcpStream, conn: u64) {
    let (mut rd, wr) = stream.into_split();
    let stop = inner.stop.child_token();
    let (tx, rx) = mpsc::unbounded_channel::<Pending>();
    let responder = tokio::spawn(respond(inner.clone(), wr, rx, stop.clone()));
    let mut drops = inner.drop_gen.subscribe();
    drops.borrow_and_update();
    let mut buf: Vec<u8> = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    'conn: loop {
        let n = tokio::select! {
            r = rd.read(&mut chunk) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = stop.cancelled() => break,
            _ = drops.changed() => break,
        };
        buf.extend_from_slice(&chunk[..n]);
        // Take every complete frame off the buffer.
        loop {
            let (tid, unit, req, used) = match inner.framing {
                Framing::Tcp => match frame::split_tcp(&buf) {
                    Ok(Some(t)) => (t.tid, t.unit, frame::parse_request(t.pdu), t.len),
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(bus = %inner.name, conn, error = %e, "bad MBAP header, closing");
                        break 'conn;
                    }
                },
                Framing::RtuOverTcp => match frame::split_rtu_request(&buf) {
                    RtuSplit::Frame(unit, pdu, used) => (0, unit, frame::parse_request(pdu), used),
                    RtuSplit::Incomplete => break,
                    RtuSplit::BadCrc(used) => {
                        inner.rec().stats.bad_crc += 1;
                        buf.drain(..used);
                        continue;
                    }
                },
            };
            buf.drain(..used);
            let id = arrive(&inner, conn, unit, &req);
            if tx.send(Pending { id, tid, unit, req }).is_err() {
                inner.rec().finish(id, Outcome::Abandoned);
                break 'conn;
            }
        }
    }
    stop.cancel();
    let _ = responder.await;
}

/// Records an arrival and any overlap; returns the request id.
fn arrive(inner: &BusInner, conn: u64, unit: u8, req: &Request) -> u64 {
    let now = Instant::now();
    let mut rec = inner.rec();
    let id = rec.log.len() as u64;
    let (address, count) = req.span();
    let older: Vec<u64> = rec.in_flight.clone();
    for o in older {
        let same_conn = rec.log[o as usize].conn == conn;
        rec.candidates.push(Candidate {
            newer: id,
            older: o,
            same_conn,
        });
    }
    if let Some(last) = rec.last_answer {
        let gap = now.saturating_duration_since(last);
        if rec.in_flight.is_empty() {
            rec.stats.min_gap = Some(rec.stats.min_gap.map_or(gap, |m| m.min(gap)));
        }
    }
    rec.log.push(RequestRecord {
        id,
        at: now.saturating_duration_since(inner.started),
        conn,
        unit,
        function: req.function(),
        address,
        count,
        outcome: Outcome::Pending,
    });
    rec.in_flight.push(id);
    rec.stats.transactions += 1;
    id
}

/// What to do with one request.
enum Answer {
    Frame(Vec<u8>, Outcome),
    Silent,
    Drop,
}

fn execute(inner: &BusInner, p: &Pending) -> Answer {
    let frame = |pdu: &[u8]| match inner.framing {
        Framing::Tcp => frame::tcp_frame(p.tid, p.unit, pdu),
        Framing::RtuOverTcp => frame::rtu_frame(p.unit, pdu),
    };
    let Some(unit) = inner.units.get(&p.unit) else {
        return match inner.framing {
            // A serial slave that is not there says nothing; a TCP gateway says so.
            Framing::RtuOverTcp => Answer::Silent,
            Framing::Tcp => Answer::Frame(
                frame(&frame::exception_pdu(
                    p.req.function(),
                    exception::GATEWAY_TARGET_FAILED,
                )),
                Outcome::Exception(exception::GATEWAY_TARGET_FAILED),
            ),
        };
    };
    let mut u = lock(unit);
    let f = u.faults.clone();
    if f.silent {
        return Answer::Silent;
    }
    if f.drop_connection {
        return Answer::Drop;
    }
    if f.garbage {
        return Answer::Frame(
            match inner.framing {
                Framing::Tcp => frame::tcp_frame(p.tid, p.unit, &[p.req.function(), 0xFF, 0xA5]),
                Framing::RtuOverTcp => {
                    let mut v = frame::rtu_frame(p.unit, &[p.req.function(), 2, 0x12, 0x34]);
                    let n = v.len();
                    v[n - 1] ^= 0x5A;
                    v
                }
            },
            Outcome::Garbage,
        );
    }
    if let Some(code) = f.exception {
        return Answer::Frame(
            frame(&frame::exception_pdu(p.req.function(), code)),
            Outcome::Exception(code),
        );
    }
    let now = Instant::now();
    let d = &mut u.device;
    let result: Result<Vec<u8>, u8> = match &p.req {
        Request::Read {
            table: t @ (Table::Coil | Table::Discrete),
            address,
            count,
        } => d
            .read_bits(*t, *address, *count, now)
            .map(|bits| frame::response_pdu(&p.req, &[], &bits)),
        Request::Read {
            table,
            address,
            count,
        } => d
            .read_registers(*table, *address, *count)
            .map(|w| frame::response_pdu(&p.req, &w, &[])),
        Request::WriteCoil { address, value } => d
            .write_coil(*address, *value, now)
            .map(|_| frame::response_pdu(&p.req, &[], &[])),
        Request::WriteCoils { address, values } => values
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| d.write_coil(address.wrapping_add(i as u16), *v, now))
            .map(|_| frame::response_pdu(&p.req, &[], &[])),
        Request::WriteRegister { address, value } => d
            .write_register(*address, *value)
            .map(|_| frame::response_pdu(&p.req, &[], &[])),
        Request::WriteRegisters { address, values } => values
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| d.write_register(address.wrapping_add(i as u16), *v))
            .map(|_| frame::response_pdu(&p.req, &[], &[])),
        Request::Invalid { exception, .. } => Err(*exception),
    };
    match result {
        Ok(pdu) => Answer::Frame(frame(&pdu), Outcome::Answered),
        Err(code) => Answer::Frame(
            frame(&frame::exception_pdu(p.req.function(), code)),
            Outcome::Exception(code),
        ),
    }
}

fn delay_of(inner: &BusInner, unit: u8) -> Duration {
    inner
        .units
        .get(&unit)
        .map(|u| lock(u).faults.delay)
        .unwrap_or_default()
}

async fn respond(
    inner: Arc<BusInner>,
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    stop: CancellationToken,
) {
    loop {
        let p = tokio::select! {
            p = rx.recv() => match p { Some(p) => p, None => break },
            _ = stop.cancelled() => break,
        };
        let delay = delay_of(&inner, p.unit);
        if !delay.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.cancelled() => {
                    inner.rec().finish(p.id, Outcome::Abandoned);
                    break;
                }
            }
        }
        match execute(&inner, &p) {
            Answer::Silent => inner.rec().finish(p.id, Outcome::Silent),
            Answer::Drop => {
                inner.rec().finish(p.id, Outcome::Dropped);
                stop.cancel();
                break;
            }
            Answer::Frame(bytes, outcome) => {
                // The transaction ends when the answer leaves: finish it before the
                // write, so the master's next request can never be seen as an overlap.
                {
                    let mut rec = inner.rec();
                    rec.finish(p.id, outcome);
                    rec.last_answer = Some(Instant::now());
                }
                if wr.write_all(&bytes).await.is_err() {
                    stop.cancel();
                    break;
                }
            }
        }
    }
    // Requests the master sent but will not get an answer to.
    rx.close();
    while let Ok(p) = rx.try_recv() {
        inner.rec().finish(p.id, Outcome::Abandoned);
    }
    let _ = wr.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::super::device::DeviceType;
    use super::*;

    async fn bus(framing: Framing) -> Bus {
        Bus::start(
            "t",
            framing,
            SocketAddr::from(([127, 0, 0, 1], 0)),
            vec![
                (1, SimDevice::new(DeviceType::RopeLeak)),
                (2, SimDevice::new(DeviceType::Valve)),
            ],
        )
        .await
        .expect("bus starts")
    }

    async fn read_some(s: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut b))
            .await
            .expect("answer within 5 s")
            .expect("read");
        b
    }

    #[tokio::test]
    async fn tcp_reads_writes_and_exceptions() {
        let b = bus(Framing::Tcp).await;
        let mut s = TcpStream::connect(b.addr()).await.expect("connect");
        s.write_all(&frame::tcp_frame(7, 1, &[4, 0x1F, 0x40, 0, 2]))
            .await
            .expect("send");
        // 12.5 m leak not raised: the f32 reads 0.0.
        assert_eq!(
            read_some(&mut s, 13).await,
            frame::tcp_frame(7, 1, &[4, 4, 0, 0, 0, 0])
        );
        s.write_all(&frame::tcp_frame(8, 2, &[5, 0, 0, 0xFF, 0]))
            .await
            .expect("send");
        assert_eq!(
            read_some(&mut s, 12).await,
            frame::tcp_frame(8, 2, &[5, 0, 0, 0xFF, 0])
        );
        s.write_all(&frame::tcp_frame(9, 2, &[2, 0, 0, 0, 1]))
            .await
            .expect("send");
        assert_eq!(
            read_some(&mut s, 10).await,
            frame::tcp_frame(9, 2, &[2, 1, 1])
        );
        s.write_all(&frame::tcp_frame(10, 9, &[3, 0, 0, 0, 1]))
            .await
            .expect("send");
        assert_eq!(
            read_some(&mut s, 9).await,
            frame::tcp_frame(10, 9, &[0x83, 0x0B])
        );
        let st = b.stats();
        assert_eq!((st.transactions, st.answered, st.exceptions), (4, 3, 1));
        assert_eq!(st.max_in_flight, 1);
        assert!(st.violations.is_empty());
        let log = b.requests();
        assert_eq!(
            (log[0].unit, log[0].function, log[0].address, log[0].count),
            (1, 4, 8000, 2)
        );
    }

    #[tokio::test]
    async fn rtu_over_tcp_faults() {
        let b = bus(Framing::RtuOverTcp).await;
        let units = b.inner.units.clone();
        let mut s = TcpStream::connect(b.addr()).await.expect("connect");
        let req = frame::rtu_frame(1, &[4, 0, 0, 0, 9]);
        s.write_all(&req).await.expect("send");
        let a = read_some(&mut s, 5 + 18).await;
        assert_eq!(&a[..3], &[1, 4, 18]);
        assert_eq!(
            frame::crc16(&a[..a.len() - 2]).to_le_bytes(),
            [a[21], a[22]]
        );
        // Garbage: a frame with a broken CRC.
        lock(&units[&1]).faults.garbage = true;
        s.write_all(&req).await.expect("send");
        let g = read_some(&mut s, 7).await;
        assert_ne!(frame::crc16(&g[..5]).to_le_bytes(), [g[5], g[6]]);
        // Exception 04.
        lock(&units[&1]).faults = Faults {
            exception: Some(4),
            ..Faults::default()
        };
        s.write_all(&req).await.expect("send");
        assert_eq!(read_some(&mut s, 5).await, frame::rtu_frame(1, &[0x84, 4]));
        // Drop: the connection closes without an answer.
        lock(&units[&1]).faults = Faults {
            drop_connection: true,
            ..Faults::default()
        };
        s.write_all(&req).await.expect("send");
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
            .await
            .expect("closed within 5 s");
        assert!(matches!(n, Ok(0) | Err(_)), "closed without an answer");
        let st = b.stats();
        assert_eq!(
            (st.answered, st.garbage, st.exceptions, st.dropped),
            (1, 1, 1, 1)
        );
        assert!(st.violations.is_empty());
    }

    #[tokio::test]
    async fn pipelining_is_a_violation_but_a_closed_context_is_not() {
        let b = bus(Framing::RtuOverTcp).await;
        let units = b.inner.units.clone();
        lock(&units[&1]).faults.delay = Duration::from_millis(300);
        // Abandoned: the client gives up on a slow request, closes, and reconnects.
        let mut a = TcpStream::connect(b.addr()).await.expect("connect");
        a.write_all(&frame::rtu_frame(1, &[4, 0, 0, 0, 1]))
            .await
            .expect("send");
        drop(a);
        let mut c = TcpStream::connect(b.addr()).await.expect("connect");
        c.write_all(&frame::rtu_frame(2, &[1, 0, 0, 0, 1]))
            .await
            .expect("send");
        read_some(&mut c, 6).await;
        // Pipelined: a second request on the same connection while the first is pending.
        c.write_all(&frame::rtu_frame(1, &[4, 0, 0, 0, 1]))
            .await
            .expect("send");
        c.write_all(&frame::rtu_frame(2, &[1, 0, 0, 0, 1]))
            .await
            .expect("send");
        read_some(&mut c, 7 + 6).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        let st = loop {
            let st = b.stats();
            if st.abandoned >= 1 || Instant::now() > deadline {
                break st;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(st.abandoned, 1, "{st:?}");
        assert_eq!(st.violations.len(), 1, "{st:?}");
        assert!(st.violations[0].same_connection);
        assert_eq!(st.max_in_flight, 2);
    }
}
