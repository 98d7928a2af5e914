//! Helpers shared by the tests.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::hooks::{Hooks, Point};
use crate::{Fsync, Lsn, Recovery, Store, StoreError, StoreOptions, StreamWriter};

pub(crate) fn options(fsync: Fsync) -> StoreOptions {
    StoreOptions {
        fsync,
        ..StoreOptions::default()
    }
}

pub(crate) fn open(dir: &Path, streams: usize, fsync: Fsync) -> (Store, Recovery) {
    Store::open(dir, streams, options(fsync)).expect("open")
}

pub(crate) fn open_hooked(
    dir: &Path,
    streams: usize,
    fsync: Fsync,
    hook: impl Fn(Point<'_>) -> std::io::Result<()> + Send + Sync + 'static,
) -> (Store, Recovery) {
    let hooks = Hooks {
        hook: Some(Arc::new(hook)),
    };
    Store::open_with(dir, streams, options(fsync), hooks).expect("open")
}

/// Blocks (in a test, fine) until `lsn` is durable, via the notice channel.
pub(crate) fn wait_durable(writer: &StreamWriter, lsn: Lsn) {
    let notices = writer.durable_notices();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !writer.is_durable(lsn) {
        match notices.recv_deadline(deadline) {
            Ok(_) => {}
            Err(e) => panic!(
                "LSN {lsn} never became durable ({e:?}); durable = {}",
                writer.durable()
            ),
        }
    }
}

pub(crate) fn record(i: usize) -> Vec<u8> {
    format!("record number {i:05} ")
        .repeat(1 + i % 4)
        .into_bytes()
}

pub(crate) fn data(recovery: &Recovery, stream: usize) -> Vec<Vec<u8>> {
    let s = recovery
        .streams
        .iter()
        .find(|s| s.stream == stream)
        .expect("stream recovered");
    s.records.iter().map(|r| r.data.clone()).collect()
}

fn files_with(dir: &Path, stream: usize, pred: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let sdir = crate::layout::stream_dir(dir, stream);
    let mut out: Vec<PathBuf> = fs::read_dir(&sdir)
        .map(|rd| {
            rd.map(|e| e.unwrap().path())
                .filter(|p| pred(p.file_name().unwrap().to_str().unwrap()))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Live journal segments of a stream, oldest first.
pub(crate) fn segments(dir: &Path, stream: usize) -> Vec<PathBuf> {
    files_with(dir, stream, |n| {
        n.starts_with("journal-") && n.ends_with(".log")
    })
}

/// Live snapshots of a stream, oldest first.
pub(crate) fn snapshots(dir: &Path, stream: usize) -> Vec<PathBuf> {
    files_with(dir, stream, |n| {
        n.starts_with("snap-") && n.ends_with(".snap")
    })
}

/// Files moved aside in a stream directory.
pub(crate) fn aside(dir: &Path, stream: usize) -> Vec<PathBuf> {
    files_with(dir, stream, |n| n.contains(".corrupt-"))
}

/// The one segment holding records (after a clean close there is exactly one non-empty one).
pub(crate) fn last_segment(dir: &Path, stream: usize) -> PathBuf {
    segments(dir, stream)
        .into_iter()
        .rev()
        .find(|p| fs::metadata(p).unwrap().len() > crate::journal::HEADER_LEN as u64)
        .expect("a segment with records")
}

/// Byte offset where record `index` (0-based) of a segment starts.
pub(crate) fn record_offset(segment: &Path, index: usize) -> usize {
    let bytes = fs::read(segment).unwrap();
    let mut pos = crate::journal::HEADER_LEN;
    for _ in 0..index {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        pos += 8 + len;
    }
    pos
}

pub(crate) fn flip_byte(path: &Path, at: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at] ^= 0x5a;
    fs::write(path, bytes).unwrap();
}

pub(crate) fn write_all(writer: &StreamWriter, records: impl IntoIterator<Item = Vec<u8>>) -> Lsn {
    let mut last = Lsn::ZERO;
    for r in records {
        last = writer.append(r).expect("append");
    }
    last
}

pub(crate) fn expect_err(result: Result<(Store, Recovery), StoreError>) -> StoreError {
    match result {
        Ok(_) => panic!("open should have failed"),
        Err(e) => e,
    }
}
