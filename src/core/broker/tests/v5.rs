//! MQTT 5 semantics: topic aliases, message expiry, forwarded properties, subscription
//! identifiers, No Local, the client's Maximum Packet Size, Receive Maximum, AUTH and server
//! DISCONNECT reason codes.

use std::num::{NonZeroU16, NonZeroU32};
use std::time::Duration;

use super::*;
use crate::protocol::{Disconnect, DisconnectProperties, PublishProperties, ReasonCode};

fn v5_publish(topic: &str, payload: &str, qos: QoS, properties: PublishProperties) -> Packet {
    Packet::Publish(Publish {
        qos,
        topic: topic.into(),
        packet_id: if qos == QoS::AtMostOnce { 0 } else { 11 },
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        properties: properties.into(),
        ..Publish::default()
    })
}

fn expect_disconnect(sim: &mut Sim, conn: ConnId, reason: ReasonCode) {
    let packets = sim.recv_all(conn);
    match packets.last() {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, reason, "{packets:?}"),
        other => panic!("expected DISCONNECT {reason}, got {other:?}"),
    }
    assert!(sim.is_closed(conn));
}

#[test]
fn inbound_topic_aliases_are_set_then_used() {
    let mut sim = Sim::new(1);
    let sub = sim.client(V5, "s", true);
    sim.subscribe(sub, "long/topic/name", QoS::AtMostOnce);
    let publisher = sim.client(V5, "p", true);
    let alias = |topic: &str, payload: &str| {
        v5_publish(
            topic,
            payload,
            QoS::AtMostOnce,
            PublishProperties {
                topic_alias: NonZeroU16::new(3),
                ..PublishProperties::default()
            },
        )
    };
    sim.send(publisher, alias("long/topic/name", "first"));
    sim.send(publisher, alias("", "second"));
    let got = sim.publishes(sub);
    assert_eq!(payloads(&got), ["first", "second"]);
    assert!(got
        .iter()
        .all(|p| p.topic == "long/topic/name" && p.properties.topic_alias.is_none()));
}

#[test]
fn unknown_or_too_large_topic_aliases_end_the_connection() {
    let mut sim = Sim::new(1);
    let c = sim.client(V5, "a", true);
    let unknown = v5_publish(
        "",
        "x",
        QoS::AtMostOnce,
        PublishProperties {
            topic_alias: NonZeroU16::new(1),
            ..PublishProperties::default()
        },
    );
    sim.send(c, unknown);
    expect_disconnect(&mut sim, c, ReasonCode::PROTOCOL_ERROR);

    let c = sim.client(V5, "b", true);
    let too_large = v5_publish(
        "t",
        "x",
        QoS::AtMostOnce,
        PublishProperties {
            topic_alias: NonZeroU16::new(11),
            ..PublishProperties::default()
        },
    );
    sim.send(c, too_large);
    expect_disconnect(&mut sim, c, ReasonCode::TOPIC_ALIAS_INVALID);
}

#[test]
fn connack_announces_the_server_limits() {
    let config = Config {
        receive_maximum: 100,
        maximum_qos: QoS::AtLeastOnce,
        max_packet_size: 1 << 20,
        ..Config::default()
    };
    let mut sim = Sim::with_config(1, config);
    let (_, ack) = sim.connect(connect(V5, "c", true));
    let Packet::ConnAck(ack) = ack else {
        panic!("{ack:?}")
    };
    let props = ack.properties;
    assert_eq!(props.receive_maximum, NonZeroU16::new(100));
    assert_eq!(props.maximum_qos, Some(QoS::AtLeastOnce));
    assert_eq!(props.maximum_packet_size, NonZeroU32::new(1 << 20));
    assert_eq!(props.topic_alias_maximum, Some(10));
    assert_eq!(props.retain_available, None, "available is the default");
}

#[test]
fn the_default_packet_limit_is_announced_and_the_protocols_own_is_not() {
    for (max_packet_size, announced) in [
        (Config::default().max_packet_size, NonZeroU32::new(32 << 20)),
        (268_435_460, None),
    ] {
        let config = Config {
            max_packet_size,
            ..Config::default()
        };
        let mut sim = Sim::with_config(1, config);
        let (_, ack) = sim.connect(connect(V5, "c", true));
        let Packet::ConnAck(ack) = ack else {
            panic!("{ack:?}")
        };
        assert_eq!(ack.properties.maximum_packet_size, announced);
    }
}

