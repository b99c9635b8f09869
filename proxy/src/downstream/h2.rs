//! HTTP/2 downstream connections (RFC 9113), read and written by the connection's own task.
//!
//! hyper's server (on the h2 crate) cost about 60 % of Strait's user-space instructions per
//! h2c request (`benches/instructions.sh`): HPACK encoding that hashes every field, a stream
//! store behind a lock, a task per stream that moved a 2.4 KB future, connection-field scans.
//! Here the connection's task reads frames, decodes each request head
//! ([`hpack::Decoder`](crate::http2::hpack::Decoder)) straight into a [`Request`], and starts one
//! local task per stream ([`stream`]) that runs [`forward::handle`] and writes the response's
//! frames into the connection's output, which the connection's task writes in one go per
//! wake-up.
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
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, StatusCode, Uri, Version};
use tokio::task::JoinHandle;

mod stream;

pub use self::stream::Body;

use super::Busy;
use crate::body::Incoming;
use crate::error::ProxyError;
use crate::forward::{self, Downstream};
use crate::http2::frame::{self, Head, Reason, flag, kind, setting};
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

    fn on_frame(&self, reader: &mut Reader, head: Head, payload: Bytes) -> Result<(), ConnError> {
        if let Some((stream, ..)) = &reader.block
            && (head.kind != kind::CONTINUATION || head.stream != *stream)
        {
            return Err(conn_error(
                Reason::PROTOCOL_ERROR,
                "a header block interrupted by another frame",
            ));
        }
        let empty = payload.is_empty();
        match head.kind {
            kind::DATA => self.on_data(head, payload)?,
            kind::HEADERS => self.on_headers(reader, head, payload)?,
            kind::CONTINUATION => self.on_continuation(reader, head, &payload)?,
            kind::PRIORITY => self.on_priority(head, &payload)?,
            kind::RST_STREAM => self.on_reset(head, &payload)?,
            kind::SETTINGS => self.on_settings(head, &payload)?,
            kind::PUSH_PROMISE => {
                return Err(conn_error(
                    Reason::PROTOCOL_ERROR,
                    "PUSH_PROMISE from a client",
                ));
            }
            kind::PING => self.on_ping(head, &payload)?,
            kind::GOAWAY => self.on_goaway(head)?,
            kind::WINDOW_UPDATE => self.on_window_update(head, &payload)?,
            _ => {} // unknown frame types are ignored (RFC 9113 §4.1)
        }
        let carries_nothing = empty
            && ((head.kind == kind::DATA && !head.has(flag::END_STREAM))
                || head.kind == kind::CONTINUATION && !head.has(flag::END_HEADERS));
        if carries_nothing {
            reader.empty_frames += 1;
            if reader.empty_frames > MAX_EMPTY_FRAMES {
                return Err(conn_error(
                    Reason::ENHANCE_YOUR_CALM,
                    "too many empty frames",
                ));
            }
        } else if head.kind == kind::DATA || head.kind == kind::HEADERS {
            reader.empty_frames = 0;
        }
        Ok(())
    }

    fn on_data(&self, head: Head, payload: Bytes) -> Result<(), ConnError> {
        if head.stream == 0 {
            return Err(conn_error(Reason::PROTOCOL_ERROR, "DATA on stream 0"));
        }
        let data = frame::unpadded(head, &payload)
            .ok_or_else(|| conn_error(Reason::PROTOCOL_ERROR, "padding longer than the frame"))?;
        let mut state = self.shared.state.borrow_mut();
        let state = &mut *state;
        let len = payload.len();
        state.recv_window -= len as i64;
        if state.recv_window < 0 {
            return Err(conn_error(
                Reason::FLOW_CONTROL_ERROR,
                "DATA past the connection window",
            ));
        }
        if head.stream > state.last_stream {
            return Err(conn_error(Reason::PROTOCOL_ERROR, "DATA on an idle stream"));
        }
        let padding = len - data.len();
        let Some(stream) = state.stream(head.stream) else {
            // A stream that ended, maybe reset by this side while the client was still
            // sending: ignored (RFC 9113 §5.1), its bytes given back to the window.
            state.give_back_connection(len);
            return Ok(());
        };
        if stream.recv_closed {
            state.give_back_connection(len);
            return self.local_reset(state, head.stream, Reason::STREAM_CLOSED);
        }
        stream.recv_window -= len as i64;
        if stream.recv_window < 0 {
            state.give_back_connection(len);
            return self.local_reset(state, head.stream, Reason::FLOW_CONTROL_ERROR);
        }
        let end = head.has(flag::END_STREAM);
        let data_len = data.len() as u64;
        let length_ok = match &mut stream.expected {
            Some(expected) => match expected.checked_sub(data_len) {
                Some(left) => {
                    *expected = left;
                    !end || left == 0
                }
                None => false,
            },
            None => true,
        };
        if !length_ok {
            state.give_back_connection(len);
            return self.local_reset(state, head.stream, Reason::PROTOCOL_ERROR);
        }
        if !data.is_empty() {
            stream.chunks.push_back(payload.slice(data));
        }
        stream.recv_closed = end;
        if let Some(waker) = stream.body_waker.take() {
            waker.wake();
        }
        // Padding is read at once.
        stream.recv_unacked += u32::try_from(padding).unwrap_or(0);
        state.give_back_connection(padding);
        if end {
            state.remove_if_done(head.stream);
        }
        Ok(())
    }

    fn on_headers(&self, reader: &mut Reader, head: Head, payload: Bytes) -> Result<(), ConnError> {
        if head.stream == 0 {
            return Err(conn_error(Reason::PROTOCOL_ERROR, "HEADERS on stream 0"));
        }
        let range = frame::unpadded(head, &payload)
            .ok_or_else(|| conn_error(Reason::PROTOCOL_ERROR, "padding longer than the frame"))?;
        let mut start = range.start;
        if head.has(flag::PRIORITY) {
            if range.len() < 5 {
                return Err(conn_error(
                    Reason::FRAME_SIZE_ERROR,
                    "HEADERS too short for its priority",
                ));
            }
            start += 5;
        }
        let fragment = payload.slice(start..range.end);
        let end_stream = head.has(flag::END_STREAM);
        if head.has(flag::END_HEADERS) {
            self.on_header_block(reader, head.stream, end_stream, &fragment)
        } else {
            let mut block = BytesMut::with_capacity(fragment.len() * 2);
            block.extend_from_slice(&fragment);
            reader.block = Some((head.stream, end_stream, block));
            Ok(())
        }
    }

    fn on_continuation(
        &self,
        reader: &mut Reader,
        head: Head,
        payload: &[u8],
    ) -> Result<(), ConnError> {
        let Some((stream, end_stream, mut block)) = reader.block.take() else {
            return Err(conn_error(
                Reason::PROTOCOL_ERROR,
                "CONTINUATION without HEADERS",
            ));
        };
        // The encoded block of a list at the limit is at most about its size; a client that
        // sends far more is flooding (CVE-2024-27316 and kin).
        if block.len() + payload.len()
            > self.shared.limits.max_header_list.saturating_mul(2) + 16_384
        {
            return Err(conn_error(
                Reason::ENHANCE_YOUR_CALM,
                "header block too large",
            ));
        }
        block.extend_from_slice(payload);
        if head.has(flag::END_HEADERS) {
            self.on_header_block(reader, stream, end_stream, &block.freeze())
        } else {
            reader.block = Some((stream, end_stream, block));
            Ok(())
        }
    }

    /// A complete header block: a new request, or the trailers of one.
    fn on_header_block(
        &self,
        reader: &mut Reader,
        id: u32,
        end_stream: bool,
        block: &Bytes,
    ) -> Result<(), ConnError> {
        let limits = self.shared.limits;
        let spare = self.shared.state.borrow_mut().spare_maps.pop();
        let mut fields = Fields::new(limits, spare);
        reader
            .decoder
            .decode(block, &mut |name, value, sensitive| {
                fields.field(name, value, sensitive)
            })
            .map_err(|_| conn_error(Reason::COMPRESSION_ERROR, "undecodable header block"))?;
        let mut guard = self.shared.state.borrow_mut();
        let state = &mut *guard;
        if let Some(stream) = state.stream(id) {
            // Trailers.
            if stream.recv_closed {
                return self.local_reset(state, id, Reason::STREAM_CLOSED);
            }
            if !end_stream || fields.pseudo_seen || fields.malformed.is_some() || fields.too_large {
                return self.local_reset(state, id, Reason::PROTOCOL_ERROR);
            }
            stream.trailers = Some(fields.headers);
            stream.recv_closed = true;
            if let Some(waker) = stream.body_waker.take() {
                waker.wake();
            }
            state.remove_if_done(id);
            return Ok(());
        }
        if id.is_multiple_of(2) {
            return Err(conn_error(
                Reason::PROTOCOL_ERROR,
                "HEADERS on a server stream",
            ));
        }
        if id <= state.last_stream {
            // A stream that ended, maybe reset by this side: ignored (RFC 9113 §5.1).
            return Ok(());
        }
        state.last_stream = id;
        if state.going_away {
            // Past the GOAWAY's last stream: not taken (the client may retry it elsewhere).
            return Ok(());
        }
        if state.streams.len() >= limits.max_streams as usize {
            frame::put_reset(&mut state.out.tail, id, Reason::REFUSED_STREAM);
            self.shared.conn.stats.http2_proxy_resets.inc();
            state.wake_writer();
            return Ok(());
        }
        if let Some(reason) = fields.malformed {
            tracing::debug!(stream = id, reason, "malformed HTTP/2 request");
            return self.local_reset(state, id, Reason::PROTOCOL_ERROR);
        }
        let expected = fields.content_length;
        if end_stream && expected.is_some_and(|n| n > 0) {
            return self.local_reset(state, id, Reason::PROTOCOL_ERROR);
        }
        let request = if fields.too_large {
            Err(ProxyError::BadRequestHead {
                status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                reason: "request header fields too large",
            })
        } else {
            match fields.request(Body::new(&self.shared, id, expected)) {
                Ok(request) => Ok(request),
                Err(reason) => {
                    tracing::debug!(stream = id, reason, "malformed HTTP/2 request");
                    return self.local_reset(state, id, Reason::PROTOCOL_ERROR);
                }
            }
        };
        let send_window = state.peer_initial_window;
        state
            .streams
            .push(Stream::new(id, send_window, expected, end_stream));
        drop(guard);
        let task = match request {
            Ok(request) => {
                let head_request = request.method() == Method::HEAD;
                let exchange = forward::handle(
                    Rc::clone(&self.shared.conn),
                    request,
                    self.shared.busy.enter(),
                );
                // Boxed: the task is made by moving its future twice, and the exchange's is
                // most of it.
                tokio::task::spawn_local(stream::respond(
                    Rc::clone(&self.shared),
                    id,
                    Box::pin(exchange),
                    head_request,
                ))
            }
            Err(err) => {
                tracing::debug!(stream = id, error = %err, "bad HTTP/2 request head");
                let conn = &self.shared.conn;
                if conn.worker.metrics {
                    conn.stats.unrouted[crate::metrics::status_class(err.status().as_u16())].inc();
                }
                let response = forward::error_response(&err, Version::HTTP_2);
                tokio::task::spawn_local(stream::respond(
                    Rc::clone(&self.shared),
                    id,
                    std::future::ready(Ok(response)),
                    false,
                ))
            }
        };
        let mut state = self.shared.state.borrow_mut();
        match state.stream(id) {
            Some(stream) => stream.task = Some(task),
            None => task.abort(),
        }
        Ok(())
    }

    /// Resets a stream for the client's error; too many such resets end the connection.
    fn local_reset(&self, state: &mut State, id: u32, reason: Reason) -> Result<(), ConnError> {
        state.reset(id, reason);
        self.shared.conn.stats.http2_proxy_resets.inc();
        state.local_resets += 1;
        if state.local_resets > self.shared.limits.max_local_resets {
            return Err(conn_error(
                Reason::ENHANCE_YOUR_CALM,
                "too many stream errors",
            ));
        }
        Ok(())
    }

    fn on_priority(&self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if head.stream == 0 {
            return Err(conn_error(Reason::PROTOCOL_ERROR, "PRIORITY on stream 0"));
        }
        if payload.len() != 5 {
            let mut state = self.shared.state.borrow_mut();
            return self.local_reset(&mut state, head.stream, Reason::FRAME_SIZE_ERROR);
        }
        Ok(()) // priorities are not followed (RFC 9113 §5.3.2 deprecates them)
    }

    fn on_reset(&self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if head.stream == 0 {
            return Err(conn_error(Reason::PROTOCOL_ERROR, "RST_STREAM on stream 0"));
        }
        if payload.len() != 4 {
            return Err(conn_error(
                Reason::FRAME_SIZE_ERROR,
                "RST_STREAM not 4 bytes",
            ));
        }
        let reason = Reason(u32::from_be_bytes([
            payload[0], payload[1], payload[2], payload[3],
        ]));
        let mut state = self.shared.state.borrow_mut();
        let state = &mut *state;
        if head.stream > state.last_stream {
            return Err(conn_error(
                Reason::PROTOCOL_ERROR,
                "RST_STREAM on an idle stream",
            ));
        }
        let Some(index) = state.streams.iter().position(|s| s.id == head.stream) else {
            return Ok(());
        };
        let mut stream = state.streams.swap_remove(index);
        if !stream.send_closed {
            state.client_resets += 1;
            self.shared.conn.stats.http2_client_resets.inc();
        }
        state.forget(&mut stream, reason);
        if state.client_resets > self.shared.limits.max_client_resets {
            return Err(conn_error(
                Reason::ENHANCE_YOUR_CALM,
                "too many streams reset",
            ));
        }
        Ok(())
    }

    fn on_settings(&self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if head.stream != 0 {
            return Err(conn_error(Reason::PROTOCOL_ERROR, "SETTINGS on a stream"));
        }
        if head.has(flag::ACK) {
            if !payload.is_empty() {
                return Err(conn_error(
                    Reason::FRAME_SIZE_ERROR,
                    "SETTINGS ack with a payload",
                ));
            }
            return Ok(());
        }
        if !payload.len().is_multiple_of(6) {
            return Err(conn_error(
                Reason::FRAME_SIZE_ERROR,
                "SETTINGS not a multiple of 6 bytes",
            ));
        }
        let mut state = self.shared.state.borrow_mut();
        let state = &mut *state;
        for (id, value) in frame::settings(payload) {
            match id {
                setting::HEADER_TABLE_SIZE => state.encoder.peer_table_size_changed(),
                setting::ENABLE_PUSH if value > 1 => {
                    return Err(conn_error(
                        Reason::PROTOCOL_ERROR,
                        "SETTINGS_ENABLE_PUSH not 0 or 1",
                    ));
                }
                setting::INITIAL_WINDOW_SIZE => {
                    let value = i64::from(value);
                    if value > frame::MAX_WINDOW {
                        return Err(conn_error(
                            Reason::FLOW_CONTROL_ERROR,
                            "SETTINGS_INITIAL_WINDOW_SIZE too large",
                        ));
                    }
                    let delta = value - state.peer_initial_window;
                    state.peer_initial_window = value;
                    for stream in &mut state.streams {
                        stream.send_window += delta;
                        if stream.send_window > frame::MAX_WINDOW {
                            return Err(conn_error(
                                Reason::FLOW_CONTROL_ERROR,
                                "stream window too large",
                            ));
                        }
                        if delta > 0
                            && let Some(waker) = stream.send_waker.take()
                        {
                            waker.wake();
                        }
                    }
                }
                setting::MAX_FRAME_SIZE => {
                    if !(frame::DEFAULT_MAX_FRAME_SIZE..1 << 24).contains(&value) {
                        return Err(conn_error(
                            Reason::PROTOCOL_ERROR,
                            "SETTINGS_MAX_FRAME_SIZE out of range",
                        ));
                    }
                    state.peer_max_frame = value as usize;
                }
                _ => {}
            }
        }
        frame::put_settings_ack(&mut state.out.tail);
        state.wake_writer();
        Ok(())
    }

    fn on_ping(&self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if head.stream != 0 {
            return Err(conn_error(Reason::PROTOCOL_ERROR, "PING on a stream"));
        }
        let Ok(data) = <[u8; 8]>::try_from(payload) else {
            return Err(conn_error(Reason::FRAME_SIZE_ERROR, "PING not 8 bytes"));
        };
        if !head.has(flag::ACK) {
            let mut state = self.shared.state.borrow_mut();
            frame::put_ping_ack(&mut state.out.tail, data);
            state.wake_writer();
        }
        Ok(())
    }

    fn on_goaway(&self, head: Head) -> Result<(), ConnError> {
        if head.stream != 0 {
            return Err(conn_error(Reason::PROTOCOL_ERROR, "GOAWAY on a stream"));
        }
        // The client opens no more streams: those open finish, then the connection closes.
        self.graceful_shutdown();
        Ok(())
    }

    fn on_window_update(&self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        let Ok(bytes) = <[u8; 4]>::try_from(payload) else {
            return Err(conn_error(
                Reason::FRAME_SIZE_ERROR,
                "WINDOW_UPDATE not 4 bytes",
            ));
        };
        let increment = i64::from(u32::from_be_bytes(bytes) & 0x7fff_ffff);
        let mut state = self.shared.state.borrow_mut();
        let state = &mut *state;
        if head.stream == 0 {
            if increment == 0 {
                return Err(conn_error(Reason::PROTOCOL_ERROR, "WINDOW_UPDATE of 0"));
            }
            state.send_window += increment;
            if state.send_window > frame::MAX_WINDOW {
                return Err(conn_error(
                    Reason::FLOW_CONTROL_ERROR,
                    "connection window too large",
                ));
            }
            state.wake_blocked();
            return Ok(());
        }
        if head.stream > state.last_stream {
            return Err(conn_error(
                Reason::PROTOCOL_ERROR,
                "WINDOW_UPDATE on an idle stream",
            ));
        }
        let Some(stream) = state.stream(head.stream) else {
            return Ok(()); // a stream that ended
        };
        if increment == 0 {
            return self.local_reset(state, head.stream, Reason::PROTOCOL_ERROR);
        }
        stream.send_window += increment;
        if stream.send_window > frame::MAX_WINDOW {
            return self.local_reset(state, head.stream, Reason::FLOW_CONTROL_ERROR);
        }
        if let Some(waker) = stream.send_waker.take() {
            waker.wake();
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

/// A request's header list as it is decoded.
struct Fields {
    limits: Limits,
    method: Option<Method>,
    scheme: Option<Bytes>,
    authority: Option<Bytes>,
    path: Option<Bytes>,
    headers: HeaderMap,
    content_length: Option<u64>,
    /// Why the request is malformed (RFC 9113 §8.1.1), if it is.
    malformed: Option<&'static str>,
    pseudo_seen: bool,
    regular_seen: bool,
    size: usize,
    count: usize,
    too_large: bool,
}

impl Fields {
    /// The fields of a head to be decoded into `spare` (a map kept from an earlier response)
    /// or a new map with room for a usual request's fields and those the proxy adds.
    fn new(limits: Limits, spare: Option<HeaderMap>) -> Self {
        Self {
            limits,
            method: None,
            scheme: None,
            authority: None,
            path: None,
            headers: spare.unwrap_or_else(|| {
                HeaderMap::with_capacity(crate::upstream::h1::HTTP1_HEADER_ROOM + ADDED_FIELDS)
            }),
            content_length: None,
            malformed: None,
            pseudo_seen: false,
            regular_seen: false,
            size: 0,
            count: 0,
            too_large: false,
        }
    }

    fn malformed(&mut self, reason: &'static str) {
        self.malformed.get_or_insert(reason);
    }

    fn field(&mut self, name: &[u8], value: Bytes, sensitive: bool) {
        self.size += name.len() + value.len() + 32;
        self.count += 1;
        if self.size > self.limits.max_header_list || self.count > self.limits.max_fields {
            self.too_large = true;
        }
        if self.too_large || self.malformed.is_some() {
            return; // decoded on, for the decoder's table, and dropped
        }
        if let Some(pseudo) = name.strip_prefix(b":") {
            self.pseudo_seen = true;
            if self.regular_seen {
                return self.malformed("pseudo-header field after a regular one");
            }
            let slot = match pseudo {
                b"method" => {
                    if self.method.is_some() {
                        return self.malformed("repeated :method");
                    }
                    match Method::from_bytes(&value) {
                        Ok(method) => self.method = Some(method),
                        Err(_) => self.malformed("invalid :method"),
                    }
                    return;
                }
                b"scheme" => &mut self.scheme,
                b"authority" => &mut self.authority,
                b"path" => &mut self.path,
                _ => return self.malformed("unknown pseudo-header field"),
            };
            if slot.is_some() {
                return self.malformed("repeated pseudo-header field");
            }
            *slot = Some(value);
            return;
        }
        self.regular_seen = true;
        if name.iter().any(u8::is_ascii_uppercase) {
            return self.malformed("upper-case field name");
        }
        let Ok(name) = HeaderName::from_bytes(name) else {
            return self.malformed("invalid field name");
        };
        if value.first().is_some_and(|b| *b == b' ' || *b == b'\t')
            || value.last().is_some_and(|b| *b == b' ' || *b == b'\t')
        {
            return self.malformed("field value with surrounding whitespace");
        }
        let Ok(mut value) = HeaderValue::from_maybe_shared(value) else {
            return self.malformed("invalid field value");
        };
        match name {
            http::header::CONNECTION | http::header::TRANSFER_ENCODING | http::header::UPGRADE => {
                return self.malformed("connection-specific field");
            }
            http::header::TE if value.as_bytes() != b"trailers" => {
                return self.malformed("te other than trailers");
            }
            http::header::CONTENT_LENGTH => {
                let length = crate::http1::parse_length(value.as_bytes());
                match (length, self.content_length) {
                    (Some(n), None) => self.content_length = Some(n),
                    (Some(n), Some(m)) if n == m => {}
                    _ => return self.malformed("invalid content-length"),
                }
            }
            _ if name.as_str() == "keep-alive" || name.as_str() == "proxy-connection" => {
                return self.malformed("connection-specific field");
            }
            _ => {}
        }
        value.set_sensitive(sensitive);
        self.headers.append(name, value);
    }

    /// The request, if its pseudo-header fields make one (RFC 9113 §8.3.1); else why not.
    fn request(self, body: Body) -> Result<Request<Incoming>, &'static str> {
        let method = self.method.ok_or("no :method")?;
        let mut parts = http::uri::Parts::default();
        if method == Method::CONNECT {
            if self.scheme.is_some() || self.path.is_some() {
                return Err("CONNECT with :scheme or :path");
            }
            let authority = self.authority.ok_or("CONNECT without :authority")?;
            parts.authority =
                Some(Authority::from_maybe_shared(authority).map_err(|_| "invalid :authority")?);
        } else {
            let path = self.path.filter(|p| !p.is_empty()).ok_or("no :path")?;
            let scheme = self.scheme.ok_or("no :scheme")?;
            if let Some(authority) = self.authority {
                parts.scheme = Some(match &scheme[..] {
                    b"http" => Scheme::HTTP,
                    b"https" => Scheme::HTTPS,
                    other => Scheme::try_from(other).map_err(|_| "invalid :scheme")?,
                });
                parts.authority = Some(
                    Authority::from_maybe_shared(authority).map_err(|_| "invalid :authority")?,
                );
            }
            parts.path_and_query =
                Some(PathAndQuery::from_maybe_shared(path).map_err(|_| "invalid :path")?);
        }
        let uri = Uri::from_parts(parts).map_err(|_| "invalid request target")?;
        let mut headers = self.headers;
        headers.reserve(ADDED_FIELDS);
        let mut request = Request::new(Incoming::Left(body));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_2;
        *request.headers_mut() = headers;
        Ok(request)
    }
}
