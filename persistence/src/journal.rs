//! Why this file exists: the journal's on-disk format, and nothing else. Encoding a record,
//! reading one back, telling a valid record from damage, and creating a segment file safely.
//!
//! A segment is a header followed by records:
//!
//! ```text
//! header (36 bytes, little-endian):
//!   0..8    magic   "MQBJRNL\0"
//!   8..12   format version (JOURNAL_VERSION)
//!   12..16  stream index
//!   16..24  start LSN (every record in the segment has an LSN >= this)
//!   24..32  base LSN: the snapshot this chain of segments continues from (0 = empty state)
//!   32..36  crc32c of bytes 0..32
//! record:
//!   [u32 len][u32 crc32c][u64 lsn][payload]
//!   len = 8 + payload length; crc32c covers the len field, the LSN and the payload
//! ```
//!
//! Segments are created complete (header written to a `.tmp`, fsynced, renamed, directory
//! fsynced), so a segment's header is never torn: a bad header is always corruption.
//!
//! Every format version keeps the magic, the version field and the checksum of bytes 0..32 at
//! 32..36 where they are (a newer version may change the rest, and add to the header after byte
//! 36). So the checksum is verified before the version is believed: a flipped bit in the
//! version field is damage, set aside like any other, not a file from a newer build.
//!
//! It must never open a segment for anything but appending or reading whole, and never map one
//! into memory (a journal that is truncated under a mapping raises SIGBUS).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::error::{io_err, StoreError};
use crate::layout::{fsync_dir, segment_name, TMP_SUFFIX};
use crate::Lsn;

/// The journal format version this build reads and writes.
pub const JOURNAL_VERSION: u32 = 1;
pub(crate) const MAGIC: [u8; 8] = *b"MQBJRNL\0";
pub(crate) const HEADER_LEN: usize = 36;
/// Bytes a record adds to its payload: length, checksum and LSN.
pub(crate) const RECORD_OVERHEAD: usize = 16;
/// The largest payload one record can carry (the length field is a u32 and counts the LSN).
pub const MAX_RECORD_BYTES: usize = u32::MAX as usize - 8;
/// While searching past damage for valid records, an LSN further than this beyond the last
/// good one is taken for noise without computing a checksum. It keeps the search linear in
/// practice on arbitrary bytes.
const RESYNC_LSN_WINDOW: u64 = 1 << 40;

/// A segment's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub stream: u32,
    pub start: Lsn,
    pub base: Lsn,
}

/// Why a header could not be used.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeaderProblem {
    /// Written by another format version.
    Version(u32),
    /// Damaged or not a segment.
    Corrupt(&'static str),
}

impl SegmentHeader {
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&JOURNAL_VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&self.stream.to_le_bytes());
        out[16..24].copy_from_slice(&self.start.0.to_le_bytes());
        out[24..32].copy_from_slice(&self.base.0.to_le_bytes());
        let crc = crc32c::crc32c(&out[0..32]);
        out[32..36].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads a header. The checksum, which every format version keeps in place, is checked
    /// before the version: only an intact header from another version is reported as such.
    pub(crate) fn decode(bytes: &[u8]) -> Result<SegmentHeader, HeaderProblem> {
        if bytes.len() < HEADER_LEN {
            return Err(HeaderProblem::Corrupt("file shorter than a segment header"));
        }
        if bytes[0..8] != MAGIC {
            return Err(HeaderProblem::Corrupt("bad magic: not a journal segment"));
        }
        if crc32c::crc32c(&bytes[0..32]) != u32_at(bytes, 32) {
            return Err(HeaderProblem::Corrupt("segment header checksum mismatch"));
        }
        let version = u32_at(bytes, 8);
        if version != JOURNAL_VERSION {
            return Err(HeaderProblem::Version(version));
        }
        Ok(SegmentHeader {
            stream: u32_at(bytes, 12),
            start: Lsn(u64_at(bytes, 16)),
            base: Lsn(u64_at(bytes, 24)),
        })
    }
}

/// Appends one encoded record to `buf`.
pub(crate) fn encode_record(buf: &mut Vec<u8>, lsn: Lsn, payload: &[u8]) {
    debug_assert!(payload.len() <= MAX_RECORD_BYTES);
    let len = (payload.len() + 8) as u32;
    let len_bytes = len.to_le_bytes();
    let lsn_bytes = lsn.0.to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len_bytes), &lsn_bytes);
    let crc = crc32c::crc32c_append(crc, payload);
    buf.reserve(RECORD_OVERHEAD + payload.len());
    buf.extend_from_slice(&len_bytes);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf.extend_from_slice(&lsn_bytes);
    buf.extend_from_slice(payload);
}

/// A record read from a segment.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RawRecord {
    pub lsn: Lsn,
    /// The payload's position in the segment's bytes.
    pub payload: Range<usize>,
    /// Where the next record starts.
    pub next: usize,
}

