//! `restore`: the broker's start-up on a data directory, timed, without the network.
//!
//! What `server::run` and `server::shard::run` do before a shard serves its first client:
//! `server::recover` (open and check the store, decode the snapshots and journal records, replay
//! them in LSN order, split the sessions by home shard), then on every shard's thread at once:
//! a new `Broker`, the wall clock, `Broker::restore`, the subscription interest sent to the other
//! shards; a barrier; and the interest received from the others applied. The shard threads here
//! stand in for the runtime's, with channels in place of its mesh.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use mqtt_broker::broker::persist::RestoreSummary;
use mqtt_broker::broker::{Broker, Config, ShardMessage, Timestamp};
use mqtt_broker::server::{recover, PersistenceOptions};

use super::{cpu_time, unix_ms, Figures};
use crate::loadgen::procfs::memory_kib;

pub struct RestorePlan {
    pub dir: PathBuf,
    pub shards: usize,
}

type Mail = (usize, Vec<ShardMessage>);

struct ShardOutcome {
    broker: Broker,
    summary: RestoreSummary,
    restore: Duration,
    interest_sent: usize,
    interest_applied: Duration,
    done: Instant,
}

pub fn run(plan: &RestorePlan) -> io::Result<Figures> {
    let started = Instant::now();
    let (store, shards) = recover(&plan.dir, &PersistenceOptions::default(), plan.shards)
        .map_err(io::Error::other)?;
    let recovered = started.elapsed();
    let shard_count = shards.len();
    let config = Config {
        persistence: true,
        ..Config::default()
    };
    let connections = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(shard_count));
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..shard_count).map(|_| mpsc::channel::<Mail>()).unzip();
    let mut writers = Vec::new();
    let mut threads = Vec::new();
    for ((id, (writer, state)), inbox) in shards.into_iter().enumerate().zip(receivers) {
        writers.push(writer);
        let (config, connections, barrier, senders) = (
            config.clone(),
            connections.clone(),
            barrier.clone(),
            senders.clone(),
        );
        let thread = std::thread::Builder::new()
            .name(format!("restore-{id}"))
            .spawn(move || {
                let epoch = Instant::now();
                let now = || Timestamp::since(epoch);
                let mut broker = Broker::new(config, id, shard_count, connections, now());
                broker.handle_wall_clock(unix_ms(), now());
                let restoring = Instant::now();
                let summary = broker.restore(state, now());
                let restore = restoring.elapsed();
                let mut interest_sent = 0;
                while let Some((to, batch)) = broker.poll_shard_messages() {
                    interest_sent += batch.len();
                    let _ = senders[to].send((id, batch));
                }
                drop(senders);
                barrier.wait();
                let applying = Instant::now();
                while let Ok((from, batch)) = inbox.try_recv() {
                    let now = now();
                    for message in batch {
                        broker.handle_shard_message(from, message, now);
                    }
                }
                ShardOutcome {
                    broker,
                    summary,
                    restore,
                    interest_sent,
                    interest_applied: applying.elapsed(),
                    done: Instant::now(),
                }
            })?;
        threads.push(thread);
    }
    drop(senders);
    let outcomes: Vec<ShardOutcome> = threads
        .into_iter()
        .map(|thread| thread.join().expect("a restore thread panicked"))
        .collect();
    let ready = outcomes
        .iter()
        .map(|outcome| outcome.done)
        .max()
        .unwrap_or(started)
        - started;
    let (peak_kib, rss_kib) = memory_kib(std::process::id())?;
    let (user, system) = cpu_time();

    let mut figures = Figures::default();
    figures.text("command", "restore");
    figures.text("dir", plan.dir.display().to_string());
    figures.count("shards", shard_count as u64);
    let sum = |f: fn(&RestoreSummary) -> usize| {
        outcomes
            .iter()
            .map(|outcome| f(&outcome.summary))
            .sum::<usize>() as u64
    };
    figures.count("sessions", sum(|s| s.sessions));
    figures.count("sessions_expired", sum(|s| s.sessions_expired));
    figures.count("sessions_skipped", sum(|s| s.sessions_skipped));
    figures.count("retained", sum(|s| s.retained) / shard_count as u64);
    figures.count("messages", sum(|s| s.messages));
    figures.time("recover_ms", recovered);
    for (shard, outcome) in outcomes.iter().enumerate() {
        figures.time(&format!("shard_{shard}_restore_ms"), outcome.restore);
        figures.count(
            &format!("shard_{shard}_interest_sent"),
            outcome.interest_sent as u64,
        );
        figures.time(
            &format!("shard_{shard}_interest_apply_ms"),
            outcome.interest_applied,
        );
        figures.count(
            &format!("shard_{shard}_sessions"),
            outcome.broker.session_count() as u64,
        );
    }
    figures.time("ready_ms", ready);
    figures.time("cpu_user_ms", user);
    figures.time("cpu_system_ms", system);
    figures.count("peak_rss_kib", peak_kib);
    figures.count("rss_kib", rss_kib);
    // Every shard would now serve. Freeing a million subscriptions takes a while and is not
    // part of a start: leave that to the process exit.
    std::mem::forget(outcomes);
    drop(writers);
    store.close().map_err(io::Error::other)?;
    Ok(figures)
}
