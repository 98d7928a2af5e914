//! Routing a message to its subscribers: which shards get it, which local sessions match, at
//! what QoS each gets it, and how it enters a session's in-flight window, queue or send buffer.

use std::sync::Arc;

use ahash::AHashMap;
use bytestring::ByteString;

use tracing::warn;

use crate::broker::ack_holds::{Hold, PushBack};
use crate::broker::acks::AckGuard;
use crate::broker::boundary::{ConnId, ShardId, ShardMessage};
use crate::broker::core::Broker;
use crate::broker::inflight::Awaiting;
use crate::broker::message::{Delivery, SharedMessage};
use crate::broker::persist::{stored_subscription_ids, PersistRecord, QueuedFor};
use crate::broker::routing::Route;
use crate::broker::session::{Session, SessionId, Subscription};
use crate::broker::time::Timestamp;
use crate::broker::timers::Timer;
use crate::protocol::QoS;

impl Broker {
    /// Publishes a message that entered the broker on this shard (a client's PUBLISH or a will).
    /// The token of the publisher's acknowledgement, `ack` (see `Broker::wait_for_deliveries`),
    /// goes with the copies sent to shards that need it (`Broker::token_for`) and the guard
    /// counts them, so the acknowledgement waits until they have taken the message in.
    pub(in crate::broker) fn route(
        &mut self,
        message: SharedMessage,
        now: Timestamp,
        ack: Option<&mut AckGuard>,
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
        let token = ack.as_ref().and_then(|ack| ack.token());
        let push_back = token.map_or(PushBack::Nobody, |token| {
            PushBack::Hold(Hold {
                origin: self.shard,
                token,
            })
        });
        if self.shard_count == 1 {
            return self.deliver_local(&message, true, None, push_back, now);
        }
        let routes = self
            .interest
            .route(&message.template.topic, self.shard_count);
        let mut sent = 0;
        for (shard, route) in routes.into_iter().enumerate() {
            if shard == self.shard {
                self.deliver_local(&message, route.deliver, Some(&route.groups), push_back, now);
            } else if route.deliver || !route.groups.is_empty() || retain {
                let token = self.token_for(shard, token, now);
                let batch_item = ShardMessage::Publish {
                    message: message.clone(),
                    deliver: route.deliver,
                    groups: route.groups,
                    store_retained: retain,
                    ack: token,
                };
                self.send_to_shard(shard, batch_item);
                sent += usize::from(token.is_some());
            }
        }
        if let Some(ack) = ack {
            ack.add_replies(sent);
        }
    }

    /// A message another shard routed here (`ShardMessage::Publish`): stored if retained, then
    /// delivered as `route` says. A `token` makes its origin wait for this shard's reply, sent
    /// once the deliveries hold nothing back and what they journaled is durable.
    pub(in crate::broker) fn deliver_from_shard(
        &mut self,
        from: ShardId,
        message: &SharedMessage,
        route: Route,
        store_retained: bool,
        token: Option<u64>,
        now: Timestamp,
    ) {
        let ack = self.start_ack();
        if store_retained {
            self.store_retained(message);
        }
        let push_back = match token {
            Some(token) => PushBack::Hold(Hold {
                origin: from,
                token,
            }),
            None if message.template.qos != QoS::AtMostOnce => PushBack::Pace(from),
            None => PushBack::Nobody,
        };
        self.deliver_local(message, route.deliver, Some(&route.groups), push_back, now);
        if let Some(token) = token {
            self.reply_when_accepted(from, token, ack);
        }
    }

