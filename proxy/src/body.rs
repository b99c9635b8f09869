//! Bodies on the request path. Both are streamed frame by frame, never buffered whole.
//!
//! [`RequestBody`] is the downstream body going upstream, possibly with its first frame already
//! read (HTTP/1.1 framing is checked before anything is sent upstream). [`ResponseBody`] is the
//! upstream body (or a proxy-made one) going downstream; it returns the HTTP/1.1 connection to
//! its pool once the upstream response was read to the end, and not otherwise.

use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;

use crate::upstream::{EndpointPool, InFlight};

/// The body of a request on its way upstream.
#[derive(Debug, Default)]
pub struct RequestBody {
    first: Option<Frame<Bytes>>,
    rest: Option<Incoming>,
}

impl RequestBody {
    /// A body that streams `rest` after `first`.
    pub fn new(first: Option<Frame<Bytes>>, rest: Option<Incoming>) -> Self {
        Self { first, rest }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(frame) = self.first.take() {
            return Poll::Ready(Some(Ok(frame)));
        }
        match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
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
    finished: bool,
}

#[derive(Debug)]
enum Kind {
    Upstream(Incoming),
    Full(Option<Bytes>),
}

/// What a finished upstream response gives back: the in-flight count, and the HTTP/1.1
/// connection to pool.
#[derive(Debug)]
pub struct Release {
    pool: Rc<EndpointPool>,
    sender: Option<http1::SendRequest<RequestBody>>,
    _in_flight: InFlight,
}

impl Release {
    /// Releases `in_flight` when the body ends, and pools `sender` if it ended cleanly.
    pub fn new(
        pool: Rc<EndpointPool>,
        sender: Option<http1::SendRequest<RequestBody>>,
        in_flight: InFlight,
    ) -> Self {
        Self {
            pool,
            sender,
            _in_flight: in_flight,
        }
    }
}

impl ResponseBody {
    /// An upstream response body.
    pub fn upstream(body: Incoming, release: Release) -> Self {
        Self {
            kind: Kind::Upstream(body),
            release: Some(release),
            finished: false,
        }
    }

    /// A body made by the proxy.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        let kind = Kind::Full((!bytes.is_empty()).then_some(bytes));
        Self {
            kind,
            release: None,
            finished: false,
        }
    }

    /// No body.
    pub fn empty() -> Self {
        Self {
            kind: Kind::Full(None),
            release: None,
            finished: false,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let poll = match &mut self.kind {
            Kind::Upstream(body) => Pin::new(body).poll_frame(cx),
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        };
        if let Poll::Ready(None) = poll {
            self.finished = true;
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
        let Some(mut release) = self.release.take() else {
            return;
        };
        // A connection whose response was not read to the end still has bytes in flight:
        // dropping the sender closes it rather than reusing it.
        if (self.finished || self.is_end_stream())
            && let Some(sender) = release.sender.take()
        {
            release.pool.checkin_h1(sender);
        }
    }
}
