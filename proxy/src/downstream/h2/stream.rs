//! One stream of an HTTP/2 connection: the request body as the upstream side reads it, and the
//! task that runs the exchange and writes the response's frames.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::Response;
use http::header::{self, HeaderMap};
use http_body::{Body as _, Frame, SizeHint};

use super::{STREAM_WINDOW, Shared, State};
use crate::body::ResponseBody;
use crate::http2::frame::{self, Reason, flag, kind};

/// The body of a request on an HTTP/2 stream.
#[derive(Debug)]
pub struct Body {
    shared: Rc<Shared>,
    id: u32,
    /// `content-length`, less what was read.
    left: Option<u64>,
}

impl Body {
    pub(super) fn new(shared: &Rc<Shared>, id: u32, length: Option<u64>) -> Self {
        Self {
            shared: Rc::clone(shared),
            id,
            left: length,
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
        let shared = Rc::clone(&self.shared);
        let mut state = shared.state.borrow_mut();
        let state = &mut *state;
        let closed = state.closed;
        let Some(stream) = state.stream(self.id) else {
            // Removed: either read to its end before, or reset.
            return Poll::Ready(Some(Err(io::Error::other("HTTP/2 stream reset"))));
        };
        if let Some(reason) = stream.reset {
            return Poll::Ready(Some(Err(io::Error::other(format!(
                "HTTP/2 stream reset: {reason}"
            )))));
        }
        if let Some(chunk) = stream.chunks.pop_front() {
            let n = chunk.len();
            stream.recv_unacked += u32::try_from(n).unwrap_or(u32::MAX);
            if stream.recv_unacked >= STREAM_WINDOW / 2 && !stream.recv_closed && !closed {
                let increment = stream.recv_unacked;
                stream.recv_window += i64::from(increment);
                stream.recv_unacked = 0;
                frame::put_window_update(&mut state.out.tail, self.id, increment);
                state.wake_writer();
            }
            state.give_back_connection(n);
            if let Some(left) = &mut self.left {
                *left = left.saturating_sub(n as u64);
            }
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(trailers) = stream.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        if stream.recv_closed {
            return Poll::Ready(None);
        }
        if closed {
            return Poll::Ready(Some(Err(io::Error::other("HTTP/2 connection closed"))));
        }
        if !stream
            .body_waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            stream.body_waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let Ok(mut state) = self.shared.state.try_borrow_mut() else {
            return false;
        };
        state.stream(self.id).is_some_and(|stream| {
            stream.recv_closed
                && stream.chunks.is_empty()
                && stream.trailers.is_none()
                && stream.reset.is_none()
        })
    }

    fn size_hint(&self) -> SizeHint {
        match self.left {
            Some(n) => SizeHint::with_exact(n),
            None if self.is_end_stream() => SizeHint::with_exact(0),
            None => SizeHint::default(),
        }
    }
}

/// Runs a stream's exchange and writes its response: HEADERS, DATA as the client's windows
/// allow, trailers. Cancelled (dropped) when the stream is reset.
pub(super) async fn respond(
    shared: Rc<Shared>,
    id: u32,
    exchange: impl Future<Output = Result<Response<ResponseBody>, std::convert::Infallible>>,
    head_request: bool,
) {
    let response = match exchange.await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let (parts, mut body) = response.into_parts();
    let end = head_request || body.is_end_stream();
    {
        let mut state = shared.state.borrow_mut();
        if state.closed || state.stream(id).is_none() {
            return;
        }
        // A length is added where the body has one to state: not for HEAD, 1xx, 204 or 304
        // (RFC 9110 §8.6: a 204 has none; a 304's would be the unsent body's).
        let status = parts.status;
        let bodiless = status.is_informational()
            || status == http::StatusCode::NO_CONTENT
            || status == http::StatusCode::NOT_MODIFIED;
        let exact = if head_request || bodiless {
            None
        } else if end {
            Some(0)
        } else {
            body.size_hint().exact()
        };
        send_head(&mut state, id, parts.status, &parts.headers, exact, end);
        if state.spare_maps.len() < super::SPARE_MAPS
            && let Some(map) = crate::upstream::h1::spare_map(parts.headers)
        {
            state.spare_maps.push(map);
        }
        if end {
            finish(&mut state, id);
            return;
        }
    }
    loop {
        let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await else {
            let mut state = shared.state.borrow_mut();
            if state.stream(id).is_some() {
                frame::put_head(&mut state.out.tail, 0, kind::DATA, flag::END_STREAM, id);
                finish(&mut state, id);
            }
            return;
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(err) => {
                tracing::debug!(stream = id, error = %err, "response body failed");
                shared.conn.stats.http2_proxy_resets.inc();
                shared.state.borrow_mut().reset(id, Reason::INTERNAL_ERROR);
                return;
            }
        };
        match frame.into_data() {
            Ok(data) => {
                let end = body.is_end_stream();
                if send_data(&shared, id, data, end).await.is_err() {
                    return;
                }
                if end {
                    let mut state = shared.state.borrow_mut();
                    finish(&mut state, id);
                    return;
                }
            }
            Err(frame) => {
                let Ok(trailers) = frame.into_trailers() else {
                    continue; // a frame kind this proxy does not know
                };
                let mut state = shared.state.borrow_mut();
                if state.stream(id).is_some() {
                    send_trailers(&mut state, id, &trailers);
                    finish(&mut state, id);
                }
                return;
            }
        }
    }
}

/// The stream's response ended: it is removed once the request has ended too; a request still
/// coming is not wanted any more (RFC 9113 §8.1: RST_STREAM NO_ERROR).
fn finish(state: &mut State, id: u32) {
    let Some(stream) = state.stream(id) else {
        return;
    };
    stream.send_closed = true;
    stream.task = None;
    if !stream.recv_closed {
        stream.recv_closed = true;
        frame::put_reset(&mut state.out.tail, id, Reason::NO_ERROR);
    }
    state.client_resets = state.client_resets.saturating_sub(1);
    state.remove_if_done(id);
    state.wake_writer();
}

/// Sends `data` as DATA frames as the windows allow; `Err` when the stream or connection is
/// gone.
async fn send_data(shared: &Shared, id: u32, mut data: Bytes, end: bool) -> Result<(), ()> {
    loop {
        let n = poll_fn(|cx| reserve(shared, id, data.len(), cx)).await?;
        let part = data.split_to(n);
        let mut state = shared.state.borrow_mut();
        let last = data.is_empty();
        let flags = if last && end { flag::END_STREAM } else { 0 };
        frame::put_head(&mut state.out.tail, part.len(), kind::DATA, flags, id);
        state.out.payload(part);
        state.wake_writer();
        if last {
            return Ok(());
        }
    }
}

/// Takes up to `want` bytes (at least one, or zero when `want` is) of the stream's and the
/// connection's windows, at most a frame's worth.
fn reserve(shared: &Shared, id: u32, want: usize, cx: &Context<'_>) -> Poll<Result<usize, ()>> {
    let mut state = shared.state.borrow_mut();
    let state = &mut *state;
    if state.closed {
        return Poll::Ready(Err(()));
    }
    let conn_window = state.send_window;
    let max_frame = state.peer_max_frame;
    let out_full = state.out.len() >= super::OUT_HIGH;
    let Some(stream) = state.stream(id) else {
        return Poll::Ready(Err(()));
    };
    if stream.reset.is_some() {
        return Poll::Ready(Err(()));
    }
    if want == 0 {
        return Poll::Ready(Ok(0));
    }
    if stream.send_window <= 0 {
        stream.send_waker = Some(cx.waker().clone());
        return Poll::Pending;
    }
    if conn_window <= 0 || out_full {
        state.blocked.push(cx.waker().clone());
        return Poll::Pending;
    }
    let n = usize::try_from(stream.send_window.min(conn_window))
        .unwrap_or(usize::MAX)
        .min(max_frame)
        .min(want);
    stream.send_window -= n as i64;
    state.send_window -= n as i64;
    Poll::Ready(Ok(n))
}

/// Encodes a response head into HEADERS (and CONTINUATION) frames.
fn send_head(
    state: &mut State,
    id: u32,
    status: http::StatusCode,
    headers: &HeaderMap,
    exact: Option<u64>,
    end: bool,
) {
    let mut block = BytesMut::with_capacity(128);
    state.encoder.begin(&mut block);
    state.encoder.status(status.as_u16(), &mut block);
    let mut dated = false;
    let mut length = false;
    for (name, value) in headers {
        match *name {
            header::CONNECTION | header::TRANSFER_ENCODING | header::UPGRADE => continue,
            header::TE if value.as_bytes() != b"trailers" => continue,
            header::DATE => dated = true,
            header::CONTENT_LENGTH => length = true,
            _ if name.as_str() == "keep-alive" || name.as_str() == "proxy-connection" => continue,
            _ => {}
        }
        state.encoder.field(
            name.as_str().as_bytes(),
            value.as_bytes(),
            value.is_sensitive(),
            &mut block,
        );
    }
    if !dated {
        crate::downstream::h1::with_date(|date| {
            state.encoder.field(b"date", date, false, &mut block);
        });
    }
    if !length && let Some(n) = exact {
        let digits = itoa_u64(n);
        state
            .encoder
            .field(b"content-length", digits.text(), false, &mut block);
    }
    put_block(
        state,
        id,
        kind::HEADERS,
        if end { flag::END_STREAM } else { 0 },
        block.freeze(),
    );
    state.wake_writer();
}

/// Encodes trailers into a HEADERS frame with END_STREAM.
fn send_trailers(state: &mut State, id: u32, trailers: &HeaderMap) {
    let mut block = BytesMut::with_capacity(64);
    state.encoder.begin(&mut block);
    for (name, value) in trailers {
        state.encoder.field(
            name.as_str().as_bytes(),
            value.as_bytes(),
            value.is_sensitive(),
            &mut block,
        );
    }
    put_block(state, id, kind::HEADERS, flag::END_STREAM, block.freeze());
}

/// Writes a header block as one HEADERS frame, or HEADERS and CONTINUATION frames when it is
/// larger than the client's largest frame.
fn put_block(state: &mut State, id: u32, first: u8, flags: u8, mut block: Bytes) {
    let max = state.peer_max_frame;
    let mut kind = first;
    let mut flags = flags;
    loop {
        let part = block.split_to(block.len().min(max));
        let last = block.is_empty();
        let end_headers = if last { flag::END_HEADERS } else { 0 };
        frame::put_head(
            &mut state.out.tail,
            part.len(),
            kind,
            flags | end_headers,
            id,
        );
        state.out.payload(part);
        if last {
            return;
        }
        kind = kind::CONTINUATION;
        flags = 0; // END_STREAM is the HEADERS frame's alone
    }
}

/// The decimal digits of a number, without an allocation.
struct Digits {
    buf: [u8; 20],
    start: usize,
}

impl Digits {
    fn text(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

fn itoa_u64(mut n: u64) -> Digits {
    let mut buf = [0; 20];
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return Digits { buf, start };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_decimal() {
        assert_eq!(itoa_u64(0).text(), b"0");
        assert_eq!(itoa_u64(1024).text(), b"1024");
        assert_eq!(itoa_u64(u64::MAX).text(), b"18446744073709551615");
    }
}
