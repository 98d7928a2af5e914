//! Start-up, before any shard runs: opens the store in the data directory, turns what it
//! recovered into the state of each shard, and makes sure that state sits in the right streams
//! before anything new is written. The blocking build (`src/sync_server.rs`) starts the same
//! way, as one shard: both read and write one data directory format.
//!
//! Every snapshot and record of every stream is decoded and applied in LSN order (see
//! `broker::persist::Replay`); one that does not decode is logged, skipped and counted. Sessions
//! then go to the shard their client id is homed on *now*.
//!
//! When the shard count changed, a client's state can sit in another shard's stream. Before the
//! shards start, every active stream gets a snapshot of its new state (a *baseline*), written
//! while the old state is still on disk. A stream that lost clients keeps a copy of them in its
//! baseline, so a crash between two baselines loses nothing (replay lets the newest snapshot of
//! a client win, and all the copies are equal); once every baseline is durable, those streams
//! write a second snapshot without the copies, and streams beyond the shard count are retired.
//! No record is written before this is done, so no copy can go stale while it exists.

use std::collections::{HashMap, HashSet};

use mqtt_broker_persistence::{
    Lsn, RecoveredStream, Recovery, Store, StoreError, StoreOptions, StreamWriter,
};
use tracing::{error, info, warn};

use super::{PersistenceOptions, ServerError};
use crate::broker::persist::{
    decode_record, decode_snapshot, encode_snapshot, PersistRecord, Replay, RestoreSummary,
    ShardState,
};
use crate::broker::{home_shard, Broker, Timestamp};

/// What each shard starts with.
pub(crate) struct ShardStart {
    pub writer: StreamWriter,
    pub state: ShardState,
}

pub(crate) fn open(
    dir: &std::path::Path,
    options: &PersistenceOptions,
    shard_count: usize,
) -> Result<(Store, Vec<ShardStart>), StoreError> {
    let store_options = StoreOptions {
        fsync: options.fsync,
        journal_max_bytes: options.journal_max_bytes,
        snapshot_interval: options.snapshot_interval,
        strict_recovery: options.strict_recovery,
    };
    let (store, recovery) = Store::open(dir, shard_count, store_options)?;
    report(&recovery);
    let decoded = decode(recovery, shard_count);
    let mut replay = Replay::new();
    for (_, item) in decoded.items {
        match item {
            Item::Snapshot(state) => replay.apply_snapshot(state),
            Item::Record(record) => replay.apply_record(record),
        }
    }
    let states = replay.into_shards(shard_count);
    let sessions: usize = states.iter().map(|state| state.sessions.len()).sum();
    let retained = states[0].retained.as_ref().map_or(0, Vec::len);
    info!(
        dir = %dir.display(),
        sessions,
        retained,
        undecodable = decoded.undecodable,
        "persistent state recovered"
    );
    let writers = (0..shard_count)
        .map(|shard| store.writer(shard))
        .collect::<Result<Vec<_>, _>>()?;
    let rehome = decoded.found_in.values().any(|found| !found.is_empty());
    if rehome || !store.inactive_streams().is_empty() {
        rebase(&store, &writers, &states, &decoded.found_in)?;
    }
    let starts = writers
        .into_iter()
        .zip(states)
        .map(|(writer, state)| ShardStart { writer, state })
        .collect();
    Ok((store, starts))
}

enum Item {
    Snapshot(ShardState),
    Record(PersistRecord),
}

struct Decoded {
    /// In LSN order.
    items: Vec<(Lsn, Item)>,
    undecodable: u64,
    /// Per stream, the clients it holds state of and that are homed on another shard: the
    /// copies `rebase` must keep. (Recording every client would cost an allocation per
    /// session at every start for the rare start that changes the shard count.)
    found_in: HashMap<usize, HashSet<String>>,
}

