//! Start-up: torn tails, damage in the middle, strict mode, damaged snapshots, unknown format
//! versions, and the data directory lock.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use super::util::*;
use crate::{FileKind, Fsync, IssueKind, Store, StoreError};

/// A closed store with `n` records in stream 0; returns the segment holding them.
fn store_with_records(dir: &Path, n: usize) -> std::path::PathBuf {
    let (store, _) = open(dir, 1, Fsync::Always);
    let writer = store.writer(0).unwrap();
    write_all(&writer, (0..n).map(record));
    store.close().unwrap();
    last_segment(dir, 0)
}

#[test]
fn torn_tail_mid_record_is_dropped_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let segment = store_with_records(dir.path(), 10);
    let len = fs::metadata(&segment).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(len - 5)
        .unwrap();

    let (store, recovery) = open(dir.path(), 1, Fsync::Always);
    assert!(recovery.report.is_clean(), "{:?}", recovery.report.issues);
    assert_eq!(recovery.report.torn_tails.len(), 1);
    assert_eq!(recovery.report.torn_tails[0].path, segment);
    assert_eq!(data(&recovery, 0), (0..9).map(record).collect::<Vec<_>>());
    assert!(aside(dir.path(), 0).is_empty());
    assert_eq!(
        fs::metadata(&segment).unwrap().len() as usize,
        record_offset(&segment, 9),
        "truncated"
    );

    // Later appends still work and survive another restart.
    let writer = store.writer(0).unwrap();
    write_all(&writer, (20..23).map(record));
    store.close().unwrap();
    let (_s, recovery) = open(dir.path(), 1, Fsync::Always);
    assert!(recovery.report.is_clean() && recovery.report.torn_tails.is_empty());
    let mut want: Vec<_> = (0..9).map(record).collect();
    want.extend((20..23).map(record));
    assert_eq!(data(&recovery, 0), want);
}

#[test]
fn garbage_after_the_last_record_is_dropped_quietly() {
    for garbage in [
        vec![0u8; 4096],
        vec![0xab; 37],
        vec![
            0xff, 0xff, 0xff, 0x0f, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13,
        ],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let segment = store_with_records(dir.path(), 4);
        OpenOptions::new()
            .append(true)
            .open(&segment)
            .unwrap()
            .write_all(&garbage)
            .unwrap();
        let (store, recovery) = open(dir.path(), 1, Fsync::Always);
        assert!(recovery.report.is_clean());
        assert_eq!(
            recovery.report.torn_tails[0].bytes_dropped,
            garbage.len() as u64
        );
        assert_eq!(data(&recovery, 0), (0..4).map(record).collect::<Vec<_>>());
        store.writer(0).unwrap().append(record(5)).unwrap();
        store.close().unwrap();
        let (_s, recovery) = open(dir.path(), 1, Fsync::Always);
        assert_eq!(data(&recovery, 0).len(), 5);
    }
}

#[test]
fn corrupt_middle_moves_the_file_aside_and_keeps_the_intact_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let segment = store_with_records(dir.path(), 10);
    let original = fs::read(&segment).unwrap();
    let bad = record_offset(&segment, 3);
    flip_byte(&segment, bad + 20);
    let damaged = fs::read(&segment).unwrap();

    let (store, recovery) = open(dir.path(), 1, Fsync::Always);
    let report = &recovery.report;
    assert_eq!(report.issues.len(), 1, "{:?}", report.issues);
    let issue = &report.issues[0];
    assert_eq!(issue.kind, IssueKind::CorruptJournal);
    assert_eq!(issue.path, segment);
    assert!(issue.reason.contains("checksum"), "{}", issue.reason);
    assert_eq!(
        issue.records_lost, 6,
        "records 4..10 were valid but follow the damage"
    );
    assert_eq!(issue.bytes_lost, (original.len() - bad) as u64);
    assert_eq!(report.records_lost(), 6);
    let moved = issue.moved_to.as_ref().unwrap();
    assert!(moved
        .file_name()
        .unwrap()
        .to_string_lossy()
        .contains(".log.corrupt-"));
    assert_eq!(aside(dir.path(), 0), std::slice::from_ref(moved));
    assert_eq!(
        fs::read(moved).unwrap(),
        damaged,
        "the whole damaged file is kept"
    );
    assert_eq!(data(&recovery, 0), (0..3).map(record).collect::<Vec<_>>());
    assert!(issue.to_string().contains("6 records"), "{issue}");

    let writer = store.writer(0).unwrap();
    writer.append(record(50)).unwrap();
    store.close().unwrap();
    let (_s, recovery) = open(dir.path(), 1, Fsync::Always);
    assert!(recovery.report.is_clean(), "the damage was dealt with once");
    let mut want: Vec<_> = (0..3).map(record).collect();
    want.push(record(50));
    assert_eq!(data(&recovery, 0), want);
}

