//! The operations the broker needs from an event loop, implemented once per backend.
//!
//! Reads take and give back an owned `BytesMut` (io_uring needs the buffer for the whole
//! operation), and bytes are appended to it, so a partial packet stays at the front for the next
//! read. A stream is split into a read half and a write half so one task can read while another
//! writes; halves can be put back together to move the socket to another shard.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

/// Socket, task and timer operations of one backend. All methods are static: the type is a
/// marker chosen once when the shards start.
pub trait Io: 'static {
    type Listener: 'static;
    type Stream: 'static;
    type Reader: 'static;
    type Writer: 'static;

    /// Registers a bound, non-blocking std listener with this shard's event loop.
    fn listener(listener: std::net::TcpListener) -> io::Result<Self::Listener>;
    fn accept(
        listener: &Self::Listener,
    ) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>>;
    /// Registers a connected std stream (e.g. one handed over by another shard).
    fn stream(stream: std::net::TcpStream) -> io::Result<Self::Stream>;
    /// Releases a stream from this event loop, to move it to another shard. No operation may
    /// be in flight on it.
    fn into_std(stream: Self::Stream) -> io::Result<std::net::TcpStream>;
    /// Sends small packets at once instead of waiting to coalesce them (Nagle off): the broker
    /// batches its own writes per loop turn.
    fn set_nodelay(stream: &Self::Stream) -> io::Result<()>;
    /// The socket's descriptor, for options and peeks the backend has no call for. It stays
    /// the stream's: never closed or read from through it.
    #[cfg(target_os = "linux")]
    fn raw_fd(stream: &Self::Stream) -> std::os::fd::RawFd;
    fn split(stream: Self::Stream) -> (Self::Reader, Self::Writer);
    fn reunite(reader: Self::Reader, writer: Self::Writer) -> io::Result<Self::Stream>;
    /// Waits until a read would find data or the end of the stream, without holding a buffer,
    /// so an idle connection costs no read buffer. It may wake early (then the read that
    /// follows waits with its buffer).
    fn readable(reader: &Self::Reader) -> impl Future<Output = io::Result<()>>;
    /// Appends what is available to `buf` (up to its spare capacity); 0 means end of stream.
    fn read(
        reader: &mut Self::Reader,
        buf: BytesMut,
    ) -> impl Future<Output = (io::Result<usize>, BytesMut)>;
    fn write_all(writer: &mut Self::Writer, buf: Bytes) -> impl Future<Output = io::Result<()>>;
    fn shutdown(writer: &mut Self::Writer) -> impl Future<Output = io::Result<()>>;
    /// Runs a task on this shard's event loop.
    fn spawn(task: impl Future<Output = ()> + 'static);
    /// Lets every other task that is ready run before this one goes on, and lets due timers
    /// fire: a task with endless work (a flooded inbox, a socket that always has data) calls it
    /// between batches.
    fn yield_now() -> impl Future<Output = ()>;
    fn sleep(duration: Duration) -> impl Future<Output = ()>;
}

#[cfg(target_os = "linux")]
pub use self::monoio_io::MonoioIo;

#[cfg(target_os = "linux")]
mod monoio_io {
    use std::os::fd::{FromRawFd, IntoRawFd};

    use monoio::io::{
        AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable,
    };
    use monoio::net::{TcpListener, TcpStream};

    use super::*;

    /// monoio, on either of its drivers (io_uring or epoll): the stream types are the same.
    pub struct MonoioIo;

    impl Io for MonoioIo {
        type Listener = TcpListener;
        type Stream = TcpStream;
        type Reader = OwnedReadHalf<TcpStream>;
        type Writer = OwnedWriteHalf<TcpStream>;

        fn listener(listener: std::net::TcpListener) -> io::Result<TcpListener> {
            TcpListener::from_std(listener)
        }

        async fn accept(listener: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
            listener.accept().await
        }

        fn stream(stream: std::net::TcpStream) -> io::Result<TcpStream> {
            stream.set_nonblocking(true)?;
            TcpStream::from_std(stream)
        }

        fn into_std(stream: TcpStream) -> io::Result<std::net::TcpStream> {
            let fd = stream.into_raw_fd();
            // SAFETY: `into_raw_fd` gave up monoio's ownership of this open socket, so the std
            // stream becomes its only owner.
            Ok(unsafe { std::net::TcpStream::from_raw_fd(fd) })
        }

