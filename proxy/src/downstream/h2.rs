//! HTTP/2 downstream connections (RFC 9113), read and written by the connection's own task.
//!
//! hyper's server (on the h2 crate) cost about 60 % of Strait's user-space instructions per
//! h2c request (`benches/instructions.sh`): HPACK encoding that hashes every field, a stream
//! store behind a lock, a task per stream that moved a 2.4 KB future, connection-field scans.
//! Here the connection's task reads frames (`frames.rs`), decodes each request head
//! ([`hpack::Decoder`]) straight into a
//! [`Request`](http::Request) (`request.rs`), and starts one local task per stream (`stream.rs`)
//! that runs [`forward::handle`](crate::forward::handle) and writes the response's frames into
//! the connection's output, which the connection's task writes in one go per wake-up.
//!
//! What a client of hyper's server got is kept:
//! - Limits: SETTINGS_MAX_CONCURRENT_STREAMS (a stream past it is refused), a header list over
//!   `max_header_bytes` or with more than `max_headers` fields gets 431; streams reset by the
//!   client before their response ended, or reset by the proxy for the client's errors, are
//!   counted and past their limits the connection ends with GOAWAY `ENHANCE_YOUR_CALM` (rapid
//!   reset, CVE-2023-44487). The output buffered for a client that does not read stops the
//!   reading of its frames.
//! - Malformed requests (RFC 9113 §8.1.1: pseudo-fields missing, repeated, unknown or after
//!   regular fields, upper-case names, connection-specific fields, a `content-length` the DATA
//!   disagrees with) are reset with PROTOCOL_ERROR and never reach an upstream.
//! - Flow control both ways: 1 MiB per stream and 4 MiB per connection for request bodies,
//!   given back as the upstream side reads them; the client's windows for response bodies.
//! - Graceful shutdown: GOAWAY naming the last stream taken; those finish, then the connection
//!   closes. A client's reset cancels its exchange and its upstream request.
//! - Responses carry `date` when the upstream sent none and `content-length` when the body's
//!   length is known; connection-specific fields are not sent.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::header::HeaderMap;
use tokio::task::JoinHandle;

mod frames;
mod request;
mod stream;

pub use self::stream::Body;

use super::Busy;
use crate::forward::Downstream;
use crate::http1::Names;
use crate::http2::frame::{self, Head, Reason, setting};
use crate::http2::hpack;
use crate::io::Socket;

/// The window each request body starts with (SETTINGS_INITIAL_WINDOW_SIZE).
const STREAM_WINDOW: u32 = 1024 * 1024;
/// The window of all request bodies of a connection together.
const CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;
/// Output buffered beyond this stops the reading of frames (and the sending of response
/// bodies) until the client reads.
const OUT_HIGH: usize = 1024 * 1024;
/// Room made for a read at first, and the most: a read that fills its room doubles the
/// next one's, up to the most; one that takes under a quarter of it halves it. A connection
/// of small requests then never holds a large buffer (on epoll the room is allocated before
/// the read, and an allocator does not give freed pages back while a worker is idle).
const READ_MIN: usize = 4 * 1024;
const READ_MAX: usize = 64 * 1024;
/// Reads per wake-up before the task yields to the others of its worker.
const READS_PER_POLL: usize = 16;
/// Frames that carry nothing (empty DATA without END_STREAM, empty CONTINUATION) a client may
/// send in a row before the connection ends (a CPU flood, CVE-2019-9518).
const MAX_EMPTY_FRAMES: u32 = 100;
/// Fields a request's header map has room for beyond its own, for those the proxy adds.
const ADDED_FIELDS: usize = 8;
/// The client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The limits of a listener's HTTP/2 connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub max_streams: u32,
    /// The largest header list (RFC 9113 §6.5.2 sizes), advertised as
    /// SETTINGS_MAX_HEADER_LIST_SIZE; larger gets 431.
    pub max_header_list: usize,
    /// The most fields in a request's header list; more gets 431.
    pub max_fields: usize,
    /// Streams the client may reset before their response ended, beyond those answered.
    pub max_client_resets: usize,
    /// Streams the proxy may reset for the client's errors.
    pub max_local_resets: usize,
}

