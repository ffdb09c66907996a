//! MQTT client options shared by ingest, forward and the city link: broker address,
//! credentials, and TLS (rustls with the ring provider; CA bundle, optional client
//! certificate for mutual TLS).
//!
//! [`Endpoints`] is a broker's node list (`hosts`, or `host`/`port`) with the node in use
//! and the reconnect backoff: it moves to the next node, round robin, when a connection
//! or attempt is [`failed`](Endpoints::failed), and starts the backoff again from
//! `reconnect_min` only once the broker has acknowledged something
//! ([`proved`](Endpoints::proved)).
//!
//! [`Connection`] is the one reconnect loop every MQTT client of the gateway runs (ingest,
//! the uplink, the city link, the alert topic): a client for the node in use, polled
//! through [`Connection::next`], which reports a loss once ([`Lost`]), then waits out the
//! backoff and connects again, to the next node, in the way the stage asks for
//! ([`Renew`]). One attempt at a time: the old event loop (and its socket) is dropped
//! before the next client is built.
//!
//! Everything here is cancel-safe (a `select!` branch). rumqttc's own `EventLoop::poll`
//! is not: while it connects, its future owns the new socket, so a `select!` whose other
//! branch fires (a commit, a timer) drops it, closes that socket, and the next poll opens
//! another. The broker still completes the CONNECT it has read, and with the same client
//! id each late session takes over the live one. That was issue 14's "a new connection
//! every 200 ms while a broker is slow to CONNACK" and its drop cycles (seen against
//! NATS 2.9: three connections of one gateway within 2 s, each replacing the other).
//! `Poller` (private) keeps the poll in progress instead of dropping it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Incoming, LastWill, MqttOptions,
    NetworkOptions, TlsConfiguration, Transport,
};
use tokio::time::Instant;

use estate_config::{BrokerConfig, TlsConfig};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a broker's TLS settings do not load; the cause (if any) is the
/// [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A CA, certificate or key file cannot be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: String,
        /// Why it cannot be read.
        source: std::io::Error,
    },
    /// A file is not valid PEM.
    #[error("reading {path}")]
    Pem {
        /// The file.
        path: String,
        /// What is wrong with its PEM.
        source: rustls::pki_types::pem::Error,
    },
    /// A file holds no certificate (or no private key).
    #[error("{path} holds no {what}")]
    Empty {
        /// The file.
        path: String,
        /// `PEM certificate` or `PEM private key`.
        what: &'static str,
    },
    /// rustls refused the certificates or key.
    #[error("TLS set-up")]
    Rustls(#[from] rustls::Error),
    /// Only one of `tls.cert_file` and `tls.key_file` is set.
    #[error("tls.cert_file and tls.key_file must be given together")]
    HalfClientIdentity,
}

/// Options for one connection to `broker` (its first node) as `client_id`.
pub fn options(broker: &BrokerConfig, client_id: &str) -> Result<MqttOptions, TlsError> {
    Ok(Endpoints::new(broker, client_id)?.options().clone())
}

/// The nodes of one broker, in configured order, the one in use, and the reconnect
/// backoff (see the module doc).
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// One per node; they differ only in the address (which is also the TLS server
    /// name the node's certificate is checked against).
    nodes: Vec<MqttOptions>,
    current: usize,
    connect_timeout: Duration,
    reconnect_min: Duration,
    reconnect_max: Duration,
    /// Connections and attempts lost in a row since one last proved itself.
    failures: u32,
}

impl Endpoints {
    /// The nodes of `broker` for a client `client_id`, starting at the first.
    pub fn new(broker: &BrokerConfig, client_id: &str) -> Result<Self, TlsError> {
        let tls = match &broker.tls {
            Some(tls) => Some(TlsConfiguration::Rustls(Arc::new(client_config(tls)?))),
            None => None,
        };
        let mut nodes: Vec<MqttOptions> = broker
            .endpoints()
            .into_iter()
            .map(|(host, port)| {
                let mut o = MqttOptions::new(client_id, host, port);
                o.set_keep_alive(broker.keep_alive);
                if let Some(user) = &broker.username {
                    let pass = broker.password.as_ref().map(|p| p.expose().to_owned());
                    o.set_credentials(user.clone(), pass.unwrap_or_default());
                }
                if let Some(tls) = &tls {
                    o.set_transport(Transport::Tls(tls.clone()));
                }
                o
            })
            .collect();
        if nodes.is_empty() {
            // Validation refuses a `hosts` with no usable entry; never index an empty list.
            nodes.push(MqttOptions::new(
                client_id,
                broker.host.clone(),
                broker.port,
            ));
        }
        Ok(Endpoints {
            nodes,
            current: 0,
            connect_timeout: broker.connect_timeout,
            reconnect_min: broker.reconnect_min,
            reconnect_max: broker.reconnect_max,
            failures: 0,
        })
    }

