//! HTTP/1.1 connection semantics of the downstream server, on raw sockets: pipelining,
//! `Expect: 100-continue`, HTTP/1.0 framing, unread request bodies and the field limit.

#![allow(clippy::unwrap_used)] // test helpers unwrap: a failure is the test failing

mod common;

use std::time::Duration;

use common::raw::read_until_closed;
use common::{TestProxy, cluster, config, single};
use strait_testkit::{Upstream, eventually, parse_status, raw_exchange, trace_init};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const LIMIT: Duration = Duration::from_secs(5);

/// Direct responses on `/direct`, everything else to the upstream.
fn with_direct(upstream: std::net::SocketAddr) -> String {
    config(
        "- match: { prefix: /direct }\n  direct_response: { status: 200, body: \"direct\" }\n- match: { prefix: / }\n  cluster: up\n",
        &cluster("up", "http1", &[upstream]),
    )
}

/// The status codes of the responses in `text`, in order.
fn statuses(text: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(text);
    text.match_indices("HTTP/1.")
        .filter_map(|(at, _)| parse_status(&text.as_bytes()[at..]))
        .collect()
}

/// Reads until `want` has arrived; fails after [`LIMIT`] or if the connection closes first.
async fn read_until(stream: &mut TcpStream, received: &mut Vec<u8>, want: &[u8]) {
    let deadline = Instant::now() + LIMIT;
    let mut buf = [0u8; 4096];
    while !received.windows(want.len()).any(|w| w == want) {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no {:?} within {LIMIT:?}: {:?}",
                    String::from_utf8_lossy(want),
                    String::from_utf8_lossy(received)
                )
            })
            .unwrap();
        assert!(
            n > 0,
            "closed early: {:?}",
            String::from_utf8_lossy(received)
        );
        received.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let _trace = trace_init();
    let upstream = Upstream::builder().name("a").http1_only().start().await;
    let proxy = TestProxy::start(&single("http1", &[upstream.addr()]), 1);
    let requests = b"GET /status/201 HTTP/1.1\r\nHost: a\r\n\r\nGET /status/202 HTTP/1.1\r\nHost: a\r\n\r\nGET /status/203 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let response = raw_exchange(proxy.addr(), requests, LIMIT).await.unwrap();
    assert_eq!(statuses(&response), [201, 202, 203]);
    assert_eq!(upstream.requests_seen(), 3);
}

#[tokio::test]
async fn expect_continue_gets_100_before_the_body_is_sent() {
    let _trace = trace_init();
    let upstream = Upstream::builder().name("a").http1_only().start().await;
    let proxy = TestProxy::start(&single("http1", &[upstream.addr()]), 1);
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut received = Vec::new();
    read_until(&mut stream, &mut received, b"HTTP/1.1 100 Continue\r\n\r\n").await;
    assert_eq!(
        statuses(&received),
        [100],
        "only the interim response before the body"
    );
    stream.write_all(b"hello").await.unwrap();
    received.extend(read_until_closed(&mut stream, LIMIT).await.0);
    assert_eq!(statuses(&received), [100, 200]);
    assert!(
        received.ends_with(b"\r\n\r\nhello"),
        "{:?}",
        String::from_utf8_lossy(&received)
    );
    assert_eq!(upstream.last_request().unwrap().body_len, 5);
}

#[tokio::test]
async fn an_http10_client_gets_a_close_delimited_body_of_unknown_length() {
    let _trace = trace_init();
    let upstream = Upstream::builder().name("a").http1_only().start().await;
    let proxy = TestProxy::start(&single("http1", &[upstream.addr()]), 1);
    // With `te: trailers`, `/trailers` answers with chunks (and trailers, which HTTP/1.0
    // cannot carry).
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream
        .write_all(
            b"GET /trailers HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\nTE: trailers\r\n\r\n",
        )
        .await
        .unwrap();
    let received = read_until_closed(&mut stream, LIMIT).await.0;
    let text = String::from_utf8_lossy(&received).to_ascii_lowercase();
    assert!(text.starts_with("http/1.0 200"), "{text}");
    assert!(text.contains("connection: close\r\n"), "{text}");
    assert!(!text.contains("transfer-encoding"), "{text}");
    assert!(!text.contains("content-length"), "{text}");
    assert!(text.ends_with("\r\n\r\nok"), "{text}");
}

