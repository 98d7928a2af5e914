//! Mosquitto-compatible password files, so that a deployment moving from Mosquitto keeps its
//! `password_file` as it is, and files written by `mqtt-broker passwd` work in Mosquitto too.
//!
//! One entry a line, `username:HASH`, with the two hash formats Mosquitto 2.0's
//! `mosquitto_passwd` writes:
//!
//! - `$7$ITERATIONS$SALT$HASH`: PBKDF2-HMAC-SHA512, 64-byte hash (Mosquitto's default, with 101
//!   iterations; ours uses far more, see `passwd`).
//! - `$6$SALT$HASH`: one SHA-512 over the password followed by the salt (Mosquitto 1.6 and
//!   earlier). Cheap to brute-force, so only read, never written.
//!
//! Salt and hash are standard base64. Blank lines and `#` comments are ignored. Unlike Mosquitto,
//! which skips lines it cannot read, every other malformed line is an error: a typo that silently
//! locks a user out (or leaves a plain-text password in the file) is worse than a broker that
//! refuses to start and says which line to fix.
//!
//! Verifying is deliberately slow (that is the point of PBKDF2), so [`VerifiedCache`] remembers
//! successful logins for clients that reconnect often.

use std::fmt;
use std::io;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use ahash::{AHashMap, AHashSet};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac, pbkdf2};

/// Bytes of salt in the entries we write: Mosquitto's choice.
pub const SALT_LEN: usize = 12;

/// Bytes of hash in both formats: one SHA-512 output.
pub const HASH_LEN: usize = 64;

/// Mosquitto writes padded base64; accept unpadded too, since nothing is gained by refusing it.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A user's parsed and decoded entry.
#[derive(Clone)]
enum Hash {
    Pbkdf2 {
        iterations: NonZeroU32,
        salt: Vec<u8>,
        hash: [u8; HASH_LEN],
    },
    Sha512 {
        salt: Vec<u8>,
        hash: [u8; HASH_LEN],
    },
}

impl Hash {
    /// Always does the whole computation, whatever the password.
    fn verify(&self, password: &[u8], compare_key: &hmac::Key) -> bool {
        match self {
            Hash::Pbkdf2 {
                iterations,
                salt,
                hash,
            } => pbkdf2::verify(
                pbkdf2::PBKDF2_HMAC_SHA512,
                *iterations,
                salt,
                password,
                hash,
            )
            .is_ok(),
            Hash::Sha512 { salt, hash } => {
                let mut context = digest::Context::new(&digest::SHA512);
                context.update(password);
                context.update(salt);
                let computed = context.finish();
                // ring keeps its constant-time slice comparison private (the public one is
                // deprecated), so compare MACs of the two under a secret key instead: whatever
                // timing `hmac::verify` might leak is about values an attacker cannot relate to
                // the stored hash.
                let expected = hmac::sign(compare_key, hash);
                hmac::verify(compare_key, computed.as_ref(), expected.as_ref()).is_ok()
            }
        }
    }

    /// What the verified-credentials cache mixes into its key, so that a cache entry made for one
    /// version of a user's entry never matches another.
    fn fingerprint(&self) -> (&[u8], &[u8]) {
        match self {
            Hash::Pbkdf2 { salt, hash, .. } | Hash::Sha512 { salt, hash } => (salt, hash),
        }
    }
}

/// Never print salts or hashes, not even in debug logs.
impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hash::Pbkdf2 { iterations, .. } => write!(f, "$7$ ({iterations} iterations)"),
            Hash::Sha512 { .. } => f.write_str("$6$"),
        }
    }
}

/// The users of a password file and their hashed passwords.
///
/// Immutable: reloading the file means building a new one (and a new [`VerifiedCache`]).
pub struct PasswordFile {
    entries: AHashMap<String, Hash>,
    /// Verified against for unknown users, so that they cost as much as known ones and response
    /// times do not tell an attacker which user names exist. `None` for an empty file.
    dummy: Option<Hash>,
    /// Secret key for comparing `$6$` hashes, see [`Hash::verify`].
    compare_key: hmac::Key,
}

impl fmt::Debug for PasswordFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordFile")
            .field("users", &self.entries.len())
            .finish_non_exhaustive()
    }
}

/// What SCRAM-SHA-512 needs to authenticate a user without the password.
///
/// A `$7$` entry's hash is PBKDF2-HMAC-SHA512 with a 64-byte output, which is exactly SCRAM's
/// `SaltedPassword := Hi(Normalize(password), salt, i)` (RFC 5802), provided the password is one
/// that SASLprep leaves unchanged, as printable ASCII is. Mosquitto does not normalise passwords,
/// and neither do we.
#[derive(Clone)]
pub struct ScramCredentials {
    pub iterations: u32,
    pub salt: Vec<u8>,
    /// As good as the password for logging in with SCRAM: never log it.
    pub salted_password: [u8; HASH_LEN],
}

