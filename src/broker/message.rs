//! An application message as the broker routes it: decoded once from the publisher's PUBLISH,
//! shared behind an `Arc` by every shard, queue and in-flight slot it reaches, and turned into a
//! subscriber-specific PUBLISH only at the moment it is written.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;

use super::time::{secs_until, Timestamp};
use crate::protocol::{ProtocolVersion, Publish, PublishProperties, QoS};

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
}

pub type SharedMessage = Arc<Message>;

/// One subscriber's copy of a message: how it must be sent to that subscriber.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: SharedMessage,
    /// min(published QoS, granted QoS).
    pub qos: QoS,
    /// The RETAIN flag this subscriber sees.
    pub retain: bool,
    pub subscription_ids: Vec<NonZeroU32>,
}

impl Message {
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
        publish.properties.topic_alias = None;
        publish.properties.subscription_identifiers.clear();
        publish.properties.message_expiry_interval = None;
        publish.dup = false;
        publish.packet_id = 0;
        Message {
            template: publish,
            expires_at,
            publisher,
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
            properties.subscription_identifiers = self.subscription_ids.clone();
            properties.message_expiry_interval =
                message.expires_at.map(|deadline| secs_until(now, deadline));
            properties
        } else {
            PublishProperties::default()
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
