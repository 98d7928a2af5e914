//! A shard's persistent state in two steps: [`Broker::capture_state`] takes it at an instant,
//! cheaply, and [`StateCapture::into_state`] turns it into the stored form later, on any thread.
//!
//! Why two steps: a snapshot must hold the state exactly as it was when the journal was cut, but
//! converting a million subscriptions into stored values (a `String` each, sorted) and encoding
//! them took a shard hundreds of milliseconds in which it delivered nothing. The capture only
//! clones reference-counted values (client ids are `ByteString`s, each session's subscriptions
//! are one shared map that the shard copies before changing it while a capture holds it,
//! messages are shared), so its cost grows with sessions and queued messages, not with
//! subscriptions. It owns what it holds: nothing the shard does afterwards changes it, so the
//! conversion and the encoding can run on the store's snapshot thread (see
//! `StreamWriter::snapshot_with`) while the shard goes on serving.

use crate::protocol::topic::is_broker_topic;
use std::sync::Arc;

use ahash::AHashMap;
use bytestring::ByteString;

use super::convert::{
    stored_awaiting, stored_message_at, stored_subscription, stored_subscription_ids, unix_ms_at,
};
use super::records::{
    ShardState, StoredDelivery, StoredInflight, StoredMessage, StoredSession, StoredWill,
};
use crate::broker::core::Broker;
use crate::broker::inflight::Awaiting;
use crate::broker::message::{Delivery, Message, SharedMessage};
use crate::broker::session::Subscription;
use crate::broker::time::Timestamp;

/// A shard's persistent state as it was at [`Broker::capture_state`]. `Send`: made on the
/// shard, converted wherever suits.
#[derive(Debug)]
pub struct StateCapture {
    /// Unix milliseconds at `Timestamp::ZERO`, as the shard knew it at the capture.
    wall_offset_ms: i64,
    sessions: Vec<SessionCapture>,
    /// The retained set, unsorted; `None` where the shard does not snapshot it.
    retained: Option<Vec<SharedMessage>>,
}

#[derive(Debug)]
struct SessionCapture {
    client_id: ByteString,
    version: u8,
    expiry_interval: u32,
    /// The deadline of a detached session; `None` while connected or when it never expires.
    expires_at: Option<Timestamp>,
    subscriptions: Arc<AHashMap<ByteString, Subscription>>,
    inflight: Vec<(u16, Awaiting, Delivery)>,
    queued: Vec<Delivery>,
    awaiting_pubrel: Vec<u16>,
    delayed_will: Option<(SharedMessage, Timestamp)>,
    username: Option<Option<ByteString>>,
}

impl StateCapture {
    /// `broker`'s persistent state now (`Broker::capture_state`).
    pub(in crate::broker) fn take(broker: &Broker) -> StateCapture {
        // Sized up front: grown by doubling, a vector of a hundred thousand captures would be
        // copied and its memory faulted in again on the shard's time.
        let mut sessions = Vec::with_capacity(broker.sessions.len());
        sessions.extend(
            broker
                .sessions
                .values()
                .filter(|session| session.journaled)
                .map(|session| SessionCapture {
                    client_id: session.client_id.clone(),
                    version: session.version.level(),
                    expiry_interval: session.expiry_interval,
                    expires_at: session.connection.map_or(session.expires_at, |_| None),
                    subscriptions: session.subscriptions.clone(),
                    inflight: session
                        .outbound
                        .inflight()
                        .map(|entry| (entry.packet_id, entry.state, entry.delivery.clone()))
                        .collect(),
                    queued: session.outbound.queued().cloned().collect(),
                    awaiting_pubrel: session.awaiting_pubrel.keys().copied().collect(),
                    delayed_will: session
                        .delayed_will
                        .as_ref()
                        .map(|will| (will.message.clone(), will.publish_at)),
                    username: session.access.username().cloned(),
                }),
        );
        let retained =
            (broker.shard == 0 && broker.persist.enabled).then(|| broker.retained.unordered());
        StateCapture {
            wall_offset_ms: broker.persist.wall_offset_ms,
            sessions,
            retained,
        }
    }

