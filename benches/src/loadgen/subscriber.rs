//! One subscriber connection: receives stamped messages, acknowledges them at their QoS, and
//! keeps the run's delivery figures.
//!
//! Why it exists: all the figures that matter come from here. Throughput counts deliveries
//! received inside the measurement window. Latency is receive time minus the stamp's intended
//! send time, recorded for every message meant to be sent inside the window (also those that
//! arrive during the drain, which are counted "late" too). Losses and duplicates are accounted
//! per publisher sequence in a [`Ledger`]: the subscriber's own, or, for a shared subscription,
//! the group's, updated once per read so the group lock is taken rarely.

use std::io;
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;
use mqtt_broker::protocol::{Ack, Packet, QoS};
use tokio::sync::watch;

use super::accounting::Ledger;
use super::clock::{Clock, Timeline};
use super::conn::{protocol_error, Conn};
use super::progress::Live;
use super::stamp::Stamp;

/// Where a subscriber accounts its deliveries.
pub enum Accounts {
    /// A stream of its own (pairs, fan-in, fan-out).
    Own(Ledger),
    /// One stream shared by the members of a shared-subscription group.
    Group(Arc<Mutex<Ledger>>),
}

pub struct SubscriberSpec {
    pub id: u32,
    pub payload: usize,
    /// The QoS every delivery should have (publish and subscription use the same one).
    pub qos: QoS,
    pub timeline: Timeline,
    pub accounts: Accounts,
}

pub struct SubscriberReport {
    pub id: u32,
    /// Messages received inside the measurement window.
    pub delivered: u64,
    /// Payload bytes of those.
    pub bytes: u64,
    /// Nanoseconds from intended send to receipt, for messages meant to be sent in the window.
    pub latency: Histogram<u64>,
    /// Messages meant to be sent in the window that arrived after it closed.
    pub late: u64,
    /// Payloads without a stamp or of the wrong size, and deliveries at another QoS.
    pub malformed: u64,
    /// The subscriber's own ledger; `None` in a shared group (the group keeps it).
    pub ledger: Option<Ledger>,
}

/// Histogram of nanosecond latencies from 1 ns to 10 minutes at 3 significant figures.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("valid histogram bounds")
}

pub async fn run(
    mut conn: Conn,
    spec: SubscriberSpec,
    clock: Clock,
    live: Arc<Live>,
    mut stop: watch::Receiver<bool>,
) -> io::Result<SubscriberReport> {
    let timeline = spec.timeline;
    let mut report = SubscriberReport {
        id: spec.id,
        delivered: 0,
        bytes: 0,
        latency: latency_histogram(),
        late: 0,
        malformed: 0,
        ledger: None,
    };
    let mut accounts = spec.accounts;
    // Group accounting waits here until the end of each read.
    let mut pending: Vec<(u32, u64, bool)> = Vec::new();
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => break,
            ready = conn.stream.readable() => {
                ready?;
                if !conn.read_available()? {
                    continue;
                }
                let now = clock.now_ns();
                let mut received = 0;
                while let Some(packet) = conn.next_packet()? {
                    match packet {
                        Packet::Publish(publish) => {
                            received += 1;
                            match publish.qos {
                                QoS::AtMostOnce => {}
                                QoS::AtLeastOnce => {
                                    conn.queue(&Packet::PubAck(Ack::new(publish.packet_id)))?
                                }
                                QoS::ExactlyOnce => {
                                    conn.queue(&Packet::PubRec(Ack::new(publish.packet_id)))?
                                }
                            }
                            let Some(stamp) = Stamp::parse(&publish.payload) else {
                                report.malformed += 1;
                                continue;
                            };
                            if publish.payload.len() != spec.payload || publish.qos != spec.qos {
                                report.malformed += 1;
                            }
                            if timeline.in_window(now) {
                                report.delivered += 1;
                                report.bytes += publish.payload.len() as u64;
                            }
                            let measured = timeline.in_window(stamp.intended_ns);
                            if measured {
                                let latency = now.saturating_sub(stamp.intended_ns).max(1);
                                report.latency.saturating_record(latency);
                                if now >= timeline.window_end {
                                    report.late += 1;
                                }
                            }
                            let seq = u64::from(stamp.seq);
                            match &mut accounts {
                                Accounts::Own(ledger) => {
                                    ledger.record(stamp.publisher, seq, measured);
                                }
                                Accounts::Group(_) => pending.push((stamp.publisher, seq, measured)),
                            }
                        }
                        Packet::PubRel(ack) => conn.queue(&Packet::PubComp(Ack::new(ack.packet_id)))?,
                        Packet::Disconnect(disconnect) => {
                            return Err(protocol_error(format!(
                                "subscriber {}: broker sent DISCONNECT {}",
                                spec.id, disconnect.reason_code
                            )))
                        }
                        _ => {}
                    }
                }
                flush_group(&accounts, &mut pending);
                live.add_delivered(received, now);
            }
            ready = conn.stream.writable(), if conn.unsent() > 0 => ready?,
        }
        conn.write_available()?;
    }
    flush_group(&accounts, &mut pending);
    if let Accounts::Own(ledger) = accounts {
        report.ledger = Some(ledger);
    }
    conn.close().await;
    Ok(report)
}

fn flush_group(accounts: &Accounts, pending: &mut Vec<(u32, u64, bool)>) {
    if let (Accounts::Group(group), false) = (accounts, pending.is_empty()) {
        let mut ledger = group.lock().expect("group ledger poisoned");
        for &(publisher, seq, measured) in pending.iter() {
            ledger.record(publisher, seq, measured);
        }
        pending.clear();
    }
}
