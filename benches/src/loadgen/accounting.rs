//! Loss and duplicate accounting per publisher sequence, as pure data structures.
//!
//! Why it exists: throughput figures are only worth something if every message that should have
//! arrived is accounted for. A [`SeqTracker`] follows one publisher's sequence numbers as seen by
//! one stream (one subscriber, or one shared-subscription group) and keeps the gaps exactly, so
//! a message arriving after a later one fills its gap instead of being counted lost, and one
//! arriving twice is a duplicate. A [`Ledger`] holds the trackers of one stream. Losses are
//! counted at the end, over the range of sequence numbers each publisher sent inside the
//! measurement window, so messages dropped during warm-up or never sent do not count. A stream
//! keeps each publisher's order, so a message skipped over was dropped ([`Missing::gaps`]);
//! messages after the last one received were merely not delivered in time ([`Missing::tail`]),
//! such as a queue still full when the run ended.

use std::collections::BTreeMap;
use std::ops::Range;

/// How a sequence number relates to what the stream had already seen from its publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next one expected.
    InOrder,
    /// Newer than expected: `skipped` sequence numbers before it are (for now) missing.
    AfterGap { skipped: u64 },
    /// Older than the newest seen, and missing until now: a reordered or late message.
    FillsGap,
    /// Seen before.
    Duplicate,
}

impl Arrival {
    /// Whether this is the first time the stream sees the message.
    pub fn is_new(self) -> bool {
        self != Arrival::Duplicate
    }
}

/// The sequence numbers one stream has seen from one publisher: everything below `next` except
/// the gaps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqTracker {
    /// One past the highest sequence number seen.
    next: u64,
    /// Missing ranges below `next`, as start → end (exclusive); never empty, never adjacent.
    gaps: BTreeMap<u64, u64>,
    /// Total length of `gaps`.
    missing: u64,
}

impl SeqTracker {
    pub fn new() -> SeqTracker {
        SeqTracker::default()
    }

    pub fn observe(&mut self, seq: u64) -> Arrival {
        if seq == self.next {
            self.next += 1;
            return Arrival::InOrder;
        }
        if seq > self.next {
            let skipped = seq - self.next;
            self.gaps.insert(self.next, seq);
            self.missing += skipped;
            self.next = seq + 1;
            return Arrival::AfterGap { skipped };
        }
        // Below `next`: either inside a gap or a duplicate.
        let Some((&start, &end)) = self.gaps.range(..=seq).next_back() else {
            return Arrival::Duplicate;
        };
        if seq >= end {
            return Arrival::Duplicate;
        }
        self.gaps.remove(&start);
        if start < seq {
            self.gaps.insert(start, seq);
        }
        if seq + 1 < end {
            self.gaps.insert(seq + 1, end);
        }
        self.missing -= 1;
        Arrival::FillsGap
    }

    /// One past the highest sequence number seen (0 when nothing was).
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Sequence numbers missing below the highest one seen.
    pub fn missing(&self) -> u64 {
        self.missing
    }

    /// Number of separate gaps.
    pub fn gap_count(&self) -> usize {
        self.gaps.len()
    }

    /// How many of `range` were never seen, split into gaps (below the highest sequence number
    /// seen: skipped, so dropped, since a stream keeps each publisher's order) and tail (at or
    /// above it: never reached, so still queued or dropped at the end).
    pub fn missing_in(&self, range: Range<u64>) -> Missing {
        if range.is_empty() {
            return Missing::default();
        }
        let mut gaps = 0;
        // A gap that starts before the range may still reach into it.
        let first = self
            .gaps
            .range(..range.start)
            .next_back()
            .map_or(range.start, |(&start, _)| start);
        for (&start, &end) in self.gaps.range(first..range.end) {
            let lo = start.max(range.start);
            let hi = end.min(range.end);
            gaps += hi.saturating_sub(lo);
        }
        Missing {
            gaps,
            tail: range.end.saturating_sub(self.next.max(range.start)),
        }
    }
}

/// Messages of a sequence range that a stream never received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Missing {
    /// Skipped over: a later message of the same publisher arrived, so these were dropped.
    pub gaps: u64,
    /// After the last one received: not delivered by the end of the run.
    pub tail: u64,
}