    /// Applies `f` to the options of every node (session, inflight, packet sizes).
    pub fn configure(&mut self, mut f: impl FnMut(&mut MqttOptions)) -> &mut Self {
        self.nodes.iter_mut().for_each(&mut f);
        self
    }

    /// The options of the node in use.
    pub fn options(&self) -> &MqttOptions {
        &self.nodes[self.current]
    }

    /// `host:port` of the node in use, for logs and alerts.
    pub fn addr(&self) -> String {
        let (host, port) = self.options().broker_address();
        if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    }

    /// How many nodes the broker has.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never: there is always at least one node.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The network options that carry `connect_timeout` (rumqttc counts it in whole
    /// seconds; validation keeps it so).
    fn network_options(&self) -> NetworkOptions {
        let mut n = NetworkOptions::new();
        n.set_connection_timeout(self.connect_timeout.as_secs().max(1));
        n
    }

    /// A connection, or an attempt, was lost: moves to the next node and returns how
    /// long to wait before trying it. `reconnect_min` while a round of the nodes is
    /// being tried, doubled for each round that failed whole, at most `reconnect_max`.
    pub fn failed(&mut self) -> Duration {
        self.current = (self.current + 1) % self.nodes.len();
        self.failures = self.failures.saturating_add(1);
        let rounds = (self.failures - 1) / self.nodes.len() as u32;
        self.reconnect_min
            .saturating_mul(1u32 << rounds.min(20))
            .min(self.reconnect_max)
    }

    /// The connection proved itself (the broker acknowledged a publish, subscription or
    /// ping): the next loss starts the backoff from `reconnect_min` again. A CONNACK is
    /// no proof: a broker may accept a session and have it taken over at once.
    pub fn proved(&mut self) {
        self.failures = 0;
    }
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// A rustls client configuration from PEM files.
pub fn client_config(tls: &TlsConfig) -> Result<rustls::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let ca = read(&tls.ca_file)?;
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(&ca) {
        let cert = cert.map_err(|source| TlsError::Pem {
            path: tls.ca_file.display().to_string(),
            source,
        })?;
        roots.add(cert)?;
        n += 1;
    }
    if n == 0 {
        return Err(TlsError::Empty {
            path: tls.ca_file.display().to_string(),
            what: "PEM certificate",
        });
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    Ok(match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let pem = read(cert)?;
            let chain = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| TlsError::Pem {
                    path: cert.display().to_string(),
                    source,
                })?;
            let key_pem = read(key)?;
            let key_der = match PrivateKeyDer::from_pem_slice(&key_pem) {
                Ok(k) => k,
                Err(pem::Error::NoItemsFound) => {
                    return Err(TlsError::Empty {
                        path: key.display().to_string(),
                        what: "PEM private key",
                    })
                }
                Err(source) => {
                    return Err(TlsError::Pem {
                        path: key.display().to_string(),
                        source,
                    })
                }
            };
            builder.with_client_auth_cert(chain, key_der)?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(TlsError::HalfClientIdentity),
    })
}

type Polled = (EventLoop, Result<Event, ConnectionError>);

/// An event loop whose [`next`](Poller::next) is cancel-safe: the poll in progress is
/// kept, not dropped, when a `select!` takes another branch (see the module doc).
/// Dropping the `Poller` closes the connection.
struct Poller {
    /// The event loop between polls.
    idle: Option<EventLoop>,
    /// The poll in progress, which owns the event loop until it ends.
    polling: Option<Pin<Box<dyn Future<Output = Polled> + Send>>>,
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Poller")
    }
}

async fn poll_owned(mut eventloop: EventLoop) -> Polled {
    let polled = eventloop.poll().await;
    (eventloop, polled)
}

impl Poller {
    fn new(eventloop: EventLoop) -> Self {
        Poller {
            idle: Some(eventloop),
            polling: None,
        }
    }

    /// The next event, as `EventLoop::poll` gives it (it connects first, and again
    /// after an error). Cancelling this loses nothing: the poll goes on at the next call.
    async fn next(&mut self) -> Result<Event, ConnectionError> {
        let polling = match (&mut self.polling, self.idle.take()) {
            (Some(p), _) => p,
            (None, Some(eventloop)) => self.polling.insert(Box::pin(poll_owned(eventloop))),
            (None, None) => unreachable!("a Poller holds its event loop or its poll"),
        };
        let (eventloop, polled) = polling.await;
        self.polling = None;
        self.idle = Some(eventloop);
        polled
    }

