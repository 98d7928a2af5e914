//! Why this file exists: start-up. It turns whatever a crash left in the data directory into
//! the latest intact state of every stream (snapshot + journal records after it), telling a torn
//! final record (normal after a crash: dropped quietly) from damage in the middle (reported,
//! moved aside, never deleted).
//!
//! It works in two phases. *Analysis* reads everything and changes nothing; it yields, per
//! stream, the recovered data, the issues found and the file actions needed. Then, unless
//! `strict_recovery` refuses because of an issue (or a file has an unknown format version, which
//! always refuses), *apply* carries the actions out: move damaged files aside, truncate torn
//! tails, delete files that a durable snapshot made stale, delete leftover temp files.
//!
//! Rules for a stream's journal, segments taken in start-LSN order:
//! - The first record that is short, has a bad length or checksum, or whose LSN does not
//!   increase is the *bad spot*. If no valid record exists after it (in that segment or a later
//!   one), the tail was torn: it is truncated. Otherwise the journal is damaged: the segment is
//!   copied aside whole as `<name>.corrupt-<secs>` and truncated to its intact prefix, and every
//!   later segment is moved aside, so the recovered state is always a prefix of history.
//! - A segment whose header is bad is damage (headers are written atomically).
//! - Segments that start below the chosen snapshot's LSN are stale (the snapshot covers them)
//!   and are deleted; so are older snapshots.
//! - Each segment names the snapshot its chain continues from (`base`). If the first segment's
//!   base is newer than the snapshot chosen (because that snapshot is damaged or missing), the
//!   history before it is lost: reported, and the records are still handed over.
//!
//! It must never delete a damaged file, and never modify anything before the strict check.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use crate::error::{io_err, FileKind, StoreError};
use crate::journal::{
    self, HeaderProblem, RawRecord, SegmentHeader, HEADER_LEN, JOURNAL_VERSION, RECORD_OVERHEAD,
};
use crate::layout::{self, aside_path, fsync_dir, list_stream, stream_dir, Entry};
use crate::retire;
use crate::snapshot::{self, MappedSnapshot, SnapshotProblem, SNAPSHOT_VERSION};
use crate::Lsn;

/// One journal record handed back at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Its LSN (unique across the whole store, increasing within a stream).
    pub lsn: Lsn,
    /// The bytes given to [`StreamWriter::append`](crate::StreamWriter::append).
    pub data: Vec<u8>,
}

/// What start-up found for one stream.
#[derive(Debug)]
pub struct RecoveredStream {
    /// The stream's index.
    pub stream: usize,
    /// False for a stream found on disk beyond the number of streams asked for (the shard count
    /// shrank). Re-home its state, make that durable, then [`Store::retire`](crate::Store::retire) it.
    pub active: bool,
    /// The newest intact snapshot, mapped.
    pub snapshot: Option<MappedSnapshot>,
    /// Journal records after the snapshot, in LSN order.
    pub records: Vec<Record>,
}

/// What start-up had to repair or give up.
#[derive(Debug, Default)]
pub struct RecoveryReport {
    /// Damage found (empty on a clean start, and after a mere crash).
    pub issues: Vec<RecoveryIssue>,
    /// Torn final records dropped (normal after a crash; logged at info level only).
    pub torn_tails: Vec<TornTail>,
    /// Journal records handed back, over all streams.
    pub records_replayed: u64,
    /// The first LSN this run will assign.
    pub next_lsn: Lsn,
}

impl RecoveryReport {
    /// True if nothing was lost (torn tails do not count: they were never durable).
    pub fn is_clean(&self) -> bool {
        self.issues.is_empty()
    }

    /// Journal records known lost, over all issues.
    pub fn records_lost(&self) -> u64 {
        self.issues.iter().map(|i| i.records_lost).sum()
    }

    /// Bytes skipped, over all issues.
    pub fn bytes_lost(&self) -> u64 {
        self.issues.iter().map(|i| i.bytes_lost).sum()
    }
}

/// The kind of damage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssueKind {
    /// A journal segment is damaged, or follows a damaged one.
    CorruptJournal,
    /// A snapshot failed verification.
    CorruptSnapshot,
    /// The journal continues from a snapshot that is gone: the state before it is lost.
    MissingHistory,
}

