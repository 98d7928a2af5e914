//! A shard's persistent state as one value: [`Broker::snapshot_state`] takes it for a snapshot,
//! [`Broker::restore`] loads it (from the snapshot and journal replay) before the shard serves.
//!
//! Restored sessions are detached: their expiry restarts from the wall clock, and one whose
//! deadline passed while the broker was down is dropped. A delayed will keeps its wall-clock
//! deadline, so downtime counts towards its delay; one that fell due while the broker was down
//! is published on the first timer tick, late rather than never (and so is the will of a
//! session that expired meanwhile: only its will is restored, and the session ends on that
//! tick). Timers, not `restore`, publish them, because only once every shard has restored do
//! the shards know each other's subscribers. A client connected at the crash gets no will: the
//! broker, not the client, went away. Expired queued messages and retained messages are
//! dropped; an in-flight QoS 2 message already PUBRECed is kept whatever its expiry, since only
//! its PUBREL is still owed. A session keeps the user its client connected as, so the ACL in
//! force now judges what is queued for it while it waits for its client (a session of a format
//! before 3, which stored no user, is not identified until then: see `SessionAccess`).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use ahash::AHashMap;
use bytestring::ByteString;
use tracing::warn;

use super::convert::{awaiting, protocol_version, subscription};
use super::records::{
    ShardState, StoredAwaiting, StoredDelivery, StoredMessage, StoredSession, StoredWill,
};
use crate::broker::core::Broker;
use crate::broker::message::{Delivery, SharedMessage};
use crate::broker::routing::home_shard;
use crate::broker::session::{DelayedWill, Session};
use crate::broker::time::Timestamp;
use crate::broker::timers::Timer;
use crate::protocol::{ProtocolVersion, QoS};

/// What [`Broker::restore`] loaded and what it dropped, for the start-up log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreSummary {
    pub sessions: usize,
    pub sessions_expired: usize,
    /// Sessions that could not be restored: not homed on this shard, a duplicate client id, or
    /// an unknown protocol level.
    pub sessions_skipped: usize,
    /// Queued and in-flight messages restored.
    pub messages: usize,
    pub messages_expired: usize,
    pub retained: usize,
    /// Delayed wills re-armed, including those of sessions that expired while the broker was
    /// down (published on the first timer tick).
    pub wills: usize,
}

impl Broker {
    /// Loads `state` into a shard that has served nothing yet (`Broker::restore`).
    pub(in crate::broker) fn load_state(
        &mut self,
        state: ShardState,
        now: Timestamp,
    ) -> RestoreSummary {
        let mut summary = RestoreSummary::default();
        let mut messages: AHashMap<*const StoredMessage, Option<SharedMessage>> = AHashMap::new();
        // Sized once: grown entry by entry, maps of a hundred thousand sessions are rehashed
        // and their memory touched again at every doubling.
        self.sessions.reserve(state.sessions.len());
        // By reference: the map is keyed by address, so every stored message must stay alive
        // until the restore is done.
        for session in &state.sessions {
            self.restore_session(session, now, &mut messages, &mut summary);
        }
        for stored in state.retained.iter().flatten() {
            match self.restored_message(stored, now) {
                Some(message) if !message.is_expired(now) => {
                    self.retained.store(Arc::new(message));
                    summary.retained += 1;
                }
                _ => summary.messages_expired += 1,
            }
        }
        summary
    }

