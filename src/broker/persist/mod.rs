//! Persistence, the sans-IO way: the core describes every change to state that must survive a
//! restart as a [`PersistRecord`], and takes its state back with [`Broker::restore`]. Files,
//! fsync and snapshot scheduling belong to the runtime (`server/persist.rs` over the
//! `mqtt-broker-persistence` store).
//!
//! What is persistent: sessions with a Session Expiry Interval above 0 (client id, protocol
//! version, expiry, subscriptions with options and identifiers, queued and in-flight QoS 1/2
//! messages with their packet identifiers and QoS 2 state, inbound QoS 2 identifiers awaiting
//! PUBREL) and retained messages. Wills and QoS 0 messages are not.
//!
//! - `records.rs`: the record and state types (the format; never edit in place);
//! - `codec.rs`: version byte + postcard, for records and snapshot sections;
//! - `journal.rs`: the record outbox, durability and held acknowledgements;
//! - `convert.rs`: in-memory values to stored ones and back, and the wall clock;
//! - `restore.rs`: a shard's whole state out (snapshots) and in (start-up);
//! - `replay.rs`: snapshots and records of every stream merged, then split by home shard.
//!
//! [`Broker::restore`]: crate::broker::Broker::restore

mod codec;
mod convert;
mod journal;
mod records;
mod replay;
mod restore;

pub use codec::{
    decode_record, decode_snapshot, encode_record, encode_snapshot, FormatError, FORMAT_VERSION,
};
pub(super) use convert::stored_subscription;
pub(super) use journal::Journal;
pub use records::{
    PersistRecord, QueuedFor, ShardState, StoredAwaiting, StoredDelivery, StoredInflight,
    StoredMessage, StoredSession, StoredSubscription,
};
pub use replay::Replay;
pub use restore::RestoreSummary;
