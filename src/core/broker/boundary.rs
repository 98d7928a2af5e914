//! The values that cross the boundary between the sans-IO core and a runtime: identifiers the
//! runtime assigns, events the core asks the runtime to carry out, and messages between shards.

use bytestring::ByteString;

use super::message::SharedMessage;
use crate::protocol::Connect;

/// A connection, named by the runtime. Unique across all shards for the life of the process
/// (a runtime can put the shard number in the high bits), so a handed-over connection keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

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
}

/// A CONNECT on its way to the shard its client lives on, with when it arrived. Of two
/// connections with one client id, the one whose CONNECT arrived last must stay, however long
/// each took to reach the client's shard.
#[derive(Debug)]
pub struct HandedOverConnect {
    pub connect: Box<Connect>,
    pub arrived: Arrival,
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
