//! One bus link: the one connection (TCP socket or serial port) of a bus, and one
//! transaction at a time on it.
//!
//! [`Link::transact`] is the only way a request reaches a device. It waits out the
//! inter-frame gap since the end of the previous transaction, opens the connection when
//! there is none (after a failed open, not before the reconnect backoff has passed),
//! sets the unit id, and bounds the call by the device's timeout (tokio-modbus has no
//! timeout of its own). Its result keeps the three failures apart:
//!
//! - [`TxError::Exception`]: the device answered with an exception code; the link is fine.
//! - [`TxError::Timeout`]: no answer in time. The context is dropped (a late answer
//!   would otherwise be taken for the answer to the next request) and reopened for the
//!   next transaction.
//! - [`TxError::Transport`] / [`TxError::Protocol`]: the connection failed, or an answer
//!   did not match its request; the context is dropped too.

use std::io;
use std::time::Duration;

use tokio::time::Instant;
use tokio_modbus::client::{Client, Context};
use tokio_modbus::prelude::{Request, Response, SlaveContext};
use tokio_modbus::Slave;

use estate_config::{BusConfig, BusTransport, Parity};

/// Why a Modbus transaction (a poll's read or a linkage write) failed, or why a write
/// did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// No Modbus device of that id is configured (a write only).
    #[error("no Modbus device {0:?} is configured")]
    UnknownDevice(String),
    /// No answer within the device's timeout: a write may or may not have happened.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The device answered with an exception code: it refused the request.
    #[error("the device answered with exception {code:#04x} ({name})")]
    Exception {
        /// The Modbus exception code.
        code: u8,
        /// Its standard name ([`exception_name`]).
        name: &'static str,
    },
    /// The connection could not be opened or failed.
    #[error("transport: {0}")]
    Transport(String),
    /// An answer did not match its request or could not be decoded.
    #[error("bad answer: {0}")]
    Protocol(String),
    /// The gateway is stopping (or Modbus is not running); a write only.
    #[error("Modbus is not running")]
    Stopped,
}

impl TxError {
    /// The metric label: `exception`, `timeout`, `transport`, `decode`, `unknown`, `stopped`.
    pub fn kind(&self) -> &'static str {
        match self {
            TxError::UnknownDevice(_) => "unknown",
            TxError::Timeout(_) => "timeout",
            TxError::Exception { .. } => "exception",
            TxError::Transport(_) => "transport",
            TxError::Protocol(_) => "decode",
            TxError::Stopped => "stopped",
        }
    }
}

/// The standard name of a Modbus exception code.
pub fn exception_name(code: u8) -> &'static str {
    match code {
        0x01 => "illegal function",
        0x02 => "illegal data address",
        0x03 => "illegal data value",
        0x04 => "server device failure",
        0x05 => "acknowledge",
        0x06 => "server device busy",
        0x08 => "memory parity error",
        0x0A => "gateway path unavailable",
        0x0B => "gateway target device failed to respond",
        _ => "non-standard",
    }
}

/// The connection of one bus.
pub struct Link {
    name: String,
    config: BusConfig,
    gap: Duration,
    ctx: Option<Context>,
    /// End of the last transaction (the gap runs from here).
    last_end: Option<Instant>,
    /// No open attempt before this.
    reconnect_at: Option<Instant>,
    /// The next reconnect delay after a failed open.
    backoff: Duration,
    /// Told when the link opens or closes (for the connected gauge and connect counter).
    on_change: Box<dyn Fn(LinkChange) + Send + Sync>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("bus", &self.name)
            .field("transport", &self.config.transport)
            .field("connected", &self.ctx.is_some())
            .finish()
    }
}

/// A change of the link's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkChange {
    /// A TCP connection or serial port was opened.
    Opened,
    /// It was dropped (a transport failure, a timeout, or [`Link::close`]); the next
    /// transaction reopens it.
    Closed,
}

impl Link {
    /// A link for bus `config`, not yet open: the first transaction opens it.
    pub fn new(config: &BusConfig) -> Link {
        Link {
            name: config.name.clone(),
            gap: config.effective_inter_frame_gap(),
            backoff: config.reconnect_min,
            config: config.clone(),
            ctx: None,
            last_end: None,
            reconnect_at: None,
            on_change: Box::new(|_| {}),
        }
    }

    /// Calls `f` whenever the link opens or closes.
    pub fn on_change(mut self, f: impl Fn(LinkChange) + Send + Sync + 'static) -> Link {
        self.on_change = Box::new(f);
        self
    }

    /// The bus's name (`[[modbus.buses]] name`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether a connection or port is open now.
    pub fn is_open(&self) -> bool {
        self.ctx.is_some()
    }

    /// When the next transaction may start (gap and reconnect backoff), if later than now.
    pub fn ready_at(&self) -> Option<Instant> {
        let gap_end = self.last_end.map(|e| e + self.gap);
        let reconnect = if self.ctx.is_none() {
            self.reconnect_at
        } else {
            None
        };
        gap_end.into_iter().chain(reconnect).max()
    }

