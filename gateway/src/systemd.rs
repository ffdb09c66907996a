//! systemd integration without a crate: `sd_notify` over the `NOTIFY_SOCKET` datagram
//! socket, and the watchdog loop that decides whether the gateway deserves a ping.
//!
//! Everything here is a no-op unless systemd started us with `Type=notify`
//! (`NOTIFY_SOCKET` set) and, for the watchdog, `WatchdogSec=` (`WATCHDOG_USEC` set, and
//! `WATCHDOG_PID`, if set, naming this process).
//!
//! What a watchdog ping means (see [`watchdog`]): every tick, the loop asks the store
//! writer for a round trip ([`StoreHandle::ping`], answered only after the writer has
//! committed a group — flush and fdatasync included), and sends `WATCHDOG=1` only when
//! the answer comes in time. Ingest waits on the same writer before it acknowledges
//! anything, so "the writer commits" is the honest test of "sensor data is still being
//! made durable". A writer stuck in a hung disk write (a dying SD card), a writer that
//! died, or a runtime too starved to run this loop all stop the pings, and systemd
//! kills and restarts the service. A stage that ends on its own (a panic, a fatal
//! error) is not left to the watchdog: `estate_gateway::run` then stops the gateway in
//! order and exits non-zero (`Restart=on-failure`). An unreachable broker stops
//! nothing: the gateway is then doing its job (buffering), and a restart would not help.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::store::StoreHandle;

/// Sends `state` (e.g. `"READY=1"`) to systemd. `Ok(false)` when not run by systemd.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let path = path.to_string_lossy().into_owned();
    let addr = socket_addr(&path)?;
    let socket = UnixDatagram::unbound()?;
    socket.send_to_addr(state.as_bytes(), &addr)?;
    Ok(true)
}

/// `NOTIFY_SOCKET` is a path, or an abstract socket name written with a leading `@`.
fn socket_addr(path: &str) -> io::Result<SocketAddr> {
    if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(name.as_bytes())
    } else {
        SocketAddr::from_pathname(path)
    }
}

/// Logs instead of failing: systemd integration must never stop the gateway.
pub fn notify_or_log(state: &str) {
    match notify(state) {
        Ok(true) => debug!(state, "Told systemd."),
        Ok(false) => {}
        Err(err) => warn!(state, error = %err, "Cannot notify systemd."),
    }
}

/// The watchdog interval systemd expects pings within, when it asked for them.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Pings the systemd watchdog every half `interval` while the store writer commits
/// (module doc), until `shutdown`. Holds a [`StoreHandle`] only while running: it is
/// dropped on shutdown so the writer can drain and stop.
pub async fn watchdog(interval: Duration, store: StoreHandle, shutdown: CancellationToken) {
    let tick = interval / 2;
    // A round trip through the writer normally takes well under a millisecond; allow it
    // most of a tick, so one slow fsync does not count as a hang but a hung one does.
    let patience = interval / 3;
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut withheld = false;
    info!(interval = ?interval, "systemd watchdog enabled.");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let answered = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = tokio::time::timeout(patience, store.ping()) => r,
        };
        match answered {
            Ok(Ok(())) => {
                if withheld {
                    info!("Store writer answers again; resuming watchdog pings.");
                    withheld = false;
                }
                notify_or_log("WATCHDOG=1");
            }
            Ok(Err(err)) => {
                error!(error = %err, "Store writer is gone; withholding watchdog pings.");
                withheld = true;
            }
            Err(_) => {
                error!(waited = ?patience, "Store writer did not complete a commit in time; withholding the watchdog ping.");
                withheld = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_reaches_a_path_socket_and_an_abstract_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).expect("bind");
        let addr = socket_addr(path.to_str().expect("utf-8")).expect("addr");
        UnixDatagram::unbound()
            .expect("socket")
            .send_to_addr(b"READY=1", &addr)
            .expect("send");
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1");

        let name = format!("estate-gateway-test-{}", std::process::id());
        let abstract_addr = socket_addr(&format!("@{name}")).expect("abstract addr");
        let server = UnixDatagram::bind_addr(&abstract_addr).expect("bind abstract");
        UnixDatagram::unbound()
            .expect("socket")
            .send_to_addr(b"WATCHDOG=1", &abstract_addr)
            .expect("send");
        let n = server.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }
}