        fn set_nodelay(stream: &TcpStream) -> io::Result<()> {
            stream.set_nodelay(true)
        }

        fn raw_fd(stream: &TcpStream) -> std::os::fd::RawFd {
            std::os::fd::AsRawFd::as_raw_fd(stream)
        }

        fn split(stream: TcpStream) -> (Self::Reader, Self::Writer) {
            stream.into_split()
        }

        fn reunite(reader: Self::Reader, writer: Self::Writer) -> io::Result<TcpStream> {
            reader
                .reunite(writer)
                .map_err(|_| io::Error::other("halves of different streams"))
        }

        async fn readable(reader: &Self::Reader) -> io::Result<()> {
            // SAFETY: `readable` only polls the descriptor; monoio's own read and write halves
            // reach the shared stream through this same cell.
            let stream = unsafe { &*reader.0.get() };
            // Not relaxed: the epoll driver's cached readiness stays set after a read that did
            // not drain the socket to EAGAIN, and would wake at once.
            stream.readable(false).await
        }

        async fn read(reader: &mut Self::Reader, buf: BytesMut) -> (io::Result<usize>, BytesMut) {
            use monoio::buf::{IoBufMut, SliceMut};
            // monoio writes a `BytesMut` from its start; read into the spare capacity instead
            // so a partial packet already buffered is kept.
            let start = buf.len();
            let mut buf = buf;
            let end = buf.bytes_total();
            let (result, slice) = reader.read(SliceMut::new(buf, start, end)).await;
            (result, slice.into_inner())
        }

        async fn write_all(writer: &mut Self::Writer, buf: Bytes) -> io::Result<()> {
            writer.write_all(buf).await.0.map(drop)
        }

        async fn shutdown(writer: &mut Self::Writer) -> io::Result<()> {
            writer.shutdown().await
        }

        fn spawn(task: impl Future<Output = ()> + 'static) {
            monoio::spawn(task);
        }

        async fn yield_now() {
            fair::yield_now().await
        }

        async fn sleep(duration: Duration) {
            fair::sleep(duration).await
        }
    }

    /// Yielding and sleeping that stay fair on a busy shard.
    ///
    /// monoio runs a task that woke itself while running again at once, ahead of every task
    /// already waiting, so the usual yield (wake yourself, return `Pending`) lets nothing else
    /// run. And it fires timers only when its run queue is empty, which never happens while a
    /// shard has endless work. Without this, a shard flooded by another shard's publishes
    /// never read its own clients' acknowledgements and never ended a pause.
    ///
    /// So here a yield is woken by a fresh task, which monoio queues behind everything already
    /// ready, and every sleep is also woken by the first yield after its deadline.
    mod fair {
        use std::cell::RefCell;
        use std::cmp::Ordering;
        use std::collections::BinaryHeap;
        use std::future::{poll_fn, Future};
        use std::pin::Pin;
        use std::task::{Poll, Waker};
        use std::time::{Duration, Instant};

        thread_local! {
            /// Sleeps of this thread's tasks, soonest first; some may be gone already, and
            /// waking them is harmless.
            static SLEEPERS: RefCell<BinaryHeap<Sleeper>> = const { RefCell::new(BinaryHeap::new()) };
        }

        struct Sleeper {
            until: Instant,
            waker: Waker,
        }

        impl PartialEq for Sleeper {
            fn eq(&self, other: &Self) -> bool {
                self.until == other.until
            }
        }

        impl Eq for Sleeper {}

        impl PartialOrd for Sleeper {
            fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
                Some(self.cmp(other))
            }
        }

        impl Ord for Sleeper {
            /// Reversed, so the max-heap yields the soonest deadline.
            fn cmp(&self, other: &Self) -> Ordering {
                other.until.cmp(&self.until)
            }
        }

        pub async fn yield_now() {
            wake_due_sleepers();
            let mut yielded = false;
            poll_fn(|cx| {
                if yielded {
                    return Poll::Ready(());
                }
                yielded = true;
                let waker = cx.waker().clone();
                monoio::spawn(async move { waker.wake() });
                Poll::Pending
            })
            .await
        }

