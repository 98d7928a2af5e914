//! Appending, group commit, durability notices, fsync policies, fatal fsync errors, crashes.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::util::*;
use crate::hooks::Point;
use crate::{Fsync, Lsn, StoreError};

#[test]
fn group_commit_shares_fsyncs_and_sends_notices() {
    let dir = tempfile::tempdir().unwrap();
    // Hold the first fsync until every record is queued: the rest must then share one batch.
    let (release_tx, release_rx) = flume::bounded::<()>(1);
    let release_rx = Mutex::new(Some(release_rx));
    let (store, _) = open_hooked(dir.path(), 1, Fsync::Always, move |point| {
        if let Point::JournalSync { .. } = point {
            if let Some(rx) = release_rx.lock().unwrap().take() {
                rx.recv().unwrap();
            }
        }
        Ok(())
    });
    let writer = store.writer(0).unwrap();
    let notices = writer.durable_notices();
    const N: usize = 1000;
    let first = writer.append(record(0)).unwrap();
    let mut last = first;
    for i in 1..N {
        let lsn = writer.append(record(i)).unwrap();
        assert!(lsn > last, "LSNs increase");
        last = lsn;
    }
    assert!(
        writer.durable() < first,
        "nothing is durable before its fsync"
    );
    release_tx.send(()).unwrap();

    let mut seen = Vec::new();
    while writer.durable() < last {
        seen.push(
            notices
                .recv_timeout(Duration::from_secs(20))
                .expect("a durability notice"),
        );
    }
    let stats = writer.stats();
    assert_eq!(stats.records_written, N as u64);
    assert!(
        stats.fsyncs < N as u64 / 10,
        "group commit: {} fsyncs for {N} records",
        stats.fsyncs
    );
    assert!(
        stats.fsyncs <= 3,
        "one sync held, then one batch: {} fsyncs",
        stats.fsyncs
    );
    assert!(!seen.is_empty() && seen.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(stats.backlog_bytes, 0);
    store.close().unwrap();

    let (_store, recovery) = open(dir.path(), 1, Fsync::Always);
    assert_eq!(data(&recovery, 0), (0..N).map(record).collect::<Vec<_>>());
}

#[test]
fn crash_keeps_every_durable_record() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), 2, Fsync::Always);
    let w0 = store.writer(0).unwrap();
    let w1 = store.writer(1).unwrap();
    let mut appended = Vec::new();
    for i in 0..300 {
        let w = if i % 3 == 0 { &w1 } else { &w0 };
        appended.push((w.stream(), w.append(record(i)).unwrap(), record(i)));
        if i == 150 {
            wait_durable(&w0, appended.iter().rev().find(|a| a.0 == 0).unwrap().1);
        }
    }
    let durable = [w0.durable(), w1.durable()];
    assert!(durable[0] > Lsn::ZERO);
    store.crash();

    let (store, recovery) = open(dir.path(), 2, Fsync::Always);
    assert!(recovery.report.is_clean(), "{:?}", recovery.report.issues);
    for (stream, &durable) in durable.iter().enumerate() {
        let got = &recovery.streams[stream].records;
        let want: Vec<_> = appended.iter().filter(|a| a.0 == stream).collect();
        // A prefix of what was appended, covering at least everything reported durable.
        assert!(got.len() <= want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!((g.lsn, &g.data), (w.1, &w.2));
        }
        let must = want.iter().filter(|w| w.1 <= durable).count();
        assert!(
            got.len() >= must,
            "stream {stream}: {} recovered, {must} were durable",
            got.len()
        );
    }
    // New LSNs continue above everything recovered (LSNs of records lost unwritten may be reused:
    // nothing on disk refers to them).
    let max = recovery
        .streams
        .iter()
        .flat_map(|s| s.records.iter().map(|r| r.lsn))
        .max()
        .unwrap();
    let w0 = store.writer(0).unwrap();
    assert!(w0.append(b"after".to_vec()).unwrap() > max);
}

