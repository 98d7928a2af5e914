//! Connection churn and session takeovers: the traffic that exercises the broker's connection
//! and session bookkeeping rather than its message path.
//!
//! Why it exists: a leak of a socket, a session or a subscription shows only after many
//! connections have come and gone, which the long-lived publishers and subscribers never do.
//! A churn task connects (a new client id each time, clean session, 3.1.1 and 5 in turn),
//! subscribes, publishes a few QoS 1 messages to itself and waits for their PUBACKs and their
//! delivery, then leaves: with DISCONNECT three times out of four, by dropping the socket the
//! fourth. A takeover task connects with the same client id while its previous connection is
//! still open, and checks that the broker closes the previous one.
//!
//! Failures while the broker is down are expected and only counted; the cycles go on.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;
use mqtt_broker::protocol::{Ack, Packet, Publish, QoS};
use tokio::sync::watch;

use super::link::{alternate, Identity, Phase};
use crate::loadgen::conn::Conn;

/// Messages a churn cycle publishes to itself.
const CYCLE_MESSAGES: u16 = 5;

/// The longest a churn cycle (handshake included) may take before it counts as failed.
const CYCLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause between two cycles of one churn task.
const CHURN_PAUSE: Duration = Duration::from_millis(100);

/// Pause between two takeovers of one task.
const TAKEOVER_PAUSE: Duration = Duration::from_millis(250);

/// How long the broker may take to close a connection whose client id was taken over.
const TAKEOVER_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Default, Clone)]
pub struct ChurnReport {
    /// Cycles that connected, got every PUBACK and delivery, and left.
    pub cycles: u64,
    /// Of those, the ones that left by dropping the socket.
    pub dropped: u64,
    /// Cycles that failed (most while the broker was down).
    pub failed: u64,
}

#[derive(Debug, Default, Clone)]
pub struct TakeoverReport {
    /// New connections whose predecessor the broker then closed.
    pub taken_over: u64,
    /// New connections whose predecessor stayed open: a broker fault.
    pub left_open: u64,
    /// Connections that could not be made (most while the broker was down).
    pub failed: u64,
}

pub async fn churn(addr: SocketAddr, task: u32, phase: watch::Receiver<Phase>) -> ChurnReport {
    let mut report = ChurnReport::default();
    let topic = ByteString::from(format!("soak/churn/{task}"));
    let mut turn = 0u64;
    while *phase.borrow() == Phase::Load {
        turn += 1;
        let identity = Identity {
            addr,
            client_id: format!("soak-churn-{task}-{turn}"),
            version: alternate(turn),
            persistent: false,
        };
        match tokio::time::timeout(CYCLE_TIMEOUT, cycle(&identity, &topic)).await {
            Ok(Ok(conn)) => {
                report.cycles += 1;
                if turn.is_multiple_of(4) {
                    report.dropped += 1;
                    drop(conn);
                } else {
                    conn.close().await;
                }
            }
            _ => report.failed += 1,
        }
        tokio::time::sleep(CHURN_PAUSE).await;
    }
    report
}

/// Connects, subscribes, and publishes [`CYCLE_MESSAGES`] to itself until every PUBACK and
/// every delivery is in.
async fn cycle(identity: &Identity, topic: &ByteString) -> io::Result<Conn> {
    let mut conn = identity.connect_once().await?;
    conn.subscribe(topic, QoS::AtLeastOnce).await?;
    for packet_id in 1..=CYCLE_MESSAGES {
        conn.queue(&Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            topic: topic.clone(),
            packet_id,
            payload: Bytes::from_static(b"churn"),
            ..Publish::default()
        }))?;
    }
    conn.flush().await?;
    let (mut acked, mut delivered) = (0, 0);
    while acked < CYCLE_MESSAGES || delivered < CYCLE_MESSAGES {
        match conn.read_packet().await? {
            Packet::PubAck(_) => acked += 1,
            Packet::Publish(publish) => {
                delivered += 1;
                conn.queue(&Packet::PubAck(Ack::new(publish.packet_id)))?;
                conn.flush().await?;
            }
            _ => {}
        }
    }
    Ok(conn)
}

pub async fn takeovers(
    addr: SocketAddr,
    task: u32,
    phase: watch::Receiver<Phase>,
) -> TakeoverReport {
    let mut report = TakeoverReport::default();
    let mut current: Option<Conn> = None;
    let mut turn = 0u64;
    while *phase.borrow() == Phase::Load {
        turn += 1;
        // Kept and clean sessions in turn: a clean takeover also discards the kept session.
        let identity = Identity {
            addr,
            client_id: format!("soak-takeover-{task}"),
            version: alternate(turn / 2),
            persistent: turn.is_multiple_of(2),
        };
        match identity.connect_once().await {
            Ok(conn) => {
                if let Some(previous) = current.replace(conn) {
                    if closed_by_broker(previous).await {
                        report.taken_over += 1;
                    } else {
                        report.left_open += 1;
                    }
                }
            }
            Err(_) => report.failed += 1,
        }
        tokio::time::sleep(TAKEOVER_PAUSE).await;
    }
    if let Some(conn) = current {
        conn.close().await;
    }
    report
}

/// Whether the broker closes `conn` (end of stream, an error, or a DISCONNECT) in time.
async fn closed_by_broker(mut conn: Conn) -> bool {
    let closed = async {
        loop {
            match conn.read_packet().await {
                Ok(Packet::Disconnect(_)) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(TAKEOVER_CLOSE_TIMEOUT, closed)
        .await
        .is_ok()
}
