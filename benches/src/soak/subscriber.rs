//! A subscriber that outlives the broker and accounts every message it is given, exactly once.
//!
//! Why it exists: the loss figure is "acknowledged to a publisher, never received here", so the
//! subscriber must keep receiving across every restart of the broker. The ones that check loss
//! keep a persistent session and subscribe only on their first connection: after a SIGKILL
//! the broker must bring back their subscriptions and queued messages from its journal, and
//! nothing here papers over it if it does not.
//!
//! QoS 2 is exactly once between two parties that both keep their state, so this client keeps
//! its side too, across reconnects: the packet identifiers whose PUBLISH it took and whose
//! PUBREL has not come yet. A broker that sends such a PUBLISH again (its PUBREC was lost with
//! the connection) is repeating the protocol exchange, not delivering twice; it is answered and
//! counted as `absorbed`. Anything else that arrives twice is a duplicate.
//!
//! A slow subscriber ([`Pace::Slow`]) acknowledges at a capped rate and, during the load,
//! stops reading altogether for a while every so often. The broker may drop messages for it
//! (the spec allows it for a subscriber that does not keep up), so it reports what it got and
//! does not count in "lost".

use std::collections::{HashMap, VecDeque};
use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mqtt_broker::protocol::{Ack, Packet, QoS};
use tokio::sync::watch;

use super::link::{Identity, Phase};
use crate::loadgen::accounting::{Arrival, Ledger};
use crate::loadgen::clock::Clock;
use crate::loadgen::conn::{protocol_error, Conn};
use crate::loadgen::progress::Live;
use crate::loadgen::stamp::Stamp;

/// How long the first connection and SUBSCRIBE may take, retries included.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a slow subscriber reads and sends its acknowledgements.
/// Duplicates described in the report, per subscriber.
const DUPLICATE_EXAMPLES: usize = 10;

const SLOW_TICK: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// Reads and acknowledges everything as it comes.
    Full,
    /// Sends at most `acks_per_s` PUBACKs a second, and during the load reads nothing for the
    /// last `stall_for` of every `stall_every`.
    Slow {
        acks_per_s: f64,
        stall_every: Duration,
        stall_for: Duration,
    },
}

pub struct SubscriberSpec {
    pub identity: Identity,
    pub filter: String,
    /// The subscription's QoS.
    pub qos: QoS,
    /// The publishers whose messages the filter matches.
    pub sources: Range<u32>,
    pub pace: Pace,
    /// Whether what it misses counts as lost.
    pub checks_loss: bool,
}

pub struct SubscriberReport {
    pub client_id: String,
    pub qos: QoS,
    pub checks_loss: bool,
    pub slow: bool,
    pub ledger: Ledger,
    /// PUBLISH packets taken as messages (duplicates included, absorbed repeats not).
    pub deliveries: u64,
    /// QoS 2 PUBLISH packets the broker repeated before their PUBREL: protocol, not delivery.
    pub absorbed: u64,
    /// QoS 2 PUBLISH packets that reused an identifier still waiting for its PUBREL with
    /// another message: the broker forgot the earlier exchange.
    pub reused_ids: u64,
    /// Payloads without a stamp.
    pub malformed: u64,
    pub reconnects: u64,
    /// The first few messages received twice, to tell a broker's repeat from a publisher's.
    pub duplicates: Vec<Duplicate>,
}

/// One message received twice: how each copy came.
#[derive(Debug, Clone)]
pub struct Duplicate {
    pub publisher: u32,
    pub seq: u32,
    /// Packet identifier and connection number (0 the first, counting reconnects) of the first
    /// copy and of this one.
    pub first: (u16, u64),
    pub again: (u16, u64),
    /// The DUP flag of this copy.
    pub dup_flag: bool,
    /// Seconds since the load started.
    pub at_s: f64,
}

/// A subscriber that has subscribed and is ready to [`Subscriber::run`].
pub struct Subscriber {
    spec: SubscriberSpec,
    conn: Option<Conn>,
    /// QoS 2 identifiers taken and not yet released, with the message each one carried.
    awaiting_pubrel: HashMap<u16, Option<(u32, u32)>>,
    /// PUBACKs a slow subscriber still owes.
    owed: VecDeque<u16>,
    /// How the first copy of each message came, by publisher (from the first source) and
    /// sequence number: its connection number and packet identifier packed by [`first_copy`].
    first_copies: Vec<Vec<u64>>,
    /// Where deliveries are counted, so the run can tell when the drain is over.
    live: Arc<Live>,
    clock: Clock,
    /// Times the slow subscriber's stalls and the duplicates; set by [`Subscriber::run`].
    load_start: Instant,
    report: SubscriberReport,
}

