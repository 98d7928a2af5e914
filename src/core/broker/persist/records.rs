//! The state the broker keeps across restarts, as values: the journal records a shard emits as
//! its state changes, and the state of a whole shard that a snapshot holds.
//!
//! These types ARE the on-disk format (postcard, which does not describe itself: a field added,
//! removed or reordered silently changes what old bytes mean). Never edit them in place: add a
//! new format version in `codec.rs` and keep these for decoding what older builds wrote. The
//! one change that keeps old bytes meaning the same is a new [`PersistRecord`] variant at the
//! end (postcard numbers variants by position); that is how version 2 added the delayed-will
//! records and version 3 the user a session's client connected as. The fixture tests in
//! `tests/persist.rs` fail if an encoding changes by accident.
//!
//! Everything is keyed by client id, never by the shard-local `SessionId`, so state recovered
//! from any shard's journal can be re-homed to whichever shard owns the client now. Deadlines
//! are wall-clock unix milliseconds: monotonic `Timestamp`s mean nothing after a restart.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// An application message as stored: everything needed to send it again after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub topic: String,
    pub payload: Bytes,
    /// The QoS it was published with (0..=2).
    pub qos: u8,
    pub retain: bool,
    /// The v5 properties forwarded unchanged (payload format, content type, response topic,
    /// correlation data, user properties) in their wire encoding, length prefix included;
    /// empty when there are none.
    pub properties: Bytes,
    /// Message Expiry as a unix-ms deadline.
    pub expires_at_ms: Option<u64>,
    /// Client id of the publisher, for v5 No Local.
    pub publisher: Option<String>,
}

/// One subscription of a session, with its options taken apart so the format does not depend
/// on the options byte of any protocol version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSubscription {
    /// The full filter, including any `$share/group/` prefix.
    pub filter: String,
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    /// 0 send on subscribe, 1 only if new, 2 never (§3.8.3.1).
    pub retain_handling: u8,
    pub identifier: Option<u32>,
}

/// Where an in-flight outbound message stands.
#[allow(clippy::enum_variant_names)] // named after the packets, which all start with "Pub"
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredAwaiting {
    PubAck,
    PubRec,
    PubComp,
}

/// A QoS 1/2 message owed to a session. `id` is unique within the session while the message is
/// queued, and is how later records name it until it gets a packet identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDelivery {
    pub id: u64,
    pub message: Arc<StoredMessage>,
    /// The QoS it is sent with: min(published, granted).
    pub qos: u8,
    pub retain: bool,
    pub subscription_ids: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredInflight {
    pub packet_id: u16,
    pub state: StoredAwaiting,
    pub delivery: StoredDelivery,
}

/// A will waiting out its Will Delay Interval after its connection dropped (format 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWill {
    pub message: Arc<StoredMessage>,
    /// When it is published unless the client reconnects first: the will delay or the session
    /// expiry, whichever is shorter, counted from when the connection dropped (§3.1.3.2.2).
    pub publish_at_ms: u64,
}

/// A persistent session (Session Expiry Interval above 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    pub client_id: String,
    /// Protocol level of the last connection (3, 4 or 5).
    pub version: u8,
    pub expiry_interval: u32,
    /// When the detached session ends. `None` while it was connected (it then expires
    /// `expiry_interval` after the restart) or when it never expires.
    pub expires_at_ms: Option<u64>,
    pub subscriptions: Vec<StoredSubscription>,
    /// In send order; resent with DUP after a restart.
    pub inflight: Vec<StoredInflight>,
    pub queued: Vec<StoredDelivery>,
    /// Inbound QoS 2 packet identifiers whose PUBREL has not arrived.
    pub awaiting_pubrel: Vec<u16>,
    /// Set while detached with a will still to publish (format 2; always `None` from version 1).
    pub delayed_will: Option<StoredWill>,
    /// The user its client last connected as, which the ACL judges its deliveries by (format
    /// 3): `Some(None)` for an anonymous client, `None` when not known, as for every session
    /// of an older format (see `SessionAccess`).
    pub username: Option<Option<String>>,
}

/// What one shard restores from, and what its snapshot holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardState {
    pub sessions: Vec<StoredSession>,
    /// The retained set. Only shard 0 journals and snapshots it (every shard holds a copy, so
    /// one journal is enough); `None` from the others means "not mine", not "empty".
    pub retained: Option<Vec<Arc<StoredMessage>>>,
}

