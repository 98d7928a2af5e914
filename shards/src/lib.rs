//! Thread-per-core runtime for the broker: one shard thread per core, each pinned to its core and
//! running its own single-threaded event loop, plus the channels that connect the shards.
//!
//! A shard is named by its index, a `usize`: its position among the runtime's shards, counted
//! from 0, which the broker core calls its `ShardId`.
//!
//! This crate knows nothing of MQTT. It offers:
//! - [`Backend`]: which event loop a shard runs (monoio on io_uring or epoll, tokio, and glommio
//!   with the `glommio` feature), chosen
//!   once at start, with io_uring probed so `auto` falls back to epoll where it is blocked
//!   (Docker's default seccomp profile, `kernel.io_uring_disabled`);
//! - [`Io`]: the handful of socket, task and timer operations the broker needs, implemented by
//!   each backend, so the code above is written once;
//! - [`start_shards`]: spawns the shard threads and runs one future on each;
//! - [`mesh`]: the flume channels shards use to hand each other work, bounded in bytes;
//! - [`arrival`] (Linux): when a connection's first bytes reached the host, by the kernel's
//!   clock, to order connections that different shards accepted.

#[cfg(target_os = "linux")]
pub mod arrival;
mod backend;
mod io;
mod mesh;

pub use backend::{start_shards, Backend, BackendError, ShardThreads};
#[cfg(all(feature = "glommio", target_os = "linux"))]
pub use io::GlommioIo;
pub use io::Io;
#[cfg(target_os = "linux")]
pub use io::MonoioIo;
pub use io::TokioIo;
pub use mesh::{mesh, MeshEndpoint, SendError};
