//! CONNECT, sessions, takeover and keepalive.

use std::time::Duration;

use super::*;
use crate::protocol::{ConnAck, ReasonCode};

fn connack(packet: Packet) -> ConnAck {
    match packet {
        Packet::ConnAck(ack) => *ack,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[test]
fn every_version_connects() {
    let mut sim = Sim::new(1);
    for (version, id) in [(ProtocolVersion::V3_1, "a"), (V3, "b"), (V5, "c")] {
        let (conn, ack) = sim.connect(connect(version, id, true));
        let ack = connack(ack);
        assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
        assert!(!ack.session_present);
        assert!(!sim.is_closed(conn));
    }
    assert_eq!(sim.shards[0].session_count(), 3);
}

#[test]
fn anything_before_connect_closes_the_connection() {
    let mut sim = Sim::new(1);
    let conn = sim.open(V3);
    sim.send(conn, Packet::PingReq);
    assert!(sim.is_closed(conn));
    assert!(sim.recv(conn).is_none());
}

#[test]
fn a_second_connect_is_a_protocol_error() {
    let mut sim = Sim::new(1);
    let conn = sim.client(V5, "twice", true);
    sim.send(conn, Packet::Connect(Box::new(connect(V5, "twice", true))));
    match sim.recv(conn) {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, ReasonCode::PROTOCOL_ERROR),
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    assert!(sim.is_closed(conn));
}

#[test]
fn empty_client_id_is_assigned_with_clean_start_and_refused_without() {
    let mut sim = Sim::new(1);
    let (_, ack) = sim.connect(connect(V5, "", true));
    let ack = connack(ack);
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    let assigned = ack
        .properties
        .assigned_client_identifier
        .expect("assigned id");
    assert!(!assigned.is_empty());

    let (conn, ack) = sim.connect(connect(V3, "", true));
    assert_eq!(connack(ack).reason_code, ReasonCode::SUCCESS);
    assert!(!sim.is_closed(conn));

    let (conn, ack) = sim.connect(connect(V3, "", false));
    // 3.1.1 return code 2, identifier rejected.
    assert_eq!(
        connack(ack).reason_code,
        ReasonCode::CLIENT_IDENTIFIER_NOT_VALID
    );
    assert!(sim.is_closed(conn));

    let (conn, ack) = sim.connect(connect(V5, "", false));
    assert_eq!(
        connack(ack).reason_code,
        ReasonCode::CLIENT_IDENTIFIER_NOT_VALID
    );
    assert!(sim.is_closed(conn));

    let (conn, ack) = sim.connect(connect(ProtocolVersion::V3_1, "", true));
    assert_eq!(
        connack(ack).reason_code,
        ReasonCode::CLIENT_IDENTIFIER_NOT_VALID
    );
    assert!(sim.is_closed(conn));
}

#[test]
fn an_unknown_protocol_level_gets_return_code_1() {
    let mut sim = Sim::new(1);
    let conn = sim.open(V3);
    // CONNECT "MQTT" level 6.
    sim.send_bytes(
        conn,
        &[0x10, 0x0C, 0, 4, b'M', b'Q', b'T', b'T', 6, 2, 0, 60, 0, 0],
    );
    let ack = connack(sim.recv(conn).expect("CONNACK"));
    assert_eq!(ack.reason_code, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION);
    assert!(sim.is_closed(conn));
}

#[test]
fn a_persistent_session_is_restored_exactly_once() {
    for resubscribe in [false, true] {
        let mut sim = Sim::new(1);
        let sub = sim.client(V3, "sub", false);
        sim.subscribe(sub, "t/#", QoS::AtLeastOnce);
        sim.drop_connection(sub);

        let (sub, ack) = sim.connect(connect(V3, "sub", false));
        assert!(connack(ack).session_present);
        if resubscribe {
            sim.subscribe(sub, "t/#", QoS::AtLeastOnce);
        }
        let publisher = sim.client(V3, "pub", true);
        sim.publish(publisher, "t/1", "once", QoS::AtLeastOnce, false);
        let got = sim.publishes(sub);
        assert_eq!(payloads(&got), ["once"], "resubscribe={resubscribe}");
        // Publishing after the reconnect keeps working.
        sim.send(sub, Packet::PubAck(Ack::new(got[0].packet_id)));
        sim.publish(publisher, "t/2", "twice", QoS::AtLeastOnce, false);
        assert_eq!(payloads(&sim.publishes(sub)), ["twice"]);
    }
}

#[test]
fn the_clean_session_flag_belongs_to_each_connection() {
    let mut sim = Sim::new(1);
    let c = sim.client(V3, "c", false);
    sim.subscribe(c, "x", QoS::AtMostOnce);
    sim.drop_connection(c);

    // Clean session 1 discards the stored session.
    let (c, ack) = sim.connect(connect(V3, "c", true));
    assert!(!connack(ack).session_present);
    let publisher = sim.client(V3, "p", true);
    sim.publish(publisher, "x", "lost", QoS::AtMostOnce, false);
    assert!(sim.publishes(c).is_empty());
    sim.drop_connection(c);

    // That clean session ended with its connection: nothing to resume.
    let (_, ack) = sim.connect(connect(V3, "c", false));
    assert!(!connack(ack).session_present);
}

#[test]
fn takeover_closes_only_the_old_connection() {
    let mut sim = Sim::new(1);
    let bystander = sim.client(V5, "bystander", true);
    let mut persistent = connect(V5, "dup", false);
    persistent.properties.session_expiry_interval = Some(300);
    let (old, _) = sim.connect(persistent.clone());
    sim.subscribe(old, "news", QoS::AtLeastOnce);
    let (new, ack) = sim.connect(persistent);
    assert!(connack(ack).session_present);
    match sim.recv(old) {
        Some(Packet::Disconnect(disconnect)) => {
            assert_eq!(disconnect.reason_code, ReasonCode::SESSION_TAKEN_OVER)
        }
        other => panic!("expected DISCONNECT 0x8E, got {other:?}"),
    }
    assert!(sim.is_closed(old));
    assert!(!sim.is_closed(new));
    assert!(!sim.is_closed(bystander));
    sim.publish(bystander, "news", "hello", QoS::AtLeastOnce, false);
    assert_eq!(payloads(&sim.publishes(new)), ["hello"]);
    sim.send(bystander, Packet::PingReq);
    assert_eq!(sim.recv(bystander), Some(Packet::PingResp));
}

#[test]
fn a_v5_session_with_expiry_0_ends_with_its_connection_even_on_takeover() {
    let mut sim = Sim::new(1);
    let old = sim.client(V5, "short", false);
    sim.subscribe(old, "t", QoS::AtLeastOnce);
    let (new, ack) = sim.connect(connect(V5, "short", false));
    assert!(sim.is_closed(old));
    assert!(!connack(ack).session_present);
    let publisher = sim.client(V5, "p", true);
    sim.publish(publisher, "t", "none", QoS::AtLeastOnce, false);
    assert!(sim.publishes(new).is_empty());
}

#[test]
fn keepalive_closes_at_one_and_a_half_times_not_before() {
    let mut sim = Sim::new(1);
    let mut c = connect(V5, "k", true);
    c.keep_alive = 10;
    let (conn, _) = sim.connect(c);
    sim.advance(Duration::from_millis(14_999));
    assert!(!sim.is_closed(conn));
    sim.advance(Duration::from_millis(1));
    assert!(sim.is_closed(conn));
    match sim.recv(conn) {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, ReasonCode::KEEP_ALIVE_TIMEOUT),
        other => panic!("expected DISCONNECT 0x8D, got {other:?}"),
    }
}

#[test]
fn any_packet_resets_the_keepalive() {
    let mut sim = Sim::new(1);
    let mut c = connect(V3, "k", true);
    c.keep_alive = 10;
    let (conn, _) = sim.connect(c);
    for _ in 0..5 {
        sim.advance(Duration::from_secs(14));
        sim.send(conn, Packet::PingReq);
        assert_eq!(sim.recv(conn), Some(Packet::PingResp));
    }
    assert!(!sim.is_closed(conn));
    sim.advance(Duration::from_secs(15));
    assert!(sim.is_closed(conn));
}

#[test]
fn a_connection_that_never_sends_connect_is_closed() {
    let mut sim = Sim::new(1);
    let conn = sim.open(V3);
    sim.advance(Duration::from_secs(19));
    assert!(!sim.is_closed(conn));
    sim.advance(Duration::from_secs(2));
    assert!(sim.is_closed(conn));
}

#[test]
fn a_v3_persistent_session_expires_after_the_default_hour() {
    let mut sim = Sim::new(1);
    let c = sim.client(V3, "p", false);
    sim.drop_connection(c);
    sim.advance(Duration::from_secs(3599));
    assert_eq!(sim.shards[0].session_count(), 1);
    sim.advance(Duration::from_secs(2));
    assert_eq!(sim.shards[0].session_count(), 0);
    let (_, ack) = sim.connect(connect(V3, "p", false));
    assert!(!connack(ack).session_present);
}

#[test]
fn keepalive_over_the_maximum_is_refused_in_v3_and_capped_in_v5() {
    let config = Config {
        max_keepalive: 30,
        ..Config::default()
    };
    let mut sim = Sim::with_config(1, config);
    let (conn, ack) = sim.connect(connect(V3, "old", true));
    assert_eq!(
        connack(ack).reason_code,
        ReasonCode::CLIENT_IDENTIFIER_NOT_VALID
    );
    assert!(sim.is_closed(conn));
    let (conn, ack) = sim.connect(connect(V5, "new", true));
    let ack = connack(ack);
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    assert_eq!(ack.properties.server_keep_alive, Some(30));
    sim.advance(Duration::from_secs(45));
    assert!(sim.is_closed(conn));
}

#[test]
fn over_the_connection_limit_connack_says_so() {
    let config = Config {
        max_connections: 1,
        ..Config::default()
    };
    let mut sim = Sim::with_config(1, config);
    sim.client(V5, "first", true);
    let (conn, ack) = sim.connect(connect(V5, "second", true));
    assert_eq!(connack(ack).reason_code, ReasonCode::QUOTA_EXCEEDED);
    assert!(sim.is_closed(conn));
    let (_, ack) = sim.connect(connect(V3, "third", true));
    // 3.x return code 3, server unavailable.
    assert_eq!(connack(ack).reason_code, ReasonCode::SERVER_UNAVAILABLE);
}
