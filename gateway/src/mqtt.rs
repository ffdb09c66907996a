//! MQTT client options shared by ingest, forward and the city link: broker address,
//! credentials, and TLS (rustls with the ring provider; CA bundle, optional client
//! certificate for mutual TLS).
//!
//! [`Endpoints`] is a broker's node list (`hosts`, or `host`/`port`) with the node in use
//! and the reconnect backoff: a stage asks it for a [`client`](Endpoints::client) for the
//! current node, tells it [`failed`](Endpoints::failed) when a connection or attempt is
//! lost (it moves to the next node, round robin, and says how long to wait), and
//! [`proved`](Endpoints::proved) once the broker has acknowledged something (only then
//! does the backoff start again from `reconnect_min`). One attempt at a time: the caller
//! drops the old event loop (closing its socket) before it builds the next client.
//!
//! The event loop comes wrapped in a [`Poller`], whose [`next`](Poller::next) may be
//! cancelled (a `select!` branch) without harm. rumqttc's own `EventLoop::poll` may not:
//! while it connects, its future owns the new socket, so a `select!` whose other branch
//! fires (a commit, a timer) drops it, closes that socket, and the next poll opens
//! another. The broker still completes the CONNECT it has read, and with the same client
//! id each late session takes over the live one. That was issue 14's "a new connection
//! every 200 ms while a broker is slow to CONNACK" and its drop cycles (seen against
//! NATS 2.9: three connections of one gateway within 2 s, each replacing the other).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, NetworkOptions, TlsConfiguration,
    Transport,
};

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

    /// A fresh client for the node in use, whose attempt to connect (TCP, TLS, CONNACK)
    /// is given up only after `connect_timeout`, and its event loop in a cancel-safe
    /// [`Poller`]. `cap`: its request queue (requests beyond it wait, or fail with
    /// `try_*`).
    pub fn client(&self, cap: usize) -> (AsyncClient, Poller) {
        let (client, mut eventloop) = AsyncClient::new(self.options().clone(), cap);
        eventloop.set_network_options(self.network_options());
        (client, Poller::new(eventloop))
    }

    /// The network options that carry `connect_timeout` (rumqttc counts it in whole
    /// seconds; validation keeps it so).
    pub fn network_options(&self) -> NetworkOptions {
        let mut n = NetworkOptions::new();
        n.set_connection_timeout(self.connect_timeout.as_secs().max(1));
        n
    }

    /// Points a kept event loop (one whose client lives on, with its session's pending
    /// requests) at the node in use: `options` are that node's options with whatever the
    /// caller sets per attempt (a last will), and the connect timeout.
    pub fn point(&self, eventloop: &mut EventLoop, options: MqttOptions) {
        eventloop.mqtt_options = options;
        eventloop.set_network_options(self.network_options());
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
pub struct Poller {
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
    pub fn new(eventloop: EventLoop) -> Self {
        Poller {
            idle: Some(eventloop),
            polling: None,
        }
    }

    /// The next event, as `EventLoop::poll` gives it (it connects first, and again
    /// after an error). Cancelling this loses nothing: the poll goes on at the next call.
    pub async fn next(&mut self) -> Result<Event, ConnectionError> {
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
    /// point it at another node after an error: [`Endpoints::point`]. `None` while a
    /// poll is in progress.
    pub fn idle_mut(&mut self) -> Option<&mut EventLoop> {
        self.idle.as_mut()
    }
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
