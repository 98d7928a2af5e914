//! `build`: creates the benchmark state in a data directory, through the broker cores, and times
//! its snapshot.
//!
//! Order: the first `100 - journal_percent` % of the sessions and retained messages, then a
//! snapshot of every shard (timed: this is the snapshot a running broker takes of that state),
//! then the rest, which stays in the journal only. The store is opened with
//! `mqtt_broker::server::recover`, as the broker opens it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use mqtt_broker::broker::Config;
use mqtt_broker::protocol::{
    Connect, ConnectProperties, Packet, ProtocolVersion, Publish, QoS, Subscribe,
    SubscriptionOptions,
};
use mqtt_broker::server::{recover, Fsync, PersistenceOptions};

use super::cluster::{Cluster, SnapshotTiming};
use super::{Figures, Shape};

/// Retained messages published per publisher connection.
const RETAINED_PER_CONNECTION: u32 = 1000;

pub struct BuildPlan {
    pub dir: PathBuf,
    pub shape: Shape,
    pub shards: usize,
    /// Percent of the sessions and retained messages written after the snapshot.
    pub journal_percent: u32,
}

pub fn run(plan: &BuildPlan) -> io::Result<Figures> {
    if fs::read_dir(&plan.dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} is not empty; build writes a fresh data directory",
                plan.dir.display()
            ),
        ));
    }
    let started = Instant::now();
    // Never: the build's own journal writes need not wait for a disk. Snapshots are synced
    // whatever the policy, and closing the store syncs the journal.
    let options = PersistenceOptions {
        fsync: Fsync::Never,
        ..PersistenceOptions::default()
    };
    let (store, shards) = recover(&plan.dir, &options, plan.shards).map_err(io::Error::other)?;
    let config = Config {
        persistence: true,
        ..Config::default()
    };
    let writers = shards.into_iter().map(|(writer, _)| writer).collect();
    let mut cluster = Cluster::new(writers, &config);
    let shape = plan.shape;
    let keep = |total: u32| {
        (u64::from(total) * u64::from(100 - plan.journal_percent.min(100)) / 100) as u32
    };
    let (snap_sessions, snap_retained) = (keep(shape.sessions), keep(shape.retained));

    add_sessions(&mut cluster, &shape, 0..snap_sessions);
    add_retained(&mut cluster, &shape, 0..snap_retained);
    let bytes_before_snapshot = cluster.record_bytes;
    let timings = cluster.snapshot();
    let (records_from, bytes_from) = (cluster.records, cluster.record_bytes);
    add_sessions(&mut cluster, &shape, snap_sessions..shape.sessions);
    add_retained(&mut cluster, &shape, snap_retained..shape.retained);

    let mut figures = Figures::default();
    figures.text("command", "build");
    figures.text("dir", plan.dir.display().to_string());
    figures.count("shards", cluster.shard_count() as u64);
    let sessions: usize = (0..cluster.shard_count())
        .map(|shard| cluster.broker(shard).session_count())
        .sum();
    figures.count("sessions", sessions as u64);
    figures.count("subscriptions", shape.subscriptions());
    figures.count("retained", cluster.broker(0).retained_count() as u64);
    figures.count("retained_payload_bytes", shape.payload as u64);
    figures.count("snapshot_sessions", u64::from(snap_sessions));
    figures.count("snapshot_retained", u64::from(snap_retained));
    figures.count("journal_bytes_before_snapshot", bytes_before_snapshot);
    for (shard, timing) in timings.iter().enumerate() {
        figures.time(&format!("snapshot_{shard}_capture_ms"), timing.capture);
        figures.time(&format!("snapshot_{shard}_encode_ms"), timing.encode);
        figures.time(&format!("snapshot_{shard}_durable_ms"), timing.total);
        figures.count(&format!("snapshot_{shard}_bytes"), timing.bytes as u64);
        figures.time(&format!("snapshot_{shard}_one_step_ms"), timing.one_step);
    }
    let max = |f: fn(&SnapshotTiming) -> Duration| timings.iter().map(f).max().unwrap_or_default();
    figures.time("snapshot_shard_blocked_max_ms", max(|t| t.capture));
    figures.time("snapshot_one_step_blocked_max_ms", max(|t| t.one_step));
    figures.count(
        "journal_records_after_snapshot",
        cluster.records - records_from,
    );
    figures.count(
        "journal_record_bytes_after_snapshot",
        cluster.record_bytes - bytes_from,
    );
    drop(cluster);
    store.close().map_err(io::Error::other)?;
    let (snapshots, journals) = files(&plan.dir)?;
    figures.count("snapshot_files_bytes", snapshots);
    figures.count("journal_files_bytes", journals);
    figures.time("build_ms", started.elapsed());
    Ok(figures)
}

/// Sessions `range`: each connects with a persistent session, subscribes to its filters in one
/// SUBSCRIBE at QoS 1, and disconnects (the session stays, detached).
fn add_sessions(cluster: &mut Cluster, shape: &Shape, range: std::ops::Range<u32>) {
    for index in range {
        let client_id = Shape::client_id(index);
        let filters = shape
            .filters(index)
            .into_iter()
            .map(|filter| {
                (
                    ByteString::from(filter),
                    SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        ..SubscriptionOptions::default()
                    },
                )
            })
            .collect();
        let packets = [
            connect(&client_id, false),
            Packet::Subscribe(Subscribe {
                packet_id: 1,
                filters,
                properties: Default::default(),
            }),
            Packet::Disconnect(Box::default()),
        ];
        cluster.connection(&client_id, &packets);
    }
}

/// Retained messages `range`, QoS 1, published by short-lived clean-session clients.
fn add_retained(cluster: &mut Cluster, shape: &Shape, range: std::ops::Range<u32>) {
    let payload = Bytes::from(vec![b'r'; shape.payload]);
    let mut start = range.start;
    while start < range.end {
        let end = range.end.min(start + RETAINED_PER_CONNECTION);
        let client_id = format!("persist-bench-retainer-{start}");
        let mut packets = vec![connect(&client_id, true)];
        packets.extend((start..end).map(|index| {
            Packet::Publish(Publish {
                qos: QoS::AtLeastOnce,
                retain: true,
                topic: ByteString::from(Shape::retained_topic(index)),
                packet_id: (index - start + 1) as u16,
                payload: payload.clone(),
                ..Publish::default()
            })
        }));
        packets.push(Packet::Disconnect(Box::default()));
        cluster.connection(&client_id, &packets);
        start = end;
    }
}

pub(super) fn connect(client_id: &str, clean_start: bool) -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol: ProtocolVersion::V3_1_1,
        clean_start,
        keep_alive: 0,
        client_id: ByteString::from(client_id),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }))
}

/// Bytes of snapshot files and of journal segments under `dir`.
fn files(dir: &Path) -> io::Result<(u64, u64)> {
    let (mut snapshots, mut journals) = (0, 0);
    for stream in fs::read_dir(dir)? {
        let stream = stream?;
        if !stream.file_type()?.is_dir() {
            continue;
        }
        for file in fs::read_dir(stream.path())? {
            let file = file?;
            let name = file.file_name();
            let name = name.to_string_lossy();
            let len = file.metadata()?.len();
            if name.ends_with(".snap") {
                snapshots += len;
            } else if name.ends_with(".log") {
                journals += len;
            }
        }
    }
    Ok((snapshots, journals))
}
