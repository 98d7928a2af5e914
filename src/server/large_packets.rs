//! Memory held by packets larger than one read while they arrive.
//!
//! A receive buffer grows to hold a packet that does not fit one read (up to the maximum packet
//! size, 256 MiB by default), and nothing of it can be delivered before its last byte is in. A
//! few hundred clients each starting such a packet would hold gigabytes, so this growth shares
//! the shard's buffer budget with unsent output: past the budget a reader waits before growing
//! its buffer, and TCP slows its client down. The packet that started first may always grow, so
//! the oldest always completes, then the next: every packet gets in, none waits for ever, and
//! at most one packet's worth runs over the budget.

use std::cell::RefCell;
use std::collections::BTreeMap;

/// The shard's large packets in progress, in the order they started.
#[derive(Debug, Default)]
pub(super) struct LargePackets {
    next_ticket: u64,
    /// Receive buffer bytes held, by ticket.
    held: BTreeMap<u64, usize>,
    held_bytes: usize,
}

/// One reader's place among the large packets. `None` while its packet fits a read.
pub(super) type Ticket = Option<u64>;

impl LargePackets {
    /// Whether the reader holding `ticket` (given one now if it had none, holding `capacity`
    /// bytes) may grow its buffer by `growth` bytes, with `unsent` bytes of output waiting on
    /// the shard and a budget of `budget` for both.
    pub fn may_grow(
        &mut self,
        ticket: &mut Ticket,
        capacity: usize,
        growth: usize,
        unsent: usize,
        budget: usize,
    ) -> bool {
        let mine = *ticket.get_or_insert_with(|| {
            let ticket = self.next_ticket;
            self.next_ticket += 1;
            self.held.insert(ticket, capacity);
            self.held_bytes += capacity;
            ticket
        });
        let oldest = self.held.keys().next() == Some(&mine);
        oldest || self.held_bytes + unsent + growth <= budget
    }

    /// Records the buffer size of `ticket`'s reader after a read. A buffer back within one
    /// read's size means its large packet is complete and handed on: the ticket is given up.
    pub fn update(&mut self, ticket: &mut Ticket, capacity: usize, read_size: usize) {
        let Some(mine) = *ticket else {
            return;
        };
        if capacity <= read_size {
            self.release(ticket);
        } else if let Some(held) = self.held.get_mut(&mine) {
            self.held_bytes = self.held_bytes - *held + capacity;
            *held = capacity;
        }
    }

    /// Gives up `ticket` (the connection closed or moved to another shard).
    pub fn release(&mut self, ticket: &mut Ticket) {
        if let Some(held) = ticket.take().and_then(|mine| self.held.remove(&mine)) {
            self.held_bytes -= held;
        }
    }
}

/// A reader's ticket, given back when the reader ends however it ends.
pub(super) struct LargePacketTicket<'a> {
    packets: &'a RefCell<LargePackets>,
    ticket: Ticket,
}

impl<'a> LargePacketTicket<'a> {
    pub fn new(packets: &'a RefCell<LargePackets>) -> Self {
        LargePacketTicket {
            packets,
            ticket: None,
        }
    }

    /// See `LargePackets::may_grow`.
    pub fn may_grow(
        &mut self,
        capacity: usize,
        growth: usize,
        unsent: usize,
        budget: usize,
    ) -> bool {
        let ticket = &mut self.ticket;
        self.packets
            .borrow_mut()
            .may_grow(ticket, capacity, growth, unsent, budget)
    }

    /// See `LargePackets::update`.
    pub fn update(&mut self, capacity: usize, read_size: usize) {
        if self.ticket.is_some() {
            self.packets
                .borrow_mut()
                .update(&mut self.ticket, capacity, read_size);
        }
    }
}

impl Drop for LargePacketTicket<'_> {
    fn drop(&mut self) {
        self.packets.borrow_mut().release(&mut self.ticket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const READ: usize = 8192;
    const MIB: usize = 1 << 20;

    #[test]
    fn within_the_budget_every_packet_grows() {
        let mut packets = LargePackets::default();
        let (mut first, mut second) = (None, None);
        assert!(packets.may_grow(&mut first, READ, READ, 0, 10 * MIB));
        assert!(packets.may_grow(&mut second, READ, READ, 0, 10 * MIB));
        assert_eq!(packets.held_bytes, 2 * READ);
    }

    #[test]
    fn past_the_budget_only_the_oldest_grows_until_it_completes() {
        let mut packets = LargePackets::default();
        let (mut first, mut second, mut third) = (None, None, None);
        assert!(packets.may_grow(&mut first, READ, READ, 0, 4 * MIB));
        assert!(packets.may_grow(&mut second, READ, READ, 0, 4 * MIB));
        packets.update(&mut first, 3 * MIB, READ);
        packets.update(&mut second, MIB, READ);
        // 4 MiB held: the younger ones wait, the oldest goes on, even past the budget.
        assert!(!packets.may_grow(&mut second, MIB, MIB, 0, 4 * MIB));
        assert!(!packets.may_grow(&mut third, READ, READ, 0, 4 * MIB));
        assert!(packets.may_grow(&mut first, 3 * MIB, 3 * MIB, 0, 4 * MIB));
        packets.update(&mut first, 6 * MIB, READ);
        assert_eq!(packets.held_bytes, 7 * MIB + READ);
        // The oldest packet is in: its buffer is back to a read's size, and the next in line
        // goes on.
        packets.update(&mut first, READ, READ);
        assert_eq!(first, None);
        assert!(packets.may_grow(&mut second, MIB, MIB, 0, 4 * MIB));
        assert!(!packets.may_grow(&mut third, READ, 4 * MIB, 0, 4 * MIB));
    }

    #[test]
    fn unsent_output_counts_against_the_same_budget() {
        let mut packets = LargePackets::default();
        let (mut first, mut second) = (None, None);
        assert!(packets.may_grow(&mut first, READ, READ, 0, 4 * MIB));
        assert!(!packets.may_grow(&mut second, READ, READ, 4 * MIB, 4 * MIB));
        // Output waiting on the shard never stops the oldest packet.
        assert!(packets.may_grow(&mut first, READ, MIB, 100 * MIB, 4 * MIB));
    }

    #[test]
    fn a_closed_connection_gives_its_place_and_bytes_back() {
        let mut packets = LargePackets::default();
        let (mut first, mut second) = (None, None);
        assert!(packets.may_grow(&mut first, READ, READ, 0, MIB));
        packets.update(&mut first, 2 * MIB, READ);
        assert!(!packets.may_grow(&mut second, READ, READ, 0, MIB));
        packets.release(&mut first);
        assert_eq!(first, None);
        assert!(packets.may_grow(&mut second, READ, READ, 0, MIB));
        assert_eq!(packets.held_bytes, READ);
    }
}
