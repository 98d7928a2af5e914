//! Snapshots: round trip, the journal restart, the order of deletion, failures, and streams
//! left over from a larger shard count.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::util::*;
use crate::hooks::Point;
use crate::{Fsync, StoreError};

#[test]
fn round_trip_snapshot_and_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (store, recovery) = open(dir.path(), 2, Fsync::Always);
    assert!(recovery
        .streams
        .iter()
        .all(|s| s.snapshot.is_none() && s.records.is_empty()));
    let w0 = store.writer(0).unwrap();
    let w1 = store.writer(1).unwrap();
    write_all(&w0, (0..10).map(record));
    write_all(&w1, (100..105).map(record));
    let sections = vec![b"sessions".to_vec(), Vec::new(), vec![0xee; 10_000]];
    let ticket = w0.snapshot(sections.clone()).unwrap();
    let after: Vec<_> = (10..15).map(record).collect();
    let after_lsns: Vec<_> = after
        .iter()
        .map(|r| w0.append(r.clone()).unwrap())
        .collect();
    assert!(after_lsns[0] > ticket.lsn());
    let snap_lsn = ticket.wait().unwrap();
    store.close().unwrap();

    let (_store, recovery) = open(dir.path(), 2, Fsync::Always);
    assert!(recovery.report.is_clean());
    assert!(recovery.report.torn_tails.is_empty());
    let s0 = &recovery.streams[0];
    let snap = s0.snapshot.as_ref().expect("snapshot recovered");
    assert_eq!(snap.lsn(), snap_lsn);
    assert_eq!(snap.len(), 3);
    assert_eq!(
        snap.sections().collect::<Vec<_>>(),
        sections.iter().map(Vec::as_slice).collect::<Vec<_>>()
    );
    assert_eq!(
        s0.records.iter().map(|r| r.lsn).collect::<Vec<_>>(),
        after_lsns
    );
    assert_eq!(data(&recovery, 0), after);
    assert_eq!(
        data(&recovery, 1),
        (100..105).map(record).collect::<Vec<_>>()
    );
    assert!(recovery.streams[1].snapshot.is_none());
    assert_eq!(recovery.report.records_replayed, 10);
}

#[test]
fn old_segments_are_deleted_only_after_the_snapshot_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), 1, Fsync::Always);
    let writer = store.writer(0).unwrap();
    write_all(&writer, (0..5).map(record));
    store.close().unwrap();
    let first_segment = last_segment(dir.path(), 0);

    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let old = first_segment.clone();
    let (store, _) = open_hooked(dir.path(), 1, Fsync::Always, move |point| {
        let mut log = log.lock().unwrap();
        if log.len() >= 2 {
            return Ok(()); // only the first snapshot is inspected
        }
        match point {
            Point::SnapshotBeforeRename { tmp } => {
                assert!(tmp.exists(), "temp file written");
                assert!(
                    old.exists(),
                    "old segment kept while the snapshot is a temp file"
                );
                log.push("before rename".into());
            }
            Point::SnapshotBeforeDelete { snapshot } => {
                assert!(snapshot.exists(), "snapshot renamed into place");
                assert!(old.exists(), "old segment kept until now");
                log.push("before delete".into());
            }
            Point::JournalSync { .. } => {}
        }
        Ok(())
    });
    let writer = store.writer(0).unwrap();
    write_all(&writer, (5..8).map(record));
    let ticket = writer.snapshot(vec![b"state".to_vec()]).unwrap();
    let lsn = ticket.wait().unwrap();
    assert_eq!(*seen.lock().unwrap(), ["before rename", "before delete"]);
    assert!(
        !first_segment.exists(),
        "old segment deleted after the snapshot"
    );
    let live = segments(dir.path(), 0);
    assert_eq!(live.len(), 1, "{live:?}");
    assert!(live[0].ends_with(crate::layout::segment_name(lsn)));
    assert_eq!(snapshots(dir.path(), 0).len(), 1);

    // A second snapshot replaces the first.
    writer.append(record(9)).unwrap();
    let second = writer
        .snapshot(vec![b"state 2".to_vec()])
        .unwrap()
        .wait()
        .unwrap();
    let snaps = snapshots(dir.path(), 0);
    assert_eq!(snaps.len(), 1);
    assert!(snaps[0].ends_with(crate::layout::snapshot_name(second)));
    let stats = writer.stats();
    assert_eq!(stats.snapshots, 2);
    // Each took time to write and fsync, and the total holds the last.
    assert!(stats.last_snapshot_time > std::time::Duration::ZERO);
    assert!(stats.snapshot_time >= stats.last_snapshot_time);
    store.close().unwrap();
    let (_s, recovery) = open(dir.path(), 1, Fsync::Always);
    assert_eq!(
        recovery.streams[0].snapshot.as_ref().unwrap().section(0),
        Some(&b"state 2"[..])
    );
    assert!(recovery.streams[0].records.is_empty());
}

