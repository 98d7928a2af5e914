//! MQTT over WebSocket (`--listen-ws`, `--listen-wss`) against the real binary: MQTT.js under
//! Node over ws:// and over wss:// with certificate verification, Mosquitto's plain TCP clients
//! talking to a WebSocket client, and raw-socket checks of what clients rarely do on purpose:
//! bad upgrade requests, a wrong `--ws-path`, unmasked frames, pings, packets split over frames
//! and frames holding several packets; clients handed over between shards with their WebSocket
//! state, and the connect timeout covering the upgrade. On every runtime this machine runs and
//! the blocking build.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::tls::{listener_port, mosquitto, Pki};
use common::{broker_for, runtimes, unique, Binary, Broker};

const WS: &str = "MQTT over WebSocket";
const WSS: &str = "MQTT over WebSocket over TLS";

/// A WebSocket client written from RFC 6455, to send what real clients never would.
struct RawClient {
    stream: TcpStream,
    /// Bytes read past the last frame taken.
    read: Vec<u8>,
}

impl RawClient {
    /// Connects and sends `request` (the upgrade, or something that is not one); the answer's
    /// head, up to the blank line.
    fn send_request(port: u16, request: &str) -> (RawClient, String) {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut client = RawClient {
            stream,
            read: Vec::new(),
        };
        client.stream.write_all(request.as_bytes()).expect("send");
        while !client.read.windows(4).any(|w| w == b"\r\n\r\n") {
            client.fill();
        }
        let end = client
            .read
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap()
            + 4;
        let head = String::from_utf8_lossy(&client.read[..end]).into_owned();
        client.read.drain(..end);
        (client, head)
    }

    /// A WebSocket client of `port` at `path` that offered the `mqtt` subprotocol.
    fn upgrade(port: u16, path: &str) -> RawClient {
        let (client, head) = RawClient::send_request(port, &upgrade_request(path));
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("sec-websocket-protocol: mqtt\r\n"),
            "the broker must answer with the subprotocol offered: {head}"
        );
        client
    }

    fn fill(&mut self) {
        let mut chunk = [0; 4096];
        let n = self.stream.read(&mut chunk).expect("read from the broker");
        assert!(n > 0, "the broker closed the connection");
        self.read.extend_from_slice(&chunk[..n]);
    }

    /// Sends one frame, masked as a client must unless `masked` is false.
    fn send_frame(&mut self, opcode: u8, fin: bool, payload: &[u8], masked: bool) {
        let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => frame.push(mask_bit | n as u8),
            n if n <= 0xffff => {
                frame.push(mask_bit | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(mask_bit | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let key = [0x37, 0xfa, 0x21, 0x3d];
        if masked {
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        self.stream.write_all(&frame).expect("send frame");
    }

    /// The next frame: its opcode and payload (server frames are not masked).
    fn next_frame(&mut self) -> (u8, Vec<u8>) {
        loop {
            if let Some((opcode, header, length)) = frame_head(&self.read) {
                if self.read.len() >= header + length {
                    let payload = self.read[header..header + length].to_vec();
                    self.read.drain(..header + length);
                    return (opcode, payload);
                }
            }
            self.fill();
        }
    }

    /// Reads binary frames until their payloads make `expected`.
    fn expect_mqtt(&mut self, expected: &[u8]) {
        let mut got = Vec::new();
        while got.len() < expected.len() {
            let (opcode, payload) = self.next_frame();
            assert_eq!(opcode, 2, "MQTT must come in binary frames");
            got.extend(payload);
        }
        assert_eq!(got, expected);
    }
}

/// A frame's opcode, header length and payload length, once its header is all in `bytes`.
fn frame_head(bytes: &[u8]) -> Option<(u8, usize, usize)> {
    let (&first, &second) = (bytes.first()?, bytes.get(1)?);
    assert_eq!(second & 0x80, 0, "a server must not mask its frames");
    Some(match second & 0x7f {
        126 => (
            first & 0x0f,
            4,
            u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?) as usize,
        ),
        127 => (
            first & 0x0f,
            10,
            u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?) as usize,
        ),
        n => (first & 0x0f, 2, n as usize),
    })
}

fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: mqtt\r\n\r\n"
    )
}

