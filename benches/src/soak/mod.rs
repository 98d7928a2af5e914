//! `mqtt-soak`, the driver of `benches/soak.sh`: minutes of mixed load against one broker that
//! is killed with SIGKILL and restarted under it, and an exact account of what was lost.
//!
//! Why it exists: `mqtt-bench` measures one clean run; a soak asks what is left standing after
//! many restarts, which needs clients that survive them. Everything here reconnects
//! ([`link`]) and reuses `mqtt-bench`'s pieces (connection, stamps, ledgers, windows, progress).
//!
//! What runs in parallel, at QoS 0, 1 and 2 each: two paced [`publisher`]s (3.1.1 and 5,
//! persistent sessions, resending what is in flight after a reconnect) to a topic of their
//! own, and [`subscriber`]s to all of that QoS's topics: at QoS 1 and 2 two with persistent
//! sessions (3.1.1 and 5, the QoS 1 stream's v5 one subscribed at QoS 2) whose misses count as
//! lost, at QoS 0 one with a clean session that only reports. Besides: a slow subscriber on the
//! QoS 1 topics, connection [`churn`] and takeovers, and [`retained`] churn with readers.
//!
//! The run: every subscriber subscribes first; then the load runs for `--duration`; then the
//! publishers finish what is in flight, the subscribers drain until nothing new came for
//! `--quiet` seconds (at most `--drain`), the retained set is checked, and everyone leaves.
//! `--events` receives a line at each of these moments so the script can match its RSS and
//! descriptor samples to them. One JSON line on stdout has the figures.

pub mod churn;
pub mod link;
pub mod publisher;
pub mod retained;
pub mod subscriber;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use argh::FromArgs;
use bytestring::ByteString;
use mqtt_broker::protocol::{ProtocolVersion, QoS};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::loadgen::clock::{Clock, Timeline};
use crate::loadgen::progress::{report_progress, Live};
use churn::{ChurnReport, TakeoverReport};
use link::{alternate, Identity, Phase};
use publisher::{PublisherReport, PublisherSpec};
use retained::RetainedReport;
use subscriber::{Duplicate, Pace, Subscriber, SubscriberReport, SubscriberSpec};

/// mqtt-soak: mixed MQTT load for a long time against a broker that may be killed and
/// restarted under it; prints one JSON line of what was published, acknowledged, received and
/// lost. Exits 1 when something acknowledged was lost or a check failed.
#[derive(FromArgs, Debug)]
pub struct Options {
    /// broker host (default 127.0.0.1)
    #[argh(option, default = "String::from(\"127.0.0.1\")")]
    pub host: String,
    /// broker port (default 1883)
    #[argh(option, default = "1883")]
    pub port: u16,
    /// seconds of load (default 600)
    #[argh(option, default = "600.0")]
    pub duration: f64,
    /// messages per second at each QoS, shared by its two publishers (default 1000)
    #[argh(option, default = "1000.0")]
    pub rate: f64,
    /// the drain ends once no subscriber received anything for this many seconds (default 5)
    #[argh(option, default = "5.0")]
    pub quiet: f64,
    /// most seconds the drain may take (default 120)
    #[argh(option, default = "120.0")]
    pub drain: f64,
    /// append "UNIX_SECONDS EVENT" lines to this file at load-start, load-end, drained and
    /// closed
    #[argh(option)]
    pub events: Option<PathBuf>,
}

/// Everything a run needs, checked.
pub struct Plan {
    pub addr: SocketAddr,
    pub duration: Duration,
    pub rate: f64,
    pub quiet: Duration,
    pub drain: Duration,
    pub events: Option<PathBuf>,
}

impl Options {
    pub fn plan(&self) -> Result<Plan, String> {
        let seconds = |name: &str, value: f64| {
            if value.is_finite() && value > 0.0 && value <= 86_400.0 {
                Ok(Duration::from_secs_f64(value))
            } else {
                Err(format!("--{name} {value}: out of range"))
            }
        };
        if !(self.rate.is_finite() && self.rate >= 1.0) {
            return Err(format!("--rate {}: at least 1", self.rate));
        }
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|error| format!("--host {}: {error}", self.host))?
            .next()
            .ok_or_else(|| format!("--host {}: no address", self.host))?;
        Ok(Plan {
            addr,
            duration: seconds("duration", self.duration)?,
            rate: self.rate,
            quiet: seconds("quiet", self.quiet)?,
            drain: seconds("drain", self.drain)?,
            events: self.events.clone(),
        })
    }
}

