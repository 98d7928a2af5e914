//! Packet-by-packet tests against byte vectors written by hand from the spec text.
//!
//! Section numbers are those of the MQTT 3.1.1 OASIS standard ("3.1.1 §x"), the MQTT 5.0 OASIS
//! standard ("5.0 §x") and the IBM MQTT V3.1 protocol specification ("3.1 §x"). Every vector is
//! checked in both directions where the wire form is canonical: decoding the bytes gives the
//! expected value, and encoding that value gives the same bytes. Error vectors assert the exact
//! [`DecodeError`] and the MQTT 5 reason code it maps to.

use std::num::{NonZeroU16, NonZeroU32};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use super::*;
use crate::protocol::decoder::{Decoder, MAX_PACKET_SIZE};
use crate::protocol::error::{DecodeError, EncodeError};
use crate::protocol::packet_type::PacketType;
use crate::protocol::properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PublishProperties, PublishPropertiesBox, SubscribeProperties, UnsubscribeProperties,
    WillProperties,
};
use crate::protocol::reason::ReasonCode;
use crate::protocol::topic::TopicError;
use crate::protocol::{ProtocolVersion, QoS};

use ProtocolVersion::{V3_1, V3_1_1, V5};

const ALL: [ProtocolVersion; 3] = [V3_1, V3_1_1, V5];
const V3: [ProtocolVersion; 2] = [V3_1, V3_1_1];

fn s(text: &'static str) -> ByteString {
    ByteString::from_static(text)
}

fn b(bytes: &'static [u8]) -> Bytes {
    Bytes::from_static(bytes)
}

fn nz16(value: u16) -> NonZeroU16 {
    NonZeroU16::new(value).unwrap()
}

fn nz32(value: u32) -> NonZeroU32 {
    NonZeroU32::new(value).unwrap()
}

fn user(key: &'static str, value: &'static str) -> (ByteString, ByteString) {
    (s(key), s(value))
}

/// Decodes `bytes`, which must hold exactly one whole packet, with a decoder of `version`.
fn decode(version: ProtocolVersion, bytes: &[u8]) -> Result<Packet, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let packet = Decoder::client(version, MAX_PACKET_SIZE)
        .decode(&mut buf)?
        .expect("test vector holds a whole packet");
    assert!(buf.is_empty(), "{} bytes left after the packet", buf.len());
    Ok(packet)
}

fn encode(version: ProtocolVersion, packet: &Packet) -> Vec<u8> {
    let mut out = BytesMut::new();
    packet.encode(version, &mut out).expect("packet encodes");
    out.to_vec()
}

#[track_caller]
fn assert_decodes(version: ProtocolVersion, bytes: &[u8], expected: &Packet) {
    assert_eq!(
        decode(version, bytes).as_ref(),
        Ok(expected),
        "decoding as {version:?}"
    );
    assert_eq!(expected.packet_type() as u8, bytes[0] >> 4);
}

#[track_caller]
fn assert_encodes(version: ProtocolVersion, packet: &Packet, bytes: &[u8]) {
    assert_eq!(encode(version, packet), bytes, "encoding as {version:?}");
}

/// Decoding `bytes` gives `packet` and encoding `packet` gives `bytes`.
#[track_caller]
fn assert_both_ways(version: ProtocolVersion, bytes: &[u8], packet: Packet) {
    assert_decodes(version, bytes, &packet);
    assert_encodes(version, &packet, bytes);
}

/// Decoding fails with exactly `expected`, which maps to the reason code `code`.
#[track_caller]
fn assert_error(version: ProtocolVersion, bytes: &[u8], expected: DecodeError, code: u8) {
    let error = decode(version, bytes).expect_err("vector must be rejected");
    assert_eq!(error, expected, "decoding as {version:?}");
    assert_eq!(
        error.reason_code(),
        ReasonCode(code),
        "reason code of {error}"
    );
}

// ---------------------------------------------------------------------------------------------
// CONNECT
// ---------------------------------------------------------------------------------------------

fn connect(protocol: ProtocolVersion, client_id: &'static str) -> Connect {
    Connect {
        protocol,
        clean_start: true,
        keep_alive: 60,
        client_id: s(client_id),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }
}

#[test]
fn connect_v3_1() {
    // 3.1 §3.1: protocol name "MQIsdp", version 3, connect flags, keep alive, client id.
    let bytes = [
        0x10, 17, //
        0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', // protocol name
        0x03, // protocol version
        0x02, // clean session
        0x00, 0x3C, // keep alive 60
        0x00, 0x03, b'a', b'b', b'c', // client id
    ];
    assert_both_ways(
        V3_1,
        &bytes,
        Packet::Connect(Box::new(connect(V3_1, "abc"))),
    );

    // 3.1 §3.1 "User name and password flags": both fields follow the client id.
    let bytes = [
        0x10, 23, //
        0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, //
        0xC2, // user name, password, clean session
        0x00, 0x3C, //
        0x00, 0x03, b'a', b'b', b'c', //
        0x00, 0x01, b'u', //
        0x00, 0x01, b'p',
    ];
    let expected = Connect {
        username: Some(s("u")),
        password: Some(b(b"p")),
        ..connect(V3_1, "abc")
    };
    assert_both_ways(V3_1, &bytes, Packet::Connect(Box::new(expected)));
}

#[test]
fn connect_v3_1_reserved_flag_is_ignored() {
    // 3.1 gives bit 0 of the connect flags no meaning; only 3.1.1 made it malformed.
    let bytes = [
        0x10, 17, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x03, 0x00, 0x3C, 0x00,
        0x03, b'a', b'b', b'c',
    ];
    assert_decodes(
        V3_1,
        &bytes,
        &Packet::Connect(Box::new(connect(V3_1, "abc"))),
    );
}

