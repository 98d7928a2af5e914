//! Binding the listening sockets. On Linux each shard gets its own listener on the same address
//! (SO_REUSEPORT), so the kernel balances new connections over the shards with no shared accept
//! queue. Elsewhere one listener per address serves, on shard 0, and connections reach their
//! shards by hand-over.

use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

use super::ServerError;

/// Listeners per address: one per shard where SO_REUSEPORT is available, else one.
pub(super) fn bind_all(
    addrs: &[SocketAddr],
    shards: usize,
) -> Result<Vec<Vec<TcpListener>>, ServerError> {
    addrs
        .iter()
        .map(|&requested| {
            // SO_REUSEPORT would let this bind share a port with another broker of the same
            // user; bind once without it first, so a port in use fails as it should.
            let probe = bind_exclusive(requested)?;
            let free = probe.local_addr().map_err(|source| ServerError::Listen {
                addr: requested,
                source,
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
            Ok(group)
        })
        .collect()
}

pub(super) fn local_addrs(listeners: &[Vec<TcpListener>]) -> Vec<SocketAddr> {
    listeners
        .iter()
        .filter_map(|group| group.first()?.local_addr().ok())
        .collect()
}

/// Which listeners each shard accepts on.
pub(super) fn distribute(listeners: Vec<Vec<TcpListener>>, shards: usize) -> Vec<Vec<TcpListener>> {
    let mut per_shard: Vec<Vec<TcpListener>> = (0..shards).map(|_| Vec::new()).collect();
    for group in listeners {
        for (shard, listener) in group.into_iter().enumerate() {
            per_shard[shard % shards].push(listener);
        }
    }
    per_shard
}

fn bind_exclusive(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr).map_err(|source| ServerError::Listen { addr, source })
}

fn bind_one(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    let error = |source| ServerError::Listen { addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(error)?;
    socket.set_reuse_address(true).map_err(error)?;
    #[cfg(target_os = "linux")]
    socket.set_reuse_port(true).map_err(error)?;
    if addr.is_ipv6() {
        // Let "[::]" and "0.0.0.0" be given together, as separate listeners.
        socket.set_only_v6(true).map_err(error)?;
    }
    socket.set_nonblocking(true).map_err(error)?;
    socket.bind(&addr.into()).map_err(error)?;
    socket.listen(1024).map_err(error)?;
    Ok(socket.into())
}
