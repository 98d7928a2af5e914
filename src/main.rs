//! `mqtt-broker`: the sharded, thread-per-core MQTT broker.

mqtt_broker::global_allocator!();

fn main() -> std::process::ExitCode {
    mqtt_broker::app::main_sharded("mqtt-broker")
}
