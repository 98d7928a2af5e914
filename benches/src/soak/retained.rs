//! Retained churn: messages set, replaced and cleared on a fixed set of topics while readers
//! subscribe to them, and at the end a check that the broker holds exactly what it
//! acknowledged.
//!
//! Why it exists: the retained set is state the broker must bring back from its journal after
//! every SIGKILL, and replace and clear are the operations whose order matters. One setter
//! (persistent session, QoS 1, one message in flight at a time, so the last acknowledgement on
//! a topic is its state) cycles over [`TOPICS`] topics; every fifth operation clears its topic
//! with an empty payload, the others store `"TOPIC:OPERATION"`. After a reconnect it sends its
//! unacknowledged message again with DUP. Readers subscribe to all of them now and then with a
//! fresh clean session and count what they are sent. At the end one more reader collects the
//! whole set and compares it with the setter's acknowledged state.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use mqtt_broker::protocol::{Ack, Packet, ProtocolVersion, Publish, QoS};
use tokio::sync::watch;

use super::link::{Identity, Phase};
use crate::loadgen::conn::{protocol_error, Conn};

/// Topics the setter cycles over.
pub const TOPICS: usize = 64;

/// The filter that matches them all.
const FILTER: &str = "soak/retained/#";

/// Pause between the setter's operations (about 50 a second when acknowledgements are quick).
const SET_PAUSE: Duration = Duration::from_millis(20);

/// Pause between two readers.
const READ_PAUSE: Duration = Duration::from_secs(2);

/// A reader is done once nothing came for this long...
const READ_QUIET: Duration = Duration::from_millis(500);

/// ...or after this long in all.
const READ_LIMIT: Duration = Duration::from_secs(5);

#[derive(Debug, Default, Clone)]
pub struct RetainedReport {
    /// Set, replace and clear operations acknowledged by PUBACK.
    pub acknowledged: u64,
    /// Operations sent again (DUP) after a reconnect.
    pub resent: u64,
    pub setter_reconnects: u64,
    /// Readers that subscribed and collected, and the messages they were sent in all.
    pub reads: u64,
    pub read_messages: u64,
    /// Readers that failed (most while the broker was down).
    pub failed_reads: u64,
    /// Topics whose state the final check knows (not left unacknowledged at the end).
    pub checked: u64,
    /// Of those, topics whose retained message differs from the last acknowledged operation.
    pub mismatched: u64,
}

/// What the setter had acknowledged, per topic (`None`: cleared or never set), and the topic
/// of an operation never acknowledged, whose state is unknown.
pub struct SetterState {
    pub acknowledged: Vec<Option<Bytes>>,
    pub unknown: Option<usize>,
}

fn topic(index: usize) -> String {
    format!("soak/retained/{index}")
}

/// Operation `number`: its topic's index and its PUBLISH (an empty payload clears the topic).
fn operation(number: u64, packet_id: u16) -> (usize, Publish) {
    let index = (number as usize * 7) % TOPICS;
    let payload = if number.is_multiple_of(5) {
        Bytes::new()
    } else {
        Bytes::from(format!("{index}:{number}"))
    };
    let publish = Publish {
        qos: QoS::AtLeastOnce,
        retain: true,
        topic: ByteString::from(topic(index)),
        packet_id,
        payload,
        ..Publish::default()
    };
    (index, publish)
}

/// The setter's side of the exchange, kept across its reconnects.
struct Setter {
    state: SetterState,
    /// The operation waiting for its PUBACK (packet identifier 1: one at a time) and its topic.
    in_flight: Option<(usize, Publish)>,
    operations: u64,
    gives_up_at: Instant,
}

pub async fn set(
    addr: SocketAddr,
    mut phase: watch::Receiver<Phase>,
    gives_up_at: Instant,
    report: &mut RetainedReport,
) -> SetterState {
    let identity = Identity {
        addr,
        client_id: "soak-retained-setter".into(),
        version: ProtocolVersion::V3_1_1,
        persistent: true,
    };
    let mut setter = Setter {
        state: SetterState {
            acknowledged: vec![None; TOPICS],
            unknown: None,
        },
        in_flight: None,
        operations: 0,
        gives_up_at,
    };
    let mut first = true;
    loop {
        let finished = || setter.finished(*phase.borrow());
        let Some(mut conn) = identity.connect(finished).await else {
            break;
        };
        if !first {
            report.setter_reconnects += 1;
        }
        first = false;
        if setter.serve(&mut conn, &mut phase, report).await.is_ok() {
            conn.close().await;
            break;
        }
    }
    setter.state.unknown = setter.in_flight.map(|(index, _)| index);
    setter.state
}

