//! mqtt-broker-core: the MQTT wire codec and the sans-IO broker core, as a crate of their own so
//! that the compiler checks the rule the rest of the broker relies on: this code uses no runtime,
//! no sockets, no threads and no storage. Its manifest lists no async runtime (monoio, tokio,
//! glommio), no socket or channel crate and neither `mqtt-broker-shards` nor
//! `mqtt-broker-persistence`, so code here cannot reach for them; the runtimes drive it from
//! outside.
//!
//! - [`protocol`]: the wire codec. Bytes in, typed packets out (and back), with no I/O and no
//!   broker policy.
//! - [`broker`]: the broker as a state machine: bytes, time and messages from other shards in;
//!   bytes, messages for other shards, journal records and events out.
//!
//! The `mqtt-broker` crate re-exports both modules (`mqtt_broker::protocol`,
//! `mqtt_broker::broker`) and adds the runtimes, sockets and storage around them. The `sim`
//! feature adds `broker::sim`, the deterministic whole-broker simulation the fuzz target drives.

pub mod broker;
pub mod protocol;
