//! The streaming decoder: turns a receive buffer that grows by arbitrary chunks into whole
//! packets.
//!
//! It makes no assumption about how bytes arrive: a read may hold several packets, part of one,
//! or the middle of a payload far larger than the read buffer. [`Decoder::decode`] takes a packet
//! off the front of the buffer only once all of it is there, and otherwise leaves the buffer
//! untouched and says how many bytes are still missing ([`Decoder::bytes_needed`]), so the
//! caller can grow its buffer in steps instead of trusting a length the peer claimed.
//!
//! A PUBLISH is split off the buffer and frozen, so its topic and payload point into the bytes
//! that were read, with no copy. The packets whose contents a session keeps (CONNECT,
//! SUBSCRIBE, UNSUBSCRIBE, AUTH) are copied out instead, so that a session never pins a
//! receive buffer.

use bytes::{Buf, Bytes, BytesMut};

use super::error::DecodeError;
use super::fixed_header::FixedHeader;
use super::packet::Packet;
use super::packet_type::PacketType;
use super::wire::MAX_VARIABLE_BYTE_INTEGER;
use super::ProtocolVersion;

/// The largest packet MQTT can express: 268435455 bytes of body plus a 5-byte fixed header.
pub const MAX_PACKET_SIZE: usize = MAX_VARIABLE_BYTE_INTEGER as usize + 5;

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
        frame.advance(header.header_len);
        let body = match header.packet_type {
            // What these carry (client ids, wills, filters) lives as long as a session; a slice
            // would keep the whole receive buffer alive with it, so they get their own copy.
            PacketType::Connect
            | PacketType::Subscribe
            | PacketType::Unsubscribe
            | PacketType::Auth => Bytes::copy_from_slice(&frame),
            _ => frame.freeze(),
        };
        let packet = Packet::decode(&header, body, version)?;
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

/// Makes room in `buf` for a receive loop's next read of up to `read_size` bytes, once less than
/// a quarter of that is left. Call it after decoding, so a packet over the size limit was
/// already refused.
///
/// While a packet larger than a read arrives, the buffer grows by what has arrived so far, so a
/// peer that claims a huge length but sends little gets little room, and never past the
/// packet's end: left to `BytesMut`'s doubling, a 64 MiB PUBLISH would sit in 128 MiB until its
/// payload has been delivered.
pub fn reserve_for_read(buf: &mut BytesMut, read_size: usize) {
    if let Some(growth) = large_packet_growth(buf, read_size) {
        // `reserve_exact` on the vector underneath, as `BytesMut::reserve` rounds up to a
        // doubling. Back through `Bytes`, which keeps the vector's spare capacity, so nothing
        // is copied.
        let mut vec = Vec::from(std::mem::take(buf));
        vec.reserve_exact(growth);
        *buf = BytesMut::from(Bytes::from(vec));
    } else if needs_room(buf, read_size) {
        buf.reserve(read_size);
    }
}

fn needs_room(buf: &BytesMut, read_size: usize) -> bool {
    buf.capacity() - buf.len() < read_size / 4
}

