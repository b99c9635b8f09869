//! Abuse limits: slow and idle clients are cut off, HTTP/2 stream and reset limits hold, and
//! the upstream pool copes with an upstream that closes idle connections.

#![allow(clippy::unwrap_used)] // test helpers unwrap: a failure is the test failing

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::raw::{dribble_until_closed, read_response, read_until_closed};
use common::{TestProxy, config, single, with_limits};
use http_body_util::BodyExt;
use strait_testkit::{Upstream, h2c_client, http1_client, trace_init};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test]
async fn slow_request_head_is_cut_off_at_the_header_read_timeout() {
    let _trace = trace_init();
    let upstream = Upstream::start().await;
    let proxy = TestProxy::start(
        &with_limits("header_read_timeout: 300ms", upstream.addr()),
        1,
    );
    let mut slow = TcpStream::connect(proxy.addr()).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .await
        .unwrap();
    let (_, took) = read_until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(
        took >= Duration::from_millis(250),
        "closed too early: {took:?}"
    );
    assert_eq!(upstream.requests_seen(), 0);

    // Meanwhile a normal client is served.
    let client = http1_client(proxy.addr()).await.unwrap();
    assert_eq!(client.get("/").await.unwrap().status(), 200);
}

/// A head dribbled fast enough that the connection is never quiet (so never parked) is still
/// cut off at the header read timeout, and a kept-alive connection is not cut off while its
/// requests keep coming.
#[tokio::test]
async fn dribbled_head_on_a_busy_connection_is_cut_off_at_the_header_read_timeout() {
    let _trace = trace_init();
    let upstream = Upstream::start().await;
    let limits = "header_read_timeout: 1s, idle_timeout: 60s";
    let proxy = TestProxy::start(&with_limits(limits, upstream.addr()), 1);

    // Requests every 200 ms for twice the timeout on one connection: all answered.
    let mut steady = TcpStream::connect(proxy.addr()).await.unwrap();
    for n in 0..10 {
        steady
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let (head, _) = read_response(&mut steady).await;
        assert!(head.starts_with("http/1.1 200"), "request {n}: {head}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // One byte every 100 ms: never quiet for a tick.
    let mut slow = TcpStream::connect(proxy.addr()).await.unwrap();
    let closed = dribble_until_closed(&mut slow, Duration::from_millis(100)).await;
    assert!(
        closed >= Duration::from_millis(900),
        "cut off after {closed:?}"
    );
    assert!(closed < Duration::from_secs(3), "cut off after {closed:?}");
    assert_eq!(upstream.requests_seen(), 10);
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let _trace = trace_init();
    let upstream = Upstream::start().await;
    let limits = "idle_timeout: 300ms, header_read_timeout: 5s";
    let proxy = TestProxy::start(&with_limits(limits, upstream.addr()), 1);

    let h2 = h2c_client(proxy.addr()).await.unwrap();
    let response = h2.get("/").await.unwrap();
    response.into_body().collect().await.unwrap();
    let closed = strait_testkit::wait::within(Duration::from_secs(5), "idle h2 close", async {
        while !h2.is_closed() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    closed.await;

    let mut raw = TcpStream::connect(proxy.addr()).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (received, took) = read_until_closed(&mut raw, Duration::from_secs(5)).await;
    assert!(
        received.starts_with(b"HTTP/1.1 200"),
        "served before going idle"
    );
    assert!(
        took >= Duration::from_millis(250),
        "closed too early: {took:?}"
    );
}

#[tokio::test]
async fn http2_advertises_its_stream_limit_and_survives_a_reset_flood() {
    let _trace = trace_init();
    let upstream = Upstream::builder().name("u").start().await;
    let proxy = TestProxy::start(&single("http1", &[upstream.addr()]), 1);
    let tcp = TcpStream::connect(proxy.addr()).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    // One exchange first, so the server's SETTINGS have arrived.
    let request = http::Request::get(format!("http://{}/", proxy.addr()))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    assert_eq!(
        client.current_max_send_streams(),
        100,
        "max concurrent streams from SETTINGS"
    );

    // Rapid reset (CVE-2023-44487): open streams and cancel them at once, far past the limit.
    let mut opened = 0;
    for _ in 0..2_000 {
        let Ok(ready) = tokio::time::timeout(Duration::from_secs(2), client.clone().ready()).await
        else {
            break;
        };
        let Ok(mut ready) = ready else {
            break;
        };
        let request = http::Request::get(format!("http://{}/delay/200", proxy.addr()))
            .body(())
            .unwrap();
        let Ok((_response, mut stream)) = ready.send_request(request, false) else {
            break;
        };
        stream.send_reset(h2::Reason::CANCEL);
        opened += 1;
        client = ready;
    }
    // Sends are buffered by the client, so the count says little; what matters is that the
    // proxy ends the connection (an idle, well-behaved connection would stay open for 60 s).
    let ended = tokio::time::timeout(Duration::from_secs(5), driver).await;
    let outcome = ended
        .expect("the proxy closes a connection that floods resets")
        .unwrap();
    let err = outcome.expect_err("closed with an error");
    assert!(
        err.is_go_away() || err.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) || err.is_io(),
        "GOAWAY or a closed connection, got {err:?} after {opened} streams"
    );
    info_outcome(&err);
    assert!(
        upstream.requests_seen() < opened,
        "cancelled streams do not all reach the upstream ({} of {opened})",
        upstream.requests_seen()
    );

    // Other clients are unaffected.
    let h2 = h2c_client(proxy.addr()).await.unwrap();
    assert_eq!(h2.get("/").await.unwrap().status(), 200);
}

fn info_outcome(err: &h2::Error) {
    tracing::info!(error = ?err, "reset flood ended the connection");
}

/// An HTTP/1.1 upstream that answers each connection's first request with keep-alive, then
/// closes the connection shortly after, as servers with a short keep-alive timeout do.
async fn closing_upstream() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_pooled_connection_closed_by_the_upstream_is_not_used() {
    let _trace = trace_init();
    let (addr, _task) = closing_upstream().await;
    let proxy = TestProxy::start(&single("http1", &[addr]), 1);
    let client = http1_client(proxy.addr()).await.unwrap();
    for i in 0..5 {
        let response = client.get("/").await.unwrap();
        assert_eq!(response.status(), 200, "request {i}");
        assert_eq!(
            response.into_body().collect().await.unwrap().to_bytes(),
            Bytes::from_static(b"ok")
        );
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
}

#[tokio::test]
async fn routes_fall_back_to_404_for_unknown_hosts() {
    let _trace = trace_init();
    let upstream = Upstream::start().await;
    let yaml = config(
        "- match: { prefix: / }\n  cluster: up\n",
        &common::cluster("up", "http1", &[upstream.addr()]),
    )
    .replace("domains: [\"*\"]", "domains: [\"known.example\"]");
    let proxy = TestProxy::start(&yaml, 1);
    let client = http1_client(proxy.addr()).await.unwrap();
    let request = http::Request::get("/")
        .header("host", "Known.Example:80")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(
        client.send(request).await.unwrap().status(),
        200,
        "host match ignores case and port"
    );
    let request = http::Request::get("/")
        .header("host", "other.example")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(client.send(request).await.unwrap().status(), 404);
}

#[tokio::test]
async fn shutdown_closes_idle_http2_connections_promptly() {
    let _trace = trace_init();
    let upstream = Upstream::start().await;
    let proxy = TestProxy::start(&single("http1", &[upstream.addr()]), 1);
    let h2 = h2c_client(proxy.addr()).await.unwrap();
    h2.get("/")
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    let started = std::time::SystemTime::now();
    tokio::task::spawn_blocking(move || proxy.stop())
        .await
        .unwrap();
    let took = started.elapsed().unwrap();
    assert!(
        took < Duration::from_secs(1),
        "drain waited {took:?} for an idle HTTP/2 connection"
    );
    assert!(h2.is_closed());
}
