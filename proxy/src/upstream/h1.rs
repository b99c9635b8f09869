//! HTTP/1.1 to upstream endpoints, written and read by the task of the request itself.
//!
//! hyper's client runs each connection as a task of its own and hands every request and
//! response to it through channels: two task hops and a general-purpose dispatcher per
//! request, which came to over a third of Strait's user-space instructions per proxied
//! request (`benches/instructions.sh`). Here the task serving the request writes the head and
//! body and parses the response head (httparse); the response body is read from the socket by
//! whoever polls it, hyper's server on its way downstream, and the connection goes back to its
//! pool when that body ends. Requests asking for a protocol upgrade (WebSocket) still go
//! through hyper's client, on a connection of their own.
//!
//! Framing (RFC 9112 §6): the request goes with its length when known, else chunked. The
//! response is delimited, in this order, by the request being HEAD, its status (1xx, 204,
//! 304), Transfer-Encoding, Content-Length, or the end of the connection. Interim (1xx)
//! responses are skipped. A connection is pooled again only when both messages ended cleanly
//! and the upstream keeps it alive.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, Write as _};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body as _, Frame, SizeHint};

use super::OpenGuard;
use crate::body::RequestBody;
use crate::headers::KEEP_ALIVE;
use crate::io::Socket;

/// The longest response head accepted (the buffer hyper's client was given).
const MAX_HEAD: usize = 1024 * 1024;
/// The most fields in a response head or trailer section (hyper's client default).
const MAX_HEADERS: usize = 100;
/// The longest chunk-size line (size and extensions).
const MAX_CHUNK_LINE: usize = 4096;
/// Spare room made for one read, at least and at most.
const READ_MIN: usize = 8 * 1024;
const READ_MAX: usize = 64 * 1024;
/// The least room made for a response's first read (see `ConnectionState::head_room`).
const HEAD_ROOM_MIN: usize = 1024;
/// The fields a response's header map makes room for when its downstream is HTTP/1.1 (see
/// [`Outgoing::with_header_room`]).
pub const HTTP1_HEADER_ROOM: usize = 16;

/// An HTTP/1.1 connection to an endpoint: idle in its pool, or carrying one exchange. Boxed
/// once, when opened, so that moving it in and out of the pool and into response bodies is
/// cheap.
#[derive(Debug)]
pub struct Connection(Box<ConnectionState>);

/// What a [`Connection`] holds.
#[derive(Debug)]
pub struct ConnectionState {
    socket: Socket,
    /// Bytes read and not yet consumed.
    buf: BytesMut,
    /// Whether any byte of a response arrived since the connection was last idle.
    answered: bool,
    /// Room made for a response's first read: what the previous response's first bytes took
    /// (its head and the body that came with it), rounded up to a power of two, 1–8 KiB. On
    /// epoll the room is allocated before the read, and a fresh 8 KiB buffer per response is
    /// a jemalloc slab of its own; a smaller response now gets a smaller buffer.
    head_room: usize,
    /// The names of the last response head, for the next one.
    names: Names,
    _slot: OpenGuard,
}

impl std::ops::Deref for Connection {
    type Target = ConnectionState;

    fn deref(&self) -> &ConnectionState {
        &self.0
    }
}

impl std::ops::DerefMut for Connection {
    fn deref_mut(&mut self) -> &mut ConnectionState {
        &mut self.0
    }
}

impl Connection {
    pub(super) fn new(socket: Socket, slot: OpenGuard) -> Self {
        Self(Box::new(ConnectionState {
            socket,
            buf: BytesMut::new(),
            answered: false,
            head_room: READ_MIN,
            names: Names::default(),
            _slot: slot,
        }))
    }
}

impl ConnectionState {
    /// Whether the idle connection is still usable: nothing arrived from the upstream since
    /// its last response, not even the end of the stream. Never waits.
    pub(super) fn is_quiet(&mut self) -> bool {
        self.buf.is_empty() && self.socket.is_quiet()
    }

