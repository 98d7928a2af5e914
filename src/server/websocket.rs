//! MQTT over WebSocket (RFC 6455, MQTT 5.0 §6): the layer that turns a WebSocket connection's
//! bytes into the MQTT bytes the core reads, and the core's output into binary frames. It sits
//! over plain TCP (`--listen-ws`) or over TLS (`--listen-wss`), and is sans-IO like the rest of
//! `transport.rs`: the upgrade request and the frames are bytes passed in, the answer and the
//! frames to send are bytes passed out, so every runtime drives it without knowing about it.
//!
//! The HTTP upgrade and the reading of frames (masks, fragments, control frames, limits) are
//! `tungstenite`'s: it is the WebSocket implementation most of the Rust ecosystem runs on
//! (tokio-tungstenite, axum, warp), it is maintained and fuzzed, and its `WebSocketContext`
//! reads from whatever `Read` it is handed each call, so an in-memory pipe that answers
//! `WouldBlock` when empty drives it without a socket. Outgoing data frames are written here
//! from its `FrameHeader`: a server's frames are not masked, so the core's chunks (shared
//! payloads included) go to the socket untouched behind a header of a few bytes, instead of
//! being copied into a message and again into tungstenite's write buffer.

use std::borrow::BorrowMut;
use std::io::{self, Read, Write};
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use tungstenite::error::Error as WsError;
use tungstenite::handshake::server::{
    write_response, Callback, ErrorResponse, Request, Response, ServerHandshake,
};
use tungstenite::handshake::{HandshakeError, MidHandshake};
use tungstenite::http::{header, StatusCode};
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::{CloseFrame, FrameHeader};
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tungstenite::Message;

use crate::protocol::decoder::MAX_PACKET_SIZE;

/// The subprotocols MQTT clients offer: `mqtt` (MQTT 3.1.1 and 5.0) and `mqttv3.1`.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// The longest upgrade request accepted; browsers send well under 2 KB. A longer one is refused
/// rather than buffered for as long as the connect timeout allows.
const MAX_REQUEST: usize = 16 * 1024;

/// What every WebSocket connection of the broker is given.
#[derive(Clone, Debug)]
pub struct WsSettings {
    /// `--ws-path`: the path clients must ask for; any when `None`.
    pub path: Option<Arc<str>>,
    /// The largest MQTT packet accepted (`--max-packet-size`). A message longer than that and a
    /// fixed header is refused as it arrives, before it is buffered whole: otherwise a peer
    /// could make the broker hold one as long as the protocol allows, before it even connects.
    pub max_packet_size: usize,
}

impl Default for WsSettings {
    fn default() -> Self {
        WsSettings {
            path: None,
            max_packet_size: MAX_PACKET_SIZE,
        }
    }
}

/// One WebSocket connection's state.
pub struct WsLayer {
    state: State,
    /// MQTT bytes from binary messages that the core has not consumed yet.
    mqtt: BytesMut,
    /// Bytes of the layer's own to send: the upgrade answer, pongs, close frames.
    own: Vec<u8>,
    /// Longest message accepted, in bytes.
    max_message: usize,
}

enum State {
    /// Reading the upgrade request, of which `read` bytes came so far.
    Upgrading {
        handshake: Box<MidHandshake<ServerHandshake<Pipe, Upgrade>>>,
        read: usize,
    },
    Open(Box<WebSocketContext>),
    /// Refused or closed: nothing more is read or sent.
    Closed,
}

impl WsLayer {
    /// A connection whose upgrade request is still to come.
    pub fn new(settings: &WsSettings) -> WsLayer {
        let pipe = Pipe::new(BytesMut::new(), Vec::new());
        // The packet, its fixed header's type byte and remaining length.
        let max_message = settings.max_packet_size.saturating_add(5);
        let path = settings.path.clone();
        let handshake = ServerHandshake::start(pipe, Upgrade { path }, Some(config(max_message)));
        WsLayer {
            state: State::Upgrading {
                handshake: Box::new(handshake),
                read: 0,
            },
            mqtt: BytesMut::new(),
            own: Vec::new(),
            max_message,
        }
    }

    /// Takes in everything `read` holds; the MQTT bytes it carried are in [`WsLayer::mqtt`]. An
    /// error ends the connection, after the bytes it left in `own` (a refusal, a close frame)
    /// are sent.
    pub fn take_in(&mut self, read: &mut BytesMut) -> io::Result<&mut BytesMut> {
        if let State::Upgrading { .. } = self.state {
            self.upgrade(read)?;
        }
        if let State::Closed = self.state {
            read.clear();
        }
        if let State::Open(context) = &mut self.state {
            let result =
                read_messages(context, &mut Pipe::new(read, &mut self.own), &mut self.mqtt);
            if result.is_err() {
                self.state = State::Closed;
            }
            result?;
        }
        Ok(&mut self.mqtt)
    }

