//! A session: the state the spec says outlives a connection (§4.1). Subscriptions, outbound
//! QoS 1/2 state and queue, inbound QoS 2 identifiers awaiting PUBREL, and a delayed will.
//!
//! Sessions live on their client id's home shard only, so a session has exactly one owner and
//! takeover never races across threads. A shard finds its sessions by id and by client id in
//! one [`Sessions`] table, which keeps the two in step.

use std::num::NonZeroU32;
use std::sync::Arc;

use ahash::AHashMap;
use bytestring::ByteString;

use super::authorization::SessionAccess;
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
    /// each, the token its first PUBREC waited on (`Broker::wait_for_deliveries`), so a
    /// resend's PUBREC waits for the same shards; `None` when nothing was held (or after a
    /// restart).
    pub awaiting_pubrel: AHashMap<u16, Option<u64>>,
    pub delayed_will: Option<DelayedWill>,
    /// Its changes go to the journal: it was opened with an expiry above 0 while persistence
    /// is on. Stays set until `SessionEnded` is written.
    pub journaled: bool,
    /// Names the next delivery queued for it in the journal (0 is "not journaled").
    pub next_delivery: u64,
    /// Its client's user, for the ACL, and the answers the ACL gave.
    pub access: SessionAccess,
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
            access: SessionAccess::default(),
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

/// This shard's sessions, by id and by client id, the two kept in step.
// Boxed: the table keeps the capacity of its busiest moment, and an empty slot then costs a
// pointer instead of a whole session.
#[derive(Debug, Default)]
pub struct Sessions {
    by_id: AHashMap<SessionId, Box<Session>>,
    by_client: AHashMap<ByteString, SessionId>,
    last_id: u64,
}

impl Sessions {
    /// An id no session of this shard had before.
    pub fn new_id(&mut self) -> SessionId {
        self.last_id += 1;
        SessionId(self.last_id)
    }

    /// Adds `session` under `id`, which takes over its client id.
    pub fn insert(&mut self, id: SessionId, session: Session) {
        self.by_client.insert(session.client_id.clone(), id);
        self.by_id.insert(id, Box::new(session));
    }

    /// Removes a session, and its client id with it.
    pub fn remove(&mut self, id: SessionId) -> Option<Box<Session>> {
        let session = self.by_id.remove(&id)?;
        self.by_client.remove(&session.client_id);
        Some(session)
    }

    pub fn id_of(&self, client_id: &str) -> Option<SessionId> {
        self.by_client.get(client_id).copied()
    }

    pub fn of_client(&self, client_id: &str) -> Option<&Session> {
        self.id_of(client_id).and_then(|id| self.get(&id))
    }

    pub fn get(&self, id: &SessionId) -> Option<&Session> {
        self.by_id.get(id).map(Box::as_ref)
    }

    pub fn get_mut(&mut self, id: &SessionId) -> Option<&mut Session> {
        self.by_id.get_mut(id).map(Box::as_mut)
    }

    /// The session, if its changes go to the journal.
    pub fn journaled_mut(&mut self, id: &SessionId) -> Option<&mut Session> {
        self.get_mut(id).filter(|session| session.journaled)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Client ids known, which must be as many as sessions.
    #[cfg(any(test, feature = "sim"))]
    pub fn client_id_count(&self) -> usize {
        self.by_client.len()
    }

    pub fn reserve(&mut self, additional: usize) {
        self.by_id.reserve(additional);
        self.by_client.reserve(additional);
    }

    pub fn values(&self) -> impl Iterator<Item = &Session> {
        self.by_id.values().map(Box::as_ref)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Session> {
        self.by_id.values_mut().map(Box::as_mut)
    }
}
