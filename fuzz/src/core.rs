//! The broker-core fuzz oracle. The cargo-fuzz target `core` calls [`run`], and the root crate's
//! `tests/fuzz_seeds.rs` includes this file as a module to replay the committed corpus through
//! the very same checks on stable. It must therefore depend only on `mqtt_broker` (with its `sim`
//! feature), `bytes` and `arbitrary`, and have no inner attributes.
//!
//! The input is a [`Scenario`]: a broker configuration and a sequence of steps for six clients on
//! a simulated broker of one to three shards (`mqtt_broker::broker::sim`): connects and
//! takeovers, subscriptions, publishes at every QoS, acknowledgements sent late or never, valid
//! packets with a byte changed, raw bytes, disconnects and dropped connections, clients that
//! stop reading, clock jumps, journals that lag, batches between shards delivered out of step,
//! and crashes that restart from what was durable.
//!
//! Client 0 is the *witness*: a persistent session subscribed to `#` at QoS 2 that only ever
//! behaves (it may stall, lag its acknowledgements, drop its connection and come back). Every
//! QoS 1/2 message the broker acknowledged to a publisher after the witness subscribed must
//! reach it: checked once the scenario ends and everything has settled.
//!
//! Checks, besides "never panics":
//! - everything the broker sends decodes for the client's version (in the simulation);
//! - an acknowledgement names a packet the client has outstanding;
//! - the witness never gets a QoS 2 message twice, unless its publisher was still waiting for
//!   the PUBREC when the broker crashed;
//! - after settling, every acknowledged message reached the witness, except as many as the
//!   broker counted as dropped (full queues, expiry, too large);
//! - once every client has ended its session, no shard holds connections, sessions,
//!   subscriptions, output or held acknowledgements: state is bounded by what clients hold.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::num::NonZeroU16;
use std::time::Duration;

use arbitrary::Arbitrary;
use bytes::{Bytes, BytesMut};
use mqtt_broker::broker::sim::{Sim, Source};
use mqtt_broker::broker::{Config, ConnId};
use mqtt_broker::protocol::{
    Ack, Connect, ConnectProperties, Disconnect, LastWill, Packet, ProtocolVersion, Publish, QoS,
    ReasonCode, Subscribe, SubscriptionOptions, Unsubscribe,
};

const CLIENTS: usize = 6;
const WITNESS: usize = 0;
/// Topics publishes and wills go to; `#` matches all but the `$SYS` one, which clients may not
/// publish to.
const TOPICS: &[&str] = &["a", "a/b", "a/b/c", "b", "$SYS/x", "a/", "/a"];
const FILTERS: &[&str] = &["a", "a/+", "a/#", "+/b", "#", "b", "+", "/+"];
const SHARE_GROUPS: &[&str] = &["g", "h"];
/// Steps of one input at most: longer ones explore no more, only slower.
const MAX_STEPS: usize = 256;
/// Long enough that no clock jump of a scenario ends the witness's session.
const WITNESS_EXPIRY: u32 = u32::MAX;

/// Upper bound on the rounds of [`Oracle::settle`].
const SETTLE_ROUNDS: usize = 100_000;

