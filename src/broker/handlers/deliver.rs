//! Routing a message to its subscribers: which shards get it, which local sessions match, at
//! what QoS each gets it, and how it enters a session's in-flight window, queue or send buffer.

use std::sync::Arc;

use ahash::AHashMap;
use bytestring::ByteString;

use crate::broker::core::Broker;
use crate::broker::inflight::Awaiting;
use crate::broker::io::{ConnId, ShardMessage};
use crate::broker::message::{Delivery, SharedMessage};
use crate::broker::persist::{stored_subscription_ids, PersistRecord, QueuedFor};
use crate::broker::session::{Session, SessionId, Subscription};
use crate::broker::time::Timestamp;
use crate::protocol::QoS;

impl Broker {
    /// Publishes a message that entered the broker on this shard (a client's PUBLISH or a will).
    /// `ack` (see `Broker::ack_token`) goes with every copy sent to another shard, so the
    /// publisher's acknowledgement can wait for what those shards journal.
    pub(in crate::broker) fn route(
        &mut self,
        message: SharedMessage,
        now: Timestamp,
        ack: Option<u64>,
    ) {
        let retain = message.template.retain && self.config.retain_available;
        // A retained message outlives the receive buffer it was read into: detach it once here,
        // and every shard stores and delivers that one copy.
        let message = if retain {
            let detached = Arc::new(message.detached());
            self.store_retained(&detached);
            detached
        } else {
            message
        };
        if self.shard_count == 1 {
            return self.deliver_local(&message, true, None, now);
        }
        let routes = self
            .interest
            .route(&message.template.topic, self.shard_count);
        let mut sent = 0;
        for (shard, route) in routes.into_iter().enumerate() {
            if shard == self.shard {
                self.deliver_local(&message, route.deliver, Some(&route.groups), now);
            } else if route.deliver || !route.groups.is_empty() || retain {
                let batch_item = ShardMessage::Publish {
                    message: message.clone(),
                    deliver: route.deliver,
                    groups: route.groups,
                    store_retained: retain,
                    ack,
                };
                self.send_to_shard(shard, batch_item);
                sent += 1;
            }
        }
        self.await_replies(ack, sent);
    }

    /// Delivers to this shard's sessions: ordinary subscribers when `deliver`, and one member of
    /// each shared subscription in `groups` (`None`: every shared subscription, when this is the
    /// only shard).
    pub(in crate::broker) fn deliver_local(
        &mut self,
        message: &SharedMessage,
        deliver: bool,
        groups: Option<&[ByteString]>,
        now: Timestamp,
    ) {
        let matches = self.subscriptions.matches(&message.template.topic);
        if matches.is_empty() {
            return;
        }
        let mut grants = Grants::new(message);
        let mut shared: AHashMap<&ByteString, Vec<(SessionId, &Subscription)>> = AHashMap::new();
        for (subscriber, subscription) in matches.iter() {
            match &subscriber.share {
                None if deliver
                    && !self.is_own_message(subscriber.session, subscription, message) =>
                {
                    grants.add(subscriber.session, subscription);
                }
                Some(share) if groups.is_none_or(|groups| groups.contains(share)) => {
                    shared
                        .entry(share)
                        .or_default()
                        .push((subscriber.session, subscription));
                }
                None | Some(_) => {}
            }
        }
        for (share, mut members) in shared {
            members.sort_unstable_by_key(|(session, _)| *session);
            let (session, subscription) = self.pick_member(share, &members);
            grants.add(session, subscription);
        }
        let mut deliveries = grants.deliveries;
        self.journal_queued(message, &mut deliveries);
        for (session, delivery) in deliveries {
            self.deliver_to_session(session, delivery, now);
        }
    }

    /// v5 No Local: a subscriber with the option set does not get its own messages.
    fn is_own_message(
        &self,
        session: SessionId,
        subscription: &Subscription,
        message: &SharedMessage,
    ) -> bool {
        subscription.options.no_local
            && self
                .sessions
                .get(&session)
                .is_some_and(|session| message.publisher.as_ref() == Some(&session.client_id))
    }

