//! The [`Broker`] state machine of one shard: its state, its inputs and outputs, and the life
//! cycle of connections and sessions (attach, detach, wills, expiry). What happens for each
//! packet is in `handlers/`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ahash::AHashMap;
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use tracing::{debug, info, warn};

use super::ack_holds::{AckHolds, Hold, PushBack};
use super::boundary::{Arrival, ConnId, Event, HandedOverConnect, ShardId, ShardMessage};
use super::config::Config;
use super::connection::{Connection, Phase};
use super::handlers::shared::shared_orphans;
use super::limited_log::LimitedLog;
use super::message::Message;
use super::persist::{Journal, PersistRecord};
use super::retained::Retained;
use super::routing::{Interest, Subscriber};
use super::session::{DelayedWill, Session, SessionId, Subscription};
use super::time::Timestamp;
use super::timers::{Timer, Timers};
use super::topic::SubscriptionTrie;
use crate::protocol::{
    DecodeError, Disconnect, LastWill, Packet, ProtocolVersion, Publish, PublishProperties, QoS,
    ReasonCode,
};

/// Counters a runtime can export as metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub publishes_received: u64,
    pub publishes_sent: u64,
    /// QoS 0 messages dropped because the subscriber was offline or its send buffer was full.
    pub qos0_dropped: u64,
    /// QoS 1/2 messages dropped because a session queue was full.
    pub queue_full_dropped: u64,
    pub expired_dropped: u64,
    /// Messages skipped because they exceed the subscriber's Maximum Packet Size.
    pub too_large_dropped: u64,
    pub protocol_errors: u64,
    /// Client publishes not routed: to `$SYS` topics.
    pub publishes_refused: u64,
    /// Messages not retained because the retained set was full (`--max-retained-messages`,
    /// `--max-retained-bytes`); v5 QoS 1/2 publishes among them were refused with 0x97.
    pub retained_refused: u64,
    pub wills_published: u64,
    pub sessions_expired: u64,
}

/// Where the round robin over a shared subscription's members on this shard stands.
#[derive(Debug, Default)]
pub(super) struct ShareCursor {
    pub(super) next: usize,
    /// This shard's members: the cursor goes with the last.
    pub(super) members: usize,
}

/// The broker core of one shard.
pub struct Broker {
    pub(super) config: Config,
    pub(super) shard: ShardId,
    pub(super) shard_count: usize,
    // Boxed: tables keep the capacity of their busiest moment, and an empty slot then costs a
    // pointer instead of a whole connection or session.
    pub(super) connections: AHashMap<ConnId, Box<Connection>>,
    pub(super) sessions: AHashMap<SessionId, Box<Session>>,
    pub(super) client_ids: AHashMap<ByteString, SessionId>,
    next_session: u64,
    /// Exact subscriptions of this shard's sessions.
    pub(super) subscriptions: SubscriptionTrie<Subscriber, Subscription>,
    /// Which shards (this one included) want which filters; kept only with more than one shard,
    /// as with one nothing is routed between shards.
    pub(super) interest: Interest,
    pub(super) retained: Retained,
    pub(super) timers: Timers,
    events: VecDeque<Event>,
    /// Bytes in all connections' send buffers (`unsent_output`).
    pub(super) output_bytes: usize,
    /// Connections with output not yet announced through `poll_transmit`.
    writable: VecDeque<ConnId>,
    /// Per destination shard, messages not yet taken by `poll_shard_messages`.
    shard_outbox: Vec<Vec<ShardMessage>>,
    /// Connections on all shards together, for the connection limit.
    pub(super) connection_count: Arc<AtomicUsize>,
    /// Round-robin position per shared subscription with members on this shard.
    pub(super) share_cursors: AHashMap<ByteString, ShareCursor>,
    /// Serial for client ids the broker assigns.
    pub(super) assigned_ids: u64,
    pub(super) stats: Stats,
    /// Journal records not yet polled, and how far they are durable.
    pub(super) persist: Journal,
    /// Acknowledgements held back, and what each waits for.
    pub(super) acks: AckHolds,
    /// Messages dropped for full session queues and full send buffers, reported at a limited
    /// rate.
    pub(super) queue_drop_log: LimitedLog,
    pub(super) qos0_drop_log: LimitedLog,
    pub(super) refused_publish_log: LimitedLog,
    pub(super) retained_full_log: LimitedLog,
}