impl fmt::Debug for ScramCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredentials")
            .field("iterations", &self.iterations)
            .field("salt", &BASE64.encode(&self.salt))
            .finish_non_exhaustive()
    }
}

/// One malformed line of a password file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based.
    pub line: usize,
    /// Short, and never quotes the hash field: it may be a password typed in plain text.
    pub reason: String,
}

/// Why a password file could not be used: it could not be read, or some of its lines are wrong
/// (all of them are listed, so that one edit fixes them all).
#[derive(Debug)]
pub struct PasswordFileError {
    path: Option<PathBuf>,
    kind: ErrorKind,
}

#[derive(Debug)]
enum ErrorKind {
    Io(io::Error),
    Lines(Vec<LineError>),
}

/// At most this many bad lines are spelt out by `Display`, so that pointing the broker at a
/// binary file does not print a megabyte of errors. [`PasswordFileError::lines`] has them all.
const MAX_DISPLAYED_LINES: usize = 10;

impl PasswordFileError {
    /// The file, when the error came from [`PasswordFile::load`] or had one attached.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Every malformed line, in order; empty when the file could not be read at all.
    pub fn lines(&self) -> &[LineError] {
        match &self.kind {
            ErrorKind::Lines(lines) => lines,
            ErrorKind::Io(_) => &[],
        }
    }

    /// Why the file could not be read, when that is the problem.
    pub fn io_error(&self) -> Option<&io::Error> {
        match &self.kind {
            ErrorKind::Io(error) => Some(error),
            ErrorKind::Lines(_) => None,
        }
    }

    /// Names the file in the message, for errors from [`PasswordFile::parse`].
    pub fn with_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = Some(path.into());
        self
    }
}

impl fmt::Display for PasswordFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = match &self.path {
            Some(path) => path.display().to_string(),
            None => "password file".to_owned(),
        };
        match &self.kind {
            ErrorKind::Io(error) => write!(f, "cannot read password file {path}: {error}"),
            ErrorKind::Lines(lines) => {
                write!(f, "{path}")?;
                for (i, LineError { line, reason }) in
                    lines.iter().take(MAX_DISPLAYED_LINES).enumerate()
                {
                    let separator = if i == 0 { " " } else { ", " };
                    write!(f, "{separator}line {line}: {reason}")?;
                }
                if lines.len() > MAX_DISPLAYED_LINES {
                    write!(
                        f,
                        ", and {} more bad lines",
                        lines.len() - MAX_DISPLAYED_LINES
                    )?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for PasswordFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::Io(error) => Some(error),
            ErrorKind::Lines(_) => None,
        }
    }
}

/// The user name of a line, as [`PasswordFile::parse`] reads it: `None` for blank lines,
/// comments and lines without a `:`. `mqtt-broker passwd` uses it to find the line to replace
/// while keeping all the others as they are.
pub fn line_username(line: &str) -> Option<&str> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.trim().is_empty() || line.trim_start().starts_with('#') {
        return None;
    }
    let (username, _) = line.split_once(':')?;
    Some(trim_blanks(username))
}

/// Mosquitto trims spaces and tabs around both fields; so do we, to read the same files.
fn trim_blanks(field: &str) -> &str {
    field.trim_matches([' ', '\t'])
}

impl PasswordFile {
    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<PasswordFile, PasswordFileError> {
        let bytes = std::fs::read(path).map_err(|error| PasswordFileError {
            path: Some(path.to_owned()),
            kind: ErrorKind::Io(error),
        })?;
        PasswordFile::parse_bytes(&bytes).map_err(|error| error.with_path(path))
    }

    /// Parses the text of a password file.
    pub fn parse(text: &str) -> Result<PasswordFile, PasswordFileError> {
        PasswordFile::parse_lines(text.split('\n').map(Ok))
    }

    /// Parses a password file's bytes; lines that are not UTF-8 are reported like other bad
    /// lines rather than failing the whole file with one unlocated error.
    pub fn parse_bytes(bytes: &[u8]) -> Result<PasswordFile, PasswordFileError> {
        PasswordFile::parse_lines(
            bytes
                .split(|&byte| byte == b'\n')
                .map(|line| std::str::from_utf8(line).map_err(|_| ())),
        )
    }

