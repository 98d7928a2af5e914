//! The life cycle of connections and sessions beyond their packets: detaching a connection
//! from its session (the will, session expiry), ending a session, and the timers that end
//! them (keepalive, session expiry, delayed wills, the expiry sweep).

use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;
use tracing::{debug, info};

use crate::broker::boundary::ConnId;
use crate::broker::connection::{Ending, Phase};
use crate::broker::core::Broker;
use crate::broker::handlers::shared::shared_orphans;
use crate::broker::message::Message;
use crate::broker::persist::PersistRecord;
use crate::broker::session::{DelayedWill, SessionId};
use crate::broker::time::Timestamp;
use crate::broker::timers::Timer;
use crate::protocol::{LastWill, Publish, PublishProperties, ReasonCode};

impl Broker {
    /// Detaches a connection from its session: the will, session expiry, and the bookkeeping that
    /// makes a later takeover or reconnect see a free session. Idempotent.
    pub(in crate::broker) fn end_connection(&mut self, conn: ConnId, now: Timestamp) {
        let Some(connection) = self.connections.get_mut(&conn) else {
            return;
        };
        let phase = std::mem::replace(&mut connection.phase, Phase::Closing);
        connection.retained_backlog.clear();
        let Phase::Connected(session_id) = phase else {
            return;
        };
        let will = connection.will.take();
        let normal = connection.disconnected_normally;
        let client_id = connection.client_id.clone();
        let origin = connection.origin;
        let ending = connection.ending;
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        if session.connection != Some(conn) {
            return;
        }
        session.connection = None;
        self.shares_follow_connection(session_id, false);
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        // Offline, it is slow on its own account: it no longer holds publishers back.
        session.outbound.stalled = false;
        let holds = session.outbound.take_holds();
        let expiry = session.expiry_interval;
        let listener = self.config.listener_name(origin.listener);
        let reason = ending.unwrap_or(Ending::Lost);
        info!(?conn, %client_id, peer = %origin, listener, %reason, "client disconnected");
        if let (Some(will), false) = (will, normal) {
            let delay = will.properties.will_delay_interval.unwrap_or(0);
            let message = Arc::new(will_message(*will, &client_id, now));
            if delay == 0 || expiry == 0 {
                self.publish_will(message, now);
            } else {
                // Published when the delay passes or the session ends, whichever is first
                // (§3.1.3.2.2); a reconnect before then cancels it.
                let publish_at = now + Duration::from_secs(u64::from(delay.min(expiry)));
                session.delayed_will = Some(DelayedWill {
                    message: message.clone(),
                    publish_at,
                });
                self.timers
                    .schedule(publish_at, Timer::WillDelay(session_id));
                self.journal_delayed_will(session_id, &message, publish_at);
            }
        }
        self.release_holds(holds);
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        let expires_at = match expiry {
            0 => return self.discard_session(session_id, now),
            // 0xFFFFFFFF: the session does not expire (§3.1.2.11.2).
            u32::MAX => None,
            secs => {
                let at = now + Duration::from_secs(u64::from(secs));
                session.expires_at = Some(at);
                self.timers.schedule(at, Timer::SessionExpiry(session_id));
                Some(at)
            }
        };
        let expires_at_ms = expires_at.map(|at| self.unix_ms(at));
        self.journal_session(session_id, |client_id| PersistRecord::SessionDetached {
            client_id,
            expiry_interval: expiry,
            expires_at_ms,
        });
    }

    /// A will that must outlive a restart: it is due at a wall-clock time, so the broker that
    /// restores it publishes it when it would have been published anyway.
    fn journal_delayed_will(&mut self, session_id: SessionId, will: &Message, at: Timestamp) {
        if !self.persist.enabled {
            // Not worth copying the message into its stored form for nothing.
            return;
        }
        let message = Arc::new(self.stored_message(will));
        let publish_at_ms = self.unix_ms(at);
        self.journal_session(session_id, |client_id| PersistRecord::WillDelayed {
            client_id,
            message,
            publish_at_ms,
        });
    }

