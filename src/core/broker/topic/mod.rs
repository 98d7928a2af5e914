//! Topic-indexed data structures of a shard: who wants a PUBLISH, and which retained messages a
//! new subscription must receive.
//!
//! Why it exists: matching every PUBLISH against every subscription filter, or every SUBSCRIBE
//! against every retained topic, costs time proportional to the broker's size. These tries make
//! both proportional to the topic's depth and the number of results instead, while agreeing
//! exactly with the reference rules in [`crate::protocol::topic`] (including MQTT-4.7.2-1 for
//! `$` topics), which the tests check by comparison.
//!
//! - [`SubscriptionTrie`] indexes topic *filters* and is queried with a topic *name*. A shard keeps
//!   one for its own sessions, and every shard keeps a replicated one mapping filters to the
//!   shards that are interested.
//! - [`RetainedTree`] indexes topic *names* and is queried with a *filter*. It is a separate trie
//!   so that retained messages never add nodes to the publish path (the Mosquitto 1.x problem).
//! - `small_map.rs`: the compact maps and labels inside both, which keep a million subscriptions
//!   in hundreds of megabytes rather than gigabytes.

mod retained;
mod small_map;
#[cfg(test)]
mod strategies;
mod subscriptions;

pub use retained::RetainedTree;
pub use subscriptions::{CacheStats, SubscriptionTrie, DEFAULT_CACHE_CAPACITY};
