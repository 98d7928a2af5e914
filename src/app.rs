//! The programs: `mqtt-broker` (also installed as `mqtt-broker-async`) runs the sharded server,
//! `mqtt-broker-sync` the blocking comparison build. Both take settings from the command line
//! and config file, set up logging, then serve until SIGINT/SIGTERM. Every failure ends as one
//! line on stderr and a non-zero exit code.

use std::error::Error;
use std::process::ExitCode;

use tracing::info;

use crate::server::ServerOptions;
use crate::settings::{init_logging, Settings};
use crate::{server, sync_server};

/// Runs the sharded broker; the whole of `main`.
pub fn main_sharded(program: &str) -> ExitCode {
    main_with(program, |settings| {
        let data = &settings.server.data_dir;
        std::fs::create_dir_all(data)
            .map_err(|error| format!("cannot create data directory {}: {error}", data.display()))?;
        Ok(server::run(settings.server)?)
    })
}

/// Runs the blocking build (`crate::sync_server`); the whole of its `main`.
pub fn main_sync(program: &str) -> ExitCode {
    main_with(program, |settings| {
        // The flags are shared with the sharded build so one command line runs both; say so
        // when they were set, because here they change nothing.
        let server = settings.server;
        let defaults = ServerOptions::default();
        if (server.backend, server.shards) != (defaults.backend, defaults.shards) {
            info!(
                "the blocking build ignores --runtime and --shards: one thread per connection, one broker core"
            );
        }
        Ok(sync_server::run(&server)?)
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
    let served = init_logging(&settings.logging)
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
