//! Why this file exists: the snapshot's on-disk format. Writing one crash-safely, and mapping
//! one back with every byte checked before the caller sees it.
//!
//! ```text
//! header (48 bytes, little-endian):
//!   0..8    magic   "MQBSNAP\0"
//!   8..12   format version (SNAPSHOT_VERSION)
//!   12..16  stream index
//!   16..24  LSN: the snapshot holds the stream's state after every record below this LSN
//!   24..28  section count
//!   28..32  reserved (0)
//!   32..40  total file length
//!   40..44  crc32c of the section table
//!   44..48  crc32c of bytes 0..44
//! section table: per section [u64 length][u32 crc32c of the section][u32 reserved]
//! sections: each starts at an 8-byte aligned offset, zero padding between them
//! ```
//!
//! Every format version keeps the magic, the version field and the checksum of bytes 0..44 at
//! 44..48 where they are, so the checksum is verified before the version is believed: a flipped
//! bit in the version field is damage, not a file from a newer build.
//!
//! Writing: `snap-<lsn>.snap.tmp`, fsync, rename to `snap-<lsn>.snap`, fsync the directory. A
//! renamed snapshot is never written again, so mapping it is sound; deleting a mapped snapshot is
//! harmless on Unix (the mapping keeps the inode).
//!
//! It must never hand out a section before the header, the table and that section's checksum
//! have been verified and every length bounds-checked.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{io_err, StoreError};
use crate::hooks::{Hooks, Point};
use crate::layout::{fsync_dir, snapshot_name, TMP_SUFFIX};
use crate::Lsn;

/// The snapshot format version this build reads and writes.
pub const SNAPSHOT_VERSION: u32 = 1;
const MAGIC: [u8; 8] = *b"MQBSNAP\0";
const HEADER_LEN: usize = 48;
const ENTRY_LEN: usize = 16;

fn align8(n: u64) -> u64 {
    (n + 7) & !7
}

/// Writes a snapshot of `sections` durably and returns its final path.
pub(crate) fn write_snapshot(
    dir: &Path,
    stream: usize,
    lsn: Lsn,
    sections: &[Vec<u8>],
    hooks: &Hooks,
) -> Result<PathBuf, StoreError> {
    let path = dir.join(snapshot_name(lsn));
    let tmp = dir.join(format!("{}{TMP_SUFFIX}", snapshot_name(lsn)));
    let result = write_tmp(&tmp, stream, lsn, sections).and_then(|()| {
        hooks
            .at(Point::SnapshotBeforeRename { tmp: &tmp })
            .map_err(io_err("rename", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("rename", &tmp))?;
        fsync_dir(dir)
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| path)
}

fn write_tmp(tmp: &Path, stream: usize, lsn: Lsn, sections: &[Vec<u8>]) -> Result<(), StoreError> {
    let mut table = Vec::with_capacity(sections.len() * ENTRY_LEN);
    for section in sections {
        table.extend_from_slice(&(section.len() as u64).to_le_bytes());
        table.extend_from_slice(&crc32c::crc32c(section).to_le_bytes());
        table.extend_from_slice(&0u32.to_le_bytes());
    }
    let mut total = (HEADER_LEN + table.len()) as u64;
    for section in sections {
        total = align8(total) + section.len() as u64;
    }
    let mut header = [0u8; HEADER_LEN];
    header[0..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&(stream as u32).to_le_bytes());
    header[16..24].copy_from_slice(&lsn.0.to_le_bytes());
    header[24..28].copy_from_slice(&(sections.len() as u32).to_le_bytes());
    header[32..40].copy_from_slice(&total.to_le_bytes());
    header[40..44].copy_from_slice(&crc32c::crc32c(&table).to_le_bytes());
    let crc = crc32c::crc32c(&header[0..44]);
    header[44..48].copy_from_slice(&crc.to_le_bytes());

    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
        .map_err(io_err("create", tmp))?;
    let mut out = BufWriter::with_capacity(256 * 1024, file);
    let mut written = (HEADER_LEN + table.len()) as u64;
    let write = |out: &mut BufWriter<File>, bytes: &[u8]| {
        out.write_all(bytes).map_err(io_err("write", tmp))
    };
    write(&mut out, &header)?;
    write(&mut out, &table)?;
    for section in sections {
        let pad = (align8(written) - written) as usize;
        write(&mut out, &[0u8; 8][..pad])?;
        write(&mut out, section)?;
        written = align8(written) + section.len() as u64;
    }
    debug_assert_eq!(written, total);
    let file = out
        .into_inner()
        .map_err(|e| io_err("write", tmp)(e.into_error()))?;
    file.sync_all().map_err(io_err("fsync", tmp))
}

/// Why a snapshot could not be used.
#[derive(Debug)]
pub(crate) enum SnapshotProblem {
    /// Written by another format version.
    Version(u32),
    /// Damaged: the reason.
    Corrupt(String),
    /// The file could not be read at all.
    Io(StoreError),
}

/// Reads only the format version of a snapshot file, if it has an intact header.
pub(crate) fn peek_version(path: &Path) -> Result<Option<u32>, StoreError> {
    use std::io::Read;
    let mut head = [0u8; HEADER_LEN];
    let mut file = File::open(path).map_err(io_err("open", path))?;
    let mut got = 0;
    while got < head.len() {
        match file.read(&mut head[got..]).map_err(io_err("read", path))? {
            0 => return Ok(None),
            n => got += n,
        }
    }
    if head[0..8] != MAGIC || crc32c::crc32c(&head[0..44]) != u32_at(&head, 44) {
        return Ok(None);
    }
    Ok(Some(u32_at(&head, 8)))
}

/// A verified snapshot, mapped read-only. Sections borrow from the mapping: deserialize them
/// in place (e.g. `postcard::from_bytes::<Borrowed<'_>>(snapshot.section(0)?)`).
pub struct MappedSnapshot {
    stream: usize,
    lsn: Lsn,
    path: PathBuf,
    map: Mmap,
    sections: Vec<Range<usize>>,
}

impl std::fmt::Debug for MappedSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedSnapshot")
            .field("stream", &self.stream)
            .field("lsn", &self.lsn)
            .field("path", &self.path)
            .field("bytes", &self.map.len())
            .field("sections", &self.sections.len())
            .finish()
    }
}

