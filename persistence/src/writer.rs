//! Why this file exists: shards must never wait for a disk. A shard appends through its
//! [`StreamWriter`] (an atomic increment and a channel send) and carries on; one background
//! thread per stream owns the journal file and does the writes and syncs, batching every record
//! that queued up while the previous sync ran into one write and one `fdatasync` (group commit).
//!
//! It owns the append path, the fsync policy, durability notices, the journal's rotation when a
//! snapshot is requested, and the "an fsync error is fatal" rule: after a failed write or sync
//! the thread records the error and stops; nothing later is reported durable and every append
//! fails. It never retries a sync.
//!
//! It must never block the caller on I/O, and never report an LSN durable before the sync (or,
//! under [`Fsync::Never`], the write) that covers it has returned.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, Write};
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::StoreError;
use crate::hooks::{Hooks, Point};
use crate::journal::{self, SegmentHeader, MAX_RECORD_BYTES, RECORD_OVERHEAD};
use crate::options::Fsync;
use crate::queue::{QueueReceiver, QueueSender, Taken};
use crate::snapshotter::{Sections, SnapshotJob};
use crate::stream::{Failure, StreamShared, StreamStats};
use crate::Lsn;

/// Above this many buffered bytes the writer thread writes (and, per policy, syncs) before
/// taking more records off the queue, bounding one batch's memory.
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// What the batch buffer keeps while the queue is empty.
const IDLE_BATCH_BYTES: usize = 64 * 1024;

/// What the writer thread is asked to do, in order.
pub(crate) enum Command {
    Append { lsn: Lsn, data: Vec<u8> },
    Snapshot(SnapshotRequest),
    Shutdown,
}

pub(crate) struct SnapshotRequest {
    lsn: Lsn,
    sections: Sections,
    done: flume::Sender<Result<Lsn, StoreError>>,
    journal_bytes: u64,
}

/// A shard's handle on its journal stream. One per stream ([`Store::writer`](crate::Store::writer)
/// hands it out once); `Send`, not `Sync`: it belongs to one shard thread at a time. No method
/// blocks on I/O.
///
/// Durability: [`append`](Self::append) returns the record's [`Lsn`] at once. The record is
/// durable when [`durable`](Self::durable) is at least that LSN. To wait without polling, receive
/// from [`durable_notices`](Self::durable_notices) (e.g. `recv_async().await` in the shard's
/// event loop): each notice means "durable() has advanced"; read `durable()` after waking, since
/// notices coalesce (the channel holds one). The channel disconnects when the journal fails or
/// the store closes.
pub struct StreamWriter {
    shared: Arc<StreamShared>,
    next_lsn: Arc<AtomicU64>,
    tx: QueueSender<Command>,
    notices: flume::Receiver<Lsn>,
    journal_max_bytes: u64,
    snapshot_interval: Duration,
    last_snapshot: Cell<Instant>,
    _not_sync: PhantomData<Cell<()>>,
}

impl std::fmt::Debug for StreamWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamWriter")
            .field("stream", &self.shared.stream)
            .field("durable", &self.durable())
            .finish_non_exhaustive()
    }
}

impl StreamWriter {
    pub(crate) fn new(
        shared: Arc<StreamShared>,
        next_lsn: Arc<AtomicU64>,
        tx: QueueSender<Command>,
        notices: flume::Receiver<Lsn>,
        journal_max_bytes: u64,
        snapshot_interval: Duration,
    ) -> StreamWriter {
        StreamWriter {
            shared,
            next_lsn,
            tx,
            notices,
            journal_max_bytes,
            snapshot_interval,
            last_snapshot: Cell::new(Instant::now()),
            _not_sync: PhantomData,
        }
    }

    /// The stream's index.
    pub fn stream(&self) -> usize {
        self.shared.stream
    }

