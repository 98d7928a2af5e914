//! `mqtt-persist-bench`: how long the broker takes to snapshot and to get back a large
//! persistent state, and how much memory that takes (the binary is `src/bin/mqtt-persist-bench.rs`).
//!
//! Why it exists: restore time is what a restart costs, and it only shows with a realistic amount
//! of state (issue #5: 1 M subscriptions over 100k sessions plus 100k retained messages). The
//! figures must come from the code the broker runs, not from a model of it, so:
//!
//! - [`build`] creates the state by feeding MQTT packets (CONNECT with a persistent session,
//!   SUBSCRIBE, DISCONNECT; retained PUBLISHes) to one broker core per shard, in process
//!   ([`cluster`]), with their journal records appended to a real store. It snapshots every
//!   shard the way a running shard does, timing it, and then writes the rest of the state to
//!   the journal only, so the data directory holds what a broker leaves behind: a snapshot and
//!   a journal after it.
//! - [`restore`] runs `mqtt_broker::server::recover` (the broker's own start-up recovery) and
//!   then, on one thread per shard, what each shard does before it serves: `Broker::restore`
//!   and the exchange of subscription interest between shards. It reports the time of each part
//!   and the process's peak RSS.
//! - [`start`] starts the real `mqtt-broker` binary on the directory and measures the time to
//!   its first CONNACK (a shard serves only once every shard has restored), its memory, and
//!   how long its shutdown (which writes a final snapshot) takes.
//!
//! [`Shape`] says what the state holds; every command derives names from it the same way.

pub mod build;
pub mod cluster;
pub mod restore;
pub mod start;

use std::fmt::Write as _;
use std::time::Duration;

/// The benchmark state: `sessions` persistent sessions of `per_session` subscriptions each, and
/// `retained` retained messages of `payload` bytes.
///
/// Session `i` (client id [`Shape::client_id`]) belongs to site `i / 100` and subscribes to
/// `site/S/device/I/cmd/J` for all but its last two filters (unique, as device command topics
/// are), `site/S/+/alarm` (shared by the site's 100 sessions) and `broadcast/#` (shared by all).
/// Retained message `r` is on `site/S/device/R/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub sessions: u32,
    pub per_session: u32,
    pub retained: u32,
    pub payload: usize,
}

/// Devices per site in the topic names.
const SITE_SIZE: u32 = 100;

impl Shape {
    pub fn client_id(index: u32) -> String {
        format!("persist-bench-{index:07}")
    }

    /// The filters session `index` subscribes to.
    pub fn filters(&self, index: u32) -> Vec<String> {
        let site = index / SITE_SIZE;
        let shared = if self.per_session >= 4 { 2 } else { 0 };
        let mut filters: Vec<String> = (0..self.per_session - shared)
            .map(|j| format!("site/{site}/device/{index}/cmd/{j}"))
            .collect();
        if shared == 2 {
            filters.push(format!("site/{site}/+/alarm"));
            filters.push("broadcast/#".to_string());
        }
        filters
    }

    pub fn retained_topic(index: u32) -> String {
        format!("site/{}/device/{index}/status", index / SITE_SIZE)
    }

    pub fn subscriptions(&self) -> u64 {
        u64::from(self.sessions) * u64::from(self.per_session)
    }
}

/// Lines of `name value` figures, printed as a table or as one JSON object.
#[derive(Debug, Default)]
pub struct Figures {
    rows: Vec<(String, FigureValue)>,
}

#[derive(Debug)]
enum FigureValue {
    Int(u64),
    Millis(f64),
    Text(String),
}

impl Figures {
    pub fn count(&mut self, name: &str, value: u64) {
        self.rows.push((name.into(), FigureValue::Int(value)));
    }

    pub fn time(&mut self, name: &str, value: Duration) {
        self.rows
            .push((name.into(), FigureValue::Millis(value.as_secs_f64() * 1e3)));
    }

    pub fn text(&mut self, name: &str, value: impl Into<String>) {
        self.rows
            .push((name.into(), FigureValue::Text(value.into())));
    }

    pub fn table(&self) -> String {
        let width = self
            .rows
            .iter()
            .map(|(name, _)| name.len())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (name, value) in &self.rows {
            let value = match value {
                FigureValue::Int(n) => n.to_string(),
                FigureValue::Millis(ms) => format!("{ms:.1} ms"),
                FigureValue::Text(text) => text.clone(),
            };
            let _ = writeln!(out, "{name:<width$}  {value}");
        }
        out
    }

    /// One JSON object; times are in milliseconds.
    pub fn json(&self) -> String {
        let map: serde_json::Map<String, serde_json::Value> = self
            .rows
            .iter()
            .map(|(name, value)| {
                let value = match value {
                    FigureValue::Int(n) => serde_json::Value::from(*n),
                    FigureValue::Millis(ms) => serde_json::Value::from((ms * 1e3).round() / 1e3),
                    FigureValue::Text(text) => serde_json::Value::from(text.as_str()),
                };
                (name.clone(), value)
            })
            .collect();
        serde_json::Value::Object(map).to_string()
    }
}

/// User and system CPU time this process has used so far. On a shared machine a wall time
/// says as much about the neighbours as about the code; CPU time much less so.
pub fn cpu_time() -> (Duration, Duration) {
    // SAFETY: `getrusage` fills the struct it is given and has no other effect.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    (time(usage.ru_utime), time(usage.ru_stime))
}

/// Unix time in milliseconds, as the server tells its cores.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_names() {
        let shape = Shape {
            sessions: 1000,
            per_session: 10,
            retained: 10,
            payload: 64,
        };
        let filters = shape.filters(250);
        assert_eq!(filters.len(), 10);
        assert_eq!(filters[0], "site/2/device/250/cmd/0");
        assert_eq!(filters[8], "site/2/+/alarm");
        assert_eq!(filters[9], "broadcast/#");
        assert_eq!(Shape::retained_topic(250), "site/2/device/250/status");
        assert_eq!(shape.subscriptions(), 10_000);
        let few = Shape {
            per_session: 2,
            ..shape
        };
        assert_eq!(
            few.filters(1),
            ["site/0/device/1/cmd/0", "site/0/device/1/cmd/1"]
        );
    }
}
