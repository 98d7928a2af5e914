//! Typed codec failures. Each decode failure names what was wrong and maps to the MQTT 5 reason
//! code the broker sends back (CONNACK or DISCONNECT), so the caller never has to guess.

use super::packet_type::PacketType;
use super::reason::ReasonCode;
use super::topic::TopicError;

/// Why a byte stream is not a valid MQTT packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("remaining length is longer than 4 bytes")]
    MalformedRemainingLength,
    #[error("variable byte integer is longer than 4 bytes")]
    MalformedVariableByteInteger,
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge { size: usize, max: usize },
    #[error("packet type {0} is reserved")]
    ReservedPacketType(u8),
    #[error("{0:?} is not a packet of this protocol version")]
    PacketNotInVersion(PacketType),
    #[error("the first packet must be CONNECT, got {0:?}")]
    ExpectedConnect(PacketType),
    #[error("reserved fixed-header flags 0b{flags:04b} on {packet:?}")]
    InvalidHeaderFlags { packet: PacketType, flags: u8 },
    #[error("a field runs past the end of the packet")]
    UnexpectedEnd,
    #[error("{0} bytes left over after the end of the packet's contents")]
    TrailingBytes(usize),
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    #[error("string contains U+0000")]
    NullCharacter,
    #[error("QoS 3 is not a valid QoS")]
    InvalidQoS,
    #[error("DUP flag set on a QoS 0 PUBLISH")]
    DupOnQoS0,
    #[error("packet identifier 0 where a non-zero one is required")]
    ZeroPacketId,
    #[error("protocol name {0:?} is neither \"MQTT\" nor \"MQIsdp\"")]
    InvalidProtocolName(String),
    #[error("unsupported protocol level {0} (3, 4 and 5 are supported)")]
    UnsupportedProtocolLevel(u8),
    #[error("reserved CONNECT flag bit is set")]
    ConnectReservedFlag,
    #[error("will QoS or will retain set without the will flag")]
    WillFlagsWithoutWill,
    #[error("password flag set without user name flag (MQTT 3.x)")]
    PasswordWithoutUserName,
    #[error("reserved CONNACK flag bits are set")]
    ConnAckReservedFlags,
    #[error("invalid topic name: {0}")]
    TopicName(TopicError),
    #[error("invalid topic filter: {0}")]
    TopicFilter(TopicError),
    #[error("PUBLISH has an empty topic and no topic alias")]
    EmptyTopicWithoutAlias,
    #[error("property 0x{id:02X} is not allowed in {packet}")]
    PropertyNotAllowed { id: u32, packet: &'static str },
    #[error("property 0x{0:02X} appears more than once")]
    DuplicateProperty(u8),
    #[error("property 0x{id:02X} has the invalid value {value}")]
    InvalidPropertyValue { id: u8, value: u32 },
    #[error("authentication data without an authentication method")]
    AuthDataWithoutMethod,
    #[error("reason code 0x{code:02X} is not valid in {packet:?}")]
    InvalidReasonCode { code: u8, packet: PacketType },
    #[error("{0:?} carries no topic filter")]
    NoTopicFilters(PacketType),
    #[error("reserved subscription option bits are set")]
    SubscriptionOptionsReservedBits,
    #[error("maximum QoS 3 in MQTT 5 subscription options")]
    InvalidSubscriptionQoS,
    #[error("retain handling 3 is not valid")]
    InvalidRetainHandling,
    #[error("no-local is not allowed on a shared subscription")]
    NoLocalOnSharedSubscription,
}

impl DecodeError {
    /// The MQTT 5 reason code a broker sends (CONNACK before a session exists, DISCONNECT after).
    /// MQTT 3.x has no codes: the connection is closed (or, for the protocol level, refused with
    /// CONNACK return code 1).
    pub fn reason_code(&self) -> ReasonCode {
        use DecodeError::*;
        match self {
            PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            UnsupportedProtocolLevel(_) => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            TopicName(_) => ReasonCode::TOPIC_NAME_INVALID,
            TopicFilter(_) => ReasonCode::TOPIC_FILTER_INVALID,
            InvalidPropertyValue { id: 0x23, .. } => ReasonCode::TOPIC_ALIAS_INVALID,
            ExpectedConnect(_)
            | ZeroPacketId
            | InvalidProtocolName(_)
            | EmptyTopicWithoutAlias
            | DuplicateProperty(_)
            | InvalidPropertyValue { .. }
            | AuthDataWithoutMethod
            | NoTopicFilters(_)
            | InvalidSubscriptionQoS
            | InvalidRetainHandling
            | NoLocalOnSharedSubscription
            | PacketNotInVersion(_) => ReasonCode::PROTOCOL_ERROR,
            MalformedRemainingLength
            | MalformedVariableByteInteger
            | ReservedPacketType(_)
            | InvalidHeaderFlags { .. }
            | UnexpectedEnd
            | TrailingBytes(_)
            | InvalidUtf8
            | NullCharacter
            | InvalidQoS
            | DupOnQoS0
            | ConnectReservedFlag
            | WillFlagsWithoutWill
            | PasswordWithoutUserName
            | ConnAckReservedFlags
            | PropertyNotAllowed { .. }
            | InvalidReasonCode { .. }
            | SubscriptionOptionsReservedBits => ReasonCode::MALFORMED_PACKET,
        }
    }
}

/// Why a packet value cannot be written in MQTT's wire format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("{field} is {len} bytes; MQTT strings and binary data hold at most 65535")]
    FieldTooLong { field: &'static str, len: usize },
    #[error("packet body of {0} bytes is over MQTT's limit of 268435455")]
    PacketTooLarge(usize),
    #[error("{0:?} does not exist in this protocol version")]
    PacketNotInVersion(PacketType),
    #[error("{0:?} needs a non-zero packet identifier")]
    ZeroPacketId(PacketType),
}
