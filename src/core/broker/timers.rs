//! The shard's one timer queue. Entries are never cancelled: each fired entry is checked against
//! the deadline its owner holds now, and re-armed if that moved. Keepalive therefore costs one
//! queue operation per keepalive period, not one per packet received.

use std::collections::BTreeSet;

use super::boundary::ConnId;
use super::session::SessionId;
use super::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    KeepAlive(ConnId),
    SessionExpiry(SessionId),
    WillDelay(SessionId),
    /// Whether a subscriber that holds publishers back still acknowledges anything.
    StallCheck(SessionId),
    ExpirySweep,
}

#[derive(Debug, Default)]
pub struct Timers {
    queue: BTreeSet<(Timestamp, Timer)>,
}

impl Timers {
    pub fn schedule(&mut self, at: Timestamp, timer: Timer) {
        self.queue.insert((at, timer));
    }

    /// The earliest deadline, for the runtime's sleep.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.queue.first().map(|(at, _)| *at)
    }

    /// Removes and returns the next timer due at or before `now`.
    pub fn pop_due(&mut self, now: Timestamp) -> Option<Timer> {
        let (at, _) = self.queue.first()?;
        if *at > now {
            return None;
        }
        self.queue.pop_first().map(|(_, timer)| timer)
    }
}
