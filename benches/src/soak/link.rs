//! Connecting again after the broker went away, and the phases every soak task follows.
//!
//! Why it exists: the soak kills the broker with SIGKILL every minute, so every client of the
//! driver sees its connection break at any point and must come back once the broker restarts
//! on the same port. They all do it the same way: retry the handshake with a growing pause, and
//! stop trying once the run no longer needs them.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use mqtt_broker::protocol::ProtocolVersion;

use crate::loadgen::conn::Conn;
use crate::loadgen::fleet::OPEN_TIMEOUT;

/// The pause after the first failed attempt: a restarting broker usually answers again within
/// a few hundred milliseconds.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// The longest pause between attempts, so a client is back within a second of the broker.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Where the run is. Tasks watch it through a `tokio::sync::watch` channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Everything publishes, churns and takes over.
    Load,
    /// Publishers finish what is in flight; subscribers keep receiving.
    Drain,
    /// Subscribers disconnect and report.
    Done,
}

/// 3.1.1 on even turns, 5 on odd ones: every kind of client runs both protocol versions.
pub fn alternate(turn: u64) -> ProtocolVersion {
    if turn.is_multiple_of(2) {
        ProtocolVersion::V3_1_1
    } else {
        ProtocolVersion::V5
    }
}

/// One client's broker address, identity and session kind, so it can connect again as itself.
#[derive(Debug, Clone)]
pub struct Identity {
    pub addr: SocketAddr,
    pub client_id: String,
    pub version: ProtocolVersion,
    /// 3.x clean session 0 or v5 clean start 0 with a session expiry (see [`Conn::connect_with`]).
    pub persistent: bool,
}

impl Identity {
    /// One handshake, bounded by the fleet's handshake timeout.
    pub async fn connect_once(&self) -> io::Result<Conn> {
        let handshake =
            Conn::connect_with(self.addr, &self.client_id, self.version, self.persistent);
        tokio::time::timeout(OPEN_TIMEOUT, handshake)
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
    }

    /// Connects, retrying with backoff; `None` once `give_up` says the run no longer needs this
    /// client (checked before every attempt).
    pub async fn connect(&self, give_up: impl Fn() -> bool) -> Option<Conn> {
        let mut backoff = FIRST_BACKOFF;
        while !give_up() {
            if let Ok(conn) = self.connect_once().await {
                return Some(conn);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        None
    }
}
