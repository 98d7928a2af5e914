//! The queue from a stream's writers to its journal thread.
//!
//! Why not a channel: an unbounded channel's buffer keeps the capacity of its deepest backlog
//! for good. A shard appends a record per state change, and while the thread waits on a sync
//! hundreds of thousands queue up: after one 6 s burst each shard kept a 6 MiB channel buffer
//! that nothing used again. Here the thread takes everything queued at once, in exchange for the
//! buffer it has finished with, and shrinks that one before handing it back: what the queue
//! holds is what is waiting, and a burst's memory is freed once it is written.
//!
//! Appends never block on the thread (a short lock, and a wake-up only when it sleeps), and
//! commands keep their order, which the snapshot rotation relies on.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// Capacity a drained buffer keeps when it goes back to the senders.
const IDLE_CAPACITY: usize = 1024;

pub(crate) fn queue<T>() -> (QueueSender<T>, QueueReceiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: Vec::new(),
            senders: 1,
            receiver_alive: true,
            receiver_sleeping: false,
        }),
        wake: Condvar::new(),
    });
    (
        QueueSender {
            shared: shared.clone(),
        },
        QueueReceiver { shared },
    )
}

struct Shared<T> {
    state: Mutex<State<T>>,
    wake: Condvar,
}

struct State<T> {
    items: Vec<T>,
    senders: usize,
    receiver_alive: bool,
    receiver_sleeping: bool,
}

impl<T> Shared<T> {
    /// A panic on the other side while it held the lock leaves a consistent `Vec`; go on.
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub(crate) struct QueueSender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> QueueSender<T> {
    /// Queues `item`, or gives it back if the receiver is gone.
    pub(crate) fn send(&self, item: T) -> Result<(), T> {
        let mut state = self.shared.lock();
        if !state.receiver_alive {
            return Err(item);
        }
        state.items.push(item);
        if std::mem::replace(&mut state.receiver_sleeping, false) {
            self.shared.wake.notify_one();
        }
        Ok(())
    }
}

impl<T> Clone for QueueSender<T> {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        QueueSender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for QueueSender<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.senders -= 1;
        if state.senders == 0 {
            self.shared.wake.notify_one();
        }
    }
}

/// What [`QueueReceiver::take`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Taken {
    /// The buffer now holds everything that was queued, oldest first.
    Items,
    /// The deadline passed with nothing queued.
    Timeout,
    /// Nothing is queued and every sender is gone.
    Closed,
}

pub(crate) struct QueueReceiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> QueueReceiver<T> {
    /// Swaps everything queued into `buffer`, waiting for something until `deadline` (forever
    /// with `None`). `buffer` must be empty: its allocation becomes the senders' next buffer,
    /// cut down to a small size first.
    pub(crate) fn take(&self, buffer: &mut Vec<T>, deadline: Option<Instant>) -> Taken {
        debug_assert!(buffer.is_empty());
        buffer.shrink_to(IDLE_CAPACITY);
        let mut state = self.shared.lock();
        loop {
            if !state.items.is_empty() {
                std::mem::swap(&mut state.items, buffer);
                return Taken::Items;
            }
            if state.senders == 0 {
                return Taken::Closed;
            }
            state.receiver_sleeping = true;
            state = match deadline {
                None => self
                    .shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
                Some(deadline) => {
                    let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                        state.receiver_sleeping = false;
                        return Taken::Timeout;
                    };
                    self.shared
                        .wake
                        .wait_timeout(state, left)
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .0
                }
            };
            state.receiver_sleeping = false;
        }
    }

    /// Like [`take`](Self::take), without waiting.
    pub(crate) fn try_take(&self, buffer: &mut Vec<T>) -> bool {
        self.take(buffer, Some(Instant::now())) == Taken::Items
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.shared.lock().items.is_empty()
    }
}

impl<T> Drop for QueueReceiver<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.receiver_alive = false;
        // What was queued is dropped with the last handle, not under this lock.
        let items = std::mem::take(&mut state.items);
        drop(state);
        drop(items);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn takes_everything_in_order_and_hands_back_a_small_buffer() {
        let (tx, rx) = queue();
        for i in 0..100_000u32 {
            tx.send(i).unwrap();
        }
        let mut buffer = Vec::new();
        assert_eq!(rx.take(&mut buffer, None), Taken::Items);
        assert!(buffer.iter().copied().eq(0..100_000));
        assert!(rx.is_empty());
        buffer.clear();
        tx.send(7).unwrap();
        assert!(rx.try_take(&mut buffer));
        assert_eq!(buffer, [7]);
        // The burst's buffer went back to the senders cut down.
        assert!(rx.shared.lock().items.capacity() <= IDLE_CAPACITY);
    }

    #[test]
    fn times_out_then_wakes_for_a_send_from_another_thread() {
        let (tx, rx) = queue();
        let mut buffer = Vec::new();
        let soon = Instant::now() + Duration::from_millis(20);
        assert_eq!(rx.take(&mut buffer, Some(soon)), Taken::Timeout);
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            tx.send(1).unwrap();
        });
        assert_eq!(rx.take(&mut buffer, None), Taken::Items);
        assert_eq!(buffer, [1]);
        sender.join().unwrap();
        buffer.clear();
        // The only sender is gone.
        assert_eq!(rx.take(&mut buffer, None), Taken::Closed);
    }

    #[test]
    fn a_send_after_the_receiver_is_gone_comes_back() {
        let (tx, rx) = queue();
        let other = tx.clone();
        drop(tx);
        drop(rx);
        assert_eq!(other.send(3), Err(3));
    }
}