    fn parse_lines<'a>(
        lines: impl Iterator<Item = Result<&'a str, ()>>,
    ) -> Result<PasswordFile, PasswordFileError> {
        let mut entries = AHashMap::new();
        // Line of each user, for naming both lines of a duplicate.
        let mut first_line: AHashMap<&str, usize> = AHashMap::new();
        let mut errors = Vec::new();
        for (index, line) in lines.enumerate() {
            let number = index + 1;
            let mut fail = |reason: String| {
                errors.push(LineError {
                    line: number,
                    reason,
                })
            };
            let Ok(line) = line else {
                fail("not valid UTF-8".to_owned());
                continue;
            };
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let Some((username, hash)) = line.split_once(':') else {
                fail("no ':' between user name and hash (expected USER:$7$...)".to_owned());
                continue;
            };
            let username = trim_blanks(username);
            if username.is_empty() {
                fail("empty user name before the ':'".to_owned());
                continue;
            }
            if let Some(first) = first_line.get(username) {
                fail(format!(
                    "user {username:?} is already on line {first}; keep only one of the two lines"
                ));
                continue;
            }
            match parse_hash(trim_blanks(hash)) {
                Ok(hash) => {
                    first_line.insert(username, number);
                    entries.insert(username.to_owned(), hash);
                }
                Err(reason) => {
                    // Still claim the name, so that a later duplicate is reported too.
                    first_line.insert(username, number);
                    fail(reason);
                }
            }
        }
        if !errors.is_empty() {
            return Err(PasswordFileError {
                path: None,
                kind: ErrorKind::Lines(errors),
            });
        }
        let rng = SystemRandom::new();
        let dummy = dummy_entry(&entries, &rng);
        let compare_key = hmac::Key::generate(hmac::HMAC_SHA512, &rng)
            .expect("the operating system's random number generator failed");
        Ok(PasswordFile {
            entries,
            dummy,
            compare_key,
        })
    }

    /// How many users the file has.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `username` has an entry. Cheap, so it tells an attacker which names exist if its
    /// result shows: use [`PasswordFile::verify`] to authenticate.
    pub fn contains_user(&self, username: &str) -> bool {
        self.entries.contains_key(username)
    }

    /// Whether `password` is `username`'s.
    ///
    /// The full hash is always computed, and compared in constant time (ring's PBKDF2 verify,
    /// or MACs of the hashes for `$6$`). An unknown user costs about as much as a known one: the
    /// password is checked against a made-up entry of the file's most common kind and iteration
    /// count. The password is never logged.
    pub fn verify(&self, username: &str, password: &[u8]) -> bool {
        match self.entries.get(username) {
            Some(hash) => hash.verify(password, &self.compare_key),
            None => {
                if let Some(dummy) = &self.dummy {
                    std::hint::black_box(dummy.verify(password, &self.compare_key));
                }
                false
            }
        }
    }

    /// [`PasswordFile::verify`], but a username and password that verified before are accepted
    /// from `cache` without rerunning PBKDF2.
    ///
    /// Wrong passwords are never cached, so each costs a full verification. The cache key
    /// includes the user's stored salt and hash, so even a cache kept across a reload could not
    /// accept an old password; still, build a new cache with each reloaded file so that entries
    /// of removed users do not linger.
    pub fn verify_cached(
        &self,
        cache: &mut VerifiedCache,
        username: &str,
        password: &[u8],
    ) -> bool {
        let Some(hash) = self.entries.get(username) else {
            return self.verify(username, password);
        };
        let tag = cache.tag(username, hash, password);
        if cache.contains(&tag) {
            return true;
        }
        if hash.verify(password, &self.compare_key) {
            cache.insert(tag);
            true
        } else {
            false
        }
    }

    /// SCRAM-SHA-512 credentials of `username`: only for `$7$` entries, since a `$6$` hash is
    /// no SaltedPassword. `None` for unknown users too; making up credentials for them, so that
    /// SCRAM does not reveal which names exist, is the SCRAM exchange's business.
    pub fn scram_credentials(&self, username: &str) -> Option<ScramCredentials> {
        match self.entries.get(username)? {
            Hash::Pbkdf2 {
                iterations,
                salt,
                hash,
            } => Some(ScramCredentials {
                iterations: iterations.get(),
                salt: salt.clone(),
                salted_password: *hash,
            }),
            Hash::Sha512 { .. } => None,
        }
    }
}

