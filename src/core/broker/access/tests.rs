//! The rules as a client sees them: each test reads a small ACL file and asks what a client may
//! do, as the broker will.

use super::*;

fn rules(text: &str) -> AccessRules {
    AccessRules::parse(text).unwrap_or_else(|error| panic!("{error}"))
}

fn user<'a>(username: &'a str) -> Client<'a> {
    Client {
        username: Some(username),
        client_id: "client-1",
    }
}

const ANONYMOUS: Client<'static> = Client {
    username: None,
    client_id: "anon-1",
};

#[test]
fn access_words_grant_what_they_say() {
    let rules = rules("topic read r\ntopic write w\ntopic readwrite rw\ntopic both\ntopic deny d");
    for (topic, read, write) in [
        ("r", true, false),
        ("w", false, true),
        ("rw", true, true),
        ("both", true, true),
        ("d", false, false),
        ("other", false, false),
    ] {
        assert_eq!(rules.may_read(ANONYMOUS, topic), read, "read {topic:?}");
        assert_eq!(rules.may_write(ANONYMOUS, topic), write, "write {topic:?}");
    }
    // Subscribing needs a read grant.
    assert_eq!(rules.filter_access(ANONYMOUS, "w"), FilterAccess::Denied);
    assert_eq!(rules.filter_access(ANONYMOUS, "rw"), FilterAccess::Whole);
}

#[test]
fn rules_before_the_first_user_are_for_anonymous_clients_only() {
    let rules = rules("topic anon/#\nuser alice\ntopic alice/#\nuser bob\ntopic read bob/#");
    assert!(rules.may_write(ANONYMOUS, "anon/x"));
    assert!(!rules.may_write(ANONYMOUS, "alice/x"));
    assert!(!rules.may_write(user("alice"), "anon/x"));
    assert!(rules.may_write(user("alice"), "alice/x"));
    assert!(!rules.may_read(user("alice"), "bob/x"));
    assert!(rules.may_read(user("bob"), "bob/x"));
    assert!(!rules.may_write(user("bob"), "bob/x"));
    // A username without a section has no rules of its own, not the anonymous ones.
    assert!(!rules.may_read(user("carol"), "anon/x"));
    assert!(!rules.may_read(user("carol"), "alice/x"));
}

#[test]
fn patterns_apply_to_every_client_with_its_names() {
    let rules = rules(
        "topic read other\nuser alice\ntopic read x\npattern read home/%u/#\n\
         pattern write devices/%c/out\npattern readwrite common",
    );
    let alice = Client {
        username: Some("alice"),
        client_id: "phone",
    };
    assert!(rules.may_read(alice, "home/alice/lamp"));
    assert!(!rules.may_read(alice, "home/bob/lamp"));
    assert!(rules.may_write(alice, "devices/phone/out"));
    assert!(!rules.may_write(alice, "devices/tablet/out"));
    assert!(rules.may_write(alice, "common"));
    assert_eq!(
        rules.filter_access(alice, "home/alice/#"),
        FilterAccess::Whole
    );
    assert_eq!(rules.filter_access(alice, "home/+/#"), FilterAccess::Denied);
    // Anonymous clients get the patterns that do not need a username.
    assert!(rules.may_write(ANONYMOUS, "devices/anon-1/out"));
    assert!(rules.may_read(ANONYMOUS, "common"));
    assert!(rules.may_read(ANONYMOUS, "other"));
}

#[test]
fn a_username_pattern_does_not_apply_without_a_username() {
    let rules = rules("pattern read home/%u/#\npattern deny %u");
    assert!(!rules.may_read(ANONYMOUS, "home//x"));
    assert!(!rules.may_read(ANONYMOUS, "home/%u/x"));
    assert_eq!(
        rules.filter_access(ANONYMOUS, "home/+/#"),
        FilterAccess::Denied
    );
    // Nor does a deny pattern: it has nothing to deny an anonymous client.
    assert!(rules.may_read(ANONYMOUS, "$SYS/x"));
}

#[test]
fn names_with_wildcards_or_slashes_do_not_widen_patterns() {
    let rules = rules("pattern read home/%u/#\npattern write dev/%c");
    for name in ["+", "#", "a/b", "+/x"] {
        let by_name = user(name);
        assert!(!rules.may_read(by_name, "home/bob/x"), "{name:?}");
        assert!(
            !rules.may_read(by_name, &format!("home/{name}/x")),
            "{name:?}"
        );
        assert_eq!(
            rules.filter_access(by_name, "home/#"),
            FilterAccess::Denied,
            "{name:?}"
        );
        let by_id = Client {
            username: Some("u"),
            client_id: name,
        };
        assert!(!rules.may_write(by_id, "dev/other"), "{name:?}");
        assert!(!rules.may_write(by_id, "dev/a/b"), "{name:?}");
    }
}

#[test]
fn a_deny_pattern_that_cannot_be_substituted_denies_everything() {
    let rules = rules("topic readwrite #\npattern deny private/%c/#");
    let safe = Client {
        username: None,
        client_id: "ok",
    };
    assert!(!rules.may_read(safe, "private/ok/x"));
    assert!(rules.may_read(safe, "private/other/x"));
    let widening = Client {
        username: None,
        client_id: "a/b",
    };
    assert!(!rules.may_read(widening, "private/other/x"));
    assert!(!rules.may_write(widening, "public"));
    assert!(!rules.may_read(widening, "$SYS/uptime"));
    assert_eq!(
        rules.filter_access(widening, "public"),
        FilterAccess::Denied
    );
}