#[test]
fn connect_v3_1_1_with_will_user_name_and_password() {
    // 3.1.1 §3.1.2 variable header, §3.1.3 payload order: client id, will topic, will message,
    // user name, password.
    let bytes = [
        0x10, 35, //
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, //
        0xEE, // user name, password, will retain, will QoS 1, will flag, clean session
        0x00, 0x0A, // keep alive 10
        0x00, 0x03, b'c', b'i', b'd', //
        0x00, 0x03, b'w', b'/', b't', // will topic
        0x00, 0x02, b'b', b'y', // will message
        0x00, 0x04, b'u', b's', b'e', b'r', //
        0x00, 0x03, 0x01, 0x02, 0x03, // password is binary data
    ];
    let expected = Connect {
        keep_alive: 10,
        will: Some(LastWill {
            topic: s("w/t"),
            payload: b(b"by"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: WillProperties::default(),
        }),
        username: Some(s("user")),
        password: Some(b(&[1, 2, 3])),
        ..connect(V3_1_1, "cid")
    };
    assert_both_ways(V3_1_1, &bytes, Packet::Connect(Box::new(expected)));
}

#[test]
fn connect_v5_with_connect_and_will_properties() {
    // 5.0 §3.1.2.11 (CONNECT properties), §3.1.3.2 (will properties precede the will topic).
    let bytes = [
        0x10, 108, //
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, //
        0x96, // user name, will QoS 2, will flag, clean start
        0x00, 0x3C, //
        39,   // property length
        0x11, 0x00, 0x00, 0x00, 0x78, // session expiry interval 120
        0x21, 0x00, 0x0A, // receive maximum 10
        0x27, 0x00, 0x00, 0x10, 0x00, // maximum packet size 4096
        0x22, 0x00, 0x05, // topic alias maximum 5
        0x19, 0x01, // request response information
        0x17, 0x00, // request problem information
        0x15, 0x00, 0x04, b'S', b'C', b'R', b'A', // authentication method
        0x16, 0x00, 0x02, 0x01, 0x02, // authentication data
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // user property
        0x00, 0x02, b'c', b'5', // client id
        39,   // will property length
        0x18, 0x00, 0x00, 0x00, 0x0A, // will delay interval 10
        0x01, 0x01, // payload format indicator: UTF-8
        0x02, 0x00, 0x00, 0x01, 0x00, // message expiry interval 256
        0x03, 0x00, 0x04, b't', b'e', b'x', b't', // content type
        0x08, 0x00, 0x05, b'r', b'/', b't', b'o', b'p', // response topic
        0x09, 0x00, 0x02, 0xCA, 0xFE, // correlation data
        0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'b', // user property
        0x00, 0x03, b'w', b'/', b'5', // will topic
        0x00, 0x03, b'b', b'y', b'e', // will payload
        0x00, 0x02, b'u', b'5', // user name
    ];
    let expected = Connect {
        will: Some(LastWill {
            topic: s("w/5"),
            payload: b(b"bye"),
            qos: QoS::ExactlyOnce,
            retain: false,
            properties: WillProperties {
                will_delay_interval: Some(10),
                payload_format_indicator: Some(true),
                message_expiry_interval: Some(256),
                content_type: Some(s("text")),
                response_topic: Some(s("r/top")),
                correlation_data: Some(b(&[0xCA, 0xFE])),
                user_properties: vec![user("a", "b")],
            },
        }),
        username: Some(s("u5")),
        properties: ConnectProperties {
            session_expiry_interval: Some(120),
            receive_maximum: Some(nz16(10)),
            maximum_packet_size: Some(nz32(4096)),
            topic_alias_maximum: Some(5),
            request_response_information: Some(true),
            request_problem_information: Some(false),
            authentication_method: Some(s("SCRA")),
            authentication_data: Some(b(&[1, 2])),
            user_properties: vec![user("k", "v")],
        },
        ..connect(V5, "c5")
    };
    assert_both_ways(V5, &bytes, Packet::Connect(Box::new(expected)));
}

#[test]
fn connect_password_without_user_name() {
    // 3.1.1 §3.1.2.9: "If the User Name Flag is set to 0, the Password Flag MUST be set to 0"
    // [MQTT-3.1.2-22].
    let v311 = [
        0x10, 15, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x42, 0x00, 0x3C, 0x00, 0x00, 0x00,
        0x01, b'p',
    ];
    assert_error(V3_1_1, &v311, DecodeError::PasswordWithoutUserName, 0x81);
    // 5.0 §3.1.2.9 drops that rule: a password may be sent alone.
    let v5 = [
        0x10, 16, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x42, 0x00, 0x3C, 0x00, 0x00, 0x00,
        0x00, 0x01, b'p',
    ];
    let expected = Connect {
        password: Some(b(b"p")),
        ..connect(V5, "")
    };
    assert_both_ways(V5, &v5, Packet::Connect(Box::new(expected)));
}

#[test]
fn connect_flag_errors() {
    // 3.1.1 §3.1.2.3: the reserved flag must be 0 [MQTT-3.1.2-3]; 5.0 §3.1.2.3 likewise.
    let reserved_v311 = [
        0x10, 12, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x03, 0x00, 0x3C, 0x00, 0x00,
    ];
    assert_error(
        V3_1_1,
        &reserved_v311,
        DecodeError::ConnectReservedFlag,
        0x81,
    );
    let reserved_v5 = [
        0x10, 13, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x03, 0x00, 0x3C, 0x00, 0x00, 0x00,
    ];
    assert_error(V5, &reserved_v5, DecodeError::ConnectReservedFlag, 0x81);

    // 3.1.1 §3.1.2.6 / §3.1.2.7: without the will flag, will QoS and will retain must be 0
    // [MQTT-3.1.2-13], [MQTT-3.1.2-15].
    for flags in [0x0A, 0x12, 0x22] {
        let bytes = [
            0x10, 12, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, flags, 0x00, 0x3C, 0x00, 0x00,
        ];
        assert_error(V3_1_1, &bytes, DecodeError::WillFlagsWithoutWill, 0x81);
    }
    // [MQTT-3.1.2-14]: will QoS 3 is invalid even with the will flag.
    let qos3 = [
        0x10, 12, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x1E, 0x00, 0x3C, 0x00, 0x00,
    ];
    assert_error(V3_1_1, &qos3, DecodeError::InvalidQoS, 0x81);
}

#[test]
fn connect_protocol_name_and_level() {
    // 3.1.1 §3.1.2.2: an unsupported level is refused with return code 1; 5.0 §3.1.2.2 with
    // reason code 0x84.
    let level6 = [
        0x10, 12, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06, 0x02, 0x00, 0x3C, 0x00, 0x00,
    ];
    assert_error(V5, &level6, DecodeError::UnsupportedProtocolLevel(6), 0x84);
    let level3_mqtt = [
        0x10, 12, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x03, 0x02, 0x00, 0x3C, 0x00, 0x00,
    ];
    assert_error(
        V5,
        &level3_mqtt,
        DecodeError::UnsupportedProtocolLevel(3),
        0x84,
    );
    let level4_mqisdp = [
        0x10, 14, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x04, 0x02, 0x00, 0x3C, 0x00,
        0x00,
    ];
    assert_error(
        V5,
        &level4_mqisdp,
        DecodeError::UnsupportedProtocolLevel(4),
        0x84,
    );
    // 3.1.1 §3.1.2.1: any other protocol name is not MQTT.
    let bad_name = [
        0x10, 12, 0x00, 0x04, b'M', b'Q', b'T', b'X', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x00,
    ];
    assert_error(
        V5,
        &bad_name,
        DecodeError::InvalidProtocolName("MQTX".into()),
        0x82,
    );
}

#[test]
fn connect_length_and_property_errors() {
    // 3.1.1 §1.5.3: a client id whose length runs past the packet.
    let short = [
        0x10, 13, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x05, b'a',
    ];
    assert_error(V3_1_1, &short, DecodeError::UnexpectedEnd, 0x81);
    // Bytes after the last field.
    let trailing = [
        0x10, 13, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x00, 0xFF,
    ];
    assert_error(V3_1_1, &trailing, DecodeError::TrailingBytes(1), 0x81);
    // 5.0 §3.1.2.11.3: "It is a Protocol Error to include the value 0" for Receive Maximum.
    let receive_max_0 = [
        0x10, 16, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C, 0x03, 0x21, 0x00,
        0x00, 0x00, 0x00,
    ];
    assert_error(
        V5,
        &receive_max_0,
        DecodeError::InvalidPropertyValue { id: 0x21, value: 0 },
        0x82,
    );
    // 5.0 §3.1.2.11.4: Maximum Packet Size 0 is a Protocol Error too.
    let max_size_0 = [
        0x10, 18, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C, 0x05, 0x27, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    assert_error(
        V5,
        &max_size_0,
        DecodeError::InvalidPropertyValue { id: 0x27, value: 0 },
        0x82,
    );
    // 5.0 §3.1.2.11.10: authentication data without a method is a Protocol Error.
    let data_without_method = [
        0x10, 17, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C, 0x04, 0x16, 0x00,
        0x01, 0x07, 0x00, 0x00,
    ];
    assert_error(
        V5,
        &data_without_method,
        DecodeError::AuthDataWithoutMethod,
        0x82,
    );
    // 5.0 §2.2.2.2: Topic Alias (0x23) is not a CONNECT property: malformed.
    let not_allowed = [
        0x10, 16, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C, 0x03, 0x23, 0x00,
        0x01, 0x00, 0x00,
    ];
    assert_error(
        V5,
        &not_allowed,
        DecodeError::PropertyNotAllowed {
            id: 0x23,
            packet: "CONNECT",
        },
        0x81,
    );
    // 3.1.1 §3.1.3.3: the will topic is a topic name, so no wildcards.
    let will_wildcard = [
        0x10, 17, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x06, 0x00, 0x3C, 0x00, 0x00, 0x00,
        0x01, b'#', 0x00, 0x00,
    ];
    assert_error(
        V3_1_1,
        &will_wildcard,
        DecodeError::TopicName(TopicError::WildcardInName),
        0x90,
    );
}

// ---------------------------------------------------------------------------------------------
// CONNACK
// ---------------------------------------------------------------------------------------------

#[test]
fn connack_v3_return_codes() {
    // 3.1.1 §3.2.2.2 session present, §3.2.2.3 return codes 0..=5.
    let accepted = ConnAck {
        session_present: true,
        ..ConnAck::default()
    };
    assert_both_ways(
        V3_1_1,
        &[0x20, 0x02, 0x01, 0x00],
        Packet::ConnAck(Box::new(accepted)),
    );
    let cases = [
        (0x00, ReasonCode::SUCCESS),
        (0x01, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION),
        (0x02, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),
        (0x03, ReasonCode::SERVER_UNAVAILABLE),
        (0x04, ReasonCode::BAD_USER_NAME_OR_PASSWORD),
        (0x05, ReasonCode::NOT_AUTHORIZED),
    ];
    // 3.1.1 §3.2.2.1: bits 7-1 of the acknowledge flags are reserved (5.0 §3.2.2.1 too).
    assert_error(
        V3_1_1,
        &[0x20, 0x02, 0x02, 0x00],
        DecodeError::ConnAckReservedFlags,
        0x81,
    );
    assert_error(
        V5,
        &[0x20, 0x03, 0x80, 0x00, 0x00],
        DecodeError::ConnAckReservedFlags,
        0x81,
    );
    for version in V3 {
        for (byte, reason_code) in cases {
            let packet = Packet::ConnAck(Box::new(ConnAck {
                reason_code,
                ..ConnAck::default()
            }));
            assert_both_ways(version, &[0x20, 0x02, 0x00, byte], packet);
        }
        // 3.1.1 §3.2.2.3: 6-255 are reserved.
        assert_error(
            version,
            &[0x20, 0x02, 0x00, 0x06],
            DecodeError::InvalidReasonCode {
                code: 6,
                packet: PacketType::ConnAck,
            },
            0x81,
        );
        assert_error(
            version,
            &[0x20, 0x03, 0x00, 0x00, 0x00],
            DecodeError::TrailingBytes(1),
            0x81,
        );
    }
}

#[test]
fn connack_v3_maps_v5_reason_codes_to_return_codes() {
    for (reason_code, byte) in [
        (ReasonCode::BANNED, 0x05),
        (ReasonCode::BAD_AUTHENTICATION_METHOD, 0x04),
        (ReasonCode::QUOTA_EXCEEDED, 0x03),
    ] {
        let packet = Packet::ConnAck(Box::new(ConnAck {
            reason_code,
            ..ConnAck::default()
        }));
        assert_encodes(V3_1_1, &packet, &[0x20, 0x02, 0x00, byte]);
    }
}

#[test]
fn connack_v3_1_never_sends_session_present() {
    // 3.1 §3.2: the first variable header byte is reserved; session present is 3.1.1 only.
    let packet = Packet::ConnAck(Box::new(ConnAck {
        session_present: true,
        ..ConnAck::default()
    }));
    assert_encodes(V3_1, &packet, &[0x20, 0x02, 0x00, 0x00]);
    assert_encodes(V3_1_1, &packet, &[0x20, 0x02, 0x01, 0x00]);
    assert_encodes(V5, &packet, &[0x20, 0x03, 0x01, 0x00, 0x00]);
    // A 3.1 reader does not interpret the reserved byte either, so what it decodes is what the
    // encoder would write.
    for byte in [0x01, 0x02, 0xFF] {
        let bytes = [0x20, 0x02, byte, 0x05];
        let expected = Packet::ConnAck(Box::new(ConnAck {
            reason_code: ReasonCode::NOT_AUTHORIZED,
            ..ConnAck::default()
        }));
        assert_decodes(V3_1, &bytes, &expected);
        assert_encodes(V3_1, &expected, &[0x20, 0x02, 0x00, 0x05]);
    }
}

#[test]
fn connack_v5_with_properties() {
    // 5.0 §3.2.2.3: every CONNACK property, in the order the encoder writes them.
    let bytes = [
        0x20, 66, 0x01, 0x00, 63, //
        0x11, 0x00, 0x00, 0x00, 0x3C, // session expiry interval
        0x21, 0x00, 0x14, // receive maximum 20
        0x24, 0x01, // maximum QoS 1
        0x25, 0x00, // retain available: no
        0x27, 0x00, 0x01, 0x00, 0x00, // maximum packet size 65536
        0x12, 0x00, 0x03, b'a', b'b', b'c', // assigned client identifier
        0x22, 0x00, 0x0A, // topic alias maximum
        0x1F, 0x00, 0x02, b'o', b'k', // reason string
        0x28, 0x01, // wildcard subscription available
        0x29, 0x00, // subscription identifiers available
        0x2A, 0x01, // shared subscription available
        0x13, 0x00, 0x1E, // server keep alive
        0x1A, 0x00, 0x01, b'r', // response information
        0x1C, 0x00, 0x01, b's', // server reference
        0x15, 0x00, 0x01, b'm', // authentication method
        0x16, 0x00, 0x01, 0x07, // authentication data
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // user property
    ];
    let expected = ConnAck {
        session_present: true,
        reason_code: ReasonCode::SUCCESS,
        properties: ConnAckProperties {
            session_expiry_interval: Some(60),
            receive_maximum: Some(nz16(20)),
            maximum_qos: Some(QoS::AtLeastOnce),
            retain_available: Some(false),
            maximum_packet_size: Some(nz32(65536)),
            assigned_client_identifier: Some(s("abc")),
            topic_alias_maximum: Some(10),
            reason_string: Some(s("ok")),
            wildcard_subscription_available: Some(true),
            subscription_identifiers_available: Some(false),
            shared_subscription_available: Some(true),
            server_keep_alive: Some(30),
            response_information: Some(s("r")),
            server_reference: Some(s("s")),
            authentication_method: Some(s("m")),
            authentication_data: Some(b(&[7])),
            user_properties: vec![user("k", "v")],
        },
    };
    assert_both_ways(V5, &bytes, Packet::ConnAck(Box::new(expected)));

    // 5.0 §3.2.2.2: a refusal with no properties still carries the property length.
    let refused = Packet::ConnAck(Box::new(ConnAck {
        reason_code: ReasonCode::NOT_AUTHORIZED,
        ..ConnAck::default()
    }));
    assert_both_ways(V5, &[0x20, 0x03, 0x00, 0x87, 0x00], refused);

    // 0x8E (session taken over) is a DISCONNECT code, not a CONNACK one.
    assert_error(
        V5,
        &[0x20, 0x03, 0x00, 0x8E, 0x00],
        DecodeError::InvalidReasonCode {
            code: 0x8E,
            packet: PacketType::ConnAck,
        },
        0x81,
    );
    // 5.0 §3.2.2.3.4: Maximum QoS 2 is a Protocol Error (absence means 2).
    assert_error(
        V5,
        &[0x20, 0x05, 0x00, 0x00, 0x02, 0x24, 0x02],
        DecodeError::InvalidPropertyValue { id: 0x24, value: 2 },
        0x82,
    );
}

// ---------------------------------------------------------------------------------------------
// PUBLISH
// ---------------------------------------------------------------------------------------------

fn publish(qos: QoS, topic: &'static str, packet_id: u16, payload: &'static [u8]) -> Publish {
    Publish {
        qos,
        topic: s(topic),
        packet_id,
        payload: b(payload),
        ..Publish::default()
    }
}

#[test]
fn publish_qos_0_1_2() {
    // 3.1.1 §3.3.1 fixed header flags, §3.3.2 topic name and packet identifier (QoS > 0 only).
    let qos0 = publish(QoS::AtMostOnce, "a/b", 0, b"hi");
    let v3_qos0 = [0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'];
    let qos1 = Publish {
        dup: true,
        retain: true,
        ..publish(QoS::AtLeastOnce, "a/b", 10, b"hi")
    };
    let v3_qos1 = [
        0x3B, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A, b'h', b'i',
    ];
    let qos2 = publish(QoS::ExactlyOnce, "a/b", 0xFFFF, b"hi");
    let v3_qos2 = [
        0x34, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0xFF, 0xFF, b'h', b'i',
    ];
    let retain_only = Publish {
        retain: true,
        ..publish(QoS::AtMostOnce, "a/b", 0, b"")
    };
    let v3_retain = [0x31, 0x05, 0x00, 0x03, b'a', b'/', b'b'];
    for version in V3 {
        assert_both_ways(version, &v3_qos0, Packet::Publish(qos0.clone()));
        assert_both_ways(version, &v3_qos1, Packet::Publish(qos1.clone()));
        assert_both_ways(version, &v3_qos2, Packet::Publish(qos2.clone()));
        assert_both_ways(version, &v3_retain, Packet::Publish(retain_only.clone()));
    }
    // 5.0 §3.3.2.3.1: a property length (here 0) follows the packet identifier.
    let v5_qos0 = [0x30, 0x08, 0x00, 0x03, b'a', b'/', b'b', 0x00, b'h', b'i'];
    let v5_qos1 = [
        0x3B, 0x0A, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A, 0x00, b'h', b'i',
    ];
    let v5_qos2 = [
        0x34, 0x0A, 0x00, 0x03, b'a', b'/', b'b', 0xFF, 0xFF, 0x00, b'h', b'i',
    ];
    assert_both_ways(V5, &v5_qos0, Packet::Publish(qos0));
    assert_both_ways(V5, &v5_qos1, Packet::Publish(qos1));
    assert_both_ways(V5, &v5_qos2, Packet::Publish(qos2));
}

#[test]
fn publish_v5_properties_with_several_subscription_identifiers() {
    // 5.0 §3.3.2.3; §3.3.2.3.8: multiple Subscription Identifiers are allowed in PUBLISH.
    let bytes = [
        0x30, 48, 0x00, 0x01, b't', 42, //
        0x01, 0x01, // payload format indicator
        0x02, 0x00, 0x00, 0x00, 0x0A, // message expiry interval
        0x23, 0x00, 0x02, // topic alias 2
        0x08, 0x00, 0x03, b'r', b'/', b'x', // response topic
        0x09, 0x00, 0x01, 0x07, // correlation data
        0x03, 0x00, 0x02, b'j', b's', // content type
        0x0B, 0x01, // subscription identifier 1
        0x0B, 0x80, 0x01, // subscription identifier 128
        0x0B, 0xFF, 0xFF, 0xFF, 0x7F, // subscription identifier 268435455
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // user property
        b'{', b'}', // payload
    ];
    let expected = Publish {
        properties: PublishProperties {
            payload_format_indicator: Some(true),
            message_expiry_interval: Some(10),
            topic_alias: Some(nz16(2)),
            response_topic: Some(s("r/x")),
            correlation_data: Some(b(&[7])),
            content_type: Some(s("js")),
            subscription_identifiers: vec![nz32(1), nz32(128), nz32(268_435_455)],
            user_properties: vec![user("k", "v")],
        }
        .into(),
        ..publish(QoS::AtMostOnce, "t", 0, b"{}")
    };
    assert_both_ways(V5, &bytes, Packet::Publish(expected));
}

#[test]
fn publish_v5_empty_topic_with_alias() {
    // 5.0 §3.3.2.3.4: a zero-length topic name with a Topic Alias.
    let bytes = [
        0x32, 0x09, 0x00, 0x00, 0x00, 0x07, 0x03, 0x23, 0x00, 0x01, b'x',
    ];
    let expected = Publish {
        properties: PublishProperties {
            topic_alias: Some(nz16(1)),
            ..PublishProperties::default()
        }
        .into(),
        ..publish(QoS::AtLeastOnce, "", 7, b"x")
    };
    assert_both_ways(V5, &bytes, Packet::Publish(expected));
    // Without the alias the empty topic is a Protocol Error (5.0 §3.3.4).
    assert_error(
        V5,
        &[0x30, 0x03, 0x00, 0x00, 0x00],
        DecodeError::EmptyTopicWithoutAlias,
        0x82,
    );
    // 3.1.1 §4.7.3: topic names are at least one character long.
    for version in V3 {
        assert_error(
            version,
            &[0x30, 0x02, 0x00, 0x00],
            DecodeError::TopicName(TopicError::Empty),
            0x90,
        );
    }
}

#[test]
fn packets_stay_small_enough_to_move_cheaply() {
    // Every decoded packet is moved through several layers; boxing the rare large variants
    // and storing PUBLISH properties out of line keeps that a few cache lines (was 256 bytes).
    assert!(
        std::mem::size_of::<Packet>() <= 96,
        "{}",
        std::mem::size_of::<Packet>()
    );
    assert!(
        std::mem::size_of::<Publish>() <= 80,
        "{}",
        std::mem::size_of::<Publish>()
    );
    assert_eq!(std::mem::size_of::<PublishPropertiesBox>(), 8);
}

#[test]
fn publish_properties_are_allocated_only_when_present() {
    let decoded = |bytes: &[u8]| match decode(V5, bytes).unwrap() {
        Packet::Publish(publish) => publish,
        other => panic!("{other:?}"),
    };
    // A property length of 0: nothing allocated, and reads see an empty set.
    let plain = decoded(&[0x30, 0x05, 0x00, 0x01, b't', 0x00, b'x']);
    assert!(plain.properties.get().is_none());
    assert!(plain.properties.is_empty());
    assert_eq!(plain.properties.topic_alias, None);
    assert_eq!(*plain.properties, PublishProperties::default());
    // With a property they are stored.
    let aliased = decoded(&[0x30, 0x08, 0x00, 0x01, b't', 0x03, 0x23, 0x00, 0x01, b'x']);
    assert_eq!(aliased.properties.get().unwrap().topic_alias, Some(nz16(1)));

    // `get_mut` never allocates, writing through `DerefMut` does.
    let mut props = PublishPropertiesBox::new();
    assert!(props.get_mut().is_none());
    assert!(props.get().is_none());
    props.content_type = Some(s("text/plain"));
    assert_eq!(
        props.get().unwrap().content_type.as_deref(),
        Some("text/plain")
    );
    // Equality looks at contents: an allocated empty set equals none, and `shrink` frees it.
    props.get_mut().unwrap().content_type = None;
    assert!(props.get().is_some());
    assert_eq!(props, PublishPropertiesBox::default());
    assert_eq!(
        format!("{props:?}"),
        format!("{:?}", PublishProperties::default())
    );
    props.shrink();
    assert!(props.get().is_none());
    // Converting allocates only for a non-empty set, and converts back losslessly.
    assert!(PublishPropertiesBox::from(PublishProperties::default())
        .get()
        .is_none());
    let full = PublishProperties {
        topic_alias: Some(nz16(3)),
        ..PublishProperties::default()
    };
    let boxed = PublishPropertiesBox::from(full.clone());
    assert!(boxed.get().is_some());
    assert_eq!(boxed.into_inner(), full);
    assert_eq!(
        PublishPropertiesBox::new().into_inner(),
        PublishProperties::EMPTY
    );
}

#[test]
fn publish_header_flag_errors() {
    for version in ALL {
        // 3.1.1 §3.3.1.2: both QoS bits set is malformed [MQTT-3.3.1-4].
        assert_error(
            version,
            &[0x36, 0x07, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x01],
            DecodeError::InvalidQoS,
            0x81,
        );
        // 5.0 §3.3.1.1: DUP must be 0 on QoS 0 [MQTT-3.3.1-2].
        assert_error(
            version,
            &[0x38, 0x05, 0x00, 0x03, b'a', b'/', b'b'],
            DecodeError::DupOnQoS0,
            0x81,
        );
        // 3.1.1 §2.3.1: QoS 1 and 2 need a non-zero packet identifier [MQTT-2.3.1-1].
        for first in [0x32, 0x34] {
            assert_error(
                version,
                &[first, 0x07, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x00],
                DecodeError::ZeroPacketId,
                0x82,
            );
        }
    }
}

#[test]
fn publish_topic_errors() {
    for version in ALL {
        // 3.1.1 §1.5.3: ill-formed UTF-8 (0xC3 0x28) and U+0000 [MQTT-1.5.3-1], [MQTT-1.5.3-2].
        assert_error(
            version,
            &[0x30, 0x04, 0x00, 0x02, 0xC3, 0x28],
            DecodeError::InvalidUtf8,
            0x81,
        );
        assert_error(
            version,
            &[0x30, 0x05, 0x00, 0x03, b'a', 0x00, b'b'],
            DecodeError::NullCharacter,
            0x81,
        );
        // 3.1.1 §3.3.2.1: the topic name must not contain wildcards [MQTT-3.3.2-2]. In 5.0 the
        // (empty) property block follows the topic and is read before the topic is checked.
        let props: &[u8] = if version.is_v5() { &[0x00] } else { &[] };
        for topic in [&b"a/+"[..], b"#", b"+/b"] {
            let body = [&[0x00, topic.len() as u8][..], topic, props].concat();
            let bytes = [&[0x30, body.len() as u8][..], &body].concat();
            assert_error(
                version,
                &bytes,
                DecodeError::TopicName(TopicError::WildcardInName),
                0x90,
            );
        }
        // A topic length that runs past the end of the packet.
        assert_error(
            version,
            &[0x30, 0x04, 0x00, 0x09, b'a', b'b'],
            DecodeError::UnexpectedEnd,
            0x81,
        );
    }
}

#[test]
fn publish_v5_property_errors() {
    // 5.0 §2.2.2.2: a property given twice (other than user property / subscription id) is a
    // Protocol Error.
    let duplicate = [
        0x30, 14, 0x00, 0x01, b't', 10, 0x02, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x02,
    ];
    assert_error(V5, &duplicate, DecodeError::DuplicateProperty(0x02), 0x82);
    // Session Expiry Interval is not a PUBLISH property: malformed.
    let not_allowed = [0x30, 9, 0x00, 0x01, b't', 5, 0x11, 0x00, 0x00, 0x00, 0x01];
    assert_error(
        V5,
        &not_allowed,
        DecodeError::PropertyNotAllowed {
            id: 0x11,
            packet: "PUBLISH",
        },
        0x81,
    );
    // 5.0 §3.3.2.3.4: "A Topic Alias of 0 is not permitted" -> Topic Alias invalid.
    let alias_0 = [0x30, 7, 0x00, 0x01, b't', 3, 0x23, 0x00, 0x00];
    assert_error(
        V5,
        &alias_0,
        DecodeError::InvalidPropertyValue { id: 0x23, value: 0 },
        0x94,
    );
    // 5.0 §3.3.2.3.8: a Subscription Identifier of 0 is a Protocol Error.
    let sub_id_0 = [0x30, 6, 0x00, 0x01, b't', 2, 0x0B, 0x00];
    assert_error(
        V5,
        &sub_id_0,
        DecodeError::InvalidPropertyValue { id: 0x0B, value: 0 },
        0x82,
    );
    // 5.0 §3.3.2.3.2: the payload format indicator is 0 or 1.
    let format_2 = [0x30, 6, 0x00, 0x01, b't', 2, 0x01, 0x02];
    assert_error(
        V5,
        &format_2,
        DecodeError::InvalidPropertyValue { id: 0x01, value: 2 },
        0x82,
    );
    // A property length that runs past the end of the packet.
    let long_props = [0x30, 5, 0x00, 0x01, b't', 9, 0x01];
    assert_error(V5, &long_props, DecodeError::UnexpectedEnd, 0x81);
    // A user property whose value is cut off.
    let cut_user = [
        0x30, 10, 0x00, 0x01, b't', 6, 0x26, 0x00, 0x01, b'k', 0x00, 0x05,
    ];
    assert_error(V5, &cut_user, DecodeError::UnexpectedEnd, 0x81);
    // 5.0 §3.3.2.3.5: the response topic is a topic name.
    let response_wildcard = [0x30, 9, 0x00, 0x01, b't', 5, 0x08, 0x00, 0x02, b'a', b'#'];
    assert_error(
        V5,
        &response_wildcard,
        DecodeError::TopicName(TopicError::WildcardInName),
        0x90,
    );
}

#[test]
fn publish_encoding_refuses_zero_packet_id() {
    let packet = Packet::Publish(publish(QoS::AtLeastOnce, "a", 0, b""));
    let mut out = BytesMut::new();
    assert_eq!(
        packet.encode(V3_1_1, &mut out),
        Err(EncodeError::ZeroPacketId(PacketType::Publish))
    );
}

// ---------------------------------------------------------------------------------------------
// PUBACK, PUBREC, PUBREL, PUBCOMP
// ---------------------------------------------------------------------------------------------

/// An acknowledgement's first byte, how to wrap an [`Ack`] in it, and its type.
type AckKind = (u8, fn(Ack) -> Packet, PacketType);

/// The four acknowledgements (3.1.1 §3.4.1, §3.5.1, §3.6.1, §3.7.1: PUBREL's fixed header flags
/// are 0b0010).
fn acks() -> [AckKind; 4] {
    [
        (0x40, Packet::PubAck, PacketType::PubAck),
        (0x50, Packet::PubRec, PacketType::PubRec),
        (0x62, Packet::PubRel, PacketType::PubRel),
        (0x70, Packet::PubComp, PacketType::PubComp),
    ]
}

#[test]
fn acks_v3_two_byte_form() {
    for (first, wrap, packet_type) in acks() {
        for version in V3 {
            assert_both_ways(version, &[first, 0x02, 0x12, 0x34], wrap(Ack::new(0x1234)));
            // Nothing may follow the packet identifier in 3.x.
            assert_error(
                version,
                &[first, 0x03, 0x12, 0x34, 0x00],
                DecodeError::TrailingBytes(1),
                0x81,
            );
            // A v5 reason code is dropped when written for 3.x.
            let with_reason = wrap(Ack::with_reason(0x1234, ReasonCode::UNSPECIFIED_ERROR));
            assert_encodes(version, &with_reason, &[first, 0x02, 0x12, 0x34]);
        }
        for version in ALL {
            assert_error(
                version,
                &[first, 0x02, 0x00, 0x00],
                DecodeError::ZeroPacketId,
                0x82,
            );
        }
        let mut out = BytesMut::new();
        assert_eq!(
            wrap(Ack::new(0)).encode(V5, &mut out),
            Err(EncodeError::ZeroPacketId(packet_type))
        );
    }
    // PUBREL with flags 0 is malformed (3.1.1 §3.6.1 [MQTT-3.6.1-1]).
    assert_error(
        V3_1_1,
        &[0x60, 0x02, 0x00, 0x01],
        DecodeError::InvalidHeaderFlags {
            packet: PacketType::PubRel,
            flags: 0,
        },
        0x81,
    );
}

#[test]
fn acks_v5_short_forms() {
    // 5.0 §3.4.2.1: remaining length 2 means Success and no properties.
    for (first, wrap, _) in acks() {
        assert_both_ways(V5, &[first, 0x02, 0x12, 0x34], wrap(Ack::new(0x1234)));
    }
    // Remaining length 3: a reason code and no properties.
    let cases = [
        (0x40, ReasonCode::NO_MATCHING_SUBSCRIBERS),
        (0x50, ReasonCode::QUOTA_EXCEEDED),
        (0x62, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND),
        (0x70, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND),
    ];
    for ((first, wrap, _), (expected_first, code)) in acks().into_iter().zip(cases) {
        assert_eq!(first, expected_first);
        let packet = wrap(Ack::with_reason(0x1234, code));
        assert_both_ways(V5, &[first, 0x03, 0x12, 0x34, code.0], packet);
        // Success with remaining length 3 or an empty property block is legal but not
        // canonical: it decodes to a plain Ack, which is written back in the 2-byte form.
        assert_decodes(
            V5,
            &[first, 0x03, 0x12, 0x34, 0x00],
            &wrap(Ack::new(0x1234)),
        );
        assert_decodes(
            V5,
            &[first, 0x04, 0x12, 0x34, 0x00, 0x00],
            &wrap(Ack::new(0x1234)),
        );
    }
}

#[test]
fn acks_v5_long_form_with_properties() {
    // 5.0 §3.4.2.2: reason string and user property.
    let bytes = [
        0x40, 18, 0x12, 0x34, 0x87, 14, //
        0x1F, 0x00, 0x04, b'd', b'e', b'n', b'y', //
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v',
    ];
    let ack = Ack {
        packet_id: 0x1234,
        reason_code: ReasonCode::NOT_AUTHORIZED,
        properties: AckProperties {
            reason_string: Some(s("deny")),
            user_properties: vec![user("k", "v")],
        },
    };
    assert_both_ways(V5, &bytes, Packet::PubAck(ack.clone()));
    // Success with properties keeps the reason code byte.
    let success = Ack {
        reason_code: ReasonCode::SUCCESS,
        ..ack
    };
    let mut success_bytes = bytes;
    success_bytes[4] = 0x00;
    success_bytes[0] = 0x70;
    assert_both_ways(V5, &success_bytes, Packet::PubComp(success));
}

#[test]
fn acks_v5_errors() {
    // 5.0 §3.4.2.1: 0x92 is a PUBREL/PUBCOMP code, not a PUBACK one.
    assert_error(
        V5,
        &[0x40, 0x03, 0x00, 0x01, 0x92],
        DecodeError::InvalidReasonCode {
            code: 0x92,
            packet: PacketType::PubAck,
        },
        0x81,
    );
    // 5.0 §3.6.2.1: PUBREL only knows 0x00 and 0x92.
    assert_error(
        V5,
        &[0x62, 0x03, 0x00, 0x01, 0x10],
        DecodeError::InvalidReasonCode {
            code: 0x10,
            packet: PacketType::PubRel,
        },
        0x81,
    );
    // 5.0 §3.4.2.2: only reason string and user property are allowed.
    assert_error(
        V5,
        &[0x40, 0x07, 0x00, 0x01, 0x00, 0x03, 0x23, 0x00, 0x01],
        DecodeError::PropertyNotAllowed {
            id: 0x23,
            packet: "an acknowledgement",
        },
        0x81,
    );
    // Two reason strings.
    assert_error(
        V5,
        &[
            0x40, 0x0A, 0x00, 0x01, 0x00, 0x06, 0x1F, 0x00, 0x00, 0x1F, 0x00, 0x00,
        ],
        DecodeError::DuplicateProperty(0x1F),
        0x82,
    );
    // Bytes after the property block.
    assert_error(
        V5,
        &[0x40, 0x05, 0x00, 0x01, 0x00, 0x00, 0xFF],
        DecodeError::TrailingBytes(1),
        0x81,
    );
}

// ---------------------------------------------------------------------------------------------
// SUBSCRIBE
// ---------------------------------------------------------------------------------------------

fn options(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        ..SubscriptionOptions::default()
    }
}

#[test]
fn subscribe_v3() {
    // 3.1.1 §3.8.2 packet identifier, §3.8.3 filter + requested QoS byte.
    let bytes = [
        0x82, 12, 0x00, 0x0A, //
        0x00, 0x03, b'a', b'/', b'b', 0x01, //
        0x00, 0x01, b'#', 0x02,
    ];
    let expected = Subscribe {
        packet_id: 10,
        filters: vec![
            (s("a/b"), options(QoS::AtLeastOnce)),
            (s("#"), options(QoS::ExactlyOnce)),
        ],
        properties: SubscribeProperties::default(),
    };
    for version in V3 {
        assert_both_ways(version, &bytes, Packet::Subscribe(expected.clone()));
        // 3.1.1 §3.8.3.1: bits 7-2 are reserved [MQTT-3-8.3-4]; bit 2 is no-local only in 5.0.
        assert_error(
            version,
            &[0x82, 0x08, 0x00, 0x0A, 0x00, 0x03, b'a', b'/', b'b', 0x05],
            DecodeError::SubscriptionOptionsReservedBits,
            0x81,
        );
        assert_error(
            version,
            &[0x82, 0x08, 0x00, 0x0A, 0x00, 0x03, b'a', b'/', b'b', 0x03],
            DecodeError::InvalidQoS,
            0x81,
        );
    }
    // 5.0-only options are not written for 3.x.
    let v5_options = Subscribe {
        packet_id: 10,
        filters: vec![(
            s("a/b"),
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::DoNotSend,
            },
        )],
        properties: SubscribeProperties {
            subscription_identifier: Some(nz32(3)),
            user_properties: vec![],
        },
    };
    assert_encodes(
        V3_1_1,
        &Packet::Subscribe(v5_options),
        &[0x82, 0x08, 0x00, 0x0A, 0x00, 0x03, b'a', b'/', b'b', 0x01],
    );
}

#[test]
fn subscribe_v5_options_and_subscription_identifier() {
    // 5.0 §3.8.2.1.2 subscription identifier, §3.8.3.1 subscription options.
    let bytes = [
        0x82, 28, 0x00, 0x0B, //
        0x02, 0x0B, 0x05, // subscription identifier 5
        0x00, 0x03, b'a', b'/', b'+', 0x2D, // QoS 1, no local, retain as published, RH 2
        0x00, 0x0A, b'$', b's', b'h', b'a', b'r', b'e', b'/', b'g', b'/', b'a',
        0x12, // QoS 2, RH 1
        0x00, 0x01, b'x', 0x00, // defaults
    ];
    let expected = Subscribe {
        packet_id: 11,
        filters: vec![
            (
                s("a/+"),
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: RetainHandling::DoNotSend,
                },
            ),
            (
                s("$share/g/a"),
                SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    retain_handling: RetainHandling::SendIfNewSubscription,
                    ..SubscriptionOptions::default()
                },
            ),
            (s("x"), options(QoS::AtMostOnce)),
        ],
        properties: SubscribeProperties {
            subscription_identifier: Some(nz32(5)),
            user_properties: vec![],
        },
    };
    assert_both_ways(V5, &bytes, Packet::Subscribe(expected));

    // The largest subscription identifier and a user property.
    let bytes = [
        0x82, 18, 0x00, 0x01, 11, 0x0B, 0xFF, 0xFF, 0xFF, 0x7F, 0x26, 0x00, 0x01, b'k', 0x00, 0x00,
        0x00, 0x01, b'#', 0x00,
    ];
    let expected = Subscribe {
        packet_id: 1,
        filters: vec![(s("#"), options(QoS::AtMostOnce))],
        properties: SubscribeProperties {
            subscription_identifier: Some(nz32(268_435_455)),
            user_properties: vec![user("k", "")],
        },
    };
    assert_both_ways(V5, &bytes, Packet::Subscribe(expected));
}

