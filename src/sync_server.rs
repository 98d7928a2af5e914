//! The blocking comparison build (`mqtt-broker-sync`): the same sans-IO [`Broker`] as the
//! sharded server, run with one shard behind a `Mutex` and driven by plain `std::net` threads.
//!
//! It exists so benchmarks can tell how much of the sharded server's performance comes from its
//! runtime rather than from the broker core, and as a simple reference when the sharded build
//! misbehaves. It is meant to be simple and correct rather than fast, but not gratuitously slow.
//!
//! It persists exactly as the sharded server does, as a server of one shard: the same data
//! directory (one journal stream), the same recovery before the first accept, snapshots, a final
//! snapshot on SIGTERM, and with `--fsync always` acknowledgements held until durable. The code
//! is the sharded server's (`server::recovery`, `server::shard_journal`), so a data directory moves
//! between the two builds (the sharded one re-homes the sessions at its first start).
//!
//! Threads:
//! - one acceptor per listener;
//! - per connection a reader (blocking reads, then `handle_bytes` under the lock) and a writer
//!   (parked until the broker has output for it, then writes it outside the lock). There is no
//!   fixed pool, so the 500th client is served like the first;
//! - one timer thread calling `handle_timeout` every [`TICK`], and taking snapshots;
//! - one thread waiting for the journal's durability notices, which release held
//!   acknowledgements;
//! - the caller's thread, waiting for SIGINT/SIGTERM.
//!
//! Writers take their output from the broker only when they are ready to write, as the sharded
//! server does: output not yet taken counts towards the connection's send buffer limit, so a slow
//! subscriber makes the broker drop its QoS 0 messages instead of growing memory without bound.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use ahash::AHashMap;
use bytes::{Bytes, BytesMut};
use futures_lite::future;
use mqtt_broker_persistence::{Lsn, Store, StoreError};
use socket2::{Domain, Protocol, Socket, Type};
use tracing::{debug, info, warn};

use crate::broker::limited_log::LimitedLog;
use crate::broker::{
    self, AuthRequest, Broker, ConnId, Event, Origin, ShardId, ShardMessage, Timestamp,
};
use crate::connection_rate::ConnectionRate;
use crate::protocol::decoder::reserve_for_read;
use crate::security::authenticator::Exchange;
#[cfg(test)]
use crate::security::SecurityOptions;
use crate::security::SecurityState;
use crate::server::metrics;
use crate::server::outputs::{drain_outputs, Outputs, TICK};
use crate::server::recovery::{self, ShardStart};
use crate::server::reports::{Reports, RuntimeCounts, ShardReport, REPORT_INTERVAL};
use crate::server::shard_journal::ShardJournal;
use crate::server::signals;
use crate::server::sys_topics::SysTopics;
use crate::server::transport::{LayerMaker, StreamLayer, TlsError, Transport};
use crate::server::{PersistenceOptions, ServerOptions};

/// How long shutdown waits for clients to be sent their DISCONNECT and closed.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// How long a connection the broker closed may take to flush before its socket is cut: a peer
/// that stopped reading would otherwise keep its writer blocked, and both threads alive, forever.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The reader runs the broker core (decode, route, encode) on its stack; the writer only copies
/// bytes to the socket. Both are far below the 2 MiB default so thousands of connections fit.
const READER_STACK: usize = 256 * 1024;
const WRITER_STACK: usize = 128 * 1024;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum SyncServerError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("no address to listen on")]
    NoListenAddress,
    #[error("cannot install the signal handler: {0}")]
    Signals(String),
    #[error("cannot start the {what} thread: {source}")]
    Thread {
        what: &'static str,
        source: io::Error,
    },
    #[error("{0}")]
    Persistence(#[from] StoreError),
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("{0}")]
    Security(String),
    #[error("{0}")]
    Metrics(String),
}