/// One fuzz input.
#[derive(Arbitrary, Debug)]
pub struct Scenario {
    shards: u8,
    knobs: Knobs,
    steps: Vec<Step>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
struct Knobs {
    persistence: bool,
    /// `--fsync always`: acknowledgements wait until their records are durable.
    durable_acks: bool,
    /// Journals report durability only when a step says so.
    lagging_journal: bool,
    /// Batches between shards wait for a step that delivers them.
    lagging_mail: bool,
    /// Tiny queues, in-flight windows and send buffers, so that limits are hit.
    small_limits: bool,
}

#[derive(Arbitrary, Debug)]
enum Step {
    /// Client `client` (modulo six) acts.
    Client {
        client: u8,
        action: Action,
    },
    /// Moves the clock by `centis` hundredths of a second.
    Advance {
        centis: u16,
    },
    /// Reports a shard's journal durable up to `back` records short of its end.
    Persist {
        shard: u8,
        back: u8,
    },
    DeliverMail {
        pick: u8,
    },
    /// kill -9 and a restart `downtime` seconds later.
    Crash {
        downtime: u8,
    },
}

#[derive(Arbitrary, Debug)]
enum Action {
    Connect {
        version: u8,
        clean_start: bool,
        session_expiry: u8,
        keep_alive: u8,
        will: Option<Will>,
    },
    Subscribe {
        filter: u8,
        qos: u8,
        no_local: bool,
        shared: Option<u8>,
    },
    Unsubscribe {
        filter: u8,
        shared: Option<u8>,
    },
    Publish {
        topic: u8,
        qos: u8,
        retain: bool,
        size: u8,
    },
    /// Sends up to `count` of the acknowledgements it owes, oldest first.
    Respond {
        count: u8,
    },
    Ping,
    /// A valid packet with one byte replaced, or cut short.
    Corrupt {
        kind: u8,
        at: u16,
        byte: u8,
        truncate: bool,
    },
    Raw {
        bytes: Vec<u8>,
    },
    Disconnect {
        with_will: bool,
        end_session: bool,
    },
    DropConnection,
    Stall,
    Unstall,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
struct Will {
    topic: u8,
    qos: u8,
    retain: bool,
    delay: u8,
}

/// A QoS 1/2 message a client published and has not seen completed.
#[derive(Debug, Clone)]
struct Outgoing {
    publish: Publish,
    /// The ledger number in its payload.
    number: u64,
    /// PUBREC arrived: only PUBREL is left to send.
    received: bool,
}

#[derive(Default)]
struct Client {
    conn: Option<ConnId>,
    version: Option<ProtocolVersion>,
    /// CONNACK arrived on `conn`.
    connected: bool,
    /// What it owes the broker on `conn` (PUBACK, PUBREC, PUBCOMP), oldest first.
    owed: VecDeque<Packet>,
    outgoing: HashMap<u16, Outgoing>,
    /// Outgoing messages to send again once a CONNACK says the session is still there.
    resend_on_connack: bool,
    next_packet_id: u16,
    /// It sent bytes the oracle did not build on `conn`: its acknowledgements prove nothing.
    untrusted: bool,
    /// QoS 2 messages it received and acknowledged with PUBREC, until PUBREL: a PUBLISH with one
    /// of these ids is a resend, not a second message.
    awaiting_release: HashSet<u16>,
}

impl Client {
    fn live_conn(&self, sim: &Sim) -> Option<ConnId> {
        self.conn.filter(|&conn| !sim.is_closed(conn))
    }

