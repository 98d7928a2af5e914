//! Why this file exists: when the shard count shrinks, streams beyond it are recovered, their
//! state is re-homed by the caller, and then they must disappear atomically: a half-deleted
//! stream would look, at the next start, like a stream with a gap in its history.
//!
//! Retiring renames `stream-NNNN` to `stream-NNNN.retiring` (one atomic step, made durable by a
//! directory fsync), then deletes the journal, snapshot and temp files inside. Files moved aside
//! as damaged are never deleted: if any remain, the directory is renamed
//! `stream-NNNN.retired-<secs>` and kept; otherwise it is removed. Start-up finishes any
//! `.retiring` directory a crash left behind.
//!
//! It must never touch an active stream.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{io_err, StoreError};
use crate::layout::{fsync_dir, list_stream, stream_dir, with_free_suffix, Entry, RETIRING_SUFFIX};

/// Retires `stream`'s directory under `root`.
pub(crate) fn retire(root: &Path, stream: usize, now_secs: u64) -> Result<(), StoreError> {
    let dir = stream_dir(root, stream);
    let mut retiring = dir.as_os_str().to_owned();
    retiring.push(RETIRING_SUFFIX);
    let retiring = PathBuf::from(retiring);
    if retiring.exists() {
        finish(root, &retiring, now_secs)?;
    }
    fs::rename(&dir, &retiring).map_err(io_err("rename", &dir))?;
    fsync_dir(root)?;
    finish(root, &retiring, now_secs)
}

/// Removes what a retiring directory holds, keeping moved-aside files.
pub(crate) fn finish(root: &Path, dir: &Path, now_secs: u64) -> Result<(), StoreError> {
    let mut kept = 0;
    for entry in list_stream(dir)? {
        match entry {
            Entry::Segment(_, path) | Entry::Snapshot(_, path) | Entry::Temp(path) => {
                fs::remove_file(&path).map_err(io_err("delete", &path))?;
            }
            Entry::Other => kept += 1,
        }
    }
    if kept == 0 {
        fs::remove_dir(dir).map_err(io_err("remove directory", dir))?;
    } else {
        let mut base = dir.as_os_str().to_owned();
        if let Some(stripped) = dir.to_str().and_then(|s| s.strip_suffix(RETIRING_SUFFIX)) {
            base = stripped.into();
        }
        let target = with_free_suffix(Path::new(&base), &format!(".retired-{now_secs}"));
        tracing::warn!(
            dir = %dir.display(),
            kept_in = %target.display(),
            files = kept,
            "persistence: retired stream still holds moved-aside files; keeping them"
        );
        fs::rename(dir, &target).map_err(io_err("rename", dir))?;
    }
    fsync_dir(root)
}
