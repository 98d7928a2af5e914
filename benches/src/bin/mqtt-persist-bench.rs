//! `mqtt-persist-bench`: snapshot, restore and start-up of a large persistent state. See
//! `mqtt_broker_benches::persist` for what each command measures; this file only parses the
//! command line and prints.
//!
//! ```sh
//! mqtt-persist-bench build --dir /tmp/state       # 100k sessions, 1 M subscriptions, 100k retained
//! mqtt-persist-bench restore --dir /tmp/state     # in a fresh process, so peak RSS is the restore's
//! mqtt-persist-bench start --dir /tmp/state --broker target/release/mqtt-broker
//! mqtt-persist-bench ready --addr 127.0.0.1:1883    # waits for a CONNACK (scripts)
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;
use mqtt_broker_benches::persist::build::{self, BuildPlan};
use mqtt_broker_benches::persist::restore::{self, RestorePlan};
use mqtt_broker_benches::persist::start::{self, StartPlan};
use mqtt_broker_benches::persist::{Figures, Shape};

/// mqtt-persist-bench: builds a large persistent state through the broker core and times its
/// snapshot, its restore, and the broker's start-up on it.
#[derive(FromArgs, Debug)]
struct Options {
    #[argh(subcommand)]
    command: Command,
    /// print one JSON object instead of the table
    #[argh(switch)]
    json: bool,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum Command {
    Build(BuildArgs),
    Restore(RestoreArgs),
    Start(StartArgs),
    Ready(ReadyArgs),
}

/// Create the state in an empty data directory, snapshotting it on the way (timed).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "build")]
struct BuildArgs {
    /// the data directory to create (must be empty or absent)
    #[argh(option)]
    dir: PathBuf,
    /// persistent sessions (default 100000)
    #[argh(option, default = "100_000")]
    sessions: u32,
    /// subscriptions per session (default 10)
    #[argh(option, default = "10")]
    subscriptions: u32,
    /// retained messages (default 100000)
    #[argh(option, default = "100_000")]
    retained: u32,
    /// payload bytes of each retained message (default 64)
    #[argh(option, default = "64")]
    payload: usize,
    /// shards, as the broker will run with (default 2)
    #[argh(option, default = "2")]
    shards: usize,
    /// percent of the sessions and retained messages written after the snapshot, so they are
    /// restored from the journal (default 10)
    #[argh(option, default = "10")]
    journal_percent: u32,
}

/// Restore the state as the broker's start-up does, timed, and report peak memory.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "restore")]
struct RestoreArgs {
    /// the data directory
    #[argh(option)]
    dir: PathBuf,
    /// shards (default 2; another count than the build's re-homes sessions first)
    #[argh(option, default = "2")]
    shards: usize,
}

/// Start the mqtt-broker binary on the state: time to its first CONNACK, memory, stop time.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "start")]
struct StartArgs {
    /// the data directory
    #[argh(option)]
    dir: PathBuf,
    /// the broker binary (default target/release/mqtt-broker)
    #[argh(option, default = "PathBuf::from(\"target/release/mqtt-broker\")")]
    broker: PathBuf,
    /// shards (default 2)
    #[argh(option, default = "2")]
    shards: usize,
    /// another argument for the broker (repeatable)
    #[argh(option)]
    broker_arg: Vec<String>,
}

/// Wait until a running broker answers a CONNECT (for scripts).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "ready")]
struct ReadyArgs {
    /// the broker's address (default 127.0.0.1:1883)
    #[argh(option, default = "SocketAddr::from(([127, 0, 0, 1], 1883))")]
    addr: SocketAddr,
    /// seconds to wait at most (default 120)
    #[argh(option, default = "120")]
    timeout: u64,
}

fn main() -> ExitCode {
    let options: Options = argh::from_env();
    let outcome = match &options.command {
        Command::Build(args) => {
            if args.subscriptions == 0 || args.shards == 0 || args.journal_percent > 100 {
                eprintln!("mqtt-persist-bench: --subscriptions and --shards must be at least 1, --journal-percent at most 100");
                return ExitCode::from(2);
            }
            build::run(&BuildPlan {
                dir: args.dir.clone(),
                shape: Shape {
                    sessions: args.sessions,
                    per_session: args.subscriptions,
                    retained: args.retained,
                    payload: args.payload,
                },
                shards: args.shards,
                journal_percent: args.journal_percent,
            })
        }
        Command::Restore(args) => restore::run(&RestorePlan {
            dir: args.dir.clone(),
            shards: args.shards,
        }),
        Command::Start(args) => start::run(&StartPlan {
            broker: args.broker.clone(),
            dir: args.dir.clone(),
            shards: args.shards,
            broker_args: args.broker_arg.clone(),
        }),
        Command::Ready(args) => start::wait_ready(args.addr, Duration::from_secs(args.timeout))
            .map(|waited| {
                let mut figures = Figures::default();
                figures.text("command", "ready");
                figures.time("waited_ms", waited);
                figures
            }),
    };
    match outcome {
        Ok(figures) => {
            print(&figures, options.json);
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("mqtt-persist-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

fn print(figures: &Figures, json: bool) {
    if json {
        println!("{}", figures.json());
    } else {
        print!("{}", figures.table());
    }
}