    fn take_packet_id(&mut self) -> u16 {
        loop {
            self.next_packet_id = self.next_packet_id.wrapping_add(1).max(1);
            if !self.outgoing.contains_key(&self.next_packet_id) {
                return self.next_packet_id;
            }
        }
    }
}

struct Oracle {
    sim: Sim,
    knobs: Knobs,
    shard_count: usize,
    clients: Vec<Client>,
    next_number: u64,
    /// Messages numbered from here on were published after the witness subscribed.
    witness_from: Option<u64>,
    /// The witness's SUBACK arrived, but other shards may not know its subscription yet: a
    /// publish there now is not its to get, as nothing orders it after the subscription.
    witness_subscribing: bool,
    /// Messages the broker acknowledged to their publisher that the witness must get.
    promised: BTreeSet<u64>,
    witnessed: HashSet<u64>,
    /// QoS 2 messages the witness got.
    witnessed_exactly_once: HashSet<u64>,
    /// Messages in flight from their publisher, not yet acknowledged, when the broker crashed.
    /// The broker forwards a QoS 2 message before its PUBREC; a crash in between can forget
    /// that it did, and the publisher rightly sends it again, so these may arrive twice.
    /// Exactly once holds for every other message.
    unacknowledged_at_a_crash: HashSet<u64>,
    /// Drops counted by brokers that a crash replaced.
    dropped_before_crashes: u64,
    /// Print every packet a client receives.
    trace: bool,
}

/// What one input exercised, so that a replay of the seeds can tell it checked something.
#[derive(Debug, Default, Clone, Copy)]
pub struct Exercised {
    pub steps: usize,
    /// Acknowledged messages the witness had to get.
    pub promised: usize,
    pub crashes: usize,
}

/// Runs one fuzz input through every check above; panics on a violation.
pub fn run(data: &[u8]) -> Exercised {
    let Ok(scenario) = arbitrary::Unstructured::new(data).arbitrary::<Scenario>() else {
        return Exercised::default();
    };
    // To see what a failing input does: MQTT_FUZZ_TRACE=1 cargo fuzz run core <input>.
    let trace = std::env::var_os("MQTT_FUZZ_TRACE").is_some();
    if trace {
        eprintln!("{} shards, {:?}", 1 + scenario.shards % 3, scenario.knobs);
    }
    let mut oracle = Oracle::new(&scenario);
    oracle.trace = trace;
    let steps = &scenario.steps[..scenario.steps.len().min(MAX_STEPS)];
    for step in steps {
        if trace {
            eprintln!("step {step:?}");
        }
        oracle.step(step);
        oracle.read_inboxes();
    }
    oracle.settle();
    oracle.check_promises();
    oracle.end_every_session();
    let leftovers = oracle.sim.leftovers();
    assert!(
        leftovers.is_empty(),
        "state left after every session ended: {leftovers:?}"
    );
    Exercised {
        steps: steps.len(),
        promised: oracle.promised.len(),
        crashes: steps
            .iter()
            .filter(|step| matches!(step, Step::Crash { .. }))
            .count(),
    }
}

fn config(knobs: Knobs) -> Config {
    let mut config = Config {
        persistence: knobs.persistence,
        ack_after_durable: knobs.persistence && knobs.durable_acks,
        // 3.x clients have no expiry of their own: keep theirs as long as the witness's.
        session_expiry: WITNESS_EXPIRY,
        ..Config::default()
    };
    if knobs.small_limits {
        config.max_inflight = 2;
        config.max_queued_messages = 3;
        config.max_queued_bytes = 256;
        config.max_outbound_buffer = 512;
        config.buffer_budget = 2048;
        config.receive_maximum = 2;
    }
    config
}

fn qos(value: u8) -> QoS {
    QoS::from_u8(value % 3).expect("0 to 2")
}

fn version(value: u8) -> ProtocolVersion {
    match value % 3 {
        0 => ProtocolVersion::V3_1,
        1 => ProtocolVersion::V3_1_1,
        _ => ProtocolVersion::V5,
    }
}

fn pick<'a>(list: &[&'a str], index: u8) -> &'a str {
    list[usize::from(index) % list.len()]
}

fn filter(index: u8, shared: Option<u8>) -> String {
    let filter = pick(FILTERS, index);
    match shared {
        Some(group) => format!("$share/{}/{filter}", pick(SHARE_GROUPS, group)),
        None => filter.to_owned(),
    }
}

fn client_id(client: usize) -> String {
    format!("client-{client}")
}

/// The ledger number a payload carries, if it is one of the oracle's.
fn number_in(payload: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(payload).ok()?;
    text.strip_prefix('m')?.split(':').next()?.parse().ok()
}

impl Oracle {
    fn new(scenario: &Scenario) -> Oracle {
        let shard_count = 1 + usize::from(scenario.shards % 3);
        let mut sim = Sim::with_config(shard_count, config(scenario.knobs));
        sim.auto_persist = !scenario.knobs.lagging_journal;
        sim.hold_mail = scenario.knobs.lagging_mail;
        Oracle {
            sim,
            knobs: scenario.knobs,
            shard_count,
            clients: (0..CLIENTS).map(|_| Client::default()).collect(),
            next_number: 0,
            witness_from: None,
            witness_subscribing: false,
            promised: BTreeSet::new(),
            witnessed: HashSet::new(),
            witnessed_exactly_once: HashSet::new(),
            unacknowledged_at_a_crash: HashSet::new(),
            dropped_before_crashes: 0,
            trace: false,
        }
    }

