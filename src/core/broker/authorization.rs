//! What the ACL (`access.rs`) lets each session do, asked where the broker acts: PUBLISH and
//! wills (write), SUBSCRIBE (read of the whole filter) and each delivery (read of the topic).
//!
//! The rules are shared by every shard and replaced whole when the file is reloaded. Each
//! session remembers the answers it got, per topic, so a publisher or subscriber that keeps to
//! a few topics pays one hash lookup per message rather than a walk over the rules; a reload
//! bumps a generation that makes every session forget.

use std::sync::Arc;

use ahash::AHashMap;
use bytestring::ByteString;

use super::access::{AccessRules, Client, FilterAccess};

/// The ACL in force on a shard, if any.
#[derive(Debug, Default)]
pub struct Access {
    rules: Option<Arc<AccessRules>>,
    /// Bumped by every change of rules: answers a session remembers from an older generation
    /// are forgotten.
    generation: u64,
}

impl Access {
    pub fn replace(&mut self, rules: Option<Arc<AccessRules>>) {
        self.rules = rules;
        self.generation += 1;
    }

    /// Whether any rules are in force: without, everything is allowed.
    pub fn is_enabled(&self) -> bool {
        self.rules.is_some()
    }

    /// May `client` publish to `topic`, asked once (a will at CONNECT).
    pub fn may_write(&self, client: Client<'_>, topic: &str) -> bool {
        self.rules
            .as_ref()
            .is_none_or(|rules| rules.may_write(client, topic))
    }

    /// How much of `filter` the session may read.
    pub fn filter_access(
        &self,
        session: &SessionAccess,
        client_id: &str,
        filter: &str,
    ) -> FilterAccess {
        match &self.rules {
            None => FilterAccess::Whole,
            Some(rules) => rules.filter_access(session.client(client_id), filter),
        }
    }

    /// May the session publish to `topic`; remembered.
    pub fn may_publish(
        &self,
        session: &mut SessionAccess,
        client_id: &str,
        topic: &ByteString,
    ) -> bool {
        self.check(session, client_id, topic, Direction::Write)
    }

    /// May the session receive a message on `topic`; remembered.
    pub fn may_receive(
        &self,
        session: &mut SessionAccess,
        client_id: &str,
        topic: &ByteString,
    ) -> bool {
        self.check(session, client_id, topic, Direction::Read)
    }

    fn check(
        &self,
        session: &mut SessionAccess,
        client_id: &str,
        topic: &ByteString,
        direction: Direction,
    ) -> bool {
        let Some(rules) = &self.rules else {
            return true;
        };
        // Its user is not known: restored from a format before 3, which did not store users,
        // and its client has not connected since. It reads what it read under the build that
        // wrote it (which had no ACL, or let such sessions read): judged as anonymous, or
        // refused, it would lose messages its user may read. Its subscriptions were allowed
        // when made, and it writes nothing until its client connects, which identifies it.
        let Some(username) = &session.username else {
            return direction == Direction::Read;
        };
        let answers = session.answers.get_or_insert_with(Box::default);
        if answers.generation != self.generation {
            answers.by_topic.clear();
            answers.generation = self.generation;
        }
        let (known, allowed) = direction.bits();
        let bits = answers.by_topic.get(topic).copied().unwrap_or(0);
        if bits & known != 0 {
            return bits & allowed != 0;
        }
        let client = Client {
            username: username.as_deref(),
            client_id,
        };
        let verdict = match direction {
            Direction::Read => rules.may_read(client, topic),
            Direction::Write => rules.may_write(client, topic),
        };
        if answers.by_topic.len() >= MAX_REMEMBERED && !answers.by_topic.contains_key(topic) {
            // A client that roams over many topics: start over rather than grow without end.
            answers.by_topic.clear();
        }
        let entry = answers.by_topic.entry(topic.clone()).or_insert(0);
        *entry |= known | if verdict { allowed } else { 0 };
        verdict
    }
}

/// Answers a session remembers at most; past it, it forgets them all.
const MAX_REMEMBERED: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Read,
    Write,
}

impl Direction {
    /// The bit saying the answer is known, and the one saying it is yes.
    fn bits(self) -> (u8, u8) {
        match self {
            Direction::Write => (0b0001, 0b0010),
            Direction::Read => (0b0100, 0b1000),
        }
    }
}

/// A session's side of the ACL: who its client is, and the answers it got.
#[derive(Debug, Default)]
pub struct SessionAccess {
    /// The user its client connected as, `Some(None)` for an anonymous client; persisted with
    /// the session. `None` until identified, which a session restored from a format before 3
    /// (which did not store users) stays until its client connects again.
    username: Option<Option<ByteString>>,
    answers: Option<Box<Answers>>,
}

#[derive(Debug, Default)]
struct Answers {
    generation: u64,
    by_topic: AHashMap<ByteString, u8>,
}

impl SessionAccess {
    /// The session's client is `username`: it connected as that user, or the session was
    /// restored with it. What was remembered for another user is forgotten.
    pub fn identify(&mut self, username: Option<ByteString>) {
        if self.username.as_ref() != Some(&username) {
            self.answers = None;
        }
        self.username = Some(username);
    }

    /// The user as `identify` set it (`None`: not identified), for persisting.
    pub fn username(&self) -> Option<&Option<ByteString>> {
        self.username.as_ref()
    }

    fn client<'a>(&'a self, client_id: &'a str) -> Client<'a> {
        Client {
            username: self.username.as_ref().and_then(|name| name.as_deref()),
            client_id,
        }
    }
}
