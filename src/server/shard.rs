//! One shard: its `Broker`, the tasks that feed it (accept loops, the inbox from other shards,
//! the timer) and `pump`, which carries out everything the broker asks for after each input.
//! It starts its connections' tasks (`connection.rs`) and serves them through their `Host`
//! trait.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use bytes::BytesMut;
use mqtt_broker_shards::{Io, MeshEndpoint, SendError};
use tokio::sync::Notify;
use tracing::{debug, warn};

use super::conn_handle::ConnHandle;
use super::connection::{self, Accepted, Host};
use super::envelope::Envelope;
use super::large_packets::LargePackets;
use super::listen::Bound;
use super::outputs::{drain_outputs, Outputs, TICK};
use super::recovery::{self, ShardStart};
use super::reports::{RuntimeCounts, ShardReport, REPORT_INTERVAL};
use super::shard_journal::ShardJournal;
use super::sys_topics::SysTopics;
use super::transport::Transport;
use super::Shared;
use crate::broker::limited_log::LimitedLog;
use crate::broker::{
    AuthRequest, AuthVerdict, Broker, ConnId, Event, ShardId, ShardMessage, Timestamp,
};
use crate::security::authenticator::Exchange;

/// How often paused publishers are looked at while the shard holds them back: short, so a
/// backlog that clears in a few milliseconds does not leave them idle for a whole tick.
const PACE: Duration = Duration::from_millis(1);

/// Bytes of work in another shard's inbox above which this shard pauses its publishers. Under
/// overload it bounds the memory between shards (and the latency it adds: a few tens of
/// milliseconds at the highest rates), while being large enough that a busy shard's batches
/// never wait for room in ordinary operation.
pub(super) const MESH_BACKLOG_LIMIT: usize = 4 << 20;

/// How long shutdown waits for send buffers to drain before the shard stops.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(300);

pub(super) struct Shard<I: Io> {
    id: ShardId,
    shared: Arc<Shared>,
    broker: RefCell<Broker>,
    mesh: MeshEndpoint<Envelope>,
    conns: RefCell<AHashMap<ConnId, Rc<ConnHandle<I>>>>,
    /// Read buffers not in use, so connection churn does not churn the allocator.
    buffers: RefCell<Vec<BytesMut>>,
    /// How many buffers the pool keeps at most: this shard's part of `--initial-pool-size`.
    pool_limit: usize,
    journal: ShardJournal,
    /// Publishers paused while the shard is held back wait here (see `pause_publisher`).
    resume: Notify,
    /// How many are waiting; the pacer runs while there are some.
    paused: Cell<usize>,
    /// Packets larger than a read being received, which share the buffer budget.
    large_packets: RefCell<LargePackets>,
    /// The version of the ACL the broker has (`SecurityState::access_generation`).
    access_generation: Cell<u64>,
    /// What this shard's reports add to its core's figures.
    counts: Cell<RuntimeCounts>,
}

impl<I: Io> Shard<I> {
    /// Whether publishers must wait: another shard's inbox or the journal is too far behind.
    fn held_back(&self) -> bool {
        self.mesh.is_congested() || self.journal.is_backlogged()
    }

    fn add_counts(&self, update: impl FnOnce(&mut RuntimeCounts)) {
        let mut counts = self.counts.get();
        update(&mut counts);
        self.counts.set(counts);
    }

    /// Snapshots the broker's state into the journal stream. Every record the broker emitted
    /// must be appended first, so the outputs are drained before the state is taken.
    fn snapshot(self: &Rc<Self>) {
        self.pump();
        let capture = self.broker.borrow().capture_state();
        self.journal.snapshot_capture(capture);
    }

    /// Puts an ACL reloaded since the last look in force.
    fn follow_reloads(&self) {
        let seen = self.access_generation.get();
        if let Some((generation, rules)) = self.shared.security.access_rules_since(seen) {
            self.broker.borrow_mut().set_access_rules(rules);
            self.access_generation.set(generation);
        }
    }

    /// Writes this shard's report, then, on shard 0, publishes the `$SYS` topics when due.
    fn report(self: &Rc<Self>, sys_topics: Option<&mut SysTopics>) {
        let reports = &self.shared.reports;
        let report = ShardReport::of(
            &self.broker.borrow(),
            self.counts.get(),
            self.journal.stats(),
        );
        reports.set(self.id, report);
        if let Some(sys_topics) = sys_topics {
            let now = self.now();
            sys_topics.publish_if_due(&mut self.broker.borrow_mut(), reports, now);
            self.pump();
        }
    }

