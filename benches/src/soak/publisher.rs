//! A paced publisher that outlives the broker and knows exactly which of its messages the
//! broker acknowledged.
//!
//! Why it exists: "lost" only means something against a precise "acknowledged". A QoS 1
//! message counts as acknowledged when its PUBACK arrives, a QoS 2 message when its PUBREC does
//! (the broker's promise; PUBCOMP only ends the exchange), and nothing counts before. The
//! publisher keeps a persistent session, so when its connection breaks (the broker was killed)
//! it reconnects and, as MQTT requires of a client with a kept session, sends again every
//! message still in flight: a PUBLISH without its acknowledgement again with DUP set, the same
//! packet identifier and the same payload; a QoS 2 message whose PUBREC arrived its PUBREL.
//! Every message is therefore eventually acknowledged or still in flight when the drain ends,
//! and only those (and any the broker refused) are reported as unacknowledged. Each payload
//! carries a [`Stamp`] with the publisher's id and the message's sequence number.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use mqtt_broker::protocol::{Ack, Packet, Publish, QoS};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use super::link::{Identity, Phase};
use crate::loadgen::conn::{protocol_error, Conn};
use crate::loadgen::progress::Live;
use crate::loadgen::stamp::{self, Stamp};
use crate::loadgen::window::Window;

/// Unacknowledged messages per publisher: enough for the rate across a group commit, few
/// enough that a broker holding acknowledgements slows the publisher down quickly.
const WINDOW: usize = 64;

/// How often the publisher tops up its allowance and sends what is due.
const TICK: Duration = Duration::from_millis(10);

/// The most a publisher catches up at once after a stall, in seconds of its rate: after a
/// restart it carries on at its pace instead of flooding the broker with a backlog.
const MAX_BURST_S: f64 = 0.1;

pub struct PublisherSpec {
    pub id: u32,
    pub identity: Identity,
    pub topic: ByteString,
    pub qos: QoS,
    /// Messages per second.
    pub rate: f64,
    pub payload: usize,
    /// When, after the load, the publisher stops waiting for its last acknowledgements.
    pub gives_up_at: Instant,
}

#[derive(Debug, Clone)]
pub struct PublisherReport {
    pub id: u32,
    pub client_id: String,
    pub qos: QoS,
    /// Messages published, each counted once however often it was sent again; their sequence
    /// numbers are `0..published`.
    pub published: u64,
    /// Successful PUBACKs (QoS 1) or PUBRECs (QoS 2); 0 at QoS 0.
    pub acknowledged: u64,
    /// Sequence numbers never acknowledged: still in flight when the drain ended, or refused.
    pub unacknowledged: Vec<u64>,
    /// PUBACK or PUBREC with a failure reason code (v5).
    pub refused: u64,
    /// QoS 2 messages acknowledged by PUBREC whose PUBCOMP had not come when the drain ended.
    pub incomplete: u64,
    /// PUBLISH (with DUP) and PUBREL packets sent again after a reconnect.
    pub resent: u64,
    /// The sequence numbers of the PUBLISH packets among those, to tell a duplicate the
    /// publisher caused from one the broker did.
    pub resent_seqs: Vec<u64>,
    pub reconnects: u64,
}

/// A QoS 1/2 message the broker has not finished with.
struct InFlight {
    seq: u64,
    publish: Publish,
    /// The PUBREC arrived and the PUBREL went out (QoS 2).
    released: bool,
}

struct Publisher {
    spec: PublisherSpec,
    window: Window,
    in_flight: HashMap<u16, InFlight>,
    /// Messages that may be sent now (fractional, topped up every tick).
    allowance: f64,
    report: PublisherReport,
}

pub async fn run(
    spec: PublisherSpec,
    mut phase: watch::Receiver<Phase>,
    live: Arc<Live>,
) -> PublisherReport {
    let report = PublisherReport {
        id: spec.id,
        client_id: spec.identity.client_id.clone(),
        qos: spec.qos,
        published: 0,
        acknowledged: 0,
        unacknowledged: Vec::new(),
        refused: 0,
        incomplete: 0,
        resent: 0,
        resent_seqs: Vec::new(),
        reconnects: 0,
    };
    let mut publisher = Publisher {
        window: Window::new(WINDOW),
        in_flight: HashMap::new(),
        allowance: 0.0,
        report,
        spec,
    };
    let identity = publisher.spec.identity.clone();
    let mut first = true;
    loop {
        let finished = || publisher.finished(*phase.borrow());
        let Some(mut conn) = identity.connect(finished).await else {
            break;
        };
        if !first {
            publisher.report.reconnects += 1;
        }
        first = false;
        match publisher.serve(&mut conn, &mut phase, &live).await {
            Ok(()) => {
                conn.close().await;
                break;
            }
            // The broker went away: connect again and resend.
            Err(_) => continue,
        }
    }
    publisher.finish()
}