    /// The event loop between polls (after [`next`](Poller::next) returned), e.g. to
    /// point it at another node after an error. `None` while a poll is in progress.
    fn idle_mut(&mut self) -> Option<&mut EventLoop> {
        self.idle.as_mut()
    }
}

/// How a [`Connection`] connects again after a loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renew {
    /// A fresh client for every attempt: the requests the lost one held are dropped (the
    /// uplink resends from its cursors instead).
    Fresh,
    /// The same event loop while the broker has one node, keeping its session's pending
    /// requests and acknowledgements; a fresh client for each attempt when there are
    /// several (another node's session knows nothing of this one's packet ids).
    KeepOnOneNode,
    /// The same event loop, pointed at whichever node is next: its queued publishes go
    /// to the next node (the city link's outbox).
    Keep,
}

/// A connection was lost, or an attempt failed: what [`Connection::next`] reports, once
/// per loss. The connection waits out `retry_in`, then tries `next`.
#[derive(Debug)]
pub struct Lost {
    /// What rumqttc said.
    pub error: ConnectionError,
    /// `host:port` of the node that was lost.
    pub broker: String,
    /// `host:port` of the node tried next.
    pub next: String,
    /// The backoff before that attempt.
    pub retry_in: Duration,
    /// The client itself refused a packet it was writing (too large for the broker's
    /// limit) rather than the link failing: the same node is tried again after
    /// `reconnect_min`, and the backoff does not grow. Resending that packet unchanged
    /// would fail the same way; what to do with it is the stage's business.
    pub refused: bool,
}

/// Makes the last will for an attempt, when it starts.
pub type WillFn = Box<dyn Fn() -> LastWill + Send + Sync>;

/// The one reconnect loop of every MQTT client here (see the module doc): the client for
/// the node in use, and how it is replaced after a loss.
pub struct Connection {
    endpoints: Endpoints,
    /// The client's request queue (requests beyond it wait, or fail with `try_*`).
    cap: usize,
    renew: Renew,
    /// Makes the last will of each attempt (the city link's "offline" status, stamped
    /// with the attempt's time).
    last_will: Option<WillFn>,
    client: AsyncClient,
    poller: Poller,
    /// After a loss: when the next attempt is due.
    retry_at: Option<Instant>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("broker", &self.endpoints.addr())
            .field("renew", &self.renew)
            .field("retry_at", &self.retry_at)
            .finish()
    }
}

impl Connection {
    /// A client for the first node of `endpoints`; it connects at the first
    /// [`next`](Connection::next). `cap`: its request queue.
    pub fn new(endpoints: Endpoints, cap: usize, renew: Renew) -> Self {
        let (client, poller) = fresh(&endpoints, None, cap);
        Connection {
            endpoints,
            cap,
            renew,
            last_will: None,
            client,
            poller,
            retry_at: None,
        }
    }

    /// Gives every attempt from the next one on the last will `will` makes when the
    /// attempt starts (the attempt in progress, if any, keeps the one it started with).
    pub fn set_last_will(&mut self, will: WillFn) {
        self.last_will = Some(will);
        if let Some(eventloop) = self.poller.idle_mut() {
            eventloop.mqtt_options = attempt_options(&self.endpoints, self.last_will.as_ref());
        }
    }

    /// The client of the connection in use, to publish and subscribe with. It changes
    /// when the connection is renewed: take it anew after every [`Lost`].
    pub fn client(&self) -> &AsyncClient {
        &self.client
    }

    /// The broker's nodes and the one in use.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// `host:port` of the node in use.
    pub fn addr(&self) -> String {
        self.endpoints.addr()
    }

    /// The next event. After a loss it first waits out the backoff, then connects again
    /// (to the next node, as [`Renew`] says). An acknowledgement from the broker (of a
    /// publish, a subscription or a ping) proves the connection: the backoff starts
    /// again from `reconnect_min` after the next loss. Cancel-safe.
    pub async fn next(&mut self) -> Result<Event, Lost> {
        if let Some(at) = self.retry_at {
            tokio::time::sleep_until(at).await;
            self.retry_at = None;
            self.reconnect();
        }
        match self.poller.next().await {
            Ok(event) => {
                if matches!(
                    event,
                    Event::Incoming(
                        Incoming::PubAck(_)
                            | Incoming::PubComp(_)
                            | Incoming::SubAck(_)
                            | Incoming::UnsubAck(_)
                            | Incoming::PingResp
                    )
                ) {
                    self.endpoints.proved();
                }
                Ok(event)
            }
            Err(error) => Err(self.lost(error)),
        }
    }