impl Missing {
    pub fn total(self) -> u64 {
        self.gaps + self.tail
    }
}

impl std::ops::Add for Missing {
    type Output = Missing;

    fn add(self, other: Missing) -> Missing {
        Missing {
            gaps: self.gaps + other.gaps,
            tail: self.tail + other.tail,
        }
    }
}

/// Every tracker of one stream, indexed by publisher id, with the counts the stream keeps.
#[derive(Debug, Clone)]
pub struct Ledger {
    /// The publishers whose messages this stream should receive.
    sources: Range<u32>,
    trackers: Vec<SeqTracker>,
    /// Duplicates of messages meant to be sent inside the measurement window.
    pub dup_in_window: u64,
    /// Out-of-order arrivals (gap fills), any time.
    pub reordered: u64,
    /// Messages from a publisher this stream should not hear from: a routing error.
    pub unexpected: u64,
}

impl Ledger {
    pub fn new(sources: Range<u32>) -> Ledger {
        let len = sources.len();
        Ledger {
            sources,
            trackers: vec![SeqTracker::new(); len],
            dup_in_window: 0,
            reordered: 0,
            unexpected: 0,
        }
    }

    /// Accounts one delivery; `in_window` says whether its intended send time was inside the
    /// measurement window. `None` for a publisher outside `sources`.
    pub fn record(&mut self, publisher: u32, seq: u64, in_window: bool) -> Option<Arrival> {
        if !self.sources.contains(&publisher) {
            self.unexpected += 1;
            return None;
        }
        let tracker = &mut self.trackers[(publisher - self.sources.start) as usize];
        let arrival = tracker.observe(seq);
        match arrival {
            Arrival::Duplicate if in_window => self.dup_in_window += 1,
            Arrival::FillsGap => self.reordered += 1,
            _ => {}
        }
        Some(arrival)
    }

    /// Messages sent inside the window that this stream never received. `window_seqs[p]` is the
    /// range of sequence numbers publisher `p` sent inside the window.
    pub fn missing(&self, window_seqs: &[Range<u64>]) -> Missing {
        self.sources
            .clone()
            .zip(&self.trackers)
            .filter_map(|(publisher, tracker)| {
                window_seqs
                    .get(publisher as usize)
                    .map(|range| tracker.missing_in(range.clone()))
            })
            .fold(Missing::default(), |sum, missing| sum + missing)
    }

    /// Messages sent inside the window that this stream should have received.
    pub fn expected(&self, window_seqs: &[Range<u64>]) -> u64 {
        self.sources
            .clone()
            .filter_map(|publisher| window_seqs.get(publisher as usize))
            .map(|range| range.end - range.start)
            .sum()
    }

