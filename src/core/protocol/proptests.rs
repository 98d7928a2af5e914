//! Property tests of the whole codec: strategies that generate arbitrary *valid* packets of every
//! type for every protocol version, and the properties every such packet must have.
//!
//! "Valid" follows what each version can carry: 3.x packets have no properties and no reason codes
//! beyond the ones 3.x defines, strings are MQTT strings (no U+0000), topics are valid names,
//! filters valid filters (plain or `$share/`), no-local is never set on a shared filter, and so
//! on. Anything the encoder would silently drop or normalise is never generated, so a round trip
//! must give back exactly the packet that went in.
//!
//! The case count defaults to a number that keeps the codec suite at a few seconds in a debug
//! build; set `PROPTEST_CASES` for a longer run.

use std::num::{NonZeroU16, NonZeroU32};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::Config;

use super::decoder::{Decoder, MAX_PACKET_SIZE};
use super::properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PublishProperties, SubscribeProperties, UnsubscribeProperties, UserProperties, WillProperties,
};
use super::reason::{ConnectReturnCode, ReasonCode};
use super::wire::MAX_VARIABLE_BYTE_INTEGER;
use super::*;

const DEFAULT_CASES: u32 = 96;

fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    Config {
        cases,
        // Failures are reported with their minimal input; no regression files are written into
        // the source tree.
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Primitive strategies
// ---------------------------------------------------------------------------------------------

fn version() -> impl Strategy<Value = ProtocolVersion> {
    select(vec![
        ProtocolVersion::V3_1,
        ProtocolVersion::V3_1_1,
        ProtocolVersion::V5,
    ])
}

fn qos() -> impl Strategy<Value = QoS> {
    select(vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
}

/// Any MQTT string: UTF-8 without U+0000, mostly short, sometimes multi-byte characters.
fn mqtt_string() -> impl Strategy<Value = ByteString> {
    prop_oneof![
        3 => "[a-z0-9/ _-]{0,8}",
        1 => "[^\\x00]{0,6}",
    ]
    .prop_map(ByteString::from)
}

fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..12).prop_map(Bytes::from)
}

fn payload() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        4 => vec(any::<u8>(), 0..48),
        1 => vec(any::<u8>(), 100..400),
    ]
    .prop_map(Bytes::from)
}

fn packet_id() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

fn nonzero_u16() -> impl Strategy<Value = NonZeroU16> {
    (1..=u16::MAX).prop_map(|value| NonZeroU16::new(value).unwrap())
}

fn nonzero_u32() -> impl Strategy<Value = NonZeroU32> {
    (1..=u32::MAX).prop_map(|value| NonZeroU32::new(value).unwrap())
}

/// Subscription identifiers are variable byte integers from 1 to 268435455.
fn subscription_id() -> impl Strategy<Value = NonZeroU32> {
    prop_oneof![1..=200u32, 1..=MAX_VARIABLE_BYTE_INTEGER]
        .prop_map(|value| NonZeroU32::new(value).unwrap())
}

fn user_properties() -> impl Strategy<Value = UserProperties> {
    vec((mqtt_string(), mqtt_string()), 0..3)
}

/// A level of a topic name or filter without wildcards or separators.
fn plain_level() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9 _$-]{0,4}",
        1 => "[^\\x00/+#]{1,3}",
    ]
}

/// A valid topic name: non-empty, no wildcards, no U+0000.
fn topic_name() -> impl Strategy<Value = ByteString> {
    vec(plain_level(), 1..5)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("topic names are not empty", |name| !name.is_empty())
        .prop_map(ByteString::from)
}

/// A valid plain (non-shared) topic filter, with '+' levels and possibly a trailing '#'.
fn plain_filter() -> impl Strategy<Value = String> {
    let level = prop_oneof![3 => plain_level(), 1 => Just("+".to_owned())];
    (vec(level, 0..4), any::<bool>())
        .prop_map(|(mut levels, multi)| {
            if multi || levels.is_empty() {
                levels.push("#".to_owned());
            }
            levels.join("/")
        })
        .prop_filter("a valid plain filter", |filter| {
            !filter.is_empty() && !filter.starts_with("$share/")
        })
}

/// A valid filter and whether it is a shared subscription (`$share/<group>/<filter>`).
fn topic_filter() -> impl Strategy<Value = (ByteString, bool)> {
    let group = "[a-z0-9$]{1,4}|[^\\x00/+#]{1,2}";
    prop_oneof![
        3 => plain_filter().prop_map(|filter| (ByteString::from(filter), false)),
        1 => (group, plain_filter()).prop_map(|(group, filter)| {
            (ByteString::from(format!("$share/{group}/{filter}")), true)
        }),
    ]
}

