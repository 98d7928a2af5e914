//! Several shards: hand-over to the home shard, publishes crossing shards once per shard,
//! interest-based routing, shared subscriptions and retained messages across shards.

use super::*;
use crate::broker::home_shard;
use crate::protocol::ReasonCode;

/// A client id homed on `shard` of `count`.
fn id_on(shard: usize, count: usize, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|id| home_shard(id, count) == shard)
        .expect("some id hashes to every shard")
}

#[test]
fn a_connection_is_handed_over_to_its_home_shard() {
    let mut sim = Sim::new(4);
    for shard in 0..4 {
        let id = id_on(shard, 4, "c");
        let conn = sim.client(V3, &id, true);
        assert_eq!(sim.shard_of(conn), shard);
        // The connection works after the move.
        sim.send(conn, Packet::PingReq);
        assert_eq!(sim.recv(conn), Some(Packet::PingResp));
    }
    let sessions: Vec<usize> = sim.shards.iter().map(Broker::session_count).collect();
    assert_eq!(sessions, [1, 1, 1, 1]);
}

#[test]
fn bytes_after_connect_follow_the_connection_to_its_new_shard() {
    let mut sim = Sim::new(2);
    let id = id_on(1, 2, "eager");
    let conn = sim.open(V3);
    assert_eq!(sim.shard_of(conn), 0);
    // CONNECT and SUBSCRIBE in one read, as a fast client sends them.
    let mut bytes = BytesMut::new();
    Packet::Connect(Box::new(connect(V3, &id, true)))
        .encode(V3, &mut bytes)
        .unwrap();
    Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![("e".into(), SubscriptionOptions::default())],
        ..Subscribe::default()
    })
    .encode(V3, &mut bytes)
    .unwrap();
    sim.send_bytes(conn, &bytes);
    assert_eq!(sim.shard_of(conn), 1);
    assert!(matches!(sim.recv(conn), Some(Packet::ConnAck(_))));
    assert!(matches!(sim.recv(conn), Some(Packet::SubAck(_))));
}

#[test]
fn publishes_cross_shards_once_and_only_where_wanted() {
    let mut sim = Sim::new(3);
    let sub_ids: Vec<String> = (0..3).map(|shard| id_on(shard, 3, "sub")).collect();
    let subs: Vec<ConnId> = sub_ids.iter().map(|id| sim.client(V3, id, true)).collect();
    sim.subscribe(subs[1], "x/+", QoS::AtMostOnce);
    sim.subscribe(subs[2], "x/#", QoS::AtMostOnce);
    sim.subscribe(subs[2], "x/y", QoS::AtMostOnce);
    let publisher = sim.client(V3, &id_on(0, 3, "pub"), true);
    sim.publish(publisher, "x/y", "hello", QoS::AtMostOnce, false);
    assert!(sim.publishes(subs[0]).is_empty());
    assert_eq!(payloads(&sim.publishes(subs[1])), ["hello"]);
    assert_eq!(
        payloads(&sim.publishes(subs[2])),
        ["hello"],
        "one copy despite two filters"
    );
    sim.publish(
        publisher,
        "nobody/listens",
        "dropped",
        QoS::AtMostOnce,
        false,
    );
    for sub in subs {
        assert!(sim.publishes(sub).is_empty());
    }
}

#[test]
fn unsubscribing_the_last_subscriber_withdraws_the_interest() {
    let mut sim = Sim::new(2);
    let sub = sim.client(V5, &id_on(1, 2, "s"), true);
    sim.subscribe(sub, "w", QoS::AtMostOnce);
    sim.send(
        sub,
        Packet::Unsubscribe(crate::protocol::Unsubscribe {
            packet_id: 2,
            filters: vec!["w".into()],
            ..Default::default()
        }),
    );
    assert!(matches!(sim.recv(sub), Some(Packet::UnsubAck(_))));
    let publisher = sim.client(V5, &id_on(0, 2, "p"), true);
    sim.publish(publisher, "w", "x", QoS::AtMostOnce, false);
    // Shard 0 sent shard 1 nothing: its next batch would show up here.
    assert!(sim.shards[0].poll_shard_messages().is_none());
    assert!(sim.publishes(sub).is_empty());
}

#[test]
fn shared_subscriptions_deliver_each_message_once_across_shards() {
    let mut sim = Sim::new(2);
    let a = sim.client(V5, &id_on(0, 2, "a"), true);
    let b = sim.client(V5, &id_on(1, 2, "b"), true);
    sim.subscribe(a, "$share/workers/job", QoS::AtLeastOnce);
    sim.subscribe(b, "$share/workers/job", QoS::AtLeastOnce);
    let publisher = sim.client(V5, &id_on(1, 2, "p"), true);
    for i in 0..10 {
        sim.publish(publisher, "job", &i.to_string(), QoS::AtMostOnce, false);
    }
    let got_a = sim.publishes(a).len();
    let got_b = sim.publishes(b).len();
    assert_eq!(got_a + got_b, 10);
    assert!(
        got_a >= 3 && got_b >= 3,
        "spread over the group: {got_a} / {got_b}"
    );
}

