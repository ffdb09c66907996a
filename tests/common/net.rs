//! Ports and a TCP proxy (to cut and restore a connection).

#[allow(unused_imports)]
use super::*;

/// A free loopback port, released again: nothing listens on it until [`start_proxy`].
pub fn reserve_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("local addr").port()
}

/// Listens on `127.0.0.1:port` and forwards every connection to `target`, both ways.
/// Runs until the test's runtime ends.
pub async fn start_proxy(port: u16, target: String) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("proxy cannot listen on port {port}: {e}"));
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}