/// Publishers per QoS.
const PUBLISHERS_PER_QOS: u32 = 2;

/// Payload bytes of every pub/sub message.
const PAYLOAD: usize = 64;

/// How long publishers (and the retained setter) wait for their last acknowledgements after
/// the load.
const ACK_DRAIN: Duration = Duration::from_secs(30);

/// Connection churn tasks and takeover tasks.
const CHURN_TASKS: u32 = 4;
const TAKEOVER_TASKS: u32 = 2;

/// The slow subscriber acknowledges at this multiple of the QoS 1 rate, so it catches up
/// between stalls, and stalls for `SLOW_STALL_FOR` of every `SLOW_STALL_EVERY`: at the default
/// rate that outlasts its queue (10,000 messages), so the broker has to drop for it.
const SLOW_ACK_FACTOR: f64 = 1.5;
const SLOW_STALL_EVERY: Duration = Duration::from_secs(60);
const SLOW_STALL_FOR: Duration = Duration::from_secs(15);

/// The publishers of `qos` are `qos_publishers(qos)`; publisher ids are global, so one ledger
/// can index every stream.
fn qos_publishers(qos: QoS) -> Range<u32> {
    let first = qos as u32 * PUBLISHERS_PER_QOS;
    first..first + PUBLISHERS_PER_QOS
}

const ALL_QOS: [QoS; 3] = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];

fn publisher_specs(plan: &Plan, gives_up_at: Instant) -> Vec<PublisherSpec> {
    ALL_QOS
        .iter()
        .flat_map(|&qos| qos_publishers(qos).map(move |id| (qos, id)))
        .map(|(qos, id)| PublisherSpec {
            id,
            identity: Identity {
                addr: plan.addr,
                client_id: format!("soak-pub-{id}"),
                version: alternate(id.into()),
                persistent: true,
            },
            topic: ByteString::from(format!("soak/q{}/{id}", qos as u8)),
            qos,
            rate: plan.rate / PUBLISHERS_PER_QOS as f64,
            payload: PAYLOAD,
            gives_up_at,
        })
        .collect()
}

fn subscriber_specs(plan: &Plan) -> Vec<SubscriberSpec> {
    let spec = |name: &str, version, persistent, filter_qos: QoS, qos, pace| SubscriberSpec {
        identity: Identity {
            addr: plan.addr,
            client_id: format!("soak-sub-{name}"),
            version,
            persistent,
        },
        filter: format!("soak/q{}/+", filter_qos as u8),
        qos,
        sources: qos_publishers(filter_qos),
        pace,
        checks_loss: persistent && filter_qos != QoS::AtMostOnce && matches!(pace, Pace::Full),
    };
    let (v3, v5) = (ProtocolVersion::V3_1_1, ProtocolVersion::V5);
    let (q0, q1, q2) = (QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce);
    let slow = Pace::Slow {
        acks_per_s: plan.rate * SLOW_ACK_FACTOR,
        stall_every: SLOW_STALL_EVERY,
        stall_for: SLOW_STALL_FOR,
    };
    vec![
        spec("q0", v3, false, q0, q0, Pace::Full),
        spec("q1-a", v3, true, q1, q1, Pace::Full),
        spec("q1-b", v5, true, q1, q2, Pace::Full),
        spec("q2-a", v3, true, q2, q2, Pace::Full),
        spec("q2-b", v5, true, q2, q2, Pace::Full),
        spec("q1-slow", v3, true, q1, q1, slow),
    ]
}

/// The `--events` file, if any.
struct Events(Option<File>);

impl Events {
    fn open(path: Option<&PathBuf>) -> io::Result<Events> {
        let file = path
            .map(|path| OpenOptions::new().create(true).append(true).open(path))
            .transpose()?;
        Ok(Events(file))
    }

