//! Retained messages sent on subscribe when there are more of them than a send buffer, an
//! in-flight window or a session queue holds: all arrive, in order, paced by the subscriber,
//! and what is still owed follows the subscription and the connection.

use std::time::Duration;

use super::*;
use crate::protocol::{PublishProperties, Unsubscribe};

/// Publishes a retained message on each of `topics`, in one read.
fn retain(sim: &mut Sim, publisher: ConnId, topics: &[String], qos: QoS, expiry: Option<u32>) {
    let mut bytes = BytesMut::new();
    for (index, topic) in topics.iter().enumerate() {
        let publish = Publish {
            qos,
            retain: true,
            topic: topic.as_str().into(),
            packet_id: if qos == QoS::AtMostOnce {
                0
            } else {
                (index % 60_000) as u16 + 1
            },
            properties: PublishProperties {
                message_expiry_interval: expiry,
                ..PublishProperties::default()
            }
            .into(),
            payload: Bytes::from_static(b"retained"),
            ..Publish::default()
        };
        Packet::Publish(publish)
            .encode(V5, &mut bytes)
            .expect("test packet encodes");
    }
    sim.send_bytes(publisher, &bytes);
    sim.recv_all(publisher);
}

fn topics(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}/{i:05}")).collect()
}

/// A broker holding `count` retained messages published at `qos` on `r/00000`…
fn sim_with_retained(config: Config, count: usize, qos: QoS) -> Sim {
    let mut sim = Sim::with_config(1, config);
    let publisher = sim.client(V5, "publisher", true);
    retain(&mut sim, publisher, &topics("r", count), qos, None);
    assert_eq!(sim.shards[0].retained_count(), count);
    sim
}

/// The topics a subscription to `filter` is sent, in the order they are sent.
fn matching_topics(sim: &Sim, filter: &str) -> Vec<String> {
    sim.shards[0]
        .retained
        .matching(filter, sim.now, 0)
        .iter()
        .map(|message| message.template.topic.to_string())
        .collect()
}

fn received_topics(publishes: &[Publish]) -> Vec<String> {
    publishes
        .iter()
        .map(|publish| publish.topic.to_string())
        .collect()
}

fn subscribe_packet(filter: &str, qos: QoS) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![(
            filter.into(),
            SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            },
        )],
        ..Subscribe::default()
    })
}

/// Takes every PUBLISH as it arrives and acknowledges the QoS 1 ones, all of a round in one
/// read, until no more come.
fn receive_acking(sim: &mut Sim, conn: ConnId) -> Vec<Publish> {
    let mut received = Vec::new();
    loop {
        let round = sim.publishes(conn);
        if round.is_empty() {
            return received;
        }
        let mut acks = BytesMut::new();
        for publish in round.iter().filter(|p| p.qos == QoS::AtLeastOnce) {
            Packet::PubAck(Ack::new(publish.packet_id))
                .encode(V5, &mut acks)
                .expect("test packet encodes");
        }
        received.extend(round);
        if !acks.is_empty() {
            sim.send_bytes(conn, &acks);
        }
    }
}

#[test]
fn a_qos0_subscriber_gets_every_retained_message_through_a_small_send_buffer() {
    let config = Config {
        max_outbound_buffer: 8 * 1024,
        ..Config::default()
    };
    let mut sim = sim_with_retained(config, 20_000, QoS::AtMostOnce);
    let sub = sim.client(V5, "s", true);
    sim.subscribe(sub, "#", QoS::AtMostOnce);
    let received = sim.publishes(sub);
    assert_eq!(received_topics(&received), matching_topics(&sim, "#"));
    assert!(received.iter().all(|publish| publish.retain));
    assert_eq!(sim.shards[0].stats().qos0_dropped, 0);
}

