//! MQTT over TLS (`--listen-tls`) with Mosquitto's command-line clients, on every runtime this
//! machine runs and in the blocking build: TLS and plain TCP clients talk to each other, large
//! messages cross TLS, a client that does not trust the certificate is refused without harm to
//! anyone else, mutual TLS takes client certificates from `--tls-client-ca` only, a silent TLS
//! client costs only the connect timeout, and bad TLS settings are configuration errors; a listener on a public address warns that it serves anonymous
//! clients. The certificates are made here, with rcgen.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::tls::{mosquitto, round_trip, tls_port, Pki};
use common::{broker_for, runtimes, unique, Binary, Broker};

/// A TLS subscriber gets a plain TCP publisher's message and the other way round, a 100 KB
/// message crosses TLS in many records, and MQTT 3.1.1 and 5 both work.
fn tls_and_plain_clients_talk(broker: &Broker, pki: &Pki) {
    let tls = tls_port(broker);
    let ca = pki.path("ca.pem");
    for (version, from_tls) in [("mqttv311", true), ("mqttv5", false)] {
        let topic = unique("tls/round-trip");
        let payload = format!("{version} from {}", if from_tls { "TLS" } else { "TCP" });
        let (pub_port, pub_ca, sub_port, sub_ca) = if from_tls {
            (tls, Some(ca.as_path()), broker.port, None)
        } else {
            (broker.port, None, tls, Some(ca.as_path()))
        };
        let subscribe = mosquitto(
            "mosquitto_sub",
            sub_port,
            sub_ca,
            &["-V", version, "-t", &topic, "-C", "1", "-W", "15"],
        );
        let publish = || {
            mosquitto(
                "mosquitto_pub",
                pub_port,
                pub_ca,
                &["-V", version, "-t", &topic, "-m", &payload],
            )
            .output()
            .expect("mosquitto_pub is installed by the README's test command")
        };
        round_trip(subscribe, publish, &payload);
    }

    let topic = unique("tls/large");
    let large = "x".repeat(100_000);
    let file = pki.path("large.txt");
    std::fs::write(&file, &large).expect("write payload");
    let file = file.display().to_string();
    let subscribe = mosquitto(
        "mosquitto_sub",
        tls,
        Some(&ca),
        &["-t", &topic, "-C", "1", "-W", "15"],
    );
    let publish = || {
        mosquitto(
            "mosquitto_pub",
            tls,
            Some(&ca),
            &["-t", &topic, "-f", &file],
        )
        .output()
        .expect("mosquitto_pub")
    };
    round_trip(subscribe, publish, &large);
}

#[test]
fn tls_and_plain_tcp_clients_talk_to_each_other_on_every_runtime() {
    let pki = Pki::new();
    let flags = pki.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    for runtime in runtimes() {
        let Some(mut broker) = broker_for(runtime, &flags) else {
            continue;
        };
        tls_and_plain_clients_talk(&broker, &pki);
        broker.assert_healthy();
    }
}

#[test]
fn the_blocking_build_serves_tls_too() {
    let pki = Pki::new();
    let flags = pki.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut broker = Broker::try_start(Binary::Sync, &flags).expect("sync broker starts");
    tls_and_plain_clients_talk(&broker, &pki);
    broker.assert_healthy();
}

#[test]
fn a_client_that_does_not_trust_the_certificate_is_refused_and_others_go_on() {
    let pki = Pki::new();
    let flags = pki.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut broker = Broker::start("epoll", &flags);
    let tls = tls_port(&broker);
    let refused = mosquitto(
        "mosquitto_pub",
        tls,
        Some(&pki.path("other-ca.pem")),
        &["-t", "tls/untrusted", "-m", "x"],
    )
    .output()
    .expect("mosquitto_pub");
    assert!(
        !refused.status.success(),
        "a client that cannot verify the broker's certificate must fail"
    );
    // Plain MQTT to the TLS port is not TLS: the broker closes it and goes on.
    let mut plain = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], tls))).expect("connect");
    plain
        .write_all(&[0x10, 0x0c, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 0])
        .expect("write");
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(&[0x20]),
        "no CONNACK over a TLS port for a plain CONNECT: {answer:?}"
    );
    tls_and_plain_clients_talk(&broker, &pki);
    broker.assert_healthy();
}

#[test]
fn a_silent_tls_client_is_closed_after_the_connect_timeout() {
    let pki = Pki::new();
    let mut flags = pki.flags();
    flags.extend(["--connect-timeout".to_owned(), "1".to_owned()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut broker = Broker::start("epoll", &flags);
    let mut silent =
        TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], tls_port(&broker)))).expect("connect");
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let started = Instant::now();
    // The broker may say goodbye with a TLS alert; what matters is that it closes.
    let mut said = Vec::new();
    let read = silent.read_to_end(&mut said);
    let waited = started.elapsed();
    assert!(
        read.is_ok() && waited < Duration::from_secs(8),
        "a TLS client that never says hello must be closed after --connect-timeout 1, got {read:?} after {waited:?}"
    );
    broker.assert_healthy();
}

