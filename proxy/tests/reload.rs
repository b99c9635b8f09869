//! Config changes under load: routes, clusters and endpoints swapped 100 times, listeners added
//! and removed, a bad config rejected, all without a failed request or a reset connection,
//! while a WebSocket tunnel and a gRPC bidi stream opened before stay alive.

#![allow(clippy::unwrap_used)] // test helpers unwrap: a failure is the test failing

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::TestProxy;
use common::load::Load;
use common::streams::LongLived;
use http_body_util::BodyExt;
use strait_config::Format;
use strait_testkit::{GrpcEcho, Upstream, http1_client, trace_init};

/// The backends every version of the config points at, in different ways.
struct Backends {
    a: Upstream,
    b: Upstream,
    c: Upstream,
    ws: Upstream,
    grpc: GrpcEcho,
}

impl Backends {
    async fn start() -> Self {
        Self {
            a: Upstream::builder().name("a").start().await,
            b: Upstream::builder().name("b").start().await,
            c: Upstream::builder().name("c").start().await,
            ws: Upstream::builder().name("ws").start().await,
            grpc: GrpcEcho::start().await,
        }
    }

    /// Version `v` of the config: the catch-all route, the clusters' endpoints, a per-version
    /// route and a per-version cluster all change with `v`; the listener stays.
    fn config(&self, v: usize) -> String {
        let (a, b, c) = (self.a.addr(), self.b.addr(), self.c.addr());
        let main_action = match v % 3 {
            0 => "cluster: up-a".to_owned(),
            1 => "cluster: up-b".to_owned(),
            _ => format!(
                "weighted_clusters: [{{ cluster: up-a, weight: {} }}, {{ cluster: extra-{v}, weight: 1 }}]",
                1 + v % 5
            ),
        };
        let up_a = if v.is_multiple_of(2) {
            format!("[\"{a}\"]")
        } else {
            format!("[\"{a}\", {{ address: \"{b}\", weight: {} }}]", 1 + v % 4)
        };
        format!(
            r#"listeners:
  - name: main
    address: 127.0.0.1:0
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: {{ prefix: /strait.test.Echo/ }}
            cluster: grpc
          - match: {{ prefix: /chat }}
            cluster: ws
          - match: {{ prefix: /version }}
            direct_response: {{ status: 200, body: "v{v}" }}
          - match: {{ prefix: / }}
            {main_action}
clusters:
  - name: up-a
    endpoints: {up_a}
    lb: {lb}
  - name: up-b
    endpoints: ["{b}", "{c}"]
  - name: extra-{v}
    endpoints: ["{c}"]
  - name: ws
    endpoints: ["{ws}"]
  - name: grpc
    protocol: http2
    endpoints: ["{grpc}"]
"#,
            lb = if v % 4 == 3 {
                "least_request"
            } else {
                "round_robin"
            },
            ws = self.ws.addr(),
            grpc = self.grpc.addr(),
        )
    }
}

