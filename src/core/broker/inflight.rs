//! Outbound QoS 1/2 state of one session: the in-flight window of messages sent but not yet
//! acknowledged, the queue of messages waiting for room in that window (or for the client to come
//! back), and packet identifier allocation.
//!
//! It lives in the session, never in the connection, so it survives reconnects and takeover: on
//! resume every in-flight message is sent again with DUP set, or its PUBREL again, in the original
//! order (MQTT-4.4.0-1, MQTT-4.6.0-1).
//!
//! It also keeps what flow control needs to know of the subscriber: the publishers'
//! acknowledgements that messages queued beyond the limits hold (`acks.rs`), and whether the
//! subscriber still acknowledges anything at all.

use std::collections::VecDeque;

use ahash::AHashSet;

use super::ack_holds::Hold;
use super::message::Delivery;
use crate::protocol::QoS;

/// Where an outbound QoS 1/2 message stands: the acknowledgement it waits for.
#[allow(clippy::enum_variant_names)] // named after the packets, which all start with "Pub"
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaiting {
    /// QoS 1 sent, PUBACK outstanding.
    PubAck,
    /// QoS 2 sent, PUBREC outstanding.
    PubRec,
    /// PUBREL sent, PUBCOMP outstanding. The message itself is delivered.
    PubComp,
}

#[derive(Debug, Clone)]
pub struct InflightMessage {
    pub packet_id: u16,
    pub delivery: Delivery,
    pub state: Awaiting,
}

/// Why an acknowledgement did not match the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMismatch {
    /// No in-flight message has this identifier.
    UnknownPacketId,
    /// The identifier is in flight but in another state (e.g. PUBACK for a QoS 2 message).
    WrongState,
}

/// Messages dropped because a limit was reached, by reason; exposed as counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounters {
    pub queue_full: u64,
    pub expired: u64,
    pub too_large_for_client: u64,
    pub qos0_offline_or_slow: u64,
}

#[derive(Debug, Default)]
pub struct OutboundQueue {
    inflight: VecDeque<InflightMessage>,
    ids_in_use: AHashSet<u16>,
    last_id: u16,
    queued: VecDeque<Delivery>,
    queued_bytes: usize,
    /// Publisher acknowledgements held by messages queued beyond the limits, oldest first. Each
    /// message leaving the queue releases one: the queue has then moved on by a message, which
    /// is all the held one waited for. Never more than there are queued messages. Boxed, and
    /// only while there are some: most sessions never hold anything, and idle ones are many.
    #[allow(clippy::box_collection)] // one pointer in every session instead of four
    holds: Option<Box<VecDeque<Hold>>>,
    /// Acknowledgements received (PUBACK, PUBREC, PUBCOMP): whether the subscriber still reads.
    progress: u64,
    /// `progress` when the running stall check was armed.
    pub stall_check: Option<u64>,
    /// The subscriber acknowledged nothing for a whole stall timeout while it held publishers
    /// back: until it acknowledges again, messages beyond its limits are dropped, not held.
    pub stalled: bool,
    pub dropped: DropCounters,
}

impl OutboundQueue {
    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    pub fn queued_len(&self) -> usize {
        self.queued.len()
    }

    #[cfg(test)]
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// In send order, for resending after a reconnect.
    pub fn inflight(&self) -> impl Iterator<Item = &InflightMessage> {
        self.inflight.iter()
    }

    /// Queued messages, oldest first.
    pub fn queued(&self) -> impl Iterator<Item = &Delivery> {
        self.queued.iter()
    }

    /// Puts back an in-flight message recovered after a restart, with its identifier and state.
    /// Returns false (and restores nothing) if the identifier is already in use.
    pub fn restore_inflight(
        &mut self,
        packet_id: u16,
        delivery: Delivery,
        state: Awaiting,
    ) -> bool {
        if packet_id == 0 || !self.ids_in_use.insert(packet_id) {
            return false;
        }
        self.last_id = packet_id;
        self.inflight.push_back(InflightMessage {
            packet_id,
            delivery,
            state,
        });
        true
    }

    /// Puts a message in flight under a fresh packet identifier and returns that identifier.
    /// The caller has checked the window has room, so an identifier is always free.
    pub fn start(&mut self, delivery: Delivery) -> u16 {
        let packet_id = self.allocate_id();
        let state = if delivery.qos == QoS::ExactlyOnce {
            Awaiting::PubRec
        } else {
            Awaiting::PubAck
        };
        self.inflight.push_back(InflightMessage {
            packet_id,
            delivery,
            state,
        });
        packet_id
    }

