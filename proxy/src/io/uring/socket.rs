//! A TCP socket driven by the worker's io_uring [`Driver`].
//!
//! Reads are multishot buffer-select receives: armed once, the receive posts a completion each
//! time data arrives, in one of the driver's provided buffers which the kernel picks then, so a
//! socket waiting for data holds no buffer; the data is copied out and the buffer given back at
//! once (what the reader had no room for stays in a small buffer of the socket's own). A
//! receive whose reader falls behind is stopped by the driver and re-armed here once read; a
//! socket that streams (a receive filled a small buffer) reads each large buffer with a
//! single-shot receive instead, so that the kernel receives no faster than it reads.
//!
//! Writes, vectored or not, are copied into an owned send buffer and acknowledged at once
//! (write-behind); while a send is in flight, the next bytes queue behind it. Partial sends are
//! re-submitted and `flush` waits for the last byte. Dropping the socket cancels what is in
//! flight and closes the fd.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::task::{Context, Poll, ready};

use io_uring::{opcode, squeue, types};

use super::driver::{Buf, Driver, Multi, OpId, SMALL_PROVIDED};

const RECV_BUF: usize = 16 * 1024;
const SEND_BUF: usize = 64 * 1024;
/// Writes of at least this many bytes with no send in flight, and reads of a streaming socket
/// with that much room and no receive in flight, go straight to the kernel first (nonblocking
/// `sendmsg` / `recv` on the caller's buffers): copying bulk bodies through the ring's buffers
/// cost more than the system calls save (see [`UringSocket::try_send_direct`], which also sends
/// smaller writes directly while the worker is lightly loaded).
const DIRECT_MIN: usize = 16 * 1024;

/// A connected TCP socket on io_uring.
#[derive(Debug)]
pub struct UringSocket {
    driver: Rc<Driver>,
    fd: Option<OwnedFd>,
    /// The single-shot `Recv` in flight.
    recv: Option<OpId>,
    /// The multishot receive armed (on the small provided buffers).
    recv_multi: Option<OpId>,
    /// Received bytes not read yet (from `unread_at`); empty, without an allocation, when
    /// everything received was read.
    unread: Vec<u8>,
    unread_at: usize,
    eof: bool,
    /// The next receive uses a buffer of the socket's own (the provided ones ran out).
    own_buffer: bool,
    /// The last receive filled a small provided buffer: the next one takes a large one.
    streaming: bool,
    /// The `Send` in flight, and how far into its buffer the kernel has sent.
    send: Option<OpId>,
    write_buf: Vec<u8>,
    write_at: usize,
    write_end: usize,
    /// Bytes written while a send was in flight; they go out next.
    queued: Vec<u8>,
    /// Writes that went straight to the kernel (tests).
    #[cfg(test)]
    direct_sends: std::cell::Cell<usize>,
}

// SAFETY: a `UringSocket` holds an `Rc<Driver>` and is only ever used on the worker thread that
// owns that driver: connections, their hyper tasks and upgrade tunnels are all spawned with
// `spawn_local` on the worker's `LocalSet` and never handed to another thread. hyper requires
// `Send` I/O for HTTP upgrades only so that an upgraded stream *could* move; Strait never moves
// one.
unsafe impl Send for UringSocket {}

impl UringSocket {
    /// Wraps a connected socket fd.
    pub fn from_fd(driver: Rc<Driver>, fd: OwnedFd) -> Self {
        Self {
            driver,
            fd: Some(fd),
            recv: None,
            recv_multi: None,
            unread: Vec::new(),
            unread_at: 0,
            eof: false,
            own_buffer: false,
            streaming: false,
            send: None,
            write_buf: Vec::new(),
            write_at: 0,
            write_end: 0,
            queued: Vec::new(),
            #[cfg(test)]
            direct_sends: std::cell::Cell::new(0),
        }
    }

    fn raw(&self) -> RawFd {
        self.fd.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }

    /// Reads into `into` (called once, with at most `room` bytes), like
    /// `AsyncRead::poll_read`; an empty slice means end of stream.
    pub fn poll_read_with(
        &mut self,
        cx: &mut Context<'_>,
        room: usize,
        into: impl FnOnce(&[u8]),
    ) -> Poll<io::Result<()>> {
        if self.unread.is_empty() && !self.eof {
            ready!(self.poll_fill(cx, Some(room), into))?;
            return Poll::Ready(Ok(()));
        }
        let n = room.min(self.unread.len() - self.unread_at);
        into(&self.unread[self.unread_at..self.unread_at + n]);
        self.unread_at += n;
        if self.unread_at == self.unread.len() {
            // Freed rather than kept: an idle connection holds no receive buffer.
            self.unread = Vec::new();
            self.unread_at = 0;
        }
        Poll::Ready(Ok(()))
    }

