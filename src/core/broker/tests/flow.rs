//! Flow control: a full subscriber queue holds its publishers' acknowledgements instead of
//! dropping what they were told was delivered, on one shard and across shards; a subscriber that
//! stops reading, goes away or lags behind its peers is dropped for instead.

use std::time::Duration;

use super::*;
use crate::broker::home_shard;

/// One message in flight and one queued per subscriber: the third to arrive finds it full.
fn tight_queues() -> Config {
    Config {
        max_inflight: 1,
        max_queued_messages: 1,
        ..Config::default()
    }
}

/// A subscriber "s" to "t" at QoS 1, with a clean or a persistent session, and a publisher "p".
fn subscriber_and_publisher(sim: &mut Sim, clean: bool) -> (ConnId, ConnId) {
    let sub = sim.client(V3, "s", clean);
    sim.subscribe(sub, "t", QoS::AtLeastOnce);
    (sub, sim.client(V3, "p", true))
}

/// A client id homed on `shard` of `count`.
fn id_on(shard: usize, count: usize, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|id| home_shard(id, count) == shard)
        .expect("some id hashes to every shard")
}

/// Publishes QoS 1 messages "0", "1", … with packet ids 1, 2, … without waiting for PUBACKs,
/// and returns the ids acknowledged so far.
fn publish_all(sim: &mut Sim, publisher: ConnId, topic: &str, count: u16) -> Vec<u16> {
    for id in 1..=count {
        let payload = (id - 1).to_string();
        sim.send(
            publisher,
            publish_packet(topic, &payload, QoS::AtLeastOnce, id),
        );
    }
    acked(sim, publisher)
}

fn acked(sim: &mut Sim, publisher: ConnId) -> Vec<u16> {
    sim.recv_all(publisher)
        .into_iter()
        .filter_map(|packet| match packet {
            Packet::PubAck(ack) => Some(ack.packet_id),
            _ => None,
        })
        .collect()
}

/// The subscriber acknowledges what it received and returns those payloads.
fn read_and_ack(sim: &mut Sim, subscriber: ConnId) -> Vec<String> {
    let publishes = sim.publishes(subscriber);
    for publish in &publishes {
        sim.send(subscriber, Packet::PubAck(Ack::new(publish.packet_id)));
    }
    payloads(&publishes).into_iter().map(String::from).collect()
}

/// Reads until nothing more comes.
fn read_everything(sim: &mut Sim, subscriber: ConnId) -> Vec<String> {
    let mut all = Vec::new();
    loop {
        let batch = read_and_ack(sim, subscriber);
        if batch.is_empty() {
            return all;
        }
        all.extend(batch);
    }
}

#[test]
fn a_full_queue_holds_the_publishers_ack_until_the_subscriber_moves_it() {
    let mut sim = Sim::with_config(1, tight_queues());
    let (sub, publisher) = subscriber_and_publisher(&mut sim, true);
    assert_eq!(
        publish_all(&mut sim, publisher, "t", 3),
        [1, 2],
        "the third message is queued beyond the limit and its PUBACK waits"
    );
    assert_eq!(read_and_ack(&mut sim, sub), ["0"]);
    assert_eq!(acked(&mut sim, publisher), [3], "the queue moved on by one");
    assert_eq!(read_everything(&mut sim, sub), ["1", "2"]);
    assert_eq!(sim.shards[0].stats().queue_full_dropped, 0);
}

