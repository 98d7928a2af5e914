//! One shard's link to its journal stream: appends the records its broker core emits, tells the
//! core which of them are durable, and takes snapshots of the core's state. The blocking build
//! (`src/sync_server.rs`) uses it too, for its one shard, from behind its core's lock.
//!
//! Nothing here waits for a disk. `StreamWriter::append` only queues the record for the stream's
//! background thread; durability comes back as notices, received by a task of the shard's own
//! event loop. The core numbers records with its own sequence and the store with LSNs, so the
//! records in between are kept as runs of both, in order (`PendingRecords`).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use mqtt_broker_persistence::{Lsn, SnapshotTicket, StreamStats, StreamWriter};
use tracing::{debug, error, info, warn};

use crate::broker::persist::{encode_record, encode_snapshot, PersistRecord, StateCapture};

/// Bytes appended but not yet written above which a shard stops reading from its clients.
const MAX_BACKLOG_BYTES: u64 = 64 * 1024 * 1024;

pub(crate) struct ShardJournal {
    writer: StreamWriter,
    pending: RefCell<PendingRecords>,
    snapshot: RefCell<Option<SnapshotTicket>>,
    /// Set once the journal failed; it is reported once.
    failed: Cell<bool>,
}

impl ShardJournal {
    pub fn new(writer: StreamWriter) -> ShardJournal {
        ShardJournal {
            writer,
            pending: RefCell::new(PendingRecords::default()),
            snapshot: RefCell::new(None),
            failed: Cell::new(false),
        }
    }

    /// What the journal has done since the broker started, for reports.
    pub fn stats(&self) -> StreamStats {
        self.writer.stats()
    }

    pub fn notices(&self) -> flume::Receiver<Lsn> {
        self.writer.durable_notices()
    }

    pub fn append(&self, seq: u64, record: &PersistRecord) {
        match self.writer.append(encode_record(record)) {
            Ok(lsn) => self.pending.borrow_mut().push(seq, lsn),
            // The journal accepts nothing more and reports nothing more durable: held
            // acknowledgements stay held, which is the truth. Saying it once is enough.
            Err(failure) => {
                if !self.failed.replace(true) {
                    error!(stream = self.writer.stream(), %failure, "journal failed: state changes are no longer persisted");
                }
            }
        }
    }

    /// More is waiting to be written than a disk keeps up with: publishers and the inbox stop
    /// until it drains, so the queue to the writer thread stays bounded. A failed journal never
    /// drains, and holding input back for it would stop the broker for good, so it never counts
    /// as backlogged.
    pub fn is_backlogged(&self) -> bool {
        self.writer.backlog_bytes() > MAX_BACKLOG_BYTES && self.writer.failure().is_none()
    }

    /// The highest core sequence number now durable, if it moved.
    pub fn durable_seq(&self) -> Option<u64> {
        self.pending.borrow_mut().settle(self.writer.durable())
    }

    /// True when the store advises a snapshot (journal size or interval) and none is running.
    pub fn wants_snapshot(&self) -> bool {
        self.check_snapshot();
        self.snapshot.borrow().is_none() && self.writer.wants_snapshot()
    }

    /// Starts a snapshot of `capture`, which must include every record appended so far. It is
    /// converted and encoded on the store's snapshot thread: the shard has paid for the capture
    /// only, and goes on delivering while the snapshot is made.
    pub fn snapshot_capture(&self, capture: StateCapture) {
        let stream = self.writer.stream();
        let encode = move || {
            let bytes = encode_snapshot(&capture.into_state());
            debug!(stream, size = bytes.len(), "snapshot encoded");
            vec![bytes]
        };
        match self.writer.snapshot_with(encode) {
            Ok(ticket) => {
                debug!(stream, lsn = %ticket.lsn(), "snapshot started");
                *self.snapshot.borrow_mut() = Some(ticket);
            }
            Err(failure) => warn!(stream, %failure, "cannot take a snapshot"),
        }
    }

