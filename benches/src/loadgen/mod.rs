//! `mqtt-bench`, the broker load generator, as a library (the binary in `src/bin/mqtt-bench.rs`
//! only parses flags and prints). It speaks MQTT through `mqtt_broker::protocol` and nothing
//! else, on a tokio multi-thread runtime.
//!
//! How a pub/sub run fits together: [`options`] turns flags into a [`options::Plan`];
//! [`pubsub`] connects everyone ([`fleet`], [`conn`]), wires them per [`topology`], and starts
//! [`publisher`]s and [`subscriber`]s on one [`clock::Timeline`]; publishers stamp each payload
//! ([`stamp`]) and, in open loop, follow the [`pacer`]'s schedule; subscribers account every
//! delivery ([`accounting`]) and latency; [`report`] renders the sums and [`plot`] the latency
//! curve. [`connect_storm`] and [`idle`] are the two connection-only scenarios, and
//! [`retained`] the one of a subscriber owed a large retained set.

pub mod accounting;
pub mod clock;
pub mod conn;
pub mod connect_storm;
pub mod fleet;
pub mod idle;
pub mod options;
pub mod pacer;
pub mod plot;
pub mod procfs;
pub mod progress;
pub mod publisher;
pub mod pubsub;
pub mod report;
pub mod retained;
pub mod rlimit;
pub mod stamp;
pub mod subscriber;
pub mod topology;
pub mod window;

use std::io;

use hdrhistogram::Histogram;
use serde_json::Value;

use options::{Plan, Scenario};
use report::{IdleSummary, PubSubSummary, RetainedSummary, StormSummary};

/// What a run produced.
pub enum Outcome {
    /// The summary and the merged latency histogram (nanoseconds), boxed: both are large.
    PubSub(Box<PubSubSummary>, Box<Histogram<u64>>),
    Storm(StormSummary),
    Idle(IdleSummary),
    Retained(RetainedSummary),
}

impl Outcome {
    pub fn json(&self) -> Value {
        match self {
            Outcome::PubSub(summary, _) => summary.json(),
            Outcome::Storm(summary) => summary.json(),
            Outcome::Idle(summary) => summary.json(),
            Outcome::Retained(summary) => summary.json(),
        }
    }

    pub fn table(&self) -> String {
        match self {
            Outcome::PubSub(summary, _) => summary.table(),
            Outcome::Storm(summary) => summary.table(),
            Outcome::Idle(summary) => summary.table(),
            Outcome::Retained(summary) => summary.table(),
        }
    }
}

/// Runs the planned scenario to completion.
pub async fn run(plan: &Plan) -> io::Result<Outcome> {
    match plan.scenario {
        Scenario::Pairs | Scenario::FanIn | Scenario::FanOut | Scenario::Shared => {
            let (summary, latency) = pubsub::run(plan).await?;
            Ok(Outcome::PubSub(Box::new(summary), Box::new(latency)))
        }
        Scenario::ConnectStorm => Ok(Outcome::Storm(connect_storm::run(plan).await?)),
        Scenario::Idle => Ok(Outcome::Idle(idle::run(plan).await?)),
        Scenario::Retained => Ok(Outcome::Retained(retained::run(plan).await?)),
    }
}
