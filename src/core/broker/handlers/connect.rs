//! CONNECT: admission checks, hand-over to the client's home shard, session takeover and
//! resumption, CONNACK with the server's v5 properties, and resending what the session still
//! owes the client.

use std::num::{NonZeroU16, NonZeroU32};
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytestring::ByteString;
use tracing::info;

use crate::broker::access::Client;
use crate::broker::boundary::{Arrival, ConnId, Identity};
use crate::broker::connection::Phase;
use crate::broker::core::Broker;
use crate::broker::inflight::Awaiting;
use crate::broker::persist::PersistRecord;
use crate::broker::routing::home_shard;
use crate::broker::session::{Session, SessionId};
use crate::broker::time::Timestamp;
use crate::broker::timers::Timer;
use crate::protocol::decoder::MAX_PACKET_SIZE;
use crate::protocol::topic::is_broker_topic;
use crate::protocol::{
    Ack, ConnAck, ConnAckProperties, Connect, Disconnect, Packet, ProtocolVersion, QoS, ReasonCode,
};

impl Broker {
    /// A CONNECT that `arrived` when it did: see `Arrival`.
    pub(in crate::broker) fn handle_connect(
        &mut self,
        conn: ConnId,
        connect: Box<Connect>,
        arrived: Arrival,
        now: Timestamp,
    ) {
        let version = connect.protocol;
        if let Some(connection) = self.connections.get_mut(&conn) {
            connection.version = version;
        }
        if let Err(reason) = self.admit(&connect) {
            return self.refuse(conn, &connect.client_id, reason, now);
        }
        if self.config.authenticate {
            return self.authenticate_connect(conn, connect, arrived);
        }
        // Nobody checks who clients are: each is who it says.
        let identity = Identity {
            username: connect.username.clone(),
            ..Identity::default()
        };
        self.admit_identified(conn, connect, arrived, identity, now);
    }

    /// A CONNECT whose client is known: refused if its will is a publish it may not make,
    /// otherwise accepted (`connect_identified`).
    pub(in crate::broker) fn admit_identified(
        &mut self,
        conn: ConnId,
        connect: Box<Connect>,
        arrived: Arrival,
        identity: Identity,
        now: Timestamp,
    ) {
        if let Some(will) = &connect.will {
            let client = Client {
                username: identity.username.as_deref(),
                client_id: &connect.client_id,
            };
            if !self.access.may_write(client, &will.topic) {
                info!(?conn, client_id = %connect.client_id, topic = %will.topic, "will refused by the ACL");
                return self.refuse(conn, &connect.client_id, ReasonCode::NOT_AUTHORIZED, now);
            }
        }
        self.connect_identified(conn, connect, arrived, identity, now);
    }

