//! One shard: its `Broker`, the tasks that feed it (accept loops, the inbox from other shards,
//! the timer) and `pump`, which carries out everything the broker asks for after each input.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use bytes::BytesMut;
use mqtt_broker_shards::{Io, MeshEndpoint, SendError, ShardId};
use tokio::sync::Notify;
use tracing::{debug, warn};

use super::connection;
use super::large_packets::LargePackets;
use super::outputs::{drain_outputs, Outputs, TICK};
use super::recovery::{self, ShardStart};
use super::shard_journal::ShardJournal;
use super::Shared;
use crate::broker::{Broker, ConnId, Event, HandedOverConnect, ShardMessage, Timestamp};

/// What shards send each other.
pub enum Envelope {
    /// Work for the receiving shard's broker core.
    Broker(Vec<ShardMessage>),
    /// A connection whose client lives on the receiving shard, with the bytes already read
    /// after its CONNECT.
    HandOver {
        conn: ConnId,
        stream: std::net::TcpStream,
        connect: HandedOverConnect,
        buffered: BytesMut,
    },
}

/// How often paused publishers are looked at while the shard holds them back: short, so a
/// backlog that clears in a few milliseconds does not leave them idle for a whole tick.
const PACE: Duration = Duration::from_millis(1);

/// Bytes of work in another shard's inbox above which this shard pauses its publishers. Under
/// overload it bounds the memory between shards (and the latency it adds: a few tens of
/// milliseconds at the highest rates), while being large enough that a busy shard's batches
/// never wait for room in ordinary operation.
pub(super) const MESH_BACKLOG_LIMIT: usize = 4 << 20;

/// What one shard message keeps alive beyond its payload and topic: the message's own
/// allocation and its place in a batch.
const SHARD_MESSAGE_OVERHEAD: usize = 128;

/// How long shutdown waits for send buffers to drain before the shard stops.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(300);

/// The runtime's side of one connection, shared by its reader task, its writer task and `pump`.
pub(super) struct ConnHandle<I: Io> {
    /// The write half while no writer task runs. A writer task lives only while there is
    /// output to send, so an idle connection costs no task, and a connection can be put back
    /// together and moved to another shard between writes.
    pub writer: RefCell<Option<I::Writer>>,
    /// The broker has closed the connection: flush, then stop.
    pub closing: Cell<bool>,
    /// Wakes the reader when the connection must stop reading.
    pub stop_reading: Notify,
    /// Set when the broker moves the client to another shard.
    pub hand_over: RefCell<Option<(ShardId, HandedOverConnect)>>,
}

impl<I: Io> ConnHandle<I> {
    pub fn new(writer: I::Writer) -> Self {
        ConnHandle {
            writer: RefCell::new(Some(writer)),
            closing: Cell::new(false),
            stop_reading: Notify::new(),
            hand_over: RefCell::new(None),
        }
    }
}

pub(super) struct Shard<I: Io> {
    pub id: ShardId,
    pub shared: Arc<Shared>,
    pub broker: RefCell<Broker>,
    pub mesh: MeshEndpoint<Envelope>,
    pub conns: RefCell<AHashMap<ConnId, Rc<ConnHandle<I>>>>,
    /// Read buffers not in use, so connection churn does not churn the allocator.
    pub buffers: RefCell<Vec<BytesMut>>,
    /// How many buffers the pool keeps at most: this shard's part of `--initial-pool-size`.
    pub pool_limit: usize,
    pub journal: ShardJournal,
    /// Publishers paused while the shard is held back wait here (see `pause_while_held_back`).
    pub resume: Notify,
    /// How many are waiting; the pacer runs while there are some.
    pub paused: Cell<usize>,
    /// Packets larger than a read being received, which share the buffer budget.
    pub large_packets: RefCell<LargePackets>,
}

impl Envelope {
    /// Roughly the bytes an envelope keeps alive until its shard takes it, for the mesh's limit.
    fn weight(&self) -> usize {
        match self {
            Envelope::Broker(batch) => batch
                .iter()
                .map(|message| match message {
                    ShardMessage::Publish { message, .. } => message.weight(),
                    _ => 0,
                } + SHARD_MESSAGE_OVERHEAD)
                .sum(),
            Envelope::HandOver { buffered, .. } => buffered.len() + SHARD_MESSAGE_OVERHEAD,
        }
    }
}

impl<I: Io> Shard<I> {
    pub fn now(&self) -> Timestamp {
        Timestamp::since(self.shared.epoch)
    }

    /// Carries out the broker's outputs, in the documented order: transmits, shard messages,
    /// journal records, events.
    pub fn pump(self: &Rc<Self>) {
        let mut broker = self.broker.borrow_mut();
        drain_outputs(&mut broker, &self.journal, &mut ShardOutputs(self));
    }

