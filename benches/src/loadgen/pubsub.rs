//! A pub/sub run from start to finish: connect, start everyone on one timeline, stop, drain,
//! and add up the reports.
//!
//! Why it exists: this is the only place that knows the order of a run. Subscribers connect and
//! subscribe first (a SUBACK means the broker will route to them), then publishers connect; all
//! start at one instant a little later. Publishers stop at the end of the window; subscribers
//! keep reading until nothing has arrived for [`QUIET`] or the drain deadline passes, so every
//! run ends by itself. Losses are then counted against what each publisher sent in the window.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytestring::ByteString;
use hdrhistogram::Histogram;
use tokio::sync::{watch, Notify};

use super::accounting::{Ledger, Missing};
use super::clock::{Clock, Timeline};
use super::conn::Conn;
use super::fleet::{all_ok, open_many};
use super::options::{version_name, Plan};
use super::pacer::{Pacer, Schedule};
use super::procfs::cpu_seconds;
use super::progress::{report_progress, Live};
use super::publisher::{self, PublisherReport, PublisherSpec};
use super::report::{Percentiles, PubSubSummary};
use super::subscriber::{self, latency_histogram, Accounts, SubscriberReport, SubscriberSpec};
use super::topology::Topology;

/// The drain ends early once no message has arrived for this long.
const QUIET: Duration = Duration::from_millis(250);
/// Time between the last connection and the start, so every task is parked and waiting.
const START_DELAY: Duration = Duration::from_millis(100);
/// Handshakes in progress at once while setting up.
const SETUP_CONCURRENCY: usize = 32;

/// A unique-enough id for topic names and client ids.
pub fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{:x}{:05x}", std::process::id(), nanos & 0xF_FFFF)
}

