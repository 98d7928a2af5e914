//! One broker core per shard in one thread, fed MQTT packets, with their journal records going
//! to the shards' streams.
//!
//! Why it exists: building a million subscriptions over sockets would measure the network and
//! take minutes; building them by filling `ShardState` by hand would test a state the broker
//! never makes. This drives the cores through the same inputs and outputs a running shard uses
//! (`handle_bytes`, shard messages, `poll_persist`, `handle_closed`), so the journal records and
//! the state a snapshot sees are the ones a real run produces, and a snapshot is taken the way
//! `server::shard` takes it.

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mqtt_broker::broker::persist::{encode_record, encode_snapshot};
use mqtt_broker::broker::{home_shard, Broker, Config, ConnId, Event, Origin, Timestamp};
use mqtt_broker::protocol::{Packet, ProtocolVersion};
use mqtt_broker_persistence::StreamWriter;

use super::unix_ms;

pub struct Cluster {
    brokers: Vec<Broker>,
    journals: Vec<StreamWriter>,
    epoch: Instant,
    next_conn: u64,
    version: ProtocolVersion,
    /// Journal records appended, over all shards.
    pub records: u64,
    /// Journal bytes appended, over all shards.
    pub record_bytes: u64,
}

/// What taking one shard's snapshot cost.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotTiming {
    /// `Broker::capture_state`: on the shard's thread, so delivery waits for it.
    pub capture: Duration,
    /// Converting the capture and encoding it, on the store's snapshot thread.
    pub encode: Duration,
    /// From the request until the snapshot is durable, encoding included.
    pub total: Duration,
    pub bytes: usize,
    /// The one-step conversion and encoding (`snapshot_state` then `encode_snapshot`), as a
    /// shard did it on its own thread before the capture existed: what delivery would wait for
    /// instead of `capture`.
    pub one_step: Duration,
}

impl Cluster {
    /// `config` as the server sets it for a data directory (`persistence` on).
    pub fn new(journals: Vec<StreamWriter>, config: &Config) -> Cluster {
        let shard_count = journals.len();
        let connections = Arc::new(AtomicUsize::new(0));
        let mut brokers: Vec<Broker> = (0..shard_count)
            .map(|shard| {
                Broker::new(
                    config.clone(),
                    shard,
                    shard_count,
                    connections.clone(),
                    Timestamp::ZERO,
                )
            })
            .collect();
        for broker in &mut brokers {
            broker.handle_wall_clock(unix_ms(), Timestamp::ZERO);
        }
        Cluster {
            brokers,
            journals,
            epoch: Instant::now(),
            next_conn: 1,
            version: ProtocolVersion::V3_1_1,
            records: 0,
            record_bytes: 0,
        }
    }

    pub fn shard_count(&self) -> usize {
        self.brokers.len()
    }

    pub fn broker(&self, shard: usize) -> &Broker {
        &self.brokers[shard]
    }

    fn now(&self) -> Timestamp {
        Timestamp::since(self.epoch)
    }

    /// One connection of `client_id` on its home shard that sends `packets` (a CONNECT first,
    /// a DISCONNECT last), read as one buffer; then everything the cores asked for is done.
    pub fn connection(&mut self, client_id: &str, packets: &[Packet]) {
        let shard = home_shard(client_id, self.brokers.len());
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        let mut buf = BytesMut::new();
        for packet in packets {
            packet
                .encode(self.version, &mut buf)
                .expect("benchmark packets encode");
        }
        let now = self.now();
        let broker = &mut self.brokers[shard];
        broker.handle_accepted(conn, Origin::default(), now);
        broker.handle_bytes(conn, &mut buf, now);
        self.pump();
    }

    /// Carries out every output until the cores are quiet: sent bytes are dropped (nobody
    /// reads them), shard messages are delivered, records appended, closed connections closed.
    pub fn pump(&mut self) {
        loop {
            let now = self.now();
            let mut mail = Vec::new();
            for (shard, broker) in self.brokers.iter_mut().enumerate() {
                while let Some(conn) = broker.poll_transmit() {
                    broker.take_output(conn, now);
                }
                while let Some((to, batch)) = broker.poll_shard_messages() {
                    mail.push((shard, to, batch));
                }
                while let Some((_, record)) = broker.poll_persist() {
                    let bytes = encode_record(&record);
                    self.records += 1;
                    self.record_bytes += bytes.len() as u64;
                    self.journals[shard]
                        .append(bytes)
                        .expect("the benchmark's journal accepts records");
                }
                while let Some(event) = broker.poll_event() {
                    match event {
                        Event::Close(conn) => broker.handle_closed(conn, now),
                        Event::HandOver { .. } => {
                            unreachable!("connections are accepted on their home shard")
                        }
                        Event::Authenticate { .. } => {
                            unreachable!("the benchmark's brokers authenticate nobody")
                        }
                    }
                }
            }
            if mail.is_empty() {
                return;
            }
            for (from, to, batch) in mail {
                for message in batch {
                    self.brokers[to].handle_shard_message(from, message, now);
                }
            }
        }
    }

    /// Snapshots every shard as `server::shard` and `server::shard_journal` do (outputs drained,
    /// `capture_state`, `owned_by`, then converted and encoded as one section on the snapshot
    /// thread), one shard at a time, waiting for each. Before each, times the one-step path too.
    pub fn snapshot(&mut self) -> Vec<SnapshotTiming> {
        self.pump();
        (0..self.brokers.len())
            .map(|shard| {
                let started = Instant::now();
                let bytes = encode_snapshot(&self.brokers[shard].snapshot_state().owned_by(shard));
                let one_step = started.elapsed();
                drop(bytes);

                let started = Instant::now();
                let capture = self.brokers[shard].capture_state();
                let captured = started.elapsed();
                let encoded = Arc::new(Mutex::new((Duration::ZERO, 0)));
                let report = encoded.clone();
                let ticket = self.journals[shard]
                    .snapshot_with(move || {
                        let started = Instant::now();
                        let bytes = encode_snapshot(&capture.into_state());
                        *report.lock().expect("not poisoned") = (started.elapsed(), bytes.len());
                        vec![bytes]
                    })
                    .expect("the benchmark's journal takes snapshots");
                ticket.wait().expect("the snapshot is written");
                let (encode, bytes) = *encoded.lock().expect("not poisoned");
                SnapshotTiming {
                    capture: captured,
                    encode,
                    total: started.elapsed(),
                    bytes,
                    one_step,
                }
            })
            .collect()
    }
}
