//! Authentication and authorization end to end with Mosquitto's own clients and files: password
//! files from Debian's `mosquitto_passwd` and from `mqtt-broker passwd`, an ACL, client
//! certificates whose name is the user name, SIGHUP reloading all of it under a live connection,
//! and bad security files refused at start with the line that is wrong. (Reason codes on the
//! wire, paho with `tls_set` and SCRAM-SHA-512 are in `tests/python/test_security.py`.)

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::tls::{mosquitto, round_trip, tls_port, Pki};
use common::{unique, Binary, Broker};

fn broker_binary() -> &'static str {
    env!("CARGO_BIN_EXE_mqtt-broker")
}

/// `mqtt-broker passwd FILE USER ARGS...`.
fn passwd(file: &Path, user: &str, args: &[&str]) -> Output {
    Command::new(broker_binary())
        .arg("passwd")
        .arg(file)
        .arg(user)
        .args(args)
        .output()
        .expect("run mqtt-broker passwd")
}

/// `mosquitto_pub` with a user name and password (`None`: anonymous); whether it succeeded.
fn publish(port: u16, login: Option<(&str, &str)>, topic: &str, message: &str) -> bool {
    let mut args = vec!["-t", topic, "-m", message, "-q", "1"];
    if let Some((user, password)) = login {
        args.extend(["-u", user, "-P", password]);
    }
    mosquitto("mosquitto_pub", port, None, &args)
        .output()
        .expect("mosquitto_pub is installed by the README's test command")
        .status
        .success()
}