    /// Round robin over a shared subscription's members, preferring connected ones so a message
    /// is not parked with an offline member while others could take it.
    fn pick_member<'a>(
        &mut self,
        share: &ByteString,
        members: &[(SessionId, &'a Subscription)],
    ) -> (SessionId, &'a Subscription) {
        let cursor = self.share_cursors.entry(share.clone()).or_default();
        let start = *cursor;
        *cursor = cursor.wrapping_add(1);
        let connected = |session: &SessionId| {
            self.sessions
                .get(session)
                .is_some_and(|session| session.is_connected())
        };
        (0..members.len())
            .map(|offset| members[(start + offset) % members.len()])
            .find(|(session, _)| connected(session))
            .unwrap_or(members[start % members.len()])
    }

    /// Hands one delivery to a session: QoS 0 straight to the send buffer (or dropped when the
    /// client is offline or too far behind), QoS 1/2 into the in-flight window or the queue.
    pub(in crate::broker) fn deliver_to_session(
        &mut self,
        session_id: SessionId,
        delivery: Delivery,
        now: Timestamp,
    ) {
        let max_buffer = self.config.max_outbound_buffer;
        let (max_queued, max_queued_bytes) = (
            self.config.max_queued_messages,
            self.config.max_queued_bytes,
        );
        let Some(session) = self.sessions.get(&session_id) else {
            return;
        };
        let conn = session.connection;
        let sends_now = delivery.qos != QoS::AtMostOnce && self.sends_now(session);
        if delivery.qos == QoS::AtMostOnce {
            let backlog = conn.map(|conn| self.pending_output(conn));
            match (conn, backlog) {
                (Some(conn), Some(backlog)) if backlog <= max_buffer => {
                    self.write_publish(conn, &delivery, 0, false, now);
                }
                _ => self.stats.qos0_dropped += 1,
            }
            return;
        }
        if sends_now {
            self.start_inflight(session_id, delivery, now);
            return;
        }
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        let id = delivery.id;
        if !session
            .outbound
            .enqueue(delivery, max_queued, max_queued_bytes)
        {
            self.stats.queue_full_dropped += 1;
            if id != 0 {
                self.journal_session(session_id, |client_id| PersistRecord::Dropped {
                    client_id,
                    id,
                });
            }
        }
    }

    /// Moves queued messages into the in-flight window while it has room, then owed retained
    /// messages.
    pub(in crate::broker) fn fill_window(&mut self, session_id: SessionId, now: Timestamp) {
        loop {
            let Some(session) = self.sessions.get(&session_id) else {
                return;
            };
            if !self.window_has_room(session) {
                return;
            }
            let Some(session) = self.sessions.get_mut(&session_id) else {
                return;
            };
            let Some(delivery) = session.outbound.pop_queued() else {
                break;
            };
            self.start_inflight(session_id, delivery, now);
        }
        self.resume_retained(session_id, now);
    }

    /// A QoS 1/2 delivery to the session would go straight into its in-flight window: it is
    /// connected, the window has room and nothing is queued ahead.
    pub(in crate::broker) fn sends_now(&self, session: &Session) -> bool {
        session.outbound.queued_len() == 0 && self.window_has_room(session)
    }

    /// A QoS 1/2 delivery to the session would be sent or queued, not dropped for a full queue.
    fn accepts(&self, session: &Session, delivery: &Delivery) -> bool {
        self.sends_now(session)
            || session.outbound.has_room(
                delivery.message.weight(),
                self.config.max_queued_messages,
                self.config.max_queued_bytes,
            )
    }

    /// The session is connected and its in-flight window (ours and the client's Receive
    /// Maximum, whichever is smaller) has room.
    fn window_has_room(&self, session: &Session) -> bool {
        let window = session
            .connection
            .and_then(|conn| self.connections.get(&conn))
            .map_or(0, |connection| {
                connection.receive_maximum.min(self.config.max_inflight)
            });
        session.outbound.inflight_len() < usize::from(window)
    }

    /// Gives a QoS 1/2 delivery a packet identifier and sends it, unless it has expired or is
    /// too large for the client, in which case it is dropped and counted.
    fn start_inflight(&mut self, session_id: SessionId, delivery: Delivery, now: Timestamp) {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        let Some(conn) = session.connection else {
            return;
        };
        let packet_id = session.outbound.start(delivery.clone());
        if delivery.id != 0 {
            let id = delivery.id;
            self.journal_session(session_id, |client_id| PersistRecord::Started {
                client_id,
                id,
                packet_id,
            });
        }
        if !self.write_publish(conn, &delivery, packet_id, false, now) {
            self.drop_inflight(session_id, packet_id, delivery.qos);
        }
    }

    /// Names the QoS 1/2 deliveries to journaled sessions that will be sent or queued, and
    /// journals them as one record that stores the message once.
    pub(in crate::broker) fn journal_queued(
        &mut self,
        message: &SharedMessage,
        deliveries: &mut [(SessionId, Delivery)],
    ) {
        if !self.persist.enabled {
            return;
        }
        let mut to = Vec::new();
        for (session_id, delivery) in deliveries.iter_mut() {
            // A delivery that a full queue will drop is not worth a record (nor the `Dropped`
            // record after it): under overload that would double the journal's work for
            // nothing.
            if delivery.qos == QoS::AtMostOnce
                || !self
                    .sessions
                    .get(session_id)
                    .is_some_and(|session| session.journaled && self.accepts(session, delivery))
            {
                continue;
            }
            let Some(session) = self.sessions.get_mut(session_id) else {
                continue;
            };
            delivery.id = session.next_delivery;
            session.next_delivery += 1;
            to.push(QueuedFor {
                client_id: session.client_id.to_string(),
                id: delivery.id,
                qos: delivery.qos as u8,
                retain: delivery.retain,
                subscription_ids: stored_subscription_ids(&delivery.subscription_ids),
            });
        }
        if !to.is_empty() {
            let message = Arc::new(self.stored_message(message));
            self.journal(PersistRecord::Queued { message, to });
        }
    }

    /// Takes a message that can no longer be sent (expired, too large) out of the window.
    pub(in crate::broker) fn drop_inflight(
        &mut self,
        session_id: SessionId,
        packet_id: u16,
        qos: QoS,
    ) {
        if let Some(session) = self.sessions.get_mut(&session_id) {
            let state = if qos == QoS::ExactlyOnce {
                Awaiting::PubRec
            } else {
                Awaiting::PubAck
            };
            if session.outbound.complete(packet_id, state).is_ok() {
                self.journal_session(session_id, |client_id| PersistRecord::Finished {
                    client_id,
                    packet_id,
                });
            }
        }
    }

    /// Encodes a delivery into the connection's send buffer. False when it was not sent because
    /// it expired or exceeds the client's Maximum Packet Size (MQTT-3.1.2-25).
    pub(in crate::broker) fn write_publish(
        &mut self,
        conn: ConnId,
        delivery: &Delivery,
        packet_id: u16,
        dup: bool,
        now: Timestamp,
    ) -> bool {
        let Some(connection) = self.connections.get_mut(&conn) else {
            return false;
        };
        let Some(publish) = delivery.to_publish(connection.version, packet_id, dup, now) else {
            self.stats.expired_dropped += 1;
            return false;
        };
        let fits = publish
            .encoded_len(connection.version)
            .is_ok_and(|len| len <= connection.max_packet_size);
        if !fits
            || connection
                .outbound
                .push_publish(&publish, connection.version)
                .is_err()
        {
            self.stats.too_large_dropped += 1;
            return false;
        }
        self.stats.publishes_sent += 1;
        self.mark_writable(conn);
        true
    }
}

/// The deliveries of one message, one per session, in the order sessions first matched so
/// delivery order does not depend on hash seeds. Built in place: the common case (each session
/// matches once) costs one vector and no map.
struct Grants<'a> {
    message: &'a SharedMessage,
    deliveries: Vec<(SessionId, Delivery)>,
    /// Session → position, built only once there are too many deliveries to scan.
    index: Option<AHashMap<SessionId, usize>>,
}

