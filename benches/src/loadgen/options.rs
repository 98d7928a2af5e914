//! The command line, and its checks and scenario-dependent defaults.
//!
//! Why it exists: the flags are the tool's whole interface (compare.sh drives it with nothing
//! else), so every value is checked here, once, and turned into a [`Plan`] that the scenarios
//! run without further validation.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use argh::FromArgs;
use mqtt_broker::protocol::{ProtocolVersion, QoS};

use super::stamp::STAMP_LEN;

/// mqtt-bench: MQTT broker load generator. Pub/sub scenarios measure delivered throughput,
/// losses, duplicates and end-to-end latency; connect-storm measures connects/s; idle measures
/// the broker's memory per idle connection; retained measures how a subscriber to `#` is sent
/// a large retained set.
#[derive(FromArgs, Debug)]
pub struct Options {
    /// pairs | fan-in | fan-out | shared | connect-storm | idle | retained (default pairs)
    #[argh(option, default = "Scenario::Pairs")]
    pub scenario: Scenario,
    /// broker host (default 127.0.0.1)
    #[argh(option, default = "String::from(\"127.0.0.1\")")]
    pub host: String,
    /// broker port (default 1883)
    #[argh(option, default = "1883")]
    pub port: u16,
    /// speak TLS to the broker, trusting the certificate authorities in this PEM file; the
    /// broker's certificate must name --host (default: plain TCP)
    #[argh(option)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// publishers (default 4; fan-out 1)
    #[argh(option)]
    pub publishers: Option<u32>,
    /// subscribers (default: pairs as many as publishers, fan-in 1, fan-out 16, shared 4)
    #[argh(option)]
    pub subscribers: Option<u32>,
    /// quality of service of publishes and subscriptions: 0, 1 or 2 (retained: 0 or 1;
    /// default 0)
    #[argh(option, default = "0")]
    pub qos: u8,
    /// payload bytes, 16 to 65536 (default 64)
    #[argh(option, default = "64")]
    pub payload: usize,
    /// seconds of measurement (default 10); idle: seconds to hold the connections
    #[argh(option, default = "10.0")]
    pub duration: f64,
    /// seconds of warm-up before measuring (default 2)
    #[argh(option, default = "2.0")]
    pub warmup: f64,
    /// at most this many seconds after the window for late messages and acks (default 3)
    #[argh(option, default = "3.0")]
    pub drain: f64,
    /// most unacknowledged QoS 1/2 messages per publisher (default 64)
    #[argh(option, default = "64")]
    pub window: usize,
    /// open loop: total messages per second over all publishers; absent: closed loop
    #[argh(option)]
    pub rate: Option<f64>,
    /// protocol version: 3.1.1 or 5 (default 3.1.1)
    #[argh(option, default = "VersionArg(ProtocolVersion::V3_1_1)")]
    pub mqtt_version: VersionArg,
    /// extra subscribers, subscribed to every filter of the others at the same QoS, that never
    /// read their socket, so the broker's send buffers for them only fill (default 0)
    #[argh(option, default = "0")]
    pub stalled_subscribers: u32,
    /// subscribers keep their session when they disconnect (3.x clean session 0, v5 a session
    /// expiry of an hour), so a broker with storage journals what it queues for them; each
    /// session is ended by a clean reconnect after the run
    #[argh(switch)]
    pub persistent: bool,
    /// print one JSON line on stdout instead of the table
    #[argh(switch)]
    pub json: bool,
    /// write the latency percentile curve to this SVG file
    #[argh(option)]
    pub plot: Option<PathBuf>,
    /// retained messages the retained scenario stores before its subscriber subscribes to `#`
    /// (default 100000)
    #[argh(option, default = "100_000")]
    pub messages: usize,
    /// connections for connect-storm and idle (default 1000)
    #[argh(option, default = "1000")]
    pub connections: usize,
    /// handshakes in progress at once for connect-storm and idle (default 64)
    #[argh(option, default = "64")]
    pub concurrency: usize,
    /// the broker's process id: idle reads its memory, pub/sub scenarios its CPU time
    #[argh(option)]
    pub broker_pid: Option<u32>,
    /// free-form label copied into the output (compare.sh names the broker with it)
    #[argh(option)]
    pub label: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Pairs,
    FanIn,
    FanOut,
    Shared,
    ConnectStorm,
    Idle,
    Retained,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Pairs => "pairs",
            Scenario::FanIn => "fan-in",
            Scenario::FanOut => "fan-out",
            Scenario::Shared => "shared",
            Scenario::ConnectStorm => "connect-storm",
            Scenario::Idle => "idle",
            Scenario::Retained => "retained",
        }
    }
}

