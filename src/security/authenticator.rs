//! The verdict on a client's proof of identity (`Event::Authenticate`), by the rules an operator
//! chose: a password file, the certificate's name, anonymous clients allowed or not, and
//! SCRAM-SHA-512 for MQTT 5 clients that would rather not send their password.
//!
//! It runs on the authentication threads (`server/auth_workers.rs`, or a blocking build's
//! connection thread), never on a shard: a password check costs as much time as the password
//! file's iteration count makes it cost, on purpose.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use bytestring::ByteString;

use super::password_file::{PasswordFile, VerifiedCache};
use super::scram::{self, ScramServer};
use super::state::ListenerPolicy;
use crate::broker::{AuthRequest, AuthStage, AuthVerdict};
use crate::protocol::ReasonCode;

/// The password file in force, with what it has verified.
pub struct Authenticator {
    passwords: Option<PasswordFile>,
    /// Passwords verified since this password file was loaded, so a client that reconnects
    /// costs a lookup instead of a PBKDF2 run. A reload brings a new authenticator and with it
    /// an empty cache.
    verified: Mutex<VerifiedCache>,
}

/// What a multi-round method remembers between rounds, kept by the connection.
pub type Exchange = Option<Box<ScramServer>>;

impl Authenticator {
    pub fn new(passwords: Option<PasswordFile>) -> Authenticator {
        Authenticator {
            passwords,
            verified: Mutex::new(VerifiedCache::default()),
        }
    }
}

/// The authenticator, with the policy of the listener a client came in on.
pub struct Checker {
    pub authenticator: Arc<Authenticator>,
    pub policy: ListenerPolicy,
}

impl Checker {
    /// The verdict on `request` from a client whose TLS certificate, if it showed one the
    /// listener verified, names it `certificate_name`.
    pub fn check(
        &self,
        request: &AuthRequest,
        certificate_name: Option<&str>,
        exchange: &mut Exchange,
    ) -> AuthVerdict {
        match &request.method {
            Some(method) => self.check_method(method, request, exchange),
            None => self.check_credentials(request, certificate_name),
        }
    }

    /// CONNECT's user name and password, or the certificate's name.
    fn check_credentials(
        &self,
        request: &AuthRequest,
        certificate_name: Option<&str>,
    ) -> AuthVerdict {
        let policy = self.policy;
        if policy.identity_as_username {
            // The certificate speaks for the client; what it put in CONNECT is not asked.
            return match certificate_name {
                Some(name) => accepted(Some(name.into()), None),
                None => AuthVerdict::Refused(ReasonCode::NOT_AUTHORIZED),
            };
        }
        let Some(username) = &request.username else {
            return if policy.allow_anonymous {
                accepted(None, None)
            } else {
                AuthVerdict::Refused(ReasonCode::NOT_AUTHORIZED)
            };
        };
        let authenticator = &self.authenticator;
        let Some(passwords) = &authenticator.passwords else {
            // No file to check a user name against: the client is who it says, if anonymous
            // clients are welcome, since it proved nothing more than one of them.
            return if policy.allow_anonymous {
                accepted(Some(username.clone()), None)
            } else {
                AuthVerdict::Refused(ReasonCode::NOT_AUTHORIZED)
            };
        };
        let password = request.password.as_deref().unwrap_or_default();
        let mut verified = authenticator
            .verified
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if passwords.verify_cached(&mut verified, username, password) {
            accepted(Some(username.clone()), None)
        } else {
            AuthVerdict::Refused(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
        }
    }

    /// MQTT 5 enhanced authentication: SCRAM-SHA-512 against the password file.
    fn check_method(
        &self,
        method: &str,
        request: &AuthRequest,
        exchange: &mut Exchange,
    ) -> AuthVerdict {
        let passwords = self.authenticator.passwords.as_ref();
        let Some(passwords) = passwords.filter(|_| method == scram::METHOD) else {
            return AuthVerdict::Refused(ReasonCode::BAD_AUTHENTICATION_METHOD);
        };
        let data = request.data.as_deref().unwrap_or_default();
        match request.stage {
            AuthStage::Connect | AuthStage::Reauthenticate => {
                match ScramServer::start(data, |user| passwords.scram_credentials(user)) {
                    Ok((server, server_first)) => {
                        *exchange = Some(Box::new(server));
                        AuthVerdict::Continue {
                            data: Bytes::from(server_first),
                        }
                    }
                    Err(_) => AuthVerdict::Refused(ReasonCode::NOT_AUTHORIZED),
                }
            }
            AuthStage::Continue => {
                let Some(server) = exchange.take() else {
                    return AuthVerdict::Refused(ReasonCode::NOT_AUTHORIZED);
                };
                match server.finish(data) {
                    Ok((username, server_final)) => accepted(
                        Some(ByteString::from(username)),
                        Some(Bytes::from(server_final)),
                    ),
                    Err(_) => AuthVerdict::Refused(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
                }
            }
        }
    }
}

fn accepted(username: Option<ByteString>, data: Option<Bytes>) -> AuthVerdict {
    AuthVerdict::Accepted { username, data }
}