#[test]
fn message_expiry_counts_down_while_queued_and_expired_messages_are_dropped() {
    let mut sim = Sim::new(1);
    let mut persistent = connect(V5, "s", false);
    persistent.properties.session_expiry_interval = Some(600);
    let (sub, _) = sim.connect(persistent.clone());
    sim.subscribe(sub, "e/+", QoS::AtLeastOnce);
    sim.drop_connection(sub);
    let publisher = sim.client(V5, "p", true);
    let expiring = |topic: &str, secs| {
        v5_publish(
            topic,
            topic,
            QoS::AtLeastOnce,
            PublishProperties {
                message_expiry_interval: Some(secs),
                ..PublishProperties::default()
            },
        )
    };
    sim.send(publisher, expiring("e/short", 5));
    sim.send(publisher, expiring("e/long", 10));
    sim.advance(Duration::from_secs(6));
    let (sub, _) = sim.connect(persistent);
    let got = sim.publishes(sub);
    assert_eq!(payloads(&got), ["e/long"]);
    assert_eq!(got[0].properties.message_expiry_interval, Some(4));
}

#[test]
fn retained_messages_expire() {
    let mut sim = Sim::new(1);
    let publisher = sim.client(V5, "p", true);
    let mut retained = v5_publish(
        "r",
        "soon gone",
        QoS::AtMostOnce,
        PublishProperties {
            message_expiry_interval: Some(3),
            ..PublishProperties::default()
        },
    );
    if let Packet::Publish(p) = &mut retained {
        p.retain = true;
    }
    sim.send(publisher, retained);
    sim.advance(Duration::from_secs(4));
    let sub = sim.client(V5, "s", true);
    sim.subscribe(sub, "r", QoS::AtMostOnce);
    assert!(sim.publishes(sub).is_empty());
}

#[test]
fn application_properties_are_forwarded_intact_with_subscription_ids() {
    let mut sim = Sim::new(1);
    let sub = sim.client(V5, "s", true);
    sim.subscribe_with(
        sub,
        Subscribe {
            packet_id: 1,
            filters: vec![("req/+".into(), SubscriptionOptions::default())],
            properties: crate::protocol::SubscribeProperties {
                subscription_identifier: NonZeroU32::new(42),
                ..Default::default()
            },
        },
    );
    let publisher = sim.client(V5, "p", true);
    let properties = PublishProperties {
        payload_format_indicator: Some(true),
        content_type: Some("text/plain".into()),
        response_topic: Some("resp/1".into()),
        correlation_data: Some(Bytes::from_static(b"\x01\x02")),
        user_properties: vec![("k".into(), "v".into()), ("k".into(), "w".into())],
        ..PublishProperties::default()
    };
    sim.send(
        publisher,
        v5_publish("req/a", "body", QoS::AtMostOnce, properties.clone()),
    );
    let got = sim.publishes(sub);
    let forwarded = &got[0].properties;
    assert_eq!(forwarded.payload_format_indicator, Some(true));
    assert_eq!(forwarded.content_type, properties.content_type);
    assert_eq!(forwarded.response_topic, properties.response_topic);
    assert_eq!(forwarded.correlation_data, properties.correlation_data);
    assert_eq!(forwarded.user_properties, properties.user_properties);
    assert_eq!(
        forwarded.subscription_identifiers,
        [NonZeroU32::new(42).unwrap()]
    );
}

#[test]
fn no_local_hides_a_clients_own_messages() {
    let mut sim = Sim::new(1);
    let c = sim.client(V5, "self", true);
    sim.subscribe_with(
        c,
        Subscribe {
            packet_id: 1,
            filters: vec![(
                "echo".into(),
                SubscriptionOptions {
                    no_local: true,
                    ..SubscriptionOptions::default()
                },
            )],
            ..Subscribe::default()
        },
    );
    sim.publish(c, "echo", "mine", QoS::AtMostOnce, false);
    assert!(sim.publishes(c).is_empty());
    let other = sim.client(V5, "other", true);
    sim.publish(other, "echo", "theirs", QoS::AtMostOnce, false);
    assert_eq!(payloads(&sim.publishes(c)), ["theirs"]);
}