    /// Ends a session: its subscriptions leave the tries, and a will still waiting for its delay
    /// is published now, because the session ended first.
    pub(in crate::broker) fn discard_session(&mut self, session_id: SessionId, now: Timestamp) {
        self.journal_session(session_id, |client_id| PersistRecord::SessionEnded {
            client_id,
        });
        let Some(mut session) = self.sessions.remove(session_id) else {
            return;
        };
        self.release_holds(session.outbound.take_holds());
        let orphans = shared_orphans(&session);
        for (filter, _) in session.subscriptions_mut().drain() {
            self.remove_subscription_entry(session_id, &filter);
        }
        self.hand_shared_messages_on(orphans, now);
        if let Some(will) = session.delayed_will.take() {
            self.publish_will(will.message, now);
        }
    }

    pub(in crate::broker) fn publish_will(&mut self, message: Arc<Message>, now: Timestamp) {
        self.stats.wills_published += 1;
        let (message, _) = self.fit_retained(message, now);
        self.route(message, now, None);
    }

    pub(in crate::broker) fn check_keepalive(&mut self, conn: ConnId, now: Timestamp) {
        let Some(connection) = self.connections.get(&conn) else {
            return;
        };
        let deadline = match connection.phase {
            // The connect timeout covers proving who the client is.
            Phase::AwaitingConnect | Phase::Authenticating => Some(now),
            Phase::Connected(_) => connection.keepalive_deadline(),
            Phase::Closing => None,
        };
        match deadline {
            Some(deadline) if deadline <= now => {
                if connection.session().is_none() {
                    let origin = connection.origin;
                    let listener = self.config.listener_name(origin.listener);
                    info!(?conn, peer = %origin, listener, "connection closed: no CONNECT (or authentication) within the connect timeout");
                }
                self.disconnect(conn, ReasonCode::KEEP_ALIVE_TIMEOUT, now);
            }
            Some(deadline) => self.timers.schedule(deadline, Timer::KeepAlive(conn)),
            None => {}
        }
    }

    pub(in crate::broker) fn check_session_expiry(
        &mut self,
        session_id: SessionId,
        now: Timestamp,
    ) {
        let Some(session) = self.sessions.get(&session_id) else {
            return;
        };
        if session.has_expired(now) {
            debug!(client_id = %session.client_id, "session expired");
            self.stats.sessions_expired += 1;
            self.discard_session(session_id, now);
        }
    }

    pub(in crate::broker) fn check_delayed_will(&mut self, session_id: SessionId, now: Timestamp) {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        if session
            .delayed_will
            .as_ref()
            .is_some_and(|will| will.publish_at <= now)
        {
            let will = session.delayed_will.take().map(|will| will.message);
            if let Some(message) = will {
                self.journal_session(session_id, |client_id| PersistRecord::WillPublished {
                    client_id,
                });
                self.publish_will(message, now);
            }
        }
    }

    pub(in crate::broker) fn sweep_expired(&mut self, now: Timestamp) {
        let mut expired = self.retained.sweep(now);
        let mut released = Vec::new();
        for session in self.sessions.values_mut() {
            let (dropped, holds) = session
                .outbound
                .retain_queued(|delivery| !delivery.message.is_expired(now));
            session.outbound.dropped.expired += dropped as u64;
            expired += dropped;
            released.extend(holds);
        }
        self.release_holds(released);
        self.stats.expired_dropped += expired as u64;
        self.timers
            .schedule(now + self.config.expiry_sweep_interval, Timer::ExpirySweep);
    }
}

/// The message a will becomes (§3.1.2.5): the will's topic, payload, QoS, retain flag and
/// properties, published on the client's behalf.
fn will_message(will: LastWill, client_id: &ByteString, now: Timestamp) -> Message {
    let props = will.properties;
    let publish = Publish {
        dup: false,
        qos: will.qos,
        retain: will.retain,
        topic: will.topic,
        packet_id: 0,
        properties: PublishProperties {
            payload_format_indicator: props.payload_format_indicator,
            message_expiry_interval: props.message_expiry_interval,
            response_topic: props.response_topic,
            correlation_data: props.correlation_data,
            content_type: props.content_type,
            user_properties: props.user_properties,
            ..PublishProperties::default()
        }
        .into(),
        payload: will.payload,
    };
    Message::from_publish(publish, Some(client_id.clone()), now)
}
