//! PUBLISH (§3.3): the one packet on the hot path, so it is built for sharing. The topic and
//! payload are slices of the receive buffer, and one decoded PUBLISH can be written to any number
//! of subscribers of any version with [`Publish::encode_header`]: only the fixed header, topic,
//! packet identifier and properties are written per subscriber, the payload `Bytes` is sent as is.

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use crate::protocol::error::{DecodeError, EncodeError};
use crate::protocol::fixed_header::{self, put_fixed_header, FixedHeader};
use crate::protocol::packet_type::PacketType;
use crate::protocol::properties::PublishPropertiesBox;
use crate::protocol::topic::validate_topic_name;
use crate::protocol::wire::{self, Reader};
use crate::protocol::{ProtocolVersion, QoS};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// Empty only in a v5 PUBLISH that names its topic by alias.
    pub topic: ByteString,
    /// 0 for QoS 0, which has no packet identifier; never 0 otherwise.
    pub packet_id: u16,
    /// Out of line and unallocated when empty; reads like a `PublishProperties` field (see
    /// [`PublishPropertiesBox`]). Build it from a `PublishProperties` with `.into()`.
    pub properties: PublishPropertiesBox,
    pub payload: Bytes,
}

mod flags {
    pub const DUP: u8 = 0x08;
    pub const QOS_SHIFT: u8 = 1;
    pub const QOS_MASK: u8 = 0x06;
    pub const RETAIN: u8 = 0x01;
}

impl Publish {
    /// A copy that shares no memory with the receive buffer it was decoded from, for a message
    /// kept long after it (a retained message): a slice of a few bytes would keep the whole
    /// buffer alive.
    pub fn detached(&self) -> Publish {
        Publish {
            dup: self.dup,
            qos: self.qos,
            retain: self.retain,
            topic: ByteString::from(&*self.topic),
            packet_id: self.packet_id,
            properties: self.properties.detached(),
            payload: Bytes::copy_from_slice(&self.payload),
        }
    }

    pub fn decode(
        header: &FixedHeader,
        body: Bytes,
        version: ProtocolVersion,
    ) -> Result<Publish, DecodeError> {
        let qos = QoS::from_u8((header.flags & flags::QOS_MASK) >> flags::QOS_SHIFT)
            .ok_or(DecodeError::InvalidQoS)?;
        let dup = header.flags & flags::DUP != 0;
        if dup && qos == QoS::AtMostOnce {
            return Err(DecodeError::DupOnQoS0);
        }
        let mut r = Reader::new(body);
        let topic = r.string()?;
        let packet_id = if qos == QoS::AtMostOnce {
            0
        } else {
            match r.u16()? {
                0 => return Err(DecodeError::ZeroPacketId),
                id => id,
            }
        };
        let properties = if version.is_v5() {
            PublishPropertiesBox::decode(&mut r)?
        } else {
            PublishPropertiesBox::new()
        };
        // An alias may stand in for the topic in v5 (§3.3.2.3.4); everywhere else the topic must
        // be a valid name.
        if !(topic.is_empty() && version.is_v5()) {
            validate_topic_name(&topic).map_err(DecodeError::TopicName)?;
        } else if properties.topic_alias.is_none() {
            return Err(DecodeError::EmptyTopicWithoutAlias);
        }
        if let Some(response_topic) = &properties.response_topic {
            validate_topic_name(response_topic).map_err(DecodeError::TopicName)?;
        }
        Ok(Publish {
            dup,
            qos,
            retain: header.flags & flags::RETAIN != 0,
            topic,
            packet_id,
            properties,
            payload: r.rest(),
        })
    }

    /// Size of the packet on the wire for `version`, payload included; lets the broker honour a
    /// client's Maximum Packet Size before encoding anything.
    pub fn encoded_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        let (variable_header, _) = self.variable_header_len(version)?;
        Ok(fixed_header::packet_len(
            variable_header + self.payload.len(),
        ))
    }

    /// Writes everything but the payload; the caller sends `self.payload` right after (as a
    /// second buffer of a vectored write, or appended), so one payload serves every subscriber.
    pub fn encode_header(
        &self,
        version: ProtocolVersion,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let (variable_header, props_len) = self.variable_header_len(version)?;
        if self.qos != QoS::AtMostOnce && self.packet_id == 0 {
            return Err(EncodeError::ZeroPacketId(PacketType::Publish));
        }
        let mut header_flags = (self.qos as u8) << flags::QOS_SHIFT;
        if self.dup {
            header_flags |= flags::DUP;
        }
        if self.retain {
            header_flags |= flags::RETAIN;
        }
        out.reserve(5 + variable_header);
        put_fixed_header(
            out,
            PacketType::Publish,
            header_flags,
            variable_header + self.payload.len(),
        )?;
        wire::put_binary(out, self.topic.as_bytes());
        if self.qos != QoS::AtMostOnce {
            out.put_u16(self.packet_id);
        }
        if version.is_v5() {
            match self.properties.get() {
                Some(properties) => properties.write(props_len, out),
                // The property length, 0: what most PUBLISH packets carry.
                None => out.put_u8(0),
            }
        }
        Ok(())
    }

    /// Writes the whole packet into one buffer, copying the payload.
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        self.encode_header(version, out)?;
        out.extend_from_slice(&self.payload);
        Ok(())
    }

    /// Length of topic, packet identifier and properties, and of the property body alone.
    fn variable_header_len(&self, version: ProtocolVersion) -> Result<(usize, usize), EncodeError> {
        wire::check_field_len("topic", self.topic.as_bytes())?;
        let mut len = wire::binary_len(self.topic.as_bytes());
        if self.qos != QoS::AtMostOnce {
            len += 2;
        }
        let mut props_len = 0;
        if version.is_v5() {
            props_len = match self.properties.get() {
                Some(properties) => properties.body_len()?,
                None => 0,
            };
            len += wire::variable_int_len(props_len as u32) + props_len;
        }
        Ok((len, props_len))
    }
}
