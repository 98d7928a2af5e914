//! MQTT 5 reason codes (spec §2.4) and the MQTT 3.x CONNACK return codes.
//!
//! A reason code is kept as a `u8` newtype rather than an enum because several names share one
//! value (0x00 is Success, Normal disconnection and Granted QoS 0) and because which values are
//! legal depends on the packet that carries them; [`ReasonCode::is_valid_for`] holds that table.

use std::fmt;

/// An MQTT 5 reason code. Constants name every code defined by the spec; the default is
/// [`ReasonCode::SUCCESS`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ReasonCode(pub u8);

/// The packets that carry a reason code, for [`ReasonCode::is_valid_for`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReasonCodeCarrier {
    ConnAck,
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    SubAck,
    UnsubAck,
    Disconnect,
    Auth,
}

macro_rules! reason_codes {
    ($($name:ident = $value:literal, $text:literal;)*) => {
        impl ReasonCode {
            $(pub const $name: ReasonCode = ReasonCode($value);)*

            /// The spec's name for this code, for logs.
            pub fn description(self) -> &'static str {
                match self.0 {
                    $($value => $text,)*
                    _ => "Unknown reason code",
                }
            }
        }
    };
}

reason_codes! {
    SUCCESS = 0x00, "Success";
    GRANTED_QOS_1 = 0x01, "Granted QoS 1";
    GRANTED_QOS_2 = 0x02, "Granted QoS 2";
    DISCONNECT_WITH_WILL_MESSAGE = 0x04, "Disconnect with Will Message";
    NO_MATCHING_SUBSCRIBERS = 0x10, "No matching subscribers";
    NO_SUBSCRIPTION_EXISTED = 0x11, "No subscription existed";
    CONTINUE_AUTHENTICATION = 0x18, "Continue authentication";
    RE_AUTHENTICATE = 0x19, "Re-authenticate";
    UNSPECIFIED_ERROR = 0x80, "Unspecified error";
    MALFORMED_PACKET = 0x81, "Malformed Packet";
    PROTOCOL_ERROR = 0x82, "Protocol Error";
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83, "Implementation specific error";
    UNSUPPORTED_PROTOCOL_VERSION = 0x84, "Unsupported Protocol Version";
    CLIENT_IDENTIFIER_NOT_VALID = 0x85, "Client Identifier not valid";
    BAD_USER_NAME_OR_PASSWORD = 0x86, "Bad User Name or Password";
    NOT_AUTHORIZED = 0x87, "Not authorized";
    SERVER_UNAVAILABLE = 0x88, "Server unavailable";
    SERVER_BUSY = 0x89, "Server busy";
    BANNED = 0x8A, "Banned";
    SERVER_SHUTTING_DOWN = 0x8B, "Server shutting down";
    BAD_AUTHENTICATION_METHOD = 0x8C, "Bad authentication method";
    KEEP_ALIVE_TIMEOUT = 0x8D, "Keep Alive timeout";
    SESSION_TAKEN_OVER = 0x8E, "Session taken over";
    TOPIC_FILTER_INVALID = 0x8F, "Topic Filter invalid";
    TOPIC_NAME_INVALID = 0x90, "Topic Name invalid";
    PACKET_IDENTIFIER_IN_USE = 0x91, "Packet Identifier in use";
    PACKET_IDENTIFIER_NOT_FOUND = 0x92, "Packet Identifier not found";
    RECEIVE_MAXIMUM_EXCEEDED = 0x93, "Receive Maximum exceeded";
    TOPIC_ALIAS_INVALID = 0x94, "Topic Alias invalid";
    PACKET_TOO_LARGE = 0x95, "Packet too large";
    MESSAGE_RATE_TOO_HIGH = 0x96, "Message rate too high";
    QUOTA_EXCEEDED = 0x97, "Quota exceeded";
    ADMINISTRATIVE_ACTION = 0x98, "Administrative action";
    PAYLOAD_FORMAT_INVALID = 0x99, "Payload format invalid";
    RETAIN_NOT_SUPPORTED = 0x9A, "Retain not supported";
    QOS_NOT_SUPPORTED = 0x9B, "QoS not supported";
    USE_ANOTHER_SERVER = 0x9C, "Use another server";
    SERVER_MOVED = 0x9D, "Server moved";
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E, "Shared Subscriptions not supported";
    CONNECTION_RATE_EXCEEDED = 0x9F, "Connection rate exceeded";
    MAXIMUM_CONNECT_TIME = 0xA0, "Maximum connect time";
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1, "Subscription Identifiers not supported";
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2, "Wildcard Subscriptions not supported";
}

impl ReasonCode {
    /// 0x00 in DISCONNECT.
    pub const NORMAL_DISCONNECTION: ReasonCode = ReasonCode::SUCCESS;
    /// 0x00 in SUBACK.
    pub const GRANTED_QOS_0: ReasonCode = ReasonCode::SUCCESS;