    /// On a streaming socket (its last receive filled a small buffer) with no receive in
    /// flight and nothing unread: a nonblocking `recv` straight into `buf`'s spare capacity, up
    /// to `room` bytes. `None` when that does not apply or nothing has arrived yet (the ring's
    /// receive then waits for it). Bulk bodies skip the copy out of a provided buffer and the
    /// wait for the ring's round (see [`Self::try_send_direct`] for the figures).
    pub fn try_recv_direct(
        &mut self,
        buf: &mut bytes::BytesMut,
        room: usize,
    ) -> Option<io::Result<usize>> {
        if !self.streaming
            || self.eof
            || room < DIRECT_MIN
            || self.recv.is_some()
            || self.recv_multi.is_some()
            || !self.unread.is_empty()
        {
            return None;
        }
        let fd = self.fd.as_ref()?;
        buf.reserve(room);
        let spare = buf.spare_capacity_mut();
        let len = spare.len().min(room);
        match socket2::SockRef::from(fd).recv_with_flags(&mut spare[..len], libc::MSG_DONTWAIT) {
            Ok(0) => {
                self.eof = true;
                Some(Ok(0))
            }
            Ok(n) => {
                // SAFETY: the receive initialised the first `n` bytes of the spare capacity.
                unsafe { bytes::BufMut::advance_mut(buf, n) };
                self.streaming = n >= SMALL_PROVIDED;
                Some(Ok(n))
            }
            Err(err) => not_ready(err),
        }
    }