    fn step(&mut self, step: &Step) {
        match *step {
            Step::Client { client, ref action } => self.act(usize::from(client) % CLIENTS, action),
            Step::Advance { centis } => {
                self.sim
                    .advance(Duration::from_millis(u64::from(centis) * 10));
            }
            Step::Persist { shard, back } => {
                let shard = usize::from(shard) % self.shard_count;
                let journal = &self.sim.journals[shard];
                let keep = journal.len().saturating_sub(usize::from(back));
                if let Some(&(seq, _)) = keep.checked_sub(1).and_then(|last| journal.get(last)) {
                    self.sim.persist_up_to(shard, seq);
                }
            }
            Step::DeliverMail { pick } => {
                self.sim.deliver_mail(usize::from(pick));
            }
            Step::Crash { downtime } => self.crash(u64::from(downtime)),
        }
    }

    fn act(&mut self, client: usize, action: &Action) {
        if let Action::Connect {
            version: v,
            clean_start,
            session_expiry,
            keep_alive,
            will,
        } = *action
        {
            return self.connect(
                client,
                version(v),
                clean_start,
                session_expiry,
                keep_alive,
                will,
            );
        }
        // Everything else needs a connection.
        let Some(conn) = self.clients[client].live_conn(&self.sim) else {
            return;
        };
        let witness = client == WITNESS;
        match *action {
            Action::Connect { .. } => unreachable!("handled above"),
            // The witness's subscription is its own business.
            Action::Subscribe { .. } | Action::Unsubscribe { .. } if witness => {}
            Action::Subscribe {
                filter: f,
                qos: q,
                no_local,
                shared,
            } => {
                let options = SubscriptionOptions {
                    qos: qos(q),
                    no_local: no_local && shared.is_none(),
                    ..SubscriptionOptions::default()
                };
                let subscribe = Subscribe {
                    packet_id: 1,
                    filters: vec![(filter(f, shared).into(), options)],
                    ..Subscribe::default()
                };
                self.sim.send(conn, Packet::Subscribe(subscribe));
            }
            Action::Unsubscribe { filter: f, shared } => {
                let unsubscribe = Unsubscribe {
                    packet_id: 2,
                    filters: vec![filter(f, shared).into()],
                    ..Unsubscribe::default()
                };
                self.sim.send(conn, Packet::Unsubscribe(unsubscribe));
            }
            Action::Publish {
                topic,
                qos: q,
                retain,
                size,
            } => self.publish(client, conn, pick(TOPICS, topic), qos(q), retain, size),
            Action::Respond { count } => self.respond(client, conn, count),
            Action::Ping => self.sim.send(conn, Packet::PingReq),
            // The witness only ever behaves.
            Action::Corrupt { .. } | Action::Raw { .. } if witness => {}
            Action::Corrupt {
                kind,
                at,
                byte,
                truncate,
            } => self.corrupt(client, conn, kind, at, byte, truncate),
            Action::Raw { ref bytes } => self.send_raw(client, conn, bytes),
            Action::Disconnect {
                with_will,
                end_session,
            } => self.disconnect(client, conn, with_will && !witness, end_session && !witness),
            Action::DropConnection => self.sim.drop_connection(conn),
            Action::Stall => self.sim.stall(conn),
            Action::Unstall => self.sim.unstall(conn),
        }
    }

    fn connect(
        &mut self,
        client: usize,
        version: ProtocolVersion,
        clean_start: bool,
        session_expiry: u8,
        keep_alive: u8,
        will: Option<Will>,
    ) {
        let witness = client == WITNESS;
        // The witness keeps its session whatever the step asks; a clean start would end it.
        let clean_start = clean_start && !witness;
        let mut properties = ConnectProperties::default();
        if version.is_v5() {
            properties.session_expiry_interval = Some(if witness {
                WITNESS_EXPIRY
            } else {
                u32::from(session_expiry % 8)
            });
            if self.knobs.small_limits {
                properties.receive_maximum = NonZeroU16::new(2);
            }
        }
        let will = will.map(|will| {
            let mut last_will = LastWill {
                topic: pick(TOPICS, will.topic).into(),
                payload: Bytes::from_static(b"will"),
                qos: qos(will.qos),
                retain: will.retain,
                properties: Default::default(),
            };
            if version.is_v5() {
                last_will.properties.will_delay_interval = Some(u32::from(will.delay % 4));
            }
            last_will
        });
        let connect = Connect {
            protocol: version,
            clean_start,
            keep_alive: [0, 1, 5, 60][usize::from(keep_alive % 4)],
            client_id: client_id(client).into(),
            will,
            username: None,
            password: None,
            properties,
        };
        let conn = self.sim.open(version);
        let state = &mut self.clients[client];
        state.conn = Some(conn);
        state.version = Some(version);
        state.connected = false;
        state.owed.clear();
        state.untrusted = false;
        state.resend_on_connack = !clean_start;
        self.sim.send(conn, Packet::Connect(Box::new(connect)));
    }