    /// Prepares the connection to wait in its pool: frees the read buffer.
    pub(super) fn idle(&mut self) {
        self.buf = BytesMut::new();
        self.answered = false;
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        let max = want.clamp(READ_MIN, READ_MAX);
        self.socket.poll_read_buf(cx, &mut self.buf, READ_MIN, max)
    }

    /// Reads until a final response head has arrived; interim (1xx) heads are dropped.
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        head_request: bool,
        header_room: usize,
    ) -> Poll<Result<Head, HeadError>> {
        loop {
            if !self.buf.is_empty() {
                let received = self.buf.len();
                match parse_head(&mut self.buf, &mut self.names, head_request, header_room) {
                    Ok(Some(Parsed::Final(head))) => {
                        self.head_room =
                            received.next_power_of_two().clamp(HEAD_ROOM_MIN, READ_MIN);
                        return Poll::Ready(Ok(head));
                    }
                    Ok(Some(Parsed::Interim)) => continue,
                    Ok(None) => {}
                    Err(reason) => return Poll::Ready(Err(HeadError::Invalid(reason))),
                }
                if self.buf.len() >= MAX_HEAD {
                    return Poll::Ready(Err(HeadError::Invalid("response head too large")));
                }
            }
            let room = self.head_room;
            match ready!(self.socket.poll_read_buf(cx, &mut self.buf, room, room)) {
                Ok(0) => {
                    return Poll::Ready(Err(HeadError::Closed {
                        source: io::ErrorKind::UnexpectedEof.into(),
                        silent: !self.answered,
                    }));
                }
                Ok(_) => self.answered = true,
                Err(source) => {
                    return Poll::Ready(Err(HeadError::Closed {
                        source,
                        silent: !self.answered,
                    }));
                }
            }
        }
    }
}

/// A request encoded for an HTTP/1.1 upstream, ready to go on a connection.
#[derive(Debug)]
pub struct Outgoing {
    head: Bytes,
    body: RequestBody,
    framing: Framing,
    head_request: bool,
    idempotent: bool,
    header_room: usize,
}

/// Why an exchange failed.
#[derive(Debug)]
pub enum Failure {
    /// The connection ended before any byte of a response, and the request can go again as it
    /// is (an idempotent request without a body: RFC 9110 §9.2.2): typically a pooled
    /// connection the upstream closed while idle.
    Unanswered(Outgoing, io::Error),
    /// The connection failed or closed before a complete response head.
    Closed(io::Error),
    /// The upstream's response head is not valid HTTP/1.1.
    Invalid(&'static str),
    /// The downstream request body failed while it was being sent.
    RequestBody(hyper::Error),
}

/// How a request body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body.
    Empty,
    /// Content-Length: this many bytes are still to go.
    Length(u64),
    /// Transfer-Encoding: chunked.
    Chunked,
}

impl Outgoing {
    /// Encodes the head of `req`, an origin-form request (its URI is the path and query).
    pub fn new(req: Request<RequestBody>) -> Self {
        let (parts, body) = req.into_parts();
        let declared = single_length(&parts.headers);
        let framing = match declared {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None if body.is_end_stream() => Framing::Empty,
            None => match body.size_hint().exact() {
                Some(n) if n > 0 => Framing::Length(n),
                _ => Framing::Chunked,
            },
        };
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        // The exact size but for the framing field (a grow here cost a reallocation and copy).
        let fields: usize = (parts.headers.iter())
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum();
        let mut head = Vec::with_capacity(parts.method.as_str().len() + target.len() + fields + 64);
        head.extend_from_slice(parts.method.as_str().as_bytes());
        head.push(b' ');
        head.extend_from_slice(target.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        // Host first, as clients send it.
        if let Some(host) = parts.headers.get(header::HOST) {
            push_field(&mut head, header::HOST.as_str(), host);
        }
        for (name, value) in &parts.headers {
            if name != header::HOST
                && name != header::CONTENT_LENGTH
                && name != header::TRANSFER_ENCODING
            {
                push_field(&mut head, name.as_str(), value);
            }
        }
        match framing {
            Framing::Length(n) => {
                // Writing to a Vec cannot fail.
                let _ = write!(head, "content-length: {n}\r\n");
            }
            Framing::Chunked => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            // Methods whose requests normally have content say that this one has none (some
            // servers answer 411 otherwise).
            Framing::Empty
                if declared.is_some()
                    || matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) =>
            {
                head.extend_from_slice(b"content-length: 0\r\n");
            }
            Framing::Empty => {}
        }
        head.extend_from_slice(b"\r\n");
        Self {
            head: head.into(),
            body,
            framing,
            head_request: parts.method == Method::HEAD,
            idempotent: parts.method.is_idempotent(),
            header_room: 0,
        }
    }