fn codes(values: &[u8]) -> impl Strategy<Value = ReasonCode> {
    select(values.iter().copied().map(ReasonCode).collect::<Vec<_>>())
}

// Reason codes each packet may carry in 5.0 (the tables in §3.2.2.2, §3.4.2.1 and following).
const CONNACK_CODES: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
const PUBACK_CODES: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_CODES: &[u8] = &[0x00, 0x92];
const SUBACK_CODES: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
const UNSUBACK_CODES: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
const DISCONNECT_CODES: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
const AUTH_CODES: &[u8] = &[0x00, 0x18, 0x19];

/// Authentication method and data; data is never sent without a method (5.0 §3.1.2.11.10).
fn authentication() -> impl Strategy<Value = (Option<ByteString>, Option<Bytes>)> {
    option::of((mqtt_string(), option::of(binary())))
        .prop_map(|auth| auth.map_or((None, None), |(method, data)| (Some(method), data)))
}

// ---------------------------------------------------------------------------------------------
// Property sets (5.0 only)
// ---------------------------------------------------------------------------------------------

fn connect_properties() -> impl Strategy<Value = ConnectProperties> {
    (
        option::of(any::<u32>()),
        option::of(nonzero_u16()),
        option::of(nonzero_u32()),
        option::of(any::<u16>()),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
        authentication(),
        user_properties(),
    )
        .prop_map(
            |(session, receive, max_size, alias_max, response, problem, (method, data), user)| {
                ConnectProperties {
                    session_expiry_interval: session,
                    receive_maximum: receive,
                    maximum_packet_size: max_size,
                    topic_alias_maximum: alias_max,
                    request_response_information: response,
                    request_problem_information: problem,
                    authentication_method: method,
                    authentication_data: data,
                    user_properties: user,
                }
            },
        )
}

fn will_properties() -> impl Strategy<Value = WillProperties> {
    (
        option::of(any::<u32>()),
        option::of(any::<bool>()),
        option::of(any::<u32>()),
        option::of(mqtt_string()),
        option::of(topic_name()),
        option::of(binary()),
        user_properties(),
    )
        .prop_map(
            |(delay, format, expiry, content_type, response_topic, correlation, user)| {
                WillProperties {
                    will_delay_interval: delay,
                    payload_format_indicator: format,
                    message_expiry_interval: expiry,
                    content_type,
                    response_topic,
                    correlation_data: correlation,
                    user_properties: user,
                }
            },
        )
}

fn connack_properties() -> impl Strategy<Value = ConnAckProperties> {
    let limits = (
        option::of(any::<u32>()),
        option::of(nonzero_u16()),
        option::of(select(vec![QoS::AtMostOnce, QoS::AtLeastOnce])),
        option::of(any::<bool>()),
        option::of(nonzero_u32()),
        option::of(any::<u16>()),
        option::of(any::<u16>()),
    );
    let features = (
        option::of(any::<bool>()),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
    );
    let strings = (
        option::of(mqtt_string()),
        option::of(mqtt_string()),
        option::of(mqtt_string()),
        option::of(mqtt_string()),
        authentication(),
        user_properties(),
    );
    (limits, features, strings).prop_map(
        |(
            (session, receive, max_qos, retain, max_size, alias_max, keep_alive),
            (wildcard, sub_ids, shared),
            (assigned, reason, response, reference, (method, data), user),
        )| ConnAckProperties {
            session_expiry_interval: session,
            receive_maximum: receive,
            maximum_qos: max_qos,
            retain_available: retain,
            maximum_packet_size: max_size,
            assigned_client_identifier: assigned,
            topic_alias_maximum: alias_max,
            reason_string: reason,
            wildcard_subscription_available: wildcard,
            subscription_identifiers_available: sub_ids,
            shared_subscription_available: shared,
            server_keep_alive: keep_alive,
            response_information: response,
            server_reference: reference,
            authentication_method: method,
            authentication_data: data,
            user_properties: user,
        },
    )
}