/// Parses the part after `username:`. Errors never quote it: it may be a plain-text password.
fn parse_hash(field: &str) -> Result<Hash, String> {
    if let Some(rest) = field.strip_prefix("$7$") {
        let parts: Vec<&str> = rest.split('$').collect();
        let [iterations, salt, hash] = parts[..] else {
            return Err("a $7$ hash must be $7$ITERATIONS$SALT$HASH".to_owned());
        };
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| "the $7$ iteration count is not a whole number".to_owned())?;
        let iterations =
            NonZeroU32::new(iterations).ok_or_else(|| "zero iterations in $7$ hash".to_owned())?;
        let salt = decode_salt(salt)?;
        let hash = decode_hash(hash)?;
        Ok(Hash::Pbkdf2 {
            iterations,
            salt,
            hash,
        })
    } else if let Some(rest) = field.strip_prefix("$6$") {
        let Some((salt, hash)) = rest.split_once('$') else {
            return Err("a $6$ hash must be $6$SALT$HASH".to_owned());
        };
        let salt = decode_salt(salt)?;
        let hash = decode_hash(hash)?;
        Ok(Hash::Sha512 { salt, hash })
    } else if field.is_empty() {
        Err("no hash after the ':'".to_owned())
    } else if let Some(kind) = hash_kind(field) {
        Err(format!(
            "unsupported hash type {kind}: only $7$ (sha512-pbkdf2) and $6$ (sha512) are; \
             set the password again with `mqtt-broker passwd`"
        ))
    } else {
        Err("not a $7$ or $6$ hash (a plain-text password?); \
             set the password with `mqtt-broker passwd`"
            .to_owned())
    }
}

/// The `$type$` prefix of a hash, when it looks like one: short and alphanumeric, so that it
/// is safe to quote in an error.
fn hash_kind(field: &str) -> Option<&str> {
    let rest = field.strip_prefix('$')?;
    let end = rest.find('$')?;
    let kind = &rest[..end];
    let plausible = !kind.is_empty()
        && kind.len() <= 12
        && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    plausible.then(|| &field[..end + 2])
}

fn decode_salt(salt: &str) -> Result<Vec<u8>, String> {
    let salt = BASE64
        .decode(salt)
        .map_err(|_| "the salt is not valid base64".to_owned())?;
    if salt.is_empty() {
        return Err("empty salt".to_owned());
    }
    Ok(salt)
}

fn decode_hash(hash: &str) -> Result<[u8; HASH_LEN], String> {
    let hash = BASE64
        .decode(hash)
        .map_err(|_| "the hash is not valid base64".to_owned())?;
    let length = hash.len();
    hash.try_into()
        .map_err(|_| format!("the hash is {length} bytes long, expected {HASH_LEN}"))
}

/// The made-up entry [`PasswordFile::verify`] checks unknown users against: of the file's most
/// common kind, and for `$7$` its most common iteration count (the larger on a tie), so that it
/// costs what most real entries cost.
fn dummy_entry(entries: &AHashMap<String, Hash>, rng: &SystemRandom) -> Option<Hash> {
    let mut sha512_count = 0;
    let mut by_iterations: AHashMap<NonZeroU32, usize> = AHashMap::new();
    for hash in entries.values() {
        match hash {
            Hash::Pbkdf2 { iterations, .. } => *by_iterations.entry(*iterations).or_default() += 1,
            Hash::Sha512 { .. } => sha512_count += 1,
        }
    }
    let pbkdf2_count: usize = by_iterations.values().sum();
    if pbkdf2_count == 0 && sha512_count == 0 {
        return None;
    }
    let mut salt = vec![0; SALT_LEN];
    let mut hash = [0; HASH_LEN];
    rng.fill(&mut salt)
        .and_then(|()| rng.fill(&mut hash))
        .expect("the operating system's random number generator failed");
    if pbkdf2_count >= sha512_count {
        let (&iterations, _) = by_iterations
            .iter()
            .max_by_key(|&(&iterations, &count)| (count, iterations))?;
        Some(Hash::Pbkdf2 {
            iterations,
            salt,
            hash,
        })
    } else {
        Some(Hash::Sha512 { salt, hash })
    }
}

/// A `$7$` hash of `password` (the part after `username:`), with a fresh random salt of
/// [`SALT_LEN`] bytes, as `mosquitto_passwd` writes them.
///
/// # Panics
///
/// If `iterations` is zero, or if the operating system's random number generator fails.
pub fn hash_password(password: &[u8], iterations: u32) -> String {
    let iterations = NonZeroU32::new(iterations).expect("PBKDF2 needs at least one iteration");
    let mut salt = [0; SALT_LEN];
    SystemRandom::new()
        .fill(&mut salt)
        .expect("the operating system's random number generator failed");
    let mut hash = [0; HASH_LEN];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA512,
        iterations,
        &salt,
        password,
        &mut hash,
    );
    format!(
        "$7${iterations}${}${}",
        STANDARD.encode(salt),
        STANDARD.encode(hash)
    )
}

