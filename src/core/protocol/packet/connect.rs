//! CONNECT (§3.1): the first packet of every connection, and the one that fixes the protocol
//! version the rest of the connection is decoded with.

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use crate::protocol::error::{DecodeError, EncodeError};
use crate::protocol::fixed_header::put_fixed_header;
use crate::protocol::packet_type::PacketType;
use crate::protocol::properties::{ConnectProperties, WillProperties};
use crate::protocol::topic::validate_topic_name;
use crate::protocol::wire::{self, Reader};
use crate::protocol::{ProtocolVersion, QoS};

/// A client's request to open a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub protocol: ProtocolVersion,
    /// Clean Session in 3.x, Clean Start in 5.0.
    pub clean_start: bool,
    /// Seconds; 0 turns keepalive off.
    pub keep_alive: u16,
    /// May be empty; whether that is accepted is the broker's decision.
    pub client_id: ByteString,
    pub will: Option<LastWill>,
    pub username: Option<ByteString>,
    pub password: Option<Bytes>,
    pub properties: ConnectProperties,
}

/// The Will Message, published by the broker when the connection ends abnormally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    pub topic: ByteString,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub properties: WillProperties,
}

mod flags {
    pub const RESERVED: u8 = 0x01;
    pub const CLEAN_START: u8 = 0x02;
    pub const WILL: u8 = 0x04;
    pub const WILL_QOS_SHIFT: u8 = 3;
    pub const WILL_QOS_MASK: u8 = 0x18;
    pub const WILL_RETAIN: u8 = 0x20;
    pub const PASSWORD: u8 = 0x40;
    pub const USERNAME: u8 = 0x80;
}

impl Connect {
    pub fn decode(body: Bytes) -> Result<Connect, DecodeError> {
        let mut r = Reader::new(body);
        let protocol = read_protocol(&mut r)?;
        let connect_flags = r.u8()?;
        // 3.1 gave the bit no meaning; 3.1.1 and 5.0 make it a malformed packet (MQTT-3.1.2-3).
        if connect_flags & flags::RESERVED != 0 && protocol != ProtocolVersion::V3_1 {
            return Err(DecodeError::ConnectReservedFlag);
        }
        let has_will = connect_flags & flags::WILL != 0;
        let will_qos =
            QoS::from_u8((connect_flags & flags::WILL_QOS_MASK) >> flags::WILL_QOS_SHIFT)
                .ok_or(DecodeError::InvalidQoS)?;
        let will_retain = connect_flags & flags::WILL_RETAIN != 0;
        if !has_will && (will_qos != QoS::AtMostOnce || will_retain) {
            return Err(DecodeError::WillFlagsWithoutWill);
        }
        let has_password = connect_flags & flags::PASSWORD != 0;
        let has_username = connect_flags & flags::USERNAME != 0;
        if has_password && !has_username && !protocol.is_v5() {
            return Err(DecodeError::PasswordWithoutUserName);
        }
        let keep_alive = r.u16()?;
        let properties = if protocol.is_v5() {
            let props = ConnectProperties::decode(&mut r)?;
            if props.authentication_data.is_some() && props.authentication_method.is_none() {
                return Err(DecodeError::AuthDataWithoutMethod);
            }
            props
        } else {
            ConnectProperties::default()
        };
        let client_id = r.string()?;
        let will = if has_will {
            let properties = if protocol.is_v5() {
                WillProperties::decode(&mut r)?
            } else {
                WillProperties::default()
            };
            let topic = r.string()?;
            validate_topic_name(&topic).map_err(DecodeError::TopicName)?;
            if let Some(response_topic) = &properties.response_topic {
                validate_topic_name(response_topic).map_err(DecodeError::TopicName)?;
            }
            let payload = r.binary()?;
            Some(LastWill {
                topic,
                payload,
                qos: will_qos,
                retain: will_retain,
                properties,
            })
        } else {
            None
        };
        let username = has_username.then(|| r.string()).transpose()?;
        let password = has_password.then(|| r.binary()).transpose()?;
        r.finish()?;
        Ok(Connect {
            protocol,
            clean_start: connect_flags & flags::CLEAN_START != 0,
            keep_alive,
            client_id,
            will,
            username,
            password,
            properties,
        })
    }

    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        let v5 = self.protocol.is_v5();
        let name = self.protocol.protocol_name().as_bytes();
        let mut len = wire::binary_len(name) + 1 + 1 + 2;
        let props_len = if v5 {
            let body = self.properties.body_len()?;
            len += wire::variable_int_len(body as u32) + body;
            body
        } else {
            0
        };
        wire::check_field_len("client identifier", self.client_id.as_bytes())?;
        len += wire::binary_len(self.client_id.as_bytes());
        let mut will_props_len = 0;
        if let Some(will) = &self.will {
            if v5 {
                will_props_len = will.properties.body_len()?;
                len += wire::variable_int_len(will_props_len as u32) + will_props_len;
            }
            wire::check_field_len("will topic", will.topic.as_bytes())?;
            wire::check_field_len("will payload", &will.payload)?;
            len += wire::binary_len(will.topic.as_bytes()) + wire::binary_len(&will.payload);
        }
        if let Some(username) = &self.username {
            wire::check_field_len("user name", username.as_bytes())?;
            len += wire::binary_len(username.as_bytes());
        }
        if let Some(password) = &self.password {
            wire::check_field_len("password", password)?;
            len += wire::binary_len(password);
        }

        let mut connect_flags = 0;
        if self.clean_start {
            connect_flags |= flags::CLEAN_START;
        }
        if let Some(will) = &self.will {
            connect_flags |= flags::WILL | ((will.qos as u8) << flags::WILL_QOS_SHIFT);
            if will.retain {
                connect_flags |= flags::WILL_RETAIN;
            }
        }
        if self.username.is_some() {
            connect_flags |= flags::USERNAME;
        }
        if self.password.is_some() {
            connect_flags |= flags::PASSWORD;
        }

        out.reserve(5 + len);
        put_fixed_header(out, PacketType::Connect, 0, len)?;
        wire::put_binary(out, name);
        out.put_u8(self.protocol.level());
        out.put_u8(connect_flags);
        out.put_u16(self.keep_alive);
        if v5 {
            self.properties.write(props_len, out);
        }
        wire::put_binary(out, self.client_id.as_bytes());
        if let Some(will) = &self.will {
            if v5 {
                will.properties.write(will_props_len, out);
            }
            wire::put_binary(out, will.topic.as_bytes());
            wire::put_binary(out, &will.payload);
        }
        if let Some(username) = &self.username {
            wire::put_binary(out, username.as_bytes());
        }
        if let Some(password) = &self.password {
            wire::put_binary(out, password);
        }
        Ok(())
    }
}

/// Reads the protocol name and level (§3.1.2.1, §3.1.2.2).
fn read_protocol(r: &mut Reader) -> Result<ProtocolVersion, DecodeError> {
    let name = r.binary()?;
    let level = r.u8()?;
    match (&name[..], level) {
        (b"MQTT", 4) => Ok(ProtocolVersion::V3_1_1),
        (b"MQTT", 5) => Ok(ProtocolVersion::V5),
        (b"MQIsdp", 3) => Ok(ProtocolVersion::V3_1),
        (b"MQTT" | b"MQIsdp", other) => Err(DecodeError::UnsupportedProtocolLevel(other)),
        (other, _) => Err(DecodeError::InvalidProtocolName(
            String::from_utf8_lossy(other).into_owned(),
        )),
    }
}
