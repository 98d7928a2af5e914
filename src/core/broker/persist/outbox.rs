//! The core's side of the journal: records waiting for `poll_persist`, and how far the runtime
//! has made them durable. What acknowledgements wait for it is in `acks.rs`.
//!
//! Records are numbered by a per-shard sequence (`seq`), not by the store's LSNs: the core never
//! sees the store. The runtime appends them in `seq` order and reports back, with
//! `handle_persisted(seq)`, the highest `seq` whose record (and so every earlier one) is durable.
//!
//! A QoS 2 PUBLISH resent before its PUBREL is not routed again, yet its PUBREC must not go out
//! before the first routing is durable: the first PUBREC may have been held when the connection
//! it came on was lost. The session keeps the first copy's token with the packet identifier, and
//! the resend's PUBREC waits for it and for every record this shard has written.
//!
//! With acknowledgements after durability, `InboundPending` (the record that makes a resend a
//! duplicate after a restart) is written only once every shard the message reached has made its
//! own records durable (`Broker::journal_inbound_pending`): a crash leaves either the whole
//! routing or a resend that routes the message again, never a dropped resend while another
//! shard lost its copy. What stays open: a QoS 2 message is forwarded as it arrives, before its
//! PUBREC, so a crash before that PUBREC can deliver it twice once the publisher resends it.
//! Exactly once holds from the PUBREC on; before it, closing the gap would take storing the
//! message durably before forwarding it and routing it idempotently after a restart.

use std::collections::VecDeque;

use super::records::PersistRecord;
use crate::broker::boundary::{ShardId, ShardMessage};
use crate::broker::core::Broker;
use crate::broker::session::SessionId;

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
    /// Unix milliseconds at `Timestamp::ZERO`.
    pub wall_offset_ms: i64,
}

impl Journal {
    /// The record an answer to a packet handled from journal position `mark` waits for: the
    /// last one written since, when acknowledgements wait for durability; 0 (none) otherwise.
    pub fn awaited_since(&self, mark: u64) -> u64 {
        if self.hold_acks && self.last_seq > mark {
            self.last_seq
        } else {
            0
        }
    }

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

    /// The oldest record not yet polled (`Broker::poll_persist`).
    pub fn next_record(&mut self) -> Option<(u64, PersistRecord)> {
        self.outbox.pop_front()
    }

    /// Whether the record `seq` (and every earlier one) is durable.
    pub fn is_durable(&self, seq: u64) -> bool {
        seq <= self.persisted
    }

    /// Owes `to` its reply for `token` once the records up to `seq` are durable.
    pub fn defer_reply(&mut self, seq: u64, to: ShardId, token: u64) {
        self.replies.push_back((seq, to, token));
    }
}

impl Broker {
    /// Every record up to `up_to_seq` is durable (`Broker::handle_persisted`): sends the replies
    /// to other shards and the acknowledgements that were waiting for it.
    pub(in crate::broker) fn release_persisted(&mut self, up_to_seq: u64) {
        self.persist.persisted = self.persist.persisted.max(up_to_seq);
        while let Some(&(seq, shard, token)) = self.persist.replies.front() {
            if !self.persist.is_durable(seq) {
                break;
            }
            self.persist.replies.pop_front();
            self.send_to_shard(shard, ShardMessage::Accepted { token });
        }
        self.release_acks();
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
        if let Some(session) = self.sessions.journaled_mut(&session) {
            let record = make(session.client_id.to_string());
            self.persist.push(record);
        }
    }
}