/// Logins that verified recently, so that clients reconnecting often (or many clients sharing
/// one account) do not each pay for a PBKDF2 run.
///
/// Entries are MACs, under a random key made for each cache, of the user name, the user's
/// stored salt and hash, and the password: nothing from which the password can be recovered or
/// even tested offline, since the key never leaves memory. Lookups need not be constant-time
/// for the same reason. Bounded: when full, the oldest entry makes room.
///
/// A reloaded password file comes with a new cache (see [`PasswordFile::verify_cached`]).
pub struct VerifiedCache {
    key: hmac::Key,
    capacity: usize,
    entries: AHashSet<Tag>,
    /// Insertion order, for evicting the oldest.
    order: std::collections::VecDeque<Tag>,
}

/// Half an HMAC-SHA512: 256 bits are plenty to tell entries apart.
type Tag = [u8; 32];

impl VerifiedCache {
    /// Remembers up to 4096 logins.
    pub const DEFAULT_CAPACITY: usize = 4096;

    pub fn new() -> Self {
        VerifiedCache::with_capacity(VerifiedCache::DEFAULT_CAPACITY)
    }

    /// A cache of at most `capacity` logins; zero caches nothing.
    pub fn with_capacity(capacity: usize) -> Self {
        let key = hmac::Key::generate(hmac::HMAC_SHA512, &SystemRandom::new())
            .expect("the operating system's random number generator failed");
        VerifiedCache {
            key,
            capacity,
            entries: AHashSet::new(),
            order: std::collections::VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn tag(&self, username: &str, hash: &Hash, password: &[u8]) -> Tag {
        let (salt, stored) = hash.fingerprint();
        let mut context = hmac::Context::with_key(&self.key);
        // Lengths first, so that no two different inputs concatenate to the same bytes.
        for field in [username.as_bytes(), salt, stored] {
            context.update(&(field.len() as u64).to_be_bytes());
            context.update(field);
        }
        context.update(password);
        let mut tag = [0; 32];
        tag.copy_from_slice(&context.sign().as_ref()[..32]);
        tag
    }

    fn contains(&self, tag: &Tag) -> bool {
        self.entries.contains(tag)
    }

    fn insert(&mut self, tag: Tag) {
        if self.capacity == 0 || self.entries.contains(&tag) {
            return;
        }
        while self.entries.len() >= self.capacity {
            match self.order.pop_front() {
                Some(oldest) => self.entries.remove(&oldest),
                None => break,
            };
        }
        self.entries.insert(tag);
        self.order.push_back(tag);
    }
}

impl Default for VerifiedCache {
    fn default() -> Self {
        VerifiedCache::new()
    }
}

impl fmt::Debug for VerifiedCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedCache")
            .field("len", &self.entries.len())
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Written once by Mosquitto 2.0's own tool:
    //   mosquitto_passwd -c -b FILE alice 'correct horse'; mosquitto_passwd -b FILE bob 's3cr3t!'
    //   mosquitto_passwd -H sha512 -c -b FILE carol hunter2; ... dave 'p@ss:word'
    const ALICE: &str = "alice:$7$101$VwhZzwDKxTyex5Hp$yK+O8him6U00b9LSAsM2Bt9ki8SUJEUz8yyBjeEiOVW8fpETo49U+7ZgqptOdQ+Fd0hc8tGg/bSsheFEwPUwkA==";
    const BOB: &str = "bob:$7$101$E41tnsEq9OEOt1+c$LP72g83jiUj8LSo91xXry7ja+UkjDk4nIE8XtneCXO0+HUvEqdD4xJOOWal/C26yv0WNB1qpCNc2JeHIJpebwQ==";
    const CAROL: &str = "carol:$6$24Y8rdAPawO6X8DF$XKGq5YyoxCIUtcIA2QuETXYnp8PmW39/VjtFBcF377KRThxgBsDLUSFGV3QSo9xlRhTUMi2AwIqQzr26YNKUhQ==";
    const DAVE: &str = "dave:$6$Ud0CFRZo0S5Fy6p8$A6FIpvjQw26IJx3LZ9NgyFi6F4BctiRaPFY3tPRP2G7Ys3ezCiqv7Kb9wgcxfHjCEZ7jRJXaka8YTI978ebmqQ==";

    fn mosquitto_file() -> PasswordFile {
        PasswordFile::parse(&format!("{ALICE}\n{BOB}\n{CAROL}\n{DAVE}\n")).unwrap()
    }

    fn bad_lines(text: &str) -> Vec<LineError> {
        PasswordFile::parse(text).unwrap_err().lines().to_vec()
    }

    #[test]
    fn mosquitto_pbkdf2_entries_verify() {
        let file = mosquitto_file();
        assert_eq!(file.len(), 4);
        assert!(file.verify("alice", b"correct horse"));
        assert!(file.verify("bob", b"s3cr3t!"));
        assert!(!file.verify("alice", b"correct horse "));
        assert!(!file.verify("alice", b"s3cr3t!"));
        assert!(!file.verify("bob", b""));
    }

    #[test]
    fn mosquitto_sha512_entries_verify() {
        let file = mosquitto_file();
        assert!(file.verify("carol", b"hunter2"));
        assert!(file.verify("dave", b"p@ss:word"));
        assert!(!file.verify("carol", b"hunter3"));
        assert!(!file.verify("dave", b"hunter2"));
    }

    #[test]
    fn unknown_users_are_refused() {
        let file = mosquitto_file();
        assert!(!file.verify("mallory", b"correct horse"));
        assert!(!file.verify("", b""));
        assert!(!file.verify("Alice", b"correct horse"));
        assert!(!file.contains_user("mallory"));
        assert!(file.contains_user("alice"));
        let empty = PasswordFile::parse("").unwrap();
        assert!(empty.is_empty());
        assert!(!empty.verify("alice", b"correct horse"));
    }

    #[test]
    fn dummy_entry_costs_like_the_common_entry() {
        let file = mosquitto_file();
        // Two $7$ and two $6$ entries: the tie goes to the slow kind.
        match file.dummy.as_ref().unwrap() {
            Hash::Pbkdf2 { iterations, .. } => assert_eq!(iterations.get(), 101),
            other => panic!("dummy is {other:?}"),
        }
        let sha512_only = PasswordFile::parse(&format!("{CAROL}\n{DAVE}\n{ALICE}")).unwrap();
        assert!(matches!(sha512_only.dummy, Some(Hash::Sha512 { .. })));
    }

    #[test]
    fn comments_blank_lines_and_crlf_are_accepted() {
        let text =
            format!("# users\n\n   \n{ALICE}\r\n\t# indented comment\n  {BOB}  \n#{CAROL}\n");
        let file = PasswordFile::parse(&text).unwrap();
        assert_eq!(file.len(), 2);
        assert!(file.verify("alice", b"correct horse"));
        assert!(file.verify("bob", b"s3cr3t!"));
        assert!(!file.contains_user("carol"));
        assert!(!file.contains_user("#carol"));
    }

    #[test]
    fn every_bad_line_is_reported_with_its_number() {
        let text = [
            "# fine",
            ALICE,
            "no colon here",
            ":$7$101$VwhZzwDKxTyex5Hp$yK+O8him6U00b9LSAsM2Bt9ki8SUJEUz8yyBjeEiOVW8fpETo49U+7ZgqptOdQ+Fd0hc8tGg/bSsheFEwPUwkA==",
            "eve:plaintext-password",
            "eve2:$argon2id$v=19$whatever",
            "frank:$7$0$VwhZzwDKxTyex5Hp$yK+O8him6U00b9LSAsM2Bt9ki8SUJEUz8yyBjeEiOVW8fpETo49U+7ZgqptOdQ+Fd0hc8tGg/bSsheFEwPUwkA==",
            "gina:$7$many$VwhZzwDKxTyex5Hp$yK+O8him6U00b9LSAsM2Bt9ki8SUJEUz8yyBjeEiOVW8fpETo49U+7ZgqptOdQ+Fd0hc8tGg/bSsheFEwPUwkA==",
            "hank:$7$101$not*base64$yK+O8him6U00b9LSAsM2Bt9ki8SUJEUz8yyBjeEiOVW8fpETo49U+7ZgqptOdQ+Fd0hc8tGg/bSsheFEwPUwkA==",
            "ivan:$7$101$VwhZzwDKxTyex5Hp$yK+O8him6U00b9LSAsM2Bt9ki8SUJEUz8yyBjeEiOVW8fpETo49U+7ZgqptOdQ+Fd0hc8tGg/bSsheFEwPUw",
            "jack:$6$24Y8rdAPawO6X8DF",
            "kate:",
            "liam:$7$101$VwhZzwDKxTyex5Hp",
            "",
            CAROL,
        ]
        .join("\n");
        let lines = bad_lines(&text);
        let numbers: Vec<usize> = lines.iter().map(|error| error.line).collect();
        assert_eq!(numbers, [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
        let reason = |line: usize| &lines.iter().find(|e| e.line == line).unwrap().reason;
        assert!(reason(3).contains("no ':'"), "{}", reason(3));
        assert!(reason(4).contains("empty user name"), "{}", reason(4));
        assert!(reason(5).contains("plain-text"), "{}", reason(5));
        assert!(reason(6).contains("$argon2id$"), "{}", reason(6));
        assert!(reason(7).contains("zero iterations"), "{}", reason(7));
        assert!(reason(8).contains("not a whole number"), "{}", reason(8));
        assert!(
            reason(9).contains("salt is not valid base64"),
            "{}",
            reason(9)
        );
        assert!(reason(10).contains("expected 64"), "{}", reason(10));
        assert!(reason(11).contains("$6$SALT$HASH"), "{}", reason(11));
        assert!(reason(12).contains("no hash"), "{}", reason(12));
        assert!(
            reason(13).contains("$7$ITERATIONS$SALT$HASH"),
            "{}",
            reason(13)
        );
        // A plain-text password must not end up in logs through the error.
        let message = PasswordFile::parse(&text).unwrap_err().to_string();
        assert!(!message.contains("plaintext-password"), "{message}");
    }

    #[test]
    fn display_names_the_file_and_the_lines() {
        let error = PasswordFile::parse("alice\n\nbob:x\n")
            .unwrap_err()
            .with_path("/etc/mqtt/passwords");
        let message = error.to_string();
        assert!(
            message.starts_with("/etc/mqtt/passwords line 1: no ':'"),
            "{message}"
        );
        assert!(
            message.contains(", line 3: not a $7$ or $6$ hash"),
            "{message}"
        );
        assert_eq!(error.path(), Some(Path::new("/etc/mqtt/passwords")));

        let many = "x\n".repeat(25);
        let message = PasswordFile::parse(&many).unwrap_err().to_string();
        assert!(message.contains("line 10:"), "{message}");
        assert!(!message.contains("line 11:"), "{message}");
        assert!(message.ends_with(", and 15 more bad lines"), "{message}");
    }

    #[test]
    fn duplicate_users_name_both_lines() {
        let text = format!("{ALICE}\n# again\n{BOB}\n {ALICE}\nbob:junk\n");
        let lines = bad_lines(&text);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0].line, 4);
        assert!(lines[0].reason.contains("\"alice\" is already on line 1"));
        assert_eq!(lines[1].line, 5);
        assert!(lines[1].reason.contains("\"bob\" is already on line 3"));
    }

    #[test]
    fn non_utf8_lines_are_reported() {
        let mut bytes = format!("{ALICE}\n").into_bytes();
        bytes.extend_from_slice(b"b\xffb:$6$x$y\n");
        let error = PasswordFile::parse_bytes(&bytes).unwrap_err();
        assert_eq!(
            error.lines(),
            [LineError {
                line: 2,
                reason: "not valid UTF-8".to_owned()
            }]
        );
    }

    #[test]
    fn load_reads_files_and_reports_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwords");
        std::fs::write(&path, format!("{ALICE}\n{CAROL}\n")).unwrap();
        let file = PasswordFile::load(&path).unwrap();
        assert!(file.verify("alice", b"correct horse"));
        assert!(file.verify("carol", b"hunter2"));

        let missing = dir.path().join("missing");
        let error = PasswordFile::load(&missing).unwrap_err();
        assert_eq!(error.io_error().unwrap().kind(), io::ErrorKind::NotFound);
        assert!(error.to_string().contains("missing"), "{error}");

        std::fs::write(&path, "broken\n").unwrap();
        let error = PasswordFile::load(&path).unwrap_err();
        assert_eq!(error.path(), Some(path.as_path()));
        assert_eq!(error.lines()[0].line, 1);
    }