#[test]
fn failed_snapshot_leaves_the_full_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open_hooked(dir.path(), 1, Fsync::Always, |point| match point {
        Point::SnapshotBeforeRename { .. } => Err(io::Error::other("injected ENOSPC")),
        _ => Ok(()),
    });
    let writer = store.writer(0).unwrap();
    write_all(&writer, (0..5).map(record));
    let err = writer
        .snapshot(vec![b"state".to_vec()])
        .unwrap()
        .wait()
        .unwrap_err();
    assert!(err.to_string().contains("injected ENOSPC"), "{err}");
    assert!(
        writer.wants_snapshot() || writer.stats().journal_bytes > 0,
        "journal size given back"
    );
    write_all(&writer, (5..8).map(record));
    store.close().unwrap();
    let tmp_left = fs::read_dir(crate::layout::stream_dir(dir.path(), 0))
        .unwrap()
        .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".tmp"));
    assert!(!tmp_left, "temp file removed");

    let (_s, recovery) = open(dir.path(), 1, Fsync::Always);
    assert!(recovery.report.is_clean());
    assert!(recovery.streams[0].snapshot.is_none());
    assert_eq!(data(&recovery, 0), (0..8).map(record).collect::<Vec<_>>());
}

#[test]
fn crash_between_rename_and_delete_is_tidied_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open_hooked(dir.path(), 1, Fsync::Always, |point| match point {
        Point::SnapshotBeforeDelete { .. } => Err(io::Error::other("crash")),
        _ => Ok(()),
    });
    let writer = store.writer(0).unwrap();
    write_all(&writer, (0..5).map(record));
    writer
        .snapshot(vec![b"state".to_vec()])
        .unwrap()
        .wait()
        .unwrap();
    write_all(&writer, (5..7).map(record));
    store.close().unwrap();
    assert!(
        segments(dir.path(), 0).len() >= 2,
        "old segment left behind"
    );

    let (store, recovery) = open(dir.path(), 1, Fsync::Always);
    assert!(recovery.report.is_clean());
    assert_eq!(
        recovery.streams[0].snapshot.as_ref().unwrap().section(0),
        Some(&b"state"[..])
    );
    assert_eq!(data(&recovery, 0), (5..7).map(record).collect::<Vec<_>>());
    drop(store);
    // The stale segment is gone; only the post-snapshot one (with records) remains.
    let (_s, recovery) = open(dir.path(), 1, Fsync::Always);
    assert_eq!(data(&recovery, 0), (5..7).map(record).collect::<Vec<_>>());
    assert_eq!(
        segments(dir.path(), 0).len(),
        2,
        "the one with records and this run's"
    );
}

#[test]
fn streams_beyond_a_smaller_shard_count_are_recovered_then_retired() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), 3, Fsync::Never);
    let writers: Vec<_> = (0..3).map(|s| store.writer(s).unwrap()).collect();
    for (s, w) in writers.iter().enumerate() {
        write_all(w, (s * 100..s * 100 + 4).map(record));
    }
    writers[2]
        .snapshot(vec![b"stream two state".to_vec()])
        .unwrap()
        .wait()
        .unwrap();
    writers[2].append(record(299)).unwrap();
    store.close().unwrap();
    // Something moved aside earlier in stream 2 must survive its retirement.
    let keep =
        crate::layout::stream_dir(dir.path(), 2).join("journal-00000000000000000001.log.corrupt-1");
    fs::write(&keep, b"evidence").unwrap();

    let (store, recovery) = open(dir.path(), 1, Fsync::Never);
    assert_eq!(recovery.streams.len(), 3);
    assert!(recovery.streams[0].active);
    assert_eq!(
        recovery
            .streams
            .iter()
            .map(|s| (s.stream, s.active))
            .collect::<Vec<_>>(),
        [(0, true), (1, false), (2, false)]
    );
    assert_eq!(
        data(&recovery, 1),
        (100..104).map(record).collect::<Vec<_>>()
    );
    let two = &recovery.streams[2];
    assert_eq!(
        two.snapshot.as_ref().unwrap().section(0),
        Some(&b"stream two state"[..])
    );
    assert_eq!(data(&recovery, 2), vec![record(299)]);
    assert_eq!(store.inactive_streams(), [1, 2]);
    assert!(matches!(
        store.writer(1),
        Err(StoreError::NoSuchStream { .. })
    ));

    // The caller re-homes the state into stream 0 and makes it durable, then retires.
    let w0 = store.writer(0).unwrap();
    let mut rehomed: Vec<Vec<u8>> = Vec::new();
    for s in &recovery.streams[1..] {
        rehomed.extend(
            s.snapshot
                .iter()
                .flat_map(|snap| snap.sections().map(<[u8]>::to_vec)),
        );
        rehomed.extend(s.records.iter().map(|r| r.data.clone()));
    }
    let last = write_all(&w0, rehomed.clone());
    wait_durable(&w0, last);
    drop(recovery);
    assert!(matches!(
        store.retire(0),
        Err(StoreError::NotRetirable { stream: 0, .. })
    ));
    store.retire(1).unwrap();
    store.retire(2).unwrap();
    assert!(matches!(
        store.retire(2),
        Err(StoreError::NotRetirable { .. })
    ));
    assert!(store.inactive_streams().is_empty());
    assert!(!crate::layout::stream_dir(dir.path(), 1).exists());
    assert!(!crate::layout::stream_dir(dir.path(), 2).exists());
    let kept: Vec<PathBuf> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("stream-0002.retired-"))
        .collect();
    assert_eq!(kept.len(), 1, "moved-aside files are kept");
    assert!(kept[0]
        .join("journal-00000000000000000001.log.corrupt-1")
        .exists());
    store.close().unwrap();

    let (_s, recovery) = open(dir.path(), 1, Fsync::Never);
    assert_eq!(recovery.streams.len(), 1);
    let mut want: Vec<Vec<u8>> = (0..4).map(record).collect();
    want.extend(rehomed);
    assert_eq!(data(&recovery, 0), want);
}

