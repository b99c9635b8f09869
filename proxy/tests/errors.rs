//! Every error status the proxy makes, each with a body and a header naming the cause, and an
//! upstream reset mid-response ends the downstream response with an error, never a hang.

#![allow(clippy::unwrap_used)] // test helpers unwrap: a failure is the test failing

mod common;

use std::time::Duration;

use common::{TestProxy, config, raw, sample, scrape, single};
use http_body_util::BodyExt;
use strait_testkit::{
    BlackHole, ClosedPort, ResetServer, Upstream, h2c_client, http1_client, trace_init,
};

async fn expect_error(proxy: &TestProxy, path: &str, status: u16, kind: &str) {
    let client = http1_client(proxy.addr()).await.unwrap();
    let response = client.get(path).await.unwrap();
    assert_eq!(response.status(), status, "{path}");
    assert_eq!(response.headers()["x-strait-error"], kind);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(!body.is_empty(), "a short body explains the error");
}

#[tokio::test]
async fn no_route_is_404() {
    let _trace = trace_init();
    let upstream = Upstream::start().await;
    let routes = "- match: { prefix: /only }\n  cluster: up\n";
    let proxy = TestProxy::start(
        &config(routes, &common::cluster("up", "http1", &[upstream.addr()])),
        1,
    );
    expect_error(&proxy, "/else", 404, "no_route").await;
    assert_eq!(upstream.requests_seen(), 0);
}

#[tokio::test]
async fn connect_refused_is_502() {
    let _trace = trace_init();
    let closed = ClosedPort::new();
    let proxy = TestProxy::start(&single("http1", &[closed.addr()]), 1);
    expect_error(&proxy, "/", 502, "connect_failed").await;
}

#[tokio::test]
async fn upstream_reset_after_the_request_is_502() {
    let _trace = trace_init();
    let proxy = TestProxy::start(&single("http1", &[raw::upstream(None).await]), 1);
    expect_error(&proxy, "/", 502, "upstream_reset").await;
}

#[tokio::test]
async fn invalid_upstream_responses_are_502() {
    let _trace = trace_init();
    for answer in [
        &b"NOT HTTP AT ALL\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\nhello",
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n",
    ] {
        let proxy = TestProxy::start(&single("http1", &[raw::upstream(Some(answer)).await]), 1);
        expect_error(&proxy, "/", 502, "upstream_invalid_response").await;
        let resets = sample(
            &scrape(&proxy).await,
            r#"strait_upstream_resets_total{cluster="up"}"#,
        );
        assert_eq!(resets, Some(1.0), "counted against the cluster");
    }
}

#[tokio::test]
async fn upstream_reset_at_accept_is_502() {
    let _trace = trace_init();
    let reset = ResetServer::start().await;
    let proxy = TestProxy::start(&single("http1", &[reset.addr()]), 1);
    let client = http1_client(proxy.addr()).await.unwrap();
    let response = client.get("/").await.unwrap();
    assert_eq!(response.status(), 502);
    // The reset may land before the connect completes or after the request is written.
    let kind = response.headers()["x-strait-error"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        ["connect_failed", "upstream_reset"].contains(&kind.as_str()),
        "{kind}"
    );
}

/// Each request gets its own wait of the route timeout (the worker's one timer is re-armed for
/// every deadline), on HTTP/1.1 and HTTP/2 upstreams alike.
#[tokio::test]
async fn silent_upstream_is_504_after_the_route_timeout() {
    let _trace = trace_init();
    let hole = BlackHole::start().await;
    let routes = "- match: { prefix: / }\n  cluster: up\n  timeout: 300ms\n";
    for protocol in ["http1", "http2"] {
        let proxy = TestProxy::start(
            &config(routes, &common::cluster("up", protocol, &[hole.addr()])),
            1,
        );
        for _ in 0..2 {
            let started = tokio::time::Instant::now();
            expect_error(&proxy, "/", 504, "upstream_timeout").await;
            let waited = started.elapsed();
            assert!(
                waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
                "{protocol}: 504 after {waited:?}"
            );
        }
    }
}

#[tokio::test]
async fn upstream_reset_mid_body_ends_the_downstream_response_with_an_error() {
    let _trace = trace_init();
    let upstream = Upstream::builder().name("r").http1_only().start().await;
    let proxy = TestProxy::start(&single("http1", &[upstream.addr()]), 1);
    for client in [
        http1_client(proxy.addr()).await.unwrap(),
        h2c_client(proxy.addr()).await.unwrap(),
    ] {
        let response = client.get("/reset-mid-body").await.unwrap();
        assert_eq!(response.status(), 200);
        let read =
            tokio::time::timeout(Duration::from_secs(5), response.into_body().collect()).await;
        let result = read.expect("the body ends (with an error), it does not hang");
        assert!(
            result.is_err(),
            "a truncated body must surface as an error downstream"
        );
    }
}

#[tokio::test]
async fn full_connection_pool_is_503() {
    // A validated cluster always has endpoints; one whose connection pool is full answers 503.
    let _trace = trace_init();
    let hole = BlackHole::start().await;
    let clusters = format!(
        "- name: up\n  connect_timeout: 1s\n  pool: {{ max_connections: 1 }}\n  endpoints: [\"{}\"]\n",
        hole.addr()
    );
    let routes = "- match: { prefix: / }\n  cluster: up\n  timeout: 2s\n";
    let proxy = TestProxy::start(&config(routes, &clusters), 1);
    let addr = proxy.addr();
    let first = tokio::spawn(async move {
        let client = http1_client(addr).await.unwrap();
        client.get("/").await.unwrap().status()
    });
    strait_testkit::assert_eventually!(hole.connections_seen() == 1);
    expect_error(&proxy, "/", 503, "pool_full").await;
    assert_eq!(first.await.unwrap(), 504);
}

/// A listening socket that never accepts, with its accept queue already full: the kernel drops
/// further SYNs, so a connect to it hangs until the connecting side gives up.
fn full_backlog() -> (socket2::Socket, Vec<std::net::TcpStream>) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))
        {
            fillers.push(stream);
        }
    }
    (socket, fillers)
}

#[tokio::test]
async fn connect_timeout_is_504() {
    let _trace = trace_init();
    let (socket, _fillers) = full_backlog();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let clusters = format!("- name: up\n  connect_timeout: 250ms\n  endpoints: [\"{addr}\"]\n");
    let proxy = TestProxy::start(
        &config("- match: { prefix: / }\n  cluster: up\n", &clusters),
        1,
    );
    expect_error(&proxy, "/", 504, "connect_timeout").await;
}
