//! Relations between two topic filters, which a SUBSCRIBE check needs and topic-by-topic matching
//! cannot give: whether a rule allows *every* topic a filter can ever deliver ([`covers`]), and
//! whether it touches *any* of them ([`intersects`]).
//!
//! Both are exact for [`matches_filter`](crate::protocol::topic::matches_filter), including
//! MQTT-4.7.2-1 (a filter starting with a wildcard matches no topic starting with `$`), because
//! a subscription judged covered is never checked again per message. Mosquitto's shortcut,
//! matching the filter against the rule as if it were a topic name, is not exact: a `+` in the
//! rule would take a `#` level, so rule `a/+` would pass filter `a/#`, which also matches `a/b/c`.

use crate::protocol::topic::{is_dollar_topic, levels};

/// Does `pattern` match every topic that `filter` matches? Both must be valid plain filters
/// (a shared filter unwrapped first).
///
/// `a/#` covers `a/#`, `a` and `a/+/b`; `a/+` covers `a/b` and `a/+` but not `a/#`, which also
/// matches `a` and `a/b/c`; `#` does not cover `$SYS/#`.
pub fn covers(pattern: &str, filter: &str) -> bool {
    if starts_with_wildcard(pattern) && is_dollar_topic(filter) {
        return false;
    }
    let (mut pattern, mut filter) = (levels(pattern), levels(without_empty_topic(filter)));
    loop {
        match (pattern.next(), filter.next()) {
            (Some("#"), _) | (None, None) => return true,
            // A `+` in the pattern takes any one level, but not the "no level at all" of a `#`.
            (Some("+"), Some(level)) if level != "#" => {}
            // Equal literals, and `+` under `+`; a literal never covers a wildcard.
            (Some(p), Some(f)) if p == f => {}
            _ => return false,
        }
    }
}

/// Is there a topic that both filters match? Both must be valid plain filters.
///
/// `a/+` and `+/b` meet at `a/b`, `a/#` and `a` at `a`; `#` and `$SYS/x` never meet.
pub fn intersects(a: &str, b: &str) -> bool {
    if (starts_with_wildcard(a) && is_dollar_topic(b))
        || (starts_with_wildcard(b) && is_dollar_topic(a))
    {
        return false;
    }
    let (mut a, mut b) = (
        levels(without_empty_topic(a)),
        levels(without_empty_topic(b)),
    );
    loop {
        match (a.next(), b.next()) {
            (Some("#"), _) | (_, Some("#")) | (None, None) => return true,
            (Some(x), Some(y)) if x == "+" || y == "+" || x == y => {}
            _ => return false,
        }
    }
}

/// The walks read a trailing `#` as "this level or deeper". For `#` and `/#` "this level" is
/// a topic of no levels or the empty topic, which do not exist; so they match exactly what `+/#`
/// and `/+/#` match, which the walks read right.
fn without_empty_topic(filter: &str) -> &str {
    match filter {
        "#" => "+/#",
        "/#" => "/+/#",
        _ => filter,
    }
}

fn starts_with_wildcard(filter: &str) -> bool {
    filter.starts_with(['+', '#'])
}

#[cfg(test)]
mod tests {
    use super::super::strategies::{filter, topics};
    use super::*;
    use crate::protocol::topic::{matches_filter, validate_topic_filter};
    use proptest::prelude::*;

    #[test]
    fn coverage_examples() {
        for (pattern, filter) in [
            ("a/#", "a/#"),
            ("a/#", "a"),
            ("a/#", "a/+/b"),
            ("a/+", "a/b"),
            ("a/+", "a/+"),
            ("#", "a/+/#"),
            ("#", "+"),
            ("+/#", "#"),
            ("+/#", "a"),
            ("$SYS/#", "$SYS"),
            ("$SYS/#", "$SYS/+/x"),
            ("+/x", "a/x"),
            ("a", "a"),
        ] {
            assert!(
                covers(pattern, filter),
                "{pattern:?} should cover {filter:?}"
            );
        }
        for (pattern, filter) in [
            ("a/+", "a/#"),
            ("a/+", "a"),
            ("a/b", "a/+"),
            ("a", "a/#"),
            ("a/+/#", "a/#"),
            ("+/+/#", "#"),
            ("#", "$SYS/#"),
            ("#", "$SYS"),
            ("+/x", "$a/x"),
            ("+/#", "$a"),
            ("a/#", "b"),
            ("a", "a/"),
        ] {
            assert!(
                !covers(pattern, filter),
                "{pattern:?} must not cover {filter:?}"
            );
        }
    }

