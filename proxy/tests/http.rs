//! HTTP/1.1 and h2c through the proxy to real upstreams: routing, header semantics, protocol
//! translation and workers.

#![allow(clippy::unwrap_used)] // test helpers unwrap: a failure is the test failing

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{TestProxy, body_text, cluster, config, raw, sample, scrape, single};
use http::{Request, Version};
use http_body_util::{BodyExt, Empty, Full};
use strait_testkit::{Upstream, h2c_client, http1_client, read_body_checksum, trace_init};
use tracing::info;

#[tokio::test]
async fn http1_and_h2c_downstream_reach_an_http1_upstream() {
    let _trace = trace_init();
    let upstream = Upstream::builder().name("a").start().await;
    let proxy = TestProxy::start(&single("http1", &[upstream.addr()]), 1);

    info!("HTTP/1.1 downstream");
    let client = http1_client(proxy.addr()).await.unwrap();
    let response = client.get("/hello?x=1").await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-upstream"], "a");
    assert_eq!(body_text(response).await, "a");

    info!("h2c downstream, translated to HTTP/1.1 upstream");
    let client = h2c_client(proxy.addr()).await.unwrap();
    let response = client.get("/h2?y=2").await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(body_text(response).await, "a");

    let seen = upstream.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].version, Version::HTTP_11);
    assert_eq!(seen[0].uri, "/hello?x=1");
    assert_eq!(
        seen[1].version,
        Version::HTTP_11,
        "h2 downstream goes upstream as HTTP/1.1"
    );
    assert_eq!(seen[1].uri, "/h2?y=2", "origin-form target upstream");
    let host = seen[1].header("host").expect("host set from :authority");
    assert_eq!(host, proxy.addr().to_string());
}

#[tokio::test]
async fn http1_downstream_reaches_an_http2_upstream_and_back() {
    let _trace = trace_init();
    let upstream = Upstream::builder().name("h2").h2c_only().start().await;
    let proxy = TestProxy::start(&single("http2", &[upstream.addr()]), 1);
    let client = http1_client(proxy.addr()).await.unwrap();
    for i in 0..3 {
        let request = Request::get(format!("/x/{i}"))
            .header("host", "svc.example")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = client.send(request).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), Version::HTTP_11);
        assert_eq!(body_text(response).await, "h2");
    }
    let seen = upstream.requests();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|r| r.version == Version::HTTP_2));
    assert_eq!(
        seen[0].uri.authority().map(|a| a.as_str()),
        Some("svc.example")
    );
    assert!(
        seen[0].header("host").is_none(),
        "Host moves into :authority on HTTP/2"
    );
    assert_eq!(
        upstream.connections_seen(),
        1,
        "one multiplexed upstream connection"
    );
}

#[tokio::test]
async fn downstream_protocol_cluster_follows_the_client() {
    let _trace = trace_init();
    let upstream = Upstream::builder().name("u").start().await;
    let proxy = TestProxy::start(&single("downstream", &[upstream.addr()]), 1);
    http1_client(proxy.addr())
        .await
        .unwrap()
        .get("/1")
        .await
        .unwrap();
    h2c_client(proxy.addr())
        .await
        .unwrap()
        .get("/2")
        .await
        .unwrap();
    let versions: Vec<_> = upstream.requests().iter().map(|r| r.version).collect();
    assert_eq!(versions, [Version::HTTP_11, Version::HTTP_2]);
}

