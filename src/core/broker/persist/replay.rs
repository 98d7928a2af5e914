//! Rebuilding state from what the store recovered: snapshots and journal records of every
//! stream, applied in LSN order, then split by the shard each client is homed on now.
//!
//! A snapshot *replaces* the state of every client it contains, and (shard 0's) its retained
//! set; records then change it. Applying everything in LSN order is what makes a change of shard
//! count safe: a client's state may sit in its old shard's stream and, once re-homed, in its new
//! shard's stream too, and the newer one wins.
//!
//! Records that do not fit the state (a delivery for a session that is gone, an unknown packet
//! identifier) are ignored: they can only follow damage that recovery already reported.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use ahash::AHashMap;

use super::records::{
    PersistRecord, ShardState, StoredAwaiting, StoredDelivery, StoredInflight, StoredMessage,
    StoredSession, StoredWill,
};
use crate::broker::routing::home_shard;

#[derive(Debug, Default)]
pub struct Replay {
    sessions: AHashMap<String, ReplaySession>,
    retained: BTreeMap<String, Arc<StoredMessage>>,
}

/// A session being rebuilt; the queue is a deque because `Started` takes from its front.
#[derive(Debug)]
struct ReplaySession {
    stored: StoredSession,
    queued: VecDeque<StoredDelivery>,
}

impl ReplaySession {
    fn new(stored: StoredSession) -> ReplaySession {
        let mut stored = stored;
        let queued = std::mem::take(&mut stored.queued).into();
        ReplaySession { stored, queued }
    }

    fn into_stored(self) -> StoredSession {
        let mut stored = self.stored;
        stored.queued = self.queued.into();
        stored
    }
}

impl Replay {
    pub fn new() -> Replay {
        Replay::default()
    }

    pub fn apply_snapshot(&mut self, state: ShardState) {
        for session in state.sessions {
            self.sessions
                .insert(session.client_id.clone(), ReplaySession::new(session));
        }
        if let Some(retained) = state.retained {
            self.retained = retained
                .into_iter()
                .map(|message| (message.topic.clone(), message))
                .collect();
        }
    }

