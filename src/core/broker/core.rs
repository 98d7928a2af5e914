//! The [`Broker`] of one shard: its state, and its front door, the one `impl` block holding
//! every method a runtime calls (inputs, then outputs, then the persistent state), each handing
//! on to the handler that does the work. Below it, the plumbing all handlers share: queueing
//! output, closing and handing over connections. What happens for each packet is in
//! `handlers/`, and the life cycle of connections and sessions (detach, wills, expiry) in
//! `handlers/lifecycle.rs`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ahash::AHashMap;
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use tracing::warn;

use super::access::AccessRules;
use super::ack_holds::AckHolds;
use super::authorization::Access;
use super::boundary::{
    Arrival, AuthVerdict, ConnId, Event, HandedOverConnect, Identity, Origin, ShardId, ShardMessage,
};
use super::config::Config;
use super::connection::{Connection, Connections, Ending, Phase};
use super::latency::LatencyHistogram;
use super::limited_log::LimitedLog;
use super::message::Message;
use super::persist::{Journal, PersistRecord, RestoreSummary, ShardState, StateCapture};
use super::retained::Retained;
use super::routing::{Interest, Route, Subscriber};
use super::session::{Sessions, Subscription};
use super::time::Timestamp;
use super::timers::{Timer, Timers};
use super::topic::SubscriptionTrie;
use crate::protocol::{Disconnect, Packet, ProtocolVersion, ReasonCode};

/// Counters a runtime can export as metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub publishes_received: u64,
    pub publishes_sent: u64,
    /// The same two by QoS (index 0, 1, 2), as sent: a delivery at the subscription's QoS.
    pub received_by_qos: [u64; 3],
    pub sent_by_qos: [u64; 3],
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
    /// Publishes, subscriptions and deliveries the ACL denied.
    pub acl_denied: u64,
    /// CONNECTs refused for who the client is or is not (0x86, 0x87, 0x8C; 3.x: 4, 5).
    pub auth_refused: u64,
    /// Sessions taken over by a new connection of their client.
    pub takeovers: u64,
    /// Messages not retained because the retained set was full (`--max-retained-messages`,
    /// `--max-retained-bytes`); v5 QoS 1/2 publishes among them were refused with 0x97.
    pub retained_refused: u64,
    pub wills_published: u64,
    pub sessions_expired: u64,
    /// Messages put in batches for other shards, and taken from other shards' batches.
    pub shard_messages_sent: u64,
    pub shard_messages_received: u64,
    /// Sampled time from a PUBLISH read to its copies written for subscribers.
    pub delivery_latency: LatencyHistogram,
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
    pub(super) connections: Connections,
    pub(super) sessions: Sessions,
    /// Exact subscriptions of this shard's sessions.
    pub(super) subscriptions: SubscriptionTrie<Subscriber, Subscription>,
    /// Which shards (this one included) want which filters; kept only with more than one shard,
    /// as with one nothing is routed between shards.
    pub(super) interest: Interest,
    pub(super) retained: Retained,
    pub(super) timers: Timers,
    pub(super) events: VecDeque<Event>,
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
    pub(super) acl_denied_log: LimitedLog,
    /// The ACL in force, if any.
    pub(super) access: Access,
}

