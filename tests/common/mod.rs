//! Shared harness of the end-to-end tests: runs the real broker binaries on ephemeral
//! `127.0.0.1` ports and tells which runtimes this machine can run.
//!
//! Every test binary under `tests/` compiles this module, and each uses only part of it.
#![allow(dead_code)]

pub mod tls;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a broker may take to log its `listening on` line.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Which build of the broker to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    /// `mqtt-broker`: the sharded thread-per-core build.
    Async,
    /// `mqtt-broker-async`: the same program under the original deployment guide's name.
    AsyncAlias,
    /// `mqtt-broker-sync`: the blocking build, when this build has it.
    Sync,
}

impl Binary {
    /// The path Cargo built this binary at, if it built it.
    pub fn path(self) -> Option<&'static str> {
        match self {
            Binary::Async => Some(env!("CARGO_BIN_EXE_mqtt-broker")),
            Binary::AsyncAlias => Some(env!("CARGO_BIN_EXE_mqtt-broker-async")),
            Binary::Sync => Some(env!("CARGO_BIN_EXE_mqtt-broker-sync")),
        }
    }
}

/// A running broker on `127.0.0.1:port`, killed (and its data directory removed) on drop.
pub struct Broker {
    child: Child,
    pub addr: SocketAddr,
    pub port: u16,
    /// What was asked with `--runtime`, or "sync".
    pub runtime: String,
    stderr: Arc<Mutex<String>>,
    _data_dir: tempfile::TempDir,
}

impl Broker {
    /// Starts `mqtt-broker --runtime RUNTIME --shards 2 EXTRA...`, panicking with its output if
    /// it does not start.
    pub fn start(runtime: &str, extra: &[&str]) -> Broker {
        let mut args = vec!["--runtime", runtime, "--shards", "2"];
        args.extend_from_slice(extra);
        Broker::try_start(Binary::Async, &args)
            .unwrap_or_else(|error| panic!("broker (--runtime {runtime}) did not start: {error}"))
            .with_runtime(runtime)
    }

    /// Starts `binary ARGS... --listen 127.0.0.1:0 --data-dir <tempdir> --log-level info` (without
    /// `--listen` when ARGS give a `--config` file, whose listeners then serve) and waits for its
    /// `listening on` line; the error carries everything it printed.
    pub fn try_start(binary: Binary, args: &[&str]) -> Result<Broker, String> {
        let path = binary
            .path()
            .ok_or_else(|| format!("this build has no {binary:?} broker binary"))?;
        let data_dir = tempfile::tempdir().map_err(|e| format!("cannot create a tempdir: {e}"))?;
        let listen: &[&str] = if args.contains(&"--config") {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        let mut child = Command::new(path)
            .args(args)
            .args(listen)
            .arg("--data-dir")
            .arg(data_dir.path())
            .arg("--log-level")
            .arg("info")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {path}: {e}"))?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let (port_tx, port_rx) = mpsc::channel();
        let pipe = child.stderr.take().expect("stderr is piped");
        let buffer = stderr.clone();
        std::thread::spawn(move || {
            let mut port_tx = Some(port_tx);
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = listening_port(&line) {
                    if let Some(tx) = port_tx.take() {
                        let _ = tx.send(port);
                    }
                }
                let mut buffer = buffer.lock().unwrap();
                buffer.push_str(&line);
                buffer.push('\n');
            }
            // Dropping `port_tx` here tells the waiting side that the broker closed stderr.
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let port = loop {
            match port_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(port) => break port,
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    if let Ok(Some(status)) = child.try_wait() {
                        // Give the reader a moment to collect the last lines.
                        std::thread::sleep(Duration::from_millis(50));
                        return Err(format!(
                            "exited with {status} before listening; stderr:\n{}",
                            stderr.lock().unwrap()
                        ));
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "no `listening on 127.0.0.1:PORT` line within {START_TIMEOUT:?}; stderr:\n{}",
                        stderr.lock().unwrap()
                    ));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                    return Err(format!(
                        "closed stderr ({status}) before listening; stderr:\n{}",
                        stderr.lock().unwrap()
                    ));
                }
            }
        };
        Ok(Broker {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            port,
            runtime: match binary {
                Binary::Async | Binary::AsyncAlias => "auto".into(),
                Binary::Sync => "sync".into(),
            },
            stderr,
            _data_dir: data_dir,
        })
    }

    fn with_runtime(mut self, runtime: &str) -> Broker {
        self.runtime = runtime.into();
        self
    }

    /// Everything the broker wrote to stderr so far.
    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits up to `timeout` for a line of the log that contains every one of `parts`.
    pub fn wait_for_log(&self, parts: &[&str], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .logs()
                .lines()
                .any(|line| parts.iter().all(|part| line.contains(part)));
            if found {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Panics with the logs if the broker exited or logged a panic.
    pub fn assert_healthy(&mut self) {
        let running = self.is_running();
        let logs = self.logs();
        assert!(
            running && !logs.contains("panicked"),
            "broker ({}) unhealthy: running={running}; stderr:\n{logs}",
            self.runtime
        );
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill(1)");
        assert!(sent.success(), "kill -TERM failed");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- broker ({}) stderr ----\n{}",
                self.runtime,
                self.stderr.lock().unwrap()
            );
        }
    }
}