#[test]
fn subscribe_errors() {
    for version in ALL {
        let props: &[u8] = if version.is_v5() { &[0x00] } else { &[] };
        let with_props = |rest: &[u8]| -> Vec<u8> {
            let body: Vec<u8> = [&[0x00, 0x0A], props, rest].concat();
            [&[0x82, body.len() as u8][..], &body].concat()
        };
        // 3.1.1 §3.8.3: at least one filter [MQTT-3.8.3-3].
        assert_error(
            version,
            &with_props(&[]),
            DecodeError::NoTopicFilters(PacketType::Subscribe),
            0x82,
        );
        // 3.1.1 §4.7.1.2: '#' must be last; §4.7.1.3: '+' must fill a whole level.
        assert_error(
            version,
            &with_props(&[0x00, 0x05, b'a', b'/', b'#', b'/', b'b', 0x00]),
            DecodeError::TopicFilter(TopicError::MisplacedMultiLevelWildcard),
            0x8F,
        );
        assert_error(
            version,
            &with_props(&[0x00, 0x02, b'a', b'+', 0x00]),
            DecodeError::TopicFilter(TopicError::MisplacedSingleLevelWildcard),
            0x8F,
        );
        assert_error(
            version,
            &with_props(&[0x00, 0x02, b'a', 0x00, 0x00]),
            DecodeError::NullCharacter,
            0x81,
        );
        // The options byte is missing.
        assert_error(
            version,
            &with_props(&[0x00, 0x01, b'a']),
            DecodeError::UnexpectedEnd,
            0x81,
        );
        // 3.1.1 §2.3.1: packet identifier 0 [MQTT-2.3.1-1].
        let mut zero_id = with_props(&[0x00, 0x01, b'a', 0x00]);
        zero_id[3] = 0x00;
        assert_error(version, &zero_id, DecodeError::ZeroPacketId, 0x82);
        // 3.1.1 §3.8.1: fixed header flags must be 0b0010 [MQTT-3.8.1-1].
        let mut flags_0 = with_props(&[0x00, 0x01, b'a', 0x00]);
        flags_0[0] = 0x80;
        assert_error(
            version,
            &flags_0,
            DecodeError::InvalidHeaderFlags {
                packet: PacketType::Subscribe,
                flags: 0,
            },
            0x81,
        );
    }
}

