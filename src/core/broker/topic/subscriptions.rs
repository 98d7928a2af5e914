//! The subscription trie: which subscribers want a PUBLISH to a given topic name.
//!
//! Laid out like NATS's sublist: each level is a map of literal children plus
//! dedicated `+` and `#` slots, so a match follows at most three edges per level and never scans
//! siblings, whatever the tree's width. A bounded per-trie cache of results, negative ones
//! included, turns a repeated publish to the same topic into one hash lookup.

use super::small_map::{Label, SmallMap};
use crate::protocol::topic::{has_wildcards, is_dollar_topic, levels, Levels};
use ahash::AHashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

/// Cached topics per trie unless [`SubscriptionTrie::with_cache_capacity`] says otherwise: enough
/// for a shard's hot topics, small enough that dropping half of it is cheap.
pub const DEFAULT_CACHE_CAPACITY: usize = 4096;

/// How the match cache of a [`SubscriptionTrie`] has been doing, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// [`SubscriptionTrie::matches`] calls answered from the cache.
    pub hits: u64,
    /// [`SubscriptionTrie::matches`] calls that walked the trie (every call when the cache is
    /// disabled).
    pub misses: u64,
    /// Entries dropped because the cache was full. Entries dropped because a subscription changed
    /// are not counted: that is invalidation, not pressure.
    pub evictions: u64,
}

/// A node's subscribers. Nearly every filter has exactly one (a device's own topics, the one
/// shard interested in them), so that one is held in the node itself, with no allocation.
enum Subscribers<K, V> {
    One(K, V),
    /// Empty, or more than one (it does not go back to `One` when it shrinks).
    Set(SmallMap<K, V>),
}

impl<K, V> Default for Subscribers<K, V> {
    fn default() -> Self {
        Subscribers::Set(SmallMap::default())
    }
}

impl<K: Eq + Hash, V> Subscribers<K, V> {
    fn len(&self) -> usize {
        match self {
            Subscribers::One(..) => 1,
            Subscribers::Set(set) => set.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get(&self, key: &K) -> Option<&V> {
        match self {
            Subscribers::One(k, v) => (k == key).then_some(v),
            Subscribers::Set(set) => set.get(key),
        }
    }

    fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        match self {
            Subscribers::One(k, v) => (k == key).then_some(v),
            Subscribers::Set(set) => set.get_mut(key),
        }
    }

    fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self {
            Subscribers::One(k, v) if *k == key => Some(std::mem::replace(v, value)),
            Subscribers::Set(set) if set.is_empty() => {
                *self = Subscribers::One(key, value);
                None
            }
            Subscribers::Set(set) => set.insert(key, value),
            Subscribers::One(..) => {
                let Subscribers::One(first, first_value) = std::mem::take(self) else {
                    unreachable!("matched One above");
                };
                let mut set = SmallMap::default();
                set.insert(first, first_value);
                set.insert(key, value);
                *self = Subscribers::Set(set);
                None
            }
        }
    }

    fn get_or_insert_with(
        &mut self,
        key: &K,
        own: impl FnOnce(&K) -> K,
        make: impl FnOnce() -> V,
    ) -> &mut V {
        if self.get(key).is_none() {
            self.insert(own(key), make());
        }
        self.get_mut(key).expect("present or just inserted")
    }

    fn remove(&mut self, key: &K) -> Option<V> {
        match self {
            Subscribers::One(k, _) if k == key => match std::mem::take(self) {
                Subscribers::One(_, value) => Some(value),
                Subscribers::Set(_) => unreachable!("matched One above"),
            },
            Subscribers::One(..) => None,
            Subscribers::Set(set) => set.remove(key),
        }
    }

    fn for_each(&self, mut f: impl FnMut(&K, &V)) {
        match self {
            Subscribers::One(k, v) => f(k, v),
            Subscribers::Set(set) => set.for_each(f),
        }
    }
}

/// A trie of subscription filters mapping each `(filter, key)` to a value.
///
/// `K` identifies a subscriber (a session, a shared-subscription group member, or a shard index
/// in the replicated cross-shard interest map) and `V` is what the publish path needs about the
/// subscription (options, identifiers, or `()`).
pub struct SubscriptionTrie<K, V> {
    root: Node<K, V>,
    len: usize,
    cache: MatchCache<K, V>,
    /// Shared by every empty result, so a publish nobody wants allocates no result of its own.
    empty: Arc<[(K, V)]>,
}

impl<K: Clone + Eq + Hash, V: Clone> SubscriptionTrie<K, V> {
    pub fn new() -> Self {
        Self::with_cache_capacity(DEFAULT_CACHE_CAPACITY)
    }

