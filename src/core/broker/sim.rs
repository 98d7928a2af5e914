//! A deterministic simulation of a whole broker: N shards wired together the way a runtime wires
//! them, any number of clients, a virtual clock, journals that become durable when told, and
//! crashes that restart from what was durable. No sockets and no threads, so every interleaving
//! it produces can be replayed exactly.
//!
//! The core's unit tests drive it step by step; the `core` fuzz target (`fuzz/`) drives it with
//! generated sequences and checks the broker's promises after each step. It is compiled for
//! tests and behind the `sim` feature, never into the broker itself.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::persist::{
    decode_record, decode_snapshot, encode_record, encode_snapshot, PersistRecord, Replay,
    ShardState,
};
use super::{
    AuthRequest, AuthVerdict, Broker, Config, ConnId, Event, Origin, ShardMessage, Timestamp,
};
use crate::protocol::{Decoder, Packet, ProtocolVersion, Publish};

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

/// Where a restarted broker's state comes from.
#[derive(Clone, Copy, Debug)]
pub enum Source {
    /// A snapshot of every shard, taken as the old broker stopped.
    Snapshots,
    /// Every journal record emitted, as after a clean shutdown that wrote them all.
    Journals,
    /// Only the records reported durable, as after kill -9.
    DurableJournals,
}

/// N broker shards wired together the way a runtime would, with a virtual clock.
pub struct Sim {
    pub now: Timestamp,
    pub shards: Vec<Broker>,
    conns: HashMap<ConnId, SimConn>,
    next_conn: u64,
    next_accept_shard: usize,
    connection_count: Arc<AtomicUsize>,
    /// The monotonic clock and the wall clock at the same instant, to derive one from the other.
    clock_origin: (Timestamp, u64),
    /// Per shard, every journal record it emitted (with `Config::persistence`).
    pub journals: Vec<Vec<(u64, PersistRecord)>>,
    /// Per shard, the last record reported durable.
    durable: Vec<u64>,
    /// The state this broker was restored from: what its journals continue.
    restored_from: Vec<ShardState>,
    /// Report each record durable as soon as it is emitted, like a journal that never lags.
    pub auto_persist: bool,
    /// Keep batches between shards in their channels until [`Sim::deliver_mail`], instead of
    /// handing them over at once.
    pub hold_mail: bool,
    /// The runtime's verdict on each `Event::Authenticate` (with `Config::authenticate`).
    pub authenticator: fn(&AuthRequest) -> AuthVerdict,
    /// Batches sent between shards and not delivered yet, oldest first: `(from, to, batch)`.
    mail: VecDeque<(usize, usize, Vec<ShardMessage>)>,
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
        let connection_count = Arc::new(AtomicUsize::new(0));
        let shards = (0..shard_count)
            .map(|shard| {
                let mut broker = Broker::new(
                    config.clone(),
                    shard,
                    shard_count,
                    connection_count.clone(),
                    now,
                );
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
            connection_count,
            clock_origin: (now, unix_ms),
            journals: vec![Vec::new(); shard_count],
            durable: vec![0; shard_count],
            restored_from: Vec::new(),
            auto_persist: true,
            hold_mail: false,
            authenticator: |request| AuthVerdict::Accepted {
                username: request.username.clone(),
                data: None,
            },
            mail: VecDeque::new(),
        }
    }

    /// The wall clock now, in unix milliseconds.
    pub fn unix_ms(&self) -> u64 {
        let (origin, unix_ms) = self.clock_origin;
        unix_ms + self.now.saturating_since(origin).as_millis() as u64
    }

    /// A new broker of `shard_count` shards started from this one's state after `downtime`, on
    /// a monotonic clock with another origin. The state goes through its encoded form, as on
    /// disk. Clients are not carried over: each must connect again.
    pub fn restart(&self, shard_count: usize, downtime: Duration, source: Source) -> Sim {
        let mut replay = Replay::new();
        let states = match source {
            Source::Snapshots => self
                .shards
                .iter()
                .enumerate()
                .map(|(shard, broker)| broker.snapshot_state().owned_by(shard))
                .collect(),
            Source::Journals | Source::DurableJournals => self.restored_from.clone(),
        };
        for state in states {
            let bytes = encode_snapshot(&state);
            replay.apply_snapshot(decode_snapshot(&bytes).expect("snapshot decodes"));
        }
        if !matches!(source, Source::Snapshots) {
            for (shard, journal) in self.journals.iter().enumerate() {
                let durable = self.durable[shard];
                let written = journal.iter().filter(|(seq, _)| match source {
                    Source::DurableJournals => *seq <= durable,
                    _ => true,
                });
                for (_, record) in written {
                    let bytes = encode_record(record);
                    replay.apply_record(decode_record(&bytes).expect("record decodes"));
                }
            }
        }
        let unix_ms = self.unix_ms() + downtime.as_millis() as u64;
        let now = Timestamp::from_secs(7);
        let config = self.shards[0].config().clone();
        let mut sim = Sim::at(shard_count, config, now, unix_ms);
        sim.auto_persist = self.auto_persist;
        let restored: Vec<ShardState> = replay.into_shards(shard_count);
        for (shard, state) in restored.iter().enumerate() {
            sim.shards[shard].restore(state.clone(), now);
        }
        // What the new broker's journals continue, as the snapshots it would write.
        sim.restored_from = restored
            .into_iter()
            .enumerate()
            .map(|(shard, state)| state.owned_by(shard))
            .collect();
        // The shards tell each other their restored subscriptions before serving anyone.
        sim.run();
        sim.hold_mail = self.hold_mail;
        sim
    }

