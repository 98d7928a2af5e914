//! The sans-IO broker core: every MQTT rule about sessions, routing, QoS, retained messages,
//! wills and keepalive, as a state machine with no sockets, threads or clock reads.
//!
//! One [`Broker`] runs per shard. Every method a runtime calls is in one place, the front door
//! in `core.rs`, which hands each input on to its handler. A runtime feeds it inputs
//! (`handle_*`: a connection accepted, bytes read, a connection closed, a timer due, a message
//! from another shard) with the current [`Timestamp`], and after each input drains its outputs
//! in this order:
//! 1. [`Broker::poll_transmit`] / [`Broker::take_output`]: bytes to send per connection (a
//!    writer takes until it gets nothing, as taking makes room for more);
//! 2. [`Broker::poll_shard_messages`]: batches for other shards;
//! 3. [`Broker::poll_persist`]: journal records, to append in order (with `Config::persistence`);
//! 4. [`Broker::poll_event`]: connections to close or hand over to another shard;
//! 5. [`Broker::poll_timeout`]: when to call [`Broker::handle_timeout`] next.
//!
//! With persistence on, the runtime also reports durability ([`Broker::handle_persisted`]),
//! which may release held acknowledgements: drain the outputs after it too.
//!
//! Every runtime (monoio, glommio, tokio, the blocking build) drives this same code, and the
//! tests drive it with a virtual clock and no network at all.
//!
//! Reading order for one PUBLISH: `core.rs` (`handle_bytes`) → `handlers/dispatch.rs`
//! (`read_packets` decodes and dispatches) → `handlers/publish.rs` (topic alias, QoS handshake)
//! → `handlers/deliver.rs` (route to shards and matching sessions, in-flight window, encode for
//! each subscriber) → `send_buffer.rs`.

pub mod access;
mod ack_holds;
mod acks;
mod authorization;
mod boundary;
mod config;
mod connection;
mod core;
mod handlers;
mod inflight;
pub mod latency;
pub mod limited_log;
mod message;
pub mod persist;
mod retained;
mod retained_backlog;
mod routing;
mod send_buffer;
mod session;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
mod time;
mod timers;
pub mod topic;

#[cfg(test)]
mod tests;

pub use self::core::{Broker, Stats};
pub use boundary::{
    Arrival, AuthRequest, AuthStage, AuthVerdict, ConnId, Event, HandedOverConnect, Identity,
    Origin, ShardId, ShardMessage,
};
pub use config::Config;
pub use inflight::DropCounters;
pub use message::{Delivery, Message, SharedMessage};
pub use routing::home_shard;
pub use session::SessionId;
pub use time::Timestamp;
