//! Why this file exists: the knobs an operator sets, with their defaults, in one place.
//!
//! It owns [`StoreOptions`] and [`Fsync`]. It must never contain behaviour.

use std::time::Duration;

/// When the journal is flushed to stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// Every record is `fdatasync`ed before it is reported durable. Records that arrive while a
    /// sync is running share the next write and sync (group commit), so the cost is one sync per
    /// batch, not per record.
    Always,
    /// Records are written as they arrive and synced at most this often (and once more this long
    /// after the last unsynced write). A crash of the machine loses at most about this window.
    Interval(Duration),
    /// Records are written but never synced by the store (the OS decides). They are reported
    /// "durable" once handed to the OS: they survive a crash of the process, not of the machine.
    /// A clean [`close`](crate::Store::close) still syncs.
    Never,
}

/// How often [`Fsync::default`] syncs.
pub const DEFAULT_FSYNC_INTERVAL: Duration = Duration::from_millis(1000);

impl Default for Fsync {
    fn default() -> Self {
        Fsync::Interval(DEFAULT_FSYNC_INTERVAL)
    }
}

/// Options for [`Store::open`](crate::Store::open).
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Journal sync policy. Default: `Interval(1000 ms)`.
    pub fsync: Fsync,
    /// When a stream's journal since its last snapshot passes this many bytes,
    /// [`StreamWriter::wants_snapshot`](crate::StreamWriter::wants_snapshot) turns true.
    /// Default: 64 MiB.
    pub journal_max_bytes: u64,
    /// When this long has passed since a stream's last snapshot and it has journaled anything
    /// since, [`StreamWriter::wants_snapshot`](crate::StreamWriter::wants_snapshot) turns true.
    /// The caller drives snapshots; the store only advises. Default: 300 s.
    pub snapshot_interval: Duration,
    /// Refuse to open when recovery finds damage other than a torn final record, instead of
    /// moving the damaged file aside and continuing with what is intact. Default: false.
    pub strict_recovery: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            fsync: Fsync::default(),
            journal_max_bytes: 64 * 1024 * 1024,
            snapshot_interval: Duration::from_secs(300),
            strict_recovery: false,
        }
    }
}