#[test]
fn a_shard_with_full_queues_has_the_other_shards_hold_their_acknowledgements() {
    let mut sim = Sim::with_config(2, tight_queues());
    let sub = sim.client(V3, &id_on(1, 2, "s"), true);
    sim.subscribe(sub, "t", QoS::AtLeastOnce);
    let publisher = sim.client(V3, &id_on(0, 2, "p"), true);
    assert_ne!(sim.shard_of(sub), sim.shard_of(publisher));
    assert_eq!(
        publish_all(&mut sim, publisher, "t", 3),
        [1, 2, 3],
        "acknowledged at once, as the other shard had asked for nothing: the third is queued \
         beyond the limit, and shard 0 is asked to pace"
    );
    sim.send(publisher, publish_packet("t", "3", QoS::AtLeastOnce, 4));
    assert_eq!(acked(&mut sim, publisher), Vec::<u16>::new(), "paced now");
    assert_eq!(read_and_ack(&mut sim, sub), ["0"]);
    assert_eq!(acked(&mut sim, publisher), [4], "the queue moved on by one");
    assert_eq!(read_everything(&mut sim, sub), ["1", "2", "3"]);
    let dropped: u64 = sim
        .shards
        .iter()
        .map(|s| s.stats().queue_full_dropped)
        .sum();
    assert_eq!(dropped, 0);
    // Once the other shard stops asking, acknowledgements no longer wait for it.
    sim.advance(Duration::from_secs(1));
    sim.send(publisher, publish_packet("t", "4", QoS::AtLeastOnce, 5));
    assert_eq!(acked(&mut sim, publisher), [5]);
}

#[test]
fn acknowledgements_stay_in_order_behind_a_held_one() {
    let mut sim = Sim::with_config(1, tight_queues());
    let sub = sim.client(V3, "s", true);
    sim.subscribe(sub, "full", QoS::AtLeastOnce);
    let publisher = sim.client(V3, "p", true);
    assert_eq!(publish_all(&mut sim, publisher, "full", 3), [1, 2]);
    // Nobody subscribes to "free", yet its PUBACK must not overtake the held one (MQTT-4.6.0-2).
    sim.send(publisher, publish_packet("free", "x", QoS::AtLeastOnce, 4));
    assert_eq!(acked(&mut sim, publisher), Vec::<u16>::new());
    read_and_ack(&mut sim, sub);
    assert_eq!(acked(&mut sim, publisher), [3, 4]);
}

#[test]
fn a_subscriber_that_stops_acknowledging_stops_holding_publishers_back() {
    let mut sim = Sim::with_config(1, tight_queues());
    let stall_timeout = Config::default().stall_timeout;
    let (sub, publisher) = subscriber_and_publisher(&mut sim, true);
    assert_eq!(publish_all(&mut sim, publisher, "t", 3), [1, 2]);
    sim.advance(stall_timeout / 2);
    assert_eq!(acked(&mut sim, publisher), Vec::<u16>::new());
    sim.advance(stall_timeout);
    assert_eq!(
        acked(&mut sim, publisher),
        [3],
        "released, and its message stays queued"
    );
    sim.send(publisher, publish_packet("t", "3", QoS::AtLeastOnce, 4));
    assert_eq!(
        acked(&mut sim, publisher),
        [4],
        "dropped for the stalled one"
    );
    assert_eq!(sim.shards[0].stats().queue_full_dropped, 1);
    assert_eq!(read_everything(&mut sim, sub), ["0", "1", "2"]);
    // Acknowledging again ends the stall: a full queue holds publishers back once more.
    assert_eq!(publish_all(&mut sim, publisher, "t", 3), [1, 2]);
}

#[test]
fn a_subscriber_that_keeps_acknowledging_is_never_dropped_for() {
    let mut sim = Sim::with_config(1, tight_queues());
    let stall_timeout = Config::default().stall_timeout;
    let (sub, publisher) = subscriber_and_publisher(&mut sim, true);
    assert_eq!(publish_all(&mut sim, publisher, "t", 3), [1, 2]);
    let mut received = Vec::new();
    // A slow reader: one message per 0.9 stall timeouts, for several timeouts; the publisher
    // sends one more whenever a PUBACK comes.
    for next in 4..9 {
        sim.advance(stall_timeout * 9 / 10);
        let first = sim.publishes(sub).remove(0);
        sim.send(sub, Packet::PubAck(Ack::new(first.packet_id)));
        received.extend(payloads(&[first]).into_iter().map(String::from));
        assert_eq!(acked(&mut sim, publisher), [next - 1]);
        let payload = (next - 1).to_string();
        sim.send(
            publisher,
            publish_packet("t", &payload, QoS::AtLeastOnce, next),
        );
    }
    assert_eq!(sim.shards[0].stats().queue_full_dropped, 0);
    assert_eq!(received, ["0", "1", "2", "3", "4"]);
}

