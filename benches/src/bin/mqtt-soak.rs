//! `mqtt-soak`: the driver of `benches/soak.sh`. See `mqtt_broker_benches::soak` for what it
//! runs and how it counts; this file only parses the command line, bounds the run's time, and
//! prints the JSON line.
//!
//! ```sh
//! mqtt-soak --port 1883 --duration 600 --events events.txt > soak.json
//! ```

use std::process::ExitCode;
use std::time::Duration;

use mqtt_broker_benches::loadgen::rlimit;
use mqtt_broker_benches::soak::{self, Options};

/// Beyond the load and the drain: the subscribers' set-up, the publishers' and the retained
/// setter's last acknowledgements, and the final retained check.
const SLACK: Duration = Duration::from_secs(180);

fn main() -> ExitCode {
    let options: Options = argh::from_env();
    let plan = match options.plan() {
        Ok(plan) => plan,
        Err(error) => {
            eprintln!("mqtt-soak: {error}");
            return ExitCode::from(2);
        }
    };
    rlimit::raise_nofile();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mqtt-soak: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Every phase ends by itself; this is the backstop if the broker never comes back.
    let limit = plan.duration + plan.drain + SLACK;
    match runtime.block_on(async { tokio::time::timeout(limit, soak::run(&plan)).await }) {
        Err(_) => {
            eprintln!("mqtt-soak: still running after {limit:?}; giving up");
            ExitCode::from(3)
        }
        Ok(Ok(outcome)) => {
            println!("{}", outcome.json());
            if outcome.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Ok(Err(error)) => {
            eprintln!("mqtt-soak: the run failed: {error}");
            ExitCode::from(4)
        }
    }
}