    pub fn apply_record(&mut self, record: PersistRecord) {
        match record {
            PersistRecord::SessionOpened {
                client_id,
                version,
                expiry_interval,
            } => {
                let session = self
                    .sessions
                    .entry(client_id.clone())
                    .or_insert_with(|| ReplaySession::new(empty_session(client_id)));
                session.stored.version = version;
                session.stored.expiry_interval = expiry_interval;
                session.stored.expires_at_ms = None;
                // The client is back: a will still delayed is cancelled (MQTT-3.1.3-9).
                session.stored.delayed_will = None;
                // The user stays the one last recorded until the `SessionIdentified` that
                // follows: should a crash lose that record, the session is judged as the user
                // who made its subscriptions, not as an unknown one, whom the ACL lets read.
            }
            PersistRecord::SessionDetached {
                client_id,
                expiry_interval,
                expires_at_ms,
            } => {
                if let Some(session) = self.sessions.get_mut(&client_id) {
                    session.stored.expiry_interval = expiry_interval;
                    session.stored.expires_at_ms = expires_at_ms;
                }
            }
            PersistRecord::SessionEnded { client_id } => {
                self.sessions.remove(&client_id);
            }
            PersistRecord::Subscribed {
                client_id,
                subscription,
            } => {
                if let Some(session) = self.sessions.get_mut(&client_id) {
                    let subscriptions = &mut session.stored.subscriptions;
                    match subscriptions
                        .iter_mut()
                        .find(|s| s.filter == subscription.filter)
                    {
                        Some(existing) => *existing = subscription,
                        None => subscriptions.push(subscription),
                    }
                }
            }
            PersistRecord::Unsubscribed { client_id, filter } => {
                if let Some(session) = self.sessions.get_mut(&client_id) {
                    session.stored.subscriptions.retain(|s| s.filter != filter);
                }
            }
            PersistRecord::Queued { message, to } => {
                for target in to {
                    if let Some(session) = self.sessions.get_mut(&target.client_id) {
                        session.queued.push_back(StoredDelivery {
                            id: target.id,
                            message: message.clone(),
                            qos: target.qos,
                            retain: target.retain,
                            subscription_ids: target.subscription_ids,
                        });
                    }
                }
            }
            PersistRecord::Started {
                client_id,
                id,
                packet_id,
            } => {
                if let Some(session) = self.sessions.get_mut(&client_id) {
                    if let Some(index) = session.queued.iter().position(|d| d.id == id) {
                        let delivery = session.queued.remove(index).expect("index is in range");
                        let state = if delivery.qos == 2 {
                            StoredAwaiting::PubRec
                        } else {
                            StoredAwaiting::PubAck
                        };
                        session.stored.inflight.push(StoredInflight {
                            packet_id,
                            state,
                            delivery,
                        });
                    }
                }
            }
            PersistRecord::PubRecReceived {
                client_id,
                packet_id,
            } => {
                if let Some(entry) = self.inflight(&client_id, packet_id) {
                    entry.state = StoredAwaiting::PubComp;
                }
            }
            PersistRecord::Finished {
                client_id,
                packet_id,
            } => {
                if let Some(session) = self.sessions.get_mut(&client_id) {
                    session
                        .stored
                        .inflight
                        .retain(|entry| entry.packet_id != packet_id);
                }
            }
            PersistRecord::Dropped { client_id, id } => {
                if let Some(session) = self.sessions.get_mut(&client_id) {
                    session.queued.retain(|delivery| delivery.id != id);
                }
            }
            PersistRecord::InboundPending {
                client_id,
                packet_id,
            } => {
                if let Some(session) = self.sessions.get_mut(&client_id) {
                    if !session.stored.awaiting_pubrel.contains(&packet_id) {
                        session.stored.awaiting_pubrel.push(packet_id);
                    }
                }
            }
            PersistRecord::InboundReleased {
                client_id,
                packet_id,
            } => {
                if let Some(session) = self.sessions.get_mut(&client_id) {
                    session.stored.awaiting_pubrel.retain(|&id| id != packet_id);
                }
            }
            PersistRecord::RetainedSet { message } => {
                self.retained.insert(message.topic.clone(), message);
            }
            PersistRecord::RetainedCleared { topic } => {
                self.retained.remove(&topic);
            }
            PersistRecord::WillDelayed {
                client_id,
                message,
                publish_at_ms,
            } => {
                if let Some(session) = self.sessions.get_mut(&client_id) {
                    session.stored.delayed_will = Some(StoredWill {
                        message,
                        publish_at_ms,
                    });
                }
            }
            PersistRecord::WillPublished { client_id } => {
                if let Some(session) = self.sessions.get_mut(&client_id) {
                    session.stored.delayed_will = None;
                }
            }
            PersistRecord::SessionIdentified {
                client_id,
                username,
            } => {
                if let Some(session) = self.sessions.get_mut(&client_id) {
                    session.stored.username = Some(username);
                }
            }
        }
    }

    fn inflight(&mut self, client_id: &str, packet_id: u16) -> Option<&mut StoredInflight> {
        self.sessions
            .get_mut(client_id)?
            .stored
            .inflight
            .iter_mut()
            .find(|entry| entry.packet_id == packet_id)
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// What each of `shard_count` shards restores: the sessions homed on it, sorted by client id
    /// so restores are deterministic, and every shard the whole retained set (shared, not
    /// copied). Before writing one as a snapshot, see [`ShardState::owned_by`].
    pub fn into_shards(self, shard_count: usize) -> Vec<ShardState> {
        let shard_count = shard_count.max(1);
        let retained: Vec<Arc<StoredMessage>> = self.retained.into_values().collect();
        let mut shards: Vec<ShardState> = (0..shard_count)
            .map(|_| ShardState {
                sessions: Vec::new(),
                retained: Some(retained.clone()),
            })
            .collect();
        let mut sessions: Vec<StoredSession> = self
            .sessions
            .into_values()
            .map(ReplaySession::into_stored)
            .collect();
        sessions.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        for session in sessions {
            shards[home_shard(&session.client_id, shard_count)]
                .sessions
                .push(session);
        }
        shards
    }
}

fn empty_session(client_id: String) -> StoredSession {
    StoredSession {
        client_id,
        version: 4,
        expiry_interval: 0,
        expires_at_ms: None,
        subscriptions: Vec::new(),
        inflight: Vec::new(),
        queued: Vec::new(),
        awaiting_pubrel: Vec::new(),
        delayed_will: None,
        username: None,
    }
}
