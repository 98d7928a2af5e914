//! Why this file exists: tests must stop or fail the background threads at exact points (an
//! fsync that errors, a crash between a snapshot's rename and the deletion of old segments).
//! This is the one seam for that.
//!
//! It owns [`Hooks`] and [`Point`]. Outside `cfg(test)` a `Hooks` is empty and every call is a
//! no-op the compiler removes. It must never change behaviour in a release build.

use std::io;
use std::path::Path;

/// A point in the background threads where a test may intervene.
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Debug)]
pub(crate) enum Point<'a> {
    /// A journal is about to be fdatasynced.
    JournalSync { stream: usize },
    /// A snapshot's temp file is written and fsynced, not yet renamed.
    SnapshotBeforeRename { tmp: &'a Path },
    /// A snapshot is renamed and its directory fsynced; older files are about to be deleted.
    SnapshotBeforeDelete { snapshot: &'a Path },
}

#[cfg(test)]
pub(crate) type HookFn = std::sync::Arc<dyn Fn(Point<'_>) -> io::Result<()> + Send + Sync>;

/// Test interventions (none outside tests).
#[derive(Clone, Default)]
pub(crate) struct Hooks {
    #[cfg(test)]
    pub(crate) hook: Option<HookFn>,
}

impl Hooks {
    /// Runs the test hook for `point`, if any; an error is treated as the OS's.
    #[inline]
    pub(crate) fn at(&self, point: Point<'_>) -> io::Result<()> {
        #[cfg(test)]
        if let Some(hook) = &self.hook {
            return hook(point);
        }
        let _ = point;
        Ok(())
    }
}
