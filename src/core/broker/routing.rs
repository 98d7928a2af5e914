//! Which shard owns a client, and which shards want a publish.
//!
//! Each client id has one home shard, computed by a hash every shard agrees on. Subscriptions
//! are matched exactly only on the shard that holds them; across shards, each shard keeps a
//! replicated *interest* trie that maps filters to the shards with at least one subscriber. It
//! changes only when a shard gains its first or loses its last subscriber for a filter, so a
//! publish is sent once to each shard that can use it and never to the others.
//!
//! Consistency: interest changes travel over the same ordered channels as publishes, and a shard
//! sends its interest change before the SUBACK leaves, so in practice the change is applied
//! everywhere before the subscriber can see its SUBACK. A publish racing a subscribe on another
//! shard within that window may miss the new subscriber, as in any broker whose routing table is
//! replicated (EMQX's route table across nodes behaves the same).

use ahash::AHashMap;
use bytestring::ByteString;

use super::boundary::ShardId;
use super::session::SessionId;
use super::topic::SubscriptionTrie;

/// The home shard of a client id. FNV-1a: fixed, seedless and identical on every shard and
/// every run, which a per-process random hasher would not be.
pub fn home_shard(client_id: &str, shard_count: usize) -> ShardId {
    if shard_count <= 1 {
        return 0;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in client_id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % shard_count as u64) as ShardId
}

/// Key of a local subscription in the shard's subscription trie.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subscriber {
    pub session: SessionId,
    /// The full `$share/group/filter` for a shared subscription.
    pub share: Option<ByteString>,
}

/// Key of the interest trie: a shard, and for shared subscriptions which group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct InterestKey {
    shard: ShardId,
    share: Option<ByteString>,
}

/// Where one publish goes: for each shard, whether its plain subscribers get it and which
/// shared subscriptions it must serve.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Route {
    pub deliver: bool,
    pub groups: Vec<ByteString>,
}

#[derive(Debug)]
pub struct Interest {
    /// The shard this copy belongs to.
    shard: ShardId,
    /// Which shards want which filters. The value of this shard's own keys counts its local
    /// subscribers, to notice the first and the last (the other shards' values are 0): a
    /// separate map of counts would hold every filter a second time, which at a million
    /// subscriptions is the largest structure of a shard after the tries.
    trie: SubscriptionTrie<InterestKey, u32>,
    /// Round-robin position per shared subscription, to spread a group over shards.
    cursors: AHashMap<ByteString, usize>,
    /// Per shared subscription, the shards (sorted) where a member is connected: a group's
    /// messages go to one of them while there is one, rather than into an offline member's
    /// queue while another member idles.
    online: AHashMap<ByteString, Vec<ShardId>>,
    /// This shard's connected members per shared subscription.
    online_here: AHashMap<ByteString, u32>,
}

impl Interest {
    pub fn new(shard: ShardId) -> Interest {
        Interest {
            shard,
            trie: SubscriptionTrie::new(),
            cursors: AHashMap::new(),
            online: AHashMap::new(),
            online_here: AHashMap::new(),
        }
    }

    /// Counts one of this shard's members of `share` connecting (`online`) or disconnecting;
    /// true when it was the shard's first or last, so the other shards must hear.
    pub fn member_online(&mut self, share: &ByteString, online: bool) -> bool {
        let count = self.online_here.entry(share.clone()).or_default();
        let changed = if online {
            *count += 1;
            *count == 1
        } else {
            *count = count.saturating_sub(1);
            *count == 0
        };
        if *count == 0 {
            self.online_here.remove(share);
        }
        if changed {
            self.set_online(self.shard, share, online);
        }
        changed
    }

    /// Applies another shard's news that it has (or no longer has) a connected member of
    /// `share`.
    pub fn apply_online(&mut self, shard: ShardId, share: ByteString, online: bool) {
        if shard != self.shard {
            self.set_online(shard, &share, online);
        }
    }

    fn set_online(&mut self, shard: ShardId, share: &ByteString, online: bool) {
        let shards = self.online.entry(share.clone()).or_default();
        match (shards.binary_search(&shard), online) {
            (Err(at), true) => shards.insert(at, shard),
            (Ok(at), false) => {
                shards.remove(at);
            }
            _ => {}
        }
        if shards.is_empty() {
            self.online.remove(share);
        }
    }