/// An MQTT 3.1.1 CONNECT with a clean session.
fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut packet = vec![0x10, (12 + client_id.len()) as u8, 0, 4];
    packet.extend_from_slice(b"MQTT");
    packet.extend_from_slice(&[4, 2, 0, 60, 0, client_id.len() as u8]);
    packet.extend_from_slice(client_id.as_bytes());
    packet
}

fn subscribe_packet(topic: &str) -> Vec<u8> {
    let mut packet = vec![0x82, (5 + topic.len()) as u8, 0, 1, 0, topic.len() as u8];
    packet.extend_from_slice(topic.as_bytes());
    packet.push(0);
    packet
}

/// A QoS 0 PUBLISH of a short payload.
fn publish_packet(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x30, (2 + topic.len() + payload.len()) as u8, 0];
    packet.push(topic.len() as u8);
    packet.extend_from_slice(topic.as_bytes());
    packet.extend_from_slice(payload);
    packet
}

const CONNACK: [u8; 4] = [0x20, 2, 0, 0];
const SUBACK: [u8; 5] = [0x90, 3, 0, 1, 0];

/// The raw-socket checks on a broker with `--listen-ws` and `--ws-path /mqtt`.
fn frames_and_handshakes(broker: &Broker) {
    let port = listener_port(broker, WS);

    // A CONNECT in three frames of one fragmented message, then SUBSCRIBE and PUBLISH in one.
    let mut client = RawClient::upgrade(port, "/mqtt");
    let connect = connect_packet(&unique("ws-raw"));
    client.send_frame(2, false, &connect[..3], true);
    client.send_frame(0, false, &connect[3..9], true);
    client.send_frame(0, true, &connect[9..], true);
    client.expect_mqtt(&CONNACK);
    let topic = unique("ws/raw");
    let mut two = subscribe_packet(&topic);
    let publish = publish_packet(&topic, b"both packets arrived");
    two.extend_from_slice(&publish);
    client.send_frame(2, true, &two, true);
    let mut expected = SUBACK.to_vec();
    expected.extend_from_slice(&publish);
    client.expect_mqtt(&expected);
    // A packet split over two whole messages.
    client.send_frame(2, true, &publish[..4], true);
    client.send_frame(2, true, &publish[4..], true);
    client.expect_mqtt(&publish);

    client.send_frame(9, true, b"are you there", true);
    assert_eq!(client.next_frame(), (10, b"are you there".to_vec()));

    // A frame a client forgot to mask: close with 1002 (protocol error).
    client.send_frame(2, true, &publish, false);
    let (opcode, payload) = client.next_frame();
    assert_eq!(
        opcode, 8,
        "an unmasked frame must be answered with a close frame"
    );
    assert_eq!(payload[..2], 1002u16.to_be_bytes());

    // Text frames carry no MQTT: close with 1003.
    let mut client = RawClient::upgrade(port, "/mqtt");
    client.send_frame(1, true, b"CONNECT", true);
    let (opcode, payload) = client.next_frame();
    assert_eq!((opcode, &payload[..2]), (8, &1003u16.to_be_bytes()[..]));

    // A close frame is answered with one.
    let mut client = RawClient::upgrade(port, "/mqtt");
    client.send_frame(8, true, &1000u16.to_be_bytes(), true);
    assert_eq!(client.next_frame().0, 8);

    let (_, head) = RawClient::send_request(port, &upgrade_request("/elsewhere"));
    assert!(head.starts_with("HTTP/1.1 404"), "wrong path: {head}");
    let plain_get = "GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let (_, head) = RawClient::send_request(port, plain_get);
    assert!(head.starts_with("HTTP/1.1 400"), "not an upgrade: {head}");
    let old = upgrade_request("/mqtt").replace("Version: 13", "Version: 8");
    let (_, head) = RawClient::send_request(port, &old);
    assert!(head.starts_with("HTTP/1.1 400"), "version 8: {head}");
    let endless = format!(
        "GET /mqtt HTTP/1.1\r\nX-Padding: {}\r\n",
        "x".repeat(20_000)
    );
    let (_, head) = RawClient::send_request(port, &endless);
    assert!(head.starts_with("HTTP/1.1 400"), "a 20 KB request: {head}");
}

