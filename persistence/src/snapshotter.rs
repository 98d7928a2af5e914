//! Why this file exists: writing a snapshot can take a while, and appends must not wait for it.
//! The stream's writer thread only rotates the journal; this one background thread per store
//! encodes the snapshots whose encoding was deferred to it, writes them, one at a time, and then
//! removes what they made redundant.
//!
//! Order for each snapshot: temp file, fsync, rename, directory fsync (all in `snapshot.rs`),
//! and only then delete journal segments that start below the snapshot's LSN and older
//! snapshots, then fsync the directory again. A failure before the rename leaves the journal
//! holding the full history; a failure while deleting leaves stale files that start-up removes.
//!
//! It must never delete a segment the writer thread may still append to (the current segment
//! always starts at or above the newest snapshot's LSN) and never touch moved-aside files.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{io_err, StoreError};
use crate::hooks::{Hooks, Point};
use crate::layout::{fsync_dir, list_stream, Entry};
use crate::snapshot;
use crate::stream::StreamShared;
use crate::Lsn;

/// A snapshot's sections, or the work that makes them.
pub(crate) enum Sections {
    Ready(Vec<Vec<u8>>),
    /// Made on the snapshot thread ([`StreamWriter::snapshot_with`](crate::StreamWriter::snapshot_with)).
    Deferred(Box<dyn FnOnce() -> Vec<Vec<u8>> + Send>),
}

/// A snapshot handed over by a stream's writer thread after it rotated the journal.
pub(crate) struct SnapshotJob {
    pub(crate) shared: Arc<StreamShared>,
    pub(crate) lsn: Lsn,
    pub(crate) sections: Sections,
    pub(crate) done: flume::Sender<Result<Lsn, StoreError>>,
    /// Journal bytes the request reset; given back if the snapshot fails.
    pub(crate) journal_bytes: u64,
}

impl SnapshotJob {
    /// Reports the snapshot's outcome; `took` is how long encoding and writing it took.
    pub(crate) fn finish(self, result: Result<Lsn, StoreError>, took: Duration) {
        match &result {
            Ok(lsn) => {
                let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
                let shared = &self.shared;
                shared.snapshots.fetch_add(1, Ordering::Relaxed);
                shared.snapshot_micros.fetch_add(micros, Ordering::Relaxed);
                shared.last_snapshot_micros.store(micros, Ordering::Relaxed);
                tracing::info!(
                    stream = self.shared.stream,
                    lsn = lsn.0,
                    "persistence: snapshot durable"
                );
            }
            Err(error) => {
                self.shared
                    .journal_bytes
                    .fetch_add(self.journal_bytes, Ordering::Relaxed);
                tracing::warn!(
                    stream = self.shared.stream,
                    lsn = self.lsn.0,
                    %error,
                    "persistence: snapshot failed; the journal still holds the full history"
                );
            }
        }
        let _ = self.done.send(result);
    }
}

/// The snapshotter thread's body: runs until every sender is gone.
pub(crate) fn run(jobs: flume::Receiver<SnapshotJob>, hooks: Hooks, crashed: Arc<AtomicBool>) {
    for mut job in jobs.iter() {
        if crashed.load(Ordering::Acquire) {
            return;
        }
        let started = Instant::now();
        let sections = std::mem::replace(&mut job.sections, Sections::Ready(Vec::new()));
        let result = encode(&job, sections).and_then(|sections| take(&job, &sections, &hooks));
        job.finish(result, started.elapsed());
    }
}

/// The sections, made now if they were deferred. A panic there fails this snapshot only: the
/// thread goes on serving the others.
fn encode(job: &SnapshotJob, sections: Sections) -> Result<Vec<Vec<u8>>, StoreError> {
    match sections {
        Sections::Ready(sections) => Ok(sections),
        Sections::Deferred(encode) => {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(encode)).map_err(|panic| {
                StoreError::SnapshotEncoding {
                    stream: job.shared.stream,
                    reason: panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "panicked".to_string()),
                }
            })
        }
    }
}

fn take(job: &SnapshotJob, sections: &[Vec<u8>], hooks: &Hooks) -> Result<Lsn, StoreError> {
    let dir = &job.shared.dir;
    let path = snapshot::write_snapshot(dir, job.shared.stream, job.lsn, sections, hooks)?;
    // The snapshot is durable: older segments and snapshots are now redundant.
    if let Err(error) = hooks.at(Point::SnapshotBeforeDelete { snapshot: &path }) {
        tracing::warn!(%error, "persistence: not deleting files older than the snapshot");
        return Ok(job.lsn);
    }
    if let Err(error) = delete_older(dir, job.lsn) {
        tracing::warn!(
            %error,
            "persistence: could not delete files older than a snapshot; start-up will"
        );
    }
    Ok(job.lsn)
}

fn delete_older(dir: &Path, lsn: Lsn) -> Result<(), StoreError> {
    let mut deleted = false;
    for entry in list_stream(dir)? {
        match entry {
            Entry::Segment(start, path) | Entry::Snapshot(start, path) if start < lsn => {
                fs::remove_file(&path).map_err(io_err("delete", &path))?;
                deleted = true;
            }
            _ => {}
        }
    }
    if deleted {
        fsync_dir(dir)?;
    }
    Ok(())
}
