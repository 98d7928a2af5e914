//! The network server: binds the listeners, starts one shard per core on the chosen backend, and
//! runs the broker core on each. This is the thin adapter between `mqtt_broker_shards` (event
//! loops, sockets, channels; no MQTT) and `crate::broker` (MQTT; no I/O).
//!
//! - `transport.rs`: the listeners (address and transport) and each connection's `StreamLayer`,
//!   the sans-IO byte-stream layer between its socket and the core;
//! - `listen.rs`: binding, with one SO_REUSEPORT listener per shard so the kernel spreads
//!   accepts over the shards;
//! - `shard.rs`: one shard's tasks (accept, inbox, timers) around its `Broker`;
//! - `connection.rs`: one connection's reader and writer tasks, which reach their shard through
//!   the `Host` trait it defines and `shard.rs` implements;
//! - `conn_handle.rs`: `ConnHandle`, what a connection's tasks and its shard share;
//! - `envelope.rs`: `Envelope`, what shards send each other;
//! - `large_packets.rs`: the shard's memory for packets larger than a read;
//! - `recovery.rs`: opening the data directory and rebuilding each shard's state, before start;
//! - `shard_journal.rs`: a shard's journal stream (records, durability, snapshots);
//! - `outputs.rs`: what a runtime does with its core's outputs after each input, and how often
//!   it gives the core the time.
//!
//! `recovery.rs` and `shard_journal.rs` are the runtime's half of persistence, and the blocking
//! build (`src/sync_server.rs`) runs on them and on `outputs.rs` and `transport.rs` too, so that both builds share
//! one data directory format and one recovery.

mod auth_workers;
mod conn_handle;
mod connection;
mod envelope;
mod large_packets;
mod listen;
pub(crate) mod metrics;
pub(crate) mod outputs;
pub(crate) mod recovery;
pub(crate) mod reports;
mod shard;
pub(crate) mod shard_journal;
pub(crate) mod signals;
pub(crate) mod sys_topics;
pub(crate) mod transport;
mod websocket;

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use mqtt_broker_persistence::{Store, StoreOptions, StreamWriter};
use mqtt_broker_shards::{mesh, start_shards, Backend, TokioIo};
use tracing::info;

use crate::broker::persist::ShardState;
use crate::broker::Config;
use crate::connection_rate::ConnectionRate;
use crate::security::{SecurityOptions, SecurityState};
use auth_workers::AuthWorkers;
use reports::Reports;
use websocket::WsSettings;

pub use envelope::Envelope;
pub use mqtt_broker_persistence::Fsync;
pub use transport::{LayerMaker, Listener, ListenerSettings, TlsError, TlsOptions, Transport};

/// What the server needs to know; built from the command line and config file.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerOptions {
    /// What to accept connections on; at least one.
    pub listeners: Vec<Listener>,
    /// The certificate and key of the TLS listeners.
    pub tls: TlsOptions,
    /// The request path WebSocket clients must use; any when `None`.
    pub ws_path: Option<String>,
    /// Who may connect, and what they may do.
    pub security: SecurityOptions,
    pub shards: usize,
    pub backend: Backend,
    pub pin_cores: bool,
    pub read_buffer_size: usize,
    /// Read buffers allocated at start, spread over the shards.
    pub initial_pool_size: usize,
    /// New connections per second per source address; 0 = no limit.
    pub max_connection_rate: u32,
    pub broker: Config,
    /// Where sessions and retained messages are kept across restarts.
    pub data_dir: PathBuf,
    /// How often the `$SYS` topics are published; zero: never.
    pub sys_interval: Duration,
    /// Where `/metrics`, `/healthz` and `/readyz` are served, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    pub persistence: PersistenceOptions,
}

