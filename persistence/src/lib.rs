//! Crash-safe storage for the broker: postcard snapshots read back through memmap2, plus an
//! append-only checksummed journal. Knows nothing of sockets or MQTT parsing. (Filled in by the
//! persistence issue; the crate exists now so the workspace layout is fixed.)
