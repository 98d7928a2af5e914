//! The `mqtt-broker` program (also installed as `mqtt-broker-async`): settings from the command
//! line and config file, logging, then the sharded server until SIGINT/SIGTERM. Every failure
//! ends as one line on stderr and a non-zero exit code.

use std::process::ExitCode;

use crate::server;
use crate::settings::{init_logging, Settings};

/// Runs the sharded broker; the whole of `main`.
pub fn main_sharded(program: &str) -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("{program}: {error}");
            // EX_CONFIG: the systemd unit does not restart on a configuration error.
            return ExitCode::from(crate::settings::EXIT_CONFIG);
        }
    };
    if let Err(error) = init_logging(&settings.log_level) {
        return fail(program, &error);
    }
    if let Err(error) = std::fs::create_dir_all(&settings.data_dir) {
        let message = format!(
            "cannot create data directory {}: {error}",
            settings.data_dir.display()
        );
        return fail(program, &message);
    }
    match server::run(settings.server_options()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(program, &error),
    }
}

fn fail(program: &str, error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("{program}: {error}");
    ExitCode::FAILURE
}
