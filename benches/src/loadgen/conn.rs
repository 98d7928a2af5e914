//! One MQTT client connection over a tokio `TcpStream` (or TLS over it, after
//! [`use_tls`]), speaking through `mqtt_broker::protocol` and nothing else.
//!
//! Why it exists: publishers, subscribers, the connect storm and the idle scenario all need the
//! same few steps (connect and wait for CONNACK, subscribe and wait for SUBACK, queue packets,
//! read whatever arrived without blocking, close cleanly). The hot loops use the non-blocking
//! half ([`Conn::read_available`], [`Conn::next_packet`], [`Conn::write_available`]) together
//! with the stream's readiness futures, so one task can wait for "readable or writable or a
//! timer" and never deadlocks on a full socket in either direction.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use bytestring::ByteString;
use mqtt_broker::protocol::{
    Connect, ConnectProperties, Decoder, Packet, ProtocolVersion, QoS, Subscribe,
    SubscriptionOptions,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
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

/// The run's TLS client settings, when `--tls-ca` was given: every connection then speaks TLS.
static TLS: OnceLock<(Arc<ClientConfig>, ServerName<'static>)> = OnceLock::new();

/// Makes every connection of this process speak TLS to a broker whose certificate chains to the
/// authorities in `ca_file` and names `server_name` (a host name or an IP address).
pub fn use_tls(ca_file: &Path, server_name: &str) -> Result<(), String> {
    let mut roots = RootCertStore::empty();
    let authorities = CertificateDer::pem_file_iter(ca_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| format!("cannot read {}: {error}", ca_file.display()))?;
    for authority in authorities {
        roots
            .add(authority)
            .map_err(|error| format!("{}: {error}", ca_file.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|error| format!("{server_name}: {error}"))?;
    TLS.set((Arc::new(config), name))
        .map_err(|_| "TLS is already set up".to_owned())
}

pub struct Conn {
    pub stream: TcpStream,
    pub version: ProtocolVersion,
    decoder: Decoder,
    rbuf: BytesMut,
    /// Bytes queued for the broker; [`Conn::write_available`] or [`Conn::flush`] sends them.
    pub wbuf: BytesMut,
    tls: Option<Box<Tls>>,
}

/// A TLS connection's state: what it read and has not decrypted, and what it encrypted and
/// has not sent.
struct Tls {
    connection: ClientConnection,
    received: BytesMut,
    sealed: BytesMut,
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
        let tls = match TLS.get() {
            Some((config, name)) => {
                let mut connection = ClientConnection::new(config.clone(), name.clone())
                    .map_err(io::Error::other)?;
                // What is queued is bounded by the callers (`unsent`); rustls need not bound it.
                connection.set_buffer_limit(None);
                Some(Box::new(Tls {
                    connection,
                    received: BytesMut::new(),
                    sealed: BytesMut::new(),
                }))
            }
            None => None,
        };
        let mut conn = Conn {
            stream,
            version,
            decoder: Decoder::client(version, MAX_PACKET),
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            tls,
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

    /// Bytes queued and not yet taken by the socket (encrypted or not).
    pub fn unsent(&self) -> usize {
        self.wbuf.len() + self.tls.as_ref().map_or(0, |tls| tls.sealed.len())
    }

    /// With TLS, encrypts what is queued (and whatever the handshake has to say) into the
    /// bytes for the socket.
    fn seal(&mut self) -> io::Result<()> {
        let Some(tls) = &mut self.tls else {
            return Ok(());
        };
        if !self.wbuf.is_empty() {
            tls.connection.writer().write_all(&self.wbuf)?;
            self.wbuf.clear();
        }
        while tls.connection.wants_write() {
            let mut out = (&mut tls.sealed).writer();
            tls.connection.write_tls(&mut out)?;
        }
        Ok(())
    }

    /// With TLS, decrypts what was read into the receive buffer.
    fn unseal(&mut self) -> io::Result<()> {
        let Some(tls) = &mut self.tls else {
            return Ok(());
        };
        while !tls.received.is_empty() {
            let taken = tls.connection.read_tls(&mut &tls.received[..])?;
            tls.received.advance(taken);
            let state = tls
                .connection
                .process_new_packets()
                .map_err(io::Error::other)?;
            let ready = state.plaintext_bytes_to_read();
            if ready > 0 {
                let start = self.rbuf.len();
                self.rbuf.resize(start + ready, 0);
                tls.connection
                    .reader()
                    .read_exact(&mut self.rbuf[start..])?;
            }
            if taken == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Sends the whole send buffer, waiting as needed.
    pub async fn flush(&mut self) -> io::Result<()> {
        self.seal()?;
        let Conn {
            stream, wbuf, tls, ..
        } = self;
        let out = match tls {
            Some(tls) => &mut tls.sealed,
            None => wbuf,
        };
        stream.write_all(out).await?;
        out.clear();
        Ok(())
    }

    /// Waits for and decodes the next packet (handshakes only; hot loops use
    /// [`Conn::read_available`]).
    pub async fn read_packet(&mut self) -> io::Result<Packet> {
        loop {
            if let Some(packet) = self.next_packet()? {
                return Ok(packet);
            }
            let Conn {
                stream, rbuf, tls, ..
            } = self;
            let target = match tls {
                Some(tls) => &mut tls.received,
                None => rbuf,
            };
            target.reserve(HANDSHAKE_CHUNK);
            if stream.read_buf(target).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.unseal()?;
            // The TLS handshake answers what it read.
            if self.tls.is_some() {
                self.flush().await?;
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
            let Conn {
                stream, rbuf, tls, ..
            } = self;
            let target = match tls {
                Some(tls) => &mut tls.received,
                None => rbuf,
            };
            target.reserve(READ_CHUNK);
            match stream.try_read_buf(target) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => got = true,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => return Err(error),
            }
        }
        self.unseal()?;
        Ok(got)
    }

    /// Writes as much of the send buffer as the socket takes without blocking.
    pub fn write_available(&mut self) -> io::Result<()> {
        self.seal()?;
        let Conn {
            stream, wbuf, tls, ..
        } = self;
        let out = match tls {
            Some(tls) => &mut tls.sealed,
            None => wbuf,
        };
        while !out.is_empty() {
            match stream.try_write(out) {
                Ok(n) => {
                    out.advance(n);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => return Err(error),
            }
        }
        if out.is_empty() {
            // Reuse the allocation from the start instead of growing behind consumed bytes.
            out.clear();
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
