//! Deterministic tests of the broker core: a simulated network of N shards and any number of
//! clients, a virtual clock, and no sockets. Every behaviour of the core is tested here.

mod connect;
mod flow;
mod limits;
mod persist;
mod qos;
mod retained;
mod shards;
mod subscribe;
mod v5;
mod wills;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::persist::PersistRecord;
use super::{Broker, Config, ConnId, Event, Timestamp};
use crate::protocol::{
    Ack, Connect, ConnectProperties, Decoder, LastWill, Packet, ProtocolVersion, Publish, QoS,
    SubAck, Subscribe, SubscriptionOptions,
};

/// One simulated client connection.
struct SimConn {
    shard: usize,
    version: ProtocolVersion,
    decoder: Decoder,
    /// Bytes the broker sent that the client has not decoded yet.
    unread: BytesMut,
    received: VecDeque<Packet>,
    closed: bool,
    /// The client does not read: what the broker sends stays in its send buffer.
    stalled: bool,
}

/// The wall clock at the simulation's start, in unix milliseconds.
pub const WALL_START_MS: u64 = 1_700_000_000_000;

/// N broker shards wired together the way a runtime would, with a virtual clock.
pub struct Sim {
    pub now: Timestamp,
    pub shards: Vec<Broker>,
    conns: HashMap<ConnId, SimConn>,
    next_conn: u64,
    next_accept_shard: usize,
    /// Per shard, every journal record it emitted (with `Config::persistence`).
    pub journals: Vec<Vec<(u64, PersistRecord)>>,
    /// Report each record durable as soon as it is emitted, like a journal that never lags.
    pub auto_persist: bool,
}

impl Sim {
    pub fn new(shard_count: usize) -> Sim {
        Sim::with_config(shard_count, Config::default())
    }

    pub fn with_config(shard_count: usize, config: Config) -> Sim {
        Sim::at(
            shard_count,
            config,
            Timestamp::from_secs(1000),
            WALL_START_MS,
        )
    }

    /// Shards whose clock reads `now` while the wall clock reads `unix_ms`.
    pub fn at(shard_count: usize, config: Config, now: Timestamp, unix_ms: u64) -> Sim {
        let counter = Arc::new(AtomicUsize::new(0));
        let shards = (0..shard_count)
            .map(|shard| {
                let mut broker =
                    Broker::new(config.clone(), shard, shard_count, counter.clone(), now);
                broker.handle_wall_clock(unix_ms, now);
                broker
            })
            .collect();
        Sim {
            now,
            shards,
            conns: HashMap::new(),
            next_conn: 0,
            next_accept_shard: 0,
            journals: vec![Vec::new(); shard_count],
            auto_persist: true,
        }
    }

    /// Opens a TCP-level connection, accepted by the shards in turn.
    pub fn open(&mut self, version: ProtocolVersion) -> ConnId {
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        let shard = self.next_accept_shard % self.shards.len();
        self.next_accept_shard += 1;
        self.shards[shard].handle_accepted(conn, None, self.now);
        self.conns.insert(
            conn,
            SimConn {
                shard,
                version,
                decoder: Decoder::client(version, usize::MAX),
                unread: BytesMut::new(),
                received: VecDeque::new(),
                closed: false,
                stalled: false,
            },
        );
        conn
    }

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

    /// Encodes `packet` as the client would and delivers it to the broker.
    pub fn send(&mut self, conn: ConnId, packet: Packet) {
        let version = self.conns[&conn].version;
        let mut bytes = BytesMut::new();
        packet
            .encode(version, &mut bytes)
            .expect("test packet encodes");
        self.send_bytes(conn, &bytes);
    }

    pub fn send_bytes(&mut self, conn: ConnId, bytes: &[u8]) {
        let sim_conn = &self.conns[&conn];
        assert!(!sim_conn.closed, "sending on a closed connection");
        let shard = sim_conn.shard;
        let mut buf = BytesMut::from(bytes);
        self.shards[shard].handle_bytes(conn, &mut buf, self.now);
        self.run();
        // After a hand-over the remaining bytes belong to the new shard.
        let new_shard = self.conns[&conn].shard;
        if !buf.is_empty() && new_shard != shard {
            self.shards[new_shard].handle_bytes(conn, &mut buf, self.now);
            self.run();
        }
    }

    /// The peer closes the connection.
    pub fn drop_connection(&mut self, conn: ConnId) {
        let sim_conn = self.conns.get_mut(&conn).expect("known connection");
        if !sim_conn.closed {
            sim_conn.closed = true;
            let shard = sim_conn.shard;
            self.shards[shard].handle_closed(conn, self.now);
            self.run();
        }
    }