    /// Waits for the running snapshot, if any (shutdown).
    pub async fn finish_snapshot(&self) {
        let ticket = self.snapshot.borrow_mut().take();
        if let Some(ticket) = ticket {
            let outcome = match ticket.receiver().recv_async().await {
                Ok(outcome) => outcome,
                Err(_) => ticket.try_result().unwrap_or(Ok(ticket.lsn())),
            };
            self.report(outcome);
        }
    }

    fn check_snapshot(&self) {
        let outcome = self
            .snapshot
            .borrow()
            .as_ref()
            .and_then(SnapshotTicket::try_result);
        if let Some(outcome) = outcome {
            self.snapshot.borrow_mut().take();
            self.report(outcome);
        }
    }

    fn report(&self, outcome: Result<Lsn, mqtt_broker_persistence::StoreError>) {
        match outcome {
            Ok(lsn) => info!(stream = self.writer.stream(), %lsn, "snapshot written"),
            Err(failure) => {
                warn!(stream = self.writer.stream(), %failure, "snapshot failed; the journal still holds everything")
            }
        }
    }
}

/// Records appended and not yet durable, oldest first, as runs in which the core's `seq` and the
/// store's LSN both go up by one per record. A burst is one run however far the disk lags: a
/// pair per record held a million entries (16 MiB) at 250k msg/s with `--fsync interval`, and
/// the queue kept that capacity after the load. A run breaks only where the store takes an LSN
/// for itself (a snapshot) or an append failed.
#[derive(Debug, Default)]
struct PendingRecords(VecDeque<PendingRun>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PendingRun {
    seq: u64,
    lsn: u64,
    len: u64,
}

impl PendingRecords {
    fn push(&mut self, seq: u64, lsn: Lsn) {
        if let Some(last) = self.0.back_mut() {
            if last.seq + last.len == seq && last.lsn + last.len == lsn.0 {
                last.len += 1;
                return;
            }
        }
        self.0.push_back(PendingRun {
            seq,
            lsn: lsn.0,
            len: 1,
        });
    }

    /// Forgets the records at or below `durable` and returns the highest `seq` among them.
    fn settle(&mut self, durable: Lsn) -> Option<u64> {
        let mut settled = None;
        while let Some(run) = self.0.front_mut() {
            if run.lsn > durable.0 {
                break;
            }
            let covered = (durable.0 - run.lsn + 1).min(run.len);
            settled = Some(run.seq + covered - 1);
            if covered < run.len {
                run.seq += covered;
                run.lsn += covered;
                run.len -= covered;
                break;
            }
            self.0.pop_front();
        }
        settled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_one_run_and_settles_record_by_record() {
        let mut pending = PendingRecords::default();
        for i in 0..100_000 {
            pending.push(1 + i, Lsn(10 + i));
        }
        assert_eq!(pending.0.len(), 1);
        assert_eq!(pending.settle(Lsn(9)), None);
        assert_eq!(pending.settle(Lsn(10)), Some(1));
        assert_eq!(pending.settle(Lsn(10)), None);
        assert_eq!(pending.settle(Lsn(5_009)), Some(5_000));
        assert_eq!(pending.settle(Lsn(1_000_000)), Some(100_000));
        assert!(pending.0.is_empty());
    }

    #[test]
    fn a_gap_in_either_number_starts_a_run() {
        let mut pending = PendingRecords::default();
        pending.push(1, Lsn(1));
        pending.push(2, Lsn(2));
        // The store took LSN 3 for a snapshot.
        pending.push(3, Lsn(4));
        // The core's record 4 was never appended (the journal refused it).
        pending.push(5, Lsn(5));
        assert_eq!(pending.0.len(), 3);
        assert_eq!(pending.settle(Lsn(3)), Some(2));
        assert_eq!(pending.settle(Lsn(4)), Some(3));
        assert_eq!(pending.settle(Lsn(5)), Some(5));
        assert!(pending.0.is_empty());
    }
}
