//! The socket seam: every byte the proxy reads or writes goes through [`Socket`], on epoll
//! (tokio) or on the worker's io_uring driver ([`uring`]).
//!
//! The proxy's own HTTP/1.1 and HTTP/2 code reads and writes through [`Socket`], and hyper
//! (upstream HTTP/2, upgrades) through `hyper::rt::{Read, Write}`, implemented here once, so
//! the two backends (epoll through tokio, io_uring) are variants of one type that no HTTP code
//! tells apart. This module also binds the per-worker `SO_REUSEPORT` listener sockets and
//! opens upstream connections.
#![allow(unsafe_code)] // `Socket::poll_read` and the `uring` module, with SAFETY comments.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::rt::TokioIo;
use socket2::{Domain, Protocol, Socket as RawSocket, Type};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;

use crate::error::ProxyError;

pub mod uring;

/// A connected stream, downstream or upstream.
#[derive(Debug)]
pub struct Socket {
    inner: Inner,
    activity: Option<Activity>,
    /// Bytes read already and given back (by protocol detection, or by an HTTP/1.1 connection
    /// parked while idle), returned by the next reads before anything new.
    unread: Bytes,
}

#[derive(Debug)]
enum Inner {
    Tcp(TokioIo<TcpStream>),
    Uring(uring::UringSocket),
}

/// The socket I/O backend of a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// epoll, through tokio.
    #[default]
    Epoll,
    /// The worker's own io_uring driver.
    Uring,
}

impl Backend {
    /// The backend's name, as logged and exported in the metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Epoll => "epoll",
            Self::Uring => "uring",
        }
    }
}

thread_local! {
    /// The io_uring driver of the worker running on this thread, if it uses one.
    static DRIVER: std::cell::RefCell<Option<std::rc::Rc<uring::Driver>>> =
        const { std::cell::RefCell::new(None) };
}

/// Makes `driver` the one this thread's upstream connections use.
pub fn set_thread_driver(driver: Option<std::rc::Rc<uring::Driver>>) {
    DRIVER.with(|d| *d.borrow_mut() = driver);
}

/// The io_uring driver of this thread, if any.
pub fn thread_driver() -> Option<std::rc::Rc<uring::Driver>> {
    DRIVER.with(|d| d.borrow().clone())
}

/// Tells this thread's io_uring driver, if any, that the worker is about to park (a runtime's
/// `on_thread_park` hook): the driver batches sends only while the worker is busy.
pub fn worker_parking() {
    DRIVER.with(|d| {
        if let Some(driver) = d.borrow().as_ref() {
            driver.parking();
        }
    });
}

/// Tells this thread's io_uring driver, if any, that the worker woke up (`on_thread_unpark`).
pub fn worker_unparked() {
    DRIVER.with(|d| {
        if let Some(driver) = d.borrow().as_ref() {
            driver.unparked();
        }
    });
}

/// Counts the reads and writes of a connection that made progress, for idle detection, and
/// tells whether its reader waits for data with no write pending.
///
/// hyper requires upgradable connections to be `Send`, hence atomics; only the owning worker
/// writes them, so relaxed loads and stores (no read-modify-write) are enough and cost no bus
/// lock.
#[derive(Debug, Clone, Default)]
pub struct Activity(Arc<ActivityState>);

#[derive(Debug, Default)]
struct ActivityState {
    count: AtomicU64,
    /// The last read returned `Pending`.
    read_waiting: AtomicBool,
    /// The last write or flush returned `Pending`.
    write_waiting: AtomicBool,
}

impl Activity {
    /// The number of reads and writes that moved bytes so far.
    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }

    /// Whether the connection's reader waits for data and no write waits for the peer.
    pub fn is_waiting_for_peer(&self) -> bool {
        self.0.read_waiting.load(Ordering::Relaxed) && !self.0.write_waiting.load(Ordering::Relaxed)
    }

    /// Counts one read or write that moved bytes.
    pub(crate) fn bump(&self) {
        self.0
            .count
            .store(self.count().wrapping_add(1), Ordering::Relaxed);
    }
}

impl Socket {
    /// Wraps a tokio TCP stream.
    pub fn tcp(stream: TcpStream) -> Self {
        Self {
            inner: Inner::Tcp(TokioIo::new(stream)),
            activity: None,
            unread: Bytes::new(),
        }
    }