pub async fn run(plan: &Plan) -> io::Result<(PubSubSummary, Histogram<u64>)> {
    let clock = Clock::new();
    let run_id = run_id();
    let topology = Topology::new(plan.scenario, plan.publishers, plan.subscribers, &run_id)
        .expect("a pub/sub scenario");
    let live = Arc::new(Live::default());

    let subscribers = {
        let (topology, run_id, addr, version, qos, persistent) = (
            topology.clone(),
            run_id.clone(),
            plan.addr,
            plan.version,
            plan.qos,
            plan.persistent,
        );
        open_many(plan.subscribers as usize, SETUP_CONCURRENCY, move |index| {
            let client_id = subscriber_id(&run_id, index);
            let filter = topology.subscription(index as u32);
            async move {
                let mut conn = Conn::connect_with(addr, &client_id, version, persistent).await?;
                conn.subscribe(&filter, qos).await?;
                Ok(conn)
            }
        })
        .await
    };
    let subscribers = all_ok(subscribers, "subscriber connections")?;
    // Held, unread, until the run is over.
    let stalled = {
        let (run_id, addr, version, qos) = (run_id.clone(), plan.addr, plan.version, plan.qos);
        let mut filters: Vec<String> = (0..plan.subscribers)
            .map(|index| topology.subscription(index))
            .collect();
        filters.dedup();
        let filters = Arc::new(filters);
        open_many(
            plan.stalled_subscribers as usize,
            SETUP_CONCURRENCY,
            move |index| {
                let client_id = format!("mb-{run_id}-stalled{index}");
                let filters = filters.clone();
                async move {
                    let mut conn = Conn::connect(addr, &client_id, version).await?;
                    for filter in filters.iter() {
                        conn.subscribe(filter, qos).await?;
                    }
                    Ok(conn)
                }
            },
        )
        .await
    };
    let stalled = all_ok(stalled, "stalled subscriber connections")?;
    let publishers = {
        let (run_id, addr, version) = (run_id.clone(), plan.addr, plan.version);
        open_many(plan.publishers as usize, SETUP_CONCURRENCY, move |index| {
            let client_id = format!("mb-{run_id}-p{index}");
            async move { Conn::connect(addr, &client_id, version).await }
        })
        .await
    };
    let publishers = all_ok(publishers, "publisher connections")?;

    let start = clock.now_ns() + START_DELAY.as_nanos() as u64;
    let timeline = Timeline::new(start, plan.warmup, plan.duration, plan.drain);
    eprintln!(
        "mqtt-bench: {} publishers, {} subscribers and {} stalled subscribers connected (run {run_id}); warm-up {:?}, measuring {:?}",
        plan.publishers, plan.subscribers, plan.stalled_subscribers, plan.warmup, plan.duration
    );
    let (stop_tx, stop_rx) = watch::channel(false);

    let group = topology
        .shared()
        .then(|| Arc::new(Mutex::new(Ledger::new(0..plan.publishers))));
    let mut subscriber_tasks = Vec::new();
    for (index, conn) in subscribers.into_iter().enumerate() {
        let accounts = match &group {
            Some(group) => Accounts::Group(group.clone()),
            None => Accounts::Own(Ledger::new(topology.sources(index as u32))),
        };
        let spec = SubscriberSpec {
            id: index as u32,
            payload: plan.payload,
            qos: plan.qos,
            timeline,
            accounts,
        };
        subscriber_tasks.push(tokio::spawn(subscriber::run(
            conn,
            spec,
            clock,
            live.clone(),
            stop_rx.clone(),
        )));
    }

    let schedule = plan.rate.map(|rate| Schedule {
        start_ns: start,
        rate,
        publishers: plan.publishers,
    });
    let wakers: Vec<Arc<Notify>> = (0..plan.publishers)
        .map(|_| Arc::new(Notify::new()))
        .collect();
    let mut publisher_tasks = Vec::new();
    for (index, conn) in publishers.into_iter().enumerate() {
        let spec = PublisherSpec {
            id: index as u32,
            topic: ByteString::from(topology.publish_topic(index as u32)),
            qos: plan.qos,
            window: plan.window,
            payload: plan.payload,
            timeline,
            schedule,
            wake: wakers[index].clone(),
        };
        publisher_tasks.push(tokio::spawn(publisher::run(
            conn,
            spec,
            clock,
            live.clone(),
        )));
    }
    let pacer = schedule.map(|schedule| Pacer::start(schedule, timeline.window_end, clock, wakers));
    let cpu = tokio::spawn(sample_cpu(plan.broker_pid, clock, timeline));
    let progress = tokio::spawn(report_progress(
        live.clone(),
        clock,
        timeline,
        stop_rx.clone(),
    ));

    let mut first_error = None;
    let mut publisher_reports = Vec::new();
    for (index, task) in publisher_tasks.into_iter().enumerate() {
        match task.await.expect("publisher task panicked") {
            Ok(report) => publisher_reports.push(report),
            Err(error) => {
                first_error.get_or_insert(in_context(error, "publisher", index, &clock, &timeline));
            }
        }
    }
    drop(pacer);
    if first_error.is_none() {
        wait_for_quiet(&live, clock, timeline).await;
    }
    let _ = stop_tx.send(true);
    let mut subscriber_reports = Vec::new();
    for (index, task) in subscriber_tasks.into_iter().enumerate() {
        match task.await.expect("subscriber task panicked") {
            Ok(report) => subscriber_reports.push(report),
            Err(error) => {
                first_error.get_or_insert(in_context(
                    error,
                    "subscriber",
                    index,
                    &clock,
                    &timeline,
                ));
            }
        }
    }
    let _ = progress.await;
    let (broker_cpu_pct, bench_cpu_pct) = cpu.await.unwrap_or((None, None));
    drop(stalled);
    if plan.persistent {
        end_sessions(plan, &run_id).await;
    }
    if let Some(error) = first_error {
        return Err(error);
    }

    let group = group.map(|group| {
        Arc::try_unwrap(group)
            .map(|mutex| mutex.into_inner().expect("group ledger poisoned"))
            .unwrap_or_else(|shared| shared.lock().expect("group ledger poisoned").clone())
    });
    let summary = summarize(
        plan,
        timeline,
        &publisher_reports,
        &subscriber_reports,
        group.as_ref(),
    );
    let mut latency = latency_histogram();
    for report in &subscriber_reports {
        latency
            .add(&report.latency)
            .expect("histograms with one set of bounds");
    }
    let summary = PubSubSummary {
        latency: Percentiles::from_ns(&latency),
        broker_cpu_pct,
        bench_cpu_pct,
        ..summary
    };
    Ok((summary, latency))
}

fn subscriber_id(run_id: &str, index: usize) -> String {
    format!("mb-{run_id}-s{index}")
}

/// Ends the subscribers' persistent sessions with a clean reconnect, so runs against one
/// broker do not pile up sessions (and messages queued for them) in its state. Failures only
/// leave a session to expire: they are reported, not fatal.
async fn end_sessions(plan: &Plan, run_id: &str) {
    let (run_id, addr, version) = (run_id.to_string(), plan.addr, plan.version);
    let ended = open_many(plan.subscribers as usize, SETUP_CONCURRENCY, move |index| {
        let client_id = subscriber_id(&run_id, index);
        async move {
            Conn::connect(addr, &client_id, version)
                .await?
                .close()
                .await;
            Ok(())
        }
    })
    .await;
    let failed = ended.iter().filter(|opened| opened.result.is_err()).count();
    if failed > 0 {
        eprintln!("mqtt-bench: warning: {failed} persistent sessions could not be ended");
    }
}