    /// PUBACK for QoS 1 or PUBCOMP for QoS 2: the message is done and leaves the window.
    pub fn complete(&mut self, packet_id: u16, expected: Awaiting) -> Result<(), AckMismatch> {
        let index = self.position(packet_id)?;
        if self.inflight[index].state != expected {
            return Err(AckMismatch::WrongState);
        }
        self.inflight.remove(index);
        self.ids_in_use.remove(&packet_id);
        self.note_progress();
        Ok(())
    }

    /// PUBREC: the QoS 2 message moves on to awaiting PUBCOMP. A repeated PUBREC for a message
    /// already released is accepted, so the PUBREL is simply sent again.
    pub fn received(&mut self, packet_id: u16) -> Result<(), AckMismatch> {
        let index = self.position(packet_id)?;
        let entry = &mut self.inflight[index];
        match entry.state {
            Awaiting::PubRec | Awaiting::PubComp => {
                entry.state = Awaiting::PubComp;
                self.note_progress();
                Ok(())
            }
            Awaiting::PubAck => Err(AckMismatch::WrongState),
        }
    }

    /// A PUBREC with an error reason ends the QoS 2 flow without PUBREL (§4.3.3).
    pub fn abandon(&mut self, packet_id: u16) -> Result<(), AckMismatch> {
        self.complete(packet_id, Awaiting::PubRec)
    }

    /// Queues a message behind the window: within the limits (`has_room`), or beyond them with
    /// the publisher acknowledgement it holds. Also puts back messages recovered after a
    /// restart, which were accepted under the limits once.
    pub fn enqueue(&mut self, delivery: Delivery, hold: Option<Hold>) {
        self.queued_bytes += delivery.message.weight();
        self.queued.push_back(delivery);
        if let Some(hold) = hold {
            self.holds.get_or_insert_default().push_back(hold);
        }
    }

    /// Whether a message of `weight` would fit in the queue.
    pub fn has_room(&self, weight: usize, max_messages: usize, max_bytes: usize) -> bool {
        self.queued.len() < max_messages && self.queued_bytes + weight <= max_bytes
    }

    /// Whether the queue is at most half full, by count and bytes: the subscriber keeps up.
    pub fn keeps_up(&self, max_messages: usize, max_bytes: usize) -> bool {
        self.queued.len() <= max_messages / 2 && self.queued_bytes <= max_bytes / 2
    }

    /// The oldest queued message, and the hold its leaving releases.
    pub fn pop_queued(&mut self) -> Option<(Delivery, Option<Hold>)> {
        let delivery = self.queued.pop_front()?;
        self.queued_bytes -= delivery.message.weight();
        let released = self.holds.as_mut().and_then(|holds| holds.pop_front());
        if self.holds.as_ref().is_some_and(|holds| holds.is_empty()) {
            self.holds = None;
        }
        Some((delivery, released))
    }

    /// Drops queued messages for which `keep` is false (expiry sweeps), and hands back the
    /// holds that no queued message is left to release.
    pub fn retain_queued(&mut self, mut keep: impl FnMut(&Delivery) -> bool) -> (usize, Vec<Hold>) {
        let before = self.queued.len();
        let mut bytes = self.queued_bytes;
        self.queued.retain(|delivery| {
            let kept = keep(delivery);
            if !kept {
                bytes -= delivery.message.weight();
            }
            kept
        });
        self.queued_bytes = bytes;
        let dropped = before - self.queued.len();
        let Some(holds) = self.holds.as_mut() else {
            return (dropped, Vec::new());
        };
        let excess = holds.len().saturating_sub(self.queued.len());
        let released = holds.drain(..excess).collect();
        if holds.is_empty() {
            self.holds = None;
        }
        (dropped, released)
    }

    pub fn has_holds(&self) -> bool {
        self.holds.is_some()
    }

    /// Every hold, for release: the subscriber went away or stopped reading. Its messages stay.
    pub fn take_holds(&mut self) -> VecDeque<Hold> {
        self.holds.take().map(|holds| *holds).unwrap_or_default()
    }

    /// Acknowledgements received so far.
    pub fn progress(&self) -> u64 {
        self.progress
    }

    fn note_progress(&mut self) {
        self.progress += 1;
        self.stalled = false;
    }

