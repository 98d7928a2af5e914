//! Outbound QoS 1/2 state of one session: the in-flight window of messages sent but not yet
//! acknowledged, the queue of messages waiting for room in that window (or for the client to come
//! back), and packet identifier allocation.
//!
//! It lives in the session, never in the connection, so it survives reconnects and takeover: on
//! resume every in-flight message is sent again with DUP set, or its PUBREL again, in the original
//! order (MQTT-4.4.0-1, MQTT-4.6.0-1).

use std::collections::VecDeque;

use ahash::AHashSet;

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

    /// Puts back a queued message recovered after a restart. Limits are not applied: the
    /// message was accepted under them once.
    pub fn restore_queued(&mut self, delivery: Delivery) {
        self.queued_bytes += delivery.message.weight();
        self.queued.push_back(delivery);
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
                Ok(())
            }
            Awaiting::PubAck => Err(AckMismatch::WrongState),
        }
    }

    /// A PUBREC with an error reason ends the QoS 2 flow without PUBREL (§4.3.3).
    pub fn abandon(&mut self, packet_id: u16) -> Result<(), AckMismatch> {
        self.complete(packet_id, Awaiting::PubRec)
    }

    /// Queues a message behind the window; returns false (and counts it) when a limit is hit.
    /// The newest message is the one dropped, as in Mosquitto: what is queued was promised first.
    pub fn enqueue(&mut self, delivery: Delivery, max_messages: usize, max_bytes: usize) -> bool {
        let weight = delivery.message.weight();
        if !self.has_room(weight, max_messages, max_bytes) {
            self.dropped.queue_full += 1;
            return false;
        }
        self.queued_bytes += weight;
        self.queued.push_back(delivery);
        true
    }

    /// Whether a message of `weight` would fit in the queue.
    pub fn has_room(&self, weight: usize, max_messages: usize, max_bytes: usize) -> bool {
        self.queued.len() < max_messages && self.queued_bytes + weight <= max_bytes
    }

    pub fn pop_queued(&mut self) -> Option<Delivery> {
        let delivery = self.queued.pop_front()?;
        self.queued_bytes -= delivery.message.weight();
        Some(delivery)
    }

    /// Drops queued messages for which `keep` is false (expiry sweeps).
    pub fn retain_queued(&mut self, mut keep: impl FnMut(&Delivery) -> bool) -> usize {
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
        before - self.queued.len()
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
    fn queue_limits_drop_the_newest_and_count_it() {
        let mut queue = OutboundQueue::default();
        assert!(queue.enqueue(delivery(QoS::AtLeastOnce, b"1234"), 2, 100));
        assert!(queue.enqueue(delivery(QoS::AtLeastOnce, b"1234"), 2, 100));
        assert!(!queue.enqueue(delivery(QoS::AtLeastOnce, b"1234"), 2, 100));
        assert_eq!(queue.dropped.queue_full, 1);
        assert_eq!(queue.queued_bytes(), 10);
        assert!(!queue.enqueue(delivery(QoS::AtLeastOnce, b"1234"), 10, 12));
        assert_eq!(queue.retain_queued(|_| false), 2);
        assert_eq!(queue.queued_bytes(), 0);
    }
}