/// One piece of damage found at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryIssue {
    /// The stream.
    pub stream: usize,
    /// What kind.
    pub kind: IssueKind,
    /// The file.
    pub path: PathBuf,
    /// What is wrong, and what it cost.
    pub reason: String,
    /// Where the file (or, for a journal truncated to its intact prefix, a full copy of it) was
    /// moved aside.
    pub moved_to: Option<PathBuf>,
    /// Valid journal records found after the damage and therefore not replayed.
    pub records_lost: u64,
    /// Bytes not used.
    pub bytes_lost: u64,
}

impl fmt::Display for RecoveryIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stream {}: {}: {}",
            self.stream,
            self.path.display(),
            self.reason
        )?;
        if let Some(aside) = &self.moved_to {
            write!(f, " (moved aside to {})", aside.display())?;
        }
        write!(
            f,
            "; {} records / {} bytes lost",
            self.records_lost, self.bytes_lost
        )
    }
}

/// A torn final record that was truncated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The stream.
    pub stream: usize,
    /// The segment.
    pub path: PathBuf,
    /// Bytes cut off its end.
    pub bytes_dropped: u64,
}

/// Everything [`Store::open`](crate::Store::open) hands back about the past.
#[derive(Debug)]
pub struct Recovery {
    /// Every stream found on disk or asked for, by index; `streams[i].stream == i` for the active
    /// ones. Inactive (retiring) streams follow them.
    pub streams: Vec<RecoveredStream>,
    /// What had to be repaired or was lost.
    pub report: RecoveryReport,
}

/// The result of start-up, with what the store needs to carry on.
pub(crate) struct Recovered {
    pub recovery: Recovery,
    /// Per active stream: the base LSN its new segment must carry.
    pub chain_base: Vec<Lsn>,
    /// Per active stream: journal bytes since its snapshot.
    pub journal_bytes: Vec<u64>,
}

#[derive(Debug)]
enum Action {
    Delete(PathBuf),
    Truncate {
        path: PathBuf,
        len: u64,
    },
    PreserveTruncate {
        path: PathBuf,
        aside: PathBuf,
        len: u64,
    },
    MoveAside {
        path: PathBuf,
        aside: PathBuf,
    },
}

struct StreamPlan {
    stream: usize,
    dir: PathBuf,
    active: bool,
    snapshot: Option<MappedSnapshot>,
    records: Vec<Record>,
    journal_bytes: u64,
    chain_base: Lsn,
    max_lsn: Lsn,
    issues: Vec<RecoveryIssue>,
    torn: Vec<TornTail>,
    actions: Vec<Action>,
}

/// Reads, checks and repairs the data directory (already locked).
pub(crate) fn recover(
    root: &Path,
    active: usize,
    strict: bool,
    now_secs: u64,
) -> Result<Recovered, StoreError> {
    let mut indices: BTreeSet<usize> = (0..active).collect();
    let mut retiring = Vec::new();
    for entry in fs::read_dir(root).map_err(io_err("list", root))? {
        let entry = entry.map_err(io_err("list", root))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !entry
            .file_type()
            .map_err(io_err("stat", &entry.path()))?
            .is_dir()
        {
            continue;
        }
        if let Some(index) = layout::parse_stream_dir(&name) {
            indices.insert(index);
        } else if name.starts_with(layout::STREAM_PREFIX) && name.ends_with(layout::RETIRING_SUFFIX)
        {
            retiring.push(entry.path());
        }
    }

    let mut plans = Vec::with_capacity(indices.len());
    for &stream in &indices {
        plans.push(analyze(root, stream, stream < active, now_secs)?);
    }
    if strict {
        if let Some(issue) = plans.iter().flat_map(|p| &p.issues).next() {
            return Err(StoreError::Corrupt {
                path: issue.path.clone(),
                reason: issue.reason.clone(),
            });
        }
    }

    for dir in retiring {
        retire::finish(root, &dir, now_secs)?;
    }
    for plan in &plans {
        apply(plan)?;
    }

    let mut report = RecoveryReport {
        next_lsn: Lsn(plans.iter().map(|p| p.max_lsn.0).max().unwrap_or(0) + 1),
        ..RecoveryReport::default()
    };
    let mut streams = Vec::with_capacity(plans.len());
    let mut chain_base = Vec::with_capacity(active);
    let mut journal_bytes = Vec::with_capacity(active);
    for plan in plans {
        for issue in &plan.issues {
            tracing::error!(%issue, "persistence: damage found at start-up");
        }
        for torn in &plan.torn {
            tracing::info!(
                stream = torn.stream,
                path = %torn.path.display(),
                bytes = torn.bytes_dropped,
                "persistence: dropped a torn final journal record"
            );
        }
        report.issues.extend(plan.issues);
        report.torn_tails.extend(plan.torn);
        report.records_replayed += plan.records.len() as u64;
        if plan.active {
            chain_base.push(plan.chain_base);
            journal_bytes.push(plan.journal_bytes);
        }
        streams.push(RecoveredStream {
            stream: plan.stream,
            active: plan.active,
            snapshot: plan.snapshot,
            records: plan.records,
        });
    }
    // Active streams first (in index order), then the retiring ones.
    streams.sort_by_key(|s| (!s.active, s.stream));
    Ok(Recovered {
        recovery: Recovery { streams, report },
        chain_base,
        journal_bytes,
    })
}

