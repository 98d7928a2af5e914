//! SUBSCRIBE/UNSUBSCRIBE, matching rules, overlapping subscriptions, retained messages and
//! shared subscriptions on one shard.

use super::*;
use crate::protocol::{ReasonCode, RetainHandling, Unsubscribe};

#[test]
fn each_filter_gets_its_own_code_and_wildcards_match_per_the_spec() {
    let mut sim = Sim::new(1);
    let sub = sim.client(V3, "s", true);
    let options = |qos| SubscriptionOptions {
        qos,
        ..SubscriptionOptions::default()
    };
    let suback = sim.subscribe_with(
        sub,
        Subscribe {
            packet_id: 3,
            filters: vec![
                ("a/#".into(), options(QoS::AtMostOnce)),
                ("+/b".into(), options(QoS::AtLeastOnce)),
                ("#".into(), options(QoS::ExactlyOnce)),
            ],
            ..Subscribe::default()
        },
    );
    assert_eq!(suback.packet_id, 3);
    assert_eq!(
        suback.reason_codes,
        [
            ReasonCode::GRANTED_QOS_0,
            ReasonCode::GRANTED_QOS_1,
            ReasonCode::GRANTED_QOS_2
        ]
    );
    let publisher = sim.client(V3, "p", true);
    for topic in ["a", "a/b", "x/b", "$internal/x", "c"] {
        sim.publish(publisher, topic, topic, QoS::AtMostOnce, false);
    }
    // "#" catches all but $ topics; overlapping filters still give one copy each.
    assert_eq!(payloads(&sim.publishes(sub)), ["a", "a/b", "x/b", "c"]);
}

#[test]
fn overlapping_subscriptions_deliver_one_copy_at_the_highest_qos() {
    let mut sim = Sim::new(1);
    let sub = sim.client(V5, "s", true);
    sim.subscribe(sub, "o/+", QoS::AtMostOnce);
    sim.subscribe(sub, "o/#", QoS::AtLeastOnce);
    let publisher = sim.client(V5, "p", true);
    sim.publish(publisher, "o/1", "m", QoS::ExactlyOnce, false);
    let got = sim.publishes(sub);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].qos, QoS::AtLeastOnce);
}

#[test]
fn unsubscribe_stops_delivery_and_reports_unknown_filters() {
    let mut sim = Sim::new(1);
    let sub = sim.client(V5, "s", true);
    sim.subscribe(sub, "u", QoS::AtMostOnce);
    sim.send(
        sub,
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 4,
            filters: vec!["u".into(), "never".into()],
            ..Unsubscribe::default()
        }),
    );
    match sim.recv(sub) {
        Some(Packet::UnsubAck(ack)) => {
            assert_eq!(ack.0.packet_id, 4);
            assert_eq!(
                ack.0.reason_codes,
                [ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED]
            );
        }
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
    let publisher = sim.client(V5, "p", true);
    sim.publish(publisher, "u", "gone", QoS::AtMostOnce, false);
    assert!(sim.publishes(sub).is_empty());
}

#[test]
fn retained_messages_are_stored_replaced_cleared_and_sent_on_subscribe() {
    let mut sim = Sim::new(1);
    let publisher = sim.client(V3, "p", true);
    sim.publish(publisher, "r/1", "old", QoS::AtLeastOnce, true);
    sim.publish(publisher, "r/1", "new", QoS::AtLeastOnce, true);
    sim.publish(publisher, "r/2", "two", QoS::AtMostOnce, true);
    sim.publish(publisher, "r/3", "three", QoS::AtMostOnce, true);
    sim.publish(publisher, "r/3", "", QoS::AtMostOnce, true);
    assert_eq!(sim.shards[0].retained_count(), 2);

    let sub = sim.client(V3, "s", true);
    sim.subscribe(sub, "r/+", QoS::AtLeastOnce);
    let mut got = sim.publishes(sub);
    got.sort_by(|a, b| a.topic.cmp(&b.topic));
    assert_eq!(payloads(&got), ["new", "two"]);
    assert!(
        got.iter().all(|p| p.retain),
        "sent because of a subscription: RETAIN set"
    );
    assert_eq!(got[0].qos, QoS::AtLeastOnce);
    assert_eq!(got[1].qos, QoS::AtMostOnce);

    // Live publishes to an existing subscriber carry RETAIN 0 (3.1.1, no retain-as-published).
    sim.publish(publisher, "r/2", "live", QoS::AtMostOnce, true);
    let live = sim.publishes(sub);
    assert_eq!(payloads(&live), ["live"]);
    assert!(!live[0].retain);
}

