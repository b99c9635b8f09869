//! The upstream's log of requests, and the body wrapper that keeps it up to date.

use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderMap, Method, Uri, Version, request};
use http_body::{Body, Frame, SizeHint};

use crate::checksum::Checksum;

/// How far the upstream got reading a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyEnd {
    /// The body is still being read (or was never read).
    Reading,
    /// The body ended normally.
    Complete,
    /// Reading failed (peer reset or closed mid-body), with the error text.
    Errored(String),
}

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// Which accepted connection carried it: 1 for the first connection, 2 for the next…
    pub connection: usize,
    /// `HTTP_11` or `HTTP_2` (HTTP/1.0 requests show as `HTTP_10`).
    pub version: Version,
    pub method: Method,
    /// As received: origin-form (`/path?q`) on HTTP/1.1, with scheme and authority on HTTP/2.
    pub uri: Uri,
    /// Request headers as received (hyper keeps names lowercase).
    pub headers: HeaderMap,
    /// Body bytes read so far.
    pub body_len: u64,
    /// [`Checksum`] value of the body bytes read so far.
    pub body_checksum: u64,
    /// Whether the body is still being read, ended, or failed.
    pub body_end: BodyEnd,
    /// Request trailers, if any arrived.
    pub trailers: Option<HeaderMap>,
}

impl SeenRequest {
    fn new(connection: usize, parts: &request::Parts) -> Self {
        Self {
            connection,
            version: parts.version,
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
            body_len: 0,
            body_checksum: Checksum::new().value(),
            body_end: BodyEnd::Reading,
            trailers: None,
        }
    }

    /// The request path.
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// The value of header `name`, if present and valid UTF-8 (first one if repeated).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Whether the body was read to its end.
    pub fn body_complete(&self) -> bool {
        self.body_end == BodyEnd::Complete
    }
}

/// Requests seen by one upstream, in arrival order.
#[derive(Debug, Default)]
pub(super) struct Log {
    entries: Mutex<Vec<SeenRequest>>,
}

impl Log {
    /// Records a request head; returns its index for later body updates.
    pub(super) fn push(&self, connection: usize, parts: &request::Parts) -> usize {
        let mut entries = self.lock();
        entries.push(SeenRequest::new(connection, parts));
        entries.len() - 1
    }

    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    pub(super) fn snapshot(&self) -> Vec<SeenRequest> {
        self.lock().clone()
    }

    pub(super) fn last(&self) -> Option<SeenRequest> {
        self.lock().last().cloned()
    }

    fn update(&self, index: usize, f: impl FnOnce(&mut SeenRequest)) {
        if let Some(entry) = self.lock().get_mut(index) {
            f(entry);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<SeenRequest>> {
        // A panicking test thread must not hide the log from the rest of the test.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A request body that reports progress into the [`Log`] as it is read.
#[derive(Debug)]
pub(super) struct Recorded<B: Body> {
    inner: B,
    log: Arc<Log>,
    index: usize,
    sum: Checksum,
    ended: bool,
}

impl<B: Body> Recorded<B> {
    pub(super) fn new(inner: B, log: Arc<Log>, index: usize) -> Self {
        let mut body = Self {
            inner,
            log,
            index,
            sum: Checksum::new(),
            ended: false,
        };
        if body.inner.is_end_stream() {
            // No body at all (a GET, an upgrade): complete without being polled.
            body.finish(BodyEnd::Complete);
        }
        body
    }

    fn finish(&mut self, end: BodyEnd) {
        self.ended = true;
        self.log.update(self.index, |seen| seen.body_end = end);
    }
}

impl<B> Body for Recorded<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: StdError,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.sum.update(data);
                    let (len, sum) = (this.sum.len(), this.sum.value());
                    this.log.update(this.index, |seen| {
                        seen.body_len = len;
                        seen.body_checksum = sum;
                    });
                } else if let Some(trailers) = frame.trailers_ref() {
                    let trailers = trailers.clone();
                    this.log
                        .update(this.index, |seen| seen.trailers = Some(trailers));
                }
            }
            Some(Err(e)) => this.finish(BodyEnd::Errored(e.to_string())),
            None => this.finish(BodyEnd::Complete),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: Body> Drop for Recorded<B> {
    fn drop(&mut self) {
        if !self.ended {
            // Readers may stop at `is_end_stream()` without polling the final `None`.
            let end = if self.inner.is_end_stream() {
                BodyEnd::Complete
            } else {
                BodyEnd::Errored("body dropped before its end".to_owned())
            };
            self.finish(end);
        }
    }
}