    fn restore_session(
        &mut self,
        stored: &StoredSession,
        now: Timestamp,
        messages: &mut AHashMap<*const StoredMessage, Option<SharedMessage>>,
        summary: &mut RestoreSummary,
    ) {
        let client_id: ByteString = stored.client_id.as_str().into();
        let home = home_shard(&client_id, self.shard_count);
        let version = protocol_version(stored.version);
        let Some(version) =
            version.filter(|_| home == self.shard && self.sessions.id_of(&client_id).is_none())
        else {
            warn!(%client_id, shard = self.shard, home, level = stored.version, "stored session cannot be restored here; skipped");
            summary.sessions_skipped += 1;
            return;
        };
        let expires_at = match (stored.expires_at_ms, stored.expiry_interval) {
            (_, 0) => None,
            (Some(deadline), _) => Some(self.timestamp_at(deadline, now)),
            (None, u32::MAX) => None,
            // Connected when the broker stopped: it detaches now.
            (None, secs) => Some(now + Duration::from_secs(u64::from(secs))),
        };
        let delayed_will = stored
            .delayed_will
            .as_ref()
            .and_then(|will| self.restored_will(will, now));
        summary.wills += usize::from(delayed_will.is_some());
        if stored.expiry_interval == 0 || expires_at.is_some_and(|at| at <= now) {
            summary.sessions_expired += 1;
            if let Some(will) = delayed_will {
                // It ended while the broker was down: its will is all that is left to do.
                let session_id = self.sessions.new_id();
                let mut session = restored_session(client_id, version, stored);
                session.expires_at = Some(now);
                session.delayed_will = Some(will);
                self.sessions.insert(session_id, session);
                self.timers.schedule(now, Timer::SessionExpiry(session_id));
            }
            return;
        }
        let session_id = self.sessions.new_id();
        let mut session = restored_session(client_id, version, stored);
        session.expires_at = expires_at;
        session.awaiting_pubrel = stored
            .awaiting_pubrel
            .iter()
            .map(|&id| (id, None))
            .collect();
        if let Some(will) = delayed_will {
            self.timers
                .schedule(will.publish_at, Timer::WillDelay(session_id));
            session.delayed_will = Some(will);
        }
        session
            .subscriptions_mut()
            .reserve(stored.subscriptions.len());
        let mut next_delivery = 0;
        for entry in &stored.inflight {
            next_delivery = next_delivery.max(entry.delivery.id);
            let keep_expired = entry.state == StoredAwaiting::PubComp;
            match self.restored_delivery(&entry.delivery, now, messages, keep_expired) {
                Some(delivery) => {
                    if session.outbound.restore_inflight(
                        entry.packet_id,
                        delivery,
                        awaiting(entry.state),
                    ) {
                        summary.messages += 1;
                    }
                }
                None => summary.messages_expired += 1,
            }
        }
        for stored_delivery in &stored.queued {
            next_delivery = next_delivery.max(stored_delivery.id);
            match self.restored_delivery(stored_delivery, now, messages, false) {
                Some(delivery) => {
                    session.outbound.enqueue(delivery, None);
                    summary.messages += 1;
                }
                None => summary.messages_expired += 1,
            }
        }
        session.next_delivery = next_delivery + 1;
        self.sessions.insert(session_id, session);
        if let Some(at) = expires_at {
            self.timers.schedule(at, Timer::SessionExpiry(session_id));
        }
        for stored_subscription in &stored.subscriptions {
            let Some(subscription) = subscription(stored_subscription) else {
                warn!(filter = %stored_subscription.filter, "stored subscription has invalid options; skipped");
                continue;
            };
            let filter: ByteString = stored_subscription.filter.as_str().into();
            if let Err(reason) = self.add_subscription(session_id, &filter, subscription) {
                warn!(%filter, %reason, "stored subscription refused; skipped");
            }
        }
        summary.sessions += 1;
    }

    /// A stored will, due at `now` if its deadline passed; `None` if its message does not decode.
    fn restored_will(&self, stored: &StoredWill, now: Timestamp) -> Option<DelayedWill> {
        Some(DelayedWill {
            message: Arc::new(self.restored_message(&stored.message, now)?),
            publish_at: self.timestamp_at(stored.publish_at_ms, now),
        })
    }

    /// A stored delivery as the session's queue holds it; `None` when its message expired (and
    /// `keep_expired` is false) or cannot be decoded.
    fn restored_delivery(
        &self,
        stored: &StoredDelivery,
        now: Timestamp,
        messages: &mut AHashMap<*const StoredMessage, Option<SharedMessage>>,
        keep_expired: bool,
    ) -> Option<Delivery> {
        let message = messages
            .entry(Arc::as_ptr(&stored.message))
            .or_insert_with(|| self.restored_message(&stored.message, now).map(Arc::new))
            .clone()?;
        if message.is_expired(now) && !keep_expired {
            return None;
        }
        Some(Delivery {
            id: stored.id,
            qos: QoS::from_u8(stored.qos)?,
            retain: stored.retain,
            subscription_ids: stored
                .subscription_ids
                .iter()
                .filter_map(|&id| NonZeroU32::new(id))
                .collect(),
            message,
        })
    }
}

/// The session `stored` describes, without its messages and subscriptions: journaled, and
/// identified as its client's user when the store knows it (from format 3 on), so that the ACL
/// judges its deliveries before the client is back as it would once it is.
fn restored_session(
    client_id: ByteString,
    version: ProtocolVersion,
    stored: &StoredSession,
) -> Session {
    let mut session = Session::new(client_id, version);
    session.expiry_interval = stored.expiry_interval;
    session.journaled = true;
    if let Some(username) = &stored.username {
        session
            .access
            .identify(username.as_deref().map(ByteString::from));
    }
    session
}
