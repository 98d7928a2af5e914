//! Why this file exists: the one entry point. [`Store::open`] locks the data directory, runs
//! recovery, starts each active stream's new journal segment and the background threads, and
//! hands back the recovered state; [`Store::close`] (or dropping the store) drains every queue,
//! syncs, stops the threads and releases the lock.
//!
//! It owns the global LSN counter, the per-stream handles and the threads' lifetimes. It must
//! never do disk work for an append: that is `writer.rs`.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::error::{io_err, StoreError};
use crate::hooks::Hooks;
use crate::journal::{self, SegmentHeader};
use crate::layout::{fsync_dir, stream_dir, unix_now};
use crate::lock::DirLock;
use crate::options::StoreOptions;
use crate::queue::{self, QueueSender};
use crate::recover::{self, Recovery};
use crate::snapshotter::{self, SnapshotJob};
use crate::stream::{StreamShared, StreamStats};
use crate::writer::{Command, JournalWriter, StreamWriter};
use crate::{retire, Lsn};

/// An open data directory. `Send + Sync`; see the crate documentation.
pub struct Store {
    dir: PathBuf,
    options: StoreOptions,
    streams: Vec<Slot>,
    next_lsn: Arc<AtomicU64>,
    inactive: Mutex<BTreeSet<usize>>,
    snapshot_tx: Option<flume::Sender<SnapshotJob>>,
    snapshotter: Option<JoinHandle<()>>,
    crashed: Arc<AtomicBool>,
    lock: Option<DirLock>,
    closed: bool,
}

