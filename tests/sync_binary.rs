//! End-to-end tests of the `mqtt-broker-sync` binary: started as a real process on 127.0.0.1,
//! driven by an independent client (rumqttc), and stopped by a signal; restarted on the same
//! data directory, it still has what it acknowledged.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, MqttOptions, Packet, QoS,
    SubscribeReasonCode,
};
use tokio::sync::mpsc;

const BIN: &str = env!("CARGO_BIN_EXE_mqtt-broker-sync");
const TIMEOUT: Duration = Duration::from_secs(5);

/// The broker process; killed on drop so a failing test leaves nothing behind.
struct Broker {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<Vec<String>>>,
    _data_dir: Option<tempfile::TempDir>,
}

impl Broker {
    /// A broker on a data directory of its own, removed with it.
    fn start() -> Broker {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut broker = Broker::start_in(data_dir.path(), &[]);
        broker._data_dir = Some(data_dir);
        broker
    }

    /// A broker on `data_dir`, which the test keeps to restart on it.
    fn start_in(data_dir: &Path, extra: &[&str]) -> Broker {
        let mut child = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mqtt-broker-sync");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = stderr.clone();
        // Keeps draining after the address is found, so the broker never blocks on a full pipe.
        thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Some(addr) = listening_addr(&line) {
                    let _ = addr_tx.send(addr);
                }
                log.lock().unwrap().push(line);
            }
        });
        let addr = match addr_rx.recv_timeout(TIMEOUT) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "no `listening on` line within {TIMEOUT:?}; stderr:\n{}",
                    stderr.lock().unwrap().join("\n")
                );
            }
        };
        Broker {
            child,
            addr,
            stderr,
            _data_dir: None,
        }
    }

    /// SIGTERM, then a clean exit (after the final snapshot) within the timeout.
    fn stop(mut self) {
        self.terminate();
        let status = wait_for_exit(&mut self.child, TIMEOUT);
        assert_eq!(
            status.and_then(|status| status.code()),
            Some(0),
            "exit status {status:?}; stderr:\n{}",
            self.stderr()
        );
    }

    fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed: {status}");
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `127.0.0.1:PORT` from a log line like `... listening on 127.0.0.1:PORT`.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn wait_for_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

type Events = mpsc::UnboundedReceiver<Result<Event, ConnectionError>>;

/// A connected client whose event loop runs on its own task and reports every event, ending
/// with the first error.
async fn client(addr: SocketAddr, id: &str) -> (AsyncClient, Events) {
    let (client, events, _) = client_with(addr, id, true).await;
    (client, events)
}

/// [`client`] with the clean session flag given; also returns CONNACK's session present.
async fn client_with(addr: SocketAddr, id: &str, clean: bool) -> (AsyncClient, Events, bool) {
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_session(clean);
    let (client, mut event_loop) = AsyncClient::new(options, 64);
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let event = event_loop.poll().await;
            let failed = event.is_err();
            if tx.send(event).is_err() || failed {
                return;
            }
        }
    });
    let connack = next_incoming(&mut rx, id, |packet| match packet {
        Packet::ConnAck(connack) => Some(connack),
        _ => None,
    })
    .await;
    assert_eq!(connack.code, ConnectReturnCode::Success, "{id}");
    (client, rx, connack.session_present)
}

