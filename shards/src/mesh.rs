//! The channels between shards: one flume inbox per shard, which every other shard can send to,
//! bounded in bytes rather than in items.
//!
//! Sending never waits, so two shards sending to each other can never deadlock. Instead, every
//! item carries its weight (roughly the bytes it keeps alive), each inbox counts the weight sent
//! to it and not yet received, and a sender is told the destination is congested once that count
//! passes the limit. The caller then stops reading the sockets that produce the traffic and lets
//! TCP push back on the publishers, which keeps each inbox within the limit plus what was already
//! read when the pause began. Counting bytes, not items, is what bounds memory: one item may be
//! a batch of a thousand messages or a single small acknowledgement.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What `send` could not do.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// The destination shard has stopped; the item was dropped.
    Disconnected,
}

/// One shard's view of the mesh: its own inbox and a sender to every shard. Shards are named by
/// their index, their position among the runtime's shards (the broker core's `ShardId`).
pub struct MeshEndpoint<T> {
    /// The index of the shard this endpoint belongs to.
    index: usize,
    /// Items sent to this shard, each with its sender's index and its weight.
    inbox: flume::Receiver<(usize, T, usize)>,
    /// By shard index.
    outboxes: Vec<flume::Sender<(usize, T, usize)>>,
    /// Per shard, the weight sent to its inbox and not yet received; shared by every endpoint.
    pending: Arc<[AtomicUsize]>,
    /// Pending weight at which a destination counts as congested.
    limit: usize,
}

/// Builds the mesh for `shards` shards whose inboxes count as congested from `limit` bytes;
/// endpoint `i` belongs to shard `i`.
pub fn mesh<T>(shards: usize, limit: usize) -> Vec<MeshEndpoint<T>> {
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..shards).map(|_| flume::unbounded()).unzip();
    let pending: Arc<[AtomicUsize]> = (0..shards).map(|_| AtomicUsize::new(0)).collect();
    receivers
        .into_iter()
        .enumerate()
        .map(|(index, inbox)| MeshEndpoint {
            index,
            inbox,
            outboxes: senders.clone(),
            pending: pending.clone(),
            limit,
        })
        .collect()
}

impl<T> MeshEndpoint<T> {
    /// The index of the shard this endpoint belongs to.
    pub fn index(&self) -> usize {
        self.index
    }

    pub fn shard_count(&self) -> usize {
        self.outboxes.len()
    }

    /// Sends `item` to the shard of index `to`, without waiting; it keeps about `weight` bytes
    /// alive until received.
    pub fn send(&self, to: usize, item: T, weight: usize) -> Result<(), SendError> {
        self.pending[to].fetch_add(weight, Ordering::Relaxed);
        self.outboxes[to]
            .send((self.index, item, weight))
            .map_err(|_| {
                self.pending[to].fetch_sub(weight, Ordering::Relaxed);
                SendError::Disconnected
            })
    }

    /// Weight sent to the shard of index `to` and not yet received.
    pub fn backlog(&self, to: usize) -> usize {
        self.pending[to].load(Ordering::Relaxed)
    }

    /// True while some other shard's inbox holds more than the limit: producers should pause.
    pub fn is_congested(&self) -> bool {
        (0..self.outboxes.len()).any(|to| to != self.index && self.backlog(to) >= self.limit)
    }

    /// Waits for the next item from any shard, with the index of the shard that sent it; `None`
    /// once every sender is gone.
    pub async fn recv(&self) -> Option<(usize, T)> {
        let received = self.inbox.recv_async().await.ok();
        received.map(|item| self.received(item))
    }

    /// The next item if one is waiting, with the index of the shard that sent it.
    pub fn try_recv(&self) -> Option<(usize, T)> {
        self.inbox.try_recv().ok().map(|item| self.received(item))
    }

    fn received(&self, (from, item, weight): (usize, T, usize)) -> (usize, T) {
        self.pending[self.index].fetch_sub(weight, Ordering::Relaxed);
        (from, item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_arrive_in_order_and_congestion_follows_the_bytes_in_flight() {
        let mut endpoints = mesh::<u32>(2, 100);
        let b = endpoints.pop().unwrap();
        let a = endpoints.pop().unwrap();
        for i in 0..5 {
            a.send(1, i, 30).unwrap();
        }
        assert_eq!(a.backlog(1), 150);
        assert!(a.is_congested(), "150 bytes waiting, the limit is 100");
        assert!(!b.is_congested(), "nothing waits for shard 0");
        let mut got = Vec::new();
        while let Some((from, item)) = b.try_recv() {
            assert_eq!(from, 0);
            got.push(item);
            if got.len() == 2 {
                assert!(!a.is_congested(), "90 bytes left");
            }
        }
        assert_eq!(got, [0, 1, 2, 3, 4]);
        assert_eq!(a.backlog(1), 0);
    }

    #[test]
    fn two_shards_flooding_each_other_never_block() {
        let mut endpoints = mesh::<u32>(2, 1);
        let b = endpoints.pop().unwrap();
        let a = endpoints.pop().unwrap();
        for i in 0..2000 {
            a.send(1, i, 1).unwrap();
            b.send(0, i, 1).unwrap();
        }
        assert!(a.is_congested() && b.is_congested());
    }

    #[test]
    fn sending_to_a_stopped_shard_fails_and_counts_nothing() {
        let mut endpoints = mesh::<u32>(2, 10);
        let b = endpoints.pop().unwrap();
        let a = endpoints.pop().unwrap();
        drop(b);
        assert_eq!(a.send(1, 7, 5), Err(SendError::Disconnected));
        assert_eq!(a.backlog(1), 0);
    }
}