#[tokio::test]
async fn proxy_headers_follow_rfc_9110() {
    let _trace = trace_init();
    let upstream = Upstream::builder().name("a").start().await;
    let proxy = TestProxy::start(&single("http1", &[upstream.addr()]), 1);
    let client = http1_client(proxy.addr()).await.unwrap();
    let request = Request::get("/")
        .header("host", "Shop.Example:8080")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic abc")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-end-to-end", "kept")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = client.send(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .get("connection")
            .is_none_or(|v| v != "x-hop")
    );

    let seen = upstream.last_request().unwrap();
    assert_eq!(
        seen.header("host"),
        Some("Shop.Example:8080"),
        "Host preserved"
    );
    for hop in ["x-hop", "keep-alive", "proxy-authorization"] {
        assert!(seen.header(hop).is_none(), "{hop} must not be forwarded");
    }
    assert_eq!(seen.header("x-end-to-end"), Some("kept"));
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    let id = seen.header("x-request-id").expect("request id generated");
    assert_eq!(id.len(), 36);

    let request = Request::get("/")
        .header("x-request-id", "given-id")
        .body(Empty::<Bytes>::new())
        .unwrap();
    client.send(request).await.unwrap();
    assert_eq!(
        upstream.last_request().unwrap().header("x-request-id"),
        Some("given-id")
    );
}

