//! Filters and topics for the property tests, drawn from a tiny alphabet of levels so that
//! wildcards, `$` topics and empty levels collide often, and the complete set of topics over that
//! alphabet to check answers against by brute force.

use std::sync::OnceLock;

use proptest::prelude::*;

use crate::protocol::topic::{validate_topic_filter, validate_topic_name};

/// The literal levels filters are made of: `$s` exercises MQTT-4.7.2-1, and an empty level is a
/// real level.
const LEVELS: [&str; 4] = ["a", "b", "$s", ""];

/// Valid filters of up to four levels over [`LEVELS`] and the wildcards.
pub(super) fn filter() -> impl Strategy<Value = String> {
    let level = prop::sample::select(LEVELS.iter().copied().chain(["+"]).collect::<Vec<_>>());
    (prop::collection::vec(level, 0..4), any::<bool>())
        .prop_map(|(mut levels, pound)| {
            if pound || levels.is_empty() {
                levels.push("#");
            }
            levels.join("/")
        })
        .prop_filter("valid filter", |f| validate_topic_filter(f).is_ok())
}

/// Every valid topic of one to five levels over [`LEVELS`] plus `z`, which stands for every
/// level no filter names: one level deeper than the deepest filter, so that a `#` always has a
/// deeper topic to reach.
pub(super) fn topics() -> &'static [String] {
    static TOPICS: OnceLock<Vec<String>> = OnceLock::new();
    TOPICS.get_or_init(|| {
        let alphabet: Vec<&str> = LEVELS.iter().copied().chain(["z"]).collect();
        let mut topics = Vec::new();
        let mut layer = vec![String::new()];
        for depth in 1..=5 {
            layer = layer
                .iter()
                .flat_map(|prefix| {
                    alphabet.iter().map(move |level| match depth {
                        1 => (*level).to_owned(),
                        _ => format!("{prefix}/{level}"),
                    })
                })
                .collect();
            topics.extend(
                layer
                    .iter()
                    .filter(|t| validate_topic_name(t).is_ok())
                    .cloned(),
            );
        }
        topics
    })
}