    fn position(&self, packet_id: u16) -> Result<usize, AckMismatch> {
        // Acknowledgements arrive mostly in order, so the match is near the front.
        self.inflight
            .iter()
            .position(|entry| entry.packet_id == packet_id)
            .ok_or(AckMismatch::UnknownPacketId)
    }

    fn allocate_id(&mut self) -> u16 {
        loop {
            self.last_id = self.last_id.checked_add(1).unwrap_or(1);
            if self.ids_in_use.insert(self.last_id) {
                return self.last_id;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::message::Message;
    use crate::broker::time::Timestamp;
    use crate::protocol::Publish;
    use std::sync::Arc;

    fn delivery(qos: QoS, payload: &'static [u8]) -> Delivery {
        let publish = Publish {
            topic: "t".into(),
            qos,
            packet_id: 1,
            payload: bytes::Bytes::from_static(payload),
            ..Publish::default()
        };
        Delivery {
            id: 0,
            message: Arc::new(Message::from_publish(publish, None, Timestamp::ZERO)),
            qos,
            retain: false,
            subscription_ids: Vec::new(),
        }
    }

    #[test]
    fn qos2_walks_through_its_states() {
        let mut queue = OutboundQueue::default();
        let id = queue.start(delivery(QoS::ExactlyOnce, b"x"));
        assert_eq!(
            queue.complete(id, Awaiting::PubComp),
            Err(AckMismatch::WrongState)
        );
        queue.received(id).unwrap();
        queue.received(id).unwrap();
        queue.complete(id, Awaiting::PubComp).unwrap();
        assert_eq!(queue.inflight_len(), 0);
        assert_eq!(queue.received(id), Err(AckMismatch::UnknownPacketId));
    }

    #[test]
    fn packet_ids_skip_ids_in_flight_and_never_use_zero() {
        let mut queue = OutboundQueue {
            last_id: u16::MAX - 1,
            ..OutboundQueue::default()
        };
        let a = queue.start(delivery(QoS::AtLeastOnce, b"a"));
        let b = queue.start(delivery(QoS::AtLeastOnce, b"b"));
        assert_eq!((a, b), (u16::MAX, 1));
        queue.last_id = u16::MAX - 1;
        let c = queue.start(delivery(QoS::AtLeastOnce, b"c"));
        assert_eq!(c, 2, "65535 and 1 are still in flight");
    }

    #[test]
    fn queue_limits_count_messages_and_bytes() {
        let mut queue = OutboundQueue::default();
        assert!(queue.has_room(5, 2, 100));
        queue.enqueue(delivery(QoS::AtLeastOnce, b"1234"), None);
        queue.enqueue(delivery(QoS::AtLeastOnce, b"1234"), None);
        assert!(!queue.has_room(5, 2, 100), "two messages already");
        assert!(
            !queue.has_room(5, 10, 12),
            "10 bytes queued, 15 would not fit in 12"
        );
        assert_eq!(queue.queued_bytes(), 10);
        assert_eq!(queue.retain_queued(|_| false), (2, Vec::new()));
        assert_eq!(queue.queued_bytes(), 0);
    }

    #[test]
    fn each_message_leaving_releases_one_hold_and_no_hold_outlives_the_queue() {
        let hold = |token| Hold { origin: 0, token };
        let mut queue = OutboundQueue::default();
        queue.enqueue(delivery(QoS::AtLeastOnce, b"a"), None);
        queue.enqueue(delivery(QoS::AtLeastOnce, b"b"), Some(hold(1)));
        queue.enqueue(delivery(QoS::AtLeastOnce, b"c"), Some(hold(2)));
        let (first, released) = queue.pop_queued().unwrap();
        assert_eq!(&first.message.template.payload[..], b"a");
        assert_eq!(released, Some(hold(1)), "the oldest hold goes first");
        // An expiry sweep that empties the queue hands back the hold nobody would release.
        let (dropped, released) = queue.retain_queued(|_| false);
        assert_eq!((dropped, released), (2, vec![hold(2)]));
        assert!(!queue.has_holds());
    }

    #[test]
    fn an_acknowledgement_is_progress_and_ends_a_stall() {
        let mut queue = OutboundQueue::default();
        let id = queue.start(delivery(QoS::AtLeastOnce, b"x"));
        queue.stalled = true;
        queue.complete(id, Awaiting::PubAck).unwrap();
        assert_eq!(queue.progress(), 1);
        assert!(!queue.stalled);
    }
}
