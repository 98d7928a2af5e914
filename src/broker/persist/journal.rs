//! The core's side of the journal: records waiting for `poll_persist`, how far the runtime has
//! made them durable, and the acknowledgements held until then (`Config::ack_after_durable`).
//!
//! Records are numbered by a per-shard sequence (`seq`), not by the store's LSNs: the core never
//! sees the store. The runtime appends them in `seq` order and reports back, with
//! `handle_persisted(seq)`, the highest `seq` whose record (and so every earlier one) is durable.
//!
//! A PUBLISH routed to other shards makes them write records too. Its acknowledgement then also
//! waits for each of them: the origin puts a token in the `ShardMessage::Publish` it sends and
//! counts the `ShardMessage::Persisted` replies.
//!
//! A QoS 2 PUBLISH resent before its PUBREL is not routed again, yet its PUBREC must not go out
//! before the first routing is durable: the first PUBREC may have been held when the connection
//! it came on was lost. The session keeps the first copy's token with the packet identifier, and
//! the resend's PUBREC waits for it and for every record this shard has written.
//!
//! One window stays open across a crash: the home shard's `InboundPending` durable while another
//! shard's record of the same message is not. After the restart the resend is taken for a
//! duplicate, so that shard's subscribers miss the message. Closing it would mean writing
//! `InboundPending` only once the other shards have replied, a second round of disk syncs for
//! every QoS 2 publish that crosses shards.

use std::collections::VecDeque;

use ahash::AHashMap;

use super::records::PersistRecord;
use crate::broker::connection::HeldAck;
use crate::broker::core::Broker;
use crate::broker::io::{ConnId, ShardId, ShardMessage};
use crate::broker::session::SessionId;
use crate::protocol::Packet;

#[derive(Debug, Default)]
pub struct Journal {
    pub enabled: bool,
    pub hold_acks: bool,
    /// `seq` of the last record emitted.
    pub last_seq: u64,
    /// Every record up to this `seq` is durable.
    pub persisted: u64,
    outbox: VecDeque<(u64, PersistRecord)>,
    /// Replies owed to other shards once `persisted` reaches the `seq`: (seq, shard, token).
    replies: VecDeque<(u64, ShardId, u64)>,
    next_token: u64,
    /// Replies still awaited per token this shard handed out.
    remote_waits: AHashMap<u64, usize>,
    /// Connections with held acknowledgements (each listed once).
    held_conns: Vec<ConnId>,
    /// Unix milliseconds at `Timestamp::ZERO`.
    pub wall_offset_ms: i64,
}

impl Journal {
    pub fn new(enabled: bool, hold_acks: bool) -> Journal {
        Journal {
            enabled,
            hold_acks: enabled && hold_acks,
            ..Journal::default()
        }
    }

    fn push(&mut self, record: PersistRecord) {
        self.last_seq += 1;
        self.outbox.push_back((self.last_seq, record));
    }

    fn ack_done(&self, ack: &HeldAck) -> bool {
        ack.seq <= self.persisted
            && ack
                .token
                .is_none_or(|token| !self.remote_waits.contains_key(&token))
    }
}

impl Broker {
    /// The next journal record, with its sequence number; drain after shard messages and before
    /// events. Append them in order and report durability with [`Broker::handle_persisted`].
    pub fn poll_persist(&mut self) -> Option<(u64, PersistRecord)> {
        self.persist.outbox.pop_front()
    }

    /// Every record up to `up_to_seq` is durable: releases the acknowledgements and the replies
    /// to other shards that were waiting for them.
    pub fn handle_persisted(&mut self, up_to_seq: u64) {
        self.persist.persisted = self.persist.persisted.max(up_to_seq);
        while let Some(&(seq, shard, token)) = self.persist.replies.front() {
            if seq > self.persist.persisted {
                break;
            }
            self.persist.replies.pop_front();
            self.send_to_shard(shard, ShardMessage::Persisted { token });
        }
        self.release_acks();
    }

