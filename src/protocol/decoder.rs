//! The streaming decoder: turns a receive buffer that grows by arbitrary chunks into whole
//! packets.
//!
//! It makes no assumption about how bytes arrive: a read may hold several packets, part of one,
//! or the middle of a payload far larger than the read buffer. [`Decoder::decode`] takes a packet
//! off the front of the buffer only once all of it is there, and otherwise leaves the buffer
//! untouched and says how many bytes are still missing ([`Decoder::bytes_needed`]), so the
//! caller can grow its buffer in steps instead of trusting a length the peer claimed.
//!
//! The framed bytes are split off the buffer and frozen, so the decoded packet's topic and
//! payload point into the bytes that were read, with no copy.

use bytes::BytesMut;

use super::error::DecodeError;
use super::fixed_header::{FixedHeader, PacketType};
use super::packet::Packet;
use super::ProtocolVersion;

/// The largest packet MQTT can express: 268435455 bytes of body plus a 5-byte fixed header.
pub const MAX_PACKET_SIZE: usize = 268_435_455 + 5;

/// Per-connection decoding state: the protocol version, once known, and the size limit.
#[derive(Debug, Clone)]
pub struct Decoder {
    version: Option<ProtocolVersion>,
    max_packet_size: usize,
}

impl Decoder {
    /// A broker-side decoder: only CONNECT is accepted until it fixes the version.
    pub fn server(max_packet_size: usize) -> Decoder {
        Decoder {
            version: None,
            max_packet_size,
        }
    }

    /// A client-side decoder for a connection that sent CONNECT with `version`.
    pub fn client(version: ProtocolVersion, max_packet_size: usize) -> Decoder {
        Decoder {
            version: Some(version),
            max_packet_size,
        }
    }

    pub fn version(&self) -> Option<ProtocolVersion> {
        self.version
    }

    pub fn max_packet_size(&self) -> usize {
        self.max_packet_size
    }

    /// Changes the limit, e.g. from a small pre-CONNECT limit to the configured one.
    pub fn set_max_packet_size(&mut self, max_packet_size: usize) {
        self.max_packet_size = max_packet_size;
    }

    /// Takes one whole packet off the front of `buf`. `Ok(None)`: more bytes are needed and `buf`
    /// is unchanged. An error leaves the stream unusable; the connection must be closed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        let Some(header) = self.frame(buf)? else {
            return Ok(None);
        };
        let version = match (self.version, header.packet_type) {
            (Some(version), _) => version,
            // CONNECT carries its own version; it is read before `self.version` is set.
            (None, PacketType::Connect) => ProtocolVersion::V5,
            (None, other) => return Err(DecodeError::ExpectedConnect(other)),
        };
        let mut frame = buf.split_to(header.packet_len());
        let _ = frame.split_to(header.header_len);
        let packet = Packet::decode(&header, frame.freeze(), version)?;
        if let Packet::Connect(connect) = &packet {
            self.version.get_or_insert(connect.protocol);
        }
        Ok(Some(packet))
    }

    /// How many more bytes must arrive before [`Decoder::decode`] can make progress; 0 when a
    /// whole packet is buffered. Never more than the size limit allows.
    pub fn bytes_needed(&self, buf: &[u8]) -> Result<usize, DecodeError> {
        match self.header(buf)? {
            Some(header) => Ok(header.packet_len().saturating_sub(buf.len())),
            // At least the rest of a fixed header.
            None => Ok(2usize.saturating_sub(buf.len()).max(1)),
        }
    }

    /// The fixed header of the packet at the front of `buf` once all of it is buffered.
    fn frame(&self, buf: &[u8]) -> Result<Option<FixedHeader>, DecodeError> {
        Ok(self
            .header(buf)?
            .filter(|header| buf.len() >= header.packet_len()))
    }

    /// The fixed header at the front of `buf`, already checked against the size limit.
    fn header(&self, buf: &[u8]) -> Result<Option<FixedHeader>, DecodeError> {
        let Some(header) = FixedHeader::parse(buf)? else {
            return Ok(None);
        };
        if header.packet_len() > self.max_packet_size {
            return Err(DecodeError::PacketTooLarge {
                size: header.packet_len(),
                max: self.max_packet_size,
            });
        }
        Ok(Some(header))
    }
}