    fn upgrade(&mut self, read: &mut BytesMut) -> io::Result<()> {
        // Refused unless it goes on: every way out but two ends the connection.
        let State::Upgrading {
            mut handshake,
            read: mut so_far,
        } = std::mem::replace(&mut self.state, State::Closed)
        else {
            return Ok(());
        };
        so_far += read.len();
        handshake.get_mut().get_mut().input.extend_from_slice(read);
        read.clear();
        match handshake.handshake() {
            Ok(websocket) => {
                let pipe = websocket.into_inner();
                self.own.extend_from_slice(&pipe.output);
                // A client may not send frames before it has the answer, so nothing is left in
                // the pipe: tungstenite refuses a request followed by more bytes.
                self.state = State::Open(Box::new(WebSocketContext::new(
                    Role::Server,
                    Some(config(self.max_message)),
                )));
                Ok(())
            }
            Err(HandshakeError::Interrupted(_)) if so_far > MAX_REQUEST => {
                let problem = format!("an upgrade request longer than {MAX_REQUEST} bytes");
                write_refusal(&mut self.own, &refusal(StatusCode::BAD_REQUEST, &problem));
                Err(io::Error::other(problem))
            }
            Err(HandshakeError::Interrupted(mut handshake)) => {
                self.own.append(&mut handshake.get_mut().get_mut().output);
                self.state = State::Upgrading {
                    handshake: Box::new(handshake),
                    read: so_far,
                };
                Ok(())
            }
            Err(HandshakeError::Failure(error)) => {
                // A refusal of `Upgrade` was written into the pipe, which went with the error;
                // it is written again from the error's response.
                let response = match &error {
                    WsError::Http(response) => {
                        let body = response.body().as_deref().unwrap_or_default();
                        refusal(response.status(), String::from_utf8_lossy(body).trim_end())
                    }
                    other => refusal(
                        StatusCode::BAD_REQUEST,
                        &format!(
                            "this address serves MQTT over WebSocket and needs a WebSocket upgrade request (GET, Connection: Upgrade, Upgrade: websocket, Sec-WebSocket-Version: 13): {other}"
                        ),
                    ),
                };
                write_refusal(&mut self.own, &response);
                Err(io::Error::other(format!(
                    "WebSocket upgrade refused: {error}"
                )))
            }
        }
    }

    /// The socket's bytes for the core's `output`: the layer's own bytes, then one binary frame
    /// holding all of `output`.
    pub fn frame(&mut self, output: Vec<Bytes>) -> Vec<Bytes> {
        let mut head = std::mem::take(&mut self.own);
        let length: usize = output.iter().map(Bytes::len).sum();
        let open = matches!(&self.state, State::Open(context) if context.can_write());
        if !open || length == 0 {
            return if head.is_empty() {
                Vec::new()
            } else {
                vec![Bytes::from(head)]
            };
        }
        let header = FrameHeader {
            opcode: OpCode::Data(Data::Binary),
            ..FrameHeader::default()
        };
        // Writing into a Vec cannot fail.
        let _ = header.format(length as u64, &mut head);
        let mut frames = Vec::with_capacity(output.len() + 1);
        frames.push(Bytes::from(head));
        frames.extend(output);
        frames
    }

    /// Whether it holds MQTT bytes the core has not consumed.
    pub fn has_pending(&self) -> bool {
        !self.mqtt.is_empty()
    }

    /// Whether it has bytes of its own to send.
    pub fn wants_write(&self) -> bool {
        !self.own.is_empty()
    }

    /// The core closed the connection: a close frame says it was meant.
    pub fn close(&mut self) {
        if let State::Open(context) = &mut self.state {
            let frame = CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            };
            // Writing into memory cannot block; tungstenite ends with `ConnectionClosed`
            // once the close frame is out, which is what is wanted.
            let _ = context.close(&mut Pipe::new(BytesMut::new(), &mut self.own), Some(frame));
        }
    }
}

