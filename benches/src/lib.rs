//! Load generator and micro-benchmarks for mqtt-broker. The criterion benchmarks live in
//! `benches/benches/`; the `mqtt-bench` load generator (`src/bin/mqtt-bench.rs`) is built from
//! [`loadgen`], which reuses `mqtt_broker::protocol` as its client codec; the
//! `mqtt-persist-bench` snapshot and restore benchmark (`src/bin/mqtt-persist-bench.rs`) from
//! [`persist`]; the `mqtt-soak` driver of `soak.sh` (`src/bin/mqtt-soak.rs`), whose clients
//! survive the broker being killed and restarted under them, from [`soak`].

pub mod loadgen;
pub mod persist;
pub mod soak;
