//! The fixed header every packet starts with (§2.1): packet type, flags and remaining length.
//!
//! This is the first thing the decoder looks at, and it looks only here until a whole packet is
//! buffered: the declared size is checked against the maximum packet size before a single byte
//! of the body is allocated or parsed (the CVE-2017-7651 class of bug).

use bytes::BufMut;

use super::error::{DecodeError, EncodeError};
use super::packet_type::PacketType;
use super::wire::{self, MAX_VARIABLE_BYTE_INTEGER};

/// A decoded fixed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedHeader {
    pub packet_type: PacketType,
    /// The low four bits of the first byte.
    pub flags: u8,
    /// Length of the variable header plus payload.
    pub remaining_length: usize,
    /// Length of the fixed header itself (2 to 5 bytes).
    pub header_len: usize,
}

impl FixedHeader {
    /// Size of the whole packet on the wire.
    pub fn packet_len(&self) -> usize {
        self.header_len + self.remaining_length
    }

    /// Parses a fixed header from the front of `buf`. `Ok(None)` means more bytes are needed.
    pub fn parse(buf: &[u8]) -> Result<Option<FixedHeader>, DecodeError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let packet_type = PacketType::from_nibble(first >> 4)
            .ok_or(DecodeError::ReservedPacketType(first >> 4))?;
        let flags = first & 0x0F;
        if let Some(required) = packet_type.required_flags() {
            if flags != required {
                return Err(DecodeError::InvalidHeaderFlags {
                    packet: packet_type,
                    flags,
                });
            }
        }
        let (remaining_length, len_bytes) = match wire::decode_variable_int(&buf[1..]) {
            Ok(Some(decoded)) => decoded,
            Ok(None) => return Ok(None),
            Err(_) => return Err(DecodeError::MalformedRemainingLength),
        };
        Ok(Some(FixedHeader {
            packet_type,
            flags,
            remaining_length: remaining_length as usize,
            header_len: 1 + len_bytes,
        }))
    }
}

/// Writes a fixed header. Fails when the body is over MQTT's 268435455-byte limit.
pub fn put_fixed_header(
    out: &mut impl BufMut,
    packet_type: PacketType,
    flags: u8,
    remaining_length: usize,
) -> Result<(), EncodeError> {
    let length = u32::try_from(remaining_length)
        .ok()
        .filter(|&len| len <= MAX_VARIABLE_BYTE_INTEGER)
        .ok_or(EncodeError::PacketTooLarge(remaining_length))?;
    out.put_u8(((packet_type as u8) << 4) | flags);
    wire::put_variable_int(out, length);
    Ok(())
}

/// Size of a whole packet whose body is `remaining_length` bytes.
pub fn packet_len(remaining_length: usize) -> usize {
    1 + wire::variable_int_len(remaining_length.min(u32::MAX as usize) as u32) + remaining_length
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_type_flags_and_length() {
        let header = FixedHeader::parse(&[0x3B, 0x80, 0x01]).unwrap().unwrap();
        assert_eq!(header.packet_type, PacketType::Publish);
        assert_eq!(header.flags, 0x0B);
        assert_eq!(header.remaining_length, 128);
        assert_eq!(header.header_len, 3);
        assert_eq!(header.packet_len(), 131);
    }

    #[test]
    fn waits_for_a_split_length() {
        assert_eq!(FixedHeader::parse(&[]), Ok(None));
        assert_eq!(FixedHeader::parse(&[0x30]), Ok(None));
        assert_eq!(FixedHeader::parse(&[0x30, 0xFF, 0xFF]), Ok(None));
    }

    #[test]
    fn rejects_reserved_type_and_flags_and_long_lengths() {
        assert_eq!(
            FixedHeader::parse(&[0x00, 0x00]),
            Err(DecodeError::ReservedPacketType(0))
        );
        assert_eq!(
            FixedHeader::parse(&[0x60, 0x02]),
            Err(DecodeError::InvalidHeaderFlags {
                packet: PacketType::PubRel,
                flags: 0
            })
        );
        assert_eq!(
            FixedHeader::parse(&[0xC1, 0x00]),
            Err(DecodeError::InvalidHeaderFlags {
                packet: PacketType::PingReq,
                flags: 1
            })
        );
        assert_eq!(
            FixedHeader::parse(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
            Err(DecodeError::MalformedRemainingLength)
        );
    }

    #[test]
    fn refuses_to_write_an_oversized_body() {
        let mut out = Vec::new();
        assert!(put_fixed_header(&mut out, PacketType::Publish, 0, 268_435_456).is_err());
        put_fixed_header(&mut out, PacketType::Publish, 0, 268_435_455).unwrap();
        assert_eq!(out, [0x30, 0xFF, 0xFF, 0xFF, 0x7F]);
    }
}
