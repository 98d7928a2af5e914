//! What a listener speaks below MQTT, and the byte-stream layer that speaks it for each of its
//! connections. A connection's tasks (`connection.rs`) are the same for every transport: they
//! read bytes from the socket, pass them through the connection's [`StreamLayer`] and give what
//! comes out to the broker core; they take the core's output, pass it through the layer the
//! other way and write what comes out. The layer is sans-IO, as the core is: bytes in, bytes
//! out, no socket, so every runtime drives it the same way.
//!
//! Plain TCP is the empty layer, and costs nothing: the bytes read are the core's bytes, in the
//! same buffer. TLS (rustls' `ServerConnection`, fed with `read_tls` and drained with
//! `write_tls`) and WebSocket framing are layers with state, which a hand-over carries to the
//! connection's new shard with the socket.

use std::fmt;
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};

/// How the bytes of a connection carry MQTT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// MQTT directly over TCP.
    Tcp,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Tcp => "MQTT over TCP",
        })
    }
}

/// One address the broker accepts connections on, and what they speak.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub address: SocketAddr,
    pub transport: Transport,
}

impl Listener {
    /// The default: MQTT over TCP on every IPv4 interface, port 1883.
    pub fn default_tcp() -> Listener {
        Listener::tcp(SocketAddr::from(([0, 0, 0, 0], 1883)))
    }

    pub fn tcp(address: SocketAddr) -> Listener {
        Listener {
            address,
            transport: Transport::Tcp,
        }
    }
}

/// One connection's layer between its socket and the broker core; its state, if the transport
/// has any, lives here for the connection's life.
#[derive(Debug)]
pub enum StreamLayer {
    /// Plain TCP: bytes pass through untouched.
    Plain,
}

impl StreamLayer {
    pub fn new(transport: Transport) -> StreamLayer {
        match transport {
            Transport::Tcp => StreamLayer::Plain,
        }
    }

    /// The core's bytes from what the socket gave: `read` holds the bytes read and not yet
    /// passed on, and the core consumes from the front of what is returned, leaving a partial
    /// packet for the next read. Plain TCP returns `read` itself.
    pub fn inbound<'a>(&'a mut self, read: &'a mut BytesMut) -> &'a mut BytesMut {
        match self {
            StreamLayer::Plain => read,
        }
    }

    /// The socket's bytes for the core's `output`, in order. Plain TCP sends `output` itself,
    /// so a shared payload is written from the buffer every subscriber's copy points into.
    pub fn outbound(&mut self, output: Vec<Bytes>) -> Vec<Bytes> {
        match self {
            StreamLayer::Plain => output,
        }
    }
}
