//! `mqtt-broker-sync`: the blocking comparison build. Same flags, config file and broker core as
//! `mqtt-broker`, served by one `std::net` thread per connection instead of the sharded runtime,
//! so benchmarks can measure what the runtime is worth. See `mqtt_broker::sync_server`.

use std::num::NonZeroUsize;
use std::process::ExitCode;

use mqtt_broker::settings::{init_logging, Settings, EXIT_CONFIG};
use mqtt_broker::sync_server;
use mqtt_broker_shards::Backend;
use tracing::info;

fn main() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("mqtt-broker-sync: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match run(settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mqtt-broker-sync: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(settings: Settings) -> Result<(), Box<dyn std::error::Error>> {
    init_logging(&settings.log_level)?;
    // The flags are shared with the sharded build so one command line runs both; say so when
    // they were set, because here they change nothing.
    let default_shards = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    if settings.runtime != Backend::Auto || settings.shards != default_shards {
        info!(
            runtime = ?settings.runtime,
            shards = settings.shards,
            "the blocking build ignores --runtime and --shards: one thread per connection, one broker core"
        );
    }
    sync_server::run(&settings.server_options())?;
    Ok(())
}
