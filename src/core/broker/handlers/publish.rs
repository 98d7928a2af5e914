//! Inbound PUBLISH and the QoS handshakes in both directions (§4.3), plus DISCONNECT.
//!
//! Inbound QoS 2 is exactly-once by identifier: the message is routed when its PUBLISH first
//! arrives and the identifier is remembered in the session until PUBREL, so a repeated PUBLISH
//! (DUP or not) is answered with PUBREC again but never routed twice.

use std::sync::Arc;

use tracing::{debug, warn};

use crate::broker::acks::AckGuard;
use crate::broker::boundary::ConnId;
use crate::broker::connection::Ending;
use crate::broker::core::Broker;
use crate::broker::inflight::{AckMismatch, Awaiting};
use crate::broker::message::Message;
use crate::broker::persist::PersistRecord;
use crate::broker::session::SessionId;
use crate::broker::time::Timestamp;
use crate::protocol::topic::{is_broker_topic, levels};
use crate::protocol::{Ack, Disconnect, Packet, Publish, QoS, ReasonCode};

impl Broker {
    pub(in crate::broker) fn handle_publish(
        &mut self,
        conn: ConnId,
        session_id: SessionId,
        mut publish: Publish,
        now: Timestamp,
    ) {
        self.stats.publishes_received += 1;
        self.stats.received_by_qos[publish.qos as usize] += 1;
        let mut ack = self.start_ack();
        if let Err((reason, what)) = self.resolve_topic(conn, &mut publish) {
            return self.reject(conn, reason, what, now);
        }
        if publish.qos > self.config.maximum_qos {
            return self.reject(
                conn,
                ReasonCode::QOS_NOT_SUPPORTED,
                "QoS above Maximum QoS",
                now,
            );
        }
        if publish.retain && !self.config.retain_available {
            return self.reject(
                conn,
                ReasonCode::RETAIN_NOT_SUPPORTED,
                "retain not available",
                now,
            );
        }
        if self.config.max_topic_levels > 0
            && levels(&publish.topic).count() > self.config.max_topic_levels
        {
            return self.reject(
                conn,
                ReasonCode::TOPIC_NAME_INVALID,
                "too many topic levels",
                now,
            );
        }
        let packet_id = publish.packet_id;
        let qos = publish.qos;
        // A payload declared UTF-8 that is not (§3.3.2.3.2): refused as Mosquitto does, with
        // the acknowledgement's reason code, or DISCONNECT when QoS 0 has no acknowledgement.
        if publish.properties.payload_format_indicator == Some(true)
            && std::str::from_utf8(&publish.payload).is_err()
        {
            let reason = ReasonCode::PAYLOAD_FORMAT_INVALID;
            if qos == QoS::AtMostOnce {
                return self.reject(conn, reason, "payload is not UTF-8", now);
            }
            return self.refuse_publish(conn, qos, packet_id, reason, ack);
        }
        // `$SYS/...` is the broker's own (§4.7.2): a client may not publish there, nor have
        // the topic's subscribers believe the broker said it. As for an unauthorized publish,
        // the acknowledgement carries 0x87 in v5; 3.x acknowledgements have no reason code,
        // and MQTT-3.3.5-2 lets a server acknowledge what it does not accept, as Mosquitto
        // does. QoS 0 is dropped without a word.
        if is_broker_topic(&publish.topic) {
            self.stats.publishes_refused += 1;
            if let Some(unreported) = self.refused_publish_log.note(now) {
                let client_id = self.connections.get(&conn).map(|c| &c.client_id);
                warn!(
                    ?client_id,
                    topic = %publish.topic,
                    refused = unreported,
                    "refusing client publishes to $SYS topics, which belong to the broker \
                     (count since the last such line, all clients)"
                );
            }
            return self.refuse_publish(conn, qos, packet_id, ReasonCode::NOT_AUTHORIZED, ack);
        }
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        if self.access.is_enabled()
            && !self
                .access
                .may_publish(&mut session.access, &session.client_id, &publish.topic)
        {
            self.stats.acl_denied += 1;
            if let Some(unreported) = self.acl_denied_log.note(now) {
                warn!(
                    client_id = %session.client_id,
                    topic = %publish.topic,
                    denied = unreported,
                    "the ACL denies a publish (count since the last such line, all clients)"
                );
            }
            return self.refuse_publish(conn, qos, packet_id, ReasonCode::NOT_AUTHORIZED, ack);
        }
        if qos == QoS::ExactlyOnce {
            if let Some(&first) = session.awaiting_pubrel.get(&packet_id) {
                // A resend of a message already routed: acknowledge only, once its first
                // routing is done.
                let packet = Packet::PubRec(Ack::new(packet_id));
                return self.acknowledge(conn, packet, ack.resend_of(first));
            }
            if session.awaiting_pubrel.len() >= usize::from(self.config.receive_maximum) {
                return self.reject(
                    conn,
                    ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                    "more unacknowledged QoS 2 publishes than Receive Maximum",
                    now,
                );
            }
        }
        let Some(session) = self.sessions.get(&session_id) else {
            return;
        };
        let publisher = Some(session.client_id.clone());
        let message = Arc::new(Message::from_publish(publish, publisher, now));
        // Past the retained set's limits a v5 QoS 1/2 publish is refused with 0x97 (quota
        // exceeded); otherwise it is delivered without being retained (3.x cannot be told).
        let (message, not_retained) = self.fit_retained(message, now);
        let v5 = |broker: &Broker| {
            broker
                .connections
                .get(&conn)
                .is_some_and(|connection| connection.version.is_v5())
        };
        if not_retained && qos != QoS::AtMostOnce && v5(self) {
            return self.refuse_publish(conn, qos, packet_id, ReasonCode::QUOTA_EXCEEDED, ack);
        }
        if qos != QoS::AtMostOnce {
            self.wait_for_deliveries(&mut ack, conn);
        }
        if qos == QoS::ExactlyOnce {
            if let Some(session) = self.sessions.get_mut(&session_id) {
                session.awaiting_pubrel.insert(packet_id, ack.token());
            }
            ack.journal_inbound(session_id, packet_id);
        }
        self.route(message, now, Some(&mut ack));
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.acknowledge(conn, Packet::PubAck(Ack::new(packet_id)), ack),
            QoS::ExactlyOnce => self.acknowledge(conn, Packet::PubRec(Ack::new(packet_id)), ack),
        }
    }

    /// Acknowledges a QoS 1/2 PUBLISH that is not routed with `reason` (v5; a 3.x client
    /// sees a plain acknowledgement). QoS 0 has nothing to answer.
    fn refuse_publish(
        &mut self,
        conn: ConnId,
        qos: QoS,
        packet_id: u16,
        reason: ReasonCode,
        ack: AckGuard,
    ) {
        let refusal = Ack::with_reason(packet_id, reason);
        let packet = match qos {
            QoS::AtMostOnce => return,
            QoS::AtLeastOnce => Packet::PubAck(refusal),
            QoS::ExactlyOnce => Packet::PubRec(refusal),
        };
        self.acknowledge(conn, packet, ack);
    }

    /// Applies the v5 topic alias rules (§3.3.2.3.4) and rejects client-sent subscription
    /// identifiers (MQTT-3.3.4-6). On success `publish.topic` is the full topic.
    fn resolve_topic(
        &mut self,
        conn: ConnId,
        publish: &mut Publish,
    ) -> Result<(), (ReasonCode, &'static str)> {
        if !publish.properties.subscription_identifiers.is_empty() {
            return Err((
                ReasonCode::PROTOCOL_ERROR,
                "PUBLISH from a client with a subscription identifier",
            ));
        }
        // `get_mut`: taking the alias must not allocate properties for a PUBLISH that has none.
        let Some(alias) = publish
            .properties
            .get_mut()
            .and_then(|properties| properties.topic_alias.take())
        else {
            return Ok(());
        };
        let Some(connection) = self.connections.get_mut(&conn) else {
            return Ok(());
        };
        let Some(slot) = connection
            .topic_aliases
            .get_mut(usize::from(alias.get()) - 1)
        else {
            return Err((
                ReasonCode::TOPIC_ALIAS_INVALID,
                "topic alias above Topic Alias Maximum",
            ));
        };
        if publish.topic.is_empty() {
            match slot {
                Some(topic) => publish.topic = topic.clone(),
                None => return Err((ReasonCode::PROTOCOL_ERROR, "unknown topic alias")),
            }
        } else {
            *slot = Some(publish.topic.clone());
        }
        Ok(())
    }

    pub(in crate::broker) fn handle_puback(
        &mut self,
        conn: ConnId,
        session_id: SessionId,
        ack: Ack,
        now: Timestamp,
    ) {
        self.complete_outbound(conn, session_id, ack.packet_id, Awaiting::PubAck, now);
    }

    pub(in crate::broker) fn handle_pubcomp(
        &mut self,
        conn: ConnId,
        session_id: SessionId,
        ack: Ack,
        now: Timestamp,
    ) {
        self.complete_outbound(conn, session_id, ack.packet_id, Awaiting::PubComp, now);
    }

    fn complete_outbound(
        &mut self,
        conn: ConnId,
        session_id: SessionId,
        packet_id: u16,
        state: Awaiting,
        now: Timestamp,
    ) {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        match session.outbound.complete(packet_id, state) {
            Ok(()) => {
                self.journal_session(session_id, |client_id| PersistRecord::Finished {
                    client_id,
                    packet_id,
                });
                self.fill_window(session_id, now)
            }
            // A late or repeated acknowledgement, e.g. after a resend crossed it: harmless.
            Err(mismatch) => debug!(
                ?conn,
                packet_id,
                ?state,
                ?mismatch,
                "acknowledgement for no message in that state"
            ),
        }
    }

    pub(in crate::broker) fn handle_pubrec(
        &mut self,
        conn: ConnId,
        session_id: SessionId,
        ack: Ack,
        now: Timestamp,
    ) {
        let pubrel = self.start_ack();
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        if ack.reason_code.is_error() {
            // The receiver refused the message; the flow ends here without PUBREL (§4.3.3).
            if session.outbound.abandon(ack.packet_id).is_ok() {
                let packet_id = ack.packet_id;
                self.journal_session(session_id, |client_id| PersistRecord::Finished {
                    client_id,
                    packet_id,
                });
            }
            return self.fill_window(session_id, now);
        }
        let reply = match session.outbound.received(ack.packet_id) {
            Ok(()) => {
                let packet_id = ack.packet_id;
                self.journal_session(session_id, |client_id| PersistRecord::PubRecReceived {
                    client_id,
                    packet_id,
                });
                Ack::new(packet_id)
            }
            Err(AckMismatch::UnknownPacketId) => {
                Ack::with_reason(ack.packet_id, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND)
            }
            Err(AckMismatch::WrongState) => {
                return self.protocol_error(conn, "PUBREC for a QoS 1 message", now)
            }
        };
        self.send_pubrel(conn, Packet::PubRel(reply), pubrel);
    }

    pub(in crate::broker) fn handle_pubrel(
        &mut self,
        conn: ConnId,
        session_id: SessionId,
        ack: Ack,
    ) {
        let pubcomp = self.start_ack();
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        let packet_id = ack.packet_id;
        // An unknown id is answered too, so a client that lost our PUBCOMP can finish
        // (v5 says so with 0x92; 3.x has no codes and simply gets PUBCOMP).
        let reply = if session.awaiting_pubrel.remove(&packet_id).is_some() {
            self.journal_session(session_id, |client_id| PersistRecord::InboundReleased {
                client_id,
                packet_id,
            });
            Ack::new(packet_id)
        } else {
            Ack::with_reason(packet_id, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND)
        };
        // Held too: were the release lost in a crash, a new QoS 2 PUBLISH reusing the
        // identifier would be taken for a resend and never delivered.
        self.acknowledge(conn, Packet::PubComp(reply), pubcomp);
    }

    pub(in crate::broker) fn handle_disconnect(
        &mut self,
        conn: ConnId,
        session_id: SessionId,
        disconnect: Disconnect,
        now: Timestamp,
    ) {
        if let Some(expiry) = disconnect.properties.session_expiry_interval {
            let Some(session) = self.sessions.get_mut(&session_id) else {
                return;
            };
            // MQTT-3.14.2-2: a session that was to end with the connection cannot be extended.
            if session.expiry_interval == 0 && expiry != 0 {
                return self.protocol_error(conn, "DISCONNECT raises a session expiry of 0", now);
            }
            session.expiry_interval = self
                .config
                .max_session_expiry
                .map_or(expiry, |max| expiry.min(max));
        }
        if let Some(connection) = self.connections.get_mut(&conn) {
            // 0x04 asks for the will to be published anyway (§3.14.2.1).
            connection.disconnected_normally =
                disconnect.reason_code != ReasonCode::DISCONNECT_WITH_WILL_MESSAGE;
            connection.ending = Some(Ending::Client(disconnect.reason_code));
        }
        self.close(conn, now);
    }
}
