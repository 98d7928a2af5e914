//! The MQTT wire codec for protocol levels 3 (3.1, `MQIsdp`), 4 (3.1.1) and 5 (5.0).
//!
//! Why it exists: everything else in the broker, and the load generator in `benches/`, speaks
//! MQTT through this module and nowhere else. It turns bytes into typed [`Packet`]s and back,
//! enforcing every structural rule of the specs, and has no I/O, clocks or broker policy.
//!
//! Reading order for one packet: [`decoder::Decoder`] finds a whole frame in the receive buffer
//! ([`fixed_header`] checks the size limit before anything is allocated), [`packet`] parses it
//! with a [`wire::Reader`] over a `Bytes` slice of that buffer (so topics and payloads are never
//! copied), and [`packet::Packet::encode`] writes it back out. Failures are a
//! [`DecodeError`] whose [`DecodeError::reason_code`] is what the broker sends back in v5.

pub mod decoder;
pub mod error;
pub mod fixed_header;
pub mod packet;
pub mod packet_type;
pub mod properties;
pub mod reason;
pub mod topic;
pub mod wire;

#[cfg(test)]
mod proptests;

pub use decoder::Decoder;
pub use error::{DecodeError, EncodeError};
pub use packet::*;
pub use properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PublishProperties, PublishPropertiesBox, SubscribeProperties, UnsubscribeProperties,
    UserProperties, WillProperties,
};
pub use reason::{ConnectReturnCode, ReasonCode, ReasonCodeCarrier};

/// The protocol level a connection speaks, fixed by its CONNECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProtocolVersion {
    /// MQTT 3.1: protocol name `MQIsdp`, level 3.
    V3_1,
    /// MQTT 3.1.1: protocol name `MQTT`, level 4.
    V3_1_1,
    /// MQTT 5.0: protocol name `MQTT`, level 5.
    V5,
}

impl ProtocolVersion {
    /// The protocol level byte of CONNECT.
    pub fn level(self) -> u8 {
        match self {
            ProtocolVersion::V3_1 => 3,
            ProtocolVersion::V3_1_1 => 4,
            ProtocolVersion::V5 => 5,
        }
    }

    /// The protocol name string of CONNECT.
    pub fn protocol_name(self) -> &'static str {
        match self {
            ProtocolVersion::V3_1 => "MQIsdp",
            _ => "MQTT",
        }
    }

    /// Whether packets carry reason codes and properties.
    pub fn is_v5(self) -> bool {
        self == ProtocolVersion::V5
    }
}

/// Quality of service of a message or subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(u8)]
pub enum QoS {
    #[default]
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    /// `None` for 3, which every version treats as malformed.
    pub fn from_u8(value: u8) -> Option<QoS> {
        match value {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}
