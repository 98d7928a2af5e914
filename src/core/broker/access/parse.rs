//! Reading Mosquitto 2's `acl_file` format, so that an existing Mosquitto ACL file works
//! unchanged. Where Mosquitto reads a line in a surprising way, this refuses it rather than
//! guess: every line that is not understood is reported with its number, since a rule silently
//! skipped, or read as something else, is a hole in the access control.
//!
//! The format, one rule a line (blank lines and lines starting with `#` are ignored):
//! - `topic [read|write|readwrite|deny] TOPIC`: without an access word the rule grants
//!   `readwrite`. As in Mosquitto, a topic containing spaces needs the access word, since with
//!   two or more words the first one must be one; a lone access word is refused as a missing
//!   topic (Mosquitto would read it as a topic named `read`, for example).
//! - `user NAME`: the `topic` lines after it, up to the next `user` line, are that user's; the
//!   ones before the first `user` line are for clients without a username.
//! - `pattern [read|write|readwrite|deny] TOPIC`: for every client wherever it appears, `%u`
//!   and `%c` in TOPIC standing for the username and client id (see `pattern.rs`).

use std::fmt;

use super::pattern::Pattern;
use super::{Access, AccessRules, Rule};
use crate::protocol::topic::validate_topic_filter;

/// The lines of an ACL file that could not be read: 1-based line number and why, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRulesError {
    pub problems: Vec<(usize, String)>,
}

impl fmt::Display for AccessRulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, (line, reason)) in self.problems.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            write!(f, "line {line}: {reason}")?;
        }
        Ok(())
    }
}

impl std::error::Error for AccessRulesError {}

/// One meaningful line of the file.
#[derive(Debug, PartialEq, Eq)]
enum Line<'a> {
    User(&'a str),
    Topic(Access, &'a str),
    Pattern(Access, &'a str),
}

impl AccessRules {
    /// Reads an ACL file in Mosquitto's `acl_file` format; every bad line is reported, not just
    /// the first.
    pub fn parse(text: &str) -> Result<AccessRules, AccessRulesError> {
        let mut rules = AccessRules::default();
        let mut problems = Vec::new();
        // `None` until the first `user` line: the rules of clients without a username.
        let mut section: Option<&str> = None;
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match parse_line(line) {
                Ok(Line::User(name)) => {
                    rules.users.entry(name.into()).or_default();
                    section = Some(name);
                }
                Ok(Line::Topic(access, topic)) => {
                    let rule = Rule::new(topic, access);
                    match section {
                        None => rules.anonymous.push(rule),
                        Some(name) => rules.users.entry(name.into()).or_default().push(rule),
                    }
                }
                Ok(Line::Pattern(access, topic)) => match Pattern::new(topic, access) {
                    Some(pattern) => rules.patterns.push(pattern),
                    None => rules.everyone.push(Rule::new(topic, access)),
                },
                Err(reason) => problems.push((index + 1, reason)),
            }
        }
        if problems.is_empty() {
            Ok(rules)
        } else {
            Err(AccessRulesError { problems })
        }
    }
}

fn parse_line(line: &str) -> Result<Line<'_>, String> {
    let (keyword, rest) = split_word(line);
    match keyword {
        "user" if rest.is_empty() => Err("`user` needs a username".to_owned()),
        "user" => Ok(Line::User(rest)),
        "topic" | "pattern" => {
            let (access, topic) = access_and_topic(rest)?;
            validate_topic_filter(topic)
                .map_err(|error| format!("invalid topic filter {topic:?}: {error}"))?;
            Ok(match keyword {
                "topic" => Line::Topic(access, topic),
                _ => Line::Pattern(access, topic),
            })
        }
        _ => Err(format!(
            "unknown keyword {keyword:?} (expected `topic`, `pattern` or `user`)"
        )),
    }
}

/// What follows `topic` or `pattern`: one word is the topic, granted `readwrite`; with more, the
/// first is the access word and the rest the topic.
fn access_and_topic(rest: &str) -> Result<(Access, &str), String> {
    let (first, topic) = split_word(rest);
    match (Access::from_word(first), topic.is_empty()) {
        _ if first.is_empty() => Err("missing topic".to_owned()),
        (Some(_), true) => Err(format!("missing topic after {first:?}")),
        (None, true) => Ok((Access::ReadWrite, first)),
        (Some(access), false) => Ok((access, topic)),
        (None, false) => Err(format!(
            "unknown access {first:?} (expected read, write, readwrite or deny; \
             a topic containing spaces needs one)"
        )),
    }
}

