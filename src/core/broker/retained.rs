//! Retained messages (§3.3.1.3): the last retained message per topic, replaced by each new one
//! and cleared by an empty payload. Every shard keeps a copy of the whole set (payloads are
//! shared, not copied), so a subscribe is answered from local memory.
//!
//! The set is bounded by `--max-retained-messages` and `--max-retained-bytes`: a message for a
//! new topic beyond them is not retained. Replacing or clearing a topic's message always works,
//! so a full set never stops a device from updating what it already retained.

use std::sync::Arc;

use super::message::{Message, SharedMessage};
use super::time::Timestamp;
use super::topic::RetainedTree;

#[derive(Debug, Default)]
pub struct Retained {
    tree: RetainedTree<SharedMessage>,
    /// Payload and topic bytes of every message held (`Message::weight`).
    bytes: usize,
}

impl Retained {
    /// Stores, replaces or (empty payload) clears the retained message of the message's topic.
    pub fn store(&mut self, message: SharedMessage) {
        let topic = message.template.topic.clone();
        let replaced = if message.template.payload.is_empty() {
            self.tree.remove(&topic)
        } else {
            self.bytes += message.weight();
            self.tree.insert(&topic, message)
        };
        if let Some(replaced) = replaced {
            self.bytes -= replaced.weight();
        }
    }

    /// Whether `message` may be stored within at most `max_messages` messages and `max_bytes`
    /// bytes (0: no limit): always when it replaces or clears its topic's message.
    pub fn admits(&self, message: &Message, max_messages: usize, max_bytes: usize) -> bool {
        let template = &message.template;
        if template.payload.is_empty() || self.tree.get(&template.topic).is_some() {
            return true;
        }
        (max_messages == 0 || self.tree.len() < max_messages)
            && (max_bytes == 0 || self.bytes + message.weight() <= max_bytes)
    }

    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// The unexpired retained messages matching a (plain) filter, at most `limit` (0: all).
    pub fn matching(&self, filter: &str, now: Timestamp, limit: usize) -> Vec<SharedMessage> {
        let mut found = Vec::new();
        self.tree.for_each_match(filter, |_, message| {
            if (limit == 0 || found.len() < limit) && !message.is_expired(now) {
                found.push(message.clone());
            }
        });
        found
    }

    /// Whether `message` is still its topic's retained message: neither replaced nor cleared
    /// since it was matched.
    pub fn holds(&self, message: &SharedMessage) -> bool {
        self.tree
            .get(&message.template.topic)
            .is_some_and(|stored| Arc::ptr_eq(stored, message))
    }

    /// Every retained message, expired or not, in no particular order: what a snapshot
    /// captures on the shard, leaving the sorting (by topic, so snapshots are deterministic)
    /// to the thread that encodes it.
    pub fn unordered(&self) -> Vec<SharedMessage> {
        let mut all = Vec::with_capacity(self.tree.len());
        self.tree.for_each(|_, message| all.push(message.clone()));
        all
    }

    /// Drops expired messages; returns how many.
    pub fn sweep(&mut self, now: Timestamp) -> usize {
        let before = self.tree.len();
        let bytes = &mut self.bytes;
        self.tree.retain(|_, message| {
            let expired = message.is_expired(now);
            if expired {
                *bytes -= message.weight();
            }
            !expired
        });
        before - self.tree.len()
    }
}
