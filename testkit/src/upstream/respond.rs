//! What the upstream answers, by path (the table is in the [module docs](super)).

use std::convert::Infallible;
use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream;
use http::header::{CONTENT_LENGTH, TE, TRAILER};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version, request};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Empty, Full, StreamBody};
use hyper::body::Incoming;

use super::record::Recorded;
use super::server::Shared;
use super::websocket;
use crate::body::{CHUNK_SIZE, fill_pattern, pattern_body};
use crate::checksum::{Checksum, to_hex};

pub(super) type BoxError = Box<dyn StdError + Send + Sync>;
pub(super) type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// How long `/reset-mid-body` waits between its data and the abort, so the data is flushed
/// to the socket first.
const RESET_FLUSH_DELAY: Duration = Duration::from_millis(20);

/// Handles one request. An `Err` makes hyper drop the exchange without a response.
pub(super) async fn respond(
    shared: Arc<Shared>,
    connection: usize,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, BoxError> {
    let (mut parts, body) = req.into_parts();
    let index = shared.log.push(connection, &parts);
    let body = Recorded::new(body, shared.log.clone(), index);
    let path = parts.uri.path().to_owned();
    if path == "/abort" || shared.take_abort() {
        return Err(format!("upstream {} aborts {path} on purpose", shared.name).into());
    }
    let mut response = if websocket::is_upgrade(&parts.headers) {
        websocket::accept(&shared, &mut parts)
    } else {
        by_path(&shared, &path, &parts, body).await?
    };
    response
        .headers_mut()
        .insert("x-upstream", shared.name_header.clone());
    Ok(response)
}

async fn by_path(
    shared: &Shared,
    path: &str,
    parts: &request::Parts,
    body: Recorded<Incoming>,
) -> Result<Response<ResponseBody>, BoxError> {
    if path == "/echo" {
        return Ok(echo(parts, body));
    }
    drain(body).await?;
    let response = if path == "/trailers" {
        trailers(parts)
    } else if path == "/reset-mid-body" {
        reset_mid_body()
    } else if let Some(n) = path.strip_prefix("/bytes/") {
        match n.parse::<u64>() {
            Ok(n) => reply(
                StatusCode::OK,
                pattern_body(n).map_err(never).boxed_unsync(),
            ),
            Err(_) => bad_request("/bytes/N needs a byte count"),
        }
    } else if let Some(n) = path.strip_prefix("/status/") {
        match n
            .parse::<u16>()
            .ok()
            .and_then(|n| StatusCode::from_u16(n).ok())
        {
            Some(status) if !status.is_informational() => reply(status, empty()),
            _ => bad_request("/status/N needs a status code of 200 or more"),
        }
    } else if let Some(ms) = path.strip_prefix("/delay/") {
        match ms.parse::<u64>() {
            Ok(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                reply(StatusCode::OK, full(shared.name.clone()))
            }
            Err(_) => bad_request("/delay/MS needs milliseconds"),
        }
    } else {
        reply(StatusCode::OK, full(shared.name.clone()))
    };
    Ok(response)
}

/// Reads a request body to its end (the [`Recorded`] wrapper logs it on the way).
async fn drain(mut body: Recorded<Incoming>) -> Result<(), BoxError> {
    while let Some(frame) = body.frame().await {
        frame?;
    }
    Ok(())
}

/// Whether the response may carry trailers: always on HTTP/2; on HTTP/1.1 only if the client
/// sent `te: trailers` (RFC 9110 §6.5.1), which is also when hyper sends them.
fn trailers_allowed(parts: &request::Parts) -> bool {
    parts.version == Version::HTTP_2
        || parts
            .headers
            .get_all(TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
}

fn echo(parts: &request::Parts, body: Recorded<Incoming>) -> Response<ResponseBody> {
    let send_trailers = trailers_allowed(parts);
    let mut response = reply(
        StatusCode::OK,
        Echo {
            inner: body,
            sum: Checksum::new(),
            request_trailers: None,
            send_trailers,
            // HTTP/1.1 trailers need chunked encoding, which an exact size would prevent.
            hide_size: send_trailers && parts.version != Version::HTTP_2,
            done: false,
        }
        .boxed_unsync(),
    );
    if send_trailers {
        response
            .headers_mut()
            .insert(TRAILER, HeaderValue::from_static("x-checksum, x-body-len"));
    }
    response
}

fn trailers(parts: &request::Parts) -> Response<ResponseBody> {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-trailer", HeaderValue::from_static("yes"));
    let frames = stream::iter([
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"ok"))),
        Ok(Frame::trailers(trailers)),
    ]);
    let mut response = reply(
        StatusCode::OK,
        StreamBody::new(frames).map_err(never).boxed_unsync(),
    );
    if trailers_allowed(parts) {
        response
            .headers_mut()
            .insert(TRAILER, HeaderValue::from_static("x-trailer"));
    }
    response
}

/// 64 KiB of a promised 1 MiB, then a body error: hyper closes the HTTP/1.1 connection or
/// resets the HTTP/2 stream.
fn reset_mid_body() -> Response<ResponseBody> {
    let mut chunk = vec![0; CHUNK_SIZE];
    fill_pattern(0, &mut chunk);
    let frames = stream::iter([Ok(Frame::data(Bytes::from(chunk)))]).chain(stream::once(async {
        tokio::time::sleep(RESET_FLUSH_DELAY).await;
        Err::<Frame<Bytes>, BoxError>("upstream aborts /reset-mid-body on purpose".into())
    }));
    let mut response = reply(StatusCode::OK, StreamBody::new(frames).boxed_unsync());
    response
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(16 * CHUNK_SIZE as u64));
    response
}

/// The request body, streamed back frame by frame, then the checksum trailers.
#[derive(Debug)]
struct Echo {
    inner: Recorded<Incoming>,
    sum: Checksum,
    request_trailers: Option<HeaderMap>,
    send_trailers: bool,
    hide_size: bool,
    done: bool,
}

impl Body for Echo {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        this.sum.update(&data);
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Err(frame) => this.request_trailers = frame.into_trailers().ok(),
                },
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
                None => {
                    this.done = true;
                    if !this.send_trailers {
                        return Poll::Ready(None);
                    }
                    let mut trailers = this.request_trailers.take().unwrap_or_default();
                    let sum = HeaderValue::try_from(to_hex(this.sum.value()))?;
                    trailers.insert("x-checksum", sum);
                    trailers.insert("x-body-len", HeaderValue::from(this.sum.len()));
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        if self.hide_size {
            SizeHint::new()
        } else {
            self.inner.size_hint()
        }
    }
}

pub(super) fn reply(status: StatusCode, body: ResponseBody) -> Response<ResponseBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
}

pub(super) fn empty() -> ResponseBody {
    Empty::new().map_err(never).boxed_unsync()
}

fn full(body: impl Into<Bytes>) -> ResponseBody {
    Full::new(body.into()).map_err(never).boxed_unsync()
}

pub(super) fn bad_request(why: &'static str) -> Response<ResponseBody> {
    reply(StatusCode::BAD_REQUEST, full(why))
}

fn never(never: Infallible) -> BoxError {
    match never {}
}
