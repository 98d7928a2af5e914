//! Decodes a connection's bytes and sends each packet to its handler, after the checks that
//! depend only on the packet type and the connection's phase; a packet that does not decode
//! ends the connection.

use bytes::BytesMut;
use tracing::{debug, info};

use crate::broker::boundary::{Arrival, ConnId};
use crate::broker::connection::Phase;
use crate::broker::core::Broker;
use crate::broker::time::Timestamp;
use crate::protocol::{ConnAck, DecodeError, Packet, ProtocolVersion, ReasonCode};

impl Broker {
    /// Decodes and handles the whole packets at the front of `buf`: see `Broker::handle_bytes`.
    pub(in crate::broker) fn read_packets(
        &mut self,
        conn: ConnId,
        buf: &mut BytesMut,
        now: Timestamp,
    ) -> bool {
        let mut published = false;
        loop {
            let Some(connection) = self.connections.get_mut(&conn) else {
                return published;
            };
            if connection.phase == Phase::Closing {
                buf.clear();
                return published;
            }
            if connection.awaits_verdict() {
                return published;
            }
            match connection.decoder.decode(buf) {
                Ok(None) => return published,
                Ok(Some(packet)) => {
                    connection.last_received = now;
                    published |= matches!(packet, Packet::Publish(_));
                    self.handle_packet(conn, packet, now);
                }
                Err(error) => {
                    self.decode_failed(conn, error, now);
                    buf.clear();
                    return published;
                }
            }
        }
    }

    fn handle_packet(&mut self, conn: ConnId, packet: Packet, now: Timestamp) {
        let Some(connection) = self.connections.get(&conn) else {
            return;
        };
        let session = match (connection.phase, packet) {
            (Phase::AwaitingConnect, Packet::Connect(connect)) => {
                let arrived = connection.arrival.unwrap_or(Arrival(now.as_nanos()));
                return self.handle_connect(conn, connect, arrived, now);
            }
            (Phase::Authenticating, Packet::Auth(auth)) => {
                return self.handle_auth(conn, *auth, now)
            }
            (Phase::Authenticating, _) => {
                return self.protocol_error(conn, "a packet other than AUTH before CONNACK", now)
            }
            (Phase::Connected(session), packet) => (session, packet),
            // The decoder admits only CONNECT before the version is known, and a closing
            // connection reads nothing.
            (_, _) => return,
        };
        let (session, packet) = session;
        match packet {
            Packet::Publish(publish) => self.handle_publish(conn, session, publish, now),
            Packet::PubAck(ack) => self.handle_puback(conn, session, ack, now),
            Packet::PubRec(ack) => self.handle_pubrec(conn, session, ack, now),
            Packet::PubRel(ack) => self.handle_pubrel(conn, session, ack),
            Packet::PubComp(ack) => self.handle_pubcomp(conn, session, ack, now),
            Packet::Subscribe(subscribe) => self.handle_subscribe(conn, session, subscribe, now),
            Packet::Unsubscribe(unsubscribe) => self.handle_unsubscribe(conn, session, unsubscribe),
            Packet::PingReq => self.send(conn, Packet::PingResp),
            Packet::Disconnect(disconnect) => {
                self.handle_disconnect(conn, session, *disconnect, now)
            }
            Packet::Auth(auth) => self.handle_auth(conn, *auth, now),
            // MQTT-3.1.0-2: a second CONNECT is a protocol violation.
            Packet::Connect(_) => self.protocol_error(conn, "second CONNECT", now),
            other => {
                debug!(?conn, packet = ?other.packet_type(), "packet only a server may send");
                self.protocol_error(conn, "packet only a server may send", now)
            }
        }
    }

    /// Logs and ends the connection with DISCONNECT 0x82 (v5) or a plain close (3.x).
    pub(in crate::broker) fn protocol_error(&mut self, conn: ConnId, what: &str, now: Timestamp) {
        self.reject(conn, ReasonCode::PROTOCOL_ERROR, what, now);
    }

    /// Logs and ends the connection with DISCONNECT `reason` (v5) or a plain close (3.x).
    pub(in crate::broker) fn reject(
        &mut self,
        conn: ConnId,
        reason: ReasonCode,
        what: &str,
        now: Timestamp,
    ) {
        self.stats.protocol_errors += 1;
        if let Some(connection) = self.connections.get(&conn) {
            debug!(?conn, client_id = %connection.client_id, %reason, what, "closing connection");
        }
        self.disconnect(conn, reason, now);
    }

    fn decode_failed(&mut self, conn: ConnId, error: DecodeError, now: Timestamp) {
        self.stats.protocol_errors += 1;
        let Some(connection) = self.connections.get(&conn) else {
            return;
        };
        let connecting = connection.phase == Phase::AwaitingConnect;
        let reason = match error {
            // Only CONNACK carries 0x84. Once connected, any CONNECT is a protocol error
            // (MQTT-3.1.0-2), whatever level it names.
            DecodeError::UnsupportedProtocolLevel(_) if !connecting => ReasonCode::PROTOCOL_ERROR,
            _ => error.reason_code(),
        };
        if connecting {
            let origin = connection.origin;
            let listener = self.config.listener_name(origin.listener);
            info!(?conn, peer = %origin, listener, %error, %reason, "connection refused: no valid CONNECT");
        } else {
            debug!(?conn, client_id = %connection.client_id, %error, %reason, "protocol error");
        }
        if connecting && matches!(error, DecodeError::UnsupportedProtocolLevel(_)) {
            // MQTT-3.1.2-2: answer an unknown level with return code 1 in the 3.1.1 format,
            // which every version of client can read.
            let connack = ConnAck {
                reason_code: ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
                ..Default::default()
            };
            if let Some(connection) = self.connections.get_mut(&conn) {
                connection.version = ProtocolVersion::V3_1_1;
            }
            self.send(conn, Packet::ConnAck(Box::new(connack)));
        }
        self.disconnect(conn, reason, now);
    }
}