/// PUBLISH properties without the topic alias, which [`publish`] decides with the topic.
fn publish_properties() -> impl Strategy<Value = PublishProperties> {
    (
        option::of(any::<bool>()),
        option::of(any::<u32>()),
        option::of(topic_name()),
        option::of(binary()),
        option::of(mqtt_string()),
        vec(subscription_id(), 0..4),
        user_properties(),
    )
        .prop_map(
            |(format, expiry, response_topic, correlation, content_type, sub_ids, user)| {
                PublishProperties {
                    payload_format_indicator: format,
                    message_expiry_interval: expiry,
                    topic_alias: None,
                    response_topic,
                    correlation_data: correlation,
                    content_type,
                    subscription_identifiers: sub_ids,
                    user_properties: user,
                }
            },
        )
}

fn ack_properties() -> impl Strategy<Value = AckProperties> {
    (option::of(mqtt_string()), user_properties()).prop_map(|(reason, user)| AckProperties {
        reason_string: reason,
        user_properties: user,
    })
}

fn disconnect_properties() -> impl Strategy<Value = DisconnectProperties> {
    (
        option::of(any::<u32>()),
        option::of(mqtt_string()),
        option::of(mqtt_string()),
        user_properties(),
    )
        .prop_map(|(session, reason, reference, user)| DisconnectProperties {
            session_expiry_interval: session,
            reason_string: reason,
            server_reference: reference,
            user_properties: user,
        })
}

fn auth_properties() -> impl Strategy<Value = AuthProperties> {
    (
        authentication(),
        option::of(mqtt_string()),
        user_properties(),
    )
        .prop_map(|((method, data), reason, user)| AuthProperties {
            authentication_method: method,
            authentication_data: data,
            reason_string: reason,
            user_properties: user,
        })
}

/// `strategy` in 5.0, the default value (nothing on the wire) in 3.x.
fn v5_only<T: Default + Clone + std::fmt::Debug + 'static>(
    version: ProtocolVersion,
    strategy: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<T> {
    if version.is_v5() {
        strategy.boxed()
    } else {
        Just(T::default()).boxed()
    }
}

// ---------------------------------------------------------------------------------------------
// Packets
// ---------------------------------------------------------------------------------------------

fn connect(version: ProtocolVersion) -> impl Strategy<Value = Connect> {
    let will = (
        topic_name(),
        binary(),
        qos(),
        any::<bool>(),
        v5_only(version, will_properties()),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| LastWill {
            topic,
            payload,
            qos,
            retain,
            properties,
        });
    (
        any::<bool>(),
        any::<u16>(),
        mqtt_string(),
        option::of(will),
        option::of(mqtt_string()),
        option::of(binary()),
        v5_only(version, connect_properties()),
    )
        .prop_map(
            move |(clean_start, keep_alive, client_id, will, username, password, properties)| {
                // 3.x: no password without a user name (3.1.1 §3.1.2.9).
                let password = if version.is_v5() || username.is_some() {
                    password
                } else {
                    None
                };
                Connect {
                    protocol: version,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                }
            },
        )
}

fn connack(version: ProtocolVersion) -> BoxedStrategy<ConnAck> {
    let reason_code = match version {
        ProtocolVersion::V5 => codes(CONNACK_CODES).boxed(),
        _ => (0..=5u8)
            .prop_map(|code| ConnectReturnCode::from_u8(code).unwrap().to_reason())
            .boxed(),
    };
    (
        any::<bool>(),
        reason_code,
        v5_only(version, connack_properties()),
    )
        .prop_map(move |(session_present, reason_code, properties)| ConnAck {
            // Only with success (3.1.1 §3.2.2.2, 5.0 §3.2.2.1.1), and never in 3.1.
            session_present: session_present
                && reason_code == ReasonCode::SUCCESS
                && version != ProtocolVersion::V3_1,
            reason_code,
            properties,
        })
        .boxed()
}

fn publish(version: ProtocolVersion) -> impl Strategy<Value = Publish> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic_name(),
        packet_id(),
        v5_only(version, publish_properties()),
        v5_only(version, option::of((nonzero_u16(), any::<bool>()))),
        payload(),
    )
        .prop_map(
            |(qos, dup, retain, topic, packet_id, mut properties, alias, payload)| {
                let mut topic = topic;
                if let Some((alias, drop_topic)) = alias {
                    properties.topic_alias = Some(alias);
                    if drop_topic {
                        topic = ByteString::new();
                    }
                }
                let has_id = qos != QoS::AtMostOnce;
                Publish {
                    dup: dup && has_id,
                    qos,
                    retain,
                    topic,
                    packet_id: if has_id { packet_id } else { 0 },
                    properties: properties.into(),
                    payload,
                }
            },
        )
}

