//! The programs: `mqtt-broker` (also installed as `mqtt-broker-async`) runs the sharded server,
//! `mqtt-broker-sync` the blocking comparison build. Both take settings from the command line
//! and config file, set up logging, then serve until SIGINT/SIGTERM. Every failure ends as one
//! line on stderr and a non-zero exit code.

use std::error::Error;
use std::num::NonZeroUsize;
use std::process::ExitCode;

use mqtt_broker_shards::Backend;
use tracing::info;

use crate::settings::{init_logging, Settings};
use crate::{server, sync_server};

/// Runs the sharded broker; the whole of `main`.
pub fn main_sharded(program: &str) -> ExitCode {
    main_with(program, |settings| {
        std::fs::create_dir_all(&settings.data_dir).map_err(|error| {
            format!(
                "cannot create data directory {}: {error}",
                settings.data_dir.display()
            )
        })?;
        Ok(server::run(settings.server_options())?)
    })
}

/// Runs the blocking build (`crate::sync_server`); the whole of its `main`.
pub fn main_sync(program: &str) -> ExitCode {
    main_with(program, |settings| {
        // The flags are shared with the sharded build so one command line runs both; say so
        // when they were set, because here they change nothing.
        let default_shards = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        if settings.runtime != Backend::Auto || settings.shards != default_shards {
            info!(
                runtime = ?settings.runtime,
                shards = settings.shards,
                "the blocking build ignores --runtime and --shards: one thread per connection, one broker core"
            );
        }
        Ok(sync_server::run(&settings.server_options())?)
    })
}

/// Loads the settings (a bad one exits 78, EX_CONFIG, which the systemd unit does not restart
/// on), starts logging, then runs `serve`.
fn main_with(
    program: &str,
    serve: impl FnOnce(Settings) -> Result<(), Box<dyn Error>>,
) -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("{program}: {error}");
            return ExitCode::from(crate::settings::EXIT_CONFIG);
        }
    };
    let served = init_logging(&settings.log_level)
        .map_err(Box::<dyn Error>::from)
        .and_then(|()| serve(settings));
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{program}: {error}");
            ExitCode::FAILURE
        }
    }
}
