//! HTTP/1.1 downstream connections, read and written by the connection's own task.
//!
//! hyper's server parsed each head into its own message type, dispatched it through a generic
//! state machine and encoded the response with its own buffering: about a tenth of Strait's
//! user-space instructions per proxied request (`benches/instructions.sh`). Here the task of
//! the connection parses the head (httparse), calls [`forward::handle`], and writes the
//! response head together with what of the body is ready, in one write.
//!
//! What a client of hyper's server got is kept:
//! - Limits: a head over `max_header_bytes` or with more than `max_headers` fields gets 431,
//!   a malformed one 400, a version other than HTTP/1.x 505; each names its reason in
//!   `x-strait-error` and closes the connection. Such a request never reaches an upstream.
//! - Framing (RFC 9112 §6): a body is delimited by `Transfer-Encoding: chunked` (as the last
//!   coding) or one `Content-Length`; both at once, another coding, or lengths that disagree
//!   are 400 (request smuggling).
//! - Keep-alive (HTTP/1.1 unless `Connection: close`; HTTP/1.0 with `Connection: keep-alive`)
//!   and pipelining: bytes after a request are the next request.
//! - `Expect: 100-continue`: `100 Continue` goes out when the body is first read.
//! - Upgrades: after a `101` the socket, with any bytes read past the head, goes to the tunnel
//!   ([`Upgrade`]).
//! - A request body left unread when its response ends is drained if it is already here;
//!   otherwise the connection closes (RFC 9112 §9.6), as it does after a broken body.
//! - A client that goes away while its request is served (the end of its stream once the
//!   body is in, or a reset) cancels the exchange and its upstream request.
//! - Responses carry `Date` when the upstream sent none, `Content-Length` when the body's
//!   length is known, else chunked (HTTP/1.1) or close-delimited (HTTP/1.0) framing.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io::{self, Write as _};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Frame, SizeHint};
use tokio::sync::oneshot;

use super::Busy;
use crate::body::{Incoming, ResponseBody};
use crate::error::ProxyError;
use crate::forward::{self, Downstream};
use crate::headers::{FieldSet, Known};
use crate::http1::{self, BodyFraming, Chunk, Framing, HeadFields, Names, Output, Writer};
use crate::io::Socket;
use crate::upstream::h1;

/// Fields parsed into a buffer on the stack; a listener allowing more parses again into one
/// on the heap when a head has more.
const STACK_FIELDS: usize = 100;
/// Room made for a read of a request head.
const HEAD_READ: usize = 8 * 1024;
/// The most unread request body drained, once its response is out, to keep the connection.
const DRAIN_MAX: usize = 64 * 1024;
/// Fields a request's header map has room for beyond its own: those the proxy adds
/// (forwarding, request id, trace context) then fit without a grow.
const ADDED_FIELDS: usize = 8;
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A connection's HTTP/1.1 state that outlives one request.
#[derive(Debug)]
pub struct Io {
    /// `None` once handed to an upgrade's tunnel.
    socket: Option<Socket>,
    /// Bytes read and not yet consumed.
    buf: BytesMut,
    /// The names of the last request head, for the next one.
    names: Names,
    /// The current request's body, as far as it was read.
    body: BodyFraming,
    /// Which request `body` belongs to.
    request: u64,
    /// Bytes of `100 Continue` still owed before the body is read.
    continue_left: usize,
    /// The body's framing broke: nothing after it can be read.
    broken: bool,
    /// The header map of the last response, emptied, for the next request head: it was made
    /// with room for a request's fields and those the proxy adds.
    spare: Option<HeaderMap>,
}

impl Io {
    fn new(socket: Option<Socket>, buf: BytesMut) -> Self {
        Self {
            socket,
            buf,
            names: Names::default(),
            body: BodyFraming::Empty,
            request: 0,
            continue_left: 0,
            broken: false,
            spare: None,
        }
    }

    fn socket(&mut self) -> io::Result<&mut Socket> {
        self.socket
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "connection upgraded"))
    }
}

/// The body of a request on an HTTP/1.1 connection, read from the connection by whoever polls
/// it.
#[derive(Debug)]
pub struct Body {
    io: Rc<RefCell<Io>>,
    request: u64,
    /// The known fields of the request's head.
    fields: FieldSet,
}