#[test]
fn damage_in_an_earlier_segment_also_sets_aside_later_ones() {
    let dir = tempfile::tempdir().unwrap();
    let first = store_with_records(dir.path(), 5);
    let (store, _) = open(dir.path(), 1, Fsync::Always);
    write_all(&store.writer(0).unwrap(), (5..8).map(record));
    store.close().unwrap();
    let second = last_segment(dir.path(), 0);
    assert_ne!(first, second);
    // The last record of the first segment is damaged: valid records follow in the next one.
    flip_byte(&first, record_offset(&first, 4) + 18);

    let (_s, recovery) = open(dir.path(), 1, Fsync::Always);
    let issues = &recovery.report.issues;
    assert_eq!(issues.len(), 2, "{issues:?}");
    assert_eq!((issues[0].path.clone(), issues[0].records_lost), (first, 0));
    assert_eq!(
        (issues[1].path.clone(), issues[1].records_lost),
        (second.clone(), 3)
    );
    assert!(issues[1].reason.contains("follows damaged segment"));
    assert!(!second.exists());
    assert_eq!(recovery.report.records_lost(), 3);
    assert_eq!(data(&recovery, 0), (0..4).map(record).collect::<Vec<_>>());
    assert_eq!(aside(dir.path(), 0).len(), 2);
}

#[test]
fn strict_recovery_refuses_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let segment = store_with_records(dir.path(), 6);
    flip_byte(&segment, record_offset(&segment, 1) + 20);
    let before = fs::read(&segment).unwrap();
    let options = crate::StoreOptions {
        strict_recovery: true,
        ..options(Fsync::Always)
    };
    let err = expect_err(Store::open(dir.path(), 1, options.clone()));
    match &err {
        StoreError::Corrupt { path, reason } => {
            assert_eq!(path, &segment);
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("unexpected {other}"),
    }
    let message = err.to_string();
    assert!(
        message.contains(segment.to_str().unwrap()) && message.contains("strict"),
        "{message}"
    );
    assert_eq!(fs::read(&segment).unwrap(), before);
    assert!(aside(dir.path(), 0).is_empty());
    // The lock was released: a lenient open goes ahead.
    let (_s, recovery) = open(dir.path(), 1, Fsync::Always);
    assert_eq!(recovery.report.issues.len(), 1);
}

#[test]
fn strict_recovery_accepts_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let segment = store_with_records(dir.path(), 3);
    OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap()
        .write_all(&[1, 2, 3])
        .unwrap();
    let options = crate::StoreOptions {
        strict_recovery: true,
        ..options(Fsync::Always)
    };
    let (_s, recovery) = Store::open(dir.path(), 1, options).unwrap();
    assert_eq!(recovery.report.torn_tails.len(), 1);
    assert_eq!(data(&recovery, 0).len(), 3);
}

/// A store whose stream 0 has a snapshot of `"state"` after records 0..3, then records 3..5.
/// With `keep_old`, the segments before the snapshot survive (as after a crash before deletion).
fn store_with_snapshot(dir: &Path, keep_old: bool) -> std::path::PathBuf {
    let (store, _) = open_hooked(dir, 1, Fsync::Always, move |point| match point {
        crate::hooks::Point::SnapshotBeforeDelete { .. } if keep_old => {
            Err(std::io::Error::other("crash"))
        }
        _ => Ok(()),
    });
    let writer = store.writer(0).unwrap();
    write_all(&writer, (0..3).map(record));
    writer
        .snapshot(vec![b"state".to_vec()])
        .unwrap()
        .wait()
        .unwrap();
    write_all(&writer, (3..5).map(record));
    store.close().unwrap();
    snapshots(dir, 0).pop().unwrap()
}

