//! Time as the broker core sees it: a monotonic instant handed in by the runtime with every
//! input. The core never reads a clock, so every timeout is reproducible in tests.

use std::ops::{Add, Sub};
use std::time::Duration;

/// Monotonic time in nanoseconds since an arbitrary origin chosen by the runtime.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    pub const ZERO: Timestamp = Timestamp(0);

    pub fn from_nanos(nanos: u64) -> Timestamp {
        Timestamp(nanos)
    }

    pub fn from_secs(secs: u64) -> Timestamp {
        Timestamp(secs.saturating_mul(1_000_000_000))
    }

    /// The time since `epoch`, the runtime's origin of the core's clock.
    pub fn since(epoch: std::time::Instant) -> Timestamp {
        Timestamp(u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    pub fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;

    fn add(self, rhs: Duration) -> Timestamp {
        let nanos = u64::try_from(rhs.as_nanos()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(nanos))
    }
}

impl Sub<Timestamp> for Timestamp {
    type Output = Duration;

    fn sub(self, rhs: Timestamp) -> Duration {
        self.saturating_since(rhs)
    }
}

/// Whole seconds left until `deadline`, rounded up so that a message with 0.2 s left is not
/// forwarded with an expiry of 0 (which would mean "no expiry" to nobody, but "expired" to some
/// clients).
pub fn secs_until(now: Timestamp, deadline: Timestamp) -> u32 {
    let nanos = deadline.as_nanos().saturating_sub(now.as_nanos());
    u32::try_from(nanos.div_ceil(1_000_000_000)).unwrap_or(u32::MAX)
}
