//! Topic names and topic filters (MQTT 3.1.1 §4.7, MQTT 5.0 §4.7 and §4.8.2).
//!
//! Why it exists: the codec must refuse a bad PUBLISH topic or SUBSCRIBE filter before the
//! broker core sees it, and the core's subscription trie needs one agreed definition of what a
//! filter matches, including the `$`-topic and `$share/` rules. Keeping both here means the
//! codec and the trie cannot drift apart. Nothing in this module allocates, so it is safe to
//! call on every packet.

use crate::protocol::ReasonCode;

/// Topics and filters travel as MQTT UTF-8 strings, whose length prefix is a `u16`.
const MAX_TOPIC_LEN: usize = u16::MAX as usize;

/// Only this exact, case-sensitive prefix makes a filter shared (MQTT 5.0 §4.8.2).
const SHARE_PREFIX: &str = "$share/";

/// Why a topic name or filter was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic is empty")]
    Empty,
    #[error("topic contains U+0000")]
    NullCharacter,
    #[error("topic name contains a wildcard ('+' or '#')")]
    WildcardInName,
    #[error("'#' must be the last character and occupy a whole level")]
    MisplacedMultiLevelWildcard,
    #[error("'+' must occupy a whole level")]
    MisplacedSingleLevelWildcard,
    #[error("shared subscription needs a non-empty share name without '/', '+' or '#' followed by a topic filter")]
    MalformedSharedSubscription,
    #[error("topic is longer than 65535 bytes")]
    TooLong,
}

impl TopicError {
    /// The MQTT 5 reason code the broker sends for this error: for a topic *name* 0x90, for a
    /// *filter* 0x8F.
    ///
    /// MQTT 5 has no finer-grained codes, so only where the topic was found matters.
    pub fn reason_code(self, in_filter: bool) -> ReasonCode {
        if in_filter {
            ReasonCode::TOPIC_FILTER_INVALID
        } else {
            ReasonCode::TOPIC_NAME_INVALID
        }
    }
}

/// Checks every topic string must pass, name or filter, before its structure is looked at, so
/// that the reported error does not depend on where in the string a NUL happens to be.
fn check_string(topic: &str) -> Result<(), TopicError> {
    check_len(topic)?;
    if topic.as_bytes().contains(&0) {
        return Err(TopicError::NullCharacter);
    }
    Ok(())
}

fn check_len(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong);
    }
    Ok(())
}

/// Validate a PUBLISH topic name (also Will topic, Response Topic). Non-empty, <= 65535 bytes,
/// no '+' '#' or U+0000.
///
/// Names starting with `$` are accepted: whether a client may publish to them is broker policy.
///
/// This runs on every PUBLISH, so U+0000 and the wildcards are looked for in one pass over the
/// bytes (see [`has_wildcards`] for why bytes are exact), with the errors reported in the same
/// order as for a filter: U+0000 wherever it is, before any wildcard.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    check_len(name)?;
    let (mut nul, mut wildcard) = (false, false);
    // No early exit: names are short and nearly always valid, and without one the loop is
    // vectorised.
    for &byte in name.as_bytes() {
        nul |= byte == 0;
        wildcard |= is_wildcard(byte);
    }
    if nul {
        return Err(TopicError::NullCharacter);
    }
    if wildcard {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Validate a topic filter as found in SUBSCRIBE/UNSUBSCRIBE, including the
/// `$share/<group>/<filter>` form (§4.8.2): the share name must be non-empty with no '/', '+',
/// '#'; the inner filter must itself be a valid non-empty filter.
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    parse_filter(filter).map(|_| ())
}

/// Wildcard placement rules of §4.7.1 for a filter already known to be a non-empty, NUL-free
/// string; errors are reported for the leftmost offending level.
fn check_filter_levels(filter: &str) -> Result<(), TopicError> {
    let mut rest = levels(filter).peekable();
    while let Some(level) = rest.next() {
        match level {
            "+" => {}
            "#" if rest.peek().is_none() => {}
            _ if level.contains('#') => return Err(TopicError::MisplacedMultiLevelWildcard),
            _ if level.contains('+') => return Err(TopicError::MisplacedSingleLevelWildcard),
            _ => {}
        }
    }
    Ok(())
}