    /// Queues `record` for the journal and returns its LSN. Never blocks on disk.
    ///
    /// Fails only if the journal has failed ([`StoreError::JournalFailed`]), the store is closed,
    /// or the record is over [`MAX_RECORD_BYTES`](crate::MAX_RECORD_BYTES).
    pub fn append(&self, record: Vec<u8>) -> Result<Lsn, StoreError> {
        if let Some(failure) = self.shared.failure() {
            return Err(failure);
        }
        if record.len() > MAX_RECORD_BYTES {
            return Err(StoreError::RecordTooLarge {
                len: record.len(),
                max: MAX_RECORD_BYTES,
            });
        }
        let size = (RECORD_OVERHEAD + record.len()) as u64;
        let lsn = Lsn(self.next_lsn.fetch_add(1, Ordering::Relaxed));
        self.shared.backlog_bytes.fetch_add(size, Ordering::Relaxed);
        self.shared.journal_bytes.fetch_add(size, Ordering::Relaxed);
        self.shared.appended.fetch_add(1, Ordering::Relaxed);
        self.tx
            .send(Command::Append { lsn, data: record })
            .map_err(|_| self.shared.closed())?;
        Ok(lsn)
    }

    /// The highest durable LSN of this stream: every record appended to it with an LSN at or
    /// below this is on disk (see [`Fsync`] for what "on disk" means under each policy).
    pub fn durable(&self) -> Lsn {
        Lsn(self.shared.durable.load(Ordering::Acquire))
    }

    /// True if `lsn` is durable.
    pub fn is_durable(&self, lsn: Lsn) -> bool {
        self.durable() >= lsn
    }

    /// Wake-ups sent whenever [`durable`](Self::durable) advances, carrying the new value.
    /// Notices coalesce: after receiving one, read `durable()`. Use a single consumer.
    pub fn durable_notices(&self) -> flume::Receiver<Lsn> {
        self.notices.clone()
    }

    /// Bytes appended but not yet written by the background thread. The queue itself is
    /// unbounded so that `append` never blocks; bound it by pausing input (stop reading client
    /// sockets) while this is above a limit of your choosing.
    pub fn backlog_bytes(&self) -> u64 {
        self.shared.backlog_bytes.load(Ordering::Relaxed)
    }

    /// True when a snapshot is due: the journal since the last one passed `journal_max_bytes`,
    /// or `snapshot_interval` has passed and anything was journaled since.
    pub fn wants_snapshot(&self) -> bool {
        let bytes = self.shared.journal_bytes.load(Ordering::Relaxed);
        bytes >= self.journal_max_bytes
            || (bytes > 0 && self.last_snapshot.get().elapsed() >= self.snapshot_interval)
    }

    /// Requests a snapshot of this stream's state. `sections` must encode the state after every
    /// record appended to this stream so far (and none after). The snapshot takes a fresh LSN,
    /// returned in the ticket; records appended afterwards get higher LSNs.
    ///
    /// In the background: the journal is synced and a new segment begun (appends go on at
    /// once), the snapshot is written to a temp file, fsynced, renamed and its directory fsynced;
    /// only then are the older segments and snapshots deleted. If any step fails, the journal
    /// still holds the full history and the ticket reports the error.
    pub fn snapshot(&self, sections: Vec<Vec<u8>>) -> Result<SnapshotTicket, StoreError> {
        self.request_snapshot(Sections::Ready(sections))
    }

    /// [`snapshot`](Self::snapshot), with the sections made by `encode` on the store's snapshot
    /// thread instead of by the caller: the journal is rotated at this call as for `snapshot`,
    /// and `encode` runs later, so a shard pays only for what it moves into the closure. That
    /// must be the state as it is now (a copy, or data nothing will change), never a handle on
    /// live state. If `encode` panics, the snapshot fails like a failed write: the ticket
    /// reports [`StoreError::SnapshotEncoding`] and the journal keeps the full history.
    pub fn snapshot_with(
        &self,
        encode: impl FnOnce() -> Vec<Vec<u8>> + Send + 'static,
    ) -> Result<SnapshotTicket, StoreError> {
        self.request_snapshot(Sections::Deferred(Box::new(encode)))
    }

    fn request_snapshot(&self, sections: Sections) -> Result<SnapshotTicket, StoreError> {
        if let Some(failure) = self.shared.failure() {
            return Err(failure);
        }
        let lsn = Lsn(self.next_lsn.fetch_add(1, Ordering::Relaxed));
        let journal_bytes = self.shared.journal_bytes.swap(0, Ordering::Relaxed);
        let (done, done_rx) = flume::bounded(1);
        let request = SnapshotRequest {
            lsn,
            sections,
            done,
            journal_bytes,
        };
        if self.tx.send(Command::Snapshot(request)).is_err() {
            self.shared
                .journal_bytes
                .fetch_add(journal_bytes, Ordering::Relaxed);
            return Err(self.shared.closed());
        }
        self.last_snapshot.set(Instant::now());
        Ok(SnapshotTicket {
            lsn,
            done: done_rx,
            shared: self.shared.clone(),
        })
    }

