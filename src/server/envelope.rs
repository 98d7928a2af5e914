//! `Envelope`, what shards send each other over the mesh: work for the receiving shard's core, or
//! a connection handed over to the shard that owns its client. A file of its own because both a
//! shard (`shard.rs`, which sends and receives envelopes) and a connection's reader
//! (`connection.rs`, which packs its socket into one to hand it over) build them, and
//! `connection.rs` must not depend on `shard.rs`.

use bytes::BytesMut;

use super::transport::StreamLayer;
use crate::broker::{ConnId, HandedOverConnect, ShardMessage};

/// What shards send each other.
pub enum Envelope {
    /// Work for the receiving shard's broker core.
    Broker(Vec<ShardMessage>),
    /// A connection whose client lives on the receiving shard, with its transport's state and
    /// the bytes already read after its CONNECT.
    HandOver {
        conn: ConnId,
        /// The listener it came in on, whose policy a re-authentication follows.
        listener: usize,
        stream: std::net::TcpStream,
        layer: StreamLayer,
        connect: HandedOverConnect,
        buffered: BytesMut,
    },
}

/// What one shard message keeps alive beyond its payload and topic: the message's own
/// allocation and its place in a batch.
const SHARD_MESSAGE_OVERHEAD: usize = 128;

impl Envelope {
    /// Roughly the bytes an envelope keeps alive until its shard takes it, for the mesh's limit.
    pub(super) fn weight(&self) -> usize {
        match self {
            Envelope::Broker(batch) => batch
                .iter()
                .map(|message| match message {
                    ShardMessage::Publish { message, .. } => message.weight(),
                    _ => 0,
                } + SHARD_MESSAGE_OVERHEAD)
                .sum(),
            Envelope::HandOver { buffered, .. } => buffered.len() + SHARD_MESSAGE_OVERHEAD,
        }
    }
}
