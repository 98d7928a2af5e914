//! One shard's link to its journal stream: appends the records its broker core emits, tells the
//! core which of them are durable, and takes snapshots of the core's state. The blocking build
//! (`crate::sync_server`) uses it too, for its one shard, from behind its core's lock.
//!
//! Nothing here waits for a disk. `StreamWriter::append` only queues the record for the stream's
//! background thread; durability comes back as notices, received by a task of the shard's own
//! event loop. The core numbers records with its own sequence and the store with LSNs, so the
//! records in between are kept as `(seq, lsn)` pairs, in order.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use mqtt_broker_persistence::{Lsn, SnapshotTicket, StreamWriter};
use tracing::{debug, error, info, warn};

use crate::broker::persist::{encode_record, encode_snapshot, PersistRecord, StateCapture};

/// Bytes appended but not yet written above which a shard stops reading from its clients.
const MAX_BACKLOG_BYTES: u64 = 64 * 1024 * 1024;

pub(crate) struct ShardJournal {
    writer: StreamWriter,
    /// Records appended and not yet durable, oldest first.
    pending: RefCell<VecDeque<(u64, Lsn)>>,
    snapshot: RefCell<Option<SnapshotTicket>>,
    /// Set once the journal failed; it is reported once.
    failed: Cell<bool>,
}

impl ShardJournal {
    pub fn new(writer: StreamWriter) -> ShardJournal {
        ShardJournal {
            writer,
            pending: RefCell::new(VecDeque::new()),
            snapshot: RefCell::new(None),
            failed: Cell::new(false),
        }
    }

    pub fn notices(&self) -> flume::Receiver<Lsn> {
        self.writer.durable_notices()
    }

    pub fn append(&self, seq: u64, record: &PersistRecord) {
        match self.writer.append(encode_record(record)) {
            Ok(lsn) => self.pending.borrow_mut().push_back((seq, lsn)),
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
        let durable = self.writer.durable();
        let mut pending = self.pending.borrow_mut();
        let mut last = None;
        while let Some(&(seq, lsn)) = pending.front() {
            if lsn > durable {
                break;
            }
            last = Some(seq);
            pending.pop_front();
        }
        last
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
