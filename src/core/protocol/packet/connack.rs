//! CONNACK (§3.2): the broker's answer to CONNECT. Version 3.x carries a return code from a
//! short list, 5.0 a reason code and the server's properties; both are held here as a
//! [`ReasonCode`] so the broker decides in one vocabulary.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::error::{DecodeError, EncodeError};
use crate::protocol::fixed_header::put_fixed_header;
use crate::protocol::packet_type::PacketType;
use crate::protocol::properties::ConnAckProperties;
use crate::protocol::reason::{ConnectReturnCode, ReasonCode, ReasonCodeCarrier};
use crate::protocol::wire::Reader;
use crate::protocol::ProtocolVersion;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnAck {
    /// Never sent to 3.1 clients, whose CONNACK has no such flag.
    pub session_present: bool,
    /// For 3.x, encoded as the nearest [`ConnectReturnCode`].
    pub reason_code: ReasonCode,
    pub properties: ConnAckProperties,
}

impl ConnAck {
    pub fn decode(body: Bytes, version: ProtocolVersion) -> Result<ConnAck, DecodeError> {
        let mut r = Reader::new(body);
        let flags = r.u8()?;
        // 3.1 has no acknowledge flags: the byte is reserved and not used (3.1 §3.2).
        let flags = if version == ProtocolVersion::V3_1 {
            0
        } else {
            flags
        };
        if flags & 0xFE != 0 {
            return Err(DecodeError::ConnAckReservedFlags);
        }
        let code = r.u8()?;
        let invalid = DecodeError::InvalidReasonCode {
            code,
            packet: PacketType::ConnAck,
        };
        let (reason_code, properties) = if version.is_v5() {
            let reason_code = ReasonCode(code);
            if !reason_code.is_valid_for(ReasonCodeCarrier::ConnAck) {
                return Err(invalid);
            }
            let props = ConnAckProperties::decode(&mut r)?;
            if props.authentication_data.is_some() && props.authentication_method.is_none() {
                return Err(DecodeError::AuthDataWithoutMethod);
            }
            (reason_code, props)
        } else {
            let code = ConnectReturnCode::from_u8(code).ok_or(invalid)?;
            (code.to_reason(), ConnAckProperties::default())
        };
        r.finish()?;
        Ok(ConnAck {
            session_present: flags & 1 != 0,
            reason_code,
            properties,
        })
    }

    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        let session_present = self.session_present && version != ProtocolVersion::V3_1;
        if version.is_v5() {
            let props_len = self.properties.body_len()?;
            let len = 2 + crate::protocol::wire::variable_int_len(props_len as u32) + props_len;
            out.reserve(5 + len);
            put_fixed_header(out, PacketType::ConnAck, 0, len)?;
            out.put_u8(u8::from(session_present));
            out.put_u8(self.reason_code.0);
            self.properties.write(props_len, out);
        } else {
            put_fixed_header(out, PacketType::ConnAck, 0, 2)?;
            out.put_u8(u8::from(session_present));
            out.put_u8(ConnectReturnCode::from_reason(self.reason_code) as u8);
        }
        Ok(())
    }
}
