//! Persistence end to end, with the real `mqtt-broker` binary and rumqttc clients: what a broker
//! acknowledged survives a graceful restart (SIGTERM) and, with `--fsync always`, a `kill -9`,
//! and so does a delayed will; a second broker on the same data directory refuses to start.
//! The crash and will tests run the blocking build (`mqtt-broker-sync`) too, which persists
//! through the same code; `tests/sync_binary.rs` has its restart test. The kill -9 test also runs
//! on `--runtime tokio` and, in a `--features glommio` build, on glommio. A damaged data
//! directory is set aside (or, with `--strict-recovery`, refused) by the real binary.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

/// How long to wait for anything the test expects.
const WAIT: Duration = Duration::from_secs(10);
/// How long without a message means no more are coming.
const QUIET: Duration = Duration::from_millis(700);

const SHARDED: &str = env!("CARGO_BIN_EXE_mqtt-broker");
const SYNC: &str = env!("CARGO_BIN_EXE_mqtt-broker-sync");

/// A broker process on a data directory the test owns, so it can be restarted on it.
struct Broker {
    child: Child,
    port: u16,
    stderr: Arc<Mutex<String>>,
}

impl Broker {
    fn start(dir: &Path, extra: &[&str]) -> Broker {
        Broker::start_program(SHARDED, dir, extra)
    }

    /// Starts the broker binary at `program` (`SHARDED` or `SYNC`).
    fn start_program(program: &str, dir: &Path, extra: &[&str]) -> Broker {
        Broker::try_start_program(program, dir, extra)
            .unwrap_or_else(|(_, logs)| panic!("broker did not start:\n{logs}"))
    }

    fn try_start(dir: &Path, extra: &[&str]) -> Result<Broker, (Option<ExitStatus>, String)> {
        Broker::try_start_program(SHARDED, dir, extra)
    }

