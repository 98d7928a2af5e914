//! One publisher connection: sends stamped PUBLISH packets on its schedule, keeps its QoS 1/2
//! window, and says which sequence numbers it sent inside the measurement window.
//!
//! Why it exists: the publisher decides what "sent" means for the whole run. Closed loop (no
//! `--rate`): it keeps the socket full (QoS 0) or the window full (QoS 1/2) and stamps each
//! message with the time it was queued. Open loop: message k is due at [`Schedule::due`] and is
//! stamped with that time even when the window or the socket made it leave later, so the delay
//! counts as latency. It stops generating at the end of the window, then waits (up to the drain
//! deadline) for its last acknowledgements and disconnects.

use std::io;
use std::ops::Range;
use std::sync::Arc;

use bytestring::ByteString;
use mqtt_broker::protocol::{Ack, Packet, Publish, QoS};
use tokio::sync::Notify;

use super::clock::{Clock, Timeline};
use super::conn::{protocol_error, Conn};
use super::pacer::Schedule;
use super::progress::Live;
use super::stamp::{self, Stamp, STAMP_LEN};
use super::window::Window;

/// Closed loop: stop queueing once this much is waiting for the socket.
const HIGH_WATER: usize = 64 * 1024;
/// Open loop: the most the send buffer may hold before due messages wait (still stamped with
/// their due time) for the socket to drain.
const OPEN_LOOP_CAP: usize = 4 << 20;

pub struct PublisherSpec {
    pub id: u32,
    pub topic: ByteString,
    pub qos: QoS,
    pub window: usize,
    pub payload: usize,
    pub timeline: Timeline,
    /// `None` for a closed-loop run.
    pub schedule: Option<Schedule>,
    /// Woken by the pacer when a message is due (open loop only).
    pub wake: Arc<Notify>,
}

#[derive(Debug, Clone)]
pub struct PublisherReport {
    pub id: u32,
    /// Messages sent over the whole run.
    pub sent: u64,
    /// Sequence numbers whose intended send time fell inside the measurement window.
    pub window_seqs: Range<u64>,
    /// QoS 1/2 messages still unacknowledged when the drain ended.
    pub unacked: u64,
    /// PUBACK/PUBREC with a failure reason code (v5).
    pub refused: u64,
    /// Acknowledgements for identifiers that were not in flight.
    pub stray_acks: u64,
}

pub async fn run(
    mut conn: Conn,
    spec: PublisherSpec,
    clock: Clock,
    live: Arc<Live>,
) -> io::Result<PublisherReport> {
    let template = stamp::template(spec.payload);
    let filler = template.slice(STAMP_LEN..);
    let mut header = Publish {
        qos: spec.qos,
        topic: spec.topic.clone(),
        payload: template,
        ..Publish::default()
    };
    let qos0 = spec.qos == QoS::AtMostOnce;
    let timeline = spec.timeline;
    let mut window = Window::new(spec.window);
    let mut report = PublisherReport {
        id: spec.id,
        sent: 0,
        window_seqs: 0..0,
        unacked: 0,
        refused: 0,
        stray_acks: 0,
    };
    let mut seq = 0u64;
    let mut window_first = None;
    let mut generating = true;

    tokio::time::sleep_until(clock.instant(timeline.start).into()).await;
    let window_end = tokio::time::sleep_until(clock.instant(timeline.window_end).into());
    let drain_end = tokio::time::sleep_until(clock.instant(timeline.drain_end).into());
    tokio::pin!(window_end, drain_end);

    loop {
        if generating {
            let now = clock.now_ns();
            let cap = if spec.schedule.is_some() {
                OPEN_LOOP_CAP
            } else {
                HIGH_WATER
            };
            let mut made = 0;
            while conn.unsent() < cap {
                let intended = match &spec.schedule {
                    Some(schedule) => schedule.due(spec.id, seq),
                    None => clock.now_ns(),
                };
                if intended >= timeline.window_end {
                    generating = false;
                    break;
                }
                if intended > now && spec.schedule.is_some() {
                    break;
                }
                let packet_id = if qos0 {
                    0
                } else {
                    match window.acquire() {
                        Some(id) => id,
                        None => break,
                    }
                };
                if window_first.is_none() && intended >= timeline.window_start {
                    window_first = Some(seq);
                }
                header.packet_id = packet_id;
                header
                    .encode_header(conn.version, &mut conn.wbuf)
                    .map_err(|error| protocol_error(format!("encode PUBLISH: {error}")))?;
                let stamp = Stamp {
                    publisher: spec.id,
                    seq: seq as u32,
                    intended_ns: intended,
                };
                conn.wbuf.extend_from_slice(&stamp.to_bytes());
                conn.wbuf.extend_from_slice(&filler);
                seq += 1;
                made += 1;
            }
            live.add_sent(made);
        }
        conn.write_available()?;
        let done = conn.unsent() == 0 && window.in_flight() == 0;
        if !generating && (done || clock.now_ns() >= timeline.drain_end) {
            break;
        }
        // Closed loop with room to send and a socket that took everything: go again, after
        // letting the other tasks on this worker run.
        if generating && spec.schedule.is_none() && conn.unsent() == 0 && window.has_room() {
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            biased;
            ready = conn.stream.readable() => {
                ready?;
                if conn.read_available()? {
                    handle_acks(&mut conn, &mut window, &mut report)?;
                }
            }
            ready = conn.stream.writable(), if conn.unsent() > 0 => ready?,
            _ = spec.wake.notified(), if generating && spec.schedule.is_some() => {}
            _ = &mut window_end, if generating => {}
            _ = &mut drain_end, if !generating => {}
        }
    }
    report.sent = seq;
    report.window_seqs = window_first.unwrap_or(seq)..seq;
    report.unacked = window.in_flight() as u64;
    conn.close().await;
    Ok(report)
}

/// Frees the window for every PUBACK/PUBCOMP and answers every PUBREC with a PUBREL.
fn handle_acks(
    conn: &mut Conn,
    window: &mut Window,
    report: &mut PublisherReport,
) -> io::Result<()> {
    while let Some(packet) = conn.next_packet()? {
        match packet {
            Packet::PubAck(ack) | Packet::PubComp(ack) => {
                if !window.release(ack.packet_id) {
                    report.stray_acks += 1;
                } else if ack.reason_code.is_error() {
                    report.refused += 1;
                }
            }
            Packet::PubRec(ack) if ack.reason_code.is_error() => {
                report.refused += 1;
                if !window.release(ack.packet_id) {
                    report.stray_acks += 1;
                }
            }
            Packet::PubRec(ack) => conn.queue(&Packet::PubRel(Ack::new(ack.packet_id)))?,
            Packet::Disconnect(disconnect) => {
                return Err(protocol_error(format!(
                    "publisher {}: broker sent DISCONNECT {}",
                    report.id, disconnect.reason_code
                )))
            }
            _ => {}
        }
    }
    Ok(())
}