impl Broker {
    /// A shard's core. `connection_count` is shared by all shards of the process.
    pub fn new(
        config: Config,
        shard: ShardId,
        shard_count: usize,
        connection_count: Arc<AtomicUsize>,
        now: Timestamp,
    ) -> Broker {
        let mut timers = Timers::default();
        timers.schedule(now + config.expiry_sweep_interval, Timer::ExpirySweep);
        Broker {
            shard,
            shard_count: shard_count.max(1),
            connections: AHashMap::new(),
            sessions: AHashMap::new(),
            client_ids: AHashMap::new(),
            next_session: 0,
            subscriptions: SubscriptionTrie::new(),
            interest: Interest::new(shard),
            retained: Retained::default(),
            timers,
            events: VecDeque::new(),
            output_bytes: 0,
            writable: VecDeque::new(),
            shard_outbox: (0..shard_count.max(1)).map(|_| Vec::new()).collect(),
            connection_count,
            share_cursors: AHashMap::new(),
            assigned_ids: 0,
            stats: Stats::default(),
            persist: Journal::new(config.persistence, config.ack_after_durable),
            acks: AckHolds::default(),
            queue_drop_log: LimitedLog::default(),
            qos0_drop_log: LimitedLog::default(),
            refused_publish_log: LimitedLog::default(),
            retained_full_log: LimitedLog::default(),
            config,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn shard(&self) -> ShardId {
        self.shard
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }

    // ----- inputs -------------------------------------------------------------------------

    /// A new network connection on this shard.
    pub fn handle_accepted(&mut self, conn: ConnId, peer: Option<SocketAddr>, now: Timestamp) {
        self.connection_count.fetch_add(1, Ordering::Relaxed);
        let connection = Connection::new(self.config.max_connect_packet_size, peer, now);
        self.connections.insert(conn, Box::new(connection));
        // Until CONNECT arrives, the keepalive timer is the connect timeout.
        self.timers
            .schedule(now + self.config.connect_timeout, Timer::KeepAlive(conn));
    }

    /// A connection another shard accepted and handed over because its client lives here. The
    /// connection is already counted; its CONNECT is processed as if it had just been read.
    pub fn handle_handed_over(
        &mut self,
        conn: ConnId,
        peer: Option<SocketAddr>,
        handed_over: HandedOverConnect,
        now: Timestamp,
    ) {
        let HandedOverConnect { connect, arrived } = handed_over;
        let mut connection = Connection::new(self.config.max_connect_packet_size, peer, now);
        connection.decoder =
            crate::protocol::Decoder::client(connect.protocol, self.config.max_packet_size);
        self.connections.insert(conn, Box::new(connection));
        self.handle_connect(conn, connect, arrived, now);
    }

    /// When the connection's first bytes arrived, by a clock all shards share, before they are
    /// handed to `handle_bytes`: it orders this connection's CONNECT against other connections
    /// of the same client. Without it, the core's clock when the CONNECT is read does.
    pub fn note_arrival(&mut self, conn: ConnId, arrival: Arrival) {
        if let Some(connection) = self.connections.get_mut(&conn) {
            connection.arrival.get_or_insert(arrival);
        }
    }

    /// Bytes read from a connection. Whole packets are taken off the front of `buf`; a partial
    /// packet stays for the next read. After a hand-over the rest of `buf` belongs to the shard
    /// the connection moved to.
    ///
    /// Returns true when a PUBLISH was among the packets. A runtime that must slow clients down
    /// (a congested shard, a journal behind) pauses only connections that publish: the others
    /// send acknowledgements, which free queued messages and never add load, and pausing them
    /// would stall the very deliveries that drain the backlog.
    pub fn handle_bytes(&mut self, conn: ConnId, buf: &mut BytesMut, now: Timestamp) -> bool {
        let mut published = false;
        loop {
            let Some(connection) = self.connections.get_mut(&conn) else {
                return published;
            };
            if connection.phase == Phase::Closing {
                buf.clear();
                return published;
            }
            match connection.decoder.decode(buf) {
                Ok(None) => return published,
                Ok(Some(packet)) => {
                    connection.last_received = now;
                    published |= matches!(packet, Packet::Publish(_));
                    self.handle_packet(conn, packet, now);
                }
                Err(error) => {
                    self.decode_failed(conn, error, now);
                    buf.clear();
                    return published;
                }
            }
        }
    }

    /// The network connection is gone (peer closed, I/O error, or after an `Event::Close`).
    pub fn handle_closed(&mut self, conn: ConnId, now: Timestamp) {
        self.end_connection(conn, now);
        self.release_slot(conn);
        self.forget_connection(conn);
    }

    /// Gives the connection's place in `--max-connections` back, once.
    fn release_slot(&mut self, conn: ConnId) {
        if let Some(connection) = self.connections.get_mut(&conn) {
            if std::mem::take(&mut connection.holds_slot) {
                self.connection_count.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Removes a connection, with whatever output it had not sent; false if it was unknown.
    fn forget_connection(&mut self, conn: ConnId) -> bool {
        let Some(connection) = self.connections.remove(&conn) else {
            return false;
        };
        self.output_bytes -= connection.send_buffer.len();
        true
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::KeepAlive(conn) => self.check_keepalive(conn, now),
                Timer::SessionExpiry(session) => self.check_session_expiry(session, now),
                Timer::WillDelay(session) => self.check_delayed_will(session, now),
                Timer::StallCheck(session) => self.check_stall(session, now),
                Timer::ExpirySweep => self.sweep_expired(now),
            }
        }
    }

    /// A batch item from another shard.
    pub fn handle_shard_message(&mut self, from: ShardId, message: ShardMessage, now: Timestamp) {
        match message {
            ShardMessage::Publish {
                message,
                deliver,
                groups,
                store_retained,
                ack,
            } => {
                let mark = self.journal_mark();
                if store_retained {
                    self.store_retained(&message);
                }
                let push_back = match ack {
                    Some(token) => PushBack::Hold(Hold {
                        origin: from,
                        token,
                    }),
                    None if message.template.qos != QoS::AtMostOnce => PushBack::Pace(from),
                    None => PushBack::Nobody,
                };
                self.deliver_local(&message, deliver, Some(&groups), push_back, now);
                if let Some(token) = ack {
                    self.reply_when_accepted(from, token, mark);
                }
            }
            ShardMessage::Accepted { token } => self.handle_accepted_remotely(token),
            ShardMessage::Pace => self.handle_pace(from, now),
            ShardMessage::Interest {
                filter,
                share,
                added,
            } => self.interest.apply(from, &filter, share, added),
            ShardMessage::ShareOnline { share, online } => {
                self.interest.apply_online(from, share, online)
            }
        }
    }

    /// Graceful shutdown: v5 clients are told the server is shutting down, everyone is closed.
    /// Wills are not published: the clients did nothing wrong and the subscribers are leaving too.
    pub fn shutdown(&mut self, now: Timestamp) {
        let ids: Vec<ConnId> = self.connections.keys().copied().collect();
        for conn in ids {
            if let Some(connection) = self.connections.get_mut(&conn) {
                connection.disconnected_normally = true;
            }
            self.disconnect(conn, ReasonCode::SERVER_SHUTTING_DOWN, now);
        }
    }

    // ----- outputs ------------------------------------------------------------------------

    /// The next connection that has bytes to send; take them with [`Broker::take_output`].
    pub fn poll_transmit(&mut self) -> Option<ConnId> {
        while let Some(conn) = self.writable.pop_front() {
            if let Some(connection) = self.connections.get_mut(&conn) {
                connection.announced = false;
                if !connection.send_buffer.is_empty() {
                    return Some(conn);
                }
            }
        }
        None
    }

    /// Everything waiting to be sent on `conn`, in order, as chunks to write one after another.
    /// Output a runtime has not taken yet counts towards the connection's send buffer limit.
    ///
    /// Taking it makes room for retained messages still owed to the connection, which are
    /// queued at once: a writer calls this until it comes back empty.
    pub fn take_output(&mut self, conn: ConnId, now: Timestamp) -> Vec<Bytes> {
        let Some(connection) = self.connections.get_mut(&conn) else {
            return Vec::new();
        };
        self.output_bytes -= connection.send_buffer.len();
        let output = connection.send_buffer.take();
        if let Some(session_id) = connection.session() {
            self.resume_retained(session_id, now);
        }
        output
    }

    /// Bytes in the send buffers of all of this shard's connections, which a runtime has not
    /// taken yet: with what its writers still hold, the memory output costs.
    pub fn unsent_output(&self) -> usize {
        self.output_bytes
    }

    /// Bytes waiting to be sent on `conn`.
    pub fn pending_output(&self, conn: ConnId) -> usize {
        self.connections
            .get(&conn)
            .map_or(0, |connection| connection.send_buffer.len())
    }

    /// The next batch for another shard.
    pub fn poll_shard_messages(&mut self) -> Option<(ShardId, Vec<ShardMessage>)> {
        let shard = self
            .shard_outbox
            .iter()
            .position(|batch| !batch.is_empty())?;
        Some((shard, std::mem::take(&mut self.shard_outbox[shard])))
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Broker::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.timers.next_deadline()
    }

    // ----- shared plumbing for the handlers ----------------------------------------------

    /// Queues a packet the broker built for `conn`.
    pub(super) fn send(&mut self, conn: ConnId, packet: Packet) {
        let Some(connection) = self.connections.get_mut(&conn) else {
            return;
        };
        let before = connection.send_buffer.len();
        if let Err(error) = connection
            .send_buffer
            .push_packet(&packet, connection.version)
        {
            warn!(?conn, %error, ?packet, "could not encode a packet the broker built");
            return;
        }
        self.output_bytes += connection.send_buffer.len() - before;
        self.mark_writable(conn);
    }

    pub(super) fn mark_writable(&mut self, conn: ConnId) {
        if let Some(connection) = self.connections.get_mut(&conn) {
            if !connection.announced {
                connection.announced = true;
                self.writable.push_back(conn);
            }
        }
    }

    pub(super) fn send_to_shard(&mut self, shard: ShardId, message: ShardMessage) {
        self.shard_outbox[shard].push(message);
    }

    /// Sends a v5 DISCONNECT with `reason` (3.x has none) and closes the connection.
    pub(super) fn disconnect(&mut self, conn: ConnId, reason: ReasonCode, now: Timestamp) {
        let Some(connection) = self.connections.get(&conn) else {
            return;
        };
        if connection.phase == Phase::Closing {
            return;
        }
        if connection.version.is_v5() && connection.session().is_some() {
            self.send(
                conn,
                Packet::Disconnect(Box::new(Disconnect::with_reason(reason))),
            );
        }
        self.close(conn, now);
    }

    /// Closes without a DISCONNECT: detaches the session now and asks the runtime to close once
    /// pending output is written.
    pub(super) fn close(&mut self, conn: ConnId, now: Timestamp) {
        if !self.connections.contains_key(&conn) {
            return;
        }
        self.end_connection(conn, now);
        self.release_slot(conn);
        self.events.push_back(Event::Close(conn));
    }

    /// Emits a hand-over and forgets the connection here; it stays counted, on its new shard.
    pub(super) fn hand_over(
        &mut self,
        conn: ConnId,
        shard: ShardId,
        connect: Box<crate::protocol::Connect>,
        arrived: Arrival,
    ) {
        self.forget_connection(conn);
        self.events.push_back(Event::HandOver {
            conn,
            shard,
            connect: HandedOverConnect { connect, arrived },
        });
    }

    fn decode_failed(&mut self, conn: ConnId, error: DecodeError, now: Timestamp) {
        self.stats.protocol_errors += 1;
        let Some(connection) = self.connections.get(&conn) else {
            return;
        };
        let connecting = connection.phase == Phase::AwaitingConnect;
        let reason = match error {
            // Only CONNACK carries 0x84. Once connected, any CONNECT is a protocol error
            // (MQTT-3.1.0-2), whatever level it names.
            DecodeError::UnsupportedProtocolLevel(_) if !connecting => ReasonCode::PROTOCOL_ERROR,
            _ => error.reason_code(),
        };
        debug!(?conn, client_id = %connection.client_id, %error, %reason, "protocol error");
        if connecting && matches!(error, DecodeError::UnsupportedProtocolLevel(_)) {
            // MQTT-3.1.2-2: answer an unknown level with return code 1 in the 3.1.1 format,
            // which every version of client can read.
            let connack = crate::protocol::ConnAck {
                reason_code: ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
                ..Default::default()
            };
            if let Some(connection) = self.connections.get_mut(&conn) {
                connection.version = ProtocolVersion::V3_1_1;
            }
            self.send(conn, Packet::ConnAck(Box::new(connack)));
        }
        self.disconnect(conn, reason, now);
    }

    /// Detaches a connection from its session: the will, session expiry, and the bookkeeping that
    /// makes a later takeover or reconnect see a free session. Idempotent.
    fn end_connection(&mut self, conn: ConnId, now: Timestamp) {
        let Some(connection) = self.connections.get_mut(&conn) else {
            return;
        };
        let phase = std::mem::replace(&mut connection.phase, Phase::Closing);
        connection.retained_backlog.clear();
        let Phase::Connected(session_id) = phase else {
            return;
        };
        let will = connection.will.take();
        let normal = connection.disconnected_normally;
        let client_id = connection.client_id.clone();
        let connection_peer = connection.peer;
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        if session.connection != Some(conn) {
            return;
        }
        session.connection = None;
        self.shares_follow_connection(session_id, false);
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        // Offline, it is slow on its own account: it no longer holds publishers back.
        session.outbound.stalled = false;
        let holds = session.outbound.take_holds();
        let expiry = session.expiry_interval;
        info!(?conn, %client_id, peer = ?connection_peer, normal, "client disconnected");
        if let (Some(will), false) = (will, normal) {
            let delay = will.properties.will_delay_interval.unwrap_or(0);
            let message = Arc::new(will_message(*will, &client_id, now));
            if delay == 0 || expiry == 0 {
                self.publish_will(message, now);
            } else {
                // Published when the delay passes or the session ends, whichever is first
                // (§3.1.3.2.2); a reconnect before then cancels it.
                let publish_at = now + Duration::from_secs(u64::from(delay.min(expiry)));
                session.delayed_will = Some(DelayedWill {
                    message: message.clone(),
                    publish_at,
                });
                self.timers
                    .schedule(publish_at, Timer::WillDelay(session_id));
                self.journal_delayed_will(session_id, &message, publish_at);
            }
        }
        self.release_holds(holds);
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        let expires_at = match expiry {
            0 => return self.discard_session(session_id, now),
            // 0xFFFFFFFF: the session does not expire (§3.1.2.11.2).
            u32::MAX => None,
            secs => {
                let at = now + Duration::from_secs(u64::from(secs));
                session.expires_at = Some(at);
                self.timers.schedule(at, Timer::SessionExpiry(session_id));
                Some(at)
            }
        };
        let expires_at_ms = expires_at.map(|at| self.unix_ms(at));
        self.journal_session(session_id, |client_id| PersistRecord::SessionDetached {
            client_id,
            expiry_interval: expiry,
            expires_at_ms,
        });
    }

    /// A will that must outlive a restart: it is due at a wall-clock time, so the broker that
    /// restores it publishes it when it would have been published anyway.
    fn journal_delayed_will(&mut self, session_id: SessionId, will: &Message, at: Timestamp) {
        if !self.persist.enabled {
            // Not worth copying the message into its stored form for nothing.
            return;
        }
        let message = Arc::new(self.stored_message(will));
        let publish_at_ms = self.unix_ms(at);
        self.journal_session(session_id, |client_id| PersistRecord::WillDelayed {
            client_id,
            message,
            publish_at_ms,
        });
    }

    /// Ends a session: its subscriptions leave the tries, and a will still waiting for its delay
    /// is published now, because the session ended first.
    pub(super) fn discard_session(&mut self, session_id: SessionId, now: Timestamp) {
        self.journal_session(session_id, |client_id| PersistRecord::SessionEnded {
            client_id,
        });
        let Some(mut session) = self.sessions.remove(&session_id) else {
            return;
        };
        self.release_holds(session.outbound.take_holds());
        self.client_ids.remove(&session.client_id);
        let orphans = shared_orphans(&session);
        for (filter, _) in session.subscriptions_mut().drain() {
            self.remove_subscription_entry(session_id, &filter);
        }
        self.hand_shared_messages_on(orphans, now);
        if let Some(will) = session.delayed_will.take() {
            self.publish_will(will.message, now);
        }
    }

    pub(super) fn new_session_id(&mut self) -> SessionId {
        self.next_session += 1;
        SessionId(self.next_session)
    }

    pub(super) fn publish_will(&mut self, message: Arc<Message>, now: Timestamp) {
        self.stats.wills_published += 1;
        let (message, _) = self.fit_retained(message, now);
        self.route(message, now, None);
    }

    /// `message` as it may be routed: unchanged, or without its retain flag when the retained
    /// set has no room for it (see `Retained::admits`), which the flag returned says. Refusals
    /// are counted and logged at a limited rate. Called once per message where it enters the
    /// broker (a PUBLISH, a will), before `route`.
    pub(super) fn fit_retained(
        &mut self,
        message: Arc<Message>,
        now: Timestamp,
    ) -> (Arc<Message>, bool) {
        let config = &self.config;
        if !message.template.retain
            || !config.retain_available
            || self.retained.admits(
                &message,
                config.max_retained_messages,
                config.max_retained_bytes,
            )
        {
            return (message, false);
        }
        self.stats.retained_refused += 1;
        if let Some(unreported) = self.retained_full_log.note(now) {
            warn!(
                topic = %message.template.topic,
                refused = unreported,
                max_messages = config.max_retained_messages,
                max_bytes = config.max_retained_bytes,
                "retained set full: not retaining messages for new topics (count since the last \
                 such line)"
            );
        }
        (Arc::new(message.not_retained()), true)
    }

    /// Stores, replaces or clears a retained message. Every shard sees every retained update,
    /// so shard 0 alone journals them.
    /// The message must not share a receive buffer (see `Message::detached`).
    pub(super) fn store_retained(&mut self, message: &Arc<Message>) {
        self.retained.store(message.clone());
        if self.shard == 0 && self.persist.enabled {
            let record = if message.template.payload.is_empty() {
                PersistRecord::RetainedCleared {
                    topic: message.template.topic.to_string(),
                }
            } else {
                PersistRecord::RetainedSet {
                    message: Arc::new(self.stored_message(message)),
                }
            };
            self.journal(record);
        }
    }

    fn check_keepalive(&mut self, conn: ConnId, now: Timestamp) {
        let Some(connection) = self.connections.get(&conn) else {
            return;
        };
        let deadline = match connection.phase {
            Phase::AwaitingConnect => Some(now),
            Phase::Connected(_) => connection.keepalive_deadline(),
            Phase::Closing => None,
        };
        match deadline {
            Some(deadline) if deadline <= now => {
                info!(?conn, client_id = %connection.client_id, "keepalive timeout");
                self.disconnect(conn, ReasonCode::KEEP_ALIVE_TIMEOUT, now);
            }
            Some(deadline) => self.timers.schedule(deadline, Timer::KeepAlive(conn)),
            None => {}
        }
    }

    fn check_session_expiry(&mut self, session_id: SessionId, now: Timestamp) {
        let Some(session) = self.sessions.get(&session_id) else {
            return;
        };
        if session.has_expired(now) {
            debug!(client_id = %session.client_id, "session expired");
            self.stats.sessions_expired += 1;
            self.discard_session(session_id, now);
        }
    }

    fn check_delayed_will(&mut self, session_id: SessionId, now: Timestamp) {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        if session
            .delayed_will
            .as_ref()
            .is_some_and(|will| will.publish_at <= now)
        {
            let will = session.delayed_will.take().map(|will| will.message);
            if let Some(message) = will {
                self.journal_session(session_id, |client_id| PersistRecord::WillPublished {
                    client_id,
                });
                self.publish_will(message, now);
            }
        }
    }

    fn sweep_expired(&mut self, now: Timestamp) {
        let mut expired = self.retained.sweep(now);
        let mut released = Vec::new();
        for session in self.sessions.values_mut() {
            let (dropped, holds) = session
                .outbound
                .retain_queued(|delivery| !delivery.message.is_expired(now));
            session.outbound.dropped.expired += dropped as u64;
            expired += dropped;
            released.extend(holds);
        }
        self.release_holds(released);
        self.stats.expired_dropped += expired as u64;
        self.timers
            .schedule(now + self.config.expiry_sweep_interval, Timer::ExpirySweep);
    }
}

/// The message a will becomes (§3.1.2.5): the will's topic, payload, QoS, retain flag and
/// properties, published on the client's behalf.
fn will_message(will: LastWill, client_id: &ByteString, now: Timestamp) -> Message {
    let props = will.properties;
    let publish = Publish {
        dup: false,
        qos: will.qos,
        retain: will.retain,
        topic: will.topic,
        packet_id: 0,
        properties: PublishProperties {
            payload_format_indicator: props.payload_format_indicator,
            message_expiry_interval: props.message_expiry_interval,
            response_topic: props.response_topic,
            correlation_data: props.correlation_data,
            content_type: props.content_type,
            user_properties: props.user_properties,
            ..PublishProperties::default()
        }
        .into(),
        payload: will.payload,
    };
    Message::from_publish(publish, Some(client_id.clone()), now)
}
