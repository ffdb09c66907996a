//! The embedded MQTT broker (rumqttd) for the demo and tests: nothing to install.
//!
//! rumqttd has no shutdown handle and no disk persistence, so it runs on its own thread
//! for the life of the process, on a port chosen before it starts. Its defaults reserve
//! about 1 GB; the router's segments are shrunk here to 1 MiB × 4. A deployed gateway
//! uses the estate's own broker (Mosquitto) instead.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

/// Why [`start`] gave no broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Port 0 was asked for and no free loopback port could be bound to pick one.
    #[error("no free port on loopback: {0}")]
    Port(std::io::Error),
    /// rumqttd did not accept a TCP connection within 5 s (the port was taken, or its
    /// thread failed); its thread is left running.
    #[error("embedded broker did not start listening on {0} within 5 s")]
    NotListening(SocketAddr),
}

/// A running embedded broker.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedBroker {
    /// Where it listens: `127.0.0.1` and the port asked for (or the one picked for 0).
    pub addr: SocketAddr,
}

/// Largest publish the embedded broker accepts.
pub const MAX_PAYLOAD: usize = 1024 * 1024;

/// Starts a broker on `127.0.0.1:port` (`0` picks a free port) and waits until it accepts
/// connections.
pub fn start(port: u16) -> Result<EmbeddedBroker, BrokerError> {
    let port = if port == 0 {
        let l = TcpListener::bind("127.0.0.1:0").map_err(BrokerError::Port)?;
        l.local_addr().map_err(BrokerError::Port)?.port()
    } else {
        port
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let server = ServerSettings {
        name: "v4-1".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: MAX_PAYLOAD,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 1024,
            max_outgoing_packet_count: 200,
            max_segment_size: 1024 * 1024,
            max_segment_count: 4,
            ..Default::default()
        },
        v4: Some(HashMap::from([("v4-1".to_owned(), server)])),
        ..Default::default()
    };
    std::thread::Builder::new()
        .name("embedded-broker".into())
        .spawn(move || {
            let mut broker = Broker::new(config);
            if let Err(err) = broker.start() {
                tracing::error!(error = %err, "Embedded broker stopped.");
            }
        })
        .map_err(BrokerError::Port)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return Ok(EmbeddedBroker { addr });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(BrokerError::NotListening(addr))
}
