//! The network server: binds the listeners, starts one shard per core on the chosen backend, and
//! runs the broker core on each. This is the thin adapter between `mqtt_broker_shards` (event
//! loops, sockets, channels; no MQTT) and `crate::broker` (MQTT; no I/O).
//!
//! - `listen.rs`: binding, with one SO_REUSEPORT listener per shard so the kernel spreads
//!   accepts over the shards;
//! - `shard.rs`: one shard's tasks (accept, inbox, timers) around its `Broker`;
//! - `connection.rs`: one connection's reader and writer tasks.

mod connection;
mod listen;
mod shard;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::Instant;

use mqtt_broker_shards::{mesh, start_shards, Backend, TokioIo};
use tracing::info;

use crate::broker::Config;

pub use shard::Envelope;

/// What the server needs to know; built from the command line and config file.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub listen: Vec<SocketAddr>,
    pub shards: usize,
    pub backend: Backend,
    pub pin_cores: bool,
    pub read_buffer_size: usize,
    /// Read buffers allocated at start, spread over the shards.
    pub initial_pool_size: usize,
    pub broker: Config,
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
}

/// Runs the broker until SIGINT or SIGTERM, then shuts down gracefully.
pub fn run(options: ServerOptions) -> Result<(), ServerError> {
    let backend = options.backend.resolve()?;
    let shard_count = options.shards.max(1);
    let listeners = listen::bind_all(&options.listen, shard_count)?;
    for addr in listen::local_addrs(&listeners) {
        info!("listening on {addr}");
    }
    let shared = Arc::new(Shared {
        options,
        connections: Arc::new(AtomicUsize::new(0)),
        next_conn: AtomicU64::new(1),
        shutdown: AtomicBool::new(false),
        epoch: Instant::now(),
    });
    let (stop_tx, stop_rx) = std::sync::mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = stop_tx.send(());
    })
    .map_err(|error| ServerError::Signals(error.to_string()))?;

    let endpoints = mesh::<Envelope>(shard_count, 4096);
    let per_shard = listen::distribute(listeners, shard_count);
    let slots: Arc<std::sync::Mutex<Vec<_>>> = Arc::new(std::sync::Mutex::new(
        endpoints.into_iter().zip(per_shard).map(Some).collect(),
    ));
    let pin = shared.options.pin_cores;
    let shard_shared = shared.clone();
    let threads = start_shards(shard_count, backend, pin, move |shard| {
        let shared = shard_shared.clone();
        let taken = slots.lock().ok().and_then(|mut slots| slots[shard].take());
        async move {
            let Some((endpoint, listeners)) = taken else {
                return;
            };
            match backend {
                #[cfg(target_os = "linux")]
                Backend::IoUring | Backend::Epoll => {
                    shard::run::<mqtt_broker_shards::MonoioIo>(shared, endpoint, listeners).await
                }
                #[cfg(all(feature = "glommio", target_os = "linux"))]
                Backend::Glommio => {
                    shard::run::<mqtt_broker_shards::GlommioIo>(shared, endpoint, listeners).await
                }
                _ => shard::run::<TokioIo>(shared, endpoint, listeners).await,
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
    info!("stopped");
    Ok(())
}