    /// The client stops reading until [`Sim::unstall`].
    pub fn stall(&mut self, conn: ConnId) {
        self.conns.get_mut(&conn).expect("known connection").stalled = true;
    }

    /// The client reads again: like a runtime's writer, takes what waited until nothing is left.
    pub fn unstall(&mut self, conn: ConnId) {
        let sim_conn = self.conns.get_mut(&conn).expect("known connection");
        sim_conn.stalled = false;
        let shard = sim_conn.shard;
        loop {
            let chunks = self.shards[shard].take_output(conn, self.now);
            if chunks.is_empty() {
                break;
            }
            self.deliver_to_client(conn, chunks);
        }
        self.run();
    }

    /// Reports `shard`'s records up to `seq` durable and carries out what that releases.
    pub fn persist_up_to(&mut self, shard: usize, seq: u64) {
        self.shards[shard].handle_persisted(seq);
        self.run();
    }

    /// Reports every record emitted so far durable, on every shard.
    pub fn persist_all(&mut self) {
        for shard in 0..self.shards.len() {
            let last = self.journals[shard].last().map_or(0, |(seq, _)| *seq);
            self.shards[shard].handle_persisted(last);
        }
        self.run();
    }

    /// Moves the clock and fires due timers.
    pub fn advance(&mut self, by: Duration) {
        self.now = self.now + by;
        for shard in &mut self.shards {
            shard.handle_timeout(self.now);
        }
        self.run();
    }

    /// Drains every output of every shard until nothing moves, like a runtime's loop turns.
    pub fn run(&mut self) {
        loop {
            let mut progressed = false;
            for index in 0..self.shards.len() {
                while let Some(conn) = self.shards[index].poll_transmit() {
                    if self
                        .conns
                        .get(&conn)
                        .is_some_and(|sim_conn| sim_conn.stalled)
                    {
                        continue;
                    }
                    progressed = true;
                    let chunks = self.shards[index].take_output(conn, self.now);
                    self.deliver_to_client(conn, chunks);
                }
                while let Some((to, batch)) = self.shards[index].poll_shard_messages() {
                    progressed = true;
                    for message in batch {
                        self.shards[to].handle_shard_message(index, message, self.now);
                    }
                }
                let mut last = None;
                while let Some((seq, record)) = self.shards[index].poll_persist() {
                    self.journals[index].push((seq, record));
                    last = Some(seq);
                }
                if let (Some(seq), true) = (last, self.auto_persist) {
                    progressed = true;
                    self.shards[index].handle_persisted(seq);
                }
                while let Some(event) = self.shards[index].poll_event() {
                    progressed = true;
                    match event {
                        Event::Close(conn) => {
                            let chunks = self.shards[index].take_output(conn, self.now);
                            self.deliver_to_client(conn, chunks);
                            if let Some(sim_conn) = self.conns.get_mut(&conn) {
                                sim_conn.closed = true;
                            }
                            self.shards[index].handle_closed(conn, self.now);
                        }
                        Event::HandOver {
                            conn,
                            shard,
                            connect,
                        } => {
                            self.conns.get_mut(&conn).expect("known").shard = shard;
                            self.shards[shard].handle_handed_over(conn, None, connect, self.now);
                        }
                    }
                }
            }
            if !progressed {
                return;
            }
        }
    }

    fn deliver_to_client(&mut self, conn: ConnId, chunks: Vec<Bytes>) {
        let Some(sim_conn) = self.conns.get_mut(&conn) else {
            return;
        };
        for chunk in chunks {
            sim_conn.unread.extend_from_slice(&chunk);
        }
        while let Some(packet) = sim_conn
            .decoder
            .decode(&mut sim_conn.unread)
            .expect("the broker sends valid packets")
        {
            sim_conn.received.push_back(packet);
        }
    }

    /// The next packet the client received, if any.
    pub fn recv(&mut self, conn: ConnId) -> Option<Packet> {
        self.conns.get_mut(&conn)?.received.pop_front()
    }

    /// Every packet received so far.
    pub fn recv_all(&mut self, conn: ConnId) -> Vec<Packet> {
        self.conns
            .get_mut(&conn)
            .map(|c| c.received.drain(..).collect())
            .unwrap_or_default()
    }

    /// The PUBLISH packets received so far (other packets are discarded).
    pub fn publishes(&mut self, conn: ConnId) -> Vec<Publish> {
        self.recv_all(conn)
            .into_iter()
            .filter_map(|packet| match packet {
                Packet::Publish(publish) => Some(publish),
                _ => None,
            })
            .collect()
    }

    pub fn is_closed(&self, conn: ConnId) -> bool {
        self.conns[&conn].closed
    }

    pub fn shard_of(&self, conn: ConnId) -> usize {
        self.conns[&conn].shard
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