    /// Codes below 0x80 report success or a non-error outcome; the rest are failures.
    pub fn is_error(self) -> bool {
        self.0 >= 0x80
    }

    /// Whether the spec lets `carrier` carry this code (tables in §3.2.2.2, §3.4.2.1, §3.5.2.1,
    /// §3.6.2.1, §3.7.2.1, §3.9.3, §3.11.3, §3.14.2.1, §3.15.2.1).
    pub fn is_valid_for(self, carrier: ReasonCodeCarrier) -> bool {
        use ReasonCodeCarrier::*;
        let allowed: &[u8] = match carrier {
            ConnAck => &[
                0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90,
                0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
            ],
            PubAck | PubRec => &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99],
            PubRel | PubComp => &[0x00, 0x92],
            SubAck => &[
                0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
            ],
            UnsubAck => &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91],
            Disconnect => &[
                0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93,
                0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1,
                0xA2,
            ],
            Auth => &[0x00, 0x18, 0x19],
        };
        allowed.contains(&self.0)
    }
}

impl fmt::Debug for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReasonCode(0x{:02X} {})", self.0, self.description())
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:02X} ({})", self.0, self.description())
    }
}

/// MQTT 3.1 / 3.1.1 CONNACK return codes (3.1.1 §3.2.2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ConnectReturnCode {
    Accepted = 0,
    UnacceptableProtocolVersion = 1,
    IdentifierRejected = 2,
    ServerUnavailable = 3,
    BadUserNameOrPassword = 4,
    NotAuthorized = 5,
}

impl ConnectReturnCode {
    pub fn from_u8(value: u8) -> Option<Self> {
        use ConnectReturnCode::*;
        Some(match value {
            0 => Accepted,
            1 => UnacceptableProtocolVersion,
            2 => IdentifierRejected,
            3 => ServerUnavailable,
            4 => BadUserNameOrPassword,
            5 => NotAuthorized,
            _ => return None,
        })
    }

    /// The 3.x return code a v5 reason code becomes when the client speaks 3.x. Codes with no 3.x
    /// counterpart (e.g. quota exceeded) become "server unavailable", as Mosquitto does.
    pub fn from_reason(code: ReasonCode) -> Self {
        use ConnectReturnCode::*;
        match code {
            ReasonCode::SUCCESS => Accepted,
            ReasonCode::UNSUPPORTED_PROTOCOL_VERSION => UnacceptableProtocolVersion,
            ReasonCode::CLIENT_IDENTIFIER_NOT_VALID => IdentifierRejected,
            ReasonCode::BAD_USER_NAME_OR_PASSWORD | ReasonCode::BAD_AUTHENTICATION_METHOD => {
                BadUserNameOrPassword
            }
            ReasonCode::NOT_AUTHORIZED | ReasonCode::BANNED => NotAuthorized,
            _ => ServerUnavailable,
        }
    }

    /// The v5 reason code with the same meaning, so callers can work in one vocabulary.
    pub fn to_reason(self) -> ReasonCode {
        use ConnectReturnCode::*;
        match self {
            Accepted => ReasonCode::SUCCESS,
            UnacceptableProtocolVersion => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            IdentifierRejected => ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
            ServerUnavailable => ReasonCode::SERVER_UNAVAILABLE,
            BadUserNameOrPassword => ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            NotAuthorized => ReasonCode::NOT_AUTHORIZED,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carrier_tables_follow_the_spec() {
        assert!(ReasonCode::SESSION_TAKEN_OVER.is_valid_for(ReasonCodeCarrier::Disconnect));
        assert!(!ReasonCode::SESSION_TAKEN_OVER.is_valid_for(ReasonCodeCarrier::ConnAck));
        assert!(ReasonCode::PACKET_IDENTIFIER_NOT_FOUND.is_valid_for(ReasonCodeCarrier::PubComp));
        assert!(!ReasonCode::GRANTED_QOS_2.is_valid_for(ReasonCodeCarrier::PubAck));
        assert!(ReasonCode::RE_AUTHENTICATE.is_valid_for(ReasonCodeCarrier::Auth));
    }

    #[test]
    fn v3_return_codes_round_trip_through_reason_codes() {
        for value in 0..=5 {
            let code = ConnectReturnCode::from_u8(value).unwrap();
            assert_eq!(ConnectReturnCode::from_reason(code.to_reason()), code);
        }
        assert_eq!(ConnectReturnCode::from_u8(6), None);
        assert_eq!(
            ConnectReturnCode::from_reason(ReasonCode::QUOTA_EXCEEDED),
            ConnectReturnCode::ServerUnavailable
        );
    }
}