    /// A trie whose match cache holds at most `capacity` topics; 0 disables the cache, for tries
    /// that change more often than they are matched.
    pub fn with_cache_capacity(capacity: usize) -> Self {
        Self {
            root: Node::default(),
            len: 0,
            cache: MatchCache::new(capacity),
            empty: Arc::from(Vec::new()),
        }
    }

    /// Adds or replaces `key`'s subscription to `filter` (a validated *plain* filter —
    /// shared-subscription groups are the caller's business, encoded in `K`). Returns the
    /// previous value.
    pub fn insert(&mut self, filter: &str, key: K, value: V) -> Option<V> {
        // Also on replacement: cached results hold clones of the old value.
        self.cache.invalidate(filter);
        let previous = self.root.subscribers_or_insert(filter).insert(key, value);
        if previous.is_none() {
            self.len += 1;
        }
        previous
    }

    /// Removes `key`'s subscription to `filter`, pruning nodes left without subscribers or
    /// children. Returns the removed value.
    pub fn remove(&mut self, filter: &str, key: &K) -> Option<V> {
        let subscribers = self.root.subscribers_mut(filter)?;
        let removed = subscribers.remove(key)?;
        let emptied = subscribers.is_empty();
        self.len -= 1;
        self.cache.invalidate(filter);
        if emptied {
            self.root.prune(filter);
        }
        Some(removed)
    }

    pub fn get(&self, filter: &str, key: &K) -> Option<&V> {
        self.root.subscribers(filter)?.get(key)
    }

    /// `key`'s value for `filter`, to change in place (cached results are dropped as by
    /// [`SubscriptionTrie::insert`]).
    pub fn get_mut(&mut self, filter: &str, key: &K) -> Option<&mut V> {
        let value = self.root.subscribers_mut(filter)?.get_mut(key)?;
        self.cache.invalidate(filter);
        Some(value)
    }

    /// `key`'s value for `filter`, inserting `make()` first if it has none: one walk where
    /// `get` then `insert` would take two. Cached results are dropped as by `insert`.
    pub fn get_or_insert_with(&mut self, filter: &str, key: K, make: impl FnOnce() -> V) -> &mut V {
        self.cache.invalidate(filter);
        let subscribers = self.root.subscribers_or_insert(filter);
        if subscribers.get(&key).is_none() {
            self.len += 1;
        }
        subscribers.get_or_insert_with(&key, K::clone, make)
    }

    /// All `(key, value)` whose filter matches `topic` (a validated topic name); one entry per
    /// `(filter, key)`, so a key subscribed through two overlapping filters appears twice.
    /// Cached.
    pub fn matches(&mut self, topic: &str) -> Arc<[(K, V)]> {
        if let Some(hit) = self.cache.get(topic) {
            return hit;
        }
        let mut found = Vec::new();
        self.for_each_match(topic, |key, value| found.push((key.clone(), value.clone())));
        let result = if found.is_empty() {
            Arc::clone(&self.empty)
        } else {
            Arc::from(found)
        };
        self.cache.store(topic, &result);
        result
    }

    /// Uncached walk calling `f` for each match (for callers that must not allocate).
    ///
    /// Allocates only when more than 16 `+` branches are pending at once, which takes a
    /// pathological set of filters.
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(&K, &V)) {
        let mut forks = Forks::new();
        // MQTT-4.7.2-1 concerns a filter's first level only, so only the root's wildcard slots
        // are skipped for a `$` topic.
        let mut next = self
            .root
            .step(levels(topic), !is_dollar_topic(topic), &mut forks, &mut f);
        while let Some((node, rest)) = next.take().or_else(|| forks.pop()) {
            next = node.step(rest, true, &mut forks, &mut f);
        }
    }

    /// The number of `(filter, key)` entries.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats
    }
}

impl<K: Clone + Eq + Hash, V: Clone> Default for SubscriptionTrie<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V> fmt::Debug for SubscriptionTrie<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionTrie")
            .field("len", &self.len)
            .field("cached_topics", &self.cache.entries.len())
            .field("cache_capacity", &self.cache.capacity)
            .field("cache_stats", &self.cache.stats)
            .finish_non_exhaustive()
    }
}

/// Children are held in their parent's `literal` entries, not boxed one by one, and a leaf's
/// one subscriber in the node itself; a leaf (most nodes are) has no branches at all. So a leaf
/// with a short level and one subscriber is 88 bytes in its parent's vector and no allocation
/// of its own (see `small_map.rs` for why size matters).
struct Node<K, V> {
    /// `None` while the node has no children and no `#` subscribers.
    branches: Option<Box<Branches<K, V>>>,
    /// Subscribers whose filter ends at this node.
    subscribers: Subscribers<K, V>,
}

