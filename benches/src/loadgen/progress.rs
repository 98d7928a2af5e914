//! Live counters shared by every task, and the once-a-second progress line on stderr.
//!
//! Why it exists: a run lasts seconds to minutes, and a stalled broker should be visible while
//! it happens, not only in the final table. The counters are plain relaxed atomics bumped once
//! per batch, so keeping them costs nothing measurable; the final figures come from the tasks'
//! own reports, not from here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::clock::{Clock, Timeline};

#[derive(Debug, Default)]
pub struct Live {
    /// Messages handed to the socket by all publishers.
    pub sent: AtomicU64,
    /// Messages received by all subscribers.
    pub delivered: AtomicU64,
    /// When a subscriber last received anything (ns since the clock's origin); the drain ends
    /// once this has been quiet for a while.
    pub last_delivery_ns: AtomicU64,
}

impl Live {
    pub fn add_sent(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_delivered(&self, n: u64, now_ns: u64) {
        self.delivered.fetch_add(n, Ordering::Relaxed);
        self.last_delivery_ns.fetch_max(now_ns, Ordering::Relaxed);
    }
}

/// Prints one line per second to stderr until `stop` turns true.
pub async fn report_progress(
    live: Arc<Live>,
    clock: Clock,
    timeline: Timeline,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let (mut last_sent, mut last_delivered) = (0, 0);
    let mut last_ns = clock.now_ns();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        let now = clock.now_ns();
        let sent = live.sent.load(Ordering::Relaxed);
        let delivered = live.delivered.load(Ordering::Relaxed);
        let secs = (now - last_ns) as f64 / 1e9;
        eprintln!(
            "[{:>6.1}s {:<7}] sent {:>10.0}/s  delivered {:>10.0}/s  (total sent {sent}, delivered {delivered})",
            now.saturating_sub(timeline.start) as f64 / 1e9,
            timeline.phase(now).name(),
            (sent - last_sent) as f64 / secs,
            (delivered - last_delivered) as f64 / secs,
        );
        (last_sent, last_delivered, last_ns) = (sent, delivered, now);
    }
}
