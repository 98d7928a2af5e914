//! `mqtt-bench`: the broker load generator. See `mqtt_broker_benches::loadgen` for how a run
//! works and `benches/RESULTS.md` for how its figures are read. This file only parses the
//! command line, guards the run with a watchdog, and prints.
//!
//! ```sh
//! mqtt-bench --scenario pairs --publishers 4 --qos 1 --duration 10
//! mqtt-bench --scenario fan-out --subscribers 16 --rate 10000 --json --plot latency.svg
//! mqtt-bench --scenario connect-storm --connections 5000
//! mqtt-bench --scenario idle --connections 10000 --broker-pid "$(pidof mosquitto)"
//! mqtt-bench --scenario retained --messages 100000 --payload 100 --qos 1
//! ```

use std::process::ExitCode;
use std::time::Duration;

use mqtt_broker_benches::loadgen::options::{Options, Scenario};
use mqtt_broker_benches::loadgen::plot::percentile_svg;
use mqtt_broker_benches::loadgen::{self, fleet, rlimit, Outcome};

fn main() -> ExitCode {
    let options: Options = argh::from_env();
    let plan = match options.plan() {
        Ok(plan) => plan,
        Err(error) => {
            eprintln!("mqtt-bench: {error}");
            return ExitCode::from(2);
        }
    };
    let nofile = rlimit::raise_nofile();
    if matches!(plan.scenario, Scenario::ConnectStorm | Scenario::Idle)
        && (plan.connections as u64 + 64) > nofile
    {
        eprintln!(
            "mqtt-bench: warning: {} connections but only {nofile} file descriptors",
            plan.connections
        );
    }

    // Every run stops by itself; this is the backstop if the broker hangs mid-handshake.
    let setup_rounds = (plan.connections / plan.concurrency + 2) as u32;
    let limit = plan.warmup
        + plan.duration
        + plan.drain
        + fleet::OPEN_TIMEOUT * setup_rounds
        + Duration::from_secs(30);
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("mqtt-bench: still running after {limit:?}; giving up");
        std::process::exit(3);
    });

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mqtt-bench: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match runtime.block_on(loadgen::run(&plan)) {
        Ok(outcome) => outcome,
        Err(error) => {
            eprintln!("mqtt-bench: {} failed: {error}", plan.scenario.name());
            return ExitCode::FAILURE;
        }
    };
    if options.json {
        println!("{}", outcome.json());
    } else {
        print!("{}", outcome.table());
    }
    if let Some(path) = &options.plot {
        match &outcome {
            Outcome::PubSub(summary, latency) => {
                let title = format!(
                    "{}{} {}/{} QoS {} {} B, MQTT {}{}",
                    summary
                        .label
                        .as_ref()
                        .map_or(String::new(), |label| format!("{label}: ")),
                    summary.scenario,
                    summary.publishers,
                    summary.subscribers,
                    summary.qos,
                    summary.payload,
                    summary.version,
                    summary
                        .rate
                        .map_or(", closed loop".to_string(), |rate| format!(
                            ", {rate} msg/s"
                        )),
                );
                if let Err(error) = std::fs::write(path, percentile_svg(latency, &title)) {
                    eprintln!("mqtt-bench: cannot write {}: {error}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            _ => eprintln!("mqtt-bench: --plot applies to pub/sub scenarios only"),
        }
    }
    ExitCode::SUCCESS
}