/// Runs the broker on `options.listeners`, with its state in `options.data_dir`, until SIGINT or
/// SIGTERM; then disconnects every client, writes a final snapshot and returns. The options of
/// the sharded runtime (shards, backend, pinning, buffer pool) do not apply here.
pub fn run(options: &ServerOptions) -> Result<(), SyncServerError> {
    if options.listeners.is_empty() {
        return Err(SyncServerError::NoListenAddress);
    }
    // Before binding, as the sharded server does: a data directory in use or unreadable stops
    // the start before any client can connect.
    let reports = Arc::new(Reports::new(1));
    if let Some(address) = options.metrics_listen {
        metrics::serve(address, reports.clone()).map_err(SyncServerError::Metrics)?;
    }
    let storage = Storage::open(&options.data_dir, &options.persistence)?;
    let layers = options.layer_maker()?;
    let security = SecurityState::load(&options.security, &options.listeners)
        .map_err(SyncServerError::Security)?;
    let security = Arc::new(security);
    let listeners = options
        .listeners
        .iter()
        .map(|listener| Ok((bind(listener.address)?, listener.transport)))
        .collect::<Result<Vec<_>, SyncServerError>>()?;
    // Installed before "listening on" is logged: whoever waits for that line may signal at once,
    // and the default action would kill the process instead of shutting it down.
    let (stop_tx, stop_rx) = mpsc::channel();
    let reload = signals::Reload {
        security: security.clone(),
        layers: layers.clone(),
    };
    signals::handle_signals(stop_tx, reload).map_err(SyncServerError::Signals)?;
    let mut config = options.broker.clone();
    options.persistence.configure(&mut config);
    config.authenticate = options.security.authenticates(&options.listeners);
    config.listener_names = listeners
        .iter()
        .map(|&((_, address), transport)| transport.listener_name(address))
        .collect();
    serve(
        listeners,
        layers,
        security,
        reports,
        options.sys_interval,
        options.read_buffer_size,
        ConnectionRate::new(options.max_connection_rate),
        config,
        storage,
        stop_rx,
    )
}

/// The open data directory and what the one shard restores from it.
struct Storage {
    store: Store,
    start: ShardStart,
}

impl Storage {
    /// Locks and recovers `data_dir` as a broker of one shard.
    fn open(
        data_dir: &std::path::Path,
        options: &PersistenceOptions,
    ) -> Result<Storage, StoreError> {
        let (store, mut starts) = recovery::open(data_dir, options, 1)?;
        let start = starts.pop().expect("recovery opens one stream per shard");
        Ok(Storage { store, start })
    }
}