    #[test]
    fn scram_credentials_only_for_pbkdf2_entries() {
        let file = mosquitto_file();
        let alice = file.scram_credentials("alice").unwrap();
        assert_eq!(alice.iterations, 101);
        assert_eq!(alice.salt, STANDARD.decode("VwhZzwDKxTyex5Hp").unwrap());
        // SaltedPassword is Hi(password, salt, i), i.e. PBKDF2 with the SHA-512 output length.
        let mut salted = [0; HASH_LEN];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA512,
            NonZeroU32::new(101).unwrap(),
            &alice.salt,
            b"correct horse",
            &mut salted,
        );
        assert_eq!(alice.salted_password, salted);
        assert!(!format!("{alice:?}").contains(&STANDARD.encode(salted)));
        assert!(file.scram_credentials("carol").is_none());
        assert!(file.scram_credentials("mallory").is_none());
    }

    #[test]
    fn hash_password_round_trips() {
        let line = hash_password(b"pa55 word", 1000);
        let parts: Vec<&str> = line.split('$').collect();
        assert_eq!(parts[..3], ["", "7", "1000"]);
        assert_eq!(STANDARD.decode(parts[3]).unwrap().len(), SALT_LEN);
        assert_eq!(STANDARD.decode(parts[4]).unwrap().len(), HASH_LEN);
        let file = PasswordFile::parse(&format!("zoe:{line}\n")).unwrap();
        assert!(file.verify("zoe", b"pa55 word"));
        assert!(!file.verify("zoe", b"pa55 wore"));
        assert_eq!(file.scram_credentials("zoe").unwrap().iterations, 1000);
        // Fresh salt each time.
        assert_ne!(hash_password(b"pa55 word", 1000), line);
    }

    #[test]
    fn cache_skips_verification_only_for_right_passwords() {
        let file =
            PasswordFile::parse(&format!("zoe:{}\n{CAROL}\n", hash_password(b"pw", 50))).unwrap();
        let mut cache = VerifiedCache::new();
        assert!(!file.verify_cached(&mut cache, "zoe", b"wrong"));
        assert!(!file.verify_cached(&mut cache, "nobody", b"pw"));
        assert!(cache.is_empty(), "failed logins must not be cached");
        assert!(file.verify_cached(&mut cache, "zoe", b"pw"));
        assert_eq!(cache.len(), 1);
        assert!(file.verify_cached(&mut cache, "zoe", b"pw"));
        assert_eq!(cache.len(), 1);
        assert!(!file.verify_cached(&mut cache, "zoe", b"pw "));
        assert!(!file.verify_cached(&mut cache, "carol", b"pw"));
        assert!(file.verify_cached(&mut cache, "carol", b"hunter2"));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn a_cached_login_skips_verification() {
        let file = PasswordFile::parse(&format!("zoe:{}\n", hash_password(b"pw", 50))).unwrap();
        let mut cache = VerifiedCache::new();
        // Plant a tag for a password that would not verify: only a lookup that comes before
        // the hash can accept it.
        let planted = cache.tag("zoe", &file.entries["zoe"], b"planted");
        cache.insert(planted);
        assert!(!file.verify("zoe", b"planted"));
        assert!(file.verify_cached(&mut cache, "zoe", b"planted"));
    }

    #[test]
    fn a_changed_entry_misses_the_cache() {
        let file = PasswordFile::parse(&format!("zoe:{}\n", hash_password(b"pw", 50))).unwrap();
        let mut cache = VerifiedCache::new();
        assert!(file.verify_cached(&mut cache, "zoe", b"pw"));
        // Same user, new password: the old one must not be accepted from the stale cache.
        let reloaded =
            PasswordFile::parse(&format!("zoe:{}\n", hash_password(b"new", 50))).unwrap();
        assert!(!reloaded.verify_cached(&mut cache, "zoe", b"pw"));
        assert!(reloaded.verify_cached(&mut cache, "zoe", b"new"));
    }

    #[test]
    fn cache_is_bounded() {
        let file = PasswordFile::parse(&format!("zoe:{}\n", hash_password(b"pw", 1))).unwrap();
        let mut cache = VerifiedCache::with_capacity(2);
        let zoe = &file.entries["zoe"];
        let tags: Vec<Tag> = (0..3)
            .map(|i| cache.tag("zoe", zoe, format!("pw{i}").as_bytes()))
            .collect();
        for tag in &tags {
            cache.insert(*tag);
        }
        assert_eq!(cache.len(), 2);
        assert!(!cache.contains(&tags[0]), "the oldest goes first");
        assert!(cache.contains(&tags[1]) && cache.contains(&tags[2]));

        let mut none = VerifiedCache::with_capacity(0);
        assert!(file.verify_cached(&mut none, "zoe", b"pw"));
        assert!(none.is_empty());
    }

    #[test]
    fn line_username_matches_the_parser() {
        assert_eq!(line_username(ALICE), Some("alice"));
        assert_eq!(line_username(" bob\t:$6$x$y\r\n"), Some("bob"));
        assert_eq!(line_username("# carol:$6$x$y"), None);
        assert_eq!(line_username("   "), None);
        assert_eq!(line_username("no colon"), None);
    }

    #[test]
    fn files_from_the_installed_mosquitto_passwd_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwords");
        let run = |args: &[&str]| {
            std::process::Command::new("mosquitto_passwd")
                .args(args)
                .status()
        };
        let path_str = path.to_str().unwrap();
        match run(&["-c", "-b", path_str, "ann", "first pass"]) {
            Ok(status) => assert!(status.success(), "mosquitto_passwd failed: {status}"),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                eprintln!("skipped: mosquitto_passwd is not installed");
                return;
            }
            Err(error) => panic!("cannot run mosquitto_passwd: {error}"),
        }
        let status = run(&["-H", "sha512", "-b", path_str, "ben", "second:pass"]).unwrap();
        assert!(status.success());
        let file = PasswordFile::load(&path).unwrap();
        assert_eq!(file.len(), 2);
        assert!(file.verify("ann", b"first pass"));
        assert!(file.verify("ben", b"second:pass"));
        assert!(!file.verify("ann", b"second:pass"));
        assert!(!file.verify("ben", b"first pass"));
        assert!(file.scram_credentials("ann").is_some());
        assert!(file.scram_credentials("ben").is_none());
    }
}