/// Why a connection ended early: the GOAWAY it sent.
#[derive(Debug)]
struct ConnError {
    reason: Reason,
    detail: &'static str,
}

fn conn_error(reason: Reason, detail: &'static str) -> ConnError {
    ConnError { reason, detail }
}

/// An HTTP/2 connection: serves streams until the connection ends.
#[derive(Debug)]
pub struct Connection {
    shared: Rc<Shared>,
    io: RefCell<Reader>,
}

/// What the connection's task keeps to itself: the socket's reading side and the decoder.
#[derive(Debug)]
struct Reader {
    socket: Socket,
    buf: BytesMut,
    decoder: hpack::Decoder,
    /// The names of the last request's regular fields, for the next request that repeats them.
    names: Names,
    /// Whether the client's preface was read.
    prefaced: bool,
    /// A header block that goes on in CONTINUATION frames: its stream, END_STREAM, the
    /// fragments so far.
    block: Option<(u32, bool, BytesMut)>,
    /// Frames in a row that carried nothing.
    empty_frames: u32,
    /// Room for the next read (`READ_MIN..=READ_MAX`).
    read_size: usize,
    /// The buffers were freed ([`Connection::release_idle`]): the next read waits for bytes
    /// before it makes room for them (on epoll the room is allocated before the read).
    released: bool,
}

/// The state the connection's task shares with its streams' tasks and request bodies.
#[derive(Debug)]
pub(crate) struct Shared {
    state: RefCell<State>,
    conn: Rc<Downstream>,
    busy: Busy,
    limits: Limits,
}

#[derive(Debug)]
struct State {
    out: Out,
    encoder: hpack::Encoder,
    /// The connection's task, woken when there is output.
    writer: Option<Waker>,
    streams: Vec<Stream>,
    /// The highest stream the client opened.
    last_stream: u32,
    /// Set once GOAWAY went out (or is queued): streams past `last_stream` are not taken.
    going_away: bool,
    /// The connection ended: streams stop.
    closed: bool,
    /// The client's windows for what this side sends.
    send_window: i64,
    peer_initial_window: i64,
    peer_max_frame: usize,
    /// Stream tasks waiting for the connection's window or for room in the output.
    blocked: Vec<Waker>,
    /// What the client may still send on the connection, and what was read but not yet given
    /// back.
    recv_window: i64,
    recv_unacked: u32,
    /// Streams the client reset before their response ended, less those answered since.
    client_resets: usize,
    /// Streams reset for the client's errors.
    local_resets: usize,
    /// Header maps of responses sent, emptied, for the next requests' heads.
    spare_maps: Vec<HeaderMap>,
}

/// The most header maps a connection keeps for reuse.
const SPARE_MAPS: usize = 8;

/// One open stream: its request body as received, and its response's window.
#[derive(Debug)]
struct Stream {
    id: u32,
    /// Request body data received and not yet read.
    chunks: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    /// END_STREAM received (or the rest of the request will not be read).
    recv_closed: bool,
    /// Reset by either side: reading the body fails.
    reset: Option<Reason>,
    /// What the client may still send on the stream, and what was read but not given back.
    recv_window: i64,
    recv_unacked: u32,
    /// `content-length` less the DATA received, when the request has one.
    expected: Option<u64>,
    body_waker: Option<Waker>,
    send_window: i64,
    send_waker: Option<Waker>,
    /// The response's END_STREAM went out.
    send_closed: bool,
    task: Option<JoinHandle<()>>,
}

impl Stream {
    fn new(id: u32, send_window: i64, expected: Option<u64>, end: bool) -> Self {
        Self {
            id,
            chunks: VecDeque::new(),
            trailers: None,
            recv_closed: end,
            reset: None,
            recv_window: i64::from(STREAM_WINDOW),
            recv_unacked: 0,
            expected,
            body_waker: None,
            send_window,
            send_waker: None,
            send_closed: false,
            task: None,
        }
    }

    fn wake(&mut self) {
        if let Some(waker) = self.body_waker.take() {
            waker.wake();
        }
        if let Some(waker) = self.send_waker.take() {
            waker.wake();
        }
    }
}

/// The bytes waiting to be written: small frames copied into `tail`, large payloads kept as
/// they came, in order.
#[derive(Debug, Default)]
struct Out {
    segments: VecDeque<Bytes>,
    tail: BytesMut,
    len: usize,
}