#[test]
fn a_qos1_subscriber_that_acks_gets_more_retained_messages_than_window_and_queue_hold() {
    let config = Config::default();
    let holds = usize::from(config.max_inflight) + config.max_queued_messages;
    let mut sim = sim_with_retained(config, 20_000, QoS::AtLeastOnce);
    assert!(holds < 20_000);
    let sub = sim.client(V5, "s", true);
    sim.subscribe(sub, "#", QoS::AtLeastOnce);
    let received = receive_acking(&mut sim, sub);
    assert_eq!(received_topics(&received), matching_topics(&sim, "#"));
    assert!(received
        .iter()
        .all(|publish| publish.retain && publish.qos == QoS::AtLeastOnce && !publish.dup));
    let stats = sim.shards[0].stats();
    assert_eq!(stats.queue_full_dropped, 0);
    assert_eq!(stats.publishes_sent, 20_000);
}

#[test]
fn max_retained_per_subscribe_still_caps_each_filter() {
    let config = Config {
        max_retained_per_subscribe: 100,
        max_outbound_buffer: 1024,
        ..Config::default()
    };
    let mut sim = sim_with_retained(config, 2_000, QoS::AtMostOnce);
    let sub = sim.client(V5, "s", true);
    sim.subscribe(sub, "#", QoS::AtMostOnce);
    assert_eq!(sim.publishes(sub).len(), 100);
}

#[test]
fn a_subscriber_that_does_not_read_holds_a_chunk_and_live_messages_still_fit() {
    let config = Config {
        max_outbound_buffer: 256 * 1024,
        ..Config::default()
    };
    let mut sim = sim_with_retained(config, 20_000, QoS::AtMostOnce);
    let sub = sim.client(V5, "s", true);
    sim.stall(sub);
    sim.send(sub, subscribe_packet("#", QoS::AtMostOnce));
    let pending = sim.shards[0].pending_output(sub);
    assert!(
        pending > 0 && pending < 65 * 1024,
        "about one chunk waits, not 20,000 messages: {pending}"
    );
    let publisher = sim.client(V5, "live", true);
    sim.publish(publisher, "live", "now", QoS::AtMostOnce, false);
    assert_eq!(sim.shards[0].stats().qos0_dropped, 0);

    sim.unstall(sub);
    let received = sim.publishes(sub);
    assert_eq!(received.len(), 20_001);
    assert!(received.iter().any(|publish| publish.topic == "live"));
    assert_eq!(sim.shards[0].stats().qos0_dropped, 0);
}

#[test]
fn what_is_still_owed_ends_with_the_connection() {
    let config = Config {
        max_outbound_buffer: 1024,
        ..Config::default()
    };
    let mut sim = sim_with_retained(config, 5_000, QoS::AtLeastOnce);
    let mut resume = connect(V5, "s", false);
    resume.properties.session_expiry_interval = Some(600);

    // Closed by the peer half way through.
    let (sub, _) = sim.connect(resume.clone());
    sim.subscribe(sub, "#", QoS::AtLeastOnce);
    let first_window = sim.publishes(sub).len();
    assert!(first_window > 0 && first_window < 5_000);
    sim.drop_connection(sub);
    let (back, _) = sim.connect(resume.clone());
    let resent = receive_acking(&mut sim, back);
    assert_eq!(
        resent.len(),
        first_window,
        "only what was in flight is sent again"
    );
    assert!(resent.iter().all(|publish| publish.dup));

    // Taken over half way through, by a client that does not read.
    sim.stall(back);
    sim.send(back, subscribe_packet("#", QoS::AtMostOnce));
    let (taker, _) = sim.connect(resume);
    assert!(sim.is_closed(back));
    assert!(sim.publishes(taker).is_empty());
}

#[test]
fn unsubscribing_stops_what_is_still_owed() {
    let config = Config {
        max_outbound_buffer: 1024,
        ..Config::default()
    };
    let mut sim = sim_with_retained(config, 5_000, QoS::AtMostOnce);
    let sub = sim.client(V5, "s", true);
    sim.stall(sub);
    sim.send(sub, subscribe_packet("#", QoS::AtMostOnce));
    sim.send(
        sub,
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 2,
            filters: vec!["#".into()],
            ..Unsubscribe::default()
        }),
    );
    sim.unstall(sub);
    let packets = sim.recv_all(sub);
    assert!(matches!(packets.last(), Some(Packet::UnsubAck(_))));
    assert!(packets.len() < 100, "{} packets", packets.len());
}

