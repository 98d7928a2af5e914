//! One connection's two tasks. The reader feeds bytes to the broker and carries out a hand-over;
//! the writer, started on the first output, sends what the broker queued and closes the socket
//! when the broker says so.

use std::net::SocketAddr;
use std::rc::Rc;

use bytes::BytesMut;
use futures_lite::future;
use mqtt_broker_shards::Io;
use tracing::{debug, warn};

use super::shard::{ConnHandle, Envelope, Shard, TICK};
use crate::broker::ConnId;
use crate::protocol::Connect;

enum ReadOutcome {
    Data(BytesMut),
    Closed(BytesMut),
    Stopped,
}

/// Serves a connection from accept (or hand-over) until it closes.
pub(super) async fn read_loop<I: Io>(
    shard: Rc<Shard<I>>,
    stream: I::Stream,
    conn: ConnId,
    peer: Option<SocketAddr>,
    mut buf: BytesMut,
    handed_over: Option<Box<Connect>>,
) {
    let (mut reader, writer) = I::split(stream);
    let handle = Rc::new(ConnHandle::<I>::new(writer));
    shard.conns.borrow_mut().insert(conn, handle.clone());
    {
        let now = shard.now();
        let mut broker = shard.broker.borrow_mut();
        match handed_over {
            Some(connect) => broker.handle_handed_over(conn, peer, connect, now),
            None => broker.handle_accepted(conn, peer, now),
        }
        if !buf.is_empty() {
            broker.handle_bytes(conn, &mut buf, now);
        }
    }
    shard.pump();
    let read_buffer_size = shard.shared.options.read_buffer_size;
    loop {
        if let Some((to, connect)) = handle.hand_over.borrow_mut().take() {
            return hand_over(&shard, conn, &handle, reader, to, connect, buf);
        }
        if handle.closing.get() {
            // The writer flushes and closes; wait for it so the socket outlives the flush.
            handle.stop_reading.notified().await;
            break;
        }
        // Backpressure: while other shards or the journal cannot keep up, stop reading and let
        // TCP slow the publishers down.
        while shard.mesh.is_congested() || shard.journal.is_backlogged() {
            shard.mesh.flush();
            I::sleep(TICK).await;
        }
        if buf.capacity() - buf.len() < read_buffer_size / 4 {
            buf.reserve(read_buffer_size);
        }
        let reading = std::mem::take(&mut buf);
        let read = async {
            let (result, data) = I::read(&mut reader, reading).await;
            match result {
                Ok(0) => ReadOutcome::Closed(data),
                Ok(_) => ReadOutcome::Data(data),
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
        match future::or(read, stop).await {
            ReadOutcome::Data(data) => {
                buf = data;
                let now = shard.now();
                shard.broker.borrow_mut().handle_bytes(conn, &mut buf, now);
                shard.pump();
            }
            ReadOutcome::Closed(data) => {
                buf = data;
                break;
            }
            // The buffer went with the cancelled read.
            ReadOutcome::Stopped => break,
        }
    }
    let now = shard.now();
    shard.broker.borrow_mut().handle_closed(conn, now);
    shard.conns.borrow_mut().remove(&conn);
    handle.closing.set(true);
    handle.wake_writer.notify_one();
    shard.pump();
    shard.return_buffer(buf);
}

/// Moves the connection to the shard that owns its client, with the bytes read after CONNECT.
fn hand_over<I: Io>(
    shard: &Rc<Shard<I>>,
    conn: ConnId,
    handle: &ConnHandle<I>,
    reader: I::Reader,
    to: usize,
    connect: Box<Connect>,
    buffered: BytesMut,
) {
    shard.conns.borrow_mut().remove(&conn);
    let Some(writer) = handle.writer.borrow_mut().take() else {
        warn!(
            ?conn,
            "cannot hand over a connection that has written; closing it"
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
        stream,
        connect,
        buffered,
    };
    if shard.mesh.send(to, envelope).is_err() {
        warn!(?conn, shard = to, "home shard stopped; dropping connection");
    }
}

/// Sends whatever the broker queued for `conn` each time it is woken; on close, flushes, shuts
/// the socket down and stops the reader.
pub(super) async fn write_loop<I: Io>(
    shard: Rc<Shard<I>>,
    conn: ConnId,
    handle: Rc<ConnHandle<I>>,
    mut writer: I::Writer,
) {
    loop {
        handle.wake_writer.notified().await;
        loop {
            let chunks = shard.broker.borrow_mut().take_output(conn);
            if chunks.is_empty() {
                break;
            }
            for chunk in chunks {
                if let Err(error) = I::write_all(&mut writer, chunk).await {
                    debug!(?conn, %error, "write failed");
                    handle.closing.set(true);
                    handle.stop_reading.notify_one();
                    return;
                }
            }
        }
        if handle.closing.get() {
            let _ = I::shutdown(&mut writer).await;
            handle.stop_reading.notify_one();
            return;
        }
    }
}