#[test]
fn subscribe_v5_option_errors() {
    let with_options = |byte: u8, filter: &[u8]| -> Vec<u8> {
        let body: Vec<u8> = [
            &[0x00, 0x0A, 0x00, 0x00, filter.len() as u8][..],
            filter,
            &[byte],
        ]
        .concat();
        [&[0x82, body.len() as u8][..], &body].concat()
    };
    // 5.0 §3.8.3.1: bits 6 and 7 are reserved: malformed [MQTT-3.8.3-5].
    for byte in [0x40, 0x80] {
        assert_error(
            V5,
            &with_options(byte, b"a"),
            DecodeError::SubscriptionOptionsReservedBits,
            0x81,
        );
    }
    // "It is a Protocol Error if the Maximum QoS field has the value 3." (In 3.1.1 the same
    // byte is malformed, see `subscribe_v3`.)
    assert_error(
        V5,
        &with_options(0x03, b"a"),
        DecodeError::InvalidSubscriptionQoS,
        0x82,
    );
    // "It is a Protocol Error to send a Retain Handling value of 3."
    assert_error(
        V5,
        &with_options(0x30, b"a"),
        DecodeError::InvalidRetainHandling,
        0x82,
    );
    // "It is a Protocol Error to set the No Local bit to 1 on a Shared Subscription"
    // [MQTT-3.8.3-4].
    assert_error(
        V5,
        &with_options(0x04, b"$share/g/a"),
        DecodeError::NoLocalOnSharedSubscription,
        0x82,
    );
    // No-local on a plain filter is fine, and so is a shared filter without it.
    assert!(decode(V5, &with_options(0x04, b"a")).is_ok());
    assert!(decode(V5, &with_options(0x00, b"$share/g/a")).is_ok());
    // 5.0 §4.8.2: a share name must be followed by a filter.
    assert_error(
        V5,
        &with_options(0x00, b"$share/g"),
        DecodeError::TopicFilter(TopicError::MalformedSharedSubscription),
        0x8F,
    );
    // 5.0 §3.8.2.1.2: Subscription Identifier 0 is a Protocol Error.
    assert_error(
        V5,
        &[
            0x82, 0x09, 0x00, 0x0A, 0x02, 0x0B, 0x00, 0x00, 0x01, b'a', 0x00,
        ],
        DecodeError::InvalidPropertyValue { id: 0x0B, value: 0 },
        0x82,
    );
}

