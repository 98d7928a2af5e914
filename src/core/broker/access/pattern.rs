//! `pattern` rules: one line of the ACL file that becomes a different filter for each client,
//! `%u` standing for its username and `%c` for its client id, so that one line can give every
//! client a namespace of its own.
//!
//! A name is pasted into the filter as text, so a username `+` or a client id `a/#` would turn
//! `pattern read home/%u/#` into a grant over other clients' topics. A name containing `+`, `#`
//! or `/` is therefore never substituted: a granting pattern does not apply to that client, and
//! a `deny` pattern denies it everything, since what the rule keeps from the client cannot be
//! told apart from the rest. (Mosquitto, for the same reason, gives such a client no pattern
//! grants, only what its own `topic` rules allow.)

use super::{Access, Client};

/// A `pattern` line whose topic has at least one placeholder; one without any is the same rule
/// for every client and is kept as a plain rule, so checking it never builds a string.
#[derive(Debug)]
pub(super) struct Pattern {
    template: Box<str>,
    pub(super) access: Access,
    needs_username: bool,
    needs_client_id: bool,
}

/// What a pattern becomes for one client.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Expansion<'a> {
    Filter(&'a str),
    /// It uses `%u` and the client has no username: it is not about this client.
    NotApplicable,
    /// A name it needs contains `+`, `#` or `/` (see the module documentation).
    Unsafe,
}

impl Pattern {
    /// `None` for a template without placeholders.
    pub(super) fn new(template: &str, access: Access) -> Option<Pattern> {
        let (mut needs_username, mut needs_client_id) = (false, false);
        for piece in pieces(template) {
            needs_username |= piece == Piece::Username;
            needs_client_id |= piece == Piece::ClientId;
        }
        (needs_username || needs_client_id).then(|| Pattern {
            template: template.into(),
            access,
            needs_username,
            needs_client_id,
        })
    }

    /// The filter for `client`, written into `buffer` so that one allocation serves every
    /// pattern of a check.
    pub(super) fn expand<'b>(&self, client: Client<'_>, buffer: &'b mut String) -> Expansion<'b> {
        let username = match client.username {
            Some(username) => username,
            None if self.needs_username => return Expansion::NotApplicable,
            None => "",
        };
        if (self.needs_username && !substitutable(username))
            || (self.needs_client_id && !substitutable(client.client_id))
        {
            return Expansion::Unsafe;
        }
        buffer.clear();
        for piece in pieces(&self.template) {
            buffer.push_str(match piece {
                Piece::Text(text) => text,
                Piece::Username => username,
                Piece::ClientId => client.client_id,
            });
        }
        Expansion::Filter(buffer)
    }
}

/// A name that, pasted into a filter, stays one literal piece of one level.
fn substitutable(name: &str) -> bool {
    !name.contains(['+', '#', '/'])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    Username,
    ClientId,
}

/// Splits a template at its placeholders, as Mosquitto reads them: `%u` and `%c` anywhere, a `%`
/// before anything else is text (`%%u` is a `%` then the username).
fn pieces(template: &str) -> impl Iterator<Item = Piece<'_>> {
    let mut rest = template;
    std::iter::from_fn(move || {
        let piece = match rest.as_bytes() {
            [] => return None,
            [b'%', b'u', ..] => Piece::Username,
            [b'%', b'c', ..] => Piece::ClientId,
            bytes => {
                let end = (1..bytes.len())
                    .find(|&at| bytes[at] == b'%' && matches!(bytes.get(at + 1), Some(b'u' | b'c')))
                    .unwrap_or(bytes.len());
                let (text, tail) = rest.split_at(end);
                rest = tail;
                return Some(Piece::Text(text));
            }
        };
        rest = &rest[2..];
        Some(piece)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client<'a>(username: Option<&'a str>, client_id: &'a str) -> Client<'a> {
        Client {
            username,
            client_id,
        }
    }

    fn expand(template: &str, client: Client<'_>) -> Option<String> {
        let pattern = Pattern::new(template, Access::Read).expect("has placeholders");
        let mut buffer = String::new();
        match pattern.expand(client, &mut buffer) {
            Expansion::Filter(filter) => Some(filter.to_owned()),
            other => panic!("{template:?} for {client:?}: {other:?}"),
        }
    }

    #[test]
    fn placeholders_are_found_anywhere() {
        use Piece::*;
        assert!(pieces("a/%u/b").eq([Text("a/"), Username, Text("/b")]));
        assert!(pieces("%c").eq([ClientId]));
        assert!(pieces("x%u%c").eq([Text("x"), Username, ClientId]));
        assert!(pieces("%%u").eq([Text("%"), Username]));
        assert!(pieces("100%/%x/%").eq([Text("100%/%x/%")]));
        assert!(Pattern::new("a/%/b", Access::Read).is_none());
    }

    #[test]
    fn names_are_substituted() {
        let alice = client(Some("alice"), "phone-1");
        assert_eq!(expand("home/%u/#", alice).as_deref(), Some("home/alice/#"));
        assert_eq!(
            expand("dev/%c/in", alice).as_deref(),
            Some("dev/phone-1/in")
        );
        assert_eq!(expand("u-%u:%c", alice).as_deref(), Some("u-alice:phone-1"));
        // A client id pattern applies to anonymous clients too.
        let anonymous = client(None, "sensor");
        assert_eq!(expand("dev/%c", anonymous).as_deref(), Some("dev/sensor"));
    }

    #[test]
    fn a_username_pattern_is_not_about_anonymous_clients() {
        let pattern = Pattern::new("home/%u/#", Access::Read).unwrap();
        let mut buffer = String::new();
        assert_eq!(
            pattern.expand(client(None, "c"), &mut buffer),
            Expansion::NotApplicable
        );
    }

    #[test]
    fn names_that_would_widen_the_filter_are_not_substituted() {
        let by_user = Pattern::new("home/%u/#", Access::Read).unwrap();
        let by_id = Pattern::new("dev/%c", Access::Read).unwrap();
        let mut buffer = String::new();
        for name in ["+", "#", "a/b", "x+y", "/"] {
            assert_eq!(
                by_user.expand(client(Some(name), "c"), &mut buffer),
                Expansion::Unsafe,
                "{name:?}"
            );
            assert_eq!(
                by_id.expand(client(Some("u"), name), &mut buffer),
                Expansion::Unsafe,
                "{name:?}"
            );
        }
        // Only the names the pattern uses matter.
        assert_eq!(
            by_user.expand(client(Some("u"), "a/#"), &mut buffer),
            Expansion::Filter("home/u/#")
        );
    }
}