    /// Makes the response's header map room for at least `fields` fields. An HTTP/1.1
    /// downstream wants it: hyper's server parses the connection's next request head into the
    /// map of the response it wrote, and the fields the proxy adds to that request (forwarding,
    /// request id, trace context) then fit without a grow and rehash.
    pub fn with_header_room(mut self, fields: usize) -> Self {
        self.header_room = fields;
        self
    }

    /// Sends the request on `conn` and reads the response head. The response body reads the
    /// rest (and, if the upstream answered early, sends the rest of the request body).
    ///
    /// # Errors
    /// See [`Failure`].
    pub async fn send(self, mut conn: Connection) -> Result<Response<Body>, Failure> {
        let Self {
            head,
            body,
            framing,
            head_request,
            idempotent,
            header_room,
        } = self;
        let replay = (idempotent && framing == Framing::Empty).then(|| head.clone());
        let mut writer = Some(Writer::new(head, body, framing));
        let mut write_error = None;
        let result = poll_fn(|cx| {
            if let Some(w) = writer.as_mut() {
                match w.poll(&mut conn.socket, cx) {
                    Poll::Ready(Ok(())) => writer = None,
                    Poll::Ready(Err(WriteError::Body(err))) => {
                        return Poll::Ready(Err(Failure::RequestBody(err)));
                    }
                    Poll::Ready(Err(WriteError::Io(err))) => {
                        // The upstream may have answered and closed (413, say): its response
                        // is still read.
                        writer = None;
                        write_error = Some(err);
                    }
                    Poll::Pending => {}
                }
            }
            conn.poll_head(cx, head_request, header_room)
                .map_err(|err| match err {
                    HeadError::Invalid(reason) => Failure::Invalid(reason),
                    HeadError::Closed { source, silent } => match &replay {
                        Some(head) if silent => Failure::Unanswered(
                            Self {
                                head: head.clone(),
                                body: RequestBody::default(),
                                framing,
                                head_request,
                                idempotent,
                                header_room,
                            },
                            source,
                        ),
                        _ => Failure::Closed(source),
                    },
                })
        })
        .await;
        let head = result?;
        let mut response = Response::new(Body {
            keep_alive: head.keep_alive && write_error.is_none(),
            framing: head.framing,
            writer: writer.map(Box::new),
            conn: Some(conn),
        });
        *response.status_mut() = head.status;
        *response.version_mut() = head.version;
        *response.headers_mut() = head.headers;
        Ok(response)
    }
}

fn push_field(head: &mut Vec<u8>, name: &str, value: &HeaderValue) {
    head.extend_from_slice(name.as_bytes());
    head.extend_from_slice(b": ");
    head.extend_from_slice(value.as_bytes());
    head.extend_from_slice(b"\r\n");
}

/// The Content-Length of a message with exactly one valid one.
fn single_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    parse_length(value.as_bytes())
}

fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// The request on its way: queued bytes, then the rest of the body.
#[derive(Debug)]
struct Writer {
    queue: VecDeque<Bytes>,
    /// `None` once the body's end is queued.
    body: Option<RequestBody>,
    framing: Framing,
}

#[derive(Debug)]
enum WriteError {
    Io(io::Error),
    Body(hyper::Error),
}

impl Writer {
    fn new(head: Bytes, body: RequestBody, framing: Framing) -> Self {
        let mut queue = VecDeque::with_capacity(4);
        queue.push_back(head);
        Self {
            queue,
            body: (framing != Framing::Empty).then_some(body),
            framing,
        }
    }