    /// Delivers to this shard's sessions: ordinary subscribers when `deliver`, and one member of
    /// each shared subscription in `groups` (`None`: every shared subscription, when this is the
    /// only shard). `push_back` says how a full queue may slow the publisher down.
    pub(in crate::broker) fn deliver_local(
        &mut self,
        message: &SharedMessage,
        deliver: bool,
        groups: Option<&[ByteString]>,
        push_back: PushBack,
        now: Timestamp,
    ) {
        let matches = self.subscriptions.matches(&message.template.topic);
        if matches.is_empty() {
            return self.pass_on_groups(message, groups.unwrap_or_default(), now);
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
        // Groups sent here whose last member on this shard left while the message was on
        // its way: it goes to another member elsewhere, not nowhere.
        let homeless: Vec<ByteString> = groups
            .unwrap_or_default()
            .iter()
            .filter(|share| !shared.contains_key(share))
            .cloned()
            .collect();
        for (share, mut members) in shared {
            members.sort_unstable_by_key(|(session, _)| *session);
            let (session, subscription) = self.pick_member(share, &members);
            grants.add(session, subscription);
        }
        self.deliver_all(message, grants.deliveries, push_back, now);
        self.pass_on_groups(message, &homeless, now);
    }

    /// Hands each delivery of one message to its session: decides where each goes, journals
    /// the ones that stay for persistent sessions as one record, then sends or queues them.
    pub(in crate::broker) fn deliver_all(
        &mut self,
        message: &SharedMessage,
        mut deliveries: Vec<(SessionId, Delivery)>,
        push_back: PushBack,
        now: Timestamp,
    ) {
        if self.access.is_enabled() {
            self.keep_readable(message, &mut deliveries, now);
        }
        let mut admitted: Vec<(SessionId, Delivery, Admission)> =
            Vec::with_capacity(deliveries.len());
        // Whether another subscriber of this message keeps up: then one that would slow the
        // publisher down is slow on its own account, and gets only what its queue holds.
        let mut peer_keeps_up = false;
        for (session_id, delivery) in deliveries {
            let Some(session) = self.sessions.get(&session_id) else {
                continue;
            };
            let admission = self.admission(session, &delivery, push_back);
            peer_keeps_up |= match admission {
                Admission::Send => delivery.qos != QoS::AtMostOnce,
                Admission::Queue => session.outbound.keeps_up(
                    self.config.max_queued_messages,
                    self.config.max_queued_bytes,
                ),
                Admission::Keep
                | Admission::QueueHeld(_)
                | Admission::QueueBeyond(_)
                | Admission::Drop => false,
            };
            admitted.push((session_id, delivery, admission));
        }
        if peer_keeps_up {
            for (session_id, delivery, admission) in &mut admitted {
                if let Admission::QueueHeld(_) | Admission::QueueBeyond(_) = admission {
                    *admission = match self.sessions.get(session_id) {
                        Some(session) if self.queue_has_room(session, delivery) => Admission::Queue,
                        _ => Admission::Drop,
                    };
                }
            }
        }
        self.keep_queued_apart(message, &mut admitted);
        self.journal_queued(message, &mut admitted);
        for (session_id, delivery, admission) in admitted {
            self.deliver_to_session(session_id, delivery, admission, now);
        }
    }

    /// Drops the deliveries to sessions the ACL does not let read the message's topic: their
    /// filter was allowed, but not everything it matches.
    fn keep_readable(
        &mut self,
        message: &SharedMessage,
        deliveries: &mut Vec<(SessionId, Delivery)>,
        now: Timestamp,
    ) {
        let topic = &message.template.topic;
        let before = deliveries.len();
        deliveries.retain(|(session_id, _)| {
            self.sessions.get_mut(session_id).is_some_and(|session| {
                self.access
                    .may_receive(&mut session.access, &session.client_id, topic)
            })
        });
        let denied = before - deliveries.len();
        if denied == 0 {
            return;
        }
        self.stats.acl_denied += denied as u64;
        if let Some(unreported) = self.acl_denied_log.note(now) {
            warn!(
                %topic,
                denied = unreported,
                "the ACL denies deliveries their subscriptions matched (count since the last such line)"
            );
        }
    }

    /// Gives the deliveries that will wait in the queue of an offline session one copy of the
    /// message that shares no memory with the receive buffer it came in: a queued 64-byte
    /// payload would otherwise keep that whole buffer alive for as long as it waits, which may
    /// be hours. (A connected subscriber's queue is a window long at most while it holds its
    /// publishers back, and moves.) Retained messages are apart already.
    fn keep_queued_apart(
        &self,
        message: &SharedMessage,
        admitted: &mut [(SessionId, Delivery, Admission)],
    ) {
        let waits = |admission: &Admission| matches!(admission, Admission::Keep);
        if message.template.retain || !admitted.iter().any(|(_, _, admission)| waits(admission)) {
            return;
        }
        let apart = Arc::new(message.detached());
        for (_, delivery, admission) in admitted.iter_mut() {
            if waits(admission) {
                delivery.message = apart.clone();
            }
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
        let start = cursor.next;
        cursor.next = cursor.next.wrapping_add(1);
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

    /// Where a delivery to `session` goes.
    ///
    /// While the subscriber is connected and acknowledging, its queue needs no more than one
    /// in-flight window of messages to keep that window full; a QoS 1/2 message that finds that
    /// much queued (or the queue at its limits) is queued all the same, pushing back on its
    /// publisher: the broker is behind, not the subscriber, and the publisher must slow down
    /// rather than lose it. Pacing that early keeps the queues of a broker under overload short,
    /// and so its latency and memory low. A subscriber that is offline or has stopped
    /// acknowledging (`stalled`) is slow on its own account: it gets what its queue's limits
    /// hold, and beyond them the message is dropped for it, as the spec allows.
    fn admission(&self, session: &Session, delivery: &Delivery, push_back: PushBack) -> Admission {
        if delivery.qos == QoS::AtMostOnce || self.sends_now(session) {
            return Admission::Send;
        }
        let has_room = self.queue_has_room(session, delivery);
        let subscriber_reads = session.is_connected()
            && !session.outbound.stalled
            && !self.config.stall_timeout.is_zero();
        let pace = subscriber_reads
            && (!has_room || session.outbound.queued_len() >= self.window(session));
        match push_back {
            PushBack::Hold(hold) if pace => Admission::QueueHeld(hold),
            PushBack::Pace(origin) if pace => Admission::QueueBeyond(origin),
            _ if has_room && session.is_connected() => Admission::Queue,
            _ if has_room => Admission::Keep,
            _ => Admission::Drop,
        }
    }

    fn queue_has_room(&self, session: &Session, delivery: &Delivery) -> bool {
        session.outbound.has_room(
            delivery.message.weight(),
            self.config.max_queued_messages,
            self.config.max_queued_bytes,
        )
    }

    /// Carries out the admission of one delivery: QoS 0 straight to the send buffer (or dropped
    /// when the client is offline or too far behind), QoS 1/2 into the in-flight window or the
    /// queue, or dropped for a full queue.
    fn deliver_to_session(
        &mut self,
        session_id: SessionId,
        delivery: Delivery,
        admission: Admission,
        now: Timestamp,
    ) {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        match admission {
            Admission::Send if delivery.qos == QoS::AtMostOnce => {
                let conn = session.connection;
                let backlog = conn.map(|conn| self.pending_output(conn));
                let limit = if self.connections.unsent() > self.config.buffer_budget {
                    TIGHT_OUTBOUND_BUFFER
                } else {
                    self.config.max_outbound_buffer
                };
                match (conn, backlog) {
                    (Some(conn), Some(backlog)) if backlog <= limit => {
                        self.write_publish(conn, &delivery, 0, false, now);
                    }
                    (Some(_), _) => {
                        self.stats.qos0_dropped += 1;
                        if let Some(unreported) = self.qos0_drop_log.note(now) {
                            let client_id = self.sessions.get(&session_id).map(|s| &s.client_id);
                            warn!(
                                client_id = ?client_id,
                                dropped = unreported,
                                "send buffer full: dropping QoS 0 messages for a subscriber \
                                 that reads too slowly (count since the last such line, all \
                                 sessions)"
                            );
                        }
                    }
                    // QoS 0 is not kept for offline sessions (MQTT-3.1.2-5 lets a broker keep
                    // it; Mosquitto does not either).
                    (None, _) => self.stats.qos0_dropped += 1,
                }
            }
            Admission::Send => self.start_inflight(session_id, delivery, now),
            Admission::Queue | Admission::Keep => session.outbound.enqueue(delivery, None),
            Admission::QueueHeld(hold) => {
                session.outbound.enqueue(delivery, Some(hold));
                if session.outbound.stall_check.is_none() {
                    session.outbound.stall_check = Some(session.outbound.progress());
                    let at = now + self.config.stall_timeout;
                    self.timers.schedule(at, Timer::StallCheck(session_id));
                }
                self.take_hold(hold);
                self.request_pacing(hold.origin, now);
            }
            Admission::QueueBeyond(origin) => {
                session.outbound.enqueue(delivery, None);
                self.request_pacing(origin, now);
            }
            Admission::Drop => {
                session.outbound.dropped.queue_full += 1;
                self.stats.queue_full_dropped += 1;
                let connected = session.is_connected();
                if let Some(unreported) = self.queue_drop_log.note(now) {
                    warn!(
                        client_id = %session.client_id,
                        connected,
                        dropped = unreported,
                        "session queue full: dropping QoS 1/2 messages for a subscriber that is \
                         offline or not reading (count since the last such line, all sessions)"
                    );
                }
                if delivery.id != 0 {
                    let id = delivery.id;
                    self.journal_session(session_id, |client_id| PersistRecord::Dropped {
                        client_id,
                        id,
                    });
                }
            }
        }
    }

    /// A delivery that went to `deliver_all` alone (a retained message on subscribe).
    pub(in crate::broker) fn deliver_one(
        &mut self,
        session_id: SessionId,
        delivery: Delivery,
        now: Timestamp,
    ) {
        let message = delivery.message.clone();
        self.deliver_all(
            &message,
            vec![(session_id, delivery)],
            PushBack::Nobody,
            now,
        );
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
            let Some((delivery, released)) = session.outbound.pop_queued() else {
                break;
            };
            self.release_holds(released);
            self.start_inflight(session_id, delivery, now);
        }
        self.resume_retained(session_id, now);
    }

    /// The stall check of a session that holds publishers back: if it acknowledged nothing
    /// since the check was armed, it has stopped reading, and must not hold them any longer.
    pub(in crate::broker) fn check_stall(&mut self, session_id: SessionId, now: Timestamp) {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        let Some(armed_at) = session.outbound.stall_check.take() else {
            return;
        };
        if !session.outbound.has_holds() {
            return;
        }
        if session.outbound.progress() != armed_at {
            session.outbound.stall_check = Some(session.outbound.progress());
            let at = now + self.config.stall_timeout;
            return self.timers.schedule(at, Timer::StallCheck(session_id));
        }
        session.outbound.stalled = true;
        warn!(
            client_id = %session.client_id,
            timeout = ?self.config.stall_timeout,
            "subscriber acknowledged nothing with its queue full: it no longer holds publishers \
             back, and messages beyond its queue limit are dropped until it reads again"
        );
        let holds = session.outbound.take_holds();
        self.release_holds(holds);
    }

    /// A QoS 1/2 delivery to the session would go straight into its in-flight window: it is
    /// connected, the window has room and nothing is queued ahead.
    pub(in crate::broker) fn sends_now(&self, session: &Session) -> bool {
        session.outbound.queued_len() == 0 && self.window_has_room(session)
    }

    /// The session is connected and its in-flight window (ours and the client's Receive
    /// Maximum, whichever is smaller) has room.
    fn window_has_room(&self, session: &Session) -> bool {
        session.outbound.inflight_len() < self.window(session)
    }

    /// The session's in-flight window: ours or the client's Receive Maximum, whichever is
    /// smaller; 0 while it is offline.
    fn window(&self, session: &Session) -> usize {
        session
            .connection
            .and_then(|conn| self.connections.get(&conn))
            .map_or(0, |connection| {
                usize::from(connection.receive_maximum.min(self.config.max_inflight))
            })
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
    /// journals them as one record that stores the message once. A delivery a full queue drops
    /// is not worth a record (nor the `Dropped` record after it): under overload that would
    /// double the journal's work for nothing.
    fn journal_queued(
        &mut self,
        message: &SharedMessage,
        deliveries: &mut [(SessionId, Delivery, Admission)],
    ) {
        if !self.persist.enabled {
            return;
        }
        let mut to = Vec::new();
        for (session_id, delivery, admission) in deliveries.iter_mut() {
            if delivery.qos == QoS::AtMostOnce || matches!(admission, Admission::Drop) {
                continue;
            }
            let Some(session) = self.sessions.journaled_mut(session_id) else {
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
        let stats = &mut self.stats;
        let written = self.connections.write(conn, |connection| {
            let Some(publish) = delivery.to_publish(connection.version, packet_id, dup, now) else {
                stats.expired_dropped += 1;
                return false;
            };
            let fits = publish
                .encoded_len(connection.version)
                .is_ok_and(|len| len <= connection.max_packet_size);
            if !fits
                || connection
                    .send_buffer
                    .push_publish(&publish, connection.version)
                    .is_err()
            {
                stats.too_large_dropped += 1;
                return false;
            }
            if !dup {
                let received = delivery.message.received;
                stats
                    .delivery_latency
                    .sample(stats.publishes_sent, received, now);
            }
            stats.publishes_sent += 1;
            stats.sent_by_qos[publish.qos as usize] += 1;
            true
        });
        written.unwrap_or(false)
    }
}

/// A connection's send buffer limit for QoS 0 while all send buffers together are over
/// `Config::buffer_budget`: enough for a client that keeps up to go on at full speed.
const TIGHT_OUTBOUND_BUFFER: usize = 64 * 1024;

/// What becomes of one delivery; see `Broker::admission`.
#[derive(Debug, Clone, Copy)]
enum Admission {
    /// QoS 0 to the send buffer, or QoS 1/2 into the in-flight window.
    Send,
    /// Behind the window of a connected session, within the queue's limits.
    Queue,
    /// In the queue of an offline session, within its limits, until it comes back.
    Keep,
    /// Beyond the queue's limits, holding its publisher's acknowledgement.
    QueueHeld(Hold),
    /// Beyond the queue's limits, its publisher acknowledged already by the shard it came
    /// from, which is asked to pace.
    QueueBeyond(ShardId),
    /// Dropped for a full queue.
    Drop,
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