/// The first word of `text` (which is trimmed) and the rest, trimmed.
fn split_word(text: &str) -> (&str, &str) {
    match text.split_once([' ', '\t']) {
        Some((word, rest)) => (word, rest.trim_start()),
        None => (text, ""),
    }
}

impl Access {
    fn from_word(word: &str) -> Option<Access> {
        Some(match word {
            "read" => Access::Read,
            "write" => Access::Write,
            "readwrite" => Access::ReadWrite,
            "deny" => Access::Deny,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<(usize, String)> {
        AccessRules::parse(text)
            .expect_err("should be refused")
            .problems
    }

    #[test]
    fn access_words_and_the_readwrite_default() {
        for (line, expected) in [
            ("topic read a/b", Line::Topic(Access::Read, "a/b")),
            ("topic write a/+", Line::Topic(Access::Write, "a/+")),
            ("topic readwrite #", Line::Topic(Access::ReadWrite, "#")),
            ("topic deny a/#", Line::Topic(Access::Deny, "a/#")),
            ("topic a/b", Line::Topic(Access::ReadWrite, "a/b")),
            ("pattern read %u/#", Line::Pattern(Access::Read, "%u/#")),
            ("pattern %c", Line::Pattern(Access::ReadWrite, "%c")),
            (
                "topic read  Accounts payable/+",
                Line::Topic(Access::Read, "Accounts payable/+"),
            ),
            ("topic\tdeny\ta b", Line::Topic(Access::Deny, "a b")),
            ("user alice", Line::User("alice")),
            ("user two words", Line::User("two words")),
        ] {
            assert_eq!(parse_line(line), Ok(expected), "{line:?}");
        }
    }

    #[test]
    fn sections_collect_the_topic_lines_after_them() {
        let rules = AccessRules::parse(
            "  # comment\n\ntopic read anon\nuser alice\n  topic write mine\npattern read p/%u\n\
             pattern deny fixed\nuser bob\nuser alice\ntopic deny again\n",
        )
        .unwrap();
        assert_eq!(rules.anonymous, [Rule::new("anon", Access::Read)]);
        assert_eq!(
            rules.users["alice"],
            [
                Rule::new("mine", Access::Write),
                Rule::new("again", Access::Deny)
            ]
        );
        assert!(rules.users["bob"].is_empty());
        assert_eq!(rules.everyone, [Rule::new("fixed", Access::Deny)]);
        assert_eq!(rules.patterns.len(), 1);
    }

    #[test]
    fn every_bad_line_is_reported_with_its_number() {
        let found = problems(
            "topic read ok\ntopik read a\ntopic\ntopic read\ntopic reed a/b\n\
             topic read a/#/b\n# fine\npattern write a+\nuser\ntopic read a/b # note\n\
             topic read a b",
        );
        let lines: Vec<usize> = found.iter().map(|(line, _)| *line).collect();
        assert_eq!(lines, [2, 3, 4, 5, 6, 8, 9, 10], "{found:?}");
        assert!(
            found[0].1.contains("unknown keyword \"topik\""),
            "{found:?}"
        );
        assert!(found[1].1.contains("missing topic"), "{found:?}");
        assert!(
            found[2].1.contains("missing topic after \"read\""),
            "{found:?}"
        );
        assert!(found[3].1.contains("unknown access \"reed\""), "{found:?}");
        assert!(
            found[4].1.contains("invalid topic filter \"a/#/b\""),
            "{found:?}"
        );
        assert!(found[6].1.contains("username"), "{found:?}");
    }

    #[test]
    fn the_error_lists_every_line() {
        let error = AccessRules::parse("topic\nfoo").unwrap_err();
        assert_eq!(
            error.to_string(),
            "line 1: missing topic; line 2: unknown keyword \"foo\" (expected `topic`, \
             `pattern` or `user`)"
        );
    }

    #[test]
    fn an_empty_file_is_valid() {
        let rules = AccessRules::parse("\n  \n# nothing\n").unwrap();
        assert!(rules.anonymous.is_empty() && rules.users.is_empty());
    }
}
