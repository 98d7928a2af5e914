//! Streams arbitrary bytes through the MQTT decoder in input-chosen chunks and checks that every
//! decoded packet survives an encode/decode round trip. The oracle is `mqtt_broker_fuzz`
//! (`fuzz/src/lib.rs`), which `tests/fuzz_seeds.rs` also runs on stable over the seeds.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mqtt_broker_fuzz::decoder::decode_stream(data);
});
