//! Between the broker's in-memory values and their stored form: messages (whose expiry turns
//! from a monotonic `Timestamp` into a wall-clock deadline and back), subscriptions and
//! in-flight states.
//!
//! The core never reads a clock: the runtime tells it, with [`Broker::handle_wall_clock`], the
//! unix time that goes with a `Timestamp`, and the core converts with that offset.

use std::num::NonZeroU32;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tracing::warn;

use super::outbox::Journal;
use super::records::{StoredAwaiting, StoredMessage, StoredSubscription};
use crate::broker::core::Broker;
use crate::broker::inflight::Awaiting;
use crate::broker::message::Message;
use crate::broker::session::Subscription;
use crate::broker::time::Timestamp;
use crate::protocol::wire::Reader;
use crate::protocol::{
    ProtocolVersion, Publish, PublishPropertiesBox, QoS, RetainHandling, SubscriptionOptions,
};

impl Journal {
    /// The wall clock reads `unix_ms` at `now` (`Broker::handle_wall_clock`).
    pub fn set_wall_clock(&mut self, unix_ms: u64, now: Timestamp) {
        let now_ms = i64::try_from(now.as_nanos() / 1_000_000).unwrap_or(i64::MAX);
        self.wall_offset_ms = i64::try_from(unix_ms)
            .unwrap_or(i64::MAX)
            .saturating_sub(now_ms);
    }
}

impl Broker {
    /// The unix time of `at`, in milliseconds.
    pub(in crate::broker) fn unix_ms(&self, at: Timestamp) -> u64 {
        unix_ms_at(at, self.persist.wall_offset_ms)
    }

    /// The `Timestamp` of a unix-ms deadline; `now` if it has passed.
    pub(in crate::broker) fn timestamp_at(&self, unix_ms: u64, now: Timestamp) -> Timestamp {
        let left = unix_ms.saturating_sub(self.unix_ms(now));
        now + Duration::from_millis(left)
    }

    pub(in crate::broker) fn stored_message(&self, message: &Message) -> StoredMessage {
        stored_message_at(message, self.persist.wall_offset_ms)
    }

    /// The routed message again; `None` if the stored bytes do not make one (logged). An expired
    /// message comes back expired (its deadline is `now`): the caller decides what to drop.
    pub(in crate::broker) fn restored_message(
        &self,
        stored: &StoredMessage,
        now: Timestamp,
    ) -> Option<Message> {
        let Some(qos) = QoS::from_u8(stored.qos) else {
            warn!(topic = %stored.topic, qos = stored.qos, "stored message has an invalid QoS; dropped");
            return None;
        };
        let properties = match decode_properties(&stored.properties) {
            Ok(properties) => properties,
            Err(error) => {
                warn!(topic = %stored.topic, %error, "stored message has undecodable properties; dropped");
                return None;
            }
        };
        Some(Message {
            template: Publish {
                dup: false,
                qos,
                retain: stored.retain,
                topic: stored.topic.as_str().into(),
                packet_id: 0,
                properties,
                payload: stored.payload.clone(),
            },
            expires_at: stored.expires_at_ms.map(|ms| self.timestamp_at(ms, now)),
            publisher: stored.publisher.as_deref().map(Into::into),
            received: now,
        })
    }
}

/// The unix time of `at`, in milliseconds, for a wall clock reading `wall_offset_ms` at
/// `Timestamp::ZERO`: what [`Broker::unix_ms`] does, for code that runs without the broker.
pub(super) fn unix_ms_at(at: Timestamp, wall_offset_ms: i64) -> u64 {
    let at_ms = i64::try_from(at.as_nanos() / 1_000_000).unwrap_or(i64::MAX);
    u64::try_from(at_ms.saturating_add(wall_offset_ms)).unwrap_or(0)
}

/// [`Broker::stored_message`], for code that runs without the broker.
pub(super) fn stored_message_at(message: &Message, wall_offset_ms: i64) -> StoredMessage {
    let template = &message.template;
    StoredMessage {
        topic: template.topic.to_string(),
        payload: template.payload.clone(),
        qos: template.qos as u8,
        retain: template.retain,
        properties: encode_properties(&template.properties),
        expires_at_ms: message.expires_at.map(|at| unix_ms_at(at, wall_offset_ms)),
        publisher: message.publisher.as_ref().map(ToString::to_string),
    }
}

fn encode_properties(properties: &PublishPropertiesBox) -> Bytes {
    if properties.is_empty() {
        return Bytes::new();
    }
    match properties.body_len() {
        Ok(len) => {
            let mut out = BytesMut::new();
            properties.write(len, &mut out);
            out.freeze()
        }
        // They were decoded from a valid PUBLISH, so they encode; if not, the message is kept
        // without them rather than lost.
        Err(error) => {
            warn!(%error, "message properties do not encode; stored without them");
            Bytes::new()
        }
    }
}

fn decode_properties(bytes: &Bytes) -> Result<PublishPropertiesBox, crate::protocol::DecodeError> {
    if bytes.is_empty() {
        return Ok(PublishPropertiesBox::new());
    }
    let mut reader = Reader::new(bytes.clone());
    let properties = PublishPropertiesBox::decode(&mut reader)?;
    reader.finish()?;
    Ok(properties)
}

pub(in crate::broker) fn stored_subscription_ids(ids: &[NonZeroU32]) -> Vec<u32> {
    ids.iter().map(|id| id.get()).collect()
}

pub(in crate::broker) fn stored_subscription(
    filter: &str,
    subscription: &Subscription,
) -> StoredSubscription {
    let options = subscription.options;
    StoredSubscription {
        filter: filter.to_owned(),
        qos: options.qos as u8,
        no_local: options.no_local,
        retain_as_published: options.retain_as_published,
        retain_handling: options.retain_handling as u8,
        identifier: subscription.identifier.map(NonZeroU32::get),
    }
}

pub(super) fn subscription(stored: &StoredSubscription) -> Option<Subscription> {
    let retain_handling = match stored.retain_handling {
        0 => RetainHandling::SendOnSubscribe,
        1 => RetainHandling::SendIfNewSubscription,
        2 => RetainHandling::DoNotSend,
        _ => return None,
    };
    Some(Subscription {
        options: SubscriptionOptions {
            qos: QoS::from_u8(stored.qos)?,
            no_local: stored.no_local,
            retain_as_published: stored.retain_as_published,
            retain_handling,
        },
        identifier: stored.identifier.and_then(NonZeroU32::new),
    })
}

pub(super) fn stored_awaiting(state: Awaiting) -> StoredAwaiting {
    match state {
        Awaiting::PubAck => StoredAwaiting::PubAck,
        Awaiting::PubRec => StoredAwaiting::PubRec,
        Awaiting::PubComp => StoredAwaiting::PubComp,
    }
}

pub(super) fn awaiting(state: StoredAwaiting) -> Awaiting {
    match state {
        StoredAwaiting::PubAck => Awaiting::PubAck,
        StoredAwaiting::PubRec => Awaiting::PubRec,
        StoredAwaiting::PubComp => Awaiting::PubComp,
    }
}

pub(super) fn protocol_version(level: u8) -> Option<ProtocolVersion> {
    match level {
        3 => Some(ProtocolVersion::V3_1),
        4 => Some(ProtocolVersion::V3_1_1),
        5 => Some(ProtocolVersion::V5),
        _ => None,
    }
}