#[test]
fn retain_handling_and_retain_as_published() {
    let mut sim = Sim::new(1);
    let publisher = sim.client(V5, "p", true);
    sim.publish(publisher, "h", "kept", QoS::AtMostOnce, true);
    let sub = sim.client(V5, "s", true);
    let subscribe = |retain_handling, retain_as_published| Subscribe {
        packet_id: 1,
        filters: vec![(
            "h".into(),
            SubscriptionOptions {
                retain_handling,
                retain_as_published,
                ..SubscriptionOptions::default()
            },
        )],
        ..Subscribe::default()
    };
    sim.subscribe_with(sub, subscribe(RetainHandling::DoNotSend, false));
    assert!(sim.publishes(sub).is_empty());
    // Already subscribed: "send if new" sends nothing.
    sim.subscribe_with(sub, subscribe(RetainHandling::SendIfNewSubscription, true));
    assert!(sim.publishes(sub).is_empty());
    sim.subscribe_with(sub, subscribe(RetainHandling::SendOnSubscribe, true));
    assert_eq!(payloads(&sim.publishes(sub)), ["kept"]);
    sim.publish(publisher, "h", "again", QoS::AtMostOnce, true);
    let live = sim.publishes(sub);
    assert!(live[0].retain, "retain-as-published keeps the flag");
}

#[test]
fn shared_subscriptions_spread_messages_over_the_group() {
    let mut sim = Sim::new(1);
    let a = sim.client(V5, "a", true);
    let b = sim.client(V5, "b", true);
    let plain = sim.client(V5, "plain", true);
    sim.subscribe(a, "$share/g/jobs/+", QoS::AtLeastOnce);
    sim.subscribe(b, "$share/g/jobs/+", QoS::AtLeastOnce);
    sim.subscribe(plain, "jobs/+", QoS::AtMostOnce);
    let publisher = sim.client(V5, "p", true);
    for i in 0..10 {
        sim.publish(publisher, "jobs/x", &i.to_string(), QoS::AtMostOnce, false);
    }
    let got_a = sim.publishes(a).len();
    let got_b = sim.publishes(b).len();
    assert_eq!(got_a + got_b, 10, "each message to exactly one member");
    assert_eq!((got_a, got_b), (5, 5), "round robin");
    assert_eq!(sim.publishes(plain).len(), 10);
}

#[test]
fn a_shared_subscription_leaves_nothing_behind_once_its_members_are_gone() {
    let mut sim = Sim::new(2);
    let publisher = sim.client(V5, "p", true);
    // Groups that come and go, as with one group per job: each must leave no trace.
    for group in 0..3 {
        let filter = format!("$share/job{group}/work");
        let a = sim.client(V5, "a", true);
        let b = sim.client(V5, "b", true);
        sim.subscribe(a, &filter, QoS::AtLeastOnce);
        sim.subscribe(b, &filter, QoS::AtLeastOnce);
        sim.publish(publisher, "work", "x", QoS::AtMostOnce, false);
        let got = sim.publishes(a).len() + sim.publishes(b).len();
        assert_eq!(got, 1, "one member of job{group} gets it");
        for conn in [a, b] {
            sim.send(conn, Packet::Disconnect(Box::default()));
        }
    }
    sim.send(publisher, Packet::Disconnect(Box::default()));
    assert_eq!(sim.leftovers(), Vec::<String>::new());
}

#[test]
fn dollar_topics_are_not_matched_by_leading_wildcards() {
    let mut sim = Sim::new(1);
    let sub = sim.client(V3, "s", true);
    sim.subscribe(sub, "+/x", QoS::AtMostOnce);
    // A `$` topic clients may publish to (`$SYS` is the broker's own).
    sim.subscribe(sub, "$internal/#", QoS::AtMostOnce);
    let publisher = sim.client(V3, "p", true);
    sim.publish(publisher, "$internal/x", "dollar", QoS::AtMostOnce, false);
    assert_eq!(payloads(&sim.publishes(sub)), ["dollar"]);
}
