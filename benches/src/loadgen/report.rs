//! The figures a run ends with, as a table for people and one JSON line for scripts.
//!
//! Why it exists: compare.sh and anyone reading RESULTS.md must see the same numbers, so each
//! result type renders both forms from one struct, with the same field names.

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    /// From a histogram of nanoseconds.
    pub fn from_ns(histogram: &Histogram<u64>) -> Percentiles {
        if histogram.is_empty() {
            return Percentiles::default();
        }
        let us = |ns: u64| ns as f64 / 1e3;
        Percentiles {
            count: histogram.len(),
            p50: us(histogram.value_at_quantile(0.50)),
            p90: us(histogram.value_at_quantile(0.90)),
            p99: us(histogram.value_at_quantile(0.99)),
            p999: us(histogram.value_at_quantile(0.999)),
            max: us(histogram.max()),
            mean: histogram.mean() / 1e3,
        }
    }

    fn insert_json(&self, object: &mut serde_json::Map<String, Value>) {
        object.insert("latency_count".into(), json!(self.count));
        for (key, value) in [
            ("p50_us", self.p50),
            ("p90_us", self.p90),
            ("p99_us", self.p99),
            ("p999_us", self.p999),
            ("max_us", self.max),
            ("mean_us", self.mean),
        ] {
            object.insert(key.into(), json!(round1(value)));
        }
    }
}

fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// Result of a pairs, fan-in, fan-out or shared run.
#[derive(Debug, Clone)]
pub struct PubSubSummary {
    pub label: Option<String>,
    pub scenario: &'static str,
    pub version: &'static str,
    /// Subscribers had persistent sessions.
    pub persistent: bool,
    pub qos: u8,
    pub payload: usize,
    pub publishers: u32,
    pub subscribers: u32,
    /// Subscribers that never read, on top of `subscribers`.
    pub stalled_subscribers: u32,
    /// Open-loop total rate, or `None` for closed loop.
    pub rate: Option<f64>,
    pub window: usize,
    pub duration_s: f64,
    /// Messages meant to be sent inside the window.
    pub sent: u64,
    /// Deliveries those should have produced (sent × subscribers per message).
    pub expected: u64,
    /// Deliveries received inside the window.
    pub delivered: u64,
    pub delivered_bytes: u64,
    /// Sent in the window and skipped over (a later message of the same publisher arrived).
    pub lost: u64,
    /// Sent in the window and never received, with nothing later from that publisher either:
    /// still queued when the drain ended, or dropped at the very end.
    pub undelivered: u64,
    pub dup: u64,
    pub late: u64,
    /// Out-of-order arrivals in a subscriber's stream; `None` for shared groups, whose members
    /// interleave by design.
    pub reordered: Option<u64>,
    pub unexpected: u64,
    pub malformed: u64,
    pub unacked: u64,
    pub latency: Percentiles,
    /// CPU used inside the window, in % of one core.
    pub broker_cpu_pct: Option<f64>,
    pub bench_cpu_pct: Option<f64>,
}

impl PubSubSummary {
    pub fn sent_per_s(&self) -> f64 {
        self.sent as f64 / self.duration_s
    }

    pub fn delivered_per_s(&self) -> f64 {
        self.delivered as f64 / self.duration_s
    }

    /// Payload megabytes (10^6 bytes) delivered per second.
    pub fn delivered_mb_per_s(&self) -> f64 {
        self.delivered_bytes as f64 / 1e6 / self.duration_s
    }

