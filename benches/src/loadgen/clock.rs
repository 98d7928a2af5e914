//! The run's shared monotonic time origin and its timeline.
//!
//! Why it exists: latency is "receive time minus intended send time", with both times taken in
//! the same process. Expressing every instant as nanoseconds since one `Instant` makes the stamp
//! a plain `u64` and every phase boundary a comparison.

use std::time::{Duration, Instant};

/// Nanoseconds since a fixed origin; cheap to copy into every task.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            origin: Instant::now(),
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// The `Instant` of `ns` since the origin, for timers.
    pub fn instant(&self, ns: u64) -> Instant {
        self.origin + Duration::from_nanos(ns)
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::new()
    }
}

/// Phase boundaries of one run, in nanoseconds since the [`Clock`]'s origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeline {
    /// Publishers start.
    pub start: u64,
    /// Warm-up ends and measurement begins.
    pub window_start: u64,
    /// Measurement ends: publishers stop sending.
    pub window_end: u64,
    /// The latest moment the run waits for outstanding messages and acknowledgements.
    pub drain_end: u64,
}

/// Which phase an instant falls in; for progress lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Starting,
    Warmup,
    Measure,
    Drain,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Starting => "start",
            Phase::Warmup => "warmup",
            Phase::Measure => "measure",
            Phase::Drain => "drain",
        }
    }
}

impl Timeline {
    pub fn new(start: u64, warmup: Duration, duration: Duration, drain: Duration) -> Timeline {
        let window_start = start + warmup.as_nanos() as u64;
        let window_end = window_start + duration.as_nanos() as u64;
        Timeline {
            start,
            window_start,
            window_end,
            drain_end: window_end + drain.as_nanos() as u64,
        }
    }

    /// Whether `ns` lies inside the measurement window.
    pub fn in_window(&self, ns: u64) -> bool {
        (self.window_start..self.window_end).contains(&ns)
    }

    pub fn window_secs(&self) -> f64 {
        (self.window_end - self.window_start) as f64 / 1e9
    }

    pub fn phase(&self, ns: u64) -> Phase {
        if ns < self.start {
            Phase::Starting
        } else if ns < self.window_start {
            Phase::Warmup
        } else if ns < self.window_end {
            Phase::Measure
        } else {
            Phase::Drain
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_follow_the_timeline() {
        let t = Timeline::new(
            100,
            Duration::from_nanos(10),
            Duration::from_nanos(20),
            Duration::from_nanos(5),
        );
        assert_eq!((t.window_start, t.window_end, t.drain_end), (110, 130, 135));
        assert_eq!(t.phase(99), Phase::Starting);
        assert_eq!(t.phase(100), Phase::Warmup);
        assert_eq!(t.phase(110), Phase::Measure);
        assert!(t.in_window(110) && t.in_window(129) && !t.in_window(130));
        assert_eq!(t.phase(130), Phase::Drain);
    }
}