/// Up to this many deliveries a linear scan finds a session faster than a map.
const SCAN_LIMIT: usize = 16;

impl<'a> Grants<'a> {
    fn new(message: &'a SharedMessage) -> Self {
        Grants {
            message,
            deliveries: Vec::new(),
            index: None,
        }
    }

    /// Combines one more matching subscription into a session's delivery (§3.3.4: one copy, at
    /// the highest QoS of the matching subscriptions, with all their subscription identifiers).
    fn add(&mut self, session: SessionId, subscription: &Subscription) {
        let position = self.position(session).unwrap_or_else(|| {
            self.deliveries.push((
                session,
                Delivery {
                    id: 0,
                    message: self.message.clone(),
                    qos: QoS::AtMostOnce,
                    retain: false,
                    subscription_ids: Vec::new(),
                },
            ));
            let position = self.deliveries.len() - 1;
            if let Some(index) = &mut self.index {
                index.insert(session, position);
            }
            position
        });
        let template = &self.message.template;
        let delivery = &mut self.deliveries[position].1;
        delivery.qos = delivery.qos.max(template.qos.min(subscription.options.qos));
        delivery.retain |= template.retain && subscription.options.retain_as_published;
        if let Some(id) = subscription.identifier {
            delivery.subscription_ids.push(id);
        }
    }

    fn position(&mut self, session: SessionId) -> Option<usize> {
        if self.index.is_none() && self.deliveries.len() > SCAN_LIMIT {
            let index = self
                .deliveries
                .iter()
                .enumerate()
                .map(|(position, (session, _))| (*session, position))
                .collect();
            self.index = Some(index);
        }
        match &self.index {
            Some(index) => index.get(&session).copied(),
            None => self.deliveries.iter().position(|(s, _)| *s == session),
        }
    }
}