#[test]
fn deny_wins_wherever_it_is() {
    let rules = rules(
        "topic deny early/#\ntopic readwrite #\ntopic deny late\nuser alice\ntopic readwrite #\n\
         pattern deny %u/secret",
    );
    for topic in ["early/x", "late"] {
        assert!(!rules.may_read(ANONYMOUS, topic), "{topic:?}");
        assert!(!rules.may_write(ANONYMOUS, topic), "{topic:?}");
    }
    assert!(rules.may_write(ANONYMOUS, "open"));
    assert!(!rules.may_write(user("alice"), "alice/secret"));
    assert!(rules.may_write(user("alice"), "bob/secret"));
}

#[test]
fn sys_topics_are_readable_unless_denied() {
    let empty = rules("");
    assert!(empty.may_read(ANONYMOUS, "$SYS/broker/uptime"));
    assert!(empty.may_read(user("alice"), "$SYS"));
    assert!(!empty.may_read(ANONYMOUS, "$SYSTEM/x"));
    assert!(!empty.may_write(ANONYMOUS, "$SYS/broker/uptime"));
    assert!(!empty.may_read(ANONYMOUS, "a"));
    assert_eq!(
        empty.filter_access(ANONYMOUS, "$SYS/#"),
        FilterAccess::Whole
    );
    assert_eq!(empty.filter_access(ANONYMOUS, "#"), FilterAccess::Denied);

    let denied = rules("user alice\ntopic deny $SYS/broker/clients/#\npattern deny $SYS/%c");
    let alice = user("alice");
    assert!(!denied.may_read(alice, "$SYS/broker/clients/connected"));
    assert!(!denied.may_read(alice, "$SYS/client-1"));
    assert!(denied.may_read(alice, "$SYS/broker/uptime"));
    assert_eq!(denied.filter_access(alice, "$SYS/#"), FilterAccess::Partial);
    assert_eq!(
        denied.filter_access(alice, "$SYS/client-1"),
        FilterAccess::Denied
    );
    assert_eq!(
        denied.filter_access(alice, "$SYS/broker/uptime"),
        FilterAccess::Whole
    );

    // Wildcards at the start do not reach `$` topics, for writes as for reads.
    let everything = rules("topic readwrite #\ntopic deny +/#");
    assert!(everything.may_read(ANONYMOUS, "$SYS/x"));
    assert!(!everything.may_write(ANONYMOUS, "$SYS/x"));
    assert!(!everything.may_write(ANONYMOUS, "a"));
    assert!(rules("topic write $SYS/x").may_write(ANONYMOUS, "$SYS/x"));
}

#[test]
fn a_subscription_is_whole_when_one_grant_covers_it() {
    let rules = rules("topic read public/#\ntopic read a\ntopic read a/+/#");
    for filter in [
        "public/#",
        "public/a/+",
        "public",
        "$share/g/public/#",
        "a",
        "a/+/b",
    ] {
        assert_eq!(
            rules.filter_access(ANONYMOUS, filter),
            FilterAccess::Whole,
            "{filter:?}"
        );
    }
    for filter in ["#", "+/a", "+", "a/#", "$share/g/#", "public/#/x"] {
        assert_eq!(
            rules.filter_access(ANONYMOUS, filter),
            FilterAccess::Denied,
            "{filter:?}"
        );
    }
}

#[test]
fn a_deny_inside_a_granted_filter_makes_it_partial() {
    let rules = rules("topic read public/#\ntopic deny public/secret");
    assert_eq!(
        rules.filter_access(ANONYMOUS, "public/#"),
        FilterAccess::Partial
    );
    assert_eq!(
        rules.filter_access(ANONYMOUS, "public/+"),
        FilterAccess::Partial
    );
    assert_eq!(
        rules.filter_access(ANONYMOUS, "public/x/#"),
        FilterAccess::Whole
    );
    assert_eq!(
        rules.filter_access(ANONYMOUS, "public/secret"),
        FilterAccess::Denied
    );
    assert!(!rules.may_read(ANONYMOUS, "public/secret"));
    assert!(rules.may_read(ANONYMOUS, "public/x"));
}

#[test]
fn rules_can_be_shared_between_shards() {
    fn shareable<T: Send + Sync>() {}
    shareable::<AccessRules>();
}

mod properties {
    use super::super::strategies::{filter, topics};
    use super::*;
    use proptest::prelude::*;

    /// A few `topic` lines for anonymous clients.
    fn file() -> impl Strategy<Value = String> {
        let access = prop::sample::select(vec!["read", "write", "readwrite", "deny"]);
        prop::collection::vec((access, filter()), 0..4).prop_map(|lines| {
            lines
                .iter()
                .map(|(access, filter)| format!("topic {access} {filter}\n"))
                .collect()
        })
    }

    proptest! {
        /// The subscription verdict agrees with the per-topic checks it stands in for.
        #[test]
        fn filter_access_agrees_with_may_read(file in file(), filter in filter()) {
            let rules = rules(&file);
            let matched = topics().iter().filter(|t| matches_filter(&filter, t));
            let unreadable = matched.filter(|t| !rules.may_read(ANONYMOUS, t)).count();
            match rules.filter_access(ANONYMOUS, &filter) {
                // Skipping the per-message check must not deliver anything may_read refuses.
                FilterAccess::Whole => prop_assert_eq!(unreadable, 0),
                // Otherwise the per-message check would have nothing to do.
                FilterAccess::Partial => prop_assert!(unreadable > 0),
                FilterAccess::Denied => {
                    // With grants that cannot add up (one grant, no deny), refused means some
                    // topic of the filter is not readable.
                    let grants = file.lines().filter(|l| l.starts_with("topic read")).count();
                    if grants <= 1 && !file.contains("topic deny") {
                        prop_assert!(unreadable > 0, "{:?}", file);
                    }
                }
            }
        }
    }
}
