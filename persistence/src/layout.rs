//! Why this file exists: the names and places of files on disk, and the few file-system moves
//! (directory fsync, moving a damaged file aside) that every other module needs, in one place.
//!
//! Layout of a data directory:
//!
//! ```text
//! <dir>/LOCK                                   advisory lock, holds the owner's pid
//! <dir>/stream-0000/journal-<start lsn>.log    journal segments (20-digit zero-padded LSNs)
//! <dir>/stream-0000/snap-<lsn>.snap            snapshots (immutable once renamed into place)
//! <dir>/stream-0000/*.tmp                      unfinished writes, deleted at start-up
//! <dir>/stream-0000/<name>.corrupt-<unix secs> damaged files moved aside, never deleted
//! <dir>/stream-0004.retiring                   a retired stream being removed
//! <dir>/stream-0004.retired-<unix secs>        what was left of it: files moved aside earlier
//! ```
//!
//! It must never decide what a file means: that is `journal.rs`, `snapshot.rs` and `recover.rs`.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{io_err, StoreError};
use crate::Lsn;

pub(crate) const SEGMENT_PREFIX: &str = "journal-";
pub(crate) const SEGMENT_SUFFIX: &str = ".log";
pub(crate) const SNAPSHOT_PREFIX: &str = "snap-";
pub(crate) const SNAPSHOT_SUFFIX: &str = ".snap";
pub(crate) const TMP_SUFFIX: &str = ".tmp";
pub(crate) const STREAM_PREFIX: &str = "stream-";
pub(crate) const RETIRING_SUFFIX: &str = ".retiring";

pub(crate) fn stream_dir(root: &Path, stream: usize) -> PathBuf {
    root.join(format!("{STREAM_PREFIX}{stream:04}"))
}

pub(crate) fn segment_name(start: Lsn) -> String {
    format!("{SEGMENT_PREFIX}{:020}{SEGMENT_SUFFIX}", start.0)
}

pub(crate) fn snapshot_name(lsn: Lsn) -> String {
    format!("{SNAPSHOT_PREFIX}{:020}{SNAPSHOT_SUFFIX}", lsn.0)
}

/// `stream-0003` → 3. Anything else (including `stream-0003.retiring`) → `None`.
pub(crate) fn parse_stream_dir(name: &str) -> Option<usize> {
    parse_digits(name.strip_prefix(STREAM_PREFIX)?)
}

fn parse_digits(s: &str) -> Option<usize> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_lsn(name: &str, prefix: &str, suffix: &str) -> Option<Lsn> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(Lsn)
}

/// One file found in a stream directory.
#[derive(Debug)]
pub(crate) enum Entry {
    Segment(Lsn, PathBuf),
    Snapshot(Lsn, PathBuf),
    /// An unfinished write (`*.tmp`) of ours.
    Temp(PathBuf),
    /// Moved-aside files and anything unknown: left alone.
    Other,
}

/// Lists a stream directory (empty if it does not exist).
pub(crate) fn list_stream(dir: &Path) -> Result<Vec<Entry>, StoreError> {
    let read = match fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in read {
        let entry = entry.map_err(io_err("list", dir))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            out.push(Entry::Other);
            continue;
        };
        let ours = name.starts_with(SEGMENT_PREFIX) || name.starts_with(SNAPSHOT_PREFIX);
        if let Some(lsn) = parse_lsn(&name, SEGMENT_PREFIX, SEGMENT_SUFFIX) {
            out.push(Entry::Segment(lsn, path));
        } else if let Some(lsn) = parse_lsn(&name, SNAPSHOT_PREFIX, SNAPSHOT_SUFFIX) {
            out.push(Entry::Snapshot(lsn, path));
        } else if ours && name.ends_with(TMP_SUFFIX) && !name.contains(".corrupt-") {
            out.push(Entry::Temp(path));
        } else {
            out.push(Entry::Other);
        }
    }
    Ok(out)
}

/// fsyncs a directory, making renames, creations and deletions in it durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Seconds since the Unix epoch (for `.corrupt-<secs>` names).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `<name>.corrupt-<secs>`, or `<name>.corrupt-<secs>-<n>` if that exists already.
pub(crate) fn aside_path(path: &Path, secs: u64) -> PathBuf {
    with_free_suffix(path, &format!(".corrupt-{secs}"))
}

/// `<path><suffix>`, with `-1`, `-2`, ... appended while that name is taken.
pub(crate) fn with_free_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    let first = PathBuf::from(&name);
    if !first.exists() {
        return first;
    }
    (1u32..)
        .map(|n| {
            let mut candidate = name.clone();
            candidate.push(format!("-{n}"));
            PathBuf::from(candidate)
        })
        .find(|p| !p.exists())
        .expect("some suffix is free")
}