    /// Drops the connection (it is reopened by the next transaction).
    pub fn close(&mut self) {
        if self.ctx.take().is_some() {
            (self.on_change)(LinkChange::Closed);
        }
    }

    /// Runs one request for `unit` within `timeout`. Cancel-safe at the await points in
    /// the sense that matters: a dropped future leaves at worst a context that is
    /// dropped with the link.
    pub async fn transact(
        &mut self,
        unit: u8,
        request: Request<'_>,
        timeout: Duration,
    ) -> Result<Response, TxError> {
        if let Some(at) = self.ready_at() {
            tokio::time::sleep_until(at).await;
        }
        if self.ctx.is_none() {
            let open_timeout = timeout.max(Duration::from_secs(3));
            match tokio::time::timeout(open_timeout, open(&self.config)).await {
                Ok(Ok(ctx)) => {
                    self.ctx = Some(ctx);
                    (self.on_change)(LinkChange::Opened);
                }
                Ok(Err(err)) => return Err(self.open_failed(err.to_string())),
                Err(_) => {
                    return Err(
                        self.open_failed(format!("opening took longer than {open_timeout:?}"))
                    )
                }
            }
        }
        let Some(ctx) = self.ctx.as_mut() else {
            return Err(TxError::Transport("not connected".into()));
        };
        ctx.set_slave(Slave(unit));
        let result = tokio::time::timeout(timeout, ctx.call(request)).await;
        self.last_end = Some(Instant::now());
        match result {
            Ok(Ok(Ok(response))) => {
                self.backoff = self.config.reconnect_min;
                Ok(response)
            }
            Ok(Ok(Err(exception))) => {
                self.backoff = self.config.reconnect_min;
                let code = u8::from(exception);
                Err(TxError::Exception {
                    code,
                    name: exception_name(code),
                })
            }
            Ok(Err(tokio_modbus::Error::Transport(err))) => {
                self.close();
                Err(TxError::Transport(err.to_string()))
            }
            Ok(Err(tokio_modbus::Error::Protocol(err))) => {
                // Out of step with the device (e.g. a late answer to an earlier request):
                // start over on a fresh connection.
                self.close();
                Err(TxError::Protocol(err.to_string()))
            }
            Err(_) => {
                // Never reuse a context after a timeout: its answer may still come.
                self.close();
                Err(TxError::Timeout(timeout))
            }
        }
    }

    fn open_failed(&mut self, why: String) -> TxError {
        let delay = self.backoff;
        self.reconnect_at = Some(Instant::now() + delay);
        self.backoff = (self.backoff * 2).min(self.config.reconnect_max);
        TxError::Transport(format!(
            "cannot open {} ({why}); next attempt in {delay:?}",
            describe(&self.config)
        ))
    }
}

/// `tcp 127.0.0.1:502`, `rtu /dev/ttyS1 9600 8N1`.
pub fn describe(b: &BusConfig) -> String {
    match b.transport {
        BusTransport::Rtu => format!(
            "rtu {} {} {}{}{}",
            b.device.as_deref().unwrap_or("?"),
            b.baud,
            b.data_bits,
            match b.parity {
                Parity::None => 'N',
                Parity::Even => 'E',
                Parity::Odd => 'O',
            },
            b.stop_bits
        ),
        t => format!("{t} {}:{}", b.host.as_deref().unwrap_or("?"), b.port),
    }
}

async fn open(b: &BusConfig) -> io::Result<Context> {
    match b.transport {
        BusTransport::Tcp | BusTransport::RtuOverTcp => {
            let host = b
                .host
                .as_deref()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host"))?;
            let stream = tokio::net::TcpStream::connect((host, b.port)).await?;
            stream.set_nodelay(true)?;
            Ok(if b.transport == BusTransport::Tcp {
                tokio_modbus::client::tcp::attach(stream)
            } else {
                tokio_modbus::client::rtu::attach(stream)
            })
        }
        BusTransport::Rtu => {
            use tokio_serial::{SerialPort, SerialPortBuilderExt};
            let device = b
                .device
                .as_deref()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no device"))?;
            let builder = tokio_serial::new(device, b.baud)
                .parity(match b.parity {
                    Parity::None => tokio_serial::Parity::None,
                    Parity::Even => tokio_serial::Parity::Even,
                    Parity::Odd => tokio_serial::Parity::Odd,
                })
                .data_bits(if b.data_bits == 7 {
                    tokio_serial::DataBits::Seven
                } else {
                    tokio_serial::DataBits::Eight
                })
                .stop_bits(if b.stop_bits == 2 {
                    tokio_serial::StopBits::Two
                } else {
                    tokio_serial::StopBits::One
                });
            let port = builder.open_native_async().map_err(io::Error::from)?;
            // Whatever a device sent after the last timeout is not an answer to us.
            port.clear(tokio_serial::ClearBuffer::All)
                .map_err(io::Error::from)?;
            Ok(tokio_modbus::client::rtu::attach(port))
        }
    }
}