/// Two members of a shared subscription on different shards (3.1.1 sessions, which persist),
/// one offline: while the other is connected, it gets every message and nothing waits in the
/// offline member's queue. With both connected the group is spread again; with neither, the
/// messages wait with a member.
#[test]
fn shared_subscriptions_go_to_a_connected_member_on_any_shard() {
    let mut sim = Sim::new(2);
    let (here_id, away_id) = (id_on(0, 2, "here"), id_on(1, 2, "away"));
    let here = sim.client(V3, &here_id, false);
    let away = sim.client(V3, &away_id, false);
    sim.subscribe(here, "$share/workers/job", QoS::AtLeastOnce);
    sim.subscribe(away, "$share/workers/job", QoS::AtLeastOnce);
    sim.drop_connection(away);
    let publisher = sim.client(V5, &id_on(1, 2, "p"), true);
    let publish = |sim: &mut Sim, from: usize, count: usize| {
        for n in from..from + count {
            sim.publish(publisher, "job", &n.to_string(), QoS::AtLeastOnce, false);
        }
    };
    publish(&mut sim, 0, 20);
    assert_eq!(
        sim.publishes(here).len(),
        20,
        "the connected member gets them all"
    );
    let (away, _) = sim.connect(connect(V3, &away_id, false));
    assert!(
        sim.publishes(away).is_empty(),
        "nothing waited for the offline member"
    );
    publish(&mut sim, 20, 20);
    let (got_here, got_away) = (sim.publishes(here).len(), sim.publishes(away).len());
    assert_eq!(got_here + got_away, 20);
    assert!(
        got_here >= 5 && got_away >= 5,
        "spread again: {got_here} / {got_away}"
    );
    sim.drop_connection(here);
    sim.drop_connection(away);
    publish(&mut sim, 40, 4);
    let (here, _) = sim.connect(connect(V3, &here_id, false));
    let (away, _) = sim.connect(connect(V3, &away_id, false));
    // What comes now is the unacknowledged earlier messages again, and what waited.
    let mut waited: Vec<String> = [here, away]
        .into_iter()
        .flat_map(|member| sim.publishes(member))
        .map(|publish| String::from_utf8_lossy(&publish.payload).into_owned())
        .filter(|payload| payload.parse::<usize>().is_ok_and(|n| n >= 40))
        .collect();
    waited.sort();
    assert_eq!(
        waited,
        ["40", "41", "42", "43"],
        "with no member connected, they wait"
    );
}

/// With both members of a group away, its messages wait with one or the other. When one
/// member's session ends (here: it comes back with a clean session), what it held goes to the
/// other member, which gets every message once it returns.
#[test]
fn a_shared_members_messages_go_to_another_member_when_its_session_ends() {
    let mut sim = Sim::new(2);
    let (keeper_id, leaver_id) = (id_on(0, 2, "keeper"), id_on(1, 2, "leaver"));
    let keeper = sim.client(V3, &keeper_id, false);
    let leaver = sim.client(V3, &leaver_id, false);
    sim.subscribe(keeper, "$share/workers/job", QoS::AtLeastOnce);
    sim.subscribe(leaver, "$share/workers/job", QoS::AtLeastOnce);
    // The leaver takes one message and does not acknowledge it before going away.
    let publisher = sim.client(V3, &id_on(1, 2, "p"), true);
    sim.drop_connection(keeper);
    sim.publish(publisher, "job", "0", QoS::AtLeastOnce, false);
    assert_eq!(payloads(&sim.publishes(leaver)), ["0"]);
    sim.drop_connection(leaver);
    for n in 1..10 {
        sim.publish(publisher, "job", &n.to_string(), QoS::AtLeastOnce, false);
    }
    let (_, connack) = sim.connect(connect(V3, &leaver_id, true));
    assert!(matches!(connack, Packet::ConnAck(ack) if !ack.session_present));
    let (keeper, _) = sim.connect(connect(V3, &keeper_id, false));
    let mut got: Vec<usize> = sim
        .publishes(keeper)
        .iter()
        .map(|publish| String::from_utf8_lossy(&publish.payload).parse().unwrap())
        .collect();
    got.sort_unstable();
    assert_eq!(
        got,
        (0..10).collect::<Vec<_>>(),
        "every message, the leaver's too"
    );
}

