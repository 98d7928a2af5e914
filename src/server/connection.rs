//! One connection's two tasks. The reader feeds bytes to the broker and carries out a hand-over;
//! the writer, started on the first output, sends what the broker queued and closes the socket
//! when the broker says so.
//!
//! The tasks reach the shard that serves them only through [`Host`], which this file defines and
//! `shard.rs` implements: the shard depends on its connections' tasks, never the reverse.

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use futures_lite::future;
use mqtt_broker_shards::{Io, SendError};
use tracing::{debug, warn};

use super::conn_handle::ConnHandle;
use super::envelope::Envelope;
use super::large_packets::{LargePacketTicket, LargePackets};
use super::outputs::TICK;
use super::transport::StreamLayer;
use crate::broker::{
    Arrival, AuthRequest, AuthVerdict, Broker, ConnId, HandedOverConnect, Origin, ShardId,
    Timestamp,
};
use crate::protocol::decoder::{large_packet_growth, reserve_for_read};
use crate::security::authenticator::Exchange;

/// What a connection's tasks need from the shard that serves them. Implemented by the shard
/// (`shard.rs`) and taken as a type parameter, so every call is static.
pub(super) trait Host<I: Io>: 'static {
    /// The shard's broker core.
    fn broker(&self) -> &RefCell<Broker>;
    /// The shard's clock, for the core.
    fn now(&self) -> Timestamp;
    /// Carries out everything the core asked for after an input.
    fn pump(self: &Rc<Self>);
    /// Counts bytes read from and written to the shard's sockets, for its reports.
    fn count_bytes(&self, received: usize, sent: usize);
    /// Counts `conn` among the shard's connections, so the core's outputs reach it.
    fn add_conn(&self, conn: ConnId, handle: Rc<ConnHandle<I>>);
    fn remove_conn(&self, conn: ConnId);
    /// The verdict on a client's proof of identity by the policy of `listener`, checked away
    /// from the shard.
    async fn authenticate(
        &self,
        listener: usize,
        request: AuthRequest,
        certificate_name: Option<String>,
        exchange: Exchange,
    ) -> (AuthVerdict, Exchange);
    /// Waits while the shard is held back (another shard's inbox or the journal behind).
    async fn pause_publisher(self: &Rc<Self>);
    /// Size of a read buffer (`--read-buffer-size`).
    fn read_buffer_size(&self) -> usize;
    /// The shard's share of `--buffer-budget`, for unsent output and large packets together.
    fn buffer_budget(&self) -> usize;
    /// The shard's large packets in progress.
    fn large_packets(&self) -> &RefCell<LargePackets>;
    /// A read buffer from the shard's pool.
    fn take_buffer(&self) -> BytesMut;
    /// Gives a buffer back to the shard's pool.
    fn return_buffer(&self, buf: BytesMut);
    /// Sends an envelope to shard `to`.
    fn send_envelope(&self, to: ShardId, envelope: Envelope) -> Result<(), SendError>;
}

enum ReadOutcome {
    /// Bytes arrived; the flag says they filled the buffer.
    Data(BytesMut, bool),
    Closed(BytesMut),
    Stopped,
}

/// A connection as its shard first sees it.
pub(super) struct Accepted {
    pub conn: ConnId,
    /// The client's address, for logs.
    pub peer: Option<SocketAddr>,
    /// The listener it came in on (its index in `ServerOptions::listeners`), whose policy
    /// decides who it may be.
    pub listener: usize,
}