    /// This stream's counters.
    pub fn stats(&self) -> StreamStats {
        self.shared.stats()
    }

    /// The journal's fatal error, if it has failed.
    pub fn failure(&self) -> Option<StoreError> {
        self.shared.failure()
    }
}

/// The outcome of a [`StreamWriter::snapshot`] request, delivered once the snapshot is durable
/// (or has failed).
#[derive(Debug)]
pub struct SnapshotTicket {
    lsn: Lsn,
    done: flume::Receiver<Result<Lsn, StoreError>>,
    shared: Arc<StreamShared>,
}

impl SnapshotTicket {
    /// The snapshot's LSN.
    pub fn lsn(&self) -> Lsn {
        self.lsn
    }

    /// The channel the outcome arrives on (for `recv_async`); a disconnect without a message
    /// means the store closed or the journal failed first.
    pub fn receiver(&self) -> &flume::Receiver<Result<Lsn, StoreError>> {
        &self.done
    }

    /// The outcome if it is in, without blocking.
    pub fn try_result(&self) -> Option<Result<Lsn, StoreError>> {
        match self.done.try_recv() {
            Ok(result) => Some(result),
            Err(flume::TryRecvError::Empty) => None,
            Err(flume::TryRecvError::Disconnected) => Some(Err(self.shared.closed())),
        }
    }

    /// Blocks until the snapshot is durable or failed. Never call this on a shard thread.
    pub fn wait(self) -> Result<Lsn, StoreError> {
        self.done
            .recv()
            .unwrap_or_else(|_| Err(self.shared.closed()))
    }
}

/// The background thread of one stream.
pub(crate) struct JournalWriter {
    pub(crate) shared: Arc<StreamShared>,
    pub(crate) rx: QueueReceiver<Command>,
    pub(crate) notify: flume::Sender<Lsn>,
    pub(crate) snapshots: flume::Sender<SnapshotJob>,
    pub(crate) file: File,
    pub(crate) path: PathBuf,
    pub(crate) fsync: Fsync,
    pub(crate) hooks: Hooks,
    pub(crate) crashed: Arc<AtomicBool>,
    pub(crate) start: Lsn,
}

/// The thread's working state.
struct Run {
    w: JournalWriter,
    buf: Vec<u8>,
    buf_last: Lsn,
    buf_records: u64,
    buf_backlog: u64,
    written: Lsn,
    synced: Lsn,
    published: Lsn,
    last_sync: Instant,
}

impl JournalWriter {
    /// The thread's body.
    pub(crate) fn run(self) {
        let before = Lsn(self.start.0.saturating_sub(1));
        let mut run = Run {
            w: self,
            buf: Vec::with_capacity(IDLE_BATCH_BYTES),
            buf_last: before,
            buf_records: 0,
            buf_backlog: 0,
            written: before,
            synced: before,
            published: before,
            last_sync: Instant::now(),
        };
        if let Err(error) = run.run_loop() {
            run.fail(error);
        }
    }
}

impl Run {
    fn crashed(&self) -> bool {
        self.w.crashed.load(Ordering::Acquire)
    }

    fn run_loop(&mut self) -> io::Result<()> {
        let mut commands = Vec::new();
        loop {
            match self.w.rx.take(&mut commands, self.sync_deadline()) {
                Taken::Items => {}
                Taken::Timeout => {
                    self.flush(false)?;
                    continue;
                }
                Taken::Closed => return self.flush(true),
            }
            // Group commit: take everything that queued up, then one write and one sync.
            loop {
                for command in commands.drain(..) {
                    if self.crashed() {
                        return Ok(());
                    }
                    match command {
                        Command::Append { lsn, data } => {
                            journal::encode_record(&mut self.buf, lsn, &data);
                            self.buf_last = lsn;
                            self.buf_records += 1;
                            self.buf_backlog += (RECORD_OVERHEAD + data.len()) as u64;
                            if self.buf.len() >= MAX_BATCH_BYTES {
                                self.flush(false)?;
                            }
                        }
                        Command::Snapshot(request) => {
                            self.flush(false)?;
                            self.rotate(request)?;
                        }
                        Command::Shutdown => return self.flush(true),
                    }
                }
                if !self.w.rx.try_take(&mut commands) {
                    break;
                }
            }
            if self.crashed() {
                return Ok(());
            }
            self.flush(false)?;
        }
    }