/// Says which connection failed, and when (the error itself is only seen when the task ends).
fn in_context(
    error: io::Error,
    role: &str,
    index: usize,
    clock: &Clock,
    timeline: &Timeline,
) -> io::Error {
    let now = clock.now_ns();
    io::Error::new(
        error.kind(),
        format!(
            "{role} {index}: {error} (noticed {:.1} s after the start, in the {} phase)",
            now.saturating_sub(timeline.start) as f64 / 1e9,
            timeline.phase(now).name()
        ),
    )
}

/// Waits until no delivery has arrived for [`QUIET`] after the window, or the drain deadline.
async fn wait_for_quiet(live: &Live, clock: Clock, timeline: Timeline) {
    let quiet = QUIET.as_nanos() as u64;
    loop {
        let now = clock.now_ns();
        if now >= timeline.drain_end {
            return;
        }
        let last = live
            .last_delivery_ns
            .load(std::sync::atomic::Ordering::Relaxed);
        if now >= timeline.window_end + quiet && now.saturating_sub(last) >= quiet {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// CPU used by the broker and by this process inside the window, in % of one core.
async fn sample_cpu(
    broker_pid: Option<u32>,
    clock: Clock,
    timeline: Timeline,
) -> (Option<f64>, Option<f64>) {
    let own_pid = std::process::id();
    let sample = |pid: Option<u32>| pid.and_then(|pid| cpu_seconds(pid).ok());
    tokio::time::sleep_until(clock.instant(timeline.window_start).into()).await;
    let (broker_start, own_start) = (sample(broker_pid), sample(Some(own_pid)));
    let measured_from = clock.now_ns();
    tokio::time::sleep_until(clock.instant(timeline.window_end).into()).await;
    let (broker_end, own_end) = (sample(broker_pid), sample(Some(own_pid)));
    let secs = (clock.now_ns() - measured_from) as f64 / 1e9;
    let pct = |start: Option<f64>, end: Option<f64>| Some((end? - start?) / secs * 100.0);
    (pct(broker_start, broker_end), pct(own_start, own_end))
}

/// Adds up the task reports; latency and CPU are filled in by the caller.
fn summarize(
    plan: &Plan,
    timeline: Timeline,
    publishers: &[PublisherReport],
    subscribers: &[SubscriberReport],
    group: Option<&Ledger>,
) -> PubSubSummary {
    let mut window_seqs = vec![0..0; plan.publishers as usize];
    for report in publishers {
        window_seqs[report.id as usize] = report.window_seqs.clone();
    }
    let ledgers: Vec<&Ledger> = match group {
        Some(group) => vec![group],
        None => subscribers
            .iter()
            .filter_map(|report| report.ledger.as_ref())
            .collect(),
    };
    let missing = ledgers.iter().fold(Missing::default(), |sum, ledger| {
        sum + ledger.missing(&window_seqs)
    });
    let refused: u64 = publishers.iter().map(|report| report.refused).sum();
    let stray: u64 = publishers.iter().map(|report| report.stray_acks).sum();
    if refused + stray > 0 {
        eprintln!(
            "mqtt-bench: warning: {refused} refused publishes, {stray} stray acknowledgements"
        );
    }
    PubSubSummary {
        label: plan.label.clone(),
        scenario: plan.scenario.name(),
        version: version_name(plan.version),
        persistent: plan.persistent,
        qos: plan.qos as u8,
        payload: plan.payload,
        publishers: plan.publishers,
        subscribers: plan.subscribers,
        stalled_subscribers: plan.stalled_subscribers,
        rate: plan.rate,
        window: plan.window,
        duration_s: timeline.window_secs(),
        sent: window_seqs
            .iter()
            .map(|range| range.end - range.start)
            .sum(),
        expected: ledgers
            .iter()
            .map(|ledger| ledger.expected(&window_seqs))
            .sum(),
        delivered: subscribers.iter().map(|report| report.delivered).sum(),
        delivered_bytes: subscribers.iter().map(|report| report.bytes).sum(),
        lost: missing.gaps,
        undelivered: missing.tail,
        dup: ledgers.iter().map(|ledger| ledger.dup_in_window).sum(),
        late: subscribers.iter().map(|report| report.late).sum(),
        reordered: group
            .is_none()
            .then(|| ledgers.iter().map(|ledger| ledger.reordered).sum()),
        unexpected: ledgers.iter().map(|ledger| ledger.unexpected).sum(),
        malformed: subscribers.iter().map(|report| report.malformed).sum(),
        unacked: publishers.iter().map(|report| report.unacked).sum(),
        latency: Percentiles::default(),
        broker_cpu_pct: None,
        bench_cpu_pct: None,
    }
}