/// One segment read whole.
struct Scan {
    path: PathBuf,
    bytes: Vec<u8>,
    header: Result<SegmentHeader, &'static str>,
    records: Vec<RawRecord>,
    good_end: usize,
    bad: Option<&'static str>,
    /// Valid records after the bad spot (or in the whole file if the header is bad).
    survivors: u64,
}

impl Scan {
    fn valid_records(&self) -> u64 {
        self.records.len() as u64 + self.survivors
    }
}

fn scan_segment(path: &Path, stream: usize, start: Lsn, after: Lsn) -> Result<Scan, StoreError> {
    let bytes = fs::read(path).map_err(io_err("read", path))?;
    let header = match SegmentHeader::decode(&bytes) {
        Err(HeaderProblem::Version(found)) => {
            return Err(StoreError::UnsupportedVersion {
                path: path.to_path_buf(),
                kind: FileKind::Journal,
                found,
                supported: JOURNAL_VERSION,
            })
        }
        Err(HeaderProblem::Corrupt(reason)) => Err(reason),
        Ok(h) if h.stream as usize != stream => Err("segment header names another stream"),
        Ok(h) if h.start != start => Err("segment header's start LSN does not match its name"),
        Ok(h) => Ok(h),
    };
    let mut scan = Scan {
        path: path.to_path_buf(),
        records: Vec::new(),
        good_end: 0,
        bad: None,
        survivors: 0,
        header,
        bytes,
    };
    if scan.header.is_err() {
        scan.survivors = journal::count_valid_from(&scan.bytes, 0, after);
        return Ok(scan);
    }
    let mut last = after.max(Lsn(start.0.saturating_sub(1)));
    let mut pos = HEADER_LEN;
    while pos < scan.bytes.len() {
        match journal::record_at(&scan.bytes, pos, last) {
            Ok(record) => {
                last = record.lsn;
                pos = record.next;
                scan.records.push(record);
            }
            Err(reason) => {
                scan.bad = Some(reason);
                scan.survivors = journal::count_valid_from(&scan.bytes, pos + 1, last);
                break;
            }
        }
    }
    scan.good_end = pos;
    Ok(scan)
}

