//! SUBSCRIBE and SUBACK (§3.8, §3.9): a list of topic filters with their options, answered by a
//! list of per-filter outcomes in the same order.

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::ack::read_packet_id;
use crate::protocol::error::{DecodeError, EncodeError};
use crate::protocol::fixed_header::put_fixed_header;
use crate::protocol::packet_type::PacketType;
use crate::protocol::properties::{AckProperties, SubscribeProperties};
use crate::protocol::reason::{ReasonCode, ReasonCodeCarrier};
use crate::protocol::topic::{parse_filter, FilterKind};
use crate::protocol::wire::{self, Reader};
use crate::protocol::{ProtocolVersion, QoS};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscribe {
    pub packet_id: u16,
    /// Never empty: a SUBSCRIBE without filters is a protocol error.
    pub filters: Vec<(ByteString, SubscriptionOptions)>,
    pub properties: SubscribeProperties,
}

/// The options byte of each filter (§3.8.3.1). 3.x clients only set the QoS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    /// The maximum QoS the subscriber wants.
    pub qos: QoS,
    /// Do not send the subscriber its own publishes.
    pub no_local: bool,
    /// Keep the RETAIN flag of forwarded publishes instead of clearing it.
    pub retain_as_published: bool,
    pub retain_handling: RetainHandling,
}

/// When retained messages are sent on subscribe (§3.8.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum RetainHandling {
    #[default]
    SendOnSubscribe = 0,
    SendIfNewSubscription = 1,
    DoNotSend = 2,
}

impl SubscriptionOptions {
    fn decode(byte: u8, version: ProtocolVersion) -> Result<SubscriptionOptions, DecodeError> {
        let reserved = if version.is_v5() { 0xC0 } else { 0xFC };
        if byte & reserved != 0 {
            return Err(DecodeError::SubscriptionOptionsReservedBits);
        }
        Ok(SubscriptionOptions {
            // 3.1.1 §3.8.3.1 makes QoS 3 malformed, 5.0 §3.8.3.1 a protocol error.
            qos: QoS::from_u8(byte & 0x03).ok_or(if version.is_v5() {
                DecodeError::InvalidSubscriptionQoS
            } else {
                DecodeError::InvalidQoS
            })?,
            no_local: byte & 0x04 != 0,
            retain_as_published: byte & 0x08 != 0,
            retain_handling: match (byte >> 4) & 0x03 {
                0 => RetainHandling::SendOnSubscribe,
                1 => RetainHandling::SendIfNewSubscription,
                2 => RetainHandling::DoNotSend,
                _ => return Err(DecodeError::InvalidRetainHandling),
            },
        })
    }

    fn encode(&self, version: ProtocolVersion) -> u8 {
        let mut byte = self.qos as u8;
        if version.is_v5() {
            byte |= u8::from(self.no_local) << 2;
            byte |= u8::from(self.retain_as_published) << 3;
            byte |= (self.retain_handling as u8) << 4;
        }
        byte
    }
}

impl Subscribe {
    pub fn decode(body: Bytes, version: ProtocolVersion) -> Result<Subscribe, DecodeError> {
        let mut r = Reader::new(body);
        let packet_id = read_packet_id(&mut r)?;
        let properties = if version.is_v5() {
            SubscribeProperties::decode(&mut r)?
        } else {
            SubscribeProperties::default()
        };
        let mut filters = Vec::new();
        while !r.is_empty() {
            let filter = r.string()?;
            let options = SubscriptionOptions::decode(r.u8()?, version)?;
            let kind = parse_filter(&filter).map_err(DecodeError::TopicFilter)?;
            // MQTT-3.8.3-4: no-local on a shared subscription is a protocol error.
            if options.no_local && matches!(kind, FilterKind::Shared { .. }) {
                return Err(DecodeError::NoLocalOnSharedSubscription);
            }
            filters.push((filter, options));
        }
        if filters.is_empty() {
            return Err(DecodeError::NoTopicFilters(PacketType::Subscribe));
        }
        Ok(Subscribe {
            packet_id,
            filters,
            properties,
        })
    }

    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        if self.packet_id == 0 {
            return Err(EncodeError::ZeroPacketId(PacketType::Subscribe));
        }
        let props_len = if version.is_v5() {
            self.properties.body_len()?
        } else {
            0
        };
        let mut len = 2;
        if version.is_v5() {
            len += wire::variable_int_len(props_len as u32) + props_len;
        }
        for (filter, _) in &self.filters {
            wire::check_field_len("topic filter", filter.as_bytes())?;
            len += wire::binary_len(filter.as_bytes()) + 1;
        }
        out.reserve(5 + len);
        put_fixed_header(out, PacketType::Subscribe, 0b0010, len)?;
        out.put_u16(self.packet_id);
        if version.is_v5() {
            self.properties.write(props_len, out);
        }
        for (filter, options) in &self.filters {
            wire::put_binary(out, filter.as_bytes());
            out.put_u8(options.encode(version));
        }
        Ok(())
    }
}

