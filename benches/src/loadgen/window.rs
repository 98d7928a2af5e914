//! The in-flight window of a QoS 1/2 publisher: which packet identifiers are unacknowledged.
//!
//! Why it exists: `--window N` caps the messages a publisher has in flight, and a packet
//! identifier may not be reused while its message is. Acknowledgements usually come back in
//! order, but nothing guarantees it, so identifiers are handed out from a 65535-entry bitmap that
//! skips any still in use rather than from a bare counter.

/// Unacknowledged packet identifiers, at most `limit` of them.
#[derive(Debug, Clone)]
pub struct Window {
    used: Vec<u64>,
    /// The identifier tried next.
    cursor: u16,
    in_flight: usize,
    limit: usize,
}

impl Window {
    /// `limit` is clamped to 1..=65535, the identifiers MQTT has.
    pub fn new(limit: usize) -> Window {
        Window {
            used: vec![0; 65536 / 64],
            cursor: 1,
            in_flight: 0,
            limit: limit.clamp(1, 65535),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    pub fn has_room(&self) -> bool {
        self.in_flight < self.limit
    }

    /// A free identifier, now in flight; `None` when the window is full.
    pub fn acquire(&mut self) -> Option<u16> {
        if !self.has_room() {
            return None;
        }
        loop {
            let id = self.cursor;
            self.cursor = if id == u16::MAX { 1 } else { id + 1 };
            if !self.is_used(id) {
                self.set(id, true);
                self.in_flight += 1;
                return Some(id);
            }
        }
    }

    /// Frees `id`; false if it was not in flight (a stray or repeated acknowledgement).
    pub fn release(&mut self, id: u16) -> bool {
        if id == 0 || !self.is_used(id) {
            return false;
        }
        self.set(id, false);
        self.in_flight -= 1;
        true
    }

    fn is_used(&self, id: u16) -> bool {
        self.used[id as usize / 64] & (1 << (id % 64)) != 0
    }

    fn set(&mut self, id: u16, used: bool) {
        let word = &mut self.used[id as usize / 64];
        if used {
            *word |= 1 << (id % 64);
        } else {
            *word &= !(1 << (id % 64));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_to_the_limit_and_refills_on_release() {
        let mut w = Window::new(3);
        assert_eq!(
            (w.acquire(), w.acquire(), w.acquire()),
            (Some(1), Some(2), Some(3))
        );
        assert_eq!(w.acquire(), None);
        assert!(w.release(2));
        assert!(!w.release(2), "double release");
        assert!(!w.release(0));
        assert_eq!(w.acquire(), Some(4));
        assert_eq!(w.in_flight(), 3);
    }

    #[test]
    fn wraps_past_65535_and_skips_ids_in_flight() {
        let mut w = Window::new(10);
        let stuck = w.acquire().unwrap(); // 1, never acknowledged
        for _ in 0..65534 {
            let id = w.acquire().unwrap();
            assert!(w.release(id));
        }
        // The cursor is back at 1, which is still in flight.
        assert_eq!(w.acquire(), Some(2));
        assert_eq!(stuck, 1);
        assert_eq!(w.in_flight(), 2);
    }
}