#[test]
fn a_live_publish_replaces_its_retained_copy_still_owed() {
    let mut sim = sim_with_retained(Config::default(), 5_000, QoS::AtMostOnce);
    let last = matching_topics(&sim, "#").pop().expect("retained");
    let sub = sim.client(V5, "s", true);
    sim.stall(sub);
    sim.send(sub, subscribe_packet("#", QoS::AtMostOnce));
    let publisher = sim.client(V5, "p", true);
    sim.publish(publisher, &last, "newer", QoS::AtMostOnce, true);
    sim.unstall(sub);
    let on_last: Vec<_> = sim
        .publishes(sub)
        .into_iter()
        .filter(|publish| publish.topic == last)
        .collect();
    assert_eq!(payloads(&on_last), ["newer"], "the older copy is not sent");
}

#[test]
fn retained_messages_that_expire_while_owed_are_skipped_and_counted() {
    let config = Config {
        // Nothing is written while the SUBACK waits, and the sweep does not get to them first.
        max_outbound_buffer: 1,
        expiry_sweep_interval: Duration::from_secs(3600),
        ..Config::default()
    };
    let mut sim = Sim::with_config(1, config);
    let publisher = sim.client(V5, "p", true);
    retain(
        &mut sim,
        publisher,
        &topics("e", 30),
        QoS::AtMostOnce,
        Some(10),
    );
    retain(&mut sim, publisher, &topics("k", 1), QoS::AtMostOnce, None);
    let sub = sim.client(V5, "s", true);
    sim.stall(sub);
    sim.send(sub, subscribe_packet("#", QoS::AtMostOnce));
    sim.advance(Duration::from_secs(20));
    sim.unstall(sub);
    assert_eq!(received_topics(&sim.publishes(sub)), ["k/00000"]);
    assert_eq!(sim.shards[0].stats().expired_dropped, 30);
}

#[test]
fn retained_deliveries_are_journaled_as_they_enter_the_window() {
    let config = Config {
        persistence: true,
        max_inflight: 10,
        ..Config::default()
    };
    let mut sim = sim_with_retained(config, 2_000, QoS::AtLeastOnce);
    let mut resume = connect(V5, "s", false);
    resume.properties.session_expiry_interval = Some(600);
    let (sub, _) = sim.connect(resume);
    sim.subscribe(sub, "#", QoS::AtLeastOnce);
    let queued = |sim: &Sim| {
        sim.journals[0]
            .iter()
            .filter(|(_, record)| matches!(record, PersistRecord::Queued { .. }))
            .count()
    };
    assert_eq!(queued(&sim), 10);
    assert_eq!(receive_acking(&mut sim, sub).len(), 2_000);
    assert_eq!(queued(&sim), 2_000);
}

/// A retained PUBLISH (the same in every version) and the acknowledgement's reason code, or
/// `None` at QoS 0.
fn retain_one(sim: &mut Sim, conn: ConnId, topic: &str, payload: &str, qos: QoS) -> Option<u8> {
    let Packet::Publish(mut publish) = publish_packet(topic, payload, qos, 9) else {
        unreachable!()
    };
    publish.retain = true;
    sim.send(conn, Packet::Publish(publish));
    let reason = match qos {
        QoS::AtMostOnce => return None,
        QoS::AtLeastOnce => match sim.recv(conn) {
            Some(Packet::PubAck(ack)) => ack.reason_code,
            other => panic!("expected PUBACK, got {other:?}"),
        },
        QoS::ExactlyOnce => match sim.recv(conn) {
            Some(Packet::PubRec(ack)) => ack.reason_code,
            other => panic!("expected PUBREC, got {other:?}"),
        },
    };
    if qos == QoS::ExactlyOnce && !reason.is_error() {
        sim.send(conn, Packet::PubRel(Ack::new(9)));
        assert!(matches!(sim.recv(conn), Some(Packet::PubComp(_))));
    }
    Some(reason.0)
}