#[test]
fn a_subscriber_lagging_behind_its_peers_is_dropped_for_not_the_publisher() {
    let config = Config {
        max_queued_messages: 2,
        ..tight_queues()
    };
    let mut sim = Sim::with_config(1, config);
    let fast = sim.client(V3, "fast", true);
    let slow = sim.client(V3, "slow", true);
    sim.subscribe(fast, "t", QoS::AtLeastOnce);
    sim.subscribe(slow, "t", QoS::AtLeastOnce);
    let publisher = sim.client(V3, "p", true);
    let mut fast_got = Vec::new();
    for id in 1..=6 {
        let payload = (id - 1).to_string();
        sim.send(
            publisher,
            publish_packet("t", &payload, QoS::AtLeastOnce, id),
        );
        assert_eq!(
            acked(&mut sim, publisher),
            [id],
            "never held for the slow one"
        );
        fast_got.extend(read_and_ack(&mut sim, fast));
    }
    assert_eq!(fast_got, ["0", "1", "2", "3", "4", "5"]);
    assert_eq!(sim.shards[0].stats().queue_full_dropped, 3);
    assert_eq!(read_everything(&mut sim, slow), ["0", "1", "2"]);
}

#[test]
fn a_subscriber_that_goes_away_releases_what_it_held() {
    let mut sim = Sim::with_config(1, tight_queues());
    let (sub, publisher) = subscriber_and_publisher(&mut sim, false);
    assert_eq!(publish_all(&mut sim, publisher, "t", 3), [1, 2]);
    sim.drop_connection(sub);
    assert_eq!(acked(&mut sim, publisher), [3]);
    let (sub, _) = sim.connect(connect(V3, "s", false));
    assert_eq!(
        read_everything(&mut sim, sub),
        ["0", "1", "2"],
        "what was acknowledged stayed queued"
    );
}

#[test]
fn a_zero_stall_timeout_drops_at_the_limit_as_mosquitto_does() {
    let config = Config {
        stall_timeout: Duration::ZERO,
        ..tight_queues()
    };
    let mut sim = Sim::with_config(1, config);
    let (_subscriber, publisher) = subscriber_and_publisher(&mut sim, true);
    assert_eq!(publish_all(&mut sim, publisher, "t", 3), [1, 2, 3]);
    assert_eq!(sim.shards[0].stats().queue_full_dropped, 1);
}

#[test]
fn a_client_ignoring_held_acknowledgements_is_to_be_paused() {
    let config = Config {
        max_queued_messages: 0,
        ..tight_queues()
    };
    let mut sim = Sim::with_config(1, config);
    let (sub, publisher) = subscriber_and_publisher(&mut sim, true);
    let limit = u16::try_from(crate::broker::connection::MAX_HELD_ACKS).unwrap();
    publish_all(&mut sim, publisher, "t", limit);
    assert!(!sim.shards[0].wants_pause(publisher), "one went in flight");
    sim.send(
        publisher,
        publish_packet("t", "x", QoS::AtLeastOnce, limit + 1),
    );
    assert!(sim.shards[0].wants_pause(publisher));
    read_and_ack(&mut sim, sub);
    assert!(!sim.shards[0].wants_pause(publisher));
}

