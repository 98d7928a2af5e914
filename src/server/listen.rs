//! Binding the listening sockets of the configured listeners. On Linux each shard gets its own listener on the same address
//! (SO_REUSEPORT), so the kernel balances new connections over the shards with no shared accept
//! queue. Elsewhere one listener per address serves, on shard 0, and connections reach their
//! shards by hand-over.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tracing::info;

use super::transport::{Listener, Transport};
use super::ServerError;

/// How long an address found in use is tried again at start. A broker killed a moment ago
/// keeps its listening sockets until the kernel has torn down its io_uring ring, some tens of
/// milliseconds after the process is gone, and a supervisor restarts it sooner than that.
const IN_USE_RETRY: Duration = Duration::from_secs(2);

/// A bound listening socket, what its connections speak, and which listener it is (its index
/// in `ServerOptions::listeners`).
pub(super) struct Bound {
    pub socket: TcpListener,
    pub transport: Transport,
    pub listener: usize,
}

/// Sockets per listener: one per shard where SO_REUSEPORT is available, else one.
pub(super) fn bind_all(
    listeners: &[Listener],
    shards: usize,
) -> Result<Vec<Vec<Bound>>, ServerError> {
    listeners
        .iter()
        .enumerate()
        .map(|(index, listener)| {
            let requested = listener.address;
            // SO_REUSEPORT would let this bind share a port with another broker of the same
            // user; bind once without it first, so a port in use fails as it should. The probe
            // never listens: a client that connected to it would be reset when it is dropped.
            let probe = bind_exclusive_retrying(requested)?;
            let free = probe
                .local_addr()
                .ok()
                .and_then(|addr| addr.as_socket())
                .ok_or_else(|| ServerError::Listen {
                    addr: requested,
                    source: std::io::Error::other("no local address after bind"),
                })?;
            drop(probe);
            let first = bind_one(free)?;
            // Port 0 picks a free port once; the other shards share that port.
            let addr = first.local_addr().map_err(|source| ServerError::Listen {
                addr: requested,
                source,
            })?;
            let mut group = vec![first];
            if cfg!(target_os = "linux") {
                for _ in 1..shards {
                    group.push(bind_one(addr)?);
                }
            }
            let transport = listener.transport;
            Ok(group
                .into_iter()
                .map(|socket| Bound {
                    socket,
                    transport,
                    listener: index,
                })
                .collect())
        })
        .collect()
}

/// Each listener's address (with the port picked for port 0) and transport.
pub(super) fn local_addrs(listeners: &[Vec<Bound>]) -> Vec<(SocketAddr, Transport)> {
    listeners
        .iter()
        .filter_map(|group| {
            let first = group.first()?;
            Some((first.socket.local_addr().ok()?, first.transport))
        })
        .collect()
}

/// Which listeners each shard accepts on.
pub(super) fn distribute(listeners: Vec<Vec<Bound>>, shards: usize) -> Vec<Vec<Bound>> {
    let mut per_shard: Vec<Vec<Bound>> = (0..shards).map(|_| Vec::new()).collect();
    for group in listeners {
        for (shard, listener) in group.into_iter().enumerate() {
            per_shard[shard % shards].push(listener);
        }
    }
    per_shard
}

/// `bind_exclusive`, tried again for `IN_USE_RETRY` while the address is in use.
fn bind_exclusive_retrying(addr: SocketAddr) -> Result<Socket, ServerError> {
    let deadline = Instant::now() + IN_USE_RETRY;
    let mut said = false;
    loop {
        match bind_exclusive(addr) {
            Err(ServerError::Listen { source, .. })
                if source.kind() == ErrorKind::AddrInUse && Instant::now() < deadline =>
            {
                if !said {
                    info!(%addr, "address in use; trying again for {IN_USE_RETRY:?} in case a broker that just stopped still holds it");
                    said = true;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            bound => return bound,
        }
    }
}

/// A socket bound to `addr` without SO_REUSEPORT and not listening: it takes no connections.
fn bind_exclusive(addr: SocketAddr) -> Result<Socket, ServerError> {
    let error = |source| ServerError::Listen { addr, source };
    let socket = new_socket(addr).map_err(error)?;
    socket.set_reuse_address(true).map_err(error)?;
    socket.bind(&addr.into()).map_err(error)?;
    Ok(socket)
}

fn new_socket(addr: SocketAddr) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        // Let "[::]" and "0.0.0.0" be given together, as separate listeners.
        socket.set_only_v6(true)?;
    }
    Ok(socket)
}

fn bind_one(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    let error = |source| ServerError::Listen { addr, source };
    let socket = new_socket(addr).map_err(error)?;
    socket.set_reuse_address(true).map_err(error)?;
    #[cfg(target_os = "linux")]
    socket.set_reuse_port(true).map_err(error)?;
    socket.set_nonblocking(true).map_err(error)?;
    // Accepted connections inherit it: their CONNECTs are ordered by when they arrived.
    #[cfg(target_os = "linux")]
    mqtt_broker_shards::arrival::stamp_arrivals(&socket).map_err(error)?;
    socket.bind(&addr.into()).map_err(error)?;
    socket.listen(1024).map_err(error)?;
    Ok(socket.into())
}
