//! QoS 0/1/2 in both directions, the in-flight window, resend on resume, and queue limits.

use super::*;
use crate::protocol::ReasonCode;

#[test]
fn outbound_qos_is_the_minimum_of_published_and_granted() {
    let mut sim = Sim::new(1);
    let sub0 = sim.client(V3, "s0", true);
    let sub2 = sim.client(V3, "s2", true);
    sim.subscribe(sub0, "q", QoS::AtMostOnce);
    sim.subscribe(sub2, "q", QoS::ExactlyOnce);
    let publisher = sim.client(V3, "p", true);
    sim.publish(publisher, "q", "one", QoS::AtLeastOnce, false);
    let got0 = sim.publishes(sub0);
    let got2 = sim.publishes(sub2);
    assert_eq!(got0[0].qos, QoS::AtMostOnce);
    assert_eq!(got2[0].qos, QoS::AtLeastOnce);
    assert_ne!(got2[0].packet_id, 0);
}

#[test]
fn inbound_qos2_is_delivered_exactly_once_even_when_repeated() {
    let mut sim = Sim::new(1);
    let sub = sim.client(V5, "s", true);
    sim.subscribe(sub, "q2", QoS::AtMostOnce);
    let publisher = sim.client(V5, "p", true);
    sim.send(publisher, publish_packet("q2", "x", QoS::ExactlyOnce, 9));
    assert!(matches!(sim.recv(publisher), Some(Packet::PubRec(a)) if a.packet_id == 9));
    // The same PUBLISH again (e.g. the PUBREC was lost), with DUP.
    let again = resent_publish_packet("q2", "x", QoS::ExactlyOnce, 9);
    sim.send(publisher, again);
    assert!(matches!(sim.recv(publisher), Some(Packet::PubRec(a)) if a.packet_id == 9));
    sim.send(publisher, Packet::PubRel(Ack::new(9)));
    assert!(
        matches!(sim.recv(publisher), Some(Packet::PubComp(a)) if a.packet_id == 9 && a.reason_code == ReasonCode::SUCCESS)
    );
    assert_eq!(payloads(&sim.publishes(sub)), ["x"]);
    // After PUBREL the identifier is free: a new message with it is delivered.
    sim.send(publisher, publish_packet("q2", "y", QoS::ExactlyOnce, 9));
    assert_eq!(payloads(&sim.publishes(sub)), ["y"]);
}

