//! Thread-per-core runtime for the broker: one shard thread per core, each with its own
//! single-threaded event loop. This crate knows nothing of MQTT; the broker plugs its sans-IO core
//! into it. (Filled in by the shards issue; the crate exists now so the workspace layout is fixed.)
