//! What a journal stream's writer handle, its thread, the snapshotter and the store share: the
//! stream's durability, its fatal error and its counters. Apart from the writer so that the
//! snapshotter, which the writer hands jobs to, needs nothing from it.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::error::StoreError;
use crate::Lsn;

/// A journal's fatal error.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) path: PathBuf,
    pub(crate) durable: Lsn,
    pub(crate) error: Arc<io::Error>,
}

/// State shared between a stream's writer handle, its thread, the snapshotter and the store.
#[derive(Debug)]
pub(crate) struct StreamShared {
    pub(crate) stream: usize,
    pub(crate) dir: PathBuf,
    pub(crate) durable: AtomicU64,
    pub(crate) failure: OnceLock<Failure>,
    pub(crate) backlog_bytes: AtomicU64,
    pub(crate) journal_bytes: AtomicU64,
    pub(crate) appended: AtomicU64,
    pub(crate) records_written: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    pub(crate) fsyncs: AtomicU64,
    pub(crate) snapshots: AtomicU64,
    /// Microseconds the completed snapshots took to encode and write, in all and the last.
    pub(crate) snapshot_micros: AtomicU64,
    pub(crate) last_snapshot_micros: AtomicU64,
}

impl StreamShared {
    pub(crate) fn new(
        stream: usize,
        dir: PathBuf,
        durable: Lsn,
        journal_bytes: u64,
    ) -> StreamShared {
        StreamShared {
            stream,
            dir,
            durable: AtomicU64::new(durable.0),
            failure: OnceLock::new(),
            backlog_bytes: AtomicU64::new(0),
            journal_bytes: AtomicU64::new(journal_bytes),
            appended: AtomicU64::new(0),
            records_written: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            snapshots: AtomicU64::new(0),
            snapshot_micros: AtomicU64::new(0),
            last_snapshot_micros: AtomicU64::new(0),
        }
    }

    /// The journal's fatal error, if it failed.
    pub(crate) fn failure(&self) -> Option<StoreError> {
        self.failure.get().map(|f| StoreError::JournalFailed {
            stream: self.stream,
            path: f.path.clone(),
            durable: f.durable,
            source: f.error.clone(),
        })
    }

    /// The error for a closed channel: the journal's failure if there was one.
    pub(crate) fn closed(&self) -> StoreError {
        self.failure().unwrap_or(StoreError::Closed)
    }

    pub(crate) fn stats(&self) -> StreamStats {
        StreamStats {
            durable: Lsn(self.durable.load(Ordering::Acquire)),
            appended: self.appended.load(Ordering::Relaxed),
            records_written: self.records_written.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            fsyncs: self.fsyncs.load(Ordering::Relaxed),
            snapshots: self.snapshots.load(Ordering::Relaxed),
            snapshot_time: Duration::from_micros(self.snapshot_micros.load(Ordering::Relaxed)),
            last_snapshot_time: Duration::from_micros(
                self.last_snapshot_micros.load(Ordering::Relaxed),
            ),
            backlog_bytes: self.backlog_bytes.load(Ordering::Relaxed),
            journal_bytes: self.journal_bytes.load(Ordering::Relaxed),
            failed: self.failure.get().is_some(),
        }
    }
}

/// Counters of one stream, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Highest durable LSN.
    pub durable: Lsn,
    /// Records appended since open.
    pub appended: u64,
    /// Records written to the journal file since open.
    pub records_written: u64,
    /// Bytes written to the journal since open.
    pub bytes_written: u64,
    /// Journal `fdatasync` calls since open (group commit makes this far below `records_written`
    /// under [`Fsync::Always`]).
    pub fsyncs: u64,
    /// Snapshots completed since open.
    pub snapshots: u64,
    /// Time the completed snapshots took to encode and write (off the shards), in all.
    pub snapshot_time: Duration,
    /// Time the last completed snapshot took.
    pub last_snapshot_time: Duration,
    /// Bytes appended but not yet written: the queue to the writer thread.
    pub backlog_bytes: u64,
    /// Journal bytes since the last snapshot request.
    pub journal_bytes: u64,
    /// True once the journal has failed.
    pub failed: bool,
}
