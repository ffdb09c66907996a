//! Brokers: an embedded rumqttd in the test process, or the external one `ESTATE_TEST_MQTT` names.

#[allow(unused_imports)]
use super::*;

/// An MQTT broker the test talks to.
#[derive(Debug, Clone)]
pub struct Broker {
    pub host: String,
    pub port: u16,
    /// `"embedded"` or `"external"`, for messages.
    pub kind: &'static str,
}

impl Broker {
    /// A fresh embedded rumqttd on a free loopback port (it lives as long as the test
    /// process).
    pub fn embedded() -> Broker {
        let b = estate_gateway::broker::start(0).expect("embedded broker starts");
        Broker {
            host: b.addr.ip().to_string(),
            port: b.addr.port(),
            kind: "embedded",
        }
    }

    /// The broker named by `ESTATE_TEST_MQTT=host:port`, if set.
    pub fn external() -> Option<Broker> {
        let v = std::env::var("ESTATE_TEST_MQTT").ok()?;
        let v = v.trim();
        if v.is_empty() {
            return None;
        }
        let (host, port) = v
            .rsplit_once(':')
            .unwrap_or_else(|| panic!("ESTATE_TEST_MQTT={v:?} is not host:port"));
        let port = port
            .parse()
            .unwrap_or_else(|_| panic!("ESTATE_TEST_MQTT={v:?}: bad port"));
        Some(Broker {
            host: host.to_owned(),
            port,
            kind: "external",
        })
    }

    /// The external broker when `ESTATE_TEST_MQTT` is set, a fresh embedded one otherwise.
    pub fn shared() -> Broker {
        Broker::external().unwrap_or_else(Broker::embedded)
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}
