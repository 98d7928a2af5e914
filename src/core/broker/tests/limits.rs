//! Configured limits: packet size, subscriptions per client, topic levels, maximum QoS.

use super::*;
use crate::protocol::ReasonCode;

#[test]
fn a_packet_over_the_maximum_size_is_disconnect_0x95() {
    let config = Config {
        max_packet_size: 100,
        ..Config::default()
    };
    let mut sim = Sim::with_config(1, config);
    let c = sim.client(V5, "big", true);
    // Only the fixed header of a 1000-byte PUBLISH has arrived.
    sim.send_bytes(c, &[0x30, 0xE8, 0x07]);
    let packets = sim.recv_all(c);
    assert!(
        matches!(packets.last(), Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::PACKET_TOO_LARGE)
    );
    assert!(sim.is_closed(c));
}

#[test]
fn subscriptions_per_client_are_capped_per_filter() {
    let config = Config {
        max_subscriptions_per_client: 2,
        ..Config::default()
    };
    let mut sim = Sim::with_config(1, config);
    let c = sim.client(V5, "c", true);
    let filters = ["a", "b", "c", "a"]
        .iter()
        .map(|f| {
            (
                bytestring::ByteString::from(*f),
                SubscriptionOptions::default(),
            )
        })
        .collect();
    let suback = sim.subscribe_with(
        c,
        Subscribe {
            packet_id: 1,
            filters,
            ..Subscribe::default()
        },
    );
    assert_eq!(
        suback.reason_codes,
        [
            ReasonCode::GRANTED_QOS_0,
            ReasonCode::GRANTED_QOS_0,
            ReasonCode::QUOTA_EXCEEDED,
            ReasonCode::GRANTED_QOS_0
        ],
        "replacing an existing subscription is always allowed"
    );
}

#[test]
fn topic_levels_are_capped() {
    let config = Config {
        max_topic_levels: 3,
        ..Config::default()
    };
    let mut sim = Sim::with_config(1, config);
    let c = sim.client(V5, "c", true);
    let suback = sim.subscribe(c, "a/b/c/d", QoS::AtMostOnce);
    assert_eq!(suback.reason_codes, [ReasonCode::TOPIC_FILTER_INVALID]);
    let suback = sim.subscribe(c, "a/+/c", QoS::AtMostOnce);
    assert_eq!(suback.reason_codes, [ReasonCode::GRANTED_QOS_0]);
    sim.publish(c, "a/b/c", "ok", QoS::AtMostOnce, false);
    assert_eq!(
        payloads(&sim.publishes(c)),
        ["ok"],
        "three levels are allowed"
    );
    sim.send(
        c,
        Packet::Publish(Publish {
            topic: "a/b/c/d".into(),
            ..Publish::default()
        }),
    );
    let packets = sim.recv_all(c);
    assert!(
        matches!(packets.last(), Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::TOPIC_NAME_INVALID)
    );
}

#[test]
fn maximum_qos_caps_grants_and_refuses_higher_publishes() {
    let config = Config {
        maximum_qos: QoS::AtLeastOnce,
        ..Config::default()
    };
    let mut sim = Sim::with_config(1, config);
    let c = sim.client(V5, "c", true);
    let suback = sim.subscribe(c, "q", QoS::ExactlyOnce);
    assert_eq!(suback.reason_codes, [ReasonCode::GRANTED_QOS_1]);
    sim.send(
        c,
        Packet::Publish(Publish {
            topic: "q".into(),
            qos: QoS::ExactlyOnce,
            packet_id: 1,
            ..Publish::default()
        }),
    );
    let packets = sim.recv_all(c);
    assert!(
        matches!(packets.last(), Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::QOS_NOT_SUPPORTED)
    );
}