impl Default for ServerOptions {
    /// The deployment's defaults: every interface on MQTT's port, one pinned shard per core on
    /// the best event loop the kernel allows, data in `./data`.
    fn default() -> Self {
        ServerOptions {
            listeners: vec![Listener::default_tcp()],
            tls: TlsOptions::default(),
            ws_path: None,
            security: SecurityOptions::default(),
            shards: std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
            backend: Backend::Auto,
            pin_cores: true,
            read_buffer_size: 8192,
            initial_pool_size: 1000,
            max_connection_rate: 0,
            broker: Config::default(),
            data_dir: PathBuf::from("./data"),
            sys_interval: Duration::from_secs(10),
            metrics_listen: None,
            persistence: PersistenceOptions::default(),
        }
    }
}

impl ServerOptions {
    /// Each listener's layer maker: its TLS settings and certificates, and the WebSocket
    /// settings.
    pub(crate) fn layer_maker(&self) -> Result<LayerMaker, TlsError> {
        let websocket = WsSettings {
            path: self.ws_path.as_deref().map(Arc::from),
            max_packet_size: self.broker.max_packet_size,
        };
        LayerMaker::new(&self.listeners, &self.tls, websocket)
    }
}

/// How the data directory is written (`--fsync`, `--snapshot-interval`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistenceOptions {
    /// `Always` also holds every acknowledgement of persistent state until it is on disk.
    pub fsync: Fsync,
    /// A shard snapshots its state this often (if it changed), replacing its journal.
    pub snapshot_interval: Duration,
    /// ... or as soon as its journal since the last snapshot grows past this.
    pub journal_max_bytes: u64,
    /// Refuse to start on damaged data instead of moving it aside and going on without it.
    pub strict_recovery: bool,
}

impl PersistenceOptions {
    /// What the broker core must do for a runtime that stores its state this way.
    pub(crate) fn configure(&self, broker: &mut Config) {
        broker.persistence = true;
        broker.ack_after_durable = self.fsync == Fsync::Always;
    }
}

