//! Crash-safe storage for the broker: one append-only, checksummed journal per shard with group
//! commit, plus snapshots read back through `memmap2`. The crate knows nothing of MQTT or
//! sockets: it stores opaque records (byte strings the broker core encodes itself).
//!
//! # Model
//!
//! A [`Store`] owns a data directory holding N *streams*, one per shard. Each shard appends
//! records to its stream through its [`StreamWriter`] and, now and then, replaces the stream's
//! history with a snapshot of its state. At start-up, [`Store::open`] hands back, per stream, the
//! newest intact snapshot (mapped, zero-copy) and the journal records after it, in order.
//!
//! * **LSNs** ([`Lsn`]) come from one counter for the whole store: unique, increasing within each
//!   stream, and ordered across streams the way the appends happened (an append that causally
//!   follows another has a higher LSN). They survive restarts. Snapshots take an LSN too.
//! * **Appending never blocks on disk.** [`StreamWriter::append`] assigns the LSN and queues the
//!   record to the stream's background thread, which writes every queued record in one write
//!   and, under [`Fsync::Always`], one `fdatasync` (group commit).
//! * **Durability** is per stream: [`StreamWriter::durable`] is the highest LSN on disk (an
//!   atomic load), and [`StreamWriter::durable_notices`] is a `flume::Receiver<Lsn>` that wakes a
//!   waiting shard (`recv_async`) whenever it advances. A broker holding PUBACK/PUBREC/SUBACK
//!   until its record is durable keeps the LSN with the pending ack and releases every ack at or
//!   below `durable()` on each notice.
//! * **An fsync (or write) error is fatal** for that journal: it stops, never retries, nothing
//!   after the last good sync is reported durable, appends fail with
//!   [`StoreError::JournalFailed`] and the notice channel disconnects.
//! * **Snapshots** are driven by the caller: poll [`StreamWriter::wants_snapshot`] (journal over
//!   `journal_max_bytes`, or `snapshot_interval` elapsed), then call [`StreamWriter::snapshot`]
//!   with the state encoded as sections, or [`StreamWriter::snapshot_with`] with a closure that
//!   encodes a copy of it on the snapshot thread (a large state then costs the caller only the
//!   copy). The journal switches to a new segment at once; the snapshot is written in the
//!   background (temp file, fsync, rename, directory fsync) and only then are older segments and
//!   snapshots deleted.
//! * **Recovery** ([`Recovery`]) drops a torn final record quietly (truncates it). Damage
//!   elsewhere (valid records after a bad one, a snapshot failing its checksums) is reported with
//!   the file and the reason, the file is moved aside as `<name>.corrupt-<unix secs>` (never
//!   deleted), and start-up goes on with the intact prefix, counting the records and bytes lost;
//!   with [`StoreOptions::strict_recovery`] it refuses instead, changing nothing. A file of a
//!   format version this build cannot read always refuses ([`StoreError::UnsupportedVersion`]).
//! * **Shard-count changes:** every stream on disk is recovered, including ones beyond the
//!   number asked for ([`RecoveredStream::active`] is false). The caller re-homes their state
//!   (records carry LSNs, so state from several streams can be merged in order), makes it durable,
//!   then calls [`Store::retire`].
//! * **One broker per directory:** `<dir>/LOCK` is held with an OS advisory lock; a second open
//!   fails with "data directory ./data is in use by another broker (pid N)".
//!
//! # Example
//!
//! ```
//! use mqtt_broker_persistence::{Fsync, Store, StoreOptions};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let options = StoreOptions { fsync: Fsync::Always, ..StoreOptions::default() };
//! let (store, recovery) = Store::open(dir.path(), 1, options.clone()).unwrap();
//! assert!(recovery.report.is_clean());
//! let writer = store.writer(0).unwrap();
//! let lsn = writer.append(b"session a".to_vec()).unwrap();
//! while !writer.is_durable(lsn) {
//!     writer.durable_notices().recv().unwrap(); // a shard would `recv_async().await`
//! }
//! writer.snapshot(vec![b"state".to_vec()]).unwrap().wait().unwrap();
//! writer.append(b"session b".to_vec()).unwrap();
//! store.close().unwrap();
//!
//! let (_store, recovery) = Store::open(dir.path(), 1, options).unwrap();
//! let stream = &recovery.streams[0];
//! assert_eq!(stream.snapshot.as_ref().unwrap().section(0), Some(&b"state"[..]));
//! assert_eq!(stream.records[0].data, b"session b");
//! ```
//!
//! # Modules
//!
//! * `store.rs`: open, hand out writers, retire, close.
//! * `writer.rs`: the append path and each stream's background thread (group commit, fsync
//!   policy, notices, journal rotation).
//! * `snapshotter.rs`: the background thread that writes snapshots and deletes what they replace.
//! * `journal.rs` / `snapshot.rs`: the two on-disk formats.
//! * `recover.rs`: start-up: torn tails, damage, stale files, history gaps.
//! * `retire.rs`: removing streams left by a larger shard count.
//! * `lock.rs`: the data directory lock. `layout.rs`: file names and directory fsync.
//! * `hooks.rs`: fault-injection points for tests (empty in release builds).

#![deny(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;

mod error;
mod hooks;
mod journal;
mod layout;
mod lock;
mod options;
mod queue;
mod recover;
mod retire;
mod snapshot;
mod snapshotter;
mod store;
mod stream;
mod writer;

#[cfg(test)]
mod tests;

pub use error::{FileKind, StoreError};
pub use journal::{JOURNAL_VERSION, MAX_RECORD_BYTES};
pub use options::{Fsync, StoreOptions, DEFAULT_FSYNC_INTERVAL};
pub use recover::{
    IssueKind, Record, RecoveredStream, Recovery, RecoveryIssue, RecoveryReport, TornTail,
};
pub use snapshot::{MappedSnapshot, SNAPSHOT_VERSION};
pub use store::Store;
pub use stream::StreamStats;
pub use writer::{SnapshotTicket, StreamWriter};

/// A log sequence number: unique across a store, increasing within each stream. `Lsn(0)` means
/// "nothing"; the first record ever gets `Lsn(1)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// No record.
    pub const ZERO: Lsn = Lsn(0);
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