impl Body {
    /// Which known fields the request's header map may hold, as its head had them.
    pub fn fields(&self) -> FieldSet {
        self.fields
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let mut io = self.io.borrow_mut();
        if io.request != self.request {
            // Its exchange is over and the connection has moved on: whatever polls it must not
            // take it for ended cleanly.
            return Poll::Ready(Some(Err(io::Error::other(
                "request body read after its exchange",
            ))));
        }
        let poll = poll_body(&mut io, cx);
        if let Poll::Ready(Some(Err(_))) = poll {
            io.broken = true;
            io.body = BodyFraming::Empty;
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.io
            .try_borrow()
            .is_ok_and(|io| io.request != self.request || io.body.is_done())
    }

    fn size_hint(&self) -> SizeHint {
        let exact = self.io.try_borrow().ok().and_then(|io| {
            (io.request == self.request)
                .then(|| io.body.exact())
                .flatten()
        });
        match exact {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// Writes the `100 Continue` owed, then reads the next frame of the body.
fn poll_body(io: &mut Io, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
    let Io {
        socket,
        buf,
        body,
        continue_left,
        ..
    } = io;
    let Some(socket) = socket.as_mut() else {
        return Poll::Ready(None);
    };
    if *continue_left > 0 && !body.is_done() && buf.is_empty() {
        while *continue_left > 0 {
            let from = CONTINUE.len() - *continue_left;
            let n = ready!(Output::poll_write_vectored(
                socket,
                cx,
                &[io::IoSlice::new(&CONTINUE[from..])]
            ))?;
            if n == 0 {
                return Poll::Ready(Some(Err(io::ErrorKind::WriteZero.into())));
            }
            *continue_left -= n;
        }
        ready!(Output::poll_flush(socket, cx))?;
    }
    // The client sent the body without waiting (or there is none): nothing is owed.
    *continue_left = 0;
    http1::poll_body(body, socket, buf, cx)
}

/// The socket of an upgraded connection, handed over once the `101` response is written.
#[derive(Debug)]
pub struct Upgrade(oneshot::Receiver<Socket>);

impl Upgrade {
    /// The socket, with the bytes read past the request head given back to it; `None` when the
    /// connection ended before the `101` went out.
    pub async fn socket(self) -> Option<Socket> {
        self.0.await.ok()
    }
}

/// Shares the socket of a connection's [`Io`] with a [`Writer`], borrowing it for each call only:
/// the response body the writer polls may read the request body from the same connection.
struct Shared<'a>(&'a RefCell<Io>);

impl Output for Shared<'_> {
    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut io = self.0.borrow_mut();
        Output::poll_write_vectored(io.socket()?, cx, bufs)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut io = self.0.borrow_mut();
        Output::poll_flush(io.socket()?, cx)
    }
}

/// The limits of a listener's request heads.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// The longest head, in bytes.
    pub max_bytes: usize,
    /// The most fields.
    pub max_fields: usize,
}

/// An HTTP/1.1 connection: serves requests until the connection ends.
#[derive(Debug)]
pub struct Connection {
    io: Rc<RefCell<Io>>,
    conn: Rc<Downstream>,
    busy: Busy,
    limits: HeadLimits,
    /// Set to close once no request is in flight (idle timeout, drain).
    closing: Cell<bool>,
}

/// A request head parsed, and what the connection needs to know about it.
struct Head {
    request: Request<Incoming>,
    keep_alive: bool,
    head_request: bool,
    upgrade: bool,
}

impl Connection {
    /// A connection on `socket`.
    pub(super) fn new(
        socket: Socket,
        conn: Rc<Downstream>,
        busy: Busy,
        limits: HeadLimits,
    ) -> Self {
        Self {
            io: Rc::new(RefCell::new(Io::new(Some(socket), BytesMut::new()))),
            conn,
            busy,
            limits,
            closing: Cell::new(false),
        }
    }

    /// Closes the connection once no request is in flight: now, if it waits for one; after
    /// its response (which then says `Connection: close`) otherwise.
    pub fn close_when_idle(&self) {
        self.closing.set(true);
    }