/// The first incoming packet `pick` accepts, skipping others; fails on error or timeout.
async fn next_incoming<T>(
    events: &mut Events,
    what: &str,
    mut pick: impl FnMut(Packet) -> Option<T>,
) -> T {
    let wait = async {
        loop {
            match events.recv().await {
                Some(Ok(Event::Incoming(packet))) => {
                    if let Some(found) = pick(packet) {
                        return found;
                    }
                }
                Some(Ok(Event::Outgoing(_))) => {}
                Some(Err(error)) => panic!("{what}: connection failed: {error}"),
                None => panic!("{what}: event loop ended"),
            }
        }
    };
    tokio::time::timeout(TIMEOUT, wait)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {TIMEOUT:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_clients_publish_at_every_qos_then_sigterm_exits_zero() {
    let broker = Broker::start();
    let addr = broker.addr;

    // Six connections open at once: a build with a pool of five workers would hang here.
    let mut publishers = Vec::new();
    for i in 0..5 {
        publishers.push(client(addr, &format!("sync-pub-{i}")).await);
    }
    let (subscriber, mut sub_events) = client(addr, "sync-sub").await;

    subscriber
        .subscribe("sync/+/data", QoS::ExactlyOnce)
        .await
        .unwrap();
    let codes = next_incoming(&mut sub_events, "suback", |packet| match packet {
        Packet::SubAck(suback) => Some(suback.return_codes),
        _ => None,
    })
    .await;
    assert_eq!(codes, [SubscribeReasonCode::Success(QoS::ExactlyOnce)]);

    let qos_of = |i: usize| [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][i % 3];
    for (i, (publisher, events)) in publishers.iter_mut().enumerate() {
        let qos = qos_of(i);
        publisher
            .publish(format!("sync/{i}/data"), qos, false, format!("payload {i}"))
            .await
            .unwrap();
        // The publisher's side of the handshake completes: PUBACK for 1, PUBCOMP for 2.
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                next_incoming(events, "puback", |packet| {
                    matches!(packet, Packet::PubAck(_)).then_some(())
                })
                .await
            }
            QoS::ExactlyOnce => {
                next_incoming(events, "pubcomp", |packet| {
                    matches!(packet, Packet::PubComp(_)).then_some(())
                })
                .await
            }
        }
    }

    let mut received = Vec::new();
    while received.len() < publishers.len() {
        let publish = next_incoming(&mut sub_events, "delivery", |packet| match packet {
            Packet::Publish(publish) => Some(publish),
            _ => None,
        })
        .await;
        received.push((publish.topic.clone(), publish.payload.to_vec(), publish.qos));
    }
    received.sort_by(|a, b| a.0.cmp(&b.0));
    let expected: Vec<_> = (0..publishers.len())
        .map(|i| {
            (
                format!("sync/{i}/data"),
                format!("payload {i}").into_bytes(),
                qos_of(i),
            )
        })
        .collect();
    assert_eq!(received, expected);

    // SIGTERM: exit status 0 within the timeout (`stop` asserts both), after which the port is
    // closed: nothing is left listening.
    broker.stop();
    let refused = std::net::TcpStream::connect_timeout(&addr, TIMEOUT);
    assert!(
        refused
            .as_ref()
            .is_err_and(|error| error.kind() == std::io::ErrorKind::ConnectionRefused),
        "{addr} after the broker exited: {refused:?}"
    );
}

/// Runs the broker with `--listen LISTEN --data-dir DIR` until it exits (killed after the
/// timeout): its exit code and the error lines it printed.
fn run_until_exit(listen: &str, data_dir: &Path) -> (Option<i32>, Vec<String>) {
    let mut child = Command::new(BIN)
        .args(["--listen", listen, "--data-dir"])
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mqtt-broker-sync");
    let status = wait_for_exit(&mut child, TIMEOUT);
    if status.is_none() {
        let _ = child.kill();
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let error_lines = stderr
        .lines()
        .filter(|line| line.starts_with("mqtt-broker-sync: "))
        .map(str::to_owned)
        .collect();
    (status.and_then(|s| s.code()), error_lines)
}

#[test]
fn port_in_use_is_a_one_line_error_and_exit_code_1() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let data_dir = tempfile::tempdir().unwrap();
    let (code, error_lines) = run_until_exit(&addr.to_string(), data_dir.path());
    assert_eq!(code, Some(1), "{error_lines:?}");
    assert_eq!(error_lines.len(), 1, "{error_lines:?}");
    assert!(
        error_lines[0].contains(&addr.to_string()),
        "{}",
        error_lines[0]
    );
}