/// Binds one listener and returns it with its actual address (port 0 picks one). No
/// SO_REUSEPORT, unlike the sharded server: one listener per address is all this build needs,
/// and a port already in use must be an error.
fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), SyncServerError> {
    let error = |source| SyncServerError::Listen { addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(error)?;
    socket.set_reuse_address(true).map_err(error)?;
    if addr.is_ipv6() {
        // Let "[::]" and "0.0.0.0" be given together, as separate listeners.
        socket.set_only_v6(true).map_err(error)?;
    }
    socket.bind(&addr.into()).map_err(error)?;
    // Benchmarks open thousands of connections at once; std's default backlog would drop some.
    socket.listen(1024).map_err(error)?;
    let listener: TcpListener = socket.into();
    let local = listener.local_addr().map_err(error)?;
    Ok((listener, local))
}

/// Serves `listeners` until `stop` receives (or its sender is dropped), then closes `storage`.
#[allow(clippy::too_many_arguments)]
fn serve(
    listeners: Vec<((TcpListener, SocketAddr), Transport)>,
    layers: LayerMaker,
    security: Arc<SecurityState>,
    reports: Arc<Reports>,
    sys_interval: Duration,
    read_buffer_size: usize,
    connection_rate: ConnectionRate,
    config: broker::Config,
    storage: Storage,
    stop: mpsc::Receiver<()>,
) -> Result<(), SyncServerError> {
    let epoch = Instant::now();
    let broker = Broker::new(config, 0, 1, Arc::new(AtomicUsize::new(0)), Timestamp::ZERO);
    let journal = ShardJournal::new(storage.start.writer);
    let notices = journal.notices();
    let shared = Arc::new(Shared {
        core: Mutex::new(Core {
            broker,
            conns: AHashMap::new(),
            closing: Vec::new(),
            journal,
        }),
        epoch,
        next_conn: AtomicU64::new(1),
        stopping: AtomicBool::new(false),
        read_buffer_size: read_buffer_size.max(64),
        connection_rate,
        layers,
        security,
        access_generation: AtomicU64::new(u64::MAX),
        reports: reports.clone(),
        sys_interval,
        bytes: (AtomicU64::new(0), AtomicU64::new(0)),
        publisher_pauses: AtomicU64::new(0),
    });
    {
        let mut core = shared.lock();
        let now = shared.now();
        recovery::restore(&mut core.broker, storage.start.state, now);
        core.pump();
        shared.follow_reloads(&mut core);
    }
    reports.set_ready();

    let durable = {
        let shared = shared.clone();
        thread::Builder::new()
            .name("mqtt-durable".into())
            .spawn(move || durable_loop(&shared, &notices))
            .map_err(|source| SyncServerError::Thread {
                what: "durability",
                source,
            })?
    };
    let timer = {
        let shared = shared.clone();
        thread::Builder::new()
            .name("mqtt-timer".into())
            .spawn(move || timer_loop(&shared))
            .map_err(|source| SyncServerError::Thread {
                what: "timer",
                source,
            })?
    };
    let addresses: Vec<_> = listeners
        .iter()
        .map(|&((_, addr), transport)| (addr, transport))
        .collect();
    for (addr, transport) in &addresses {
        info!("{transport} listening on {addr}");
    }
    shared.security.warn_about_exposure(&addresses);
    for (index, ((socket, _), transport)) in listeners.into_iter().enumerate() {
        let shared = shared.clone();
        thread::Builder::new()
            .name("mqtt-accept".into())
            .spawn(move || accept_loop(&shared, socket, transport, index))
            .map_err(|source| SyncServerError::Thread {
                what: "acceptor",
                source,
            })?;
    }
    info!(runtime = "blocking", "broker started");

    let _ = stop.recv();
    info!("shutting down");
    shared.stopping.store(true, Ordering::SeqCst);
    let _ = timer.join();
    {
        let mut core = shared.lock();
        let now = shared.now();
        core.broker.shutdown(now);
        core.pump();
    }
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while Instant::now() < deadline && !shared.lock().conns.is_empty() {
        thread::sleep(Duration::from_millis(10));
    }
    let core = shared.lock();
    if !core.conns.is_empty() {
        debug!(
            connections = core.conns.len(),
            "cutting off connections still flushing"
        );
    }
    for handle in core.conns.values() {
        let _ = handle.stream.shutdown(Shutdown::Both);
    }
    drop(core);
    final_snapshot(&shared);
    storage.store.close()?;
    // The store closed the journal, which ends the durability notices and so that thread.
    let _ = durable.join();
    // Acceptor threads stay blocked in accept() until the process exits; they drop whatever
    // they accept from now on.
    info!("stopped");
    Ok(())
}

/// The next start reads one file instead of replaying the journal. Waited for, so that its
/// outcome is logged before the store closes.
fn final_snapshot(shared: &Shared) {
    let mut core = shared.lock();
    future::block_on(core.journal.finish_snapshot());
    core.snapshot();
    future::block_on(core.journal.finish_snapshot());
}

/// Tells the broker which records are durable whenever the journal reports progress, which
/// releases the acknowledgements held for them.
fn durable_loop(shared: &Shared, notices: &flume::Receiver<Lsn>) {
    while notices.recv().is_ok() {
        let mut core = shared.lock();
        if let Some(seq) = core.journal.durable_seq() {
            core.broker.handle_persisted(seq);
            core.pump();
        }
    }
}

/// What every thread shares.
struct Shared {
    core: Mutex<Core>,
    /// The monotonic origin of every `Timestamp`.
    epoch: Instant,
    next_conn: AtomicU64,
    /// Set at shutdown: acceptors drop new connections, the timer stops.
    stopping: AtomicBool,
    read_buffer_size: usize,
    connection_rate: ConnectionRate,
    /// Each accepted connection's transport layer.
    layers: LayerMaker,
    /// The password file and ACL in force.
    security: Arc<SecurityState>,
    /// The version of the ACL the broker has.
    access_generation: AtomicU64,
    /// The core's figures, for `$SYS` and `/metrics`, and how often `$SYS` is published.
    reports: Arc<Reports>,
    sys_interval: Duration,
    /// Bytes read from and written to all sockets.
    bytes: (AtomicU64, AtomicU64),
    /// Times a publisher's reading was paused for the journal or its held acknowledgements.
    publisher_pauses: AtomicU64,
}

impl Shared {
    /// The core, even after a thread panicked while holding it: one broken connection should not
    /// take every other one down with it.
    fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts an ACL reloaded since the last look in force.
    fn follow_reloads(&self, core: &mut Core) {
        let seen = self.access_generation.load(Ordering::Relaxed);
        if let Some((generation, rules)) = self.security.access_rules_since(seen) {
            core.broker.set_access_rules(rules);
            self.access_generation.store(generation, Ordering::Relaxed);
        }
    }

    /// Read while holding the lock, so the core sees time move forward from input to input.
    fn now(&self) -> Timestamp {
        Timestamp::since(self.epoch)
    }
}

/// The broker and the runtime's view of its connections, under one lock.
struct Core {
    broker: Broker,
    conns: AHashMap<ConnId, Arc<ConnHandle>>,
    /// Connections the broker closed, and since when, until their reader sees the socket go.
    closing: Vec<(Instant, ConnId)>,
    journal: ShardJournal,
}

/// The runtime's side of one connection, shared by its reader, its writer and `pump`.
struct ConnHandle {
    /// Unparked whenever the broker has output for the connection or closes it.
    writer: Thread,
    /// The broker closed the connection (or the reader is done): the writer flushes, then shuts
    /// the socket down. Shared with the writer, which starts before the handle exists.
    closing: Arc<AtomicBool>,
    /// Lets the timer and shutdown cut off a writer blocked on a peer that stopped reading.
    stream: TcpStream,
    /// Set when the broker asks who the client is: the reader checks it.
    authenticate: Mutex<Option<AuthRequest>>,
}

impl Core {
    /// Carries out the broker's outputs after an input.
    fn pump(&mut self) {
        let mut outputs = CoreOutputs {
            conns: &self.conns,
            closing: &mut self.closing,
        };
        drain_outputs(&mut self.broker, &self.journal, &mut outputs);
    }

    /// Starts a snapshot of the broker's state. Every record the broker emitted must be appended
    /// first, so the outputs are drained before the state is taken.
    fn snapshot(&mut self) {
        self.pump();
        let capture = self.broker.capture_state();
        self.journal.snapshot_capture(capture);
    }

    /// Cuts off closed connections whose writer has not finished within [`CLOSE_GRACE`].
    fn cut_off_stuck(&mut self) {
        let conns = &self.conns;
        self.closing.retain(|&(since, conn)| {
            let Some(handle) = conns.get(&conn) else {
                return false;
            };
            if since.elapsed() < CLOSE_GRACE {
                return true;
            }
            debug!(
                ?conn,
                "closed connection did not flush in time; cutting it off"
            );
            let _ = handle.stream.shutdown(Shutdown::Both);
            false
        });
    }
}

/// Where the blocking build's core outputs go: its writer threads. With one shard there is no
/// other shard to reach or hand a connection to.
struct CoreOutputs<'a> {
    conns: &'a AHashMap<ConnId, Arc<ConnHandle>>,
    closing: &'a mut Vec<(Instant, ConnId)>,
}