    /// Waits until data (or the end of the stream) has arrived, without taking it: it stays
    /// buffered in the socket for the next read.
    pub fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.unread.is_empty() || self.eof {
            return Poll::Ready(Ok(()));
        }
        self.poll_fill(cx, None, |_| {})
    }

    /// Drops buffers kept for reuse (an idle connection needs none).
    pub fn release_buffers(&mut self) {
        if self.send.is_none() {
            self.write_buf = Vec::new();
        }
        if self.queued.is_empty() {
            self.queued = Vec::new();
        }
    }

    /// Receives once: with `room`, hands up to `room` bytes to `into` and keeps the rest in
    /// `unread`; without, keeps everything in `unread`. At end of stream `into` gets nothing.
    fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        room: Option<usize>,
        into: impl FnOnce(&[u8]),
    ) -> Poll<io::Result<()>> {
        loop {
            let (result, flags, buf) = if let Some(id) = self.recv_multi {
                let Some((result, flags)) = ready!(self.driver.poll_multi(id, cx)) else {
                    // It ended and every result was collected: armed again below.
                    self.recv_multi = None;
                    continue;
                };
                match result {
                    // Stopped (too many results held, or the socket streams): its slot ends
                    // at the next poll.
                    err if err == -libc::ECANCELED => continue,
                    // A kernel with buffer rings but without multishot receives (5.19).
                    err if err == -libc::EINVAL => {
                        self.driver.no_recv_multi();
                        continue;
                    }
                    _ => (result, flags, Buf::None),
                }
            } else if let Some(id) = self.recv {
                let done = ready!(self.driver.poll_op_flags(id, cx));
                self.recv = None;
                done
            } else {
                // Request/response traffic: a multishot receive, armed once for many reads. A
                // stream (its last receive filled a small buffer) asks for each large buffer
                // with a single-shot receive, so that the kernel receives no faster than the
                // reader reads and TCP pushes back on the peer.
                match self.driver.buf_group(false) {
                    Some(group)
                        if self.driver.recv_multi() && !self.streaming && !self.own_buffer =>
                    {
                        let entry = opcode::RecvMulti::new(types::Fd(self.raw()), group).build();
                        self.recv_multi = Some(self.driver.submit_multi(entry, Multi::Recv));
                    }
                    _ => self.recv = Some(self.start_recv()),
                }
                continue;
            };
            let n = match result {
                n if n > 0 => usize::try_from(n).unwrap_or(0),
                0 => {
                    self.eof = true;
                    if room.is_some() {
                        into(&[]);
                    }
                    return Poll::Ready(Ok(()));
                }
                err if err == -libc::ENOBUFS => {
                    // Every provided buffer is taken: this receive uses a buffer of its own.
                    self.own_buffer = true;
                    continue;
                }
                err => return Poll::Ready(Err(io::Error::from_raw_os_error(-err))),
            };
            let room = room.unwrap_or(0);
            if let Buf::Bytes(mut bytes) = buf {
                // SAFETY: the receive was given the buffer's spare capacity (`start_recv`) and
                // the kernel wrote `n` bytes at its start, which the completion reports.
                unsafe { bytes.set_len(n.min(bytes.capacity())) };
                self.streaming = n >= SMALL_PROVIDED;
                let given = room.min(bytes.len());
                if room > 0 {
                    into(&bytes[..given]);
                }
                if given < bytes.len() {
                    self.unread = bytes;
                    self.unread_at = given;
                }
            } else {
                self.streaming = n >= SMALL_PROVIDED;
                if let Some(id) = self.recv_multi
                    && self.streaming
                {
                    // The next receives want large buffers, one at a time.
                    self.driver.stop_multi(id);
                }
                let unread = self.driver.take_provided(flags, n, |data| {
                    let given = room.min(data.len());
                    if room > 0 {
                        into(&data[..given]);
                    }
                    data[given..].to_vec()
                });
                self.unread = unread;
                self.unread_at = 0;
            }
            return Poll::Ready(Ok(()));
        }
    }

    /// Submits a receive: into a provided buffer the kernel picks when data arrives, or (without
    /// a buffer ring, or after ENOBUFS) into a buffer of the socket's own.
    fn start_recv(&mut self) -> OpId {
        let fd = self.raw();
        match self.driver.buf_group(self.streaming) {
            Some(group) if !std::mem::take(&mut self.own_buffer) => {
                self.driver.submit(Buf::None, |_| {
                    opcode::Recv::new(types::Fd(fd), std::ptr::null_mut(), 0)
                        .buf_group(group)
                        .build()
                        .flags(squeue::Flags::BUFFER_SELECT)
                })
            }
            // Not zeroed: the kernel writes before anything reads (see `poll_fill`).
            _ => self
                .driver
                .submit(Buf::Bytes(Vec::with_capacity(RECV_BUF)), |buf| {
                    let Buf::Bytes(bytes) = buf else {
                        unreachable!("a byte buffer was given")
                    };
                    let spare = bytes.spare_capacity_mut();
                    let len = u32::try_from(spare.len()).unwrap_or(u32::MAX);
                    opcode::Recv::new(types::Fd(fd), spare.as_mut_ptr().cast(), len).build()
                }),
        }
    }

    /// Copies `data` into the send buffer; see [`Self::poll_write_vectored`].
    pub fn poll_write(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(data)])
    }

    /// Copies `bufs` (up to [`SEND_BUF`] bytes) into the send buffer and starts sending it.
    /// While a send is in flight the bytes are queued to go next, so that the writer can
    /// prepare more while the kernel sends; it waits only when that queue is full too.
    pub fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if bufs.iter().all(|buf| buf.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        match self.poll_sends(cx) {
            Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
            Poll::Ready(Ok(())) if !self.queued.is_empty() => self.start_queued(),
            Poll::Ready(Ok(())) | Poll::Pending => {}
        }
        if self.send.is_none()
            && self.queued.is_empty()
            && let Some(sent) = self.try_send_direct(bufs)
        {
            return Poll::Ready(sent);
        }
        if self.send.is_none() {
            let mut buf = std::mem::take(&mut self.write_buf);
            buf.clear();
            let n = gather(&mut buf, bufs, SEND_BUF);
            self.write_at = 0;
            self.write_end = buf.len();
            self.start_send(buf);
            return Poll::Ready(Ok(n));
        }
        let room = SEND_BUF.saturating_sub(self.queued.len());
        if room == 0 {
            // `poll_sends` registered the waker with the send in flight.
            return Poll::Pending;
        }
        Poll::Ready(Ok(gather(&mut self.queued, bufs, room)))
    }

    /// Sends a write at once with a nonblocking `sendmsg`, without copying it, if it is large
    /// or the worker is lightly loaded: `None` otherwise or when the socket's buffer is full
    /// (the write then takes the ring). Called only with nothing in flight or queued, so the
    /// bytes keep their order.
    ///
    /// With 1 MiB responses io_uring moved ~0.65 of epoll's MiB/s: every 64 KiB chunk was
    /// copied into the send buffer (and, received, out of a provided buffer) where epoll's
    /// `writev` reads the writer's buffers. A lightly loaded worker submits each send on its
    /// own (one `io_uring_enter` per send, nothing to batch it with): a `sendmsg` is the same
    /// system call without the ring's entry, completion and copy.
    fn try_send_direct(&self, bufs: &[io::IoSlice<'_>]) -> Option<io::Result<usize>> {
        let small = bufs.iter().map(|buf| buf.len()).sum::<usize>() < DIRECT_MIN;
        if small && !self.driver.light() {
            return None;
        }
        let fd = self.fd.as_ref()?;
        let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
        let sent = match socket2::SockRef::from(fd).send_vectored_with_flags(bufs, flags) {
            Ok(0) => None,
            Ok(n) => {
                #[cfg(test)]
                self.direct_sends.set(self.direct_sends.get() + 1);
                Some(Ok(n))
            }
            Err(err) => not_ready(err),
        };
        if small {
            // As a lone submission would have (see `Driver::submit_lone`).
            self.driver.collect_posted();
        }
        sent
    }

    /// Sends what was queued behind the send that just completed.
    fn start_queued(&mut self) {
        let next = std::mem::take(&mut self.queued);
        let mut spare = std::mem::take(&mut self.write_buf);
        spare.clear();
        self.queued = spare;
        self.write_at = 0;
        self.write_end = next.len();
        self.start_send(next);
    }

    fn start_send(&mut self, buf: Vec<u8>) {
        let fd = self.raw();
        let (at, end) = (self.write_at, self.write_end);
        let index = self.driver.submit_send(Buf::Bytes(buf), |buf| {
            let Buf::Bytes(bytes) = buf else {
                unreachable!("a byte buffer was given")
            };
            let len = u32::try_from(end - at).unwrap_or(u32::MAX);
            // SAFETY: `at..end` lies within `bytes`; the pointer stays valid while the slot
            // owns the buffer.
            let ptr = unsafe { bytes.as_ptr().add(at) };
            opcode::Send::new(types::Fd(fd), ptr, len)
                .flags(libc::MSG_NOSIGNAL)
                .build()
        });
        self.send = Some(index);
    }

    /// Waits until every byte written so far has been handed to the kernel.
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.poll_sends(cx))?;
            if self.queued.is_empty() {
                return Poll::Ready(Ok(()));
            }
            self.start_queued();
        }
    }

    /// Collects completed sends (re-submitting the rest of a partial one); ready once no send
    /// is in flight.
    fn poll_sends(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(index) = self.send {
            let (result, buf) = ready!(self.driver.poll_op(index, cx));
            self.send = None;
            let Buf::Bytes(bytes) = buf else {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            };
            if result < 0 {
                self.write_buf = bytes;
                return Poll::Ready(Err(io::Error::from_raw_os_error(-result)));
            }
            self.write_at += usize::try_from(result).unwrap_or(0);
            if self.write_at < self.write_end {
                // A partial send: the rest goes out from the same buffer.
                self.start_send(bytes);
            } else {
                self.write_buf = bytes;
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Flushes, then shuts the write side down.
    pub fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_flush(cx))?;
        if let Some(fd) = &self.fd {
            socket2::SockRef::from(fd).shutdown(std::net::Shutdown::Write)?;
        }
        Poll::Ready(Ok(()))
    }

    /// Connects a new socket to `addr` through the ring.
    ///
    /// # Errors
    /// The socket cannot be created or the connect fails.
    pub async fn connect(driver: Rc<Driver>, addr: SocketAddr) -> io::Result<Self> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM.cloexec(),
            Some(socket2::Protocol::TCP),
        )?;
        socket.set_tcp_nodelay(true)?;
        let fd: OwnedFd = socket.into();
        let raw = fd.as_raw_fd();
        let mut pending = PendingOp {
            driver: Rc::clone(&driver),
            index: None,
        };
        let index = driver.submit(Buf::Addr(Box::new(addr.into())), |buf| {
            let Buf::Addr(addr) = buf else {
                unreachable!("an address was given")
            };
            opcode::Connect::new(types::Fd(raw), addr.as_ptr().cast(), addr.len()).build()
        });
        pending.index = Some(index);
        let (result, _) = std::future::poll_fn(|cx| driver.poll_op(index, cx)).await;
        pending.index = None;
        if result < 0 {
            return Err(io::Error::from_raw_os_error(-result));
        }
        Ok(Self::from_fd(driver, fd))
    }
}

