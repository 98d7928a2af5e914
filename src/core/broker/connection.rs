//! Per-connection state: what belongs to one network connection and dies with it (decoder,
//! send buffer, keepalive, inbound topic aliases, the will of this connection), as opposed to the
//! session, which may outlive it; and the table of a shard's connections, which keeps count of
//! the output their send buffers hold and of which have output to announce.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use ahash::AHashMap;
use bytes::Bytes;
use bytestring::ByteString;

use super::boundary::{Arrival, ConnId, Identity, Origin};
use super::retained_backlog::RetainedBacklog;
use super::send_buffer::SendBuffer;
use super::session::SessionId;
use super::time::Timestamp;
use crate::protocol::{Connect, Decoder, LastWill, Packet, ProtocolVersion, ReasonCode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Accepted; nothing but CONNECT is allowed.
    AwaitingConnect,
    /// CONNECT read; the client is proving who it is (`handlers/authenticate.rs`). Nothing but
    /// AUTH is allowed, and only while the runtime is not checking what it sent.
    Authenticating,
    /// CONNACK sent; bound to a session.
    Connected(SessionId),
    /// The broker decided to close; pending output is flushed, input ignored.
    Closing,
}

#[derive(Debug)]
pub struct Connection {
    pub phase: Phase,
    /// The client's address and listener, for logs and metrics.
    pub origin: Origin,
    pub decoder: Decoder,
    pub send_buffer: SendBuffer,
    /// Meaningful once connected.
    pub version: ProtocolVersion,
    pub client_id: ByteString,
    /// Who the client proved to be: its user name (`None`: anonymous) and enhanced
    /// authentication method.
    pub identity: Identity,
    /// An authentication under way, at CONNECT or a re-authentication. Boxed: it is rare and
    /// short, and holds the CONNECT.
    pub authentication: Option<Box<Authentication>>,
    /// Effective keepalive (after Server Keep Alive); zero disables the check.
    pub keep_alive: Duration,
    pub last_received: Timestamp,
    /// When the CONNECT arrived, if the runtime noted it: of two connections of one client,
    /// the later one stays.
    pub arrival: Option<Arrival>,
    /// Counted in the connections of all shards (`--max-connections`) until the broker closes
    /// it or the socket goes, whichever is first: a socket that lingers after the broker
    /// closed it no longer holds a client's slot.
    pub holds_slot: bool,
    /// The client's Maximum Packet Size: larger messages are skipped for it.
    pub max_packet_size: usize,
    /// The client's Receive Maximum: outbound QoS 1/2 in flight to it.
    pub receive_maximum: u16,
    /// Inbound topic aliases; index = alias - 1.
    pub topic_aliases: Vec<Option<ByteString>>,
    /// v5 Request Problem Information: when false, reason strings are sent only where allowed.
    pub request_problem_information: bool,
    /// Boxed: most clients have no will, and every connection would pay for one inline.
    pub will: Option<Box<LastWill>>,
    /// Set by a DISCONNECT that ends the connection normally, which suppresses the will.
    pub disconnected_normally: bool,
    /// Who ended the connection and why, once someone has: the line logged when the client
    /// disconnects says it.
    pub ending: Option<Ending>,
    /// Already listed for `poll_transmit`, so it is listed once however many packets queue up.
    pub announced: bool,
    /// Retained messages its SUBSCRIBEs matched that wait for room in its send buffer or
    /// in-flight window.
    pub retained_backlog: RetainedBacklog,
    /// Acknowledgements waiting for their records to be durable, in the order they must be
    /// sent (MQTT-4.6.0-2): once one waits, every later one queues behind it.
    pub held_acks: VecDeque<HeldAck>,
    /// PUBRELs waiting for their `PubRecReceived` record to be durable, by journal position.
    /// Apart from `held_acks`: a PUBREL answers the client as a subscriber, and must not queue
    /// behind a PUBACK held for it as a publisher, which may wait for this very flow to end.
    pub held_pubrels: VecDeque<(u64, Packet)>,
}

/// Held acknowledgements on one connection above which a runtime stops reading it. Honest
/// clients stay far below (rumqttc keeps 100 in flight, paho and mosquitto_pub 20); a client
/// that ignores acknowledgements altogether would otherwise make the broker buffer without end.
pub const MAX_HELD_ACKS: usize = 1024;

/// An authentication under way on a connection.
#[derive(Debug)]
pub struct Authentication {
    /// The CONNECT that waits for it, and when it arrived; `None` for a re-authentication.
    pub connect: Option<(Box<Connect>, Arrival)>,
    /// The enhanced authentication method the exchange uses, if any.
    pub method: Option<ByteString>,
    /// The runtime is checking what the client sent: its next input waits.
    pub awaiting_verdict: bool,
}

/// An acknowledgement held until the state it acknowledges is durable.
#[derive(Debug)]
pub struct HeldAck {
    pub packet: Packet,
    /// The last record its handling wrote on this shard (0: none).
    pub seq: u64,
    /// Other shards' replies it waits for, when the message was routed to them.
    pub token: Option<u64>,
}

/// Who ended a connection and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The client sent DISCONNECT with this reason (0 in 3.x).
    Client(ReasonCode),
    /// The broker closed it for this reason (sent in a v5 DISCONNECT, only logged in 3.x).
    Broker(ReasonCode),
    /// The network connection closed or failed without a DISCONNECT.
    Lost,
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ending::Client(reason) => write!(f, "client sent DISCONNECT: {reason}"),
            Ending::Broker(reason) => write!(f, "closed by the broker: {reason}"),
            Ending::Lost => f.write_str("connection lost"),
        }
    }
}