#[test]
fn fsync_error_is_fatal_and_never_retried() {
    let dir = tempfile::tempdir().unwrap();
    let syncs = Arc::new(AtomicUsize::new(0));
    let counter = syncs.clone();
    let (store, _) = open_hooked(dir.path(), 1, Fsync::Always, move |point| {
        if let Point::JournalSync { stream } = point {
            assert_eq!(stream, 0);
            if counter.fetch_add(1, Ordering::SeqCst) == 1 {
                return Err(io::Error::other("injected EIO"));
            }
        }
        Ok(())
    });
    let writer = store.writer(0).unwrap();
    let first = writer.append(b"one".to_vec()).unwrap();
    wait_durable(&writer, first);
    let second = writer.append(b"two".to_vec()).unwrap();
    // The notice channel disconnects when the journal fails.
    let notices = writer.durable_notices();
    while notices.recv_timeout(Duration::from_secs(20)).is_ok() {}
    assert_eq!(writer.durable(), first);
    assert!(!writer.is_durable(second));
    let err = writer.append(b"three".to_vec()).unwrap_err();
    assert!(
        matches!(err, StoreError::JournalFailed { durable, .. } if durable == first),
        "{err}"
    );
    assert!(err.to_string().contains("injected EIO"), "{err}");
    assert!(writer.stats().failed);
    assert!(matches!(
        writer.snapshot(vec![]),
        Err(StoreError::JournalFailed { .. })
    ));
    assert_eq!(
        syncs.load(Ordering::SeqCst),
        2,
        "the failed sync is not retried"
    );
    assert!(matches!(
        store.close(),
        Err(StoreError::JournalFailed { .. })
    ));
}

#[test]
fn interval_policy_syncs_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), 1, Fsync::Interval(Duration::from_millis(20)));
    let writer = store.writer(0).unwrap();
    let mut last = Lsn::ZERO;
    for i in 0..50 {
        last = writer.append(record(i)).unwrap();
    }
    // No further appends: the idle deadline alone must sync.
    wait_durable(&writer, last);
    assert!(writer.stats().fsyncs >= 1);
    assert!(writer.stats().fsyncs < 50);
}

#[test]
fn never_policy_reports_written_records_and_syncs_on_close() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), 1, Fsync::Never);
    let writer = store.writer(0).unwrap();
    let last = write_all(&writer, (0..20).map(record));
    wait_durable(&writer, last);
    assert_eq!(writer.stats().fsyncs, 0);
    store.close().unwrap();
    assert_eq!(writer.stats().fsyncs, 1, "a clean close syncs once");
    assert!(matches!(writer.append(vec![1]), Err(StoreError::Closed)));
}

#[test]
fn writers_are_handed_out_once_and_lsns_survive_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (store, recovery) = open(dir.path(), 2, Fsync::Never);
    assert_eq!(recovery.report.next_lsn, Lsn(1));
    let w = store.writer(1).unwrap();
    assert!(matches!(
        store.writer(1),
        Err(StoreError::WriterTaken { stream: 1 })
    ));
    assert!(matches!(
        store.writer(2),
        Err(StoreError::NoSuchStream {
            stream: 2,
            streams: 2
        })
    ));
    assert_eq!(w.append(vec![]).unwrap(), Lsn(1));
    let ticket = w.snapshot(vec![]).unwrap();
    assert_eq!(ticket.lsn(), Lsn(2));
    assert_eq!(ticket.wait().unwrap(), Lsn(2));
    assert_eq!(w.append(vec![]).unwrap(), Lsn(3));
    store.close().unwrap();
    let (store, recovery) = open(dir.path(), 2, Fsync::Never);
    assert_eq!(recovery.report.next_lsn, Lsn(4));
    assert_eq!(store.writer(0).unwrap().append(vec![]).unwrap(), Lsn(4));
    let zero = crate::Store::open(dir.path().join("other"), 0, Default::default());
    assert!(matches!(zero, Err(StoreError::InvalidOptions(_))));
}

#[test]
fn wants_snapshot_after_journal_max_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let options = crate::StoreOptions {
        fsync: Fsync::Never,
        journal_max_bytes: 1000,
        ..Default::default()
    };
    let (store, _) = crate::Store::open(dir.path(), 1, options.clone()).unwrap();
    let writer = store.writer(0).unwrap();
    assert!(!writer.wants_snapshot());
    write_all(&writer, (0..40).map(record));
    assert!(writer.wants_snapshot());
    writer
        .snapshot(vec![b"state".to_vec()])
        .unwrap()
        .wait()
        .unwrap();
    assert!(!writer.wants_snapshot());
    write_all(&writer, (0..40).map(record));
    store.close().unwrap();
    // The journal's size since the snapshot is known again after a restart.
    let (store, _) = crate::Store::open(dir.path(), 1, options).unwrap();
    assert!(store.writer(0).unwrap().wants_snapshot());
}