    /// Wraps a socket driven by io_uring.
    pub fn uring(socket: uring::UringSocket) -> Self {
        Self {
            inner: Inner::Uring(socket),
            activity: None,
            unread: Bytes::new(),
        }
    }

    /// Counts progress into `activity`.
    pub fn with_activity(mut self, activity: Activity) -> Self {
        self.activity = Some(activity);
        self
    }

    fn touch(&self) {
        if let Some(activity) = &self.activity {
            activity.bump();
        }
    }

    fn note_read<T>(&self, poll: &Poll<T>) {
        if let Some(activity) = &self.activity {
            activity
                .0
                .read_waiting
                .store(poll.is_pending(), Ordering::Relaxed);
        }
    }

    fn note_write<T>(&self, poll: &Poll<T>) {
        if let Some(activity) = &self.activity {
            activity
                .0
                .write_waiting
                .store(poll.is_pending(), Ordering::Relaxed);
        }
    }

    /// Gives back `bytes` read earlier: the next reads return them first.
    pub fn unread(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        if self.unread.is_empty() {
            self.unread = bytes;
        } else {
            let mut joined = Vec::with_capacity(bytes.len() + self.unread.len());
            joined.extend_from_slice(&bytes);
            joined.extend_from_slice(&self.unread);
            self.unread = joined.into();
        }
    }

    /// Waits until new bytes arrive (or the end of the stream), without reading them; bytes
    /// given back with [`Self::unread`] do not count.
    ///
    /// # Errors
    /// The socket failed.
    pub fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Inner::Tcp(stream) => stream.inner().poll_read_ready(cx),
            Inner::Uring(socket) => socket.poll_read_ready(cx),
        }
    }

    /// Reads once, appending at most `max` (not zero) bytes to `buf`; `Ok(0)` means the end
    /// of the stream. On io_uring the bytes are already in the kernel's provided buffer when
    /// they are copied, and `buf` grows by just what arrived (a small response needs no 8 KiB
    /// allocation); on epoll the read needs its room first, and `buf` gets `max` more when it
    /// has less than `min` to spare.
    ///
    /// # Errors
    /// The socket failed.
    pub fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        min: usize,
        max: usize,
    ) -> Poll<io::Result<usize>> {
        let room = if matches!(self.inner, Inner::Uring(_)) {
            max
        } else {
            if buf.capacity() - buf.len() < min {
                buf.reserve(max);
            }
            buf.capacity() - buf.len()
        };
        if !self.unread.is_empty() {
            let n = room.min(self.unread.len());
            buf.extend_from_slice(&self.unread[..n]);
            self.unread.advance(n);
            if self.unread.is_empty() {
                self.unread = Bytes::new(); // frees the storage
            }
            self.touch();
            return Poll::Ready(Ok(n));
        }
        let before = buf.len();
        let poll = match &mut self.inner {
            Inner::Uring(socket) => match socket.try_recv_direct(buf, room) {
                Some(read) => Poll::Ready(read.map(drop)),
                None => socket.poll_read_with(cx, room, |data| buf.extend_from_slice(data)),
            },
            Inner::Tcp(stream) => {
                // tokio's `poll_read` (unlike `try_read_buf`) forgets the readiness after a
                // read that did not fill the buffer, so an idle connection is not read (or
                // peeked, by `is_quiet`) again until the reactor reports new data.
                let mut read_buf = ReadBuf::uninit(buf.spare_capacity_mut());
                let poll = Pin::new(stream.inner_mut()).poll_read(cx, &mut read_buf);
                let n = read_buf.filled().len();
                if let Poll::Ready(Ok(())) = poll {
                    // SAFETY: the read initialised the first `n` bytes of the spare capacity.
                    unsafe { buf.advance_mut(n) };
                }
                poll
            }
        };
        if poll.is_ready() {
            self.touch();
        }
        self.note_read(&poll);
        poll.map_ok(|()| buf.len() - before)
    }

    /// Whether nothing arrived since the last read: no data, no end of stream, no error. Never
    /// waits; on io_uring it leaves a receive armed, which the next read completes.
    pub fn is_quiet(&mut self) -> bool {
        if !self.unread.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match &mut self.inner {
            Inner::Uring(socket) => socket.poll_read_ready(&mut cx).is_pending(),
            Inner::Tcp(stream) => {
                // A peek, since tokio's readiness may be left over from the last read; it is
                // made only when the reactor saw an event since.
                let mut byte = [0_u8; 1];
                let mut peek = ReadBuf::new(&mut byte);
                stream.inner().poll_peek(&mut cx, &mut peek).is_pending()
            }
        }
    }

    /// Frees buffers kept for reuse; for a connection about to stay idle.
    pub fn release_buffers(&mut self) {
        if let Inner::Uring(socket) = &mut self.inner {
            socket.release_buffers();
        }
    }
}