    pub fn tracker(&self, publisher: u32) -> Option<&SeqTracker> {
        self.sources
            .contains(&publisher)
            .then(|| &self.trackers[(publisher - self.sources.start) as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observe_all(tracker: &mut SeqTracker, seqs: &[u64]) -> Vec<Arrival> {
        seqs.iter().map(|&seq| tracker.observe(seq)).collect()
    }

    #[test]
    fn in_order_stream_has_no_gaps() {
        let mut t = SeqTracker::new();
        for seq in 0..1000 {
            assert_eq!(t.observe(seq), Arrival::InOrder);
        }
        assert_eq!(t.missing(), 0);
        assert_eq!(t.missing_in(0..1000), Missing::default());
        // Sent but never arrived at the tail.
        assert_eq!(t.missing_in(0..1010), Missing { gaps: 0, tail: 10 });
    }

    #[test]
    fn gap_then_late_fill_then_duplicate() {
        let mut t = SeqTracker::new();
        let arrivals = observe_all(&mut t, &[0, 1, 5, 6, 3, 3, 6, 2, 4]);
        use Arrival::*;
        assert_eq!(
            arrivals,
            vec![
                InOrder,
                InOrder,
                AfterGap { skipped: 3 },
                InOrder,
                FillsGap,
                Duplicate,
                Duplicate,
                FillsGap,
                FillsGap,
            ]
        );
        assert_eq!(t.missing(), 0);
        assert_eq!(t.gap_count(), 0);
        assert_eq!(t.next(), 7);
    }

    #[test]
    fn splitting_a_gap_keeps_both_halves() {
        let mut t = SeqTracker::new();
        t.observe(0);
        t.observe(10); // gap 1..10
        assert_eq!(t.observe(5), Arrival::FillsGap);
        assert_eq!(t.gap_count(), 2);
        assert_eq!(t.missing(), 8);
        assert_eq!(t.missing_in(1..5).gaps, 4);
        assert_eq!(t.missing_in(5..6).total(), 0);
        assert_eq!(t.missing_in(6..10).gaps, 4);
        // A range that starts inside a gap.
        assert_eq!(t.missing_in(3..8).gaps, 4);
        assert_eq!(t.observe(1), Arrival::FillsGap);
        assert_eq!(t.observe(9), Arrival::FillsGap);
        assert_eq!(t.missing_in(0..12), Missing { gaps: 6, tail: 1 });
    }

    #[test]
    fn missing_before_the_first_arrival_counts() {
        let mut t = SeqTracker::new();
        assert_eq!(t.observe(4), Arrival::AfterGap { skipped: 4 });
        assert_eq!(t.missing_in(0..5).gaps, 4);
        assert_eq!(t.missing_in(2..5).gaps, 2);
        assert_eq!(t.missing_in(4..5).total(), 0);
        // Nothing seen at all: the whole range is missing, as tail.
        assert_eq!(
            SeqTracker::new().missing_in(7..12),
            Missing { gaps: 0, tail: 5 }
        );
        assert_eq!(SeqTracker::new().missing_in(7..7), Missing::default());
    }

    #[test]
    fn ledger_counts_only_window_duplicates_and_losses() {
        // Publishers 2 and 3 feed this stream; publisher 0 should not.
        let mut ledger = Ledger::new(2..4);
        assert_eq!(ledger.record(0, 0, true), None);
        assert_eq!(ledger.unexpected, 1);
        // Publisher 2: 0..10 sent, window 3..8; 1 lost in warm-up, 5 lost in window, 4 twice.
        for seq in [0, 2, 3, 4, 4, 6, 7, 8, 9] {
            let in_window = (3..8).contains(&seq);
            ledger.record(2, seq, in_window);
        }
        // Publisher 3: window 0..4, everything arrives, one duplicate outside the window.
        for seq in [0, 1, 2, 3, 4, 4] {
            ledger.record(3, seq, seq < 4);
        }
        let window = vec![0..0, 0..0, 3..8, 0..4];
        assert_eq!(ledger.dup_in_window, 1);
        assert_eq!(ledger.missing(&window), Missing { gaps: 1, tail: 0 });
        assert_eq!(ledger.expected(&window), 9);
        assert_eq!(ledger.reordered, 0);
        assert_eq!(ledger.tracker(2).map(SeqTracker::missing), Some(2));
    }

    #[test]
    fn ledger_lost_includes_the_tail() {
        let mut ledger = Ledger::new(0..1);
        for seq in 0..5 {
            ledger.record(0, seq, true);
        }
        // The publisher sent 0..8 inside the window; 5, 6 and 7 never came.
        assert_eq!(ledger.missing(&vec![0..8; 1]), Missing { gaps: 0, tail: 3 });
    }

    #[test]
    fn shuffled_deliveries_account_exactly() {
        // Deterministic shuffle: a permutation of 0..1000 by a stride coprime with 1000, with
        // every seq divisible by 7 dropped and every seq divisible by 11 delivered twice.
        let mut ledger = Ledger::new(0..1);
        let mut expected_dups = 0;
        for i in 0..1000u64 {
            let seq = (i * 617) % 1000;
            if seq % 7 == 0 {
                continue;
            }
            ledger.record(0, seq, true);
            if seq % 11 == 0 {
                ledger.record(0, seq, true);
                expected_dups += 1;
            }
        }
        let lost_expected = (0..1000).filter(|s| s % 7 == 0).count() as u64;
        // 994 (divisible by 7) is the highest dropped and 999 arrived: everything is a gap.
        assert_eq!(
            ledger.missing(&vec![0..1000; 1]),
            Missing {
                gaps: lost_expected,
                tail: 0
            }
        );
        assert_eq!(ledger.dup_in_window, expected_dups);
    }
}