// ---------------------------------------------------------------------------------------------
// SUBACK
// ---------------------------------------------------------------------------------------------

fn suback(packet_id: u16, codes: &[u8]) -> SubAck {
    SubAck {
        packet_id,
        reason_codes: codes.iter().copied().map(ReasonCode).collect(),
        properties: AckProperties::default(),
    }
}

#[test]
fn suback_v3() {
    // 3.1.1 §3.9.3: 0x00, 0x01, 0x02 granted, 0x80 failure.
    assert_both_ways(
        V3_1_1,
        &[0x90, 0x06, 0x00, 0x0A, 0x00, 0x01, 0x02, 0x80],
        Packet::SubAck(suback(10, &[0x00, 0x01, 0x02, 0x80])),
    );
    // 3.1 §3.9: granted QoS only.
    assert_both_ways(
        V3_1,
        &[0x90, 0x05, 0x00, 0x0A, 0x00, 0x01, 0x02],
        Packet::SubAck(suback(10, &[0x00, 0x01, 0x02])),
    );
    assert_error(
        V3_1,
        &[0x90, 0x03, 0x00, 0x0A, 0x80],
        DecodeError::InvalidReasonCode {
            code: 0x80,
            packet: PacketType::SubAck,
        },
        0x81,
    );
    // A v5 failure code is not a 3.1.1 one, and is written as 0x80.
    assert_error(
        V3_1_1,
        &[0x90, 0x03, 0x00, 0x0A, 0x87],
        DecodeError::InvalidReasonCode {
            code: 0x87,
            packet: PacketType::SubAck,
        },
        0x81,
    );
    assert_encodes(
        V3_1_1,
        &Packet::SubAck(suback(10, &[0x87, 0x01])),
        &[0x90, 0x04, 0x00, 0x0A, 0x80, 0x01],
    );
    for version in ALL {
        let empty: &[u8] = if version.is_v5() {
            &[0x90, 0x03, 0x00, 0x0A, 0x00]
        } else {
            &[0x90, 0x02, 0x00, 0x0A]
        };
        assert_error(
            version,
            empty,
            DecodeError::NoTopicFilters(PacketType::SubAck),
            0x82,
        );
    }
}

