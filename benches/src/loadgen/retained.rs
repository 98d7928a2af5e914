//! `--scenario retained`: how a broker serves a subscriber that one SUBSCRIBE makes owed a
//! large retained set.
//!
//! Why it exists: a `#` over many retained messages is where a broker must pace them to the
//! subscriber or drop them (ours once sent what its send buffer held and dropped the rest
//! without a word). One publisher stores `--messages` retained messages of `--payload` bytes at
//! `--qos` (0 or 1), each on its own topic under the run's prefix, and waits for the broker to
//! have handled them all (its PINGRESP follows every PUBLISH); then a fresh subscriber
//! subscribes to `#` at `--qos`, acknowledges what needs it, and counts the run's messages until
//! it has every one or nothing came for `--drain` seconds. Reported: how many arrived (each
//! once), and the time from sending SUBSCRIBE to the last of them.

use std::io;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use mqtt_broker::protocol::{Ack, Packet, Publish, QoS};

use super::conn::{protocol_error, Conn};
use super::options::{version_name, Plan};
use super::pubsub::run_id;
use super::report::RetainedSummary;
use super::window::Window;

/// The publisher stops queueing once this much waits for the socket.
const HIGH_WATER: usize = 64 * 1024;

/// The publisher's PINGRESP says the shard it talked to stored everything; a broker that keeps
/// a copy of the retained set per thread (ours: per shard, updated through its inbox) may still
/// be storing them elsewhere, where the subscriber may land. Waiting this long before the
/// subscribe keeps that out of the figures, which start at the SUBSCRIBE.
const SETTLE: Duration = Duration::from_secs(1);

pub async fn run(plan: &Plan) -> io::Result<RetainedSummary> {
    let run_id = run_id();
    let prefix = format!("mqtt-bench/{run_id}/retained");
    let started = Instant::now();
    let mut publisher = Conn::connect(plan.addr, &format!("mb-{run_id}-p"), plan.version).await?;
    store(&mut publisher, plan, &prefix).await?;
    let store_s = started.elapsed().as_secs_f64();
    eprintln!(
        "mqtt-bench: {} retained messages stored in {store_s:.3} s",
        plan.messages
    );
    tokio::time::sleep(SETTLE).await;

    let mut subscriber = Conn::connect(plan.addr, &format!("mb-{run_id}-s"), plan.version).await?;
    let arrivals = receive(&mut subscriber, plan, &prefix).await?;
    subscriber.close().await;
    publisher.close().await;
    Ok(RetainedSummary {
        label: plan.label.clone(),
        version: version_name(plan.version),
        qos: plan.qos as u8,
        payload: plan.payload,
        messages: plan.messages,
        received: arrivals.received,
        dup: arrivals.dup,
        unexpected: arrivals.unexpected,
        malformed: arrivals.malformed,
        store_s,
        suback_s: arrivals.suback.map(|at| at.as_secs_f64()),
        elapsed_s: arrivals.last.map_or(0.0, |at| at.as_secs_f64()),
    })
}

/// Publishes the retained set (QoS 1 within `--window` unacknowledged), then waits for the
/// PINGRESP that follows the broker's handling of all of it.
async fn store(conn: &mut Conn, plan: &Plan, prefix: &str) -> io::Result<()> {
    let payload = Bytes::from(vec![b'r'; plan.payload]);
    let mut window = Window::new(plan.window);
    let mut next = 0;
    loop {
        while next < plan.messages && conn.unsent() < HIGH_WATER {
            let packet_id = match plan.qos {
                QoS::AtMostOnce => 0,
                _ => match window.acquire() {
                    Some(id) => id,
                    None => break,
                },
            };
            conn.queue(&Packet::Publish(Publish {
                qos: plan.qos,
                retain: true,
                topic: ByteString::from(format!("{prefix}/{next}")),
                packet_id,
                payload: payload.clone(),
                ..Publish::default()
            }))?;
            next += 1;
        }
        conn.write_available()?;
        let in_flight = window.in_flight() > 0;
        if conn.unsent() == 0 {
            if next < plan.messages && (plan.qos == QoS::AtMostOnce || window.has_room()) {
                continue;
            }
            if !in_flight {
                break;
            }
        }
        // Something is left to write, or else the window is full and waits for acks.
        tokio::select! {
            ready = conn.stream.readable(), if in_flight => {
                ready?;
                conn.read_available()?;
                while let Some(packet) = conn.next_packet()? {
                    if let Packet::PubAck(ack) = packet {
                        window.release(ack.packet_id);
                    }
                }
            }
            ready = conn.stream.writable(), if conn.unsent() > 0 => ready?,
        }
    }
    conn.queue(&Packet::PingReq)?;
    conn.flush().await?;
    while !matches!(conn.read_packet().await?, Packet::PingResp) {}
    Ok(())
}

