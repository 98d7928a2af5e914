//! End-to-end tests of the `mqtt-broker-sync` binary: started as a real process on 127.0.0.1,
//! driven by an independent client (rumqttc), and stopped by a signal.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
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
    _data_dir: tempfile::TempDir,
}

impl Broker {
    fn start() -> Broker {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir.path())
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
            _data_dir: data_dir,
        }
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
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
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
    (client, rx)
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
    let mut broker = Broker::start();
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

    broker.terminate();
    let status = wait_for_exit(&mut broker.child, TIMEOUT);
    assert_eq!(
        status.and_then(|status| status.code()),
        Some(0),
        "exit status {status:?}; stderr:\n{}",
        broker.stderr()
    );
    // Shutdown closed the clients' connections rather than leaving them open.
    let closed = tokio::time::timeout(TIMEOUT, async {
        loop {
            match sub_events.recv().await {
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "subscriber still connected after exit");
}

#[test]
fn port_in_use_is_a_one_line_error_and_exit_code_1() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let data_dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["--listen", &addr.to_string(), "--data-dir"])
        .arg(data_dir.path())
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
    assert_eq!(status.and_then(|s| s.code()), Some(1), "stderr:\n{stderr}");
    let error_lines: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("mqtt-broker-sync: "))
        .collect();
    assert_eq!(error_lines.len(), 1, "stderr:\n{stderr}");
    assert!(
        error_lines[0].contains(&addr.to_string()),
        "{}",
        error_lines[0]
    );
}