impl FromStr for Scenario {
    type Err = String;

    fn from_str(value: &str) -> Result<Scenario, String> {
        Ok(match value {
            "pairs" => Scenario::Pairs,
            "fan-in" => Scenario::FanIn,
            "fan-out" => Scenario::FanOut,
            "shared" => Scenario::Shared,
            "connect-storm" => Scenario::ConnectStorm,
            "idle" => Scenario::Idle,
            "retained" => Scenario::Retained,
            other => {
                return Err(format!(
                    "unknown scenario {other:?}: pairs, fan-in, fan-out, shared, connect-storm, \
                     idle, retained"
                ))
            }
        })
    }
}

/// `--mqtt-version`: "3.1.1" (or "4") and "5" (or "5.0"); "3.1" for the old protocol name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionArg(pub ProtocolVersion);

impl FromStr for VersionArg {
    type Err = String;

    fn from_str(value: &str) -> Result<VersionArg, String> {
        Ok(VersionArg(match value {
            "3.1.1" | "4" => ProtocolVersion::V3_1_1,
            "5" | "5.0" => ProtocolVersion::V5,
            "3.1" | "3" => ProtocolVersion::V3_1,
            other => return Err(format!("unknown MQTT version {other:?}: 3.1.1 or 5")),
        }))
    }
}

/// How a version is printed in reports.
pub fn version_name(version: ProtocolVersion) -> &'static str {
    match version {
        ProtocolVersion::V3_1 => "3.1",
        ProtocolVersion::V3_1_1 => "3.1.1",
        ProtocolVersion::V5 => "5",
    }
}

/// Everything a run needs, checked.
#[derive(Debug, Clone)]
pub struct Plan {
    pub scenario: Scenario,
    pub addr: SocketAddr,
    pub publishers: u32,
    pub subscribers: u32,
    /// Subscribers that never read.
    pub stalled_subscribers: u32,
    pub qos: QoS,
    pub payload: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub drain: Duration,
    pub window: usize,
    pub rate: Option<f64>,
    pub version: ProtocolVersion,
    /// Subscribers have persistent sessions.
    pub persistent: bool,
    /// Retained messages stored by the retained scenario.
    pub messages: usize,
    pub connections: usize,
    pub concurrency: usize,
    pub broker_pid: Option<u32>,
    pub label: Option<String>,
}

#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn seconds(name: &str, value: f64, allow_zero: bool) -> Result<Duration, UsageError> {
    if !value.is_finite() || value < 0.0 || (!allow_zero && value == 0.0) || value > 86_400.0 {
        return Err(UsageError(format!("--{name} {value}: out of range")));
    }
    Ok(Duration::from_secs_f64(value))
}