#[test]
fn suback_v5() {
    // 5.0 §3.9.3: every SUBACK reason code.
    let codes = [
        0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
    ];
    let bytes: Vec<u8> = [&[0x90, 15, 0x00, 0x0A, 0x00][..], &codes].concat();
    assert_both_ways(V5, &bytes, Packet::SubAck(suback(10, &codes)));
    // 5.0 §3.9.2.1: reason string.
    let bytes = [
        0x90, 0x09, 0x00, 0x0B, 0x05, 0x1F, 0x00, 0x02, b'n', b'o', 0x87,
    ];
    let expected = SubAck {
        properties: AckProperties {
            reason_string: Some(s("no")),
            user_properties: vec![],
        },
        ..suback(11, &[0x87])
    };
    assert_both_ways(V5, &bytes, Packet::SubAck(expected));
    // 0x11 (no subscription existed) is an UNSUBACK code.
    assert_error(
        V5,
        &[0x90, 0x04, 0x00, 0x0A, 0x00, 0x11],
        DecodeError::InvalidReasonCode {
            code: 0x11,
            packet: PacketType::SubAck,
        },
        0x81,
    );
}

// ---------------------------------------------------------------------------------------------
// UNSUBSCRIBE and UNSUBACK
// ---------------------------------------------------------------------------------------------