/// Serves a connection from accept (or hand-over) until it closes.
pub(super) async fn read_loop<I: Io, H: Host<I>>(
    shard: Rc<H>,
    stream: I::Stream,
    layer: StreamLayer,
    accepted: Accepted,
    mut buf: BytesMut,
    handed_over: Option<HandedOverConnect>,
) {
    let Accepted {
        conn,
        peer,
        listener,
    } = accepted;
    let origin = Origin { peer, listener };
    #[cfg(target_os = "linux")]
    let fd = I::raw_fd(&stream);
    // A handed-over connection's CONNECT came with its arrival.
    let mut arrival_noted = handed_over.is_some();
    let (mut reader, writer) = I::split(stream);
    // The last read carried a PUBLISH: this connection adds load, so it is the one to slow down
    // when the shard is overloaded.
    let mut publishing = false;
    let handle = Rc::new(ConnHandle::<I>::new(writer, layer));
    shard.add_conn(conn, handle.clone());
    {
        let now = shard.now();
        let mut broker = shard.broker().borrow_mut();
        match handed_over {
            Some(connect) => broker.handle_handed_over(conn, origin, connect, now),
            None => broker.handle_accepted(conn, origin, now),
        }
    }
    // What a hand-over brought: bytes read after the CONNECT, or plaintext its layer holds,
    // and what its layer had to send.
    let mut refused = false;
    if !buf.is_empty() || handle.layer.borrow().has_pending() {
        match take_in(&shard, &handle, conn, &mut buf) {
            Ok(published) => publishing = published,
            Err(()) => refused = true,
        }
    }
    if handle.layer.borrow().wants_write() {
        start_writer(&shard, conn, &handle);
    }
    shard.pump();
    let read_buffer_size = shard.read_buffer_size();
    // The last read filled the buffer, so more is waiting: read again without asking first.
    let mut more_waiting = false;
    let mut large_packet = LargePacketTicket::new(shard.large_packets());
    // What a multi-round authentication method remembers between the client's messages.
    let mut exchange: Exchange = None;
    loop {
        if refused {
            break;
        }
        let asked = handle.authenticate.borrow_mut().take();
        if let Some(request) = asked {
            let certificate_name = handle.layer.borrow().certificate_name();
            let checked = async {
                Some(
                    shard
                        .authenticate(listener, request, certificate_name, exchange.take())
                        .await,
                )
            };
            let stop = async {
                handle.stop_reading.notified().await;
                None
            };
            let Some((verdict, kept)) = future::or(checked, stop).await else {
                break;
            };
            exchange = kept;
            let now = shard.now();
            shard
                .broker()
                .borrow_mut()
                .handle_authenticated(conn, verdict, now);
            shard.pump();
            // What the client sent meanwhile waited: it is input now, unless the connection is
            // moving to another shard, which takes it along.
            let waiting = !buf.is_empty() || handle.layer.borrow().has_pending();
            if waiting && handle.hand_over.borrow().is_none() {
                match take_in(&shard, &handle, conn, &mut buf) {
                    Ok(published) => publishing = published,
                    Err(()) => break,
                }
                shard.pump();
            }
            continue;
        }
        let moving = handle.hand_over.borrow_mut().take();
        if let Some((to, connect)) = moving {
            // A writer still sending what the transport had to say of its own (the end of a
            // TLS handshake) finishes first: the move needs the write half.
            while handle.writer.borrow().is_none() && !handle.closing.get() {
                handle.writer_done.notified().await;
            }
            let moving = Accepted {
                conn,
                peer,
                listener,
            };
            return hand_over(&shard, moving, &handle, reader, to, connect, buf);
        }
        if handle.closing.get() {
            // The writer flushes and closes; wait for it so the socket outlives the flush.
            handle.stop_reading.notified().await;
            drain(&shard, &mut reader).await;
            break;
        }
        // Backpressure: while other shards or the journal cannot keep up, or the client
        // ignores the acknowledgements held back for it, stop reading from publishers and let
        // TCP slow them down. Subscribers go on reading, as their acknowledgements are what
        // lets queued messages out.
        if publishing {
            shard.pause_publisher().await;
            // A client that ignores the acknowledgements held back for it: rare, so polled.
            while shard.broker().borrow().wants_pause(conn) {
                Box::pin(I::sleep(TICK)).await;
            }
        }
        // Whether this turn had to wait for the socket, giving the other tasks their turn.
        let mut waited = false;
        if buf.is_empty() && !more_waiting {
            // No partial packet to keep: wait for data without a buffer, so an idle connection
            // holds none and the pool serves only the connections that are reading.
            shard.return_buffer(std::mem::take(&mut buf));
            let readable = async {
                I::readable(&reader)
                    .await
                    .map_err(|error| debug!(?conn, %error, "wait for data failed"))
                    .is_ok()
            };
            let stop = async {
                handle.stop_reading.notified().await;
                false
            };
            let (readable, waited_for_data) = noting_wait(future::or(readable, stop)).await;
            if !readable {
                break;
            }
            waited = waited_for_data;
            // The kernel's stamp of the first bytes, before a read takes them and it with them.
            #[cfg(target_os = "linux")]
            if !arrival_noted {
                if let Some(arrived) = mqtt_broker_shards::arrival::first_unread_arrival(fd) {
                    note_arrival(&shard, conn, arrived);
                    arrival_noted = true;
                }
            }
            buf = shard.take_buffer();
        } else {
            if let Some(growth) = large_packet_growth(&buf, read_buffer_size) {
                let capacity = buf.capacity();
                if !wait_to_grow(&shard, &handle, &mut large_packet, capacity, growth).await {
                    break;
                }
            }
            reserve_for_read(&mut buf, read_buffer_size);
            large_packet.update(buf.capacity(), read_buffer_size);
        }
        let spare = buf.capacity() - buf.len();
        let reading = std::mem::take(&mut buf);
        let read = async {
            // Boxed: the read is the largest thing this task awaits, and every connection's
            // task would otherwise be that large even while idle.
            let (result, data) = Box::pin(I::read(&mut reader, reading)).await;
            match result {
                Ok(0) => ReadOutcome::Closed(data),
                Ok(read) => {
                    shard.count_bytes(read, 0);
                    ReadOutcome::Data(data, read == spare)
                }
                Err(error) => {
                    debug!(?conn, %error, "read failed");
                    ReadOutcome::Closed(data)
                }
            }
        };
        let stop = async {
            handle.stop_reading.notified().await;
            ReadOutcome::Stopped
        };
        let (outcome, waited_for_read) = noting_wait(future::or(read, stop)).await;
        match outcome {
            ReadOutcome::Data(data, filled) => {
                buf = data;
                more_waiting = filled;
                if !arrival_noted {
                    note_arrival(&shard, conn, SystemTime::now());
                    arrival_noted = true;
                }
                match take_in(&shard, &handle, conn, &mut buf) {
                    Ok(published) => publishing = published,
                    Err(()) => break,
                }
                large_packet.update(buf.capacity(), read_buffer_size);
                shard.pump();
                // On a readiness backend a read of a busy socket completes without waiting, so
                // a flooding client would keep this task running and starve the writers and
                // the inbox; let them have a turn after a read that did not wait. (A turn
                // that waited gave them theirs; yielding again would only cost time.)
                if !(waited || waited_for_read) {
                    I::yield_now().await;
                }
            }
            ReadOutcome::Closed(data) => {
                buf = data;
                break;
            }
            // The writer flushed and closed (the buffer went with the cancelled read).
            ReadOutcome::Stopped => {
                drain(&shard, &mut reader).await;
                break;
            }
        }
    }
    let now = shard.now();
    shard.broker().borrow_mut().handle_closed(conn, now);
    shard.remove_conn(conn);
    handle.closing.set(true);
    start_writer(&shard, conn, &handle);
    shard.pump();
    shard.return_buffer(buf);
}