impl Publisher {
    /// The load is over and nothing is left to wait for (or the wait is over).
    fn finished(&self, phase: Phase) -> bool {
        phase != Phase::Load
            && (self.in_flight.is_empty() || Instant::now() >= self.spec.gives_up_at)
    }

    async fn serve(
        &mut self,
        conn: &mut Conn,
        phase: &mut watch::Receiver<Phase>,
        live: &Live,
    ) -> io::Result<()> {
        self.resend(conn)?;
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_tick = Instant::now();
        self.allowance = 0.0;
        loop {
            let current = *phase.borrow();
            if current == Phase::Load {
                let now = Instant::now();
                let burst = (self.spec.rate * MAX_BURST_S).max(1.0);
                self.allowance = (self.allowance
                    + self.spec.rate * now.duration_since(last_tick).as_secs_f64())
                .min(burst);
                last_tick = now;
                live.add_sent(self.generate(conn)?);
            }
            conn.write_available()?;
            if self.finished(current) && conn.unsent() == 0 {
                return Ok(());
            }
            tokio::select! {
                biased;
                ready = conn.stream.readable() => {
                    ready?;
                    if conn.read_available()? {
                        self.take_acks(conn)?;
                    }
                }
                ready = conn.stream.writable(), if conn.unsent() > 0 => ready?,
                _ = ticker.tick() => {}
                _ = phase.changed() => {}
            }
        }
    }

    /// Sends again what the last connection left unfinished, oldest first.
    fn resend(&mut self, conn: &mut Conn) -> io::Result<()> {
        let mut pending: Vec<(&u16, &InFlight)> = self.in_flight.iter().collect();
        pending.sort_by_key(|(_, message)| message.seq);
        for (&packet_id, message) in pending {
            if message.released {
                conn.queue(&Packet::PubRel(Ack::new(packet_id)))?;
            } else {
                let mut publish = message.publish.clone();
                publish.dup = true;
                conn.queue(&Packet::Publish(publish))?;
                self.report.resent_seqs.push(message.seq);
            }
            self.report.resent += 1;
        }
        Ok(())
    }

    /// Queues the messages that are due and fit the window; returns how many.
    fn generate(&mut self, conn: &mut Conn) -> io::Result<u64> {
        let qos0 = self.spec.qos == QoS::AtMostOnce;
        let mut made = 0;
        while self.allowance >= 1.0 {
            let packet_id = if qos0 {
                0
            } else {
                match self.window.acquire() {
                    Some(id) => id,
                    None => break,
                }
            };
            let seq = self.report.published;
            let stamp = Stamp {
                publisher: self.spec.id,
                seq: seq as u32,
                intended_ns: 0,
            };
            let publish = Publish {
                qos: self.spec.qos,
                topic: self.spec.topic.clone(),
                packet_id,
                payload: Bytes::from(stamp::stamped(stamp, self.spec.payload)),
                ..Publish::default()
            };
            conn.queue(&Packet::Publish(publish.clone()))?;
            if !qos0 {
                let message = InFlight {
                    seq,
                    publish,
                    released: false,
                };
                self.in_flight.insert(packet_id, message);
            }
            self.report.published += 1;
            self.allowance -= 1.0;
            made += 1;
        }
        Ok(made)
    }

    fn take_acks(&mut self, conn: &mut Conn) -> io::Result<()> {
        while let Some(packet) = conn.next_packet()? {
            match packet {
                Packet::PubAck(ack) | Packet::PubComp(ack) => {
                    let Some(message) = self.in_flight.remove(&ack.packet_id) else {
                        continue;
                    };
                    self.window.release(ack.packet_id);
                    // A released QoS 2 message was counted at its PUBREC.
                    if !message.released {
                        if ack.reason_code.is_error() {
                            self.refuse(message.seq);
                        } else {
                            self.report.acknowledged += 1;
                        }
                    }
                }
                Packet::PubRec(ack) => {
                    let Some(message) = self.in_flight.get_mut(&ack.packet_id) else {
                        continue;
                    };
                    if ack.reason_code.is_error() {
                        let seq = message.seq;
                        self.in_flight.remove(&ack.packet_id);
                        self.window.release(ack.packet_id);
                        self.refuse(seq);
                        continue;
                    }
                    if !message.released {
                        message.released = true;
                        self.report.acknowledged += 1;
                    }
                    conn.queue(&Packet::PubRel(Ack::new(ack.packet_id)))?;
                }
                Packet::Disconnect(disconnect) => {
                    return Err(protocol_error(format!(
                        "{}: broker sent DISCONNECT {}",
                        self.report.client_id, disconnect.reason_code
                    )))
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn refuse(&mut self, seq: u64) {
        self.report.refused += 1;
        self.report.unacknowledged.push(seq);
    }

    fn finish(mut self) -> PublisherReport {
        for message in self.in_flight.values() {
            if message.released {
                self.report.incomplete += 1;
            } else {
                self.report.unacknowledged.push(message.seq);
            }
        }
        self.report.unacknowledged.sort_unstable();
        self.report.resent_seqs.sort_unstable();
        self.report
    }
}