    pub fn json(&self) -> Value {
        let mut object = serde_json::Map::new();
        let mut put = |key: &str, value: Value| {
            object.insert(key.to_string(), value);
        };
        put("label", json!(self.label));
        put("scenario", json!(self.scenario));
        put("mqtt_version", json!(self.version));
        put("persistent", json!(self.persistent));
        put("qos", json!(self.qos));
        put("payload", json!(self.payload));
        put("publishers", json!(self.publishers));
        put("subscribers", json!(self.subscribers));
        put("stalled_subscribers", json!(self.stalled_subscribers));
        put(
            "mode",
            json!(if self.rate.is_some() {
                "open"
            } else {
                "closed"
            }),
        );
        put("rate", json!(self.rate));
        put("window", json!(self.window));
        put("duration_s", json!(self.duration_s));
        put("sent", json!(self.sent));
        put("sent_per_s", json!(self.sent_per_s().round()));
        put("expected", json!(self.expected));
        put("delivered", json!(self.delivered));
        put("delivered_per_s", json!(self.delivered_per_s().round()));
        put(
            "delivered_mb_per_s",
            json!((self.delivered_mb_per_s() * 1000.0).round() / 1000.0),
        );
        put("lost", json!(self.lost));
        put("undelivered", json!(self.undelivered));
        put("dup", json!(self.dup));
        put("late", json!(self.late));
        put("reordered", json!(self.reordered));
        put("unexpected", json!(self.unexpected));
        put("malformed", json!(self.malformed));
        put("unacked", json!(self.unacked));
        put("broker_cpu_pct", json!(self.broker_cpu_pct.map(round1)));
        put("bench_cpu_pct", json!(self.bench_cpu_pct.map(round1)));
        self.latency.insert_json(&mut object);
        Value::Object(object)
    }

    pub fn table(&self) -> String {
        let header = format!(
            "{:<9} {:<5} {:>3} {:>7} {:>7} {:>10} {:>10} {:>7} {:>6} {:>7} {:>5} {:>7} {:>8} {:>8} {:>8} {:>9} {:>9}",
            "scenario", "mqtt", "qos", "payload", "pub/sub", "sent/s", "deliv/s", "MB/s",
            "lost", "undeliv", "dup", "late", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "max µs",
        );
        let row = format!(
            "{:<9} {:<5} {:>3} {:>7} {:>7} {:>10.0} {:>10.0} {:>7.2} {:>6} {:>7} {:>5} {:>7} {:>8.1} {:>8.1} {:>8.1} {:>9.1} {:>9.1}",
            self.scenario,
            self.version,
            self.qos,
            self.payload,
            format!("{}/{}", self.publishers, self.subscribers),
            self.sent_per_s(),
            self.delivered_per_s(),
            self.delivered_mb_per_s(),
            self.lost,
            self.undelivered,
            self.dup,
            self.late,
            self.latency.p50,
            self.latency.p90,
            self.latency.p99,
            self.latency.p999,
            self.latency.max,
        );
        let mode = match self.rate {
            Some(rate) => format!("open loop at {rate} msg/s"),
            None => "closed loop".to_string(),
        };
        let mode = if self.persistent {
            format!("{mode}, persistent subscribers")
        } else {
            mode
        };
        let mode = match self.stalled_subscribers {
            0 => mode,
            stalled => format!("{mode}, {stalled} stalled subscribers"),
        };
        let cpu = |value: Option<f64>| value.map_or("n/a".to_string(), |v| format!("{v:.0} %"));
        let mut notes = format!(
            "{}{mode}, window {} ({} s measured); expected {} deliveries, delivered {} in the window; \
             reordered {}, unacked {}, unexpected {}, malformed {}; CPU in the window: broker {}, mqtt-bench {} (100 % = one core)",
            self.label.as_ref().map_or(String::new(), |label| format!("[{label}] ")),
            self.window,
            self.duration_s,
            self.expected,
            self.delivered,
            self.reordered.map_or("n/a".to_string(), |n| n.to_string()),
            self.unacked,
            self.unexpected,
            self.malformed,
            cpu(self.broker_cpu_pct),
            cpu(self.bench_cpu_pct),
        );
        notes.push('\n');
        format!("{header}\n{row}\n{notes}")
    }
}