    fn publish(
        &mut self,
        client: usize,
        conn: ConnId,
        topic: &str,
        qos: QoS,
        retain: bool,
        size: u8,
    ) {
        // The witness keeps to the broker's Receive Maximum (announced to 5.0 clients, applied
        // to all): one QoS 2 publish too many and the broker rightly closes its connection, and
        // its resends on every reconnect would do the same again.
        let open_qos2 = |client: &Client| {
            let qos2 = |outgoing: &&Outgoing| outgoing.publish.qos == QoS::ExactlyOnce;
            client.outgoing.values().filter(qos2).count()
        };
        let receive_maximum = usize::from(config(self.knobs).receive_maximum);
        let witness_qos2 = client == WITNESS && qos == QoS::ExactlyOnce;
        if witness_qos2 && open_qos2(&self.clients[client]) >= receive_maximum {
            return;
        }
        let number = self.next_number;
        self.next_number += 1;
        // Numbered, and padded so that some messages outgrow small queues and buffers.
        let mut payload = format!("m{number}:").into_bytes();
        payload.resize(payload.len() + usize::from(size) * 4, b'.');
        let state = &mut self.clients[client];
        let packet_id = match qos {
            QoS::AtMostOnce => 0,
            _ => state.take_packet_id(),
        };
        let publish = Publish {
            qos,
            retain,
            topic: topic.into(),
            packet_id,
            payload: Bytes::from(payload),
            ..Publish::default()
        };
        if qos != QoS::AtMostOnce {
            state.outgoing.insert(
                packet_id,
                Outgoing {
                    publish: publish.clone(),
                    number,
                    received: false,
                },
            );
        }
        if self.trace {
            eprintln!("  client {client} publishes m{number} as packet {packet_id} qos {qos:?} to {topic} retain {retain}");
        }
        self.sim.send(conn, Packet::Publish(publish));
    }

    fn respond(&mut self, client: usize, conn: ConnId, count: u8) {
        for _ in 0..count.max(1) {
            let Some(packet) = self.clients[client].owed.pop_front() else {
                return;
            };
            if self.sim.is_closed(conn) {
                return;
            }
            self.sim.send(conn, packet);
        }
    }

    fn corrupt(
        &mut self,
        client: usize,
        conn: ConnId,
        kind: u8,
        at: u16,
        byte: u8,
        truncate: bool,
    ) {
        let Some(version) = self.clients[client].version else {
            return;
        };
        let packet = match kind % 6 {
            0 => Packet::Publish(Publish {
                qos: QoS::AtLeastOnce,
                topic: "a/b".into(),
                packet_id: 9,
                payload: Bytes::from_static(b"corrupt"),
                ..Publish::default()
            }),
            1 => Packet::Subscribe(Subscribe {
                packet_id: 3,
                filters: vec![("a/+".into(), SubscriptionOptions::default())],
                ..Subscribe::default()
            }),
            2 => Packet::Unsubscribe(Unsubscribe {
                packet_id: 4,
                filters: vec!["a/+".into()],
                ..Unsubscribe::default()
            }),
            3 => Packet::PubRel(Ack::new(1)),
            4 => Packet::Disconnect(Box::default()),
            _ => Packet::Connect(Box::new(Connect {
                protocol: version,
                clean_start: true,
                keep_alive: 5,
                client_id: client_id(client).into(),
                will: None,
                username: None,
                password: None,
                properties: ConnectProperties::default(),
            })),
        };
        let mut bytes = BytesMut::new();
        packet
            .encode(version, &mut bytes)
            .expect("the oracle's packets encode");
        let at = usize::from(at) % bytes.len();
        if truncate {
            bytes.truncate(at);
        } else {
            bytes[at] = byte;
        }
        self.send_raw(client, conn, &bytes);
    }