    /// Ready once the whole request has been handed to the kernel.
    fn poll(&mut self, socket: &mut Socket, cx: &mut Context<'_>) -> Poll<Result<(), WriteError>> {
        loop {
            while !self.queue.is_empty() {
                let mut slices = [io::IoSlice::new(&[]); 4];
                let count = self.queue.len().min(slices.len());
                for (slice, bytes) in slices.iter_mut().zip(&self.queue) {
                    *slice = io::IoSlice::new(bytes);
                }
                let written = ready!(hyper::rt::Write::poll_write_vectored(
                    Pin::new(&mut *socket),
                    cx,
                    &slices[..count]
                ))
                .map_err(WriteError::Io)?;
                if written == 0 {
                    return Poll::Ready(Err(WriteError::Io(io::ErrorKind::WriteZero.into())));
                }
                self.consume(written);
            }
            let Some(body) = self.body.as_mut() else {
                return hyper::rt::Write::poll_flush(Pin::new(socket), cx).map_err(WriteError::Io);
            };
            let frame = match Pin::new(body).poll_frame(cx) {
                Poll::Pending => {
                    // What was written so far goes out while the body waits.
                    ready!(hyper::rt::Write::poll_flush(Pin::new(socket), cx))
                        .map_err(WriteError::Io)?;
                    return Poll::Pending;
                }
                Poll::Ready(Some(Err(err))) => return Poll::Ready(Err(WriteError::Body(err))),
                Poll::Ready(Some(Ok(frame))) => frame,
                Poll::Ready(None) => {
                    self.body = None;
                    match self.framing {
                        Framing::Chunked => self.queue.push_back(Bytes::from_static(b"0\r\n\r\n")),
                        Framing::Length(0) | Framing::Empty => {}
                        Framing::Length(_) => return Poll::Ready(Err(length_mismatch())),
                    }
                    continue;
                }
            };
            match frame.into_data() {
                Ok(data) if data.is_empty() => {}
                Ok(data) => match &mut self.framing {
                    Framing::Length(left) => {
                        let len = data.len() as u64;
                        if len > *left {
                            return Poll::Ready(Err(length_mismatch()));
                        }
                        *left -= len;
                        self.queue.push_back(data);
                    }
                    Framing::Chunked => {
                        self.queue
                            .push_back(Bytes::from(format!("{:x}\r\n", data.len())));
                        self.queue.push_back(data);
                        self.queue.push_back(Bytes::from_static(b"\r\n"));
                    }
                    Framing::Empty => return Poll::Ready(Err(length_mismatch())),
                },
                Err(frame) => {
                    // Trailers end the body; only chunked framing can carry them.
                    if let (Ok(trailers), Framing::Chunked) = (frame.into_trailers(), self.framing)
                    {
                        let mut last = b"0\r\n".to_vec();
                        for (name, value) in &trailers {
                            push_field(&mut last, name.as_str(), value);
                        }
                        last.extend_from_slice(b"\r\n");
                        self.queue.push_back(last.into());
                        self.body = None;
                    }
                }
            }
        }
    }

    fn consume(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.queue.front_mut() else {
                return;
            };
            if n < front.len() {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.queue.pop_front();
        }
    }
}

/// A request body whose length differs from the one announced: the upstream connection cannot
/// carry anything after it.
fn length_mismatch() -> WriteError {
    WriteError::Io(io::Error::new(
        io::ErrorKind::InvalidInput,
        "request body length differs from its content-length",
    ))
}

/// A final response head, and how its body is delimited.
#[derive(Debug)]
struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    framing: BodyFraming,
    keep_alive: bool,
}

#[derive(Debug)]
enum Parsed {
    Final(Head),
    /// A 1xx head, consumed.
    Interim,
}