    /// Makes sure the connection's output gets sent.
    fn wake_writer(self: &Rc<Self>, conn: ConnId) {
        let handle = self.conns.borrow().get(&conn).cloned();
        if let Some(handle) = handle {
            connection::start_writer(self, conn, &handle);
        }
    }
}

/// What the shard gives its connections' tasks (`connection.rs`).
impl<I: Io> Host<I> for Shard<I> {
    fn broker(&self) -> &RefCell<Broker> {
        &self.broker
    }

    fn now(&self) -> Timestamp {
        Timestamp::since(self.shared.epoch)
    }

    /// Carries out the broker's outputs, in the documented order: transmits, shard messages,
    /// journal records, events.
    fn count_bytes(&self, received: usize, sent: usize) {
        self.add_counts(|counts| {
            counts.bytes_received += received as u64;
            counts.bytes_sent += sent as u64;
        });
    }

    fn pump(self: &Rc<Self>) {
        let mut broker = self.broker.borrow_mut();
        drain_outputs(&mut broker, &self.journal, &mut ShardOutputs(self));
    }

    fn add_conn(&self, conn: ConnId, handle: Rc<ConnHandle<I>>) {
        self.conns.borrow_mut().insert(conn, handle);
    }

    fn remove_conn(&self, conn: ConnId) {
        self.conns.borrow_mut().remove(&conn);
    }

    async fn authenticate(
        &self,
        listener: usize,
        request: AuthRequest,
        certificate_name: Option<String>,
        exchange: Exchange,
    ) -> (AuthVerdict, Exchange) {
        let shared = &self.shared;
        let checker = shared.security.checker(listener);
        shared
            .auth_workers
            .check(checker, request, certificate_name, exchange)
            .await
    }

    /// Waits while the shard is held back. One pacer task per shard looks every `PACE` and
    /// wakes every waiter once the shard is free again, so a thousand paused publishers cost
    /// one timer, not a thousand.
    async fn pause_publisher(self: &Rc<Self>) {
        if self.held_back() {
            self.add_counts(|counts| counts.publisher_pauses += 1);
        }
        while self.held_back() {
            if self.paused.get() == 0 {
                I::spawn(pace(self.clone()));
            }
            let _waiting = PausedGuard::new(&self.paused);
            self.resume.notified().await;
        }
    }

    fn read_buffer_size(&self) -> usize {
        self.shared.options.read_buffer_size
    }

    fn buffer_budget(&self) -> usize {
        self.shared.options.broker.buffer_budget
    }

    fn large_packets(&self) -> &RefCell<LargePackets> {
        &self.large_packets
    }

    /// A read buffer from the pool, or a new one when the pool is empty.
    fn take_buffer(&self) -> BytesMut {
        let size = self.shared.options.read_buffer_size;
        self.buffers
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| BytesMut::with_capacity(size))
    }

    /// Returns an emptied buffer to the pool if its whole allocation can be reused. Payloads
    /// decoded from it may still share its memory; then it is dropped and they keep it alive.
    /// One grown for a large packet is dropped too: pooled, it would keep that memory for good.
    fn return_buffer(&self, mut buf: BytesMut) {
        let size = self.shared.options.read_buffer_size;
        buf.clear();
        let mut pool = self.buffers.borrow_mut();
        if pool.len() < self.pool_limit && buf.try_reclaim(size) && buf.capacity() == size {
            pool.push(buf);
        }
    }

    /// Sends an envelope to another shard, counting what it keeps alive.
    fn send_envelope(&self, to: ShardId, envelope: Envelope) -> Result<(), SendError> {
        let weight = envelope.weight();
        self.add_counts(|counts| counts.envelopes_sent += 1);
        self.mesh.send(to, envelope, weight)
    }
}

/// Counts a paused publisher for as long as it waits, even if its task is dropped meanwhile.
struct PausedGuard<'a>(&'a Cell<usize>);

impl<'a> PausedGuard<'a> {
    fn new(paused: &'a Cell<usize>) -> Self {
        paused.set(paused.get() + 1);
        PausedGuard(paused)
    }
}

impl Drop for PausedGuard<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// Wakes the paused publishers once the shard is no longer held back; runs while any waits.
async fn pace<I: Io>(shard: Rc<Shard<I>>) {
    loop {
        Box::pin(I::sleep(PACE)).await;
        if shard.paused.get() == 0 {
            return;
        }
        if !shard.held_back() {
            shard.resume.notify_waiters();
        }
    }
}

