//! Acknowledgements held back until the broker can keep the promise they make.
//!
//! A PUBACK or PUBREC tells the publisher that the broker has taken charge of its message, so it
//! must never go out for a message the broker will then drop for lack of room. Three things can
//! hold one back:
//!
//! 1. **Durability** (`Config::ack_after_durable`, `--fsync always`): the journal records its
//!    handling wrote must be durable (`HeldAck::seq`, released by `Broker::handle_persisted`).
//! 2. **Other shards**, while they ask for it. A QoS 1/2 message routed to another shard is then
//!    acknowledged only once that shard has taken it in: queued it for its subscribers,
//!    journaled it where needed, and made room for it (below). The origin puts a token in the
//!    `ShardMessage::Publish` and counts the `ShardMessage::Accepted` replies. A round trip
//!    between shards for every message would add its latency to every acknowledgement, so it is
//!    paid only where needed: always when acknowledgements wait for durability (the other
//!    shard's records must be durable too), and otherwise for `PACED_FOR` after the other shard
//!    asked for it (`ShardMessage::Pace`) because a message that came without a token found a
//!    full queue. Such a message is queued beyond the limit all the same: what is in flight
//!    between two shards is bounded by the mesh, so the overshoot is too.
//! 3. **Room.** A delivery that finds a subscriber's queue at its limit while that subscriber is
//!    still reading (see `Broker::park`) is queued beyond the limit and holds the publisher's
//!    acknowledgement until the queue moves on by one message.
//!
//! The publisher's own in-flight window (its Receive Maximum) is therefore the credit: a broker
//! that cannot keep up holds acknowledgements, and a client that waits for them slows down,
//! instead of being told "delivered" for messages that a full queue drops. Memory stays bounded
//! by the publishers' windows, and a runtime pauses reading a connection whose held
//! acknowledgements pile up beyond any honest window (`Broker::wants_pause`).
//!
//! Every handler whose answer this may hold takes an [`AckGuard`] when it starts and consumes
//! it by answering, so what an acknowledgement waits for is one value, and no path sends one
//! without it.
//!
//! A subscriber that stops reading altogether must not stall its publishers for good: once it
//! has made no progress for `Config::stall_timeout`, its holds are released and further messages
//! beyond its queue limit are dropped for it alone, counted and logged (`handlers/deliver.rs`).

use super::ack_holds::Hold;
use super::boundary::{ConnId, ShardId, ShardMessage};
use super::connection::HeldAck;
use super::core::Broker;
use super::persist::PersistRecord;
use super::session::SessionId;
use super::time::Timestamp;
use crate::protocol::Packet;

/// What the acknowledgement of the packet a handler works on must wait for, taken when the
/// handler starts ([`Broker::start_ack`]), carried along while it journals, queues and forwards,
/// and consumed by sending that acknowledgement: [`Broker::acknowledge`], [`Broker::send_pubrel`]
/// or, for a message from another shard, [`Broker::reply_when_accepted`]. Each sends at once
/// or holds the answer until what it waits for is done, so no path can answer early.
#[must_use = "an acknowledgement guard is consumed by sending the acknowledgement"]
#[derive(Debug)]
pub(in crate::broker) struct AckGuard {
    /// The journal position the handler started from: with acknowledgements after
    /// durability, the answer waits for every record written since.
    mark: u64,
    /// A QoS 1/2 PUBLISH's token ([`Broker::wait_for_deliveries`]): the answer also waits for
    /// the other shards that got it and for room in full queues.
    token: Option<u64>,
    /// How many other shards the message went to with `token`, each owing a reply.
    replies: usize,
    /// A QoS 2 PUBLISH's `InboundPending` record, `(session, packet identifier)`, written once
    /// the routing's own records are (see [`Broker::journal_inbound_pending`]).
    inbound: Option<(SessionId, u16)>,
}

impl AckGuard {
    /// The token, to send along with the message.
    pub(in crate::broker) fn token(&self) -> Option<u64> {
        self.token
    }

    /// The message went to `shards` other shards with the token.
    pub(in crate::broker) fn add_replies(&mut self, shards: usize) {
        self.replies += shards;
    }

    /// The `InboundPending` record of a QoS 2 PUBLISH, journaled when the guard is consumed.
    pub(in crate::broker) fn journal_inbound(&mut self, session: SessionId, packet_id: u16) {
        self.inbound = Some((session, packet_id));
    }