#[derive(Debug)]
enum HeadError {
    /// The connection ended or failed; `silent` when not one byte of a response had come.
    Closed {
        source: io::Error,
        silent: bool,
    },
    Invalid(&'static str),
}

/// Parses a response head at the start of `buf`, consuming it when complete.
fn parse_head(
    buf: &mut BytesMut,
    names: &mut Names,
    head_request: bool,
    header_room: usize,
) -> Result<Option<Parsed>, &'static str> {
    // Not initialised: httparse writes the fields it finds (zeroing 3 KiB per response showed
    // in the profiles).
    let mut fields =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut fields,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err("too many header fields"),
        Err(_) => return Err("malformed response head"),
    };
    let code = response.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| "invalid status code")?;
    let version = if response.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    if status.is_informational() {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err("unexpected 101 switching protocols");
        }
        buf.advance(len);
        return Ok(Some(Parsed::Interim));
    }
    // Names are made while the head is borrowed; values, after it is frozen, share its bytes.
    // The fields that decide framing and reuse are read on the way, from the raw bytes.
    let base = buf.as_ptr() as usize;
    let mut named = Vec::with_capacity(response.headers.len());
    let mut fields = HeadFields::default();
    for (index, field) in response.headers.iter().enumerate() {
        let name = names.name(index, field.name.as_bytes())?;
        if fields.note(&name, field.value) {
            let start = field.value.as_ptr() as usize - base;
            named.push((name, start, start + field.value.len()));
        }
    }
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(named.len().max(header_room));
    for (name, start, end) in named {
        let value = HeaderValue::from_maybe_shared(head.slice(start..end))
            .map_err(|_| "invalid header value")?;
        headers.append(name, value);
    }
    let mut keep_alive = match version {
        Version::HTTP_10 => fields.keep_alive,
        _ => !fields.close,
    };
    let framing =
        if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            BodyFraming::Empty
        } else if fields.transfer_encoding {
            if fields.content_length.is_some() {
                // RFC 9112 §6.3: Transfer-Encoding wins, and the connection is not reused.
                keep_alive = false;
            }
            if fields.chunked_last {
                BodyFraming::Chunked(Chunk::Size)
            } else {
                keep_alive = false;
                BodyFraming::Close
            }
        } else if let Some(length) = fields.content_length {
            BodyFraming::Length(length.ok_or("invalid content-length")?)
        } else {
            keep_alive = false;
            BodyFraming::Close
        };
    Ok(Some(Parsed::Final(Head {
        status,
        version,
        headers,
        framing,
        keep_alive,
    })))
}

/// The header names of a connection's last response head, reused for the next head when it
/// sends the same raw names in the same order, as an upstream's responses mostly do: an exact
/// byte match skips `HeaderName::from_bytes` (lowercasing and the standard-name lookup, ~100
/// instructions a field). A name that differs is parsed and replaces the rest of the list.
/// At most [`Names::MAX`] names of [`Names::MAX_RAW`] bytes in all are kept.
#[derive(Debug, Default)]
struct Names {
    /// The raw names, back to back.
    raw: Vec<u8>,
    /// Each name and where its raw bytes end in `raw`.
    names: Vec<(HeaderName, usize)>,
}

impl Names {
    const MAX: usize = 32;
    const MAX_RAW: usize = 1024;

    /// The name of the head's field at `index`, whose raw bytes are `raw`.
    fn name(&mut self, index: usize, raw: &[u8]) -> Result<HeaderName, &'static str> {
        // Where this field's raw name starts in `raw`: known while the names kept so far reach
        // this position.
        let start = match index.checked_sub(1) {
            None => Some(0),
            Some(before) => self.names.get(before).map(|&(_, end)| end),
        };
        if let (Some(start), Some((name, end))) = (start, self.names.get(index))
            && self.raw.get(start..*end) == Some(raw)
        {
            return Ok(name.clone());
        }
        let name = HeaderName::from_bytes(raw).map_err(|_| "invalid header name")?;
        if let Some(start) = start {
            self.names.truncate(index);
            self.raw.truncate(start);
            if index < Self::MAX && start + raw.len() <= Self::MAX_RAW {
                self.raw.extend_from_slice(raw);
                self.names.push((name.clone(), self.raw.len()));
            }
        }
        Ok(name)
    }
}