impl Read for Socket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.unread.is_empty() {
            let n = buf.remaining().min(this.unread.len());
            buf.put_slice(&this.unread[..n]);
            this.unread.advance(n);
            if this.unread.is_empty() {
                this.unread = Bytes::new(); // frees the storage
            }
            let poll = Poll::Ready(Ok(()));
            this.touch();
            this.note_read(&poll);
            return poll;
        }
        let poll = match &mut this.inner {
            Inner::Uring(socket) => {
                let room = buf.remaining();
                socket.poll_read_with(cx, room, |data| buf.put_slice(data))
            }
            Inner::Tcp(stream) => Pin::new(stream).poll_read(cx, buf),
        };
        if poll.is_ready() {
            this.touch();
        }
        this.note_read(&poll);
        poll
    }
}

impl Write for Socket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = match &mut self.inner {
            Inner::Tcp(stream) => Pin::new(stream).poll_write(cx, buf),
            Inner::Uring(socket) => socket.poll_write(cx, buf),
        };
        if poll.is_ready() {
            self.touch();
        }
        self.note_write(&poll);
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = match &mut self.inner {
            Inner::Tcp(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Inner::Uring(socket) => socket.poll_write_vectored(cx, bufs),
        };
        if poll.is_ready() {
            self.touch();
        }
        self.note_write(&poll);
        poll
    }

    fn is_write_vectored(&self) -> bool {
        match &self.inner {
            Inner::Tcp(stream) => stream.is_write_vectored(),
            // The slices are gathered into one owned send buffer: one copy, as for `poll_write`.
            Inner::Uring(_) => true,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = match &mut self.inner {
            Inner::Tcp(stream) => Pin::new(stream).poll_flush(cx),
            Inner::Uring(socket) => socket.poll_flush(cx),
        };
        self.note_write(&poll);
        poll
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Inner::Tcp(stream) => Pin::new(stream).poll_shutdown(cx),
            Inner::Uring(socket) => socket.poll_shutdown(cx),
        }
    }
}

/// Binds `count` listening sockets on `addr` with `SO_REUSEPORT`, one per worker.
///
/// When `addr` has port 0, the first socket picks the port and the others bind the same one,
/// so every worker accepts on the one address the operator sees.
///
/// # Errors
/// Fails when a socket cannot be created, bound or put into listening state.
pub fn bind_reuseport(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let mut sockets = Vec::with_capacity(count);
    let mut bound = addr;
    for _ in 0..count.max(1) {
        let socket = RawSocket::new(
            Domain::for_address(bound),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        if bound.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.bind(&bound.into())?;
        socket.listen(4096)?;
        let listener: std::net::TcpListener = socket.into();
        bound = listener.local_addr()?;
        sockets.push(listener);
    }
    Ok(sockets)
}

/// Opens a TCP connection to an upstream endpoint within `timeout`.
///
/// # Errors
/// [`ProxyError::ConnectTimeout`] or [`ProxyError::ConnectFailed`].
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Socket, ProxyError> {
    if let Some(driver) = thread_driver() {
        return match tokio::time::timeout(timeout, uring::UringSocket::connect(driver, addr)).await
        {
            Ok(Ok(socket)) => Ok(Socket::uring(socket)),
            Ok(Err(source)) => Err(ProxyError::ConnectFailed { addr, source }),
            Err(_) => Err(ProxyError::ConnectTimeout {
                addr,
                after: timeout,
            }),
        };
    }
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            // Small requests and responses must not wait for Nagle's algorithm. This fails only
            // on a socket the peer already reset; the first write reports that properly.
            let _ = stream.set_nodelay(true);
            Ok(Socket::tcp(stream))
        }
        Ok(Err(source)) => Err(ProxyError::ConnectFailed { addr, source }),
        Err(_) => Err(ProxyError::ConnectTimeout {
            addr,
            after: timeout,
        }),
    }
}
