//! `mqtt-broker-async`: the name the original deployment guide used for the sharded broker; the
//! same program as `mqtt-broker`.

mqtt_broker::global_allocator!();

fn main() -> std::process::ExitCode {
    mqtt_broker::app::main_sharded("mqtt-broker-async")
}