    /// Records a new local subscriber; true when it is the first, so the other shards must hear.
    pub fn add_local(&mut self, filter: &ByteString, share: &Option<ByteString>) -> bool {
        let key = InterestKey {
            shard: self.shard,
            share: share.clone(),
        };
        let count = self.trie.get_or_insert_with(filter, key, || 0);
        *count += 1;
        *count == 1
    }

    /// Forgets a local subscriber; true when it was the last.
    pub fn remove_local(&mut self, filter: &ByteString, share: &Option<ByteString>) -> bool {
        let key = InterestKey {
            shard: self.shard,
            share: share.clone(),
        };
        match self.trie.get_mut(filter, &key) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            Some(_) => {
                self.trie.remove(filter, &key);
                true
            }
            None => false,
        }
    }

    /// Applies an interest change of another shard. This shard's own changes are made by
    /// `add_local` and `remove_local`, which also count its subscribers; one of its own that
    /// came back here is ignored, as it would reset that count.
    pub fn apply(&mut self, shard: ShardId, filter: &str, share: Option<ByteString>, added: bool) {
        if shard == self.shard {
            return;
        }
        let key = InterestKey { shard, share };
        if added {
            self.trie.insert(filter, key, 0);
        } else {
            self.trie.remove(filter, &key);
        }
    }

    /// The route of a publish to `topic` over `shard_count` shards, indexed by shard.
    pub fn route(&mut self, topic: &str, shard_count: usize) -> Vec<Route> {
        let mut routes: Vec<Route> = (0..shard_count).map(|_| Route::default()).collect();
        let matches = self.trie.matches(topic);
        let mut groups: AHashMap<&ByteString, Vec<ShardId>> = AHashMap::new();
        for (key, _) in matches.iter() {
            match &key.share {
                None => routes[key.shard].deliver = true,
                Some(share) => groups.entry(share).or_default().push(key.shard),
            }
        }
        for (share, mut shards) in groups {
            shards.sort_unstable();
            shards.dedup();
            // Shards with a connected member first; a group with none anywhere queues with
            // an offline member as before.
            if let Some(online) = self.online.get(share) {
                let has_online = |shard: &ShardId| online.binary_search(shard).is_ok();
                if shards.iter().any(has_online) {
                    shards.retain(has_online);
                }
            }
            let cursor = self.cursors.entry(share.clone()).or_default();
            let chosen = shards[*cursor % shards.len()];
            *cursor = cursor.wrapping_add(1);
            routes[chosen].groups.push(share.clone());
        }
        routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_shard_is_stable_and_spreads() {
        assert_eq!(home_shard("client-1", 1), 0);
        assert_eq!(home_shard("client-1", 4), home_shard("client-1", 4));
        let mut seen = [0usize; 4];
        for i in 0..1000 {
            seen[home_shard(&format!("client-{i}"), 4)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 150), "{seen:?}");
    }

    #[test]
    fn publishes_go_only_to_interested_shards_and_groups_rotate() {
        let mut interest = Interest::new(0);
        interest.apply(1, "a/+", None, true);
        let share: ByteString = "$share/g/a/#".into();
        assert!(interest.add_local(&"a/#".into(), &Some(share.clone())));
        interest.apply(2, "a/#", Some(share.clone()), true);
        let first = interest.route("a/b", 3);
        assert!(!first[0].deliver && first[1].deliver && !first[2].deliver);
        let second = interest.route("a/b", 3);
        let served: Vec<usize> = [&first, &second]
            .iter()
            .map(|routes| {
                routes
                    .iter()
                    .position(|r| r.groups == [share.clone()])
                    .unwrap()
            })
            .collect();
        assert_eq!(served, vec![0, 2]);
        assert!(interest
            .route("b", 3)
            .iter()
            .all(|r| *r == Route::default()));
        interest.apply(1, "a/+", None, false);
        assert!(!interest.route("a/b", 3)[1].deliver);
    }

    #[test]
    fn local_counts_report_first_and_last() {
        let mut interest = Interest::new(1);
        let filter: ByteString = "x".into();
        assert!(interest.add_local(&filter, &None));
        assert!(!interest.add_local(&filter, &None));
        assert!(interest.route("x", 2)[1].deliver);
        // The announcement of this shard's own change comes back through `apply`: no effect.
        interest.apply(1, "x", None, false);
        assert!(!interest.remove_local(&filter, &None));
        assert!(interest.route("x", 2)[1].deliver);
        assert!(interest.remove_local(&filter, &None));
        assert!(!interest.remove_local(&filter, &None));
        assert!(!interest.route("x", 2)[1].deliver);
    }
}