#[test]
fn unsent_output_counts_what_send_buffers_hold_until_taken_or_closed() {
    let mut sim = Sim::new(1);
    let sub = sim.client(V3, "s", true);
    sim.subscribe(sub, "t", QoS::AtMostOnce);
    let publisher = sim.client(V3, "p", true);
    assert_eq!(sim.shards[0].unsent_output(), 0, "everything was taken");
    let mut bytes = BytesMut::new();
    publish_packet("t", "0123456789", QoS::AtMostOnce, 0)
        .encode(V3, &mut bytes)
        .unwrap();
    sim.shards[0].handle_bytes(publisher, &mut bytes.clone(), sim.now);
    let one = sim.shards[0].unsent_output();
    assert_eq!(one, 2 + 3 + 10, "fixed header, topic, payload");
    sim.run();
    assert_eq!(sim.shards[0].unsent_output(), 0);
    sim.shards[0].handle_bytes(publisher, &mut bytes, sim.now);
    sim.shards[0].handle_closed(sub, sim.now);
    assert_eq!(sim.shards[0].unsent_output(), 0, "gone with its connection");
}

#[test]
fn over_the_buffer_budget_qos0_goes_only_to_clients_with_little_unsent() {
    let config = Config {
        buffer_budget: 100 * 1024,
        ..Config::default()
    };
    let mut sim = Sim::with_config(1, config);
    let slow = sim.client(V3, "slow", true);
    let fast = sim.client(V3, "fast", true);
    sim.subscribe(slow, "t", QoS::AtMostOnce);
    sim.subscribe(fast, "t", QoS::AtMostOnce);
    let publisher = sim.client(V3, "p", true);
    let payload = "x".repeat(1000);
    let mut bytes = BytesMut::new();
    publish_packet("t", &payload, QoS::AtMostOnce, 0)
        .encode(V3, &mut bytes)
        .unwrap();
    // Neither reads: both buffers grow until the budget is spent, then stop near 64 KiB.
    for _ in 0..200 {
        sim.shards[0].handle_bytes(publisher, &mut bytes.clone(), sim.now);
    }
    let dropped = sim.shards[0].stats().qos0_dropped;
    assert!(sim.shards[0].unsent_output() <= 2 * (64 * 1024 + 1010));
    assert_eq!(
        dropped,
        2 * 200 - 2 * 66,
        "each got 66 messages of 1005 bytes"
    );
    // Once the buffers are written out, both are served again.
    sim.run();
    sim.recv_all(slow);
    sim.recv_all(fast);
    sim.shards[0].handle_bytes(publisher, &mut bytes, sim.now);
    sim.run();
    assert_eq!(
        (sim.publishes(slow).len(), sim.publishes(fast).len()),
        (1, 1)
    );
}

#[test]
fn publishers_are_paced_once_a_window_is_queued_not_at_the_queue_limit() {
    let config = Config {
        max_inflight: 2,
        ..Config::default()
    };
    let mut sim = Sim::with_config(1, config);
    let (sub, publisher) = subscriber_and_publisher(&mut sim, true);
    assert_eq!(
        publish_all(&mut sim, publisher, "t", 6),
        [1, 2, 3, 4],
        "two in flight, two queued: enough to keep the window full, far below 10,000"
    );
    assert_eq!(
        read_everything(&mut sim, sub),
        ["0", "1", "2", "3", "4", "5"]
    );
    assert_eq!(acked(&mut sim, publisher), [5, 6]);
}

#[test]
fn an_offline_session_queues_up_to_its_limit_without_holding_anyone() {
    let config = Config {
        max_queued_messages: 3,
        ..Config::default()
    };
    let mut sim = Sim::with_config(1, config);
    let (sub, publisher) = subscriber_and_publisher(&mut sim, false);
    sim.drop_connection(sub);
    assert_eq!(publish_all(&mut sim, publisher, "t", 5), [1, 2, 3, 4, 5]);
    assert_eq!(sim.shards[0].stats().queue_full_dropped, 2);
}
