//! The HTTP/1.1 upstream client against raw sockets on loopback.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request};
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::upstream::OpenGuard;

const LIMIT: Duration = Duration::from_secs(10);

/// A connection to a raw upstream socket, and that socket.
async fn pair() -> (Connection, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    let slot = OpenGuard(Rc::new(Cell::new(1)));
    (Connection::new(Socket::tcp(client), slot), server)
}

/// Reads one request head (up to the empty line) from the upstream side.
async fn read_head(server: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0_u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(LIMIT, server.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 1, "connection closed within the head: {head:?}");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

fn get(path: &str) -> Request<RequestBody> {
    Request::get(path)
        .header("host", "example")
        .header("x-foo", "bar")
        .body(RequestBody::default())
        .unwrap()
}

fn post(body: &'static [u8]) -> Request<RequestBody> {
    let first = (!body.is_empty()).then(|| Frame::data(Bytes::from_static(body)));
    Request::post("/submit")
        .header("host", "example")
        .body(RequestBody::new(first, None))
        .unwrap()
}

/// Sends `outgoing` on a new connection whose upstream reads the request head, writes
/// `answer` and then, if `close`, closes the connection (else hands it back); returns the head
/// the upstream received and the outcome, all within [`LIMIT`].
async fn send_to(
    outgoing: Outgoing,
    answer: &'static [u8],
    close: bool,
) -> (String, Result<Response<Body>, Failure>, Option<TcpStream>) {
    let (conn, mut server) = pair().await;
    let upstream = async move {
        let head = read_head(&mut server).await;
        server.write_all(answer).await.unwrap();
        (head, (!close).then_some(server))
    };
    let ((head, server), result) = tokio::time::timeout(
        LIMIT,
        futures_util::future::join(upstream, outgoing.send(conn)),
    )
    .await
    .unwrap();
    (head, result, server)
}

/// Sends `req`, has the upstream answer `response` and keep the connection open.
async fn exchange(
    req: Request<RequestBody>,
    response: &'static [u8],
) -> (String, Result<Response<Body>, Failure>, TcpStream) {
    let (head, result, server) =
        send_to(Outgoing::new(req, &Added::default()), response, false).await;
    (head, result, server.unwrap())
}

/// The body's data and trailers, read to the end.
async fn read_body(body: &mut Body) -> io::Result<(Vec<u8>, Option<HeaderMap>)> {
    let mut data = Vec::new();
    let mut trailers = None;
    while let Some(frame) = tokio::time::timeout(LIMIT, body.frame()).await.unwrap() {
        let frame = frame?;
        match frame.into_data() {
            Ok(bytes) => data.extend_from_slice(&bytes),
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    Ok((data, trailers))
}

#[tokio::test]
async fn get_goes_in_origin_form_and_a_length_delimited_response_is_read() {
    let (head, result, _server) = exchange(
        get("/a?b=1"),
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-up: 1\r\nx-up: 2\r\n\r\nhello",
    )
    .await;
    assert_eq!(
        head,
        "GET /a?b=1 HTTP/1.1\r\nhost: example\r\nx-foo: bar\r\n\r\n"
    );
    let response = result.unwrap();
    assert_eq!(response.status(), 200);
    let ups: Vec<_> = response.headers().get_all("x-up").iter().collect();
    assert_eq!(ups, ["1", "2"]);
    let mut body = response.into_body();
    assert_eq!(read_body(&mut body).await.unwrap().0, b"hello");
    assert!(body.take_reusable().is_some());
}

#[tokio::test]
async fn request_bodies_carry_their_length() {
    let (head, result, mut server) = exchange(
        post(b"ping"),
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(
        head,
        "POST /submit HTTP/1.1\r\nhost: example\r\ncontent-length: 4\r\n\r\n"
    );
    let mut sent = [0_u8; 4];
    server.read_exact(&mut sent).await.unwrap();
    assert_eq!(&sent, b"ping");
    assert!(result.unwrap().into_body().take_reusable().is_some());

    let (head, _, _) = exchange(post(b""), b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
    assert!(head.ends_with("content-length: 0\r\n\r\n"), "{head}");
}

#[tokio::test]
async fn chunked_responses_are_decoded_with_their_trailers() {
    let (_, result, _server) = exchange(
        get("/"),
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
          5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: abc\r\n\r\n",
    )
    .await;
    let mut body = result.unwrap().into_body();
    let (data, trailers) = read_body(&mut body).await.unwrap();
    assert_eq!(data, b"hello world");
    assert_eq!(trailers.unwrap()["x-checksum"], "abc");
    assert!(body.take_reusable().is_some());
}

#[tokio::test]
async fn broken_chunked_framing_fails_the_body() {
    for response in [
        &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    ] {
        let (_, result, _server) = exchange(get("/"), response).await;
        let mut body = result.unwrap().into_body();
        let err = read_body(&mut body).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{response:?}");
        assert!(body.take_reusable().is_none());
    }
}

#[tokio::test]
async fn interim_responses_are_skipped() {
    let (_, result, _server) = exchange(
        get("/"),
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n\
          HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
    )
    .await;
    let response = result.unwrap();
    assert_eq!(response.status(), 201);
    assert!(response.headers().get("link").is_none());
    assert_eq!(read_body(&mut response.into_body()).await.unwrap().0, b"ok");
}

#[tokio::test]
async fn a_body_up_to_the_close_is_read_and_the_connection_not_reused() {
    let (_, result, mut server) = exchange(get("/"), b"HTTP/1.1 200 OK\r\n\r\nabc").await;
    server.shutdown().await.unwrap();
    let mut body = result.unwrap().into_body();
    assert_eq!(read_body(&mut body).await.unwrap().0, b"abc");
    assert!(body.take_reusable().is_none());
}

#[tokio::test]
async fn bodiless_responses_end_at_their_head() {
    let head = Request::head("/")
        .header("host", "example")
        .body(RequestBody::default())
        .unwrap();
    for (req, response) in [
        (head, &b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n"[..]),
        (get("/"), b"HTTP/1.1 204 No Content\r\n\r\n"),
        (
            get("/"),
            b"HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\n\r\n",
        ),
    ] {
        let (_, result, _server) = exchange(req, response).await;
        let mut body = result.unwrap().into_body();
        assert!(http_body::Body::is_end_stream(&body));
        assert_eq!(read_body(&mut body).await.unwrap().0, b"");
        assert!(body.take_reusable().is_some(), "{response:?}");
    }
}

#[tokio::test]
async fn connections_the_upstream_will_close_are_not_reused() {
    for response in [
        &b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\nx"[..],
        b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
    ] {
        let (_, result, _server) = exchange(get("/"), response).await;
        let mut body = result.unwrap().into_body();
        assert_eq!(read_body(&mut body).await.unwrap().0, b"x");
        assert!(body.take_reusable().is_none(), "{response:?}");
    }
    let (_, result, _server) = exchange(
        get("/"),
        b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\nx",
    )
    .await;
    let mut body = result.unwrap().into_body();
    read_body(&mut body).await.unwrap();
    assert!(body.take_reusable().is_some());
}

#[tokio::test]
async fn invalid_response_heads_are_refused() {
    for (response, reason) in [
        (&b"HTTP/1.1 2x0 OK\r\n\r\n"[..], "malformed response head"),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n",
            "invalid content-length",
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "invalid content-length",
        ),
        (
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "unexpected 101 switching protocols",
        ),
    ] {
        let (_, result, _server) = exchange(get("/"), response).await;
        match result {
            Err(Failure::Invalid(got)) => assert_eq!(got, reason),
            other => panic!("{response:?}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_close_before_any_response_lets_only_idempotent_bodiless_requests_go_again() {
    for (req, replayable) in [(get("/"), true), (post(b"data"), false), (post(b""), false)] {
        let (_, result, _) = send_to(Outgoing::new(req, &Added::default()), b"", true).await;
        match result {
            Err(Failure::Unanswered(outgoing, _)) if replayable => {
                // It goes again, whole, on another connection.
                let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                let (head, result, _server) = send_to(*outgoing, ok, false).await;
                assert!(head.starts_with("GET / HTTP/1.1\r\n"), "{head}");
                assert_eq!(result.unwrap().status(), 200);
            }
            Err(Failure::Closed(_)) if !replayable => {}
            other => panic!("replayable {replayable}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_body_cut_short_is_an_error() {
    let (_, result, server) = exchange(
        get("/"),
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc",
    )
    .await;
    drop(server);
    let mut body = result.unwrap().into_body();
    let err = read_body(&mut body).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    assert!(body.take_reusable().is_none());
}

#[tokio::test]
async fn an_idle_connection_stops_being_quiet_when_the_upstream_closes_it() {
    let (mut conn, server) = pair().await;
    assert!(conn.is_quiet());
    drop(server);
    let deadline = tokio::time::Instant::now() + LIMIT;
    while conn.is_quiet() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the close was never seen"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_close_after_an_interim_response_is_not_unanswered() {
    let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
    let (_, result, _) = send_to(Outgoing::new(get("/"), &Added::default()), interim, true).await;
    match result {
        Err(Failure::Closed(_)) => {}
        other => panic!("the upstream answered (100), so the GET must not go again: {other:?}"),
    }
}

/// The final head parsed from `raw`, which must be complete.
fn parsed(raw: &[u8], head_request: bool) -> Result<Head, &'static str> {
    let mut buf = BytesMut::from(raw);
    match parse_head(&mut buf, &mut Names::default(), head_request, 0, &mut None)? {
        Some(Parsed::Final(head)) => Ok(head),
        _ => panic!("no final head in {raw:?}"),
    }
}

#[test]
fn a_response_map_has_the_room_asked_for_and_no_more_than_its_fields_otherwise() {
    let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nx-a: 1\r\n\r\n";
    for (room, enough) in [(0, false), (HTTP1_HEADER_ROOM, true)] {
        let mut buf = BytesMut::from(&raw[..]);
        let Ok(Some(Parsed::Final(head))) =
            parse_head(&mut buf, &mut Names::default(), false, room, &mut None)
        else {
            panic!("no final head");
        };
        assert_eq!(head.headers.len(), 2);
        assert_eq!(
            head.headers.capacity() >= HTTP1_HEADER_ROOM,
            enough,
            "room {room}: capacity {}",
            head.headers.capacity()
        );
    }
}

#[test]
fn fields_of_this_hop_are_read_for_framing_and_reuse_and_not_carried_on() {
    let head = parsed(
        b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive\r\nKeep-Alive: timeout=5\r\n\
          Content-Length: 3, 3\r\nx-kept: 1\r\n\r\n",
        false,
    )
    .unwrap();
    assert_eq!(head.framing, BodyFraming::Length(3));
    assert!(head.keep_alive);
    assert_eq!(head.headers.len(), 2, "{:?}", head.headers);
    assert_eq!(head.headers["x-kept"], "1");
    assert_eq!(head.headers["content-length"], "3, 3");

    // A Connection field naming other fields stays, for the forwarding path to act on.
    let head = parsed(
        b"HTTP/1.1 200 OK\r\nconnection: close\r\nconnection: x-hop, keep-alive\r\n\
          x-hop: 1\r\ncontent-length: 0\r\n\r\n",
        false,
    )
    .unwrap();
    assert!(!head.keep_alive);
    assert_eq!(head.headers["connection"], "x-hop, keep-alive");
    assert_eq!(head.headers.get_all("connection").iter().count(), 1);

    // HTTP/1.0 is reused only when asked; the last transfer coding decides chunked framing,
    // and Transfer-Encoding with Content-Length closes the connection after the response.
    let head = parsed(b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", false).unwrap();
    assert!(!head.keep_alive);
    let head = parsed(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\ntransfer-encoding: x, chunked\r\n\r\n",
        false,
    )
    .unwrap();
    assert_eq!(head.framing, BodyFraming::Chunked(Chunk::Size));
    assert!(head.keep_alive);
    let head = parsed(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\ncontent-length: 5\r\n\r\n",
        false,
    )
    .unwrap();
    assert_eq!(head.framing, BodyFraming::Close);
    assert!(!head.keep_alive);
    let head = parsed(b"HTTP/1.1 200 OK\r\n\r\n", false).unwrap();
    assert_eq!(head.framing, BodyFraming::Close);
    let head = parsed(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n", true).unwrap();
    assert_eq!(head.framing, BodyFraming::Empty);
    assert!(matches!(
        parsed(
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            false
        ),
        Err("invalid content-length")
    ));
    assert!(matches!(
        parsed(b"HTTP/1.1 200 OK\r\ncontent-length:\r\n\r\n", false),
        Err("invalid content-length")
    ));
}

#[tokio::test]
async fn the_room_for_a_response_head_follows_the_last_response() {
    let (mut conn, mut server) = pair().await;
    assert_eq!(
        conn.head_room, READ_MIN,
        "a new connection starts with the most"
    );
    let long = "v".repeat(3000);
    for (answer, room) in [
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nx".to_owned(),
            1024,
        ),
        (
            format!("HTTP/1.1 200 OK\r\nx-long: {long}\r\ncontent-length: 0\r\n\r\n"),
            4096,
        ),
        (
            format!("HTTP/1.1 200 OK\r\nx-long: {long}{long}{long}\r\n\r\n"),
            READ_MIN,
        ),
    ] {
        server.write_all(answer.as_bytes()).await.unwrap();
        let head =
            tokio::time::timeout(LIMIT, poll_fn(|cx| conn.poll_head(cx, false, 0, &mut None)))
                .await
                .unwrap();
        assert!(head.is_ok(), "{answer:.40}");
        assert_eq!(conn.head_room, room, "after {} bytes", answer.len());
        conn.idle();
    }
}

#[test]
fn the_field_set_of_a_parsed_response_is_exactly_that_of_its_map() {
    for lines in crate::headers::field_line_sets() {
        let raw = format!("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n{lines}\r\n");
        let head = parsed(raw.as_bytes(), false).unwrap();
        assert_eq!(head.fields, FieldSet::of_map(&head.headers), "{raw:?}");
    }
}

#[tokio::test]
async fn a_connection_whose_upstream_answered_before_the_whole_request_is_not_reused() {
    // More than the socket buffers take: the request is still going out when the answer comes.
    const SIZE: usize = 32 << 20;
    let body: &'static [u8] = Box::leak(vec![b'x'; SIZE].into_boxed_slice());
    let (conn, mut server) = pair().await;
    let upstream = tokio::spawn(async move {
        read_head(&mut server).await;
        server
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await
            .unwrap();
        let mut rest = vec![0_u8; SIZE];
        server.read_exact(&mut rest).await.unwrap();
        server
    });
    let outgoing = Outgoing::new(post(body), &Added::default());
    let response = tokio::time::timeout(LIMIT, outgoing.send(conn))
        .await
        .unwrap()
        .unwrap();
    let mut body = response.into_body();
    let (data, _) = read_body(&mut body).await.unwrap();
    assert_eq!(data, b"ok");
    // The rest of the request goes out as the body is polled; the upstream reads all of it
    // and keeps the connection open, and still it is not reused.
    tokio::time::timeout(
        LIMIT,
        poll_fn(|cx| {
            let _ = body.poll_body(cx);
            if body.writer.is_none() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }),
    )
    .await
    .unwrap();
    let _server = tokio::time::timeout(LIMIT, upstream)
        .await
        .unwrap()
        .unwrap();
    assert!(body.take_reusable().is_none());
}
