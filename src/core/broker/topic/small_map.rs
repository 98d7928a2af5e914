//! The maps inside the tries: one per node for its children and one for its subscribers, so
//! there are millions of them and almost all are tiny (a device's handful of topic levels, the
//! one session subscribed to a filter).
//!
//! Why not a plain hash map: an empty `AHashMap` is 64 bytes (32 of them its hasher's keys),
//! and hashbrown allocates at least four buckets, so a one-subscriber leaf cost about 500 bytes
//! and a million subscriptions took gigabytes (and their page faults most of a restore).
//! [`SmallMap`] is a vector sized to fit while it has at most [`SMALL`] entries, so a lookup
//! compares a bounded number of keys, and a hash map beyond, so a wide level is still never
//! scanned. Its hasher ([`ProcessHasher`]) is zero-sized but keyed once per process, so keys a
//! client chooses (topic levels) cannot be picked to collide.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::OnceLock;

/// Entries kept in a vector before a [`SmallMap`] becomes a hash map.
pub(super) const SMALL: usize = 8;

/// `ahash` with random keys chosen once per process, as a zero-sized `BuildHasher`.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ProcessHasher;

impl BuildHasher for ProcessHasher {
    type Hasher = ahash::AHasher;

    fn build_hasher(&self) -> ahash::AHasher {
        static KEYS: OnceLock<ahash::RandomState> = OnceLock::new();
        KEYS.get_or_init(ahash::RandomState::new).build_hasher()
    }
}

/// A topic level as a trie key: up to [`Label::INLINE`] bytes (nearly every level) held in
/// the key itself, longer ones boxed. A `Box<str>` would cost an allocation per node on top of
/// its 16 bytes. Looked up by the level's bytes, which hash and compare the same.
#[derive(Clone)]
pub(super) enum Label {
    Inline { len: u8, bytes: [u8; Label::INLINE] },
    Boxed(Box<[u8]>),
}

impl Label {
    /// 22 bytes, so that a label is 24 bytes like the `Box<str>` and length it replaces.
    pub(super) const INLINE: usize = 22;

    pub(super) fn new(level: &str) -> Label {
        let level = level.as_bytes();
        match u8::try_from(level.len()) {
            Ok(len) if level.len() <= Label::INLINE => {
                let mut bytes = [0; Label::INLINE];
                bytes[..level.len()].copy_from_slice(level);
                Label::Inline { len, bytes }
            }
            _ => Label::Boxed(level.into()),
        }
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        match self {
            Label::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Label::Boxed(bytes) => bytes,
        }
    }
}

impl PartialEq for Label {
    fn eq(&self, other: &Label) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Label {}

impl Hash for Label {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl Borrow<[u8]> for Label {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl std::fmt::Debug for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        String::from_utf8_lossy(self.as_bytes()).fmt(f)
    }
}

pub(super) enum SmallMap<K, V> {
    /// At most [`SMALL`] entries, in insertion order, with room for a power of two.
    Few(Vec<(K, V)>),
    /// Once it grew past [`SMALL`]; it stays a map when it shrinks again. Boxed so that the
    /// enum stays the size of the vector (24 bytes), which every node pays.
    #[allow(clippy::box_collection)]
    Many(Box<HashMap<K, V, ProcessHasher>>),
}

impl<K, V> Default for SmallMap<K, V> {
    fn default() -> Self {
        SmallMap::Few(Vec::new())
    }
}

// What needs no hashing, so that code without the bounds (a node's `Drop`) can use it too.
impl<K, V> SmallMap<K, V> {
    pub(super) fn len(&self) -> usize {
        match self {
            SmallMap::Few(entries) => entries.len(),
            SmallMap::Many(map) => map.len(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Empties the map, handing every value to `f`.
    pub(super) fn drain_values(&mut self, f: impl FnMut(V)) {
        match std::mem::take(self) {
            SmallMap::Few(entries) => entries.into_iter().map(|(_, v)| v).for_each(f),
            SmallMap::Many(map) => map.into_values().for_each(f),
        }
    }
}

impl<K: Eq + Hash, V> SmallMap<K, V> {
    pub(super) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        match self {
            SmallMap::Few(entries) => entries
                .iter()
                .find(|(k, _)| k.borrow() == key)
                .map(|(_, v)| v),
            SmallMap::Many(map) => map.get(key),
        }
    }

    pub(super) fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        match self {
            SmallMap::Few(entries) => entries
                .iter_mut()
                .find(|(k, _)| k.borrow() == key)
                .map(|(_, v)| v),
            SmallMap::Many(map) => map.get_mut(key),
        }
    }

    /// Inserts or replaces; returns the value replaced.
    pub(super) fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let Some(existing) = self.get_mut(&key) {
            return Some(std::mem::replace(existing, value));
        }
        self.push_new(key, value);
        None
    }

    /// The value of `key`, inserting `make()` under `own(key)` if there is none. The key is only
    /// turned into an owned one (an allocation, for a topic level) when it is new.
    pub(super) fn get_or_insert_with<Q>(
        &mut self,
        key: &Q,
        own: impl FnOnce(&Q) -> K,
        make: impl FnOnce() -> V,
    ) -> &mut V
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let found = match self {
            SmallMap::Few(entries) => entries.iter().position(|(k, _)| k.borrow() == key),
            SmallMap::Many(map) => map.contains_key(key).then_some(0),
        };
        if found.is_none() {
            self.push_new(own(key), make());
        }
        match self {
            SmallMap::Few(entries) => {
                let index = found.unwrap_or(entries.len() - 1);
                &mut entries[index].1
            }
            SmallMap::Many(map) => map.get_mut(key).expect("present or just inserted"),
        }
    }

