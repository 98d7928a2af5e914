//! Deterministic tests of the broker core: a simulated network of N shards and any number of
//! clients, a virtual clock, and no sockets. Every behaviour of the core is tested here.

mod connect;
mod flow;
mod limits;
mod persist;
mod qos;
mod retained;
mod security;
mod shards;
mod subscribe;
mod v5;
mod wills;

use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::persist::PersistRecord;
pub use super::sim::{Sim, Source, WALL_START_MS};
use super::{Broker, Config, ConnId};
use crate::protocol::{
    Ack, Connect, ConnectProperties, LastWill, Packet, ProtocolVersion, Publish, QoS, SubAck,
    Subscribe, SubscriptionOptions,
};

/// The assertions the tests make over and over, as steps of the simulation.
impl Sim {
    /// Opens a connection and sends CONNECT; returns the connection and the CONNACK.
    pub fn connect(&mut self, connect: Connect) -> (ConnId, Packet) {
        let conn = self.open(connect.protocol);
        self.send(conn, Packet::Connect(Box::new(connect)));
        let connack = self.recv(conn).expect("CONNACK");
        (conn, connack)
    }

    /// Connects a client and asserts the broker accepted it.
    pub fn client(
        &mut self,
        version: ProtocolVersion,
        client_id: &str,
        clean_start: bool,
    ) -> ConnId {
        let (conn, connack) = self.connect(connect(version, client_id, clean_start));
        match connack {
            Packet::ConnAck(ack) => assert!(!ack.reason_code.is_error(), "{ack:?}"),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        conn
    }

    /// Subscribes and returns the SUBACK.
    pub fn subscribe(&mut self, conn: ConnId, filter: &str, qos: QoS) -> SubAck {
        let options = SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        };
        self.subscribe_with(
            conn,
            Subscribe {
                packet_id: 1,
                filters: vec![(filter.into(), options)],
                ..Subscribe::default()
            },
        )
    }

    pub fn subscribe_with(&mut self, conn: ConnId, subscribe: Subscribe) -> SubAck {
        self.send(conn, Packet::Subscribe(subscribe));
        match self.recv(conn) {
            Some(Packet::SubAck(suback)) => suback,
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Publishes and completes the QoS handshake as a well-behaved client would.
    pub fn publish(&mut self, conn: ConnId, topic: &str, payload: &str, qos: QoS, retain: bool) {
        let publish = Publish {
            qos,
            retain,
            topic: topic.into(),
            packet_id: if qos == QoS::AtMostOnce { 0 } else { 77 },
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            ..Publish::default()
        };
        self.send(conn, Packet::Publish(publish));
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => assert!(matches!(self.recv(conn), Some(Packet::PubAck(_)))),
            QoS::ExactlyOnce => {
                assert!(matches!(self.recv(conn), Some(Packet::PubRec(_))));
                self.send(conn, Packet::PubRel(Ack::new(77)));
                assert!(matches!(self.recv(conn), Some(Packet::PubComp(_))));
            }
        }
    }
}

/// A CONNECT with the given basics and no will, keepalive 60 s.
pub fn connect(version: ProtocolVersion, client_id: &str, clean_start: bool) -> Connect {
    Connect {
        protocol: version,
        clean_start,
        keep_alive: 60,
        client_id: client_id.into(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }
}

/// A client's PUBLISH of `payload` on `topic`.
pub fn publish_packet(topic: &str, payload: &str, qos: QoS, packet_id: u16) -> Packet {
    Packet::Publish(Publish {
        qos,
        topic: topic.into(),
        packet_id,
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        ..Publish::default()
    })
}

/// The same PUBLISH sent again with DUP set, as a client resends one it got no answer to.
pub fn resent_publish_packet(topic: &str, payload: &str, qos: QoS, packet_id: u16) -> Packet {
    let mut packet = publish_packet(topic, payload, qos, packet_id);
    if let Packet::Publish(publish) = &mut packet {
        publish.dup = true;
    }
    packet
}

/// A will on `topic` with `payload`.
pub fn will(topic: &str, payload: &str, qos: QoS) -> LastWill {
    LastWill {
        topic: topic.into(),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        qos,
        retain: false,
        properties: Default::default(),
    }
}

pub fn payloads(publishes: &[Publish]) -> Vec<&str> {
    publishes
        .iter()
        .map(|p| std::str::from_utf8(&p.payload).expect("utf-8 payload"))
        .collect()
}

pub const V3: ProtocolVersion = ProtocolVersion::V3_1_1;
pub const V5: ProtocolVersion = ProtocolVersion::V5;
