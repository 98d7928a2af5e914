//! The security files in force: loaded at start, where a bad one is a configuration error, and
//! again on SIGHUP, where a bad one is logged and the one before stays in force. Shards and
//! authentication threads take the current version from here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tracing::{info, warn};

use super::authenticator::{Authenticator, Checker};
use super::password_file::PasswordFile;
use crate::broker::access::AccessRules;
use crate::server::{Listener, Transport};

/// Who may connect and what they may do (`--password-file`, `--acl-file`, ...).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecurityOptions {
    pub password_file: Option<PathBuf>,
    pub acl_file: Option<PathBuf>,
    /// `None`: allowed unless a password file or certificate identities say who clients are.
    pub allow_anonymous: Option<bool>,
    /// The CN of a client's verified certificate is its user name (`--tls-identity-as-username`).
    pub identity_as_username: bool,
}

/// How one listener lets clients in: its own settings where it has them, else the broker's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerPolicy {
    /// Clients that give no user name are served.
    pub allow_anonymous: bool,
    /// The CN of a client's verified certificate is its user name.
    pub identity_as_username: bool,
}

impl SecurityOptions {
    pub fn policy(&self, listener: &Listener) -> ListenerPolicy {
        let own = &listener.own;
        // Only a TLS listener has certificates to take names from.
        let identity_as_username = listener.transport == Transport::Tls
            && own
                .identity_as_username
                .unwrap_or(self.identity_as_username);
        // Anonymous clients are welcome by default only where nothing says who clients are.
        let allow_anonymous = own.allow_anonymous.or(self.allow_anonymous).unwrap_or(
            self.password_file.is_none() && !self.identity_as_username && !identity_as_username,
        );
        ListenerPolicy {
            allow_anonymous,
            identity_as_username,
        }
    }

    /// Whether each client must be asked who it is: otherwise every client is accepted as the
    /// user name it gives, which costs nothing on connect.
    pub fn authenticates(&self, listeners: &[Listener]) -> bool {
        self.password_file.is_some()
            || listeners.iter().any(|listener| {
                let policy = self.policy(listener);
                policy.identity_as_username || !policy.allow_anonymous
            })
    }

    /// Reads the files, to check them (a bad one is a configuration error at start): the
    /// flag of the one that failed, and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        self.authenticator()
            .map_err(|problem| ("--password-file", problem))?;
        self.access_rules()
            .map_err(|problem| ("--acl-file", problem))?;
        Ok(())
    }

    fn authenticator(&self) -> Result<Arc<Authenticator>, String> {
        let passwords = self
            .password_file
            .as_deref()
            .map(PasswordFile::load)
            .transpose()
            .map_err(|error| error.to_string())?;
        Ok(Arc::new(Authenticator::new(passwords)))
    }

    fn access_rules(&self) -> Result<Option<Arc<AccessRules>>, String> {
        let Some(path) = &self.acl_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read ACL file {}: {error}", path.display()))?;
        let rules = AccessRules::parse(&text)
            .map_err(|error| format!("ACL file {}: {error}", path.display()))?;
        Ok(Some(Arc::new(rules)))
    }
}

/// The files in force, shared by the shards and the authentication threads.
pub struct SecurityState {
    options: SecurityOptions,
    /// Per listener, in the order of `ServerOptions::listeners`.
    policies: Vec<ListenerPolicy>,
    authenticator: RwLock<Arc<Authenticator>>,
    access_rules: RwLock<Option<Arc<AccessRules>>>,
    /// Bumped when the ACL is replaced, so shards notice with one atomic load per tick.
    access_generation: AtomicU64,
}

impl SecurityState {
    pub fn load(
        options: &SecurityOptions,
        listeners: &[Listener],
    ) -> Result<SecurityState, String> {
        Ok(SecurityState {
            policies: listeners
                .iter()
                .map(|listener| options.policy(listener))
                .collect(),
            authenticator: RwLock::new(options.authenticator()?),
            access_rules: RwLock::new(options.access_rules()?),
            access_generation: AtomicU64::new(0),
            options: options.clone(),
        })
    }

    /// Who checks the clients of listener `listener`, by its policy: the caller then runs the
    /// check where it costs no shard its time.
    pub fn checker(&self, listener: usize) -> Checker {
        Checker {
            authenticator: read(&self.authenticator).clone(),
            policy: self
                .policies
                .get(listener)
                .copied()
                .unwrap_or(ListenerPolicy {
                    allow_anonymous: false,
                    identity_as_username: false,
                }),
        }
    }

    /// The ACL (`None`: none) and its version number, if the version is not `seen`: one
    /// atomic load when nothing changed, so a shard can ask on every tick.
    pub fn access_rules_since(&self, seen: u64) -> Option<(u64, Option<Arc<AccessRules>>)> {
        // The version before the rules: a reload in between (rules first, then the version)
        // leaves this one older than the rules, so the next call takes them again, never the
        // other way round.
        let generation = self.access_generation.load(Ordering::Acquire);
        if generation == seen {
            return None;
        }
        Some((generation, read(&self.access_rules).clone()))
    }

    /// Reads the password file and the ACL file again. Each that fails to load is reported and
    /// the version before stays in force. New credentials apply to new connections; the ACL to
    /// every session within a tick.
    pub fn reload(&self) {
        if let Some(path) = &self.options.password_file {
            match self.options.authenticator() {
                Ok(authenticator) => {
                    *write(&self.authenticator) = authenticator;
                    info!(path = %path.display(), "password file reloaded");
                }
                Err(error) => warn!("{error}; the password file loaded before stays in force"),
            }
        }
        match self.options.access_rules() {
            Ok(rules) => {
                *write(&self.access_rules) = rules;
                self.access_generation.fetch_add(1, Ordering::AcqRel);
                if let Some(path) = &self.options.acl_file {
                    info!(path = %path.display(), "ACL file reloaded");
                }
            }
            Err(error) => warn!("{error}; the ACL loaded before stays in force"),
        }
    }

    /// Says once per listener at start what an operator must know before exposing it: who can
    /// connect to an address other than loopback, and whether passwords cross it in clear.
    pub fn warn_about_exposure(&self, listeners: &[(SocketAddr, Transport)]) {
        let public = listeners
            .iter()
            .zip(&self.policies)
            .filter(|((address, _), _)| !address.ip().is_loopback());
        for (&(address, transport), policy) in public {
            if policy.allow_anonymous {
                warn!(
                    "{transport} on {address} serves anonymous clients: anyone who can reach it may connect, subscribe to every topic and publish to any; set --password-file or --allow-anonymous false, listen on 127.0.0.1 or a private address, or firewall it"
                );
            }
            if self.options.password_file.is_some() && transport == Transport::Tcp {
                warn!(
                    "{transport} on {address} takes passwords in plain text, readable by anyone on the path; serve clients beyond this host with --listen-tls"
                );
            }
        }
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
