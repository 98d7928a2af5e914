//! Retained messages: whether a message entering the broker may be retained
//! (`Broker::fit_retained`), storing it (`Broker::store_retained`), and the retained messages a
//! SUBSCRIBE matched (MQTT-3.3.1-9), sent as the subscriber has room.
//!
//! A SUBSCRIBE only notes what its filters matched, in the connection's `RetainedBacklog`; the
//! messages go out in that order as room opens: at QoS 0 while the connection's unsent output
//! is under [`RETAINED_OUTPUT_CHUNK`], at QoS 1 and 2 while the in-flight window has room and
//! nothing is queued ahead. So a `#` over 100,000 retained messages overflows neither the send
//! buffer (past `max_outbound_buffer` QoS 0 is dropped) nor the session queue (past its limits
//! QoS 1/2 is dropped), and live messages keep their room in both. Room is looked for again
//! wherever it opens: when the runtime takes the connection's output (`Broker::take_output`)
//! and when the in-flight window moves (`Broker::fill_window`).
//!
//! The subscription is in place from the SUBSCRIBE on, so a live publish on a topic whose
//! retained message is still owed reaches the subscriber first. The owed copy is then older
//! than what the subscriber has, and the retained set no longer holds it: it is skipped, so
//! the last message a subscriber gets on a topic is the newest, as when everything was sent at
//! once.

use std::sync::Arc;

use bytestring::ByteString;
use tracing::warn;

use crate::broker::boundary::ConnId;
use crate::broker::core::Broker;
use crate::broker::message::{Delivery, Message};
use crate::broker::persist::PersistRecord;
use crate::broker::session::{SessionId, Subscription};
use crate::broker::time::Timestamp;
use crate::protocol::topic::{is_broker_topic, parse_filter, FilterKind};
use crate::protocol::QoS;

/// Unsent output under which owed QoS 0 retained messages are encoded: enough for writes that
/// keep the socket busy, small next to `max_outbound_buffer` so live QoS 0 messages still fit.
const RETAINED_OUTPUT_CHUNK: usize = 64 * 1024;

/// What becomes of the next owed retained message.
enum Next {
    /// There is room for it: send it, at this QoS.
    Send(QoS),
    /// It expired while owed.
    Expired,
    /// Replaced or cleared since it was matched; the subscriber got what replaced it live.
    Superseded,
}

impl Broker {
    /// `message` as it may be routed: unchanged, or without its retain flag when the retained
    /// set has no room for it (see `Retained::admits`), which the flag returned says. Refusals
    /// are counted and logged at a limited rate. Called once per message where it enters the
    /// broker (a PUBLISH, a will), before `route`.
    pub(in crate::broker) fn fit_retained(
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
    /// so shard 0 alone journals them; not the broker's own `$SYS` figures, which it publishes
    /// again every interval and which mean nothing after a restart.
    /// The message must not share a receive buffer (see `Message::detached`).
    pub(in crate::broker) fn store_retained(&mut self, message: &Arc<Message>) {
        self.retained.store(message.clone());
        let topic = &message.template.topic;
        if self.shard == 0 && self.persist.enabled && !is_broker_topic(topic) {
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

    /// Owes the subscriber on `conn` the retained messages matching `filter`, at most
    /// `max_retained_per_subscribe`; [`Broker::resume_retained`] sends them. Shared
    /// subscriptions get none (§4.8.2).
    pub(in crate::broker) fn owe_retained(
        &mut self,
        conn: ConnId,
        filter: &ByteString,
        subscription: Subscription,
        now: Timestamp,
    ) {
        let Ok(FilterKind::Plain(plain)) = parse_filter(filter) else {
            return;
        };
        let mut messages =
            self.retained
                .matching(plain, now, self.config.max_retained_per_subscribe);
        if self.access.is_enabled() {
            let session = self
                .connections
                .get(&conn)
                .and_then(|connection| connection.session())
                .and_then(|session_id| self.sessions.get_mut(&session_id));
            if let Some(session) = session {
                let client_id = &session.client_id;
                let access = &mut session.access;
                messages.retain(|message| {
                    self.access
                        .may_receive(access, client_id, &message.template.topic)
                });
            }
        }
        if let Some(connection) = self.connections.get_mut(&conn) {
            connection
                .retained_backlog
                .push(filter.clone(), subscription, messages);
        }
    }

    /// Sends the retained messages owed to the session's connection, with RETAIN set, in order,
    /// for as long as there is room for the next one.
    ///
    /// A QoS 1/2 one goes to a journaled session's journal only now, as it enters the window.
    /// When this runs inside `take_output`, that record waits for the runtime's next drain of
    /// the outputs, which the message's acknowledgement (an input) brings at the latest.
    pub(in crate::broker) fn resume_retained(&mut self, session_id: SessionId, now: Timestamp) {
        while let Some((conn, next)) = self.next_retained(session_id, now) {
            let Some(connection) = self.connections.get_mut(&conn) else {
                return;
            };
            let Some((message, subscription)) = connection.retained_backlog.pop() else {
                return;
            };
            match next {
                Next::Expired => self.stats.expired_dropped += 1,
                Next::Superseded => {}
                Next::Send(qos) => {
                    let delivery = Delivery {
                        id: 0,
                        qos,
                        retain: true,
                        subscription_ids: subscription.identifier.into_iter().collect(),
                        message,
                    };
                    self.deliver_one(session_id, delivery, now);
                }
            }
        }
    }

    /// The session's connection and what to do with the next message owed to it; `None` when
    /// nothing is owed or there is no room for it yet.
    fn next_retained(&self, session_id: SessionId, now: Timestamp) -> Option<(ConnId, Next)> {
        let session = self.sessions.get(&session_id)?;
        let conn = session.connection?;
        let (message, subscription) = self.connections.get(&conn)?.retained_backlog.next()?;
        if message.is_expired(now) {
            return Some((conn, Next::Expired));
        }
        if !self.retained.holds(message) {
            return Some((conn, Next::Superseded));
        }
        let qos = message.template.qos.min(subscription.options.qos);
        let has_room = if qos == QoS::AtMostOnce {
            // At least one message when nothing is waiting, however small the limit.
            let budget = RETAINED_OUTPUT_CHUNK.min(self.config.max_outbound_buffer);
            let pending = self.pending_output(conn);
            pending == 0 || pending < budget
        } else {
            self.sends_now(session)
        };
        has_room.then_some((conn, Next::Send(qos)))
    }
}
