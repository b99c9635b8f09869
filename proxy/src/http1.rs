//! The HTTP/1.1 wire format both sides of the proxy share: body framing (RFC 9112 §6–7) read
//! from and written to a [`Socket`], and the cache of header names a connection's heads repeat.
//!
//! The downstream server ([`crate::downstream::h1`]) reads request bodies and writes responses
//! with these; the upstream client ([`crate::upstream::h1`]) writes requests and reads response
//! bodies.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Body, Frame};

use crate::body::BodyError;
use crate::headers::{FieldSet, Known};
use crate::io::Socket;

/// The longest chunk-size line (size and extensions).
const MAX_CHUNK_LINE: usize = 4096;
/// The longest trailer section.
const MAX_TRAILERS: usize = 64 * 1024;
/// The most fields in a trailer section.
const MAX_TRAILER_FIELDS: usize = 100;
/// Spare room made for one read, at least and at most.
pub const READ_MIN: usize = 8 * 1024;
pub const READ_MAX: usize = 64 * 1024;

/// How a body on its way in is delimited, and where its reading is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body (or its end was read).
    Empty,
    /// This many bytes are still to come.
    Length(u64),
    /// Until the peer closes the connection (responses only).
    Close,
    Chunked(Chunk),
}

/// The position in a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// At a chunk-size line.
    Size,
    /// In chunk data, this many bytes left.
    Data(u64),
    /// At the CRLF after chunk data.
    DataEnd,
    /// In the trailer section after the last chunk.
    Trailers,
}

impl BodyFraming {
    /// Whether the whole body was read.
    pub fn is_done(self) -> bool {
        matches!(self, Self::Empty | Self::Length(0))
    }

    /// Its length, when known.
    pub fn exact(self) -> Option<u64> {
        match self {
            Self::Empty => Some(0),
            Self::Length(n) => Some(n),
            Self::Close | Self::Chunked(_) => None,
        }
    }
}

/// Reads the next frame of a body delimited by `framing` from `buf`, reading from `socket`
/// when `buf` runs short. `framing` follows the reading; at the end it is
/// [`BodyFraming::Empty`] and the bytes after the body stay in `buf`.
///
/// # Errors
/// The socket failed, closed before the end, or the framing is broken.
pub fn poll_body(
    framing: &mut BodyFraming,
    socket: &mut Socket,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<Option<io::Result<Frame<Bytes>>>> {
    let mut read = |buf: &mut BytesMut, want: usize| {
        socket.poll_read_buf(cx, buf, READ_MIN, want.clamp(READ_MIN, READ_MAX))
    };
    loop {
        match framing {
            BodyFraming::Empty => return Poll::Ready(None),
            BodyFraming::Length(0) => {
                *framing = BodyFraming::Empty;
                return Poll::Ready(None);
            }
            BodyFraming::Length(left) => {
                if buf.is_empty() && ready!(read(buf, clamp(*left)))? == 0 {
                    return Poll::Ready(Some(Err(incomplete())));
                }
                let take = buf.len().min(clamp(*left));
                *left -= take as u64;
                return Poll::Ready(Some(Ok(Frame::data(buf.split_to(take).freeze()))));
            }
            BodyFraming::Close => {
                if buf.is_empty() && ready!(read(buf, READ_MAX))? == 0 {
                    *framing = BodyFraming::Empty;
                    return Poll::Ready(None);
                }
                return Poll::Ready(Some(Ok(Frame::data(buf.split().freeze()))));
            }
            BodyFraming::Chunked(Chunk::Size) => {
                let Some(end) = memchr::memchr(b'\n', buf) else {
                    if buf.len() > MAX_CHUNK_LINE {
                        return Poll::Ready(Some(Err(invalid("chunk size line too long"))));
                    }
                    if ready!(read(buf, READ_MIN))? == 0 {
                        return Poll::Ready(Some(Err(incomplete())));
                    }
                    continue;
                };
                let size = chunk_size(&buf[..end]).ok_or_else(|| invalid("invalid chunk size"))?;
                buf.advance(end + 1);
                *framing = BodyFraming::Chunked(if size == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(size)
                });
            }
            BodyFraming::Chunked(Chunk::Data(left)) => {
                if buf.is_empty() && ready!(read(buf, clamp(*left)))? == 0 {
                    return Poll::Ready(Some(Err(incomplete())));
                }
                let take = buf.len().min(clamp(*left));
                *left -= take as u64;
                if *left == 0 {
                    *framing = BodyFraming::Chunked(Chunk::DataEnd);
                }
                return Poll::Ready(Some(Ok(Frame::data(buf.split_to(take).freeze()))));
            }
            BodyFraming::Chunked(Chunk::DataEnd) => {
                if buf.len() < 2 {
                    if ready!(read(buf, READ_MIN))? == 0 {
                        return Poll::Ready(Some(Err(incomplete())));
                    }
                    continue;
                }
                if &buf[..2] != b"\r\n" {
                    return Poll::Ready(Some(Err(invalid("chunk data not followed by CRLF"))));
                }
                buf.advance(2);
                *framing = BodyFraming::Chunked(Chunk::Size);
            }
            BodyFraming::Chunked(Chunk::Trailers) => {
                let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
                match httparse::parse_headers(buf, &mut fields) {
                    Ok(httparse::Status::Complete((len, fields))) => {
                        let trailers = trailer_map(fields)?;
                        buf.advance(len);
                        *framing = BodyFraming::Empty;
                        return match trailers {
                            Some(trailers) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
                            None => Poll::Ready(None),
                        };
                    }
                    Ok(httparse::Status::Partial) => {
                        if buf.len() >= MAX_TRAILERS {
                            return Poll::Ready(Some(Err(invalid("trailers too large"))));
                        }
                        if ready!(read(buf, READ_MIN))? == 0 {
                            return Poll::Ready(Some(Err(incomplete())));
                        }
                    }
                    Err(_) => return Poll::Ready(Some(Err(invalid("malformed trailers")))),
                }
            }
        }
    }
}

