//! One MQTT client connection over a tokio `TcpStream`, speaking through
//! `mqtt_broker::protocol` and nothing else.
//!
//! Why it exists: publishers, subscribers, the connect storm and the idle scenario all need the
//! same few steps (connect and wait for CONNACK, subscribe and wait for SUBACK, queue packets,
//! read whatever arrived without blocking, close cleanly). The hot loops use the non-blocking
//! half ([`Conn::read_available`], [`Conn::next_packet`], [`Conn::write_available`]) together
//! with the stream's readiness futures, so one task can wait for "readable or writable or a
//! timer" and never deadlocks on a full socket in either direction.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use bytestring::ByteString;
use mqtt_broker::protocol::{
    Connect, ConnectProperties, Decoder, Packet, ProtocolVersion, QoS, Subscribe,
    SubscriptionOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest packet accepted from the broker: the biggest benchmark payload plus headroom.
pub const MAX_PACKET: usize = 1 << 20;

/// Bytes reserved in the receive buffer before each read on the hot path.
const READ_CHUNK: usize = 64 * 1024;

/// Bytes reserved per read during handshakes: an idle connection should not hold 64 KiB.
const HANDSHAKE_CHUNK: usize = 512;

/// How long a clean close waits for the broker to close its side.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Session Expiry Interval a v5 client asks for to keep its session (seconds): longer than any
/// run, and the run ends the session itself.
const PERSISTENT_EXPIRY: u32 = 3600;

pub struct Conn {
    pub stream: TcpStream,
    pub version: ProtocolVersion,
    decoder: Decoder,
    rbuf: BytesMut,
    /// Bytes queued for the broker; [`Conn::write_available`] or [`Conn::flush`] sends them.
    pub wbuf: BytesMut,
}

/// An `io::Error` for anything the codec or the broker got wrong.
pub fn protocol_error(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

impl Conn {
    /// Opens a TCP connection and completes the MQTT handshake (CONNECT, then CONNACK) with a
    /// clean session that ends with the connection. A refusal is an error. Keep-alive 0: a
    /// benchmark connection never idles out.
    pub async fn connect(
        addr: SocketAddr,
        client_id: &str,
        version: ProtocolVersion,
    ) -> io::Result<Conn> {
        Conn::connect_with(addr, client_id, version, false).await
    }

    /// [`Conn::connect`], with a session the broker keeps after the connection when
    /// `persistent` (3.x clean session 0, v5 clean start 0 and a session expiry). A broker with
    /// storage journals such a session's subscriptions and the QoS 1/2 messages queued for it.
    pub async fn connect_with(
        addr: SocketAddr,
        client_id: &str,
        version: ProtocolVersion,
        persistent: bool,
    ) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut conn = Conn {
            stream,
            version,
            decoder: Decoder::client(version, MAX_PACKET),
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
        };
        let properties = ConnectProperties {
            session_expiry_interval: (persistent && version == ProtocolVersion::V5)
                .then_some(PERSISTENT_EXPIRY),
            ..ConnectProperties::default()
        };
        conn.queue(&Packet::Connect(Box::new(Connect {
            protocol: version,
            clean_start: !persistent,
            keep_alive: 0,
            client_id: ByteString::from(client_id),
            will: None,
            username: None,
            password: None,
            properties,
        })))?;
        conn.flush().await?;
        match conn.read_packet().await? {
            Packet::ConnAck(connack) if !connack.reason_code.is_error() => Ok(conn),
            Packet::ConnAck(connack) => Err(protocol_error(format!(
                "CONNECT refused: {}",
                connack.reason_code
            ))),
            other => Err(protocol_error(format!(
                "expected CONNACK, got {:?}",
                other.packet_type()
            ))),
        }
    }

    /// Subscribes to one filter and waits for a SUBACK that grants it.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> io::Result<()> {
        let packet_id = self.queue_subscribe(filter, qos)?;
        self.flush().await?;
        loop {
            match self.read_packet().await? {
                Packet::SubAck(suback) if suback.packet_id == packet_id => {
                    return match suback.reason_codes.first() {
                        Some(code) if !code.is_error() => Ok(()),
                        code => Err(protocol_error(format!(
                            "SUBSCRIBE {filter} refused: {code:?}"
                        ))),
                    };
                }
                // Nothing else should come first on a fresh clean session; skip it if it does.
                _ => continue,
            }
        }
    }

    /// Appends a SUBSCRIBE to one filter to the send buffer; returns its packet identifier.
    pub fn queue_subscribe(&mut self, filter: &str, qos: QoS) -> io::Result<u16> {
        let packet_id = 1;
        self.queue(&Packet::Subscribe(Subscribe {
            packet_id,
            filters: vec![(
                ByteString::from(filter),
                SubscriptionOptions {
                    qos,
                    ..SubscriptionOptions::default()
                },
            )],
            properties: Default::default(),
        }))?;
        Ok(packet_id)
    }

    /// Appends `packet` to the send buffer.
    pub fn queue(&mut self, packet: &Packet) -> io::Result<()> {
        packet
            .encode(self.version, &mut self.wbuf)
            .map_err(|error| protocol_error(format!("encode: {error}")))
    }

    /// Sends the whole send buffer, waiting as needed.
    pub async fn flush(&mut self) -> io::Result<()> {
        self.stream.write_all(&self.wbuf).await?;
        self.wbuf.clear();
        Ok(())
    }

    /// Waits for and decodes the next packet (handshakes only; hot loops use
    /// [`Conn::read_available`]).
    pub async fn read_packet(&mut self) -> io::Result<Packet> {
        loop {
            if let Some(packet) = self.next_packet()? {
                return Ok(packet);
            }
            self.rbuf.reserve(HANDSHAKE_CHUNK);
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Takes the next whole packet off the receive buffer, if there is one.
    pub fn next_packet(&mut self) -> io::Result<Option<Packet>> {
        self.decoder
            .decode(&mut self.rbuf)
            .map_err(|error| protocol_error(format!("decode: {error}")))
    }

    /// Reads whatever the socket holds without blocking. `Ok(true)`: bytes arrived (or nothing
    /// was ready); end of stream is an error, since the broker never closes first in a run.
    pub fn read_available(&mut self) -> io::Result<bool> {
        let mut got = false;
        // A few reads at most, so one busy connection cannot starve its task's other duties.
        for _ in 0..4 {
            self.rbuf.reserve(READ_CHUNK);
            match self.stream.try_read_buf(&mut self.rbuf) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => got = true,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => return Err(error),
            }
        }
        Ok(got)
    }

    /// Writes as much of the send buffer as the socket takes without blocking.
    pub fn write_available(&mut self) -> io::Result<()> {
        while !self.wbuf.is_empty() {
            match self.stream.try_write(&self.wbuf) {
                Ok(n) => {
                    self.wbuf.advance(n);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => return Err(error),
            }
        }
        if self.wbuf.is_empty() {
            // Reuse the allocation from the start instead of growing behind consumed bytes.
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Sends DISCONNECT, shuts the write side and waits (briefly) for the broker to close, so
    /// neither side sees a reset. Errors are ignored: the run's figures are already taken.
    pub async fn close(mut self) {
        let disconnect = Packet::Disconnect(Box::default());
        if self.queue(&disconnect).is_err() {
            return;
        }
        let closing = async {
            self.flush().await?;
            self.stream.shutdown().await?;
            let mut sink = vec![0u8; 4096];
            while self.stream.read(&mut sink).await? > 0 {}
            io::Result::Ok(())
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
    }
}