    /// The stored form: sessions ordered by client id, their subscriptions by filter, the
    /// retained set by topic, each message converted once however many deliveries share it.
    pub fn into_state(self) -> ShardState {
        let offset = self.wall_offset_ms;
        let mut messages: AHashMap<*const Message, Arc<StoredMessage>> = AHashMap::new();
        // Keyed by address: every message stays alive in `self` until the conversion is done.
        let mut stored = |message: &SharedMessage| {
            messages
                .entry(Arc::as_ptr(message))
                .or_insert_with(|| Arc::new(stored_message_at(message, offset)))
                .clone()
        };
        let mut captured = self.sessions;
        captured.sort_unstable_by(|a, b| a.client_id.cmp(&b.client_id));
        let sessions = captured
            .iter()
            .map(|session| {
                let mut subscriptions: Vec<_> = session
                    .subscriptions
                    .iter()
                    .map(|(filter, subscription)| stored_subscription(filter, subscription))
                    .collect();
                subscriptions.sort_unstable_by(|a, b| a.filter.cmp(&b.filter));
                let mut delivery = |delivery: &Delivery| StoredDelivery {
                    id: delivery.id,
                    message: stored(&delivery.message),
                    qos: delivery.qos as u8,
                    retain: delivery.retain,
                    subscription_ids: stored_subscription_ids(&delivery.subscription_ids),
                };
                let inflight = session
                    .inflight
                    .iter()
                    .map(|(packet_id, state, entry)| StoredInflight {
                        packet_id: *packet_id,
                        state: stored_awaiting(*state),
                        delivery: delivery(entry),
                    })
                    .collect();
                let queued = session.queued.iter().map(&mut delivery).collect();
                let mut awaiting_pubrel = session.awaiting_pubrel.clone();
                awaiting_pubrel.sort_unstable();
                let delayed_will =
                    session
                        .delayed_will
                        .as_ref()
                        .map(|(message, publish_at)| StoredWill {
                            message: stored(message),
                            publish_at_ms: unix_ms_at(*publish_at, offset),
                        });
                StoredSession {
                    client_id: session.client_id.to_string(),
                    version: session.version,
                    expiry_interval: session.expiry_interval,
                    expires_at_ms: session.expires_at.map(|at| unix_ms_at(at, offset)),
                    subscriptions,
                    inflight,
                    queued,
                    awaiting_pubrel,
                    delayed_will,
                    username: session
                        .username
                        .as_ref()
                        .map(|name| name.as_ref().map(ToString::to_string)),
                }
            })
            .collect();
        let retained = self.retained.map(|mut retained| {
            // The broker's `$SYS` figures are published anew after a restart.
            retained.retain(|message| !is_broker_topic(&message.template.topic));
            retained.sort_unstable_by(|a, b| a.template.topic.cmp(&b.template.topic));
            retained.iter().map(&mut stored).collect()
        });
        ShardState { sessions, retained }
    }
}

#[cfg(test)]
mod tests {
    use crate::broker::tests::{connect, Sim};
    use crate::broker::Config;
    use crate::protocol::{Packet, ProtocolVersion, QoS, Unsubscribe};

    #[test]
    fn a_capture_keeps_the_state_it_was_taken_from() {
        let config = Config {
            persistence: true,
            ..Config::default()
        };
        let mut sim = Sim::with_config(1, config);
        let (conn, _) = sim.connect(connect(ProtocolVersion::V3_1_1, "c", false));
        sim.subscribe(conn, "a/+", QoS::AtLeastOnce);
        sim.subscribe(conn, "b", QoS::ExactlyOnce);
        sim.publish(conn, "kept", "r", QoS::AtLeastOnce, true);
        let then = sim.shards[0].snapshot_state();
        let capture = sim.shards[0].capture_state();

        // The shard goes on changing what the capture shares with it.
        sim.subscribe(conn, "c", QoS::AtMostOnce);
        sim.send(
            conn,
            Packet::Unsubscribe(Unsubscribe {
                packet_id: 7,
                filters: vec!["a/+".into()],
                ..Unsubscribe::default()
            }),
        );
        sim.recv_all(conn);
        sim.publish(conn, "kept", "", QoS::AtLeastOnce, true);
        let now = sim.shards[0].snapshot_state();
        assert_ne!(now, then);

        let converted = std::thread::spawn(move || capture.into_state())
            .join()
            .expect("conversion on another thread");
        assert_eq!(converted, then);
        assert_eq!(converted.sessions[0].subscriptions.len(), 2);
        assert_eq!(converted.retained.as_ref().map(Vec::len), Some(1));
    }
}