#[test]
fn corrupt_snapshot_with_full_journal_history_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let snap = store_with_snapshot(dir.path(), true);
    let len = fs::metadata(&snap).unwrap().len() as usize;
    flip_byte(&snap, len - 2);

    let (_s, recovery) = open(dir.path(), 1, Fsync::Always);
    let issues = &recovery.report.issues;
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].kind, IssueKind::CorruptSnapshot);
    assert_eq!(issues[0].path, snap);
    assert!(
        issues[0].reason.contains("section 0 checksum mismatch"),
        "{}",
        issues[0].reason
    );
    assert!(
        issues[0].reason.contains("nothing lost"),
        "{}",
        issues[0].reason
    );
    assert!(issues[0].moved_to.as_ref().unwrap().exists());
    assert!(!snap.exists());
    assert!(recovery.streams[0].snapshot.is_none());
    assert_eq!(
        data(&recovery, 0),
        (0..5).map(record).collect::<Vec<_>>(),
        "replayed from the start"
    );
}

#[test]
fn corrupt_snapshot_without_history_reports_the_loss() {
    let dir = tempfile::tempdir().unwrap();
    let snap = store_with_snapshot(dir.path(), false);
    flip_byte(&snap, 20); // inside the header
    let strict = crate::StoreOptions {
        strict_recovery: true,
        ..options(Fsync::Always)
    };
    assert!(matches!(
        expect_err(Store::open(dir.path(), 1, strict)),
        StoreError::Corrupt { .. }
    ));
    assert!(snap.exists(), "strict mode moved nothing");

    let (store, recovery) = open(dir.path(), 1, Fsync::Always);
    let issues = &recovery.report.issues;
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].kind, IssueKind::CorruptSnapshot);
    assert!(
        issues[0].reason.contains("header checksum"),
        "{}",
        issues[0].reason
    );
    assert!(issues[0].reason.contains("is lost"), "{}", issues[0].reason);
    assert!(aside(dir.path(), 0)[0]
        .to_string_lossy()
        .contains(".snap.corrupt-"));
    assert_eq!(
        data(&recovery, 0),
        (3..5).map(record).collect::<Vec<_>>(),
        "what is left is replayed"
    );
    drop(store);
    // The gap is still reported while no new snapshot exists.
    let (_s, recovery) = open(dir.path(), 1, Fsync::Always);
    assert_eq!(recovery.report.issues[0].kind, IssueKind::MissingHistory);
}

/// Rewrites the format version in the header of `path` as a newer build would write it: with
/// the header checksum (of bytes `0..checksummed`, stored right after them) to match. Returns
/// the file's new bytes.
fn with_version(path: &Path, version: u32, checksummed: usize) -> Vec<u8> {
    let mut bytes = fs::read(path).unwrap();
    bytes[8..12].copy_from_slice(&version.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[0..checksummed]);
    bytes[checksummed..checksummed + 4].copy_from_slice(&crc.to_le_bytes());
    fs::write(path, &bytes).unwrap();
    bytes
}

