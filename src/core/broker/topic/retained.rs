//! Retained messages, keyed by exact topic name and looked up by a new subscription's filter.
//!
//! A trie of its own rather than values hung on subscription nodes: retaining
//! a message must not add nodes that every PUBLISH then walks past, and a retained lookup runs
//! once per SUBSCRIBE while subscription matching runs once per PUBLISH, so each trie is shaped
//! for its own query. Here `+` has to visit every child of a level and `#` a whole subtree;
//! bounding that work is the caller's job (a resumable job that delivers a window at a time,
//! `retained_backlog.rs`).

use super::small_map::SmallMap;
use crate::protocol::topic::{is_dollar_topic, levels, Levels};
use std::fmt;

/// Retained values of type `V` (typically the retained PUBLISH and its expiry) by topic name.
pub struct RetainedTree<V> {
    root: Node<V>,
    len: usize,
}

impl<V> RetainedTree<V> {
    pub fn new() -> Self {
        Self {
            root: Node::default(),
            len: 0,
        }
    }

    /// Stores `value` as the retained message of `topic` (a validated topic name). Returns the
    /// one it replaces.
    pub fn insert(&mut self, topic: &str, value: V) -> Option<V> {
        let node = levels(topic).fold(&mut self.root, |node, level| {
            node.children
                .get_or_insert_with(level, |level| level.into(), Node::default)
        });
        match &mut node.retained {
            Some(retained) => Some(std::mem::replace(&mut retained.value, value)),
            empty @ None => {
                *empty = Some(Retained {
                    topic: topic.into(),
                    value,
                });
                self.len += 1;
                None
            }
        }
    }

    /// Removes `topic`'s retained message, pruning nodes left without messages or children.
    pub fn remove(&mut self, topic: &str) -> Option<V> {
        let node =
            levels(topic).try_fold(&mut self.root, |node, level| node.children.get_mut(level))?;
        let removed = node.retained.take()?;
        self.len -= 1;
        self.prune(topic);
        Some(removed.value)
    }

    pub fn get(&self, topic: &str) -> Option<&V> {
        let node = levels(topic).try_fold(&self.root, |node, level| node.children.get(level))?;
        node.retained.as_ref().map(|retained| &retained.value)
    }

    /// The number of retained messages.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Calls `f` with the topic and value of every retained message matching `filter` (a
    /// validated *plain* filter), in no particular order.
    ///
    /// `+` visits every child of its level and `#` the whole subtree, including its parent
    /// level; a filter starting with a wildcard skips top-level `$` topics (MQTT-4.7.2-1).
    pub fn for_each_match(&self, filter: &str, mut f: impl FnMut(&str, &V)) {
        // An explicit stack, not recursion: a valid topic can be 32768 levels deep.
        let mut pending = Vec::new();
        self.root
            .expand(levels(filter), is_dollar_topic, &mut pending, &mut f);
        while let Some(visit) = pending.pop() {
            match visit {
                Visit::Filter(node, rest) => node.expand(rest, |_| false, &mut pending, &mut f),
                Visit::Subtree(node) => {
                    node.report(&mut f);
                    pending.extend(node.children.values().map(Visit::Subtree));
                }
            }
        }
    }

    /// Calls `f` with every retained message, in no particular order (snapshots).
    pub fn for_each(&self, mut f: impl FnMut(&str, &V)) {
        let mut stack = vec![&self.root];
        while let Some(node) = stack.pop() {
            if let Some(retained) = &node.retained {
                f(&retained.topic, &retained.value);
            }
            stack.extend(node.children.values());
        }
    }

