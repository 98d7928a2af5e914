//! What a listener speaks below MQTT, and the byte-stream layer that speaks it for each of its
//! connections. A connection's tasks (`connection.rs`) are the same for every transport: they
//! read bytes from the socket, pass them through the connection's [`StreamLayer`] and give what
//! comes out to the broker core; they take the core's output, pass it through the layer the
//! other way and write what comes out. The layer is sans-IO, as the core is: bytes in, bytes
//! out, no socket, so every runtime drives it the same way.
//!
//! Plain TCP is the empty layer, and costs nothing: the bytes read are the core's bytes, in the
//! same buffer. TLS is rustls' `ServerConnection`, fed with `read_tls` and drained with
//! `write_tls`; its handshake is bytes like any other, so a slow or silent TLS client costs a
//! timer (the connect timeout, which runs from the accept), never a blocked thread. A layer's
//! state goes with its socket when a connection is handed over to another shard.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use bytes::{Buf, Bytes, BytesMut};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};

/// How the bytes of a connection carry MQTT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Transport {
    /// MQTT directly over TCP.
    Tcp,
    /// MQTT over TLS over TCP (`--listen-tls`).
    Tls,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Tcp => "MQTT over TCP",
            Transport::Tls => "MQTT over TLS",
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
        Listener {
            address: SocketAddr::from(([0, 0, 0, 0], 1883)),
            transport: Transport::Tcp,
        }
    }
}

/// The certificate and key the TLS listeners present (`--tls-cert`, `--tls-key`), and how they
/// check clients' certificates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsOptions {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The authorities client certificates must chain to (`--tls-client-ca`).
    pub client_ca: Option<PathBuf>,
    /// Refuse clients that present no certificate (`--tls-require-client-cert`).
    pub require_client_cert: bool,
}

/// Why the TLS listeners cannot start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// Makes the layer of each new connection; built at start, its certificate replaced on reload.
#[derive(Clone, Default)]
pub struct LayerMaker {
    /// Shared by every clone, so a reload reaches all shards.
    tls: Option<Arc<RwLock<Arc<ServerConfig>>>>,
}

impl LayerMaker {
    /// Reads the certificate and key when a TLS listener needs them.
    pub fn new(listeners: &[Listener], tls: &TlsOptions) -> Result<LayerMaker, TlsError> {
        if !listeners
            .iter()
            .any(|listener| listener.transport == Transport::Tls)
        {
            return Ok(LayerMaker::default());
        }
        let (Some(cert), Some(key)) = (&tls.cert, &tls.key) else {
            return Err(TlsError(
                "a TLS listener needs --tls-cert and --tls-key".into(),
            ));
        };
        let config = Arc::new(server_config(cert, key, tls)?);
        Ok(LayerMaker {
            tls: Some(Arc::new(RwLock::new(config))),
        })
    }

    /// Reads the certificate and key again for connections accepted from now on; false when
    /// no listener speaks TLS. On error the ones before stay in force.
    pub fn reload(&self, tls: &TlsOptions) -> Result<bool, TlsError> {
        let (Some(current), Some(cert), Some(key)) = (&self.tls, &tls.cert, &tls.key) else {
            return Ok(false);
        };
        let config = Arc::new(server_config(cert, key, tls)?);
        *current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = config;
        Ok(true)
    }

    /// The layer of a connection accepted on a `transport` listener.
    pub fn layer(&self, transport: Transport) -> io::Result<StreamLayer> {
        match (transport, &self.tls) {
            (Transport::Tcp, _) => Ok(StreamLayer::Plain),
            (Transport::Tls, Some(config)) => {
                let config = config
                    .read()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .clone();
                let mut connection = ServerConnection::new(config).map_err(io::Error::other)?;
                // The core bounds what a connection may have unsent; rustls need not.
                connection.set_buffer_limit(None);
                Ok(StreamLayer::Tls(Box::new(TlsLayer {
                    connection,
                    plaintext: BytesMut::new(),
                })))
            }
            (Transport::Tls, None) => Err(io::Error::other("TLS is not configured")),
        }
    }
}