impl Options {
    pub fn plan(&self) -> Result<Plan, UsageError> {
        let fail = |message: String| Err(UsageError(message));
        let (publishers, subscribers) = match self.scenario {
            Scenario::Pairs => {
                let n = self.publishers.or(self.subscribers).unwrap_or(4);
                let m = self.subscribers.unwrap_or(n);
                if n != m {
                    return fail(format!(
                        "pairs needs as many subscribers as publishers, not {n} and {m}"
                    ));
                }
                (n, m)
            }
            Scenario::FanIn => (self.publishers.unwrap_or(4), self.subscribers.unwrap_or(1)),
            Scenario::FanOut => (self.publishers.unwrap_or(1), self.subscribers.unwrap_or(16)),
            Scenario::Shared => (self.publishers.unwrap_or(4), self.subscribers.unwrap_or(4)),
            Scenario::Retained => (1, 1),
            Scenario::ConnectStorm | Scenario::Idle => (0, 0),
        };
        match self.scenario {
            Scenario::FanIn if subscribers != 1 => {
                return fail(format!("fan-in has 1 subscriber, not {subscribers}"))
            }
            Scenario::FanOut if publishers != 1 => {
                return fail(format!("fan-out has 1 publisher, not {publishers}"))
            }
            Scenario::ConnectStorm | Scenario::Idle if self.stalled_subscribers > 0 => {
                return fail("--stalled-subscribers needs a pub/sub scenario".into())
            }
            Scenario::ConnectStorm | Scenario::Idle => {}
            _ if publishers == 0 || subscribers == 0 => {
                return fail("at least one publisher and one subscriber".into())
            }
            _ => {}
        }
        let Some(qos) = QoS::from_u8(self.qos) else {
            return fail(format!("--qos {}: 0, 1 or 2", self.qos));
        };
        if !(STAMP_LEN..=65536).contains(&self.payload) {
            return fail(format!(
                "--payload {}: {STAMP_LEN} to 65536 bytes",
                self.payload
            ));
        }
        if !(1..=65535).contains(&self.window) {
            return fail(format!("--window {}: 1 to 65535", self.window));
        }
        if let Some(rate) = self.rate {
            if !rate.is_finite() || rate <= 0.0 {
                return fail(format!("--rate {rate}: must be positive"));
            }
        }
        if self.scenario == Scenario::Retained && qos == QoS::ExactlyOnce {
            return fail("retained runs at --qos 0 or 1".into());
        }
        if self.messages == 0 {
            return fail("--messages must be at least 1".into());
        }
        if self.scenario == Scenario::Idle && self.broker_pid.is_none() {
            return fail("idle needs --broker-pid to read the broker's memory".into());
        }
        if self.connections == 0 {
            return fail("--connections must be at least 1".into());
        }
        if let Some(ca) = &self.tls_ca {
            super::conn::use_tls(ca, &self.host)
                .map_err(|error| UsageError(format!("--tls-ca {error}")))?;
        }
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|error| UsageError(format!("--host {}: {error}", self.host)))?
            .next()
            .ok_or_else(|| UsageError(format!("--host {}: no address", self.host)))?;
        Ok(Plan {
            scenario: self.scenario,
            addr,
            publishers,
            subscribers,
            stalled_subscribers: self.stalled_subscribers,
            qos,
            payload: self.payload,
            duration: seconds("duration", self.duration, false)?,
            warmup: seconds("warmup", self.warmup, true)?,
            drain: seconds("drain", self.drain, true)?,
            window: self.window,
            rate: self.rate,
            version: self.mqtt_version.0,
            persistent: self.persistent,
            messages: self.messages,
            connections: self.connections,
            concurrency: self.concurrency.max(1),
            broker_pid: self.broker_pid,
            label: self.label.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(args: &[&str]) -> Result<Plan, UsageError> {
        Options::from_args(&["mqtt-bench"], args)
            .expect("arguments parse")
            .plan()
    }

    #[test]
    fn scenario_defaults() {
        let p = plan(&["--scenario", "fan-out"]).unwrap();
        assert_eq!((p.publishers, p.subscribers), (1, 16));
        let p = plan(&["--scenario", "pairs", "--publishers", "8"]).unwrap();
        assert_eq!((p.publishers, p.subscribers), (8, 8));
        let p = plan(&["--scenario", "fan-in"]).unwrap();
        assert_eq!((p.publishers, p.subscribers), (4, 1));
        let p = plan(&["--mqtt-version", "5", "--qos", "2"]).unwrap();
        assert_eq!((p.version, p.qos), (ProtocolVersion::V5, QoS::ExactlyOnce));
        assert!(!p.persistent);
        assert!(plan(&["--persistent"]).unwrap().persistent);
        let p = plan(&["--scenario", "retained", "--qos", "1"]).unwrap();
        assert_eq!((p.publishers, p.subscribers, p.messages), (1, 1, 100_000));
    }

    #[test]
    fn rejects_what_cannot_run() {
        assert!(plan(&["--payload", "15"]).is_err());
        assert!(plan(&["--payload", "65537"]).is_err());
        assert!(plan(&["--qos", "3"]).is_err());
        assert!(plan(&[
            "--scenario",
            "pairs",
            "--publishers",
            "2",
            "--subscribers",
            "3"
        ])
        .is_err());
        assert!(plan(&["--scenario", "fan-out", "--publishers", "2"]).is_err());
        assert!(plan(&["--scenario", "idle"]).is_err());
        assert!(plan(&["--scenario", "retained", "--qos", "2"]).is_err());
        assert!(plan(&["--scenario", "retained", "--messages", "0"]).is_err());
        assert!(plan(&["--scenario", "connect-storm", "--stalled-subscribers", "1"]).is_err());
        assert!(plan(&["--rate", "0"]).is_err());
        assert!(plan(&["--duration", "0"]).is_err());
        assert!(Options::from_args(&["mqtt-bench"], &["--scenario", "nope"]).is_err());
    }
}
