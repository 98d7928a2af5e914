//! SUBSCRIBE and UNSUBSCRIBE: the session's subscription set, this shard's subscription trie,
//! the interest other shards are told about, and which retained messages a subscribe is owed.

use bytestring::ByteString;
use tracing::warn;

use crate::broker::access::FilterAccess;
use crate::broker::boundary::{ConnId, ShardMessage};
use crate::broker::core::Broker;
use crate::broker::persist::{stored_subscription, PersistRecord};
use crate::broker::routing::Subscriber;
use crate::broker::session::{SessionId, Subscription};
use crate::broker::time::Timestamp;
use crate::protocol::topic::{levels, parse_filter, FilterKind};
use crate::protocol::{
    Packet, ReasonCode, RetainHandling, SubAck, Subscribe, UnsubAck, Unsubscribe,
};

impl Broker {
    pub(in crate::broker) fn handle_subscribe(
        &mut self,
        conn: ConnId,
        session_id: SessionId,
        subscribe: Subscribe,
        now: Timestamp,
    ) {
        let ack = self.start_ack();
        let identifier = subscribe.properties.subscription_identifier;
        let mut reason_codes = Vec::with_capacity(subscribe.filters.len());
        for (filter, mut options) in subscribe.filters {
            if !self.may_subscribe(session_id, &filter, now) {
                reason_codes.push(ReasonCode::NOT_AUTHORIZED);
                continue;
            }
            options.qos = options.qos.min(self.config.maximum_qos);
            let subscription = Subscription {
                options,
                identifier,
            };
            match self.add_subscription(session_id, &filter, subscription) {
                Ok(is_new) => {
                    reason_codes.push(ReasonCode(options.qos as u8));
                    self.journal_session(session_id, |client_id| PersistRecord::Subscribed {
                        client_id,
                        subscription: stored_subscription(&filter, &subscription),
                    });
                    let send_retained = match options.retain_handling {
                        RetainHandling::SendOnSubscribe => true,
                        RetainHandling::SendIfNewSubscription => is_new,
                        RetainHandling::DoNotSend => false,
                    };
                    if send_retained {
                        self.owe_retained(conn, &filter, subscription, now);
                    }
                }
                Err(reason) => reason_codes.push(reason),
            }
        }
        let suback = SubAck {
            packet_id: subscribe.packet_id,
            reason_codes,
            ..SubAck::default()
        };
        self.acknowledge(conn, Packet::SubAck(suback), ack);
        self.resume_retained(session_id, now);
    }

    /// Whether the ACL lets the session read everything `filter` (of a shared subscription:
    /// its filter part) matches. Deliveries are checked again, one by one, where a grant covers
    /// the filter and a denial part of it.
    fn may_subscribe(&mut self, session_id: SessionId, filter: &str, now: Timestamp) -> bool {
        if !self.access.is_enabled() {
            return true;
        }
        // An invalid filter is refused for that by `add_subscription`.
        let Ok(kind) = parse_filter(filter) else {
            return true;
        };
        let Some(session) = self.sessions.get(&session_id) else {
            return false;
        };
        let access = self
            .access
            .filter_access(&session.access, &session.client_id, kind.filter());
        if access != FilterAccess::Denied {
            return true;
        }
        self.stats.acl_denied += 1;
        if let Some(unreported) = self.acl_denied_log.note(now) {
            warn!(
                client_id = %session.client_id,
                %filter,
                denied = unreported,
                "the ACL denies a subscription (count since the last such line, all clients)"
            );
        }
        false
    }

    pub(in crate::broker) fn handle_unsubscribe(
        &mut self,
        conn: ConnId,
        session_id: SessionId,
        unsubscribe: Unsubscribe,
    ) {
        let ack = self.start_ack();
        let reason_codes = unsubscribe
            .filters
            .iter()
            .map(|filter| {
                let existed = self
                    .sessions
                    .get_mut(&session_id)
                    .and_then(|session| session.subscriptions_mut().remove(filter))
                    .is_some();
                if existed {
                    self.remove_subscription_entry(session_id, filter);
                    if let Some(connection) = self.connections.get_mut(&conn) {
                        connection.retained_backlog.forget(filter);
                    }
                    self.journal_session(session_id, |client_id| PersistRecord::Unsubscribed {
                        client_id,
                        filter: filter.to_string(),
                    });
                    ReasonCode::SUCCESS
                } else {
                    ReasonCode::NO_SUBSCRIPTION_EXISTED
                }
            })
            .collect();
        let unsuback = UnsubAck(SubAck {
            packet_id: unsubscribe.packet_id,
            reason_codes,
            ..SubAck::default()
        });
        self.acknowledge(conn, Packet::UnsubAck(unsuback), ack);
    }

