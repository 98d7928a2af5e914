//! What each shard says of itself, once a second, for the `$SYS` topics and `/metrics`. A shard
//! copies its core's counters and counts into its slot here; readers sum the slots. Nothing is
//! added to the path of a message: the counters are the ones the core keeps anyway, and the
//! counts that need a walk over the sessions are taken once a second, not per message.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::broker::{Broker, Stats};

/// How often each shard reports.
pub(crate) const REPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// One shard's figures at its last report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardReport {
    pub stats: Stats,
    /// Network connections, connected or not yet.
    pub connections: usize,
    pub clients_connected: usize,
    /// Sessions whose client is away.
    pub clients_disconnected: usize,
    pub subscriptions: usize,
    /// Retained messages (every shard holds the whole set; count one shard's).
    pub retained: usize,
    /// Messages held for sessions, in flight and queued.
    pub stored: usize,
    pub bytes_received: u64,
    pub bytes_sent: u64,
}

impl ShardReport {
    /// The core's part of a report; the runtime adds the bytes.
    pub fn of(broker: &Broker, bytes_received: u64, bytes_sent: u64) -> ShardReport {
        let (clients_connected, clients_disconnected) = broker.client_counts();
        ShardReport {
            stats: broker.stats(),
            connections: broker.connection_count(),
            clients_connected,
            clients_disconnected,
            subscriptions: broker.subscription_count(),
            retained: broker.retained_count(),
            stored: broker.stored_message_count(),
            bytes_received,
            bytes_sent,
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
            .map(|slot| *slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
            .collect()
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}