#[test]
fn bad_tls_settings_are_configuration_errors() {
    let pki = Pki::new();
    let data = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_mqtt-broker"))
            .args(args)
            .arg("--data-dir")
            .arg(data.path())
            .output()
            .expect("run mqtt-broker");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&["--listen-tls", "127.0.0.1:0"]);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("--tls-cert and --tls-key"), "{stderr}");

    let key = pki.path("server.key").display().to_string();
    let (code, stderr) = run(&[
        "--listen-tls",
        "127.0.0.1:0",
        "--tls-cert",
        "/nonexistent/cert.pem",
        "--tls-key",
        &key,
    ]);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("/nonexistent/cert.pem"), "{stderr}");

    // A key that is not the certificate's.
    let (code, stderr) = run(&[
        "--listen-tls",
        "127.0.0.1:0",
        "--tls-cert",
        &pki.path("other-ca.pem").display().to_string(),
        "--tls-key",
        &key,
    ]);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("--listen-tls"), "{stderr}");

    let cert = pki.path("server.pem").display().to_string();
    let (code, stderr) = run(&[
        "--listen-tls",
        "127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-require-client-cert",
    ]);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("needs --tls-client-ca"), "{stderr}");
}

#[test]
fn a_listener_on_a_public_address_says_it_serves_anonymous_clients() {
    // Binding every interface sends nothing anywhere; the clients here use 127.0.0.1 only.
    for binary in [Binary::Async, Binary::Sync] {
        let broker =
            Broker::try_start(binary, &["--listen", "0.0.0.0:0"]).expect("the broker starts");
        assert!(
            broker.wait_for_log(
                &["MQTT over TCP on 0.0.0.0:", "serves anonymous clients"],
                Duration::from_secs(10)
            ),
            "{binary:?}: no warning for a listener on every interface:\n{}",
            broker.logs()
        );
        let loopback = broker
            .logs()
            .lines()
            .any(|line| line.contains("on 127.0.0.1:") && line.contains("serves anonymous"));
        assert!(!loopback, "{binary:?}: loopback needs no warning");
    }
}

/// Publishes once over TLS as the client whose certificate is `identity` (`None`: no
/// certificate); whether the broker took it.
fn publish_as(broker: &Broker, pki: &Pki, identity: Option<&str>) -> bool {
    let ca = pki.path("ca.pem");
    let mut args = vec![
        "-t".to_owned(),
        "tls/mutual".to_owned(),
        "-m".to_owned(),
        "x".to_owned(),
    ];
    if let Some(name) = identity {
        args.extend([
            "--cert".to_owned(),
            pki.path(&format!("{name}.pem")).display().to_string(),
            "--key".to_owned(),
            pki.path(&format!("{name}.key")).display().to_string(),
        ]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    mosquitto("mosquitto_pub", tls_port(broker), Some(&ca), &args)
        .output()
        .expect("mosquitto_pub")
        .status
        .success()
}

#[test]
fn mutual_tls_takes_certificates_from_the_client_ca_only() {
    let pki = Pki::new();
    let client_ca = pki.path("ca.pem").display().to_string();
    let mut flags = pki.flags();
    flags.extend(["--tls-client-ca".to_owned(), client_ca]);
    let optional: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut broker = Broker::start("epoll", &optional);
    assert!(publish_as(&broker, &pki, Some("client")));
    assert!(
        publish_as(&broker, &pki, None),
        "without --tls-require-client-cert a client without a certificate is served"
    );
    assert!(
        !publish_as(&broker, &pki, Some("stranger")),
        "a certificate from another authority must be refused"
    );
    broker.assert_healthy();
    drop(broker);

    flags.push("--tls-require-client-cert".to_owned());
    let required: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut broker = Broker::start("tokio", &required);
    assert!(publish_as(&broker, &pki, Some("client")));
    assert!(
        !publish_as(&broker, &pki, None),
        "with --tls-require-client-cert a client without a certificate must be refused"
    );
    assert!(!publish_as(&broker, &pki, Some("stranger")));
    broker.assert_healthy();
}

/// Connects over TLS with rustls (the client writes its CONNECT right behind the handshake,
/// as load generators do) and returns the first bytes the broker answers.
fn connack_over_tls(port: u16, ca: &Path, client_id: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for authority in CertificateDer::pem_file_iter(ca)
        .expect("CA")
        .map(Result::unwrap)
    {
        roots.add(authority).expect("add CA");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let mut connection =
        rustls::ClientConnection::new(std::sync::Arc::new(config), name).expect("client");
    let id = client_id.as_bytes();
    let mut connect = vec![0x10, (10 + 2 + id.len()) as u8, 0, 4];
    connect.extend_from_slice(b"MQTT");
    connect.extend_from_slice(&[4, 2, 0, 60, 0, id.len() as u8]);
    connect.extend_from_slice(id);
    // Queued before the handshake, so it leaves with the client's last handshake message.
    connection.writer().write_all(&connect).expect("CONNECT");
    let socket = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut tls = rustls::StreamOwned::new(connection, socket);
    tls.flush().expect("handshake and CONNECT");
    let mut connack = [0u8; 4];
    match tls.read_exact(&mut connack) {
        Ok(()) => connack.to_vec(),
        Err(_) => Vec::new(),
    }
}

/// Clients whose session lives on the other shard are handed over there right after their
/// handshake, while the broker may still be sending the handshake's last bytes (TLS 1.3 session
/// tickets): the move waits for that write instead of dropping the connection.
#[test]
fn tls_clients_are_handed_over_to_their_home_shard_whole() {
    let pki = Pki::new();
    let flags = pki.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    for runtime in runtimes() {
        let Some(mut broker) = broker_for(runtime, &flags) else {
            continue;
        };
        let port = tls_port(&broker);
        for n in 0..24 {
            let client_id = unique(&format!("tls-home-{n}"));
            let connack = connack_over_tls(port, &pki.path("ca.pem"), &client_id);
            assert_eq!(
                connack,
                [0x20, 2, 0, 0],
                "{runtime}: {client_id} got no CONNACK over TLS:\n{}",
                broker.logs()
            );
        }
        broker.assert_healthy();
    }
}