/// The bytes `reserve_for_read` is about to add to `buf` for a packet larger than a read (what
/// the runtime weighs against its memory budget first), or `None` when it adds at most one
/// read's worth.
pub fn large_packet_growth(buf: &BytesMut, read_size: usize) -> Option<usize> {
    if !needs_room(buf, read_size) {
        return None;
    }
    let packet_len = match FixedHeader::parse(buf) {
        Ok(Some(header)) => header.packet_len(),
        _ => 0,
    };
    let missing = packet_len.saturating_sub(buf.len());
    if packet_len <= read_size || missing == 0 {
        return None;
    }
    Some(missing.min(buf.len().max(read_size)))
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU16;

    use bytes::{Bytes, BytesMut};
    use bytestring::ByteString;

    use super::*;
    use crate::protocol::properties::{AckProperties, PublishProperties};
    use crate::protocol::reason::ReasonCode;
    use crate::protocol::{Ack, Disconnect, Publish, QoS, SubAck};

    /// A v5 CONNECT with client id "c" and no properties (5.0 §3.1).
    const CONNECT_V5: &[u8] = &[
        0x10, 14, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C, 0x00, 0x00, 0x01,
        b'c',
    ];
    /// The same in 3.1.1 (3.1.1 §3.1).
    const CONNECT_V311: &[u8] = &[
        0x10, 13, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x01, b'c',
    ];

    fn encode(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
        let mut out = BytesMut::new();
        packet.encode(version, &mut out).unwrap();
        out.to_vec()
    }

    /// Decodes everything in `buf`, failing on an error or a partial packet at the end.
    fn decode_all(decoder: &mut Decoder, buf: &mut BytesMut) -> Vec<Packet> {
        let mut packets = Vec::new();
        while let Some(packet) = decoder.decode(buf).unwrap() {
            packets.push(packet);
        }
        assert!(
            buf.is_empty(),
            "{} bytes of a partial packet left",
            buf.len()
        );
        packets
    }

    #[test]
    fn several_packets_in_one_buffer() {
        let bytes: &[u8] = &[
            0x20, 0x02, 0x01, 0x00, // CONNACK, session present
            0x32, 0x08, 0x00, 0x01, b't', 0x00, 0x05, b'a', b'b', b'c', // PUBLISH QoS 1 id 5
            0x62, 0x02, 0x00, 0x05, // PUBREL 5
            0xD0, 0x00, // PINGRESP
            0x90, 0x03, 0x00, 0x06, 0x80, // SUBACK 6: failure
        ];
        let mut decoder = Decoder::client(ProtocolVersion::V3_1_1, MAX_PACKET_SIZE);
        let mut buf = BytesMut::from(bytes);
        let packets = decode_all(&mut decoder, &mut buf);
        assert_eq!(
            packets,
            vec![
                Packet::ConnAck(Box::new(crate::protocol::ConnAck {
                    session_present: true,
                    ..Default::default()
                })),
                Packet::Publish(Publish {
                    qos: QoS::AtLeastOnce,
                    topic: ByteString::from_static("t"),
                    packet_id: 5,
                    payload: Bytes::from_static(b"abc"),
                    ..Publish::default()
                }),
                Packet::PubRel(Ack::new(5)),
                Packet::PingResp,
                Packet::SubAck(SubAck {
                    packet_id: 6,
                    reason_codes: vec![ReasonCode::UNSPECIFIED_ERROR],
                    properties: AckProperties::default(),
                }),
            ]
        );
        assert_eq!(decoder.bytes_needed(&buf), Ok(2));
    }

    #[test]
    fn packet_split_at_every_byte_boundary() {
        // A PUBLISH whose remaining length takes two bytes, so the split also falls inside it.
        let publish = Packet::Publish(Publish {
            qos: QoS::ExactlyOnce,
            topic: ByteString::from_static("a/b"),
            packet_id: 0x0102,
            properties: PublishProperties {
                topic_alias: NonZeroU16::new(3),
                user_properties: vec![("k".into(), "v".into())],
                ..Default::default()
            }
            .into(),
            payload: Bytes::from(vec![0xA5; 200]),
            ..Publish::default()
        });
        let publish_bytes = encode(&publish, ProtocolVersion::V5);
        assert_eq!(publish_bytes[1] & 0x80, 0x80, "two-byte remaining length");
        let cases: [(&[u8], Option<ProtocolVersion>); 2] = [
            (CONNECT_V5, None),
            (&publish_bytes, Some(ProtocolVersion::V5)),
        ];
        for (bytes, version) in cases {
            let new_decoder = || match version {
                Some(version) => Decoder::client(version, MAX_PACKET_SIZE),
                None => Decoder::server(MAX_PACKET_SIZE),
            };
            let expected = new_decoder()
                .decode(&mut BytesMut::from(bytes))
                .unwrap()
                .unwrap();
            let header_len = FixedHeader::parse(bytes).unwrap().unwrap().header_len;
            for split in 0..bytes.len() {
                let mut decoder = new_decoder();
                let mut buf = BytesMut::from(&bytes[..split]);
                assert_eq!(decoder.decode(&mut buf), Ok(None), "split at {split}");
                assert_eq!(&buf[..], &bytes[..split], "buffer untouched");
                let needed = decoder.bytes_needed(&buf).unwrap();
                if split >= header_len {
                    assert_eq!(needed, bytes.len() - split, "split at {split}");
                } else {
                    assert!(
                        needed >= 1 && needed <= bytes.len() - split,
                        "split at {split}"
                    );
                }
                buf.extend_from_slice(&bytes[split..]);
                assert_eq!(decoder.bytes_needed(&buf), Ok(0));
                assert_eq!(decoder.decode(&mut buf), Ok(Some(expected.clone())));
                assert!(buf.is_empty());
            }
        }
    }

    #[test]
    fn megabyte_payload_in_8k_chunks() {
        const CHUNK: usize = 8 * 1024;
        let payload: Bytes = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
        let publish = Publish {
            qos: QoS::AtLeastOnce,
            topic: ByteString::from_static("big"),
            packet_id: 9,
            payload: payload.clone(),
            ..Publish::default()
        };
        let bytes = encode(&Packet::Publish(publish.clone()), ProtocolVersion::V3_1_1);
        // 2 + 3 topic bytes, 2 packet id bytes and the payload, behind a 4-byte fixed header.
        assert_eq!(bytes.len(), 4 + 5 + 2 + payload.len());

        let mut decoder = Decoder::client(ProtocolVersion::V3_1_1, 2 * 1024 * 1024);
        let mut buf = BytesMut::new();
        assert_eq!(decoder.bytes_needed(&buf), Ok(2));
        let mut chunks = bytes.chunks(CHUNK).peekable();
        let mut fed = 0;
        let decoded = loop {
            let chunk = chunks.next().expect("decoded before the data ran out");
            buf.extend_from_slice(chunk);
            fed += chunk.len();
            match decoder.decode(&mut buf).unwrap() {
                Some(packet) => break packet,
                None => {
                    assert_eq!(buf.len(), fed);
                    assert_eq!(decoder.bytes_needed(&buf), Ok(bytes.len() - fed));
                }
            }
        };
        assert!(
            chunks.peek().is_none(),
            "decoded only once everything arrived"
        );
        assert_eq!(fed, bytes.len());
        assert_eq!(decoded, Packet::Publish(publish));
        assert!(buf.is_empty());
        assert_eq!(decoder.bytes_needed(&buf), Ok(2));
    }

    #[test]
    fn huge_header_is_rejected_after_five_bytes_without_allocating() {
        // A fixed header claiming 268435455 bytes (256 MiB) of body.
        let header = [0x30, 0xFF, 0xFF, 0xFF, 0x7F];
        let mut decoder = Decoder::server(1024);
        let mut buf = BytesMut::with_capacity(64);
        let capacity = buf.capacity();
        for (index, &byte) in header.iter().enumerate() {
            buf.extend_from_slice(&[byte]);
            let result = decoder.decode(&mut buf);
            if index < 4 {
                assert_eq!(result, Ok(None), "after {} bytes", index + 1);
                assert_eq!(decoder.bytes_needed(&buf), Ok(1));
            } else {
                let expected = DecodeError::PacketTooLarge {
                    size: 268_435_455 + 5,
                    max: 1024,
                };
                assert_eq!(result, Err(expected.clone()));
                assert_eq!(decoder.bytes_needed(&buf), Err(expected));
            }
        }
        // Nothing was consumed, reserved or reallocated on the peer's say-so.
        assert_eq!(&buf[..], &header);
        assert_eq!(buf.capacity(), capacity);
    }

    #[test]
    fn size_limit_is_inclusive_and_can_be_raised() {
        // PUBLISH "a/b" with payload "hi": 9 bytes on the wire.
        let bytes: &[u8] = &[0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'];
        let mut decoder = Decoder::client(ProtocolVersion::V3_1_1, 8);
        let mut buf = BytesMut::from(bytes);
        assert_eq!(
            decoder.decode(&mut buf),
            Err(DecodeError::PacketTooLarge { size: 9, max: 8 })
        );
        assert_eq!(buf.len(), 9);
        decoder.set_max_packet_size(9);
        assert_eq!(decoder.max_packet_size(), 9);
        assert!(matches!(
            decoder.decode(&mut buf),
            Ok(Some(Packet::Publish(_)))
        ));
    }

    #[test]
    fn publish_payload_points_into_the_read_buffer() {
        let bytes: &[u8] = &[
            0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i', // PUBLISH a/b "hi"
            0x30, 0x06, 0x00, 0x01, b'c', b'x', b'y', b'z', // PUBLISH c "xyz"
        ];
        let mut buf = BytesMut::from(bytes);
        let base = buf.as_ptr();
        let mut decoder = Decoder::client(ProtocolVersion::V3_1_1, MAX_PACKET_SIZE);
        let packets = decode_all(&mut decoder, &mut buf);
        let [Packet::Publish(first), Packet::Publish(second)] = &packets[..] else {
            panic!("expected two PUBLISH packets, got {packets:?}");
        };
        assert_eq!(first.topic.as_bytes().as_ptr(), base.wrapping_add(4));
        assert_eq!(first.payload.as_ptr(), base.wrapping_add(7));
        assert_eq!(&first.payload[..], b"hi");
        assert_eq!(second.topic.as_bytes().as_ptr(), base.wrapping_add(13));
        assert_eq!(second.payload.as_ptr(), base.wrapping_add(14));
        assert_eq!(&second.payload[..], b"xyz");
    }

    #[test]
    fn server_decoder_learns_the_version_from_connect() {
        let mut decoder = Decoder::server(MAX_PACKET_SIZE);
        assert_eq!(decoder.version(), None);
        let mut buf = BytesMut::from(CONNECT_V5);
        // 5.0 PUBLISH with topic alias 1 and a user property, QoS 1 id 2.
        buf.extend_from_slice(&[
            0x32, 17, 0x00, 0x01, b't', 0x00, 0x02, 10, 0x23, 0x00, 0x01, 0x26, 0x00, 0x01, b'k',
            0x00, 0x01, b'v', b'p',
        ]);
        // 5.0 PUBACK 2 with reason 0x10 and reason string "r".
        buf.extend_from_slice(&[0x40, 0x08, 0x00, 0x02, 0x10, 0x04, 0x1F, 0x00, 0x01, b'r']);
        // 5.0 DISCONNECT with will message.
        buf.extend_from_slice(&[0xE0, 0x01, 0x04]);
        let packets = decode_all(&mut decoder, &mut buf);
        assert_eq!(decoder.version(), Some(ProtocolVersion::V5));
        assert_eq!(packets.len(), 4);
        let Packet::Connect(connect) = &packets[0] else {
            panic!("expected CONNECT, got {:?}", packets[0]);
        };
        assert_eq!(connect.protocol, ProtocolVersion::V5);
        assert_eq!(&*connect.client_id, "c");
        assert_eq!(
            packets[1],
            Packet::Publish(Publish {
                qos: QoS::AtLeastOnce,
                topic: ByteString::from_static("t"),
                packet_id: 2,
                properties: PublishProperties {
                    topic_alias: NonZeroU16::new(1),
                    user_properties: vec![("k".into(), "v".into())],
                    ..Default::default()
                }
                .into(),
                payload: Bytes::from_static(b"p"),
                ..Publish::default()
            })
        );
        assert_eq!(
            packets[2],
            Packet::PubAck(Ack {
                packet_id: 2,
                reason_code: ReasonCode::NO_MATCHING_SUBSCRIBERS,
                properties: AckProperties {
                    reason_string: Some("r".into()),
                    user_properties: vec![],
                },
            })
        );
        assert_eq!(
            packets[3],
            Packet::Disconnect(Box::new(Disconnect::with_reason(
                ReasonCode::DISCONNECT_WITH_WILL_MESSAGE
            )))
        );
        // A later CONNECT (a protocol error the broker handles) does not change the version.
        buf.extend_from_slice(CONNECT_V311);
        assert!(matches!(
            decoder.decode(&mut buf),
            Ok(Some(Packet::Connect(_)))
        ));
        assert_eq!(decoder.version(), Some(ProtocolVersion::V5));
    }

    #[test]
    fn server_decoder_reads_later_packets_in_the_connect_version() {
        // The same PUBLISH bytes mean different things in 3.1.1 and 5.0: in 3.1.1 the 0x00 after
        // the topic is payload, in 5.0 it is an empty property block.
        let publish: &[u8] = &[0x30, 0x06, 0x00, 0x01, b't', 0x00, b'h', b'i'];
        for (connect, payload) in [(CONNECT_V311, &b"\0hi"[..]), (CONNECT_V5, b"hi")] {
            let mut decoder = Decoder::server(MAX_PACKET_SIZE);
            let mut buf = BytesMut::from(connect);
            buf.extend_from_slice(publish);
            let packets = decode_all(&mut decoder, &mut buf);
            let Packet::Publish(decoded) = &packets[1] else {
                panic!("expected PUBLISH, got {:?}", packets[1]);
            };
            assert_eq!(&decoded.payload[..], payload);
        }
        // AUTH is a 5.0 packet: after a 3.1.1 CONNECT it is refused.
        let mut decoder = Decoder::server(MAX_PACKET_SIZE);
        let mut buf = BytesMut::from(CONNECT_V311);
        buf.extend_from_slice(&[0xF0, 0x00]);
        assert!(matches!(
            decoder.decode(&mut buf),
            Ok(Some(Packet::Connect(_)))
        ));
        assert_eq!(decoder.version(), Some(ProtocolVersion::V3_1_1));
        assert_eq!(
            decoder.decode(&mut buf),
            Err(DecodeError::PacketNotInVersion(PacketType::Auth))
        );
        // A 3.1 CONNECT fixes 3.1.
        let mut decoder = Decoder::server(MAX_PACKET_SIZE);
        let mut buf = BytesMut::from(
            &[
                0x10, 15, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02, 0x00, 0x3C,
                0x00, 0x01, b'c',
            ][..],
        );
        assert!(matches!(
            decoder.decode(&mut buf),
            Ok(Some(Packet::Connect(_)))
        ));
        assert_eq!(decoder.version(), Some(ProtocolVersion::V3_1));
    }

    #[test]
    fn a_failed_connect_does_not_fix_the_version() {
        let mut decoder = Decoder::server(MAX_PACKET_SIZE);
        // Protocol level 6.
        let mut buf = BytesMut::from(
            &[
                0x10, 12, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06, 0x02, 0x00, 0x3C, 0x00, 0x00,
            ][..],
        );
        assert_eq!(
            decoder.decode(&mut buf),
            Err(DecodeError::UnsupportedProtocolLevel(6))
        );
        assert_eq!(decoder.version(), None);
    }

    #[test]
    fn bytes_needed_before_the_length_is_known() {
        let decoder = Decoder::client(ProtocolVersion::V5, MAX_PACKET_SIZE);
        assert_eq!(decoder.bytes_needed(&[]), Ok(2));
        assert_eq!(decoder.bytes_needed(&[0x30]), Ok(1));
        assert_eq!(decoder.bytes_needed(&[0x30, 0x80]), Ok(1));
        assert_eq!(decoder.bytes_needed(&[0x30, 0x80, 0x01]), Ok(128));
        assert_eq!(
            decoder.bytes_needed(&[0x00]),
            Err(DecodeError::ReservedPacketType(0))
        );
    }

    #[test]
    fn room_for_a_large_packet_grows_with_what_arrived_and_ends_at_its_end() {
        const READ: usize = 8 * 1024;
        let publish = Packet::Publish(Publish {
            topic: ByteString::from_static("big"),
            payload: Bytes::from(vec![7; 3 * 1024 * 1024]),
            ..Publish::default()
        });
        let bytes = encode(&publish, ProtocolVersion::V3_1_1);
        let mut decoder = Decoder::client(ProtocolVersion::V3_1_1, MAX_PACKET_SIZE);
        let mut buf = BytesMut::with_capacity(READ);
        let mut fed = 0;
        let decoded = loop {
            reserve_for_read(&mut buf, READ);
            let room = buf.capacity() - buf.len();
            assert!(room >= (READ / 4).min(bytes.len() - fed), "room for a read");
            assert!(
                buf.capacity() <= (2 * fed).max(READ) + READ,
                "{} bytes of room for {fed} bytes received",
                buf.capacity()
            );
            // A read takes what fits, as a socket read would.
            let read = (buf.capacity() - buf.len())
                .min(READ)
                .min(bytes.len() - fed);
            buf.extend_from_slice(&bytes[fed..fed + read]);
            fed += read;
            if let Some(packet) = decoder.decode(&mut buf).unwrap() {
                break packet;
            }
        };
        assert_eq!(decoded, publish);
        assert_eq!(fed, bytes.len());
        // What is left of the allocation behind the packet, which its payload keeps alive.
        assert!(buf.capacity() < READ, "{} bytes left over", buf.capacity());
    }

    #[test]
    fn room_for_small_packets_is_one_read() {
        let mut buf = BytesMut::from(&[0x30, 0x07, 0x00][..]);
        reserve_for_read(&mut buf, 1024);
        assert!(buf.capacity() - buf.len() >= 1024);
        let capacity = buf.capacity();
        reserve_for_read(&mut buf, 1024);
        assert_eq!(buf.capacity(), capacity, "enough room already");
    }
}
