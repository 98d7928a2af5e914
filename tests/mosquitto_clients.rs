//! End-to-end tests of the real `mqtt-broker` binary with Mosquitto's command-line clients
//! (`mosquitto_pub`, `mosquitto_sub`; MQTT 5, 3.1.1 and 3.1), on every runtime this machine runs.
//!
//! The clients come from Debian's `mosquitto-clients`; the README's test command installs them.
//! Without them these tests fail rather than skip, so that a green run means they ran.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{broker_for, unique, Broker, README_TEST_COMMAND};

/// How long a subscriber may take to be subscribed, or a client to finish.
const WAIT: Duration = Duration::from_secs(10);
/// `mosquitto_sub -W`: how long a subscriber waits for its messages before giving up.
const SUB_TIMEOUT_SECS: &str = "5";

/// Panics, saying how to install them, unless both Mosquitto clients are on PATH.
fn require_clients() {
    for tool in ["mosquitto_sub", "mosquitto_pub"] {
        let found = Command::new(tool)
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        assert!(
            found,
            "`{tool}` is not on PATH. Run the README test command `{README_TEST_COMMAND}`, which \
             installs mosquitto-clients (or `apt-get install mosquitto-clients`)."
        );
    }
}

/// One message as `mosquitto_sub -F` printed it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Message {
    topic: String,
    qos: u8,
    retain: bool,
    payload: String,
    /// The rest of the format's fields (MQTT 5 properties), if asked for.
    extra: Vec<String>,
}

const FORMAT: &str = "MSG|%t|%q|%r|%p";

/// A running `mosquitto_sub`, subscribed.
struct Sub {
    child: Child,
    what: String,
    output: Arc<Mutex<String>>,
    messages: mpsc::Receiver<Message>,
    /// The thread reading stdout: done once the process exited and all its lines are parsed.
    reader: Option<std::thread::JoinHandle<()>>,
}

/// Starts `mosquitto_sub -V version -t filter -q qos -C count ARGS` and waits until its
/// subscription is acknowledged. `format_extra` adds `|`-separated fields to the output format.
fn subscribe(
    broker: &Broker,
    version: &str,
    filter: &str,
    qos: u8,
    count: usize,
    args: &[&str],
    format_extra: &str,
) -> Sub {
    let port = broker.port.to_string();
    let qos = qos.to_string();
    let count = count.to_string();
    let format = format!("{FORMAT}{format_extra}");
    let mut command_args: Vec<&str> = vec![
        "-oL",
        "mosquitto_sub",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-V",
        version,
        "-t",
        filter,
        "-q",
        &qos,
        "-C",
        &count,
        "-W",
        SUB_TIMEOUT_SECS,
        "-d",
        "-F",
        &format,
    ];
    command_args.extend_from_slice(args);
    let what = format!("mosquitto_sub {}", command_args[1..].join(" "));
    // stdbuf: line-buffered stdout, so that "Subscribed" shows as soon as it is printed.
    let mut child = Command::new("stdbuf")
        .args(&command_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {what}: {error}"));
    let output = Arc::new(Mutex::new(String::new()));
    let (ready_tx, ready) = mpsc::channel();
    let (message_tx, messages) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let log = output.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("Subscribed (mid") {
                let _ = ready_tx.send(());
            }
            if let Some(fields) = line.strip_prefix("MSG|") {
                let mut fields = fields.split('|').map(str::to_owned);
                let mut next = || fields.next().unwrap_or_default();
                let message = Message {
                    topic: next(),
                    qos: next().parse().unwrap_or(99),
                    retain: next() == "1",
                    payload: next(),
                    extra: fields.collect(),
                };
                let _ = message_tx.send(message);
            }
            let mut log = log.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    let stderr = child.stderr.take().unwrap();
    let log = output.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let mut log = log.lock().unwrap();
            log.push_str("stderr: ");
            log.push_str(&line);
            log.push('\n');
        }
    });
    let mut sub = Sub {
        child,
        what,
        output,
        messages,
        reader: Some(reader),
    };
    // The reader thread drops `ready_tx` when stdout closes: then the process has exited
    // without (or after) saying "Subscribed", and anything it said is already in the channel.
    match ready.recv_timeout(WAIT) {
        Ok(()) => {}
        Err(error) => {
            let _ = sub.child.kill();
            std::thread::sleep(Duration::from_millis(50));
            panic!(
                "{} did not get its SUBACK ({}):\n{}",
                sub.what,
                match error {
                    mpsc::RecvTimeoutError::Timeout => "timed out",
                    mpsc::RecvTimeoutError::Disconnected => "exited",
                },
                sub.output.lock().unwrap()
            );
        }
    }
    sub
}

impl Sub {
    /// Waits for `mosquitto_sub` to exit after its `-C` messages; panics unless it succeeded.
    fn finish(mut self) -> Vec<Message> {
        let (status, messages) = self.wait_exit();
        assert!(
            status.success(),
            "{} exited with {status} (27: timed out waiting for its messages); got {messages:?}\n{}",
            self.what,
            self.output.lock().unwrap()
        );
        messages
    }

