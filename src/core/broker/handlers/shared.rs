//! Shared subscriptions (`$share/group/filter`, §4.8.2) beyond picking a member: which shards
//! have a connected member (so a message goes where it can be taken now), and the messages a
//! member leaves unacknowledged when its session ends, which go to another member.

use bytestring::ByteString;

use crate::broker::ack_holds::PushBack;
use crate::broker::boundary::ShardMessage;
use crate::broker::core::Broker;
use crate::broker::inflight::Awaiting;
use crate::broker::message::SharedMessage;
use crate::broker::session::{Session, SessionId};
use crate::broker::time::Timestamp;
use crate::protocol::topic::{matches_filter, parse_filter, FilterKind};

impl Broker {
    /// A session's shared-subscription memberships come online or go offline with its
    /// connection.
    pub(in crate::broker) fn shares_follow_connection(
        &mut self,
        session_id: SessionId,
        online: bool,
    ) {
        if self.shard_count == 1 {
            return;
        }
        let Some(session) = self.sessions.get(&session_id) else {
            return;
        };
        let shares: Vec<ByteString> = session
            .subscriptions
            .keys()
            .filter(|filter| filter.starts_with("$share/"))
            .cloned()
            .collect();
        for share in shares {
            self.share_member_online(&share, online);
        }
    }

    /// Counts one of this shard's members of `share` connecting or disconnecting, and tells
    /// the other shards when it is the shard's first or last (`Interest::member_online`).
    pub(in crate::broker) fn share_member_online(&mut self, share: &ByteString, online: bool) {
        if !self.interest.member_online(share, online) {
            return;
        }
        let this_shard = self.shard;
        for shard in (0..self.shard_count).filter(|&shard| shard != this_shard) {
            let news = ShardMessage::ShareOnline {
                share: share.clone(),
                online,
            };
            self.send_to_shard(shard, news);
        }
    }

    /// Hands the messages `session` holds unacknowledged or queued for its shared subscriptions
    /// to other members of the same groups: its session is ending, so it will never take them
    /// (§4.8.2: the server SHOULD send them to another subscribing client). The session must
    /// already be out of the subscription tries, so it is not picked again.
    pub(in crate::broker) fn hand_shared_messages_on(
        &mut self,
        orphans: Vec<(ByteString, SharedMessage)>,
        now: Timestamp,
    ) {
        for (share, message) in orphans {
            self.deliver_to_group(message, share, now);
        }
    }

    /// Sends `message` on to the shared subscriptions in `groups`, which were routed to this
    /// shard but have no member here any more (the last one left while it was on its way): to
    /// a member on another shard, if any is left.
    pub(in crate::broker) fn pass_on_groups(
        &mut self,
        message: &SharedMessage,
        groups: &[ByteString],
        now: Timestamp,
    ) {
        if self.shard_count == 1 {
            return;
        }
        for share in groups {
            self.deliver_to_group(message.clone(), share.clone(), now);
        }
    }

    /// Delivers `message` to one member of the shared subscription `share` and to no one else.
    fn deliver_to_group(&mut self, message: SharedMessage, share: ByteString, now: Timestamp) {
        let groups = vec![share];
        if self.shard_count == 1 {
            return self.deliver_local(&message, false, Some(&groups), PushBack::Nobody, now);
        }
        let routes = self
            .interest
            .route(&message.template.topic, self.shard_count);
        let Some(shard) = routes
            .iter()
            .position(|route| route.groups.contains(&groups[0]))
        else {
            // The group has no member left: the message goes with the session, as any other.
            return;
        };
        if shard == self.shard {
            self.deliver_local(&message, false, Some(&groups), PushBack::Nobody, now);
        } else {
            let item = ShardMessage::Publish {
                message,
                deliver: false,
                groups,
                store_retained: false,
                ack: None,
            };
            self.send_to_shard(shard, item);
        }
    }
}

/// The messages `session` still owes its client (queued, or sent and not acknowledged; a QoS 2
/// message whose PUBREC came is delivered) that reached it through one of its shared
/// subscriptions, each with that subscription's full filter. A message that also matches one
/// of its plain subscriptions stays: it was the session's own.
pub(in crate::broker) fn shared_orphans(session: &Session) -> Vec<(ByteString, SharedMessage)> {
    let mut shares = Vec::new();
    let mut plain = Vec::new();
    for filter in session.subscriptions.keys() {
        match parse_filter(filter) {
            Ok(FilterKind::Shared { filter: inner, .. }) => shares.push((filter, inner)),
            Ok(FilterKind::Plain(_)) => plain.push(filter.as_ref()),
            Err(_) => {}
        }
    }
    if shares.is_empty() {
        return Vec::new();
    }
    let unacknowledged = session
        .outbound
        .inflight()
        .filter(|inflight| inflight.state != Awaiting::PubComp)
        .map(|inflight| &inflight.delivery)
        .chain(session.outbound.queued());
    let mut orphans = Vec::new();
    for delivery in unacknowledged {
        let topic = &delivery.message.template.topic;
        if plain.iter().any(|filter| matches_filter(filter, topic)) {
            continue;
        }
        if let Some((share, _)) = shares
            .iter()
            .find(|(_, inner)| matches_filter(inner, topic))
        {
            orphans.push(((*share).clone(), delivery.message.clone()));
        }
    }
    orphans
}
