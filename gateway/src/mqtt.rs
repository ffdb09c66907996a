//! MQTT client options shared by ingest and forward: broker address, credentials, and TLS
//! (rustls with the ring provider; CA bundle, optional client certificate for mutual TLS).

use std::sync::Arc;

use rumqttc::{MqttOptions, TlsConfiguration, Transport};

use estate_config::{BrokerConfig, TlsConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} holds no {what}")]
    Empty { path: String, what: &'static str },
    #[error("TLS set-up: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("tls.cert_file and tls.key_file must be given together")]
    HalfClientIdentity,
}

/// Options for one connection to `broker` as `client_id`.
pub fn options(broker: &BrokerConfig, client_id: &str) -> Result<MqttOptions, TlsError> {
    let mut o = MqttOptions::new(client_id, broker.host.clone(), broker.port);
    o.set_keep_alive(broker.keep_alive);
    if let Some(user) = &broker.username {
        let pass = broker.password.as_ref().map(|p| p.expose().to_owned());
        o.set_credentials(user.clone(), pass.unwrap_or_default());
    }
    if let Some(tls) = &broker.tls {
        o.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(
            client_config(tls)?,
        ))));
    }
    Ok(o)
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
    for cert in rustls_pemfile::certs(&mut ca.as_slice()) {
        let cert = cert.map_err(|source| TlsError::Read {
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
            let chain = rustls_pemfile::certs(&mut pem.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| TlsError::Read {
                    path: cert.display().to_string(),
                    source,
                })?;
            let key_pem = read(key)?;
            let key_der = rustls_pemfile::private_key(&mut key_pem.as_slice())
                .map_err(|source| TlsError::Read {
                    path: key.display().to_string(),
                    source,
                })?
                .ok_or_else(|| TlsError::Empty {
                    path: key.display().to_string(),
                    what: "PEM private key",
                })?;
            builder.with_client_auth_cert(chain, key_der)?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(TlsError::HalfClientIdentity),
    })
}