    /// Accepts a CONNECT whose client is known and allowed in, on its home shard: moves it
    /// there first if this is not it.
    pub(in crate::broker) fn connect_identified(
        &mut self,
        conn: ConnId,
        mut connect: Box<Connect>,
        arrived: Arrival,
        identity: Identity,
        now: Timestamp,
    ) {
        let version = connect.protocol;
        let assigned_id = connect
            .client_id
            .is_empty()
            .then(|| self.assign_client_id());
        if let Some(id) = &assigned_id {
            connect.client_id = id.clone();
        }
        let home = home_shard(&connect.client_id, self.shard_count);
        if home != self.shard {
            return self.hand_over(conn, home, connect, arrived, identity);
        }
        if self.superseded(&connect.client_id, arrived) {
            return self.superseded_on_arrival(conn, &connect, now);
        }

        let (session_id, resumed) = self.attach_session(conn, &connect, &identity, now);
        let keep_alive = self.effective_keepalive(connect.keep_alive);
        let granted_expiry = self
            .sessions
            .get(&session_id)
            .map_or(0, |session| session.expiry_interval);
        let topic_alias_slots = if version.is_v5() {
            self.config.topic_alias_maximum.into()
        } else {
            0
        };
        let max_packet_size = self.config.max_packet_size;
        let Some(connection) = self.connections.get_mut(&conn) else {
            return;
        };
        connection.phase = Phase::Connected(session_id);
        connection.client_id = connect.client_id.clone();
        let (auth_method, auth_data) = (identity.method.clone(), identity.data.clone());
        connection.identity = Identity {
            data: None,
            ..identity
        };
        connection.keep_alive = Duration::from_secs(keep_alive.into());
        connection.last_received = now;
        connection.arrival = Some(arrived);
        connection.decoder.set_max_packet_size(max_packet_size);
        let props = &connect.properties;
        connection.max_packet_size = props
            .maximum_packet_size
            .map_or(usize::MAX, |size| size.get() as usize);
        connection.receive_maximum = props.receive_maximum.map_or(u16::MAX, NonZeroU16::get);
        connection.request_problem_information = props.request_problem_information.unwrap_or(true);
        connection.topic_aliases = vec![None; topic_alias_slots];
        connection.will = connect.will.take().map(Box::new);
        let origin = connection.origin;
        if let Some(deadline) = connection.keepalive_deadline() {
            self.timers.schedule(deadline, Timer::KeepAlive(conn));
        }

        let mut connack = ConnAck {
            session_present: resumed,
            ..ConnAck::default()
        };
        if version.is_v5() {
            connack.properties = self.server_properties(&connect, granted_expiry, keep_alive);
            connack.properties.assigned_client_identifier = assigned_id;
            connack.properties.authentication_method = auth_method;
            connack.properties.authentication_data = auth_data;
        }
        let listener = self.config.listener_name(origin.listener);
        info!(?conn, client_id = %connect.client_id, peer = %origin, listener, ?version, resumed, keep_alive, "client connected");
        self.send(conn, Packet::ConnAck(Box::new(connack)));
        if resumed {
            self.resend_inflight(conn, session_id, now);
        }
        self.fill_window(session_id, now);
    }