struct Branches<K, V> {
    literal: SmallMap<Label, Node<K, V>>,
    plus: Option<Box<Node<K, V>>>,
    /// `#` is always a filter's last level, so its slot holds subscribers rather than a node.
    pound: Option<Box<Subscribers<K, V>>>,
}

impl<K, V> Default for Node<K, V> {
    fn default() -> Self {
        Self {
            branches: None,
            subscribers: Subscribers::default(),
        }
    }
}

impl<K, V> Default for Branches<K, V> {
    fn default() -> Self {
        Self {
            literal: SmallMap::default(),
            plus: None,
            pound: None,
        }
    }
}

impl<K: Eq + Hash, V> Branches<K, V> {
    fn is_empty(&self) -> bool {
        self.literal.is_empty() && self.plus.is_none() && self.pound.is_none()
    }
}

impl<K: Eq + Hash, V> Node<K, V> {
    fn child(&self, level: &str) -> Option<&Self> {
        let branches = self.branches.as_deref()?;
        match level {
            "+" => branches.plus.as_deref(),
            _ => branches.literal.get(level.as_bytes()),
        }
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Self> {
        let branches = self.branches.as_deref_mut()?;
        match level {
            "+" => branches.plus.as_deref_mut(),
            _ => branches.literal.get_mut(level.as_bytes()),
        }
    }

    fn pound(&self) -> Option<&Subscribers<K, V>> {
        self.branches.as_deref()?.pound.as_deref()
    }

    fn branches_mut(&mut self) -> &mut Branches<K, V> {
        self.branches.get_or_insert_default()
    }

    /// Drops the branches once nothing is left in them.
    fn tidy(&mut self) {
        if self
            .branches
            .as_ref()
            .is_some_and(|branches| branches.is_empty())
        {
            self.branches = None;
        }
    }

    fn is_empty(&self) -> bool {
        self.subscribers.is_empty()
            && self
                .branches
                .as_ref()
                .is_none_or(|branches| branches.is_empty())
    }

    /// Whether this node would be empty without its one child.
    fn only_leads_on(&self) -> bool {
        self.subscribers.is_empty()
            && self.branches.as_ref().is_some_and(|branches| {
                branches.pound.is_none()
                    && branches.literal.len() + usize::from(branches.plus.is_some()) == 1
            })
    }

    /// Matches the next level of a topic at this node: reports the `#` subscribers (and, when
    /// the topic has ended, those whose filter ends here), queues the `+` branch, and returns
    /// the literal branch to continue with.
    fn step<'n, 't>(
        &'n self,
        mut rest: Levels<'t>,
        wildcards: bool,
        forks: &mut Forks<(&'n Self, Levels<'t>)>,
        f: &mut impl FnMut(&K, &V),
    ) -> Option<(&'n Self, Levels<'t>)> {
        let Some(level) = rest.next() else {
            self.subscribers.for_each(&mut *f);
            // `a/#` also matches `a`.
            if let Some(pound) = self.pound() {
                pound.for_each(&mut *f);
            }
            return None;
        };
        let branches = self.branches.as_deref()?;
        if wildcards {
            if let Some(pound) = &branches.pound {
                pound.for_each(&mut *f);
            }
            if let Some(plus) = &branches.plus {
                forks.push((plus, rest.clone()));
            }
        }
        branches
            .literal
            .get(level.as_bytes())
            .map(|child| (child, rest))
    }

    fn subscribers(&self, filter: &str) -> Option<&Subscribers<K, V>> {
        let mut node = self;
        for level in levels(filter) {
            if level == "#" {
                return node.pound();
            }
            node = node.child(level)?;
        }
        Some(&node.subscribers)
    }

    fn subscribers_mut(&mut self, filter: &str) -> Option<&mut Subscribers<K, V>> {
        let mut node = self;
        for level in levels(filter) {
            if level == "#" {
                return node.branches.as_deref_mut()?.pound.as_deref_mut();
            }
            node = node.child_mut(level)?;
        }
        Some(&mut node.subscribers)
    }

    fn subscribers_or_insert(&mut self, filter: &str) -> &mut Subscribers<K, V> {
        let mut node = self;
        for level in levels(filter) {
            let branches = node.branches_mut();
            node = match level {
                "#" => return branches.pound.get_or_insert_default(),
                "+" => branches.plus.get_or_insert_default(),
                _ => branches.literal.get_or_insert_with(
                    level.as_bytes(),
                    |_| Label::new(level),
                    Node::default,
                ),
            };
        }
        &mut node.subscribers
    }

    /// Removes the nodes that existed only to hold `filter`'s now-empty subscriber set.
    ///
    /// Iterative rather than recursive, like every walk here: a valid filter can be 32768
    /// levels deep.
    fn prune(&mut self, filter: &str) {
        let path = || levels(filter).take_while(|&level| level != "#");
        let Some(end) = path().try_fold(&mut *self, |node, level| node.child_mut(level)) else {
            return;
        };
        if let Some(branches) = end.branches.as_deref_mut() {
            if branches
                .pound
                .as_ref()
                .is_some_and(|pound| pound.is_empty())
            {
                branches.pound = None;
            }
        }
        end.tidy();
        // Find the topmost node of the chain that only leads to the now-empty end node.
        let mut node = &*self;
        let mut depth = 0;
        let mut chain_start = None;
        for level in path() {
            if depth == 0 || !node.only_leads_on() {
                chain_start = None;
            } else if chain_start.is_none() {
                chain_start = Some(depth);
            }
            let Some(child) = node.child(level) else {
                return;
            };
            node = child;
            depth += 1;
        }
        if depth == 0 || !node.is_empty() {
            return;
        }
        let cut = chain_start.unwrap_or(depth);
        let mut rest = path();
        let Some(parent) = rest
            .by_ref()
            .take(cut - 1)
            .try_fold(&mut *self, |node, level| node.child_mut(level))
        else {
            return;
        };
        if let (Some(branches), Some(level)) = (parent.branches.as_deref_mut(), rest.next()) {
            match level {
                "+" => branches.plus = None,
                _ => {
                    branches.literal.remove(level.as_bytes());
                }
            }
        }
        parent.tidy();
    }
}

impl<K, V> Drop for Node<K, V> {
    /// Dismantles the subtree with an explicit stack: the default recursive drop could overflow
    /// the thread's stack on a valid 32768-level filter.
    fn drop(&mut self) {
        if self.branches.is_none() {
            return;
        }
        let mut orphans = Vec::new();
        self.detach_children(&mut orphans);
        while let Some(mut node) = orphans.pop() {
            node.detach_children(&mut orphans);
        }
    }
}

impl<K, V> Node<K, V> {
    fn detach_children(&mut self, into: &mut Vec<Self>) {
        let Some(mut branches) = self.branches.take() else {
            return;
        };
        branches.literal.drain_values(|child| into.push(child));
        if let Some(plus) = branches.plus.take() {
            into.push(*plus);
        }
    }
}

/// Pending `+` branches of a match that fit on the stack; deeper forking spills to the heap.
/// Real topics fork at a handful of levels at most.
const INLINE_FORKS: usize = 16;

/// The branches a match still has to walk, kept explicitly rather than by recursion because a
/// valid topic can be 32768 levels deep.
struct Forks<T> {
    inline: [Option<T>; INLINE_FORKS],
    len: usize,
    spilled: Vec<T>,
}

impl<T> Forks<T> {
    fn new() -> Self {
        Self {
            inline: [const { None }; INLINE_FORKS],
            len: 0,
            spilled: Vec::new(),
        }
    }