    /// Frees what a connection waiting for its next request need not keep: its read buffer
    /// (unless part of a head is in it), the names of the last head and the spare header map. Returns whether part
    /// of a head was read.
    pub fn park(&self) -> bool {
        let mut io = self.io.borrow_mut();
        io.names = Names::default();
        // ~2.5 KiB kept for the next request, more than the rest of a parked connection.
        io.spare = None;
        let partial = !io.buf.is_empty();
        if !partial {
            io.buf = BytesMut::new();
        }
        if let Some(socket) = io.socket.as_mut() {
            socket.release_buffers();
        }
        partial
    }

    /// Waits until new bytes arrive (see [`Socket::poll_read_ready`]).
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io.borrow_mut().socket()?.poll_read_ready(cx)
    }

    /// Serves requests until the connection is to close (or its socket went to an upgrade's
    /// tunnel). Dropped while it waits for a request head, it loses nothing: a later call goes
    /// on from the bytes read.
    ///
    /// # Errors
    /// The connection failed.
    pub async fn run(&self) -> io::Result<()> {
        loop {
            let head = match poll_fn(|cx| self.poll_head(cx)).await {
                Ok(Some(head)) => head,
                Ok(None) => return Ok(()),
                Err(Failed::Io(err)) => return Err(err),
                Err(Failed::Head(err)) => {
                    self.reject(&err).await?;
                    return Ok(());
                }
            };
            let Head {
                request,
                keep_alive,
                head_request,
                upgrade,
            } = head;
            let version = request.version();
            let upgrade = upgrade.then(|| {
                let (tx, rx) = oneshot::channel();
                *self.conn.upgrade.borrow_mut() = Some(Upgrade(rx));
                tx
            });
            let exchange = forward::handle(Rc::clone(&self.conn), request, self.busy.enter());
            let mut exchange = std::pin::pin!(exchange);
            // While the request is served, the connection is read ahead: a client that goes
            // away (the end of its stream, or a reset) drops the exchange, and with it the
            // upstream request; pipelined requests wait in the buffer.
            let Some(Ok(response)) = poll_fn(|cx| match exchange.as_mut().poll(cx) {
                Poll::Ready(response) => Poll::Ready(Some(response)),
                Poll::Pending if self.poll_gone(cx) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            })
            .await
            else {
                tracing::debug!("the client went away before its response");
                return Ok(());
            };
            if upgrade.is_some() {
                self.conn.upgrade.borrow_mut().take();
            }
            let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
            if let (true, Some(tx)) = (switching, upgrade) {
                if tx.is_closed() {
                    return Ok(());
                }
                self.write(response, version, false, true).await?;
                let mut io = self.io.borrow_mut();
                let rest = io.buf.split().freeze();
                if let Some(mut socket) = io.socket.take() {
                    socket.unread(rest);
                    // The tunnel may have ended already; the socket then closes here.
                    let _ = tx.send(socket);
                }
                return Ok(());
            }
            let keep_alive = keep_alive && !self.closing.get() && !switching;
            let keep_alive = self
                .write(response, version, head_request, keep_alive)
                .await?;
            if !keep_alive || !self.finish_body() {
                return Ok(());
            }
        }
    }

    /// Reads until a request head is in, or the connection ends (`None`).
    fn poll_head(&self, cx: &mut Context<'_>) -> Poll<Result<Option<Head>, Failed>> {
        let mut io = self.io.borrow_mut();
        loop {
            if self.closing.get() {
                return Poll::Ready(Ok(None));
            }
            if !io.buf.is_empty() {
                if let Some(head) = parse(&mut io, &self.io, self.limits)? {
                    return Poll::Ready(Ok(Some(head)));
                }
                if io.buf.len() >= self.limits.max_bytes {
                    return Poll::Ready(Err(too_large("request head too large")));
                }
            }
            let Io { socket, buf, .. } = &mut *io;
            let socket = socket
                .as_mut()
                .ok_or(Failed::Io(io::ErrorKind::NotConnected.into()))?;
            match ready!(socket.poll_read_buf(cx, buf, HEAD_READ, HEAD_READ)) {
                // The end of the stream: between requests a clean close, within a head the
                // client gave up.
                Ok(0) => return Poll::Ready(Ok(None)),
                Ok(_) => {}
                Err(err) => return Poll::Ready(Err(Failed::Io(err))),
            }
        }
    }

    /// Reads ahead while a request is served, once its body is in: whether the client went
    /// away. Bytes that arrive are kept for the next request, up to a head's worth.
    fn poll_gone(&self, cx: &mut Context<'_>) -> bool {
        let mut io = self.io.borrow_mut();
        let Io {
            socket, buf, body, ..
        } = &mut *io;
        let Some(socket) = socket.as_mut() else {
            return false;
        };
        while body.is_done() && buf.len() < self.limits.max_bytes {
            match socket.poll_read_buf(cx, buf, HEAD_READ, HEAD_READ) {
                Poll::Ready(Ok(0) | Err(_)) => return true,
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => return false,
            }
        }
        false
    }

    /// Answers a head that cannot be served; the connection closes after it.
    async fn reject(&self, err: &ProxyError) -> io::Result<()> {
        tracing::debug!(error = %err, "bad request head");
        if self.conn.worker.metrics {
            self.conn.stats.unrouted[crate::metrics::status_class(err.status().as_u16())].inc();
        }
        let response = forward::error_response(err, Version::HTTP_11);
        self.write(response, Version::HTTP_11, false, false)
            .await
            .map(drop)
    }

    /// Writes a response; returns whether the connection stays open after it.
    async fn write(
        &self,
        response: Response<ResponseBody>,
        version: Version,
        head_request: bool,
        keep_alive: bool,
    ) -> io::Result<bool> {
        let (parts, body) = response.into_parts();
        let (head, framing, keep_alive) =
            encode_head(&parts, &body, version, head_request, keep_alive);
        self.io.borrow_mut().spare = h1::spare_map(parts.headers);
        let mut writer = Writer::new(head, body, framing);
        let mut out = Shared(&self.io);
        poll_fn(|cx| writer.poll(&mut out, cx))
            .await
            .map_err(|err| match err {
                http1::WriteError::Io(err) => err,
                http1::WriteError::Body(err) => io::Error::other(err),
            })?;
        Ok(keep_alive)
    }

    /// Once a response is out: whether the request's body was read to its end, reading what
    /// is left of it if it has already arrived.
    fn finish_body(&self) -> bool {
        let mut io = self.io.borrow_mut();
        io.continue_left = 0;
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut drained = 0;
        while !io.broken && !io.body.is_done() && drained <= DRAIN_MAX {
            match poll_body(&mut io, &mut cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    drained += frame.data_ref().map_or(0, Bytes::len);
                }
                Poll::Ready(None) => break,
                Poll::Ready(Some(Err(_))) | Poll::Pending => return false,
            }
        }
        !io.broken && io.body.is_done()
    }
}