/// Payloads shorter than this are copied into the output's tail rather than kept aside.
const COPY_BELOW: usize = 1024;

impl Out {
    fn is_empty(&self) -> bool {
        self.len == 0 && self.tail.is_empty()
    }

    fn len(&self) -> usize {
        self.len + self.tail.len()
    }

    fn payload(&mut self, data: Bytes) {
        if data.len() < COPY_BELOW {
            self.tail.extend_from_slice(&data);
        } else {
            if !self.tail.is_empty() {
                let head = self.tail.split().freeze();
                self.len += head.len();
                self.segments.push_back(head);
            }
            self.len += data.len();
            self.segments.push_back(data);
        }
    }

    /// Writes until all is written or the socket is full.
    fn poll_write(&mut self, socket: &mut Socket, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        use crate::http1::Output as _;
        while !self.is_empty() {
            let mut slices = [io::IoSlice::new(&[]); 32];
            let mut count = 0;
            for segment in self.segments.iter().take(slices.len() - 1) {
                slices[count] = io::IoSlice::new(segment);
                count += 1;
            }
            if count < slices.len() - 1 || self.segments.len() < slices.len() {
                slices[count] = io::IoSlice::new(&self.tail);
                count += 1;
            }
            let mut n = std::task::ready!(socket.poll_write_vectored(cx, &slices[..count]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            while n > 0 {
                match self.segments.front_mut() {
                    Some(segment) => {
                        let taken = n.min(segment.len());
                        segment.advance(taken);
                        self.len -= taken;
                        n -= taken;
                        if segment.is_empty() {
                            self.segments.pop_front();
                        }
                    }
                    None if n == self.tail.len() => {
                        // All out: the buffer is written again from its start (an advance
                        // would leave the room before it unused until a reserve).
                        self.tail.clear();
                        n = 0;
                    }
                    None => {
                        self.tail.advance(n);
                        n = 0;
                    }
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl State {
    fn stream(&mut self, id: u32) -> Option<&mut Stream> {
        self.streams.iter_mut().find(|stream| stream.id == id)
    }

    fn wake_writer(&self) {
        if let Some(waker) = &self.writer {
            waker.wake_by_ref();
        }
    }

    fn wake_blocked(&mut self) {
        for waker in self.blocked.drain(..) {
            waker.wake();
        }
    }

    /// Resets a stream: RST_STREAM goes out, its task is cancelled and its body fails.
    fn reset(&mut self, id: u32, reason: Reason) {
        frame::put_reset(&mut self.out.tail, id, reason);
        self.wake_writer();
        if let Some(index) = self.streams.iter().position(|stream| stream.id == id) {
            let mut stream = self.streams.swap_remove(index);
            self.forget(&mut stream, reason);
        }
    }

    /// Ends a stream that is removed: cancels its task, fails its body, gives its unread
    /// request data back to the connection's window.
    fn forget(&mut self, stream: &mut Stream, reason: Reason) {
        if let Some(task) = stream.task.take()
            && !stream.send_closed
        {
            task.abort();
        }
        let unread: usize = stream.chunks.drain(..).map(|chunk| chunk.len()).sum();
        self.give_back_connection(unread);
        stream.reset = Some(reason);
        stream.wake();
    }

    /// Gives `n` bytes read (or discarded) back to the client's connection window, in updates
    /// of at least half of it.
    fn give_back_connection(&mut self, n: usize) {
        self.recv_unacked = self
            .recv_unacked
            .saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        if self.recv_unacked >= CONNECTION_WINDOW / 2 && !self.closed {
            frame::put_window_update(&mut self.out.tail, 0, self.recv_unacked);
            self.recv_window += i64::from(self.recv_unacked);
            self.recv_unacked = 0;
            self.wake_writer();
        }
    }

    /// Removes a stream both sides of which have ended.
    fn remove_if_done(&mut self, id: u32) {
        if let Some(index) = self
            .streams
            .iter()
            .position(|stream| stream.id == id && stream.recv_closed && stream.send_closed)
        {
            let mut stream = self.streams.swap_remove(index);
            let unread: usize = stream.chunks.drain(..).map(|chunk| chunk.len()).sum();
            self.give_back_connection(unread);
        }
    }
}

impl Connection {
    /// A connection on `socket`, whose client preface is still to be read.
    pub(super) fn new(socket: Socket, conn: Rc<Downstream>, busy: Busy, limits: Limits) -> Self {
        let mut out = Out::default();
        let header_list = u32::try_from(limits.max_header_list).unwrap_or(u32::MAX);
        frame::put_settings(
            &mut out.tail,
            &[
                (setting::MAX_CONCURRENT_STREAMS, limits.max_streams),
                (setting::INITIAL_WINDOW_SIZE, STREAM_WINDOW),
                (setting::MAX_HEADER_LIST_SIZE, header_list),
            ],
        );
        let initial = u32::try_from(frame::DEFAULT_WINDOW).unwrap_or(0);
        frame::put_window_update(&mut out.tail, 0, CONNECTION_WINDOW - initial);
        let state = State {
            out,
            encoder: hpack::Encoder::new(),
            writer: None,
            streams: Vec::new(),
            last_stream: 0,
            going_away: false,
            closed: false,
            send_window: frame::DEFAULT_WINDOW,
            peer_initial_window: frame::DEFAULT_WINDOW,
            peer_max_frame: frame::DEFAULT_MAX_FRAME_SIZE as usize,
            blocked: Vec::new(),
            recv_window: i64::from(CONNECTION_WINDOW),
            recv_unacked: 0,
            client_resets: 0,
            local_resets: 0,
            spare_maps: Vec::new(),
        };
        Self {
            shared: Rc::new(Shared {
                state: RefCell::new(state),
                conn,
                busy,
                limits,
            }),
            io: RefCell::new(Reader {
                socket,
                buf: BytesMut::new(),
                decoder: hpack::Decoder::new(hpack::DEFAULT_TABLE_SIZE),
                names: Names::default(),
                prefaced: false,
                block: None,
                empty_frames: 0,
                read_size: READ_MIN,
                released: false,
            }),
        }
    }

    /// Sends GOAWAY: the streams taken so far finish, then the connection closes.
    pub fn graceful_shutdown(&self) {
        let mut state = self.shared.state.borrow_mut();
        if !state.going_away {
            state.going_away = true;
            let last = state.last_stream;
            frame::put_goaway(&mut state.out.tail, last, Reason::NO_ERROR);
            state.wake_writer();
        }
    }

    /// Frees what a quiet connection need not keep, when no stream is open: the read buffer,
    /// the output buffer, spare header maps, the socket's buffers.
    pub fn release_idle(&self) {
        let Ok(mut reader) = self.io.try_borrow_mut() else {
            return;
        };
        let Ok(mut state) = self.shared.state.try_borrow_mut() else {
            return;
        };
        if !state.streams.is_empty() || !state.out.is_empty() || !reader.buf.is_empty() {
            return;
        }
        reader.buf = BytesMut::new();
        reader.read_size = READ_MIN;
        reader.released = true;
        reader.names = Names::default();
        reader.socket.release_buffers();
        state.out = Out::default();
        state.streams = Vec::new();
        state.blocked = Vec::new();
        state.spare_maps = Vec::new();
    }

    /// Serves streams until the connection ends.
    ///
    /// # Errors
    /// The connection failed, or the client broke the protocol (it was sent GOAWAY).
    pub async fn run(&self) -> io::Result<()> {
        let result = poll_fn(|cx| self.poll(cx)).await;
        let mut state = self.shared.state.borrow_mut();
        state.closed = true;
        let mut streams = std::mem::take(&mut state.streams);
        for stream in &mut streams {
            state.forget(stream, Reason::CANCEL);
        }
        state.wake_blocked();
        result
    }

    fn poll(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut reader = self.io.borrow_mut();
        let reader = &mut *reader;
        let read = if self.shared.state.borrow().closed {
            // GOAWAY for an error is queued: nothing more is read.
            Poll::Pending
        } else {
            self.poll_read(reader, cx)
        };
        let mut state = self.shared.state.borrow_mut();
        if let Poll::Ready(Err(err)) = &read {
            if let Some(err) = err
                .get_ref()
                .and_then(|e| e.downcast_ref::<ProtocolError>())
            {
                // The client broke the protocol: GOAWAY says how, then the connection closes.
                tracing::debug!(error = %err, "HTTP/2 connection error");
                self.shared.conn.stats.http2_connection_errors.inc();
                let last = state.last_stream;
                frame::put_goaway(&mut state.out.tail, last, err.0.reason);
                state.going_away = true;
                state.closed = true;
            } else {
                return Poll::Ready(Err(io::Error::new(err.kind(), err.to_string())));
            }
        }
        let written = state.out.poll_write(&mut reader.socket, cx);
        if state.out.len() < OUT_HIGH {
            state.wake_blocked();
        }
        match written {
            Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
            Poll::Ready(Ok(())) if state.closed => {
                return Poll::Ready(match read {
                    Poll::Ready(Err(err)) => Err(err),
                    _ => Ok(()),
                });
            }
            Poll::Ready(Ok(())) if state.going_away && state.streams.is_empty() => {
                return Poll::Ready(Ok(()));
            }
            _ => {}
        }
        if let Poll::Ready(Ok(())) = read {
            // The client closed its side: what is in flight is abandoned.
            return Poll::Ready(Ok(()));
        }
        if !state
            .writer
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            state.writer = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Reads and handles frames until the socket has no more; `Ready(Ok)` at the end of the
    /// client's stream.
    fn poll_read(&self, reader: &mut Reader, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        for _ in 0..READS_PER_POLL {
            self.handle_frames(reader).map_err(ProtocolError::into_io)?;
            if self.shared.state.borrow().out.len() >= OUT_HIGH {
                // The client does not read what it asked for: its frames wait.
                return Poll::Pending;
            }
            if reader.released {
                std::task::ready!(reader.socket.poll_read_ready(cx))?;
                reader.released = false;
            }
            let room = reader.read_size;
            match std::task::ready!(reader.socket.poll_read_buf(
                cx,
                &mut reader.buf,
                room / 2,
                room
            )) {
                Ok(0) => return Poll::Ready(Ok(())),
                Ok(n) if n >= room => reader.read_size = (room * 2).min(READ_MAX),
                Ok(n) if n < room / 4 => reader.read_size = (room / 2).max(READ_MIN),
                Ok(_) => {}
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
        self.handle_frames(reader).map_err(ProtocolError::into_io)?;
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Handles the complete frames in the read buffer.
    fn handle_frames(&self, reader: &mut Reader) -> Result<(), ProtocolError> {
        if !reader.prefaced {
            if reader.buf.len() < PREFACE.len() {
                return Ok(());
            }
            if !reader.buf.starts_with(PREFACE) {
                return Err(ProtocolError(conn_error(
                    Reason::PROTOCOL_ERROR,
                    "bad preface",
                )));
            }
            reader.buf.advance(PREFACE.len());
            reader.prefaced = true;
        }
        while let Some(head) = Head::parse(&reader.buf) {
            if head.len > frame::DEFAULT_MAX_FRAME_SIZE {
                return Err(ProtocolError(conn_error(
                    Reason::FRAME_SIZE_ERROR,
                    "frame larger than SETTINGS_MAX_FRAME_SIZE",
                )));
            }
            let len = head.len as usize;
            if reader.buf.len() < frame::HEAD_LEN + len {
                reader.buf.reserve(frame::HEAD_LEN + len - reader.buf.len());
                break;
            }
            reader.buf.advance(frame::HEAD_LEN);
            let payload = reader.buf.split_to(len).freeze();
            self.on_frame(reader, head, payload)
                .map_err(ProtocolError)?;
            if self.shared.state.borrow().closed {
                break;
            }
        }
        Ok(())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Ok(mut state) = self.shared.state.try_borrow_mut() {
            state.closed = true;
            for stream in &mut state.streams {
                if let Some(task) = stream.task.take() {
                    task.abort();
                }
            }
        }
    }
}

/// A connection error carried through `io::Error` to the poll that sends GOAWAY.
#[derive(Debug)]
struct ProtocolError(ConnError);

impl ProtocolError {
    fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }
}

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP/2 {}: {}", self.0.reason, self.0.detail)
    }
}

impl std::error::Error for ProtocolError {}