/// A shard's main task: sets up the broker and the tasks around it, then runs the timer until
/// shutdown.
pub(super) async fn run<I: Io>(
    shared: Arc<Shared>,
    mesh: MeshEndpoint<Envelope>,
    listeners: Vec<Bound>,
    start: ShardStart,
) {
    let id = mesh.index();
    let shard_count = mesh.shard_count();
    let mut broker = Broker::new(
        shared.options.broker.clone(),
        id,
        shard_count,
        shared.connections.clone(),
        Timestamp::ZERO,
    );
    let now = Timestamp::since(shared.epoch);
    recovery::restore(&mut broker, start.state, now);
    let options = &shared.options;
    let pool_limit = options.initial_pool_size.div_ceil(shard_count);
    let buffers = (0..pool_limit)
        .map(|_| BytesMut::with_capacity(options.read_buffer_size))
        .collect();
    let shard = Rc::new(Shard::<I> {
        id,
        shared,
        broker: RefCell::new(broker),
        mesh,
        conns: RefCell::new(AHashMap::new()),
        buffers: RefCell::new(buffers),
        pool_limit,
        journal: ShardJournal::new(start.writer),
        resume: Notify::new(),
        paused: Cell::new(0),
        large_packets: RefCell::new(LargePackets::default()),
        access_generation: Cell::new(u64::MAX),
        counts: Cell::new(RuntimeCounts::default()),
    });
    // The ACL, before any client is served.
    shard.follow_reloads();
    // Tell the other shards about the restored subscriptions, wait until they have all done
    // the same, and take in what they said before any client is served.
    shard.pump();
    shard.shared.restored.wait();
    shard.shared.reports.set_ready();
    while let Some((from, envelope)) = shard.mesh.try_recv() {
        handle_envelope(&shard, from, envelope);
    }
    I::spawn(durable_loop(shard.clone()));
    for Bound {
        socket,
        transport,
        listener,
    } in listeners
    {
        match I::listener(socket) {
            Ok(socket) => I::spawn(accept_loop(shard.clone(), socket, transport, listener)),
            Err(error) => warn!(shard = id, %error, "cannot register listener"),
        }
    }
    I::spawn(inbox_loop(shard.clone()));
    timer_loop(&shard).await;
}