#[test]
fn a_second_broker_on_the_same_data_directory_is_refused() {
    let data_dir = tempfile::tempdir().unwrap();
    let first = Broker::start_in(data_dir.path(), &[]);
    let (code, error_lines) = run_until_exit("127.0.0.1:0", data_dir.path());
    assert_eq!(code, Some(1), "{error_lines:?}");
    assert_eq!(error_lines.len(), 1, "{error_lines:?}");
    assert!(
        error_lines[0].contains("is in use by another broker"),
        "{}",
        error_lines[0]
    );
    first.stop();
}

/// Payloads of the PUBLISHes received, the first within `TIMEOUT`, then until none arrives for
/// a while.
async fn drain(events: &mut Events) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let wait = if got.is_empty() {
            TIMEOUT
        } else {
            Duration::from_millis(700)
        };
        match tokio::time::timeout(wait, events.recv()).await {
            Ok(Some(Ok(Event::Incoming(Packet::Publish(publish))))) => {
                got.push(String::from_utf8_lossy(&publish.payload).into_owned())
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(error))) => panic!("connection failed: {error}"),
            Ok(None) | Err(_) => return got,
        }
    }
}

/// Waits until the event loop ends, so the broker has seen the client leave.
async fn closed(events: &mut Events) {
    let ended = tokio::time::timeout(TIMEOUT, async {
        while let Some(Ok(_)) = events.recv().await {}
    })
    .await;
    assert!(ended.is_ok(), "the connection did not close");
}

/// Publishes at QoS 1 and waits for the PUBACK.
async fn publish_acked(
    client: &AsyncClient,
    events: &mut Events,
    topic: &str,
    payload: &str,
    retain: bool,
) {
    client
        .publish(topic, QoS::AtLeastOnce, retain, payload.as_bytes().to_vec())
        .await
        .unwrap();
    next_incoming(events, "puback", |packet| {
        matches!(packet, Packet::PubAck(_)).then_some(())
    })
    .await;
}

/// A persistent session subscribed to `filter` at QoS 1, then disconnected.
async fn subscribe_and_leave(addr: SocketAddr, id: &str, filter: &str) {
    let (client, mut events, _) = client_with(addr, id, false).await;
    client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    next_incoming(&mut events, "suback", |packet| {
        matches!(packet, Packet::SubAck(_)).then_some(())
    })
    .await;
    client.disconnect().await.unwrap();
    closed(&mut events).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_and_a_retained_message_survive_a_sigterm_restart() {
    let data_dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(data_dir.path(), &[]);
    subscribe_and_leave(broker.addr, "sync-keeper", "keep/t").await;
    let (publisher, mut events) = client(broker.addr, "sync-writer").await;
    publish_acked(&publisher, &mut events, "keep/r", "retained", true).await;
    for i in 0..3 {
        publish_acked(&publisher, &mut events, "keep/t", &format!("m{i}"), false).await;
    }
    broker.stop();

    let broker = Broker::start_in(data_dir.path(), &[]);
    let (_subscriber, mut sub_events, present) =
        client_with(broker.addr, "sync-keeper", false).await;
    assert!(present, "{}", broker.stderr());
    assert_eq!(
        drain(&mut sub_events).await,
        ["m0", "m1", "m2"],
        "{}",
        broker.stderr()
    );
    // The subscription came back, once.
    let (publisher, mut events) = client(broker.addr, "sync-writer").await;
    publish_acked(&publisher, &mut events, "keep/t", "live", false).await;
    assert_eq!(drain(&mut sub_events).await, ["live"]);
    let (late, mut late_events) = client(broker.addr, "sync-late").await;
    late.subscribe("keep/r", QoS::AtLeastOnce).await.unwrap();
    let retained = next_incoming(&mut late_events, "retained", |packet| match packet {
        Packet::Publish(publish) => Some(publish),
        _ => None,
    })
    .await;
    assert_eq!(&retained.payload[..], b"retained");
    assert!(retained.retain);
    broker.stop();
}
