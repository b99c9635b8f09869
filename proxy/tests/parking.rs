//! Idle HTTP/1.1 connections are parked (hyper's state dropped, the socket kept) and come back
//! for the next request without losing a byte or a limit.

#![allow(clippy::unwrap_used)] // test helpers unwrap: a failure is the test failing

mod common;

use std::time::Duration;

use common::raw::{dribble_until_closed, read_response};
use common::{TestProxy, single, with_limits};
use strait_testkit::{Upstream, trace_init};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Longer than the proxy takes to park a quiet connection (at most twice its 250 ms period).
const PARKED: Duration = Duration::from_millis(700);

#[tokio::test]
async fn parked_keep_alive_connection_serves_the_next_request() {
    let _trace = trace_init();
    let upstream = Upstream::start().await;
    let proxy = TestProxy::start(&single("http1", &[upstream.addr()]), 1);
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    for round in 0..3 {
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let (head, _) = read_response(&mut client).await;
        assert!(head.starts_with("http/1.1 200"), "round {round}: {head}");
        tokio::time::sleep(PARKED).await;
    }
    assert_eq!(upstream.requests_seen(), 3);
}

#[tokio::test]
async fn request_head_split_across_a_park_arrives_whole() {
    let _trace = trace_init();
    let upstream = Upstream::start().await;
    let proxy = TestProxy::start(&single("http1", &[upstream.addr()]), 1);
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    read_response(&mut client).await;
    // Half a head, a pause long enough to park, then the rest.
    client
        .write_all(b"GET /second HTTP/1.1\r\nHo")
        .await
        .unwrap();
    tokio::time::sleep(PARKED).await;
    client.write_all(b"st: a\r\n\r\n").await.unwrap();
    let (head, _) = read_response(&mut client).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(upstream.requests_seen(), 2);
}

#[tokio::test]
async fn dribbled_head_is_cut_off_despite_parking() {
    let _trace = trace_init();
    let upstream = Upstream::start().await;
    let limits = "header_read_timeout: 1s, idle_timeout: 60s";
    let proxy = TestProxy::start(&with_limits(limits, upstream.addr()), 1);
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    // One byte every 600 ms: each pause is long enough to park the connection.
    let closed = dribble_until_closed(&mut client, Duration::from_millis(600)).await;
    assert!(closed < Duration::from_secs(4), "cut off after {closed:?}");
    assert_eq!(upstream.requests_seen(), 0);
}

#[tokio::test]
async fn parked_connection_is_closed_at_the_idle_timeout() {
    let _trace = trace_init();
    let upstream = Upstream::start().await;
    let limits = "idle_timeout: 1s, header_read_timeout: 30s";
    let proxy = TestProxy::start(&with_limits(limits, upstream.addr()), 1);
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    read_response(&mut client).await;
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
        .await
        .expect("closed within 5 s")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() >= Duration::from_millis(500));
}

#[tokio::test]
async fn head_parked_after_a_long_request_is_not_cut_off_early() {
    let _trace = trace_init();
    let upstream = Upstream::start().await;
    let limits = "header_read_timeout: 2s, idle_timeout: 60s";
    let proxy = TestProxy::start(&with_limits(limits, upstream.addr()), 1);
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    // The first exchange outlasts the header read timeout (counted from when its connection
    // state was built); the next head's wait must start after it, not with it.
    client
        .write_all(b"GET /delay/2500 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut client).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    client.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
    tokio::time::sleep(PARKED).await;
    client.write_all(b"st: a\r\n\r\n").await.unwrap();
    let (head, _) = read_response(&mut client).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
}
