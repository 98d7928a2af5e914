//! Bytes for the store: every journal record and snapshot section starts with a format version
//! byte, then the postcard encoding of that version's types. Decoding dispatches on the byte, so
//! a build reads what every earlier build wrote.
//!
//! Version 2 added delayed wills. Records kept their layout (the two new kinds are variants
//! appended to [`PersistRecord`]), so a version 1 record decodes with today's type. Snapshot
//! sessions gained a field, which postcard cannot make optional, so version 1 snapshots keep
//! their own wire type and are migrated on reading (their sessions had no will). The version
//! was bumped although version 1 records still decode, so that data written by this build is
//! refused by name ([`FormatError::UnsupportedVersion`]) by a build that cannot read all of it,
//! rather than skipped record by record as undecodable.
//!
//! Version 3 added the user each persistent session's client connected as, so that the ACL
//! judges a restored session's deliveries as it would a connected one's. Records again kept
//! their layout (the user comes in a `SessionIdentified` record appended to [`PersistRecord`]);
//! snapshot sessions gained a field, so version 2 snapshots too keep their wire type and are
//! migrated on reading, with their users not known (see `SessionAccess` for what that allows).
//!
//! A snapshot writes each message once, in a table that deliveries point into: one message
//! queued for a thousand sessions is stored once, as it is shared once in memory.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::records::{
    PersistRecord, ShardState, StoredAwaiting, StoredDelivery, StoredInflight, StoredMessage,
    StoredSession, StoredSubscription, StoredWill,
};

/// The format this build writes. It reads this one and every earlier one; others fail to
/// decode with [`FormatError::UnsupportedVersion`].
pub const FORMAT_VERSION: u8 = 3;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("empty record")]
    Empty,
    #[error(
        "format version {0} is not supported (this build reads versions 1 to {FORMAT_VERSION})"
    )]
    UnsupportedVersion(u8),
    #[error("undecodable: {0}")]
    Malformed(String),
    #[error("snapshot refers to message {0}, which it does not contain")]
    DanglingMessage(u32),
}

pub fn encode_record(record: &PersistRecord) -> Vec<u8> {
    // Sized up front: grown from empty, a record took four or five reallocations, a tenth of a
    // shard's time under persistent QoS 2 load.
    let message = match record {
        PersistRecord::Queued { message, .. }
        | PersistRecord::RetainedSet { message }
        | PersistRecord::WillDelayed { message, .. } => {
            message.topic.len() + message.payload.len() + message.properties.len()
        }
        _ => 0,
    };
    let buffer = Vec::with_capacity(RECORD_FIELDS_HINT + message);
    encode_into(buffer, record)
}

/// Room for a record's fields besides a message's topic, payload and properties: a client id
/// or two, identifiers and tags.
const RECORD_FIELDS_HINT: usize = 96;

pub fn decode_record(bytes: &[u8]) -> Result<PersistRecord, FormatError> {
    // Earlier versions wrote a prefix of today's variants, in the same layout.
    let (_, body) = versioned(bytes)?;
    from_postcard(body)
}

pub fn encode_snapshot(state: &ShardState) -> Vec<u8> {
    encode_into(Vec::new(), &SnapshotV3::from_state(state))
}

pub fn decode_snapshot(bytes: &[u8]) -> Result<ShardState, FormatError> {
    let wire = match versioned(bytes)? {
        (1, body) => SnapshotV2::from(from_postcard::<SnapshotV1>(body)?).into(),
        (2, body) => from_postcard::<SnapshotV2>(body)?.into(),
        (_, body) => from_postcard::<SnapshotV3>(body)?,
    };
    wire.into_state()
}

fn encode_into(mut buffer: Vec<u8>, value: &impl Serialize) -> Vec<u8> {
    buffer.push(FORMAT_VERSION);
    // Serializing into a Vec fails only for types postcard cannot express (maps with non-string
    // keys, unsized sequences); these types have none.
    postcard::to_extend(value, buffer).expect("persist types always serialize")
}