    /// The next event of the session in use, never connecting again: `None` once it is
    /// lost (or while it is down). For the last acknowledgements at a stop.
    pub async fn next_in_session(&mut self) -> Option<Event> {
        if self.retry_at.is_some() {
            return None;
        }
        match self.poller.next().await {
            Ok(event) => Some(event),
            Err(error) => {
                self.lost(error);
                None
            }
        }
    }

    /// Drops the connection now and opens a new session with a fresh client at the next
    /// [`next`](Connection::next), without counting a failure (ingest, so that the
    /// broker redelivers what it left unacknowledged).
    pub fn renew_now(&mut self) {
        (self.client, self.poller) = fresh(&self.endpoints, self.last_will.as_ref(), self.cap);
        self.retry_at = None;
    }

    fn lost(&mut self, error: ConnectionError) -> Lost {
        let broker = self.endpoints.addr();
        let refused = is_refusal(&error);
        let retry_in = if refused {
            self.endpoints.reconnect_min
        } else {
            self.endpoints.failed()
        };
        self.retry_at = Some(Instant::now() + retry_in);
        Lost {
            error,
            broker,
            next: self.endpoints.addr(),
            retry_in,
            refused,
        }
    }

    /// After the backoff: a fresh client, or the kept event loop pointed at the node in
    /// use.
    fn reconnect(&mut self) {
        let keep = match self.renew {
            Renew::Fresh => false,
            Renew::KeepOnOneNode => self.endpoints.len() == 1,
            Renew::Keep => true,
        };
        match self.poller.idle_mut() {
            Some(eventloop) if keep => {
                eventloop.mqtt_options = attempt_options(&self.endpoints, self.last_will.as_ref());
                eventloop.set_network_options(self.endpoints.network_options());
            }
            _ => self.renew_now(),
        }
    }
}

/// The options of an attempt on the node in use.
fn attempt_options(endpoints: &Endpoints, last_will: Option<&WillFn>) -> MqttOptions {
    let mut options = endpoints.options().clone();
    if let Some(will) = last_will {
        options.set_last_will(will());
    }
    options
}

/// A fresh client for the node in use, whose attempt to connect (TCP, TLS, CONNACK) is
/// given up only after `connect_timeout`.
fn fresh(endpoints: &Endpoints, last_will: Option<&WillFn>, cap: usize) -> (AsyncClient, Poller) {
    let (client, mut eventloop) = AsyncClient::new(attempt_options(endpoints, last_will), cap);
    eventloop.set_network_options(endpoints.network_options());
    (client, Poller::new(eventloop))
}

/// A packet the client itself refused (rumqttc's size check while writing it), as
/// opposed to the link failing.
fn is_refusal(err: &ConnectionError) -> bool {
    matches!(
        err,
        ConnectionError::MqttState(rumqttc::StateError::Deserialization(
            rumqttc::Error::OutgoingPacketTooLarge { .. }
        ))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(hosts: &[&str]) -> BrokerConfig {
        BrokerConfig {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            ..BrokerConfig::default()
        }
    }

    /// Issue 14: the nodes are tried in order, round robin; within a round each node is
    /// tried after `reconnect_min`, and each failed round doubles the wait. Only a
    /// connection that proved itself starts the backoff again.
    #[test]
    fn failures_move_round_robin_and_back_off_per_round() {
        let mut e = Endpoints::new(&broker(&["a:1", "b:2", "[::1]:3"]), "c").expect("nodes");
        assert_eq!(e.addr(), "a:1");
        let ms = Duration::from_millis;
        let waits: Vec<(String, Duration)> = (0..7)
            .map(|_| (e.failed(), e.addr()))
            .map(|(w, a)| (a, w))
            .collect();
        assert_eq!(
            waits,
            vec![
                ("b:2".into(), ms(200)),
                ("[::1]:3".into(), ms(200)),
                ("a:1".into(), ms(200)),
                ("b:2".into(), ms(400)),
                ("[::1]:3".into(), ms(400)),
                ("a:1".into(), ms(400)),
                ("b:2".into(), ms(800)),
            ]
        );
        e.proved();
        assert_eq!(e.failed(), ms(200));
        // One node: doubling on every failure, capped.
        let mut one = Endpoints::new(&BrokerConfig::default(), "c").expect("node");
        let w: Vec<Duration> = (0..10).map(|_| one.failed()).collect();
        assert_eq!(&w[..3], &[ms(200), ms(400), ms(800)]);
        assert_eq!(w[9], Duration::from_secs(30));
        assert_eq!(one.addr(), "127.0.0.1:1883");
    }
}