async fn get_text(addr: SocketAddr, path: &str) -> (u16, String) {
    let client = http1_client(addr).await.unwrap();
    let response = client.get(path).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_swaps_under_load_fail_no_request_and_keep_tunnels() {
    let _trace = trace_init();
    let backends = Backends::start().await;
    let proxy = TestProxy::start(&backends.config(0), 2);
    let addr = proxy.addr();

    // Long-lived streams opened before any change.
    let mut streams = LongLived::open(addr).await;
    let mut exchanged = 0u8;
    streams.echo(exchanged).await;

    let load = Load::start(addr, "/", 8, true);
    load.wait_for(200).await;
    let admin = proxy.admin();
    for v in 1..=100 {
        if v == 50 {
            // A bad config under load: rejected, every problem listed, nothing changes.
            let bad = backends
                .config(v)
                .replace("cluster: ws", "cluster: missing-cluster");
            let err = proxy.server().reload(&bad, Format::Yaml).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("missing-cluster"), "{text}");
            assert!(text.contains("E0203"), "{text}");
            assert_eq!(
                proxy.server().version(),
                50,
                "the rejected config did not apply"
            );
        }
        let applied = if v.is_multiple_of(10) {
            // Every tenth through the admin API, as an operator would.
            let (status, body) = put_config(admin, &backends.config(v)).await;
            assert_eq!(status, 200, "{body}");
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            json["version"].as_u64().unwrap()
        } else {
            proxy
                .server()
                .reload(&backends.config(v), Format::Yaml)
                .unwrap()
                .version
        };
        assert_eq!(applied, v as u64 + 1);
        if v.is_multiple_of(25) {
            let (status, body) = get_text(addr, "/version").await;
            assert_eq!((status, body.as_str()), (200, format!("v{v}").as_str()));
            exchanged += 1;
            streams.echo(exchanged).await;
        }
        load.wait_for(10).await;
    }
    load.wait_for(200).await;
    let report = load.finish().await;
    report.assert_no_failure("100 swaps");
    assert!(
        report.ok >= 1_000,
        "the load was real: {} requests",
        report.ok
    );
    assert_eq!(
        report.closed_cleanly, 0,
        "no connection was closed by a swap"
    );

    exchanged += 1;
    streams.echo(exchanged).await;
    streams.close().await;
    // Every backend that some version pointed at took traffic.
    for (name, upstream) in [("a", &backends.a), ("b", &backends.b), ("c", &backends.c)] {
        assert!(
            upstream.requests_seen() > 0,
            "backend {name} saw no request"
        );
    }
    let metrics = admin_get(admin, "/metrics").await;
    assert!(
        metrics.contains("strait_config_reloads_total{result=\"applied\"} 100"),
        "{metrics}"
    );
    assert!(
        metrics.contains("strait_config_reloads_total{result=\"rejected\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("strait_config_version 101"), "{metrics}");
}

async fn put_config(admin: SocketAddr, yaml: &str) -> (u16, String) {
    let client = http1_client(admin).await.unwrap();
    let request = http::Request::put("/config")
        .header("content-type", "application/yaml")
        .body(http_body_util::Full::new(Bytes::from(yaml.to_owned())))
        .unwrap();
    let response = client.send(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn admin_get(admin: SocketAddr, path: &str) -> String {
    get_text(admin, path).await.1
}

fn two_listeners(upstream: SocketAddr, names: [&str; 2]) -> String {
    let listener = |name: &str| {
        format!(
            "  - name: {name}\n    address: 127.0.0.1:0\n    virtual_hosts:\n      - name: all\n        domains: [\"*\"]\n        routes:\n          - match: {{ prefix: / }}\n            cluster: up\n"
        )
    };
    format!(
        "listeners:\n{}{}clusters:\n  - name: up\n    endpoints: [\"{upstream}\"]\n",
        listener(names[0]),
        listener(names[1])
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_added_and_removed_under_load() {
    let _trace = trace_init();
    let upstream = Upstream::start().await;
    let proxy = TestProxy::start(&two_listeners(upstream.addr(), ["main", "old"]), 2);
    let main = proxy.server().addr("main").unwrap();
    let old = proxy.server().addr("old").unwrap();

    let on_main = Load::start(main, "/", 6, true);
    // Clients of the listener going away: they keep their connection until the proxy closes
    // it, and do not come back.
    let on_old = Load::start(old, "/", 4, false);
    on_main.wait_for(300).await;
    on_old.wait_for(100).await;

    replace_old_with_new(&proxy, upstream.addr());
    let new = proxy.server().addr("new").unwrap();
    assert!(proxy.server().addr("old").is_none());

    let on_new = Load::start(new, "/", 4, true);
    on_new.wait_for(300).await;
    on_main.wait_for(300).await;

    let refused = strait_testkit::eventually(Duration::from_secs(5), || {
        std::net::TcpStream::connect_timeout(&old, Duration::from_millis(200)).is_err()
    })
    .await;
    assert!(refused, "the removed listener no longer accepts");

    let old_report = on_old.finish().await;
    old_report.assert_no_failure("removed listener");
    assert_eq!(
        old_report.closed_cleanly, 4,
        "each connection of the removed listener ended with Connection: close"
    );
    for (name, load) in [("main", on_main), ("new", on_new)] {
        let report = load.finish().await;
        report.assert_no_failure(name);
        assert_eq!(report.closed_cleanly, 0, "{name}: no connection closed");
    }

    // Taking a port that is in use rejects the whole config; the old one keeps serving.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let conflicting = two_listeners(upstream.addr(), ["main", "new"]).replace(
        "name: new\n    address: 127.0.0.1:0",
        &format!("name: new\n    address: {}", taken.local_addr().unwrap()),
    );
    let (status, body) = put_config(proxy.admin(), &conflicting).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("could not bind"), "{body}");
    assert_eq!(proxy.server().addr("new"), Some(new));
    let (status, _) = get_text(new, "/").await;
    assert_eq!(status, 200);
}

/// Reloads `two_listeners(upstream, ["main", "old"])` into `["main", "new"]`; returns once the
/// workers stopped accepting on `old` (its connections drain).
fn replace_old_with_new(proxy: &TestProxy, upstream: SocketAddr) {
    let applied = proxy
        .server()
        .reload(&two_listeners(upstream, ["main", "new"]), Format::Yaml)
        .unwrap();
    assert_eq!(applied.added, vec!["new".to_owned()]);
    assert_eq!(applied.removed, vec!["old".to_owned()]);
}

/// A proxy with listeners `main` and `old`, and a connection to `old` that the proxy accepted
/// and that sent nothing yet, returned once `old` was removed by a reload (the reload returns
/// once the worker stopped accepting on it: its connections are draining).
async fn quiet_connection_to_a_removed_listener() -> (TestProxy, Upstream, tokio::net::TcpStream) {
    let upstream = Upstream::start().await;
    let proxy = TestProxy::start(&two_listeners(upstream.addr(), ["main", "old"]), 1);
    let old = proxy.server().addr("old").unwrap();
    let stream = tokio::net::TcpStream::connect(old).await.unwrap();

    let series = r#"strait_downstream_connections_active{listener="old",worker="0"}"#;
    let mut accepted = false;
    for _ in 0..500 {
        if common::sample(&common::scrape(&proxy).await, series) == Some(1.0) {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(accepted, "the proxy accepted the connection");

    replace_old_with_new(&proxy, upstream.addr());
    (proxy, upstream, stream)
}

/// A connection accepted before its listener is removed, whose client sends its first request
/// only after the removal (a client slow to write, or one handed over by io_uring's cancelled
/// multishot accept): the request is answered, with `Connection: close`, not cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_its_first_request_after_its_listener_is_removed_is_answered() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let _trace = trace_init();
    let (_proxy, _upstream, mut stream) = quiet_connection_to_a_removed_listener().await;
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: old\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("the proxy answers and closes within 10 s");
    let text = String::from_utf8_lossy(&response).to_ascii_lowercase();
    assert!(read.is_ok(), "read failed: {read:?} after {text:?}");
    assert!(text.starts_with("http/1.1 200 "), "answered: {text:?}");
    assert!(
        text.contains("\r\nconnection: close\r\n"),
        "closes: {text:?}"
    );
}

/// The same over HTTP/2 (prior knowledge): the connection gets GOAWAY at once and ends as soon
/// as its streams are done, not at the drain deadline (2 s in tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_that_starts_after_its_listener_is_removed_gets_goaway_at_once() {
    let _trace = trace_init();
    let (_proxy, _upstream, stream) = quiet_connection_to_a_removed_listener().await;
    let started = tokio::time::Instant::now();
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) = tokio::time::timeout(
        Duration::from_secs(5),
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io),
    )
    .await
    .expect("the client's handshake within 5 s")
    .unwrap();
    let mut connection = tokio::spawn(connection);
    let request = http::Request::get("http://old/")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    // Sent with the preface, the request is normally served; a GOAWAY read before it was sent
    // refuses it instead (the client may retry elsewhere). Either way it is not cut midway.
    let exchange = async {
        if let Ok(response) = sender.send_request(request).await {
            assert_eq!(response.status(), 200);
            response.into_body().collect().await.unwrap();
        }
    };
    // The sender stays: with it dropped the client would end the connection itself.
    let (exchanged, ended) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(5), exchange),
        tokio::time::timeout(Duration::from_secs(1), &mut connection),
    );
    assert!(
        ended.is_ok(),
        "the connection still open {:?} after the drain began",
        started.elapsed()
    );
    if exchanged.is_err() {
        // The connection ended, which is what the proxy owes. The one hang seen here (CI)
        // waited in the client with no connection left open: hyper's client may not report a
        // request that the GOAWAY refused before it went out.
        tracing::info!("the client never reported the refused request");
    }
    drop(sender);
}