    /// Adds an entry whose key is not present.
    fn push_new(&mut self, key: K, value: V) {
        match self {
            SmallMap::Few(entries) if entries.len() < SMALL => {
                // Room for 1, 2, 4, then 8 entries: most of these vectors never hold more than
                // one or two (`push` alone would make room for four), and growing one entry at
                // a time would move a node's children at every insertion.
                if entries.len() == entries.capacity() {
                    entries.reserve_exact(entries.len().max(1));
                }
                entries.push((key, value));
            }
            SmallMap::Few(entries) => {
                let mut map = HashMap::with_capacity_and_hasher(SMALL * 2, ProcessHasher);
                map.extend(entries.drain(..));
                map.insert(key, value);
                *self = SmallMap::Many(Box::new(map));
            }
            SmallMap::Many(map) => {
                map.insert(key, value);
            }
        }
    }

    pub(super) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        match self {
            SmallMap::Few(entries) => {
                let index = entries.iter().position(|(k, _)| k.borrow() == key)?;
                let (_, value) = entries.remove(index);
                entries.shrink_to_fit();
                Some(value)
            }
            SmallMap::Many(map) => map.remove(key),
        }
    }

    /// Calls `f` with every entry, in no particular order.
    pub(super) fn for_each(&self, mut f: impl FnMut(&K, &V)) {
        match self {
            SmallMap::Few(entries) => entries.iter().for_each(|(k, v)| f(k, v)),
            SmallMap::Many(map) => map.iter().for_each(|(k, v)| f(k, v)),
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        let (few, many) = match self {
            SmallMap::Few(entries) => (Some(entries.iter().map(|(k, v)| (k, v))), None),
            SmallMap::Many(map) => (None, Some(map.iter())),
        };
        few.into_iter().flatten().chain(many.into_iter().flatten())
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &V> {
        let (few, many) = match self {
            SmallMap::Few(entries) => (Some(entries.iter().map(|(_, v)| v)), None),
            SmallMap::Many(map) => (None, Some(map.values())),
        };
        few.into_iter().flatten().chain(many.into_iter().flatten())
    }

    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        let (few, many) = match self {
            SmallMap::Few(entries) => (Some(entries.iter_mut().map(|(_, v)| v)), None),
            SmallMap::Many(map) => (None, Some(map.values_mut())),
        };
        few.into_iter().flatten().chain(many.into_iter().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn agrees_with_a_map_across_the_switch() {
        let mut small: SmallMap<Box<str>, u32> = SmallMap::default();
        let mut model = BTreeMap::new();
        let key = |i: u32| format!("k{}", i % 23);
        for i in 0..200u32 {
            match i % 5 {
                0..=2 => assert_eq!(
                    small.insert(key(i).into(), i),
                    model.insert(key(i), i),
                    "insert {i}"
                ),
                3 => assert_eq!(
                    small.remove(key(i * 7).as_str()),
                    model.remove(&key(i * 7)),
                    "remove {i}"
                ),
                _ => {
                    let k = key(i * 3);
                    *small.get_or_insert_with(k.as_str(), |k| k.into(), || 0) += 1;
                    *model.entry(k).or_insert(0) += 1;
                }
            }
            assert_eq!(small.len(), model.len());
            for (k, v) in &model {
                assert_eq!(small.get(k.as_str()), Some(v));
            }
            let mut seen = Vec::new();
            small.for_each(|k, v| seen.push((k.to_string(), *v)));
            seen.sort();
            assert_eq!(seen, model.clone().into_iter().collect::<Vec<_>>());
        }
        assert!(matches!(small, SmallMap::Many(_)));
        let mut drained = Vec::new();
        small.drain_values(|v| drained.push(v));
        assert_eq!(drained.len(), model.len());
        assert!(small.is_empty());
    }

    #[test]
    fn labels_compare_and_hash_as_their_bytes() {
        use std::hash::BuildHasher;
        let long = "a-level-longer-than-twenty-two-bytes";
        for level in ["", "a", "22-bytes-exactly-here!", long] {
            let label = Label::new(level);
            assert_eq!(label.as_bytes(), level.as_bytes());
            assert_eq!(
                ProcessHasher.hash_one(&label),
                ProcessHasher.hash_one(level.as_bytes())
            );
        }
        assert!(matches!(
            Label::new("22-bytes-exactly-here!"),
            Label::Inline { .. }
        ));
        assert!(matches!(Label::new(long), Label::Boxed(_)));
        assert_ne!(Label::new("a"), Label::new("ab"));
        assert_eq!(std::mem::size_of::<Label>(), 24);
    }

    #[test]
    fn small_sets_stay_vectors_with_little_spare_room() {
        let mut small: SmallMap<u64, ()> = SmallMap::default();
        for i in 0..SMALL as u64 {
            small.insert(i, ());
            match &small {
                SmallMap::Few(entries) => {
                    assert_eq!(entries.capacity(), entries.len().next_power_of_two())
                }
                SmallMap::Many(_) => panic!("switched at {i}"),
            }
        }
        small.insert(SMALL as u64, ());
        assert!(matches!(small, SmallMap::Many(_)));
    }
}