/// At most this many body bytes are read or handed on at once.
fn clamp(left: u64) -> usize {
    usize::try_from(left).unwrap_or(usize::MAX).min(READ_MAX)
}

/// The size on a chunk-size line (without its `\n`): hex digits, then optional extensions.
pub fn chunk_size(line: &[u8]) -> Option<u64> {
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
        "the connection closed before the end of the body",
    )
}

fn invalid(reason: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason)
}

/// A Content-Length value: digits only, at most 19 of them.
pub fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 {
        return None;
    }
    // 19 digits stay below u64::MAX: no overflow check.
    let mut length = 0u64;
    for &byte in value {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        length = length * 10 + u64::from(digit);
    }
    Some(length)
}

/// Appends `name: value\r\n`.
pub fn push_field(head: &mut Vec<u8>, name: &str, value: &HeaderValue) {
    head.extend_from_slice(name.as_bytes());
    head.extend_from_slice(b": ");
    head.extend_from_slice(value.as_bytes());
    head.extend_from_slice(b"\r\n");
}

/// The header names of a connection's last head, reused for the next head when it sends the
/// same raw names in the same order, as a peer's messages mostly do: an exact byte match skips
/// `HeaderName::from_bytes` (lowercasing and the standard-name lookup, ~100 instructions a
/// field). A name that differs is parsed and replaces the rest of the list. At most
/// [`Names::MAX`] names of [`Names::MAX_RAW`] bytes in all are kept.
#[derive(Debug, Default)]
pub struct Names {
    /// The raw names, back to back.
    raw: Vec<u8>,
    /// Each name, its class and where its raw bytes end in `raw`.
    names: Vec<(HeaderName, Known, usize)>,
}

impl Names {
    const MAX: usize = 32;
    const MAX_RAW: usize = 1024;

