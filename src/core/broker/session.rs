//! A session: the state the spec says outlives a connection (§4.1). Subscriptions, outbound
//! QoS 1/2 state and queue, inbound QoS 2 identifiers awaiting PUBREL, and a delayed will.
//!
//! Sessions live on their client id's home shard only, so a session has exactly one owner and
//! takeover never races across threads.

use std::num::NonZeroU32;
use std::sync::Arc;

use ahash::AHashMap;
use bytestring::ByteString;

use super::boundary::ConnId;
use super::inflight::OutboundQueue;
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
    /// Shared so that a snapshot captures a session's subscriptions by a reference count
    /// (`Broker::capture_state`); change them through [`Session::subscriptions_mut`], which
    /// copies them first only while a snapshot still holds them.
    pub subscriptions: Arc<AHashMap<ByteString, Subscription>>,
    pub outbound: OutboundQueue,
    /// Inbound QoS 2 identifiers whose PUBLISH was delivered and whose PUBREL has not arrived:
    /// a repeated PUBLISH with one of these ids is acknowledged but not delivered again. With
    /// each, the token its first PUBREC waited on (`Broker::wait_for_deliveries`), so a resend's PUBREC
    /// waits for the same shards; `None` when nothing was held (or after a restart).
    pub awaiting_pubrel: AHashMap<u16, Option<u64>>,
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
            subscriptions: Arc::default(),
            outbound: OutboundQueue::default(),
            awaiting_pubrel: AHashMap::new(),
            delayed_will: None,
            journaled: false,
            next_delivery: 1,
        }
    }

    pub fn subscriptions_mut(&mut self) -> &mut AHashMap<ByteString, Subscription> {
        Arc::make_mut(&mut self.subscriptions)
    }

    pub fn is_connected(&self) -> bool {
        self.connection.is_some()
    }

    /// Detached and past its expiry, whether or not its expiry timer has fired yet.
    pub fn has_expired(&self, now: Timestamp) -> bool {
        self.connection.is_none() && self.expires_at.is_some_and(|at| at <= now)
    }
}