/// Reads every whole message in `read`, appending binary ones to `mqtt`. Pongs and the reply
/// to a close are left in the pipe's output by tungstenite; a breach of the protocol gets a
/// close frame with its code there too, and an error.
fn read_messages(
    context: &mut WebSocketContext,
    pipe: &mut Pipe<&mut BytesMut, &mut Vec<u8>>,
    mqtt: &mut BytesMut,
) -> io::Result<()> {
    let refuse = |context: &mut WebSocketContext, pipe: &mut Pipe<_, _>, code, reason: &str| {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = context.close(pipe, Some(frame));
        Err(io::Error::other(reason.to_owned()))
    };
    loop {
        match context.read(pipe) {
            Ok(Message::Binary(payload)) => mqtt.extend_from_slice(&payload),
            Ok(Message::Text(_)) => {
                return refuse(
                    context,
                    pipe,
                    CloseCode::Unsupported,
                    "MQTT goes in binary frames, not text",
                );
            }
            Ok(Message::Close(_)) => {
                // Sends the reply tungstenite queued.
                let _ = context.flush(pipe);
                return Err(io::Error::other("the client closed the WebSocket"));
            }
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
            Err(WsError::Io(error)) if error.kind() == io::ErrorKind::WouldBlock => break,
            Err(WsError::Protocol(error)) => {
                return refuse(context, pipe, CloseCode::Protocol, &error.to_string());
            }
            Err(WsError::Capacity(error)) => {
                return refuse(context, pipe, CloseCode::Size, &error.to_string());
            }
            Err(WsError::Utf8(error)) => {
                return refuse(context, pipe, CloseCode::Invalid, &error);
            }
            Err(error) => return Err(io::Error::other(error.to_string())),
        }
    }
    // Sends the pongs tungstenite queued while reading.
    let _ = context.flush(pipe);
    Ok(())
}

fn config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        // tungstenite allocates its read buffer up front; the connection's own read buffer
        // already sizes the reads, so this one need not be large.
        .read_buffer_size(4096)
        // Checked on each frame's header, before its payload is read, and on the message the
        // frames add up to.
        .max_frame_size(Some(max_message))
        .max_message_size(Some(max_message))
}

/// The upgrade's checks of the request: the path, the subprotocol.
struct Upgrade {
    /// `--ws-path`; any path when `None`.
    path: Option<Arc<str>>,
}

impl Callback for Upgrade {
    fn on_request(
        self,
        request: &Request,
        mut response: Response,
    ) -> Result<Response, ErrorResponse> {
        if let Some(path) = &self.path {
            if request.uri().path() != &**path {
                let problem = format!(
                    "no MQTT at {}; it is served at {path}",
                    request.uri().path()
                );
                return Err(refusal(StatusCode::NOT_FOUND, &problem));
            }
        }
        let offered = request.headers().get_all(header::SEC_WEBSOCKET_PROTOCOL);
        let mut offered = offered
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .peekable();
        // Lenient like Mosquitto: a client that names no subprotocol is served too.
        if offered.peek().is_none() {
            return Ok(response);
        }
        let offered: Vec<&str> = offered.collect();
        match offered.iter().find(|name| SUBPROTOCOLS.contains(name)) {
            Some(name) => {
                let value = header::HeaderValue::from_str(name).map_err(|_| {
                    refusal(StatusCode::BAD_REQUEST, "unreadable Sec-WebSocket-Protocol")
                })?;
                response
                    .headers_mut()
                    .insert(header::SEC_WEBSOCKET_PROTOCOL, value);
                Ok(response)
            }
            None => {
                let problem = format!(
                    "the client offers the subprotocols {}, and this is MQTT: offer \"mqtt\" (or \"mqttv3.1\")",
                    offered.join(", ")
                );
                Err(refusal(StatusCode::BAD_REQUEST, &problem))
            }
        }
    }
}

/// An HTTP refusal with `problem` as its plain-text body.
fn refusal(status: StatusCode, problem: &str) -> ErrorResponse {
    let body = format!("{problem}\n");
    let mut response = ErrorResponse::new(None);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CONTENT_LENGTH, body.len().into());
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    *response.body_mut() = Some(body);
    response
}

fn write_refusal(out: &mut Vec<u8>, response: &ErrorResponse) {
    // Writing into a Vec cannot fail.
    let _ = write_response(&mut *out, response);
    out.extend_from_slice(response.body().as_deref().unwrap_or_default().as_bytes());
}

/// tungstenite's stream: reads take from `input` and answer `WouldBlock` when it is empty, so
/// tungstenite stops where the bytes read so far end; writes go to `output`. Owned while the
/// upgrade request is read (the handshake keeps its stream), borrowed after.
struct Pipe<I = BytesMut, O = Vec<u8>> {
    input: I,
    output: O,
}