    /// Keeps only the messages for which `keep` returns true, pruning the nodes this empties;
    /// `keep` may also update the values it keeps. For expiry sweeps.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &mut V) -> bool) {
        let mut dropped = Vec::new();
        let mut stack = vec![&mut self.root];
        while let Some(node) = stack.pop() {
            let Node { children, retained } = node;
            if let Some(message) = retained {
                if !keep(&message.topic, &mut message.value) {
                    dropped.extend(retained.take().map(|message| message.topic));
                }
            }
            stack.extend(children.values_mut());
        }
        self.len -= dropped.len();
        for topic in &dropped {
            self.prune(topic);
        }
    }

    /// Removes the nodes that existed only to lead to `topic`'s node, now without a message.
    fn prune(&mut self, topic: &str) {
        // Find the topmost node of the chain that only leads to the emptied node.
        let mut node = &self.root;
        let mut depth = 0;
        let mut chain_start = None;
        for level in levels(topic) {
            if depth == 0 || node.retained.is_some() || node.children.len() != 1 {
                chain_start = None;
            } else if chain_start.is_none() {
                chain_start = Some(depth);
            }
            let Some(child) = node.children.get(level) else {
                return;
            };
            node = child;
            depth += 1;
        }
        if depth == 0 || node.retained.is_some() || !node.children.is_empty() {
            return;
        }
        let cut = chain_start.unwrap_or(depth);
        let mut rest = levels(topic);
        let Some(parent) = rest
            .by_ref()
            .take(cut - 1)
            .try_fold(&mut self.root, |node, level| node.children.get_mut(level))
        else {
            return;
        };
        if let Some(level) = rest.next() {
            parent.children.remove(level);
        }
    }
}

impl<V> Default for RetainedTree<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> fmt::Debug for RetainedTree<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetainedTree")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

struct Retained<V> {
    /// Kept whole so visitors get the topic without rebuilding it from the path.
    topic: Box<str>,
    value: V,
}

struct Node<V> {
    children: SmallMap<Box<str>, Node<V>>,
    retained: Option<Retained<V>>,
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Self {
            children: SmallMap::default(),
            retained: None,
        }
    }
}

/// Work left in [`RetainedTree::for_each_match`].
enum Visit<'n, 'f, V> {
    /// Match the rest of the filter at this node.
    Filter(&'n Node<V>, Levels<'f>),
    /// Report everything at and below this node: a `#` was reached above it.
    Subtree(&'n Node<V>),
}

impl<V> Node<V> {
    fn report(&self, f: &mut impl FnMut(&str, &V)) {
        if let Some(retained) = &self.retained {
            f(&retained.topic, &retained.value);
        }
    }