#[tokio::test]
async fn an_http10_keep_alive_request_with_a_known_length_stays_open() {
    let _trace = trace_init();
    let upstream = Upstream::builder().name("a").http1_only().start().await;
    let proxy = TestProxy::start(&with_direct(upstream.addr()), 1);
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream
        .write_all(b"GET /direct HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let mut received = Vec::new();
    read_until(&mut stream, &mut received, b"direct").await;
    let text = String::from_utf8_lossy(&received).to_ascii_lowercase();
    assert!(text.contains("connection: keep-alive\r\n"), "{text}");
    assert!(text.contains("content-length: 6\r\n"), "{text}");
    // The same connection serves the next request.
    stream
        .write_all(b"GET /direct HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    received.extend(read_until_closed(&mut stream, LIMIT).await.0);
    assert_eq!(statuses(&received), [200, 200]);
}

#[tokio::test]
async fn a_request_body_left_unread_is_drained_if_here_and_closes_the_connection_if_not() {
    let _trace = trace_init();
    let upstream = Upstream::builder().name("a").http1_only().start().await;
    let proxy = TestProxy::start(&with_direct(upstream.addr()), 1);

    // The body came with the head: drained, and the connection serves the next request.
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream
        .write_all(b"POST /direct HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /direct HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let received = read_until_closed(&mut stream, LIMIT).await.0;
    assert_eq!(statuses(&received), [200, 200]);

    // The body is still to come: the connection closes after the response, so that the body's
    // bytes are never read as a request.
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream
        .write_all(b"POST /direct HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n")
        .await
        .unwrap();
    let received = read_until_closed(&mut stream, LIMIT).await.0;
    assert_eq!(statuses(&received), [200]);
    assert_eq!(upstream.requests_seen(), 0);
}

#[tokio::test]
async fn a_listener_may_allow_more_than_a_hundred_fields() {
    let _trace = trace_init();
    let upstream = Upstream::builder().name("a").http1_only().start().await;
    let yaml = with_direct(upstream.addr()).replacen(
        "    virtual_hosts:",
        "    limits: { max_headers: 150 }\n    virtual_hosts:",
        1,
    );
    let proxy = TestProxy::start(&yaml, 1);
    // Answered by the proxy: the test upstream (hyper) takes at most 100 fields.
    let head = |fields: usize| {
        let many: String = (0..fields).map(|i| format!("X-H{i}: v\r\n")).collect();
        format!("GET /direct HTTP/1.1\r\nHost: a\r\nConnection: close\r\n{many}\r\n").into_bytes()
    };
    // With Host and Connection: 150 fields in all, then 151.
    let response = raw_exchange(proxy.addr(), &head(148), LIMIT).await.unwrap();
    let text = String::from_utf8_lossy(&response).to_ascii_lowercase();
    assert_eq!(parse_status(&response), Some(200), "{text}");
    let response = raw_exchange(proxy.addr(), &head(149), LIMIT).await.unwrap();
    let text = String::from_utf8_lossy(&response).to_ascii_lowercase();
    assert_eq!(parse_status(&response), Some(431), "{text}");
    assert!(
        text.contains("x-strait-error: request_head_too_large"),
        "{text}"
    );
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_its_upstream_request() {
    let _trace = trace_init();
    let upstream = Upstream::builder().name("a").http1_only().start().await;
    let proxy = TestProxy::start(&single("http1", &[upstream.addr()]), 1);
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream
        .write_all(b"GET /delay/4000 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert!(
        eventually(LIMIT, || upstream.requests_seen() == 1).await,
        "the request never reached the upstream"
    );
    assert_eq!(upstream.connections_open(), 1);
    drop(stream);
    // The exchange is dropped and its upstream connection closed, long before the response
    // would have come (and the connection gone back to the pool).
    let dropped = Instant::now();
    assert!(
        eventually(LIMIT, || upstream.connections_open() == 0).await,
        "the upstream connection stayed open"
    );
    let took = dropped.elapsed();
    assert!(took < Duration::from_secs(2), "{took:?}");
}