/// A first copy's connection number and packet identifier in one word; 0 for none yet.
fn first_copy(connection: u64, packet_id: u16) -> u64 {
    (connection + 1) << 16 | u64::from(packet_id)
}

impl Subscriber {
    /// Connects and subscribes, retrying for up to 30 s: nothing is published
    /// before every subscriber is in place, so everything acknowledged has somewhere to go.
    pub async fn subscribe(
        spec: SubscriberSpec,
        live: Arc<Live>,
        clock: Clock,
    ) -> io::Result<Subscriber> {
        let deadline = Instant::now() + SETUP_TIMEOUT;
        let conn = loop {
            let Some(mut conn) = spec.identity.connect(|| Instant::now() >= deadline).await else {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} could not subscribe within {SETUP_TIMEOUT:?}",
                        spec.identity.client_id
                    ),
                ));
            };
            if conn.subscribe(&spec.filter, spec.qos).await.is_ok() {
                break conn;
            }
        };
        let report = SubscriberReport {
            client_id: spec.identity.client_id.clone(),
            qos: spec.qos,
            checks_loss: spec.checks_loss,
            slow: matches!(spec.pace, Pace::Slow { .. }),
            ledger: Ledger::new(spec.sources.clone()),
            deliveries: 0,
            absorbed: 0,
            reused_ids: 0,
            malformed: 0,
            reconnects: 0,
            duplicates: Vec::new(),
        };
        Ok(Subscriber {
            first_copies: vec![Vec::new(); spec.sources.len()],
            spec,
            conn: Some(conn),
            awaiting_pubrel: HashMap::new(),
            owed: VecDeque::new(),
            live,
            clock,
            load_start: Instant::now(),
            report,
        })
    }

    /// Receives until the phase is [`Phase::Done`].
    pub async fn run(
        mut self,
        mut phase: watch::Receiver<Phase>,
        load_start: Instant,
    ) -> SubscriberReport {
        self.load_start = load_start;
        loop {
            let mut conn = match self.conn.take() {
                Some(conn) => conn,
                None => {
                    let done = || *phase.borrow() == Phase::Done;
                    let Some(mut conn) = self.spec.identity.connect(done).await else {
                        break;
                    };
                    self.report.reconnects += 1;
                    // Acknowledgements owed on the old connection are void: the broker sends
                    // those messages again.
                    self.owed.clear();
                    if !self.spec.identity.persistent
                        && conn
                            .subscribe(&self.spec.filter, self.spec.qos)
                            .await
                            .is_err()
                    {
                        continue;
                    }
                    conn
                }
            };
            let served = match self.spec.pace {
                Pace::Full => self.serve(&mut conn, &mut phase).await,
                Pace::Slow { .. } => self.serve_slowly(&mut conn, &mut phase).await,
            };
            if served.is_ok() {
                conn.close().await;
                break;
            }
        }
        self.report
    }

    async fn serve(
        &mut self,
        conn: &mut Conn,
        phase: &mut watch::Receiver<Phase>,
    ) -> io::Result<()> {
        loop {
            tokio::select! {
                biased;
                _ = phase.wait_for(|phase| *phase == Phase::Done) => return Ok(()),
                ready = conn.stream.readable() => {
                    ready?;
                    if conn.read_available()? {
                        self.take(conn)?;
                    }
                }
                ready = conn.stream.writable(), if conn.unsent() > 0 => ready?,
            }
            conn.write_available()?;
        }
    }

    async fn serve_slowly(
        &mut self,
        conn: &mut Conn,
        phase: &mut watch::Receiver<Phase>,
    ) -> io::Result<()> {
        let Pace::Slow {
            acks_per_s,
            stall_every,
            stall_for,
        } = self.spec.pace
        else {
            unreachable!("serve_slowly is for Pace::Slow");
        };
        let budget = (acks_per_s * SLOW_TICK.as_secs_f64()).max(1.0) as usize;
        let mut ticker = tokio::time::interval(SLOW_TICK);
        loop {
            tokio::select! {
                biased;
                _ = phase.wait_for(|phase| *phase == Phase::Done) => return Ok(()),
                _ = ticker.tick() => {}
                ready = conn.stream.writable(), if conn.unsent() > 0 => ready?,
            }
            let into_cycle = self.load_start.elapsed().as_nanos() % stall_every.as_nanos();
            let stalled = *phase.borrow() == Phase::Load
                && into_cycle >= (stall_every - stall_for).as_nanos();
            if !stalled {
                conn.read_available()?;
                self.take(conn)?;
                for packet_id in self.owed.drain(..budget.min(self.owed.len())) {
                    conn.queue(&Packet::PubAck(Ack::new(packet_id)))?;
                }
            }
            conn.write_available()?;
        }
    }

    /// Accounts and answers every whole packet received.
    fn take(&mut self, conn: &mut Conn) -> io::Result<()> {
        let mut taken = 0;
        while let Some(packet) = conn.next_packet()? {
            match packet {
                Packet::Publish(publish) => {
                    let stamp = Stamp::parse(&publish.payload);
                    let is_new = match publish.qos {
                        QoS::AtMostOnce => true,
                        QoS::AtLeastOnce => {
                            if matches!(self.spec.pace, Pace::Slow { .. }) {
                                self.owed.push_back(publish.packet_id);
                            } else {
                                conn.queue(&Packet::PubAck(Ack::new(publish.packet_id)))?;
                            }
                            true
                        }
                        QoS::ExactlyOnce => {
                            conn.queue(&Packet::PubRec(Ack::new(publish.packet_id)))?;
                            self.take_exactly_once(publish.packet_id, stamp)
                        }
                    };
                    if is_new {
                        taken += 1;
                        self.account(stamp, publish.packet_id, publish.dup);
                    }
                }
                Packet::PubRel(ack) => {
                    self.awaiting_pubrel.remove(&ack.packet_id);
                    conn.queue(&Packet::PubComp(Ack::new(ack.packet_id)))?;
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
        if taken > 0 {
            self.live.add_delivered(taken, self.clock.now_ns());
        }
        Ok(())
    }

    fn account(&mut self, stamp: Option<Stamp>, packet_id: u16, dup_flag: bool) {
        self.report.deliveries += 1;
        let Some(stamp) = stamp else {
            self.report.malformed += 1;
            return;
        };
        let arrival = self
            .report
            .ledger
            .record(stamp.publisher, stamp.seq.into(), true);
        let Some(copies) = stamp
            .publisher
            .checked_sub(self.spec.sources.start)
            .and_then(|index| self.first_copies.get_mut(index as usize))
        else {
            return;
        };
        let seq = stamp.seq as usize;
        if copies.len() <= seq {
            copies.resize(seq + 1, 0);
        }
        let connection = self.report.reconnects;
        match arrival {
            // Every QoS 2 one is kept: the outcome tells them apart by how they came.
            Some(Arrival::Duplicate)
                if self.spec.qos == QoS::ExactlyOnce
                    || self.report.duplicates.len() < DUPLICATE_EXAMPLES =>
            {
                let first = copies[seq];
                self.report.duplicates.push(Duplicate {
                    publisher: stamp.publisher,
                    seq: stamp.seq,
                    first: (first as u16, (first >> 16).saturating_sub(1)),
                    again: (packet_id, connection),
                    dup_flag,
                    at_s: self.load_start.elapsed().as_secs_f64(),
                });
            }
            Some(Arrival::Duplicate) => {}
            _ => copies[seq] = first_copy(connection, packet_id),
        }
    }

    /// Whether a QoS 2 PUBLISH is a message to account (rather than a repeat of one whose
    /// PUBREL has not come).
    fn take_exactly_once(&mut self, packet_id: u16, stamp: Option<Stamp>) -> bool {
        let message = stamp.map(|stamp| (stamp.publisher, stamp.seq));
        match self.awaiting_pubrel.insert(packet_id, message) {
            Some(earlier) if earlier == message => {
                self.report.absorbed += 1;
                false
            }
            Some(_) => {
                self.report.reused_ids += 1;
                true
            }
            None => true,
        }
    }
}