/// Result of a connect storm.
#[derive(Debug, Clone)]
pub struct StormSummary {
    pub label: Option<String>,
    pub version: &'static str,
    pub connections: usize,
    pub concurrency: usize,
    pub failed: usize,
    pub elapsed_s: f64,
    /// CONNECT (from TCP connect) to CONNACK, per connection.
    pub latency: Percentiles,
}

impl StormSummary {
    pub fn connects_per_s(&self) -> f64 {
        (self.connections - self.failed) as f64 / self.elapsed_s
    }

    pub fn json(&self) -> Value {
        let mut object = serde_json::Map::new();
        object.insert("label".into(), json!(self.label));
        object.insert("scenario".into(), json!("connect-storm"));
        object.insert("mqtt_version".into(), json!(self.version));
        object.insert("connections".into(), json!(self.connections));
        object.insert("concurrency".into(), json!(self.concurrency));
        object.insert("failed".into(), json!(self.failed));
        object.insert("elapsed_s".into(), json!(self.elapsed_s));
        object.insert(
            "connects_per_s".into(),
            json!(self.connects_per_s().round()),
        );
        self.latency.insert_json(&mut object);
        Value::Object(object)
    }

    pub fn table(&self) -> String {
        format!(
            "{:<13} {:<5} {:>11} {:>11} {:>6} {:>10} {:>11} {:>9} {:>9} {:>9}\n\
             {:<13} {:<5} {:>11} {:>11} {:>6} {:>10.3} {:>11.0} {:>9.1} {:>9.1} {:>9.1}\n",
            "scenario",
            "mqtt",
            "connections",
            "concurrency",
            "failed",
            "elapsed s",
            "connects/s",
            "p50 µs",
            "p99 µs",
            "max µs",
            "connect-storm",
            self.version,
            self.connections,
            self.concurrency,
            self.failed,
            self.elapsed_s,
            self.connects_per_s(),
            self.latency.p50,
            self.latency.p99,
            self.latency.max,
        )
    }
}

/// Result of the idle scenario.
#[derive(Debug, Clone)]
pub struct IdleSummary {
    pub label: Option<String>,
    pub version: &'static str,
    pub connections: usize,
    pub failed: usize,
    pub hold_s: f64,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
}

impl IdleSummary {
    pub fn kib_per_connection(&self) -> f64 {
        let open = (self.connections - self.failed).max(1);
        (self.rss_after_kib as f64 - self.rss_before_kib as f64) / open as f64
    }

    pub fn json(&self) -> Value {
        json!({
            "label": self.label,
            "scenario": "idle",
            "mqtt_version": self.version,
            "connections": self.connections,
            "failed": self.failed,
            "hold_s": self.hold_s,
            "rss_before_kib": self.rss_before_kib,
            "rss_after_kib": self.rss_after_kib,
            "kib_per_connection": (self.kib_per_connection() * 100.0).round() / 100.0,
        })
    }

    pub fn table(&self) -> String {
        format!(
            "{:<8} {:<5} {:>11} {:>6} {:>16} {:>15} {:>10}\n\
             {:<8} {:<5} {:>11} {:>6} {:>16} {:>15} {:>10.2}\n",
            "scenario",
            "mqtt",
            "connections",
            "failed",
            "RSS before KiB",
            "RSS after KiB",
            "KiB/conn",
            "idle",
            self.version,
            self.connections,
            self.failed,
            self.rss_before_kib,
            self.rss_after_kib,
            self.kib_per_connection(),
        )
    }
}

/// Result of the retained scenario.
#[derive(Debug, Clone)]
pub struct RetainedSummary {
    pub label: Option<String>,
    pub version: &'static str,
    pub qos: u8,
    pub payload: usize,
    /// Retained messages stored, all matching the subscriber's `#`.
    pub messages: usize,
    /// Of those, how many the subscriber got (each counted once).
    pub received: usize,
    pub dup: usize,
    pub unexpected: usize,
    pub malformed: usize,
    /// Seconds the publisher took to store them all.
    pub store_s: f64,
    /// Seconds from SUBSCRIBE to SUBACK.
    pub suback_s: Option<f64>,
    /// Seconds from SUBSCRIBE to the last message received.
    pub elapsed_s: f64,
}