// ----- the front door: every method a runtime calls -------------------------------------

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
            connections: Connections::default(),
            sessions: Sessions::default(),
            subscriptions: SubscriptionTrie::new(),
            interest: Interest::new(shard),
            retained: Retained::default(),
            timers,
            events: VecDeque::new(),
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
            acl_denied_log: LimitedLog::default(),
            access: Access::default(),
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

    /// Subscriptions of this shard's sessions.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.len()
    }

    /// Sessions with a client connected, and sessions waiting for theirs. A walk over the
    /// sessions: for reports, not for every message.
    pub fn client_counts(&self) -> (usize, usize) {
        let connected = self
            .sessions
            .values()
            .filter(|session| session.is_connected())
            .count();
        (connected, self.sessions.len() - connected)
    }

    /// Network connections by the listener they came in on and the protocol version they
    /// speak (`None` until their CONNECT is accepted). A walk over the connections: for
    /// reports, not for every message.
    pub fn connections_by_origin(&self) -> AHashMap<(usize, Option<ProtocolVersion>), usize> {
        let mut counts = AHashMap::new();
        for connection in self.connections.iter() {
            let version =
                matches!(connection.phase, Phase::Connected(_)).then_some(connection.version);
            *counts
                .entry((connection.origin.listener, version))
                .or_default() += 1;
        }
        counts
    }

    /// Messages the shard holds for sessions, in flight and queued. A walk over the sessions:
    /// for reports, not for every message.
    pub fn stored_message_count(&self) -> usize {
        self.sessions
            .values()
            .map(|session| session.outbound.inflight_len() + session.outbound.queued_len())
            .sum()
    }

    // ----- inputs -------------------------------------------------------------------------

    /// A new network connection on this shard.
    pub fn handle_accepted(&mut self, conn: ConnId, origin: Origin, now: Timestamp) {
        self.connection_count.fetch_add(1, Ordering::Relaxed);
        let connection = Connection::new(self.config.max_connect_packet_size, origin, now);
        self.connections.insert(conn, connection);
        // Until CONNECT arrives, the keepalive timer is the connect timeout.
        self.timers
            .schedule(now + self.config.connect_timeout, Timer::KeepAlive(conn));
    }

    /// A connection another shard accepted and handed over because its client lives here. The
    /// connection is already counted; its CONNECT is processed as if it had just been read.
    pub fn handle_handed_over(
        &mut self,
        conn: ConnId,
        origin: Origin,
        handed_over: HandedOverConnect,
        now: Timestamp,
    ) {
        let HandedOverConnect {
            connect,
            arrived,
            identity,
        } = handed_over;
        let mut connection = Connection::new(self.config.max_connect_packet_size, origin, now);
        connection.decoder =
            crate::protocol::Decoder::client(connect.protocol, self.config.max_packet_size);
        self.connections.insert(conn, connection);
        if let Some(connection) = self.connections.get_mut(&conn) {
            connection.version = connect.protocol;
        }
        self.connect_identified(conn, connect, arrived, identity, now);
    }

    /// When the connection's first bytes arrived, by a clock all shards share, before they are
    /// handed to `handle_bytes`: it orders this connection's CONNECT against other connections
    /// of the same client. Without it, the core's clock when the CONNECT is read does.
    pub fn note_arrival(&mut self, conn: ConnId, arrival: Arrival) {
        if let Some(connection) = self.connections.get_mut(&conn) {
            connection.arrival.get_or_insert(arrival);
        }
    }

    /// Bytes read from a connection. Whole packets are taken off the front of `buf` and
    /// handled (`handlers/dispatch.rs`); a partial packet stays for the next read. After a
    /// hand-over the rest of `buf` belongs to the shard the connection moved to.
    ///
    /// Returns true when a PUBLISH was among the packets. A runtime that must slow clients down
    /// (a congested shard, a journal behind) pauses only connections that publish: the others
    /// send acknowledgements, which free queued messages and never add load, and pausing them
    /// would stall the very deliveries that drain the backlog.
    pub fn handle_bytes(&mut self, conn: ConnId, buf: &mut BytesMut, now: Timestamp) -> bool {
        self.read_packets(conn, buf, now)
    }

    /// The runtime's answer to an `Event::Authenticate` for `conn`: the CONNECT goes on to be
    /// accepted or refused, or the exchange to its next round (`handlers/authenticate.rs`).
    /// Then hand the connection the bytes it read meanwhile with `handle_bytes`.
    pub fn handle_authenticated(&mut self, conn: ConnId, verdict: AuthVerdict, now: Timestamp) {
        self.authenticated(conn, verdict, now);
    }

    /// Puts an ACL in force (`None`: everything allowed) at once, for every session, connected
    /// or not: later publishes, subscriptions and deliveries are checked against it. Messages
    /// already queued stay queued.
    pub fn set_access_rules(&mut self, rules: Option<Arc<AccessRules>>) {
        self.access.replace(rules);
    }

    /// A retained QoS 0 message the broker itself publishes (`$SYS` topics), routed like any
    /// other; clients may not publish there.
    pub fn publish_system(&mut self, topic: &str, payload: Bytes, now: Timestamp) {
        let publish = crate::protocol::Publish {
            topic: topic.into(),
            payload,
            retain: true,
            ..crate::protocol::Publish::default()
        };
        let message = Arc::new(Message::from_publish(publish, None, now));
        self.route(message, now, None);
    }

    /// The network connection is gone (peer closed, I/O error, or after an `Event::Close`).
    pub fn handle_closed(&mut self, conn: ConnId, now: Timestamp) {
        self.end_connection(conn, now);
        self.release_slot(conn);
        self.connections.remove(conn);
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
        self.stats.shard_messages_received += 1;
        match message {
            ShardMessage::Publish {
                message,
                deliver,
                groups,
                store_retained,
                ack,
            } => {
                let route = Route { deliver, groups };
                self.deliver_from_shard(from, &message, route, store_retained, ack, now)
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

    /// Every record up to `up_to_seq` is durable: releases the acknowledgements and the replies
    /// to other shards that were waiting for them (`acks.rs`).
    pub fn handle_persisted(&mut self, up_to_seq: u64) {
        self.release_persisted(up_to_seq);
    }

    /// The wall clock reads `unix_ms` at `now`. Call it before `restore` and before the first
    /// input that may write a record; deadlines written before it count from the unix epoch.
    pub fn handle_wall_clock(&mut self, unix_ms: u64, now: Timestamp) {
        self.persist.set_wall_clock(unix_ms, now);
    }

    /// Graceful shutdown: v5 clients are told the server is shutting down, everyone is closed.
    /// Wills are not published: the clients did nothing wrong and the subscribers are leaving too.
    pub fn shutdown(&mut self, now: Timestamp) {
        for conn in self.connections.ids() {
            if let Some(connection) = self.connections.get_mut(&conn) {
                connection.disconnected_normally = true;
            }
            self.disconnect(conn, ReasonCode::SERVER_SHUTTING_DOWN, now);
        }
    }

    // ----- outputs ------------------------------------------------------------------------

    /// The next connection that has bytes to send; take them with [`Broker::take_output`].
    pub fn poll_transmit(&mut self) -> Option<ConnId> {
        self.connections.next_writable()
    }

    /// Everything waiting to be sent on `conn`, in order, as chunks to write one after another.
    /// Output a runtime has not taken yet counts towards the connection's send buffer limit.
    ///
    /// Taking it makes room for retained messages still owed to the connection, which are
    /// queued at once: a writer calls this until it comes back empty.
    pub fn take_output(&mut self, conn: ConnId, now: Timestamp) -> Vec<Bytes> {
        let Some((output, session)) = self.connections.take_output(conn) else {
            return Vec::new();
        };
        if let Some(session_id) = session {
            self.resume_retained(session_id, now);
        }
        output
    }

    /// Bytes in the send buffers of all of this shard's connections, which a runtime has not
    /// taken yet: with what its writers still hold, the memory output costs.
    pub fn unsent_output(&self) -> usize {
        self.connections.unsent()
    }

    /// Bytes waiting to be sent on `conn`.
    pub fn pending_output(&self, conn: ConnId) -> usize {
        self.connections.pending(conn)
    }

    /// Whether a runtime should stop reading `conn` for now: it holds more acknowledgements
    /// than any client that waits for them would let pile up (see `acks.rs`).
    pub fn wants_pause(&self, conn: ConnId) -> bool {
        self.connections
            .get(&conn)
            .is_some_and(Connection::holds_too_many_acks)
    }

    /// The next batch for another shard.
    pub fn poll_shard_messages(&mut self) -> Option<(ShardId, Vec<ShardMessage>)> {
        let shard = self
            .shard_outbox
            .iter()
            .position(|batch| !batch.is_empty())?;
        let batch = std::mem::take(&mut self.shard_outbox[shard]);
        self.stats.shard_messages_sent += batch.len() as u64;
        Some((shard, batch))
    }

    /// The next journal record, with its sequence number; drain after shard messages and before
    /// events. Append them in order and report durability with [`Broker::handle_persisted`].
    pub fn poll_persist(&mut self) -> Option<(u64, PersistRecord)> {
        self.persist.next_record()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Broker::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.timers.next_deadline()
    }

    // ----- persistent state (`persist/`) ----------------------------------------------------

    /// Highest `seq` reported durable.
    pub fn persisted_seq(&self) -> u64 {
        self.persist.persisted
    }

    /// This shard's persistent state now: its journaled sessions and, on shard 0, the retained
    /// set, as [`Broker::snapshot_state`] gives them once converted. Costs a walk over the
    /// sessions with reference-count increments, no conversion and no sorting.
    pub fn capture_state(&self) -> StateCapture {
        StateCapture::take(self)
    }

    /// This shard's persistent state: its journaled sessions and, on shard 0, the retained set.
    /// Encoded as a snapshot it replaces every record this shard has emitted so far. A shard
    /// that must not stop for the conversion takes [`Broker::capture_state`] instead and
    /// converts it elsewhere; this is the same in one step.
    pub fn snapshot_state(&self) -> ShardState {
        self.capture_state().into_state()
    }

    /// Loads recovered state into a shard that has served nothing yet. Sessions not homed on
    /// this shard are skipped (the runtime re-homes them first); subscriptions rebuild the trie
    /// and the interest of the other shards (through the usual `Interest` shard messages).
    /// Nothing is journaled: this state is on disk already.
    pub fn restore(&mut self, state: ShardState, now: Timestamp) -> RestoreSummary {
        self.load_state(state, now)
    }
}

// ----- shared plumbing for the handlers --------------------------------------------------

impl Broker {
    /// Queues a packet the broker built for `conn`.
    pub(super) fn send(&mut self, conn: ConnId, packet: Packet) {
        let encoded = self.connections.write(conn, |connection| {
            connection
                .send_buffer
                .push_packet(&packet, connection.version)
        });
        if let Some(Err(error)) = encoded {
            warn!(?conn, %error, ?packet, "could not encode a packet the broker built");
        }
    }

    pub(super) fn send_to_shard(&mut self, shard: ShardId, message: ShardMessage) {
        self.shard_outbox[shard].push(message);
    }

    /// Sends a v5 DISCONNECT with `reason` (3.x has none) and closes the connection.
    pub(super) fn disconnect(&mut self, conn: ConnId, reason: ReasonCode, now: Timestamp) {
        let Some(connection) = self.connections.get_mut(&conn) else {
            return;
        };
        if connection.phase == Phase::Closing {
            return;
        }
        connection.ending.get_or_insert(Ending::Broker(reason));
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
        if !self.connections.contains(conn) {
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
        identity: Identity,
    ) {
        self.connections.remove(conn);
        self.events.push_back(Event::HandOver {
            conn,
            shard,
            connect: HandedOverConnect {
                connect,
                arrived,
                identity,
            },
        });
    }

    /// Gives the connection's place in `--max-connections` back, once.
    fn release_slot(&mut self, conn: ConnId) {
        if let Some(connection) = self.connections.get_mut(&conn) {
            if std::mem::take(&mut connection.holds_slot) {
                self.connection_count.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}