#[test]
fn pubrel_for_an_unknown_id_gets_pubcomp_with_0x92() {
    let mut sim = Sim::new(1);
    let c = sim.client(V5, "c", true);
    sim.send(c, Packet::PubRel(Ack::new(5)));
    match sim.recv(c) {
        Some(Packet::PubComp(ack)) => {
            assert_eq!(ack.packet_id, 5);
            assert_eq!(ack.reason_code, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND);
        }
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    assert!(!sim.is_closed(c));
}

#[test]
fn outbound_qos2_completes_with_pubrec_pubrel_pubcomp() {
    let mut sim = Sim::new(1);
    let sub = sim.client(V3, "s", true);
    sim.subscribe(sub, "t", QoS::ExactlyOnce);
    let publisher = sim.client(V3, "p", true);
    sim.publish(publisher, "t", "m", QoS::ExactlyOnce, false);
    let got = sim.publishes(sub);
    assert_eq!(got[0].qos, QoS::ExactlyOnce);
    let id = got[0].packet_id;
    sim.send(sub, Packet::PubRec(Ack::new(id)));
    assert!(matches!(sim.recv(sub), Some(Packet::PubRel(a)) if a.packet_id == id));
    sim.send(sub, Packet::PubComp(Ack::new(id)));
    assert!(sim.recv(sub).is_none());
}

#[test]
fn the_receive_maximum_limits_messages_in_flight() {
    let mut sim = Sim::new(1);
    let mut c = connect(V5, "slow", true);
    c.properties.receive_maximum = std::num::NonZeroU16::new(2);
    let (sub, _) = sim.connect(c);
    sim.subscribe(sub, "w", QoS::AtLeastOnce);
    let publisher = sim.client(V5, "p", true);
    // Two in flight and two queued: a fifth would hold its PUBACK (see `flow.rs`).
    for i in 0..4 {
        sim.publish(publisher, "w", &i.to_string(), QoS::AtLeastOnce, false);
    }
    let first = sim.publishes(sub);
    assert_eq!(payloads(&first), ["0", "1"]);
    sim.send(sub, Packet::PubAck(Ack::new(first[0].packet_id)));
    assert_eq!(payloads(&sim.publishes(sub)), ["2"]);
}

#[test]
fn unacknowledged_messages_are_resent_with_dup_and_pubrel_is_resent_on_resume() {
    let mut sim = Sim::new(1);
    let sub = sim.client(V3, "s", false);
    sim.subscribe(sub, "r", QoS::ExactlyOnce);
    let publisher = sim.client(V3, "p", true);
    sim.publish(publisher, "r", "a", QoS::AtLeastOnce, false);
    sim.publish(publisher, "r", "b", QoS::ExactlyOnce, false);
    sim.publish(publisher, "r", "c", QoS::ExactlyOnce, false);
    let got = sim.publishes(sub);
    assert_eq!(payloads(&got), ["a", "b", "c"]);
    // "b" reaches PUBREL; "a" and "c" stay unacknowledged.
    sim.send(sub, Packet::PubRec(Ack::new(got[1].packet_id)));
    assert!(matches!(sim.recv(sub), Some(Packet::PubRel(_))));
    sim.drop_connection(sub);
    // Queued while offline.
    sim.publish(publisher, "r", "d", QoS::AtLeastOnce, false);

    let (sub, _) = sim.connect(connect(V3, "s", false));
    let resent = sim.recv_all(sub);
    let summary: Vec<String> = resent
        .iter()
        .map(|packet| match packet {
            Packet::Publish(p) => format!(
                "{}:{}:{}",
                std::str::from_utf8(&p.payload).unwrap(),
                p.dup,
                p.packet_id
            ),
            Packet::PubRel(a) => format!("rel:{}", a.packet_id),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        summary,
        [
            format!("a:true:{}", got[0].packet_id),
            format!("rel:{}", got[1].packet_id),
            format!("c:true:{}", got[2].packet_id),
            format!("d:false:{}", got[2].packet_id + 1),
        ]
    );
}

#[test]
fn qos0_is_not_queued_for_offline_sessions_but_qos1_is() {
    let mut sim = Sim::new(1);
    let sub = sim.client(V3, "s", false);
    sim.subscribe(sub, "o", QoS::AtLeastOnce);
    sim.drop_connection(sub);
    let publisher = sim.client(V3, "p", true);
    sim.publish(publisher, "o", "zero", QoS::AtMostOnce, false);
    sim.publish(publisher, "o", "one", QoS::AtLeastOnce, false);
    let (sub, _) = sim.connect(connect(V3, "s", false));
    assert_eq!(payloads(&sim.publishes(sub)), ["one"]);
    assert_eq!(sim.shards[0].stats().qos0_dropped, 1);
}

#[test]
fn a_full_offline_queue_drops_new_messages_and_counts_them() {
    let config = Config {
        max_queued_messages: 3,
        ..Config::default()
    };
    let mut sim = Sim::with_config(1, config);
    let sub = sim.client(V3, "s", false);
    sim.subscribe(sub, "o", QoS::AtLeastOnce);
    sim.drop_connection(sub);
    let publisher = sim.client(V3, "p", true);
    for i in 0..5 {
        sim.publish(publisher, "o", &i.to_string(), QoS::AtLeastOnce, false);
    }
    assert_eq!(sim.shards[0].stats().queue_full_dropped, 2);
    let (sub, _) = sim.connect(connect(V3, "s", false));
    assert_eq!(payloads(&sim.publishes(sub)), ["0", "1", "2"]);
}

#[test]
fn qos0_to_a_slow_consumer_is_dropped_once_its_buffer_is_full() {
    let config = Config {
        max_outbound_buffer: 100,
        ..Config::default()
    };
    let mut sim = Sim::with_config(1, config);
    let sub = sim.client(V3, "s", true);
    sim.subscribe(sub, "f", QoS::AtMostOnce);
    let publisher = sim.client(V3, "p", true);
    // Deliver straight into the core without letting the client read, as a stalled socket would.
    for _ in 0..10 {
        let mut bytes = BytesMut::new();
        publish_packet("f", &"x".repeat(40), QoS::AtMostOnce, 0)
            .encode(V3, &mut bytes)
            .unwrap();
        sim.shards[0].handle_bytes(publisher, &mut bytes, sim.now);
    }
    // Each copy is 45 bytes: the third takes the buffer past 100, and nothing more goes in.
    assert_eq!(sim.shards[0].stats().qos0_dropped, 7);
    sim.run();
    assert_eq!(sim.publishes(sub).len(), 3);
}

#[test]
fn handle_bytes_tells_whether_a_publish_was_read() {
    let mut sim = Sim::new(1);
    let publisher = sim.client(V3, "p", true);
    let encoded = |packet: Packet| {
        let mut bytes = BytesMut::new();
        packet.encode(V3, &mut bytes).unwrap();
        bytes
    };
    let mut ping = encoded(Packet::PingReq);
    assert!(!sim.shards[0].handle_bytes(publisher, &mut ping, sim.now));
    let mut publish = encoded(publish_packet("f", "x", QoS::AtMostOnce, 0));
    publish.extend_from_slice(&encoded(Packet::PingReq));
    assert!(sim.shards[0].handle_bytes(publisher, &mut publish, sim.now));
}

#[test]
fn a_client_that_publishes_to_itself_at_qos2_never_waits_on_itself() {
    let config = Config {
        max_inflight: 1,
        max_queued_messages: 1,
        ..Config::default()
    };
    let mut sim = Sim::with_config(1, config);
    let c = sim.client(V5, "loop", true);
    sim.subscribe(c, "t", QoS::ExactlyOnce);
    // One delivery in flight to itself, one queued, and one beyond the queue, whose PUBREC is
    // held until the queue moves: the queue moves only once the client, as a subscriber, gets
    // its PUBRELs.
    for id in 1..=3 {
        sim.send(
            c,
            publish_packet("t", &id.to_string(), QoS::ExactlyOnce, id),
        );
    }
    let mut delivered = Vec::new();
    let mut completed = Vec::new();
    for _round in 0..10 {
        for packet in sim.recv_all(c) {
            let reply = match packet {
                Packet::Publish(publish) => {
                    delivered.push(publish.payload.clone());
                    Packet::PubRec(Ack::new(publish.packet_id))
                }
                Packet::PubRel(ack) => Packet::PubComp(Ack::new(ack.packet_id)),
                Packet::PubRec(ack) => Packet::PubRel(Ack::new(ack.packet_id)),
                Packet::PubComp(ack) => {
                    completed.push(ack.packet_id);
                    continue;
                }
                other => panic!("unexpected {other:?}"),
            };
            sim.send(c, reply);
        }
    }
    assert_eq!(delivered, ["1", "2", "3"]);
    assert_eq!(completed, [1, 2, 3]);
}
