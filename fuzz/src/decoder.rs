//! The decoder fuzz oracle. The cargo-fuzz target `decoder` calls [`decode_stream`], and the root
//! crate's `tests/fuzz_seeds.rs` includes this file as a module to run the committed seeds
//! through the very same checks on stable. It must therefore depend on nothing but
//! `mqtt_broker` and `bytes`, and have no inner attributes.
//!
//! Input layout (also the format of the files in `fuzz/seeds/decoder/`):
//!
//! | bytes          | meaning                                                                   |
//! |----------------|---------------------------------------------------------------------------|
//! | `[0]` bits 0-1 | decoder: 0 server (version set by CONNECT), 1 client 3.1, 2 client 3.1.1, 3 client 5.0 |
//! | `[0]` bits 2-7 | maximum packet size: 0 is MQTT's maximum, `n` is `16 * n` bytes           |
//! | `[1]`          | `k`, the number of chunk-size bytes, taken modulo 16                      |
//! | next `k` bytes | chunk sizes, used in turn and cycled; 0 means "everything left"           |
//! | the rest       | the bytes the peer sends                                                  |
//!
//! Checks, besides "never panics":
//! - after every chunk the decoder is drained until `Ok(None)` or an error, and `Ok(None)` comes
//!   with a `bytes_needed` of at least 1;
//! - feeding the stream in chunks gives the same packets, the same error and the same leftover
//!   bytes as feeding it in one piece;
//! - every decoded packet encodes for the connection's version, and a decoder in the state it had
//!   just before that packet decodes the encoding to an equal packet, consuming all of it;
//! - for PUBLISH, `encoded_len` is the length actually written.

use bytes::BytesMut;
use mqtt_broker::protocol::decoder::MAX_PACKET_SIZE;
use mqtt_broker::protocol::{DecodeError, Decoder, Packet, ProtocolVersion};

/// What decoding a whole input produced.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub packets: Vec<Packet>,
    /// The error that ended the stream, if one did.
    pub error: Option<DecodeError>,
    /// Bytes still buffered when the input ran out (0 after an error).
    pub leftover: usize,
}

/// Runs one fuzz input through every check above; panics on a violation.
pub fn decode_stream(data: &[u8]) -> Outcome {
    let (decoder, chunk_sizes, stream) = split_input(data);
    let chunked = feed(decoder.clone(), stream, chunk_sizes);
    let whole = feed(decoder, stream, &[]);
    assert_eq!(chunked, whole, "chunking changed the outcome");
    chunked
}

fn split_input(data: &[u8]) -> (Decoder, &[u8], &[u8]) {
    let mode = data.first().copied().unwrap_or(0);
    let max_packet_size = match usize::from(mode >> 2) {
        0 => MAX_PACKET_SIZE,
        n => 16 * n,
    };
    let decoder = match mode & 0b11 {
        0 => Decoder::server(max_packet_size),
        1 => Decoder::client(ProtocolVersion::V3_1, max_packet_size),
        2 => Decoder::client(ProtocolVersion::V3_1_1, max_packet_size),
        _ => Decoder::client(ProtocolVersion::V5, max_packet_size),
    };
    let rest = data.get(1..).unwrap_or(&[]);
    let k = (rest.first().copied().unwrap_or(0) % 16) as usize;
    let rest = rest.get(1..).unwrap_or(&[]);
    let (chunk_sizes, stream) = rest.split_at(k.min(rest.len()));
    (decoder, chunk_sizes, stream)
}

/// Feeds `stream` to `decoder` in chunks of `chunk_sizes` (all at once when empty), draining the
/// decoder after each chunk.
fn feed(mut decoder: Decoder, mut stream: &[u8], chunk_sizes: &[u8]) -> Outcome {
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    let mut sizes = chunk_sizes.iter().cycle();
    while !stream.is_empty() {
        let size = match sizes.next() {
            Some(&size) if size > 0 => usize::from(size).min(stream.len()),
            _ => stream.len(),
        };
        let (chunk, rest) = stream.split_at(size);
        stream = rest;
        buf.extend_from_slice(chunk);
        loop {
            let before = decoder.clone();
            match decoder.decode(&mut buf) {
                Ok(Some(packet)) => {
                    round_trip(before, &decoder, &packet);
                    packets.push(packet);
                }
                Ok(None) => {
                    let needed = decoder.bytes_needed(&buf);
                    assert!(
                        matches!(needed, Ok(n) if n >= 1),
                        "decode wants more bytes but bytes_needed says {needed:?}"
                    );
                    break;
                }
                Err(error) => {
                    return Outcome {
                        packets,
                        error: Some(error),
                        leftover: 0,
                    }
                }
            }
        }
    }
    Outcome {
        packets,
        error: None,
        leftover: buf.len(),
    }
}

/// `before` is the decoder as it was before it decoded `packet`, `after` as it is now.
fn round_trip(mut before: Decoder, after: &Decoder, packet: &Packet) {
    let version = after
        .version()
        .expect("a packet was decoded, so the version is known");
    let mut encoded = BytesMut::new();
    if let Err(error) = packet.encode(version, &mut encoded) {
        panic!("decoded packet does not encode for {version:?}: {error}\n{packet:?}");
    }
    if let Packet::Publish(publish) = packet {
        assert_eq!(
            publish.encoded_len(version),
            Ok(encoded.len()),
            "PUBLISH encoded_len disagrees with encode"
        );
    }
    let again = before.decode(&mut encoded);
    assert_eq!(
        again.as_ref(),
        Ok(&Some(packet.clone())),
        "round trip through {version:?} changed the packet"
    );
    assert!(
        encoded.is_empty(),
        "encoding has {} extra bytes",
        encoded.len()
    );
}
