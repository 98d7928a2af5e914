//! The channels between shards: one bounded flume inbox per shard, which every other shard can
//! send to.
//!
//! Sending never waits. A shard that finds another's inbox full keeps the item in a local
//! overflow queue and retries on its next turn; meanwhile its caller is told the destination is
//! congested, so it can stop reading from the sockets that produce the traffic and let TCP push
//! back on the publishers. Because no shard ever blocks on a full inbox, two shards sending to
//! each other cannot deadlock; because the overflow is reported as it grows, it stays bounded by
//! the caller's policy.

use std::cell::RefCell;
use std::collections::VecDeque;

use crate::ShardId;

/// Items a shard sent that the destination inbox could not take yet, above which the caller is
/// asked to apply backpressure.
pub const CONGESTION_THRESHOLD: usize = 1024;

/// What `send` could not do.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// The destination shard has stopped; the item was dropped.
    Disconnected,
}

/// One shard's view of the mesh: its own inbox and a sender to every shard.
pub struct MeshEndpoint<T> {
    shard: ShardId,
    inbox: flume::Receiver<(ShardId, T)>,
    outboxes: Vec<flume::Sender<(ShardId, T)>>,
    overflow: RefCell<Vec<VecDeque<T>>>,
}

/// Builds the mesh for `shards` shards with inboxes of `capacity` items; endpoint `i` belongs
/// to shard `i`.
pub fn mesh<T>(shards: usize, capacity: usize) -> Vec<MeshEndpoint<T>> {
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..shards).map(|_| flume::bounded(capacity)).unzip();
    receivers
        .into_iter()
        .enumerate()
        .map(|(shard, inbox)| MeshEndpoint {
            shard,
            inbox,
            outboxes: senders.clone(),
            overflow: RefCell::new((0..shards).map(|_| VecDeque::new()).collect()),
        })
        .collect()
}

impl<T> MeshEndpoint<T> {
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    pub fn shard_count(&self) -> usize {
        self.outboxes.len()
    }

    /// Sends without waiting, in order behind anything still in overflow for `to`.
    pub fn send(&self, to: ShardId, item: T) -> Result<(), SendError> {
        let mut overflow = self.overflow.borrow_mut();
        let queue = &mut overflow[to];
        if !queue.is_empty() {
            queue.push_back(item);
            drop(overflow);
            return self.flush_to(to);
        }
        match self.outboxes[to].try_send((self.shard, item)) {
            Ok(()) => Ok(()),
            Err(flume::TrySendError::Full((_, item))) => {
                queue.push_back(item);
                Ok(())
            }
            Err(flume::TrySendError::Disconnected(_)) => Err(SendError::Disconnected),
        }
    }

    /// Moves overflow into destination inboxes as far as they have room.
    pub fn flush(&self) {
        for to in 0..self.outboxes.len() {
            let _ = self.flush_to(to);
        }
    }

    fn flush_to(&self, to: ShardId) -> Result<(), SendError> {
        let mut overflow = self.overflow.borrow_mut();
        let queue = &mut overflow[to];
        while let Some(item) = queue.pop_front() {
            match self.outboxes[to].try_send((self.shard, item)) {
                Ok(()) => {}
                Err(flume::TrySendError::Full((_, item))) => {
                    queue.push_front(item);
                    return Ok(());
                }
                Err(flume::TrySendError::Disconnected(_)) => {
                    queue.clear();
                    return Err(SendError::Disconnected);
                }
            }
        }
        Ok(())
    }

    /// Items waiting in overflow for all destinations.
    pub fn backlog(&self) -> usize {
        self.overflow.borrow().iter().map(VecDeque::len).sum()
    }

    /// True when the overflow is large enough that producers should pause.
    pub fn is_congested(&self) -> bool {
        self.backlog() >= CONGESTION_THRESHOLD
    }

    /// Waits for the next item from any shard; `None` once every sender is gone.
    pub async fn recv(&self) -> Option<(ShardId, T)> {
        self.inbox.recv_async().await.ok()
    }

    /// The next item if one is waiting.
    pub fn try_recv(&self) -> Option<(ShardId, T)> {
        self.inbox.try_recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_arrive_in_order_and_overflow_waits_for_room() {
        let mut endpoints = mesh::<u32>(2, 2);
        let b = endpoints.pop().unwrap();
        let a = endpoints.pop().unwrap();
        for i in 0..5 {
            a.send(1, i).unwrap();
        }
        assert_eq!(a.backlog(), 3, "inbox of 2 full, 3 waiting locally");
        let mut got = Vec::new();
        while got.len() < 5 {
            while let Some((from, item)) = b.try_recv() {
                assert_eq!(from, 0);
                got.push(item);
            }
            a.flush();
        }
        assert_eq!(got, [0, 1, 2, 3, 4]);
        assert_eq!(a.backlog(), 0);
    }

    #[test]
    fn two_shards_flooding_each_other_never_block() {
        let mut endpoints = mesh::<u32>(2, 1);
        let b = endpoints.pop().unwrap();
        let a = endpoints.pop().unwrap();
        for i in 0..2000 {
            a.send(1, i).unwrap();
            b.send(0, i).unwrap();
        }
        assert!(a.is_congested() && b.is_congested());
    }
}