    /// Highest `seq` reported durable.
    pub fn persisted_seq(&self) -> u64 {
        self.persist.persisted
    }

    /// The `seq` of the last record emitted; the journal position a handler starts from.
    pub(in crate::broker) fn journal_mark(&self) -> u64 {
        self.persist.last_seq
    }

    pub(in crate::broker) fn journal(&mut self, record: PersistRecord) {
        if self.persist.enabled {
            self.persist.push(record);
        }
    }

    /// Journals a change of `session` if the session is journaled; `make` gets its client id.
    pub(in crate::broker) fn journal_session(
        &mut self,
        session: SessionId,
        make: impl FnOnce(String) -> PersistRecord,
    ) {
        if !self.persist.enabled {
            return;
        }
        if let Some(session) = self.sessions.get(&session).filter(|s| s.journaled) {
            let record = make(session.client_id.to_string());
            self.persist.push(record);
        }
    }

    /// A token for the shard messages of a PUBLISH whose acknowledgement will be held.
    pub(in crate::broker) fn ack_token(&mut self) -> Option<u64> {
        if !self.persist.hold_acks {
            return None;
        }
        self.persist.next_token += 1;
        Some(self.persist.next_token)
    }

    /// `token` went to `shards` other shards: the acknowledgement waits for that many replies.
    pub(in crate::broker) fn await_replies(&mut self, token: Option<u64>, shards: usize) {
        if let (Some(token), 1..) = (token, shards) {
            self.persist.remote_waits.insert(token, shards);
        }
    }

    /// Sends PUBACK, PUBREC, PUBCOMP, SUBACK or UNSUBACK for a packet whose handling began at
    /// journal position `mark`: at once, or once what it wrote (here and, with `token`, on
    /// other shards) is durable, and never before an earlier held one on the same connection.
    pub(in crate::broker) fn send_ack(
        &mut self,
        conn: ConnId,
        packet: Packet,
        mark: u64,
        token: Option<u64>,
    ) {
        if !self.persist.hold_acks {
            return self.send(conn, packet);
        }
        let journal = &mut self.persist;
        let ack = HeldAck {
            packet,
            seq: if journal.last_seq > mark {
                journal.last_seq
            } else {
                0
            },
            token,
        };
        let Some(connection) = self.connections.get_mut(&conn) else {
            return;
        };
        if connection.held_acks.is_empty() {
            if journal.ack_done(&ack) {
                return self.send(conn, ack.packet);
            }
            journal.held_conns.push(conn);
        }
        connection.held_acks.push_back(ack);
    }

    /// A `ShardMessage::Publish` carrying `token` was handled from journal position `mark`:
    /// tells `from` once the records it caused here are durable.
    pub(in crate::broker) fn reply_when_persisted(&mut self, from: ShardId, token: u64, mark: u64) {
        let journal = &mut self.persist;
        if journal.last_seq > mark && journal.last_seq > journal.persisted {
            journal.replies.push_back((journal.last_seq, from, token));
        } else {
            self.send_to_shard(from, ShardMessage::Persisted { token });
        }
    }

    /// Another shard's records for `token` are durable.
    pub(in crate::broker) fn handle_remote_persisted(&mut self, token: u64) {
        if let Some(waiting) = self.persist.remote_waits.get_mut(&token) {
            *waiting -= 1;
            if *waiting == 0 {
                self.persist.remote_waits.remove(&token);
                self.release_acks();
            }
        }
    }

    fn release_acks(&mut self) {
        let conns = std::mem::take(&mut self.persist.held_conns);
        for conn in conns {
            let Some(connection) = self.connections.get_mut(&conn) else {
                continue;
            };
            let mut ready = Vec::new();
            while let Some(ack) = connection.held_acks.front() {
                if !self.persist.ack_done(ack) {
                    break;
                }
                ready.extend(connection.held_acks.pop_front().map(|ack| ack.packet));
            }
            if !connection.held_acks.is_empty() {
                self.persist.held_conns.push(conn);
            }
            for packet in ready {
                self.send(conn, packet);
            }
        }
    }
}
