//! Certificates for the TLS tests, made with rcgen, and Mosquitto's clients pointed at a
//! broker's TLS listener.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

use super::Broker;

/// A certificate authority and a server certificate for `localhost` and 127.0.0.1 it signed,
/// written as PEM files into a directory removed on drop.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "mqtt-broker test CA");
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let server_key = KeyPair::generate().expect("server key");
        let mut server_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("server params");
        server_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let server = server_params
            .signed_by(&server_key, &ca, &ca_key)
            .expect("server certificate");
        // A second authority, which signed nothing the broker presents.
        let other_key = KeyPair::generate().expect("other key");
        let mut other_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        other_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let other = other_params.self_signed(&other_key).expect("other CA");
        // Client certificates: one from the broker's authority, one from the other.
        let client = |issuer: &rcgen::Certificate, issuer_key: &KeyPair| {
            let key = KeyPair::generate().expect("client key");
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
            params
                .distinguished_name
                .push(DnType::CommonName, "sensor-1");
            let cert = params
                .signed_by(&key, issuer, issuer_key)
                .expect("client cert");
            (cert.pem(), key.serialize_pem())
        };
        let (client_pem, client_key) = client(&ca, &ca_key);
        let (stranger_pem, stranger_key) = client(&other, &other_key);
        for (name, pem) in [
            ("ca.pem", ca.pem()),
            ("server.pem", server.pem()),
            ("server.key", server_key.serialize_pem()),
            ("other-ca.pem", other.pem()),
            ("client.pem", client_pem),
            ("client.key", client_key),
            ("stranger.pem", stranger_pem),
            ("stranger.key", stranger_key),
        ] {
            std::fs::write(dir.path().join(name), pem).expect("write PEM");
        }
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The broker flags of a TLS listener on an ephemeral port with this certificate.
    pub fn flags(&self) -> Vec<String> {
        vec![
            "--listen-tls".into(),
            "127.0.0.1:0".into(),
            "--tls-cert".into(),
            self.path("server.pem").display().to_string(),
            "--tls-key".into(),
            self.path("server.key").display().to_string(),
        ]
    }
}

/// The port of the broker's TLS listener, from its `MQTT over TLS listening on` line.
pub fn tls_port(broker: &Broker) -> u16 {
    listener_port(broker, "MQTT over TLS")
}

/// The port of the broker's listener of `transport` (as it logs it: "MQTT over WebSocket"),
/// from its `... listening on 127.0.0.1:PORT` line.
pub fn listener_port(broker: &Broker, transport: &str) -> u16 {
    let line_start = format!("{transport} listening on 127.0.0.1:");
    // The plain listener's line, which `Broker::start` waits for, comes first.
    broker.wait_for_log(&[&line_start], Duration::from_secs(10));
    let logs = broker.logs();
    let line = logs
        .lines()
        .find(|line| line.contains(&line_start))
        .unwrap_or_else(|| panic!("no {transport} listener in the log:\n{logs}"));
    let rest = line.rsplit("127.0.0.1:").next().unwrap_or_default();
    rest.trim().parse().expect("a port")
}

/// `mosquitto_pub`/`mosquitto_sub` on 127.0.0.1:`port`, over TLS trusting `ca` if given.
pub fn mosquitto(tool: &str, port: u16, ca: Option<&Path>, args: &[&str]) -> Command {
    let mut command = Command::new(tool);
    command.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    if let Some(ca) = ca {
        command.arg("--cafile").arg(ca);
    }
    command.args(args);
    command
}

/// Runs `subscribe` (a `mosquitto_sub -C 1`), calls `publish` until the subscriber has its
/// message, and checks that it printed `expected`.
pub fn round_trip(mut subscribe: Command, publish: impl Fn() -> Output, expected: &str) {
    // A file, not a pipe: a large message would fill a pipe nobody reads until the end.
    let printed = tempfile::NamedTempFile::new().expect("temp file");
    let subscriber = subscribe
        .stdout(printed.reopen().expect("reopen"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub is installed by the README's test command");
    // mosquitto_sub has no "subscribed" signal; publish (retained messages are not used, so the
    // test cannot pass by accident) until it gets one, for up to 10 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut subscriber = subscriber;
    loop {
        let published = publish();
        assert!(
            published.status.success(),
            "mosquitto_pub failed: {}",
            String::from_utf8_lossy(&published.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
        if let Ok(Some(_)) = subscriber.try_wait() {
            break;
        }
        if Instant::now() > deadline {
            let _ = subscriber.kill();
            break;
        }
    }
    let output = subscriber.wait_with_output().expect("mosquitto_sub output");
    let printed = std::fs::read_to_string(printed.path()).expect("read what it printed");
    let printed = printed.trim_end();
    assert!(
        printed == expected,
        "mosquitto_sub printed {} bytes ({:?}...), expected {} ({:?}...); stderr: {}",
        printed.len(),
        &printed[..printed.len().min(40)],
        expected.len(),
        &expected[..expected.len().min(40)],
        String::from_utf8_lossy(&output.stderr)
    );
}