/// Iterate the levels of a name or filter (split on '/'; "" levels are real levels: "/a/" has 3
/// levels "", "a", ""). Must be cheap (no allocation).
pub fn levels(topic: &str) -> Levels<'_> {
    Levels { rest: Some(topic) }
}

/// The iterator of [`levels`]. `str::split('/')` would do, but its `char` searcher ends each
/// match in a call to `memcmp` for the one-byte separator, which showed in profiles of
/// subscribing and restoring millions of subscriptions; a byte scan does not.
#[derive(Debug, Clone)]
pub struct Levels<'a> {
    rest: Option<&'a str>,
}

impl<'a> Iterator for Levels<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        match rest.bytes().position(|byte| byte == b'/') {
            Some(end) => {
                self.rest = Some(&rest[end + 1..]);
                Some(&rest[..end])
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

/// Topics beginning with '$' (e.g. $SYS/...) — a filter starting with a wildcard must not match
/// them (MQTT-4.7.2-1).
pub fn is_dollar_topic(topic: &str) -> bool {
    topic.starts_with('$')
}

/// Topics of the broker's own: `$SYS` and everything under it. Clients may subscribe to them
/// but not publish there.
pub fn is_broker_topic(topic: &str) -> bool {
    topic
        .strip_prefix("$SYS")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Whether `filter` contains '+' or '#' anywhere. For a shared filter the share name cannot
/// contain either, so this is also the answer for its inner filter.
///
/// A byte scan: both are ASCII, and in UTF-8 an ASCII byte is never part of another character.
/// It has no early exit, so that it is vectorised: several times faster than a `char` pattern
/// or a byte search that stops at the first hit, on topics of a few dozen bytes.
pub fn has_wildcards(filter: &str) -> bool {
    filter
        .bytes()
        .fold(false, |found, byte| found | is_wildcard(byte))
}

fn is_wildcard(byte: u8) -> bool {
    (byte == b'+') | (byte == b'#')
}

/// A parsed subscription filter: either a plain filter or a shared one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterKind<'a> {
    Plain(&'a str),
    Shared { group: &'a str, filter: &'a str },
}

impl<'a> FilterKind<'a> {
    /// The part that is matched against topic names: `$share/<group>/` plays no part in
    /// matching (§4.8.2).
    pub fn filter(&self) -> &'a str {
        match *self {
            FilterKind::Plain(filter) | FilterKind::Shared { filter, .. } => filter,
        }
    }

    /// The share name, if this is a shared subscription.
    pub fn group(&self) -> Option<&'a str> {
        match *self {
            FilterKind::Plain(_) => None,
            FilterKind::Shared { group, .. } => Some(group),
        }
    }
}

/// Validate and split a filter. `$share/g/a/b` -> `Shared { group: "g", filter: "a/b" }`.
/// `$share` alone or `$sharefoo/x` is a plain filter: it is only shared if it starts with
/// exactly "$share/".
///
/// Length, emptiness and U+0000 are checked on the whole string first (it is one string on the
/// wire), then the share name, then the wildcard placement of the inner filter.
pub fn parse_filter(filter: &str) -> Result<FilterKind<'_>, TopicError> {
    check_string(filter)?;
    let Some(rest) = filter.strip_prefix(SHARE_PREFIX) else {
        check_filter_levels(filter)?;
        return Ok(FilterKind::Plain(filter));
    };
    let (group, inner) = rest
        .split_once('/')
        .ok_or(TopicError::MalformedSharedSubscription)?;
    if group.is_empty() || has_wildcards(group) || inner.is_empty() {
        return Err(TopicError::MalformedSharedSubscription);
    }
    check_filter_levels(inner)?;
    Ok(FilterKind::Shared {
        group,
        filter: inner,
    })
}