    fn push(&mut self, item: T) {
        match self.inline.get_mut(self.len) {
            Some(slot) => {
                *slot = Some(item);
                self.len += 1;
            }
            None => self.spilled.push(item),
        }
    }

    /// Last in, first out: `spilled` only fills while `inline` is full.
    fn pop(&mut self) -> Option<T> {
        if let Some(item) = self.spilled.pop() {
            return Some(item);
        }
        self.len = self.len.checked_sub(1)?;
        self.inline.get_mut(self.len)?.take()
    }
}

/// Results of recent matches, keyed by topic name.
///
/// Invalidation is deliberately blunt. A subscribe or unsubscribe with an exact filter can only
/// change the result for the identical topic, so just that entry goes. A wildcard filter can
/// change any number of entries; finding them means testing the filter against every cached
/// topic (NATS then patches each result copy-on-write), which makes every subscribe cost
/// O(cache) even when nothing is published in between. Instead the whole cache is marked stale
/// in O(1) and cleared on the next lookup, so a burst of wildcard (un)subscribes costs one clear,
/// and a clear costs no more than the misses that filled the cache since the last one. Either
/// way a cached result, including a cached empty one, never outlives a change that affects it.
struct MatchCache<K, V> {
    entries: AHashMap<Box<str>, Arc<[(K, V)]>>,
    capacity: usize,
    stale: bool,
    stats: CacheStats,
}

impl<K, V> MatchCache<K, V> {
    fn new(capacity: usize) -> Self {
        Self {
            entries: AHashMap::new(),
            capacity,
            stale: false,
            stats: CacheStats::default(),
        }
    }