    /// Opens a TCP-level connection, accepted by the shards in turn.
    pub fn open(&mut self, version: ProtocolVersion) -> ConnId {
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        let shard = self.next_accept_shard % self.shards.len();
        self.next_accept_shard += 1;
        self.shards[shard].handle_accepted(conn, Origin::default(), self.now);
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

    /// Encodes `packet` as the client would and delivers it to the broker.
    pub fn send(&mut self, conn: ConnId, packet: Packet) {
        let version = self.conns[&conn].version;
        let mut bytes = BytesMut::new();
        packet
            .encode(version, &mut bytes)
            .expect("a client's packet encodes");
        self.send_bytes(conn, &bytes);
    }

    pub fn send_bytes(&mut self, conn: ConnId, bytes: &[u8]) {
        assert!(!self.conns[&conn].closed, "sending on a closed connection");
        let mut buf = BytesMut::from(bytes);
        // Bytes left over belong to the shard a hand-over moved the connection to, or waited
        // for a verdict on the client: they go in again until nothing more is taken.
        loop {
            let sim_conn = &self.conns[&conn];
            let (shard, before) = (sim_conn.shard, buf.len());
            self.shards[shard].handle_bytes(conn, &mut buf, self.now);
            self.run();
            let moved = self.conns[&conn].shard != shard;
            if buf.is_empty() || self.conns[&conn].closed || (buf.len() == before && !moved) {
                break;
            }
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
        self.durable[shard] = self.durable[shard].max(seq);
        self.shards[shard].handle_persisted(seq);
        self.run();
    }

    /// Reports every record emitted so far durable, on every shard.
    pub fn persist_all(&mut self) {
        for shard in 0..self.shards.len() {
            let last = self.journals[shard].last().map_or(0, |(seq, _)| *seq);
            self.durable[shard] = self.durable[shard].max(last);
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

    /// Hands over the oldest held batch between the `pick`-th pair of shards that has any (in
    /// the order their oldest batches were sent), as one channel of the runtime would deliver
    /// it while the others lag. Returns whether there was one.
    pub fn deliver_mail(&mut self, pick: usize) -> bool {
        let mut pairs: Vec<(usize, usize)> = Vec::new();
        for (from, to, _) in &self.mail {
            if !pairs.contains(&(*from, *to)) {
                pairs.push((*from, *to));
            }
        }
        if pairs.is_empty() {
            return false;
        }
        let pair = pairs[pick % pairs.len()];
        let index = self
            .mail
            .iter()
            .position(|(from, to, _)| (*from, *to) == pair)
            .expect("the pair has a batch");
        let (from, to, batch) = self.mail.remove(index).expect("in range");
        for message in batch {
            self.shards[to].handle_shard_message(from, message, self.now);
        }
        self.run();
        true
    }

    /// Stops holding batches between shards and delivers every one still held, in order.
    pub fn release_mail(&mut self) {
        self.hold_mail = false;
        while self.deliver_mail(0) {}
    }

    /// Batches between shards sent and not delivered yet.
    pub fn mail_in_flight(&self) -> usize {
        self.mail.len()
    }

    /// Drains every output of every shard until nothing moves, like a runtime's loop turns.
    pub fn run(&mut self) {
        loop {
            let mut progressed = false;
            for index in 0..self.shards.len() {
                progressed |= self.run_shard(index);
            }
            if !progressed {
                return;
            }
        }
    }

    /// One turn of `index`'s loop: whether anything moved.
    fn run_shard(&mut self, index: usize) -> bool {
        let mut progressed = false;
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
            // A channel delivers in order: behind a held batch, a new one waits its turn too.
            let behind_held = self
                .mail
                .iter()
                .any(|&(from, dest, _)| (from, dest) == (index, to));
            if self.hold_mail || behind_held {
                self.mail.push_back((index, to, batch));
                continue;
            }
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
            self.durable[index] = seq;
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
                    self.shards[shard].handle_handed_over(
                        conn,
                        Origin::default(),
                        connect,
                        self.now,
                    );
                }
                Event::Authenticate { conn, request } => {
                    let verdict = (self.authenticator)(&request);
                    self.shards[index].handle_authenticated(conn, verdict, self.now);
                }
            }
        }
        progressed
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

    /// What the shards still hold that an idle broker would not: with every client gone, every
    /// session expired and every batch delivered, this must be empty, or state leaks.
    pub fn leftovers(&self) -> Vec<String> {
        let mut leftovers = Vec::new();
        let mut note = |shard: usize, what: &str, count: usize| {
            if count > 0 {
                leftovers.push(format!("shard {shard}: {count} {what}"));
            }
        };
        for (shard, broker) in self.shards.iter().enumerate() {
            note(shard, "connections", broker.connections.len());
            note(shard, "sessions", broker.sessions.len());
            note(shard, "client ids", broker.sessions.client_id_count());
            note(shard, "subscriptions", broker.subscriptions.len());
            note(shard, "bytes of output", broker.connections.unsent());
            note(shard, "held acknowledgements", broker.acks.len());
            note(
                shard,
                "shared-subscription cursors",
                broker.share_cursors.len(),
            );
        }
        let connections = self.connection_count.load(Ordering::Relaxed);
        if connections > 0 {
            leftovers.push(format!("{connections} connections counted"));
        }
        if !self.mail.is_empty() {
            leftovers.push(format!("{} batches between shards", self.mail.len()));
        }
        leftovers
    }
}
