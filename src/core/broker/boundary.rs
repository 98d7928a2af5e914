//! The values that cross the boundary between the sans-IO core and a runtime: identifiers the
//! runtime assigns, events the core asks the runtime to carry out, and messages between shards.

use std::net::SocketAddr;

use bytes::Bytes;
use bytestring::ByteString;

use super::message::SharedMessage;
use crate::protocol::{Connect, ReasonCode};

/// A connection, named by the runtime. Unique across all shards for the life of the process
/// (a runtime can put the shard number in the high bits), so a handed-over connection keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Where a connection came from, for logs and metrics: the client's address, and the listener
/// it came in on (an index into `Config::listener_names`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    pub peer: Option<SocketAddr>,
    pub listener: usize,
}

/// The client's address, as logs show it.
impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.peer {
            Some(peer) => write!(f, "{peer}"),
            None => f.write_str("unknown"),
        }
    }
}

/// Index of a shard, from 0 to the shard count.
pub type ShardId = usize;

/// What the core asks the runtime to do, besides sending bytes.
#[derive(Debug)]
pub enum Event {
    /// Send what is pending for the connection, then close it. No more input is processed.
    Close(ConnId),
    /// The client's session lives on another shard: move the socket, with any bytes already read
    /// after CONNECT, to `shard` and call its `handle_handed_over`.
    HandOver {
        conn: ConnId,
        shard: ShardId,
        connect: HandedOverConnect,
    },
    /// Check who the client is (`Config::authenticate`): answer with
    /// `Broker::handle_authenticated`. Until then the connection's input waits in its buffer
    /// (`Broker::handle_bytes` leaves it there), so the check can run away from the shard.
    Authenticate { conn: ConnId, request: AuthRequest },
}

/// What a client offers as proof of who it is, at CONNECT or in an AUTH packet.
#[derive(Debug)]
pub struct AuthRequest {
    pub stage: AuthStage,
    pub client_id: ByteString,
    pub username: Option<ByteString>,
    pub password: Option<Bytes>,
    /// MQTT 5 enhanced authentication (§4.12): the method and this step's data.
    pub method: Option<ByteString>,
    pub data: Option<Bytes>,
}

/// Where in an authentication an [`AuthRequest`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthStage {
    /// The CONNECT: a new exchange.
    Connect,
    /// An AUTH 0x18 answering the runtime's [`AuthVerdict::Continue`].
    Continue,
    /// An AUTH 0x19 from a connected client: a new exchange, while the connection goes on.
    Reauthenticate,
}

/// A runtime's answer to [`Event::Authenticate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthVerdict {
    /// The client is `username` (`None`: anonymous); `data` is the method's last word, sent in
    /// the CONNACK or AUTH success.
    Accepted {
        username: Option<ByteString>,
        data: Option<Bytes>,
    },
    /// The method needs another round: `data` goes to the client in AUTH 0x18.
    Continue { data: Bytes },
    /// 0x86 bad user name or password, 0x87 not authorized, 0x8C bad method (3.x: return
    /// codes 4 and 5).
    Refused(ReasonCode),
}

/// Who a client proved to be before its CONNECT moved to its home shard.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub username: Option<ByteString>,
    /// The enhanced authentication method, which the CONNACK names and re-authentication
    /// must use again.
    pub method: Option<ByteString>,
    /// For the CONNACK: the method's last word.
    pub data: Option<Bytes>,
}

/// A CONNECT on its way to the shard its client lives on, with when it arrived. Of two
/// connections with one client id, the one whose CONNECT arrived last must stay, however long
/// each took to reach the client's shard.
#[derive(Debug)]
pub struct HandedOverConnect {
    pub connect: Box<Connect>,
    pub arrived: Arrival,
    pub identity: Identity,
}

/// When a connection's CONNECT arrived, as an ordering key: nanoseconds on a clock all shards
/// share. A runtime notes it (`Broker::note_arrival`) from the kernel's receive stamp of the
/// connection's first bytes, which a busy shard cannot delay; otherwise it is the core's clock
/// when the CONNECT is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Arrival(pub u64);

/// Work one shard sends another. The payloads inside are shared, never copied.
#[derive(Debug, Clone)]
pub enum ShardMessage {
    /// A message published on the sending shard.
    Publish {
        message: SharedMessage,
        /// Deliver to the receiver's ordinary (non-shared) subscribers.
        deliver: bool,
        /// Shared subscriptions (full `$share/group/filter`) the receiver must serve, each by
        /// exactly one of its members.
        groups: Vec<ByteString>,
        /// Replace the receiver's copy of the retained message for this topic.
        store_retained: bool,
        /// Set for a QoS 1/2 PUBLISH whose acknowledgement waits until the receiver has taken
        /// the message in: it answers [`ShardMessage::Accepted`] with this token once its
        /// deliveries hold nothing back for lack of room and, when acknowledgements wait for
        /// durability, the records they wrote are durable. Unset for a message acknowledged
        /// already, or that has no acknowledgement.
        ack: Option<u64>,
    },
    /// The sending shard has taken in the [`ShardMessage::Publish`] with this `ack` token.
    Accepted { token: u64 },
    /// A message the receiver acknowledged at once found a full queue on the sending shard:
    /// put tokens in the messages for it for a while (see `acks.rs`).
    Pace,
    /// The sending shard gained its first (`added`) or lost its last local subscriber for a
    /// filter; `share` is the full shared filter for shared subscriptions.
    Interest {
        filter: ByteString,
        share: Option<ByteString>,
        added: bool,
    },
    /// The sending shard now has (or no longer has) a connected member of a shared
    /// subscription (`$share/group/filter`).
    ShareOnline { share: ByteString, online: bool },
}
