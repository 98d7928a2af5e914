//! The 16-byte stamp at the front of every benchmark payload.
//!
//! Why it exists: a subscriber must tell, from the message alone, who sent it, which one it was
//! and when it was meant to leave, so it can account for losses and duplicates per publisher and
//! measure latency without any side channel. Publisher and subscribers run in one process, so the
//! time is nanoseconds since the process's shared monotonic origin ([`super::clock::Clock`]).
//!
//! Layout, little-endian: publisher id (u32), sequence number (u32), intended send time (u64).
//! The rest of the payload is a fixed filler up to the requested size.

use bytes::Bytes;

/// Bytes the stamp takes at the front of the payload; also the smallest payload allowed.
pub const STAMP_LEN: usize = 16;

/// The filler byte after the stamp.
const FILLER: u8 = 0x5A;

/// What a payload says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub publisher: u32,
    pub seq: u32,
    /// Nanoseconds since the shared origin at which the message was meant to be sent: the actual
    /// time in closed-loop runs, the schedule's time in open-loop runs.
    pub intended_ns: u64,
}

impl Stamp {
    pub fn to_bytes(self) -> [u8; STAMP_LEN] {
        let mut out = [0; STAMP_LEN];
        out[0..4].copy_from_slice(&self.publisher.to_le_bytes());
        out[4..8].copy_from_slice(&self.seq.to_le_bytes());
        out[8..16].copy_from_slice(&self.intended_ns.to_le_bytes());
        out
    }

    /// `None` when the payload is too short to hold a stamp.
    pub fn parse(payload: &[u8]) -> Option<Stamp> {
        let head: &[u8; STAMP_LEN] = payload.get(..STAMP_LEN)?.try_into().ok()?;
        Some(Stamp {
            publisher: u32::from_le_bytes(head[0..4].try_into().ok()?),
            seq: u32::from_le_bytes(head[4..8].try_into().ok()?),
            intended_ns: u64::from_le_bytes(head[8..16].try_into().ok()?),
        })
    }
}

/// A payload of `size` bytes whose first [`STAMP_LEN`] are zero and the rest filler. Publishers
/// send the stamp and then `template[STAMP_LEN..]`, so the filler is built once per run.
pub fn template(size: usize) -> Bytes {
    assert!(
        size >= STAMP_LEN,
        "payload of {size} bytes cannot hold a stamp"
    );
    let mut payload = vec![FILLER; size];
    payload[..STAMP_LEN].fill(0);
    Bytes::from(payload)
}

/// A whole stamped payload in one buffer (tests, and any caller that does not stream the filler).
pub fn stamped(stamp: Stamp, size: usize) -> Vec<u8> {
    let mut payload = template(size).to_vec();
    payload[..STAMP_LEN].copy_from_slice(&stamp.to_bytes());
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_at_every_size_limit() {
        let stamp = Stamp {
            publisher: 0xDEAD_BEEF,
            seq: u32::MAX,
            intended_ns: 0x0102_0304_0506_0708,
        };
        for size in [STAMP_LEN, 17, 64, 65536] {
            let payload = stamped(stamp, size);
            assert_eq!(payload.len(), size);
            assert_eq!(Stamp::parse(&payload), Some(stamp));
            assert!(payload[STAMP_LEN..].iter().all(|&b| b == FILLER));
        }
    }

    #[test]
    fn layout_is_little_endian_id_seq_time() {
        let bytes = Stamp {
            publisher: 1,
            seq: 2,
            intended_ns: 3,
        }
        .to_bytes();
        assert_eq!(bytes, [1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn short_payload_has_no_stamp() {
        assert_eq!(Stamp::parse(&[0; STAMP_LEN - 1]), None);
        assert_eq!(Stamp::parse(&[]), None);
    }

    #[test]
    fn template_leaves_room_for_the_stamp() {
        let t = template(20);
        assert_eq!(&t[..STAMP_LEN], &[0; STAMP_LEN]);
        assert_eq!(&t[STAMP_LEN..], &[FILLER; 4]);
    }
}
