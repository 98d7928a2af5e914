//! Drives a simulated multi-shard broker through generated sequences of client steps, shard
//! batches, journal durability, clock jumps and crashes, checking the broker's promises after
//! each. The oracle is `mqtt_broker_fuzz::core` (`fuzz/src/core.rs`), which
//! `tests/fuzz_seeds.rs` also runs on stable over the committed seeds.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mqtt_broker_fuzz::core::run(data);
});
