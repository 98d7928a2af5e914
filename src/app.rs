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

/// Runs the sharded broker, or `passwd`; the whole of `main`.
pub fn main_sharded(program: &str) -> ExitCode {
    if let Some(code) = run_subcommand(program) {
        return code;
    }
    main_with(program, |settings| {
        let data = &settings.server.data_dir;
        std::fs::create_dir_all(data)
            .map_err(|error| format!("cannot create data directory {}: {error}", data.display()))?;
        Ok(server::run(settings.server)?)
    })
}

/// Runs the blocking build (`crate::sync_server`), or `passwd`; the whole of its `main`.
pub fn main_sync(program: &str) -> ExitCode {
    if let Some(code) = run_subcommand(program) {
        return code;
    }
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

/// `PROGRAM passwd FILE USER ...` writes a password file (`crate::security::passwd`); any other
/// command line runs the broker.
fn run_subcommand(program: &str) -> Option<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some("passwd") {
        return None;
    }
    let rest: Vec<&str> = args[1..].iter().map(String::as_str).collect();
    Some(crate::security::passwd::main(
        &format!("{program} passwd"),
        &rest,
    ))
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
    let served = init_logging(&settings.logging, settings.log_format)
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
