//! Mosquitto's `$SYS` topics, published retained by shard 0 every `--sys-interval` from every
//! shard's last report (`reports.rs`): totals are sums over the shards' reports, and each
//! shard's own figures are under `$SYS/broker/shards/N/`. Dashboards written for Mosquitto read
//! them unchanged. `#` never matches them, as MQTT keeps `$` topics from leading wildcards.
//!
//! `messages/received` and `messages/sent` count PUBLISH packets (Mosquitto counts packets of
//! every type there, and PUBLISH under `publish/messages/`).

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::reports::{Reports, ShardReport};
use crate::broker::{Broker, Timestamp};

/// When the next publication is due, and the moving averages of the `load/` topics.
pub(crate) struct SysTopics {
    interval: Duration,
    next: Instant,
    /// The most clients connected at once, as seen at each publication.
    maximum_clients: usize,
    /// The totals at the last publication, for the rates.
    last: Option<Totals>,
    /// Per-minute rates of messages and bytes received and sent, over 1, 5 and 15 minutes.
    loads: [[f64; 3]; 4],
}

#[derive(Clone, Copy)]
struct Totals {
    counts: [u64; 4],
}

const WINDOWS: [(&str, f64); 3] = [("1min", 60.0), ("5min", 300.0), ("15min", 900.0)];
const LOADS: [&str; 4] = [
    "messages/received",
    "messages/sent",
    "bytes/received",
    "bytes/sent",
];

impl SysTopics {
    /// `None` when `interval` is zero: no `$SYS` topics.
    pub fn new(interval: Duration) -> Option<SysTopics> {
        (!interval.is_zero()).then(|| SysTopics {
            interval,
            next: Instant::now(),
            maximum_clients: 0,
            last: None,
            loads: [[0.0; 3]; 4],
        })
    }

    /// Publishes every topic if it is time.
    pub fn publish_if_due(&mut self, broker: &mut Broker, reports: &Reports, now: Timestamp) {
        let instant = Instant::now();
        if instant < self.next {
            return;
        }
        self.next = instant + self.interval;
        let shards = reports.shards();
        let total = shards.iter().fold(ShardReport::default(), sum);
        // Every shard holds the whole retained set.
        let retained = shards.first().map_or(0, |shard| shard.retained);
        self.maximum_clients = self.maximum_clients.max(total.clients_connected);
        let totals = Totals {
            counts: [
                total.stats.publishes_received,
                total.stats.publishes_sent,
                total.runtime.bytes_received,
                total.runtime.bytes_sent,
            ],
        };
        self.update_loads(totals);
        let mut out = |topic: &str, value: String| {
            broker.publish_system(&format!("$SYS/broker/{topic}"), Bytes::from(value), now);
        };
        out(
            "version",
            format!("mqtt-broker version {}", env!("CARGO_PKG_VERSION")),
        );
        let uptime = reports.started.elapsed().as_secs();
        out("uptime", format!("{uptime} seconds"));
        let clients = total.clients_connected + total.clients_disconnected;
        out("clients/connected", total.clients_connected.to_string());
        out(
            "clients/disconnected",
            total.clients_disconnected.to_string(),
        );
        out("clients/total", clients.to_string());
        out("clients/maximum", self.maximum_clients.to_string());
        out(
            "messages/received",
            total.stats.publishes_received.to_string(),
        );
        out("messages/sent", total.stats.publishes_sent.to_string());
        out("messages/stored", (total.stored + retained).to_string());
        out(
            "publish/messages/received",
            total.stats.publishes_received.to_string(),
        );
        out(
            "publish/messages/sent",
            total.stats.publishes_sent.to_string(),
        );
        out("publish/messages/dropped", total.dropped().to_string());
        out("subscriptions/count", total.subscriptions.to_string());
        out("retained messages/count", retained.to_string());
        out("bytes/received", total.runtime.bytes_received.to_string());
        out("bytes/sent", total.runtime.bytes_sent.to_string());
        for (load, name) in self.loads.iter().zip(LOADS) {
            for (value, (window, _)) in load.iter().zip(WINDOWS) {
                out(&format!("load/{name}/{window}"), format!("{value:.2}"));
            }
        }
        if let Some(heap) = crate::allocator::allocated_bytes() {
            out("heap/current", heap.to_string());
        }
        for (index, shard) in shards.iter().enumerate() {
            let mut out = |topic: &str, value: String| {
                let topic = format!("$SYS/broker/shards/{index}/{topic}");
                broker.publish_system(&topic, Bytes::from(value), now);
            };
            out("clients/connected", shard.clients_connected.to_string());
            out(
                "clients/disconnected",
                shard.clients_disconnected.to_string(),
            );
            out(
                "messages/received",
                shard.stats.publishes_received.to_string(),
            );
            out("messages/sent", shard.stats.publishes_sent.to_string());
            out("messages/stored", shard.stored.to_string());
            out("publish/messages/dropped", shard.dropped().to_string());
            out("subscriptions/count", shard.subscriptions.to_string());
            out("bytes/received", shard.runtime.bytes_received.to_string());
            out("bytes/sent", shard.runtime.bytes_sent.to_string());
        }
    }

    /// Moves each per-minute average towards the rate since the last publication, weighted by
    /// how much of its window that time is (Mosquitto's exponential moving averages).
    fn update_loads(&mut self, totals: Totals) {
        let Some(last) = self.last.replace(totals) else {
            return;
        };
        let seconds = self.interval.as_secs_f64();
        for (index, load) in self.loads.iter_mut().enumerate() {
            let delta = totals.counts[index].saturating_sub(last.counts[index]) as f64;
            let per_minute = delta * 60.0 / seconds;
            for (value, (_, window)) in load.iter_mut().zip(WINDOWS) {
                let keep = (-seconds / window).exp();
                *value = *value * keep + per_minute * (1.0 - keep);
            }
        }
    }
}

fn sum(mut total: ShardReport, shard: &ShardReport) -> ShardReport {
    let (stats, other) = (&mut total.stats, &shard.stats);
    stats.publishes_received += other.publishes_received;
    stats.publishes_sent += other.publishes_sent;
    stats.qos0_dropped += other.qos0_dropped;
    stats.queue_full_dropped += other.queue_full_dropped;
    stats.expired_dropped += other.expired_dropped;
    stats.too_large_dropped += other.too_large_dropped;
    total.clients_connected += shard.clients_connected;
    total.clients_disconnected += shard.clients_disconnected;
    total.subscriptions += shard.subscriptions;
    total.stored += shard.stored;
    total.runtime.bytes_received += shard.runtime.bytes_received;
    total.runtime.bytes_sent += shard.runtime.bytes_sent;
    total
}
