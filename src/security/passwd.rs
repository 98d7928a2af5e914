//! `mqtt-broker passwd FILE USER`: adds, changes or deletes a user of a password file, so that
//! managing users needs neither Mosquitto's tools nor hand-made hashes.
//!
//! It writes `$7$` (PBKDF2-HMAC-SHA512) entries that Mosquitto reads too, and leaves every other
//! line as it was: comments, other users, and their older `$6$` entries. The new file replaces the
//! old one by a rename, so the broker reloading it never sees half a file; it keeps the old file's
//! permissions and owner, and a new file is readable by its owner only. Two `passwd` runs on the
//! same file at once are not serialised: the last one wins.

use std::fs;
use std::io::{self, BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use argh::{EarlyExit, FromArgs};
use ring::rand::{SecureRandom, SystemRandom};

use crate::security::password_file::{self, PasswordFile, PasswordFileError};

/// PBKDF2 iterations of new entries.
///
/// A hundred times `mosquitto_passwd`'s 101, because the count is what each guess costs an
/// attacker holding a copy of the file: about 9 ms of one core at 10000 (90 ms at 100000,
/// measured on the development machine). The broker pays the same for each login it has not
/// verified before (it caches verified credentials, so that is once per client and password),
/// and for every wrong password, which an attacker can send as fast as the connection rate
/// limit lets it. Ten thousand keeps a thousand clients reconnecting after a restart within
/// seconds on two cores; raise it with `--iterations` where the file is the greater worry.
pub const DEFAULT_ITERATIONS: u32 = 10_000;

/// BSD's EX_USAGE, what `argh` callers conventionally exit with on bad arguments.
const EX_USAGE: u8 = 64;

/// MQTT's limit on a user name, a length-prefixed UTF-8 string.
const MAX_USERNAME_LEN: usize = 65_535;

/// Add or change USER's password in the Mosquitto-compatible password file FILE (created if
/// missing), or delete USER with --delete.
#[derive(FromArgs, Debug)]
struct Args {
    /// the password file
    #[argh(positional)]
    file: PathBuf,

    /// the user name
    #[argh(positional)]
    user: String,

    /// the password, for scripts (other local users may see it in the process list); without it,
    /// one line is read from standard input when that is not a terminal, else it is asked for
    /// twice
    #[argh(option)]
    password: Option<String>,

    /// delete USER instead
    #[argh(switch)]
    delete: bool,

    /// PBKDF2 iterations, at least 1 (default 10000): what each guess costs an attacker with a
    /// copy of the file, and each login the broker has not cached
    #[argh(option, default = "DEFAULT_ITERATIONS", from_str_fn(parse_iterations))]
    iterations: u32,
}

fn parse_iterations(value: &str) -> Result<u32, String> {
    match value.parse::<u32>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(iterations) => Ok(iterations),
        Err(_) => Err("must be a whole number from 1 to 4294967295".to_owned()),
    }
}

/// What to do to a user's entry.
#[derive(Clone, Copy)]
pub enum Change<'a> {
    /// Add the user, or replace its entry, with a `$7$` hash of `password`.
    Set { password: &'a [u8], iterations: u32 },
    /// Remove the user's line.
    Delete,
}

/// What [`update_file`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Added,
    Replaced,
    Deleted,
}

/// Why the password file was not changed. Each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum PasswdError {
    #[error("user name {username:?} {problem}; choose another")]
    BadUsername {
        username: String,
        problem: &'static str,
    },
    #[error("refusing an empty password; choose one")]
    EmptyPassword,
    #[error("--iterations must be at least 1")]
    ZeroIterations,
    #[error("no password on standard input: pipe one line holding it, or use --password")]
    NoPasswordOnStdin,
    #[error("cannot read the password: {0}")]
    ReadPassword(io::Error),
    #[error("the two passwords differ; nothing was changed, run the command again")]
    PasswordMismatch,
    #[error("--password makes no sense with --delete; leave it out")]
    PasswordWithDelete,
    #[error("{0}; nothing was changed, fix the file first")]
    BadFile(PasswordFileError),
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{} does not exist, so there is no user {username:?} to delete", path.display())]
    NoFile { path: PathBuf, username: String },
    #[error("user {username:?} is not in {}; nothing to delete", path.display())]
    NoSuchUser { path: PathBuf, username: String },
    #[error("cannot write {}: {source}; nothing was changed", path.display())]
    Write { path: PathBuf, source: io::Error },
}

