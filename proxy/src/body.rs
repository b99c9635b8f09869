//! Bodies on the request path. Both are streamed frame by frame, never buffered whole.
//!
//! [`RequestBody`] is the downstream body going upstream, possibly with its first frame already
//! read (HTTP/1.1 framing is checked before anything is sent upstream). [`ResponseBody`] is the
//! upstream body (or a proxy-made one) going downstream; it returns the HTTP/1.1 connection to
//! its pool once the upstream response was read to the end, and not otherwise.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use tokio::time::Instant;

use crate::downstream::{BusyGuard, h1 as server, h2 as h2_server};
use crate::forward::Downstream;
use crate::observe::LogRecord;
use crate::upstream::{EndpointPool, InFlight, h1};

/// A response body's error: hyper's, or one from an HTTP/1.1 upstream.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// The body of a downstream request, as its connection reads it: from an HTTP/2 stream
/// (`Left`) or from an HTTP/1.1 connection (`Right`).
pub type Incoming = http_body_util::Either<h2_server::Body, server::Body>;

/// The body of a request on its way upstream.
#[derive(Debug, Default)]
pub struct RequestBody {
    first: Option<Frame<Bytes>>,
    rest: Option<Incoming>,
    counter: Option<Rc<Cell<u64>>>,
}

impl RequestBody {
    /// A body that streams `rest` after `first`.
    pub fn new(first: Option<Frame<Bytes>>, rest: Option<Incoming>) -> Self {
        Self {
            first,
            rest,
            counter: None,
        }
    }

    /// Counts the data bytes that pass into `counter` (for the access log).
    pub fn counting(mut self, counter: Option<Rc<Cell<u64>>>) -> Self {
        if let (Some(counter), Some(data)) =
            (&counter, self.first.as_ref().and_then(Frame::data_ref))
        {
            counter.set(counter.get() + data.len() as u64);
        }
        self.counter = counter;
        self
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Some(frame) = self.first.take() {
            return Poll::Ready(Some(Ok(frame)));
        }
        let poll = match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        };
        if let (Poll::Ready(Some(Ok(frame))), Some(counter)) = (&poll, &self.counter)
            && let Some(data) = frame.data_ref()
        {
            counter.set(counter.get() + data.len() as u64);
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self
            .rest
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint);
        let first = self
            .first
            .as_ref()
            .and_then(Frame::data_ref)
            .map_or(0, |data| data.len() as u64);
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + first);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + first);
        }
        hint
    }
}

/// The body of a response on its way downstream.
#[derive(Debug)]
pub struct ResponseBody {
    kind: Kind,
    release: Option<Release>,
    completion: Option<Completion>,
    busy: Option<BusyGuard>,
}

/// What happens when the response ends (sent, failed or abandoned): its duration goes to the
/// metrics and its line to the access log.
#[derive(Debug)]
pub struct Completion {
    conn: Rc<Downstream>,
    start: Instant,
    metrics: bool,
    log: Option<Box<LogRecord>>,
}

impl Completion {
    /// Records against `conn` the time since `start` (when `metrics`), and logs `log`.
    pub fn new(
        conn: Rc<Downstream>,
        start: Instant,
        metrics: bool,
        log: Option<Box<LogRecord>>,
    ) -> Self {
        Self {
            conn,
            start,
            metrics,
            log,
        }
    }

    fn count_bytes(&mut self, n: usize) {
        if let Some(log) = self.log.as_mut() {
            log.bytes_out += n as u64;
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        if self.metrics {
            self.conn.stats.duration.observe(elapsed);
        }
        if let (Some(log), Some(handle)) = (&self.log, &self.conn.worker.log) {
            log.log(
                handle,
                elapsed,
                self.conn.worker.id,
                &self.conn.listener,
                self.conn.peer,
            );
        }
    }
}

#[derive(Debug)]
enum Kind {
    Upstream(UpstreamBody),
    Full(Option<Bytes>),
}

/// An upstream response body, as either client reads it.
#[derive(Debug)]
pub enum UpstreamBody {
    /// From hyper's client: HTTP/2, or an HTTP/1.1 upgrade.
    Hyper(hyper::body::Incoming),
    /// From an HTTP/1.1 connection of the pool.
    H1(h1::Body),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Self::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Self::H1(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Hyper(body) => body.is_end_stream(),
            Self::H1(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Hyper(body) => body.size_hint(),
            Self::H1(body) => body.size_hint(),
        }
    }
}

/// What a finished upstream response gives back: the in-flight count, and the HTTP/1.1
/// connection to its pool.
#[derive(Debug)]
pub struct Release {
    pool: Rc<EndpointPool>,
    _in_flight: InFlight,
}

impl Release {
    /// Releases `in_flight` when the body ends, and pools an HTTP/1.1 connection if its
    /// exchange ended cleanly.
    pub fn new(pool: Rc<EndpointPool>, in_flight: InFlight) -> Self {
        Self {
            pool,
            _in_flight: in_flight,
        }
    }
}

impl ResponseBody {
    /// An upstream response body.
    pub fn upstream(body: UpstreamBody, release: Release) -> Self {
        Self {
            kind: Kind::Upstream(body),
            release: Some(release),
            completion: None,
            busy: None,
        }
    }

    /// A body made by the proxy.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        let kind = Kind::Full((!bytes.is_empty()).then_some(bytes));
        Self {
            kind,
            release: None,
            completion: None,
            busy: None,
        }
    }

    /// Runs `completion` when the body ends or is dropped.
    pub fn on_complete(&mut self, completion: Completion) {
        self.completion = Some(completion);
    }

    /// Keeps the connection counted busy until the body is dropped.
    pub fn hold(&mut self, busy: BusyGuard) {
        self.busy = Some(busy);
    }

    /// No body.
    pub fn empty() -> Self {
        Self {
            kind: Kind::Full(None),
            release: None,
            completion: None,
            busy: None,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let poll = match &mut self.kind {
            Kind::Upstream(body) => Pin::new(body).poll_frame(cx),
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        };
        if let (Poll::Ready(Some(Ok(frame))), Some(completion)) = (&poll, self.completion.as_mut())
            && let Some(data) = frame.data_ref()
        {
            completion.count_bytes(data.len());
        }
        if let Poll::Ready(None) = poll {
            // Record as soon as the last frame is out, not when hyper drops the body.
            self.completion = None;
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream(body) => body.is_end_stream(),
            Kind::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream(body) => body.size_hint(),
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        let Some(release) = self.release.take() else {
            return;
        };
        // A connection whose exchange did not end cleanly may still have bytes in flight:
        // it is closed rather than reused.
        if let Kind::Upstream(UpstreamBody::H1(body)) = &mut self.kind
            && let Some(conn) = body.take_reusable()
        {
            release.pool.checkin_h1(conn);
        }
    }
}
