//! Open-loop pacing: the fixed send schedule and the thread that wakes publishers on time.
//!
//! Why it exists: with `--rate`, message k of publisher i is due at a time fixed in advance, and
//! its latency is measured from that time, whether or not the publisher managed to send it then.
//! A slow broker therefore shows up as latency instead of silently slowing the senders down
//! (no coordinated omission). tokio's timers tick in milliseconds, too coarse at 10k msg/s, so a
//! dedicated thread sleeps with `nanosleep` (timer slack lowered to 1 µs) and wakes each
//! publisher task when its next message is due; the publisher then sends everything due by now.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::Notify;

use super::clock::Clock;

/// Sleeps shorter than this are not worth a system call: the messages wait for the next wake.
const MIN_SLEEP: Duration = Duration::from_micros(20);

/// The send times of an open-loop run: `publishers` publishers share `rate` messages per second,
/// interleaved so that the whole run sends one message every `1 / rate` seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub start_ns: u64,
    pub rate: f64,
    pub publishers: u32,
}

impl Schedule {
    /// Due time of the run's `global`-th message (sent by publisher `global % publishers`).
    pub fn global_due(&self, global: u64) -> u64 {
        self.start_ns + (global as f64 * 1e9 / self.rate) as u64
    }

    /// Due time of message `seq` of `publisher`.
    pub fn due(&self, publisher: u32, seq: u64) -> u64 {
        self.global_due(seq * self.publishers as u64 + publisher as u64)
    }
}

/// The running pacer thread; stops by itself at `end_ns` or when dropped.
pub struct Pacer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Pacer {
    /// Wakes `wakers[i]` whenever a message of publisher `i` falls due, until `end_ns`.
    pub fn start(schedule: Schedule, end_ns: u64, clock: Clock, wakers: Vec<Arc<Notify>>) -> Pacer {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("pacer".into())
                .spawn(move || pace(schedule, end_ns, clock, &wakers, &stop))
                .expect("spawn the pacer thread")
        };
        Pacer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn pace(schedule: Schedule, end_ns: u64, clock: Clock, wakers: &[Arc<Notify>], stop: &AtomicBool) {
    // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong);
    }
    let publishers = schedule.publishers.max(1) as u64;
    let mut global = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let now = clock.now_ns();
        let mut due = schedule.global_due(global);
        while due <= now && due < end_ns {
            wakers[(global % publishers) as usize].notify_one();
            global += 1;
            due = schedule.global_due(global);
        }
        if due >= end_ns {
            // One last wake so every publisher notices the end of its schedule promptly.
            wakers.iter().for_each(|waker| waker.notify_one());
            return;
        }
        std::thread::sleep(Duration::from_nanos(due - now).max(MIN_SLEEP));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishers_interleave_at_the_total_rate() {
        let s = Schedule {
            start_ns: 1_000,
            rate: 10_000.0,
            publishers: 4,
        };
        // 100 µs between messages of the run, 400 µs between those of one publisher.
        assert_eq!(s.global_due(0), 1_000);
        assert_eq!(s.global_due(1), 101_000);
        assert_eq!(s.due(1, 0), 101_000);
        assert_eq!(s.due(0, 1), 401_000);
        assert_eq!(s.due(3, 2), 1_000 + 11 * 100_000);
    }
}