    /// Starts `PROGRAM --listen 127.0.0.1:0 --data-dir DIR EXTRA...` (with `--shards 2` unless
    /// EXTRA says otherwise) and waits for
    /// its `listening on` line; on failure, the exit status (if it exited) and its stderr.
    fn try_start_program(
        program: &str,
        dir: &Path,
        extra: &[&str],
    ) -> Result<Broker, (Option<ExitStatus>, String)> {
        let mut child = Command::new(program)
            .args(["--listen", "127.0.0.1:0", "--log-level", "info"])
            .args(if extra.contains(&"--shards") {
                &[][..]
            } else {
                &["--shards", "2"][..]
            })
            .arg("--data-dir")
            .arg(dir)
            .args(extra)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("run {program}: {error}"));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (port_tx, port_rx) = mpsc::channel();
        let pipe = child.stderr.take().expect("piped");
        let buffer = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(port) = line
                    .split("listening on 127.0.0.1:")
                    .nth(1)
                    .and_then(|rest| rest.trim().parse::<u16>().ok())
                {
                    let _ = port_tx.send(port);
                }
                let mut buffer = buffer.lock().unwrap();
                buffer.push_str(&line);
                buffer.push('\n');
            }
        });
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(port) = port_rx.recv_timeout(Duration::from_millis(50)) {
                return Ok(Broker {
                    child,
                    port,
                    stderr,
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                return Err((Some(status), stderr.lock().unwrap().clone()));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err((None, stderr.lock().unwrap().clone()));
            }
        }
    }

    fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits up to `WAIT` for a log line that contains every one of `parts`; panics without.
    async fn wait_for_log(&self, parts: &[&str]) {
        let deadline = Instant::now() + WAIT;
        while !self
            .logs()
            .lines()
            .any(|line| parts.iter().all(|part| line.contains(part)))
        {
            assert!(
                Instant::now() < deadline,
                "no log line with {parts:?} within {WAIT:?}:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGTERM, then waits for a clean exit (final snapshot written).
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(
            sent.is_ok_and(|status| status.success()),
            "kill -TERM {pid}"
        );
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "{status}:\n{}", self.logs());
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no exit after SIGTERM:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no shutdown, no final snapshot.
    fn crash(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("wait");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Receives from an event loop task until `QUIET` passes without a message.
async fn drain<T>(messages: &mut UnboundedReceiver<T>) -> Vec<T> {
    let mut got = Vec::new();
    while let Ok(Some(message)) = tokio::time::timeout(QUIET, messages.recv()).await {
        got.push(message);
    }
    got
}

/// Receives `want.len()` messages, each within `WAIT` of the one before, then whatever else
/// arrives before `QUIET` passes without a message, and checks that this is exactly `want`.
async fn expect_exactly(messages: &mut UnboundedReceiver<String>, want: &[String], logs: &str) {
    let mut got = Vec::new();
    while got.len() < want.len() {
        match tokio::time::timeout(WAIT, messages.recv()).await {
            Ok(Some(message)) => got.push(message),
            _ => break,
        }
    }
    if got.len() == want.len() {
        got.extend(drain(messages).await);
    }
    assert_eq!(got, want, "{logs}");
}

/// `prefix0`, `prefix1`, ... `prefix{count - 1}`.
fn numbered(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}{i}")).collect()
}

/// rumqttc's MQTT 3.1.1 client, as far as these tests need it.
mod v3 {
    use super::*;
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

    pub struct Client {
        pub client: AsyncClient,
        pub session_present: bool,
        /// Payloads of the PUBLISHes received, in order.
        pub messages: UnboundedReceiver<String>,
        acks: UnboundedReceiver<()>,
        task: tokio::task::JoinHandle<()>,
    }

    /// Options for `id` with clean session 0 (`persistent`) or 1.
    pub fn options(port: u16, id: &str, persistent: bool) -> MqttOptions {
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_clean_session(!persistent);
        options
    }

    impl Client {
        /// Connects with clean session 0 (`persistent`) or 1.
        pub async fn connect(port: u16, id: &str, persistent: bool) -> Client {
            Client::connect_with(options(port, id, persistent)).await
        }

        /// Connects with a persistent session that never acknowledges a message it receives:
        /// what the broker sends it stays in flight.
        pub async fn connect_unacknowledging(port: u16, id: &str) -> Client {
            let mut options = options(port, id, true);
            options.set_manual_acks(true);
            Client::connect_with(options).await
        }

        pub async fn connect_with(options: MqttOptions) -> Client {
            let (client, mut eventloop) = AsyncClient::new(options, 256);
            let (message_tx, messages) = unbounded_channel();
            let (ack_tx, acks) = unbounded_channel();
            let (connack_tx, connack) = tokio::sync::oneshot::channel();
            let mut connack_tx = Some(connack_tx);
            let task = tokio::spawn(async move {
                while let Ok(event) = eventloop.poll().await {
                    match event {
                        Event::Incoming(Packet::ConnAck(ack)) => {
                            if let Some(tx) = connack_tx.take() {
                                let _ = tx.send(ack.session_present);
                            }
                        }
                        Event::Incoming(Packet::Publish(publish)) => {
                            let payload = String::from_utf8_lossy(&publish.payload).into_owned();
                            let _ = message_tx.send(payload);
                        }
                        Event::Incoming(Packet::PubAck(_) | Packet::SubAck(_)) => {
                            let _ = ack_tx.send(());
                        }
                        _ => {}
                    }
                }
            });
            let session_present = tokio::time::timeout(WAIT, connack)
                .await
                .expect("CONNACK in time")
                .expect("CONNACK");
            Client {
                client,
                session_present,
                messages,
                acks,
                task,
            }
        }

        async fn acked(&mut self) {
            assert!(self.try_acked(WAIT).await, "acknowledged in time");
        }

        /// Waits for the next PUBACK or SUBACK; false if none comes within `within`.
        pub async fn try_acked(&mut self, within: Duration) -> bool {
            matches!(
                tokio::time::timeout(within, self.acks.recv()).await,
                Ok(Some(()))
            )
        }

        pub async fn subscribe(&mut self, filter: &str) {
            self.client
                .subscribe(filter, QoS::AtLeastOnce)
                .await
                .expect("subscribe");
            self.acked().await;
        }

        /// Publishes at QoS 1 and waits for the PUBACK.
        pub async fn publish(&mut self, topic: &str, payload: &str, retain: bool) {
            self.client
                .publish(topic, QoS::AtLeastOnce, retain, payload.as_bytes().to_vec())
                .await
                .expect("publish");
            self.acked().await;
        }

        pub async fn disconnect(self) {
            let _ = self.client.disconnect().await;
            let _ = tokio::time::timeout(WAIT, self.task).await;
        }
    }
}

/// rumqttc's MQTT 5 client, as far as these tests need it.
mod v5 {
    use super::*;
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};

    pub struct Client {
        pub client: AsyncClient,
        pub session_present: bool,
        pub messages: UnboundedReceiver<String>,
        acks: UnboundedReceiver<()>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Client {
        /// Connects with a session expiry of an hour (`persistent`) or 0.
        pub async fn connect(port: u16, id: &str, persistent: bool) -> Client {
            let mut options = MqttOptions::new(id, "127.0.0.1", port);
            options.set_keep_alive(Duration::from_secs(30));
            options.set_clean_start(!persistent);
            options.set_session_expiry_interval(persistent.then_some(3600));
            let (client, mut eventloop) = AsyncClient::new(options, 256);
            let (message_tx, messages) = unbounded_channel();
            let (ack_tx, acks) = unbounded_channel();
            let (connack_tx, connack) = tokio::sync::oneshot::channel();
            let mut connack_tx = Some(connack_tx);
            let task = tokio::spawn(async move {
                while let Ok(event) = eventloop.poll().await {
                    match event {
                        Event::Incoming(Packet::ConnAck(ack)) => {
                            if let Some(tx) = connack_tx.take() {
                                let _ = tx.send(ack.session_present);
                            }
                        }
                        Event::Incoming(Packet::Publish(publish)) => {
                            let payload = String::from_utf8_lossy(&publish.payload).into_owned();
                            let _ = message_tx.send(payload);
                        }
                        Event::Incoming(Packet::PubAck(_) | Packet::SubAck(_)) => {
                            let _ = ack_tx.send(());
                        }
                        _ => {}
                    }
                }
            });
            let session_present = tokio::time::timeout(WAIT, connack)
                .await
                .expect("CONNACK in time")
                .expect("CONNACK");
            Client {
                client,
                session_present,
                messages,
                acks,
                task,
            }
        }

        async fn acked(&mut self) {
            tokio::time::timeout(WAIT, self.acks.recv())
                .await
                .expect("acknowledged in time")
                .expect("event loop running");
        }

        pub async fn subscribe(&mut self, filter: &str) {
            self.client
                .subscribe(filter, QoS::AtLeastOnce)
                .await
                .expect("subscribe");
            self.acked().await;
        }

        pub async fn publish(&mut self, topic: &str, payload: &str, retain: bool) {
            self.client
                .publish(topic, QoS::AtLeastOnce, retain, payload.as_bytes().to_vec())
                .await
                .expect("publish");
            self.acked().await;
        }

        pub async fn disconnect(self) {
            let _ = self.client.disconnect().await;
            let _ = tokio::time::timeout(WAIT, self.task).await;
        }
    }

    /// Connects `id` with an hour's session and a will on `will/<id>` delayed by `delay` s, then
    /// cuts the connection without DISCONNECT (the event loop, and its socket, are dropped): the
    /// will is pending. Returns when it cut the connection.
    pub async fn drop_with_delayed_will(port: u16, id: &str, delay: u32) -> Instant {
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_clean_start(false);
        options.set_session_expiry_interval(Some(3600));
        let topic = format!("will/{id}");
        options.set_last_will(common::v5_will(&topic, id.as_bytes(), Some(delay)));
        let (_client, mut eventloop) = AsyncClient::new(options, 16);
        let connected = async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => return,
                    Ok(_) => {}
                    Err(error) => panic!("{id}: {error}"),
                }
            }
        };
        tokio::time::timeout(WAIT, connected)
            .await
            .expect("CONNACK in time");
        let cut = Instant::now();
        drop(eventloop);
        cut
    }
}