    /// The name of the head's field at `index`, whose raw bytes are `raw`, and its class.
    ///
    /// # Errors
    /// `raw` is not a valid field name.
    pub fn name(&mut self, index: usize, raw: &[u8]) -> Result<(HeaderName, Known), &'static str> {
        // Where this field's raw name starts in `raw`: known while the names kept so far reach
        // this position.
        let start = match index.checked_sub(1) {
            None => Some(0),
            Some(before) => self.names.get(before).map(|&(_, _, end)| end),
        };
        if let (Some(start), Some((name, known, end))) = (start, self.names.get(index))
            && self.raw.get(start..*end) == Some(raw)
        {
            return Ok((name.clone(), *known));
        }
        let name = HeaderName::from_bytes(raw).map_err(|_| "invalid header name")?;
        let known = Known::of(&name);
        if let Some(start) = start {
            self.names.truncate(index);
            self.raw.truncate(start);
            if index < Self::MAX && start + raw.len() <= Self::MAX_RAW {
                self.raw.extend_from_slice(raw);
                self.names.push((name.clone(), known, self.raw.len()));
            }
        }
        Ok((name, known))
    }
}

/// What a head's fields say about its framing and the connection's reuse, noted as the fields
/// are read (no map lookups afterwards).
#[derive(Debug, Default)]
pub struct HeadFields {
    /// `Connection` has `close`.
    pub close: bool,
    /// `Connection` has `keep-alive`.
    pub keep_alive: bool,
    /// `Transfer-Encoding` is present.
    pub transfer_encoding: bool,
    /// The last transfer coding is `chunked`.
    pub chunked_last: bool,
    /// `Content-Length`: every value and list element the same number, or `Some(None)`.
    pub content_length: Option<Option<u64>>,
    /// `Connection` has `upgrade`.
    pub upgrade: bool,
    /// `Expect` is `100-continue`.
    pub expect_continue: bool,
    /// The known fields kept for the header map (those `note` said yes to).
    pub present: FieldSet,
}

impl HeadFields {
    /// Notes a field of class `known`; false for the fields of this hop only that the message
    /// need not carry on: `Keep-Alive`, and `Connection` unless it names other fields.
    #[inline]
    pub fn note(&mut self, known: Known, value: &[u8]) -> bool {
        // Most fields are none of these: no call for them.
        known == Known::Other || self.note_known(known, value)
    }

    fn note_known(&mut self, known: Known, value: &[u8]) -> bool {
        let keep = match known {
            Known::Other => return true,
            Known::Connection => {
                let mut other = false;
                for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        self.close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        self.keep_alive = true;
                    } else {
                        self.upgrade |= token.eq_ignore_ascii_case(b"upgrade");
                        other |= !token.is_empty();
                    }
                }
                // Kept when it names other fields: the forwarding path removes them, and it.
                other
            }
            Known::TransferEncoding => {
                self.transfer_encoding = true;
                self.chunked_last = value
                    .rsplit(|&b| b == b',')
                    .next()
                    .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
                true
            }
            Known::ContentLength => {
                for part in value.split(|&b| b == b',') {
                    let n = parse_length(part.trim_ascii());
                    self.content_length = Some(match self.content_length {
                        None => n,
                        Some(length) => length.filter(|l| Some(*l) == n),
                    });
                }
                true
            }
            Known::KeepAlive => false,
            Known::Expect => {
                self.expect_continue = value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
                true
            }
            _ => true,
        };
        if keep {
            self.present.insert(known);
        }
        keep
    }
}

/// How a body on its way out is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// Content-Length: this many bytes are still to go.
    Length(u64),
    /// Transfer-Encoding: chunked.
    Chunked,
    /// Until the connection closes (a response to an HTTP/1.0 request of unknown length).
    Close,
}

/// Where a [`Writer`] writes: a socket, or one reached through the connection's shared state
/// (borrowed only for each call, since the body the writer polls may read from it too).
pub trait Output {
    /// Writes from `bufs`, returning how many bytes were taken.
    ///
    /// # Errors
    /// The connection failed.
    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>>;

    /// Ready once what was written is on its way.
    ///
    /// # Errors
    /// The connection failed.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl Output for Socket {
    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        hyper::rt::Write::poll_write_vectored(Pin::new(self), cx, bufs)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        hyper::rt::Write::poll_flush(Pin::new(self), cx)
    }
}

