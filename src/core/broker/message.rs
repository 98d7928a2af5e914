//! An application message as the broker routes it: decoded once from the publisher's PUBLISH,
//! shared behind an `Arc` by every shard, queue and in-flight slot it reaches, and turned into a
//! subscriber-specific PUBLISH only at the moment it is written.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;

use super::time::{secs_until, Timestamp};
use crate::protocol::{ProtocolVersion, Publish, PublishPropertiesBox, QoS};

/// A routed message. The template holds topic, payload, QoS, retain and the properties that are
/// forwarded unchanged (payload format, content type, response topic, correlation data, user
/// properties); the publisher's topic alias and subscription identifiers are gone.
#[derive(Debug)]
pub struct Message {
    pub template: Publish,
    /// From Message Expiry Interval; expired messages are never sent.
    pub expires_at: Option<Timestamp>,
    /// Client id of the publisher, for the v5 No Local option.
    pub publisher: Option<ByteString>,
    /// When the broker read it (or restored it), for the delivery latency (`latency.rs`).
    pub received: Timestamp,
}

pub type SharedMessage = Arc<Message>;

/// One subscriber's copy of a message: how it must be sent to that subscriber.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Names it in the journal while it is queued; 0 when its session is not journaled.
    pub id: u64,
    pub message: SharedMessage,
    /// min(published QoS, granted QoS).
    pub qos: QoS,
    /// The RETAIN flag this subscriber sees.
    pub retain: bool,
    pub subscription_ids: Vec<NonZeroU32>,
}

impl Message {
    /// A copy that keeps no receive buffer alive, for messages stored for long.
    pub fn detached(&self) -> Message {
        Message {
            template: self.template.detached(),
            expires_at: self.expires_at,
            publisher: self.publisher.clone(),
            received: self.received,
        }
    }

    /// The same message without the retain flag: delivered, but not to be retained.
    pub fn not_retained(&self) -> Message {
        Message {
            template: Publish {
                retain: false,
                ..self.template.clone()
            },
            expires_at: self.expires_at,
            publisher: self.publisher.clone(),
            received: self.received,
        }
    }

    /// Builds the routed form of an inbound PUBLISH whose topic is already resolved.
    pub fn from_publish(
        mut publish: Publish,
        publisher: Option<ByteString>,
        now: Timestamp,
    ) -> Message {
        let expires_at = publish
            .properties
            .message_expiry_interval
            .map(|secs| now + Duration::from_secs(secs.into()));
        // Only removes, so a PUBLISH without properties gets none allocated; a set left empty
        // is freed, so that the copy made for each subscriber allocates nothing either.
        if let Some(properties) = publish.properties.get_mut() {
            properties.topic_alias = None;
            properties.subscription_identifiers.clear();
            properties.message_expiry_interval = None;
        }
        publish.properties.shrink();
        publish.dup = false;
        publish.packet_id = 0;
        Message {
            template: publish,
            expires_at,
            publisher,
            received: now,
        }
    }

    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|deadline| deadline <= now)
    }

    /// Payload plus topic: what the queue byte limits count.
    pub fn weight(&self) -> usize {
        self.template.payload.len() + self.template.topic.len()
    }
}

impl Delivery {
    /// The PUBLISH this subscriber receives, or `None` once the message has expired. The
    /// expiry interval sent is what is left of it (§3.3.2.3.3), rounded up.
    pub fn to_publish(
        &self,
        version: ProtocolVersion,
        packet_id: u16,
        dup: bool,
        now: Timestamp,
    ) -> Option<Publish> {
        let message = &self.message;
        if message.is_expired(now) {
            return None;
        }
        let template = &message.template;
        let properties = if version.is_v5() {
            let mut properties = template.properties.clone();
            let expiry = message.expires_at.map(|deadline| secs_until(now, deadline));
            // Written only when they differ: writing allocates the properties if there were
            // none, and most messages have none, no expiry and no subscription identifier.
            if properties.subscription_identifiers != self.subscription_ids {
                properties.subscription_identifiers = self.subscription_ids.clone();
            }
            if properties.message_expiry_interval != expiry {
                properties.message_expiry_interval = expiry;
            }
            properties
        } else {
            PublishPropertiesBox::new()
        };
        Some(Publish {
            dup,
            qos: self.qos,
            retain: self.retain,
            topic: template.topic.clone(),
            packet_id,
            properties,
            payload: template.payload.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU16;

    use super::*;
    use crate::protocol::PublishProperties;

    fn delivery(template: Publish, now: Timestamp, subscription_ids: Vec<NonZeroU32>) -> Delivery {
        Delivery {
            id: 0,
            message: Arc::new(Message::from_publish(template, None, now)),
            qos: QoS::AtMostOnce,
            retain: false,
            subscription_ids,
        }
    }

    #[test]
    fn routing_allocates_no_properties_for_a_publish_without_any() {
        let now = Timestamp::from_secs(100);
        // Only a topic alias, which routing removes: the emptied set is freed.
        let publish = Publish {
            topic: "a/b".into(),
            properties: PublishProperties {
                topic_alias: NonZeroU16::new(1),
                ..PublishProperties::default()
            }
            .into(),
            ..Publish::default()
        };
        let plain = delivery(publish, now, Vec::new());
        assert!(plain.message.template.properties.get().is_none());
        let out = plain
            .to_publish(ProtocolVersion::V5, 0, false, now)
            .unwrap();
        assert!(out.properties.get().is_none());
        assert!(out.properties.is_empty());

        // A subscription identifier and an expiry are still written when there are some.
        let publish = Publish {
            topic: "a/b".into(),
            properties: PublishProperties {
                message_expiry_interval: Some(10),
                ..PublishProperties::default()
            }
            .into(),
            ..Publish::default()
        };
        let ids = vec![NonZeroU32::new(7).unwrap()];
        let tagged = delivery(publish, now, ids.clone());
        let later = now + Duration::from_secs(4);
        let out = tagged
            .to_publish(ProtocolVersion::V5, 0, false, later)
            .unwrap();
        assert_eq!(out.properties.subscription_identifiers, ids);
        assert_eq!(out.properties.message_expiry_interval, Some(6));
        let v3 = tagged
            .to_publish(ProtocolVersion::V3_1_1, 0, false, later)
            .unwrap();
        assert!(v3.properties.get().is_none());
    }
}
