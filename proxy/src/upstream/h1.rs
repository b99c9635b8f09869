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

use std::future::poll_fn;
use std::io::{self, Write as _};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body as _, Frame, SizeHint};

use super::OpenGuard;
use crate::body::{BodyError, RequestBody};
use crate::headers::{Added, FieldSet};
use crate::http1::{
    self, BodyFraming, Chunk, Framing, HeadFields, Names, READ_MIN, WriteError, Writer,
    parse_length, push_field,
};
use crate::io::Socket;

/// The longest response head accepted (the buffer hyper's client was given).
const MAX_HEAD: usize = 1024 * 1024;
/// The most fields in a response head or trailer section (hyper's client default).
const MAX_HEADERS: usize = 100;
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

    /// Reads until a final response head has arrived; interim (1xx) heads are dropped.
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        head_request: bool,
        header_room: usize,
        spare: &mut Option<HeaderMap>,
    ) -> Poll<Result<Head, HeadError>> {
        loop {
            if !self.buf.is_empty() {
                let received = self.buf.len();
                match parse_head(
                    &mut self.buf,
                    &mut self.names,
                    head_request,
                    header_room,
                    spare,
                ) {
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
    /// The request's header map, emptied, for the response's fields.
    spare: Option<HeaderMap>,
}

/// Why an exchange failed.
#[derive(Debug)]
pub enum Failure {
    /// The connection ended before any byte of a response, and the request can go again as it
    /// is (an idempotent request without a body: RFC 9110 §9.2.2): typically a pooled
    /// connection the upstream closed while idle.
    Unanswered(Box<Outgoing>, io::Error),
    /// The connection failed or closed before a complete response head.
    Closed(io::Error),
    /// The upstream's response head is not valid HTTP/1.1.
    Invalid(&'static str),
    /// The downstream request body failed while it was being sent.
    RequestBody(BodyError),
}

impl Outgoing {
    /// Encodes the head of `req`, an origin-form request (its URI is the path and query),
    /// with the fields `added` holds after its own.
    pub fn new(req: Request<RequestBody>, added: &Added) -> Self {
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
        let mut head = Vec::with_capacity(
            parts.method.as_str().len() + target.len() + fields + added.encoded_len() + 64,
        );
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
        added.write(&mut head);
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
            // Requests always have a length or chunks.
            Framing::Empty | Framing::Close => {}
        }
        head.extend_from_slice(b"\r\n");
        Self {
            head: head.into(),
            body,
            framing,
            head_request: parts.method == Method::HEAD,
            idempotent: parts.method.is_idempotent(),
            header_room: 0,
            spare: spare_map(parts.headers),
        }
    }

    /// Makes the response's header map room for at least `fields` fields. An HTTP/1.1
    /// downstream wants it: its connection parses the next request head into the map of the
    /// response it wrote, and the fields the proxy adds to that request (forwarding, request
    /// id, trace context) then fit without a grow and rehash.
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
            mut spare,
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
            conn.poll_head(cx, head_request, header_room, &mut spare)
                .map_err(|err| match err {
                    HeadError::Invalid(reason) => Failure::Invalid(reason),
                    HeadError::Closed { source, silent } => match &replay {
                        Some(head) if silent => Failure::Unanswered(
                            Box::new(Self {
                                head: head.clone(),
                                body: RequestBody::default(),
                                framing,
                                head_request,
                                idempotent,
                                header_room,
                                spare: None,
                            }),
                            source,
                        ),
                        _ => Failure::Closed(source),
                    },
                })
        })
        .await;
        let head = result?;
        let mut response = Response::new(Body {
            // An upstream that answered before it had the whole request may leave the rest
            // unread and close (hyper's server does, without `connection: close`): the
            // connection is not reused, or the next request on it could meet that close.
            keep_alive: head.keep_alive && write_error.is_none() && writer.is_none(),
            framing: head.framing,
            writer: writer.map(Box::new),
            conn: Some(conn),
            fields: head.fields,
        });
        *response.status_mut() = head.status;
        *response.version_mut() = head.version;
        *response.headers_mut() = head.headers;
        Ok(response)
    }
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

/// A final response head, and how its body is delimited.
#[derive(Debug)]
struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    framing: BodyFraming,
    keep_alive: bool,
    fields: FieldSet,
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

/// The largest header map kept for reuse.
const SPARE_FIELDS: usize = 64;

/// `headers`, emptied for reuse, unless it is unusually large.
pub fn spare_map(mut headers: HeaderMap) -> Option<HeaderMap> {
    (headers.capacity() <= SPARE_FIELDS).then(|| {
        headers.clear();
        headers
    })
}

/// Parses a response head at the start of `buf`, consuming it when complete.
fn parse_head(
    buf: &mut BytesMut,
    names: &mut Names,
    head_request: bool,
    header_room: usize,
    spare: &mut Option<HeaderMap>,
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
        let (name, known) = names.name(index, field.name.as_bytes())?;
        if fields.note(known, field.value) {
            let start = field.value.as_ptr() as usize - base;
            named.push((name, start, start + field.value.len()));
        }
    }
    let head = buf.split_to(len).freeze();
    let room = named.len().max(header_room);
    let mut headers = match spare.take() {
        Some(mut headers) => {
            headers.reserve(room);
            headers
        }
        None => HeaderMap::with_capacity(room),
    };
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
        fields: fields.present,
    })))
}

/// The body of an upstream HTTP/1.1 response; gives its connection back once read to the end.
#[derive(Debug)]
pub struct Body {
    conn: Option<Connection>,
    /// The rest of the request body, when the upstream answered before it was all sent.
    writer: Option<Box<Writer<RequestBody>>>,
    framing: BodyFraming,
    keep_alive: bool,
    /// The known fields of the response's head.
    fields: FieldSet,
}

impl Body {
    /// Which known fields the response's header map may hold, as its head had them.
    pub fn fields(&self) -> FieldSet {
        self.fields
    }

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
        let ConnectionState { socket, buf, .. } = &mut **conn;
        http1::poll_body(&mut self.framing, socket, buf, cx)
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

#[cfg(test)]
mod tests;