/// Reference matcher: does a *plain* (non-shared, already validated) filter match a (validated)
/// topic name?
///
/// '+' matches exactly one level, including an empty one; '#' matches the parent level and any
/// number of child levels; a filter starting with a wildcard does not match a topic starting
/// with '$' (MQTT-4.7.2-1). Comparison is byte-exact. A shared filter must be unwrapped with
/// [`FilterKind::filter`] first, otherwise `$share/...` is compared literally.
pub fn matches_filter(filter: &str, topic: &str) -> bool {
    if is_dollar_topic(topic) && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut filter_levels = levels(filter);
    let mut topic_levels = levels(topic);
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            // Also reached when the topic has run out: "a/#" matches "a".
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // §4.7.1.2, §4.7.1.3, §4.7.2, §4.7.3 and §4.8.2 examples, plus edge cases the spec implies.
    const MATCHES: &[(&str, &str)] = &[
        ("sport/tennis/player1/#", "sport/tennis/player1"),
        ("sport/tennis/player1/#", "sport/tennis/player1/ranking"),
        (
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon",
        ),
        ("sport/#", "sport"),
        ("#", "sport"),
        ("#", "sport/tennis/player1"),
        ("#", "/"),
        ("sport/tennis/#", "sport/tennis"),
        ("sport/tennis/+", "sport/tennis/player1"),
        ("sport/tennis/+", "sport/tennis/player2"),
        ("sport/+", "sport/"),
        ("+", "sport"),
        ("+/tennis/#", "sport/tennis"),
        ("+/tennis/#", "sport/tennis/player1/ranking"),
        ("sport/+/player1", "sport/tennis/player1"),
        ("+/+", "/finance"),
        ("/+", "/finance"),
        ("$SYS/#", "$SYS/monitor/Clients"),
        ("$SYS/#", "$SYS"),
        ("$SYS/monitor/+", "$SYS/monitor/Clients"),
        ("ACCOUNTS", "ACCOUNTS"),
        ("Accounts payable", "Accounts payable"),
        ("/finance", "/finance"),
        ("/", "/"),
        ("a/#", "a/"),
        ("a/#", "a/b/c"),
        ("a/+/b", "a//b"),
        ("+/+", "a/"),
        ("+/+", "/"),
        ("+/#", "/"),
        ("$x/+", "$x/y"),
    ];

    const NON_MATCHES: &[(&str, &str)] = &[
        ("sport/tennis/+", "sport/tennis/player1/ranking"),
        ("sport/+", "sport"),
        ("+", "/finance"),
        ("+", "sport/"),
        ("#", "$SYS/monitor/Clients"),
        ("#", "$SYS"),
        ("+/monitor/Clients", "$SYS/monitor/Clients"),
        ("+/#", "$SYS/x"),
        ("ACCOUNTS", "Accounts"),
        ("/finance", "finance"),
        ("finance", "/finance"),
        ("a", "a/"),
        ("a/", "a"),
        ("a/b", "a"),
        ("a/b/#", "a"),
        ("sport/#", "sports"),
        ("sport/tennis/player1/#", "sport/tennis/player2"),
    ];

    #[test]
    fn spec_matching_examples() {
        for &(filter, topic) in MATCHES {
            assert_eq!(validate_topic_filter(filter), Ok(()), "{filter:?}");
            assert_eq!(validate_topic_name(topic), Ok(()), "{topic:?}");
            assert!(
                matches_filter(filter, topic),
                "{filter:?} should match {topic:?}"
            );
        }
        for &(filter, topic) in NON_MATCHES {
            assert_eq!(validate_topic_filter(filter), Ok(()), "{filter:?}");
            assert_eq!(validate_topic_name(topic), Ok(()), "{topic:?}");
            assert!(
                !matches_filter(filter, topic),
                "{filter:?} must not match {topic:?}"
            );
        }
    }

    #[test]
    fn valid_filters() {
        for filter in [
            "#",
            "+",
            "/",
            "//",
            "sport/tennis/#",
            "+/tennis/#",
            "sport/+/player1",
            "+/+",
            "/+",
            "+/#",
            "$SYS/#",
            "$share",
            "$sharefoo/x",
            "$SHARE/g",
            "$share/g/#",
            "$share/g/+",
            "$share/g//",
            "$share/g/$share/h/a",
            "a b/ c",
            "é/ü",
        ] {
            assert_eq!(validate_topic_filter(filter), Ok(()), "{filter:?}");
        }
    }

    #[test]
    fn invalid_filters() {
        use TopicError::*;
        for (filter, error) in [
            ("", Empty),
            ("a\0b", NullCharacter),
            ("#\0", NullCharacter),
            ("sport/tennis#", MisplacedMultiLevelWildcard),
            ("sport/tennis/#/ranking", MisplacedMultiLevelWildcard),
            ("a/#/b", MisplacedMultiLevelWildcard),
            ("a#", MisplacedMultiLevelWildcard),
            ("#a", MisplacedMultiLevelWildcard),
            ("#/", MisplacedMultiLevelWildcard),
            ("##", MisplacedMultiLevelWildcard),
            ("+#", MisplacedMultiLevelWildcard),
            ("sport+", MisplacedSingleLevelWildcard),
            ("a+", MisplacedSingleLevelWildcard),
            ("+a", MisplacedSingleLevelWildcard),
            ("a/+b", MisplacedSingleLevelWildcard),
            ("++", MisplacedSingleLevelWildcard),
            ("a+/#/b", MisplacedSingleLevelWildcard),
            ("$share/", MalformedSharedSubscription),
            ("$share//a", MalformedSharedSubscription),
            ("$share/g", MalformedSharedSubscription),
            ("$share/g/", MalformedSharedSubscription),
            ("$share/g+/a", MalformedSharedSubscription),
            ("$share/+/a", MalformedSharedSubscription),
            ("$share/#/a", MalformedSharedSubscription),
            ("$share/a#/b", MalformedSharedSubscription),
            ("$share/g/a#", MisplacedMultiLevelWildcard),
            ("$share/g/#/a", MisplacedMultiLevelWildcard),
            ("$share/g/a+", MisplacedSingleLevelWildcard),
            ("$share/g\0/a", NullCharacter),
        ] {
            assert_eq!(validate_topic_filter(filter), Err(error), "{filter:?}");
            assert_eq!(parse_filter(filter), Err(error), "{filter:?}");
        }
    }

    #[test]
    fn topic_names() {
        use TopicError::*;
        for name in [
            "a",
            "/",
            "//",
            "/finance",
            "$SYS/x",
            "$share/g",
            "Accounts payable",
        ] {
            assert_eq!(validate_topic_name(name), Ok(()), "{name:?}");
        }
        for (name, error) in [
            ("", Empty),
            ("\0", NullCharacter),
            ("a/\0", NullCharacter),
            ("a/+", WildcardInName),
            ("a+", WildcardInName),
            ("#", WildcardInName),
            ("a/b#", WildcardInName),
            // U+0000 is reported wherever it is, even after a wildcard.
            ("+\0", NullCharacter),
            ("sensors/building-1/floor-3/#/temperature\0", NullCharacter),
        ] {
            assert_eq!(validate_topic_name(name), Err(error), "{name:?}");
        }
        // The byte scan is vectorised: a wildcard is found at every position of names longer
        // than one vector, and multi-byte characters never look like one.
        let name = "sensors/bâtiment-1/étage-3/température/°C";
        assert_eq!(validate_topic_name(name), Ok(()));
        for at in 0..=name.len() {
            if name.is_char_boundary(at) {
                for wildcard in ["+", "#"] {
                    let bad = format!("{}{wildcard}{}", &name[..at], &name[at..]);
                    assert_eq!(validate_topic_name(&bad), Err(WildcardInName), "{bad:?}");
                    assert!(has_wildcards(&bad), "{bad:?}");
                }
            }
        }
        assert!(!has_wildcards(name));
        assert_eq!(validate_topic_name(&"a".repeat(65_536)), Err(TooLong));
    }

    #[test]
    fn length_limit_is_in_bytes() {
        let max = "a".repeat(MAX_TOPIC_LEN);
        assert_eq!(validate_topic_name(&max), Ok(()));
        assert_eq!(validate_topic_filter(&max), Ok(()));
        let over = "a".repeat(MAX_TOPIC_LEN + 1);
        assert_eq!(validate_topic_name(&over), Err(TopicError::TooLong));
        assert_eq!(validate_topic_filter(&over), Err(TopicError::TooLong));
        // 32768 two-byte characters: 65536 bytes but only 32768 chars.
        let wide = "é".repeat(32_768);
        assert_eq!(validate_topic_name(&wide), Err(TopicError::TooLong));
        let shared_over = format!("$share/g/{}", "a".repeat(MAX_TOPIC_LEN - 8));
        assert_eq!(
            validate_topic_filter(&shared_over),
            Err(TopicError::TooLong)
        );
    }

    #[test]
    fn parse_filter_splits_shared_subscriptions() {
        for (input, kind, group, inner) in [
            (
                "$share/consumer1/sport/tennis/+",
                FilterKind::Shared {
                    group: "consumer1",
                    filter: "sport/tennis/+",
                },
                Some("consumer1"),
                "sport/tennis/+",
            ),
            (
                "$share/consumer1//finance",
                FilterKind::Shared {
                    group: "consumer1",
                    filter: "/finance",
                },
                Some("consumer1"),
                "/finance",
            ),
            (
                "$share/g/#",
                FilterKind::Shared {
                    group: "g",
                    filter: "#",
                },
                Some("g"),
                "#",
            ),
            ("$share", FilterKind::Plain("$share"), None, "$share"),
            (
                "$sharefoo/x",
                FilterKind::Plain("$sharefoo/x"),
                None,
                "$sharefoo/x",
            ),
            ("sport/+", FilterKind::Plain("sport/+"), None, "sport/+"),
        ] {
            let parsed = parse_filter(input);
            assert_eq!(parsed, Ok(kind), "{input:?}");
            assert_eq!(kind.group(), group, "{input:?}");
            assert_eq!(kind.filter(), inner, "{input:?}");
        }
    }

    #[test]
    fn shared_filters_match_like_their_inner_filter() {
        let shared = |f| parse_filter(f).map(|kind| kind.filter());
        let consumer = shared("$share/consumer1/sport/tennis/+").unwrap();
        assert!(matches_filter(consumer, "sport/tennis/player1"));
        let finance = shared("$share/consumer1//finance").unwrap();
        assert!(matches_filter(finance, "/finance"));
        assert!(!matches_filter(finance, "finance"));
        let everything = shared("$share/g/#").unwrap();
        assert!(matches_filter(everything, "a/b"));
        assert!(!matches_filter(everything, "$SYS/x"));
    }

    #[test]
    fn levels_keeps_empty_levels() {
        assert!(levels("/a/").eq(["", "a", ""]));
        assert!(levels("a").eq(["a"]));
        assert!(levels("/").eq(["", ""]));
        assert!(levels("a//b").eq(["a", "", "b"]));
    }

    #[test]
    fn dollar_topics_and_wildcards() {
        assert!(is_dollar_topic("$SYS/x"));
        assert!(is_dollar_topic("$"));
        assert!(!is_dollar_topic("a/$SYS"));
        assert!(!is_dollar_topic("/$SYS"));
        assert!(is_broker_topic("$SYS"));
        assert!(is_broker_topic("$SYS/broker/uptime"));
        assert!(!is_broker_topic("$SYSTEM/x"));
        assert!(!is_broker_topic("$share/g/$SYS"));
        assert!(!is_broker_topic("a/$SYS"));
        assert!(has_wildcards("a/+"));
        assert!(has_wildcards("#"));
        assert!(!has_wildcards("a/b"));
        assert!(!has_wildcards("$share/g/a"));
    }

    #[test]
    fn reason_codes_depend_on_where_the_topic_was_found() {
        assert_eq!(
            TopicError::WildcardInName.reason_code(false),
            ReasonCode::TOPIC_NAME_INVALID
        );
        assert_eq!(
            TopicError::MisplacedMultiLevelWildcard.reason_code(true),
            ReasonCode::TOPIC_FILTER_INVALID
        );
        assert_eq!(
            TopicError::MalformedSharedSubscription.reason_code(true),
            ReasonCode::TOPIC_FILTER_INVALID
        );
        assert_eq!(TopicError::Empty.reason_code(false).0, 0x90);
        assert_eq!(TopicError::TooLong.reason_code(true).0, 0x8F);
    }

    /// Independent model of §4.7: recursion over explicit level lists.
    fn model_matches(filter: &[&str], topic: &[&str]) -> bool {
        match (filter, topic) {
            (["#"], _) => true,
            ([], []) => true,
            (["+", f_rest @ ..], [_, t_rest @ ..]) => model_matches(f_rest, t_rest),
            ([f, f_rest @ ..], [t, t_rest @ ..]) => f == t && model_matches(f_rest, t_rest),
            _ => false,
        }
    }

    fn model_matches_top(filter: &[&str], topic: &[&str]) -> bool {
        let wildcard_first = matches!(filter.first(), Some(&"+" | &"#"));
        let dollar_first = topic.first().is_some_and(|l| l.starts_with('$'));
        !(wildcard_first && dollar_first) && model_matches(filter, topic)
    }

    /// A filter made of whole levels is valid exactly when '#' only appears as the last level
    /// and it is not the empty string (a single empty level).
    fn model_filter_valid(filter: &[&str]) -> bool {
        filter != [""]
            && filter
                .iter()
                .enumerate()
                .all(|(i, level)| *level != "#" || i + 1 == filter.len())
    }

    fn filter_levels() -> impl Strategy<Value = Vec<&'static str>> {
        prop::collection::vec(
            prop::sample::select(vec!["a", "b", "", "$x", "+", "#"]),
            1..6,
        )
    }

    fn topic_levels() -> impl Strategy<Value = Vec<&'static str>> {
        prop::collection::vec(prop::sample::select(vec!["a", "b", "", "$x"]), 1..6)
    }

    proptest! {
        #[test]
        fn matcher_agrees_with_model(filter in filter_levels(), topic in topic_levels()) {
            let filter_str = filter.join("/");
            let topic_str = topic.join("/");
            prop_assert_eq!(validate_topic_filter(&filter_str).is_ok(), model_filter_valid(&filter));
            prop_assume!(model_filter_valid(&filter));
            // A lone "" level is the empty string, which is not a valid topic.
            prop_assume!(!topic_str.is_empty());
            prop_assert_eq!(validate_topic_name(&topic_str), Ok(()));
            prop_assert_eq!(
                matches_filter(&filter_str, &topic_str),
                model_matches_top(&filter, &topic)
            );
        }

        #[test]
        fn shared_prefix_does_not_change_matching(
            filter in filter_levels(),
            topic in topic_levels(),
        ) {
            let filter_str = filter.join("/");
            let topic_str = topic.join("/");
            prop_assume!(model_filter_valid(&filter) && !topic_str.is_empty());
            let shared = format!("$share/grp/{filter_str}");
            let kind = parse_filter(&shared).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(kind.group(), Some("grp"));
            prop_assert_eq!(
                matches_filter(kind.filter(), &topic_str),
                matches_filter(&filter_str, &topic_str)
            );
        }

        #[test]
        fn valid_name_matches_itself(levels in topic_levels()) {
            let name = levels.join("/");
            prop_assume!(!name.is_empty());
            prop_assert!(matches_filter(&name, &name));
        }

        #[test]
        fn validation_is_total_and_consistent(s in any::<String>()) {
            let filter = validate_topic_filter(&s);
            prop_assert_eq!(filter, parse_filter(&s).map(|_| ()));
            if validate_topic_name(&s).is_ok() && !s.starts_with(SHARE_PREFIX) {
                prop_assert_eq!(filter, Ok(()));
            }
            if s.is_empty() {
                prop_assert_eq!(filter, Err(TopicError::Empty));
            }
        }

        #[test]
        fn validation_on_topic_like_strings(s in "[ab$/+#\u{0}]{0,12}|\\$share/[ag/+#]{0,8}") {
            let name = validate_topic_name(&s);
            let filter = parse_filter(&s);
            if s.contains('\0') {
                prop_assert_eq!(name, Err(TopicError::NullCharacter));
                prop_assert_eq!(filter, Err(TopicError::NullCharacter));
            }
            if name.is_ok() {
                prop_assert!(!has_wildcards(&s));
            }
            if let Ok(kind) = filter {
                match kind {
                    FilterKind::Shared { group, filter: inner } => {
                        prop_assert_eq!(format!("$share/{group}/{inner}"), s.clone());
                        prop_assert!(!group.is_empty() && !inner.is_empty());
                        prop_assert!(!group.contains(['/', '+', '#']));
                    }
                    FilterKind::Plain(plain) => {
                        prop_assert_eq!(plain, s.as_str());
                        prop_assert!(!s.starts_with(SHARE_PREFIX));
                    }
                }
            }
        }
    }
}