    /// Matches the next filter level at this node. `skip` says which children a wildcard level
    /// must pass over: the `$` ones at the root, none elsewhere.
    fn expand<'n, 'f>(
        &'n self,
        mut rest: Levels<'f>,
        skip: fn(&str) -> bool,
        pending: &mut Vec<Visit<'n, 'f, V>>,
        f: &mut impl FnMut(&str, &V),
    ) {
        let wildcard_children = self
            .children
            .iter()
            .filter(move |(level, _)| !skip(level))
            .map(|(_, child)| child);
        match rest.next() {
            None => self.report(f),
            Some("#") => {
                // `a/#` also matches `a`.
                self.report(f);
                pending.extend(wildcard_children.map(Visit::Subtree));
            }
            Some("+") => {
                pending.extend(wildcard_children.map(|child| Visit::Filter(child, rest.clone())))
            }
            Some(level) => {
                if let Some(child) = self.children.get(level) {
                    pending.push(Visit::Filter(child, rest));
                }
            }
        }
    }
}

impl<V> Drop for Node<V> {
    /// Dismantles the subtree with an explicit stack: the default recursive drop could overflow
    /// the thread's stack on a valid 32768-level topic.
    fn drop(&mut self) {
        if self.children.is_empty() {
            return;
        }
        let mut orphans = Vec::new();
        self.children.drain_values(|child| orphans.push(child));
        while let Some(mut node) = orphans.pop() {
            node.children.drain_values(|child| orphans.push(child));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::strategies::{filter, topic};
    use super::*;
    use crate::protocol::topic::{matches_filter, validate_topic_name};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn found<V: Clone + Ord>(tree: &RetainedTree<V>, filter: &str) -> Vec<(String, V)> {
        let mut found = Vec::new();
        tree.for_each_match(filter, |topic, value| {
            found.push((topic.to_owned(), value.clone()))
        });
        found.sort();
        found
    }

    fn topics(tree: &RetainedTree<()>, filter: &str) -> Vec<String> {
        found(tree, filter).into_iter().map(|(t, ())| t).collect()
    }

    /// Every node but the root must hold a message or lead to one.
    fn assert_pruned<V>(tree: &RetainedTree<V>) {
        let mut stack = vec![&tree.root];
        while let Some(node) = stack.pop() {
            for child in node.children.values() {
                assert!(
                    child.retained.is_some() || !child.children.is_empty(),
                    "empty node left behind"
                );
                stack.push(child);
            }
        }
    }

    const TOPICS: &[&str] = &[
        "sport",
        "sport/tennis",
        "sport/tennis/player1",
        "sport/tennis/player1/ranking",
        "sport/tennis/player2",
        "sport/",
        "sports",
        "/finance",
        "/",
        "$SYS",
        "$SYS/monitor/Clients",
        "a/$b",
    ];

    fn spec_tree() -> RetainedTree<()> {
        let mut tree = RetainedTree::new();
        for topic in TOPICS {
            tree.insert(topic, ());
        }
        tree
    }

    #[test]
    fn spec_examples() {
        let tree = spec_tree();
        assert_eq!(
            topics(&tree, "sport/tennis/player1/#"),
            ["sport/tennis/player1", "sport/tennis/player1/ranking"]
        );
        assert_eq!(
            topics(&tree, "sport/tennis/+"),
            ["sport/tennis/player1", "sport/tennis/player2"]
        );
        assert_eq!(topics(&tree, "sport/+"), ["sport/", "sport/tennis"]);
        assert_eq!(topics(&tree, "+"), ["sport", "sports"]);
        assert_eq!(
            topics(&tree, "+/+"),
            ["/", "/finance", "a/$b", "sport/", "sport/tennis"]
        );
        assert_eq!(topics(&tree, "/+"), ["/", "/finance"]);
        assert_eq!(topics(&tree, "sport"), ["sport"]);
        assert!(topics(&tree, "sport/tennis/player3").is_empty());
        assert!(topics(&tree, "nothing/#").is_empty());
        for filter in TOPICS
            .iter()
            .chain(&["+", "#", "+/#", "+/+/+", "/#", "sport/#"])
        {
            let mut expected: Vec<String> = TOPICS
                .iter()
                .filter(|topic| matches_filter(filter, topic))
                .map(|topic| topic.to_string())
                .collect();
            expected.sort();
            assert_eq!(topics(&tree, filter), expected, "{filter}");
        }
    }

    #[test]
    fn dollar_topics_need_an_explicit_first_level() {
        let tree = spec_tree();
        let all = topics(&tree, "#");
        assert!(!all.iter().any(|topic| topic.starts_with('$')));
        assert_eq!(all.len(), TOPICS.len() - 2);
        assert_eq!(topics(&tree, "+/monitor/Clients"), Vec::<String>::new());
        assert_eq!(topics(&tree, "$SYS/#"), ["$SYS", "$SYS/monitor/Clients"]);
        assert_eq!(topics(&tree, "$SYS/+/Clients"), ["$SYS/monitor/Clients"]);
        assert_eq!(topics(&tree, "a/+"), ["a/$b"]);
    }

    #[test]
    fn insert_replaces_and_get_reads() {
        let mut tree = RetainedTree::new();
        assert_eq!(tree.insert("a/b", 1), None);
        assert_eq!(tree.insert("a/b", 2), Some(1));
        assert_eq!(tree.len(), 1);
        assert_eq!(tree.get("a/b"), Some(&2));
        assert_eq!(tree.get("a"), None);
        assert_eq!(tree.get("a/b/c"), None);
        assert_eq!(found(&tree, "a/#"), [("a/b".to_owned(), 2)]);
    }

    #[test]
    fn remove_prunes_everything() {
        let mut tree = spec_tree();
        assert_eq!(tree.remove("sport/tennis/player3"), None);
        assert_eq!(tree.remove("sport/tennis/player1/ranking/x"), None);
        for topic in TOPICS {
            assert_eq!(tree.remove(topic), Some(()), "{topic}");
            assert_eq!(tree.remove(topic), None, "{topic}");
            assert_pruned(&tree);
        }
        assert!(tree.is_empty());
        assert!(tree.root.children.is_empty());
    }

    #[test]
    fn remove_keeps_branches_still_in_use() {
        let mut tree = RetainedTree::new();
        tree.insert("a/b/c/d", ());
        tree.insert("a/b", ());
        tree.insert("a/x/c", ());
        tree.remove("a/b/c/d");
        assert_pruned(&tree);
        let a = tree.root.children.get("a").unwrap();
        assert!(a.children.get("b").unwrap().children.is_empty());
        assert_eq!(topics(&tree, "#"), ["a/b", "a/x/c"]);
    }

    #[test]
    fn retain_sweeps_and_prunes() {
        let mut tree = RetainedTree::new();
        for (i, topic) in TOPICS.iter().enumerate() {
            tree.insert(topic, i);
        }
        tree.retain(|topic, value| {
            *value *= 10;
            topic.starts_with("sport/tennis")
        });
        assert_pruned(&tree);
        assert_eq!(tree.len(), 4);
        assert_eq!(tree.get("sport/tennis/player2"), Some(&40));
        assert_eq!(tree.get("sport"), None);
        tree.retain(|_, _| false);
        assert!(tree.is_empty());
        assert!(tree.root.children.is_empty());
    }

    #[test]
    fn deepest_valid_topics_do_not_exhaust_the_stack() {
        // 65535 bytes: the longest valid topic, 32768 levels.
        let deep = ["a"; 32_768].join("/");
        let empty_levels = "/".repeat(32_767);
        let mut tree = RetainedTree::new();
        for topic in [&deep, &empty_levels] {
            assert_eq!(validate_topic_name(topic), Ok(()));
            tree.insert(topic, ());
        }
        assert_eq!(topics(&tree, "#").len(), 2);
        assert_eq!(topics(&tree, &["+"; 32_768].join("/")).len(), 2);
        assert_eq!(topics(&tree, &deep), std::slice::from_ref(&deep));
        tree.retain(|topic, ()| topic.starts_with('a'));
        assert_pruned(&tree);
        tree.insert(&empty_levels, ());
        tree.remove(&deep);
        assert_pruned(&tree);
        drop(tree);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(String, u16),
        Remove(String),
        Match(String),
        RetainNotDivisibleBy(u16),
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        prop::collection::vec(
            prop_oneof![
                4 => (topic(), any::<u16>()).prop_map(|(t, v)| Op::Insert(t, v)),
                2 => topic().prop_map(Op::Remove),
                4 => filter().prop_map(Op::Match),
                1 => (2..5u16).prop_map(Op::RetainNotDivisibleBy),
            ],
            1..80,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn agrees_with_reference_matcher(ops in ops()) {
            let mut tree = RetainedTree::new();
            let mut model = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(topic, value) => {
                        prop_assert_eq!(tree.insert(&topic, value), model.insert(topic, value));
                    }
                    Op::Remove(topic) => {
                        prop_assert_eq!(tree.remove(&topic), model.remove(&topic));
                    }
                    Op::Match(filter) => {
                        let expected: Vec<_> = model
                            .iter()
                            .filter(|(topic, _)| matches_filter(&filter, topic))
                            .map(|(topic, value)| (topic.clone(), *value))
                            .collect();
                        prop_assert_eq!(found(&tree, &filter), expected);
                    }
                    Op::RetainNotDivisibleBy(divisor) => {
                        tree.retain(|_, value| *value % divisor != 0);
                        model.retain(|_, value| *value % divisor != 0);
                    }
                }
                prop_assert_eq!(tree.len(), model.len());
                for (topic, value) in &model {
                    prop_assert_eq!(tree.get(topic), Some(value));
                }
                assert_pruned(&tree);
            }
        }
    }
}