#[tokio::test]
async fn put_config_applies_or_lists_every_problem() {
    let _trace = trace_init();
    let upstream = Upstream::start().await;
    let first = common::single("http1", &[upstream.addr()]);
    let proxy = TestProxy::start(&first, 1);
    let admin = proxy.admin();

    let bad = "listeners:\n  - name: test\n    address: 127.0.0.1:0\n    virtual_hosts:\n      - name: all\n        domains: [\"*\"]\n        routes:\n          - match: { prefix: / }\n            cluster: nope\n          - match: { prefix: /x }\n            direct_response: { status: 999 }\nclusters: []\n";
    let (status, body) = put_config(admin, bad).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("2 problems"), "{body}");
    assert!(body.contains("routes[0].cluster"), "{body}");
    assert!(body.contains("routes[1].direct_response.status"), "{body}");
    assert_eq!(proxy.server().version(), 1);
    let (status, _) = get_text(proxy.addr(), "/").await;
    assert_eq!(status, 200, "the previous config keeps serving");

    let json = serde_json::json!({
        "listeners": [{
            "name": "test",
            "address": "127.0.0.1:0",
            "virtual_hosts": [{
                "name": "all",
                "domains": ["*"],
                "routes": [{ "match": { "prefix": "/" }, "direct_response": { "status": 203, "body": "json" } }]
            }]
        }]
    });
    let client = http1_client(admin).await.unwrap();
    let request = http::Request::put("/config")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(Bytes::from(json.to_string())))
        .unwrap();
    let response = client.send(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let (status, body) = get_text(proxy.addr(), "/").await;
    assert_eq!((status, body.as_str()), (203, "json"));
    let shown = admin_get(admin, "/config?format=json").await;
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["version"], 2);
    assert_eq!(shown["config"], json);
}

