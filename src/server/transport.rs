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
//! timer (the connect timeout, which runs from the accept), never a blocked thread. WebSocket
//! (`websocket.rs`) stacks over either: its upgrade request is bytes too, under the same timer.
//! A layer's state goes with its socket when a connection is handed over to another shard.

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

use super::websocket::{WsLayer, WsSettings};

/// How the bytes of a connection carry MQTT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Transport {
    /// MQTT directly over TCP.
    Tcp,
    /// MQTT over TLS over TCP (`--listen-tls`).
    Tls,
    /// MQTT over WebSocket over TCP (`--listen-ws`).
    Ws,
    /// MQTT over WebSocket over TLS over TCP (`--listen-wss`).
    Wss,
}

impl Transport {
    /// Whether it speaks TLS, and so needs a certificate.
    pub fn uses_tls(self) -> bool {
        matches!(self, Transport::Tls | Transport::Wss)
    }

    fn uses_websocket(self) -> bool {
        matches!(self, Transport::Ws | Transport::Wss)
    }

    /// How logs and metrics name a listener of this transport on `address`.
    pub fn listener_name(self, address: SocketAddr) -> String {
        let scheme = match self {
            Transport::Tcp => "mqtt",
            Transport::Tls => "mqtts",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        };
        format!("{scheme}://{address}")
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Tcp => "MQTT over TCP",
            Transport::Tls => "MQTT over TLS",
            Transport::Ws => "MQTT over WebSocket",
            Transport::Wss => "MQTT over WebSocket over TLS",
        })
    }
}

/// One address the broker accepts connections on, what they speak, and the settings it was
/// given of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub address: SocketAddr,
    pub transport: Transport,
    pub own: ListenerSettings,
}

/// The settings a listener can have of its own, given in its table in the config file's
/// `listen`, `listen-tls`, `listen-ws` or `listen-wss` list: a local listener for anonymous clients beside a public one
/// that asks for passwords or certificates, say. Each one not given is the broker's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListenerSettings {
    pub allow_anonymous: Option<bool>,
    pub identity_as_username: Option<bool>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    pub tls_require_client_cert: Option<bool>,
}

impl Listener {
    /// The default: MQTT over TCP on every IPv4 interface, port 1883.
    pub fn default_tcp() -> Listener {
        Listener::new(SocketAddr::from(([0, 0, 0, 0], 1883)), Transport::Tcp)
    }

    /// A listener with the broker's settings.
    pub fn new(address: SocketAddr, transport: Transport) -> Listener {
        Listener {
            address,
            transport,
            own: ListenerSettings::default(),
        }
    }