/// What a response head's fields say about its framing and the connection's reuse, noted as
/// the fields are read (no map lookups afterwards).
#[derive(Debug, Default)]
struct HeadFields {
    /// `Connection` has `close`.
    close: bool,
    /// `Connection` has `keep-alive`.
    keep_alive: bool,
    /// `Transfer-Encoding` is present.
    transfer_encoding: bool,
    /// The last transfer coding is `chunked`.
    chunked_last: bool,
    /// `Content-Length`: every value and list element the same number, or `Some(None)`.
    content_length: Option<Option<u64>>,
}

impl HeadFields {
    /// Notes a field; false for the fields of this hop only that the response need not carry
    /// on: `Keep-Alive`, and `Connection` unless it names other fields.
    fn note(&mut self, name: &HeaderName, value: &[u8]) -> bool {
        if *name == header::CONNECTION {
            let mut other = false;
            for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    self.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    self.keep_alive = true;
                } else {
                    other |= !token.is_empty();
                }
            }
            // Kept when it names other fields: the forwarding path removes them, and it.
            return other;
        }
        if *name == header::TRANSFER_ENCODING {
            self.transfer_encoding = true;
            self.chunked_last = value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if *name == header::CONTENT_LENGTH {
            for part in value.split(|&b| b == b',') {
                let n = parse_length(part.trim_ascii());
                self.content_length = Some(match self.content_length {
                    None => n,
                    Some(length) => length.filter(|l| Some(*l) == n),
                });
            }
        } else if *name == KEEP_ALIVE {
            return false;
        }
        true
    }
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyFraming {
    /// No body (or its end was read).
    Empty,
    /// This many bytes are still to come.
    Length(u64),
    /// Until the upstream closes the connection.
    Close,
    Chunked(Chunk),
}

/// The position in a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// At a chunk-size line.
    Size,
    /// In chunk data, this many bytes left.
    Data(u64),
    /// At the CRLF after chunk data.
    DataEnd,
    /// In the trailer section after the last chunk.
    Trailers,
}

/// The body of an upstream HTTP/1.1 response; gives its connection back once read to the end.
#[derive(Debug)]
pub struct Body {
    conn: Option<Connection>,
    /// The rest of the request body, when the upstream answered before it was all sent.
    writer: Option<Box<Writer>>,
    framing: BodyFraming,
    keep_alive: bool,
}