        pub async fn sleep(duration: Duration) {
            let until = Instant::now() + duration;
            // Boxed: monoio's timer entry is large, and most tasks that can sleep rarely do.
            let mut timer: Pin<Box<monoio::time::Sleep>> = Box::pin(monoio::time::sleep(duration));
            let mut registered = false;
            poll_fn(|cx| {
                // Sleeps that monoio's timer already ended leave their entries behind; clear the
                // due ones here too, or an idle shard, which never yields, would pile them up.
                wake_due_sleepers();
                // An idle shard parks, and monoio's timer fires.
                if Instant::now() >= until || timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
                // A busy shard yields, and the first yield past `until` wakes this task.
                if !registered {
                    registered = true;
                    let waker = cx.waker().clone();
                    SLEEPERS.with(|sleepers| sleepers.borrow_mut().push(Sleeper { until, waker }));
                }
                Poll::Pending
            })
            .await
        }

        fn wake_due_sleepers() {
            let due: Vec<Waker> = SLEEPERS.with(|sleepers| {
                let mut sleepers = sleepers.borrow_mut();
                if sleepers.is_empty() {
                    return Vec::new();
                }
                let now = Instant::now();
                let mut due = Vec::new();
                while sleepers.peek().is_some_and(|sleeper| sleeper.until <= now) {
                    due.extend(sleepers.pop().map(|sleeper| sleeper.waker));
                }
                due
            });
            due.into_iter().for_each(Waker::wake);
        }

        #[cfg(test)]
        mod tests {
            use super::*;

            #[test]
            fn sleeps_on_an_idle_loop_leave_no_entries_behind() {
                let mut runtime = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                    .enable_timer()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    for _ in 0..50 {
                        sleep(Duration::from_millis(1)).await;
                    }
                    let left = SLEEPERS.with(|sleepers| sleepers.borrow().len());
                    assert!(left <= 1, "{left} sleep entries left behind");
                });
            }
        }
    }
}

/// tokio's current-thread runtime with a `LocalSet`, so tasks need not be `Send`.
pub struct TokioIo;

impl Io for TokioIo {
    type Listener = tokio::net::TcpListener;
    type Stream = tokio::net::TcpStream;
    type Reader = tokio::net::tcp::OwnedReadHalf;
    type Writer = tokio::net::tcp::OwnedWriteHalf;

    fn listener(listener: std::net::TcpListener) -> io::Result<Self::Listener> {
        listener.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(listener)
    }

    async fn accept(listener: &Self::Listener) -> io::Result<(Self::Stream, SocketAddr)> {
        listener.accept().await
    }

    fn stream(stream: std::net::TcpStream) -> io::Result<Self::Stream> {
        stream.set_nonblocking(true)?;
        tokio::net::TcpStream::from_std(stream)
    }

    fn into_std(stream: Self::Stream) -> io::Result<std::net::TcpStream> {
        stream.into_std()
    }

    fn set_nodelay(stream: &Self::Stream) -> io::Result<()> {
        stream.set_nodelay(true)
    }

    #[cfg(target_os = "linux")]
    fn raw_fd(stream: &Self::Stream) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(stream)
    }

    fn split(stream: Self::Stream) -> (Self::Reader, Self::Writer) {
        stream.into_split()
    }

    fn reunite(reader: Self::Reader, writer: Self::Writer) -> io::Result<Self::Stream> {
        reader
            .reunite(writer)
            .map_err(|_| io::Error::other("halves of different streams"))
    }

    async fn readable(reader: &Self::Reader) -> io::Result<()> {
        reader.readable().await
    }

    async fn read(reader: &mut Self::Reader, mut buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        use tokio::io::AsyncReadExt;
        let result = reader.read_buf(&mut buf).await;
        (result, buf)
    }

    async fn write_all(writer: &mut Self::Writer, buf: Bytes) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        writer.write_all(&buf).await
    }

    async fn shutdown(writer: &mut Self::Writer) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        writer.shutdown().await
    }

    fn spawn(task: impl Future<Output = ()> + 'static) {
        tokio::task::spawn_local(task);
    }

    async fn yield_now() {
        tokio::task::yield_now().await
    }

    async fn sleep(duration: Duration) {
        tokio::time::sleep(duration).await
    }
}