impl MappedSnapshot {
    /// The stream this snapshot belongs to.
    pub fn stream(&self) -> usize {
        self.stream
    }

    /// The snapshot's LSN: it holds the stream's state after every record with a lower LSN.
    pub fn lsn(&self) -> Lsn {
        self.lsn
    }

    /// The file it is mapped from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of sections.
    pub fn len(&self) -> usize {
        self.sections.len()
    }

    /// True if the snapshot has no sections.
    pub fn is_empty(&self) -> bool {
        self.sections.is_empty()
    }

    /// Section `index`, borrowed from the mapping.
    pub fn section(&self, index: usize) -> Option<&[u8]> {
        self.sections.get(index).map(|r| &self.map[r.clone()])
    }

    /// All sections in order, borrowed from the mapping.
    pub fn sections(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.sections.iter().map(|r| &self.map[r.clone()])
    }

    /// Maps and verifies the snapshot at `path`.
    pub(crate) fn open(path: &Path, stream: usize) -> Result<MappedSnapshot, SnapshotProblem> {
        let corrupt = |reason: String| Err(SnapshotProblem::Corrupt(reason));
        let file = File::open(path).map_err(|e| SnapshotProblem::Io(io_err("open", path)(e)))?;
        let file_len = file
            .metadata()
            .map_err(|e| SnapshotProblem::Io(io_err("stat", path)(e)))?
            .len();
        if file_len < HEADER_LEN as u64 {
            return corrupt(format!(
                "file of {file_len} bytes is shorter than a snapshot header"
            ));
        }
        // SAFETY: snapshot files are immutable once renamed into place: this crate never opens
        // one for writing again, and the data directory's lock keeps other brokers out. Another
        // process writing to the file behind our back would be outside the store's contract.
        #[allow(unsafe_code)]
        let map =
            unsafe { Mmap::map(&file) }.map_err(|e| SnapshotProblem::Io(io_err("map", path)(e)))?;
        let bytes = &map[..];
        if bytes[0..8] != MAGIC {
            return corrupt("bad magic: not a snapshot".into());
        }
        if crc32c::crc32c(&bytes[0..44]) != u32_at(bytes, 44) {
            return corrupt("snapshot header checksum mismatch".into());
        }
        let version = u32_at(bytes, 8);
        if version != SNAPSHOT_VERSION {
            return Err(SnapshotProblem::Version(version));
        }
        let header_stream = u32_at(bytes, 12) as usize;
        if header_stream != stream {
            return corrupt(format!(
                "snapshot belongs to stream {header_stream}, found in stream {stream}'s directory"
            ));
        }
        let lsn = Lsn(u64_at(bytes, 16));
        let count = u32_at(bytes, 24) as usize;
        let total = u64_at(bytes, 32);
        if total != bytes.len() as u64 {
            return corrupt(format!(
                "snapshot length is {} bytes, header says {total}",
                bytes.len()
            ));
        }
        let table_end = match count
            .checked_mul(ENTRY_LEN)
            .and_then(|t| t.checked_add(HEADER_LEN))
        {
            Some(end) if end <= bytes.len() => end,
            _ => {
                return corrupt(format!(
                    "section table of {count} entries does not fit in the file"
                ))
            }
        };
        let table = &bytes[HEADER_LEN..table_end];
        if crc32c::crc32c(table) != u32_at(bytes, 40) {
            return corrupt("section table checksum mismatch".into());
        }
        let mut sections = Vec::with_capacity(count);
        let mut offset = table_end as u64;
        for index in 0..count {
            let entry = &table[index * ENTRY_LEN..(index + 1) * ENTRY_LEN];
            let len = u64_at(entry, 0);
            let start = align8(offset);
            let end = match start.checked_add(len) {
                Some(end) if end <= bytes.len() as u64 => end,
                _ => return corrupt(format!("section {index} extends past the end of the file")),
            };
            let range = start as usize..end as usize;
            if crc32c::crc32c(&bytes[range.clone()]) != u32_at(entry, 8) {
                return corrupt(format!("section {index} checksum mismatch"));
            }
            sections.push(range);
            offset = end;
        }
        Ok(MappedSnapshot {
            stream,
            lsn,
            path: path.to_path_buf(),
            map,
            sections,
        })
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_and_map_back_aligned() {
        let dir = tempfile::tempdir().unwrap();
        let sections = vec![b"abc".to_vec(), Vec::new(), vec![7u8; 1000]];
        let path = write_snapshot(dir.path(), 2, Lsn(42), &sections, &Hooks::default()).unwrap();
        let snap = MappedSnapshot::open(&path, 2).unwrap();
        assert_eq!(snap.lsn(), Lsn(42));
        assert_eq!(
            snap.sections().collect::<Vec<_>>(),
            vec![&b"abc"[..], &[][..], &[7u8; 1000][..]]
        );
        for section in snap.sections() {
            assert_eq!(section.as_ptr() as usize % 8, 0);
        }
        assert!(matches!(
            MappedSnapshot::open(&path, 3),
            Err(SnapshotProblem::Corrupt(_))
        ));
        assert_eq!(peek_version(&path).unwrap(), Some(SNAPSHOT_VERSION));
    }
}