#[test]
fn messages_over_the_clients_maximum_packet_size_are_skipped() {
    let mut sim = Sim::new(1);
    let mut small = connect(V5, "small", true);
    small.properties.maximum_packet_size = NonZeroU32::new(64);
    let (sub, _) = sim.connect(small);
    sim.subscribe(sub, "m", QoS::AtLeastOnce);
    let publisher = sim.client(V5, "p", true);
    sim.publish(publisher, "m", &"x".repeat(100), QoS::AtLeastOnce, false);
    sim.publish(publisher, "m", "fits", QoS::AtLeastOnce, false);
    assert_eq!(payloads(&sim.publishes(sub)), ["fits"]);
    assert_eq!(sim.shards[0].stats().too_large_dropped, 1);
}

#[test]
fn exceeding_the_receive_maximum_is_disconnect_0x93() {
    let config = Config {
        receive_maximum: 2,
        ..Config::default()
    };
    let mut sim = Sim::with_config(1, config);
    let c = sim.client(V5, "greedy", true);
    for id in 1..=3 {
        let mut packet = v5_publish("q", "x", QoS::ExactlyOnce, PublishProperties::default());
        if let Packet::Publish(p) = &mut packet {
            p.packet_id = id;
        }
        sim.send(c, packet);
    }
    expect_disconnect(&mut sim, c, ReasonCode::RECEIVE_MAXIMUM_EXCEEDED);
}

#[test]
fn authentication_methods_are_refused_and_auth_is_a_protocol_error() {
    let mut sim = Sim::new(1);
    let mut c = connect(V5, "auth", true);
    c.properties.authentication_method = Some("SCRAM-SHA-1".into());
    let (conn, ack) = sim.connect(c);
    assert!(
        matches!(ack, Packet::ConnAck(a) if a.reason_code == ReasonCode::BAD_AUTHENTICATION_METHOD)
    );
    assert!(sim.is_closed(conn));

    let conn = sim.client(V5, "plain", true);
    sim.send(conn, Packet::Auth(Box::default()));
    expect_disconnect(&mut sim, conn, ReasonCode::PROTOCOL_ERROR);
}

#[test]
fn malformed_packets_get_disconnect_with_the_decoders_reason() {
    let mut sim = Sim::new(1);
    let c = sim.client(V5, "m", true);
    // PUBLISH with QoS 3.
    sim.send_bytes(c, &[0x36, 0x03, 0x00, 0x01, b't']);
    expect_disconnect(&mut sim, c, ReasonCode::MALFORMED_PACKET);
    let c = sim.client(V5, "w", true);
    // PUBLISH to a topic with a wildcard.
    sim.send_bytes(c, &[0x30, 0x04, 0x00, 0x01, b'#', 0x00]);
    expect_disconnect(&mut sim, c, ReasonCode::TOPIC_NAME_INVALID);
    let c = sim.client(V5, "l", true);
    // A second CONNECT naming protocol level 7: 0x84 belongs to CONNACK alone, and any CONNECT
    // on a connected session is a protocol error.
    sim.send_bytes(c, b"\x10\x0d\x00\x04MQTT\x07\x02\x00\x00\x00\x00\x00");
    expect_disconnect(&mut sim, c, ReasonCode::PROTOCOL_ERROR);
}

#[test]
fn a_client_may_not_send_subscription_identifiers() {
    let mut sim = Sim::new(1);
    let c = sim.client(V5, "c", true);
    sim.send(
        c,
        v5_publish(
            "t",
            "x",
            QoS::AtMostOnce,
            PublishProperties {
                subscription_identifiers: vec![NonZeroU32::new(1).unwrap()],
                ..PublishProperties::default()
            },
        ),
    );
    expect_disconnect(&mut sim, c, ReasonCode::PROTOCOL_ERROR);
}

#[test]
fn disconnect_may_shorten_but_not_create_a_session_expiry() {
    let mut sim = Sim::new(1);
    let c = sim.client(V5, "zero", false);
    sim.send(
        c,
        Packet::Disconnect(Box::new(Disconnect {
            properties: DisconnectProperties {
                session_expiry_interval: Some(60),
                ..Default::default()
            },
            ..Disconnect::default()
        })),
    );
    expect_disconnect(&mut sim, c, ReasonCode::PROTOCOL_ERROR);

    let mut persistent = connect(V5, "long", false);
    persistent.properties.session_expiry_interval = Some(600);
    let (c, _) = sim.connect(persistent.clone());
    sim.send(
        c,
        Packet::Disconnect(Box::new(Disconnect {
            properties: DisconnectProperties {
                session_expiry_interval: Some(0),
                ..Default::default()
            },
            ..Disconnect::default()
        })),
    );
    assert!(sim.is_closed(c));
    let (_, ack) = sim.connect(persistent);
    assert!(matches!(ack, Packet::ConnAck(a) if !a.session_present));
}

