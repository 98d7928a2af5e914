//! What a runtime does after every input to its broker core, in the order that keeps the core's
//! promises: bytes for connections first, then work for other shards, then journal records,
//! then events (closing a connection after its last bytes were asked for). The sharded build and
//! the blocking build (`src/sync_server.rs`) differ only in how they wake a writer, reach another
//! shard and carry out an event, so they share this and plug those in.

use std::time::Duration;

use super::shard_journal::ShardJournal;
use crate::broker::{Broker, ConnId, Event, ShardId, ShardMessage};

/// How often a runtime gives its core the time (`handle_timeout`): keepalives, retries, expiry
/// and held work are checked at this granularity.
pub(crate) const TICK: Duration = Duration::from_millis(50);

/// A runtime's side of [`drain_outputs`].
pub(crate) trait Outputs {
    /// `conn` has bytes to send.
    fn writable(&mut self, conn: ConnId);
    /// Messages for shard `to`.
    fn to_shard(&mut self, to: ShardId, batch: Vec<ShardMessage>);
    fn event(&mut self, event: Event);
}

/// Carries out everything `broker` produced since the last call.
pub(crate) fn drain_outputs(
    broker: &mut Broker,
    journal: &ShardJournal,
    runtime: &mut impl Outputs,
) {
    while let Some(conn) = broker.poll_transmit() {
        runtime.writable(conn);
    }
    while let Some((to, batch)) = broker.poll_shard_messages() {
        runtime.to_shard(to, batch);
    }
    while let Some((seq, record)) = broker.poll_persist() {
        journal.append(seq, &record);
    }
    while let Some(event) = broker.poll_event() {
        runtime.event(event);
    }
}