/// The version byte, if this build reads it, and the bytes after it.
fn versioned(bytes: &[u8]) -> Result<(u8, &[u8]), FormatError> {
    match bytes.split_first() {
        None => Err(FormatError::Empty),
        Some((&version, rest)) if (1..=FORMAT_VERSION).contains(&version) => Ok((version, rest)),
        Some((&other, _)) => Err(FormatError::UnsupportedVersion(other)),
    }
}

fn from_postcard<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, FormatError> {
    postcard::from_bytes(body).map_err(|error| FormatError::Malformed(error.to_string()))
}

/// Version 1: read only, migrated to [`SnapshotV2`] with no wills.
#[derive(Deserialize)]
struct SnapshotV1 {
    messages: Vec<Arc<StoredMessage>>,
    sessions: Vec<SessionV1>,
    retained: Option<Vec<u32>>,
}

impl From<SnapshotV1> for SnapshotV2 {
    fn from(v1: SnapshotV1) -> SnapshotV2 {
        SnapshotV2 {
            messages: v1.messages,
            sessions: v1
                .sessions
                .into_iter()
                .map(|session| SessionV2 {
                    session,
                    delayed_will: None,
                })
                .collect(),
            retained: v1.retained,
        }
    }
}

/// Version 2: read only, migrated to [`SnapshotV3`] with every user not known.
#[derive(Deserialize)]
struct SnapshotV2 {
    messages: Vec<Arc<StoredMessage>>,
    sessions: Vec<SessionV2>,
    retained: Option<Vec<u32>>,
}

