//! Load generator and micro-benchmarks for mqtt-broker. The criterion benchmarks live in
//! `benches/benches/`; the `mqtt-bench` load generator arrives with the benchmark issue and reuses
//! `mqtt_broker::protocol` as its client codec.