#[test]
fn shutdown_tells_v5_clients_the_server_is_shutting_down() {
    let mut sim = Sim::new(1);
    let v5 = sim.client(V5, "five", true);
    let v3 = sim.client(V3, "three", true);
    let now = sim.now;
    sim.shards[0].shutdown(now);
    sim.run();
    expect_disconnect(&mut sim, v5, ReasonCode::SERVER_SHUTTING_DOWN);
    assert!(sim.is_closed(v3));
    assert!(sim.recv_all(v3).is_empty());
}

#[test]
fn an_invalid_utf8_payload_marked_as_utf8_is_refused() {
    let mut sim = Sim::new(1);
    let sub = sim.client(V5, "s", true);
    sim.subscribe(sub, "u", QoS::AtMostOnce);
    let c = sim.client(V5, "c", true);
    let mut bad = v5_publish(
        "u",
        "",
        QoS::AtLeastOnce,
        PublishProperties {
            payload_format_indicator: Some(true),
            ..PublishProperties::default()
        },
    );
    if let Packet::Publish(p) = &mut bad {
        p.payload = Bytes::from_static(&[0xFF, 0xFE]);
    }
    sim.send(c, bad);
    assert!(
        matches!(sim.recv(c), Some(Packet::PubAck(a)) if a.reason_code == ReasonCode::PAYLOAD_FORMAT_INVALID)
    );
    assert!(sim.publishes(sub).is_empty());
    assert!(!sim.is_closed(c));
}

#[test]
fn clients_cannot_publish_to_the_brokers_sys_topics() {
    let mut sim = Sim::new(2);
    let watcher = sim.client(V5, "watcher", true);
    sim.subscribe(watcher, "$SYS/#", QoS::ExactlyOnce);
    let five = sim.client(V5, "five", true);
    let three = sim.client(V3, "three", true);
    for (qos, packet_id) in [(QoS::AtLeastOnce, 1), (QoS::ExactlyOnce, 2)] {
        sim.send(
            five,
            publish_packet("$SYS/broker/uptime", "0", qos, packet_id),
        );
        let ack = match sim.recv(five) {
            Some(Packet::PubAck(ack) | Packet::PubRec(ack)) => ack,
            other => panic!("{qos:?}: expected an acknowledgement, got {other:?}"),
        };
        assert_eq!(ack.reason_code, ReasonCode::NOT_AUTHORIZED, "{qos:?}");
    }
    sim.send(five, publish_packet("$SYS", "0", QoS::AtMostOnce, 0));
    // A 3.x acknowledgement has no reason code: a plain one, and the message goes nowhere.
    sim.publish(three, "$SYS/x", "retained?", QoS::ExactlyOnce, true);
    sim.publish(three, "$SYS/x", "1", QoS::AtLeastOnce, false);
    sim.run();
    assert!(sim.publishes(watcher).is_empty());
    assert!(!sim.is_closed(five) && !sim.is_closed(three));
    let late = sim.client(V5, "late", true);
    sim.subscribe(late, "$SYS/#", QoS::AtLeastOnce);
    assert!(sim.publishes(late).is_empty(), "nothing was retained");
    let refused: u64 = sim.shards.iter().map(|s| s.stats().publishes_refused).sum();
    assert_eq!(refused, 5);
    // Topics that only look alike are the clients' own.
    sim.subscribe(watcher, "$SYSTEM/#", QoS::AtMostOnce);
    sim.publish(five, "$SYSTEM/x", "mine", QoS::AtLeastOnce, false);
    assert_eq!(payloads(&sim.publishes(watcher)), ["mine"]);
}

#[test]
fn a_will_to_a_sys_topic_is_refused_at_connect() {
    let mut sim = Sim::new(1);
    for version in [V5, V3] {
        let mut connect = connect(version, "w", true);
        connect.will = Some(will("$SYS/broker/gone", "bye", QoS::AtMostOnce));
        let (conn, connack) = sim.connect(connect);
        match connack {
            // 3.1.1's return code 5, "not authorized", reads back as 0x87.
            Packet::ConnAck(ack) => {
                assert_eq!(ack.reason_code, ReasonCode::NOT_AUTHORIZED, "{version:?}")
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
        assert!(sim.is_closed(conn));
    }
}