#[test]
fn unsubscribe() {
    // 3.1.1 §3.10: packet identifier then filters, fixed header flags 0b0010.
    let bytes = [
        0xA2, 10, 0x00, 0x0C, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x01, b'#',
    ];
    let expected = Unsubscribe {
        packet_id: 12,
        filters: vec![s("a/b"), s("#")],
        properties: UnsubscribeProperties::default(),
    };
    for version in V3 {
        assert_both_ways(version, &bytes, Packet::Unsubscribe(expected.clone()));
        assert_error(
            version,
            &[0xA2, 0x02, 0x00, 0x0C],
            DecodeError::NoTopicFilters(PacketType::Unsubscribe),
            0x82,
        );
    }
    // 5.0 §3.10.2.1: user properties only.
    let bytes = [
        0xA2, 15, 0x00, 0x0C, 0x07, 0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', 0x00, 0x03, b'a',
        b'/', b'+',
    ];
    let expected = Unsubscribe {
        packet_id: 12,
        filters: vec![s("a/+")],
        properties: UnsubscribeProperties {
            user_properties: vec![user("k", "v")],
        },
    };
    assert_both_ways(V5, &bytes, Packet::Unsubscribe(expected));
    // 5.0 §3.10.3: at least one filter [MQTT-3.10.3-2].
    assert_error(
        V5,
        &[0xA2, 0x03, 0x00, 0x0C, 0x00],
        DecodeError::NoTopicFilters(PacketType::Unsubscribe),
        0x82,
    );
    assert_error(
        V5,
        &[0xA2, 0x06, 0x00, 0x0C, 0x02, 0x0B, 0x01, 0x00],
        DecodeError::PropertyNotAllowed {
            id: 0x0B,
            packet: "UNSUBSCRIBE",
        },
        0x81,
    );
    for version in ALL {
        let props: &[u8] = if version.is_v5() { &[0x00] } else { &[] };
        let body: Vec<u8> = [&[0x00, 0x0C][..], props, &[0x00, 0x03, b'a', b'#', b'b']].concat();
        let bytes = [&[0xA2, body.len() as u8][..], &body].concat();
        assert_error(
            version,
            &bytes,
            DecodeError::TopicFilter(TopicError::MisplacedMultiLevelWildcard),
            0x8F,
        );
        // 3.1.1 §3.10.1: flags must be 0b0010 [MQTT-3.10.1-1].
        assert_error(
            version,
            &[0xA0, 0x05, 0x00, 0x0C, 0x00, 0x01, b'a'],
            DecodeError::InvalidHeaderFlags {
                packet: PacketType::Unsubscribe,
                flags: 0,
            },
            0x81,
        );
    }
}

#[test]
fn unsuback() {
    // 3.1.1 §3.11: just the packet identifier.
    let v3 = UnsubAck(SubAck {
        packet_id: 12,
        ..SubAck::default()
    });
    for version in V3 {
        assert_both_ways(
            version,
            &[0xB0, 0x02, 0x00, 0x0C],
            Packet::UnsubAck(v3.clone()),
        );
        assert_error(
            version,
            &[0xB0, 0x03, 0x00, 0x0C, 0x00],
            DecodeError::TrailingBytes(1),
            0x81,
        );
        // v5 codes and properties are not written for 3.x.
        let v5 = UnsubAck(SubAck {
            properties: AckProperties {
                reason_string: Some(s("x")),
                user_properties: vec![],
            },
            ..suback(12, &[0x11])
        });
        assert_encodes(version, &Packet::UnsubAck(v5), &[0xB0, 0x02, 0x00, 0x0C]);
    }
    // 5.0 §3.11.3: one reason code per filter.
    assert_both_ways(
        V5,
        &[0xB0, 0x06, 0x00, 0x0C, 0x00, 0x00, 0x11, 0x80],
        Packet::UnsubAck(UnsubAck(suback(12, &[0x00, 0x11, 0x80]))),
    );
    assert_error(
        V5,
        &[0xB0, 0x04, 0x00, 0x0C, 0x00, 0x01],
        DecodeError::InvalidReasonCode {
            code: 0x01,
            packet: PacketType::UnsubAck,
        },
        0x81,
    );
    assert_error(
        V5,
        &[0xB0, 0x03, 0x00, 0x0C, 0x00],
        DecodeError::NoTopicFilters(PacketType::UnsubAck),
        0x82,
    );
}

// ---------------------------------------------------------------------------------------------
// PINGREQ, PINGRESP, DISCONNECT, AUTH
// ---------------------------------------------------------------------------------------------

#[test]
fn ping() {
    // 3.1.1 §3.12, §3.13: fixed header only.
    for version in ALL {
        assert_both_ways(version, &[0xC0, 0x00], Packet::PingReq);
        assert_both_ways(version, &[0xD0, 0x00], Packet::PingResp);
        assert_error(
            version,
            &[0xC1, 0x00],
            DecodeError::InvalidHeaderFlags {
                packet: PacketType::PingReq,
                flags: 1,
            },
            0x81,
        );
        // No variable header and no payload: anything after the header is malformed.
        assert_error(
            version,
            &[0xC0, 0x01, 0x00],
            DecodeError::TrailingBytes(1),
            0x81,
        );
        assert_error(
            version,
            &[0xD0, 0x02, 0x00, 0x00],
            DecodeError::TrailingBytes(2),
            0x81,
        );
    }
}

