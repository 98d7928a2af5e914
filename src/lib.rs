//! mqtt-broker: an MQTT 3.1 / 3.1.1 / 5.0 broker built as a sharded thread-per-core runtime.
//!
//! The crate is layered so that one packet can be followed from socket to subscriber:
//! - [`protocol`]: the wire codec. Bytes in, typed packets out (and back), with no I/O and no
//!   broker policy. The load generator in `benches/` reuses it as a client codec.
//! - [`broker`]: the sans-IO broker core. Sessions, routing, QoS, retained messages and wills as
//!   a state machine driven by a runtime; no sockets, threads or clocks.
//! - [`server`]: the thin adapter that runs one broker core per shard on the thread-per-core
//!   runtime of `mqtt_broker_shards`, with real sockets.
//! - [`settings`] and [`app`]: the command line and config file, and the `mqtt-broker` program
//!   built from them; [`allocator`] the memory allocator the programs run on.
//! - [`sync_server`]: the blocking comparison build: the same core with one shard behind a
//!   mutex, one `std::net` thread per connection, for benchmarks against the sharded server.
//!
//! [`protocol`] and [`broker`] live in their own crate, `mqtt_broker_core` (`src/core/`), and
//! are re-exported here so they read as modules of this one. The split is the point: that
//! crate's manifest has no runtime, socket, thread or storage dependency, so the compiler
//! checks that the codec and the core stay sans-IO while this crate wires in the runtimes
//! (`mqtt_broker_shards`) and the journal (`mqtt_broker_persistence`).

pub mod allocator;
pub mod app;
pub mod connection_rate;
pub mod security;
pub mod server;
pub mod settings;
pub mod sync_server;

pub use mqtt_broker_core::{broker, protocol};