    /// Adds or replaces a subscription; `Ok(true)` when it did not exist before. Limits are
    /// checked here so each filter of a SUBSCRIBE gets its own answer.
    pub(in crate::broker) fn add_subscription(
        &mut self,
        session_id: SessionId,
        filter: &ByteString,
        subscription: Subscription,
    ) -> Result<bool, ReasonCode> {
        let max_levels = self.config.max_topic_levels;
        let max_subscriptions = self.config.max_subscriptions_per_client;
        let kind = parse_filter(filter).map_err(|_| ReasonCode::TOPIC_FILTER_INVALID)?;
        if max_levels > 0 && levels(kind.filter()).count() > max_levels {
            return Err(ReasonCode::TOPIC_FILTER_INVALID);
        }
        let session = self
            .sessions
            .get_mut(&session_id)
            .ok_or(ReasonCode::UNSPECIFIED_ERROR)?;
        let exists = session.subscriptions.contains_key(filter);
        if !exists && max_subscriptions > 0 && session.subscriptions.len() >= max_subscriptions {
            return Err(ReasonCode::QUOTA_EXCEEDED);
        }
        session
            .subscriptions_mut()
            .insert(filter.clone(), subscription);
        let (inner, share) = split_share(filter, kind);
        let key = Subscriber {
            session: session_id,
            share: share.clone(),
        };
        let connected = session.is_connected();
        // Replacing keeps the trie entry and the interest count as they are.
        let added = self
            .subscriptions
            .insert(&inner, key, subscription)
            .is_none();
        if let (Some(share), true) = (&share, added) {
            self.share_cursors.entry(share.clone()).or_default().members += 1;
        }
        if added && self.shard_count > 1 {
            if self.interest.add_local(&inner, &share) {
                self.announce_interest(inner, share.clone(), true);
            }
            if let (Some(share), true) = (&share, connected) {
                self.share_member_online(share, true);
            }
        }
        Ok(!exists)
    }

    /// Removes a subscription's trie entry and, if it was the shard's last for that filter,
    /// its interest on every shard. The session's own map is the caller's.
    pub(in crate::broker) fn remove_subscription_entry(
        &mut self,
        session_id: SessionId,
        filter: &ByteString,
    ) {
        let Ok(kind) = parse_filter(filter) else {
            return;
        };
        let (inner, share) = split_share(filter, kind);
        let key = Subscriber {
            session: session_id,
            share: share.clone(),
        };
        let removed = self.subscriptions.remove(&inner, &key).is_some();
        if let (Some(share), true) = (&share, removed) {
            self.forget_share_member(share);
        }
        if removed && self.shard_count > 1 {
            let connected = self
                .sessions
                .get(&session_id)
                .is_some_and(|session| session.is_connected());
            if let (Some(share), true) = (&share, connected) {
                self.share_member_online(share, false);
            }
            if self.interest.remove_local(&inner, &share) {
                self.announce_interest(inner, share, false);
            }
        }
    }

    /// A member of a shared subscription left this shard; with the last one goes its cursor, so
    /// groups that come and go leave nothing behind.
    fn forget_share_member(&mut self, share: &ByteString) {
        if let Some(cursor) = self.share_cursors.get_mut(share) {
            cursor.members -= 1;
            if cursor.members == 0 {
                self.share_cursors.remove(share);
            }
        }
    }

    /// Tells every other shard of this shard's interest change (`Interest::add_local` and
    /// `remove_local` recorded it here).
    fn announce_interest(&mut self, filter: ByteString, share: Option<ByteString>, added: bool) {
        let this_shard = self.shard;
        for shard in (0..self.shard_count).filter(|&shard| shard != this_shard) {
            let change = ShardMessage::Interest {
                filter: filter.clone(),
                share: share.clone(),
                added,
            };
            self.send_to_shard(shard, change);
        }
    }
}

/// The filter the trie matches on and, for a shared subscription, the full filter naming it.
fn split_share(filter: &ByteString, kind: FilterKind<'_>) -> (ByteString, Option<ByteString>) {
    match kind {
        FilterKind::Plain(_) => (filter.clone(), None),
        FilterKind::Shared { filter: inner, .. } => (filter.slice_ref(inner), Some(filter.clone())),
    }
}