impl<I: BorrowMut<BytesMut>, O: BorrowMut<Vec<u8>>> Pipe<I, O> {
    fn new(input: I, output: O) -> Pipe<I, O> {
        Pipe { input, output }
    }
}

impl<I: BorrowMut<BytesMut>, O> Read for Pipe<I, O> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let input = self.input.borrow_mut();
        if input.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let taken = buf.len().min(input.len());
        buf[..taken].copy_from_slice(&input[..taken]);
        input.advance(taken);
        Ok(taken)
    }
}

impl<I, O: BorrowMut<Vec<u8>>> Write for Pipe<I, O> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(layer: &mut WsLayer, request: &str) -> (io::Result<()>, String) {
        let result = layer
            .take_in(&mut BytesMut::from(request.as_bytes()))
            .map(|_| ());
        let answer = String::from_utf8_lossy(&std::mem::take(&mut layer.own)).into_owned();
        (result, answer)
    }

    fn request(protocols: &str) -> String {
        format!(
            "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{protocols}\r\n"
        )
    }

    #[test]
    fn the_subprotocol_answered_is_the_one_offered_and_none_is_accepted() {
        for (offered, answered) in [
            ("Sec-WebSocket-Protocol: mqttv3.1\r\n", Some("mqttv3.1")),
            ("Sec-WebSocket-Protocol: chat, mqtt\r\n", Some("mqtt")),
            ("", None),
        ] {
            let (result, answer) =
                feed(&mut WsLayer::new(&WsSettings::default()), &request(offered));
            assert!(
                result.is_ok() && answer.starts_with("HTTP/1.1 101"),
                "{answer}"
            );
            let header = answered.map(|name| format!("sec-websocket-protocol: {name}\r\n"));
            let found = answer
                .to_ascii_lowercase()
                .contains("sec-websocket-protocol");
            assert_eq!(found, header.is_some(), "{answer}");
            if let Some(header) = header {
                assert!(answer.to_ascii_lowercase().contains(&header), "{answer}");
            }
        }
        let (result, answer) = feed(
            &mut WsLayer::new(&WsSettings::default()),
            &request("Sec-WebSocket-Protocol: chat\r\n"),
        );
        assert!(
            result.is_err() && answer.starts_with("HTTP/1.1 400"),
            "{answer}"
        );
    }

    #[test]
    fn a_request_in_pieces_is_upgraded_and_an_endless_one_refused() {
        let mut layer = WsLayer::new(&WsSettings::default());
        let whole = request("");
        let (result, answer) = feed(&mut layer, &whole[..20]);
        assert!(result.is_ok() && answer.is_empty());
        let (result, answer) = feed(&mut layer, &whole[20..]);
        assert!(
            result.is_ok() && answer.starts_with("HTTP/1.1 101"),
            "{answer}"
        );

        let mut layer = WsLayer::new(&WsSettings::default());
        let header = format!("GET / HTTP/1.1\r\nX-Padding: {}\r\n", "x".repeat(9000));
        assert!(feed(&mut layer, &header).0.is_ok());
        let (result, answer) = feed(&mut layer, &header);
        assert!(
            result.is_err() && answer.starts_with("HTTP/1.1 400"),
            "{answer}"
        );
    }

    #[test]
    fn a_message_longer_than_the_largest_packet_is_refused_from_its_header() {
        let settings = WsSettings {
            path: None,
            max_packet_size: 1000,
        };
        let mut layer = WsLayer::new(&settings);
        assert!(feed(&mut layer, &request("")).0.is_ok());
        // A masked binary frame announcing 2000 bytes (126: a 16-bit length follows), of which
        // only the header arrives.
        let header = [0x82, 0x80 | 126, 0x07, 0xD0, 1, 2, 3, 4];
        let refused = layer.take_in(&mut BytesMut::from(&header[..])).map(|_| ());
        assert!(refused.is_err(), "a 2000-byte frame over a 1000-byte limit");

        let mut layer = WsLayer::new(&settings);
        assert!(feed(&mut layer, &request("")).0.is_ok());
        let mut frame = vec![0x82, 0x80 | 100, 0, 0, 0, 0];
        frame.extend_from_slice(&[0x30; 100]);
        let accepted = layer
            .take_in(&mut BytesMut::from(&frame[..]))
            .map(|mqtt| mqtt.len());
        assert_eq!(accepted.ok(), Some(100), "a frame within the limit");
    }
}
