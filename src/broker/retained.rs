//! Retained messages (§3.3.1.3): the last retained message per topic, replaced by each new one
//! and cleared by an empty payload. Every shard keeps a copy of the whole set (payloads are
//! shared, not copied), so a subscribe is answered from local memory.

use std::sync::Arc;

use super::message::SharedMessage;
use super::time::Timestamp;
use super::topic::RetainedTree;

#[derive(Debug, Default)]
pub struct Retained {
    tree: RetainedTree<SharedMessage>,
}

impl Retained {
    /// Stores, replaces or (empty payload) clears the retained message of the message's topic.
    pub fn store(&mut self, message: SharedMessage) {
        let topic = message.template.topic.clone();
        if message.template.payload.is_empty() {
            self.tree.remove(&topic);
        } else {
            self.tree.insert(&topic, message);
        }
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
        self.tree.retain(|_, message| !message.is_expired(now));
        before - self.tree.len()
    }
}