    /// Checks that do not depend on existing sessions; the refusal reason otherwise.
    fn admit(&self, connect: &Connect) -> Result<(), ReasonCode> {
        let version = connect.protocol;
        if self.connection_count.load(Ordering::Relaxed) > self.config.max_connections {
            return Err(ReasonCode::QUOTA_EXCEEDED);
        }
        if connect.properties.authentication_method.is_some() && !self.config.authenticate {
            return Err(ReasonCode::BAD_AUTHENTICATION_METHOD);
        }
        // An empty client id gets one assigned only when no session could be resumed with it
        // (MQTT-3.1.3-8 in 3.1.1); 3.1 requires an id of 1 to 23 characters.
        if connect.client_id.is_empty()
            && (!connect.clean_start || version == ProtocolVersion::V3_1)
        {
            return Err(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
        }
        // 3.x cannot be told a shorter keepalive; refuse it, as Mosquitto does.
        if !version.is_v5() && connect.keep_alive > self.config.max_keepalive {
            return Err(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
        }
        if let Some(will) = &connect.will {
            if will.qos > self.config.maximum_qos {
                return Err(ReasonCode::QOS_NOT_SUPPORTED);
            }
            if will.retain && !self.config.retain_available {
                return Err(ReasonCode::RETAIN_NOT_SUPPORTED);
            }
            // A will is a publish the client asks for in advance: not to the broker's topics.
            if is_broker_topic(&will.topic) {
                return Err(ReasonCode::NOT_AUTHORIZED);
            }
        }
        Ok(())
    }

    /// Whether the client's current connection's CONNECT arrived after one that `arrived`.
    /// Two connections of one client can reach its shard in the other order: one read here,
    /// one handed over from another shard a moment later.
    fn superseded(&self, client_id: &ByteString, arrived: Arrival) -> bool {
        self.sessions
            .of_client(client_id)
            .and_then(|session| session.connection)
            .and_then(|current| self.connections.get(&current))
            .and_then(|current| current.arrival)
            .is_some_and(|current| current > arrived)
    }

    /// Answers a CONNECT that a newer connection of the same client overtook as if it had come
    /// first and then been taken over (MQTT-3.1.4-3): accepted, then DISCONNECT 0x8E in v5 or
    /// a close in 3.x. The session, the newer connection and its will are left alone, and this
    /// connection's will is not published, as it never was the session's connection.
    fn superseded_on_arrival(&mut self, conn: ConnId, connect: &Connect, now: Timestamp) {
        info!(?conn, client_id = %connect.client_id, "session already taken over by a newer connection");
        let connack = ConnAck {
            session_present: !connect.clean_start,
            ..ConnAck::default()
        };
        self.send(conn, Packet::ConnAck(Box::new(connack)));
        if connect.protocol.is_v5() {
            let disconnect = Disconnect::with_reason(ReasonCode::SESSION_TAKEN_OVER);
            self.send(conn, Packet::Disconnect(Box::new(disconnect)));
        }
        self.close(conn, now);
    }

    pub(in crate::broker) fn refuse(
        &mut self,
        conn: ConnId,
        client_id: &ByteString,
        reason: ReasonCode,
        now: Timestamp,
    ) {
        if let Some(connection) = self.connections.get(&conn) {
            let origin = connection.origin;
            let listener = self.config.listener_name(origin.listener);
            info!(?conn, %client_id, peer = %origin, listener, %reason, "connection refused");
        }
        let connack = ConnAck {
            reason_code: reason,
            ..ConnAck::default()
        };
        self.send(conn, Packet::ConnAck(Box::new(connack)));
        self.close(conn, now);
    }

    /// A fresh id homed on this shard, so its client needs no hand-over.
    fn assign_client_id(&mut self) -> ByteString {
        loop {
            self.assigned_ids += 1;
            let id = format!("auto-{:x}-{:x}", self.shard, self.assigned_ids);
            if home_shard(&id, self.shard_count) == self.shard {
                return id.into();
            }
        }
    }

    /// Takes over, discards, resumes or creates the session for this CONNECT and binds `conn`
    /// to it. Returns the session and whether an existing one was resumed (Session Present).
    fn attach_session(
        &mut self,
        conn: ConnId,
        connect: &Connect,
        identity: &Identity,
        now: Timestamp,
    ) -> (SessionId, bool) {
        let client_id = &connect.client_id;
        let old_connection = self
            .sessions
            .of_client(client_id)
            .and_then(|session| session.connection);
        if let Some(old) = old_connection {
            // Takeover (MQTT-3.1.4-3): only the old connection of this client is closed, and
            // its will goes out as for any abnormal end.
            info!(?old, %client_id, "session taken over");
            self.stats.takeovers += 1;
            self.disconnect(old, ReasonCode::SESSION_TAKEN_OVER, now);
        }
        // Closing the old connection ends a session with expiry 0, so look it up again.
        let mut existing = self.sessions.id_of(client_id);
        if let Some(session_id) = existing {
            // Expiry timers run on the runtime's tick (after a restart, on the first one): a
            // session past its expiry ended, will and all, even if its timer has not fired.
            if self
                .sessions
                .get(&session_id)
                .is_some_and(|session| session.has_expired(now))
            {
                self.stats.sessions_expired += 1;
                self.discard_session(session_id, now);
                existing = None;
            }
        }
        if let Some(session_id) = existing {
            // A new connection cancels a delayed will (MQTT-3.1.3-9), unless its time had come
            // and only its timer was late, as after a restart that outlasted the delay.
            let will = self
                .sessions
                .get_mut(&session_id)
                .and_then(|session| session.delayed_will.take());
            if let Some(will) = will.filter(|will| will.publish_at <= now) {
                self.publish_will(will.message, now);
            }
            if connect.clean_start {
                self.discard_session(session_id, now);
                existing = None;
            }
        }
        let resumed = existing.is_some();
        let session_id = existing.unwrap_or_else(|| {
            let id = self.sessions.new_id();
            let session = Session::new(client_id.clone(), connect.protocol);
            self.sessions.insert(id, session);
            id
        });
        let expiry = self.session_expiry_for(connect);
        if let Some(session) = self.sessions.get_mut(&session_id) {
            session.connection = Some(conn);
            session.version = connect.protocol;
            session.expiry_interval = expiry;
            session.expires_at = None;
            session.access.identify(identity.username.clone());
        }
        self.shares_follow_connection(session_id, true);
        self.journal_attach(session_id, expiry, identity.username.as_deref());
        (session_id, resumed)
    }

    /// A session with an expiry is journaled from its CONNECT on, with the user its client
    /// connected as, so that after a restart the ACL judges its deliveries before the client
    /// is back. One resumed with expiry 0 ends with this connection, so what the journal holds
    /// of it ends now.
    fn journal_attach(&mut self, session_id: SessionId, expiry: u32, username: Option<&str>) {
        if !self.persist.enabled {
            return;
        }
        if expiry == 0 {
            self.journal_session(session_id, |client_id| PersistRecord::SessionEnded {
                client_id,
            });
            if let Some(session) = self.sessions.get_mut(&session_id) {
                session.journaled = false;
            }
            return;
        }
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        session.journaled = true;
        let client_id = session.client_id.to_string();
        let record = PersistRecord::SessionOpened {
            client_id: client_id.clone(),
            version: session.version.level(),
            expiry_interval: expiry,
        };
        self.journal(record);
        self.journal(PersistRecord::SessionIdentified {
            client_id,
            username: username.map(str::to_owned),
        });
    }

    /// 3.x: clean session ends the session with the connection, otherwise the configured
    /// default. 5.0: the client's Session Expiry Interval, capped by the configured maximum.
    fn session_expiry_for(&self, connect: &Connect) -> u32 {
        if !connect.protocol.is_v5() {
            return if connect.clean_start {
                0
            } else {
                self.config.session_expiry
            };
        }
        let requested = connect.properties.session_expiry_interval.unwrap_or(0);
        self.config
            .max_session_expiry
            .map_or(requested, |max| requested.min(max))
    }

    /// The keepalive the client must keep: its own, unless over the maximum (or off while the
    /// maximum is below the protocol's), in which case the maximum (Server Keep Alive).
    fn effective_keepalive(&self, requested: u16) -> u16 {
        let max = self.config.max_keepalive;
        if requested > max || (requested == 0 && max < u16::MAX) {
            max
        } else {
            requested
        }
    }

    /// CONNACK properties: limits that differ from the protocol defaults, and values the
    /// server changed from what the client asked for.
    fn server_properties(
        &self,
        connect: &Connect,
        granted_expiry: u32,
        keep_alive: u16,
    ) -> ConnAckProperties {
        let config = &self.config;
        let mut props = ConnAckProperties::default();
        if connect.properties.session_expiry_interval.unwrap_or(0) != granted_expiry {
            props.session_expiry_interval = Some(granted_expiry);
        }
        if config.receive_maximum != u16::MAX {
            props.receive_maximum = NonZeroU16::new(config.receive_maximum);
        }
        if config.maximum_qos != QoS::ExactlyOnce {
            props.maximum_qos = Some(config.maximum_qos);
        }
        if !config.retain_available {
            props.retain_available = Some(false);
        }
        // A Maximum Packet Size at the protocol's own limit need not be announced.
        if config.max_packet_size < MAX_PACKET_SIZE {
            props.maximum_packet_size = u32::try_from(config.max_packet_size)
                .ok()
                .and_then(NonZeroU32::new);
        }
        if config.topic_alias_maximum > 0 {
            props.topic_alias_maximum = Some(config.topic_alias_maximum);
        }
        if keep_alive != connect.keep_alive {
            props.server_keep_alive = Some(keep_alive);
        }
        props
    }

    /// On resume, every unacknowledged PUBLISH goes out again with DUP set and every owed
    /// PUBREL again, with their original identifiers and in their original order (MQTT-4.4.0-1).
    fn resend_inflight(&mut self, conn: ConnId, session_id: SessionId, now: Timestamp) {
        let Some(session) = self.sessions.get(&session_id) else {
            return;
        };
        let resend: Vec<_> = session
            .outbound
            .inflight()
            .map(|entry| (entry.packet_id, entry.state, entry.delivery.clone()))
            .collect();
        for (packet_id, state, delivery) in resend {
            match state {
                Awaiting::PubComp => self.send(conn, Packet::PubRel(Ack::new(packet_id))),
                Awaiting::PubAck | Awaiting::PubRec => {
                    if !self.write_publish(conn, &delivery, packet_id, true, now) {
                        self.drop_inflight(session_id, packet_id, delivery.qos);
                    }
                }
            }
        }
    }
}