/// Gives what was read to the core through the connection's layer, and starts the writer when
/// the layer has bytes of its own to send (a TLS handshake). Whether the bytes carried a
/// PUBLISH; an error when the layer refused them, which ends the connection (the writer then
/// sends the layer's last word, such as a TLS alert).
fn take_in<I: Io, H: Host<I>>(
    shard: &Rc<H>,
    handle: &Rc<ConnHandle<I>>,
    conn: ConnId,
    buf: &mut BytesMut,
) -> Result<bool, ()> {
    let now = shard.now();
    let published = {
        let mut layer = handle.layer.borrow_mut();
        let bytes = layer.inbound(buf).map_err(|error| {
            debug!(?conn, %error, "transport refused the bytes read");
        })?;
        shard.broker().borrow_mut().handle_bytes(conn, bytes, now)
    };
    // A connection the core is handing over keeps its write half for the move: what the layer
    // has to send goes with it and out from the new shard.
    if handle.layer.borrow().wants_write() && handle.hand_over.borrow().is_none() {
        start_writer(shard, conn, handle);
    }
    Ok(published)
}

/// Tells the broker when the connection's first bytes arrived, on the wall clock every shard
/// shares (and the kernel stamps packets with).
fn note_arrival<I: Io, H: Host<I>>(shard: &Rc<H>, conn: ConnId, arrived: SystemTime) {
    let nanos = arrived
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
        });
    shard
        .broker()
        .borrow_mut()
        .note_arrival(conn, Arrival(nanos));
}

/// How long a connection the broker closed goes on being read, at most.
const LINGER: Duration = Duration::from_secs(1);

/// Reads and discards what the client still sends once the broker has closed the connection
/// and shut down its sending side, until the client closes too or `LINGER` has passed. Closing a
/// socket with unread input makes the kernel send a reset, which can destroy the final
/// DISCONNECT before the client has read it (a client still sending PUBRELs when it is told
/// 0x93, say).
async fn drain<I: Io, H: Host<I>>(shard: &Rc<H>, reader: &mut I::Reader) {
    let deadline = Instant::now() + LINGER;
    let mut buf = shard.take_buffer();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        buf.clear();
        let read = async { Some(Box::pin(I::read(reader, buf)).await) };
        let linger = async {
            Box::pin(I::sleep(left)).await;
            None
        };
        match future::or(read, linger).await {
            Some((Ok(read), back)) if read > 0 => buf = back,
            Some((_, back)) => {
                buf = back;
                break;
            }
            // The buffer went with the cancelled read.
            None => return,
        }
    }
    shard.return_buffer(buf);
}