impl RetainedSummary {
    pub fn lost(&self) -> usize {
        self.messages - self.received
    }

    pub fn delivered_per_s(&self) -> f64 {
        if self.elapsed_s > 0.0 {
            self.received as f64 / self.elapsed_s
        } else {
            0.0
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "label": self.label,
            "scenario": "retained",
            "mqtt_version": self.version,
            "qos": self.qos,
            "payload": self.payload,
            "messages": self.messages,
            "received": self.received,
            "lost": self.lost(),
            "dup": self.dup,
            "unexpected": self.unexpected,
            "malformed": self.malformed,
            "store_s": (self.store_s * 1000.0).round() / 1000.0,
            "suback_s": self.suback_s.map(|s| (s * 1e6).round() / 1e6),
            "elapsed_s": (self.elapsed_s * 1000.0).round() / 1000.0,
            "delivered_per_s": self.delivered_per_s().round(),
        })
    }

    pub fn table(&self) -> String {
        format!(
            "{:<8} {:<5} {:>3} {:>7} {:>9} {:>9} {:>7} {:>5} {:>10} {:>12} {:>10}\n\
             {:<8} {:<5} {:>3} {:>7} {:>9} {:>9} {:>7} {:>5} {:>10.3} {:>12.3} {:>10.0}\n\
             {}malformed {}, unexpected {}; stored in {:.3} s\n",
            "scenario",
            "mqtt",
            "qos",
            "payload",
            "messages",
            "received",
            "lost",
            "dup",
            "SUBACK s",
            "to last s",
            "msg/s",
            "retained",
            self.version,
            self.qos,
            self.payload,
            self.messages,
            self.received,
            self.lost(),
            self.dup,
            self.suback_s.unwrap_or(f64::NAN),
            self.elapsed_s,
            self.delivered_per_s(),
            self.label
                .as_ref()
                .map_or(String::new(), |label| format!("[{label}] ")),
            self.malformed,
            self.unexpected,
            self.store_s,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_microseconds() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        for ns in 1..=1000u64 {
            h.record(ns * 1000).unwrap();
        }
        let p = Percentiles::from_ns(&h);
        assert_eq!(p.count, 1000);
        assert!((p.p50 - 500.0).abs() < 1.0, "{}", p.p50);
        assert!((p.p99 - 990.0).abs() < 1.0, "{}", p.p99);
        assert!((p.max - 1000.0).abs() < 1.0, "{}", p.max);
        assert_eq!(Percentiles::from_ns(&Histogram::new(3).unwrap()).count, 0);
    }

    #[test]
    fn json_and_table_carry_the_same_rates() {
        let summary = PubSubSummary {
            label: Some("x".into()),
            scenario: "pairs",
            version: "3.1.1",
            persistent: false,
            qos: 1,
            payload: 64,
            publishers: 4,
            subscribers: 4,
            stalled_subscribers: 0,
            rate: None,
            window: 64,
            duration_s: 2.0,
            sent: 1000,
            expected: 1000,
            delivered: 998,
            delivered_bytes: 998 * 64,
            lost: 2,
            undelivered: 0,
            dup: 0,
            late: 1,
            reordered: Some(0),
            unexpected: 0,
            malformed: 0,
            unacked: 0,
            latency: Percentiles::default(),
            broker_cpu_pct: Some(55.55),
            bench_cpu_pct: None,
        };
        let json = summary.json();
        assert_eq!(json["delivered_per_s"], json!(499.0));
        assert_eq!(json["sent_per_s"], json!(500.0));
        assert_eq!(json["lost"], json!(2));
        assert_eq!(json["mode"], json!("closed"));
        assert_eq!(json["broker_cpu_pct"], json!(55.6));
        let table = summary.table();
        assert!(table.contains("pairs"));
        assert!(table.contains("499"));
    }
}
