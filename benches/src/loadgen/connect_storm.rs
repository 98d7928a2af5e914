//! `--scenario connect-storm`: how fast the broker accepts new MQTT sessions.
//!
//! Why it exists: reconnect storms (a load balancer restart, a network blip) are when a broker
//! gets the most CONNECTs at once. This opens `--connections` connections, at most
//! `--concurrency` handshakes at a time, each a TCP connect plus CONNECT/CONNACK with a fresh
//! clean session; connections stay open until all are done (so the broker holds them all, as in
//! a real storm), then all disconnect cleanly. Reported: completed connects per second over the
//! whole storm, and the per-connection handshake latency.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::conn::Conn;
use super::fleet::{close_all, open_many};
use super::options::{version_name, Plan};
use super::pubsub::run_id;
use super::report::{Percentiles, StormSummary};
use super::subscriber::latency_histogram;

pub async fn run(plan: &Plan) -> io::Result<StormSummary> {
    let (conns, summary) = open_fleet(plan, "connect-storm").await?;
    let elapsed = summary.elapsed;
    close_all(conns, plan.concurrency).await;
    Ok(StormSummary {
        label: plan.label.clone(),
        version: version_name(plan.version),
        connections: plan.connections,
        concurrency: plan.concurrency,
        failed: summary.failed,
        elapsed_s: elapsed.as_secs_f64(),
        latency: summary.latency,
    })
}

/// What opening a fleet of connections produced.
pub struct FleetOpened {
    pub failed: usize,
    pub elapsed: Duration,
    pub latency: Percentiles,
}

/// Opens `plan.connections` connections with progress on stderr; failures are counted, and the
/// first one is printed, but do not stop the others.
pub async fn open_fleet(plan: &Plan, what: &str) -> io::Result<(Vec<Conn>, FleetOpened)> {
    let run_id = run_id();
    let done = Arc::new(AtomicUsize::new(0));
    let progress = {
        let done = done.clone();
        let total = plan.connections;
        let what = what.to_string();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            ticker.tick().await;
            loop {
                ticker.tick().await;
                eprintln!(
                    "[{:>6.1}s {what}] {} of {total} connections open",
                    started.elapsed().as_secs_f64(),
                    done.load(Ordering::Relaxed)
                );
            }
        })
    };
    let started = Instant::now();
    let opened = {
        let (addr, version, done) = (plan.addr, plan.version, done.clone());
        open_many(plan.connections, plan.concurrency, move |index| {
            let client_id = format!("mb-{run_id}-c{index}");
            let done = done.clone();
            async move {
                let conn = Conn::connect(addr, &client_id, version).await;
                done.fetch_add(1, Ordering::Relaxed);
                conn
            }
        })
        .await
    };
    let elapsed = started.elapsed();
    progress.abort();

    let mut latency = latency_histogram();
    let mut conns = Vec::with_capacity(opened.len());
    let mut failed = 0;
    for item in opened {
        match item.result {
            Ok(conn) => {
                latency.saturating_record(item.took.as_nanos() as u64);
                conns.push(conn);
            }
            Err(error) => {
                if failed == 0 {
                    eprintln!("mqtt-bench: first failed connection: {error}");
                }
                failed += 1;
            }
        }
    }
    if conns.is_empty() {
        return Err(io::Error::other(format!(
            "all {} connections failed",
            plan.connections
        )));
    }
    Ok((
        conns,
        FleetOpened {
            failed,
            elapsed,
            latency: Percentiles::from_ns(&latency),
        },
    ))
}