/// SUBACK, and in v5 UNSUBACK too: a packet identifier, v5 properties and one code per filter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubAck {
    pub packet_id: u16,
    /// One per filter of the SUBSCRIBE, in order. In 3.x any failure is sent as 0x80.
    pub reason_codes: Vec<ReasonCode>,
    pub properties: AckProperties,
}

impl SubAck {
    pub fn decode(body: Bytes, version: ProtocolVersion) -> Result<SubAck, DecodeError> {
        decode_code_list(body, version, PacketType::SubAck)
    }

    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        encode_code_list(self, version, PacketType::SubAck, out)
    }
}

/// Decodes SUBACK or a v5 UNSUBACK: they differ only in which codes are valid.
pub(crate) fn decode_code_list(
    body: Bytes,
    version: ProtocolVersion,
    packet_type: PacketType,
) -> Result<SubAck, DecodeError> {
    let mut r = Reader::new(body);
    let packet_id = read_packet_id(&mut r)?;
    let properties = if version.is_v5() {
        AckProperties::decode(&mut r)?
    } else {
        AckProperties::default()
    };
    let carrier = if packet_type == PacketType::SubAck {
        ReasonCodeCarrier::SubAck
    } else {
        ReasonCodeCarrier::UnsubAck
    };
    let mut reason_codes = Vec::with_capacity(r.remaining());
    while !r.is_empty() {
        let code = ReasonCode(r.u8()?);
        let valid = match version {
            ProtocolVersion::V5 => code.is_valid_for(carrier),
            // 3.1.1 added 0x80 (failure); 3.1 only knew granted QoS values.
            ProtocolVersion::V3_1_1 => code.0 <= 2 || code == ReasonCode::UNSPECIFIED_ERROR,
            ProtocolVersion::V3_1 => code.0 <= 2,
        };
        if !valid {
            return Err(DecodeError::InvalidReasonCode {
                code: code.0,
                packet: packet_type,
            });
        }
        reason_codes.push(code);
    }
    if reason_codes.is_empty() {
        return Err(DecodeError::NoTopicFilters(packet_type));
    }
    Ok(SubAck {
        packet_id,
        reason_codes,
        properties,
    })
}

pub(crate) fn encode_code_list(
    ack: &SubAck,
    version: ProtocolVersion,
    packet_type: PacketType,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    if ack.packet_id == 0 {
        return Err(EncodeError::ZeroPacketId(packet_type));
    }
    let props_len = if version.is_v5() {
        ack.properties.body_len()?
    } else {
        0
    };
    let mut len = 2 + ack.reason_codes.len();
    if version.is_v5() {
        len += wire::variable_int_len(props_len as u32) + props_len;
    }
    out.reserve(5 + len);
    put_fixed_header(out, packet_type, 0, len)?;
    out.put_u16(ack.packet_id);
    if version.is_v5() {
        ack.properties.write(props_len, out);
    }
    for code in &ack.reason_codes {
        let byte = if version.is_v5() || !code.is_error() {
            code.0
        } else {
            ReasonCode::UNSPECIFIED_ERROR.0
        };
        out.put_u8(byte);
    }
    Ok(())
}