impl Outputs for CoreOutputs<'_> {
    fn writable(&mut self, conn: ConnId) {
        if let Some(handle) = self.conns.get(&conn) {
            handle.writer.unpark();
        }
    }

    fn to_shard(&mut self, to: ShardId, batch: Vec<ShardMessage>) {
        warn!(
            shard = to,
            messages = batch.len(),
            "shard messages with a single shard; dropped"
        );
    }

    fn event(&mut self, event: Event) {
        let conn = match event {
            Event::Authenticate { conn, request } => {
                if let Some(handle) = self.conns.get(&conn) {
                    *handle
                        .authenticate
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(request);
                }
                return;
            }
            Event::Close(conn) => conn,
            Event::HandOver { conn, shard, .. } => {
                warn!(?conn, shard, "hand-over with a single shard; closing");
                conn
            }
        };
        if let Some(handle) = self.conns.get(&conn) {
            handle.closing.store(true, Ordering::Release);
            handle.writer.unpark();
            self.closing.push((Instant::now(), conn));
        }
    }
}

fn timer_loop(shared: &Shared) {
    let mut sys_topics = SysTopics::new(shared.sys_interval);
    let mut next_report = Instant::now();
    while !shared.stopping.load(Ordering::Relaxed) {
        thread::sleep(TICK);
        let mut core = shared.lock();
        let now = shared.now();
        if Instant::now() >= next_report {
            next_report += REPORT_INTERVAL;
            let (received, sent) = &shared.bytes;
            let runtime = RuntimeCounts {
                bytes_received: received.load(Ordering::Relaxed),
                bytes_sent: sent.load(Ordering::Relaxed),
                envelopes_sent: 0,
                publisher_pauses: shared.publisher_pauses.load(Ordering::Relaxed),
            };
            let report = ShardReport::of(&core.broker, runtime, core.journal.stats());
            shared.reports.set(0, report);
            if let Some(sys_topics) = &mut sys_topics {
                sys_topics.publish_if_due(&mut core.broker, &shared.reports, now);
                core.pump();
            }
        }
        if core.broker.poll_timeout().is_some_and(|at| at <= now) {
            core.broker.handle_timeout(now);
            core.pump();
        }
        if core.journal.wants_snapshot() {
            core.snapshot();
        }
        if !core.closing.is_empty() {
            core.cut_off_stuck();
        }
        shared.follow_reloads(&mut core);
    }
}