/// What the subscriber got, times from its SUBSCRIBE.
struct Arrivals {
    received: usize,
    dup: usize,
    /// Messages from outside the run (a broker that was not fresh).
    unexpected: usize,
    /// The run's messages without RETAIN, at another QoS or of another size.
    malformed: usize,
    suback: Option<Duration>,
    /// When the last of the run's messages that arrived did.
    last: Option<Duration>,
}

async fn receive(conn: &mut Conn, plan: &Plan, prefix: &str) -> io::Result<Arrivals> {
    let mut seen = vec![false; plan.messages];
    let mut arrivals = Arrivals {
        received: 0,
        dup: 0,
        unexpected: 0,
        malformed: 0,
        suback: None,
        last: None,
    };
    let subscribed = Instant::now();
    conn.queue_subscribe("#", plan.qos)?;
    conn.flush().await?;
    let mut quiet_until = tokio::time::Instant::now() + plan.drain;
    while arrivals.received < plan.messages {
        tokio::select! {
            ready = conn.stream.readable() => {
                ready?;
                if !conn.read_available()? {
                    continue;
                }
                quiet_until = tokio::time::Instant::now() + plan.drain;
                let before = arrivals.received;
                while let Some(packet) = conn.next_packet()? {
                    match packet {
                        Packet::SubAck(suback) => {
                            if suback.reason_codes.iter().any(|code| code.is_error()) {
                                return Err(protocol_error(format!(
                                    "SUBSCRIBE # refused: {:?}",
                                    suback.reason_codes
                                )));
                            }
                            arrivals.suback = Some(subscribed.elapsed());
                        }
                        Packet::Publish(publish) => {
                            if publish.qos == QoS::AtLeastOnce {
                                conn.queue(&Packet::PubAck(Ack::new(publish.packet_id)))?;
                            }
                            arrivals.record(&publish, plan, prefix, &mut seen);
                        }
                        _ => {}
                    }
                }
                if arrivals.received > before {
                    arrivals.last = Some(subscribed.elapsed());
                }
            }
            ready = conn.stream.writable(), if conn.unsent() > 0 => ready?,
            _ = tokio::time::sleep_until(quiet_until) => {
                eprintln!(
                    "mqtt-bench: {} of {} retained messages, then nothing for {:?}",
                    arrivals.received, plan.messages, plan.drain
                );
                break;
            }
        }
        conn.write_available()?;
    }
    Ok(arrivals)
}

impl Arrivals {
    fn record(&mut self, publish: &Publish, plan: &Plan, prefix: &str, seen: &mut [bool]) {
        let index = publish
            .topic
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('/'))
            .and_then(|rest| rest.parse::<usize>().ok())
            .filter(|&index| index < seen.len());
        let Some(index) = index else {
            self.unexpected += 1;
            return;
        };
        if seen[index] {
            self.dup += 1;
            return;
        }
        seen[index] = true;
        self.received += 1;
        if !publish.retain || publish.qos != plan.qos || publish.payload.len() != plan.payload {
            self.malformed += 1;
        }
    }
}