    #[test]
    fn intersection_examples() {
        for (a, b) in [
            ("a/+", "+/b"),
            ("a/#", "a"),
            ("$SYS/#", "$SYS/+"),
            ("#", "#"),
            ("+", "#"),
            ("#", "a/b/c"),
            ("a/+/c", "a/b/#"),
            ("$a/+", "$a/x"),
        ] {
            assert!(intersects(a, b), "{a:?} should meet {b:?}");
            assert!(intersects(b, a), "{b:?} should meet {a:?}");
        }
        for (a, b) in [
            ("#", "$SYS/x"),
            ("+/#", "$SYS"),
            ("a/+", "a"),
            ("a/b", "a/c"),
            ("a/+", "a/b/c"),
            ("+/+", "a"),
            ("a", "a/"),
            // They would meet only at the empty topic, which does not exist.
            ("+", "/#"),
        ] {
            assert!(!intersects(a, b), "{a:?} must not meet {b:?}");
            assert!(!intersects(b, a), "{b:?} must not meet {a:?}");
        }
    }

    /// Every pair of filters of up to three levels, against every topic of up to four.
    #[test]
    fn small_filters_agree_with_brute_force_exhaustively() {
        let mut filters = vec![String::new()];
        for _ in 0..3 {
            let longer: Vec<String> = filters
                .iter()
                .filter(|f| !f.ends_with('#'))
                .flat_map(|f| {
                    ["a", "$s", "", "+", "#"].map(|level| match f.is_empty() {
                        true => level.to_owned(),
                        false => format!("{f}/{level}"),
                    })
                })
                .collect();
            filters.extend(longer);
        }
        filters.retain(|f| validate_topic_filter(f).is_ok());
        let topics: Vec<&String> = topics().iter().filter(|t| levels(t).count() <= 4).collect();
        let matched: Vec<Vec<bool>> = filters
            .iter()
            .map(|f| topics.iter().map(|t| matches_filter(f, t)).collect())
            .collect();
        for (a, in_a) in filters.iter().zip(&matched) {
            for (b, in_b) in filters.iter().zip(&matched) {
                let pairs = || in_a.iter().zip(in_b);
                let covered = pairs().all(|(&in_a, &in_b)| !in_b || in_a);
                let met = pairs().any(|(&in_a, &in_b)| in_a && in_b);
                assert_eq!(covers(a, b), covered, "{a:?} over {b:?}");
                assert_eq!(intersects(a, b), met, "{a:?} and {b:?}");
            }
        }
    }

    proptest! {
        // Each case is checked against thousands of topics; more cases than the default find
        // the rare shapes (such as `/#`) that a few hundred can miss.
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn covers_agrees_with_brute_force(pattern in filter(), filter in filter()) {
            let brute = topics()
                .iter()
                .all(|t| !matches_filter(&filter, t) || matches_filter(&pattern, t));
            prop_assert_eq!(covers(&pattern, &filter), brute, "{} over {}", pattern, filter);
        }

        #[test]
        fn intersects_agrees_with_brute_force(a in filter(), b in filter()) {
            let brute = topics().iter().any(|t| matches_filter(&a, t) && matches_filter(&b, t));
            prop_assert_eq!(intersects(&a, &b), brute, "{} and {}", a, b);
        }

        #[test]
        fn a_filter_covers_and_meets_itself(filter in filter()) {
            prop_assert!(covers(&filter, &filter));
            prop_assert!(intersects(&filter, &filter));
        }
    }
}
