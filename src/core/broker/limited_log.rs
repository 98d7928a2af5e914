//! Warnings about events that can happen thousands of times a second, such as messages dropped
//! for a subscriber that stopped reading. The first is logged at once, then at most one line per
//! interval saying how many happened since, so an overload never floods the log and nothing goes
//! unreported.

use std::time::Duration;

use super::time::Timestamp;

/// At most one line this often.
const INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct LimitedLog {
    last: Option<Timestamp>,
    unreported: u64,
}

impl LimitedLog {
    /// Counts one event; `Some(n)` when a line is due now, covering `n` events.
    pub fn note(&mut self, now: Timestamp) -> Option<u64> {
        self.unreported += 1;
        if self.last.is_some_and(|last| now - last < INTERVAL) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unreported))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_counts_everything_in_between() {
        let mut log = LimitedLog::default();
        let start = Timestamp::from_secs(100);
        assert_eq!(log.note(start), Some(1));
        assert_eq!(log.note(start + Duration::from_secs(1)), None);
        assert_eq!(log.note(start + Duration::from_secs(9)), None);
        assert_eq!(log.note(start + INTERVAL), Some(3));
    }
}