/// Reads the record at `pos`, which must carry an LSN greater than `after`.
/// `Err` says why the bytes there are not a valid record.
pub(crate) fn record_at(bytes: &[u8], pos: usize, after: Lsn) -> Result<RawRecord, &'static str> {
    let rest = bytes.len().saturating_sub(pos);
    if rest < RECORD_OVERHEAD {
        return Err("short record header");
    }
    let len = u32_at(bytes, pos) as usize;
    if len < 8 {
        return Err("record length out of range");
    }
    if len > rest - 8 {
        return Err("record extends past the end of the file");
    }
    let lsn = Lsn(u64_at(bytes, pos + 8));
    if lsn <= after {
        return Err("record LSN does not increase");
    }
    let stored = u32_at(bytes, pos + 4);
    let crc = crc32c::crc32c_append(
        crc32c::crc32c(&bytes[pos..pos + 4]),
        &bytes[pos + 8..pos + 8 + len],
    );
    if crc != stored {
        return Err("record checksum mismatch");
    }
    Ok(RawRecord {
        lsn,
        payload: pos + 16..pos + 8 + len,
        next: pos + 8 + len,
    })
}

/// Counts the valid records (LSNs increasing from above `after`) found anywhere in
/// `bytes[from..]`, searching byte by byte past damage. Returns the count.
pub(crate) fn count_valid_from(bytes: &[u8], from: usize, mut after: Lsn) -> u64 {
    let mut count = 0;
    let mut pos = from;
    while pos + RECORD_OVERHEAD <= bytes.len() {
        // Cheap plausibility checks first: length within the file, LSN in a sane window.
        let len = u32_at(bytes, pos) as usize;
        let lsn = u64_at(bytes, pos + 8);
        let plausible = len >= 8
            && len <= bytes.len() - pos - 8
            && lsn > after.0
            && lsn - after.0 <= RESYNC_LSN_WINDOW;
        if plausible {
            if let Ok(record) = record_at(bytes, pos, after) {
                count += 1;
                after = record.lsn;
                pos = record.next;
                continue;
            }
        }
        pos += 1;
    }
    count
}

/// Creates `journal-<start>.log` in `dir` with its header, durably (tmp, fsync, rename, directory
/// fsync), and returns it opened for appending.
pub(crate) fn create_segment(
    dir: &Path,
    header: SegmentHeader,
) -> Result<(File, PathBuf), StoreError> {
    let path = dir.join(segment_name(header.start));
    let tmp = dir.join(format!("{}{TMP_SUFFIX}", segment_name(header.start)));
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        file.write_all(&header.encode())
            .map_err(io_err("write", &tmp))?;
        file.sync_all().map_err(io_err("fsync", &tmp))?;
    }
    fs::rename(&tmp, &path).map_err(io_err("rename", &tmp))?;
    fsync_dir(dir)?;
    let file = OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(io_err("open", &path))?;
    Ok((file, path))
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
    fn record_round_trip_and_damage() {
        let mut buf = vec![0u8; 3];
        encode_record(&mut buf, Lsn(7), b"hello");
        encode_record(&mut buf, Lsn(9), b"");
        let first = record_at(&buf, 3, Lsn(0)).unwrap();
        assert_eq!(first.lsn, Lsn(7));
        assert_eq!(&buf[first.payload.clone()], b"hello");
        let second = record_at(&buf, first.next, Lsn(7)).unwrap();
        assert_eq!(second.lsn, Lsn(9));
        assert_eq!(second.next, buf.len());
        assert_eq!(
            record_at(&buf, first.next, Lsn(9)),
            Err("record LSN does not increase")
        );
        assert_eq!(count_valid_from(&buf, 0, Lsn(0)), 2);
        let mut bad = buf.clone();
        bad[3 + 17] ^= 1;
        assert_eq!(record_at(&bad, 3, Lsn(0)), Err("record checksum mismatch"));
        assert_eq!(count_valid_from(&bad, 4, Lsn(0)), 1);
        assert_eq!(
            record_at(&buf[..buf.len() - 1], first.next, Lsn(7)),
            Err("short record header")
        );
    }

    #[test]
    fn header_round_trip_and_checksum_before_version() {
        let header = SegmentHeader {
            stream: 3,
            start: Lsn(10),
            base: Lsn(4),
        };
        let bytes = header.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(header));
        // Any flipped bit is damage, the version field's included.
        for bit in 0..HEADER_LEN * 8 {
            let mut damaged = bytes;
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                matches!(
                    SegmentHeader::decode(&damaged),
                    Err(HeaderProblem::Corrupt(_))
                ),
                "bit {bit}"
            );
        }
        // An intact header of another version is that version.
        let mut newer = bytes;
        newer[8..12].copy_from_slice(&2u32.to_le_bytes());
        let crc = crc32c::crc32c(&newer[0..32]);
        newer[32..36].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            SegmentHeader::decode(&newer),
            Err(HeaderProblem::Version(2))
        );
    }
}
