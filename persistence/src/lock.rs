//! Why this file exists: two brokers writing one data directory would interleave journals and
//! delete each other's segments. An OS advisory lock on `<dir>/LOCK` stops the second one.
//!
//! It owns [`DirLock`]: `flock(LOCK_EX | LOCK_NB)` through `std::fs::File::try_lock`, held for
//! the life of the [`Store`](crate::Store) and released by the OS when the process dies, so a
//! crash never leaves a stale lock. The holder writes its pid into the file for the error
//! message. It must never delete the lock file (deleting it would let a third process lock a new
//! inode while the first still holds the old one).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{io_err, StoreError};

/// The lock file's name inside the data directory.
pub(crate) const LOCK_FILE: &str = "LOCK";

/// Holds the data directory's lock until dropped.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock without waiting, or fails with [`StoreError::Locked`].
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock, StoreError> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("open", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    dir: dir.to_path_buf(),
                    pid: read_pid(&path),
                })
            }
            Err(TryLockError::Error(source)) => {
                return Err(StoreError::Io {
                    op: "lock",
                    path,
                    source,
                })
            }
        }
        file.set_len(0).map_err(io_err("truncate", &path))?;
        writeln!(file, "{}", std::process::id()).map_err(io_err("write", &path))?;
        Ok(DirLock { _file: file })
    }
}

fn read_pid(path: &PathBuf) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}