fn ack(version: ProtocolVersion, reason_codes: &'static [u8]) -> impl Strategy<Value = Ack> {
    (
        packet_id(),
        v5_only(version, codes(reason_codes)),
        v5_only(version, ack_properties()),
    )
        .prop_map(|(packet_id, reason_code, properties)| Ack {
            packet_id,
            reason_code,
            properties,
        })
}

fn subscription_options(version: ProtocolVersion) -> BoxedStrategy<SubscriptionOptions> {
    if !version.is_v5() {
        return qos()
            .prop_map(|qos| SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            })
            .boxed();
    }
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        select(vec![
            RetainHandling::SendOnSubscribe,
            RetainHandling::SendIfNewSubscription,
            RetainHandling::DoNotSend,
        ]),
    )
        .prop_map(
            |(qos, no_local, retain_as_published, retain_handling)| SubscriptionOptions {
                qos,
                no_local,
                retain_as_published,
                retain_handling,
            },
        )
        .boxed()
}

fn subscribe(version: ProtocolVersion) -> impl Strategy<Value = Subscribe> {
    let properties = v5_only(
        version,
        (option::of(subscription_id()), user_properties()).prop_map(|(id, user)| {
            SubscribeProperties {
                subscription_identifier: id,
                user_properties: user,
            }
        }),
    );
    let filter = (topic_filter(), subscription_options(version)).prop_map(
        |((filter, shared), mut options)| {
            // 5.0 §3.8.3.1: no-local is a Protocol Error on a shared subscription.
            options.no_local &= !shared;
            (filter, options)
        },
    );
    (packet_id(), vec(filter, 1..5), properties).prop_map(|(packet_id, filters, properties)| {
        Subscribe {
            packet_id,
            filters,
            properties,
        }
    })
}

fn suback(version: ProtocolVersion) -> impl Strategy<Value = SubAck> {
    let code = match version {
        ProtocolVersion::V5 => codes(SUBACK_CODES),
        ProtocolVersion::V3_1_1 => codes(&[0x00, 0x01, 0x02, 0x80]),
        ProtocolVersion::V3_1 => codes(&[0x00, 0x01, 0x02]),
    };
    (
        packet_id(),
        vec(code, 1..6),
        v5_only(version, ack_properties()),
    )
        .prop_map(|(packet_id, reason_codes, properties)| SubAck {
            packet_id,
            reason_codes,
            properties,
        })
}

fn unsubscribe(version: ProtocolVersion) -> impl Strategy<Value = Unsubscribe> {
    let properties = v5_only(
        version,
        user_properties().prop_map(|user| UnsubscribeProperties {
            user_properties: user,
        }),
    );
    (
        packet_id(),
        vec(topic_filter().prop_map(|(filter, _)| filter), 1..5),
        properties,
    )
        .prop_map(|(packet_id, filters, properties)| Unsubscribe {
            packet_id,
            filters,
            properties,
        })
}

fn unsuback(version: ProtocolVersion) -> impl Strategy<Value = UnsubAck> {
    // 3.x UNSUBACK is only the packet identifier.
    let reason_codes = v5_only(version, vec(codes(UNSUBACK_CODES), 1..6));
    (
        packet_id(),
        reason_codes,
        v5_only(version, ack_properties()),
    )
        .prop_map(|(packet_id, reason_codes, properties)| {
            UnsubAck(SubAck {
                packet_id,
                reason_codes,
                properties,
            })
        })
}

fn disconnect(version: ProtocolVersion) -> impl Strategy<Value = Disconnect> {
    (
        v5_only(version, codes(DISCONNECT_CODES)),
        v5_only(version, disconnect_properties()),
    )
        .prop_map(|(reason_code, properties)| Disconnect {
            reason_code,
            properties,
        })
}

fn auth() -> impl Strategy<Value = Auth> {
    (codes(AUTH_CODES), auth_properties()).prop_map(|(reason_code, properties)| Auth {
        reason_code,
        properties,
    })
}