/// Damage of every kind to every kind of file: one flipped bit in each byte of a segment's and
/// a snapshot's header (the version field's included) and in their bodies, and truncation at
/// every boundary that matters, and a LOCK file truncated or full of garbage. Without strict
/// recovery the store always opens, never mistakes damage for a newer format, and keeps every
/// damaged byte (in place or set aside); with it, the store refuses with a clear error and
/// changes nothing.
#[test]
fn any_damage_to_any_file_is_set_aside_never_taken_for_a_newer_format() {
    enum Damage {
        FlipBit(usize),
        TruncateTo(usize),
        Replace(&'static [u8]),
    }
    let journal_header = crate::journal::HEADER_LEN;
    let snapshot_header = 48;
    let mut cases: Vec<(&str, Damage)> = Vec::new();
    for at in 0..journal_header + 24 {
        cases.push(("segment", Damage::FlipBit(at * 8 + at % 8)));
    }
    for at in 0..snapshot_header + 24 {
        cases.push(("snapshot", Damage::FlipBit(at * 8 + at % 8)));
    }
    // A segment cut inside its header. (Cut after it, it is an intact empty segment or one
    // with a torn tail, as a crash leaves them: see the torn-tail tests.)
    for len in [0, 1, 8, 11, 12, 35] {
        cases.push(("segment", Damage::TruncateTo(len)));
    }
    for len in [0, 1, 8, 11, 12, 35, 36, 43, 47, 48, 60] {
        cases.push(("snapshot", Damage::TruncateTo(len)));
    }
    cases.push(("LOCK", Damage::TruncateTo(0)));
    cases.push(("LOCK", Damage::Replace(b"\xff\x00not a pid\n")));
    for (kind, damage) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = match kind {
            "segment" => store_with_records(dir.path(), 3),
            "snapshot" => store_with_snapshot(dir.path(), false),
            _ => {
                store_with_records(dir.path(), 3);
                dir.path().join("LOCK")
            }
        };
        let mut bytes = fs::read(&path).unwrap();
        let what = match damage {
            Damage::FlipBit(bit) if bit / 8 < bytes.len() => {
                bytes[bit / 8] ^= 1 << (bit % 8);
                format!("{kind}, bit {bit} flipped")
            }
            Damage::FlipBit(_) => continue,
            Damage::TruncateTo(len) if len < bytes.len() => {
                bytes.truncate(len);
                format!("{kind} truncated to {len} bytes")
            }
            Damage::TruncateTo(_) => continue,
            Damage::Replace(garbage) => {
                bytes = garbage.to_vec();
                format!("{kind} replaced with garbage")
            }
        };
        fs::write(&path, &bytes).unwrap();
        let strict = crate::StoreOptions {
            strict_recovery: true,
            ..options(Fsync::Never)
        };
        match Store::open(dir.path(), 1, strict) {
            Ok((store, _)) => drop(store),
            Err(error) => {
                assert!(
                    matches!(error, StoreError::Corrupt { .. }),
                    "{what}: {error}"
                );
                assert_eq!(fs::read(&path).unwrap(), bytes, "{what}: strict changed it");
            }
        }
        match Store::open(dir.path(), 1, options(Fsync::Never)) {
            Ok((store, _)) => drop(store),
            Err(error) => panic!("{what}: the store did not open: {error}"),
        }
        if kind != "LOCK" {
            let kept = fs::read(&path).ok() == Some(bytes.clone())
                || aside(dir.path(), 0)
                    .iter()
                    .any(|moved| fs::read(moved).unwrap() == bytes);
            assert!(kept, "{what}: the damaged bytes were not kept");
        }
    }
}

#[test]
fn unknown_journal_version_is_a_clear_error_and_the_file_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let segment = store_with_records(dir.path(), 2);
    let bytes = with_version(&segment, 7, 32);
    for strict in [false, true] {
        let options = crate::StoreOptions {
            strict_recovery: strict,
            ..options(Fsync::Always)
        };
        let err = expect_err(Store::open(dir.path(), 1, options));
        assert!(
            matches!(&err, StoreError::UnsupportedVersion { kind: FileKind::Journal, found: 7, supported: 1, path } if path == &segment),
            "{err}"
        );
        let message = err.to_string();
        assert!(
            message.contains("journal format version 7") && message.contains("version 1"),
            "{message}"
        );
        assert_eq!(fs::read(&segment).unwrap(), bytes);
        assert!(aside(dir.path(), 0).is_empty());
    }
}

#[test]
fn unknown_snapshot_version_is_a_clear_error_and_the_file_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let snap = store_with_snapshot(dir.path(), false);
    let bytes = with_version(&snap, 2, 44);
    let err = expect_err(Store::open(dir.path(), 1, options(Fsync::Always)));
    assert!(
        matches!(
            &err,
            StoreError::UnsupportedVersion {
                kind: FileKind::Snapshot,
                found: 2,
                supported: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(snap.to_str().unwrap()));
    assert_eq!(fs::read(&snap).unwrap(), bytes);
    assert!(aside(dir.path(), 0).is_empty());
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), 1, Fsync::Never);
    let err = expect_err(Store::open(dir.path(), 1, options(Fsync::Never)));
    assert!(matches!(err, StoreError::Locked { pid: Some(pid), .. } if pid == std::process::id()));
    let message = err.to_string();
    let expected = format!(
        "data directory {} is in use by another broker (pid {})",
        dir.path().display(),
        std::process::id()
    );
    assert_eq!(message, expected);
    store.close().unwrap();
    let (_again, _) = open(dir.path(), 1, Fsync::Never);
}

#[test]
fn leftover_temp_files_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    store_with_records(dir.path(), 1);
    let sdir = crate::layout::stream_dir(dir.path(), 0);
    fs::write(sdir.join("snap-00000000000000000099.snap.tmp"), b"half").unwrap();
    fs::write(sdir.join("journal-00000000000000000099.log.tmp"), b"half").unwrap();
    let (_s, recovery) = open(dir.path(), 1, Fsync::Never);
    assert!(recovery.report.is_clean());
    assert!(!sdir.join("snap-00000000000000000099.snap.tmp").exists());
    assert!(!sdir.join("journal-00000000000000000099.log.tmp").exists());
}