#[test]
fn a_mapped_snapshot_stays_readable_after_a_newer_one_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), 1, Fsync::Never);
    let writer = store.writer(0).unwrap();
    writer
        .snapshot(vec![vec![1u8; 100_000]])
        .unwrap()
        .wait()
        .unwrap();
    store.close().unwrap();

    let (store, recovery) = open(dir.path(), 1, Fsync::Never);
    let mapped = recovery.streams[0].snapshot.as_ref().unwrap();
    let old_path = mapped.path().to_path_buf();
    let writer = store.writer(0).unwrap();
    writer
        .snapshot(vec![vec![2u8; 10]])
        .unwrap()
        .wait()
        .unwrap();
    assert!(
        !old_path.exists(),
        "the old snapshot was unlinked, not rewritten"
    );
    assert!(mapped.section(0).unwrap().iter().all(|&b| b == 1));
}

#[test]
fn handles_are_thread_safe_as_documented() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<crate::Store>();
    send::<crate::StreamWriter>();
    send_sync::<crate::Recovery>();
    send::<crate::SnapshotTicket>();
}

#[test]
fn deferred_sections_are_made_on_the_snapshot_thread() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), 1, Fsync::Always);
    let writer = store.writer(0).unwrap();
    write_all(&writer, (0..5).map(record));
    let caller = std::thread::current().id();
    let ticket = writer
        .snapshot_with(move || {
            assert_ne!(std::thread::current().id(), caller);
            vec![b"deferred".to_vec()]
        })
        .unwrap();
    // The journal was rotated at the request, before the sections exist.
    let after = writer.append(record(5)).unwrap();
    assert!(after > ticket.lsn());
    let lsn = ticket.wait().unwrap();
    store.close().unwrap();

    let (_store, recovery) = open(dir.path(), 1, Fsync::Always);
    let snapshot = recovery.streams[0].snapshot.as_ref().expect("snapshot");
    assert_eq!(snapshot.lsn(), lsn);
    assert_eq!(snapshot.section(0), Some(&b"deferred"[..]));
    assert_eq!(data(&recovery, 0), vec![record(5)]);
}

#[test]
fn a_panicking_encoder_fails_only_its_own_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), 1, Fsync::Always);
    let writer = store.writer(0).unwrap();
    write_all(&writer, (0..5).map(record));
    let ticket = writer.snapshot_with(|| panic!("no state today")).unwrap();
    match ticket.wait() {
        Err(StoreError::SnapshotEncoding { stream: 0, reason }) => {
            assert!(reason.contains("no state today"), "{reason}")
        }
        other => panic!("expected an encoding failure, got {other:?}"),
    }
    // The history is still whole, and the snapshot thread still serves.
    write_all(&writer, (5..7).map(record));
    store.close().unwrap();
    let (store, recovery) = open(dir.path(), 1, Fsync::Always);
    assert!(recovery.report.is_clean(), "{:?}", recovery.report);
    assert!(recovery.streams[0].snapshot.is_none());
    assert_eq!(data(&recovery, 0), (0..7).map(record).collect::<Vec<_>>());
    let writer = store.writer(0).unwrap();
    writer
        .snapshot_with(|| vec![b"fine".to_vec()])
        .unwrap()
        .wait()
        .unwrap();
}