    /// Waits for the process to exit (panicking after `WAIT`); returns its status and every
    /// message it printed.
    fn wait_exit(&mut self) -> (std::process::ExitStatus, Vec<Message>) {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "{} did not exit:\n{}",
                    self.what,
                    self.output.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        (status, self.messages.try_iter().collect())
    }

    /// Kills the process: the kernel closes its socket without DISCONNECT.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// Runs `mosquitto_pub -V version -t topic -q qos ARGS` to completion; panics unless it succeeds.
fn publish(broker: &Broker, version: &str, topic: &str, qos: u8, args: &[&str], stdin: &str) {
    let port = broker.port.to_string();
    let qos = qos.to_string();
    let mut command_args: Vec<&str> = vec![
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-V",
        version,
        "-t",
        topic,
        "-q",
        &qos,
    ];
    command_args.extend_from_slice(args);
    let mut child = Command::new("mosquitto_pub")
        .args(&command_args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run mosquitto_pub: {error}"));
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).unwrap();
    }
    let deadline = Instant::now() + WAIT;
    while matches!(child.try_wait(), Ok(None)) {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "mosquitto_pub {} did not finish within {WAIT:?}",
                command_args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "mosquitto_pub {} failed ({}): {}{}",
        command_args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// One test per runtime for each listed `f(runtime)`.
macro_rules! runtime_tests {
    ($($test:ident),* $(,)?) => {
        runtime_tests!(@module io_uring, "io-uring", $($test),*);
        runtime_tests!(@module epoll, "epoll", $($test),*);
        runtime_tests!(@module tokio_rt, "tokio", $($test),*);
        runtime_tests!(@module #[cfg(feature = "glommio")] glommio_rt, "glommio", $($test),*);
    };
    (@module $(#[$cfg:meta])* $module:ident, $runtime:literal, $($test:ident),*) => {
        $(#[$cfg])*
        mod $module {
            $(
                #[test]
                fn $test() {
                    super::$test($runtime)
                }
            )*
        }
    };
}

runtime_tests!(
    qos_0_1_2_mqttv5,
    qos_0_1_2_mqttv311,
    qos_0_1_2_mqttv31,
    retained_every_version,
    will_every_version,
    mqttv5_properties_pass_through,
);

fn start(runtime: &str) -> Option<Broker> {
    require_clients();
    broker_for(runtime, &[])
}

fn qos_0_1_2_mqttv5(runtime: &str) {
    qos_0_1_2(runtime, "mqttv5")
}

fn qos_0_1_2_mqttv311(runtime: &str) {
    qos_0_1_2(runtime, "mqttv311")
}

fn qos_0_1_2_mqttv31(runtime: &str) {
    qos_0_1_2(runtime, "mqttv31")
}

/// Two subscribers (QoS 2 and QoS 1) get two messages at each QoS from `mosquitto_pub -l`, each
/// once, in order, at min(publish QoS, subscription QoS) (MQTT 3.1.1 §3.8.4, 5.0 §3.8.4).
fn qos_0_1_2(runtime: &str, version: &str) {
    let Some(broker) = start(runtime) else { return };
    let base = unique("mosq");
    let filter = format!("{base}/#");
    let sub2 = subscribe(&broker, version, &filter, 2, 6, &[], "");
    let sub1 = subscribe(&broker, version, &filter, 1, 6, &[], "");
    for qos in 0..3u8 {
        let topic = format!("{base}/q{qos}");
        // -l: one message per line of stdin, over one connection.
        publish(
            &broker,
            version,
            &topic,
            qos,
            &["-l"],
            &format!("first q{qos}\nsecond q{qos}\n"),
        );
    }
    for (sub, max_qos) in [(sub2, 2u8), (sub1, 1u8)] {
        let mut got = sub.finish();
        got.sort_by(|a, b| a.topic.cmp(&b.topic)); // stable: keeps each topic's order
        let expected: Vec<Message> = (0..3u8)
            .flat_map(|qos| {
                ["first", "second"].map(|which| Message {
                    topic: format!("{base}/q{qos}"),
                    qos: qos.min(max_qos),
                    retain: false,
                    payload: format!("{which} q{qos}"),
                    extra: Vec::new(),
                })
            })
            .collect();
        assert_eq!(got, expected, "{version} subscriber at QoS {max_qos}");
    }
}

/// A retained message published by each version reaches late subscribers of every version with
/// RETAIN set; an empty retained message clears it.
fn retained_every_version(runtime: &str) {
    let Some(broker) = start(runtime) else { return };
    let base = unique("mosq-ret");
    let versions = ["mqttv5", "mqttv311", "mqttv31"];
    for (n, publisher) in versions.iter().enumerate() {
        let topic = format!("{base}/{n}");
        publish(
            &broker,
            publisher,
            &topic,
            1,
            &["-r", "-m", &format!("kept by {publisher}")],
            "",
        );
        for subscriber in versions {
            let got = subscribe(&broker, subscriber, &topic, 2, 1, &[], "").finish();
            assert_eq!(
                got,
                vec![Message {
                    topic: topic.clone(),
                    qos: 1,
                    retain: true,
                    payload: format!("kept by {publisher}"),
                    extra: Vec::new(),
                }],
                "retained from {publisher} to a late {subscriber} subscriber"
            );
        }
    }
    // Clear retained 0 and 1 (`-n`: empty payload); a wildcard subscriber then gets only 2.
    for (n, publisher) in versions.iter().enumerate().take(2) {
        publish(
            &broker,
            publisher,
            &format!("{base}/{n}"),
            1,
            &["-r", "-n"],
            "",
        );
    }
    // -W 1 after at most 2 messages: it times out (exit 27) with the one retained message left.
    let mut sub = subscribe(
        &broker,
        "mqttv311",
        &format!("{base}/#"),
        1,
        2,
        &["-W", "1"],
        "",
    );
    let (status, got) = sub.wait_exit();
    assert_eq!(
        (
            status.code(),
            got.iter().map(|m| m.topic.clone()).collect::<Vec<_>>()
        ),
        (Some(27), vec![format!("{base}/2")]),
        "only the uncleared retained message is left (27 = timed out waiting for a second)"
    );
}

/// For each version: a client killed without DISCONNECT has its will published; one that exits
/// cleanly (DISCONNECT) does not.
fn will_every_version(runtime: &str) {
    let Some(broker) = start(runtime) else { return };
    for version in ["mqttv5", "mqttv311", "mqttv31"] {
        let base = unique("mosq-will");
        let watcher = subscribe(
            &broker,
            "mqttv311",
            &format!("{base}/will/#"),
            1,
            1,
            &[],
            "",
        );

        // Polite: receives one message, then disconnects cleanly.
        let polite_topic = format!("{base}/polite");
        let polite_will = format!("{base}/will/polite");
        let polite_id = format!("{base}-polite");
        let polite = subscribe(
            &broker,
            version,
            &polite_topic,
            1,
            1,
            &[
                "-i",
                &polite_id,
                "--will-topic",
                &polite_will,
                "--will-payload",
                "polite",
                "--will-qos",
                "1",
            ],
            "",
        );
        publish(&broker, "mqttv311", &polite_topic, 1, &["-m", "bye"], "");
        polite.finish();
        // The broker has handled the polite client's leaving (and would have published a will
        // then) before the rude client even connects: the watcher, which stops at its first
        // message, would get that will first.
        let polite_left = format!("client_id={polite_id} ");
        assert!(
            broker.wait_for_log(&["client disconnected", &polite_left], WAIT),
            "{version}: the broker never logged the polite client's leaving:\n{}",
            broker.logs()
        );

        // Rude: killed.
        let rude_will = format!("{base}/will/rude");
        let rude = subscribe(
            &broker,
            version,
            &format!("{base}/rude"),
            1,
            1,
            &[
                "--will-topic",
                &rude_will,
                "--will-payload",
                "rude",
                "--will-qos",
                "1",
            ],
            "",
        );
        rude.kill();

        let got = watcher.finish();
        assert_eq!(
            got.iter()
                .map(|m| (m.topic.as_str(), m.payload.as_str()))
                .collect::<Vec<_>>(),
            vec![(rude_will.as_str(), "rude")],
            "{version}: the will of the killed client only (not the one that sent DISCONNECT)"
        );
    }
}

/// MQTT 5 properties set with `mosquitto_pub -D` come out of `mosquitto_sub -F` unchanged: user
/// properties (in order, MQTT 5 §3.3.2.3.7), content type, response topic, correlation data,
/// payload format indicator, and a message expiry that is at most what was sent.
fn mqttv5_properties_pass_through(runtime: &str) {
    let Some(broker) = start(runtime) else { return };
    let topic = unique("mosq-props");
    let sub = subscribe(&broker, "mqttv5", &topic, 1, 1, &[], "|%P|%C|%R|%D|%F|%E");
    publish(
        &broker,
        "mqttv5",
        &topic,
        1,
        &[
            "-m",
            "with properties",
            "-D",
            "publish",
            "user-property",
            "first",
            "1",
            "-D",
            "publish",
            "user-property",
            "second",
            "2",
            "-D",
            "publish",
            "content-type",
            "text/plain",
            "-D",
            "publish",
            "response-topic",
            "reply/here",
            "-D",
            "publish",
            "correlation-data",
            "abc123",
            "-D",
            "publish",
            "payload-format-indicator",
            "1",
            "-D",
            "publish",
            "message-expiry-interval",
            "120",
        ],
        "",
    );
    let got = sub.finish();
    assert_eq!(got.len(), 1, "{got:?}");
    let message = &got[0];
    assert_eq!(message.payload, "with properties");
    let extra: Vec<&str> = message.extra.iter().map(String::as_str).collect();
    assert_eq!(
        &extra[..5],
        &[
            "first:1 second:2",
            "text/plain",
            "reply/here",
            "abc123",
            "1"
        ],
        "user properties, content type, response topic, correlation data, format indicator"
    );
    let expiry: u32 = extra[5].parse().unwrap_or_else(|_| panic!("{extra:?}"));
    assert!(
        (110..=120).contains(&expiry),
        "message expiry forwarded as what is left of 120 s (MQTT 5 §3.3.2.3.3), got {expiry}"
    );
}