/// Runs `mqtt-broker passwd`. `command` is how the user invoked it (for help and error messages),
/// `args` what followed `passwd`.
pub fn main(command: &str, args: &[&str]) -> ExitCode {
    let args = match Args::from_args(&[command], args) {
        Ok(args) => args,
        Err(EarlyExit {
            output,
            status: Ok(()),
        }) => {
            println!("{output}");
            return ExitCode::SUCCESS;
        }
        Err(EarlyExit {
            output,
            status: Err(()),
        }) => {
            eprintln!("{output}\nRun {command} --help for more information.");
            return ExitCode::from(EX_USAGE);
        }
    };
    match run(&args) {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{command}: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<Outcome, PasswdError> {
    // Everything that can be checked is, before the user types a password twice for nothing.
    check_username(&args.user)?;
    if args.delete {
        if args.password.is_some() {
            return Err(PasswdError::PasswordWithDelete);
        }
        return update_file(&args.file, &args.user, Change::Delete);
    }
    match PasswordFile::load(&args.file) {
        Err(error)
            if error
                .io_error()
                .is_some_and(|e| e.kind() == io::ErrorKind::NotFound) => {}
        Err(error) => return Err(PasswdError::BadFile(error)),
        Ok(_) => {}
    }
    let password = match &args.password {
        Some(password) => password.as_bytes().to_vec(),
        None => obtain_password()?,
    };
    update_file(
        &args.file,
        &args.user,
        Change::Set {
            password: &password,
            iterations: args.iterations,
        },
    )
}

/// One line from standard input when it is a pipe or file, else asked for twice without echo.
fn obtain_password() -> Result<Vec<u8>, PasswdError> {
    let stdin = io::stdin();
    if !stdin.is_terminal() {
        return read_password_line(&mut stdin.lock());
    }
    let first = rpassword::prompt_password("Password: ").map_err(PasswdError::ReadPassword)?;
    if first.is_empty() {
        return Err(PasswdError::EmptyPassword);
    }
    let second =
        rpassword::prompt_password("Reenter password: ").map_err(PasswdError::ReadPassword)?;
    if first != second {
        return Err(PasswdError::PasswordMismatch);
    }
    Ok(first.into_bytes())
}

/// The first line of `input`, without its line ending. Bytes, not text: MQTT passwords are
/// binary data.
fn read_password_line(input: &mut impl BufRead) -> Result<Vec<u8>, PasswdError> {
    let mut line = Vec::new();
    if input
        .read_until(b'\n', &mut line)
        .map_err(PasswdError::ReadPassword)?
        == 0
    {
        return Err(PasswdError::NoPasswordOnStdin);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    if line.is_empty() {
        return Err(PasswdError::EmptyPassword);
    }
    Ok(line)
}

/// Refuses user names that could not be written as one line and read back as the same name.
pub fn check_username(username: &str) -> Result<(), PasswdError> {
    let problem = if username.is_empty() {
        "is empty"
    } else if username.contains(':') {
        "contains ':', which separates it from the hash"
    } else if username.contains(['\n', '\r']) {
        "contains a line break"
    } else if username.chars().any(char::is_control) {
        "contains a control character"
    } else if username.starts_with('#') {
        "starts with '#', which would make its line a comment"
    } else if username != username.trim_matches([' ', '\t']) {
        "starts or ends with a space, which is not kept when the file is read"
    } else if username.len() > MAX_USERNAME_LEN {
        "is longer than MQTT's 65535 bytes"
    } else {
        return Ok(());
    };
    Err(PasswdError::BadUsername {
        username: username.to_owned(),
        problem,
    })
}

/// Applies `change` to `username`'s entry in the password file at `path`, creating the file if
/// missing (unless deleting). Every other line is kept byte for byte, and the user's line is
/// replaced where it stands; a new user goes at the end. A file that does not parse is left
/// alone and its bad lines reported.
pub fn update_file(
    path: &Path,
    username: &str,
    change: Change<'_>,
) -> Result<Outcome, PasswdError> {
    check_username(username)?;
    if let Change::Set {
        password,
        iterations,
    } = change
    {
        if password.is_empty() {
            return Err(PasswdError::EmptyPassword);
        }
        if iterations == 0 {
            return Err(PasswdError::ZeroIterations);
        }
    }

    // Edit the file a symbolic link points to, rather than replacing the link with a file.
    let path = match fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_symlink() => {
            fs::canonicalize(path).map_err(|source| PasswdError::Read {
                path: path.to_owned(),
                source,
            })?
        }
        _ => path.to_owned(),
    };
    let existing = match fs::read(&path) {
        Ok(bytes) => {
            let metadata = fs::metadata(&path).map_err(|source| PasswdError::Read {
                path: path.clone(),
                source,
            })?;
            Some((bytes, metadata))
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => None,
        Err(source) => return Err(PasswdError::Read { path, source }),
    };

    let text = match &existing {
        Some((bytes, _)) => {
            PasswordFile::parse_bytes(bytes)
                .map_err(|error| PasswdError::BadFile(error.with_path(&path)))?;
            // Every line is UTF-8, or parsing would have failed.
            std::str::from_utf8(bytes).map_err(|_| PasswdError::Read {
                path: path.clone(),
                source: io::ErrorKind::InvalidData.into(),
            })?
        }
        None if matches!(change, Change::Delete) => {
            return Err(PasswdError::NoFile {
                path,
                username: username.to_owned(),
            })
        }
        None => "",
    };

    let entry = match change {
        Change::Set {
            password,
            iterations,
        } => Some(format!(
            "{username}:{}",
            password_file::hash_password(password, iterations)
        )),
        Change::Delete => None,
    };
    let mut updated = String::with_capacity(text.len() + 200);
    let mut found = false;
    for line in text.split_inclusive('\n') {
        if password_file::line_username(line) != Some(username) {
            updated.push_str(line);
            continue;
        }
        // The file parsed, so this is the user's only line.
        found = true;
        if let Some(entry) = &entry {
            let ending = if line.ends_with("\r\n") {
                "\r\n"
            } else if line.ends_with('\n') {
                "\n"
            } else {
                ""
            };
            updated.push_str(entry);
            updated.push_str(ending);
        }
    }
    let outcome = match (&entry, found) {
        (Some(_), true) => Outcome::Replaced,
        (Some(entry), false) => {
            if !updated.is_empty() && !updated.ends_with('\n') {
                updated.push('\n');
            }
            updated.push_str(entry);
            updated.push('\n');
            Outcome::Added
        }
        (None, true) => Outcome::Deleted,
        (None, false) => {
            return Err(PasswdError::NoSuchUser {
                path,
                username: username.to_owned(),
            })
        }
    };

    let original = existing.as_ref().map(|(_, metadata)| metadata);
    write_atomically(&path, updated.as_bytes(), original)
        .map_err(|source| PasswdError::Write { path, source })?;
    Ok(outcome)
}

/// Replaces `path` with `contents` by writing a temporary file beside it and renaming that over
/// it, so that readers see the old file or the new one, whole. The new file gets `original`'s
/// owner and permissions, or mode 0600 when there was no original.
fn write_atomically(
    path: &Path,
    contents: &[u8],
    original: Option<&fs::Metadata>,
) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "the path does not name a file")
    })?;
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut random = [0u8; 8];
    SystemRandom::new()
        .fill(&mut random)
        .map_err(|_| io::Error::other("the random number generator failed"))?;
    let mut temporary_name = std::ffi::OsString::from(".");
    temporary_name.push(name);
    temporary_name.push(format!(".{:016x}.tmp", u64::from_ne_bytes(random)));
    let temporary = directory.join(temporary_name);

    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&temporary)?;
    let written = (|| {
        file.write_all(contents)?;
        if let Some(original) = original {
            // The owner first: changing it may clear set-id bits that the mode then restores.
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                let current = file.metadata()?;
                if (current.uid(), current.gid()) != (original.uid(), original.gid()) {
                    std::os::unix::fs::fchown(&file, Some(original.uid()), Some(original.gid()))
                        .map_err(|error| {
                            io::Error::new(
                                error.kind(),
                                format!(
                                    "cannot give the new file the old one's owner (uid {}, gid \
                                     {}): {error}; run as that user or as root",
                                    original.uid(),
                                    original.gid()
                                ),
                            )
                        })?;
                }
            }
            file.set_permissions(original.permissions())?;
        }
        file.sync_all()?;
        drop(file);
        fs::rename(&temporary, path)
    })();
    if let Err(error) = written {
        let _ = fs::remove_file(&temporary);
        return Err(error);
    }
    // Make the rename itself durable. Not every file system can sync a directory, and the file
    // is in place either way, so a failure here is not worth reporting.
    if let Ok(directory) = fs::File::open(directory) {
        let _ = directory.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // From Mosquitto 2.0's `mosquitto_passwd -H sha512`: password "hunter2".
    const CAROL: &str = "carol:$6$24Y8rdAPawO6X8DF$XKGq5YyoxCIUtcIA2QuETXYnp8PmW39/VjtFBcF377KRThxgBsDLUSFGV3QSo9xlRhTUMi2AwIqQzr26YNKUhQ==";

    fn set(password: &[u8]) -> Change<'_> {
        Change::Set {
            password,
            iterations: 10,
        }
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap()
    }

    #[test]
    fn creates_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwords");
        assert_eq!(
            update_file(&path, "alice", set(b"secret")).unwrap(),
            Outcome::Added
        );
        let text = read(&path);
        assert!(text.starts_with("alice:$7$10$"), "{text}");
        assert!(text.ends_with('\n') && text.lines().count() == 1, "{text}");
        let file = PasswordFile::load(&path).unwrap();
        assert!(file.verify("alice", b"secret"));
        assert!(!file.verify("alice", b"Secret"));
        // No temporary file left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn a_new_file_is_private_and_an_old_one_keeps_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwords");
        update_file(&path, "alice", set(b"secret")).unwrap();
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&path), 0o600);

        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        update_file(&path, "bob", set(b"other")).unwrap();
        assert_eq!(mode(&path), 0o640);
    }

    #[test]
    fn replacing_keeps_every_other_line_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwords");
        let alice = format!("alice:{}", password_file::hash_password(b"old", 10));
        let bob = format!("bob:{}", password_file::hash_password(b"bob's", 10));
        let before = format!("# staff\n{alice}\r\n\n  # {CAROL}\n{CAROL}\n{bob}");
        fs::write(&path, &before).unwrap();

        assert_eq!(
            update_file(&path, "alice", set(b"new")).unwrap(),
            Outcome::Replaced
        );
        let after = read(&path);
        let lines: Vec<&str> = after.split('\n').collect();
        let old: Vec<&str> = before.split('\n').collect();
        assert_eq!(lines.len(), old.len());
        assert!(lines[1].starts_with("alice:$7$10$") && lines[1].ends_with('\r'));
        assert_ne!(lines[1], old[1]);
        for i in [0, 2, 3, 4, 5] {
            assert_eq!(lines[i], old[i], "line {}", i + 1);
        }
        let file = PasswordFile::load(&path).unwrap();
        assert!(file.verify("alice", b"new"));
        assert!(!file.verify("alice", b"old"));
        assert!(file.verify("bob", b"bob's"));
        assert!(file.verify("carol", b"hunter2"));

        // A new user goes at the end, after the newline the last line lacked.
        assert_eq!(
            update_file(&path, "dave", set(b"d")).unwrap(),
            Outcome::Added
        );
        let appended = read(&path);
        assert!(
            appended.starts_with(&format!("{after}\ndave:$7$10$")),
            "{appended}"
        );
        assert!(PasswordFile::load(&path).unwrap().verify("dave", b"d"));
    }

    #[test]
    fn replacing_a_sha512_entry_upgrades_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwords");
        fs::write(&path, format!("{CAROL}\n")).unwrap();
        update_file(&path, "carol", set(b"hunter3")).unwrap();
        let file = PasswordFile::load(&path).unwrap();
        assert!(file.scram_credentials("carol").is_some());
        assert!(file.verify("carol", b"hunter3"));
        assert!(!file.verify("carol", b"hunter2"));
    }

    #[test]
    fn delete_removes_only_that_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwords");
        fs::write(
            &path,
            format!("# users\n{CAROL}\n").replace("carol", "zed") + CAROL + "\n",
        )
        .unwrap();
        assert_eq!(
            update_file(&path, "zed", Change::Delete).unwrap(),
            Outcome::Deleted
        );
        assert_eq!(read(&path), format!("# users\n{CAROL}\n"));
    }

    #[test]
    fn deleting_a_missing_user_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwords");
        let error = update_file(&path, "carol", Change::Delete).unwrap_err();
        assert!(matches!(error, PasswdError::NoFile { .. }), "{error}");
        assert!(!path.exists());

        let before = format!("# users\n{CAROL}\n");
        fs::write(&path, &before).unwrap();
        let error = update_file(&path, "alice", Change::Delete).unwrap_err();
        assert!(matches!(error, PasswdError::NoSuchUser { .. }), "{error}");
        assert!(error.to_string().contains("\"alice\" is not in"), "{error}");
        assert_eq!(read(&path), before);
    }

    #[test]
    fn a_bad_file_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwords");
        let before = format!("{CAROL}\nalice:plain text\n\nbob\n");
        fs::write(&path, &before).unwrap();
        for change in [set(b"pw"), Change::Delete] {
            let error = update_file(&path, "carol", change).unwrap_err();
            let PasswdError::BadFile(inner) = &error else {
                panic!("{error}")
            };
            let numbers: Vec<usize> = inner.lines().iter().map(|line| line.line).collect();
            assert_eq!(numbers, [2, 4]);
            let message = error.to_string();
            assert!(
                message.contains("line 2:") && message.contains("line 4:"),
                "{message}"
            );
            assert!(!message.contains("plain text"), "{message}");
            assert_eq!(read(&path), before);
        }
    }

    #[test]
    fn bad_user_names_and_passwords_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwords");
        for username in [
            "",
            "a:b",
            "a\nb",
            "a\rb",
            "a\0b",
            "#a",
            " a",
            "a\t",
            &"x".repeat(65_536),
        ] {
            let error = update_file(&path, username, set(b"pw")).unwrap_err();
            assert!(
                matches!(error, PasswdError::BadUsername { .. }),
                "{username:?}: {error}"
            );
        }
        assert!(matches!(
            update_file(&path, "alice", set(b"")),
            Err(PasswdError::EmptyPassword)
        ));
        assert!(matches!(
            update_file(
                &path,
                "alice",
                Change::Set {
                    password: b"pw",
                    iterations: 0
                }
            ),
            Err(PasswdError::ZeroIterations)
        ));
        assert!(!path.exists());
        // Spaces inside a name, and non-ASCII, are fine.
        update_file(&path, "Zoë Smith", set(b"pw")).unwrap();
        assert!(PasswordFile::load(&path)
            .unwrap()
            .verify("Zoë Smith", b"pw"));
    }

    #[cfg(unix)]
    #[test]
    fn a_symbolic_link_is_followed_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real");
        let link = dir.path().join("link");
        fs::write(&target, format!("{CAROL}\n")).unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        update_file(&link, "alice", set(b"pw")).unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(PasswordFile::load(&target).unwrap().verify("alice", b"pw"));
    }

    #[test]
    fn the_password_is_the_first_line_of_input() {
        let read = |input: &[u8]| read_password_line(&mut io::Cursor::new(input.to_vec()));
        assert_eq!(read(b"s3cret\n").unwrap(), b"s3cret");
        assert_eq!(read(b"s3cret\r\nignored\n").unwrap(), b"s3cret");
        assert_eq!(read(b"no newline").unwrap(), b"no newline");
        assert_eq!(read(b" spaces kept \n").unwrap(), b" spaces kept ");
        assert!(matches!(read(b""), Err(PasswdError::NoPasswordOnStdin)));
        assert!(matches!(read(b"\n"), Err(PasswdError::EmptyPassword)));
    }

    #[test]
    fn main_parses_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwords");
        let file = path.to_str().unwrap();
        let main = |args: &[&str]| main("mqtt-broker passwd", args);

        assert_eq!(main(&["--help"]), ExitCode::SUCCESS);
        assert_eq!(main(&[file]), ExitCode::from(EX_USAGE));
        assert_eq!(main(&[file, "alice", "--bogus"]), ExitCode::from(EX_USAGE));
        assert_eq!(
            main(&[file, "alice", "--iterations", "0", "--password", "pw"]),
            ExitCode::from(EX_USAGE)
        );
        assert!(!path.exists());

        assert_eq!(
            main(&[file, "alice", "--iterations", "5", "--password", "pw"]),
            ExitCode::SUCCESS
        );
        let alice = PasswordFile::load(&path).unwrap();
        assert!(alice.verify("alice", b"pw"));
        assert_eq!(alice.scram_credentials("alice").unwrap().iterations, 5);

        assert_eq!(main(&[file, "a:b", "--password", "pw"]), ExitCode::FAILURE);
        assert_eq!(
            main(&[file, "alice", "--delete", "--password", "pw"]),
            ExitCode::FAILURE
        );
        assert_eq!(main(&[file, "bob", "--delete"]), ExitCode::FAILURE);
        assert_eq!(main(&[file, "alice", "--delete"]), ExitCode::SUCCESS);
        assert!(PasswordFile::load(&path).unwrap().is_empty());
    }

    #[test]
    fn the_default_iterations_are_used() {
        let args = Args::from_args(&["passwd"], &["f", "u"]).unwrap();
        assert_eq!(args.iterations, DEFAULT_ITERATIONS);
    }
}