    /// A QoS 2 PUBLISH resent before its PUBREL, which is not routed again: its PUBREC waits
    /// for its first routing, which may have been held when the connection it came on was lost:
    /// every record journaled so far (mark 0), and the other shards it reached (`first`, the
    /// first copy's token, set up long since).
    pub(in crate::broker) fn resend_of(self, first: Option<u64>) -> AckGuard {
        AckGuard {
            mark: 0,
            token: first,
            ..self
        }
    }
}

impl Broker {
    /// The guard of a handler whose answer waits for what the handler journals; taken before
    /// it changes anything.
    pub(in crate::broker) fn start_ack(&self) -> AckGuard {
        AckGuard {
            mark: self.persist.last_seq,
            token: None,
            replies: 0,
            inbound: None,
        }
    }

    /// A QoS 1/2 PUBLISH from `conn` about to be routed: its acknowledgement also waits for
    /// other shards and for queue room, through a new token.
    pub(in crate::broker) fn wait_for_deliveries(&mut self, ack: &mut AckGuard, conn: ConnId) {
        ack.token = Some(self.acks.new_token(conn));
    }

    /// The token to send with a message for `shard`: only while acknowledgements wait for that
    /// shard's durability, or it asked to be paced.
    pub(in crate::broker) fn token_for(
        &self,
        shard: ShardId,
        token: Option<u64>,
        now: Timestamp,
    ) -> Option<u64> {
        token.filter(|_| self.persist.hold_acks || self.acks.is_paced(shard, now))
    }

    /// `from` found full queues for messages this shard acknowledged at once: send it tokens
    /// for a while.
    pub(in crate::broker) fn handle_pace(&mut self, from: ShardId, now: Timestamp) {
        self.acks.pace(from, now);
    }

    /// A delivery from `origin` went beyond a full queue: asks it to send tokens (again), at
    /// most every `PACE_REQUEST_INTERVAL`.
    pub(in crate::broker) fn request_pacing(&mut self, origin: ShardId, now: Timestamp) {
        if origin != self.shard && self.acks.should_request_pacing(origin, now) {
            self.send_to_shard(origin, ShardMessage::Pace);
        }
    }

    /// A delivery was queued beyond a subscriber's limit: `hold` keeps its publisher's
    /// acknowledgement back until [`Broker::release_hold`].
    pub(in crate::broker) fn take_hold(&mut self, hold: Hold) {
        self.acks.take_hold(hold, self.shard);
    }

    pub(in crate::broker) fn release_holds(&mut self, holds: impl IntoIterator<Item = Hold>) {
        for hold in holds {
            self.release_hold(hold);
        }
    }

    pub(in crate::broker) fn release_hold(&mut self, hold: Hold) {
        if hold.origin == self.shard {
            return self.settle(hold.token);
        }
        if let Some(seq) = self.acks.release_remote(hold.origin, hold.token) {
            self.reply_after(seq, hold.origin, hold.token);
        }
    }

    /// One thing `token` waited for is done; at the last, its acknowledgement may go.
    fn settle(&mut self, token: u64) {
        let Some(wait) = self.acks.settle(token) else {
            return;
        };
        if let Some((session, packet_id)) = wait.inbound {
            // Nothing left to wait for: written now.
            self.journal_inbound_pending(session, packet_id, None);
            // The PUBREC now stands for this record too.
            let seq = self.persist.last_seq;
            let connection = wait.conn.and_then(|conn| self.connections.get_mut(&conn));
            for ack in connection.into_iter().flat_map(|c| c.held_acks.iter_mut()) {
                if ack.token == Some(token) {
                    ack.seq = ack.seq.max(seq);
                }
            }
        }
        if let Some(conn) = wait.conn {
            self.release_conn_acks(conn);
        }
    }

    /// Journals that a QoS 2 PUBLISH, routed with `token`, awaits its PUBREL: after a restart
    /// the record makes a resend a duplicate, not a new message. So with acknowledgements
    /// after durability it is written only once every shard the message reached has made its
    /// own records of it durable (after this shard's, being later in its journal): a crash then
    /// leaves either the whole routing, or no record and a resend that routes the message
    /// again, never a record whose resend is dropped while another shard lost its copy.
    fn journal_inbound_pending(&mut self, session: SessionId, packet_id: u16, token: Option<u64>) {
        let deferred = self.persist.hold_acks
            && token.is_some_and(|token| self.acks.defer_inbound(token, session, packet_id));
        if deferred {
            return;
        }
        self.journal_session(session, |client_id| PersistRecord::InboundPending {
            client_id,
            packet_id,
        });
    }