/// Any valid packet of `version`, CONNECT included.
fn packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let common = prop_oneof![
        connect(version).prop_map(|connect| Packet::Connect(Box::new(connect))),
        connack(version).prop_map(|connack| Packet::ConnAck(Box::new(connack))),
        publish(version).prop_map(Packet::Publish),
        ack(version, PUBACK_CODES).prop_map(Packet::PubAck),
        ack(version, PUBACK_CODES).prop_map(Packet::PubRec),
        ack(version, PUBREL_CODES).prop_map(Packet::PubRel),
        ack(version, PUBREL_CODES).prop_map(Packet::PubComp),
        subscribe(version).prop_map(Packet::Subscribe),
        suback(version).prop_map(Packet::SubAck),
        unsubscribe(version).prop_map(Packet::Unsubscribe),
        unsuback(version).prop_map(Packet::UnsubAck),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        disconnect(version).prop_map(|disconnect| Packet::Disconnect(Box::new(disconnect))),
    ];
    if version.is_v5() {
        prop_oneof![14 => common, 1 => auth().prop_map(|auth| Packet::Auth(Box::new(auth)))].boxed()
    } else {
        common.boxed()
    }
}

fn version_and_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    version().prop_flat_map(|version| (Just(version), packet(version)))
}

fn version_and_publish() -> impl Strategy<Value = (ProtocolVersion, Publish)> {
    version().prop_flat_map(|version| (Just(version), publish(version)))
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn encode_all(version: ProtocolVersion, packets: &[Packet]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for packet in packets {
        packet
            .encode(version, &mut out)
            .expect("valid packets encode");
    }
    out.to_vec()
}

/// Feeds `stream` to `decoder` in the chunks that `cuts` delimit, decoding after every chunk
/// until the decoder asks for more.
fn decode_in_chunks(
    decoder: &mut Decoder,
    stream: &[u8],
    cuts: &[usize],
) -> Result<Vec<Packet>, TestCaseError> {
    let mut packets = Vec::new();
    let mut buf = BytesMut::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&stream.len())) {
        buf.extend_from_slice(&stream[start..end]);
        start = end;
        loop {
            let before = buf.len();
            match decoder.decode(&mut buf) {
                Ok(Some(packet)) => {
                    prop_assert!(buf.len() < before, "a decoded packet consumes bytes");
                    packets.push(packet);
                }
                Ok(None) => {
                    prop_assert_eq!(buf.len(), before, "Ok(None) leaves the buffer alone");
                    prop_assert!(decoder.bytes_needed(&buf).unwrap() > 0);
                    break;
                }
                Err(error) => return Err(TestCaseError::fail(format!("decode error {error}"))),
            }
        }
    }
    prop_assert!(buf.is_empty(), "{} bytes left undecoded", buf.len());
    Ok(packets)
}

/// Decodes until the decoder asks for more or fails; must never panic nor loop.
fn drain(decoder: &mut Decoder, bytes: &[u8]) {
    let mut buf = BytesMut::from(bytes);
    loop {
        let before = buf.len();
        match decoder.decode(&mut buf) {
            Ok(Some(_)) => assert!(buf.len() < before, "no progress"),
            Ok(None) => {
                assert_eq!(buf.len(), before);
                let _ = decoder.bytes_needed(&buf);
                return;
            }
            Err(_) => return,
        }
    }
}

/// Every kind of decoder: a server one, and a client one per version.
fn all_decoders(max_packet_size: usize) -> [Decoder; 4] {
    [
        Decoder::server(max_packet_size),
        Decoder::client(ProtocolVersion::V3_1, max_packet_size),
        Decoder::client(ProtocolVersion::V3_1_1, max_packet_size),
        Decoder::client(ProtocolVersion::V5, max_packet_size),
    ]
}

