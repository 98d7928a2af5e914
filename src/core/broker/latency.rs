//! How long messages wait inside the broker: from the publisher's PUBLISH being read to a
//! subscriber's copy being written to its send buffer, whatever lies between (a hop to another
//! shard, a full in-flight window, a queue while the subscriber was away). Operators read it as
//! a Prometheus histogram. Only one delivery in `SAMPLE_EVERY` is measured, so the path of a
//! message pays one branch on a counter it keeps anyway; the socket write that follows is the
//! runtime's and is not part of it.

use std::time::Duration;

use super::time::Timestamp;

/// One delivery in this many is measured.
pub const SAMPLE_EVERY: u64 = 64;

/// Upper bounds of the buckets, in microseconds; a last bucket holds the rest.
pub const BUCKET_BOUNDS_MICROS: [u64; 14] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000, 250_000, 1_000_000, 10_000_000,
];

/// Sampled delivery latencies: a count per bucket (not cumulative) and their sum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// `buckets[i]` counts latencies above bound `i - 1` and at most bound `i`; the last
    /// counts those above every bound.
    pub buckets: [u64; BUCKET_BOUNDS_MICROS.len() + 1],
    pub sum: Duration,
}

impl LatencyHistogram {
    /// Measures the delivery numbered `delivery` of a message read at `received`, if it is
    /// one of the sampled ones.
    pub fn sample(&mut self, delivery: u64, received: Timestamp, now: Timestamp) {
        if delivery.is_multiple_of(SAMPLE_EVERY) {
            self.record(now - received);
        }
    }

    fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let bucket = BUCKET_BOUNDS_MICROS.partition_point(|&bound| bound < micros);
        self.buckets[bucket] += 1;
        self.sum += latency;
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_latency_lands_in_the_first_bucket_that_holds_it() {
        let mut histogram = LatencyHistogram::default();
        for micros in [0, 10, 11, 999, 1_000, 20_000_000] {
            histogram.record(Duration::from_micros(micros));
        }
        assert_eq!(histogram.buckets[0], 2, "0 and 10 µs");
        assert_eq!(histogram.buckets[1], 1, "11 µs");
        assert_eq!(histogram.buckets[6], 2, "999 and 1000 µs");
        assert_eq!(histogram.buckets[BUCKET_BOUNDS_MICROS.len()], 1, "20 s");
        assert_eq!(histogram.count(), 6);
        assert_eq!(histogram.sum, Duration::from_micros(20_002_020));
    }

    #[test]
    fn only_one_delivery_in_sample_every_is_measured() {
        let mut histogram = LatencyHistogram::default();
        let received = Timestamp::from_secs(1);
        let now = received + Duration::from_micros(300);
        for delivery in 0..SAMPLE_EVERY * 3 {
            histogram.sample(delivery, received, now);
        }
        assert_eq!(histogram.count(), 3);
        assert_eq!(histogram.buckets[5], 3, "300 µs is in the 500 µs bucket");
    }
}
