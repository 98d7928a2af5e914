//! The bookkeeping behind held acknowledgements (see `acks.rs` for why they are held): which
//! tokens of this shard still wait and for what, the holds this shard's queues keep on other
//! shards' tokens, which connections have acknowledgements waiting, and which shards pace which.
//! It decides nothing about packets or journals; `acks.rs` does, through these methods.

use std::time::Duration;

use ahash::{AHashMap, AHashSet};

use super::boundary::{ConnId, ShardId};
use super::connection::HeldAck;
use super::session::SessionId;
use super::time::Timestamp;

/// How long a shard sends tokens to another after it asked to be paced.
const PACED_FOR: Duration = Duration::from_millis(100);

/// How often a shard asks another to pace it while its queues stay full.
const PACE_REQUEST_INTERVAL: Duration = Duration::from_millis(10);

/// How a full queue may push back on the publisher of a message it cannot take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushBack {
    /// Hold its acknowledgement until the queue moves.
    Hold(Hold),
    /// Its shard acknowledged it already: queue it beyond the limit and ask that shard to send
    /// tokens from now on.
    Pace(ShardId),
    /// Nobody to push back on (a will on its own shard, a retained message sent on subscribe):
    /// a full queue drops it.
    Nobody,
}

/// One publisher acknowledgement that a delivery queued beyond a subscriber's limit holds: the
/// token of the PUBLISH and the shard that handed it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hold {
    pub origin: ShardId,
    pub token: u64,
}

/// What a token of this shard still waits for.
#[derive(Debug)]
struct Wait {
    /// Replies from other shards plus holds in this shard's queues.
    outstanding: usize,
    /// The connection whose acknowledgement waits, to look at it alone once the wait is over.
    conn: Option<ConnId>,
    /// A QoS 2 publish's `InboundPending` record, written only once the wait is over (see
    /// `Broker::journal_inbound_pending` in `acks.rs`): `(session, packet identifier)`.
    inbound: Option<(SessionId, u16)>,
}

/// Holds this shard's queues keep on another shard's token, and the journal position its reply
/// must wait for.
#[derive(Debug, Default)]
struct RemoteHold {
    outstanding: usize,
    seq: u64,
}

#[derive(Debug, Default)]
pub struct AckHolds {
    next_token: u64,
    waits: AHashMap<u64, Wait>,
    remote: AHashMap<(ShardId, u64), RemoteHold>,
    /// Connections with held acknowledgements.
    held_conns: AHashSet<ConnId>,
    /// Until when each other shard asked for tokens.
    paced_until: AHashMap<ShardId, Timestamp>,
    /// When this shard last asked each other shard for them.
    pace_requested: AHashMap<ShardId, Timestamp>,
}

/// What a token waited for, once nothing is left.
pub(super) struct Settled {
    pub conn: Option<ConnId>,
    pub inbound: Option<(SessionId, u16)>,
}

impl AckHolds {
    /// A new token, whose acknowledgement goes on `conn`.
    pub(super) fn new_token(&mut self, conn: ConnId) -> u64 {
        self.next_token += 1;
        let wait = Wait {
            outstanding: 0,
            conn: Some(conn),
            inbound: None,
        };
        self.waits.insert(self.next_token, wait);
        self.next_token
    }

    /// Whether `shard` asked, less than `PACED_FOR` ago, to be sent tokens.
    pub(super) fn is_paced(&self, shard: ShardId, now: Timestamp) -> bool {
        self.paced_until
            .get(&shard)
            .is_some_and(|until| now < *until)
    }

    pub(super) fn pace(&mut self, shard: ShardId, now: Timestamp) {
        self.paced_until.insert(shard, now + PACED_FOR);
    }

    /// Whether to ask `origin` to pace this shard now: at most every `PACE_REQUEST_INTERVAL`.
    pub(super) fn should_request_pacing(&mut self, origin: ShardId, now: Timestamp) -> bool {
        let last = self.pace_requested.get(&origin);
        if last.is_some_and(|at| now - *at < PACE_REQUEST_INTERVAL) {
            return false;
        }
        self.pace_requested.insert(origin, now);
        true
    }

    /// `token` waits for `count` more replies; with nothing to wait for, it is forgotten.
    pub(super) fn expect(&mut self, token: u64, count: usize) {
        if let Some(wait) = self.waits.get_mut(&token) {
            wait.outstanding += count;
            if wait.outstanding == 0 {
                self.waits.remove(&token);
            }
        }
    }

    /// A queue of shard `here` keeps `hold` back.
    pub(super) fn take_hold(&mut self, hold: Hold, here: ShardId) {
        if hold.origin == here {
            if let Some(wait) = self.waits.get_mut(&hold.token) {
                wait.outstanding += 1;
            }
        } else {
            let remote = self.remote.entry((hold.origin, hold.token)).or_default();
            remote.outstanding += 1;
        }
    }

    /// One hold on another shard's token is released; at the last, the journal position its
    /// reply must wait for.
    pub(super) fn release_remote(&mut self, origin: ShardId, token: u64) -> Option<u64> {
        let key = (origin, token);
        let remote = self.remote.get_mut(&key)?;
        remote.outstanding -= 1;
        if remote.outstanding > 0 {
            return None;
        }
        self.remote.remove(&key).map(|remote| remote.seq)
    }

    /// The reply to `from` for `token` waits for journal position `seq`, if its deliveries here
    /// still hold it back; false if nothing holds it.
    pub(super) fn defer_remote_reply(&mut self, from: ShardId, token: u64, seq: u64) -> bool {
        match self.remote.get_mut(&(from, token)) {
            Some(remote) => {
                remote.seq = seq;
                true
            }
            None => false,
        }
    }

    /// One thing `token` waited for is done; at the last, what it waited for.
    pub(super) fn settle(&mut self, token: u64) -> Option<Settled> {
        let wait = self.waits.get_mut(&token)?;
        wait.outstanding -= 1;
        if wait.outstanding > 0 {
            return None;
        }
        let wait = self.waits.remove(&token)?;
        Some(Settled {
            conn: wait.conn,
            inbound: wait.inbound,
        })
    }

    /// Keeps `(session, packet_id)`'s `InboundPending` record for when `token` settles; false
    /// if it waits for nothing.
    pub(super) fn defer_inbound(&mut self, token: u64, session: SessionId, packet_id: u16) -> bool {
        match self.waits.get_mut(&token) {
            Some(wait) => {
                wait.inbound = Some((session, packet_id));
                true
            }
            None => false,
        }
    }

    /// `token`'s acknowledgement now goes on `conn` (a QoS 2 resend on a new connection).
    pub(super) fn move_to(&mut self, token: u64, conn: ConnId) {
        if let Some(wait) = self.waits.get_mut(&token) {
            wait.conn = Some(conn);
        }
    }

    pub(super) fn hold_on(&mut self, conn: ConnId) {
        self.held_conns.insert(conn);
    }

    pub(super) fn forget_conn(&mut self, conn: ConnId) {
        self.held_conns.remove(&conn);
    }

    pub(super) fn held_conns(&self) -> Vec<ConnId> {
        self.held_conns.iter().copied().collect()
    }

    /// Acknowledgements still waiting, and holds kept for other shards' ones.
    #[cfg(any(test, feature = "sim"))]
    pub(in crate::broker) fn len(&self) -> usize {
        self.waits.len() + self.remote.len() + self.held_conns.len()
    }

    pub(super) fn is_done(&self, ack: &HeldAck, persisted: u64) -> bool {
        ack.seq <= persisted
            && ack
                .token
                .is_none_or(|token| !self.waits.contains_key(&token))
    }
}
