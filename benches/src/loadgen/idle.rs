//! `--scenario idle`: the broker's memory cost of one idle connection.
//!
//! Why it exists: a broker serving many devices holds far more idle connections than busy ones,
//! so memory per connection decides how many fit on a machine. This reads the broker's VmRSS
//! (`--broker-pid`), opens `--connections` clean sessions, holds them `--duration` seconds so
//! lazily allocated buffers settle, reads VmRSS again and divides the growth by the number of
//! open connections. The figure is user-space memory only (socket buffers are kernel memory and
//! not in RSS). Use a freshly started broker: memory that earlier traffic allocated and freed
//! stays resident and is reused, which hides the cost of new connections.

use std::io;
use std::time::Duration;

use super::connect_storm::open_fleet;
use super::fleet::close_all;
use super::options::{version_name, Plan};
use super::procfs::rss_kib;
use super::report::IdleSummary;

pub async fn run(plan: &Plan) -> io::Result<IdleSummary> {
    let pid = plan
        .broker_pid
        .ok_or_else(|| io::Error::other("idle needs --broker-pid"))?;
    let rss_before_kib = rss_kib(pid)?;
    let (conns, opened) = open_fleet(plan, "idle").await?;
    eprintln!(
        "mqtt-bench: {} connections open ({} failed), holding for {:?}; broker RSS {} KiB before",
        conns.len(),
        opened.failed,
        plan.duration,
        rss_before_kib
    );
    let hold_until = tokio::time::Instant::now() + plan.duration;
    while tokio::time::Instant::now() < hold_until {
        let left = hold_until - tokio::time::Instant::now();
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
        if let Ok(rss) = rss_kib(pid) {
            eprintln!("[idle] broker RSS {rss} KiB");
        }
    }
    let rss_after_kib = rss_kib(pid)?;
    close_all(conns, plan.concurrency).await;
    Ok(IdleSummary {
        label: plan.label.clone(),
        version: version_name(plan.version),
        connections: plan.connections,
        failed: opened.failed,
        hold_s: plan.duration.as_secs_f64(),
        rss_before_kib,
        rss_after_kib,
    })
}
