//! The oracles of the fuzz targets, one module each: [`decoder`] for the streaming MQTT decoder,
//! [`core`] for the sans-IO broker core on a simulated multi-shard broker. Each target in
//! `fuzz_targets/` is one call into its oracle; `tests/fuzz_seeds.rs` in the root crate includes
//! the same modules to replay the committed seeds on stable.

pub mod core;
pub mod decoder;