/// Waits until the shard's buffer budget lets this reader grow its buffer by `growth` bytes
/// for a packet larger than a read; false when the connection must stop reading meanwhile.
async fn wait_to_grow<I: Io, H: Host<I>>(
    shard: &Rc<H>,
    handle: &ConnHandle<I>,
    ticket: &mut LargePacketTicket<'_>,
    capacity: usize,
    growth: usize,
) -> bool {
    let budget = shard.buffer_budget();
    loop {
        let unsent = shard.broker().borrow().unsent_output();
        if ticket.may_grow(capacity, growth, unsent, budget) {
            return true;
        }
        // Rare (large packets past the budget), so polled rather than woken.
        let wait = async {
            Box::pin(I::sleep(TICK)).await;
            true
        };
        let stop = async {
            handle.stop_reading.notified().await;
            false
        };
        if !future::or(wait, stop).await {
            return false;
        }
    }
}

pin_project_lite::pin_project! {
    /// `future`, also saying whether it had to wait (returned `Pending` at least once). A
    /// struct rather than an async fn, which would hold the future twice in every reader task.
    struct NotingWait<F> {
        #[pin]
        future: F,
        waited: bool,
    }
}

fn noting_wait<F: Future>(future: F) -> NotingWait<F> {
    NotingWait {
        future,
        waited: false,
    }
}

impl<F: Future> Future for NotingWait<F> {
    type Output = (F::Output, bool);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.future.poll(cx) {
            Poll::Ready(output) => Poll::Ready((output, *this.waited)),
            Poll::Pending => {
                *this.waited = true;
                Poll::Pending
            }
        }
    }
}

/// Moves the connection to the shard that owns its client, with the bytes read after CONNECT.
fn hand_over<I: Io, H: Host<I>>(
    shard: &Rc<H>,
    accepted: Accepted,
    handle: &ConnHandle<I>,
    reader: I::Reader,
    to: ShardId,
    connect: HandedOverConnect,
    buffered: BytesMut,
) {
    let conn = accepted.conn;
    shard.remove_conn(conn);
    let Some(writer) = handle.writer.borrow_mut().take() else {
        warn!(
            ?conn,
            "cannot hand over a connection while it is writing; closing it"
        );
        return;
    };
    let stream = match I::reunite(reader, writer).and_then(I::into_std) {
        Ok(stream) => stream,
        Err(error) => {
            warn!(?conn, %error, "cannot hand over connection");
            return;
        }
    };
    let envelope = Envelope::HandOver {
        conn,
        listener: accepted.listener,
        stream,
        // The handle is dropped after this: the layer's state goes with the socket.
        layer: handle.layer.replace(StreamLayer::Plain),
        connect,
        buffered,
    };
    if shard.send_envelope(to, envelope).is_err() {
        warn!(?conn, shard = to, "home shard stopped; dropping connection");
    }
}

/// Starts a writer task for `conn` unless one is running; a running one sends everything queued
/// before it stops, so nothing else is needed.
pub(super) fn start_writer<I: Io, H: Host<I>>(
    shard: &Rc<H>,
    conn: ConnId,
    handle: &Rc<ConnHandle<I>>,
) {
    let writer = handle.writer.borrow_mut().take();
    if let Some(writer) = writer {
        I::spawn(write_loop(shard.clone(), conn, handle.clone(), writer));
    }
}

/// Sends whatever the broker queued for `conn`, then gives the write half back and stops; on
/// close, flushes, shuts the socket down and stops the reader instead.
async fn write_loop<I: Io, H: Host<I>>(
    shard: Rc<H>,
    conn: ConnId,
    handle: Rc<ConnHandle<I>>,
    mut writer: I::Writer,
) {
    let mut said_goodbye = false;
    loop {
        let output = shard.broker().borrow_mut().take_output(conn, shard.now());
        let chunks = {
            let mut layer = handle.layer.borrow_mut();
            if output.is_empty() && handle.closing.get() && !said_goodbye {
                layer.close();
                said_goodbye = true;
            }
            layer.outbound(output)
        };
        if chunks.is_empty() {
            break;
        }
        for chunk in chunks {
            shard.count_bytes(0, chunk.len());
            if let Err(error) = I::write_all(&mut writer, chunk).await {
                debug!(?conn, %error, "write failed");
                handle.closing.set(true);
                handle.stop_reading.notify_one();
                handle.writer_done.notify_one();
                return;
            }
        }
    }
    if handle.closing.get() {
        let _ = I::shutdown(&mut writer).await;
        handle.stop_reading.notify_one();
        handle.writer_done.notify_one();
    } else {
        // No await since the last `take_output` came back empty, so no output can have been
        // queued in between: handing the writer back loses no wake-up.
        *handle.writer.borrow_mut() = Some(writer);
        handle.writer_done.notify_one();
    }
}