#[test]
fn raw_websocket_frames_and_handshakes_on_every_runtime() {
    for runtime in runtimes() {
        let Some(mut broker) = broker_for(
            runtime,
            &["--listen-ws", "127.0.0.1:0", "--ws-path", "/mqtt"],
        ) else {
            continue;
        };
        frames_and_handshakes(&broker);
        broker.assert_healthy();
    }
}

#[test]
fn the_blocking_build_serves_websocket_too() {
    let args = ["--listen-ws", "127.0.0.1:0", "--ws-path", "/mqtt"];
    let mut broker = Broker::try_start(Binary::Sync, &args).expect("sync broker starts");
    frames_and_handshakes(&broker);
    broker.assert_healthy();
}

/// Runs tests/node/pubsub.mjs: MQTT.js subscribes and publishes on `url`.
fn mqtt_js(url: &str, ca: Option<&Path>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    assert!(
        dir.join("node_modules/mqtt").is_dir(),
        "MQTT.js is missing: run `npm install --prefix tests/node` (the README's test command does)"
    );
    let mut command = Command::new("node");
    command
        .arg(dir.join("pubsub.mjs"))
        .arg(url)
        .arg(unique("ws/mqtt-js"));
    if let Some(ca) = ca {
        command.arg(ca);
    }
    let output = command.output().expect("node is installed");
    assert!(
        output.status.success(),
        "MQTT.js on {url} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn mqtt_js_talks_over_ws_and_wss_on_every_runtime() {
    let pki = Pki::new();
    let mut flags = pki.flags();
    flags[0] = "--listen-wss".into();
    flags.extend(["--listen-ws".into(), "127.0.0.1:0".into()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    for runtime in runtimes() {
        let Some(mut broker) = broker_for(runtime, &flags) else {
            continue;
        };
        mqtt_js(
            &format!("ws://127.0.0.1:{}/mqtt", listener_port(&broker, WS)),
            None,
        );
        let wss = format!("wss://127.0.0.1:{}/mqtt", listener_port(&broker, WSS));
        mqtt_js(&wss, Some(&pki.path("ca.pem")));
        broker.assert_healthy();
    }
}

/// mosquitto_pub on plain TCP reaches a WebSocket subscriber, and a WebSocket publisher reaches
/// mosquitto_sub.
#[test]
fn mosquitto_over_tcp_and_a_websocket_client_talk() {
    let mut broker = Broker::start("epoll", &["--listen-ws", "127.0.0.1:0"]);
    let port = listener_port(&broker, WS);
    let mut client = RawClient::upgrade(port, "/");
    client.send_frame(2, true, &connect_packet(&unique("ws-mosquitto")), true);
    client.expect_mqtt(&CONNACK);
    let topic = unique("ws/mosquitto");
    client.send_frame(2, true, &subscribe_packet(&topic), true);
    client.expect_mqtt(&SUBACK);
    let published = mosquitto(
        "mosquitto_pub",
        broker.port,
        None,
        &["-t", &topic, "-m", "from TCP"],
    )
    .output()
    .expect("mosquitto_pub is installed by the README's test command");
    assert!(published.status.success());
    client.expect_mqtt(&publish_packet(&topic, b"from TCP"));

    let back = unique("ws/back");
    let subscriber = mosquitto(
        "mosquitto_sub",
        broker.port,
        None,
        &["-t", &back, "-C", "1", "-W", "15"],
    )
    .stdout(std::process::Stdio::piped())
    .spawn()
    .expect("mosquitto_sub is installed by the README's test command");
    // mosquitto_sub has no "subscribed" signal: publish until it has the message.
    let mut subscriber = subscriber;
    for _ in 0..50 {
        client.send_frame(2, true, &publish_packet(&back, b"from WebSocket"), true);
        std::thread::sleep(Duration::from_millis(200));
        if let Ok(Some(_)) = subscriber.try_wait() {
            break;
        }
    }
    let output = subscriber.wait_with_output().expect("mosquitto_sub output");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim_end(),
        "from WebSocket"
    );
    broker.assert_healthy();
}

/// With two shards about half the clients land on the shard that is not their home and are
/// handed over with their WebSocket state; each must still get its CONNACK, its SUBACK and its
/// own message back.
#[test]
fn websocket_clients_are_handed_over_to_their_home_shard_whole() {
    for runtime in runtimes() {
        let Some(mut broker) = broker_for(runtime, &["--listen-ws", "127.0.0.1:0"]) else {
            continue;
        };
        let port = listener_port(&broker, WS);
        for n in 0..16 {
            let mut client = RawClient::upgrade(port, "/mqtt");
            client.send_frame(
                2,
                true,
                &connect_packet(&unique(&format!("ws-home-{n}"))),
                true,
            );
            client.expect_mqtt(&CONNACK);
            let topic = unique("ws/home");
            client.send_frame(2, true, &subscribe_packet(&topic), true);
            client.expect_mqtt(&SUBACK);
            let publish = publish_packet(&topic, b"home");
            client.send_frame(2, true, &publish, true);
            client.expect_mqtt(&publish);
        }
        broker.assert_healthy();
    }
}

/// The connect timeout runs from the accept, through the upgrade: a client that never finishes
/// its request, and one that upgrades and then says nothing, are both closed after it.
#[test]
fn silent_websocket_clients_are_closed_after_the_connect_timeout() {
    let mut broker = Broker::start(
        "epoll",
        &["--listen-ws", "127.0.0.1:0", "--connect-timeout", "1"],
    );
    let port = listener_port(&broker, WS);
    let mut half = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    half.write_all(b"GET /mqtt HTTP/1.1\r\n").expect("send");
    let upgraded = RawClient::upgrade(port, "/mqtt");
    for mut silent in [half, upgraded.stream] {
        silent
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let started = std::time::Instant::now();
        let mut rest = Vec::new();
        let read = silent.read_to_end(&mut rest);
        assert!(
            read.is_ok() && started.elapsed() < Duration::from_secs(8),
            "a silent WebSocket client must be closed after --connect-timeout 1, got {read:?} after {:?}",
            started.elapsed()
        );
    }
    broker.assert_healthy();
}

/// A refused client gets its CONNACK, then a close frame: the core's last words go out before
/// the WebSocket's.
#[test]
fn a_refused_websocket_client_gets_its_connack_then_a_close_frame() {
    for binary in [Binary::Async, Binary::Sync] {
        let args = ["--listen-ws", "127.0.0.1:0", "--allow-anonymous", "false"];
        let mut broker = Broker::try_start(binary, &args).expect("broker starts");
        let mut client = RawClient::upgrade(listener_port(&broker, WS), "/");
        client.send_frame(2, true, &connect_packet(&unique("ws-anonymous")), true);
        client.expect_mqtt(&[0x20, 2, 0, 5]);
        let (opcode, payload) = client.next_frame();
        assert_eq!((opcode, &payload[..2]), (8, &1000u16.to_be_bytes()[..]));
        broker.assert_healthy();
    }
}