/// Why no request could be read.
enum Failed {
    Io(io::Error),
    /// The head is malformed or too large: answered, then the connection closes.
    Head(ProxyError),
}

/// Why [`scan`] found no head.
enum Unscanned {
    Bad(ProxyError),
    /// More fields than there was room for.
    TooManyFields,
}

impl From<ProxyError> for Unscanned {
    fn from(err: ProxyError) -> Self {
        Self::Bad(err)
    }
}

impl From<ProxyError> for Failed {
    fn from(err: ProxyError) -> Self {
        Self::Head(err)
    }
}

fn bad(reason: &'static str) -> ProxyError {
    ProxyError::BadRequestHead {
        status: StatusCode::BAD_REQUEST,
        reason,
    }
}

fn too_large(reason: &'static str) -> Failed {
    Failed::Head(head_too_large(reason))
}

fn head_too_large(reason: &'static str) -> ProxyError {
    ProxyError::BadRequestHead {
        status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        reason,
    }
}

/// Parses a request head at the start of the connection's buffer, consuming it when complete.
fn parse(
    io: &mut Io,
    shared: &Rc<RefCell<Io>>,
    limits: HeadLimits,
) -> Result<Option<Head>, Failed> {
    let Io {
        buf,
        names,
        body,
        request,
        continue_left,
        spare,
        ..
    } = io;
    // Not initialised: httparse writes the fields it finds.
    let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_FIELDS];
    let room = limits.max_fields.min(STACK_FIELDS);
    let scanned = match scan(buf, names, limits, &mut stack[..room]) {
        Err(Unscanned::TooManyFields) if limits.max_fields > STACK_FIELDS => {
            // Only a head with more fields than the stack holds pays for the heap (and a
            // second scan), not every head of a listener that allows many.
            let mut heap = Vec::<httparse::Header<'_>>::with_capacity(limits.max_fields);
            scan(
                buf,
                names,
                limits,
                &mut heap.spare_capacity_mut()[..limits.max_fields],
            )
        }
        scanned => scanned,
    };
    let Scanned {
        len,
        method,
        version,
        path: (path_start, path_end),
        named,
        noted,
    } = match scanned {
        Ok(Some(scanned)) => scanned,
        Ok(None) => return Ok(None),
        Err(Unscanned::TooManyFields) => return Err(too_large("too many header fields")),
        Err(Unscanned::Bad(err)) => return Err(Failed::Head(err)),
    };
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(path_start..path_end))
        .map_err(|_| bad("invalid request target"))?;
    let mut headers = match spare.take() {
        Some(mut headers) => {
            headers.reserve(named.len() + ADDED_FIELDS);
            headers
        }
        None => HeaderMap::with_capacity((named.len() + ADDED_FIELDS).max(h1::HTTP1_HEADER_ROOM)),
    };
    for (name, start, end) in named {
        let value = HeaderValue::from_maybe_shared(head.slice(start..end))
            .map_err(|_| bad("invalid header value"))?;
        headers.append(name, value);
    }
    let framing = if noted.transfer_encoding {
        if noted.content_length.is_some() {
            // RFC 9112 §6.1: a request with both may be an attempt at request smuggling.
            return Err(bad("both content-length and transfer-encoding").into());
        }
        if version == Version::HTTP_10 {
            return Err(bad("transfer-encoding in an HTTP/1.0 request").into());
        }
        if !noted.chunked_last {
            return Err(bad("unsupported transfer-encoding").into());
        }
        BodyFraming::Chunked(Chunk::Size)
    } else {
        match noted.content_length {
            None | Some(Some(0)) => BodyFraming::Empty,
            Some(Some(n)) => BodyFraming::Length(n),
            Some(None) => return Err(bad("invalid content-length").into()),
        }
    };
    let keep_alive = match version {
        Version::HTTP_10 => noted.keep_alive,
        _ => !noted.close,
    };
    *request = request.wrapping_add(1);
    *body = framing;
    *continue_left = if noted.expect_continue && version == Version::HTTP_11 && !body.is_done() {
        CONTINUE.len()
    } else {
        0
    };
    let upgrade =
        version == Version::HTTP_11 && noted.upgrade && noted.present.may_have(Known::Upgrade);
    let head_request = method == Method::HEAD;
    let body = Body {
        io: Rc::clone(shared),
        request: *request,
        fields: noted.present,
    };
    let mut request = Request::new(Incoming::Right(body));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    Ok(Some(Head {
        request,
        keep_alive,
        head_request,
        upgrade,
    }))
}