    /// When the thread must wake with nothing queued: for the sync `--fsync interval` owes.
    fn sync_deadline(&self) -> Option<Instant> {
        match self.w.fsync {
            Fsync::Interval(interval) if self.written > self.synced => {
                Some(self.last_sync + interval)
            }
            _ => None,
        }
    }

    /// Writes the batch, then syncs as the policy (or `force`, for shutdown) says.
    fn flush(&mut self, force: bool) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.w.file.write_all(&self.buf)?;
            let shared = &self.w.shared;
            shared
                .bytes_written
                .fetch_add(self.buf.len() as u64, Ordering::Relaxed);
            shared
                .records_written
                .fetch_add(self.buf_records, Ordering::Relaxed);
            shared
                .backlog_bytes
                .fetch_sub(self.buf_backlog, Ordering::Relaxed);
            self.written = self.buf_last;
            self.buf.clear();
            // A burst grows the batch to MAX_BATCH_BYTES and more; give it back once the queue
            // has drained, or every stream keeps megabytes resident for good after one burst.
            if self.buf.capacity() > IDLE_BATCH_BYTES && self.w.rx.is_empty() {
                self.buf.shrink_to(IDLE_BATCH_BYTES);
            }
            self.buf_records = 0;
            self.buf_backlog = 0;
        }
        if self.written > self.synced {
            let sync = match self.w.fsync {
                Fsync::Always => true,
                Fsync::Interval(interval) => force || self.last_sync.elapsed() >= interval,
                Fsync::Never => force,
            };
            if sync {
                self.sync()?;
            } else if self.w.fsync == Fsync::Never {
                self.publish(self.written);
            }
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.w.hooks.at(Point::JournalSync {
            stream: self.w.shared.stream,
        })?;
        self.w.file.sync_data()?;
        self.w.shared.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.synced = self.written;
        self.last_sync = Instant::now();
        self.publish(self.synced);
        Ok(())
    }

    fn publish(&mut self, lsn: Lsn) {
        if lsn > self.published {
            self.published = lsn;
            self.w.shared.durable.store(lsn.0, Ordering::Release);
            // A full channel already holds a wake-up; the reader then loads `durable`.
            let _ = self.w.notify.try_send(lsn);
        }
    }

    /// Ends the current segment (synced) and starts `journal-<snapshot lsn>`, then hands the
    /// snapshot to the snapshotter.
    fn rotate(&mut self, request: SnapshotRequest) -> io::Result<()> {
        if self.written > self.synced {
            self.sync()?;
        }
        let shared = &self.w.shared;
        let header = SegmentHeader {
            stream: shared.stream as u32,
            start: request.lsn,
            base: request.lsn,
        };
        match journal::create_segment(&shared.dir, header) {
            Ok((file, path)) => {
                self.w.file = file;
                self.w.path = path;
                let job = SnapshotJob {
                    shared: shared.clone(),
                    lsn: request.lsn,
                    sections: request.sections,
                    done: request.done,
                    journal_bytes: request.journal_bytes,
                };
                if let Err(flume::SendError(job)) = self.w.snapshots.send(job) {
                    job.finish(Err(StoreError::Closed), Duration::ZERO);
                }
            }
            Err(error) => {
                tracing::warn!(
                    stream = shared.stream,
                    %error,
                    "persistence: could not start a new journal segment; snapshot skipped, journal continues"
                );
                shared
                    .journal_bytes
                    .fetch_add(request.journal_bytes, Ordering::Relaxed);
                let _ = request.done.send(Err(error));
            }
        }
        Ok(())
    }

    /// Records the fatal error. Dropping `self` afterwards closes the queue (appends fail) and the
    /// notice channel (waiters wake and see the failure).
    fn fail(&mut self, error: io::Error) {
        let shared = &self.w.shared;
        let durable = Lsn(shared.durable.load(Ordering::Acquire));
        tracing::error!(
            stream = shared.stream,
            path = %self.w.path.display(),
            durable = durable.0,
            %error,
            "persistence: journal write or fsync failed; this journal is stopped and nothing after LSN {durable} is durable"
        );
        let _ = shared.failure.set(Failure {
            path: self.w.path.clone(),
            durable,
            error: Arc::new(error),
        });
    }
}