/// The port of a `... listening on 127.0.0.1:PORT` log line.
fn listening_port(line: &str) -> Option<u16> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    // Text logs end the line with the address, JSON logs close the message's string after it.
    let addr = rest.split(|c: char| c.is_whitespace() || c == '"').next()?;
    let addr = addr.trim_matches(',');
    addr.parse::<SocketAddr>().ok().map(|addr| addr.port())
}

/// The runtimes every end-to-end test runs on: `io-uring` when it works on this machine, then
/// `epoll` and `tokio`, and `glommio` when this build has it (`--features glommio`) and io_uring
/// works. Each test starts its broker with `--shards 2`, so that traffic crosses shards.
pub fn runtimes() -> Vec<&'static str> {
    let mut list = Vec::new();
    if io_uring_available() {
        list.push("io-uring");
    }
    list.push("epoll");
    list.push("tokio");
    if cfg!(feature = "glommio") && io_uring_available() {
        list.push("glommio");
    }
    list
}

/// Set by a run that knows this machine has no io_uring (`.ci/test-all.sh` probes and says so):
/// only then are the io-uring and glommio cases skipped rather than failed.
pub const WITHOUT_IO_URING: &str = "MQTT_BROKER_TESTS_WITHOUT_IO_URING";

/// Whether `mqtt-broker --runtime io-uring` starts here; probed once per test binary. A broker
/// that refuses io_uring (seccomp, `kernel.io_uring_disabled`) exits with an io_uring error: that
/// means "not available", which fails the io-uring cases unless the run said it expects it
/// (`WITHOUT_IO_URING`), so that a case that did not run is never counted as passed unseen. Any
/// other failure is a real one and panics.
pub fn io_uring_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        match Broker::try_start(Binary::Async, &["--runtime", "io-uring", "--shards", "1"]) {
            Ok(_broker) => true,
            Err(error) if error.contains("io_uring") || error.contains("io-uring") => {
                assert!(
                    std::env::var_os(WITHOUT_IO_URING).is_some(),
                    "io_uring is unavailable on this machine ({error}); set \
                     {WITHOUT_IO_URING}=1 to run without its cases (.ci/test-all.sh probes and \
                     does so, and says which runtimes ran)"
                );
                eprintln!("SKIPPED: io_uring is unavailable here ({WITHOUT_IO_URING} is set)");
                false
            }
            Err(error) => panic!("probing --runtime io-uring failed: {error}"),
        }
    })
}

/// A broker for `runtime` with `--shards 2`, or `None` when `runtime` needs io_uring
/// (io-uring, glommio), this machine cannot run it, and the run said it expects that (see
/// `io_uring_available`).
pub fn broker_for(runtime: &str, extra: &[&str]) -> Option<Broker> {
    if matches!(runtime, "io-uring" | "glommio") && !io_uring_available() {
        eprintln!("SKIPPED ({runtime}): io_uring is not available on this machine");
        return None;
    }
    Some(Broker::start(runtime, extra))
}

/// A client id or topic part unique within this test process.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id() % 100_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// An MQTT 5 QoS 1 will (not retained) on `topic`, with a Will Delay Interval of `delay`
/// seconds if given: what rumqttc's `MqttOptions::set_last_will` takes.
pub fn v5_will(
    topic: &str,
    payload: &[u8],
    delay: Option<u32>,
) -> rumqttc::v5::mqttbytes::v5::LastWill {
    use rumqttc::v5::mqttbytes::v5::{LastWill, LastWillProperties};
    let properties = delay.map(|delay| LastWillProperties {
        delay_interval: Some(delay),
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        user_properties: Vec::new(),
    });
    LastWill::new(
        topic,
        payload.to_vec(),
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        false,
        properties,
    )
}

/// What the README says runs every test, installing the client tools they need.
pub const README_TEST_COMMAND: &str = "bash .ci/test-all.sh";
