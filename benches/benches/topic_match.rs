//! Subscription matching: the cost of finding a PUBLISH's subscribers among 10k, 100k and 1M
//! subscriptions, with and without the match cache, and of a subscribe + unsubscribe pair.
//! Figures and the command are kept in `benches/RESULTS.md`.
//!
//! The subscriptions model a fleet of devices: each device has one session watching
//! `site/<s>/device/<d>/+` and one watching `site/<s>/device/<d>/temperature`, each site of 100
//! devices has a `site/<s>/#` watcher, and one monitor watches `site/+/device/+/alarm`. A
//! device's temperature topic therefore has three subscribers, and every match also walks the
//! monitor's `+` branches.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mqtt_broker::broker::topic::SubscriptionTrie;
use std::hint::black_box;

const DEVICES_PER_SITE: usize = 100;

/// Distinct topics published to in the cached benchmark: well under the default cache capacity.
const HOT_TOPICS: usize = 1000;

/// Topics cycled through by the other benchmarks, so successive iterations do not keep hitting
/// the same trie nodes in the CPU cache.
const COLD_TOPICS: usize = 100_000;

type Trie = SubscriptionTrie<u64, u8>;

/// Roughly `subscriptions` subscriptions (the site watchers add 0.5%) over `subscriptions / 2`
/// devices. Returns the trie and the number of devices.
fn fleet(subscriptions: usize) -> (Trie, usize) {
    let devices = subscriptions / 2;
    let mut trie = Trie::new();
    let mut key = 0;
    let mut subscribe = |filter: &str| {
        trie.insert(filter, key, 1);
        key += 1;
    };
    for device in 0..devices {
        let site = device / DEVICES_PER_SITE;
        subscribe(&format!("site/{site}/device/{device}/+"));
        subscribe(&format!("site/{site}/device/{device}/temperature"));
        if device % DEVICES_PER_SITE == 0 {
            subscribe(&format!("site/{site}/#"));
        }
    }
    subscribe("site/+/device/+/alarm");
    (trie, devices)
}

/// Temperature topics of `count` devices spread pseudo-randomly over the fleet.
fn temperature_topics(devices: usize, count: usize) -> Vec<String> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..count)
        .map(|_| {
            // xorshift64: deterministic, and enough to scatter devices.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let device = (state % devices as u64) as usize;
            let site = device / DEVICES_PER_SITE;
            format!("site/{site}/device/{device}/temperature")
        })
        .collect()
}

/// Indexes 0, 1, ..., `len - 1`, 0, ...
fn cycle(len: usize) -> impl FnMut() -> usize {
    let mut next = 0;
    move || {
        next = (next + 1) % len;
        next
    }
}

fn label(subscriptions: usize) -> String {
    match subscriptions {
        n if n >= 1_000_000 => format!("{}M", n / 1_000_000),
        n => format!("{}k", n / 1000),
    }
}

fn bench_topic_match(c: &mut Criterion) {
    let mut group = c.benchmark_group("topic_match");
    for subscriptions in [10_000, 100_000, 1_000_000] {
        let (mut trie, devices) = fleet(subscriptions);
        let size = label(subscriptions);
        let cold = temperature_topics(devices, COLD_TOPICS);
        let hot = temperature_topics(devices, HOT_TOPICS);
        group.bench_function(BenchmarkId::new("uncached", &size), |b| {
            let mut next = cycle(cold.len());
            b.iter(|| {
                let mut found = 0;
                trie.for_each_match(black_box(&cold[next()]), |_, _| found += 1);
                found
            })
        });

        group.bench_function(BenchmarkId::new("cached_hit", &size), |b| {
            let mut next = cycle(hot.len());
            for topic in &hot {
                trie.matches(topic);
            }
            b.iter(|| trie.matches(black_box(&hot[next()])))
        });

        // Every call misses: the walk plus building, caching and now and then evicting a
        // result, as right after a wildcard subscribe cleared the cache. The topics must all
        // differ, which the fleet has too few temperature topics for at 10k, so these are
        // `site/<s>/device/<d>/m<i>`, with two subscribers each instead of three.
        let distinct: Vec<String> = cold
            .iter()
            .enumerate()
            .map(|(i, topic)| topic.replace("/temperature", &format!("/m{i}")))
            .collect();
        group.bench_function(BenchmarkId::new("cached_miss", &size), |b| {
            let mut next = cycle(distinct.len());
            b.iter(|| trie.matches(black_box(&distinct[next()])))
        });

        // A new session subscribing to an exact topic nobody else wants, adding and pruning
        // a leaf.
        let leaves: Vec<String> = cold
            .iter()
            .map(|topic| topic.replace("/temperature", "/humidity"))
            .collect();
        group.bench_function(BenchmarkId::new("insert_remove_exact", &size), |b| {
            let mut next = cycle(leaves.len());
            b.iter(|| {
                let filter = &leaves[next()];
                trie.insert(black_box(filter), u64::MAX, 0);
                trie.remove(black_box(filter), &u64::MAX)
            })
        });

        // A new session subscribing to an existing wildcard filter, which also marks the
        // match cache stale.
        let wildcards: Vec<String> = cold
            .iter()
            .map(|topic| topic.replace("/temperature", "/+"))
            .collect();
        group.bench_function(BenchmarkId::new("insert_remove_wildcard", &size), |b| {
            let mut next = cycle(wildcards.len());
            b.iter(|| {
                let filter = &wildcards[next()];
                trie.insert(black_box(filter), u64::MAX, 0);
                trie.remove(black_box(filter), &u64::MAX)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_topic_match);
criterion_main!(benches);
