//! `--max-connection-rate`: new connections per second from one source address, checked the
//! moment a connection is accepted, before a byte of it is read. A client in a reconnect loop
//! or a flood from one host then costs an accept and a close, not a CONNECT parse, a session
//! lookup or (later) a TLS handshake.
//!
//! One token bucket per address, shared by every shard and acceptor: with SO_REUSEPORT the
//! kernel spreads one address's connections over all of them, so per-shard buckets would allow
//! the rate once per shard. Accepting is rare next to messages, and the lock is held for one
//! map lookup.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use tracing::warn;

use crate::broker::limited_log::LimitedLog;
use crate::broker::Timestamp;

/// Addresses remembered before idle ones are forgotten: a bucket that has refilled says nothing
/// a new one would not. Past it, the map is swept at most once a second (a bucket refills in a
/// second), so a flood from many addresses costs memory for one second's worth of them, and
/// no sweep per connection.
const FORGET_ABOVE: usize = 4096;
const REFILL: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct ConnectionRate {
    /// Connections per second per address; also the burst allowed at once.
    per_second: u32,
    buckets: Mutex<Buckets>,
    refused: AtomicU64,
    /// Origin of the timestamps the refusal log is kept by.
    epoch: Instant,
}

#[derive(Debug, Default)]
struct Buckets {
    by_address: AHashMap<IpAddr, Bucket>,
    last_sweep: Option<Instant>,
    refusals: LimitedLog,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl ConnectionRate {
    /// A limit of `per_second` new connections per source address; 0 admits everything.
    pub fn new(per_second: u32) -> ConnectionRate {
        ConnectionRate {
            per_second,
            buckets: Mutex::new(Buckets::default()),
            refused: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Whether a connection from `peer`, accepted at `now`, may be served. A refusal is
    /// counted, and logged at a limited rate; the caller closes the connection.
    pub fn admit(&self, peer: IpAddr, now: Instant) -> bool {
        if self.per_second == 0 {
            return true;
        }
        let rate = f64::from(self.per_second);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let sweep_due = buckets
            .last_sweep
            .is_none_or(|last| now.duration_since(last) >= REFILL);
        if buckets.by_address.len() >= FORGET_ABOVE && sweep_due {
            buckets
                .by_address
                .retain(|_, bucket| now.duration_since(bucket.updated) < REFILL);
            buckets.last_sweep = Some(now);
        }
        let bucket = buckets.by_address.entry(peer).or_insert(Bucket {
            tokens: rate,
            updated: now,
        });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(rate);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return true;
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        let at = Timestamp::from_nanos(
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX),
        );
        if let Some(refused) = buckets.refusals.note(at) {
            warn!(
                %peer,
                refused,
                limit = self.per_second,
                "closing new connections over --max-connection-rate (count since the last such \
                 line, all addresses)"
            );
        }
        false
    }

    /// Connections refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn zero_admits_everything() {
        let rate = ConnectionRate::new(0);
        let now = Instant::now();
        assert!((0..10_000).all(|_| rate.admit(HOST, now)));
        assert_eq!(rate.refused(), 0);
    }

    #[test]
    fn a_burst_of_the_rate_then_the_rate_per_second_per_address() {
        let rate = ConnectionRate::new(10);
        let start = Instant::now();
        let admitted = (0..25).filter(|_| rate.admit(HOST, start)).count();
        assert_eq!(admitted, 10);
        assert_eq!(rate.refused(), 15);
        // Another address has its own bucket.
        assert!(rate.admit(OTHER, start));
        // A tenth of a second later one more token has come back, and no more.
        let later = start + Duration::from_millis(100);
        assert!(rate.admit(HOST, later));
        assert!(!rate.admit(HOST, later));
        // Idle for long, the bucket holds one burst, not more.
        let much_later = start + Duration::from_secs(60);
        let admitted = (0..25).filter(|_| rate.admit(HOST, much_later)).count();
        assert_eq!(admitted, 10);
    }

    #[test]
    fn forgotten_addresses_start_with_a_full_bucket() {
        let rate = ConnectionRate::new(1);
        let start = Instant::now();
        for n in 0..FORGET_ABOVE as u32 {
            assert!(rate.admit(IpAddr::V4(n.into()), start));
        }
        let later = start + Duration::from_secs(2);
        assert!(rate.admit(HOST, later));
        let remembered = rate.buckets.lock().unwrap().by_address.len();
        assert!(remembered < FORGET_ABOVE, "{remembered}");
    }
}