#[cfg(all(feature = "glommio", target_os = "linux"))]
pub use self::glommio_io::GlommioIo;

#[cfg(all(feature = "glommio", target_os = "linux"))]
mod glommio_io {
    use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd};

    use futures_util::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
    use glommio::net::{TcpListener, TcpStream};

    use super::*;

    /// glommio, for comparing runtimes. Its streams are `futures` readers and writers, so reads
    /// go through a zeroed slice of the buffer's spare capacity.
    pub struct GlommioIo;

    impl Io for GlommioIo {
        type Listener = TcpListener;
        type Stream = TcpStream;
        type Reader = ReadHalf<TcpStream>;
        type Writer = WriteHalf<TcpStream>;

        fn listener(listener: std::net::TcpListener) -> io::Result<TcpListener> {
            // SAFETY: the std listener gives up its descriptor, which glommio then owns alone.
            Ok(unsafe { TcpListener::from_raw_fd(listener.into_raw_fd()) })
        }

        async fn accept(listener: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
            let stream = listener.accept().await?;
            let peer = stream.peer_addr()?;
            Ok((stream, peer))
        }

        fn stream(stream: std::net::TcpStream) -> io::Result<TcpStream> {
            // SAFETY: as above, the descriptor moves from std to glommio.
            Ok(unsafe { TcpStream::from_raw_fd(stream.into_raw_fd()) })
        }

        fn into_std(stream: TcpStream) -> io::Result<std::net::TcpStream> {
            // glommio streams cannot give up their descriptor, so hand over a duplicate and let
            // glommio close the original.
            // SAFETY: the descriptor is open for as long as `stream` lives, which covers the dup.
            let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
            Ok(std::net::TcpStream::from(fd.try_clone_to_owned()?))
        }

        fn set_nodelay(stream: &TcpStream) -> io::Result<()> {
            stream.set_nodelay(true).map_err(io::Error::from)
        }

        fn raw_fd(stream: &TcpStream) -> std::os::fd::RawFd {
            stream.as_raw_fd()
        }

        fn split(stream: TcpStream) -> (Self::Reader, Self::Writer) {
            stream.split()
        }

        fn reunite(reader: Self::Reader, writer: Self::Writer) -> io::Result<TcpStream> {
            reader
                .reunite(writer)
                .map_err(|_| io::Error::other("halves of different streams"))
        }

        /// glommio's `futures` read half has no readiness wait, so on this backend an idle
        /// connection keeps its read buffer.
        async fn readable(_reader: &Self::Reader) -> io::Result<()> {
            Ok(())
        }

        async fn read(
            reader: &mut Self::Reader,
            mut buf: BytesMut,
        ) -> (io::Result<usize>, BytesMut) {
            let start = buf.len();
            let spare = buf.capacity() - start;
            buf.resize(start + spare.max(1), 0);
            let result = reader.read(&mut buf[start..]).await;
            buf.truncate(start + *result.as_ref().unwrap_or(&0));
            (result, buf)
        }

        async fn write_all(writer: &mut Self::Writer, buf: Bytes) -> io::Result<()> {
            writer.write_all(&buf).await
        }

        async fn shutdown(writer: &mut Self::Writer) -> io::Result<()> {
            writer.close().await
        }

        /// Queued, like on the other backends: `glommio::spawn_local` would run the task on the
        /// spot, inside its caller, which may be holding state the task needs (the broker).
        fn spawn(task: impl Future<Output = ()> + 'static) {
            let queue = glommio::executor().current_task_queue();
            match glommio::spawn_local_into(task, queue) {
                Ok(task) => {
                    task.detach();
                }
                Err(error) => tracing::error!(%error, "cannot spawn a task"),
            }
        }

        /// glommio queues a task that woke itself behind the others, so the usual yield is
        /// fair, and its timers fire on every turn of its loop.
        async fn yield_now() {
            let mut yielded = false;
            std::future::poll_fn(|cx| {
                if yielded {
                    return std::task::Poll::Ready(());
                }
                yielded = true;
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            })
            .await
        }

        async fn sleep(duration: Duration) {
            glommio::timer::sleep(duration).await
        }
    }
}