fn server_config(cert: &Path, key: &Path, tls: &TlsOptions) -> Result<ServerConfig, TlsError> {
    let chain = certificates(cert, "certificate")?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|error| {
        TlsError(format!(
            "cannot read private key {}: {error}",
            key.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError(error.to_string()))?;
    let builder = match &tls.client_ca {
        Some(client_ca) => {
            let invalid = |error: rustls::Error| {
                TlsError(format!("client CA {}: {error}", client_ca.display()))
            };
            let mut roots = RootCertStore::empty();
            for authority in certificates(client_ca, "client CA")? {
                roots.add(authority).map_err(invalid)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if tls.require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|error| TlsError(format!("client CA {}: {error}", client_ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None if tls.require_client_cert => {
            return Err(TlsError(
                "--tls-require-client-cert needs --tls-client-ca, the authorities client certificates must chain to".into(),
            ));
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key_der).map_err(|error| {
        TlsError(format!(
            "certificate {} and key {} do not make a TLS identity: {error}",
            cert.display(),
            key.display()
        ))
    })?;
    config.alpn_protocols = vec![b"mqtt".to_vec()];
    Ok(config)
}

/// The PEM certificates in `file`, at least one.
fn certificates(file: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_file_iter(file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| TlsError(format!("cannot read {what} {}: {error}", file.display())))?;
    if certificates.is_empty() {
        return Err(TlsError(format!(
            "{what} file {} holds no PEM certificate",
            file.display()
        )));
    }
    Ok(certificates)
}

/// One connection's layer between its socket and the broker core; its state, if the transport
/// has any, lives here for the connection's life.
pub enum StreamLayer {
    /// Plain TCP: bytes pass through untouched.
    Plain,
    Tls(Box<TlsLayer>),
}

/// A TLS connection's state, and the plaintext it decrypted that the core has not consumed
/// yet (the start of a packet).
pub struct TlsLayer {
    connection: ServerConnection,
    plaintext: BytesMut,
}

impl StreamLayer {
    /// The core's bytes from what the socket gave: `read` holds the bytes read and not yet
    /// passed on, and the core consumes from the front of what is returned, leaving a partial
    /// packet for the next read. Plain TCP returns `read` itself. An error means the peer
    /// broke the transport's rules: the connection must close (after [`StreamLayer::outbound`],
    /// which sends TLS's alert).
    pub fn inbound<'a>(&'a mut self, read: &'a mut BytesMut) -> io::Result<&'a mut BytesMut> {
        match self {
            StreamLayer::Plain => Ok(read),
            StreamLayer::Tls(tls) => {
                tls.take_in(read)?;
                Ok(&mut tls.plaintext)
            }
        }
    }

    /// The socket's bytes for the core's `output`, in order, with whatever the transport has
    /// to send of its own (a handshake). Plain TCP sends `output` itself, so a shared payload is
    /// written from the buffer every subscriber's copy points into.
    pub fn outbound(&mut self, output: Vec<Bytes>) -> Vec<Bytes> {
        match self {
            StreamLayer::Plain => output,
            StreamLayer::Tls(tls) => tls.seal(&output),
        }
    }

    /// Whether it holds bytes for the core that no read will bring again (plaintext a TLS
    /// connection decrypted before a hand-over).
    pub fn has_pending(&self) -> bool {
        match self {
            StreamLayer::Plain => false,
            StreamLayer::Tls(tls) => !tls.plaintext.is_empty(),
        }
    }

    /// Whether the transport has bytes of its own to send, so the writer must run even though
    /// the core has no output.
    pub fn wants_write(&self) -> bool {
        match self {
            StreamLayer::Plain => false,
            StreamLayer::Tls(tls) => tls.connection.wants_write(),
        }
    }

    /// The common name of the certificate the client presented, which the listener verified
    /// against `--tls-client-ca` during the handshake.
    pub fn certificate_name(&self) -> Option<String> {
        let StreamLayer::Tls(tls) = self else {
            return None;
        };
        let certificate = tls.connection.peer_certificates()?.first()?;
        let (_, parsed) = x509_parser::parse_x509_certificate(certificate).ok()?;
        let name = parsed.subject().iter_common_name().next()?;
        name.as_str().ok().map(str::to_owned)
    }

    /// Called once the core has closed the connection, before the last write: TLS says
    /// `close_notify`, so the client can tell the end from a truncation.
    pub fn close(&mut self) {
        if let StreamLayer::Tls(tls) = self {
            tls.connection.send_close_notify();
        }
    }
}

impl TlsLayer {
    fn take_in(&mut self, read: &mut BytesMut) -> io::Result<()> {
        while !read.is_empty() {
            let taken = self.connection.read_tls(&mut &read[..])?;
            read.advance(taken);
            let state = self
                .connection
                .process_new_packets()
                .map_err(io::Error::other)?;
            let ready = state.plaintext_bytes_to_read();
            if ready > 0 {
                let start = self.plaintext.len();
                self.plaintext.resize(start + ready, 0);
                self.connection
                    .reader()
                    .read_exact(&mut self.plaintext[start..])?;
            }
            if taken == 0 {
                break;
            }
        }
        Ok(())
    }

    fn seal(&mut self, output: &[Bytes]) -> Vec<Bytes> {
        for chunk in output {
            // With no buffer limit rustls takes everything.
            let _ = self.connection.writer().write_all(chunk);
        }
        let mut sealed = Vec::new();
        while self.connection.wants_write() {
            if self.connection.write_tls(&mut sealed).is_err() {
                break;
            }
        }
        if sealed.is_empty() {
            Vec::new()
        } else {
            vec![Bytes::from(sealed)]
        }
    }
}
