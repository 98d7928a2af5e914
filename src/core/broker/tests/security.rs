//! Authentication through the runtime's verdicts (`Event::Authenticate`), enhanced
//! authentication rounds in AUTH packets, and the ACL on publishes, subscriptions, wills and
//! deliveries, across shards.

use std::sync::Arc;

use super::*;
use crate::broker::access::AccessRules;
use crate::broker::{AuthRequest, AuthStage, AuthVerdict};
use crate::protocol::{Auth, AuthProperties, ReasonCode};

const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V3_1_1;

/// Accepts "alice" with password "secret", and a two-round method "TEST" whose second round
/// must say "proof"; refuses anything else.
fn authenticator(request: &AuthRequest) -> AuthVerdict {
    match (request.method.as_deref(), request.stage) {
        (Some("TEST"), AuthStage::Connect | AuthStage::Reauthenticate) => AuthVerdict::Continue {
            data: Bytes::from_static(b"challenge"),
        },
        (Some("TEST"), AuthStage::Continue) if request.data.as_deref() == Some(b"proof") => {
            AuthVerdict::Accepted {
                username: Some("alice".into()),
                data: Some(Bytes::from_static(b"welcome")),
            }
        }
        (Some(_), _) => AuthVerdict::Refused(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
        (None, _) => match (request.username.as_deref(), request.password.as_deref()) {
            (Some("alice"), Some(b"secret")) => AuthVerdict::Accepted {
                username: Some("alice".into()),
                data: None,
            },
            (None, _) => AuthVerdict::Refused(ReasonCode::NOT_AUTHORIZED),
            _ => AuthVerdict::Refused(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
        },
    }
}

fn authenticating(shards: usize) -> Sim {
    let config = Config {
        authenticate: true,
        ..Config::default()
    };
    let mut sim = Sim::with_config(shards, config);
    sim.authenticator = authenticator;
    sim
}

fn credentials(version: ProtocolVersion, id: &str, user: Option<&str>, password: &str) -> Connect {
    Connect {
        username: user.map(Into::into),
        password: user.map(|_| Bytes::copy_from_slice(password.as_bytes())),
        ..connect(version, id, true)
    }
}

fn connack_code(packet: &Packet) -> ReasonCode {
    match packet {
        Packet::ConnAck(ack) => ack.reason_code,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[test]
fn the_runtime_decides_who_connects_and_refusals_carry_their_codes() {
    let mut sim = authenticating(2);
    for version in [V5, V311] {
        let (conn, ack) = sim.connect(credentials(version, "a1", Some("alice"), "secret"));
        assert_eq!(connack_code(&ack), ReasonCode::SUCCESS);
        assert!(!sim.is_closed(conn));
        let (conn, ack) = sim.connect(credentials(version, "a2", Some("alice"), "wrong"));
        assert_eq!(connack_code(&ack), ReasonCode::BAD_USER_NAME_OR_PASSWORD);
        assert!(sim.is_closed(conn));
        let (conn, ack) = sim.connect(credentials(version, "a3", None, ""));
        assert_eq!(connack_code(&ack), ReasonCode::NOT_AUTHORIZED);
        assert!(sim.is_closed(conn));
    }
}

#[test]
fn packets_sent_behind_the_connect_wait_for_the_verdict() {
    let mut sim = authenticating(2);
    let (sub, _) = sim.connect(credentials(V5, "sub", Some("alice"), "secret"));
    sim.subscribe(sub, "t", QoS::AtLeastOnce);
    let conn = sim.open(V5);
    let mut bytes = BytesMut::new();
    let connect = credentials(V5, "eager", Some("alice"), "secret");
    Packet::Connect(Box::new(connect))
        .encode(V5, &mut bytes)
        .expect("encode");
    publish_packet("t", "right behind", QoS::AtLeastOnce, 5)
        .encode(V5, &mut bytes)
        .expect("encode");
    sim.send_bytes(conn, &bytes);
    assert_eq!(
        connack_code(&sim.recv(conn).expect("CONNACK")),
        ReasonCode::SUCCESS
    );
    assert!(matches!(sim.recv(conn), Some(Packet::PubAck(_))));
    assert_eq!(payloads(&sim.publishes(sub)), ["right behind"]);
}

fn auth(reason_code: ReasonCode, method: &str, data: &'static [u8]) -> Packet {
    Packet::Auth(Box::new(Auth {
        reason_code,
        properties: AuthProperties {
            authentication_method: Some(method.into()),
            authentication_data: Some(Bytes::from_static(data)),
            ..AuthProperties::default()
        },
    }))
}

fn expect_auth(sim: &mut Sim, conn: ConnId, reason: ReasonCode, data: &[u8]) {
    match sim.recv(conn) {
        Some(Packet::Auth(auth)) => {
            assert_eq!(auth.reason_code, reason);
            assert_eq!(
                auth.properties.authentication_method.as_deref(),
                Some("TEST")
            );
            assert_eq!(auth.properties.authentication_data.as_deref(), Some(data));
        }
        other => panic!("expected AUTH {reason}, got {other:?}"),
    }
}

/// Expects the method's challenge in AUTH 0x18 and answers it with `proof`.
fn answer_challenge(sim: &mut Sim, conn: ConnId, proof: &'static [u8]) {
    expect_auth(sim, conn, ReasonCode::CONTINUE_AUTHENTICATION, b"challenge");
    sim.send(
        conn,
        auth(ReasonCode::CONTINUE_AUTHENTICATION, "TEST", proof),
    );
}

#[test]
fn enhanced_authentication_takes_rounds_of_auth_and_can_be_repeated() {
    let mut sim = authenticating(2);
    let mut hello = connect(V5, "enhanced", true);
    hello.properties.authentication_method = Some("TEST".into());
    hello.properties.authentication_data = Some(Bytes::from_static(b"hello"));
    let conn = sim.open(V5);
    sim.send(conn, Packet::Connect(Box::new(hello.clone())));
    answer_challenge(&mut sim, conn, b"proof");
    match sim.recv(conn) {
        Some(Packet::ConnAck(ack)) => {
            assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
            assert_eq!(
                ack.properties.authentication_method.as_deref(),
                Some("TEST")
            );
            assert_eq!(
                ack.properties.authentication_data.as_deref(),
                Some(&b"welcome"[..])
            );
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
    // Re-authentication on the live connection.
    sim.send(conn, auth(ReasonCode::RE_AUTHENTICATE, "TEST", b"again"));
    answer_challenge(&mut sim, conn, b"proof");
    expect_auth(&mut sim, conn, ReasonCode::SUCCESS, b"welcome");
    sim.send(conn, Packet::PingReq);
    assert_eq!(sim.recv(conn), Some(Packet::PingResp));
    // A failed re-authentication ends the connection with 0x87 (DISCONNECT has no 0x86).
    sim.send(conn, auth(ReasonCode::RE_AUTHENTICATE, "TEST", b"again"));
    answer_challenge(&mut sim, conn, b"forged");
    match sim.recv_all(conn).last() {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, ReasonCode::NOT_AUTHORIZED),
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    assert!(sim.is_closed(conn));

    // Another packet than AUTH in the middle of the exchange is a protocol error.
    let conn = sim.open(V5);
    sim.send(conn, Packet::Connect(Box::new(hello)));
    expect_auth(
        &mut sim,
        conn,
        ReasonCode::CONTINUE_AUTHENTICATION,
        b"challenge",
    );
    sim.send(conn, Packet::PingReq);
    assert!(sim.is_closed(conn));
}

/// Puts `acl` in force on every shard of `sim`.
pub(super) fn with_acl(sim: &mut Sim, acl: &str) {
    let rules = Arc::new(AccessRules::parse(acl).expect("a valid ACL"));
    for shard in &mut sim.shards {
        shard.set_access_rules(Some(rules.clone()));
    }
}

const ACL: &str = "\
user alice
topic read public/#
topic deny public/secret
topic write inbox/alice
user bob
topic write public/#
";

fn user(sim: &mut Sim, version: ProtocolVersion, id: &str, name: &str) -> ConnId {
    let mut hello = connect(version, id, true);
    hello.username = Some(name.into());
    let (conn, ack) = sim.connect(hello);
    assert_eq!(connack_code(&ack), ReasonCode::SUCCESS);
    conn
}

#[test]
fn the_acl_decides_subscriptions_publishes_and_each_delivery_on_every_shard() {
    let mut sim = Sim::new(2);
    with_acl(&mut sim, ACL);
    let alice = user(&mut sim, V5, "alice", "alice");
    let bob = user(&mut sim, V5, "bob", "bob");
    let denied = sim.subscribe(alice, "#", QoS::AtLeastOnce);
    assert_eq!(denied.reason_codes, [ReasonCode::NOT_AUTHORIZED]);
    let granted = sim.subscribe(alice, "public/#", QoS::AtLeastOnce);
    assert_eq!(granted.reason_codes, [ReasonCode::GRANTED_QOS_1]);
    for topic in ["public/news", "public/secret", "public/weather"] {
        sim.publish(bob, topic, topic, QoS::AtLeastOnce, false);
    }
    // The filter was allowed, but not all it matches.
    assert_eq!(
        payloads(&sim.publishes(alice)),
        ["public/news", "public/weather"]
    );
    // Bob may not write where his grants do not reach: v5 says so in the PUBACK.
    sim.send(bob, publish_packet("inbox/alice", "x", QoS::AtLeastOnce, 9));
    match sim.recv(bob) {
        Some(Packet::PubAck(ack)) => assert_eq!(ack.reason_code, ReasonCode::NOT_AUTHORIZED),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    assert!(!sim.is_closed(bob));
    assert!(
        sim.shards
            .iter()
            .map(|shard| shard.stats().acl_denied)
            .sum::<u64>()
            >= 3
    );
}

#[test]
fn a_reloaded_acl_applies_to_live_sessions_at_once() {
    let mut sim = Sim::new(1);
    with_acl(&mut sim, ACL);
    let alice = user(&mut sim, V311, "alice", "alice");
    let bob = user(&mut sim, V311, "bob", "bob");
    sim.subscribe(alice, "public/#", QoS::AtMostOnce);
    sim.publish(bob, "public/a", "before", QoS::AtMostOnce, false);
    assert_eq!(payloads(&sim.publishes(alice)), ["before"]);
    with_acl(
        &mut sim,
        "user alice\ntopic read other/#\nuser bob\ntopic write public/#\n",
    );
    sim.publish(bob, "public/a", "after", QoS::AtMostOnce, false);
    assert!(sim.publishes(alice).is_empty());
    with_acl(&mut sim, ACL);
    sim.publish(bob, "public/a", "again", QoS::AtMostOnce, false);
    assert_eq!(payloads(&sim.publishes(alice)), ["again"]);
}

#[test]
fn a_will_the_client_may_not_publish_refuses_the_connect() {
    let mut sim = Sim::new(1);
    with_acl(&mut sim, ACL);
    for (version, code) in [
        (V5, ReasonCode::NOT_AUTHORIZED),
        (V311, ReasonCode::NOT_AUTHORIZED),
    ] {
        let mut hello = connect(version, "bob-will", true);
        hello.username = Some("bob".into());
        hello.will = Some(will("inbox/alice", "gone", QoS::AtMostOnce));
        let (conn, ack) = sim.connect(hello.clone());
        assert_eq!(connack_code(&ack), code);
        assert!(sim.is_closed(conn));
        hello.will = Some(will("public/bob", "gone", QoS::AtMostOnce));
        let (_, ack) = sim.connect(hello);
        assert_eq!(connack_code(&ack), ReasonCode::SUCCESS);
    }
}

#[test]
fn retained_messages_a_subscriber_may_not_read_stay_with_the_broker() {
    let mut sim = Sim::new(1);
    with_acl(&mut sim, ACL);
    let bob = user(&mut sim, V5, "bob", "bob");
    sim.publish(bob, "public/open", "open", QoS::AtMostOnce, true);
    sim.publish(bob, "public/secret", "secret", QoS::AtMostOnce, true);
    let alice = user(&mut sim, V5, "alice", "alice");
    sim.subscribe(alice, "public/#", QoS::AtMostOnce);
    assert_eq!(payloads(&sim.publishes(alice)), ["open"]);
}