#[test]
fn disconnect_v3() {
    // 3.1.1 §3.14: fixed header only.
    for version in V3 {
        assert_both_ways(version, &[0xE0, 0x00], Packet::Disconnect(Box::default()));
        assert_error(
            version,
            &[0xE0, 0x01, 0x00],
            DecodeError::TrailingBytes(1),
            0x81,
        );
        let with_reason = Disconnect::with_reason(ReasonCode::SERVER_SHUTTING_DOWN);
        assert_encodes(
            version,
            &Packet::Disconnect(Box::new(with_reason)),
            &[0xE0, 0x00],
        );
    }
}

#[test]
fn disconnect_v5() {
    // 5.0 §3.14.2.1: remaining length 0 means Normal disconnection.
    assert_both_ways(V5, &[0xE0, 0x00], Packet::Disconnect(Box::default()));
    // Remaining length 1: reason code only; decoded, but written with an empty property
    // length, which every client parses.
    let with_will = Disconnect::with_reason(ReasonCode::DISCONNECT_WITH_WILL_MESSAGE);
    assert_decodes(
        V5,
        &[0xE0, 0x01, 0x04],
        &Packet::Disconnect(Box::new(with_will.clone())),
    );
    assert_both_ways(
        V5,
        &[0xE0, 0x02, 0x04, 0x00],
        Packet::Disconnect(Box::new(with_will)),
    );
    assert_decodes(V5, &[0xE0, 0x01, 0x00], &Packet::Disconnect(Box::default()));
    // 5.0 §3.14.2.2: reason code and properties.
    let bytes = [
        0xE0, 24, 0x8E, 22, //
        0x11, 0x00, 0x00, 0x00, 0x00, // session expiry interval
        0x1F, 0x00, 0x03, b'b', b'y', b'e', // reason string
        0x1C, 0x00, 0x01, b's', // server reference
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // user property
    ];
    let expected = Disconnect {
        reason_code: ReasonCode::SESSION_TAKEN_OVER,
        properties: DisconnectProperties {
            session_expiry_interval: Some(0),
            reason_string: Some(s("bye")),
            server_reference: Some(s("s")),
            user_properties: vec![user("k", "v")],
        },
    };
    assert_both_ways(V5, &bytes, Packet::Disconnect(Box::new(expected)));
    // Normal disconnection with a property still writes the reason code.
    let normal_with_props = Disconnect {
        properties: DisconnectProperties {
            reason_string: Some(s("x")),
            ..DisconnectProperties::default()
        },
        ..Disconnect::default()
    };
    assert_both_ways(
        V5,
        &[0xE0, 0x06, 0x00, 0x04, 0x1F, 0x00, 0x01, b'x'],
        Packet::Disconnect(Box::new(normal_with_props)),
    );
    // 0x18 (continue authentication) is an AUTH code.
    assert_error(
        V5,
        &[0xE0, 0x01, 0x18],
        DecodeError::InvalidReasonCode {
            code: 0x18,
            packet: PacketType::Disconnect,
        },
        0x81,
    );
    assert_error(
        V5,
        &[0xE0, 0x04, 0x00, 0x02, 0x23, 0x00],
        DecodeError::PropertyNotAllowed {
            id: 0x23,
            packet: "DISCONNECT",
        },
        0x81,
    );
    assert_error(
        V5,
        &[0xE0, 0x03, 0x00, 0x00, 0x00],
        DecodeError::TrailingBytes(1),
        0x81,
    );
}

#[test]
fn auth() {
    // 5.0 §3.15.2.1: remaining length 0 means Success.
    assert_both_ways(V5, &[0xF0, 0x00], Packet::Auth(Box::default()));
    // 5.0 §3.15.2.2: method, data and reason string.
    let bytes = [
        0xF0, 20, 0x18, 18, //
        0x15, 0x00, 0x05, b'S', b'C', b'R', b'A', b'M', //
        0x16, 0x00, 0x02, 0x01, 0x02, //
        0x1F, 0x00, 0x02, b'g', b'o',
    ];
    let expected = Auth {
        reason_code: ReasonCode::CONTINUE_AUTHENTICATION,
        properties: AuthProperties {
            authentication_method: Some(s("SCRAM")),
            authentication_data: Some(b(&[1, 2])),
            reason_string: Some(s("go")),
            user_properties: vec![],
        },
    };
    assert_both_ways(V5, &bytes, Packet::Auth(Box::new(expected.clone())));
    assert_both_ways(
        V5,
        &[0xF0, 0x02, 0x19, 0x00],
        Packet::Auth(Box::new(Auth {
            reason_code: ReasonCode::RE_AUTHENTICATE,
            ..Auth::default()
        })),
    );
    assert_error(
        V5,
        &[0xF0, 0x06, 0x18, 0x04, 0x16, 0x00, 0x01, 0x07],
        DecodeError::AuthDataWithoutMethod,
        0x82,
    );
    assert_error(
        V5,
        &[0xF0, 0x01, 0x87],
        DecodeError::InvalidReasonCode {
            code: 0x87,
            packet: PacketType::Auth,
        },
        0x81,
    );
    // AUTH does not exist before 5.0: packet type 15 is reserved in 3.1.1 §2.2.1.
    for version in V3 {
        assert_error(
            version,
            &[0xF0, 0x00],
            DecodeError::PacketNotInVersion(PacketType::Auth),
            0x82,
        );
        let mut out = BytesMut::new();
        assert_eq!(
            Packet::Auth(Box::new(expected.clone())).encode(version, &mut out),
            Err(EncodeError::PacketNotInVersion(PacketType::Auth))
        );
        assert!(out.is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// Fixed header and stream-level errors
// ---------------------------------------------------------------------------------------------

#[test]
fn fixed_header_errors() {
    for version in ALL {
        // 3.1.1 §2.2.3: the remaining length is at most four bytes.
        assert_error(
            version,
            &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            DecodeError::MalformedRemainingLength,
            0x81,
        );
        // 3.1.1 §2.2.1: packet types 0 and (before 5.0) 15 are reserved.
        assert_error(
            version,
            &[0x00, 0x00],
            DecodeError::ReservedPacketType(0),
            0x81,
        );
        // 3.1.1 §2.2.2: flags of every packet but PUBLISH are fixed.
        for (first, packet) in [
            (0x21, PacketType::ConnAck),
            (0x42, PacketType::PubAck),
            (0x88, PacketType::Subscribe),
            (0xE8, PacketType::Disconnect),
        ] {
            assert_error(
                version,
                &[first, 0x00],
                DecodeError::InvalidHeaderFlags {
                    packet,
                    flags: first & 0x0F,
                },
                0x81,
            );
        }
    }
}

#[test]
fn server_decoder_requires_connect_first() {
    // 3.1.1 §3.1: "the first Packet sent from the Client to the Server MUST be a CONNECT
    // Packet" [MQTT-3.1.0-1].
    for bytes in [&[0xC0, 0x00][..], &[0x30, 0x03, 0x00, 0x01, b'a']] {
        let mut buf = BytesMut::from(bytes);
        let error = Decoder::server(MAX_PACKET_SIZE)
            .decode(&mut buf)
            .expect_err("not a CONNECT");
        let packet = if bytes[0] == 0xC0 {
            PacketType::PingReq
        } else {
            PacketType::Publish
        };
        assert_eq!(error, DecodeError::ExpectedConnect(packet));
        assert_eq!(error.reason_code(), ReasonCode::PROTOCOL_ERROR);
    }
}

#[test]
fn packet_too_large_is_reported_from_the_fixed_header() {
    // 5.0 §3.1.2.11.4 / §4.13: a packet over the maximum size is refused with 0x95. Only the
    // five header bytes of a 256 MiB PUBLISH are present.
    let mut buf = BytesMut::from(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F][..]);
    let mut decoder = Decoder::server(1024);
    let error = decoder.decode(&mut buf).expect_err("too large");
    assert_eq!(
        error,
        DecodeError::PacketTooLarge {
            size: 268_435_455 + 5,
            max: 1024
        }
    );
    assert_eq!(error.reason_code(), ReasonCode::PACKET_TOO_LARGE);
    assert_eq!(decoder.bytes_needed(&buf), Err(error));
}