    fn note(&mut self, event: &str) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        eprintln!("mqtt-soak: {event}");
        if let Some(file) = &mut self.0 {
            // The script only loses a sample boundary if this fails; the run goes on.
            let _ = writeln!(file, "{:.3} {event}", now.as_secs_f64());
        }
    }
}

/// Everything the run's tasks reported.
pub struct Outcome {
    pub publishers: Vec<PublisherReport>,
    pub subscribers: Vec<SubscriberReport>,
    pub churn: ChurnReport,
    pub takeovers: TakeoverReport,
    pub retained: RetainedReport,
    pub load_s: f64,
    pub drain_s: f64,
}

pub async fn run(plan: &Plan) -> io::Result<Outcome> {
    let clock = Clock::new();
    let live = Arc::new(Live::default());
    let mut events = Events::open(plan.events.as_ref())?;
    let (phase_tx, phase) = watch::channel(Phase::Load);

    let subscribing: Vec<_> = subscriber_specs(plan)
        .into_iter()
        .map(|spec| tokio::spawn(Subscriber::subscribe(spec, live.clone(), clock)))
        .collect();
    let ready = join_all(subscribing)
        .await?
        .into_iter()
        .collect::<io::Result<Vec<_>>>()?;

    let load_start = Instant::now();
    events.note("load-start");
    let (progress_stop, progress_rx) = watch::channel(false);
    let timeline = Timeline::new(clock.now_ns(), Duration::ZERO, plan.duration, plan.drain);
    let progress = tokio::spawn(report_progress(live.clone(), clock, timeline, progress_rx));
    let subscribers: Vec<_> = ready
        .into_iter()
        .map(|subscriber| tokio::spawn(subscriber.run(phase.clone(), load_start)))
        .collect();
    let gives_up_at = load_start + plan.duration + ACK_DRAIN;
    let publishers: Vec<_> = publisher_specs(plan, gives_up_at)
        .into_iter()
        .map(|spec| tokio::spawn(publisher::run(spec, phase.clone(), live.clone())))
        .collect();
    let churners: Vec<_> = (0..CHURN_TASKS)
        .map(|task| tokio::spawn(churn::churn(plan.addr, task, phase.clone())))
        .collect();
    let takers: Vec<_> = (0..TAKEOVER_TASKS)
        .map(|task| tokio::spawn(churn::takeovers(plan.addr, task, phase.clone())))
        .collect();
    let setter = {
        let (addr, phase) = (plan.addr, phase.clone());
        tokio::spawn(async move {
            let mut report = RetainedReport::default();
            let state = retained::set(addr, phase, gives_up_at, &mut report).await;
            (state, report)
        })
    };
    let reader = {
        let (addr, phase) = (plan.addr, phase.clone());
        tokio::spawn(async move {
            let mut report = RetainedReport::default();
            retained::read(addr, phase, &mut report).await;
            report
        })
    };

    tokio::time::sleep(plan.duration).await;
    phase_tx.send_replace(Phase::Drain);
    let load_s = load_start.elapsed().as_secs_f64();
    events.note("load-end");
    let drain_start = Instant::now();

    let publishers = join_all(publishers).await?;
    let mut churn = ChurnReport::default();
    for report in join_all(churners).await? {
        churn.cycles += report.cycles;
        churn.dropped += report.dropped;
        churn.failed += report.failed;
    }
    let mut takeovers = TakeoverReport::default();
    for report in join_all(takers).await? {
        takeovers.taken_over += report.taken_over;
        takeovers.left_open += report.left_open;
        takeovers.failed += report.failed;
    }
    let (setter_state, mut retained) = setter.await.map_err(io::Error::other)?;
    let read = reader.await.map_err(io::Error::other)?;
    (
        retained.reads,
        retained.read_messages,
        retained.failed_reads,
    ) = (read.reads, read.read_messages, read.failed_reads);

    wait_quiet(&live, &clock, plan.quiet, drain_start + plan.drain).await;
    let drain_s = drain_start.elapsed().as_secs_f64();
    events.note("drained");
    if let Err(error) = retained::check(plan.addr, &setter_state, &mut retained).await {
        eprintln!("mqtt-soak: the final retained check failed: {error}");
        retained.mismatched = retained::TOPICS as u64;
    }

    phase_tx.send_replace(Phase::Done);
    let subscribers = join_all(subscribers).await?;
    progress_stop.send_replace(true);
    let _ = progress.await;
    events.note("closed");
    Ok(Outcome {
        publishers,
        subscribers,
        churn,
        takeovers,
        retained,
        load_s,
        drain_s,
    })
}

