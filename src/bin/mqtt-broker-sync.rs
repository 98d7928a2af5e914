//! `mqtt-broker-sync`: the blocking comparison build. Same flags, config file and broker core as
//! `mqtt-broker`, served by one `std::net` thread per connection instead of the sharded runtime,
//! so benchmarks can measure what the runtime is worth. See `mqtt_broker::sync_server`.

mqtt_broker::global_allocator!();

fn main() -> std::process::ExitCode {
    mqtt_broker::app::main_sync("mqtt-broker-sync")
}
