//! The crate's tests: deterministic, each in its own temp directory. Fault points (a failing
//! fsync, a crash between a snapshot's rename and the deletion of old files) go through
//! `hooks.rs`; a crash of the process is [`Store::crash`](crate::Store).

mod durability;
mod prop;
mod recovery;
mod snapshots;
mod util;
