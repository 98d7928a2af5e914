//! Who a client is: its CONNECT's user name and password, or MQTT 5 enhanced authentication
//! (§4.12) carried in AUTH packets, and re-authentication of a connected client (§4.12.1).
//!
//! The core decides nothing here: it hands what the client offers to the runtime
//! (`Event::Authenticate`) and acts on the verdict (`Broker::handle_authenticated`). Checking a
//! password means hashing it thousands of times on purpose, and a shard that did that would
//! stall every other client it serves; the runtime does it on a thread of its own. Meanwhile
//! the connection's input waits in its buffer, and the connect timeout keeps running.

use tracing::{info, warn};

use crate::broker::boundary::{
    Arrival, AuthRequest, AuthStage, AuthVerdict, ConnId, Event, Identity,
};
use crate::broker::connection::{Authentication, Phase};
use crate::broker::core::Broker;
use crate::broker::time::Timestamp;
use crate::protocol::{Auth, AuthProperties, Connect, Packet, ReasonCode};

impl Broker {
    /// Asks the runtime about a CONNECT that passed admission; it goes on from
    /// `handle_authenticated`.
    pub(in crate::broker) fn authenticate_connect(
        &mut self,
        conn: ConnId,
        connect: Box<Connect>,
        arrived: Arrival,
    ) {
        let props = &connect.properties;
        let request = AuthRequest {
            stage: AuthStage::Connect,
            client_id: connect.client_id.clone(),
            username: connect.username.clone(),
            password: connect.password.clone(),
            method: props.authentication_method.clone(),
            data: props.authentication_data.clone(),
        };
        let Some(connection) = self.connections.get_mut(&conn) else {
            return;
        };
        connection.phase = Phase::Authenticating;
        connection.authentication = Some(Box::new(Authentication {
            method: request.method.clone(),
            connect: Some((connect, arrived)),
            awaiting_verdict: true,
        }));
        self.events.push_back(Event::Authenticate { conn, request });
    }

    /// The runtime's verdict on what `conn` last offered. A verdict for a connection that has
    /// gone, or that asked for none, changes nothing.
    pub(in crate::broker) fn authenticated(
        &mut self,
        conn: ConnId,
        verdict: AuthVerdict,
        now: Timestamp,
    ) {
        let Some(connection) = self.connections.get_mut(&conn) else {
            return;
        };
        let waiting = connection
            .authentication
            .as_ref()
            .is_some_and(|authentication| authentication.awaiting_verdict);
        if !waiting || connection.phase == Phase::Closing {
            return;
        }
        let Some(mut authentication) = connection.authentication.take() else {
            return;
        };
        authentication.awaiting_verdict = false;
        let method = authentication.method.clone();
        match (verdict, authentication.connect.take()) {
            (AuthVerdict::Accepted { username, data }, Some((connect, arrived))) => {
                let identity = Identity {
                    username,
                    method,
                    data,
                };
                self.connect_identified(conn, connect, arrived, identity, now);
            }
            (AuthVerdict::Refused(reason), Some((connect, _))) => {
                self.stats.auth_refused += 1;
                self.refuse(conn, &connect.client_id, reason, now);
            }
            (AuthVerdict::Continue { data }, connect) => {
                if method.is_none() {
                    warn!(
                        ?conn,
                        "the authenticator asked for another round without a method"
                    );
                    return match connect {
                        Some((connect, _)) => {
                            self.refuse(conn, &connect.client_id, ReasonCode::NOT_AUTHORIZED, now)
                        }
                        None => self.disconnect(conn, ReasonCode::NOT_AUTHORIZED, now),
                    };
                }
                authentication.connect = connect;
                if let Some(connection) = self.connections.get_mut(&conn) {
                    connection.authentication = Some(authentication);
                }
                let properties = AuthProperties {
                    authentication_method: method,
                    authentication_data: Some(data),
                    ..AuthProperties::default()
                };
                self.send_auth(conn, ReasonCode::CONTINUE_AUTHENTICATION, properties);
            }
            (AuthVerdict::Accepted { username, data }, None) => {
                // Re-authentication proves the same identity again; it cannot change it, as
                // the session's subscriptions were authorized for the one it had.
                if connection.identity.username != username {
                    info!(?conn, client_id = %connection.client_id, "re-authenticated as another user");
                    return self.disconnect(conn, ReasonCode::NOT_AUTHORIZED, now);
                }
                let properties = AuthProperties {
                    authentication_method: method,
                    authentication_data: data,
                    ..AuthProperties::default()
                };
                self.send_auth(conn, ReasonCode::SUCCESS, properties);
            }
            (AuthVerdict::Refused(reason), None) => {
                info!(?conn, client_id = %connection.client_id, %reason, "re-authentication failed");
                // DISCONNECT has no 0x86 (§3.14.2.1): a failed proof is "not authorized" there.
                let reason = match reason {
                    ReasonCode::BAD_USER_NAME_OR_PASSWORD => ReasonCode::NOT_AUTHORIZED,
                    other => other,
                };
                self.disconnect(conn, reason, now);
            }
        }
    }

    /// An AUTH from the client: the next step of an exchange the runtime asked to continue, or
    /// the start of a re-authentication.
    pub(in crate::broker) fn handle_auth(&mut self, conn: ConnId, auth: Auth, now: Timestamp) {
        let Some(connection) = self.connections.get_mut(&conn) else {
            return;
        };
        let Auth {
            reason_code,
            properties,
        } = auth;
        let (stage, method) = match connection.authentication.as_deref_mut() {
            // The runtime asked for another round (AUTH 0x18 sent): this is the answer.
            Some(authentication) if !authentication.awaiting_verdict => {
                if reason_code != ReasonCode::CONTINUE_AUTHENTICATION {
                    return self.protocol_error(conn, "AUTH in an exchange without 0x18", now);
                }
                authentication.awaiting_verdict = true;
                (AuthStage::Continue, authentication.method.clone())
            }
            Some(_) => {
                return self.protocol_error(conn, "AUTH before the last one was answered", now);
            }
            None => {
                // §4.12.1: only a client that authenticated with a method may re-authenticate,
                // with that method.
                if reason_code != ReasonCode::RE_AUTHENTICATE
                    || connection.identity.method.is_none()
                {
                    return self.protocol_error(conn, "AUTH without an exchange to continue", now);
                }
                let method = connection.identity.method.clone();
                connection.authentication = Some(Box::new(Authentication {
                    connect: None,
                    method: method.clone(),
                    awaiting_verdict: true,
                }));
                (AuthStage::Reauthenticate, method)
            }
        };
        if properties.authentication_method != method {
            return self.protocol_error(conn, "AUTH with another authentication method", now);
        }
        let request = AuthRequest {
            stage,
            client_id: connection.client_id.clone(),
            username: connection.identity.username.clone(),
            password: None,
            method,
            data: properties.authentication_data,
        };
        self.events.push_back(Event::Authenticate { conn, request });
    }

    fn send_auth(&mut self, conn: ConnId, reason_code: ReasonCode, properties: AuthProperties) {
        let auth = Auth {
            reason_code,
            properties,
        };
        self.send(conn, Packet::Auth(Box::new(auth)));
    }
}