/// Accepts on the socket of listener `listener` (its index in `ServerOptions::listeners`).
fn accept_loop(shared: &Arc<Shared>, socket: TcpListener, transport: Transport, listener: usize) {
    // Out of file descriptors, accepts fail 20 times a second for as long as it lasts.
    let mut failures = LimitedLog::default();
    for stream in socket.incoming() {
        if shared.stopping.load(Ordering::Relaxed) {
            return;
        }
        match stream {
            Ok(stream) => {
                let admitted = stream
                    .peer_addr()
                    .is_ok_and(|peer| shared.connection_rate.admit(peer.ip(), Instant::now()));
                if !admitted {
                    continue;
                }
                match shared.layers.layer(listener) {
                    Ok(layer) => start_connection(shared, stream, layer, listener),
                    Err(error) => warn!(%error, "cannot start the connection's {transport}"),
                }
            }
            Err(error) => {
                // Out of file descriptors or a transient network error: back off briefly
                // instead of spinning.
                if let Some(failed) = failures.note(shared.now()) {
                    warn!(%error, failed, "accept failed");
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn start_connection(shared: &Arc<Shared>, stream: TcpStream, layer: StreamLayer, listener: usize) {
    let peer = stream.peer_addr().ok();
    if let Err(error) = stream.set_nodelay(true) {
        debug!(?peer, %error, "cannot set TCP_NODELAY");
    }
    let conn = ConnId(shared.next_conn.fetch_add(1, Ordering::Relaxed));
    let reader_shared = shared.clone();
    let spawned = thread::Builder::new()
        .name("mqtt-reader".into())
        .stack_size(READER_STACK)
        .spawn(move || read_loop(&reader_shared, stream, layer, conn, peer, listener));
    if let Err(error) = spawned {
        // The stream went with the closure and is closed: the client sees a reset.
        warn!(?peer, %error, "cannot start a connection thread; dropping the connection");
    }
}

/// Serves one connection: starts its writer, then feeds everything read to the broker until the
/// peer closes, a read fails, or the writer shuts the socket down after the broker closed it.
fn read_loop(
    shared: &Arc<Shared>,
    mut stream: TcpStream,
    layer: StreamLayer,
    conn: ConnId,
    peer: Option<SocketAddr>,
    listener: usize,
) {
    let (writer_stream, handle_stream) = match (stream.try_clone(), stream.try_clone()) {
        (Ok(writer), Ok(handle)) => (writer, handle),
        (Err(error), _) | (_, Err(error)) => {
            warn!(?peer, %error, "cannot clone the socket; dropping the connection");
            return;
        }
    };
    let closing = Arc::new(AtomicBool::new(false));
    // Both threads use it under the core's lock, so this lock is never contended.
    let layer = Arc::new(Mutex::new(layer));
    let writer_shared = shared.clone();
    let writer_closing = closing.clone();
    let writer_layer = layer.clone();
    let writer = thread::Builder::new()
        .name("mqtt-writer".into())
        .stack_size(WRITER_STACK)
        .spawn(move || {
            write_loop(
                &writer_shared,
                writer_stream,
                &writer_layer,
                conn,
                &writer_closing,
            )
        });
    let writer = match writer {
        Ok(writer) => writer,
        Err(error) => {
            warn!(?peer, %error, "cannot start a writer thread; dropping the connection");
            return;
        }
    };
    let handle = Arc::new(ConnHandle {
        writer: writer.thread().clone(),
        closing,
        stream: handle_stream,
        authenticate: Mutex::new(None),
    });
    {
        let mut core = shared.lock();
        core.conns.insert(conn, handle.clone());
        let now = shared.now();
        core.broker
            .handle_accepted(conn, Origin { peer, listener }, now);
        core.pump();
    }

    let size = shared.read_buffer_size;
    let mut buf = BytesMut::with_capacity(size);
    let mut exchange: Exchange = None;
    'reading: loop {
        reserve_for_read(&mut buf, size);
        // `Read` needs initialised memory. Zeroing at most one read's worth keeps that cheap
        // even while a large packet makes the buffer grow.
        let filled = buf.len();
        let end = buf.capacity().min(filled + size);
        buf.resize(end, 0);
        let result = stream.read(&mut buf[filled..]);
        if let Ok(read) = result {
            shared.bytes.0.fetch_add(read as u64, Ordering::Relaxed);
        }
        buf.truncate(filled + result.as_ref().map_or(0, |&read| read));
        match result {
            Ok(0) => break,
            Ok(_) => {
                let Ok(mut published) = take_in(shared, &handle, &layer, conn, &mut buf) else {
                    break;
                };
                // The broker asked who the client is: this thread is the client's alone, so
                // it checks right here, then gives the broker what waited meanwhile.
                while let Some(request) = take_request(&handle) {
                    let certificate_name = lock_layer(&layer).certificate_name();
                    let checker = shared.security.checker(listener);
                    let verdict =
                        checker.check(&request, certificate_name.as_deref(), &mut exchange);
                    {
                        let mut core = shared.lock();
                        let now = shared.now();
                        core.broker.handle_authenticated(conn, verdict, now);
                        core.pump();
                    }
                    match take_in(shared, &handle, &layer, conn, &mut buf) {
                        Ok(more) => published |= more,
                        Err(()) => break 'reading,
                    }
                }
                // The disk cannot keep up, or the client ignores the acknowledgements the
                // broker holds back: stop reading from this publisher and let TCP slow it down,
                // so what waits for the journal or for queue room stays bounded. Subscribers go
                // on reading, as their acknowledgements are what lets queued messages out.
                let held_back = || {
                    let core = shared.lock();
                    core.journal.is_backlogged() || core.broker.wants_pause(conn)
                };
                if published && held_back() {
                    shared.publisher_pauses.fetch_add(1, Ordering::Relaxed);
                    while held_back() {
                        thread::sleep(TICK);
                    }
                }
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                debug!(?conn, %error, "read failed");
                break;
            }
        }
    }

    {
        let mut core = shared.lock();
        let now = shared.now();
        core.broker.handle_closed(conn, now);
        core.conns.remove(&conn);
        handle.closing.store(true, Ordering::Release);
        core.pump();
    }
    handle.writer.unpark();
    // Joined so the connection's threads end together and the socket outlives the last write.
    let _ = writer.join();
}

/// Gives what was read to the core through the connection's layer; whether it held a PUBLISH.
/// An error when the layer refused the bytes, which ends the connection.
fn take_in(
    shared: &Shared,
    handle: &ConnHandle,
    layer: &Mutex<StreamLayer>,
    conn: ConnId,
    buf: &mut BytesMut,
) -> Result<bool, ()> {
    let mut core = shared.lock();
    let now = shared.now();
    let mut layer = lock_layer(layer);
    let bytes = layer.inbound(buf).map_err(|error| {
        debug!(?conn, %error, "transport refused the bytes read");
    })?;
    let published = core.broker.handle_bytes(conn, bytes, now);
    // A TLS handshake to answer, whether or not the core had anything to say.
    if layer.wants_write() {
        handle.writer.unpark();
    }
    core.pump();
    Ok(published)
}

fn take_request(handle: &ConnHandle) -> Option<AuthRequest> {
    handle
        .authenticate
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
}

/// Writes whatever the broker queued for `conn` each time it is unparked; once the broker closes
/// the connection (or the reader is done), flushes and shuts the socket down, which also ends
/// the reader's blocking read.
fn write_loop(
    shared: &Shared,
    mut stream: TcpStream,
    layer: &Mutex<StreamLayer>,
    conn: ConnId,
    closing: &AtomicBool,
) {
    let mut said_goodbye = false;
    loop {
        // `closing` is set under the lock after the output that goes with it was queued, so
        // reading both under the lock never leaves that output behind.
        let (chunks, closing) = {
            let mut core = shared.lock();
            let output = core.broker.take_output(conn, shared.now());
            let closing = closing.load(Ordering::Acquire);
            let mut layer = lock_layer(layer);
            if output.is_empty() && closing && !said_goodbye {
                layer.close();
                said_goodbye = true;
            }
            (layer.outbound(output), closing)
        };
        if !chunks.is_empty() {
            let written: usize = chunks.iter().map(Bytes::len).sum();
            shared.bytes.1.fetch_add(written as u64, Ordering::Relaxed);
            if let Err(error) = write_chunks(&mut stream, &chunks) {
                debug!(?conn, %error, "write failed");
                break;
            }
            continue;
        }
        if closing {
            let _ = stream.flush();
            break;
        }
        thread::park();
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// A connection's layer; a thread that panicked holding it left nothing half-done that the
/// other could trip on, as each use is one call.
fn lock_layer(layer: &Mutex<StreamLayer>) -> MutexGuard<'_, StreamLayer> {
    layer.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `write_all` for a list of chunks, in as few system calls as the kernel allows.
fn write_chunks(stream: &mut TcpStream, chunks: &[Bytes]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = chunks
        .iter()
        .filter(|chunk| !chunk.is_empty())
        .map(|chunk| IoSlice::new(chunk))
        .collect();
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        match stream.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => IoSlice::advance_slices(&mut slices, written),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONNACK_ACCEPTED: [u8; 4] = [0x20, 0x02, 0x00, 0x00];

    /// An MQTT 3.1.1 CONNECT with clean session and a 60 s keepalive.
    fn connect_packet(client_id: &str) -> Vec<u8> {
        let id = client_id.as_bytes();
        let mut packet = vec![0x10, (10 + 2 + id.len()) as u8];
        packet.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60]);
        packet.extend_from_slice(&(id.len() as u16).to_be_bytes());
        packet.extend_from_slice(id);
        packet
    }

    fn read_exact(stream: &mut TcpStream, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        stream.read_exact(&mut buf).expect("read from broker");
        buf
    }

    fn connect(addr: SocketAddr, client_id: &str) -> TcpStream {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(&connect_packet(client_id)).unwrap();
        assert_eq!(read_exact(&mut stream, 4), CONNACK_ACCEPTED, "{client_id}");
        stream
    }

    /// A server on an ephemeral port, its data in `data_dir`.
    fn start(data_dir: &std::path::Path) -> (SocketAddr, mpsc::Sender<()>, thread::JoinHandle<()>) {
        let persistence = PersistenceOptions::default();
        let storage = Storage::open(data_dir, &persistence).expect("open");
        let mut config = broker::Config::default();
        persistence.configure(&mut config);
        let (listener, addr) = bind("127.0.0.1:0".parse().unwrap()).expect("bind");
        let (stop_tx, stop_rx) = mpsc::channel();
        let server = thread::spawn(move || {
            let unlimited = ConnectionRate::new(0);
            serve(
                vec![((listener, addr), Transport::Tcp)],
                LayerMaker::default(),
                Arc::new(SecurityState::load(&SecurityOptions::default(), &[]).expect("no files")),
                Arc::new(Reports::new(1)),
                Duration::ZERO,
                4096,
                unlimited,
                config,
                storage,
                stop_rx,
            )
            .expect("serve");
        });
        (addr, stop_tx, server)
    }

    #[test]
    fn serves_many_clients_routes_and_shuts_down() {
        let data_dir = tempfile::tempdir().unwrap();
        let (addr, stop, server) = start(data_dir.path());
        // More clients than any small fixed pool would serve at once, all kept open.
        let mut clients: Vec<TcpStream> = (0..20)
            .map(|i| connect(addr, &format!("client-{i}")))
            .collect();

        // SUBSCRIBE id 1 to "t/x" at QoS 0 on the last client.
        let subscriber = clients.last_mut().unwrap();
        subscriber
            .write_all(&[0x82, 8, 0, 1, 0, 3, b't', b'/', b'x', 0])
            .unwrap();
        assert_eq!(read_exact(subscriber, 5), [0x90, 3, 0, 1, 0]);

        // QoS 0 PUBLISH "hi" to "t/x" from the first client.
        clients[0]
            .write_all(&[0x30, 7, 0, 3, b't', b'/', b'x', b'h', b'i'])
            .unwrap();
        let subscriber = clients.last_mut().unwrap();
        assert_eq!(
            read_exact(subscriber, 9),
            [0x30, 7, 0, 3, b't', b'/', b'x', b'h', b'i']
        );

        stop.send(()).unwrap();
        server.join().expect("serve returns");
        // 3.1.1 has no server DISCONNECT: the broker just closes every connection.
        for client in &mut clients {
            let mut byte = [0u8; 1];
            assert_eq!(client.read(&mut byte).expect("read after shutdown"), 0);
        }
    }

    #[test]
    fn closes_connection_on_protocol_error() {
        let data_dir = tempfile::tempdir().unwrap();
        let (addr, stop, server) = start(data_dir.path());
        let mut client = connect(addr, "bad");
        // A reserved packet type (0) is a protocol error.
        client.write_all(&[0x00, 0x00]).unwrap();
        let mut rest = Vec::new();
        client
            .read_to_end(&mut rest)
            .expect("broker closes cleanly");
        assert!(rest.is_empty(), "3.1.1 gets no DISCONNECT: {rest:?}");
        // The broker still serves others after dropping one.
        drop(connect(addr, "good"));
        stop.send(()).unwrap();
        server.join().unwrap();
    }

    #[test]
    fn port_in_use_names_the_address() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let error = bind(addr).expect_err("port is taken");
        let message = error.to_string();
        assert!(message.contains(&addr.to_string()), "{message}");
        assert!(!message.contains('\n'), "{message}");
    }
}
