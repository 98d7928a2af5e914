//! A session: the state the spec says outlives a connection (§4.1). Subscriptions, outbound
//! QoS 1/2 state and queue, inbound QoS 2 identifiers awaiting PUBREL, and a delayed will.
//!
//! Sessions live on their client id's home shard only, so a session has exactly one owner and
//! takeover never races across threads.

use std::num::NonZeroU32;

use ahash::{AHashMap, AHashSet};
use bytestring::ByteString;

use super::inflight::OutboundQueue;
use super::io::ConnId;
use super::message::SharedMessage;
use super::time::Timestamp;
use crate::protocol::{ProtocolVersion, SubscriptionOptions};

/// Identifies a session on its shard. Never reused, so a stale id can only miss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// One subscription of a session, keyed by its full filter (including any `$share/` prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    pub options: SubscriptionOptions,
    pub identifier: Option<NonZeroU32>,
}

/// A will whose delay interval outlasts the connection (v5 Will Delay Interval).
#[derive(Debug, Clone)]
pub struct DelayedWill {
    pub message: SharedMessage,
    pub publish_at: Timestamp,
}

#[derive(Debug)]
pub struct Session {
    pub client_id: ByteString,
    /// The connection currently attached, if any.
    pub connection: Option<ConnId>,
    /// Version of the last connection, for encoding queued messages.
    pub version: ProtocolVersion,
    /// Seconds the session outlives its connection; 0 ends it with the connection.
    pub expiry_interval: u32,
    /// When a detached session ends (`None` while connected or when it never expires).
    pub expires_at: Option<Timestamp>,
    pub subscriptions: AHashMap<ByteString, Subscription>,
    pub outbound: OutboundQueue,
    /// Inbound QoS 2 identifiers whose PUBLISH was delivered and whose PUBREL has not arrived:
    /// a repeated PUBLISH with one of these ids is acknowledged but not delivered again.
    pub awaiting_pubrel: AHashSet<u16>,
    pub delayed_will: Option<DelayedWill>,
    /// Its changes go to the journal: it was opened with an expiry above 0 while persistence
    /// is on. Stays set until `SessionEnded` is written.
    pub journaled: bool,
    /// Names the next delivery queued for it in the journal (0 is "not journaled").
    pub next_delivery: u64,
}

impl Session {
    pub fn new(client_id: ByteString, version: ProtocolVersion) -> Session {
        Session {
            client_id,
            connection: None,
            version,
            expiry_interval: 0,
            expires_at: None,
            subscriptions: AHashMap::new(),
            outbound: OutboundQueue::default(),
            awaiting_pubrel: AHashSet::new(),
            delayed_will: None,
            journaled: false,
            next_delivery: 1,
        }
    }

    pub fn is_connected(&self) -> bool {
        self.connection.is_some()
    }
}