    fn send_raw(&mut self, client: usize, conn: ConnId, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let state = &mut self.clients[client];
        state.untrusted = true;
        state.outgoing.clear();
        self.sim.send_bytes(conn, bytes);
    }

    fn disconnect(&mut self, client: usize, conn: ConnId, with_will: bool, end_session: bool) {
        let mut disconnect = Disconnect::default();
        if self.clients[client].version == Some(ProtocolVersion::V5) {
            if with_will {
                disconnect.reason_code = ReasonCode::DISCONNECT_WITH_WILL_MESSAGE;
            }
            if end_session {
                disconnect.properties.session_expiry_interval = Some(0);
            }
        }
        self.sim
            .send(conn, Packet::Disconnect(Box::new(disconnect)));
    }

    /// kill -9: the broker restarts from what its journals kept, and every client connects
    /// anew when a later step says so.
    fn crash(&mut self, downtime: u64) {
        let in_flight = self
            .clients
            .iter()
            .flat_map(|client| client.outgoing.values());
        self.unacknowledged_at_a_crash.extend(
            in_flight
                .filter(|outgoing| !outgoing.received)
                .map(|outgoing| outgoing.number),
        );
        self.dropped_before_crashes += self.dropped();
        let source = if !self.knobs.persistence {
            None
        } else if self.knobs.durable_acks {
            Some(Source::DurableJournals)
        } else {
            // Without `--fsync always` an acknowledgement waits neither for the journal nor for
            // the other shards to take the message in: the batches between shards and the
            // records not yet written at the instant of kill -9 are the window this mode
            // accepts. The oracle crashes just after that window: the shards have exchanged
            // their batches, and what they wrote survives in the page cache.
            self.sim.release_mail();
            Some(Source::Journals)
        };
        let downtime = Duration::from_secs(downtime);
        self.sim = match source {
            Some(source) => self.sim.restart(self.shard_count, downtime, source),
            None => {
                // Nothing survives: neither the witness's subscription nor any promise.
                self.witness_from = None;
                self.witness_subscribing = false;
                self.promised.clear();
                for client in &mut self.clients {
                    client.outgoing.clear();
                    client.awaiting_release.clear();
                }
                let mut sim = Sim::with_config(self.shard_count, config(self.knobs));
                sim.auto_persist = self.sim.auto_persist;
                sim.hold_mail = self.sim.hold_mail;
                sim
            }
        };
        for client in &mut self.clients {
            client.conn = None;
            client.connected = false;
            client.owed.clear();
        }
    }

    /// Drops the broker counted, on every shard since the last crash.
    fn dropped(&self) -> u64 {
        self.sim
            .shards
            .iter()
            .map(|shard| {
                let stats = shard.stats();
                stats.queue_full_dropped + stats.expired_dropped + stats.too_large_dropped
            })
            .sum()
    }

    /// Takes what every client received and answers it as an MQTT client would.
    fn read_inboxes(&mut self) {
        self.read_packets();
        if self.witness_subscribing && self.sim.mail_in_flight() == 0 {
            self.witness_subscribing = false;
            self.witness_from = Some(self.next_number);
        }
    }

    fn read_packets(&mut self) {
        for client in 0..CLIENTS {
            let Some(conn) = self.clients[client].conn else {
                continue;
            };
            for packet in self.sim.recv_all(conn) {
                self.receive(client, conn, packet);
            }
        }
    }

