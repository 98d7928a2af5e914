//! `start`: the real `mqtt-broker` binary started on a data directory: time until it answers a
//! CONNECT, its memory then, and how long it takes to stop.
//!
//! Why it exists: `restore` stands in for the runtime's shard threads; this is the check that
//! the figures hold for the program itself. A shard accepts clients only once every shard has
//! restored its state and heard the others' subscriptions, so the first CONNACK marks the end
//! of start-up. Stopping (SIGTERM) writes a final snapshot of every shard, so the stop time is
//! dominated by that.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mqtt_broker::protocol::{Decoder, Packet, ProtocolVersion};

use super::build::connect;
use super::Figures;
use crate::loadgen::procfs::memory_kib;

/// How long start-up may take before the run gives up.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Between connection attempts while nothing listens yet.
const RETRY: Duration = Duration::from_millis(5);

pub struct StartPlan {
    pub broker: PathBuf,
    pub dir: PathBuf,
    pub shards: usize,
    /// More arguments for the broker.
    pub broker_args: Vec<String>,
}

pub fn run(plan: &StartPlan) -> io::Result<Figures> {
    let addr = free_addr()?;
    let started = Instant::now();
    let mut child = Command::new(&plan.broker)
        .arg("--data-dir")
        .arg(&plan.dir)
        .arg("--shards")
        .arg(plan.shards.to_string())
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--log-level")
        .arg("warn")
        .args(&plan.broker_args)
        .stdin(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let still_starting = || match child.try_wait()? {
        Some(status) => Err(io::Error::other(format!(
            "the broker exited during start-up: {status}"
        ))),
        None => Ok(()),
    };
    if let Err(error) = retry_connack(addr, START_TIMEOUT, still_starting) {
        let _ = child.kill();
        return Err(error);
    }
    let connected = started.elapsed();
    let (peak_kib, rss_kib) = memory_kib(pid)?;
    let stopping = Instant::now();
    // SAFETY: `pid` is our child, not yet waited for, so the id is still its own.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
    let status = child.wait()?;
    let stopped = stopping.elapsed();

    let mut figures = Figures::default();
    figures.text("command", "start");
    figures.text("dir", plan.dir.display().to_string());
    figures.count("shards", plan.shards as u64);
    figures.time("first_connack_ms", connected);
    figures.count("peak_rss_kib", peak_kib);
    figures.count("rss_kib", rss_kib);
    figures.time("shutdown_ms", stopped);
    figures.text("exit", status.to_string());
    Ok(figures)
}

/// Waits until a broker already started at `addr` answers a CONNECT (for scripts that run the
/// broker themselves); returns how long that took.
pub fn wait_ready(addr: SocketAddr, timeout: Duration) -> io::Result<Duration> {
    let started = Instant::now();
    retry_connack(addr, timeout, || Ok(()))?;
    Ok(started.elapsed())
}

/// Tries a CONNECT until one is answered, `timeout` passes, or `alive` reports an error.
fn retry_connack(
    addr: SocketAddr,
    timeout: Duration,
    mut alive: impl FnMut() -> io::Result<()>,
) -> io::Result<()> {
    let started = Instant::now();
    loop {
        alive()?;
        match connack(addr) {
            Ok(()) => return Ok(()),
            Err(error) if started.elapsed() > timeout => {
                return Err(io::Error::other(format!(
                    "no CONNACK from {addr} within {timeout:?}: {error}"
                )))
            }
            Err(_) => std::thread::sleep(RETRY),
        }
    }
}

/// A port nobody listens on right now.
fn free_addr() -> io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// One clean-session CONNECT, answered by a CONNACK.
fn connack(addr: SocketAddr) -> io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    // Once the listener is bound, connections wait in its backlog until the shards serve, so
    // this one connection is answered as soon as start-up ends.
    stream.set_read_timeout(Some(START_TIMEOUT))?;
    let version = ProtocolVersion::V3_1_1;
    let mut out = BytesMut::new();
    connect(&format!("persist-bench-probe-{}", std::process::id()), true)
        .encode(version, &mut out)
        .map_err(|error| io::Error::other(error.to_string()))?;
    stream.write_all(&out)?;
    let mut decoder = Decoder::client(version, 1024);
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 256];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        match decoder.decode(&mut buf) {
            Ok(Some(Packet::ConnAck(connack))) if !connack.reason_code.is_error() => {
                let _ = stream.write_all(&[0xE0, 0x00]);
                return Ok(());
            }
            Ok(Some(other)) => {
                return Err(io::Error::other(format!(
                    "expected CONNACK, got {:?}",
                    other.packet_type()
                )))
            }
            Ok(None) => continue,
            Err(error) => return Err(io::Error::other(error.to_string())),
        }
    }
}