fn retained_payloads(sim: &mut Sim, name: &str) -> Vec<String> {
    let late = sim.client(V5, name, true);
    sim.subscribe(late, "r/#", QoS::AtLeastOnce);
    let mut got: Vec<(String, String)> = sim
        .publishes(late)
        .into_iter()
        .map(|p| {
            (
                p.topic.to_string(),
                String::from_utf8_lossy(&p.payload).into(),
            )
        })
        .collect();
    got.sort();
    got.into_iter().map(|(_, payload)| payload).collect()
}

#[test]
fn a_full_retained_set_takes_no_new_topic_but_replacing_and_clearing_always_work() {
    let config = Config {
        max_retained_messages: 2,
        ..Config::default()
    };
    let mut sim = Sim::with_config(2, config);
    let five = sim.client(V5, "five", true);
    let three = sim.client(V3, "three", true);
    let watcher = sim.client(V5, "watcher", true);
    sim.subscribe(watcher, "r/#", QoS::AtLeastOnce);
    assert_eq!(
        retain_one(&mut sim, three, "r/a", "a", QoS::AtLeastOnce),
        Some(0)
    );
    assert_eq!(
        retain_one(&mut sim, five, "r/b", "b", QoS::ExactlyOnce),
        Some(0)
    );
    // Full. 3.x cannot be told: delivered, not retained. MQTT 5 QoS 1/2: refused with 0x97
    // (quota exceeded), and not delivered. MQTT 5 QoS 0: delivered, not retained.
    assert_eq!(
        retain_one(&mut sim, three, "r/c", "c", QoS::AtLeastOnce),
        Some(0)
    );
    assert_eq!(
        retain_one(&mut sim, five, "r/d", "d", QoS::AtLeastOnce),
        Some(0x97)
    );
    assert_eq!(
        retain_one(&mut sim, five, "r/e", "e", QoS::ExactlyOnce),
        Some(0x97)
    );
    assert_eq!(
        retain_one(&mut sim, five, "r/f", "f", QoS::AtMostOnce),
        None
    );
    // Replacing and clearing a topic always work.
    assert_eq!(
        retain_one(&mut sim, five, "r/a", "a2", QoS::AtLeastOnce),
        Some(0)
    );
    assert_eq!(
        retain_one(&mut sim, three, "r/b", "", QoS::AtLeastOnce),
        Some(0)
    );
    assert_eq!(
        payloads(&sim.publishes(watcher)),
        ["a", "b", "c", "f", "a2", ""]
    );
    assert_eq!(retained_payloads(&mut sim, "late"), ["a2"]);
    // Clearing made room for a new topic.
    assert_eq!(
        retain_one(&mut sim, five, "r/g", "g", QoS::AtLeastOnce),
        Some(0)
    );
    assert_eq!(retained_payloads(&mut sim, "later"), ["a2", "g"]);
    let refused: u64 = sim.shards.iter().map(|s| s.stats().retained_refused).sum();
    assert_eq!(refused, 4);
}

#[test]
fn the_retained_set_is_bounded_in_bytes_too() {
    let config = Config {
        // "r/a" and "12345": 8 bytes of topic and payload.
        max_retained_bytes: 10,
        ..Config::default()
    };
    let mut sim = Sim::with_config(1, config);
    let five = sim.client(V5, "five", true);
    assert_eq!(
        retain_one(&mut sim, five, "r/a", "12345", QoS::AtLeastOnce),
        Some(0)
    );
    assert_eq!(
        retain_one(&mut sim, five, "r/b", "xyz", QoS::AtLeastOnce),
        Some(0x97)
    );
    // A smaller message for the same topic frees bytes for another.
    assert_eq!(
        retain_one(&mut sim, five, "r/a", "1", QoS::AtLeastOnce),
        Some(0)
    );
    assert_eq!(
        retain_one(&mut sim, five, "r/b", "xyz", QoS::AtLeastOnce),
        Some(0)
    );
    assert_eq!(retained_payloads(&mut sim, "late"), ["1", "xyz"]);
}