/// A complete request head found at the start of a buffer: where its parts are.
struct Scanned {
    /// The head's length, up to and with its empty line.
    len: usize,
    method: Method,
    version: Version,
    /// The request target's range in the head.
    path: (usize, usize),
    /// The fields to keep, with the ranges of their values.
    named: Vec<(HeaderName, usize, usize)>,
    noted: HeadFields,
}

/// Parses the head at the start of `buf` with room for `fields.len()` fields.
fn scan<'b>(
    buf: &'b [u8],
    names: &mut Names,
    limits: HeadLimits,
    fields: &mut [MaybeUninit<httparse::Header<'b>>],
) -> Result<Option<Scanned>, Unscanned> {
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, buf, fields)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Unscanned::TooManyFields),
        Err(httparse::Error::Version) => {
            return Err(Unscanned::Bad(ProxyError::BadRequestHead {
                status: StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                reason: "not an HTTP/1.x request",
            }));
        }
        Err(_) => return Err(bad("malformed request head").into()),
    };
    if len > limits.max_bytes {
        return Err(Unscanned::Bad(head_too_large("request head too large")));
    }
    let method = req
        .method
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .ok_or_else(|| bad("invalid method"))?;
    let version = if req.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let base = buf.as_ptr() as usize;
    let path = req.path.unwrap_or("/");
    let path_start = path.as_ptr() as usize - base;
    // Names are made while the head is borrowed; values, after it is frozen, share its bytes.
    let mut named = Vec::with_capacity(req.headers.len());
    let mut noted = HeadFields::default();
    for (index, field) in req.headers.iter().enumerate() {
        let (name, known) = names.name(index, field.name.as_bytes()).map_err(bad)?;
        if noted.note(known, field.value) {
            let start = field.value.as_ptr() as usize - base;
            named.push((name, start, start + field.value.len()));
        }
    }
    Ok(Some(Scanned {
        len,
        method,
        version,
        path: (path_start, path_start + path.len()),
        named,
        noted,
    }))
}