/// Both protocol versions go through the same steps; this names them once.
macro_rules! restart_test {
    ($name:ident, $client:path) => {
        #[tokio::test(flavor = "multi_thread")]
        async fn $name() {
            use $client as Client;
            let dir = tempfile::tempdir().unwrap();
            let broker = Broker::start(dir.path(), &[]);
            let mut subscriber = Client::connect(broker.port, "keeper", true).await;
            subscriber.subscribe("e2e/t").await;
            subscriber.disconnect().await;
            let mut publisher = Client::connect(broker.port, "writer", false).await;
            publisher.publish("e2e/r", "retained", true).await;
            for i in 0..5 {
                publisher.publish("e2e/t", &format!("m{i}"), false).await;
            }
            publisher.disconnect().await;
            broker.stop();

            let broker = Broker::start(dir.path(), &[]);
            let mut subscriber = Client::connect(broker.port, "keeper", true).await;
            assert!(subscriber.session_present, "{}", broker.logs());
            let logs = broker.logs();
            expect_exactly(&mut subscriber.messages, &numbered("m", 5), &logs).await;
            // The subscription itself came back, once.
            let mut publisher = Client::connect(broker.port, "writer", false).await;
            publisher.publish("e2e/t", "live", false).await;
            expect_exactly(&mut subscriber.messages, &["live".into()], &logs).await;
            let mut late = Client::connect(broker.port, "late", false).await;
            late.subscribe("e2e/r").await;
            expect_exactly(&mut late.messages, &["retained".into()], &logs).await;
            subscriber.disconnect().await;
            broker.stop();
        }
    };
}

restart_test!(v3_restart_keeps_sessions_queues_and_retained, v3::Client);
restart_test!(v5_restart_keeps_sessions_queues_and_retained, v5::Client);

/// Connects `id` with a persistent session, subscribes it to `filter` at QoS 1 and disconnects:
/// from then on, messages on `filter` queue up for it.
async fn park_subscriber(port: u16, id: &str, filter: &str) {
    let mut subscriber = v3::Client::connect(port, id, true).await;
    subscriber.subscribe(filter).await;
    subscriber.disconnect().await;
}

/// Starts a broker on `dir` with `flags`, parks persistent subscriber `id` on `topic` and
/// publishes `payloads` there at QoS 1, each acknowledged before the next; returns the broker.
async fn start_with_queued(
    dir: &Path,
    flags: &[&str],
    (id, topic): (&str, &str),
    payloads: &[String],
) -> Broker {
    let broker = Broker::start(dir, flags);
    park_subscriber(broker.port, id, topic).await;
    let mut publisher = v3::Client::connect(broker.port, &format!("{id}-publisher"), false).await;
    for payload in payloads {
        publisher.publish(topic, payload, false).await;
    }
    publisher.disconnect().await;
    broker
}

