//! Random topic names and filters for the property tests of both trees, drawn from a small
//! alphabet of levels so that matches, `$` topics and wildcards collide often.

use proptest::prelude::*;

use crate::protocol::topic::{validate_topic_filter, validate_topic_name};

/// Valid filters of up to four levels, with `+` and `#` placed anywhere the spec allows.
pub fn filter() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop::sample::select(vec!["a", "b", "", "$s", "+"]), 0..4),
        any::<bool>(),
    )
        .prop_map(|(mut levels, pound)| {
            if pound || levels.is_empty() {
                levels.push("#");
            }
            levels.join("/")
        })
        .prop_filter("valid filter", |f| validate_topic_filter(f).is_ok())
}

/// Valid topic names of one to four levels, including `$` topics and empty levels.
pub fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "", "$s"]), 1..5)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("valid topic", |t| validate_topic_name(t).is_ok())
}
