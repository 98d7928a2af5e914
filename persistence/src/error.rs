//! Why this file exists: one error type for the whole crate, so every failure names the file it
//! concerns and why, in words an operator can act on.
//!
//! It owns [`StoreError`] and [`FileKind`]. It must never hide an I/O error behind a generic
//! message: the path and the OS error always travel together.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::Lsn;

/// Which kind of file an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A journal segment (`journal-<lsn>.log`).
    Journal,
    /// A snapshot (`snap-<lsn>.snap`).
    Snapshot,
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Journal => "journal",
            FileKind::Snapshot => "snapshot",
        })
    }
}

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file-system call failed.
    #[error("{op} {}: {source}", .path.display())]
    Io {
        /// What was being done ("open", "fsync", ...).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// Another process (or another `Store` in this process) holds the data directory's lock.
    #[error("data directory {} is in use by another broker{}", .dir.display(), pid_suffix(*.pid))]
    Locked {
        /// The data directory.
        dir: PathBuf,
        /// The pid written in the lock file by its holder, when readable.
        pid: Option<u32>,
    },

    /// A file was written by a format version this build cannot read. Nothing was changed on
    /// disk.
    #[error(
        "{}: {kind} format version {found} is not supported by this build (it reads version {supported}); \
         the file was left untouched",
        .path.display()
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Journal segment or snapshot.
        kind: FileKind,
        /// The version found in the file's header.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },

    /// Damage found at start-up while `strict_recovery` is set. Nothing was changed on disk.
    #[error("{}: {reason} (strict recovery: refusing to start; nothing was changed on disk)", .path.display())]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The sections of a snapshot requested with
    /// [`StreamWriter::snapshot_with`](crate::StreamWriter::snapshot_with) could not be made
    /// (the encoder panicked). Only that snapshot failed: the journal holds the full history.
    #[error("the snapshot of stream {stream} could not be encoded: {reason}")]
    SnapshotEncoding {
        /// The stream.
        stream: usize,
        /// The panic's message.
        reason: String,
    },

    /// A write or fsync of this stream's journal failed. The journal accepts no more records:
    /// nothing appended after [`durable`](Self::JournalFailed::durable) may be assumed on disk.
    #[error(
        "journal {} of stream {stream} failed (records after LSN {durable} are not durable): {source}",
        .path.display()
    )]
    JournalFailed {
        /// The stream.
        stream: usize,
        /// The segment being written.
        path: PathBuf,
        /// The highest LSN that was durable before the failure.
        durable: Lsn,
        /// The OS error.
        #[source]
        source: Arc<io::Error>,
    },

    /// The store was closed (or its background thread is gone).
    #[error("the store is closed")]
    Closed,

    /// A stream index outside the active streams.
    #[error("stream {stream} does not exist (the store has {streams} active streams)")]
    NoSuchStream {
        /// The index asked for.
        stream: usize,
        /// The number of active streams.
        streams: usize,
    },

    /// [`Store::writer`](crate::Store::writer) was called twice for one stream.
    #[error("the writer of stream {stream} was already taken")]
    WriterTaken {
        /// The stream.
        stream: usize,
    },

    /// [`Store::retire`](crate::Store::retire) on a stream that is active or not on disk.
    #[error("stream {stream} cannot be retired: {reason}")]
    NotRetirable {
        /// The stream.
        stream: usize,
        /// Why not.
        reason: &'static str,
    },

    /// A record larger than the journal format allows.
    #[error("record of {len} bytes exceeds the journal limit of {max} bytes")]
    RecordTooLarge {
        /// The record's length.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// Bad arguments to [`Store::open`](crate::Store::open).
    #[error("invalid store options: {0}")]
    InvalidOptions(&'static str),
}

fn pid_suffix(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!(" (pid {pid})"),
        None => String::new(),
    }
}

/// `map_err` helper: wraps an `io::Error` with the operation and path.
pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}
