//! Will messages: when they are and are not published, with their QoS, retain flag and delay.

use std::time::Duration;

use super::*;
use crate::protocol::{Disconnect, ReasonCode};

fn with_will(version: ProtocolVersion, id: &str, will: LastWill) -> Connect {
    let mut c = connect(version, id, true);
    c.will = Some(will);
    c
}

fn watcher(sim: &mut Sim) -> ConnId {
    let watcher = sim.client(V5, "watcher", true);
    sim.subscribe(watcher, "will/#", QoS::ExactlyOnce);
    watcher
}

#[test]
fn a_dropped_connection_publishes_the_will() {
    let mut sim = Sim::new(1);
    let w = watcher(&mut sim);
    let (c, _) = sim.connect(with_will(
        V3,
        "dying",
        will("will/dying", "gone", QoS::AtLeastOnce),
    ));
    sim.drop_connection(c);
    let got = sim.publishes(w);
    assert_eq!(payloads(&got), ["gone"]);
    assert_eq!(got[0].qos, QoS::AtLeastOnce);
}

#[test]
fn a_normal_disconnect_discards_the_will_and_0x04_keeps_it() {
    let mut sim = Sim::new(1);
    let w = watcher(&mut sim);
    let (c, _) = sim.connect(with_will(
        V5,
        "polite",
        will("will/p", "no", QoS::AtMostOnce),
    ));
    sim.send(c, Packet::Disconnect(Box::default()));
    assert!(sim.is_closed(c));
    assert!(sim.publishes(w).is_empty());

    let (c, _) = sim.connect(with_will(
        V5,
        "asks",
        will("will/a", "yes", QoS::AtMostOnce),
    ));
    sim.send(
        c,
        Packet::Disconnect(Box::new(Disconnect::with_reason(
            ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
        ))),
    );
    assert_eq!(payloads(&sim.publishes(w)), ["yes"]);
}

#[test]
fn keepalive_timeout_protocol_error_and_takeover_publish_the_will() {
    let mut sim = Sim::new(1);
    let w = watcher(&mut sim);
    let mut c = with_will(V3, "silent", will("will/s", "timeout", QoS::AtMostOnce));
    c.keep_alive = 2;
    sim.connect(c);
    sim.advance(Duration::from_secs(3));
    assert_eq!(payloads(&sim.publishes(w)), ["timeout"]);

    let (c, _) = sim.connect(with_will(
        V3,
        "bad",
        will("will/b", "violation", QoS::AtMostOnce),
    ));
    sim.send_bytes(c, &[0xF0, 0x00]); // AUTH does not exist in 3.1.1
    assert!(sim.is_closed(c));
    assert_eq!(payloads(&sim.publishes(w)), ["violation"]);

    let (old, _) = sim.connect(with_will(
        V3,
        "twin",
        will("will/t", "taken", QoS::AtMostOnce),
    ));
    sim.client(V3, "twin", true);
    assert!(sim.is_closed(old));
    assert_eq!(payloads(&sim.publishes(w)), ["taken"]);
}

#[test]
fn a_retained_will_is_retained() {
    let mut sim = Sim::new(1);
    let mut last_will = will("will/r", "retained", QoS::AtMostOnce);
    last_will.retain = true;
    let (c, _) = sim.connect(with_will(V3, "r", last_will));
    sim.drop_connection(c);
    let late = sim.client(V3, "late", true);
    sim.subscribe(late, "will/r", QoS::AtMostOnce);
    let got = sim.publishes(late);
    assert_eq!(payloads(&got), ["retained"]);
    assert!(got[0].retain);
}

#[test]
fn a_will_delay_waits_and_a_reconnect_cancels_it() {
    let mut sim = Sim::new(1);
    let w = watcher(&mut sim);
    let delayed = |id: &str| {
        let mut last_will = will("will/d", id, QoS::AtMostOnce);
        last_will.properties.will_delay_interval = Some(10);
        let mut c = with_will(V5, id, last_will);
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(100);
        c
    };
    let (c, _) = sim.connect(delayed("late"));
    sim.drop_connection(c);
    sim.advance(Duration::from_secs(9));
    assert!(sim.publishes(w).is_empty());
    sim.advance(Duration::from_secs(1));
    assert_eq!(payloads(&sim.publishes(w)), ["late"]);

    let (c, _) = sim.connect(delayed("back"));
    sim.drop_connection(c);
    sim.advance(Duration::from_secs(5));
    sim.connect(delayed("back"));
    sim.advance(Duration::from_secs(20));
    assert!(sim.publishes(w).is_empty());
}

#[test]
fn a_will_delay_longer_than_the_session_fires_when_the_session_ends() {
    let mut sim = Sim::new(1);
    let w = watcher(&mut sim);
    let mut last_will = will("will/e", "session ended", QoS::AtMostOnce);
    last_will.properties.will_delay_interval = Some(1000);
    let mut c = with_will(V5, "e", last_will);
    c.properties.session_expiry_interval = Some(5);
    let (c, _) = sim.connect(c);
    sim.drop_connection(c);
    sim.advance(Duration::from_secs(4));
    assert!(sim.publishes(w).is_empty());
    sim.advance(Duration::from_secs(1));
    assert_eq!(payloads(&sim.publishes(w)), ["session ended"]);
}