    /// Sends an envelope to another shard, counting what it keeps alive.
    pub fn send_envelope(&self, to: ShardId, envelope: Envelope) -> Result<(), SendError> {
        let weight = envelope.weight();
        self.mesh.send(to, envelope, weight)
    }

    /// Whether publishers must wait: another shard's inbox or the journal is too far behind.
    fn held_back(&self) -> bool {
        self.mesh.is_congested() || self.journal.is_backlogged()
    }

    /// Waits while the shard is held back. One pacer task per shard looks every `PACE` and
    /// wakes every waiter once the shard is free again, so a thousand paused publishers cost
    /// one timer, not a thousand.
    pub async fn pause_publisher(self: &Rc<Self>) {
        while self.held_back() {
            if self.paused.get() == 0 {
                I::spawn(pace(self.clone()));
            }
            let _waiting = PausedGuard::new(&self.paused);
            self.resume.notified().await;
        }
    }

    /// A read buffer from the pool, or a new one when the pool is empty.
    pub fn take_buffer(&self) -> BytesMut {
        let size = self.shared.options.read_buffer_size;
        self.buffers
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| BytesMut::with_capacity(size))
    }

    /// Returns an emptied buffer to the pool if its whole allocation can be reused. Payloads
    /// decoded from it may still share its memory; then it is dropped and they keep it alive.
    /// One grown for a large packet is dropped too: pooled, it would keep that memory for good.
    pub fn return_buffer(&self, mut buf: BytesMut) {
        let size = self.shared.options.read_buffer_size;
        buf.clear();
        let mut pool = self.buffers.borrow_mut();
        if pool.len() < self.pool_limit && buf.try_reclaim(size) && buf.capacity() == size {
            pool.push(buf);
        }
    }

    /// Snapshots the broker's state into the journal stream. Every record the broker emitted
    /// must be appended first, so the outputs are drained before the state is taken.
    fn snapshot(self: &Rc<Self>) {
        self.pump();
        let capture = self.broker.borrow().capture_state();
        self.journal.snapshot_capture(capture);
    }

    /// Makes sure the connection's output gets sent.
    fn wake_writer(self: &Rc<Self>, conn: ConnId) {
        let handle = self.conns.borrow().get(&conn).cloned();
        if let Some(handle) = handle {
            self.start_writer(conn, &handle);
        }
    }

    /// Starts a writer task unless one is running; a running one sends everything queued
    /// before it stops, so nothing else is needed.
    pub fn start_writer(self: &Rc<Self>, conn: ConnId, handle: &Rc<ConnHandle<I>>) {
        let writer = handle.writer.borrow_mut().take();
        if let Some(writer) = writer {
            I::spawn(connection::write_loop(
                self.clone(),
                conn,
                handle.clone(),
                writer,
            ));
        }
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
    listeners: Vec<std::net::TcpListener>,
    start: ShardStart,
) {
    let id = mesh.shard();
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
    });
    // Tell the other shards about the restored subscriptions, wait until they have all done
    // the same, and take in what they said before any client is served.
    shard.pump();
    shard.shared.restored.wait();
    while let Some((from, envelope)) = shard.mesh.try_recv() {
        handle_envelope(&shard, from, envelope);
    }
    I::spawn(durable_loop(shard.clone()));
    for listener in listeners {
        match I::listener(listener) {
            Ok(listener) => I::spawn(accept_loop(shard.clone(), listener)),
            Err(error) => warn!(shard = id, %error, "cannot register listener"),
        }
    }
    I::spawn(inbox_loop(shard.clone()));
    timer_loop(&shard).await;
}

async fn accept_loop<I: Io>(shard: Rc<Shard<I>>, listener: I::Listener) {
    loop {
        match I::accept(&listener).await {
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
                let conn = ConnId(shard.shared.next_conn.fetch_add(1, Ordering::Relaxed));
                I::spawn(connection::read_loop(
                    shard.clone(),
                    stream,
                    conn,
                    Some(peer),
                    BytesMut::new(),
                    None,
                ));
            }
            Err(error) => {
                // Out of file descriptors or a transient network error: back off briefly
                // instead of spinning.
                warn!(shard = shard.id, %error, "accept failed");
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
                stream,
                connect,
                buffered,
            } => {
                let peer = stream.peer_addr().ok();
                match I::stream(stream) {
                    Ok(stream) => I::spawn(connection::read_loop(
                        shard.clone(),
                        stream,
                        conn,
                        peer,
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
    while !shard.shared.shutdown.load(Ordering::Relaxed) {
        I::sleep(TICK).await;
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
        }
    }
}
