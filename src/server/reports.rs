//! What each shard says of itself, once a second, for the `$SYS` topics and `/metrics`. A shard
//! copies its core's counters and counts into its slot here; readers sum the slots. Nothing is
//! added to the path of a message: the counters are the ones the core keeps anyway, and the
//! counts that need a walk over the sessions are taken once a second, not per message.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use mqtt_broker_persistence::StreamStats;

use crate::broker::{Broker, Stats};
use crate::protocol::ProtocolVersion;

/// How often each shard reports.
pub(crate) const REPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// What a shard's runtime counts beside its core.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuntimeCounts {
    /// Bytes read from and written to the shard's sockets.
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// Batches of messages sent to other shards.
    pub envelopes_sent: u64,
    /// Times a publisher's reading was paused because another shard or the journal was behind.
    pub publisher_pauses: u64,
}

/// Connections that came in on one listener and speak one protocol version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerConnections {
    /// The listener's name (`Config::listener_names`).
    pub listener: String,
    /// `None` until the CONNECT is accepted.
    pub version: Option<ProtocolVersion>,
    pub count: usize,
}

/// One shard's figures at its last report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardReport {
    pub stats: Stats,
    pub runtime: RuntimeCounts,
    pub journal: StreamStats,
    /// Network connections, connected or not yet.
    pub connections: usize,
    pub connections_by_listener: Vec<ListenerConnections>,
    pub clients_connected: usize,
    /// Sessions whose client is away.
    pub clients_disconnected: usize,
    pub subscriptions: usize,
    /// Retained messages (every shard holds the whole set; count one shard's).
    pub retained: usize,
    /// Messages held for sessions, in flight and queued.
    pub stored: usize,
}

impl ShardReport {
    /// The core's figures with what the runtime and the journal counted.
    pub fn of(broker: &Broker, runtime: RuntimeCounts, journal: StreamStats) -> ShardReport {
        let (clients_connected, clients_disconnected) = broker.client_counts();
        let mut connections_by_listener: Vec<ListenerConnections> = broker
            .connections_by_origin()
            .into_iter()
            .map(|((listener, version), count)| ListenerConnections {
                listener: broker.config().listener_name(listener).to_owned(),
                version,
                count,
            })
            .collect();
        connections_by_listener
            .sort_by(|a, b| (&a.listener, a.version).cmp(&(&b.listener, b.version)));
        ShardReport {
            stats: broker.stats(),
            runtime,
            journal,
            connections: broker.connection_count(),
            connections_by_listener,
            clients_connected,
            clients_disconnected,
            subscriptions: broker.subscription_count(),
            retained: broker.retained_count(),
            stored: broker.stored_message_count(),
        }
    }

    /// Messages dropped for any reason the broker counts.
    pub fn dropped(&self) -> u64 {
        let stats = &self.stats;
        stats.qos0_dropped
            + stats.queue_full_dropped
            + stats.expired_dropped
            + stats.too_large_dropped
    }
}

/// Every shard's last report, and what the process says of itself.
pub struct Reports {
    shards: Vec<Mutex<ShardReport>>,
    /// When the broker started, for the uptime.
    pub started: Instant,
    /// Recovery is done and every listener accepts.
    ready: AtomicBool,
}

impl Reports {
    pub fn new(shards: usize) -> Reports {
        Reports {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(ShardReport::default()))
                .collect(),
            started: Instant::now(),
            ready: AtomicBool::new(false),
        }
    }

    pub fn set(&self, shard: usize, report: ShardReport) {
        if let Some(slot) = self.shards.get(shard) {
            *slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = report;
        }
    }

    /// Each shard's last report, in shard order.
    pub fn shards(&self) -> Vec<ShardReport> {
        self.shards
            .iter()
            .map(|slot| {
                slot.lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .clone()
            })
            .collect()
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}