    /// Its TLS settings: its own where it has them, else the broker's.
    pub fn tls(&self, broker: &TlsOptions) -> TlsOptions {
        let own = &self.own;
        TlsOptions {
            cert: own.tls_cert.clone().or_else(|| broker.cert.clone()),
            key: own.tls_key.clone().or_else(|| broker.key.clone()),
            client_ca: own
                .tls_client_ca
                .clone()
                .or_else(|| broker.client_ca.clone()),
            require_client_cert: own
                .tls_require_client_cert
                .unwrap_or(broker.require_client_cert),
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

/// Makes the layer of each new connection, by the listener it came in on (its index in
/// `ServerOptions::listeners`); built at start, certificates replaced on reload.
#[derive(Clone, Default)]
pub struct LayerMaker {
    /// Per listener, its TLS settings and what they make (`None`: no TLS) and whether it speaks
    /// WebSocket. Shared by every clone, so a reload reaches all shards.
    listeners: Arc<[(Option<TlsListener>, bool)]>,
    websocket: WsSettings,
}

struct TlsListener {
    options: TlsOptions,
    config: RwLock<Arc<ServerConfig>>,
}

impl LayerMaker {
    /// Reads the certificate and key of each TLS listener.
    pub fn new(
        listeners: &[Listener],
        tls: &TlsOptions,
        websocket: WsSettings,
    ) -> Result<LayerMaker, TlsError> {
        let listeners = listeners
            .iter()
            .map(|listener| {
                let websocket = listener.transport.uses_websocket();
                if !listener.transport.uses_tls() {
                    return Ok((None, websocket));
                }
                let options = listener.tls(tls);
                let config = Arc::new(server_config(&options).map_err(|TlsError(error)| {
                    TlsError(format!(
                        "the {} listener on {}: {error}",
                        listener.transport, listener.address
                    ))
                })?);
                let tls = TlsListener {
                    options,
                    config: RwLock::new(config),
                };
                Ok((Some(tls), websocket))
            })
            .collect::<Result<_, TlsError>>()?;
        Ok(LayerMaker {
            listeners,
            websocket,
        })
    }

    /// Reads every TLS listener's certificate and key again, for connections accepted from
    /// now on; how many it reloaded. On error every listener keeps the ones it had.
    pub fn reload(&self) -> Result<usize, TlsError> {
        let tls = self.listeners.iter().filter_map(|(tls, _)| tls.as_ref());
        let configs = tls
            .clone()
            .map(|listener| server_config(&listener.options).map(Arc::new))
            .collect::<Result<Vec<_>, TlsError>>()?;
        for (listener, config) in tls.zip(configs.iter()) {
            *listener
                .config
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = config.clone();
        }
        Ok(configs.len())
    }

    /// The layer of a connection accepted on listener `listener`.
    pub fn layer(&self, listener: usize) -> io::Result<StreamLayer> {
        let Some((tls, websocket)) = self.listeners.get(listener) else {
            return Ok(StreamLayer::Plain);
        };
        let tls = tls.as_ref().map(TlsListener::layer).transpose()?;
        Ok(match (tls, websocket) {
            (None, false) => StreamLayer::Plain,
            (Some(tls), false) => StreamLayer::Tls(Box::new(tls)),
            (tls, true) => StreamLayer::WebSocket(Box::new(WebSocketLayer {
                tls,
                websocket: WsLayer::new(&self.websocket),
            })),
        })
    }
}

impl TlsListener {
    fn layer(&self) -> io::Result<TlsLayer> {
        let config = self
            .config
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let mut connection = ServerConnection::new(config).map_err(io::Error::other)?;
        // The core bounds what a connection may have unsent; rustls need not.
        connection.set_buffer_limit(None);
        Ok(TlsLayer {
            connection,
            plaintext: BytesMut::new(),
        })
    }
}

fn server_config(tls: &TlsOptions) -> Result<ServerConfig, TlsError> {
    let (Some(cert), Some(key)) = (&tls.cert, &tls.key) else {
        return Err(TlsError(
            "needs a certificate and key: --tls-cert and --tls-key, or tls-cert and tls-key in its table".into(),
        ));
    };
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
    WebSocket(Box<WebSocketLayer>),
}

/// WebSocket over plain TCP (`tls` is `None`) or over TLS.
pub struct WebSocketLayer {
    tls: Option<TlsLayer>,
    websocket: WsLayer,
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
            StreamLayer::WebSocket(layer) => match &mut layer.tls {
                None => layer.websocket.take_in(read),
                Some(tls) => {
                    tls.take_in(read)?;
                    layer.websocket.take_in(&mut tls.plaintext)
                }
            },
        }
    }

    /// The socket's bytes for the core's `output`, in order, with whatever the transport has
    /// to send of its own (a handshake). Plain TCP sends `output` itself, so a shared payload is
    /// written from the buffer every subscriber's copy points into.
    pub fn outbound(&mut self, output: Vec<Bytes>) -> Vec<Bytes> {
        match self {
            StreamLayer::Plain => output,
            StreamLayer::Tls(tls) => tls.seal(&output),
            StreamLayer::WebSocket(layer) => {
                let frames = layer.websocket.frame(output);
                match &mut layer.tls {
                    None => frames,
                    Some(tls) => tls.seal(&frames),
                }
            }
        }
    }

    /// Whether it holds bytes for the core that no read will bring again (plaintext a TLS
    /// connection decrypted before a hand-over).
    pub fn has_pending(&self) -> bool {
        match self {
            StreamLayer::Plain => false,
            StreamLayer::Tls(tls) => !tls.plaintext.is_empty(),
            StreamLayer::WebSocket(layer) => layer.websocket.has_pending(),
        }
    }

    /// Whether the transport has bytes of its own to send, so the writer must run even though
    /// the core has no output.
    pub fn wants_write(&self) -> bool {
        match self {
            StreamLayer::Plain => false,
            StreamLayer::Tls(tls) => tls.connection.wants_write(),
            StreamLayer::WebSocket(layer) => {
                layer.websocket.wants_write()
                    || layer
                        .tls
                        .as_ref()
                        .is_some_and(|tls| tls.connection.wants_write())
            }
        }
    }

    /// The common name of the certificate the client presented, which the listener verified
    /// against `--tls-client-ca` during the handshake.
    pub fn certificate_name(&self) -> Option<String> {
        let tls = match self {
            StreamLayer::Plain => return None,
            StreamLayer::Tls(tls) => tls,
            StreamLayer::WebSocket(layer) => layer.tls.as_ref()?,
        };
        let certificate = tls.connection.peer_certificates()?.first()?;
        let (_, parsed) = x509_parser::parse_x509_certificate(certificate).ok()?;
        let name = parsed.subject().iter_common_name().next()?;
        name.as_str().ok().map(str::to_owned)
    }

    /// Called once the core has closed the connection, before the last write: TLS says
    /// `close_notify` and WebSocket a close frame, so the client can tell the end from a
    /// truncation.
    pub fn close(&mut self) {
        match self {
            StreamLayer::Plain => {}
            StreamLayer::Tls(tls) => tls.connection.send_close_notify(),
            StreamLayer::WebSocket(layer) => {
                layer.websocket.close();
                if let Some(tls) = &mut layer.tls {
                    tls.connection.send_close_notify();
                }
            }
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