impl Connection {
    /// Whether it holds more acknowledgements than any client that waits for them would let
    /// pile up: a runtime then stops reading it.
    pub fn holds_too_many_acks(&self) -> bool {
        self.held_acks.len() >= MAX_HELD_ACKS
    }

    pub fn new(max_connect_packet_size: usize, origin: Origin, now: Timestamp) -> Connection {
        Connection {
            phase: Phase::AwaitingConnect,
            origin,
            decoder: Decoder::server(max_connect_packet_size),
            send_buffer: SendBuffer::default(),
            version: ProtocolVersion::V3_1_1,
            client_id: ByteString::new(),
            identity: Identity::default(),
            authentication: None,
            keep_alive: Duration::ZERO,
            last_received: now,
            arrival: None,
            holds_slot: true,
            max_packet_size: usize::MAX,
            receive_maximum: u16::MAX,
            topic_aliases: Vec::new(),
            request_problem_information: true,
            will: None,
            disconnected_normally: false,
            ending: None,
            announced: false,
            retained_backlog: RetainedBacklog::default(),
            held_acks: VecDeque::new(),
            held_pubrels: VecDeque::new(),
        }
    }

    /// When silence closes the connection: 1.5 × keepalive after the last packet (§3.1.2.10).
    pub fn keepalive_deadline(&self) -> Option<Timestamp> {
        (!self.keep_alive.is_zero()).then(|| self.last_received + self.keep_alive.mul_f64(1.5))
    }

    /// Whether input must wait in its buffer until the runtime's verdict on the client.
    pub fn awaits_verdict(&self) -> bool {
        self.phase == Phase::Authenticating
            && self
                .authentication
                .as_ref()
                .is_some_and(|authentication| authentication.awaiting_verdict)
    }

    pub fn session(&self) -> Option<SessionId> {
        match self.phase {
            Phase::Connected(session) => Some(session),
            _ => None,
        }
    }
}

/// This shard's connections, with the bytes all their send buffers hold together and the
/// connections whose output `Broker::poll_transmit` has not announced yet.
// Boxed: the table keeps the capacity of its busiest moment, and an empty slot then costs a
// pointer instead of a whole connection.
#[derive(Debug, Default)]
pub struct Connections {
    by_id: AHashMap<ConnId, Box<Connection>>,
    unsent: usize,
    writable: VecDeque<ConnId>,
}

impl Connections {
    pub fn insert(&mut self, conn: ConnId, connection: Connection) {
        self.by_id.insert(conn, Box::new(connection));
    }

    /// Removes a connection, with whatever output it had not sent.
    pub fn remove(&mut self, conn: ConnId) {
        if let Some(connection) = self.by_id.remove(&conn) {
            self.unsent -= connection.send_buffer.len();
        }
    }

    pub fn get(&self, conn: &ConnId) -> Option<&Connection> {
        self.by_id.get(conn).map(Box::as_ref)
    }

    pub fn get_mut(&mut self, conn: &ConnId) -> Option<&mut Connection> {
        self.by_id.get_mut(conn).map(Box::as_mut)
    }

    pub fn contains(&self, conn: ConnId) -> bool {
        self.by_id.contains_key(&conn)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn ids(&self) -> Vec<ConnId> {
        self.by_id.keys().copied().collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Connection> {
        self.by_id.values().map(Box::as_ref)
    }

    /// Lets `write` add to the send buffer of `conn`, counts what it added, and lists the
    /// connection for `poll_transmit` unless it is listed already: one lookup for all three.
    /// `None` if the connection is unknown.
    pub fn write<T>(
        &mut self,
        conn: ConnId,
        write: impl FnOnce(&mut Connection) -> T,
    ) -> Option<T> {
        let connection = self.by_id.get_mut(&conn)?;
        let before = connection.send_buffer.len();
        let written = write(connection);
        let added = connection.send_buffer.len() - before;
        if added > 0 {
            self.unsent += added;
            if !connection.announced {
                connection.announced = true;
                self.writable.push_back(conn);
            }
        }
        Some(written)
    }

    /// The next connection with output to send, each announced once until its output is taken.
    pub fn next_writable(&mut self) -> Option<ConnId> {
        while let Some(conn) = self.writable.pop_front() {
            if let Some(connection) = self.by_id.get_mut(&conn) {
                connection.announced = false;
                if !connection.send_buffer.is_empty() {
                    return Some(conn);
                }
            }
        }
        None
    }

    /// Everything waiting to be sent on `conn`, and the session it serves.
    pub fn take_output(&mut self, conn: ConnId) -> Option<(Vec<Bytes>, Option<SessionId>)> {
        let connection = self.by_id.get_mut(&conn)?;
        self.unsent -= connection.send_buffer.len();
        Some((connection.send_buffer.take(), connection.session()))
    }

    /// Bytes waiting to be sent on `conn`.
    pub fn pending(&self, conn: ConnId) -> usize {
        self.get(&conn)
            .map_or(0, |connection| connection.send_buffer.len())
    }

    /// Bytes in all send buffers, not taken yet.
    pub fn unsent(&self) -> usize {
        self.unsent
    }
}
