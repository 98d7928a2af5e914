//! Which topics a connected client may publish to and receive: Mosquitto-compatible ACL rules
//! (the `acl_file` format, read by `parse.rs`).
//!
//! Why it is in the core: the broker asks on every PUBLISH it accepts, every delivery and every
//! SUBSCRIBE, so the answer must be pure and cheap, with no I/O, and the same on every shard
//! (the rules are immutable and shared). A subscription is judged once, as a whole
//! ([`AccessRules::filter_access`]), so that in the usual case nothing is checked per delivered
//! message; only a subscription a `deny` rule cuts into needs [`AccessRules::may_read`] per
//! message.
//!
//! The rules, as in Mosquitto 2:
//! - a client gets its own rules (those of its `user` section, or the ones before the first
//!   `user` line when it has no username) and every `pattern` rule;
//! - a `deny` rule that matches wins over every grant, wherever it is in the file;
//! - anything not granted is denied, except that `$SYS` topics are readable unless denied.
//!   Writes to `$SYS` follow the rules; the broker refuses them elsewhere.

mod filters;
mod parse;
mod pattern;
#[cfg(test)]
mod strategies;
#[cfg(test)]
mod tests;

use std::ops::ControlFlow;

use ahash::AHashMap;

use self::pattern::{Expansion, Pattern};
use crate::protocol::topic::{is_broker_topic, matches_filter, parse_filter};

pub use self::filters::{covers, intersects};
pub use self::parse::AccessRulesError;

/// The filter a read grant to every `$SYS` topic would have.
const BROKER_TOPICS: &str = "$SYS/#";

/// The client a check is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client<'a> {
    /// `None` for a client that connected without one, whose rules are the anonymous ones.
    pub username: Option<&'a str>,
    pub client_id: &'a str,
}

/// How much of a subscription's filter a client may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterAccess {
    /// One read grant covers every topic the filter matches and no deny touches it: deliveries
    /// need no further check.
    Whole,
    /// A read grant covers the filter but a deny rule touches part of it: check
    /// [`AccessRules::may_read`] for each delivered topic.
    Partial,
    /// No single read grant covers the whole filter, or a deny covers it: refuse the
    /// subscription (MQTT 5 reason 0x87, MQTT 3 return code 0x80). Like Mosquitto, grants are
    /// not added up: with `topic read a` and `topic read a/+/#` a client may subscribe to both
    /// but not to `a/#`.
    Denied,
}

/// The rules of one ACL file, immutable once read; share it as an `Arc` between shards.
#[derive(Debug, Default)]
pub struct AccessRules {
    /// The rules before the first `user` line: for clients without a username.
    anonymous: Vec<Rule>,
    users: AHashMap<Box<str>, Vec<Rule>>,
    /// `pattern` rules without placeholders: the same rule for everyone.
    everyone: Vec<Rule>,
    /// `pattern` rules with placeholders, substituted for each check.
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
    ReadWrite,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Read,
    Write,
}

impl Access {
    fn grants(self, operation: Operation) -> bool {
        matches!(
            (self, operation),
            (Access::ReadWrite, _)
                | (Access::Read, Operation::Read)
                | (Access::Write, Operation::Write)
        )
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Rule {
    filter: Box<str>,
    access: Access,
}

impl Rule {
    fn new(filter: &str, access: Access) -> Rule {
        Rule {
            filter: filter.into(),
            access,
        }
    }
}

/// The topics one rule is about, for one client.
#[derive(Debug, Clone, Copy)]
enum Scope<'a> {
    Filter(&'a str),
    /// A `deny` pattern that could not be substituted safely (see `pattern.rs`): everything,
    /// `$` topics included, which no MQTT filter can say.
    Everything,
}

impl Scope<'_> {
    fn matches(self, topic: &str) -> bool {
        match self {
            Scope::Filter(filter) => matches_filter(filter, topic),
            Scope::Everything => true,
        }
    }

    fn covers(self, filter: &str) -> bool {
        match self {
            Scope::Filter(rule) => covers(rule, filter),
            Scope::Everything => true,
        }
    }

    fn intersects(self, filter: &str) -> bool {
        match self {
            Scope::Filter(rule) => intersects(rule, filter),
            Scope::Everything => true,
        }
    }
}

impl AccessRules {
    /// May `client` publish to `topic` (a valid topic name)? Also the check for its will.
    pub fn may_write(&self, client: Client<'_>, topic: &str) -> bool {
        self.may(client, topic, Operation::Write)
    }

    /// May `client` receive a message published to `topic` (a valid topic name)?
    pub fn may_read(&self, client: Client<'_>, topic: &str) -> bool {
        self.may(client, topic, Operation::Read)
    }

    fn may(&self, client: Client<'_>, topic: &str, operation: Operation) -> bool {
        let mut granted = operation == Operation::Read && is_broker_topic(topic);
        let denied = self.each_rule(client, |scope, access| {
            if scope.matches(topic) {
                if access == Access::Deny {
                    return ControlFlow::Break(());
                }
                granted |= access.grants(operation);
            }
            ControlFlow::Continue(())
        });
        denied.is_continue() && granted
    }

    /// How much of `filter`, a SUBSCRIBE filter, `client` may read. A shared filter is judged
    /// by its topic filter (`$share/group/` is not a topic); an invalid one is [`Denied`].
    ///
    /// [`Denied`]: FilterAccess::Denied
    pub fn filter_access(&self, client: Client<'_>, filter: &str) -> FilterAccess {
        let Ok(kind) = parse_filter(filter) else {
            return FilterAccess::Denied;
        };
        let filter = kind.filter();
        let mut granted = covers(BROKER_TOPICS, filter);
        let mut cut = false;
        let flow = self.each_rule(client, |scope, access| {
            if access == Access::Deny {
                if scope.covers(filter) {
                    return ControlFlow::Break(());
                }
                cut |= scope.intersects(filter);
            } else if access.grants(Operation::Read) && !granted {
                granted = scope.covers(filter);
            }
            ControlFlow::Continue(())
        });
        match (flow, granted, cut) {
            (ControlFlow::Break(()), _, _) | (_, false, _) => FilterAccess::Denied,
            (_, true, true) => FilterAccess::Partial,
            (_, true, false) => FilterAccess::Whole,
        }
    }

    /// Calls `visit` with every rule that applies to `client`, patterns substituted, until it
    /// breaks.
    fn each_rule(
        &self,
        client: Client<'_>,
        mut visit: impl FnMut(Scope<'_>, Access) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        let own = match client.username {
            None => Some(&self.anonymous),
            Some(username) => self.users.get(username),
        };
        for rule in own.into_iter().flatten().chain(&self.everyone) {
            visit(Scope::Filter(&rule.filter), rule.access)?;
        }
        // Allocates only when there are patterns to substitute.
        let mut buffer = String::new();
        for pattern in &self.patterns {
            match pattern.expand(client, &mut buffer) {
                Expansion::Filter(filter) => visit(Scope::Filter(filter), pattern.access)?,
                Expansion::Unsafe if pattern.access == Access::Deny => {
                    visit(Scope::Everything, Access::Deny)?
                }
                Expansion::Unsafe | Expansion::NotApplicable => {}
            }
        }
        ControlFlow::Continue(())
    }
}