struct Slot {
    shared: Arc<StreamShared>,
    tx: QueueSender<Command>,
    notices: flume::Receiver<Lsn>,
    taken: AtomicBool,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("streams", &self.streams.len())
            .field("next_lsn", &self.next_lsn.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the data directory `dir` with `streams` active streams (one per
    /// shard), recovers what is on disk, and starts the background threads.
    ///
    /// The returned [`Recovery`] holds every stream found (including ones beyond `streams`, left
    /// from a larger shard count) and a report of what was repaired or lost.
    ///
    /// Fails if another broker holds the directory ([`StoreError::Locked`]), if a file has a
    /// format version this build cannot read ([`StoreError::UnsupportedVersion`]), or, with
    /// `strict_recovery`, if any damage was found ([`StoreError::Corrupt`]).
    pub fn open(
        dir: impl AsRef<Path>,
        streams: usize,
        options: StoreOptions,
    ) -> Result<(Store, Recovery), StoreError> {
        Store::open_with(dir.as_ref(), streams, options, Hooks::default())
    }

    pub(crate) fn open_with(
        dir: &Path,
        streams: usize,
        options: StoreOptions,
        hooks: Hooks,
    ) -> Result<(Store, Recovery), StoreError> {
        if streams == 0 {
            return Err(StoreError::InvalidOptions(
                "a store needs at least one stream",
            ));
        }
        if u32::try_from(streams).is_err() {
            return Err(StoreError::InvalidOptions("too many streams"));
        }
        fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        let lock = DirLock::acquire(dir)?;
        let recovered = recover::recover(dir, streams, options.strict_recovery, unix_now())?;
        let recovery = recovered.recovery;
        let next = recovery.report.next_lsn;

        let mut created = false;
        for stream in 0..streams {
            let sdir = stream_dir(dir, stream);
            if !sdir.exists() {
                fs::create_dir(&sdir).map_err(io_err("create directory", &sdir))?;
                created = true;
            }
        }
        if created {
            fsync_dir(dir)?;
        }

        let crashed = Arc::new(AtomicBool::new(false));
        let (snapshot_tx, snapshot_rx) = flume::unbounded();
        let mut store = Store {
            dir: dir.to_path_buf(),
            options,
            streams: Vec::with_capacity(streams),
            next_lsn: Arc::new(AtomicU64::new(next.0)),
            inactive: Mutex::new(
                recovery
                    .streams
                    .iter()
                    .filter(|s| !s.active)
                    .map(|s| s.stream)
                    .collect(),
            ),
            snapshot_tx: Some(snapshot_tx),
            snapshotter: None,
            crashed,
            lock: Some(lock),
            closed: false,
        };
        {
            let hooks = hooks.clone();
            let crashed = store.crashed.clone();
            store.snapshotter = Some(
                std::thread::Builder::new()
                    .name("persist-snapshot".into())
                    .spawn(move || snapshotter::run(snapshot_rx, hooks, crashed))
                    .map_err(io_err("spawn snapshot thread for", dir))?,
            );
        }
        for stream in 0..streams {
            let sdir = stream_dir(dir, stream);
            let header = SegmentHeader {
                stream: stream as u32,
                start: next,
                base: recovered.chain_base[stream],
            };
            let (file, path) = journal::create_segment(&sdir, header)?;
            let shared = Arc::new(StreamShared::new(
                stream,
                sdir.clone(),
                Lsn(next.0 - 1),
                recovered.journal_bytes[stream],
            ));
            let (tx, rx) = queue::queue();
            let (notify, notices) = flume::bounded(1);
            let writer = JournalWriter {
                shared: shared.clone(),
                rx,
                notify,
                snapshots: store.snapshot_tx.clone().expect("set above"),
                file,
                path,
                fsync: store.options.fsync,
                hooks: hooks.clone(),
                crashed: store.crashed.clone(),
                start: next,
            };
            let thread = std::thread::Builder::new()
                .name(format!("persist-journal-{stream}"))
                .spawn(move || writer.run())
                .map_err(io_err("spawn journal thread for", &sdir))?;
            store.streams.push(Slot {
                shared,
                tx,
                notices,
                taken: AtomicBool::new(false),
                thread: Some(thread),
            });
        }
        tracing::info!(
            dir = %dir.display(),
            streams,
            retiring = store.inactive_streams().len(),
            next_lsn = next.0,
            records = recovery.report.records_replayed,
            issues = recovery.report.issues.len(),
            "persistence: store opened"
        );
        Ok((store, recovery))
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The number of active streams.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    /// Hands out the writer of `stream`. Each stream has exactly one writer; a second call for
    /// the same stream fails with [`StoreError::WriterTaken`].
    pub fn writer(&self, stream: usize) -> Result<StreamWriter, StoreError> {
        let slot = self.slot(stream)?;
        if slot.taken.swap(true, Ordering::AcqRel) {
            return Err(StoreError::WriterTaken { stream });
        }
        Ok(StreamWriter::new(
            slot.shared.clone(),
            self.next_lsn.clone(),
            slot.tx.clone(),
            slot.notices.clone(),
            self.options.journal_max_bytes,
            self.options.snapshot_interval,
        ))
    }

    /// The highest durable LSN of `stream`.
    pub fn durable(&self, stream: usize) -> Result<Lsn, StoreError> {
        Ok(self.slot(stream)?.shared.stats().durable)
    }

    /// Counters of `stream`.
    pub fn stats(&self, stream: usize) -> Result<StreamStats, StoreError> {
        Ok(self.slot(stream)?.shared.stats())
    }

    /// Streams found on disk beyond the active ones and not yet retired.
    pub fn inactive_streams(&self) -> Vec<usize> {
        self.inactive
            .lock()
            .expect("not poisoned")
            .iter()
            .copied()
            .collect()
    }

    /// Removes an inactive stream from disk. Call it only once the state recovered from it has
    /// been re-homed and made durable in active streams (their records are durable, or their
    /// snapshots complete): after this, that state exists nowhere else. Files moved aside as
    /// damaged are kept (see `retire.rs`). Does disk work: call it from a non-shard thread.
    pub fn retire(&self, stream: usize) -> Result<(), StoreError> {
        if stream < self.streams.len() {
            return Err(StoreError::NotRetirable {
                stream,
                reason: "it is an active stream",
            });
        }
        let mut inactive = self.inactive.lock().expect("not poisoned");
        if !inactive.contains(&stream) {
            return Err(StoreError::NotRetirable {
                stream,
                reason: "it was not found on disk, or is retired already",
            });
        }
        retire::retire(&self.dir, stream, unix_now())?;
        inactive.remove(&stream);
        tracing::info!(stream, "persistence: stream retired");
        Ok(())
    }

    /// Writes and syncs everything queued, stops the background threads and releases the lock.
    /// Returns the first journal failure, if any stream failed. Dropping the store does the same
    /// and ignores the result. Blocks until the queues are drained: not for a shard thread.
    pub fn close(mut self) -> Result<(), StoreError> {
        self.shutdown()
    }

    fn slot(&self, stream: usize) -> Result<&Slot, StoreError> {
        self.streams.get(stream).ok_or(StoreError::NoSuchStream {
            stream,
            streams: self.streams.len(),
        })
    }

    fn shutdown(&mut self) -> Result<(), StoreError> {
        if std::mem::replace(&mut self.closed, true) {
            return Ok(());
        }
        for slot in &self.streams {
            let _ = slot.tx.send(Command::Shutdown);
        }
        for slot in &mut self.streams {
            if let Some(thread) = slot.thread.take() {
                let _ = thread.join();
            }
        }
        self.snapshot_tx = None;
        if let Some(thread) = self.snapshotter.take() {
            let _ = thread.join();
        }
        self.lock = None;
        match self.streams.iter().find_map(|s| s.shared.failure()) {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }

    /// Test helper: stops like a killed process. Queued records are dropped unwritten, nothing
    /// more is synced, and the lock is released.
    #[cfg(test)]
    pub(crate) fn crash(mut self) {
        self.crashed.store(true, Ordering::Release);
        let _ = self.shutdown();
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(error) = self.shutdown() {
            tracing::error!(%error, "persistence: store closed with a failed journal");
        }
    }
}