    fn get(&mut self, topic: &str) -> Option<Arc<[(K, V)]>> {
        if self.stale {
            self.entries.clear();
            self.stale = false;
        }
        let hit = self.entries.get(topic).map(Arc::clone);
        match hit {
            Some(_) => self.stats.hits += 1,
            None => self.stats.misses += 1,
        }
        hit
    }

    fn store(&mut self, topic: &str, result: &Arc<[(K, V)]>) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() >= self.capacity {
            // Dropping an arbitrary half (hash order) rather than tracking recency keeps hits
            // free of bookkeeping, and the O(capacity) sweep is paid once per capacity/2 misses.
            let mut excess = self.entries.len() - self.capacity / 2;
            self.stats.evictions += excess as u64;
            self.entries.retain(|_, _| {
                let keep = excess == 0;
                excess = excess.saturating_sub(1);
                keep
            });
        }
        self.entries.insert(topic.into(), Arc::clone(result));
    }

    fn invalidate(&mut self, filter: &str) {
        // Nothing cached, nothing to drop: spares scanning and hashing every filter while a
        // trie is being filled (a restore inserts millions).
        if self.entries.is_empty() {
            return;
        }
        if has_wildcards(filter) {
            self.stale = true;
        } else if !self.stale {
            self.entries.remove(filter);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::strategies::{filter, topic};
    use super::*;
    use crate::protocol::topic::{matches_filter, validate_topic_filter};
    use proptest::prelude::*;

    fn sorted<K: Ord + Clone, V: Ord + Clone>(matches: &[(K, V)]) -> Vec<(K, V)> {
        let mut matches = matches.to_vec();
        matches.sort();
        matches
    }

    fn walked<K: Ord + Clone + Hash, V: Ord + Clone>(
        trie: &SubscriptionTrie<K, V>,
        topic: &str,
    ) -> Vec<(K, V)> {
        let mut found = Vec::new();
        trie.for_each_match(topic, |k, v| found.push((k.clone(), v.clone())));
        found.sort();
        found
    }

    /// Every node but the root must hold subscribers or lead to some, and no node keeps
    /// empty branches.
    fn assert_pruned<K: Eq + Hash, V>(trie: &SubscriptionTrie<K, V>) {
        let mut stack: Vec<&Node<K, V>> = vec![&trie.root];
        while let Some(node) = stack.pop() {
            let Some(branches) = node.branches.as_deref() else {
                continue;
            };
            assert!(!branches.is_empty(), "empty branches left behind");
            if let Some(pound) = &branches.pound {
                assert!(!pound.is_empty(), "empty # slot left behind");
            }
            for child in branches.literal.values().chain(branches.plus.as_deref()) {
                assert!(!child.is_empty(), "empty node left behind");
                stack.push(child);
            }
        }
    }

    // §4.7.1–§4.7.3 examples and the edge cases they imply.
    const MATCHES: &[(&str, &str)] = &[
        ("sport/tennis/player1/#", "sport/tennis/player1"),
        ("sport/tennis/player1/#", "sport/tennis/player1/ranking"),
        (
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon",
        ),
        ("sport/#", "sport"),
        ("#", "sport/tennis"),
        ("#", "/"),
        ("sport/tennis/+", "sport/tennis/player1"),
        ("sport/+", "sport/"),
        ("+", "sport"),
        ("+/tennis/#", "sport/tennis"),
        ("sport/+/player1", "sport/tennis/player1"),
        ("+/+", "/finance"),
        ("/+", "/finance"),
        ("$SYS/#", "$SYS"),
        ("$SYS/#", "$SYS/monitor/Clients"),
        ("$SYS/monitor/+", "$SYS/monitor/Clients"),
        ("a/+", "a/$b"),
        ("a/+/b", "a//b"),
        ("/", "/"),
    ];

    const NON_MATCHES: &[(&str, &str)] = &[
        ("sport/tennis/+", "sport/tennis/player1/ranking"),
        ("sport/+", "sport"),
        ("+", "/finance"),
        ("#", "$SYS"),
        ("#", "$SYS/monitor/Clients"),
        ("+/monitor/Clients", "$SYS/monitor/Clients"),
        ("+/#", "$SYS/x"),
        ("ACCOUNTS", "Accounts"),
        ("/finance", "finance"),
        ("a/b/#", "a"),
        ("sport/#", "sports"),
    ];

    #[test]
    fn spec_examples() {
        for (filter, topic, expected) in MATCHES
            .iter()
            .map(|&(f, t)| (f, t, true))
            .chain(NON_MATCHES.iter().map(|&(f, t)| (f, t, false)))
        {
            assert_eq!(matches_filter(filter, topic), expected, "{filter} {topic}");
            for capacity in [0, DEFAULT_CACHE_CAPACITY] {
                let mut trie = SubscriptionTrie::with_cache_capacity(capacity);
                trie.insert(filter, 1, ());
                let found = trie.matches(topic);
                assert_eq!(found.len(), usize::from(expected), "{filter} {topic}");
                assert_eq!(walked(&trie, topic).len(), usize::from(expected));
            }
        }
    }

    #[test]
    fn all_filters_together() {
        let mut trie = SubscriptionTrie::new();
        for (i, (filter, _)) in MATCHES.iter().chain(NON_MATCHES).enumerate() {
            trie.insert(filter, i, ());
        }
        for &(_, topic) in MATCHES.iter().chain(NON_MATCHES) {
            let mut expected: Vec<_> = MATCHES
                .iter()
                .chain(NON_MATCHES)
                .enumerate()
                .filter(|(_, (filter, _))| matches_filter(filter, topic))
                .map(|(i, _)| (i, ()))
                .collect();
            expected.sort();
            assert_eq!(sorted(&trie.matches(topic)), expected, "{topic}");
        }
    }

    #[test]
    fn dollar_topics_only_match_explicit_first_levels() {
        let mut trie = SubscriptionTrie::new();
        trie.insert("#", "all", ());
        trie.insert("+/monitor/#", "plus", ());
        trie.insert("$SYS/#", "sys", ());
        trie.insert("$SYS/+/Clients", "sys-plus", ());
        assert_eq!(
            sorted(&trie.matches("$SYS/monitor/Clients")),
            [("sys", ()), ("sys-plus", ())]
        );
        assert_eq!(
            sorted(&trie.matches("x/monitor")),
            [("all", ()), ("plus", ())]
        );
        assert_eq!(sorted(&trie.matches("$SYS")), [("sys", ())]);
    }

    #[test]
    fn overlapping_filters_report_each_subscription() {
        let mut trie = SubscriptionTrie::new();
        for filter in ["a/b", "a/+", "a/#", "#", "+/b"] {
            trie.insert(filter, 7, filter.len());
        }
        trie.insert("a/b", 8, 0);
        assert_eq!(trie.len(), 6);
        assert_eq!(
            sorted(&trie.matches("a/b")),
            [(7, 1), (7, 3), (7, 3), (7, 3), (7, 3), (8, 0)]
        );
        assert_eq!(sorted(&trie.matches("a")), [(7, 1), (7, 3)]);
    }

    #[test]
    fn crowded_filters_keep_every_subscriber() {
        // Past the one held inline and past the vector, into a map.
        let mut trie = SubscriptionTrie::new();
        for key in 0..20u32 {
            trie.insert("a/b", key, key);
            trie.insert("a/#", key, key + 100);
        }
        assert_eq!(trie.len(), 40);
        assert_eq!(trie.matches("a/b").len(), 40);
        for key in (0..20).step_by(2) {
            assert_eq!(trie.remove("a/b", &key), Some(key));
        }
        let expected: Vec<_> = (1..20)
            .step_by(2)
            .map(|key| (key, key))
            .chain((0..20).map(|key| (key, key + 100)))
            .collect();
        assert_eq!(sorted(&trie.matches("a/b")), sorted(&expected));
        for key in 0..20 {
            trie.remove("a/b", &key);
            trie.remove("a/#", &key);
        }
        assert!(trie.is_empty());
        assert_pruned(&trie);
    }

    #[test]
    fn insert_replaces_and_get_reads() {
        let mut trie = SubscriptionTrie::new();
        assert_eq!(trie.insert("a/+", 1, 10), None);
        assert_eq!(trie.matches("a/x").as_ref(), [(1, 10)]);
        assert_eq!(trie.insert("a/+", 1, 11), Some(10));
        assert_eq!(trie.len(), 1);
        assert_eq!(trie.get("a/+", &1), Some(&11));
        assert_eq!(trie.get("a/#", &1), None);
        assert_eq!(trie.get("a", &1), None);
        assert_eq!(trie.matches("a/x").as_ref(), [(1, 11)]);
    }

    #[test]
    fn remove_prunes_everything() {
        let mut trie = SubscriptionTrie::new();
        let filters = ["a/b/c", "a/b", "a/+/c", "a/#", "#", "+", "/", "a/b/c/d/e"];
        for (i, filter) in filters.iter().enumerate() {
            trie.insert(filter, i, ());
            trie.insert(filter, 100, ());
        }
        assert_eq!(trie.remove("a/b", &5), None);
        assert_eq!(trie.remove("a/x", &1), None);
        for (i, filter) in filters.iter().enumerate() {
            assert_eq!(trie.remove(filter, &i), Some(()));
            assert_pruned(&trie);
        }
        for filter in filters.iter().rev() {
            assert_eq!(trie.remove(filter, &100), Some(()));
            assert_pruned(&trie);
        }
        assert!(trie.is_empty());
        assert!(trie.root.is_empty());
    }

    #[test]
    fn remove_keeps_branches_still_in_use() {
        let mut trie = SubscriptionTrie::new();
        trie.insert("a/b/c/d", 1, ());
        trie.insert("a/b", 2, ());
        trie.insert("a/+/c", 3, ());
        trie.remove("a/b/c/d", &1);
        assert_pruned(&trie);
        let a = trie.root.child("a").unwrap();
        assert!(a.child("b").unwrap().branches.is_none());
        assert_eq!(trie.matches("a/b").as_ref(), [(2, ())]);
        assert_eq!(trie.matches("a/b/c").as_ref(), [(3, ())]);
    }

    #[test]
    fn empty_results_share_one_allocation() {
        let mut trie = SubscriptionTrie::<u32, ()>::new();
        let first = trie.matches("x");
        let second = trie.matches("y/z");
        assert!(first.is_empty());
        assert!(Arc::ptr_eq(&first, &second));
    }

    #[test]
    fn cached_results_do_not_survive_changes() {
        let mut trie = SubscriptionTrie::new();
        assert!(trie.matches("a/b").is_empty());
        assert!(trie.matches("a/b").is_empty());
        assert_eq!(
            trie.cache_stats(),
            CacheStats {
                hits: 1,
                misses: 1,
                evictions: 0
            }
        );

        // A cached negative result is dropped by an exact subscribe to that topic...
        trie.insert("a/b", 1, ());
        assert_eq!(trie.matches("a/b").as_ref(), [(1, ())]);
        // ...and by a wildcard one.
        assert!(trie.matches("a/c").is_empty());
        trie.insert("a/+", 2, ());
        assert_eq!(trie.matches("a/c").as_ref(), [(2, ())]);
        assert_eq!(sorted(&trie.matches("a/b")), [(1, ()), (2, ())]);

        // An exact change leaves other topics cached.
        let hits = trie.cache_stats().hits;
        trie.insert("a/d", 3, ());
        trie.matches("a/c");
        assert_eq!(trie.cache_stats().hits, hits + 1);
        assert_eq!(sorted(&trie.matches("a/d")), [(2, ()), (3, ())]);

        trie.remove("a/+", &2);
        assert!(trie.matches("a/c").is_empty());
        assert_eq!(trie.matches("a/b").as_ref(), [(1, ())]);
        trie.remove("a/b", &1);
        assert!(trie.matches("a/b").is_empty());
        // Removing what is not there changes nothing, cache included.
        let hits = trie.cache_stats().hits;
        trie.remove("a/#", &1);
        trie.matches("a/b");
        assert_eq!(trie.cache_stats().hits, hits + 1);
    }

    #[test]
    fn full_cache_drops_half() {
        let mut trie = SubscriptionTrie::<u32, ()>::with_cache_capacity(4);
        for topic in ["a", "b", "c", "d"] {
            trie.matches(topic);
        }
        assert_eq!(trie.cache_stats().evictions, 0);
        trie.matches("e");
        assert_eq!(trie.cache_stats().evictions, 2);
        assert_eq!(trie.cache.entries.len(), 3);
        trie.matches("e");
        assert_eq!(trie.cache_stats().hits, 1);

        let mut single = SubscriptionTrie::<u32, ()>::with_cache_capacity(1);
        single.matches("a");
        single.matches("b");
        assert_eq!(single.cache.entries.len(), 1);
        assert_eq!(single.cache_stats().evictions, 1);
    }

    #[test]
    fn disabled_cache_stores_nothing() {
        let mut trie = SubscriptionTrie::with_cache_capacity(0);
        trie.insert("a/#", 1, ());
        trie.matches("a/b");
        trie.matches("a/b");
        assert!(trie.cache.entries.is_empty());
        assert_eq!(
            trie.cache_stats(),
            CacheStats {
                hits: 0,
                misses: 2,
                evictions: 0
            }
        );
    }

    #[test]
    fn deepest_valid_filters_do_not_exhaust_the_stack() {
        // 65535 bytes: the longest valid filters and topic, 32768 levels each.
        let plus = ["+"; 32_768].join("/");
        let literal = ["a"; 32_768].join("/");
        let empty_levels = "/".repeat(32_767);
        let mut trie = SubscriptionTrie::new();
        for filter in [&plus, &literal] {
            assert_eq!(validate_topic_filter(filter), Ok(()));
            trie.insert(filter, 1, 0);
        }
        // `a/+/#`, `a/a/+/#`, ...: walking `a/a/...` leaves a `+` branch pending at each of the
        // first 40 levels, more than fit inline.
        for i in 0..40 {
            let mut levels = vec!["a"; i];
            levels.extend(["+", "#"]);
            trie.insert(&levels.join("/"), 2, i);
        }
        assert_eq!(sorted(&trie.matches(&empty_levels)), [(1, 0), (2, 0)]);
        let mut expected = vec![(1, 0), (1, 0)];
        expected.extend((0..40).map(|i| (2, i)));
        assert_eq!(sorted(&trie.matches(&literal)), expected);
        assert_eq!(walked(&trie, &literal), expected);
        trie.remove(&plus, &1);
        trie.remove(&literal, &1);
        assert_pruned(&trie);
        drop(trie);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(String, u8, u16),
        Remove(String, u8),
        Match(String),
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        prop::collection::vec(
            prop_oneof![
                3 => (filter(), 0..4u8, any::<u16>()).prop_map(|(f, k, v)| Op::Insert(f, k, v)),
                2 => (filter(), 0..4u8).prop_map(|(f, k)| Op::Remove(f, k)),
                4 => topic().prop_map(Op::Match),
            ],
            1..80,
        )
    }

    fn check_against_reference(ops: Vec<Op>, capacity: usize) -> Result<(), TestCaseError> {
        let mut trie = SubscriptionTrie::with_cache_capacity(capacity);
        let mut model = std::collections::BTreeMap::new();
        for op in ops {
            match op {
                Op::Insert(filter, key, value) => {
                    let expected = model.insert((filter.clone(), key), value);
                    prop_assert_eq!(trie.insert(&filter, key, value), expected);
                }
                Op::Remove(filter, key) => {
                    let expected = model.remove(&(filter.clone(), key));
                    prop_assert_eq!(trie.remove(&filter, &key), expected);
                }
                Op::Match(topic) => {
                    let expected: Vec<_> = model
                        .iter()
                        .filter(|((filter, _), _)| matches_filter(filter, &topic))
                        .map(|((_, key), value)| (*key, *value))
                        .collect();
                    prop_assert_eq!(sorted(&trie.matches(&topic)), sorted(&expected));
                    prop_assert_eq!(walked(&trie, &topic), sorted(&expected));
                }
            }
            prop_assert_eq!(trie.len(), model.len());
            for ((filter, key), value) in &model {
                prop_assert_eq!(trie.get(filter, key), Some(value));
            }
            assert_pruned(&trie);
        }
        Ok(())
    }

    /// Levels wide enough, keys many enough and labels long enough that nodes switch from
    /// vectors to maps and labels from inline to boxed (see `small_map.rs`), which the small
    /// alphabet of the other cases never reaches.
    fn wide_ops() -> impl Strategy<Value = Vec<Op>> {
        let long = "a-level-longer-than-what-fits-inline";
        let level = prop_oneof![
            8 => (0..24u8).prop_map(|i| i.to_string()),
            1 => Just(long.to_string()),
            1 => Just("+".to_string()),
        ];
        let filter = (prop::collection::vec(level.clone(), 1..4), any::<bool>()).prop_map(
            |(levels, pound)| {
                let mut filter = levels.join("/");
                if pound {
                    filter.push_str("/#");
                }
                filter
            },
        );
        let topic = prop::collection::vec(level, 1..4)
            .prop_map(|levels| levels.join("/").replace('+', "x"));
        prop::collection::vec(
            prop_oneof![
                4 => (filter.clone(), 0..20u8, any::<u16>())
                    .prop_map(|(f, k, v)| Op::Insert(f, k, v)),
                2 => (filter, 0..20u8).prop_map(|(f, k)| Op::Remove(f, k)),
                2 => topic.prop_map(Op::Match),
            ],
            1..300,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn wide_levels_and_crowded_filters_agree_with_reference(ops in wide_ops()) {
            check_against_reference(ops, DEFAULT_CACHE_CAPACITY)?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn agrees_with_reference_matcher_cached(ops in ops()) {
            check_against_reference(ops, DEFAULT_CACHE_CAPACITY)?;
        }

        #[test]
        fn agrees_with_reference_matcher_small_cache(ops in ops()) {
            check_against_reference(ops, 3)?;
        }

        #[test]
        fn agrees_with_reference_matcher_uncached(ops in ops()) {
            check_against_reference(ops, 0)?;
        }
    }
}