/// Reconnects persistent client `id` to `broker`: its session is there, and it gets exactly
/// `want`.
async fn expect_session_with(broker: &Broker, id: &str, want: &[String]) {
    let mut subscriber = v3::Client::connect(broker.port, id, true).await;
    assert!(subscriber.session_present, "{id}: {}", broker.logs());
    expect_exactly(&mut subscriber.messages, want, &broker.logs()).await;
    subscriber.disconnect().await;
}

/// Publishes to a persistent subscriber's topic until `program` (with `--fsync always` and
/// `extra`, e.g. a `--runtime`) is killed with SIGKILL, then restarts it: every message that was
/// acknowledged is there.
async fn kill_9_loses_no_acknowledged_message(program: &str, extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let flags = [&["--fsync", "always"][..], extra].concat();
    let broker = Broker::start_program(program, dir.path(), &flags);
    park_subscriber(broker.port, "durable-sub", "stream").await;

    // Publishes one message at a time, each after the previous PUBACK, until the broker dies:
    // every message below `acked` was acknowledged.
    let acked = Arc::new(AtomicUsize::new(0));
    let port = broker.port;
    let counter = acked.clone();
    let publishing = tokio::spawn(async move {
        let mut publisher = v3::Client::connect(port, "streamer", false).await;
        for i in 0.. {
            let sent = publisher
                .client
                .publish(
                    "stream",
                    rumqttc::QoS::AtLeastOnce,
                    false,
                    format!("s{i}").into_bytes(),
                )
                .await;
            if sent.is_err() || !publisher.try_acked(WAIT).await {
                break;
            }
            counter.store(i + 1, Ordering::SeqCst);
        }
    });
    // Counted, not timed: the crash comes after the 100th acknowledgement, however slow the
    // disk; only an acknowledgement that never comes (`WAIT`) fails.
    while acked.load(Ordering::SeqCst) < 100 {
        assert!(
            !publishing.is_finished(),
            "no PUBACK within {WAIT:?} after {} acknowledged:\n{}",
            acked.load(Ordering::SeqCst),
            broker.logs()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    broker.crash();
    let _ = tokio::time::timeout(WAIT, publishing).await;
    let acked = acked.load(Ordering::SeqCst);

    let broker = Broker::start_program(program, dir.path(), &flags);
    let mut subscriber = v3::Client::connect(broker.port, "durable-sub", true).await;
    assert!(subscriber.session_present);
    // Everything queued comes, each message within `WAIT` of the one before.
    let mut got = std::collections::HashSet::new();
    while let Ok(Some(payload)) = tokio::time::timeout(WAIT, subscriber.messages.recv()).await {
        got.insert(payload);
        if (0..acked).all(|i| got.contains(&format!("s{i}"))) {
            break;
        }
    }
    let missing: Vec<usize> = (0..acked)
        .filter(|i| !got.contains(&format!("s{i}")))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {acked} acknowledged messages lost: {missing:?}\n{}",
        missing.len(),
        broker.logs()
    );
    subscriber.disconnect().await;
    broker.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_loses_no_acknowledged_message_with_fsync_always() {
    kill_9_loses_no_acknowledged_message(SHARDED, &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_loses_no_acknowledged_message_on_tokio() {
    kill_9_loses_no_acknowledged_message(SHARDED, &["--runtime", "tokio"]).await;
}

/// Run by CI's `cargo test --features glommio glommio`; needs io_uring like every glommio case.
#[cfg(feature = "glommio")]
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_loses_no_acknowledged_message_on_glommio() {
    if !common::io_uring_available() {
        eprintln!("SKIPPED (glommio): io_uring is not available on this machine");
        return;
    }
    kill_9_loses_no_acknowledged_message(SHARDED, &["--runtime", "glommio"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sync_build_loses_no_acknowledged_message_to_kill_9() {
    kill_9_loses_no_acknowledged_message(SYNC, &[]).await;
}

/// `--fsync interval`: acknowledgements do not wait for the disk, but the journal is written and
/// synced within the interval, so messages acknowledged and then followed by more than the
/// interval survive a kill -9. (The wait is the scenario itself: time for the interval to pass.)
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_keeps_what_was_acknowledged_more_than_an_fsync_interval_before() {
    const INTERVAL_MS: u64 = 200;
    const COUNT: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let interval = INTERVAL_MS.to_string();
    let flags = ["--fsync", "interval", "--fsync-interval-ms", &interval];
    let sent = numbered("i", COUNT);
    let parked = ("interval-sub", "interval/t");
    let broker = start_with_queued(dir.path(), &flags, parked, &sent).await;
    // The interval plus a wide margin for a busy machine's writer thread.
    tokio::time::sleep(Duration::from_millis(INTERVAL_MS) + Duration::from_secs(2)).await;
    broker.crash();

    let broker = Broker::start(dir.path(), &flags);
    expect_session_with(&broker, "interval-sub", &sent).await;
    broker.stop();
}

/// What the broker promises on SIGTERM: it disconnects every client, writes a final snapshot
/// and exits 0, keeping every message it acknowledged, even with the default `--fsync
/// interval`. Those queued for a persistent session that is away, and those sent to a connected
/// persistent subscriber that has not acknowledged them (in flight) along with the ones queued
/// behind them, all arrive after a restart on the same data directory, once each and in order.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_keeps_queued_and_in_flight_messages_for_the_next_start() {
    const COUNT: usize = 10;
    const IN_FLIGHT: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let in_flight = IN_FLIGHT.to_string();
    let flags = ["--max-inflight", &in_flight];
    let (away, held) = (numbered("a", COUNT), numbered("b", COUNT));
    let parked = ("drain-away", "drain/away");
    let broker = start_with_queued(dir.path(), &flags, parked, &away).await;
    let mut busy = v3::Client::connect_unacknowledging(broker.port, "drain-busy").await;
    busy.subscribe("drain/busy").await;
    let mut publisher = v3::Client::connect(broker.port, "drain-pub", false).await;
    for payload in &held {
        publisher.publish("drain/busy", payload, false).await;
    }
    // The unacknowledging subscriber has its window in flight; the rest wait behind it.
    expect_exactly(&mut busy.messages, &held[..IN_FLIGHT], &broker.logs()).await;
    broker.stop();

    let broker = Broker::start(dir.path(), &flags);
    expect_session_with(&broker, "drain-away", &away).await;
    expect_session_with(&broker, "drain-busy", &held).await;
    broker.stop();
}

/// A delayed will pending across a restart (graceful, or `kill -9` and journal replay): it is
/// published once its delay, counted from the drop and not from the restart, has passed (never
/// before), and a client back in time still cancels its own.
async fn delayed_will_across_a_restart(program: &str, crash: bool) {
    const DELAY: Duration = Duration::from_secs(6);
    const DOWNTIME: Duration = Duration::from_secs(3);
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--fsync", "always"];
    let broker = Broker::start_program(program, dir.path(), &flags);
    // A persistent watcher: it gets the will whenever it is published, connected or not.
    let mut watcher = v5::Client::connect(broker.port, "will-watcher", true).await;
    watcher.subscribe("will/#").await;
    watcher.disconnect().await;
    let dropped = v5::drop_with_delayed_will(broker.port, "dying", DELAY.as_secs() as u32).await;
    v5::drop_with_delayed_will(broker.port, "returning", DELAY.as_secs() as u32).await;
    for id in ["dying", "returning"] {
        let client_id = format!("client_id={id} ");
        broker
            .wait_for_log(&["client disconnected", &client_id])
            .await;
    }
    if crash {
        broker.crash();
    } else {
        broker.stop();
    }
    // The scenario: part of the delay passes while no broker runs.
    tokio::time::sleep(DOWNTIME).await;

    let broker = Broker::start_program(program, dir.path(), &flags);
    let restarted = Instant::now();
    let returning = v5::Client::connect(broker.port, "returning", true).await;
    assert!(returning.session_present, "{}", broker.logs());
    assert!(
        dropped.elapsed() < DELAY,
        "precondition: `returning` came back {:?} after its drop, past its will delay of \
         {DELAY:?}, so there was nothing left to cancel",
        dropped.elapsed()
    );
    let mut watcher = v5::Client::connect(broker.port, "will-watcher", true).await;
    let will = tokio::time::timeout(DELAY + WAIT, watcher.messages.recv())
        .await
        .unwrap_or_else(|_| panic!("no will within {:?}:\n{}", DELAY + WAIT, broker.logs()));
    let (at, since_restart) = (dropped.elapsed(), restarted.elapsed());
    assert_eq!(will.as_deref(), Some("dying"), "{}", broker.logs());
    assert!(
        at >= DELAY - Duration::from_millis(100),
        "published {at:?} after the drop, before its delay of {DELAY:?}"
    );
    assert!(
        since_restart < DELAY,
        "published {since_restart:?} after the restart: the delay was counted again from the \
         restart, not from the drop {at:?} before"
    );
    // `returning`'s will was due just after this one: cancelled, it never comes.
    assert_eq!(
        drain(&mut watcher.messages).await,
        Vec::<String>::new(),
        "only the will of the client that stayed away:\n{}",
        broker.logs()
    );
    watcher.disconnect().await;
    returning.disconnect().await;
    broker.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delayed_will_survives_a_graceful_restart() {
    delayed_will_across_a_restart(SHARDED, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delayed_will_survives_kill_9_with_fsync_always() {
    delayed_will_across_a_restart(SHARDED, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sync_build_keeps_a_delayed_will_across_kill_9() {
    delayed_will_across_a_restart(SYNC, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_follow_their_clients_when_the_shard_count_changes() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<String> = (0..8).map(|i| format!("mover-{i}")).collect();
    let broker = Broker::start(dir.path(), &["--shards", "2"]);
    for id in &ids {
        let mut client = v3::Client::connect(broker.port, id, true).await;
        client.subscribe(&format!("home/{id}")).await;
        client.disconnect().await;
    }
    let mut round = "first";
    let mut publisher = v3::Client::connect(broker.port, "mover-pub", false).await;
    for id in &ids {
        publisher.publish(&format!("home/{id}"), round, false).await;
    }
    publisher.disconnect().await;
    broker.stop();

    for (shards, next) in [("3", "second"), ("1", "third")] {
        let broker = Broker::start(dir.path(), &["--shards", shards]);
        for id in &ids {
            let mut client = v3::Client::connect(broker.port, id, true).await;
            assert!(client.session_present, "{id} on {shards} shards");
            let case = format!("{id} on {shards} shards:\n{}", broker.logs());
            expect_exactly(&mut client.messages, &[round.into()], &case).await;
            client.disconnect().await;
        }
        let mut publisher = v3::Client::connect(broker.port, "mover-pub", false).await;
        for id in &ids {
            publisher.publish(&format!("home/{id}"), next, false).await;
        }
        publisher.disconnect().await;
        round = next;
        broker.stop();
    }
    assert!(
        !dir.path().join("stream-0002").exists(),
        "streams beyond the shard count are retired"
    );
    let broker = Broker::start(dir.path(), &["--shards", "2"]);
    let mut client = v3::Client::connect(broker.port, &ids[0], true).await;
    expect_exactly(&mut client.messages, &[round.into()], &broker.logs()).await;
    client.disconnect().await;
    broker.stop();
}

#[test]
fn a_second_broker_on_the_same_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = Broker::start(dir.path(), &[]);
    let Err((status, logs)) = Broker::try_start(dir.path(), &[]) else {
        panic!("a second broker started on a data directory in use");
    };
    let status = status.expect("it exits");
    assert!(!status.success(), "{status}");
    let last = logs.lines().last().unwrap_or_default();
    assert!(
        last.contains("is in use by another broker"),
        "the error names the problem on one line: {logs}"
    );
    first.stop();
}

/// A broker restarted the moment the last one was killed starts (on io_uring the dead one's
/// listening sockets outlive it by some milliseconds, which once failed the start with "address
/// in use"), and a client that connects as soon as the port accepts is served: every connection
/// the port accepts gets a CONNACK. (The probe that checks the port is free once listened for a
/// moment and reset whoever connected to it.)
#[test]
fn restarts_right_after_kill_9_start_and_serve_the_first_connections() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::sync::atomic::AtomicBool;

    /// 3.1.1 CONNECT, clean session, empty client id.
    const CONNECT: [u8; 14] = [0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 0];
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    // The client holds off while a broker is killed: a reset then is the kill's doing.
    let hold = Arc::new(AtomicBool::new(true));
    let holding = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let client = {
        let (hold, holding, served) = (hold.clone(), holding.clone(), served.clone());
        std::thread::spawn(move || -> Result<(), String> {
            loop {
                while hold.load(Ordering::SeqCst) {
                    holding.store(true, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(1));
                }
                holding.store(false, Ordering::SeqCst);
                let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                };
                stream.set_read_timeout(Some(WAIT)).unwrap();
                let mut connack = [0u8; 4];
                let answered = stream
                    .write_all(&CONNECT)
                    .and_then(|()| stream.read_exact(&mut connack));
                match answered {
                    Ok(()) if connack == [0x20, 2, 0, 0] => {
                        served.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(()) => return Err(format!("answered {connack:02x?}")),
                    Err(error) => {
                        return Err(format!("accepted, then not served: {error}"));
                    }
                }
            }
        })
    };
    // Whether the killed broker's listening sockets are gone: connections that reach them
    // before are reset with them, whatever the next broker does.
    let refused = || TcpStream::connect(("127.0.0.1", port)).is_err();
    for round in 0..6 {
        // Even rounds: the client is already knocking when the broker starts. Odd ones: the
        // broker starts at once after the kill, and the client once it listens.
        let knocking = round % 2 == 0;
        if knocking {
            let deadline = Instant::now() + WAIT;
            while !refused() {
                assert!(
                    Instant::now() < deadline,
                    "the killed broker's port stays open"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            hold.store(false, Ordering::SeqCst);
        }
        let broker = Broker::start(dir.path(), &["--listen", &listen]);
        hold.store(false, Ordering::SeqCst);
        let before = served.load(Ordering::SeqCst);
        let deadline = Instant::now() + WAIT;
        while served.load(Ordering::SeqCst) < before + 20 && !client.is_finished() {
            assert!(Instant::now() < deadline, "round {round}: no client served");
            std::thread::sleep(Duration::from_millis(5));
        }
        hold.store(true, Ordering::SeqCst);
        while !holding.load(Ordering::SeqCst) && !client.is_finished() {
            std::thread::sleep(Duration::from_millis(1));
        }
        broker.crash();
        if client.is_finished() {
            break;
        }
    }
    if client.is_finished() {
        let outcome = client.join().expect("client thread");
        panic!("a connection was reset right after a start: {outcome:?}");
    }
    assert!(served.load(Ordering::SeqCst) >= 100);
}

/// QoS 2 exactly once across a kill -9 (`--fsync always`): the broker has answered PUBREC, so it
/// has routed the message, when it dies. The publisher, reconnecting, sends the PUBLISH again
/// with DUP as 3.1.1 requires; the broker must recognise it from its journal and not route it a
/// second time. The persistent subscriber, away throughout, gets the message exactly once.
#[test]
fn qos_2_is_delivered_exactly_once_across_kill_9() {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    /// 3.1.1 CONNECT, clean session off.
    fn connect(port: u16, id: &str) -> TcpStream {
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x00, 0, 60];
        body.extend_from_slice(&(id.len() as u16).to_be_bytes());
        body.extend_from_slice(id.as_bytes());
        let mut packet = vec![0x10, body.len() as u8];
        packet.extend(body);
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.write_all(&packet).unwrap();
        let mut connack = [0u8; 4];
        stream.read_exact(&mut connack).unwrap();
        assert_eq!(
            (connack[0], connack[3]),
            (0x20, 0),
            "{id}: CONNACK accepted"
        );
        stream
    }
    fn expect(stream: &mut TcpStream, want: &[u8], what: &str) {
        let mut got = vec![0u8; want.len()];
        stream.read_exact(&mut got).unwrap();
        assert_eq!(got, want, "{what}");
    }
    /// PUBLISH QoS 2 on "exactly", packet id 7, payload "once"; `dup` sets DUP.
    fn publish(dup: bool) -> Vec<u8> {
        let mut packet = vec![if dup { 0x3C } else { 0x34 }, 0];
        packet.extend_from_slice(&[0, 7]);
        packet.extend_from_slice(b"exactly");
        packet.extend_from_slice(&[0, 7]);
        packet.extend_from_slice(b"once");
        packet[1] = (packet.len() - 2) as u8;
        packet
    }

    let dir = tempfile::tempdir().unwrap();
    let always = ["--fsync", "always"];
    let broker = Broker::start(dir.path(), &always);
    let mut subscriber = connect(broker.port, "exactly-sub");
    let mut subscribe = vec![0x82, 12, 0, 1, 0, 7];
    subscribe.extend_from_slice(b"exactly");
    subscribe.push(2);
    subscriber.write_all(&subscribe).unwrap();
    expect(
        &mut subscriber,
        &[0x90, 3, 0, 1, 2],
        "SUBACK granting QoS 2",
    );
    subscriber.write_all(&[0xE0, 0]).unwrap();
    drop(subscriber);
    let mut publisher = connect(broker.port, "exactly-pub");
    publisher.write_all(&publish(false)).unwrap();
    expect(&mut publisher, &[0x50, 2, 0, 7], "PUBREC before the crash");
    broker.crash();

    let broker = Broker::start(dir.path(), &always);
    let mut publisher = connect(broker.port, "exactly-pub");
    publisher.write_all(&publish(true)).unwrap();
    expect(
        &mut publisher,
        &[0x50, 2, 0, 7],
        "PUBREC for the resent PUBLISH",
    );
    publisher.write_all(&[0x62, 2, 0, 7]).unwrap();
    expect(&mut publisher, &[0x70, 2, 0, 7], "PUBCOMP");
    let mut subscriber = connect(broker.port, "exactly-sub");
    subscriber.set_read_timeout(Some(QUIET)).unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 256];
    while let Ok(read) = subscriber.read(&mut buffer) {
        if read == 0 {
            break;
        }
        received.extend_from_slice(&buffer[..read]);
    }
    let copies = received
        .windows(4)
        .filter(|window| window == b"once")
        .count();
    assert_eq!(
        copies, 1,
        "exactly one copy after the restart: {received:02x?}"
    );
    broker.stop();
}

/// Retained messages set, replaced and cleared, then kill -9 (`--fsync always`): after the
/// restart a new subscriber gets exactly the replacement, and nothing for the cleared topic.
#[tokio::test(flavor = "multi_thread")]
async fn retained_replace_and_clear_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let always = ["--fsync", "always"];
    let broker = Broker::start(dir.path(), &always);
    let mut publisher = v3::Client::connect(broker.port, "retainer", false).await;
    publisher.publish("kept/a", "a1", true).await;
    publisher.publish("kept/b", "b1", true).await;
    publisher.publish("kept/a", "a2", true).await;
    publisher.publish("kept/b", "", true).await;
    broker.crash();

    let broker = Broker::start(dir.path(), &always);
    let mut subscriber = v3::Client::connect(broker.port, "late", false).await;
    subscriber.subscribe("kept/#").await;
    expect_exactly(&mut subscriber.messages, &["a2".into()], &broker.logs()).await;
    subscriber.disconnect().await;
    broker.stop();
}

/// The files in `dir/stream-0000` whose names start with `prefix` and end with `suffix`, sorted.
fn stream_files(dir: &Path, prefix: &str, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("stream-0000"))
        .expect("stream-0000 exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            name.starts_with(prefix) && name.ends_with(suffix)
        })
        .collect();
    files.sort();
    files
}

/// Byte ranges of the records of a journal segment: a 36-byte header, then per record
/// `[u32 len][u32 crc32c][u64 lsn][payload]` with `len` = 8 + payload length (little-endian),
/// as `persistence/src/journal.rs` lays them out.
fn journal_records(segment: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut records = Vec::new();
    let mut at = 36;
    while at + 16 <= segment.len() {
        let len = u32::from_le_bytes(segment[at..at + 4].try_into().unwrap()) as usize;
        let end = at + 8 + len;
        if len < 8 || end > segment.len() {
            break;
        }
        records.push(at..end);
        at = end;
    }
    records
}

/// Flips every bit of the byte at `offset` of `path`; returns the damaged contents.
fn damage(path: &Path, offset: usize) -> Vec<u8> {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 0xFF;
    std::fs::write(path, &bytes).unwrap();
    bytes
}

/// A one-shard broker on `dir`, where `damaged` (holding `bytes`) is damaged. With
/// `--strict-recovery` it refuses to start, exits non-zero with a last line naming the file, and
/// changes nothing. Without, it starts, logs the damage naming the file, keeps the file aside as
/// `<name>.corrupt-<secs>` with its contents whole, and serves clients.
async fn damaged_data_directory_is_refused_or_set_aside(dir: &Path, damaged: &Path, bytes: &[u8]) {
    let name = damaged.file_name().unwrap().to_string_lossy().into_owned();
    let set_aside = || stream_files(dir, &format!("{name}.corrupt-"), "");
    let Err((status, logs)) = Broker::try_start(dir, &["--shards", "1", "--strict-recovery"])
    else {
        panic!("--strict-recovery started on a damaged {name}");
    };
    let status = status.expect("it exits");
    assert!(!status.success(), "{status}:\n{logs}");
    let last = logs.lines().last().unwrap_or_default();
    assert!(
        last.contains(&name) && last.contains("strict recovery"),
        "the refusal names the damaged file on its last line:\n{logs}"
    );
    assert_eq!(
        std::fs::read(damaged).unwrap(),
        bytes,
        "--strict-recovery left {name} as it was"
    );
    assert!(set_aside().is_empty(), "--strict-recovery moved nothing");

    let broker = Broker::start(dir, &["--shards", "1"]);
    let logs = broker.logs();
    assert!(
        logs.lines()
            .any(|line| line.contains("persistent state damaged") && line.contains(&name)),
        "the damage is logged, naming {name}:\n{logs}"
    );
    let aside = set_aside();
    assert_eq!(aside.len(), 1, "{name} kept aside once: {aside:?}\n{logs}");
    assert_eq!(
        std::fs::read(&aside[0]).unwrap(),
        bytes,
        "the damaged file is kept whole"
    );
    let mut subscriber = v3::Client::connect(broker.port, "after-damage-sub", false).await;
    subscriber.subscribe("after/damage").await;
    let mut publisher = v3::Client::connect(broker.port, "after-damage-pub", false).await;
    publisher.publish("after/damage", "served", false).await;
    expect_exactly(&mut subscriber.messages, &["served".to_string()], &logs).await;
    broker.stop();
}

/// A journal record in the middle of a segment, with intact records after it, fails its
/// checksum (not a torn tail, which is dropped quietly).
#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_journal_segment_is_refused_with_strict_recovery_and_set_aside_without() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--shards", "1", "--fsync", "always"];
    let parked = ("damage-sub", "damage/t");
    let broker = start_with_queued(dir.path(), &flags, parked, &numbered("d", 8)).await;
    // No final snapshot: the journal holds it all.
    broker.crash();
    let (segment, records) = stream_files(dir.path(), "journal-", ".log")
        .into_iter()
        .map(|path| {
            let records = journal_records(&std::fs::read(&path).unwrap());
            (path, records)
        })
        .max_by_key(|(_, records)| records.len())
        .expect("a journal segment");
    assert!(records.len() >= 4, "{segment:?} holds {records:?}");
    // The last payload byte of the second record.
    let bytes = damage(&segment, records[1].end - 1);
    damaged_data_directory_is_refused_or_set_aside(dir.path(), &segment, &bytes).await;
}

/// A snapshot failing its header checksum.
#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_snapshot_is_refused_with_strict_recovery_and_set_aside_without() {
    let dir = tempfile::tempdir().unwrap();
    let parked = ("damage-sub", "damage/t");
    let broker = start_with_queued(dir.path(), &["--shards", "1"], parked, &numbered("d", 1)).await;
    // SIGTERM writes the final snapshot.
    broker.stop();
    let snapshot = stream_files(dir.path(), "snap-", ".snap")
        .pop()
        .expect("a snapshot after SIGTERM");
    // A byte of the header's LSN field, which the header checksum covers.
    let bytes = damage(&snapshot, 20);
    damaged_data_directory_is_refused_or_set_aside(dir.path(), &snapshot, &bytes).await;
}