#[tokio::test]
async fn shutdown_turns_unready_then_drains_after_the_pre_drain_delay() {
    let _trace = trace_init();
    let upstream = Upstream::start().await;
    let config =
        strait_config::parse(&common::single("http1", &[upstream.addr()]), Format::Yaml).unwrap();
    let options = strait_proxy::Options {
        workers: 1,
        drain_timeout: Duration::from_secs(5),
        admin: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        pre_drain_delay: Duration::from_millis(1500),
        io: common::io_mode(),
        ..strait_proxy::Options::default()
    };
    let server = strait_proxy::Server::start(config, &options).unwrap();
    let addr = server.addrs()[0].1;
    let admin = server.admin_addr().unwrap();
    let client = http1_client(addr).await.unwrap();
    assert_eq!(client.get("/").await.unwrap().status(), 200);

    let stopping = std::thread::spawn(move || server.shutdown());
    let unready = strait_testkit::eventually(Duration::from_secs(5), || {
        std::net::TcpStream::connect(admin).is_ok_and(|mut s| {
            use std::io::{Read, Write};
            let _ = s.write_all(b"GET /ready HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n");
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            out.starts_with("HTTP/1.1 503")
        })
    })
    .await;
    assert!(unready, "/ready turns 503 first");
    // Still serving during the pre-drain delay: existing and new connections alike.
    let response = client.get("/").await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("connection").is_none());
    let (status, _) = get_text(addr, "/").await;
    assert_eq!(status, 200);
    // Then the listener stops and the kept-alive connection is closed.
    let refused = strait_testkit::eventually(Duration::from_secs(5), || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err()
    })
    .await;
    assert!(refused, "the listener stops after the delay");
    let closed = strait_testkit::eventually(Duration::from_secs(5), || client.is_closed()).await;
    assert!(closed, "the idle connection is closed while draining");
    tokio::task::spawn_blocking(move || stopping.join().unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_reload_keeps_pooled_connections_of_unchanged_and_changed_clusters() {
    let _trace = trace_init();
    let a = Upstream::builder().name("a").start().await;
    let b = Upstream::builder().name("b").start().await;
    let config = |endpoints: &str, lb: &str, body: &str| {
        common::config(
            &format!(
                "- match: {{ prefix: /direct }}\n  direct_response: {{ status: 200, body: \"{body}\" }}\n- match: {{ prefix: / }}\n  cluster: up\n"
            ),
            &format!("- name: up\n  lb: {lb}\n  endpoints: {endpoints}\n"),
        )
    };
    let proxy = TestProxy::start(
        &config(&format!("[\"{}\"]", a.addr()), "round_robin", "one"),
        1,
    );
    let client = http1_client(proxy.addr()).await.unwrap();
    let fetch = async |path: &str| {
        let response = client.get(path).await.unwrap();
        let status = response.status();
        let upstream = response
            .headers()
            .get("x-upstream")
            .map(|v| v.to_str().unwrap().to_owned());
        response.into_body().collect().await.unwrap();
        assert_eq!(status, 200);
        upstream
    };
    for _ in 0..5 {
        assert_eq!(fetch("/").await.as_deref(), Some("a"));
    }
    assert_eq!(a.connections_seen(), 1, "one pooled connection to a");

    // A route-only change: the cluster is unchanged and keeps its pool.
    proxy
        .server()
        .reload(
            &config(&format!("[\"{}\"]", a.addr()), "round_robin", "two"),
            Format::Yaml,
        )
        .unwrap();
    for _ in 0..5 {
        assert_eq!(fetch("/").await.as_deref(), Some("a"));
    }
    assert_eq!(
        a.connections_seen(),
        1,
        "the unchanged cluster kept its connection"
    );

    // The cluster changes (another endpoint, another policy): rebuilt, but the endpoint that
    // remains keeps its pooled connection.
    let both = format!("[\"{}\", \"{}\"]", a.addr(), b.addr());
    proxy
        .server()
        .reload(&config(&both, "random", "three"), Format::Yaml)
        .unwrap();
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..40 {
        *seen.entry(fetch("/").await).or_insert(0) += 1;
    }
    assert!(seen.len() == 2, "both endpoints answer: {seen:?}");
    assert_eq!(
        a.connections_seen(),
        1,
        "the remaining endpoint kept its pooled connection"
    );
    assert_eq!(
        b.connections_seen(),
        1,
        "the new endpoint got one connection"
    );
    assert_eq!(fetch("/direct").await, None);
}