    fn receive(&mut self, client: usize, conn: ConnId, packet: Packet) {
        if self.trace {
            eprintln!("  client {client} on {conn:?} got {packet:?}");
        }
        let witness = client == WITNESS;
        match packet {
            Packet::ConnAck(connack) => {
                if connack.reason_code.is_error() {
                    return;
                }
                let state = &mut self.clients[client];
                state.connected = true;
                // MQTT 3.1 has no session-present flag. Only the witness knows its session is
                // kept (it never starts clean, and a crash that loses it resets the oracle);
                // other 3.1 clients assume a new one, and send nothing again into it.
                let session_present = connack.session_present
                    || (state.version == Some(ProtocolVersion::V3_1) && witness);
                let resend = std::mem::take(&mut state.resend_on_connack);
                if !session_present {
                    state.outgoing.clear();
                    state.awaiting_release.clear();
                }
                if witness && (!session_present || self.witness_from.is_none()) {
                    self.subscribe_witness(conn);
                }
                if session_present && resend {
                    self.resend(client, conn);
                }
            }
            Packet::SubAck(suback) if witness => {
                let granted = suback
                    .reason_codes
                    .first()
                    .is_some_and(|code| !code.is_error());
                self.witness_subscribing |= granted && self.witness_from.is_none();
            }
            Packet::PubAck(ack) => {
                if let Some(outgoing) = self.acknowledged(client, ack.packet_id) {
                    self.clients[client].outgoing.remove(&ack.packet_id);
                    self.promise(&outgoing, ack.reason_code);
                }
            }
            Packet::PubRec(ack) => {
                if let Some(outgoing) = self.acknowledged(client, ack.packet_id) {
                    if !ack.reason_code.is_error() {
                        let state = &mut self.clients[client];
                        if let Some(entry) = state.outgoing.get_mut(&ack.packet_id) {
                            entry.received = true;
                        }
                        state
                            .owed
                            .push_back(Packet::PubRel(Ack::new(ack.packet_id)));
                    } else {
                        self.clients[client].outgoing.remove(&ack.packet_id);
                    }
                    self.promise(&outgoing, ack.reason_code);
                }
            }
            Packet::PubComp(ack) if !self.clients[client].untrusted => {
                let outgoing = self.clients[client].outgoing.remove(&ack.packet_id);
                assert!(
                    outgoing.is_some_and(|outgoing| outgoing.received),
                    "client {client}: PUBCOMP for {} it did not release",
                    ack.packet_id
                );
            }
            Packet::Publish(publish) => self.deliver(client, publish),
            Packet::PubRel(ack) => {
                let state = &mut self.clients[client];
                state.awaiting_release.remove(&ack.packet_id);
                state
                    .owed
                    .push_back(Packet::PubComp(Ack::new(ack.packet_id)));
            }
            _ => {}
        }
    }

    /// The outgoing message an acknowledgement for `packet_id` completes, checking that the
    /// client has it outstanding; `None` when the client's word cannot be trusted.
    fn acknowledged(&self, client: usize, packet_id: u16) -> Option<Outgoing> {
        let state = &self.clients[client];
        if state.untrusted {
            return None;
        }
        let outgoing = state.outgoing.get(&packet_id);
        assert!(
            outgoing.is_some(),
            "client {client}: acknowledgement for packet {packet_id}, which it has not outstanding"
        );
        outgoing.cloned()
    }

    /// Records what an acknowledgement promised: the witness must get the message.
    fn promise(&mut self, outgoing: &Outgoing, reason: ReasonCode) {
        let after_witness = self
            .witness_from
            .is_some_and(|from| outgoing.number >= from);
        if reason.is_error() {
            return;
        }
        if after_witness && !outgoing.publish.topic.starts_with('$') {
            self.promised.insert(outgoing.number);
        }
    }