impl Default for PersistenceOptions {
    fn default() -> Self {
        let store = StoreOptions::default();
        PersistenceOptions {
            fsync: store.fsync,
            snapshot_interval: store.snapshot_interval,
            journal_max_bytes: store.journal_max_bytes,
            strict_recovery: store.strict_recovery,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Backend(#[from] mqtt_broker_shards::BackendError),
    #[error("cannot install the signal handler: {0}")]
    Signals(String),
    #[error("{0}")]
    Persistence(mqtt_broker_persistence::StoreError),
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("{0}")]
    Security(String),
    #[error("{0}")]
    Metrics(String),
}

/// The first half of start-up exactly as [`run`] does it: locks and recovers the data
/// directory, replays every snapshot and journal, and splits the state by home shard (writing
/// baselines first if the shard count changed). Returns each shard's journal stream with the
/// state its `Broker::restore` takes. For tools and benchmarks that must measure or drive the
/// broker's own recovery, not a copy of it.
pub fn recover(
    data_dir: &std::path::Path,
    options: &PersistenceOptions,
    shards: usize,
) -> Result<(Store, Vec<(StreamWriter, ShardState)>), ServerError> {
    let (store, starts) = recovery::open(data_dir, options, shards.max(1))?;
    let starts = starts
        .into_iter()
        .map(|start| (start.writer, start.state))
        .collect();
    Ok((store, starts))
}

/// State every shard shares: set once at start, then only atomics.
pub(crate) struct Shared {
    pub options: ServerOptions,
    /// Connections on all shards, for the connection limit.
    pub connections: Arc<AtomicUsize>,
    /// Source of process-unique connection ids.
    pub next_conn: AtomicU64,
    /// Set on SIGINT/SIGTERM; shards notice it within one timer tick.
    pub shutdown: AtomicBool,
    /// The monotonic origin every shard measures `Timestamp`s from.
    pub epoch: Instant,
    /// Every shard has restored its state and told the others its subscriptions: only then
    /// do shards accept clients, so no publish misses a restored subscriber.
    pub restored: Barrier,
    /// `--max-connection-rate`, checked by every shard's acceptor.
    pub connection_rate: ConnectionRate,
    /// Each accepted connection's transport layer.
    pub layers: LayerMaker,
    /// The password file and ACL in force.
    pub security: Arc<SecurityState>,
    pub auth_workers: AuthWorkers,
    /// Each shard's figures, for `$SYS` and `/metrics`.
    pub reports: Arc<Reports>,
}

/// Runs the broker until SIGINT or SIGTERM, then shuts down gracefully.
pub fn run(mut options: ServerOptions) -> Result<(), ServerError> {
    let backend = options.backend.resolve()?;
    let shard_count = options.shards.max(1);
    // Before recovery, so /readyz can say it is not done yet.
    let reports = Arc::new(Reports::new(shard_count));
    if let Some(address) = options.metrics_listen {
        metrics::serve(address, reports.clone()).map_err(ServerError::Metrics)?;
    }
    options.persistence.configure(&mut options.broker);
    // Each shard's core spends its share of the send buffer budget.
    options.broker.buffer_budget /= shard_count;
    let (store, starts) = recovery::open(&options.data_dir, &options.persistence, shard_count)?;
    let layers = options.layer_maker()?;
    let security = SecurityState::load(&options.security, &options.listeners)
        .map_err(ServerError::Security)?;
    let security = Arc::new(security);
    options.broker.authenticate = options.security.authenticates(&options.listeners);
    let listeners = listen::bind_all(&options.listeners, shard_count)?;
    // Installed before announcing the address, so a signal sent as soon as a supervisor sees
    // "listening on" still shuts down gracefully.
    let (stop_tx, stop_rx) = std::sync::mpsc::channel();
    let reload = signals::Reload {
        security: security.clone(),
        layers: layers.clone(),
    };
    signals::handle_signals(stop_tx, reload).map_err(ServerError::Signals)?;
    let addresses = listen::local_addrs(&listeners);
    for (addr, transport) in &addresses {
        info!("{transport} listening on {addr}");
    }
    security.warn_about_exposure(&addresses);
    options.broker.listener_names = addresses
        .iter()
        .map(|&(address, transport)| transport.listener_name(address))
        .collect();
    let shared = Arc::new(Shared {
        connection_rate: ConnectionRate::new(options.max_connection_rate),
        layers,
        security,
        auth_workers: AuthWorkers::start(),
        reports,
        options,
        connections: Arc::new(AtomicUsize::new(0)),
        next_conn: AtomicU64::new(1),
        shutdown: AtomicBool::new(false),
        epoch: Instant::now(),
        restored: Barrier::new(shard_count),
    });

    let endpoints = mesh::<Envelope>(shard_count, shard::MESH_BACKLOG_LIMIT);
    let per_shard = listen::distribute(listeners, shard_count);
    let slots: Arc<std::sync::Mutex<Vec<_>>> = Arc::new(std::sync::Mutex::new(
        endpoints
            .into_iter()
            .zip(per_shard)
            .zip(starts)
            .map(|((endpoint, listeners), start)| Some((endpoint, listeners, start)))
            .collect(),
    ));
    let pin = shared.options.pin_cores;
    let shard_shared = shared.clone();
    let threads = start_shards(shard_count, backend, pin, move |index| {
        let shared = shard_shared.clone();
        let taken = slots.lock().ok().and_then(|mut slots| slots[index].take());
        async move {
            let Some((endpoint, listeners, start)) = taken else {
                return;
            };
            match backend {
                #[cfg(target_os = "linux")]
                Backend::IoUring | Backend::Epoll => {
                    shard::run::<mqtt_broker_shards::MonoioIo>(shared, endpoint, listeners, start)
                        .await
                }
                #[cfg(all(feature = "glommio", target_os = "linux"))]
                Backend::Glommio => {
                    shard::run::<mqtt_broker_shards::GlommioIo>(shared, endpoint, listeners, start)
                        .await
                }
                _ => shard::run::<TokioIo>(shared, endpoint, listeners, start).await,
            }
        }
    })?;
    info!(shards = shard_count, runtime = %backend, "broker started");
    let _ = stop_rx.recv();
    info!("shutting down");
    shared
        .shutdown
        .store(true, std::sync::atomic::Ordering::SeqCst);
    threads.join()?;
    store.close()?;
    info!("stopped");
    Ok(())
}
