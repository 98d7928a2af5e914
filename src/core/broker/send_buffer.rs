//! A connection's send buffer: packets waiting for the runtime to write them.
//!
//! Small packets are encoded back to back into one contiguous buffer; a large payload is kept as
//! its own `Bytes` chunk, shared with every other subscriber of the same message, so fan-out never
//! copies a payload per subscriber. The runtime takes everything with [`SendBuffer::take`] and
//! writes the chunks in order, one write each: the small packets produced in one loop turn share
//! a chunk and so leave in one send, and a shared payload costs one more write instead of a copy.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::protocol::{Packet, ProtocolVersion, Publish};

/// Payloads at least this large travel as their own chunk instead of being copied.
const SHARE_PAYLOAD_THRESHOLD: usize = 1024;

#[derive(Debug, Default)]
pub struct SendBuffer {
    /// Finished chunks in send order.
    chunks: VecDeque<Bytes>,
    /// The chunk being filled with small packets.
    current: BytesMut,
    /// Bytes in `chunks` and `current`.
    len: usize,
}

impl SendBuffer {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Encodes a control packet. Packets the broker builds itself always encode; a failure
    /// would be a bug, so it is reported to the caller rather than ignored.
    pub fn push_packet(
        &mut self,
        packet: &Packet,
        version: ProtocolVersion,
    ) -> Result<(), crate::protocol::EncodeError> {
        let before = self.current.len();
        let result = packet.encode(version, &mut self.current);
        if result.is_err() {
            self.current.truncate(before);
        }
        self.len += self.current.len() - before;
        result
    }

    /// Encodes a PUBLISH, sharing its payload when that saves a copy.
    pub fn push_publish(
        &mut self,
        publish: &Publish,
        version: ProtocolVersion,
    ) -> Result<(), crate::protocol::EncodeError> {
        let before = self.current.len();
        if let Err(error) = publish.encode_header(version, &mut self.current) {
            self.current.truncate(before);
            return Err(error);
        }
        self.len += self.current.len() - before;
        if publish.payload.len() >= SHARE_PAYLOAD_THRESHOLD {
            let header = self.current.split().freeze();
            self.chunks.push_back(header);
            self.chunks.push_back(publish.payload.clone());
        } else {
            self.current.extend_from_slice(&publish.payload);
        }
        self.len += publish.payload.len();
        Ok(())
    }

    /// Everything waiting, in send order: small packets coalesced, shared payloads apart.
    pub fn take(&mut self) -> Vec<Bytes> {
        if !self.current.is_empty() {
            // Taken whole, spare capacity included: an idle connection then holds no buffer.
            let tail = std::mem::take(&mut self.current).freeze();
            self.chunks.push_back(tail);
        }
        self.len = 0;
        self.chunks.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::QoS;

    #[test]
    fn small_packets_coalesce_and_large_payloads_are_shared() {
        let mut out = SendBuffer::default();
        out.push_packet(&Packet::PingResp, ProtocolVersion::V3_1_1)
            .unwrap();
        let big = Publish {
            topic: "t".into(),
            qos: QoS::AtMostOnce,
            payload: Bytes::from(vec![7u8; 4096]),
            ..Publish::default()
        };
        out.push_publish(&big, ProtocolVersion::V5).unwrap();
        let small = Publish {
            payload: Bytes::from_static(b"hi"),
            ..big.clone()
        };
        out.push_publish(&small, ProtocolVersion::V5).unwrap();
        let expected_len = 2
            + big.encoded_len(ProtocolVersion::V5).unwrap()
            + small.encoded_len(ProtocolVersion::V5).unwrap();
        assert_eq!(out.len(), expected_len);
        let chunks = out.take();
        assert_eq!(
            chunks.len(),
            3,
            "ping+header, shared payload, small publish"
        );
        assert_eq!(
            chunks[1].as_ptr(),
            big.payload.as_ptr(),
            "payload not copied"
        );
        assert_eq!(chunks.iter().map(Bytes::len).sum::<usize>(), expected_len);
        assert!(out.is_empty());
        assert!(out.take().is_empty());
    }
}