    /// Sends PUBREL for the PUBREC `ack` was taken for: at once, or (when acknowledgements wait
    /// for durability) once the record of that PUBREC is durable.
    /// Once PUBREL is out the message must never be sent again (§4.3.3); after a crash without
    /// the record, the restored session would send the PUBLISH once more. PUBRELs keep their
    /// order among themselves (MQTT-4.6.0-3), and only that.
    pub(in crate::broker) fn send_pubrel(&mut self, conn: ConnId, packet: Packet, ack: AckGuard) {
        let seq = self.persist.awaited_since(ack.mark);
        let Some(connection) = self.connections.get_mut(&conn) else {
            return;
        };
        if !self.persist.is_durable(seq) || !connection.held_pubrels.is_empty() {
            connection.held_pubrels.push_back((seq, packet));
            self.acks.hold_on(conn);
        } else {
            self.send(conn, packet);
        }
    }

    /// Sends PUBACK, PUBREC, PUBCOMP, SUBACK or UNSUBACK for the packet `ack` was taken for:
    /// at once, or once what its handling journaled is durable (when acknowledgements wait for
    /// durability) and its token waits for nothing, and never before an earlier held one on
    /// the same connection.
    pub(in crate::broker) fn acknowledge(&mut self, conn: ConnId, packet: Packet, ack: AckGuard) {
        let AckGuard {
            mark,
            token,
            replies,
            inbound,
        } = ack;
        if let Some(token) = token {
            // The token's setup ends: with nothing to wait for, it is forgotten at once. (A
            // resend's token was set up by its first copy: expecting no more changes nothing.)
            self.acks.expect(token, replies);
            // A QoS 2 resend may come on a new connection: its PUBREC is the one to release.
            self.acks.move_to(token, conn);
        }
        if let Some((session, packet_id)) = inbound {
            // After the routing's own records, so that its durability implies theirs.
            self.journal_inbound_pending(session, packet_id, token);
        }
        let seq = self.persist.awaited_since(mark);
        let ack = HeldAck { packet, seq, token };
        let Some(connection) = self.connections.get_mut(&conn) else {
            return;
        };
        if connection.held_acks.is_empty() && self.acks.is_done(&ack, self.persist.persisted) {
            return self.send(conn, ack.packet);
        }
        connection.held_acks.push_back(ack);
        self.acks.hold_on(conn);
    }

    /// A `ShardMessage::Publish` carrying `token` was handled under `ack`: tells `from` once
    /// its deliveries here hold nothing back and (when acknowledgements wait for durability)
    /// the records they wrote are durable.
    pub(in crate::broker) fn reply_when_accepted(
        &mut self,
        from: ShardId,
        token: u64,
        ack: AckGuard,
    ) {
        let seq = self.persist.awaited_since(ack.mark);
        if !self.acks.defer_remote_reply(from, token, seq) {
            self.reply_after(seq, from, token);
        }
    }

    fn reply_after(&mut self, seq: u64, to: ShardId, token: u64) {
        if self.persist.hold_acks && !self.persist.is_durable(seq) {
            self.persist.defer_reply(seq, to, token);
        } else {
            self.send_to_shard(to, ShardMessage::Accepted { token });
        }
    }

    /// Another shard has taken in the message of `token`.
    pub(in crate::broker) fn handle_accepted_remotely(&mut self, token: u64) {
        self.settle(token);
    }

    /// Sends the acknowledgements at the front of every held queue that wait for nothing more;
    /// after durability moved on.
    pub(in crate::broker) fn release_acks(&mut self) {
        for conn in self.acks.held_conns() {
            self.release_conn_acks(conn);
        }
    }

    fn release_conn_acks(&mut self, conn: ConnId) {
        let Some(connection) = self.connections.get_mut(&conn) else {
            self.acks.forget_conn(conn);
            return;
        };
        let mut ready = Vec::new();
        while let Some(ack) = connection.held_acks.front() {
            if !self.acks.is_done(ack, self.persist.persisted) {
                break;
            }
            ready.extend(connection.held_acks.pop_front().map(|ack| ack.packet));
        }
        while let Some((seq, _)) = connection.held_pubrels.front() {
            if !self.persist.is_durable(*seq) {
                break;
            }
            ready.extend(
                connection
                    .held_pubrels
                    .pop_front()
                    .map(|(_, packet)| packet),
            );
        }
        if connection.held_acks.is_empty() && connection.held_pubrels.is_empty() {
            self.acks.forget_conn(conn);
        }
        for packet in ready {
            self.send(conn, packet);
        }
    }
}
