//! PUBACK, PUBREC, PUBREL and PUBCOMP (§3.4–§3.7): four packets with one layout, a packet
//! identifier followed in v5 by an optional reason code and optional properties, so they share
//! one type and the [`PacketType`] says which is meant.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::error::{DecodeError, EncodeError};
use crate::protocol::fixed_header::put_fixed_header;
use crate::protocol::packet_type::PacketType;
use crate::protocol::properties::AckProperties;
use crate::protocol::reason::{ReasonCode, ReasonCodeCarrier};
use crate::protocol::wire::{self, Reader};
use crate::protocol::ProtocolVersion;

/// The body of PUBACK, PUBREC, PUBREL or PUBCOMP.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ack {
    pub packet_id: u16,
    /// Always success in 3.x, which has no reason codes.
    pub reason_code: ReasonCode,
    pub properties: AckProperties,
}

impl Ack {
    /// A plain successful acknowledgement of `packet_id`.
    pub fn new(packet_id: u16) -> Ack {
        Ack {
            packet_id,
            ..Ack::default()
        }
    }

    pub fn with_reason(packet_id: u16, reason_code: ReasonCode) -> Ack {
        Ack {
            packet_id,
            reason_code,
            ..Ack::default()
        }
    }

    pub fn decode(
        packet_type: PacketType,
        body: Bytes,
        version: ProtocolVersion,
    ) -> Result<Ack, DecodeError> {
        let mut r = Reader::new(body);
        let packet_id = read_packet_id(&mut r)?;
        let mut ack = Ack::new(packet_id);
        // §3.4.2.1: with a remaining length of 2 the reason is Success and there are no
        // properties; with 3 there is a reason code but no properties.
        if version.is_v5() && !r.is_empty() {
            let code = ReasonCode(r.u8()?);
            if !code.is_valid_for(carrier(packet_type)) {
                return Err(DecodeError::InvalidReasonCode {
                    code: code.0,
                    packet: packet_type,
                });
            }
            ack.reason_code = code;
            if !r.is_empty() {
                ack.properties = AckProperties::decode(&mut r)?;
            }
        }
        r.finish()?;
        Ok(ack)
    }

    /// Uses the shortest form the spec allows: a success without properties is 2 bytes.
    pub fn encode(
        &self,
        packet_type: PacketType,
        version: ProtocolVersion,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        if self.packet_id == 0 {
            return Err(EncodeError::ZeroPacketId(packet_type));
        }
        let flags = if packet_type == PacketType::PubRel {
            0b0010
        } else {
            0
        };
        let props_len = if version.is_v5() {
            self.properties.body_len()?
        } else {
            0
        };
        let len = match (version.is_v5(), self.reason_code, props_len) {
            (false, _, _) | (true, ReasonCode::SUCCESS, 0) => 2,
            (true, _, 0) => 3,
            (true, _, props) => 3 + wire::variable_int_len(props as u32) + props,
        };
        put_fixed_header(out, packet_type, flags, len)?;
        out.put_u16(self.packet_id);
        if len > 2 {
            out.put_u8(self.reason_code.0);
        }
        if len > 3 {
            self.properties.write(props_len, out);
        }
        Ok(())
    }
}

/// Reads a packet identifier that must not be 0 (MQTT-2.2.1-3 and the acknowledgements that echo
/// it).
pub(crate) fn read_packet_id(r: &mut Reader) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::ZeroPacketId),
        id => Ok(id),
    }
}

fn carrier(packet_type: PacketType) -> ReasonCodeCarrier {
    match packet_type {
        PacketType::PubAck => ReasonCodeCarrier::PubAck,
        PacketType::PubRec => ReasonCodeCarrier::PubRec,
        PacketType::PubRel => ReasonCodeCarrier::PubRel,
        _ => ReasonCodeCarrier::PubComp,
    }
}