fn analyze(root: &Path, stream: usize, active: bool, now: u64) -> Result<StreamPlan, StoreError> {
    let dir = stream_dir(root, stream);
    let mut plan = StreamPlan {
        stream,
        active,
        snapshot: None,
        records: Vec::new(),
        journal_bytes: 0,
        chain_base: Lsn(0),
        max_lsn: Lsn(0),
        issues: Vec::new(),
        torn: Vec::new(),
        actions: Vec::new(),
        dir: dir.clone(),
    };
    let mut snapshots = Vec::new();
    let mut segments = Vec::new();
    for entry in list_stream(&dir)? {
        match entry {
            Entry::Segment(lsn, path) => segments.push((lsn, path)),
            Entry::Snapshot(lsn, path) => snapshots.push((lsn, path)),
            Entry::Temp(path) => plan.actions.push(Action::Delete(path)),
            Entry::Other => {}
        }
    }
    snapshots.sort_by_key(|s| std::cmp::Reverse(s.0));
    segments.sort_by_key(|s| s.0);

    // A snapshot from another format version refuses the start, even if it would be stale.
    for (_, path) in &snapshots {
        if let Some(found) = snapshot::peek_version(path)? {
            if found != SNAPSHOT_VERSION {
                return Err(unsupported_snapshot(path, found));
            }
        }
    }

    // The newest snapshot that verifies.
    let mut corrupt_snapshots = Vec::new();
    for (lsn, path) in snapshots {
        plan.max_lsn = plan.max_lsn.max(lsn);
        if plan.snapshot.is_some() {
            plan.actions.push(Action::Delete(path));
            continue;
        }
        match MappedSnapshot::open(&path, stream) {
            Ok(snap) => plan.snapshot = Some(snap),
            Err(SnapshotProblem::Version(found)) => return Err(unsupported_snapshot(&path, found)),
            Err(SnapshotProblem::Io(e)) => return Err(e),
            Err(SnapshotProblem::Corrupt(reason)) => {
                let aside = aside_path(&path, now);
                let bytes = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                corrupt_snapshots.push((lsn, plan.issues.len()));
                plan.issues.push(RecoveryIssue {
                    stream,
                    kind: IssueKind::CorruptSnapshot,
                    path: path.clone(),
                    reason,
                    moved_to: Some(aside.clone()),
                    records_lost: 0,
                    bytes_lost: bytes,
                });
                plan.actions.push(Action::MoveAside { path, aside });
            }
        }
    }
    let base = plan.snapshot.as_ref().map_or(Lsn(0), MappedSnapshot::lsn);

    // Segments the snapshot covers are stale; the rest are read whole.
    let mut scans: Vec<Scan> = Vec::new();
    for (start, path) in segments {
        plan.max_lsn = plan.max_lsn.max(start);
        if plan.snapshot.is_some() && start < base {
            plan.actions.push(Action::Delete(path));
            continue;
        }
        let after = scans
            .iter()
            .rev()
            .find_map(|s| s.records.last().map(|r| r.lsn))
            .unwrap_or(Lsn(0));
        scans.push(scan_segment(&path, stream, start, after)?);
    }

    // Valid records in segments after each one, to tell a torn tail from damage.
    let mut later = vec![0u64; scans.len()];
    for i in (0..scans.len().saturating_sub(1)).rev() {
        later[i] = later[i + 1] + scans[i + 1].valid_records();
    }

    let mut cut: Option<PathBuf> = None;
    let mut chain_base = None;
    for (i, scan) in scans.iter().enumerate() {
        let file_len = scan.bytes.len() as u64;
        if let Some(cut_path) = &cut {
            let aside = aside_path(&scan.path, now);
            plan.issues.push(RecoveryIssue {
                stream,
                kind: IssueKind::CorruptJournal,
                path: scan.path.clone(),
                reason: format!(
                    "follows damaged segment {}; not replayed",
                    cut_path.display()
                ),
                moved_to: Some(aside.clone()),
                records_lost: scan.valid_records(),
                bytes_lost: file_len,
            });
            plan.actions.push(Action::MoveAside {
                path: scan.path.clone(),
                aside,
            });
            continue;
        }
        let header = match &scan.header {
            Ok(header) => header,
            Err(reason) => {
                let aside = aside_path(&scan.path, now);
                plan.issues.push(RecoveryIssue {
                    stream,
                    kind: IssueKind::CorruptJournal,
                    path: scan.path.clone(),
                    reason: (*reason).to_string(),
                    moved_to: Some(aside.clone()),
                    records_lost: scan.survivors,
                    bytes_lost: file_len,
                });
                plan.actions.push(Action::MoveAside {
                    path: scan.path.clone(),
                    aside,
                });
                cut = Some(scan.path.clone());
                continue;
            }
        };
        chain_base.get_or_insert(header.base);
        for record in &scan.records {
            plan.max_lsn = plan.max_lsn.max(record.lsn);
            if record.lsn > base {
                plan.journal_bytes += (RECORD_OVERHEAD + record.payload.len()) as u64;
                plan.records.push(Record {
                    lsn: record.lsn,
                    data: scan.bytes[record.payload.clone()].to_vec(),
                });
            }
        }
        let Some(reason) = scan.bad else {
            if scan.records.is_empty() {
                plan.actions.push(Action::Delete(scan.path.clone()));
            }
            continue;
        };
        let dropped = file_len - scan.good_end as u64;
        let after_bad = scan.survivors + later[i];
        if after_bad == 0 {
            plan.torn.push(TornTail {
                stream,
                path: scan.path.clone(),
                bytes_dropped: dropped,
            });
            plan.actions.push(if scan.records.is_empty() {
                Action::Delete(scan.path.clone())
            } else {
                Action::Truncate {
                    path: scan.path.clone(),
                    len: scan.good_end as u64,
                }
            });
        } else {
            let aside = aside_path(&scan.path, now);
            plan.issues.push(RecoveryIssue {
                stream,
                kind: IssueKind::CorruptJournal,
                path: scan.path.clone(),
                reason: format!(
                    "{reason} at byte {}, followed by {} valid records; replay stops there (last good LSN {})",
                    scan.good_end,
                    after_bad,
                    scan.records.last().map_or(base, |r| r.lsn)
                ),
                moved_to: Some(aside.clone()),
                records_lost: scan.survivors,
                bytes_lost: dropped,
            });
            plan.actions.push(Action::PreserveTruncate {
                path: scan.path.clone(),
                aside,
                len: scan.good_end as u64,
            });
            cut = Some(scan.path.clone());
        }
    }

    // Is the history continuous from the chosen snapshot (or the empty state)?
    plan.chain_base = chain_base.unwrap_or(base);
    let gap = chain_base.is_some_and(|b| b > base);
    for &(lsn, index) in &corrupt_snapshots {
        let issue = &mut plan.issues[index];
        let suffix = if chain_base.is_some() && !gap {
            "; the journal holds the history it covered, nothing lost".to_string()
        } else if gap && chain_base == Some(lsn) {
            format!(
                "; the state as of LSN {lsn} is lost, and the {} journal records after it are replayed without it",
                plan.records.len()
            )
        } else {
            format!("; the state as of LSN {lsn} is lost")
        };
        issue.reason.push_str(&suffix);
    }
    let explained = corrupt_snapshots
        .iter()
        .any(|&(lsn, _)| Some(lsn) == chain_base);
    if gap && !explained {
        let first = scans
            .iter()
            .find(|s| s.header.is_ok())
            .expect("chain base comes from a segment");
        plan.issues.push(RecoveryIssue {
            stream,
            kind: IssueKind::MissingHistory,
            path: first.path.clone(),
            reason: format!(
                "the journal continues from a snapshot at LSN {} that is missing; the state before it is lost \
                 and the {} journal records after it are replayed without it",
                plan.chain_base,
                plan.records.len()
            ),
            moved_to: None,
            records_lost: 0,
            bytes_lost: 0,
        });
    }
    Ok(plan)
}