/// `body` behind a fixed header with first byte `first` and the right remaining length.
fn framed(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    wire::put_variable_int(&mut out, body.len() as u32);
    out.extend_from_slice(body);
    out
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// (a) Encoding then decoding gives back the identical packet, for every type and version,
    /// and the encoder writes exactly the length its fixed header announces.
    #[test]
    fn encode_decode_round_trip((version, packet) in version_and_packet()) {
        let bytes = encode_all(version, std::slice::from_ref(&packet));
        let header = fixed_header::FixedHeader::parse(&bytes).unwrap().unwrap();
        prop_assert_eq!(header.packet_len(), bytes.len());
        prop_assert_eq!(header.packet_type, packet.packet_type());

        let mut buf = BytesMut::from(&bytes[..]);
        let decoded = Decoder::client(version, MAX_PACKET_SIZE).decode(&mut buf);
        prop_assert_eq!(decoded, Ok(Some(packet.clone())));
        prop_assert!(buf.is_empty());

        // Encoding is deterministic, so the decoded packet writes the same bytes.
        prop_assert_eq!(encode_all(version, &[packet]), bytes);
    }

    /// (b) A stream of packets cut at arbitrary points decodes to the same packets, both with
    /// a client decoder and with a server decoder that learns the version from a CONNECT.
    #[test]
    fn chunked_stream_decodes_to_the_same_packets(
        (version, connect, packets) in version().prop_flat_map(|version| {
            (Just(version), connect(version), vec(packet(version), 1..8))
        }),
        cut_points in vec(any::<Index>(), 0..12),
    ) {
        let client_stream = encode_all(version, &packets);
        let mut cuts: Vec<usize> =
            cut_points.iter().map(|cut| cut.index(client_stream.len() + 1)).collect();
        cuts.sort_unstable();
        let mut client = Decoder::client(version, MAX_PACKET_SIZE);
        let decoded = decode_in_chunks(&mut client, &client_stream, &cuts)?;
        prop_assert_eq!(&decoded, &packets);

        let mut server_packets = vec![Packet::Connect(Box::new(connect))];
        server_packets.extend(packets);
        let server_stream = encode_all(version, &server_packets);
        let mut cuts: Vec<usize> =
            cut_points.iter().map(|cut| cut.index(server_stream.len() + 1)).collect();
        cuts.sort_unstable();
        let mut server = Decoder::server(MAX_PACKET_SIZE);
        let decoded = decode_in_chunks(&mut server, &server_stream, &cuts)?;
        prop_assert_eq!(server.version(), Some(version));
        prop_assert_eq!(decoded, server_packets);
    }

    /// (c) `encoded_len` is the real length, and header + payload is the whole packet.
    #[test]
    fn publish_encoded_len_and_split_encoding((version, publish) in version_and_publish()) {
        let mut whole = BytesMut::new();
        publish.encode(version, &mut whole).unwrap();
        prop_assert_eq!(publish.encoded_len(version), Ok(whole.len()));

        let mut header = BytesMut::new();
        publish.encode_header(version, &mut header).unwrap();
        prop_assert_eq!(header.len() + publish.payload.len(), whole.len());
        header.extend_from_slice(&publish.payload);
        prop_assert_eq!(header, whole);
    }

    /// (d) Random bytes never make any decoder panic.
    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..256)) {
        for mut decoder in all_decoders(MAX_PACKET_SIZE) {
            drain(&mut decoder, &bytes);
        }
    }

    /// (d) Random bodies behind a well-formed fixed header reach the packet decoders.
    #[test]
    fn random_bodies_never_panic(
        frames in vec((any::<u8>(), vec(any::<u8>(), 0..64)), 1..4),
    ) {
        let bytes: Vec<u8> = frames.iter().flat_map(|(first, body)| framed(*first, body)).collect();
        for mut decoder in all_decoders(1024) {
            drain(&mut decoder, &bytes);
        }
        // The same bodies with the header flags every type but PUBLISH requires, so they get
        // past the fixed header checks.
        let fixed: Vec<u8> = frames
            .iter()
            .flat_map(|(first, body)| {
                let flags = match first >> 4 {
                    3 => first & 0x0F,
                    6 | 8 | 10 => 0b0010,
                    _ => 0,
                };
                framed((first & 0xF0) | flags, body)
            })
            .collect();
        for mut decoder in all_decoders(1024) {
            drain(&mut decoder, &fixed);
        }
    }

    /// (d) Valid packets with a few bytes overwritten exercise the deepest decoding paths.
    #[test]
    fn mutated_packets_never_panic(
        (version, packet) in version_and_packet(),
        mutations in vec((any::<Index>(), any::<u8>()), 1..4),
        truncate in option::of(any::<Index>()),
    ) {
        let mut bytes = encode_all(version, &[packet]);
        for (index, value) in &mutations {
            let at = index.index(bytes.len());
            bytes[at] = *value;
        }
        if let Some(at) = truncate {
            bytes.truncate(at.index(bytes.len() + 1));
        }
        for mut decoder in all_decoders(MAX_PACKET_SIZE) {
            drain(&mut decoder, &bytes);
        }
        // Whatever the decoder accepts is a packet the encoder writes back faithfully.
        let mut buf = BytesMut::from(&bytes[..]);
        let mut decoder = Decoder::client(version, MAX_PACKET_SIZE);
        while let Ok(Some(decoded)) = decoder.decode(&mut buf) {
            let again = encode_all(version, std::slice::from_ref(&decoded));
            let mut again = BytesMut::from(&again[..]);
            let redecoded = Decoder::client(version, MAX_PACKET_SIZE).decode(&mut again);
            prop_assert_eq!(redecoded, Ok(Some(decoded)));
        }
    }
}
