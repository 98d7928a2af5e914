//! UNSUBSCRIBE and UNSUBACK (§3.10, §3.11). A v5 UNSUBACK has the layout of a SUBACK (one code
//! per filter) and reuses its code; a 3.x UNSUBACK is just the packet identifier.

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::ack::read_packet_id;
use super::subscribe::{decode_code_list, encode_code_list, SubAck};
use crate::protocol::error::{DecodeError, EncodeError};
use crate::protocol::fixed_header::put_fixed_header;
use crate::protocol::packet_type::PacketType;
use crate::protocol::properties::UnsubscribeProperties;
use crate::protocol::topic::validate_topic_filter;
use crate::protocol::wire::{self, Reader};
use crate::protocol::ProtocolVersion;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Unsubscribe {
    pub packet_id: u16,
    /// Never empty: an UNSUBSCRIBE without filters is a protocol error.
    pub filters: Vec<ByteString>,
    pub properties: UnsubscribeProperties,
}

impl Unsubscribe {
    pub fn decode(body: Bytes, version: ProtocolVersion) -> Result<Unsubscribe, DecodeError> {
        let mut r = Reader::new(body);
        let packet_id = read_packet_id(&mut r)?;
        let properties = if version.is_v5() {
            UnsubscribeProperties::decode(&mut r)?
        } else {
            UnsubscribeProperties::default()
        };
        let mut filters = Vec::new();
        while !r.is_empty() {
            let filter = r.string()?;
            validate_topic_filter(&filter).map_err(DecodeError::TopicFilter)?;
            filters.push(filter);
        }
        if filters.is_empty() {
            return Err(DecodeError::NoTopicFilters(PacketType::Unsubscribe));
        }
        Ok(Unsubscribe {
            packet_id,
            filters,
            properties,
        })
    }

    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        if self.packet_id == 0 {
            return Err(EncodeError::ZeroPacketId(PacketType::Unsubscribe));
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
        for filter in &self.filters {
            wire::check_field_len("topic filter", filter.as_bytes())?;
            len += wire::binary_len(filter.as_bytes());
        }
        out.reserve(5 + len);
        put_fixed_header(out, PacketType::Unsubscribe, 0b0010, len)?;
        out.put_u16(self.packet_id);
        if version.is_v5() {
            self.properties.write(props_len, out);
        }
        for filter in &self.filters {
            wire::put_binary(out, filter.as_bytes());
        }
        Ok(())
    }
}

/// UNSUBACK. In 3.x `reason_codes` and `properties` are not on the wire: decoding leaves them
/// empty and encoding ignores them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnsubAck(pub SubAck);

impl UnsubAck {
    pub fn decode(body: Bytes, version: ProtocolVersion) -> Result<UnsubAck, DecodeError> {
        if version.is_v5() {
            return decode_code_list(body, version, PacketType::UnsubAck).map(UnsubAck);
        }
        let mut r = Reader::new(body);
        let packet_id = read_packet_id(&mut r)?;
        r.finish()?;
        Ok(UnsubAck(SubAck {
            packet_id,
            ..SubAck::default()
        }))
    }

    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        if version.is_v5() {
            return encode_code_list(&self.0, version, PacketType::UnsubAck, out);
        }
        if self.0.packet_id == 0 {
            return Err(EncodeError::ZeroPacketId(PacketType::UnsubAck));
        }
        put_fixed_header(out, PacketType::UnsubAck, 0, 2)?;
        out.put_u16(self.0.packet_id);
        Ok(())
    }
}