fn unsupported_snapshot(path: &Path, found: u32) -> StoreError {
    StoreError::UnsupportedVersion {
        path: path.to_path_buf(),
        kind: FileKind::Snapshot,
        found,
        supported: SNAPSHOT_VERSION,
    }
}

/// Carries out a plan's file actions: moves aside first (so a crash part-way never leaves a
/// gap that looks continuous), then truncations, then deletions; then fsyncs the directory.
fn apply(plan: &StreamPlan) -> Result<(), StoreError> {
    if plan.actions.is_empty() {
        return Ok(());
    }
    let rank = |a: &Action| match a {
        Action::MoveAside { .. } => 0,
        Action::PreserveTruncate { .. } => 1,
        Action::Truncate { .. } => 2,
        Action::Delete(_) => 3,
    };
    let mut actions: Vec<&Action> = plan.actions.iter().collect();
    actions.sort_by_key(|a| rank(a));
    for action in actions {
        match action {
            Action::MoveAside { path, aside } => {
                fs::rename(path, aside).map_err(io_err("move aside", path))?;
            }
            Action::PreserveTruncate { path, aside, len } => {
                fs::copy(path, aside).map_err(io_err("copy aside", path))?;
                fs::File::open(aside)
                    .and_then(|f| f.sync_all())
                    .map_err(io_err("fsync", aside))?;
                fsync_dir(&plan.dir)?;
                truncate(path, *len)?;
            }
            Action::Truncate { path, len } => truncate(path, *len)?,
            Action::Delete(path) => fs::remove_file(path).map_err(io_err("delete", path))?,
        }
    }
    fsync_dir(&plan.dir)
}

fn truncate(path: &Path, len: u64) -> Result<(), StoreError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err("open", path))?;
    file.set_len(len).map_err(io_err("truncate", path))?;
    file.sync_all().map_err(io_err("fsync", path))
}