/// A direct system call's error: `None` when the kernel was not ready (the ring then waits),
/// else the error.
fn not_ready(err: io::Error) -> Option<io::Result<usize>> {
    match err.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => None,
        _ => Some(Err(err)),
    }
}

/// Appends to `to` at most `limit` bytes from `bufs`, in order; returns how many.
fn gather(to: &mut Vec<u8>, bufs: &[io::IoSlice<'_>], limit: usize) -> usize {
    let mut left = limit;
    for buf in bufs {
        if left == 0 {
            break;
        }
        let n = buf.len().min(left);
        to.extend_from_slice(&buf[..n]);
        left -= n;
    }
    limit - left
}

/// Cancels an operation if the future waiting for it is dropped.
struct PendingOp {
    driver: Rc<Driver>,
    index: Option<OpId>,
}

impl Drop for PendingOp {
    fn drop(&mut self) {
        if let Some(index) = self.index {
            self.driver.cancel(index);
            // The operation's fd closes next (see `Driver::submit_now`).
            self.driver.submit_now();
        }
    }
}

impl Drop for UringSocket {
    fn drop(&mut self) {
        let ops = [self.recv.take(), self.recv_multi.take(), self.send.take()];
        let queued = ops.iter().any(Option::is_some) && self.driver.has_unsubmitted();
        for index in ops.into_iter().flatten() {
            self.driver.cancel(index);
        }
        if queued {
            // An operation of this socket may still wait in the submission queue, naming the
            // fd by number: it must reach the kernel before the number can be reused.
            self.driver.submit_now();
        }
        // Closing the fd now is safe: submitted operations hold their own reference to the
        // file and are cancelled; their buffers stay with the driver until they complete.
        drop(self.fd.take());
    }
}

/// Accepts connections on a listening socket with one multishot `Accept`.
#[derive(Debug)]
pub struct UringListener {
    driver: Rc<Driver>,
    fd: OwnedFd,
    accept: Option<OpId>,
}

impl UringListener {
    /// Accepts on `listener` (already bound and listening).
    pub fn new(driver: Rc<Driver>, listener: std::net::TcpListener) -> Self {
        Self {
            driver,
            fd: listener.into(),
            accept: None,
        }
    }

    /// The next accepted connection and its peer address.
    ///
    /// # Errors
    /// The accept failed (EMFILE and the like).
    pub async fn accept(&mut self) -> io::Result<(UringSocket, SocketAddr)> {
        loop {
            let index = match self.accept {
                Some(index) => index,
                None => {
                    let entry = opcode::AcceptMulti::new(types::Fd(self.fd.as_raw_fd()))
                        .flags(libc::SOCK_CLOEXEC)
                        .build();
                    let index = self.driver.submit_multi(entry, Multi::Accept);
                    self.accept = Some(index);
                    index
                }
            };
            let driver = Rc::clone(&self.driver);
            match std::future::poll_fn(|cx| driver.poll_multi(index, cx))
                .await
                .map(|(result, _)| result)
            {
                None => self.accept = None, // the multishot stopped: re-arm
                Some(fd) if fd >= 0 => return Ok(self.accepted(fd)),
                Some(err) => return Err(io::Error::from_raw_os_error(-err)),
            }
        }
    }
}

impl UringListener {
    /// Wraps a non-negative accept result: the new connection and its peer.
    fn accepted(&self, fd: i32) -> (UringSocket, SocketAddr) {
        // SAFETY: callers pass only non-negative accept results, each a new fd that nothing
        // else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let sock = socket2::SockRef::from(&fd);
        // Small responses must not wait for Nagle's algorithm.
        let _ = sock.set_tcp_nodelay(true);
        let peer = sock
            .peer_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        (UringSocket::from_fd(Rc::clone(&self.driver), fd), peer)
    }

    /// Stops accepting and returns the connections the multishot accept took before it
    /// stopped, so that none is closed unserved. The listening socket closes with `self`.
    pub async fn close(mut self) -> Vec<(UringSocket, SocketAddr)> {
        let mut late = Vec::new();
        let Some(index) = self.accept.take() else {
            return late;
        };
        self.driver.stop_multi(index);
        let driver = Rc::clone(&self.driver);
        // Bounded: the cancel ends the multishot within one completion round; the limit only
        // guards against a kernel that keeps it armed.
        for _ in 0..4096 {
            match std::future::poll_fn(|cx| driver.poll_multi(index, cx))
                .await
                .map(|(result, _)| result)
            {
                None => return late,
                Some(fd) if fd >= 0 => late.push(self.accepted(fd)),
                Some(_) => {}
            }
        }
        self.accept = Some(index);
        late
    }
}

impl Drop for UringListener {
    fn drop(&mut self) {
        if let Some(index) = self.accept.take() {
            self.driver.cancel(index);
            // The listening fd closes next (see `Driver::submit_now`).
            self.driver.submit_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::io::{Read as _, Write as _};
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::driver::RECV_HELD;
    use super::*;
    use crate::metrics::Gauge;

    /// Writes `total` bytes of a pattern into a plain socket in pieces of growing size (small
    /// heads, then bulk) and reads them through a `UringSocket` in reads of at most `room`
    /// bytes; every byte must arrive, in order.
    fn stream_through(provided: bool, total: usize, room: usize) {
        stream_through_with(provided, total, room, false);
    }

    /// Like [`stream_through`]; with `direct`, each read first tries a direct receive into a
    /// `BytesMut`, as `Socket::poll_read_buf` does, and some must have been taken.
    fn stream_through_with(provided: bool, total: usize, room: usize, direct: bool) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let local = tokio::task::LocalSet::new();
        let expected: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        let sent = expected.clone();
        local.block_on(&rt, async move {
            let driver = Driver::build(64, Arc::new(Gauge::default()), provided).expect("ring");
            driver.start().expect("reactor");
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("address");
            let writer = std::thread::spawn(move || {
                let mut client = std::net::TcpStream::connect(addr).expect("connect");
                let mut at = 0;
                let mut piece = 1;
                while at < sent.len() {
                    let end = (at + piece).min(sent.len());
                    client.write_all(&sent[at..end]).expect("write");
                    at = end;
                    piece = (piece * 3).min(256 * 1024);
                }
            });
            let (server, _) = listener.accept().expect("accept");
            let mut socket = UringSocket::from_fd(Rc::clone(&driver), OwnedFd::from(server));
            let mut got = Vec::with_capacity(total);
            let mut direct_reads = 0;
            let read_all = async {
                loop {
                    let before = got.len();
                    let mut bytes = bytes::BytesMut::new();
                    let tried = if direct {
                        socket.try_recv_direct(&mut bytes, room)
                    } else {
                        None
                    };
                    match tried {
                        Some(read) => {
                            read.expect("direct read");
                            got.extend_from_slice(&bytes);
                            direct_reads += 1;
                        }
                        None => poll_fn(|cx| {
                            socket.poll_read_with(cx, room, |data| got.extend_from_slice(data))
                        })
                        .await
                        .expect("read"),
                    }
                    if got.len() == before {
                        break; // end of stream
                    }
                }
            };
            tokio::time::timeout(Duration::from_secs(20), read_all)
                .await
                .expect("the stream arrives within 20 s");
            assert_eq!(
                direct && room >= DIRECT_MIN,
                direct_reads > 0,
                "{direct_reads}"
            );
            all_arrived_and_released(&driver, socket, writer, &got, &expected);
        });
    }

    /// The writer ended, every byte arrived in order, and the dropped socket left no operation
    /// in flight and no provided buffer held.
    fn all_arrived_and_released(
        driver: &Driver,
        socket: UringSocket,
        writer: std::thread::JoinHandle<()>,
        got: &[u8],
        expected: &[u8],
    ) {
        writer.join().expect("writer");
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "bytes differ");
        drop(socket);
        assert_eq!(driver.in_flight(), 0, "the socket's operations are gone");
        assert_eq!(driver.buffers_held(), 0, "every provided buffer went back");
    }

    #[test]
    fn streams_through_small_and_large_provided_buffers() {
        stream_through(true, 3 * 1024 * 1024 + 17, 100_000);
        stream_through(true, 200_000, 1_000);
    }

    #[test]
    fn streams_through_direct_receives() {
        stream_through_with(true, 3 * 1024 * 1024 + 17, 100_000, true);
        stream_through_with(false, 3 * 1024 * 1024 + 17, 100_000, true);
        stream_through_with(true, 200_000, 1_000, true);
    }

    /// Writes of every size, large ones straight to the kernel while nothing is in flight and
    /// through the ring otherwise (a slow reader fills the socket's buffer), arrive whole and
    /// in order.
    #[test]
    fn large_and_small_writes_arrive_in_order() {
        with_driver(|driver, listener| async move {
            let addr = listener.local_addr().expect("address");
            let total = 4 * 1024 * 1024 + 5;
            let expected: Vec<u8> = (0..total).map(|i| (i % 253) as u8).collect();
            let reader = std::thread::spawn(move || {
                let mut peer = std::net::TcpStream::connect(addr).expect("connect");
                let mut got = Vec::new();
                let mut piece = [0u8; 4096];
                loop {
                    match peer.read(&mut piece).expect("read") {
                        0 => return got,
                        n => got.extend_from_slice(&piece[..n]),
                    }
                }
            });
            let (server, _) = listener.accept().expect("accept");
            let mut socket = UringSocket::from_fd(Rc::clone(&driver), OwnedFd::from(server));
            // A busy worker, submitting at once: small writes take the ring (a light one
            // would send them directly too).
            driver.set_lone_after(Duration::ZERO, true);
            // The first write is large and meets an empty socket: it goes straight to the
            // kernel whatever the reader's pace; later ones meet sends in flight too.
            let sizes = [20_000, 1, 300, 7, 70_000, 16 * 1024, 200_000, 2_000];
            let write_all = async {
                let mut at = 0;
                for size in sizes.iter().cycle() {
                    if at == total {
                        break;
                    }
                    let end = (at + size).min(total);
                    // Two slices, as hyper writes a head and a body.
                    let middle = at + (end - at) / 2;
                    let slices = [
                        io::IoSlice::new(&expected[at..middle]),
                        io::IoSlice::new(&expected[middle..end]),
                    ];
                    let n = poll_fn(|cx| socket.poll_write_vectored(cx, &slices))
                        .await
                        .expect("write");
                    at += n;
                }
                poll_fn(|cx| socket.poll_shutdown(cx))
                    .await
                    .expect("shutdown");
            };
            tokio::time::timeout(Duration::from_secs(20), write_all)
                .await
                .expect("written within 20 s");
            assert!(
                socket.direct_sends.get() > 0,
                "no write went straight to the kernel"
            );
            let join = tokio::task::spawn_blocking(move || reader.join().expect("reader"));
            let got = tokio::time::timeout(Duration::from_secs(20), join)
                .await
                .expect("the reader reaches the end of the stream within 20 s")
                .expect("join");
            assert_eq!(got.len(), expected.len());
            assert!(got == expected, "bytes differ");
            drop(socket);
            assert_eq!(driver.in_flight(), 0);
        });
    }

    #[test]
    fn streams_through_buffers_of_its_own() {
        stream_through(false, 3 * 1024 * 1024 + 17, 100_000);
        stream_through(false, 200_000, 1_000);
    }

    /// A socket dropped right after a write, before the reactor submitted the send: the send
    /// must still go to that socket's peer, never to the next socket that gets its fd number.
    /// Runs `test` on a current-thread runtime with a started driver and a listener.
    fn with_driver<F: Future<Output = ()>>(
        test: impl FnOnce(Rc<Driver>, std::net::TcpListener) -> F,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            let driver = Driver::build(64, Arc::new(Gauge::default()), true).expect("ring");
            driver.start().expect("reactor");
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            test(driver, listener).await;
        });
    }

    #[test]
    fn a_send_queued_at_drop_never_reaches_the_next_socket_with_the_same_fd() {
        with_driver(|driver, listener| async move {
            // Sends wait for the reactor, as under load.
            driver.set_lone_after(Duration::from_secs(3600), true);
            let addr = listener.local_addr().expect("address");
            let mut cx = Context::from_waker(std::task::Waker::noop());
            // Lowest free number first: the next socket takes the dropped one's, unless a test
            // on another thread (`cargo test` runs them in one process) opens an fd in between;
            // then the scenario is built again.
            let mut reused = None;
            for _ in 0..20 {
                let first = std::net::TcpStream::connect(addr).expect("connect");
                let (first_peer, _) = listener.accept().expect("accept");
                let mut socket = UringSocket::from_fd(Rc::clone(&driver), OwnedFd::from(first));
                let fd = socket.raw();
                let written = socket.poll_write(&mut cx, b"stale");
                assert!(matches!(written, Poll::Ready(Ok(5))), "{written:?}");
                assert!(driver.has_unsubmitted(), "the send waits for the reactor");
                drop(socket);
                let second = std::net::TcpStream::connect(addr).expect("connect");
                let (second_peer, _) = listener.accept().expect("accept");
                if second.as_raw_fd() == fd {
                    reused = Some((first_peer, second, second_peer));
                    break;
                }
                for _ in 0..100 {
                    if !driver.has_unsubmitted() {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
            }
            let Some((mut first_peer, mut second, mut second_peer)) = reused else {
                panic!("the dropped socket's fd number was never reused in 20 attempts");
            };
            // Let the reactor submit whatever is still queued.
            for _ in 0..100 {
                if !driver.has_unsubmitted() {
                    break;
                }
                tokio::task::yield_now().await;
            }
            assert!(!driver.has_unsubmitted(), "the reactor submitted the queue");
            second.write_all(b"fresh").expect("write");
            let timeout = Some(Duration::from_secs(10));
            second_peer.set_read_timeout(timeout).expect("timeout");
            first_peer.set_read_timeout(timeout).expect("timeout");
            let mut got = [0_u8; 5];
            second_peer.read_exact(&mut got).expect("read");
            assert_eq!(
                &got, b"fresh",
                "the old socket's send went to the new socket"
            );
            first_peer.read_exact(&mut got).expect("read");
            assert_eq!(&got, b"stale", "the send reached its own peer");
        });
    }

    /// A send goes to the kernel at once when the worker is light (with `sendmsg`) or the ring
    /// has been quiet (submitted alone), and waits for the reactor's round when the worker is
    /// busy and the ring was entered recently.
    #[test]
    fn a_lone_send_is_submitted_at_once_and_sends_under_load_batch() {
        with_driver(|driver, listener| async move {
            let addr = listener.local_addr().expect("address");
            let mut cx = Context::from_waker(std::task::Waker::noop());
            let mut peers = Vec::new();
            let mut sockets = Vec::new();
            let (quiet, busy) = (Duration::ZERO, Duration::from_secs(3600));
            for (after, heavy, queued) in [
                (quiet, true, false),
                (busy, false, false),
                (busy, true, true),
            ] {
                driver.set_lone_after(after, heavy);
                let stream = std::net::TcpStream::connect(addr).expect("connect");
                peers.push(listener.accept().expect("accept").0);
                let mut socket = UringSocket::from_fd(Rc::clone(&driver), OwnedFd::from(stream));
                let written = socket.poll_write(&mut cx, b"hello");
                assert!(matches!(written, Poll::Ready(Ok(5))), "{written:?}");
                assert_eq!(driver.has_unsubmitted(), queued, "{after:?}, heavy {heavy}");
                // A light worker sends with a system call of the socket's own.
                assert_eq!(
                    socket.direct_sends.get(),
                    usize::from(!heavy),
                    "heavy {heavy}"
                );
                // A send submitted at once completed in that system call and was collected:
                // the flush needs no reactor round. A queued one waits for it.
                let flushed = socket.poll_flush(&mut cx);
                assert_eq!(
                    flushed.is_pending(),
                    queued,
                    "{after:?}, heavy {heavy}: {flushed:?}"
                );
                sockets.push(socket);
            }
            for peer in &mut peers {
                peer.set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("timeout");
            }
            // The batched one goes out with the reactor's round.
            for _ in 0..100 {
                if !driver.has_unsubmitted() {
                    break;
                }
                tokio::task::yield_now().await;
            }
            assert!(!driver.has_unsubmitted(), "the reactor submitted the queue");
            for peer in &mut peers {
                let mut got = [0_u8; 5];
                peer.read_exact(&mut got).expect("read");
                assert_eq!(&got, b"hello");
            }
        });
    }

    /// A light worker's direct send collects the completions the kernel posted meanwhile (as
    /// a lone submission does): a receive whose data arrived is ready without a reactor round.
    #[test]
    fn a_direct_send_collects_completions_posted_meanwhile() {
        with_driver(|driver, listener| async move {
            driver.set_lone_after(Duration::from_secs(3600), false);
            let addr = listener.local_addr().expect("address");
            let mut cx = Context::from_waker(std::task::Waker::noop());
            let mut peer_a = std::net::TcpStream::connect(addr).expect("connect");
            let mut a = UringSocket::from_fd(
                Rc::clone(&driver),
                OwnedFd::from(listener.accept().expect("accept").0),
            );
            let mut peer_b = std::net::TcpStream::connect(addr).expect("connect");
            let mut b = UringSocket::from_fd(
                Rc::clone(&driver),
                OwnedFd::from(listener.accept().expect("accept").0),
            );
            let mut got = Vec::new();
            let waiting = a.poll_read_with(&mut cx, 64, |data| got.extend_from_slice(data));
            assert!(waiting.is_pending(), "{waiting:?}");
            driver.submit_now();
            // The kernel completes A's receive as this system call returns (its task work).
            peer_a.write_all(b"ping").expect("write");
            let written = b.poll_write(&mut cx, b"pong");
            assert!(matches!(written, Poll::Ready(Ok(4))), "{written:?}");
            assert_eq!(b.direct_sends.get(), 1);
            let read = a.poll_read_with(&mut cx, 64, |data| got.extend_from_slice(data));
            assert!(
                matches!(read, Poll::Ready(Ok(()))),
                "the receive's completion was not collected: {read:?}"
            );
            assert_eq!(got, b"ping");
            peer_b
                .set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let mut pong = [0_u8; 4];
            peer_b.read_exact(&mut pong).expect("read");
            assert_eq!(&pong, b"pong");
        });
    }

    /// A send held for the reactor's round wakes the reactor: on a ring where nothing else
    /// happens (no completion raises an event on its fd) it still goes out.
    #[test]
    fn a_send_held_for_the_round_wakes_the_reactor() {
        with_driver(|driver, listener| async move {
            driver.set_lone_after(Duration::from_secs(3600), true);
            let addr = listener.local_addr().expect("address");
            let stream = std::net::TcpStream::connect(addr).expect("connect");
            let (mut peer, _) = listener.accept().expect("accept");
            // The reactor's first round passes: it waits for a wake-up from here on.
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            let mut socket = UringSocket::from_fd(Rc::clone(&driver), OwnedFd::from(stream));
            let mut cx = Context::from_waker(std::task::Waker::noop());
            let written = socket.poll_write(&mut cx, b"hello");
            assert!(matches!(written, Poll::Ready(Ok(5))), "{written:?}");
            assert!(driver.has_unsubmitted(), "held for the reactor's round");
            tokio::time::timeout(Duration::from_secs(5), poll_fn(|cx| socket.poll_flush(cx)))
                .await
                .expect("flushed within 5 s")
                .expect("flush");
            peer.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let mut got = [0_u8; 5];
            peer.read_exact(&mut got).expect("read");
            assert_eq!(&got, b"hello");
        });
    }

    /// Reads once (up to 100,000 bytes) into `got`, within 10 s; false at the end of the stream.
    async fn read_some(socket: &mut UringSocket, got: &mut Vec<u8>) -> bool {
        let before = got.len();
        tokio::time::timeout(
            Duration::from_secs(10),
            poll_fn(|cx| socket.poll_read_with(cx, 100_000, |d| got.extend_from_slice(d))),
        )
        .await
        .expect("data within 10 s")
        .expect("read");
        got.len() > before
    }

    /// A socket that stops reading while its peer keeps sending small messages: its multishot
    /// receive is stopped once a few results wait, so it holds only a few of the shared buffers
    /// (and TCP pushes back on the peer); once read again, every byte arrives in order.
    #[test]
    fn a_socket_that_stops_reading_holds_only_a_few_provided_buffers() {
        with_driver(|driver, listener| async move {
            assert!(driver.recv_multi(), "this kernel has multishot receives");
            let (pieces, piece) = (200, 1000);
            let expected: Vec<u8> = (0..pieces * piece).map(|i| (i % 251) as u8).collect();
            let sent = expected.clone();
            let addr = listener.local_addr().expect("address");
            // One small segment per millisecond: each is one receive, none fills a small
            // buffer (which would switch the socket to single-shot receives).
            let writer = std::thread::spawn(move || {
                let mut client = std::net::TcpStream::connect(addr).expect("connect");
                client.set_nodelay(true).expect("nodelay");
                for chunk in sent.chunks(piece) {
                    client.write_all(chunk).expect("write");
                    std::thread::sleep(Duration::from_millis(1));
                }
            });
            let (server, _) = listener.accept().expect("accept");
            let mut socket = UringSocket::from_fd(Rc::clone(&driver), OwnedFd::from(server));
            let mut got = Vec::with_capacity(expected.len());
            assert!(read_some(&mut socket, &mut got).await, "the first piece");
            let Some(id) = socket.recv_multi else {
                panic!("no multishot receive");
            };
            // Stop reading: the multishot must stop by itself with few results held.
            let mut state = driver.multi_state(id);
            for _ in 0..1_000 {
                if state.is_some_and(|(_, armed)| !armed) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
                state = driver.multi_state(id);
            }
            let Some((held, false)) = state else {
                panic!("the multishot receive was not stopped: {state:?}");
            };
            assert!(
                (RECV_HELD..=2 * RECV_HELD).contains(&held),
                "{held} results held (stopped at {RECV_HELD})"
            );
            while read_some(&mut socket, &mut got).await {}
            all_arrived_and_released(&driver, socket, writer, &got, &expected);
        });
    }

    /// A socket dropped with received data it never read gives the provided buffers back.
    #[test]
    fn a_socket_dropped_with_unread_data_gives_its_buffers_back() {
        with_driver(|driver, listener| async move {
            let addr = listener.local_addr().expect("address");
            let mut client = std::net::TcpStream::connect(addr).expect("connect");
            client.set_nodelay(true).expect("nodelay");
            let (server, _) = listener.accept().expect("accept");
            let mut socket = UringSocket::from_fd(Rc::clone(&driver), OwnedFd::from(server));
            client.write_all(b"first").expect("write");
            let mut got = Vec::new();
            assert!(read_some(&mut socket, &mut got).await);
            assert_eq!(got, b"first");
            let Some(id) = socket.recv_multi else {
                panic!("no multishot receive");
            };
            // Two more pieces arrive and wait, unread, in provided buffers.
            for piece in [b"second", b"third!"] {
                client.write_all(piece).expect("write");
                std::thread::sleep(Duration::from_millis(5));
            }
            for _ in 0..1_000 {
                if driver
                    .multi_state(id)
                    .is_some_and(|(queued, _)| queued >= 2)
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            assert_eq!(driver.multi_state(id), Some((2, true)), "two results wait");
            assert_eq!(driver.buffers_held(), 2);
            drop(socket);
            assert_eq!(
                driver.buffers_held(),
                0,
                "the unread results' buffers went back"
            );
            for _ in 0..1_000 {
                if driver.in_flight() == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            assert_eq!(driver.in_flight(), 0, "the cancelled receive completed");
        });
    }
}
