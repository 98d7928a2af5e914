//! MQTT's primitive data types (spec §1.5): two- and four-byte integers, variable byte integers,
//! length-prefixed UTF-8 strings and binary data, read from and written to byte buffers.
//!
//! [`Reader`] walks a `Bytes` holding exactly one packet body. Strings and binary fields come out
//! as slices of that `Bytes` (a reference count, never a copy), and every length is checked
//! against what is actually left before anything is taken, so a hostile length can neither read
//! past the packet nor cause an allocation.

use bytes::{Buf, BufMut, Bytes};
use bytestring::ByteString;

use super::error::{DecodeError, EncodeError};

/// The largest value a variable byte integer can hold (four bytes of seven bits).
pub const MAX_VARIABLE_BYTE_INTEGER: u32 = 268_435_455;

/// A cursor over one packet's bytes.
#[derive(Debug)]
pub struct Reader {
    buf: Bytes,
}

impl Reader {
    pub fn new(buf: Bytes) -> Self {
        Reader { buf }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The next byte, without consuming it.
    pub fn peek_u8(&self) -> Option<u8> {
        self.buf.first().copied()
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }

    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }

    /// A variable byte integer (§1.5.5): at most four bytes.
    pub fn variable_int(&mut self) -> Result<u32, DecodeError> {
        match decode_variable_int(&self.buf)? {
            Some((value, len)) => {
                self.buf.advance(len);
                Ok(value)
            }
            None => Err(DecodeError::UnexpectedEnd),
        }
    }

    /// Two-byte length followed by that many bytes (§1.5.6).
    pub fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16()? as usize;
        self.take(len)
    }

    /// Two-byte length followed by UTF-8 without U+0000 (§1.5.4, MQTT-1.5.4-1/2).
    pub fn string(&mut self) -> Result<ByteString, DecodeError> {
        let raw = self.binary()?;
        to_mqtt_string(raw)
    }

    /// The next `len` bytes as a shared slice.
    pub fn take(&mut self, len: usize) -> Result<Bytes, DecodeError> {
        self.need(len)?;
        Ok(self.buf.split_to(len))
    }

    /// Everything left, e.g. a PUBLISH payload.
    pub fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Fails if the packet has bytes its contents did not account for.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.buf.len() {
            0 => Ok(()),
            left => Err(DecodeError::TrailingBytes(left)),
        }
    }

    fn need(&self, len: usize) -> Result<(), DecodeError> {
        if self.buf.len() < len {
            Err(DecodeError::UnexpectedEnd)
        } else {
            Ok(())
        }
    }
}

/// Checks MQTT's string rules and wraps the bytes without copying them. The UTF-8 check runs
/// once, inside the conversion; U+0000 is then looked for as a byte, which is exact in UTF-8.
pub fn to_mqtt_string(raw: Bytes) -> Result<ByteString, DecodeError> {
    let string = ByteString::try_from(raw).map_err(|_| DecodeError::InvalidUtf8)?;
    if string.as_bytes().contains(&0) {
        return Err(DecodeError::NullCharacter);
    }
    Ok(string)
}

/// Decodes a variable byte integer from the front of `buf`: `Ok(None)` when more bytes are
/// needed, the value and its encoded length otherwise.
pub fn decode_variable_int(buf: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for (index, byte) in buf.iter().take(4).enumerate() {
        value |= u32::from(byte & 0x7F) << (7 * index);
        if byte & 0x80 == 0 {
            return Ok(Some((value, index + 1)));
        }
    }
    if buf.len() >= 4 {
        Err(DecodeError::MalformedVariableByteInteger)
    } else {
        Ok(None)
    }
}

/// Bytes a variable byte integer takes on the wire.
pub fn variable_int_len(value: u32) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes a variable byte integer. Callers keep `value` within [`MAX_VARIABLE_BYTE_INTEGER`].
pub fn put_variable_int(out: &mut impl BufMut, mut value: u32) {
    debug_assert!(value <= MAX_VARIABLE_BYTE_INTEGER);
    loop {
        let byte = (value & 0x7F) as u8;
        value >>= 7;
        if value == 0 {
            out.put_u8(byte);
            return;
        }
        out.put_u8(byte | 0x80);
    }
}

/// Wire length of a string or binary field (two-byte length prefix plus data).
pub fn binary_len(data: &[u8]) -> usize {
    2 + data.len()
}

/// Writes a two-byte length and the data. The length must have been checked with
/// [`check_field_len`] while sizing the packet.
pub fn put_binary(out: &mut impl BufMut, data: &[u8]) {
    debug_assert!(data.len() <= u16::MAX as usize);
    out.put_u16(data.len() as u16);
    out.put_slice(data);
}

/// Fails when `data` cannot be length-prefixed with two bytes.
pub fn check_field_len(field: &'static str, data: &[u8]) -> Result<(), EncodeError> {
    if data.len() > u16::MAX as usize {
        Err(EncodeError::FieldTooLong {
            field,
            len: data.len(),
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_int_examples_from_the_spec() {
        // §1.5.5 table: boundaries of each encoded length.
        let cases: &[(u32, &[u8])] = &[
            (0, &[0x00]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ];
        for &(value, bytes) in cases {
            let mut out = Vec::new();
            put_variable_int(&mut out, value);
            assert_eq!(out, bytes, "encoding {value}");
            assert_eq!(variable_int_len(value), bytes.len());
            assert_eq!(
                decode_variable_int(bytes).unwrap(),
                Some((value, bytes.len()))
            );
        }
    }

    #[test]
    fn variable_int_rejects_a_fifth_byte_and_waits_for_a_short_one() {
        assert_eq!(
            decode_variable_int(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
            Err(DecodeError::MalformedVariableByteInteger)
        );
        assert_eq!(decode_variable_int(&[0xFF, 0xFF]), Ok(None));
        assert_eq!(decode_variable_int(&[]), Ok(None));
    }

    #[test]
    fn strings_reject_bad_utf8_and_nul_and_short_lengths() {
        let mut r = Reader::new(Bytes::from_static(&[0, 2, 0xC3, 0x28]));
        assert_eq!(r.string(), Err(DecodeError::InvalidUtf8));
        let mut r = Reader::new(Bytes::from_static(&[0, 3, b'a', 0, b'b']));
        assert_eq!(r.string(), Err(DecodeError::NullCharacter));
        let mut r = Reader::new(Bytes::from_static(&[0, 9, b'a']));
        assert_eq!(r.string(), Err(DecodeError::UnexpectedEnd));
        let mut r = Reader::new(Bytes::from_static(&[0, 3, b'a', b'/', b'b', 7]));
        assert_eq!(&*r.string().unwrap(), "a/b");
        assert_eq!(r.finish(), Err(DecodeError::TrailingBytes(1)));
    }

    #[test]
    fn strings_share_the_packet_buffer() {
        let packet = Bytes::from_static(&[0, 3, b'a', b'/', b'b']);
        let base = packet.as_ptr();
        let mut r = Reader::new(packet);
        let s = r.string().unwrap();
        assert_eq!(s.as_bytes().as_ptr(), base.wrapping_add(2));
    }
}
