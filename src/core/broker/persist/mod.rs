//! Persistence, the sans-IO way: the core describes every change to state that must survive a
//! restart as a [`PersistRecord`], and takes its state back with [`Broker::restore`]. Files,
//! fsync and snapshot scheduling belong to the runtimes (`server/shard_journal.rs` and
//! `server/recovery.rs` over the `mqtt-broker-persistence` store, for the sharded and the
//! blocking build alike).
//!
//! What is persistent: sessions with a Session Expiry Interval above 0 (client id, the user its
//! client connected as, protocol version, expiry, subscriptions with options and identifiers,
//! queued and in-flight QoS 1/2 messages with their packet identifiers and QoS 2 state,
//! inbound QoS 2 identifiers awaiting PUBREL, a will waiting out its Will Delay Interval) and
//! retained messages. QoS 0 messages and the will of a connected client are not: the broker,
//! not the client, went away.
//!
//! - `records.rs`: the record and state types (the format; never edit in place);
//! - `codec.rs`: version byte + postcard, for records and snapshot sections;
//! - `outbox.rs`: the record outbox, durability and held acknowledgements;
//! - `convert.rs`: in-memory values to stored ones and back, and the wall clock;
//! - `restore.rs`: a shard's whole state out (snapshots) and in (start-up);
//! - `capture.rs`: the state out in two steps, taken on the shard and converted elsewhere, so a
//!   snapshot does not stop the shard for the time it takes to encode;
//! - `replay.rs`: snapshots and records of every stream merged, then split by home shard.
//!
//! [`Broker::restore`]: crate::broker::Broker::restore

mod capture;
mod codec;
mod convert;
mod outbox;
mod records;
mod replay;
mod restore;

pub use capture::StateCapture;
pub use codec::{
    decode_record, decode_snapshot, encode_record, encode_snapshot, FormatError, FORMAT_VERSION,
};
pub(super) use convert::{stored_subscription, stored_subscription_ids};
pub(super) use outbox::Journal;
pub use records::{
    PersistRecord, QueuedFor, ShardState, StoredAwaiting, StoredDelivery, StoredInflight,
    StoredMessage, StoredSession, StoredSubscription, StoredWill,
};
pub use replay::Replay;
pub use restore::RestoreSummary;