impl Setter {
    /// The load is over and the last operation acknowledged (or the wait for it is over).
    fn finished(&self, phase: Phase) -> bool {
        phase != Phase::Load && (self.in_flight.is_none() || Instant::now() >= self.gives_up_at)
    }

    async fn serve(
        &mut self,
        conn: &mut Conn,
        phase: &mut watch::Receiver<Phase>,
        report: &mut RetainedReport,
    ) -> io::Result<()> {
        if let Some((_, publish)) = &self.in_flight {
            let mut again = publish.clone();
            again.dup = true;
            conn.queue(&Packet::Publish(again))?;
            conn.flush().await?;
            report.resent += 1;
        }
        loop {
            let current = *phase.borrow();
            if self.finished(current) {
                return Ok(());
            }
            if self.in_flight.is_none() {
                self.operations += 1;
                let (index, publish) = operation(self.operations, 1);
                conn.queue(&Packet::Publish(publish.clone()))?;
                conn.flush().await?;
                self.in_flight = Some((index, publish));
            }
            tokio::select! {
                packet = conn.read_packet() => {
                    let acknowledged = matches!(packet?, Packet::PubAck(ack) if ack.packet_id == 1);
                    if let Some((index, publish)) = self.in_flight.take_if(|_| acknowledged) {
                        let payload = publish.payload;
                        self.state.acknowledged[index] = (!payload.is_empty()).then_some(payload);
                        report.acknowledged += 1;
                        tokio::time::sleep(SET_PAUSE).await;
                    }
                }
                _ = phase.changed() => {}
                _ = tokio::time::sleep_until(self.gives_up_at.into()), if current != Phase::Load => {}
            }
        }
    }
}

/// Readers, one after another, until the load ends.
pub async fn read(addr: SocketAddr, phase: watch::Receiver<Phase>, report: &mut RetainedReport) {
    let mut turn = 0u64;
    while *phase.borrow() == Phase::Load {
        turn += 1;
        let client_id = format!("soak-retained-reader-{turn}");
        match collect(addr, &client_id, READ_QUIET, READ_LIMIT).await {
            Ok(set) => {
                report.reads += 1;
                report.read_messages += set.len() as u64;
            }
            Err(_) => report.failed_reads += 1,
        }
        tokio::time::sleep(READ_PAUSE).await;
    }
}

/// Compares what a fresh subscriber is sent with what the setter had acknowledged.
pub async fn check(
    addr: SocketAddr,
    setter: &SetterState,
    report: &mut RetainedReport,
) -> io::Result<()> {
    let held = collect(addr, "soak-retained-check", READ_QUIET * 4, READ_LIMIT * 4).await?;
    for (index, acknowledged) in setter.acknowledged.iter().enumerate() {
        if setter.unknown == Some(index) {
            continue;
        }
        report.checked += 1;
        if held.get(&topic(index)) != acknowledged.as_ref() {
            report.mismatched += 1;
        }
    }
    Ok(())
}

/// Subscribes a fresh clean session to [`FILTER`] and collects the retained messages it is
/// sent, by topic, until nothing came for `quiet` or `limit` passed.
async fn collect(
    addr: SocketAddr,
    client_id: &str,
    quiet: Duration,
    limit: Duration,
) -> io::Result<HashMap<String, Bytes>> {
    let identity = Identity {
        addr,
        client_id: client_id.into(),
        version: ProtocolVersion::V5,
        persistent: false,
    };
    let mut conn = identity.connect_once().await?;
    // The retained messages may come right behind the SUBACK, so SUBACK is read here with them.
    conn.queue_subscribe(FILTER, QoS::AtLeastOnce)?;
    conn.flush().await?;
    let mut held = HashMap::new();
    let until = tokio::time::Instant::now() + limit;
    loop {
        let next = tokio::time::timeout(quiet, conn.read_packet());
        match tokio::time::timeout_at(until, next).await {
            Ok(Ok(packet)) => match packet? {
                Packet::Publish(publish) => {
                    conn.queue(&Packet::PubAck(Ack::new(publish.packet_id)))?;
                    conn.flush().await?;
                    if publish.retain {
                        held.insert(publish.topic.to_string(), publish.payload);
                    }
                }
                Packet::SubAck(suback) if suback.reason_codes.iter().any(|c| c.is_error()) => {
                    return Err(protocol_error(format!("SUBSCRIBE {FILTER} refused")));
                }
                _ => {}
            },
            // Quiet, or out of time.
            Ok(Err(_)) | Err(_) => break,
        }
    }
    conn.close().await;
    Ok(held)
}
