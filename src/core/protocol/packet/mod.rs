//! The MQTT control packets as typed values, one file per packet (or per family of packets with
//! one layout), each with its `decode` and `encode`. [`Packet`] ties them together: it dispatches
//! a framed body on its fixed header and writes any packet back out for a protocol version.

mod ack;
mod connack;
mod connect;
mod disconnect;
mod publish;
mod subscribe;
mod unsubscribe;

pub use ack::Ack;
pub use connack::ConnAck;
pub use connect::{Connect, LastWill};
pub use disconnect::{Auth, Disconnect};
pub use publish::Publish;
pub use subscribe::{RetainHandling, SubAck, Subscribe, SubscriptionOptions};
pub use unsubscribe::{UnsubAck, Unsubscribe};

use bytes::{Bytes, BytesMut};

use super::error::{DecodeError, EncodeError};
use super::fixed_header::{put_fixed_header, FixedHeader};
use super::packet_type::PacketType;
use super::ProtocolVersion;

/// Any MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect(Box<Connect>),
    /// Boxed, like CONNECT, DISCONNECT and AUTH: rare and large (mostly properties), they
    /// would otherwise make every packet as large as themselves.
    ConnAck(Box<ConnAck>),
    Publish(Publish),
    PubAck(Ack),
    PubRec(Ack),
    PubRel(Ack),
    PubComp(Ack),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Box<Disconnect>),
    Auth(Box<Auth>),
}

impl Packet {
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }

    /// Decodes one packet whose fixed header is `header` and whose variable header and payload
    /// are exactly `body`. CONNECT carries its own version; every other packet is read as
    /// `version`.
    pub fn decode(
        header: &FixedHeader,
        body: Bytes,
        version: ProtocolVersion,
    ) -> Result<Packet, DecodeError> {
        Ok(match header.packet_type {
            PacketType::Connect => Packet::Connect(Box::new(Connect::decode(body)?)),
            PacketType::ConnAck => Packet::ConnAck(Box::new(ConnAck::decode(body, version)?)),
            PacketType::Publish => Packet::Publish(Publish::decode(header, body, version)?),
            PacketType::PubAck => Packet::PubAck(Ack::decode(PacketType::PubAck, body, version)?),
            PacketType::PubRec => Packet::PubRec(Ack::decode(PacketType::PubRec, body, version)?),
            PacketType::PubRel => Packet::PubRel(Ack::decode(PacketType::PubRel, body, version)?),
            PacketType::PubComp => {
                Packet::PubComp(Ack::decode(PacketType::PubComp, body, version)?)
            }
            PacketType::Subscribe => Packet::Subscribe(Subscribe::decode(body, version)?),
            PacketType::SubAck => Packet::SubAck(SubAck::decode(body, version)?),
            PacketType::Unsubscribe => Packet::Unsubscribe(Unsubscribe::decode(body, version)?),
            PacketType::UnsubAck => Packet::UnsubAck(UnsubAck::decode(body, version)?),
            // No variable header and no payload (§3.12, §3.13): anything more is malformed.
            PacketType::PingReq | PacketType::PingResp if !body.is_empty() => {
                return Err(DecodeError::TrailingBytes(body.len()))
            }
            PacketType::PingReq => Packet::PingReq,
            PacketType::PingResp => Packet::PingResp,
            PacketType::Disconnect => {
                Packet::Disconnect(Box::new(Disconnect::decode(body, version)?))
            }
            PacketType::Auth if version.is_v5() => Packet::Auth(Box::new(Auth::decode(body)?)),
            PacketType::Auth => return Err(DecodeError::PacketNotInVersion(PacketType::Auth)),
        })
    }

    /// Appends the packet's wire form for `version` to `out`. CONNECT is written in its own
    /// protocol version.
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            Packet::Connect(connect) => connect.encode(out),
            Packet::ConnAck(connack) => connack.encode(version, out),
            Packet::Publish(publish) => publish.encode(version, out),
            Packet::PubAck(ack) => ack.encode(PacketType::PubAck, version, out),
            Packet::PubRec(ack) => ack.encode(PacketType::PubRec, version, out),
            Packet::PubRel(ack) => ack.encode(PacketType::PubRel, version, out),
            Packet::PubComp(ack) => ack.encode(PacketType::PubComp, version, out),
            Packet::Subscribe(subscribe) => subscribe.encode(version, out),
            Packet::SubAck(suback) => suback.encode(version, out),
            Packet::Unsubscribe(unsubscribe) => unsubscribe.encode(version, out),
            Packet::UnsubAck(unsuback) => unsuback.encode(version, out),
            Packet::PingReq => put_fixed_header(out, PacketType::PingReq, 0, 0),
            Packet::PingResp => put_fixed_header(out, PacketType::PingResp, 0, 0),
            Packet::Disconnect(disconnect) => disconnect.encode(version, out),
            Packet::Auth(auth) => auth.encode(version, out),
        }
    }
}

#[cfg(test)]
mod tests;