impl From<SnapshotV2> for SnapshotV3 {
    fn from(v2: SnapshotV2) -> SnapshotV3 {
        SnapshotV3 {
            messages: v2.messages,
            sessions: v2
                .sessions
                .into_iter()
                .map(|session| SessionV3 {
                    session,
                    username: None,
                })
                .collect(),
            retained: v2.retained,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct SnapshotV3 {
    messages: Vec<Arc<StoredMessage>>,
    sessions: Vec<SessionV3>,
    retained: Option<Vec<u32>>,
}

/// A version 2 session followed by its client's user, as [`SessionV2`] extends version 1.
/// The user stays optional: a session migrated from version 2 is written with its user still
/// not known until its client connects again.
#[derive(Serialize, Deserialize)]
struct SessionV3 {
    session: SessionV2,
    username: Option<Option<String>>,
}

/// A version 1 session followed by its will: postcard writes the nested struct's fields in
/// place, so this is version 1's layout with one field more.
#[derive(Serialize, Deserialize)]
struct SessionV2 {
    session: SessionV1,
    delayed_will: Option<WillV2>,
}

#[derive(Serialize, Deserialize)]
struct WillV2 {
    message: u32,
    publish_at_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct SessionV1 {
    client_id: String,
    version: u8,
    expiry_interval: u32,
    expires_at_ms: Option<u64>,
    subscriptions: Vec<StoredSubscription>,
    inflight: Vec<InflightV1>,
    queued: Vec<DeliveryV1>,
    awaiting_pubrel: Vec<u16>,
}

#[derive(Serialize, Deserialize)]
struct DeliveryV1 {
    id: u64,
    message: u32,
    qos: u8,
    retain: bool,
    subscription_ids: Vec<u32>,
}

#[derive(Serialize, Deserialize)]
struct InflightV1 {
    packet_id: u16,
    state: StoredAwaiting,
    delivery: DeliveryV1,
}

/// Assigns table indexes to messages, one per shared allocation.
#[derive(Default)]
struct MessageTable {
    messages: Vec<Arc<StoredMessage>>,
    index: HashMap<*const StoredMessage, u32>,
}

impl MessageTable {
    fn intern(&mut self, message: &Arc<StoredMessage>) -> u32 {
        let next = self.messages.len() as u32;
        *self.index.entry(Arc::as_ptr(message)).or_insert_with(|| {
            self.messages.push(message.clone());
            next
        })
    }

    fn delivery(&mut self, delivery: &StoredDelivery) -> DeliveryV1 {
        DeliveryV1 {
            id: delivery.id,
            message: self.intern(&delivery.message),
            qos: delivery.qos,
            retain: delivery.retain,
            subscription_ids: delivery.subscription_ids.clone(),
        }
    }
}

impl SnapshotV3 {
    fn from_state(state: &ShardState) -> SnapshotV3 {
        let mut table = MessageTable::default();
        let sessions = state
            .sessions
            .iter()
            .map(|session| SessionV3 {
                session: SessionV2 {
                    session: SessionV1 {
                        client_id: session.client_id.clone(),
                        version: session.version,
                        expiry_interval: session.expiry_interval,
                        expires_at_ms: session.expires_at_ms,
                        subscriptions: session.subscriptions.clone(),
                        inflight: session
                            .inflight
                            .iter()
                            .map(|entry| InflightV1 {
                                packet_id: entry.packet_id,
                                state: entry.state,
                                delivery: table.delivery(&entry.delivery),
                            })
                            .collect(),
                        queued: session.queued.iter().map(|d| table.delivery(d)).collect(),
                        awaiting_pubrel: session.awaiting_pubrel.clone(),
                    },
                    delayed_will: session.delayed_will.as_ref().map(|will| WillV2 {
                        message: table.intern(&will.message),
                        publish_at_ms: will.publish_at_ms,
                    }),
                },
                username: session.username.clone(),
            })
            .collect();
        let retained = state
            .retained
            .as_ref()
            .map(|retained| retained.iter().map(|m| table.intern(m)).collect());
        SnapshotV3 {
            messages: table.messages,
            sessions,
            retained,
        }
    }

    fn into_state(self) -> Result<ShardState, FormatError> {
        let messages = self.messages;
        let message = |index: u32| {
            messages
                .get(index as usize)
                .cloned()
                .ok_or(FormatError::DanglingMessage(index))
        };
        let delivery = |wire: DeliveryV1| -> Result<StoredDelivery, FormatError> {
            Ok(StoredDelivery {
                id: wire.id,
                message: message(wire.message)?,
                qos: wire.qos,
                retain: wire.retain,
                subscription_ids: wire.subscription_ids,
            })
        };
        let mut sessions = Vec::with_capacity(self.sessions.len());
        for SessionV3 {
            session:
                SessionV2 {
                    session,
                    delayed_will,
                },
            username,
        } in self.sessions
        {
            let inflight = session
                .inflight
                .into_iter()
                .map(|entry| {
                    Ok(StoredInflight {
                        packet_id: entry.packet_id,
                        state: entry.state,
                        delivery: delivery(entry.delivery)?,
                    })
                })
                .collect::<Result<_, FormatError>>()?;
            let queued = session
                .queued
                .into_iter()
                .map(delivery)
                .collect::<Result<_, _>>()?;
            let delayed_will = delayed_will
                .map(|will| -> Result<StoredWill, FormatError> {
                    Ok(StoredWill {
                        message: message(will.message)?,
                        publish_at_ms: will.publish_at_ms,
                    })
                })
                .transpose()?;
            sessions.push(StoredSession {
                client_id: session.client_id,
                version: session.version,
                expiry_interval: session.expiry_interval,
                expires_at_ms: session.expires_at_ms,
                subscriptions: session.subscriptions,
                inflight,
                queued,
                awaiting_pubrel: session.awaiting_pubrel,
                delayed_will,
                username,
            });
        }
        let retained = self
            .retained
            .map(|indexes| indexes.into_iter().map(message).collect())
            .transpose()?;
        Ok(ShardState { sessions, retained })
    }
}