impl ShardState {
    /// The state as `shard`'s snapshot must hold it: the retained set only on shard 0, whose
    /// journal is the one that records retained changes. A copy elsewhere would, when replayed
    /// after shard 0's newer records, bring back stale retained messages.
    pub fn owned_by(mut self, shard: usize) -> ShardState {
        if shard != 0 {
            self.retained = None;
        }
        self
    }
}

/// One target of a [`PersistRecord::Queued`] message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedFor {
    pub client_id: String,
    pub id: u64,
    pub qos: u8,
    pub retain: bool,
    pub subscription_ids: Vec<u32>,
}

/// One change to persistent state, in the order the shard made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PersistRecord {
    /// A persistent session was created or resumed by a CONNECT (connected from now on).
    SessionOpened {
        client_id: String,
        version: u8,
        expiry_interval: u32,
    },
    /// Its connection ended; the session lives until `expires_at_ms` (`None`: forever).
    SessionDetached {
        client_id: String,
        expiry_interval: u32,
        expires_at_ms: Option<u64>,
    },
    /// Expired, discarded by a clean start, or ended with its connection.
    SessionEnded {
        client_id: String,
    },
    /// Added or replaced.
    Subscribed {
        client_id: String,
        subscription: StoredSubscription,
    },
    Unsubscribed {
        client_id: String,
        filter: String,
    },
    /// One message queued for one or more sessions of this shard: the payload is written once.
    Queued {
        message: Arc<StoredMessage>,
        to: Vec<QueuedFor>,
    },
    /// A queued delivery was sent under `packet_id`.
    Started {
        client_id: String,
        id: u64,
        packet_id: u16,
    },
    /// PUBREC arrived: the QoS 2 message now waits for PUBCOMP.
    PubRecReceived {
        client_id: String,
        packet_id: u16,
    },
    /// An in-flight message left the window: acknowledged, refused, expired or too large.
    Finished {
        client_id: String,
        packet_id: u16,
    },
    /// A queued delivery was dropped before it was sent (queue limits).
    Dropped {
        client_id: String,
        id: u64,
    },
    /// An inbound QoS 2 PUBLISH was routed; its identifier waits for PUBREL.
    InboundPending {
        client_id: String,
        packet_id: u16,
    },
    InboundReleased {
        client_id: String,
        packet_id: u16,
    },
    RetainedSet {
        message: Arc<StoredMessage>,
    },
    RetainedCleared {
        topic: String,
    },
    // Format 2 from here; new variants only ever go at the end (see the module documentation).
    /// The connection dropped with a delayed will. A later `SessionOpened` cancels it (the
    /// client came back), a `SessionEnded` means it was published then.
    WillDelayed {
        client_id: String,
        message: Arc<StoredMessage>,
        publish_at_ms: u64,
    },
    /// The delayed will was published when its time came.
    WillPublished {
        client_id: String,
    },
    // Format 3 from here.
    /// The user the client of a session just opened connected as (`None`: anonymous). Written
    /// right after `SessionOpened`, as a record of its own because adding a field to that one
    /// would change its layout.
    SessionIdentified {
        client_id: String,
        username: Option<String>,
    },
}

impl PersistRecord {
    /// The client whose session the record changes; `None` for the retained set. A `Queued`
    /// record names its first target (its targets all live on the shard that wrote it).
    pub fn client_id(&self) -> Option<&str> {
        match self {
            PersistRecord::SessionOpened { client_id, .. }
            | PersistRecord::SessionDetached { client_id, .. }
            | PersistRecord::SessionEnded { client_id }
            | PersistRecord::Subscribed { client_id, .. }
            | PersistRecord::Unsubscribed { client_id, .. }
            | PersistRecord::Started { client_id, .. }
            | PersistRecord::PubRecReceived { client_id, .. }
            | PersistRecord::Finished { client_id, .. }
            | PersistRecord::Dropped { client_id, .. }
            | PersistRecord::InboundPending { client_id, .. }
            | PersistRecord::InboundReleased { client_id, .. }
            | PersistRecord::WillDelayed { client_id, .. }
            | PersistRecord::WillPublished { client_id }
            | PersistRecord::SessionIdentified { client_id, .. } => Some(client_id),
            PersistRecord::Queued { to, .. } => to.first().map(|target| target.client_id.as_str()),
            PersistRecord::RetainedSet { .. } | PersistRecord::RetainedCleared { .. } => None,
        }
    }
}