/// The most queued pieces (head, chunk lines, data) gathered for one write.
const GATHER: usize = 8;

/// A message on its way out: its queued bytes (the head first), then the rest of its body.
#[derive(Debug)]
pub struct Writer<B> {
    queue: VecDeque<Bytes>,
    /// `None` once the body's end is queued.
    body: Option<B>,
    framing: Framing,
}

/// Why a message could not be written.
#[derive(Debug)]
pub enum WriteError {
    Io(io::Error),
    Body(BodyError),
}

impl<B> Writer<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BodyError>,
{
    /// Writes `head`, then `body` framed by `framing` (the body is dropped unread when
    /// `framing` is [`Framing::Empty`]).
    pub fn new(head: Bytes, body: B, framing: Framing) -> Self {
        let mut queue = VecDeque::with_capacity(GATHER);
        queue.push_back(head);
        Self {
            queue,
            body: (framing != Framing::Empty).then_some(body),
            framing,
        }
    }

    /// Ready once the whole message has been handed to the kernel. What the body has ready
    /// goes out with the head (or the frames before it) in one write.
    ///
    /// # Errors
    /// See [`WriteError`]; a body that is longer or shorter than its Content-Length is an
    /// [`WriteError::Io`] of kind `InvalidInput`.
    pub fn poll(
        &mut self,
        out: &mut impl Output,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), WriteError>> {
        loop {
            while self.queue.len() < GATHER - 3 {
                let Some(body) = self.body.as_mut() else {
                    break;
                };
                match Pin::new(body).poll_frame(cx) {
                    Poll::Pending => break,
                    Poll::Ready(Some(Err(err))) => {
                        return Poll::Ready(Err(WriteError::Body(err.into())));
                    }
                    Poll::Ready(Some(Ok(frame))) => self.push(frame)?,
                    Poll::Ready(None) => {
                        self.body = None;
                        match self.framing {
                            Framing::Chunked => {
                                self.queue.push_back(Bytes::from_static(b"0\r\n\r\n"));
                            }
                            Framing::Length(0) | Framing::Empty | Framing::Close => {}
                            Framing::Length(_) => return Poll::Ready(Err(length_mismatch())),
                        }
                    }
                }
            }
            if self.queue.is_empty() {
                // What was written so far goes out while the body waits.
                ready!(out.poll_flush(cx)).map_err(WriteError::Io)?;
                return if self.body.is_none() {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Pending
                };
            }
            let mut slices = [io::IoSlice::new(&[]); GATHER];
            let count = self.queue.len().min(slices.len());
            for (slice, bytes) in slices.iter_mut().zip(&self.queue) {
                *slice = io::IoSlice::new(bytes);
            }
            let written =
                ready!(out.poll_write_vectored(cx, &slices[..count])).map_err(WriteError::Io)?;
            if written == 0 {
                return Poll::Ready(Err(WriteError::Io(io::ErrorKind::WriteZero.into())));
            }
            self.consume(written);
        }
    }

    /// Whether the body's end has been queued (it may not be written yet).
    pub fn body_done(&self) -> bool {
        self.body.is_none()
    }

    fn push(&mut self, frame: Frame<Bytes>) -> Result<(), WriteError> {
        match frame.into_data() {
            Ok(data) if data.is_empty() => {}
            Ok(data) => match &mut self.framing {
                Framing::Length(left) => {
                    let len = data.len() as u64;
                    if len > *left {
                        return Err(length_mismatch());
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
                Framing::Close => self.queue.push_back(data),
                Framing::Empty => return Err(length_mismatch()),
            },
            Err(frame) => {
                // Trailers end the body; only chunked framing can carry them.
                if let (Ok(trailers), Framing::Chunked) = (frame.into_trailers(), self.framing) {
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
        Ok(())
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

/// A body whose length differs from the one announced: the connection cannot carry anything
/// after it.
fn length_mismatch() -> WriteError {
    WriteError::Io(io::Error::new(
        io::ErrorKind::InvalidInput,
        "body length differs from its content-length",
    ))
}

#[cfg(test)]
mod tests;