/// Encodes a response head; returns it with the body's framing and whether the connection
/// stays open after it.
fn encode_head(
    parts: &http::response::Parts,
    body: &ResponseBody,
    version: Version,
    head_request: bool,
    mut keep_alive: bool,
) -> (Bytes, Framing, bool) {
    use http_body::Body as _;

    let status = parts.status;
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let fields: usize = (parts.headers.iter())
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    let mut head = Vec::with_capacity(fields + 128);
    head.extend_from_slice(if version == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    // The response's own framing fields are kept only where they frame nothing (HEAD, 1xx,
    // 204, 304) or say what frames the body: its length, when known.
    let keep_framing_fields = bodiless || head_request;
    let exact = if keep_framing_fields {
        None
    } else if body.is_end_stream() {
        Some(0)
    } else {
        body.size_hint().exact()
    };
    let mut length_written = false;
    let mut dated = false;
    for (name, value) in &parts.headers {
        if *name == header::CONNECTION && !switching {
            if value
                .as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
            {
                keep_alive = false;
            }
            continue;
        }
        if !keep_framing_fields {
            if *name == header::TRANSFER_ENCODING {
                continue;
            }
            if *name == header::CONTENT_LENGTH {
                if !length_written
                    && exact.is_some()
                    && http1::parse_length(value.as_bytes()) == exact
                {
                    length_written = true;
                    http1::push_field(&mut head, name.as_str(), value);
                }
                continue;
            }
        }
        dated |= *name == header::DATE;
        http1::push_field(&mut head, name.as_str(), value);
    }
    if !dated {
        push_date(&mut head);
    }
    let framing = if keep_framing_fields {
        Framing::Empty
    } else if let Some(n) = exact {
        if !length_written {
            push_length(&mut head, n);
        }
        if n == 0 {
            Framing::Empty
        } else {
            Framing::Length(n)
        }
    } else if version == Version::HTTP_11 {
        head.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Framing::Chunked
    } else {
        keep_alive = false;
        Framing::Close
    };
    if !switching {
        if !keep_alive {
            head.extend_from_slice(b"connection: close\r\n");
        } else if version == Version::HTTP_10 {
            head.extend_from_slice(b"connection: keep-alive\r\n");
        }
    }
    head.extend_from_slice(b"\r\n");
    (head.into(), framing, keep_alive)
}

fn push_length(head: &mut Vec<u8>, n: u64) {
    if n == 0 {
        head.extend_from_slice(b"content-length: 0\r\n");
    } else {
        // Writing to a Vec cannot fail.
        let _ = write!(head, "content-length: {n}\r\n");
    }
}

thread_local! {
    /// The `Date` of responses sent in the current second, and that second.
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((0, [0; 29])) };
}

/// Appends a `Date` field for now (RFC 9110 §6.6.1: a proxy adds it when the origin did not).
fn push_date(head: &mut Vec<u8>) {
    with_date(|date| {
        head.extend_from_slice(b"date: ");
        head.extend_from_slice(date);
        head.extend_from_slice(b"\r\n");
    });
}

/// Calls `f` with the value of a `Date` field for now (formatted once a second per thread);
/// not at all when the clock cannot be read.
pub(super) fn with_date(f: impl FnOnce(&[u8])) {
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|date| {
        let mut date = date.borrow_mut();
        if date.0 != second {
            let text = httpdate::fmt_http_date(now);
            if text.len() == date.1.len() {
                date.1.copy_from_slice(text.as_bytes());
                date.0 = second;
            }
        }
        if date.0 == second {
            f(&date.1);
        }
    });
}

#[cfg(test)]
mod tests;