/// The fields the proxy adds reach the upstream once each, whether written into an HTTP/1.1
/// head as they are or put in the request's map first (a route condition reads one, a route
/// changes headers, an HTTP/2 upstream or downstream).
#[tokio::test]
async fn added_fields_reach_the_upstream_once_each_whichever_way_out() {
    let _trace = trace_init();
    let upstream = Upstream::builder().name("a").start().await;
    let routes = "- match: { prefix: /cond, headers: [{ name: x-request-id, present: true }] }\n  cluster: up\n\
                  - match: { prefix: /changed }\n  cluster: up\n  request_headers:\n    remove: [x-request-id]\n    set: { x-forwarded-proto: https }\n\
                  - match: { prefix: /no-host }\n  cluster: up\n  request_headers:\n    remove: [host]\n\
                  - match: { prefix: /to-h2 }\n  cluster: h2\n\
                  - match: { prefix: /plain }\n  cluster: up\n\
                  - match: { prefix: /h2c }\n  cluster: up\n";
    let clusters =
        cluster("up", "http1", &[upstream.addr()]) + &cluster("h2", "http2", &[upstream.addr()]);
    let proxy = TestProxy::start(&config(routes, &clusters), 1);
    let once = |path: &str, name: &str| -> Option<String> {
        let seen = upstream
            .requests()
            .into_iter()
            .rfind(|r| r.path() == path)?;
        let values: Vec<_> = seen.headers.get_all(name).iter().collect();
        assert!(
            values.len() <= 1,
            "{path}: {name} sent {} times",
            values.len()
        );
        values.first().map(|v| v.to_str().unwrap().to_owned())
    };
    let h1 = http1_client(proxy.addr()).await.unwrap();
    let h2 = h2c_client(proxy.addr()).await.unwrap();
    for path in ["/plain", "/cond", "/to-h2"] {
        let response = h1.get(path).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let response = h2.get("/h2c").await.unwrap();
    assert_eq!(response.status(), 200, "/h2c");
    let response = h1.get("/changed").await.unwrap();
    assert_eq!(response.status(), 200, "/changed");

    for path in ["/plain", "/cond", "/to-h2", "/h2c"] {
        assert_eq!(
            once(path, "x-request-id").map(|v| v.len()),
            Some(36),
            "{path}"
        );
        let traceparent = once(path, "traceparent").unwrap_or_default();
        assert!(
            traceparent.len() == 55 && traceparent.starts_with("00-"),
            "{path}: {traceparent}"
        );
        assert_eq!(
            once(path, "x-forwarded-for").as_deref(),
            Some("127.0.0.1"),
            "{path}"
        );
        assert_eq!(
            once(path, "x-forwarded-proto").as_deref(),
            Some("http"),
            "{path}"
        );
    }
    assert_eq!(
        once("/changed", "x-request-id"),
        None,
        "removed by the route"
    );
    assert_eq!(
        once("/changed", "x-forwarded-proto").as_deref(),
        Some("https"),
        "set by the route"
    );
    assert_eq!(
        once("/changed", "x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    // A route that removes Host: the HTTP/1.1 upstream request still gets one.
    let response = h1.get("/no-host").await.unwrap();
    assert_eq!(response.status(), 200, "/no-host");
    assert_eq!(once("/no-host", "host").as_deref(), Some("localhost"));
}

#[tokio::test]
async fn hop_by_hop_response_fields_stay_behind() {
    let _trace = trace_init();
    let upstream = raw::upstream(Some(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive, x-secret\r\n\
          x-secret: s\r\nkeep-alive: timeout=5\r\nproxy-connection: keep-alive\r\n\
          x-kept: k\r\n\r\nok",
    ))
    .await;
    let proxy = TestProxy::start(&single("http1", &[upstream]), 1);
    let client = http1_client(proxy.addr()).await.unwrap();
    let response = client.get("/").await.unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(headers["x-kept"], "k");
    for hop in ["x-secret", "keep-alive", "proxy-connection"] {
        assert!(!headers.contains_key(hop), "{hop} forwarded: {headers:?}");
    }
    assert!(
        headers
            .get_all("connection")
            .iter()
            .all(|v| v != "keep-alive, x-secret"),
        "{headers:?}"
    );
    assert_eq!(body_text(response).await, "ok");
}

/// Sends one raw request on a new connection and returns the response's status line; the whole
/// exchange is bounded by 10 s.
async fn raw_status_line(proxy: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(2).any(|w| w == b"\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before a status line: {head:?}");
            head.extend_from_slice(&buf[..n]);
        }
        head
    };
    let head = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("a response within 10 s");
    let text = String::from_utf8_lossy(&head);
    text.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn upstream_host_follows_the_request_target() {
    let _trace = trace_init();
    let upstream = Upstream::builder().name("a").start().await;
    let proxy = TestProxy::start(&single("http1", &[upstream.addr()]), 1);

    info!("absolute form: its authority, not the Host header, names the target");
    let status = raw_status_line(
        proxy.addr(),
        "GET http://abs.example:81/x HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let seen = upstream.last_request().unwrap();
    assert_eq!(seen.header("host"), Some("abs.example:81"));
    assert_eq!(seen.uri, "/x");

    info!("HTTP/1.0 without Host: the upstream request still gets one");
    let status = raw_status_line(proxy.addr(), "GET /y HTTP/1.0\r\n\r\n").await;
    assert!(status.starts_with("HTTP/1.0 200"), "{status}");
    let seen = upstream.last_request().unwrap();
    assert_eq!(seen.uri, "/y");
    assert_eq!(seen.header("host"), Some("localhost"));
}

#[tokio::test]
async fn routes_match_and_act() {
    let _trace = trace_init();
    let a = Upstream::builder().name("a").start().await;
    let b = Upstream::builder().name("b").start().await;
    let routes = r#"- match: { prefix: /api/, headers: [{ name: x-canary, exact: "1" }] }
  cluster: b
- match: { prefix: /api/ }
  cluster: a
  prefix_rewrite: /v2/
  host_rewrite: api.internal
  request_headers: { add: { x-added: "1" }, set: { x-set: "new" }, remove: [x-drop] }
  response_headers: { set: { x-route: api } }
- match: { path: /old }
  redirect: { path: /new, code: 308 }
- match: { path: /teapot, methods: [GET] }
  direct_response: { status: 418, body: "short and stout" }
- match: { prefix: /split }
  weighted_clusters: [{ cluster: a, weight: 75 }, { cluster: b, weight: 25 }]
- match: { prefix: /q, query: [{ name: v, exact: "2" }] }
  cluster: b
"#;
    let clusters = format!(
        "{}{}",
        cluster("a", "http1", &[a.addr()]),
        cluster("b", "http1", &[b.addr()])
    );
    let proxy = TestProxy::start(&config(routes, &clusters), 1);
    let client = http1_client(proxy.addr()).await.unwrap();

    info!("header match");
    let req = Request::get("/api/x")
        .header("x-canary", "1")
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(body_text(client.send(req).await.unwrap()).await, "b");

    info!("rewrites and header changes");
    let req = Request::get("/api/items?id=3")
        .header("x-set", "old")
        .header("x-drop", "1")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = client.send(req).await.unwrap();
    assert_eq!(response.headers()["x-route"], "api");
    assert_eq!(body_text(response).await, "a");
    let seen = a.last_request().unwrap();
    assert_eq!(seen.uri, "/v2/items?id=3");
    assert_eq!(seen.header("host"), Some("api.internal"));
    assert_eq!(seen.header("x-added"), Some("1"));
    assert_eq!(seen.header("x-set"), Some("new"));
    assert!(seen.header("x-drop").is_none());

    info!("redirect and direct response");
    let response = client.get("/old").await.unwrap();
    assert_eq!(response.status(), 308);
    assert_eq!(
        response.headers()["location"],
        format!("http://{}/new", proxy.addr())
    );
    let response = client.get("/teapot").await.unwrap();
    assert_eq!(response.status(), 418);
    assert_eq!(body_text(response).await, "short and stout");
    let response = client
        .send(
            Request::post("/teapot")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 404, "method condition excludes POST");

    info!("query match");
    assert_eq!(body_text(client.get("/q?v=2").await.unwrap()).await, "b");

    info!("weighted split within tolerance");
    let before_a = a.requests_seen();
    let before_b = b.requests_seen();
    for _ in 0..400 {
        client
            .get("/split")
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap();
    }
    let to_a = a.requests_seen() - before_a;
    let to_b = b.requests_seen() - before_b;
    assert_eq!(to_a + to_b, 400);
    assert!(
        (250..=350).contains(&to_a),
        "75% of 400 expected on a, got {to_a}"
    );
}

#[tokio::test]
async fn round_robin_spreads_over_endpoints_and_reuses_connections() {
    let _trace = trace_init();
    let a = Upstream::builder().name("a").http1_only().start().await;
    let b = Upstream::builder().name("b").http1_only().start().await;
    let proxy = TestProxy::start(&single("http1", &[a.addr(), b.addr()]), 1);
    let client = http1_client(proxy.addr()).await.unwrap();
    let mut order = Vec::new();
    for _ in 0..20 {
        order.push(body_text(client.get("/").await.unwrap()).await);
    }
    assert_eq!(order[..4], ["a", "b", "a", "b"]);
    assert_eq!(a.requests_seen(), 10);
    assert_eq!(b.requests_seen(), 10);
    assert_eq!(
        a.connections_seen(),
        1,
        "keep-alive connection reused after each full response"
    );
    assert_eq!(b.connections_seen(), 1);
}

/// Starts a proxy in front of an HTTP/1.1 upstream with `pool` as the cluster's pool, sends
/// `n` concurrent slow requests, and checks that each opened a connection that stays pooled.
async fn after_a_burst(n: usize, pool: &str) -> (Upstream, TestProxy) {
    let upstream = Upstream::builder().http1_only().start().await;
    let clusters = format!(
        "- name: up\n  pool: {pool}\n  endpoints: [\"{}\"]\n",
        upstream.addr()
    );
    let routes = "- match: { prefix: / }\n  cluster: up\n";
    let proxy = TestProxy::start(&config(routes, &clusters), 1);
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..n {
        let addr = proxy.addr();
        burst.spawn(async move {
            let client = http1_client(addr).await.unwrap();
            client.get("/delay/1000").await.unwrap().status()
        });
    }
    while let Some(status) = burst.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    assert_eq!(upstream.connections_seen(), n);
    // Only a connection idle for a whole purge interval can be purged: none is yet.
    assert_eq!(
        upstream.connections_open(),
        n,
        "the burst's connections stay pooled"
    );
    (upstream, proxy)
}

fn purged(scrape: &str) -> Option<f64> {
    sample(
        scrape,
        r#"strait_upstream_connections_purged_total{cluster="up"}"#,
    )
}

/// What a burst opened stays pooled (no `max_idle` cap below `max_connections` by default);
/// once the load is lower, each `purge_interval` closes half of the idle connections no request
/// needed, until what is left is what the load uses and one spare for `idle_timeout` to close.
#[tokio::test]
async fn a_burst_stays_pooled_until_the_purge_thins_it_to_the_load() {
    let _trace = trace_init();
    let (upstream, proxy) = after_a_burst(16, "{ purge_interval: 500ms }").await;
    // One request at a time: 16 → 9 → 5 → 3 → 2.
    let client = http1_client(proxy.addr()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for _ in 0..200_000 {
        if upstream.connections_open() <= 2 || tokio::time::Instant::now() > deadline {
            break;
        }
        assert_eq!(client.get("/").await.unwrap().status(), 200);
    }
    assert_eq!(
        upstream.connections_open(),
        2,
        "the one in use and one spare stay"
    );
    assert_eq!(
        upstream.connections_seen(),
        16,
        "no connection was opened again"
    );
    assert_eq!(purged(&scrape(&proxy).await), Some(14.0));
}

/// Without any request the worker's sweep still purges: 8 → 4 → 2 → 1.
#[tokio::test]
async fn an_idle_pool_is_purged_without_traffic() {
    let _trace = trace_init();
    let (upstream, proxy) = after_a_burst(8, "{ purge_interval: 500ms }").await;
    strait_testkit::assert_eventually!(
        upstream.connections_open() == 1,
        within = Duration::from_secs(20)
    );
    assert_eq!(purged(&scrape(&proxy).await), Some(7.0));
}

/// An idle connection past `idle_timeout` is closed by the sweep, not only at the next request.
#[tokio::test]
async fn an_expired_idle_connection_closes_without_traffic() {
    let _trace = trace_init();
    let (upstream, _proxy) = after_a_burst(2, "{ idle_timeout: 500ms }").await;
    strait_testkit::assert_eventually!(
        upstream.connections_open() == 0,
        within = Duration::from_secs(10)
    );
    assert_eq!(upstream.connections_seen(), 2);
}

#[tokio::test]
async fn two_workers_both_serve() {
    let _trace = trace_init();
    let upstream = Upstream::builder().name("a").start().await;
    let proxy = TestProxy::start(&single("http1", &[upstream.addr()]), 2);
    assert_eq!(proxy.server().workers(), 2);
    // The kernel hashes each connection to one of the SO_REUSEPORT sockets: with 64
    // connections the chance that one worker gets none is 2^-63.
    for _ in 0..64 {
        let client = http1_client(proxy.addr()).await.unwrap();
        let response = client.get("/").await.unwrap();
        assert_eq!(response.status(), 200);
        read_body_checksum(response.into_body()).await.unwrap();
    }
    let per_worker: Vec<u64> = proxy
        .server()
        .shards()
        .iter()
        .map(|s| s.requests.get())
        .collect();
    assert_eq!(per_worker.iter().sum::<u64>(), 64);
    assert!(
        per_worker.iter().all(|&n| n > 0),
        "every worker served: {per_worker:?}"
    );
}

#[tokio::test]
async fn trailers_pass_through_http2() {
    let _trace = trace_init();
    let upstream = Upstream::builder().name("t").h2c_only().start().await;
    let proxy = TestProxy::start(&single("http2", &[upstream.addr()]), 1);
    let client = h2c_client(proxy.addr()).await.unwrap();
    let response = client.get("/trailers").await.unwrap();
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers forwarded");
    assert_eq!(trailers["x-trailer"], "yes");
    assert_eq!(collected.to_bytes(), "ok");

    info!("request trailers reach the upstream");
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(vec![
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from_static(b"abc"))),
        Ok(http_body::Frame::trailers({
            let mut t = http::HeaderMap::new();
            t.insert("x-req-trailer", "1".parse().unwrap());
            t
        })),
    ]));
    let response = client
        .send(Request::post("/").body(body).unwrap())
        .await
        .unwrap();
    response.into_body().collect().await.unwrap();
    let seen = upstream.last_request().unwrap();
    assert_eq!(seen.body_len, 3);
    assert_eq!(
        seen.trailers
            .as_ref()
            .map(|t| t["x-req-trailer"].clone())
            .unwrap(),
        "1"
    );
    let _ = Full::new(Bytes::new());
}