impl Body {
    /// The connection, if the exchange ended cleanly and the upstream keeps it alive.
    pub fn take_reusable(&mut self) -> Option<Connection> {
        let clean = matches!(self.framing, BodyFraming::Empty | BodyFraming::Length(0))
            && self.keep_alive
            && self.writer.is_none()
            && self.conn.as_ref().is_some_and(|c| c.buf.is_empty());
        if clean { self.conn.take() } else { None }
    }

    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(writer) = self.writer.as_mut() {
            match writer.poll(&mut conn.socket, cx) {
                Poll::Ready(Ok(())) => self.writer = None,
                Poll::Ready(Err(_)) => {
                    // The response may still arrive whole; the connection is done for.
                    self.writer = None;
                    self.keep_alive = false;
                }
                Poll::Pending => {}
            }
        }
        loop {
            match &mut self.framing {
                BodyFraming::Empty => return Poll::Ready(None),
                BodyFraming::Length(0) => {
                    self.framing = BodyFraming::Empty;
                    return Poll::Ready(None);
                }
                BodyFraming::Length(left) => {
                    if conn.buf.is_empty() && ready!(conn.poll_read(cx, clamp(*left)))? == 0 {
                        return Poll::Ready(Some(Err(incomplete())));
                    }
                    let take = conn.buf.len().min(clamp(*left));
                    *left -= take as u64;
                    return Poll::Ready(Some(Ok(Frame::data(conn.buf.split_to(take).freeze()))));
                }
                BodyFraming::Close => {
                    if conn.buf.is_empty() && ready!(conn.poll_read(cx, READ_MAX))? == 0 {
                        self.framing = BodyFraming::Empty;
                        self.keep_alive = false;
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(conn.buf.split().freeze()))));
                }
                BodyFraming::Chunked(Chunk::Size) => {
                    let Some(end) = memchr::memchr(b'\n', &conn.buf) else {
                        if conn.buf.len() > MAX_CHUNK_LINE {
                            return Poll::Ready(Some(Err(invalid("chunk size line too long"))));
                        }
                        if ready!(conn.poll_read(cx, READ_MIN))? == 0 {
                            return Poll::Ready(Some(Err(incomplete())));
                        }
                        continue;
                    };
                    let size = chunk_size(&conn.buf[..end])
                        .ok_or_else(|| invalid("invalid chunk size"))?;
                    conn.buf.advance(end + 1);
                    self.framing = BodyFraming::Chunked(if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    });
                }
                BodyFraming::Chunked(Chunk::Data(left)) => {
                    if conn.buf.is_empty() && ready!(conn.poll_read(cx, clamp(*left)))? == 0 {
                        return Poll::Ready(Some(Err(incomplete())));
                    }
                    let take = conn.buf.len().min(clamp(*left));
                    *left -= take as u64;
                    if *left == 0 {
                        self.framing = BodyFraming::Chunked(Chunk::DataEnd);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(conn.buf.split_to(take).freeze()))));
                }
                BodyFraming::Chunked(Chunk::DataEnd) => {
                    if conn.buf.len() < 2 {
                        if ready!(conn.poll_read(cx, READ_MIN))? == 0 {
                            return Poll::Ready(Some(Err(incomplete())));
                        }
                        continue;
                    }
                    if &conn.buf[..2] != b"\r\n" {
                        return Poll::Ready(Some(Err(invalid("chunk data not followed by CRLF"))));
                    }
                    conn.buf.advance(2);
                    self.framing = BodyFraming::Chunked(Chunk::Size);
                }
                BodyFraming::Chunked(Chunk::Trailers) => {
                    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    match httparse::parse_headers(&conn.buf, &mut fields) {
                        Ok(httparse::Status::Complete((len, fields))) => {
                            let trailers = trailer_map(fields)?;
                            conn.buf.advance(len);
                            self.framing = BodyFraming::Empty;
                            return match trailers {
                                Some(trailers) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
                                None => Poll::Ready(None),
                            };
                        }
                        Ok(httparse::Status::Partial) => {
                            if conn.buf.len() >= MAX_HEAD {
                                return Poll::Ready(Some(Err(invalid("trailers too large"))));
                            }
                            if ready!(conn.poll_read(cx, READ_MIN))? == 0 {
                                return Poll::Ready(Some(Err(incomplete())));
                            }
                        }
                        Err(_) => return Poll::Ready(Some(Err(invalid("malformed trailers")))),
                    }
                }
            }
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let poll = self.poll_body(cx);
        if let Poll::Ready(Some(Err(_))) = poll {
            self.keep_alive = false;
            self.framing = BodyFraming::Empty;
            self.conn = None;
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, BodyFraming::Empty | BodyFraming::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            BodyFraming::Empty => SizeHint::with_exact(0),
            BodyFraming::Length(n) => SizeHint::with_exact(n),
            BodyFraming::Close | BodyFraming::Chunked(_) => SizeHint::default(),
        }
    }
}

/// At most this many body bytes are read or handed on at once.
fn clamp(left: u64) -> usize {
    usize::try_from(left).unwrap_or(usize::MAX).min(READ_MAX)
}

/// The size on a chunk-size line (without its `\n`): hex digits, then optional extensions.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if digits == 0 || digits > 15 {
        return None;
    }
    let rest = &line[digits..];
    if !rest.is_empty() && !matches!(rest.trim_ascii_start().first(), Some(b';')) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(&line[..digits]).ok()?, 16).ok()
}

fn trailer_map(fields: &[httparse::Header<'_>]) -> io::Result<Option<HeaderMap>> {
    if fields.is_empty() {
        return Ok(None);
    }
    let mut map = HeaderMap::with_capacity(fields.len());
    for field in fields {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| invalid("invalid trailer name"))?;
        let value =
            HeaderValue::from_bytes(field.value).map_err(|_| invalid("invalid trailer value"))?;
        map.append(name, value);
    }
    Ok(Some(map))
}

fn incomplete() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "upstream closed the connection before the end of the response body",
    )
}

fn invalid(reason: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason)
}

#[cfg(test)]
mod tests;
