//! DISCONNECT (§3.14) and AUTH (§3.15): in v5 both are an optional reason code followed by
//! optional properties, where a remaining length of 0 means "success" with no properties.
//! In 3.x DISCONNECT is empty and AUTH does not exist.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::error::{DecodeError, EncodeError};
use crate::protocol::fixed_header::put_fixed_header;
use crate::protocol::packet_type::PacketType;
use crate::protocol::properties::{AuthProperties, DisconnectProperties};
use crate::protocol::reason::{ReasonCode, ReasonCodeCarrier};
use crate::protocol::wire::{self, Reader};
use crate::protocol::ProtocolVersion;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// Normal disconnection (0x00) unless said otherwise; always that in 3.x.
    pub reason_code: ReasonCode,
    pub properties: DisconnectProperties,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    pub reason_code: ReasonCode,
    pub properties: AuthProperties,
}

impl Disconnect {
    pub fn with_reason(reason_code: ReasonCode) -> Disconnect {
        Disconnect {
            reason_code,
            ..Disconnect::default()
        }
    }

    pub fn decode(body: Bytes, version: ProtocolVersion) -> Result<Disconnect, DecodeError> {
        let mut r = Reader::new(body);
        let mut packet = Disconnect::default();
        if version.is_v5() && !r.is_empty() {
            packet.reason_code = read_reason(&mut r, PacketType::Disconnect)?;
            if !r.is_empty() {
                packet.properties = DisconnectProperties::decode(&mut r)?;
            }
        }
        r.finish()?;
        Ok(packet)
    }

    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        if !version.is_v5() {
            return put_fixed_header(out, PacketType::Disconnect, 0, 0);
        }
        let props_len = self.properties.body_len()?;
        put_reason_and_properties(out, PacketType::Disconnect, self.reason_code, props_len)?;
        if props_len > 0 {
            self.properties.write(props_len, out);
        }
        Ok(())
    }
}

impl Auth {
    pub fn decode(body: Bytes) -> Result<Auth, DecodeError> {
        let mut r = Reader::new(body);
        let mut packet = Auth::default();
        if !r.is_empty() {
            packet.reason_code = read_reason(&mut r, PacketType::Auth)?;
            if !r.is_empty() {
                packet.properties = AuthProperties::decode(&mut r)?;
            }
        }
        r.finish()?;
        if packet.properties.authentication_data.is_some()
            && packet.properties.authentication_method.is_none()
        {
            return Err(DecodeError::AuthDataWithoutMethod);
        }
        Ok(packet)
    }

    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        if !version.is_v5() {
            return Err(EncodeError::PacketNotInVersion(PacketType::Auth));
        }
        let props_len = self.properties.body_len()?;
        put_reason_and_properties(out, PacketType::Auth, self.reason_code, props_len)?;
        if props_len > 0 {
            self.properties.write(props_len, out);
        }
        Ok(())
    }
}

fn read_reason(r: &mut Reader, packet_type: PacketType) -> Result<ReasonCode, DecodeError> {
    let code = ReasonCode(r.u8()?);
    let carrier = match packet_type {
        PacketType::Auth => ReasonCodeCarrier::Auth,
        _ => ReasonCodeCarrier::Disconnect,
    };
    if code.is_valid_for(carrier) {
        Ok(code)
    } else {
        Err(DecodeError::InvalidReasonCode {
            code: code.0,
            packet: packet_type,
        })
    }
}

/// Writes the fixed header and reason code in the shortest form the spec allows; the caller then
/// writes the properties when `props_len > 0`.
fn put_reason_and_properties(
    out: &mut BytesMut,
    packet_type: PacketType,
    reason_code: ReasonCode,
    props_len: usize,
) -> Result<(), EncodeError> {
    match (reason_code, props_len) {
        (ReasonCode::SUCCESS, 0) => put_fixed_header(out, packet_type, 0, 0),
        // The property length could be omitted here (§3.14.2.2.1), but some clients
        // (rumqttc 0.25) cannot parse that form, so it is always sent, as EMQX does.
        (_, 0) => {
            put_fixed_header(out, packet_type, 0, 2)?;
            out.put_u8(reason_code.0);
            out.put_u8(0);
            Ok(())
        }
        (_, props) => {
            let len = 1 + wire::variable_int_len(props as u32) + props;
            out.reserve(5 + len);
            put_fixed_header(out, packet_type, 0, len)?;
            out.put_u8(reason_code.0);
            // The property length prefix is written by the properties themselves.
            Ok(())
        }
    }
}