/// Decodes every stream on a thread of its own, then merges them in LSN order. The snapshots
/// of a large state take a while to decode, and start-up waits for the slowest stream instead
/// of for all of them in turn.
fn decode(recovery: Recovery, shard_count: usize) -> Decoded {
    let streams: Vec<Decoded> = std::thread::scope(|scope| {
        let decoding: Vec<_> = recovery
            .streams
            .into_iter()
            .map(|stream| scope.spawn(move || decode_stream(stream, shard_count)))
            .collect();
        decoding
            .into_iter()
            .map(|thread| {
                thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    let mut decoded = Decoded {
        items: Vec::with_capacity(streams.iter().map(|stream| stream.items.len()).sum()),
        undecodable: 0,
        found_in: HashMap::new(),
    };
    for stream in streams {
        decoded.items.extend(stream.items);
        decoded.undecodable += stream.undecodable;
        decoded.found_in.extend(stream.found_in);
    }
    decoded.items.sort_by_key(|(lsn, _)| *lsn);
    decoded
}

fn decode_stream(stream: RecoveredStream, shard_count: usize) -> Decoded {
    let index = stream.stream;
    let mut decoded = Decoded {
        items: Vec::with_capacity(stream.records.len() + 1),
        undecodable: 0,
        found_in: HashMap::new(),
    };
    let found = decoded.found_in.entry(index).or_default();
    let mut note = |client_id: &str| {
        if home_shard(client_id, shard_count) != index {
            found.insert(client_id.to_owned());
        }
    };
    if let Some(snapshot) = &stream.snapshot {
        match snapshot.section(0).map(decode_snapshot) {
            Some(Ok(state)) => {
                for session in &state.sessions {
                    note(&session.client_id);
                }
                decoded.items.push((snapshot.lsn(), Item::Snapshot(state)));
            }
            Some(Err(failure)) => {
                error!(path = %snapshot.path().display(), %failure, "snapshot does not decode; its state is lost");
                decoded.undecodable += 1;
            }
            None => {
                warn!(path = %snapshot.path().display(), "snapshot has no state section");
                decoded.undecodable += 1;
            }
        }
    }
    for record in stream.records {
        match decode_record(&record.data) {
            Ok(item) => {
                if let Some(client_id) = item.client_id() {
                    note(client_id);
                }
                decoded.items.push((record.lsn, Item::Record(item)));
            }
            Err(failure) => {
                warn!(stream = index, lsn = %record.lsn, %failure, "journal record does not decode; skipped");
                decoded.undecodable += 1;
            }
        }
    }
    decoded
}

/// Loads a shard's recovered state into its core, which has served nothing yet. Stored
/// deadlines are wall-clock times, so the core learns what the wall clock reads at `now` first.
pub(crate) fn restore(broker: &mut Broker, state: ShardState, now: Timestamp) {
    broker.handle_wall_clock(unix_ms(), now);
    let summary = broker.restore(state, now);
    if summary != RestoreSummary::default() {
        info!(shard = broker.shard(), ?summary, "state restored");
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// Writes the baselines, drops the copies they needed, and retires the streams beyond the
/// shard count (see the module documentation).
fn rebase(
    store: &Store,
    writers: &[StreamWriter],
    states: &[ShardState],
    found_in: &HashMap<usize, HashSet<String>>,
) -> Result<(), StoreError> {
    let shard_count = writers.len();
    info!(
        shards = shard_count,
        "shard count changed: moving sessions to their new home shards"
    );
    let mut with_copies = Vec::new();
    let mut tickets = Vec::new();
    for (shard, writer) in writers.iter().enumerate() {
        let mut baseline = states[shard].clone().owned_by(shard);
        if let Some(found) = found_in.get(&shard) {
            let copies = states
                .iter()
                .flat_map(|state| &state.sessions)
                .filter(|session| found.contains(&session.client_id));
            baseline.sessions.extend(copies.cloned());
        }
        if baseline.sessions.len() != states[shard].sessions.len() {
            with_copies.push(shard);
        }
        tickets.push(writer.snapshot(vec![encode_snapshot(&baseline)])?);
    }
    for ticket in tickets {
        ticket.wait()?;
    }
    for stream in store.inactive_streams() {
        store.retire(stream)?;
    }
    let mut tickets = Vec::new();
    for shard in with_copies {
        let state = states[shard].clone().owned_by(shard);
        tickets.push(writers[shard].snapshot(vec![encode_snapshot(&state)])?);
    }
    for ticket in tickets {
        ticket.wait()?;
    }
    Ok(())
}

fn report(recovery: &Recovery) {
    let report = &recovery.report;
    for tail in &report.torn_tails {
        info!(stream = tail.stream, path = %tail.path.display(), bytes = tail.bytes_dropped, "torn journal tail dropped (an interrupted write)");
    }
    for issue in &report.issues {
        error!(%issue, "persistent state damaged");
    }
    if !report.is_clean() {
        error!(
            records_lost = report.records_lost(),
            bytes_lost = report.bytes_lost(),
            "started with the intact part of the data; use --strict-recovery to refuse instead"
        );
    }
}

impl From<StoreError> for ServerError {
    fn from(error: StoreError) -> ServerError {
        ServerError::Persistence(error)
    }
}
