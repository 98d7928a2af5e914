//! mqtt-broker: an MQTT 3.1 / 3.1.1 / 5.0 broker built as a sharded thread-per-core runtime.
//!
//! The crate is layered so that one packet can be followed from socket to subscriber:
//! - [`protocol`]: the wire codec. Bytes in, typed packets out (and back), with no I/O and no
//!   broker policy. The load generator in `benches/` reuses it as a client codec.

pub mod protocol;