/// A `mosquitto_sub` that prints each message's topic and payload as it arrives.
struct Subscriber {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Subscriber {
    fn start(port: u16, user: &str, password: &str, filter: &str) -> Subscriber {
        let mut child = mosquitto(
            "mosquitto_sub",
            port,
            None,
            &["-u", user, "-P", password, "-t", filter, "-v", "-q", "1"],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto_sub");
        let stdout: ChildStdout = child.stdout.take().expect("stdout");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Subscriber { child, lines }
    }

    fn next(&self) -> Option<String> {
        self.lines.recv_timeout(Duration::from_secs(10)).ok()
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Publishes `message` until the subscriber prints it (mosquitto_sub cannot say when it has
/// subscribed), and returns what it printed first.
fn until_received(sub: &Subscriber, port: u16, login: (&str, &str), topic: &str) -> String {
    for _ in 0..20 {
        assert!(
            publish(port, Some(login), topic, "ping"),
            "publish to {topic}"
        );
        if let Ok(line) = sub.lines.recv_timeout(Duration::from_millis(500)) {
            return line;
        }
    }
    panic!("the subscriber never got a message on {topic}");
}

fn sighup(broker: &Broker) {
    let status = Command::new("kill")
        .args(["-HUP", &broker.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        Files {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.path(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    }
}

#[test]
fn passwd_writes_files_the_broker_and_mosquitto_passwd_agree_on() {
    let files = Files::new();
    let file = files.path("passwords");
    // Debian's mosquitto_passwd makes the file; ours adds to it without touching its entry.
    let made = Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(&file)
        .args(["alice", "wonderland"])
        .output()
        .expect("mosquitto_passwd is installed by the README's test command");
    assert!(made.status.success(), "{made:?}");
    let added = passwd(&file, "bob", &["--password", "builder"]);
    assert!(added.status.success(), "{added:?}");
    let text = std::fs::read_to_string(&file).expect("read");
    assert!(text.contains("\nbob:$7$"), "{text}");
    let piped = Command::new(broker_binary())
        .arg("passwd")
        .arg(&file)
        .arg("carol")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(b"from stdin\n")?;
            child.wait()
        })
        .expect("passwd from stdin");
    assert!(piped.success());

    let path = file.display().to_string();
    for binary in [Binary::Async, Binary::Sync] {
        let broker = Broker::try_start(binary, &["--password-file", &path]).expect("starts");
        let port = broker.port;
        assert!(publish(port, Some(("alice", "wonderland")), "p/a", "x"));
        assert!(publish(port, Some(("bob", "builder")), "p/b", "x"));
        assert!(publish(port, Some(("carol", "from stdin")), "p/c", "x"));
        assert!(!publish(port, Some(("bob", "wonderland")), "p/b", "x"));
        assert!(!publish(port, None, "p/anonymous", "x"), "{binary:?}");
    }

    assert!(passwd(&file, "bob", &["--delete"]).status.success());
    let missing = passwd(&file, "bob", &["--delete"]);
    assert!(!missing.status.success());
    let text = std::fs::read_to_string(&file).expect("read");
    assert!(
        !text.contains("bob:") && text.contains("alice:$7$101$"),
        "{text}"
    );
}

const ACL_BEFORE: &str = "user alice\ntopic read news/#\n\nuser bob\ntopic write news/#\n";
const ACL_AFTER: &str =
    "user alice\ntopic read news/#\ntopic deny news/secret\n\nuser bob\ntopic write news/#\n";

#[test]
fn sighup_reloads_passwords_and_the_acl_under_a_live_connection() {
    let files = Files::new();
    let passwords = files.path("passwords");
    assert!(passwd(&passwords, "alice", &["--password", "a"])
        .status
        .success());
    assert!(passwd(&passwords, "bob", &["--password", "b"])
        .status
        .success());
    let acl = files.write("acl", ACL_BEFORE);
    let passwords_flag = passwords.display().to_string();
    for binary in [Binary::Async, Binary::Sync] {
        std::fs::write(&acl, ACL_BEFORE).expect("reset the ACL");
        let mut broker = Broker::try_start(
            binary,
            &["--password-file", &passwords_flag, "--acl-file", &acl],
        )
        .expect("starts");
        let port = broker.port;
        let mut alice = Subscriber::start(port, "alice", "a", "news/#");
        let first = until_received(&alice, port, ("bob", "b"), "news/first");
        assert_eq!(first, "news/first ping");
        assert!(
            !publish(port, Some(("carol", "c")), "news/x", "x"),
            "carol is not in the file yet"
        );

        assert!(passwd(&passwords, "carol", &["--password", "c"])
            .status
            .success());
        std::fs::write(&acl, ACL_AFTER).expect("write the new ACL");
        sighup(&broker);
        assert!(
            broker.wait_for_log(&["ACL file reloaded"], Duration::from_secs(10)),
            "{binary:?}: {}",
            broker.logs()
        );
        // Give every shard a timer tick to take the new ACL.
        std::thread::sleep(Duration::from_millis(300));
        assert!(publish(port, Some(("carol", "c")), "carol/x", "x"));
        assert!(publish(port, Some(("bob", "b")), "news/secret", "hidden"));
        assert!(publish(port, Some(("bob", "b")), "news/open", "seen"));
        assert_eq!(
            alice.next().as_deref(),
            Some("news/open seen"),
            "{binary:?}"
        );
        assert!(alice.is_running(), "alice's connection outlives the reload");

        // A file that does not parse keeps the one before in force.
        std::fs::write(&acl, "user alice\ntopic sometimes news/#\n").expect("write");
        sighup(&broker);
        assert!(broker.wait_for_log(
            &["line 2", "the ACL loaded before stays in force"],
            Duration::from_secs(10)
        ));
        std::thread::sleep(Duration::from_millis(300));
        assert!(publish(
            port,
            Some(("bob", "b")),
            "news/secret",
            "still hidden"
        ));
        assert!(publish(
            port,
            Some(("bob", "b")),
            "news/later",
            "still seen"
        ));
        assert_eq!(alice.next().as_deref(), Some("news/later still seen"));
        broker.assert_healthy();
        assert!(passwd(&passwords, "carol", &["--delete"]).status.success());
    }
}

#[test]
fn the_certificate_names_the_user_the_acl_speaks_of() {
    let pki = Pki::new();
    let files = Files::new();
    // The client certificate of `Pki` is for CN "sensor-1".
    let acl = files.write("acl", "user sensor-1\ntopic readwrite sensors/#\n");
    let mut flags = pki.flags();
    flags.extend([
        "--tls-client-ca".to_owned(),
        pki.path("ca.pem").display().to_string(),
        "--tls-identity-as-username".to_owned(),
        "--acl-file".to_owned(),
        acl,
    ]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut broker = Broker::start("epoll", &flags);
    let tls = tls_port(&broker);
    let ca = pki.path("ca.pem");
    let with_certificate = |tool: &str, args: &[&str]| {
        let mut all = vec![
            "--cert".to_owned(),
            pki.path("client.pem").display().to_string(),
            "--key".to_owned(),
            pki.path("client.key").display().to_string(),
        ];
        all.extend(args.iter().map(|arg| (*arg).to_owned()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        mosquitto(tool, tls, Some(&ca), &all)
    };
    let topic = unique("sensors/t");
    let subscribe = with_certificate("mosquitto_sub", &["-t", &topic, "-C", "1", "-W", "15"]);
    let publish = || {
        with_certificate("mosquitto_pub", &["-t", &topic, "-m", "reading"])
            .output()
            .expect("mosquitto_pub")
    };
    round_trip(subscribe, publish, "reading");
    // What sensor-1 may not read is refused, whatever it says its name is.
    let denied = with_certificate(
        "mosquitto_sub",
        &[
            "-V", "mqttv5", "-u", "admin", "-t", "other/#", "-C", "1", "-W", "5",
        ],
    )
    .output()
    .expect("mosquitto_sub");
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("denied"),
        "{denied:?}"
    );
    // Without a certificate there is no name: refused.
    let anonymous = mosquitto(
        "mosquitto_pub",
        tls,
        Some(&ca),
        &["-t", "sensors/x", "-m", "x"],
    )
    .output()
    .expect("mosquitto_pub");
    assert!(!anonymous.status.success());
    broker.assert_healthy();
}

#[test]
fn bad_security_files_are_configuration_errors_that_name_the_line() {
    let files = Files::new();
    let data = files.path("data");
    // A broker that starts after all is stopped, rather than left to hang the test.
    let run = |args: &[&str]| {
        let mut child = Command::new(broker_binary())
            .args(args)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run mqtt-broker");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while child.try_wait().expect("try_wait").is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = child.wait_with_output().expect("output");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let passwords = files.write("passwords", "# users\nalice:$7$101$bad\nbob\n");
    let (code, stderr) = run(&["--password-file", &passwords]);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(
        stderr.contains("--password-file")
            && stderr.contains("line 2")
            && stderr.contains("line 3"),
        "{stderr}"
    );
    let acl = files.write("acl", "user alice\ntopic read a/#\nsubscribe b\n");
    let (code, stderr) = run(&["--acl-file", &acl]);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(
        stderr.contains("--acl-file") && stderr.contains("line 3"),
        "{stderr}"
    );
    let (code, stderr) = run(&["--acl-file", "/nonexistent/acl"]);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("/nonexistent/acl"), "{stderr}");
    let (code, stderr) = run(&["--tls-identity-as-username"]);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("needs a TLS listener"), "{stderr}");
}

#[test]
fn public_listeners_warn_about_anonymous_clients_and_passwords_in_clear() {
    let files = Files::new();
    let passwords = files.path("passwords");
    assert!(passwd(&passwords, "alice", &["--password", "a"])
        .status
        .success());
    let passwords = passwords.display().to_string();
    // Binding every interface sends nothing anywhere; no client connects here.
    let broker = Broker::try_start(
        Binary::Async,
        &["--listen", "0.0.0.0:0", "--password-file", &passwords],
    )
    .expect("starts");
    assert!(
        broker.wait_for_log(&["takes passwords in plain text"], Duration::from_secs(10)),
        "{}",
        broker.logs()
    );
    assert!(
        !broker.logs().contains("serves anonymous clients"),
        "with a password file anonymous clients are refused: {}",
        broker.logs()
    );
    let open = Broker::try_start(
        Binary::Async,
        &[
            "--listen",
            "0.0.0.0:0",
            "--allow-anonymous",
            "true",
            "--password-file",
            &passwords,
        ],
    )
    .expect("starts");
    assert!(open.wait_for_log(&["serves anonymous clients"], Duration::from_secs(10)));
}

/// The ports of every listener of `kind` ("MQTT over TCP", "MQTT over TLS"), in order.
fn ports(broker: &Broker, kind: &str) -> Vec<u16> {
    broker.wait_for_log(&["broker started"], Duration::from_secs(10));
    broker
        .logs()
        .lines()
        .filter(|line| line.contains(&format!("{kind} listening on 127.0.0.1:")))
        .filter_map(|line| line.rsplit(':').next()?.trim().parse().ok())
        .collect()
}

#[test]
fn each_listener_can_let_clients_in_its_own_way() {
    let pki = Pki::new();
    let files = Files::new();
    let passwords = files.path("passwords");
    assert!(passwd(&passwords, "alice", &["--password", "a"])
        .status
        .success());
    let config = files.write(
        "broker.toml",
        &format!(
            r#"
password-file = {passwords:?}
tls-cert = {cert:?}
tls-key = {key:?}
# Local services come in without a name; the public side needs a password or a certificate.
listen = [{{ address = "127.0.0.1:0", allow-anonymous = true }}, "127.0.0.1:0"]
listen-tls = [
    {{ address = "127.0.0.1:0", tls-client-ca = {ca:?}, tls-require-client-cert = true, tls-identity-as-username = true }},
]
"#,
            passwords = passwords.display().to_string(),
            cert = pki.path("server.pem").display().to_string(),
            key = pki.path("server.key").display().to_string(),
            ca = pki.path("ca.pem").display().to_string(),
        ),
    );
    let mut broker = Broker::try_start(Binary::Async, &["--config", &config]).expect("starts");
    let tcp = ports(&broker, "MQTT over TCP");
    let tls = ports(&broker, "MQTT over TLS");
    assert_eq!((tcp.len(), tls.len()), (2, 1), "{}", broker.logs());
    assert!(
        publish(tcp[0], None, "local/x", "x"),
        "anonymous on the local listener"
    );
    assert!(
        !publish(tcp[1], None, "public/x", "x"),
        "anonymous refused on the other"
    );
    assert!(publish(tcp[1], Some(("alice", "a")), "public/x", "x"));
    let ca = pki.path("ca.pem");
    let with_certificate = mosquitto(
        "mosquitto_pub",
        tls[0],
        Some(&ca),
        &[
            "--cert",
            &pki.path("client.pem").display().to_string(),
            "--key",
            &pki.path("client.key").display().to_string(),
            "-t",
            "sensors/x",
            "-m",
            "x",
        ],
    )
    .output()
    .expect("mosquitto_pub");
    assert!(with_certificate.status.success(), "{with_certificate:?}");
    let without = mosquitto(
        "mosquitto_pub",
        tls[0],
        Some(&ca),
        &["-t", "s/x", "-m", "x"],
    )
    .output()
    .expect("mosquitto_pub");
    assert!(
        !without.status.success(),
        "this listener requires a certificate"
    );
    broker.assert_healthy();
}

#[test]
fn sighup_swaps_the_tls_certificate_for_new_connections() {
    let before = Pki::new();
    let after = Pki::new();
    let files = Files::new();
    let cert = files.path("server.pem");
    let key = files.path("server.key");
    std::fs::copy(before.path("server.pem"), &cert).expect("copy");
    std::fs::copy(before.path("server.key"), &key).expect("copy");
    let (cert_flag, key_flag) = (cert.display().to_string(), key.display().to_string());
    let mut broker = Broker::start(
        "epoll",
        &[
            "--listen-tls",
            "127.0.0.1:0",
            "--tls-cert",
            &cert_flag,
            "--tls-key",
            &key_flag,
        ],
    );
    let tls = tls_port(&broker);
    let publish_trusting = |pki: &Pki| {
        mosquitto(
            "mosquitto_pub",
            tls,
            Some(&pki.path("ca.pem")),
            &["-t", "tls/reload", "-m", "x"],
        )
        .output()
        .expect("mosquitto_pub")
        .status
        .success()
    };
    assert!(publish_trusting(&before));
    assert!(!publish_trusting(&after));
    // A subscriber connected with the old certificate stays through the swap: it gets one
    // message before and one after.
    let printed = files.path("printed");
    let mut listening = mosquitto(
        "mosquitto_sub",
        tls,
        Some(&before.path("ca.pem")),
        &["-t", "tls/reload", "-C", "2", "-W", "30"],
    )
    .stdout(std::fs::File::create(&printed).expect("create"))
    .spawn()
    .expect("mosquitto_sub");
    let received = || {
        std::fs::read_to_string(&printed)
            .unwrap_or_default()
            .lines()
            .count()
    };
    for _ in 0..50 {
        if received() > 0 {
            break;
        }
        assert!(publish_trusting(&before));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(received(), 1, "the subscriber got its first message");

    std::fs::copy(after.path("server.pem"), &cert).expect("copy");
    std::fs::copy(after.path("server.key"), &key).expect("copy");
    sighup(&broker);
    assert!(broker.wait_for_log(
        &["TLS certificates and keys reloaded"],
        Duration::from_secs(10)
    ));
    assert!(
        publish_trusting(&after),
        "new connections get the new certificate"
    );
    assert!(!publish_trusting(&before));
    let status = listening.wait().expect("mosquitto_sub ends");
    assert!(
        status.success() && received() == 2,
        "the old connection got the message after the swap"
    );
    broker.assert_healthy();
}