    fn deliver(&mut self, client: usize, publish: Publish) {
        let state = &mut self.clients[client];
        match publish.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => state
                .owed
                .push_back(Packet::PubAck(Ack::new(publish.packet_id))),
            QoS::ExactlyOnce => state
                .owed
                .push_back(Packet::PubRec(Ack::new(publish.packet_id))),
        }
        if client != WITNESS {
            return;
        }
        let Some(number) = number_in(&publish.payload) else {
            return;
        };
        // A retained copy sent for a new subscription is a delivery of its own.
        let counted_once = publish.qos == QoS::ExactlyOnce && !publish.retain;
        if counted_once && state.awaiting_release.insert(publish.packet_id) {
            assert!(
                self.witnessed_exactly_once.insert(number)
                    || self.unacknowledged_at_a_crash.contains(&number),
                "the witness got QoS 2 message {number} twice"
            );
        }
        self.witnessed.insert(number);
    }

    fn subscribe_witness(&mut self, conn: ConnId) {
        let options = SubscriptionOptions {
            qos: QoS::ExactlyOnce,
            ..SubscriptionOptions::default()
        };
        let subscribe = Subscribe {
            packet_id: 1,
            filters: vec![("#".into(), options)],
            ..Subscribe::default()
        };
        self.sim.send(conn, Packet::Subscribe(subscribe));
    }

    /// After a CONNACK that kept the session: what the client had not seen completed goes
    /// again, PUBLISH with DUP or PUBREL (§4.4).
    fn resend(&mut self, client: usize, conn: ConnId) {
        let mut pending: Vec<Outgoing> = self.clients[client].outgoing.values().cloned().collect();
        pending.sort_by_key(|outgoing| outgoing.number);
        for outgoing in pending {
            if self.sim.is_closed(conn) {
                return;
            }
            let packet = if outgoing.received {
                Packet::PubRel(Ack::new(outgoing.publish.packet_id))
            } else {
                let mut publish = outgoing.publish;
                publish.dup = true;
                Packet::Publish(publish)
            };
            self.sim.send(conn, packet);
        }
    }

    /// Lets everything finish: batches and journals catch up, clients read and acknowledge,
    /// and the witness comes back if it is away.
    fn settle(&mut self) {
        self.sim.release_mail();
        self.sim.auto_persist = true;
        self.sim.persist_all();
        for client in 0..CLIENTS {
            if let Some(conn) = self.clients[client].live_conn(&self.sim) {
                self.sim.unstall(conn);
            }
        }
        self.read_inboxes();
        // A round moves at most a window's worth of each queue (two messages under small
        // limits), and every reconnect after a crash sends the publishes still unacknowledged
        // again: a backlog of a few hundred is normal. The bound only guards against a broker
        // that never stops sending.
        for _round in 0..SETTLE_ROUNDS {
            if !self.clients[WITNESS].connected
                || self.clients[WITNESS].live_conn(&self.sim).is_none()
            {
                let version = self.clients[WITNESS].version.unwrap_or(ProtocolVersion::V5);
                self.connect(WITNESS, version, false, 0, 0, None);
            }
            self.read_inboxes();
            let mut moved = false;
            for client in 0..CLIENTS {
                if let Some(conn) = self.clients[client].live_conn(&self.sim) {
                    moved |= !self.clients[client].owed.is_empty();
                    self.respond(client, conn, u8::MAX);
                }
            }
            self.read_inboxes();
            if !moved {
                // Timers that release held work (stall checks, retries) get their turn.
                self.sim.advance(Duration::from_secs(2));
                self.read_inboxes();
                let owing = |client: &Client| {
                    !client.owed.is_empty() && client.live_conn(&self.sim).is_some()
                };
                if !self.clients.iter().any(owing) {
                    break;
                }
            }
        }
    }

    fn check_promises(&self) {
        let missing: Vec<u64> = self
            .promised
            .iter()
            .filter(|number| !self.witnessed.contains(number))
            .copied()
            .collect();
        let dropped = self.dropped_before_crashes + self.dropped();
        assert!(
            missing.len() as u64 <= dropped,
            "acknowledged messages never reached the witness: {missing:?} ({} promised, {dropped} \
             counted as dropped)",
            self.promised.len()
        );
    }

    /// Every client ends its session: a clean start with no expiry, then DISCONNECT.
    fn end_every_session(&mut self) {
        for client in 0..CLIENTS {
            let version = ProtocolVersion::V5;
            let conn = self.sim.open(version);
            let connect = Connect {
                protocol: version,
                clean_start: true,
                keep_alive: 0,
                client_id: client_id(client).into(),
                will: None,
                username: None,
                password: None,
                properties: ConnectProperties::default(),
            };
            self.sim.send(conn, Packet::Connect(Box::new(connect)));
            if !self.sim.is_closed(conn) {
                self.sim.send(conn, Packet::Disconnect(Box::default()));
            }
        }
        let live: Vec<ConnId> = self
            .clients
            .iter()
            .filter_map(|client| client.live_conn(&self.sim))
            .collect();
        for conn in live {
            self.sim.drop_connection(conn);
        }
        // Delayed wills and the sweep of expired sessions get their turn.
        self.sim.advance(Duration::from_secs(10));
    }
}