/// A message routed to a shard for a group whose last member there leaves before it arrives
/// goes to a member on another shard, not nowhere (it was acknowledged to its publisher).
#[test]
fn a_message_for_a_group_whose_member_just_left_goes_to_another_member() {
    let mut sim = Sim::new(2);
    let keeper = sim.client(V3, &id_on(0, 2, "keeper"), false);
    let leaver = sim.client(V3, &id_on(1, 2, "leaver"), false);
    sim.subscribe(keeper, "$share/workers/job", QoS::AtLeastOnce);
    sim.subscribe(leaver, "$share/workers/job", QoS::AtLeastOnce);
    let publisher = sim.client(V3, &id_on(0, 2, "p"), true);
    let publisher_shard = sim.shard_of(publisher);
    // Two publishes read on the publisher's shard: one of them is routed to the leaver's shard,
    // and waits in the outbox there.
    let mut bytes = BytesMut::new();
    for packet_id in [1u16, 2] {
        publish_packet("job", &packet_id.to_string(), QoS::AtLeastOnce, packet_id)
            .encode(V3, &mut bytes)
            .unwrap();
    }
    let now = sim.now;
    sim.shards[publisher_shard].handle_bytes(publisher, &mut bytes, now);
    // Meanwhile the leaver, the group's only member on its shard, unsubscribes.
    let mut unsubscribe = BytesMut::new();
    Packet::Unsubscribe(crate::protocol::Unsubscribe {
        packet_id: 9,
        filters: vec!["$share/workers/job".into()],
        properties: Default::default(),
    })
    .encode(V3, &mut unsubscribe)
    .unwrap();
    let leaver_shard = sim.shard_of(leaver);
    sim.shards[leaver_shard].handle_bytes(leaver, &mut unsubscribe, now);
    sim.run();
    let mut got = payloads(&sim.publishes(keeper))
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    got.sort();
    assert_eq!(got, ["1", "2"], "both to the member that stayed");
    assert!(sim.publishes(leaver).is_empty());
}

#[test]
fn retained_messages_reach_subscribers_on_every_shard() {
    let mut sim = Sim::new(3);
    let publisher = sim.client(V3, &id_on(0, 3, "p"), true);
    sim.publish(publisher, "state", "on", QoS::AtLeastOnce, true);
    for shard in 0..3 {
        let sub = sim.client(V3, &id_on(shard, 3, "late"), true);
        sim.subscribe(sub, "state", QoS::AtLeastOnce);
        assert_eq!(payloads(&sim.publishes(sub)), ["on"], "shard {shard}");
    }
    sim.publish(publisher, "state", "", QoS::AtLeastOnce, true);
    assert!(sim.shards.iter().all(|shard| shard.retained_count() == 0));
}

/// Two connections of one client: the first is read on the other shard and is still on its
/// way home when the second, read later on the home shard, connects. The later one keeps the
/// session; the earlier one is answered as if it had been taken over at once.
#[test]
fn the_connect_read_last_keeps_the_session_whichever_shard_read_it() {
    let mut sim = Sim::new(2);
    let id = id_on(1, 2, "late");
    let earlier = sim.open(V5);
    let later = sim.open(V5);
    assert_eq!((sim.shard_of(earlier), sim.shard_of(later)), (0, 1));
    let mut bytes = BytesMut::new();
    Packet::Connect(Box::new(connect(V5, &id, false)))
        .encode(V5, &mut bytes)
        .unwrap();
    // Read on shard 0, which hands it over; the runtime has not carried that out yet.
    let now = sim.now;
    sim.shards[0].handle_bytes(earlier, &mut bytes.clone(), now);
    sim.now = now + Duration::from_millis(1);
    // Read a millisecond later on the home shard, which connects it; then the hand-over lands.
    sim.send(later, Packet::Connect(Box::new(connect(V5, &id, false))));
    assert!(matches!(sim.recv(later), Some(Packet::ConnAck(ack)) if !ack.reason_code.is_error()));
    assert!(!sim.is_closed(later), "the connection read last stays");
    assert!(matches!(sim.recv(earlier), Some(Packet::ConnAck(ack)) if !ack.reason_code.is_error()));
    assert!(
        matches!(sim.recv(earlier), Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::SESSION_TAKEN_OVER)
    );
    assert!(sim.is_closed(earlier));
    sim.subscribe(later, "t", QoS::AtLeastOnce);
    let publisher = sim.client(V3, &id_on(0, 2, "p"), true);
    sim.publish(publisher, "t", "to the later one", QoS::AtLeastOnce, false);
    assert_eq!(payloads(&sim.publishes(later)), ["to the later one"]);
}

#[test]
fn takeover_works_whichever_shard_accepts_the_new_connection() {
    let mut sim = Sim::new(2);
    let id = id_on(1, 2, "t");
    let mut persistent = connect(V3, &id, false);
    persistent.keep_alive = 0;
    let (old, _) = sim.connect(persistent.clone());
    sim.subscribe(old, "t", QoS::AtLeastOnce);
    // The next connection is accepted on the other shard and handed over.
    let (new, ack) = sim.connect(persistent);
    assert!(matches!(ack, Packet::ConnAck(ack) if ack.session_present));
    assert!(sim.is_closed(old));
    let publisher = sim.client(V3, &id_on(0, 2, "p"), true);
    sim.publish(publisher, "t", "after", QoS::AtLeastOnce, false);
    assert_eq!(payloads(&sim.publishes(new)), ["after"]);
}