async fn join_all<T>(tasks: Vec<tokio::task::JoinHandle<T>>) -> io::Result<Vec<T>> {
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.map_err(io::Error::other)?);
    }
    Ok(results)
}

/// Waits until no subscriber has received anything for `quiet`, or until `deadline`.
async fn wait_quiet(live: &Live, clock: &Clock, quiet: Duration, deadline: Instant) {
    let quiet_ns = quiet.as_nanos() as u64;
    // The publishers are done, so a quiet period starts no earlier than now.
    let from = clock.now_ns();
    while Instant::now() < deadline {
        let last = live.last_delivery_ns.load(Ordering::Relaxed).max(from);
        if clock.now_ns().saturating_sub(last) >= quiet_ns {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Outcome {
    /// The sequence numbers each publisher used, indexed by publisher id.
    fn published_ranges(&self) -> Vec<Range<u64>> {
        let mut ranges = vec![0..0; self.publishers.len()];
        for publisher in &self.publishers {
            ranges[publisher.id as usize] = 0..publisher.published;
        }
        ranges
    }

    /// Messages of `subscriber`'s publishers acknowledged to them (QoS 0: published) that it
    /// never received.
    fn missing(&self, subscriber: &SubscriberReport) -> u64 {
        let ledger = &subscriber.ledger;
        let all = ledger.missing(&self.published_ranges()).total();
        let unacknowledged: u64 = self
            .publishers
            .iter()
            .filter_map(|publisher| Some((ledger.tracker(publisher.id)?, publisher)))
            .flat_map(|(tracker, publisher)| {
                publisher
                    .unacknowledged
                    .iter()
                    .map(move |&seq| tracker.missing_in(seq..seq + 1).total())
            })
            .sum();
        all - unacknowledged
    }

    /// Acknowledged messages never received, over the subscribers that check loss.
    pub fn lost(&self) -> u64 {
        self.subscribers
            .iter()
            .filter(|subscriber| subscriber.checks_loss)
            .map(|subscriber| self.missing(subscriber))
            .sum()
    }

    /// The QoS of the publishers `subscriber` hears from.
    fn publish_qos(&self, subscriber: &SubscriberReport) -> Option<QoS> {
        self.publishers
            .iter()
            .find(|publisher| subscriber.ledger.tracker(publisher.id).is_some())
            .map(|publisher| publisher.qos)
    }

    /// The subscribers at QoS 2 to QoS 2 publishers: where exactly once applies.
    fn exactly_once_subscribers(&self) -> impl Iterator<Item = &SubscriberReport> {
        self.subscribers.iter().filter(|subscriber| {
            subscriber.qos == QoS::ExactlyOnce
                && self.publish_qos(subscriber) == Some(QoS::ExactlyOnce)
        })
    }

    /// QoS 2 messages (published and subscribed at QoS 2) received more than once.
    pub fn qos2_duplicates(&self) -> u64 {
        self.exactly_once_subscribers()
            .map(|subscriber| subscriber.ledger.dup_in_window)
            .sum()
    }

    /// QoS 2 duplicates whose publisher had no PUBREC when the broker was killed, and so sent
    /// the message again: the broker forwards a QoS 2 message before acknowledging it, and a
    /// crash in between forgets it (the gap `src/core/broker/persist/outbox.rs` describes).
    /// Exactly once holds from the PUBREC on.
    pub fn qos2_duplicates_before_pubrec(&self) -> u64 {
        self.exactly_once_subscribers()
            .flat_map(|subscriber| &subscriber.duplicates)
            .filter(|duplicate| self.resent_by_publisher(duplicate))
            .count() as u64
    }

    /// QoS 2 duplicates of messages the broker had acknowledged: never allowed.
    pub fn qos2_duplicates_after_pubrec(&self) -> u64 {
        self.qos2_duplicates() - self.qos2_duplicates_before_pubrec()
    }

    /// Whether the publisher of a duplicate had sent it again itself after a reconnect.
    fn resent_by_publisher(&self, duplicate: &Duplicate) -> bool {
        self.publishers
            .iter()
            .find(|publisher| publisher.id == duplicate.publisher)
            .is_some_and(|publisher| {
                publisher
                    .resent_seqs
                    .binary_search(&duplicate.seq.into())
                    .is_ok()
            })
    }

    /// Whether every check the driver can make passed.
    pub fn ok(&self) -> bool {
        self.lost() == 0
            && self.qos2_duplicates_after_pubrec() == 0
            && self.retained.mismatched == 0
            && self.takeovers.left_open == 0
    }

    pub fn json(&self) -> Value {
        let ranges = self.published_ranges();
        let per_qos: Vec<Value> = ALL_QOS
            .iter()
            .map(|&qos| {
                let of_qos = || self.publishers.iter().filter(move |p| p.qos == qos);
                let sum = |field: fn(&PublisherReport) -> u64| of_qos().map(field).sum::<u64>();
                json!({
                    "qos": qos as u8,
                    "published": sum(|p| p.published),
                    "acknowledged": sum(|p| p.acknowledged),
                    "unacknowledged": sum(|p| p.unacknowledged.len() as u64),
                    "refused": sum(|p| p.refused),
                    "incomplete": sum(|p| p.incomplete),
                    "resent": sum(|p| p.resent),
                    "reconnects": sum(|p| p.reconnects),
                })
            })
            .collect();
        let subscribers: Vec<Value> = self
            .subscribers
            .iter()
            .map(|s| {
                let sources = s.ledger.expected(&ranges);
                let never = s.ledger.missing(&ranges).total();
                json!({
                    "client_id": s.client_id,
                    "publish_qos": self.publish_qos(s).map(|qos| qos as u8),
                    "subscription_qos": s.qos as u8,
                    "checks_loss": s.checks_loss,
                    "slow": s.slow,
                    "received": sources - never,
                    "missing": self.missing(s),
                    "duplicates": s.ledger.dup_in_window,
                    "reordered": s.ledger.reordered,
                    "deliveries": s.deliveries,
                    "absorbed": s.absorbed,
                    "reused_ids": s.reused_ids,
                    "unexpected": s.ledger.unexpected,
                    "malformed": s.malformed,
                    "reconnects": s.reconnects,
                    "duplicate_examples": s.duplicates.iter().map(|d| json!({
                        "publisher": d.publisher,
                        "seq": d.seq,
                        "first_packet_id": d.first.0,
                        "first_connection": d.first.1,
                        "packet_id": d.again.0,
                        "connection": d.again.1,
                        "dup_flag": d.dup_flag,
                        "resent_by_publisher": self.resent_by_publisher(d),
                        "at_s": d.at_s,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({
            "ok": self.ok(),
            "load_s": self.load_s,
            "drain_s": self.drain_s,
            "lost": self.lost(),
            "qos2_duplicates": self.qos2_duplicates(),
            "qos2_duplicates_after_pubrec": self.qos2_duplicates_after_pubrec(),
            "qos2_duplicates_before_pubrec": self.qos2_duplicates_before_pubrec(),
            "qos": per_qos,
            "subscribers": subscribers,
            "churn": {
                "cycles": self.churn.cycles,
                "dropped": self.churn.dropped,
                "failed": self.churn.failed,
            },
            "takeovers": {
                "taken_over": self.takeovers.taken_over,
                "left_open": self.takeovers.left_open,
                "failed": self.takeovers.failed,
            },
            "retained": {
                "acknowledged": self.retained.acknowledged,
                "resent": self.retained.resent,
                "setter_reconnects": self.retained.setter_reconnects,
                "reads": self.retained.reads,
                "read_messages": self.retained.read_messages,
                "failed_reads": self.retained.failed_reads,
                "checked": self.retained.checked,
                "mismatched": self.retained.mismatched,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::accounting::Ledger;

    /// The run's six publishers, publisher `id` with `published[id]` messages, and
    /// `unacknowledged` as (publisher, sequence number) pairs.
    fn publishers(published: [u64; 6], unacknowledged: &[(u32, u64)]) -> Vec<PublisherReport> {
        ALL_QOS
            .iter()
            .flat_map(|&qos| qos_publishers(qos).map(move |id| (qos, id)))
            .map(|(qos, id)| {
                let unacknowledged: Vec<u64> = unacknowledged
                    .iter()
                    .filter(|&&(publisher, _)| publisher == id)
                    .map(|&(_, seq)| seq)
                    .collect();
                PublisherReport {
                    id,
                    client_id: format!("p{id}"),
                    qos,
                    published: published[id as usize],
                    acknowledged: published[id as usize] - unacknowledged.len() as u64,
                    unacknowledged,
                    refused: 0,
                    incomplete: 0,
                    resent: 0,
                    resent_seqs: Vec::new(),
                    reconnects: 0,
                }
            })
            .collect()
    }

    fn subscriber(qos: QoS, sources: Range<u32>, received: &[(u32, u64)]) -> SubscriberReport {
        let mut ledger = Ledger::new(sources);
        for &(publisher, seq) in received {
            ledger.record(publisher, seq, true);
        }
        SubscriberReport {
            client_id: "s".into(),
            qos,
            checks_loss: true,
            slow: false,
            ledger,
            deliveries: received.len() as u64,
            absorbed: 0,
            reused_ids: 0,
            malformed: 0,
            reconnects: 0,
            duplicates: Vec::new(),
        }
    }

    fn outcome(publishers: Vec<PublisherReport>, subscribers: Vec<SubscriberReport>) -> Outcome {
        Outcome {
            publishers,
            subscribers,
            churn: ChurnReport::default(),
            takeovers: TakeoverReport::default(),
            retained: RetainedReport::default(),
            load_s: 0.0,
            drain_s: 0.0,
        }
    }

    #[test]
    fn lost_counts_acknowledged_messages_only() {
        // QoS 2 publishers 4 (0..10, 7 never acknowledged) and 5 (0..5): the subscriber misses
        // 5 and 7 of the first and 4 of the second, and gets 1 twice.
        let publishers = publishers([0, 0, 0, 0, 10, 5], &[(4, 7)]);
        let mut received: Vec<(u32, u64)> = [0, 1, 1, 2, 3, 4, 6, 8, 9]
            .into_iter()
            .map(|seq| (4, seq))
            .collect();
        received.extend((0..4).map(|seq| (5, seq)));
        let outcome = outcome(
            publishers,
            vec![subscriber(QoS::ExactlyOnce, 4..6, &received)],
        );
        assert_eq!(outcome.lost(), 2);
        assert_eq!(outcome.qos2_duplicates(), 1);
        assert!(!outcome.ok());
    }

    #[test]
    fn a_qos2_duplicate_counts_against_the_broker_unless_its_publisher_sent_it_again() {
        let duplicate = Duplicate {
            publisher: 4,
            seq: 1,
            first: (1, 0),
            again: (7, 1),
            dup_flag: false,
            at_s: 1.0,
        };
        for resent in [false, true] {
            let mut publishers = publishers([0, 0, 0, 0, 3, 0], &[]);
            if resent {
                publishers[4].resent = 1;
                publishers[4].resent_seqs = vec![1];
            }
            let mut subscriber =
                subscriber(QoS::ExactlyOnce, 4..6, &[(4, 0), (4, 1), (4, 1), (4, 2)]);
            subscriber.duplicates.push(duplicate.clone());
            let outcome = outcome(publishers, vec![subscriber]);
            assert_eq!(outcome.qos2_duplicates(), 1);
            assert_eq!(outcome.qos2_duplicates_before_pubrec(), u64::from(resent));
            assert_eq!(outcome.ok(), resent);
        }
    }

    #[test]
    fn qos1_messages_on_a_qos2_subscription_may_come_twice() {
        let publishers = publishers([0, 0, 2, 0, 0, 0], &[]);
        let received = [(2, 0), (2, 1), (2, 1)];
        let outcome = outcome(
            publishers,
            vec![subscriber(QoS::ExactlyOnce, 2..4, &received)],
        );
        assert_eq!(outcome.lost(), 0);
        assert_eq!(outcome.qos2_duplicates(), 0);
        assert!(outcome.ok());
    }
}