/// Accepts on one listening socket of listener `listener`.
async fn accept_loop<I: Io>(
    shard: Rc<Shard<I>>,
    socket: I::Listener,
    transport: Transport,
    listener: usize,
) {
    // Out of file descriptors, accepts fail 20 times a second for as long as it lasts.
    let mut failures = LimitedLog::default();
    loop {
        match I::accept(&socket).await {
            Ok((stream, peer)) => {
                if !shard
                    .shared
                    .connection_rate
                    .admit(peer.ip(), Instant::now())
                {
                    continue;
                }
                if let Err(error) = I::set_nodelay(&stream) {
                    debug!(%peer, %error, "cannot set TCP_NODELAY");
                }
                let layer = match shard.shared.layers.layer(listener) {
                    Ok(layer) => layer,
                    Err(error) => {
                        warn!(%peer, %error, "cannot start the connection's {transport}");
                        continue;
                    }
                };
                let conn = ConnId(shard.shared.next_conn.fetch_add(1, Ordering::Relaxed));
                let accepted = Accepted {
                    conn,
                    peer: Some(peer),
                    listener,
                };
                I::spawn(connection::read_loop(
                    shard.clone(),
                    stream,
                    layer,
                    accepted,
                    BytesMut::new(),
                    None,
                ));
            }
            Err(error) => {
                // Out of file descriptors or a transient network error: back off briefly
                // instead of spinning.
                if let Some(failed) = failures.note(shard.now()) {
                    warn!(shard = shard.id, %error, failed, "accept failed");
                }
                I::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Envelopes handled before the inbox task lets other tasks run.
const INBOX_BATCH: usize = 64;

async fn inbox_loop<I: Io>(shard: Rc<Shard<I>>) {
    let mut handled = 0;
    loop {
        // Forwarded messages for persistent sessions are journaled here; while the journal is
        // behind, leave them in the inbox, so the sending shard sees its backlog here grow and
        // pauses its publishers. Waiting on the journal only, which drains by itself, and never
        // on this shard's own congestion, keeps two shards from waiting on each other.
        while shard.journal.is_backlogged() {
            // Boxed, as timers are large and journal backlogs rare.
            Box::pin(I::sleep(TICK)).await;
        }
        let Some((from, envelope)) = shard.mesh.recv().await else {
            break;
        };
        handle_envelope(&shard, from, envelope);
        // While another shard keeps the inbox full, `recv` never waits, so without a yield this
        // task would starve the writers it wakes and every delivery would pile up unsent.
        handled += 1;
        if handled == INBOX_BATCH {
            handled = 0;
            I::yield_now().await;
        }
    }
}

/// Tells the broker which records are durable whenever the journal reports progress.
async fn durable_loop<I: Io>(shard: Rc<Shard<I>>) {
    let notices = shard.journal.notices();
    while notices.recv_async().await.is_ok() {
        if let Some(seq) = shard.journal.durable_seq() {
            shard.broker.borrow_mut().handle_persisted(seq);
            shard.pump();
        }
    }
}

fn handle_envelope<I: Io>(shard: &Rc<Shard<I>>, from: ShardId, envelope: Envelope) {
    {
        match envelope {
            Envelope::Broker(batch) => {
                let now = shard.now();
                {
                    let mut broker = shard.broker.borrow_mut();
                    for message in batch {
                        broker.handle_shard_message(from, message, now);
                    }
                }
                shard.pump();
            }
            Envelope::HandOver {
                conn,
                listener,
                stream,
                layer,
                connect,
                buffered,
            } => {
                let accepted = Accepted {
                    conn,
                    peer: stream.peer_addr().ok(),
                    listener,
                };
                match I::stream(stream) {
                    Ok(stream) => I::spawn(connection::read_loop(
                        shard.clone(),
                        stream,
                        layer,
                        accepted,
                        buffered,
                        Some(connect),
                    )),
                    Err(error) => warn!(?conn, %error, "cannot take over a handed-over connection"),
                }
            }
        }
    }
}

async fn timer_loop<I: Io>(shard: &Rc<Shard<I>>) {
    // Shard 0 publishes the `$SYS` topics for all.
    let mut sys_topics = (shard.id == 0)
        .then(|| SysTopics::new(shard.shared.options.sys_interval))
        .flatten();
    let mut next_report = Instant::now();
    while !shard.shared.shutdown.load(Ordering::Relaxed) {
        I::sleep(TICK).await;
        if Instant::now() >= next_report {
            next_report += REPORT_INTERVAL;
            shard.report(sys_topics.as_mut());
        }
        let now = shard.now();
        let due = shard
            .broker
            .borrow()
            .poll_timeout()
            .is_some_and(|at| at <= now);
        if due {
            shard.broker.borrow_mut().handle_timeout(now);
        }
        shard.pump();
        if shard.journal.wants_snapshot() {
            shard.snapshot();
        }
        shard.follow_reloads();
    }
    let now = shard.now();
    shard.broker.borrow_mut().shutdown(now);
    shard.pump();
    I::sleep(SHUTDOWN_GRACE).await;
    // The final snapshot: the next start reads one file instead of replaying the journal.
    shard.journal.finish_snapshot().await;
    shard.snapshot();
    shard.journal.finish_snapshot().await;
}

/// Where a shard's core outputs go: its connections' writer tasks and the mesh.
struct ShardOutputs<'a, I: Io>(&'a Rc<Shard<I>>);

impl<I: Io> Outputs for ShardOutputs<'_, I> {
    fn writable(&mut self, conn: ConnId) {
        self.0.wake_writer(conn);
    }

    fn to_shard(&mut self, to: ShardId, batch: Vec<ShardMessage>) {
        if self.0.send_envelope(to, Envelope::Broker(batch)).is_err() {
            debug!(shard = to, "shard stopped; dropping its messages");
        }
    }

    fn event(&mut self, event: Event) {
        let shard = self.0;
        match event {
            Event::Close(conn) => {
                if let Some(handle) = shard.conns.borrow().get(&conn) {
                    handle.closing.set(true);
                }
                shard.wake_writer(conn);
            }
            Event::HandOver {
                conn,
                shard: to,
                connect,
            } => {
                if let Some(handle) = shard.conns.borrow().get(&conn) {
                    *handle.hand_over.borrow_mut() = Some((to, connect));
                }
            }
            Event::Authenticate { conn, request } => {
                if let Some(handle) = shard.conns.borrow().get(&conn) {
                    *handle.authenticate.borrow_mut() = Some(request);
                }
            }
        }
    }
}
